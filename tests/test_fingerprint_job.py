"""fmx fingerprint fit: discovery, a job over tiny EDF files (one corrupt), resume, schema, MLflow, S3, real data."""
from __future__ import annotations

import os
import shutil

import numpy as np
import pandas as pd
import pytest
import torch

from fmx.fingerprint.config import load_config
from fmx.fingerprint.discover import discover, parse_bids_name
from fmx.fingerprint.job import plan_job, run_fingerprint_job

CHANNELS = ["Fz", "Cz", "Pz", "Oz"]
FS = 128.0
SUBJECTS = {"sub-01": "A", "sub-02": "A", "sub-03": "B"}
# Small and quick: three measures and a short fOU fit.
FAST = ["default", "fou.steps=40", "fou.n_bins=32", "fingerprint.measures=[higuchi_fd,dfa_alpha,spectral_beta]"]


def _write_edf(path, beta: float, seed: int) -> None:
    import mne
    import torch

    from fractals.stimuli import one_over_f_noise

    x = one_over_f_noise(int(16 * FS), beta, FS, n_series=len(CHANNELS), generator=torch.Generator().manual_seed(seed))
    data = x.numpy() / x.numpy().std() * 1e-5
    raw = mne.io.RawArray(data, mne.create_info(CHANNELS, FS, "eeg"), verbose="error")
    path.parent.mkdir(parents=True, exist_ok=True)
    mne.export.export_raw(path, raw, overwrite=True, verbose="error")


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    """3 subjects x (rest: 1/f^2, arithmetic: 1/f^1) tiny EDFs, participants.tsv, and one corrupt file."""
    root = tmp_path_factory.mktemp("cohort")
    for i, subject in enumerate(SUBJECTS):
        for condition, beta in (("rest", 2.0), ("arithmetic", 1.0)):
            _write_edf(root / subject / "eeg" / f"{subject}_task-{condition}_eeg.edf", beta, seed=10 * i + int(beta))
    corrupt = root / "sub-04" / "eeg" / "sub-04_task-rest_eeg.edf"
    corrupt.parent.mkdir(parents=True)
    corrupt.write_bytes(b"0       truncated header" * 8)
    (root / "sub-01" / "eeg" / "sub-01_task-rest_events.tsv").write_text("onset\tduration\n0\t1\n")
    lines = ["participant_id\tgroup\tage"] + [f"{s}\t{g}\t{20 + i}" for i, (s, g) in enumerate(SUBJECTS.items())]
    (root / "participants.tsv").write_text("\n".join(lines + ["sub-04\tB\t30"]) + "\n")
    return root


@pytest.fixture(scope="module")
def local_ray(ray_cluster):
    """A driver connected to the session's local 2-CPU Ray head (tests/fixtures_servers.py), shut down after.

    One Ray cluster per test session: a second one started beside it (``ray.init(num_cpus=2)``) made
    the head's start-up time out on the 2-core machine. Never `ray stop`.
    """
    ray = pytest.importorskip("ray")
    if ray.is_initialized():  # another module's driver is still connected: use it
        yield ray
        return
    ray.init(address=ray_cluster.address, logging_level="warning", log_to_driver=False)
    yield ray
    ray.shutdown()


def test_parse_bids_name():
    assert parse_bids_name("sub-01_ses-2_task-rest_run-1_eeg.edf") == {
        "subject": "sub-01", "session": "ses-2", "condition": "rest", "modality": "eeg", "ext": ".edf"}
    assert parse_bids_name("notes.edf") is None


@pytest.mark.parametrize("uri", ["s3://", "s3:///eeg/sub-01.edf"])
def test_s3_uri_without_bucket_is_refused(uri):
    # s3:///eeg/... once read bucket "eeg": the empty bucket must be an error, not a silent shift
    from fmx.fingerprint import storage

    with pytest.raises(ValueError, match="names no bucket"):
        storage.exists(uri)


