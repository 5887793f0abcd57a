"""Long jobs interrupted the way users interrupt them: Ctrl-C, SIGTERM (``kill``, a Kubernetes eviction) and a full
disk, for ``fmx fingerprint fit`` (serial and Ray) and ``fmx sweep run``. Each test pins what must be left behind:
the finished work on disk, one line saying how to continue, the exit status, and no run left RUNNING."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
FMX = str(Path(sys.executable).with_name("fmx"))
FAST = ["default", "fou.steps=40", "fou.n_bins=32", "fingerprint.measures=[higuchi_fd,dfa_alpha,spectral_beta]"]
FS = 128.0


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    """2 subjects x 2 conditions of tiny 4-channel EDFs (1/f noise)."""
    import mne
    import torch

    from fractals.stimuli import one_over_f_noise

    root = tmp_path_factory.mktemp("cohort")
    for i, subject in enumerate(("sub-01", "sub-02")):
        for j, (condition, beta) in enumerate((("rest", 2.0), ("arithmetic", 1.0))):
            x = one_over_f_noise(int(16 * FS), beta, FS, n_series=4,
                                 generator=torch.Generator().manual_seed(10 * i + j))
            raw = mne.io.RawArray(x.numpy() / x.numpy().std() * 1e-5,
                                  mne.create_info(["Fz", "Cz", "Pz", "Oz"], FS, "eeg"), verbose="error")
            path = root / subject / "eeg" / f"{subject}_task-{condition}_eeg.edf"
            path.parent.mkdir(parents=True, exist_ok=True)
            mne.export.export_raw(path, raw, overwrite=True, verbose="error")
    return root


def _signal_self_once(sig: int):
    """An ``on_result`` hook that signals this process after the first recording's part is written."""
    sent = []

    def hook(result):
        if not sent:
            sent.append(True)
            os.kill(os.getpid(), sig)
            time.sleep(1.0)  # the handler runs here, in the main thread

    return hook


def _parts(out: Path) -> list[Path]:
    return sorted((out / "parts").glob("*.parquet"))


def test_sigterm_stops_a_serial_fingerprint_job_with_exit_143_and_keeps_the_finished_parts(cohort, tmp_path,
                                                                                           capsys):
    # Was: SIGTERM killed the job on the spot (no cleanup, no word of what was saved or how to continue).
    from fmx.fingerprint.job import run_fingerprint_job

    out = tmp_path / "out"
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(SystemExit) as stop:
        run_fingerprint_job(str(cohort), str(out), config=FAST, executor="serial", log_mlflow=False,
                            progress=True, on_result=_signal_self_once(signal.SIGTERM))
    assert stop.value.code == 143
    assert signal.getsignal(signal.SIGTERM) == before  # the job's handler is gone again
    err = capsys.readouterr().err
    assert "interrupted (SIGTERM): 1 of 4 recordings are saved" in err and "continue with" in err, err
    assert len(_parts(out)) == 1 and not list(out.rglob("*.tmp"))
    pd.read_parquet(_parts(out)[0])  # complete, readable

    again = run_fingerprint_job(str(cohort), str(out), config=FAST, executor="serial", log_mlflow=False,
                                progress=False)
    assert (again.n_skipped, again.n_fitted, again.n_failed) == (1, 3, 0)
    clean = run_fingerprint_job(str(cohort), str(tmp_path / "clean"), config=FAST, executor="serial",
                                log_mlflow=False, progress=False)
    keys = ["subject", "session", "condition", "channel", "measure"]
    pd.testing.assert_frame_equal(again.table.sort_values(keys).reset_index(drop=True),
                                  clean.table.sort_values(keys).reset_index(drop=True))


def test_ctrl_c_in_a_fingerprint_job_says_what_is_saved_and_how_to_continue(cohort, tmp_path, capsys):
    # Was: Ctrl-C ended the job with exit 130 and nothing but the progress bar on the screen.
    from fmx.fingerprint.job import run_fingerprint_job

    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        run_fingerprint_job(str(cohort), str(out), config=FAST, executor="serial", log_mlflow=False,
                            progress=True, on_result=_signal_self_once(signal.SIGINT))
    err = capsys.readouterr().err
    assert f"interrupted (Ctrl-C): 1 of 4 recordings are saved in {out / 'parts'}" in err, err
    assert "finished recordings are skipped" in err
    assert len(_parts(out)) == 1


