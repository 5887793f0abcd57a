"""Review round 7 (helper 61): BAD-annotation rejection, mixed-rate EDF, sweep base checks, deploy kubeconfig,
singular_value_exponent and the scale-ablation callback, as committed in 761c571..HEAD. Each test failed on the
code it was written against."""
from __future__ import annotations

import numpy as np
import pytest

mne = pytest.importorskip("mne", reason="the recording tests write FIF files with mne")

from models.data.recording import Recording  # noqa: E402
from test_bad_spans_review import _noise, _write_fif  # noqa: E402  the same FIF recordings

FS = 250.0
HIGUCHI_ONLY = {"fingerprint": {"measures": ["higuchi_fd", "katz_fd"]}, "fou": {"enable": False}}


# ------------------------------------------------------------------------------------------------------------
# fingerprint: the clean-piece length required follows the measures the config asks for
# ------------------------------------------------------------------------------------------------------------
def test_fingerprint_of_fd_measures_around_a_bad_span_is_not_refused_for_unmeasured_scales():
    """platform/fmx/fingerprint/recording.py _longest_window: with fingerprint.measures=[higuchi_fd, katz_fd] a
    6 s recording is measured (1500 samples), but one 0.2 s BAD span made it fail: every clean piece had to
    hold 4 x the largest multifractal scale (1024 samples), a scale no configured measure uses, and the error
    told the user to lower fingerprint.multifractal.scales."""
    from fmx.fingerprint.recording import measure_recording

    rec = Recording(data=_noise(2, 6), fs=FS, channel_names=("a", "b"), meta={"path": "m.fif"})
    whole, _ = measure_recording(rec, HIGUCHI_ONLY)
    assert len(whole) == 4
    marked = rec.replace(meta={"annotations": ((2.8, 0.2, "BAD_blink"),)})
    rows, info = measure_recording(marked, HIGUCHI_ONLY)  # pieces of 700 and 750 samples: plenty for Higuchi/Katz
    assert info["n_segments"] == 2 and info["excluded_fraction"] == pytest.approx(50 / 1500)
    assert sorted(rows["measure"].unique()) == ["higuchi_fd", "katz_fd"]


# ------------------------------------------------------------------------------------------------------------
# training windows: a file with a long-enough clean stretch but no clean window on the stride grid
# ------------------------------------------------------------------------------------------------------------
def test_file_with_no_clean_window_on_the_stride_grid_does_not_empty_its_split(tmp_path):
    """models/data/files.py build_files_datamodule: files without a clean window are left out before the split,
    judged by their longest clean stretch (longest_clean >= window). Windows start on the stride grid, though:
    b_eeg.fif holds a 254-sample clean stretch (> window=250) yet no window at 0, 250, 500, 750 avoids its
    zero-length BAD marks. It passed the filter, took a split alone and RecordingWindows raised 'every window
    ... overlaps a span annotated BAD', although a_eeg.fif has 8 s of clean windows."""
    from models.data.files import build_files_datamodule

    _write_fif(tmp_path / "a_eeg.fif", _noise(1, 8))
    marks = [(t, 0.0, "BAD_pop") for t in (0.96, 1.98, 2.98, 3.98)]  # samples 240, 495, 745, 995
    _write_fif(tmp_path / "b_eeg.fif", _noise(1, 4, seed=1), marks)
    module = build_files_datamodule({"data": {"name": "files", "root": str(tmp_path), "window": 250,
                                              "val_fraction": 0.5}}, lambda **kw: kw, 4)
    used = module["info"]["train_files"] + module["info"]["val_files"]
    assert all("a_eeg.fif" in f for f in used), used
    assert len(module["train"]) == len(module["val"]) == 8  # one file left: both splits window it (with a warning)


# ------------------------------------------------------------------------------------------------------------
# EDF/BDF rates: a trigger channel slower than the signals is read correctly by MNE; its events must stay
# ------------------------------------------------------------------------------------------------------------
def test_slow_trigger_channel_keeps_its_events(tmp_path):
    """models/data/edf_rates.py one_rate_channels: every trigger channel whose rate differs from the signals' is
    left out ('MNE would misread the file's time axis'). Only a FASTER one does that (MNE sizes the data by it);
    a slower one MNE holds sample-by-sample up to the signals' rate (zero-order hold), and the events come out
    right. Here all signals share 256 Hz, no channel is picked, and the Status pulse at 3.906 s was lost."""
    edfio = pytest.importorskip("edfio", reason="writes a BDF with per-channel rates")
    rng = np.random.default_rng(0)
    status = np.zeros(1280)
    status[500:505] = 3  # 128 Hz: onset 3.90625 s
    signals = [edfio.BdfSignal(rng.standard_normal(2560) * 10, sampling_frequency=256, label=name,
                               physical_dimension="uV") for name in ("Fz", "Cz")]
    signals.append(edfio.BdfSignal(status, sampling_frequency=128, label="Status", physical_dimension="",
                                   digital_range=(-8388608, 8388607), physical_range=(-8388608, 8388607)))
    path = tmp_path / "slow_status.bdf"
    edfio.Bdf(signals).write(path)
    from models.data.readers import read_recording

    direct = mne.io.read_raw_bdf(path, preload=True, verbose="error")
    assert mne.find_events(direct, stim_channel="Status", shortest_event=1, verbose="error")[:, 0].tolist() == [1000]
    rec = read_recording(path)
    assert rec.fs == 256.0 and rec.data.shape == (2, 2560)
    np.testing.assert_allclose(rec.meta["events"], [[3.90625, 3.0]])