def test_discover_bids_folder_and_manifest(cohort, tmp_path):
    found = discover(str(cohort))
    assert len(found) == 7  # side-car events.tsv ignored
    assert set(found["condition"]) == {"rest", "arithmetic"} and set(found["session"]) == {""}
    assert found.loc[found["subject"] == "sub-03", "group"].unique().tolist() == ["B"]
    assert found["age"].dtype.kind == "i"
    manifest = tmp_path / "manifest.csv"
    # relative paths are resolved against the manifest's folder
    rows = [{"path": os.path.relpath(p, tmp_path), "subject": p.parts[-3], "condition": f"c{i}"}
            for i, p in enumerate(sorted(cohort.rglob("*_eeg.edf")))]
    pd.DataFrame(rows).to_csv(manifest, index=False)
    listed = discover(str(manifest))
    assert len(listed) == 7 and listed["condition"].str.startswith("c").all()
    with pytest.raises(ValueError, match="does not exist"):
        discover(str(tmp_path / "nope"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no recordings found"):
        discover(str(tmp_path / "empty"))
    dup = tmp_path / "dup.csv"
    pd.DataFrame([{"path": r["path"], "subject": "s", "condition": "x"} for r in rows[:2]]).to_csv(dup)
    with pytest.raises(ValueError, match="share subject/session/condition"):
        discover(str(dup))


def test_resume_key_depends_on_config(cohort):
    a = plan_job(str(cohort), load_config(FAST))
    b = plan_job(str(cohort), load_config([*FAST, "fou.steps=41"]))
    assert a["key"].is_unique and not set(a["key"]) & set(b["key"])
    assert plan_job(str(cohort), load_config(FAST))["key"].tolist() == a["key"].tolist()


def test_resume_key_sees_a_recording_rewritten_with_the_same_size(cohort, tmp_path):
    # A re-export of a recording often keeps its byte length: size alone would keep the stale part.
    import os
    import shutil

    data = tmp_path / "data"
    shutil.copytree(cohort, data)
    before = plan_job(str(data), load_config(FAST)).set_index("path")["key"]
    path = next(p for p in before.index if str(p).endswith(".edf"))
    raw = bytearray(open(path, "rb").read())
    raw[-1] ^= 0xFF  # same length, other content
    with open(path, "wb") as fh:
        fh.write(raw)
    stat = os.stat(path)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000_000))  # coarse clocks: 5 s later
    after = plan_job(str(data), load_config(FAST)).set_index("path")["key"]
    changed = set(before.index[before != after.reindex(before.index)])
    assert changed == {path}


def test_serial_job_schema_failures_and_summary(cohort, tmp_path):
    out = tmp_path / "out"
    res = run_fingerprint_job(str(cohort), str(out), config=FAST, executor="serial", log_mlflow=False, progress=False)
    assert (res.n_fitted, res.n_failed, res.n_skipped) == (6, 1, 0)
    table = pd.read_parquet(out / "fingerprint.parquet")
    assert list(table.columns) == ["subject", "session", "condition", "channel", "measure", "value"]
    assert table["value"].dtype == np.float64 and np.isfinite(table["value"]).all()
    assert all(table[c].dtype.kind in "OT" or str(table[c].dtype).startswith("str") for c in table.columns[:5])
    assert {"fou_H", "fou_theta", "fou_sigma"} <= set(table["measure"])
    assert set(table["channel"]) >= set(CHANNELS)
    assert not table.duplicated(["subject", "session", "condition", "channel", "measure"]).any()
    failures = pd.read_parquet(out / "failures.parquet")
    assert len(failures) == 1 and failures["path"].iloc[0].endswith("sub-04_task-rest_eeg.edf")
    assert "sub-04_task-rest_eeg.edf" in failures["error"].iloc[0]
    summary = pd.read_parquet(out / "summary.parquet")
    assert len(summary) == 6 and {"group", "age", "fou_H", "n_channels"} <= set(summary.columns)
    assert (summary["n_channels"] == len(CHANNELS)).all()
    network = table[table["channel"] == "network"]
    assert set(network["measure"]) <= {"fc_density", "graph_fd"} and "fc_density" in set(network["measure"])
    flags = pd.read_parquet(out / "flags.parquet")
    assert list(flags.columns) == ["subject", "session", "condition", "channel", "measure", "flag", "epoch"]
    recordings = pd.read_parquet(out / "recordings.parquet")
    assert sorted(recordings["status"]) == ["failed"] + ["fitted"] * 6
    assert len(list((out / "parts").glob("*.parquet"))) == 6 and not list((out / "parts").glob(".*tmp"))
    # the planted difference: 1/f^1 (arithmetic) is rougher than 1/f^2 (rest) -> higher Higuchi FD
    hfd = [c for c in summary.columns if "higuchi" in c.lower()][0]
    fd = summary.pivot_table(index="subject", columns="condition", values=hfd)
    assert (fd["arithmetic"] > fd["rest"] + 0.2).all()


