"""Scale review, part 2: the fOU fit, epoching and fingerprint progress on long, wide recordings.

Each memory fix is tested as "blocked == one pass" on a small input, forcing tiny blocks through the
module constant; the large-input measurements (peak RSS, time) are in the session report, not here.
"""
import numpy as np
import pytest
import torch

from fractals import simulators


def _walks(n_rows, n, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n_rows, n, generator=g, dtype=torch.float64).cumsum(-1).to(dtype)


def _fit(x, **kwargs):
    fit = simulators.fit_fractional_ou(x, 250.0, freq_band=(1.0, 45.0), steps=15, **kwargs)
    return fit.as_dict()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_fou_fit_in_row_blocks_equals_one_pass(monkeypatch, dtype):
    x = _walks(6, 1500, dtype=dtype).reshape(2, 3, 1500)
    x[0, 1] *= 1e-160 if dtype == torch.float64 else 1e-30  # the per-series 2^k scaling must come back exactly
    monkeypatch.setattr(simulators, "PERIODOGRAM_BLOCK_BYTES", 1 << 40)
    monkeypatch.setattr(simulators, "GRID_BLOCK_SERIES", 1 << 30)
    whole = _fit(x)
    monkeypatch.setattr(simulators, "PERIODOGRAM_BLOCK_BYTES", 1)  # one series per periodogram block
    monkeypatch.setattr(simulators, "GRID_BLOCK_SERIES", 1)  # one series per grid-start block
    before = x.clone()
    blocked = _fit(x)
    assert torch.equal(x, before), "the fit must not write into its input"
    assert whole["H"].shape == (2, 3) and whole["H"].dtype == dtype
    for name, value in whole.items():
        assert (value == blocked[name]) if name == "n_freqs" else torch.equal(value, blocked[name]), name
    assert 0 < float(whole["H"].min()) and float(whole["H"].max()) < 1


def test_fou_fit_blocked_matches_the_one_pass_formula():
    # The one-pass periodogram as it was written before the blocks, on a float64 input.
    x = _walks(3, 1024, seed=2)
    n, fs, band, n_bins = 1024, 250.0, (1.0, 45.0), 16
    work = x / simulators.pow2_scale(x)
    work = work - work.mean(-1, keepdim=True)
    win = torch.hann_window(n, periodic=False, dtype=torch.float64)
    spec = torch.fft.rfft(work * win, dim=-1)
    pgram = (spec.real.square() + spec.imag.square()) / (fs * win.square().sum())
    freqs = torch.fft.rfftfreq(n, d=1.0 / fs, dtype=torch.float64)
    keep = (freqs >= band[0]) & (freqs <= band[1]) & (freqs > 0)
    f, p = freqs[keep], pgram[..., keep]
    edges = torch.logspace(np.log10(float(f[0])), np.log10(float(f[-1])), n_bins + 1, dtype=torch.float64)
    idx = torch.bucketize(f, edges[1:-1], right=True)
    counts = torch.bincount(idx, minlength=n_bins).double()
    used = counts > 0
    sums = torch.zeros(3, n_bins, dtype=torch.float64).index_add_(-1, idx, p)
    log_w, ibar, cnt, n_freqs, scale = simulators._binned_periodogram(x, fs, band, n_bins)
    assert n_freqs == int(keep.sum()) and torch.equal(cnt, counts[used])
    assert torch.equal(ibar, sums[..., used] / counts[used])
    assert torch.equal(scale, simulators.pow2_scale(x)[:, 0])


def test_fou_fit_keeps_working_on_a_grad_input():
    x = _walks(2, 800, seed=3).requires_grad_(True)
    fit = simulators.fit_fractional_ou(x, 250.0, steps=5)
    assert torch.isfinite(fit.H).all() and fit.H.shape == (2,)
    assert x.grad is None


# ------------------------------------------------------------------ epoch(): views, not copies
def _recording(data, fs=250.0):
    from models.data.recording import Recording

    return Recording(data=data, fs=fs, channel_names=tuple(f"E{i}" for i in range(data.shape[0])))