# ------------------------------------------------------------------------------------------------------------
# clean_segments: a piece's trigger events count from its own first sample, as after trim_flat_edges and epoch
# ------------------------------------------------------------------------------------------------------------
def test_clean_segments_shift_trigger_events_with_the_piece():
    """models/data/bad_spans.py clean_segments shifts each piece's annotations to its first sample but leaves
    meta["events"] on the whole recording's clock, while epoch() and trim_flat_edges() (same commit) shift
    both. The trigger at 6 s lies 3 s into the piece that starts after the BAD span at 2-3 s; epochs cut from
    that piece (as fingerprint jobs do) then carry events 3 s late."""
    from models.data.bad_spans import clean_segments
    from models.data.preprocess import epoch

    rec = Recording(data=_noise(1, 10), fs=FS, channel_names=("a",),
                    meta={"annotations": ((2.0, 1.0, "BAD_blink"),), "events": np.array([[6.0, 5.0]])})
    first, second = clean_segments(rec)
    assert second.meta["onset_s"] == pytest.approx(3.0)
    np.testing.assert_allclose(second.meta["events"], [[3.0, 5.0]])
    np.testing.assert_allclose(epoch(second, 2.0)[1].meta["events"], [[1.0, 5.0]])  # epoch 2 of the piece: 5-7 s


# ------------------------------------------------------------------------------------------------------------
# undeploy after a deploy with DEPLOY_KUBECONFIG, in the shell deploy's printout set up
# ------------------------------------------------------------------------------------------------------------
def _stub_env(deploy_tests, tmp_path) -> dict:
    """test_deploy_consistency_review's stub_env fixture (stub terraform/helm/kubectl that record their calls)."""
    bindir = tmp_path / "stubbin"
    bindir.mkdir()
    for name, text in (("terraform", deploy_tests._STUB_TERRAFORM), ("helm", deploy_tests._STUB_HELM),
                       ("kubectl", deploy_tests._STUB_KUBECTL)):
        (bindir / name).write_text(text)
        (bindir / name).chmod(0o755)
    (tmp_path / "stub").mkdir()
    return {"PATH": f"{bindir}:/usr/bin:/bin", "HOME": str(tmp_path), "STUB_DIR": str(tmp_path / "stub"),
            "STATE_DIR": str(tmp_path / "state"), "FMX_HOME": str(tmp_path / "fmx"), "PROVIDER": "coreweave",
            "COREWEAVE_API_TOKEN": "CW-token", "TF_VAR_bucket_name": "b", "TF_VAR_cpu_instance_type": "cpu",
            "REGISTRY": "registry.example.com/team", "TAG": "0.1.0"}


def test_undeploy_after_a_console_kubeconfig_deploy_uninstalls_the_chart(tmp_path):
    """infra/lib.sh use_kubeconfig (undeploy.sh): `make deploy DEPLOY_KUBECONFIG=console.kubeconfig` installs with
    that file, records it in $FMX_HOME/clusters/<provider>.json and prints `export KUBECONFIG=<it>`. A later
    `make undeploy PURGE_DATA=1` in that shell ignores the exported KUBECONFIG (the very file deploy used and
    recorded), finds no infra/.state/<provider>.kubeconfig, skips `helm uninstall` and the volume deletion, and
    destroys the cluster under the chart."""
    pytest.importorskip("helm_python", reason="the deploy stubs live in test_deploy_consistency_review")
    import json
    from pathlib import Path

    import test_deploy_consistency_review as deploy_tests

    env = _stub_env(deploy_tests, tmp_path)
    _run = deploy_tests._run
    console = tmp_path / "console.kubeconfig"
    console.write_text("apiVersion: v1\n# from the Console\n")
    deployed = _run("deploy.sh", dict(env, DEPLOY_KUBECONFIG=str(console)))
    assert deployed.returncode == 0, deployed.stderr
    assert f"export KUBECONFIG={console}" in deployed.stdout
    assert json.loads((Path(env["FMX_HOME"]) / "clusters" / "coreweave.json").read_text())["kubeconfig"] == str(console)
    log = Path(env["STUB_DIR"]) / "log"
    log.write_text("")
    result = _run("undeploy.sh", dict(env, KUBECONFIG=str(console), PURGE_DATA="1", AUTO_APPROVE="1"))
    assert result.returncode == 0, result.stderr
    calls = log.read_text()
    assert "helm uninstall neurofmx" in calls and "delete pvc" in calls, result.stdout