def test_every_recording_failing_still_writes_empty_tables(cohort, tmp_path):
    from fmx.fingerprint.compare import compare

    only_bad = tmp_path / "bad"
    shutil.copytree(cohort / "sub-04", only_bad / "sub-04")
    out = tmp_path / "out"
    res = run_fingerprint_job(str(only_bad), str(out), config=FAST, executor="serial", log_mlflow=False,
                              progress=False)
    assert (res.n_fitted, res.n_failed) == (0, 1)
    table = pd.read_parquet(out / "fingerprint.parquet")
    assert table.empty and list(table.columns) == ["subject", "session", "condition", "channel", "measure", "value"]
    with pytest.raises(ValueError, match="fingerprint table is empty"):
        compare(str(out), contrast="condition=rest,arithmetic")


def test_a_file_store_mlflow_uri_fails_before_any_recording_is_fitted(cohort, tmp_path, monkeypatch):
    # MLflow 3 refuses file stores: found only when logging, after the whole cohort was fitted
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    out = tmp_path / "out"
    with pytest.raises(ValueError, match=r"--mlflow.*file:.*MLFLOW_ALLOW_FILE_STORE"):
        run_fingerprint_job(str(cohort), str(out), config=FAST, executor="serial", progress=False,
                            mlflow_uri=(tmp_path / "mlruns").as_uri())
    monkeypatch.setenv("MLFLOW_TRACKING_URI", (tmp_path / "mlruns").as_uri())
    with pytest.raises(ValueError, match=r"MLFLOW_TRACKING_URI.*file:"):
        run_fingerprint_job(str(cohort), str(out), config=FAST, executor="serial", progress=False)
    assert not out.exists()


def test_credentials_in_a_uri_are_refused_and_never_shown(cohort, tmp_path):
    # the secret came back in pyarrow's error ("got a URI: 'AKIA...:secret@bucket/eeg'") and MLflow's traceback
    secret = "hunter2s3cr3t"
    for kwargs in ({"data": f"s3://AKIAABCDEFGHIJKLMNOP:{secret}@bucket/eeg", "out": str(tmp_path / "o")},
                   {"data": str(cohort), "out": f"s3://AKIAABCDEFGHIJKLMNOP:{secret}@bucket/out"},
                   {"data": str(cohort), "out": str(tmp_path / "o"), "mlflow_uri": f"http://u:{secret}@127.0.0.1:1"}):
        with pytest.raises(ValueError, match="credentials never go") as exc:
            run_fingerprint_job(config=FAST, executor="serial", progress=False, **kwargs)
        assert secret not in str(exc.value) and ("AWS_ACCESS_KEY_ID" in str(exc.value) or
                                                 "MLFLOW_TRACKING_PASSWORD" in str(exc.value))
    assert not (tmp_path / "o").exists()  # refused before any work


def test_an_out_that_is_a_file_is_refused_before_any_work(cohort, tmp_path):
    out = tmp_path / "notes.txt"
    out.write_text("mine")
    with pytest.raises(ValueError, match=r"out: .*notes.txt.* is a file"):
        run_fingerprint_job(str(cohort), str(out), config=FAST, executor="serial", log_mlflow=False, progress=False)
    assert out.read_text() == "mine"


def test_a_manifest_row_naming_a_missing_file_is_a_failure_not_an_abort(cohort, tmp_path):
    # the job stopped with a FileNotFoundError traceback before fitting anything (an s3:// row already failed alone)
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("path,subject,condition\n"
                        f"{cohort / 'sub-01' / 'eeg' / 'sub-01_task-rest_eeg.edf'},s1,rest\nmissing.edf,s2,rest\n")
    res = run_fingerprint_job(str(manifest), str(tmp_path / "out"), config=FAST, executor="serial",
                              log_mlflow=False, progress=False)
    assert (res.n_fitted, res.n_failed) == (1, 1)
    assert res.failures["path"].iloc[0].endswith("missing.edf") and "missing.edf" in res.failures["error"].iloc[0]


