"""Scale review: long, wide recordings run in row blocks and bounded caches, with the same numbers.

Each memory fix is tested as "blocked == one pass" on a small input, forcing tiny blocks through the
module constant; the large-input measurements (peak RSS, time) are in the session report, not here.
"""
import functools

import numpy as np
import pytest
import torch

from fractals import dfa, fingerprint as fp_mod, spectral, temporal
from fractals.fingerprint import _longest_constant_run, _row_quality, fingerprint
from fractals.graph import functional_connectivity_latents


def _series(n_rows, n, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    walk = torch.randn(n_rows, n, generator=g, dtype=torch.float64).cumsum(-1) * 0.05
    t = torch.arange(n, dtype=torch.float64) / 250.0
    alpha = torch.sin(2 * torch.pi * 10.0 * t)  # an oscillatory peak for the peak search
    return (walk + torch.randn(n_rows, n, generator=g, dtype=torch.float64) + alpha).to(dtype)


def _reference_run(row: np.ndarray) -> int:
    best = cur = 1
    for a, b in zip(row[:-1], row[1:]):
        cur = cur + 1 if a == b else 1
        best = max(best, cur)
    return best


def test_longest_constant_run_matches_a_plain_loop():
    g = torch.Generator().manual_seed(3)
    rows = torch.randint(0, 3, (6, 200), generator=g).double()  # small alphabet: many runs
    rows[2] = 1.0  # one run over the whole row
    rows[3, -40:] = 2.0  # the longest run at the very end
    got = _longest_constant_run(rows)
    assert got.dtype == torch.long
    assert got.tolist() == [_reference_run(r) for r in rows.numpy()]
    assert _longest_constant_run(rows[:, :1]).tolist() == [1] * 6


def test_row_quality_in_blocks_equals_one_pass(monkeypatch):
    rows = _series(7, 600)
    rows[0, 5] = float("nan")
    rows[1] = 2.5  # flat
    rows[2, 100:130] = rows[2, 100]  # 30 repeated samples > 1 % of 600: flat_segment
    rows[3, -1] = float("inf")
    rows[5, 590:] = rows[5, 590]  # 10 repeated samples at the end: > 8 and > 6, flat_segment
    monkeypatch.setattr(fp_mod, "QUALITY_BLOCK_BYTES", 1 << 40)
    whole = _row_quality(rows, 0.01)
    monkeypatch.setattr(fp_mod, "QUALITY_BLOCK_BYTES", 1)  # one row per block
    blocked = _row_quality(rows, 0.01)
    assert blocked == whole == ["nonfinite", "flat", "flat_segment", "nonfinite", "", "flat_segment", ""]


def _fit_fields(fit):
    return {k: v for k, v in vars(fit).items()}


def test_spectral_beta_in_row_blocks_equals_one_pass(monkeypatch):
    x = _series(9, 4096, seed=1).reshape(3, 3, 4096)
    kwargs = dict(fs=250.0, freq_band=(2.0, 40.0), exclude_peaks=True, return_fit=True)
    monkeypatch.setattr("fractals.spectral_fit.FIT_BLOCK_BYTES", 1 << 40)
    monkeypatch.setattr(spectral, "map_rows", functools.partial(temporal.map_rows, chunk_bytes=1 << 40))
    whole = _fit_fields(spectral.spectral_beta(x, **kwargs))
    monkeypatch.setattr("fractals.spectral_fit.FIT_BLOCK_BYTES", 1)  # one series per peak-search block
    monkeypatch.setattr(spectral, "map_rows", functools.partial(temporal.map_rows, chunk_bytes=1))
    blocked = _fit_fields(spectral.spectral_beta(x, **kwargs))
    assert whole["beta"].shape == (3, 3) and whole["peak_valid"].shape == (3, 3, 6)
    assert bool(whole["peak_valid"].any()), "the 10 Hz peak should be found"
    for name, value in whole.items():
        assert torch.equal(blocked[name], value), name


def test_spectral_beta_blocks_keep_the_gradient(monkeypatch):
    x = _series(4, 2048, seed=2, dtype=torch.float64)
    grads = []
    for fit_bytes, chunk in ((1 << 40, 1 << 40), (1, 1)):
        monkeypatch.setattr("fractals.spectral_fit.FIT_BLOCK_BYTES", fit_bytes)
        monkeypatch.setattr(spectral, "map_rows", functools.partial(temporal.map_rows, chunk_bytes=chunk))
        leaf = x.clone().requires_grad_(True)
        spectral.spectral_beta(leaf, 250.0, (2.0, 40.0)).sum().backward()
        grads.append(leaf.grad)
    assert torch.isfinite(grads[0]).all() and grads[0].abs().sum() > 0
    assert torch.equal(grads[0], grads[1])


def test_welch_psd_in_row_blocks_equals_one_pass(monkeypatch):
    x = _series(5, 3000, seed=4) * 1e15  # large |x|: the per-series 2^k scaling must come back exactly
    monkeypatch.setattr(spectral, "map_rows", functools.partial(temporal.map_rows, chunk_bytes=1 << 40))
    f_whole, p_whole = spectral.welch_psd(x, 250.0, nperseg=512)
    monkeypatch.setattr(spectral, "map_rows", functools.partial(temporal.map_rows, chunk_bytes=1))
    f_blocked, p_blocked = spectral.welch_psd(x, 250.0, nperseg=512)
    assert torch.equal(f_whole, f_blocked) and torch.equal(p_whole, p_blocked)
    f1, p1 = spectral.welch_psd(x[0].numpy(), 250.0, nperseg=512)  # 1-D NumPy: shapes as before
    assert p1.shape == (257,) and np.array_equal(p1, p_whole[0].numpy())


def test_fc_centred_in_place_gives_the_copying_formula_and_a_gradient():
    x = _series(6, 500, seed=5).T.contiguous() * 3.0 + 1e4  # (T, C), an offset the double centring removes
    before = x.clone()
    leaf = x.clone().requires_grad_(True)
    adj = functional_connectivity_latents(leaf, thresh=0.1, weighted=True)
    # the formula before the in-place centring, written out
    top = torch.maximum(x.amax(-2, keepdim=True), -x.amin(-2, keepdim=True))
    xc = x / torch.exp2(torch.floor(torch.log2(top)))
    xc = xc - xc.mean(-2, keepdim=True)
    xc = xc - xc.mean(-2, keepdim=True)
    gram = xc.T @ xc
    std = gram.diagonal().sqrt()
    r = (gram / (std[:, None] * std[None, :])).clamp(-1, 1)
    r = 0.5 * (r + r.T)
    absr = r.abs() * (1 - torch.eye(6))
    expected = torch.where(absr > 0.1, absr, torch.zeros_like(absr))
    assert torch.equal(adj.detach(), expected)
    adj.sum().backward()
    assert torch.isfinite(leaf.grad).all()
    assert torch.equal(x, before)


def test_fingerprint_without_the_row_copy_gives_the_same_table_and_leaves_x():
    x = _series(5, 3000, seed=6)
    before = x.clone()
    cfg = {"temporal": {"psd_freq_band": [2, 40]}}
    table, summary = fingerprint(x, 250.0, cfg)  # every row good: measured on x itself
    assert torch.equal(x, before), "fingerprint changed its input"
    with_flat = torch.cat([x, torch.full((1, 3000), 7.0)])  # one flat row: the good rows are indexed out
    table2, summary2 = fingerprint(with_flat, 250.0, cfg)
    kept = table2[table2["channel"] != "ch5"].reset_index(drop=True)
    assert np.array_equal(kept["value"].to_numpy(), table["value"].to_numpy())
    assert summary2["fc_density"] == summary["fc_density"]


@pytest.mark.parametrize("measure", ["higuchi", "hurst", "dfa"])
def test_per_length_caches_stay_within_their_byte_budget(monkeypatch, measure):
    # A job measures recordings (and clean pieces) of many lengths in one process; caches of per-length
    # constants counted entries (64 / 256), which at 1 h of 250 Hz EEG grew ~90 MB per new length.
    cached = {"higuchi": temporal._higuchi_weights_cached, "hurst": temporal._window_layout,
              "dfa": dfa._segment_sizes}[measure]
    call = {"higuchi": lambda s: temporal.higuchi_fd(s, kmax=8),
            "hurst": lambda s: temporal.hurst_rs(s),
            "dfa": lambda s: dfa.dfa_alpha(s, windows=[4, 16, 64])}[measure]
    lengths = [600 + 7 * i for i in range(6)]
    series = [_series(2, n, seed=n) for n in lengths]
    cached.cache_clear()
    fresh = [call(s) for s in series]
    monkeypatch.setattr(temporal, "CACHE_BYTES", 1)  # keeps only the newest entry
    cached.cache_clear()
    again = [call(s) for s in series]
    assert len(cached._store) == 1
    assert all(torch.equal(a, b) for a, b in zip(fresh, again))
    assert torch.equal(call(series[-1]), fresh[-1])  # the newest entry is a hit
    monkeypatch.setattr(temporal, "CACHE_BYTES", 64 << 20)
    cached.cache_clear()
    for s in series:
        call(s)
    assert len(cached._store) == len(lengths)  # small entries: all fit the default budget


# ------------------------------------------------------------------ fingerprint job: fOU over epochs
def _recording(data, fs=250.0):
    from models.data.recording import Recording

    return Recording(data=data, fs=fs, channel_names=tuple(f"E{i}" for i in range(data.shape[0])))


def test_fou_of_equal_epochs_in_one_fit_equals_one_fit_per_epoch(monkeypatch):
    from fmx.fingerprint import recording as rec_mod
    from models.data.preprocess import epoch

    g = np.random.default_rng(7)
    rec = _recording(g.standard_normal((3, 4 * 500 + 100)).cumsum(-1))
    epochs = epoch(rec, 2.0) + [_recording(rec.data[:, :700])]  # four 2 s epochs, then a longer piece
    cfg = {"freq_band": [1.0, 45.0], "steps": 20}
    batched = rec_mod._fou_group(epochs, 0, cfg, "cpu")
    assert len(batched) == 4  # the 700-sample piece has another shape: not in this group
    monkeypatch.setattr(rec_mod, "FOU_BATCH_BYTES", 1)  # one epoch per group, one series per fit
    for k in range(4):
        (single,) = rec_mod._fou_group(epochs, k, cfg, "cpu")
        assert single.equals(batched[k]), k
    assert list(batched[0]["measure"].unique()) == ["fou_H", "fou_theta", "fou_sigma"]


def test_a_flat_channel_no_longer_fails_the_recording_in_the_fou_fit(tmp_path):
    # fractals.fingerprint flags a flat channel and measures the rest; the fOU fit refused the whole
    # batch ("series 2 (flattened) is constant"), so one disconnected electrode failed the recording.
    from fmx.fingerprint.config import load_config
    from fmx.fingerprint.recording import fit_recording

    data = np.random.default_rng(0).standard_normal((4, 3000)).cumsum(-1)
    np.savez(tmp_path / "clean.npz", data=data[[0, 1, 3]], fs=250.0, channel_names=np.array(["a", "b", "d"]))
    data[2] = 1.0
    np.savez(tmp_path / "flat.npz", data=data, fs=250.0, channel_names=np.array(["a", "b", "c", "d"]))
    cfg = load_config(["fou.steps=10"])
    flat = fit_recording({"path": str(tmp_path / "flat.npz")}, cfg)
    clean = fit_recording({"path": str(tmp_path / "clean.npz")}, cfg)
    assert flat["error"] is None, flat["error"]
    rows = flat["rows"]
    fou = rows[rows["measure"].str.startswith("fou_")]
    assert sorted(fou["channel"].unique()) == ["a", "b", "d"]
    want = clean["rows"][clean["rows"]["measure"].str.startswith("fou_")]
    assert np.array_equal(fou["value"].to_numpy(), want["value"].to_numpy())
    assert any(f["channel"] == "c" and f["flag"] == "flat" for f in flat["info"]["flags"])