def test_epochs_are_views_of_the_recording():
    from models.data.preprocess import epoch

    rec = _recording(np.random.default_rng(0).standard_normal((3, 2100)))
    epochs = epoch(rec, 2.0, overlap=0.5)
    assert len(epochs) == 7 and [e.meta["epoch"] for e in epochs] == list(range(7))
    for i, e in enumerate(epochs):
        assert np.shares_memory(e.data, rec.data)
        assert np.array_equal(e.data, rec.data[:, 250 * i:250 * i + 500])
        assert e.meta["onset_s"] == i * 1.0


def test_the_fingerprint_job_reads_view_epochs_as_it_read_copies(monkeypatch):
    # measure_recording is the repo's one caller of epoch(): it must neither write into the views nor
    # measure them differently from the copies epoch() returned before.
    from fmx.fingerprint import recording as rec_mod
    from models.data import readers

    g = np.random.default_rng(1)
    rec = _recording(g.standard_normal((3, 3 * 500 + 77)).cumsum(-1))
    before = rec.data.copy()
    cfg = {"preprocess": {"epoch": 2.0}, "fou": {"steps": 5, "freq_band": [1.0, 45.0]},
           "fingerprint": {"measures": ["katz_fd", "spectral_beta"],
                           "temporal": {"psd_freq_band": [2.0, 40.0]}}}
    views, _ = rec_mod.measure_recording(rec, cfg)
    assert np.array_equal(rec.data, before)
    view_epoch = readers.epoch
    monkeypatch.setattr(readers, "epoch", lambda r, s: [e.replace(data=e.data.copy()) for e in view_epoch(r, s)])
    copies, _ = rec_mod.measure_recording(rec, cfg)
    assert views.equals(copies)
    assert {"katz_fd", "spectral_beta", "fou_H"} <= set(views["measure"])


# ------------------------------------------------------------------ progress within one recording
def _eeg(seed=0, n_ch=4, n=3000):
    return np.random.default_rng(seed).standard_normal((n_ch, n)).cumsum(-1)


FP_CFG = {"temporal": {"psd_freq_band": [2.0, 40.0]}, "measures": ["katz_fd", "spectral_beta"]}


def test_fingerprint_reports_each_step_and_the_same_numbers():
    from fractals.fingerprint import fingerprint

    x = _eeg()
    x[2] = 1.0  # a flat channel: measured steps are still reported
    calls = []
    table, summary = fingerprint(x, 250.0, config=FP_CFG, progress=lambda *a: calls.append(a))
    assert calls == [(0, 4, "quality"), (1, 4, "katz_fd"), (2, 4, "spectral_beta"), (3, 4, "network"),
                     (4, 4, "done")]
    plain_table, plain_summary = fingerprint(x, 250.0, config=FP_CFG)
    assert table.equals(plain_table) and summary.keys() == plain_summary.keys()
    calls.clear()
    fingerprint(np.random.default_rng(1).normal(800.0, 40.0, (2, 400)), None, kind="intervals",
                progress=lambda *a: calls.append(a))
    assert calls == [(0, 1, "measures"), (1, 1, "done")]
    with pytest.raises(ValueError, match="progress: needs a callable"):
        fingerprint(x, 250.0, config=FP_CFG, progress="tqdm")


def test_progress_hook_reaches_nested_calls_and_an_explicit_callback_wins():
    from fractals.fingerprint import fingerprint, progress_hook

    hooked, explicit = [], []
    with progress_hook(lambda *a: hooked.append(a)):
        fingerprint(_eeg(n=1500), 250.0, config=FP_CFG)
        fingerprint(_eeg(n=1500), 250.0, config=FP_CFG, progress=lambda *a: explicit.append(a))
    fingerprint(_eeg(n=1500), 250.0, config=FP_CFG)  # outside the block: no report
    assert len(hooked) == 5 and len(explicit) == 5 and hooked[-1] == (4, 4, "done")
    with pytest.raises(ValueError, match="fn: needs a callable"):
        with progress_hook(3):
            pass


def _npz(tmp_path, name="rec", seed=0):
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / f"{name}.npz"
    np.savez(path, data=_eeg(seed, n=4000), fs=250.0, channel_names=np.array(["a", "b", "c", "d"]))
    return path