def test_preprocess_options_on_rr_series_are_refused_not_ignored(tmp_path):
    # --epoch/--resample/--band/--notch/--channels did nothing to an RR series, silently (n_epochs stayed 1)
    rng = np.random.default_rng(0)
    path = tmp_path / "sub-01_task-rest_rr.npz"
    np.savez(path, rr_ms=(800 + 40 * rng.standard_normal(3000)).astype(np.float64))
    res = run_fingerprint_job(str(path), str(tmp_path / "out"), config=["hrv"], epoch=300, executor="serial",
                              log_mlflow=False, progress=False)
    assert res.n_failed == 1 and "preprocess.epoch" in res.failures["error"].iloc[0]
    assert "interval" in res.failures["error"].iloc[0]
    res = run_fingerprint_job(str(path), str(tmp_path / "out2"), config=["hrv"], executor="serial",
                              log_mlflow=False, progress=False)
    assert (res.n_fitted, res.n_failed) == (1, 0)


def test_cli_an_unreachable_mlflow_is_a_clean_error_and_the_tables_stay(cohort, tmp_path, monkeypatch):
    import socket

    from typer.testing import CliRunner

    from fmx.cli import app

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    only_bad = tmp_path / "bad"
    shutil.copytree(cohort / "sub-04", only_bad / "sub-04")
    out = tmp_path / "out"
    res = CliRunner().invoke(app, ["fingerprint", "fit", str(only_bad), "--out", str(out), "--serial",
                                   "--mlflow", f"http://127.0.0.1:{port}", *sum((["--config", c] for c in FAST), [])])
    text = " ".join(res.output.split())
    assert res.exit_code == 2 and isinstance(res.exception, SystemExit), (res.output, res.exception)
    assert f"127.0.0.1:{port}" in text and "--no-mlflow" in text and str(out) in text
    assert (out / "fingerprint.parquet").exists() and (out / "failures.parquet").exists()


@pytest.mark.slow
def test_a_plain_mlflow_path_logs_to_a_sqlite_store_there(cohort, tmp_path, monkeypatch):
    import mlflow

    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    monkeypatch.chdir(tmp_path)
    only_bad = tmp_path / "bad"  # one corrupt recording: the job is instant, the logging is what is tested
    shutil.copytree(cohort / "sub-04", only_bad / "sub-04")
    res = run_fingerprint_job(str(only_bad), "out", config=FAST, executor="serial", progress=False,
                              mlflow_uri="runs/mlruns")
    store = f"sqlite:///{(tmp_path / 'runs' / 'mlruns' / 'mlflow.db').resolve()}"
    run = mlflow.MlflowClient(store).get_run(res.mlflow_run_id)
    assert run.data.metrics["n_failed"] == 1 and run.info.status == "FINISHED"
    # artifacts beside the store, as a sweep's are, not in ./mlruns of wherever the job ran
    assert run.info.artifact_uri.startswith((tmp_path / "runs" / "mlruns" / "mlartifacts").resolve().as_uri())
    assert not (tmp_path / "mlruns").exists()


@pytest.mark.slow
def test_ray_job_resumes_and_skips_finished(cohort, tmp_path, local_ray):
    out = tmp_path / "out"
    seen = []
    first = run_fingerprint_job(str(cohort), str(out), config=FAST, log_mlflow=False, progress=False,
                                on_result=seen.append)
    assert (first.n_fitted, first.n_failed) == (6, 1) and len(seen) == 7
    assert "ValueError" in first.failures["error"].iloc[0]
    before = {p.name: p.stat().st_mtime_ns for p in (out / "parts").glob("*.parquet")}
    # a new recording appears; a re-run fits only it (and retries the corrupt file)
    shutil.copy(cohort / "sub-01" / "eeg" / "sub-01_task-rest_eeg.edf", tmp_path / "extra.edf")
    extra = cohort / "sub-03" / "eeg" / "sub-03_task-extra_eeg.edf"
    shutil.copy(tmp_path / "extra.edf", extra)
    try:
        second = run_fingerprint_job(str(cohort), str(out), config=FAST, log_mlflow=False, progress=False)
    finally:
        extra.unlink()
    assert (second.n_skipped, second.n_fitted, second.n_failed) == (6, 1, 1)
    after = {p.name: p.stat().st_mtime_ns for p in (out / "parts").glob("*.parquet")}
    assert all(after[name] == mtime for name, mtime in before.items())  # finished parts untouched
    old = first.table.sort_values(list(first.table.columns[:5])).reset_index(drop=True)
    new = second.table[second.table["condition"] != "extra"].sort_values(list(old.columns[:5])).reset_index(drop=True)
    pd.testing.assert_frame_equal(old, new)