def test_a_full_disk_stops_a_fingerprint_job_with_one_line_not_a_traceback(cohort, tmp_path):
    # Was: the OSError from the part write surfaced as a page-long traceback. RLIMIT_FSIZE makes every write
    # past 1 KiB fail (EFBIG), as a full disk fails them (ENOSPC).
    import resource

    def small_files():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # fail the write instead of killing the process
        resource.setrlimit(resource.RLIMIT_FSIZE, (1024, 1024))

    out = tmp_path / "out"
    proc = subprocess.run([FMX, "fingerprint", "fit", str(cohort), "--out", str(out), "--serial", "--no-mlflow",
                           *sum((["--config", c] for c in FAST), [])], cwd=REPO, capture_output=True, text=True,
                          timeout=120, preexec_fn=small_files, env=dict(os.environ, COLUMNS="400"))
    text = proc.stdout + proc.stderr
    assert proc.returncode == 2, text
    assert "Traceback" not in text and "File too large" in text, text
    assert f"out: cannot write to {out}" in text and "0 of 4 recordings are saved" in text, text
    assert not _parts(out) and not list(out.rglob("*.tmp"))  # no half-written part left behind


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_sigterm_to_a_ray_fingerprint_job_ends_it_cleanly(cohort, tmp_path, ray_cluster):
    # Was: ray.init's SIGTERM handlers printed a C++ stack dump ("*** SIGTERM received") and exited 15 (or
    # aborted, exit -6) without a word about the parts saved; now it ends as Ctrl-C does, with exit 143.
    out = tmp_path / "out"
    script = (
        "import os, signal, time\n"
        "from fmx.fingerprint.job import run_fingerprint_job\n"
        "sent = []\n"
        "def hook(result):\n"
        "    if not sent:\n"
        "        sent.append(1); os.kill(os.getpid(), signal.SIGTERM); time.sleep(2)\n"
        f"run_fingerprint_job({str(cohort)!r}, {str(out)!r}, config={FAST!r}, address={ray_cluster.address!r},\n"
        "                    log_mlflow=False, progress=True, on_result=hook)\n")
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=150)
    text = proc.stdout + proc.stderr
    assert proc.returncode == 143, text[-3000:]
    assert "SIGTERM received" not in text and "Traceback" not in text, text[-3000:]
    assert "interrupted (SIGTERM): " in text and "recordings are saved" in text, text[-3000:]
    assert _parts(out) and not list(out.rglob("*.tmp"))