def test_fit_reporting_passes_the_steps_and_never_fails_the_fit(tmp_path, monkeypatch):
    from fmx.fingerprint import job
    from fmx.fingerprint.config import load_config

    cfg = load_config(["fou.steps=5", "fingerprint.measures=[katz_fd,spectral_beta]",
                       "fingerprint.temporal.psd_freq_band=[2,40]"])
    entry = {"path": str(_npz(tmp_path)), "key": "rec-1"}
    monkeypatch.setattr(job, "PROGRESS_EVERY_S", 0.0)
    seen = []
    result = job._fit_reporting(entry, cfg, report=lambda *a: seen.append(a))
    assert result["error"] is None
    assert seen[0] == ("rec.npz", 0, 4, "quality") and seen[-1] == ("rec.npz", 4, 4, "done") and len(seen) == 5

    def broken(*_):
        raise RuntimeError("queue gone")

    again = job._fit_reporting(entry, cfg, report=broken)
    assert again["error"] is None and again["rows"].equals(result["rows"])
    monkeypatch.setattr(job, "PROGRESS_EVERY_S", 3600.0)  # throttled: the first step and the end only
    seen.clear()
    job._fit_reporting(entry, cfg, report=lambda *a: seen.append(a))
    assert [s[3] for s in seen] == ["quality", "done"]


def test_serial_job_shows_the_running_step_on_its_bar(tmp_path, monkeypatch):
    from fmx.fingerprint import job

    manifest = tmp_path / "manifest.csv"
    manifest.write_text(f"path,subject\n{_npz(tmp_path, 'one')},s1\n")
    shown = []
    monkeypatch.setattr(job, "PROGRESS_EVERY_S", 0.0)
    original = job._Progress.step
    monkeypatch.setattr(job._Progress, "step", lambda self, *a: (shown.append(a), original(self, *a)))
    res = job.run_fingerprint_job(str(manifest), str(tmp_path / "out"), executor="serial",
                                  log_mlflow=False, progress=True,
                                  config=["default", "fou.steps=5", "fingerprint.measures=[katz_fd]"])
    assert res.n_fitted == 1
    assert [s[3] for s in shown] == ["quality", "katz_fd", "network", "done"]
    assert {s[0] for s in shown} == {"one.npz"}


@pytest.mark.slow
def test_ray_job_shows_the_running_step_on_its_bar(tmp_path, monkeypatch, ray_cluster):
    ray = pytest.importorskip("ray")
    from fmx.fingerprint import job

    manifest = tmp_path / "manifest.csv"
    manifest.write_text(f"path,subject\n{_npz(tmp_path, 'one')},s1\n{_npz(tmp_path, 'two', seed=1)},s2\n")
    shown = []
    original = job._Progress.step
    monkeypatch.setattr(job._Progress, "step", lambda self, *a: (shown.append(a), original(self, *a)))
    connected = ray.is_initialized()
    if not connected:
        ray.init(address=ray_cluster.address, logging_level="warning", log_to_driver=False)
    try:
        res = job.run_fingerprint_job(str(manifest), str(tmp_path / "out"), log_mlflow=False, progress=True,
                                      config=["default", "fou.steps=5", "fingerprint.measures=[katz_fd]"])
        quiet = job.run_fingerprint_job(str(manifest), str(tmp_path / "quiet"), log_mlflow=False, progress=False,
                                        config=["default", "fou.steps=5", "fingerprint.measures=[katz_fd]"])
    finally:
        if not connected:
            ray.shutdown()
    assert res.n_fitted == 2 and quiet.n_fitted == 2
    assert res.table.sort_values(["subject", "channel", "measure"]).reset_index(drop=True).equals(
        quiet.table.sort_values(["subject", "channel", "measure"]).reset_index(drop=True))
    # each worker's first step and its end come through the queue (the steps between are throttled)
    assert sorted(s[0] for s in shown if s[3] == "done") == ["one.npz", "two.npz"]
    assert {s[3] for s in shown} >= {"quality", "done"}