def test_cli_fit_serial(cohort, tmp_path):
    from typer.testing import CliRunner

    from fmx.cli import app

    out = tmp_path / "cli"
    args = ["fingerprint", "fit", str(cohort), "--out", str(out), "--serial", "--no-mlflow", "--channels", "Fz,Cz",
            "--band", "1", "40", "--epoch", "8", *sum((["--config", c] for c in FAST), [])]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "6 fitted" in res.output and "1 failed" in res.output and "sub-04_task-rest_eeg.edf" in res.output
    table = pd.read_parquet(out / "fingerprint.parquet")
    assert set(table["channel"]) - {"network"} == {"Fz", "Cz"}
    assert (pd.read_parquet(out / "recordings.parquet").query("status == 'fitted'")["n_epochs"] == 2).all()
    bad = CliRunner().invoke(app, ["fingerprint", "fit", str(tmp_path / "missing"), "--out", str(out), "--serial"])
    assert bad.exit_code == 2 and "does not exist" in bad.output


@pytest.mark.slow
def test_cli_fit_on_a_ray_cluster_address(cohort, tmp_path, ray_cluster):
    """`--address` sends the tasks to a running Ray head (a separate process, as a user would)."""
    import subprocess
    import sys

    out = tmp_path / "cluster"
    env = dict(os.environ, RAY_AUTH_MODE="disabled", COLUMNS="200")  # as the session head (fixtures_servers)
    cmd = [sys.executable, "-m", "fmx.cli", "fingerprint", "fit", str(cohort), "--out", str(out), "--no-mlflow",
           "--address", ray_cluster.address, *sum((["--config", c] for c in FAST), [])]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "6 fitted" in proc.stdout and "1 failed" in proc.stdout
    assert len(pd.read_parquet(out / "fingerprint.parquet")) > 0


@pytest.mark.slow
def test_cli_fit_inside_a_ray_job_uses_the_cluster_that_ray_address_names(cohort, tmp_path, ray_cluster):
    """Inside a Ray job (`fmx job submit ... fmx fingerprint fit`) RAY_ADDRESS names the cluster and no --address is
    given: the job passed num_cpus to a connecting ray.init, which Ray refuses ("When connecting to an existing
    cluster, num_cpus and num_gpus must not be provided")."""
    import subprocess
    import sys

    out = tmp_path / "job"
    env = dict(os.environ, RAY_AUTH_MODE="disabled", COLUMNS="200", RAY_ADDRESS=ray_cluster.address)
    cmd = [sys.executable, "-m", "fmx.cli", "fingerprint", "fit", str(cohort), "--out", str(out), "--no-mlflow",
           *sum((["--config", c] for c in FAST), [])]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "6 fitted" in proc.stdout and "1 failed" in proc.stdout


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu(cohort):
    from fmx.fingerprint.recording import fit_recording

    entry = {"path": str(cohort / "sub-01" / "eeg" / "sub-01_task-rest_eeg.edf"), "subject": "sub-01", "key": "k"}
    cfg = load_config(FAST)
    cpu, gpu = fit_recording(entry, cfg), fit_recording(entry, cfg, device="cuda")
    assert cpu["error"] is None and gpu["error"] is None, (cpu["error"], gpu["error"])
    merged = cpu["rows"].merge(gpu["rows"], on=["channel", "measure"], suffixes=("_cpu", "_gpu"))
    assert len(merged) == len(cpu["rows"])
    np.testing.assert_allclose(merged["value_gpu"], merged["value_cpu"], rtol=1e-3, atol=1e-6)