def _sweep_until_a_trial_runs(name: str, tmp_path: Path, address: str):
    """Start ``fmx sweep run`` (tiny model, one 4-epoch trial, sqlite tracking) on ``address``; return the process,
    its log, its storage folder and MLflow client once the trial's run exists (the trial is starting to train)."""
    from fmx import tracking

    storage, db = tmp_path / "ray", tmp_path / "mlflow.db"
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(
        {"name": name, "method": "random", "run_cap": 1,
         "base": ["model=tiny", "data=synthetic", "trainer.max_epochs=4", "trainer.limit_train_batches=2",
                  "trainer.limit_val_batches=1", "fractals.priors.warmup_steps=2"],
         "metric": {"name": "val/loss", "goal": "minimize"},
         "parameters": {"fractals.priors.lambda_spec": {"distribution": "log_uniform", "min": 0.01, "max": 0.1}},
         "resources": {"workers": 1, "cpus_per_worker": 1},
         "storage": {"path": str(storage)}, "tracking": {"uri": f"sqlite:///{db}"}}))
    log = tmp_path / "fmx.log"
    with open(log, "wb") as fh:
        proc = subprocess.Popen([FMX, "sweep", "run", str(path), "--address", address], cwd=REPO,
                                stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
    c = tracking.client(f"sqlite:///{db}")
    deadline, trial = time.monotonic() + 180, []
    while time.monotonic() < deadline and proc.poll() is None and not trial:
        exp = c.get_experiment_by_name(f"fmx-{name}") if db.exists() else None
        trial = c.search_runs([exp.experiment_id], f"tags.`{tracking.TAG_KIND}` = 'trial'") if exp else []
        time.sleep(0.5)
    if not trial or proc.poll() is not None:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        raise AssertionError(log.read_text()[-3000:])
    return proc, log, storage, c


def _wait(proc) -> int:
    try:
        return proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _statuses(c, name: str) -> dict:
    from fmx import tracking

    return {r.data.tags.get(tracking.TAG_KIND): r.info.status
            for r in c.search_runs([c.get_experiment_by_name(f"fmx-{name}").experiment_id])}


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_sigterm_to_a_sweep_stops_it_as_ctrl_c_does_and_leaves_no_run_running(ray_cluster, tmp_path):
    # Was: SIGTERM mid-trial tripped ray.init's fatal-signal handler: a C++ stack dump, exit -6 (abort), the
    # parent run FAILED, Tune's state not saved at the stop, and no resume command printed.
    proc, log, storage, c = _sweep_until_a_trial_runs("term", tmp_path, ray_cluster.address)
    proc.send_signal(signal.SIGTERM)  # to the driver alone, as `kill` and Kubernetes send it
    rc = _wait(proc)
    text = log.read_text()
    assert rc == 143, text[-3000:]  # 128 + SIGTERM, as the fingerprint job
    assert "SIGTERM received" not in text and "Traceback" not in text, text[-3000:]
    assert f"fmx sweep resume term --storage {storage}" in text, text[-3000:]
    assert _statuses(c, "term") == {"sweep": "KILLED", "trial": "KILLED"}
    assert list(storage.glob("term-*/experiment_state-*.json"))  # what `fmx sweep resume` restores


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_second_ctrl_c_during_a_sweep_leaves_no_trial_run_running(ray_cluster, tmp_path):
    # Was: Ctrl-C twice (Tune: "press again to skip") ended the parent KILLED but left the trial's run RUNNING.
    proc, log, storage, c = _sweep_until_a_trial_runs("twice", tmp_path, ray_cluster.address)
    os.killpg(proc.pid, signal.SIGINT)  # a terminal's Ctrl-C reaches the whole process group
    time.sleep(0.3)
    os.killpg(proc.pid, signal.SIGINT)
    assert _wait(proc) == 130, log.read_text()[-3000:]
    assert _statuses(c, "twice") == {"sweep": "KILLED", "trial": "KILLED"}



def test_rerun_after_a_job_killed_while_logging_ends_its_mlflow_run_instead_of_adding_one(cohort, tmp_path):
    # Was: the logging step (tens of seconds on eegmat-dev: tables, one plot per subject) cut short left its run
    # RUNNING (or FAILED), and the documented fix, running the same command again, added a second run beside it.
    from fmx import tracking
    from fmx.fingerprint.job import run_fingerprint_job

    uri, out = f"sqlite:///{tmp_path / 'mlflow.db'}", str(tmp_path / "out")
    first = run_fingerprint_job(str(cohort), out, config=FAST, executor="serial", mlflow_uri=uri, progress=False)
    c = tracking.client(uri)
    c.update_run(first.mlflow_run_id, status="RUNNING")  # what SIGKILL during the logging leaves (SIGTERM: FAILED)
    again = run_fingerprint_job(str(cohort), out, config=FAST, executor="serial", mlflow_uri=uri, progress=False)
    exp = c.get_experiment_by_name("fingerprint")
    runs = c.search_runs([exp.experiment_id])
    assert [(r.info.run_id, r.info.status) for r in runs] == [(first.mlflow_run_id, "FINISHED")]
    assert again.mlflow_run_id == first.mlflow_run_id and runs[0].data.metrics["n_skipped"] == 4

    # A finished job's run is kept: the next job into the same OUT gets its own run.
    third = run_fingerprint_job(str(cohort), out, config=FAST, executor="serial", mlflow_uri=uri, progress=False)
    assert third.mlflow_run_id != first.mlflow_run_id and len(c.search_runs([exp.experiment_id])) == 2


def test_a_sweep_pointer_write_on_a_full_disk_leaves_no_half_written_file(tmp_path):
    # Was: write_bytes left `<name>.latest.json.tmp<pid>` (cut short) beside the pointer when the write failed.
    import resource

    def small_files():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (1024, 1024))

    (tmp_path / "smoke.latest.json").write_text('{"sweep_id": "smoke-1"}')
    code = ("import sys\nfrom fmx import storage as st\n"
            f"target = st.resolve_storage({str(tmp_path)!r})\n"
            "try:\n    st.write_bytes(target, 'smoke.latest.json', b'x' * 4096)\n"
            "except OSError as exc:\n    sys.exit(f'OSError {exc.errno}')\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60,
                          preexec_fn=small_files)
    assert proc.stderr.strip().endswith("OSError 27"), proc.stderr  # EFBIG, as ENOSPC on a full disk
    assert sorted(p.name for p in tmp_path.iterdir()) == ["smoke.latest.json"]
    assert (tmp_path / "smoke.latest.json").read_text() == '{"sweep_id": "smoke-1"}'  # the old pointer intact