@pytest.mark.slow
def test_mlflow_run_contents(cohort, tmp_path, mlflow_server):
    from mlflow.tracking import MlflowClient

    res = run_fingerprint_job(str(cohort), str(tmp_path / "out"), config=FAST, executor="serial", progress=False,
                              mlflow_uri=mlflow_server.tracking_uri, experiment="fp-test")
    client = MlflowClient(tracking_uri=mlflow_server.tracking_uri)
    run = client.get_run(res.mlflow_run_id)
    assert run.info.status == "FINISHED" and run.data.tags["fmx.kind"] == "fingerprint"
    assert run.data.metrics["n_fitted"] == 6 and run.data.metrics["n_failed"] == 1
    assert run.data.params["fou.steps"] == "40"
    assert any(k.startswith("mean/arithmetic/fou_H") for k in run.data.metrics)

    def names(path):
        return {a.path for a in client.list_artifacts(res.mlflow_run_id, path)}

    assert {"tables/fingerprint.parquet", "tables/failures.csv", "tables/summary.parquet"} <= names("tables")
    assert "plots/cohort.png" in names("plots")
    assert names("plots/subjects") == {f"plots/subjects/{s}.png" for s in SUBJECTS}
    local = client.download_artifacts(res.mlflow_run_id, "tables/fingerprint.parquet", str(tmp_path))
    pd.testing.assert_frame_equal(pd.read_parquet(local), res.table)


@pytest.mark.slow
def test_s3_input_and_output(cohort, tmp_path, seaweed_s3, monkeypatch):
    from fmx.fingerprint import storage
    from fmx.fingerprint.compare import compare

    for key, value in seaweed_s3.env().items():
        monkeypatch.setenv(key, value)
    bucket = seaweed_s3.make_bucket()
    client = seaweed_s3.client()
    for path in cohort.rglob("*"):
        if path.is_file():
            client.upload_file(str(path), bucket, f"data/{path.relative_to(cohort).as_posix()}")
    data, out = f"s3://{bucket}/data", f"s3://{bucket}/runs/one"
    res = run_fingerprint_job(data, out, config=FAST, executor="serial", log_mlflow=False, progress=False)
    assert (res.n_fitted, res.n_failed) == (6, 1) and res.summary["group"].notna().all()
    keys = {o["Key"] for o in client.list_objects_v2(Bucket=bucket, Prefix="runs/one/")["Contents"]}
    assert {f"runs/one/{n}.parquet" for n in ("fingerprint", "summary", "failures", "recordings")} <= keys
    table = pd.read_parquet(storage.fetch_local(f"{out}/fingerprint.parquet", tmp_path))
    pd.testing.assert_frame_equal(table, res.table)
    again = run_fingerprint_job(data, out, config=FAST, executor="serial", log_mlflow=False, progress=False)
    assert (again.n_skipped, again.n_fitted) == (6, 0)
    result = compare(out, group_by="group", figures=False)
    assert storage.exists(f"{out}/compare/{result.name}/stats.parquet")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong")
    with pytest.raises(Exception, match="(?i)access|denied|signature|forbidden"):
        storage.read_bytes(f"{out}/fingerprint.parquet")


@pytest.mark.slow
@pytest.mark.realdata
def test_eegmat_higuchi_higher_during_arithmetic(shared_data, tmp_path, local_ray):
    from fmx.fingerprint.compare import compare

    out = tmp_path / "eegmat"
    res = run_fingerprint_job(str(shared_data / "eegmat-dev"), str(out), config=["eeg"], log_mlflow=False,
                              progress=False)
    assert (res.n_fitted, res.n_failed) == (24, 0)
    stats = compare(str(out), contrast="condition=rest,arithmetic", figures=False).stats.set_index(
        ["measure", "channel"])
    hfd = stats.loc[(_measure_like(stats, "higuchi"), "mean")]
    assert hfd["diff"] > 0 and hfd["p"] < 0.05  # the dataset's documented contrast


@pytest.mark.slow
@pytest.mark.realdata
def test_hrv_dfa_alpha1_lower_in_heart_failure(shared_data, tmp_path, local_ray):
    from fmx.fingerprint.compare import compare

    out = tmp_path / "hrv"
    # DFA only: the 24 h series are ~100k beats; the other measures add time, not this check
    res = run_fingerprint_job(str(shared_data / "hrv_rr_dev.npz"), str(out), log_mlflow=False, progress=False,
                              config=["hrv", "fingerprint.measures=[dfa_alpha1,dfa_alpha2]"])
    assert (res.n_fitted, res.n_failed) == (30, 0)
    stats = compare(str(out), group_by="group", levels=["NSR", "CHF"], figures=False).stats
    alpha1 = stats[(stats["measure"] == _measure_like(stats.set_index(["measure", "channel"]), "alpha1"))].iloc[0]
    assert alpha1["mean_a"] > 1.0 and alpha1["mean_a"] < 1.5 and alpha1["mean_b"] < alpha1["mean_a"] - 0.2
    assert alpha1["p"] < 0.01 and alpha1["cohens_d"] < -1


def _measure_like(stats, fragment: str) -> str:
    measures = sorted({m for m, _ in stats.index if fragment in m})
    assert measures, f"no measure containing {fragment!r} in {sorted({m for m, _ in stats.index})}"
    return measures[0]


def test_ray_workers_get_s3_settings_but_never_the_keys():
    # A task's runtime_env is shown by the Ray dashboard: endpoint, region and the secret file's path may
    # travel, the key pair and session token may not.
    from fmx.fingerprint.job import worker_env

    environ = {"AWS_ACCESS_KEY_ID": "AKIAABCDEFGHIJKLMNOP", "AWS_SECRET_ACCESS_KEY": "s3cr3t",
               "AWS_SESSION_TOKEN": "tok", "AWS_ENDPOINT_URL": "http://127.0.0.1:8333", "AWS_REGION": "us-east-1",
               "FMX_S3_SECRET_FILE": "/var/run/secrets/s3", "MLFLOW_TRACKING_URI": "http://user:pw@host:5000"}
    assert worker_env(environ) == {"AWS_ENDPOINT_URL": "http://127.0.0.1:8333", "AWS_REGION": "us-east-1",
                                   "FMX_S3_SECRET_FILE": "/var/run/secrets/s3"}


def test_flatten_params_keeps_values_mlflow_accepts_and_marks_longer_ones():
    from fmx.fingerprint.tracking import flatten_params
    from fmx.tracking import MAX_PARAM_LEN

    montage = [f"EEG {i:03d}-REF" for i in range(128)]  # ~2 kB: MLflow takes it whole
    params = flatten_params({"preprocess": {"channels": montage, "band": [1.0, 40.0]}, "note": "x" * 9000})
    assert params["preprocess.channels"] == str(montage) and params["preprocess.band"] == "[1.0, 40.0]"
    assert len(params["note"]) <= MAX_PARAM_LEN and "truncated from 9000 chars" in params["note"]


def test_cli_exits_1_when_every_recording_failed(cohort, tmp_path):
    from typer.testing import CliRunner

    from fmx.cli import app

    only_bad = tmp_path / "bad"
    shutil.copytree(cohort / "sub-04", only_bad / "sub-04")
    res = CliRunner().invoke(app, ["fingerprint", "fit", str(only_bad), "--out", str(tmp_path / "out"), "--serial",
                                   "--no-mlflow", *sum((["--config", c] for c in FAST), [])])
    assert res.exit_code == 1, res.output
    assert "every recording failed" in " ".join(res.output.split())


@pytest.mark.parametrize("subject, name", [("sub-01", "sub-01.png"), ("site/a", "site_a.png"),
                                           ("../x", "_x.png"), ("", "subject.png")])
def test_subject_plot_names_stay_one_file_in_the_plots_folder(subject, name):
    from fmx.fingerprint.tracking import plot_file_name

    assert plot_file_name(subject) == name


def test_flagged_values_are_marked_not_ok_for_the_subject_plots():
    import pandas as pd

    from fmx.fingerprint.tracking import with_ok_column

    table = pd.DataFrame({"subject": ["s1", "s1", "s2"], "session": ["", "", ""], "condition": ["rest"] * 3,
                          "channel": ["Cz", "Pz", "Cz"], "measure": ["spectral_beta"] * 3, "value": [1.0, 2.0, 3.0]})
    flags = pd.DataFrame({"subject": ["s1"], "session": [""], "condition": ["rest"], "channel": ["Pz"],
                          "measure": ["spectral_beta"], "flag": ["poor_fit"], "epoch": [0]})
    out = with_ok_column(table, flags)
    assert out["ok"].tolist() == [True, False, True] and out["value"].tolist() == [1.0, 2.0, 3.0]
    assert with_ok_column(table, None)["ok"].all()
