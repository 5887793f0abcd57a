"""The sweep runner end to end on real parts: a local Ray head, a real `mlflow server`, SeaweedFS S3.

Budget (2 cores): one 2-worker DDP trial with checkpoints on S3; one CLI sweep whose first trial loses its worker
mid-run and whose driver is interrupted after that trial, then resumed. The real NeuroFMx tiny preset trains
on synthetic data for a few steps.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
FMX = str(Path(sys.executable).with_name("fmx"))
FAST_BASE = ["model=tiny", "data=synthetic", "trainer.max_epochs=2", "trainer.limit_train_batches=3",
             "trainer.limit_val_batches=1", "fractals.priors.warmup_steps=2", "trainer.log_every_n_steps=1"]


def _sweep(name: str, **over) -> dict:
    d = {"name": name, "base": list(FAST_BASE), "method": "random",
         "metric": {"name": "val/loss", "goal": "minimize"},
         "parameters": {"fractals.priors.spectral_beta_target": {"distribution": "uniform", "min": 0.8, "max": 1.2},
                        "fractals.priors.lambda_spec": {"distribution": "log_uniform", "min": 0.01, "max": 0.1}},
         "run_cap": 1, "max_concurrent": 1, "resources": {"workers": 1, "cpus_per_worker": 1}}
    d.update(over)
    return d


@pytest.fixture
def ray_disconnect():
    """Runs in this process connect to the shared head; disconnect afterwards (the head keeps running)."""
    yield
    import ray

    if ray.is_initialized():
        ray.shutdown()


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_two_worker_ddp_trial_on_s3_tracked_in_mlflow(ray_cluster, mlflow_server_s3, seaweed_s3, tmp_path,
                                                      monkeypatch, ray_disconnect):
    from ray.train import Checkpoint

    from fmx import storage as st
    from fmx import tracking
    from fmx.runner import run_sweep
    from fmx.schema import parse_sweep
    from models.registry import build_lightning_module

    server, _ = mlflow_server_s3
    bucket = seaweed_s3.make_bucket()
    # Credentials reach the workers only as a mounted secret file; the endpoint is not a secret.
    secret = tmp_path / "s3-secret.json"
    secret.write_text(json.dumps({"access_key_id": seaweed_s3.access_key,
                                  "secret_access_key": seaweed_s3.secret_key}))
    secret.chmod(0o600)
    for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv(st.SECRET_FILE_ENV, str(secret))
    monkeypatch.setenv("AWS_ENDPOINT_URL", seaweed_s3.endpoint_url)
    data = _sweep("ddp2", resources={"workers": 2, "cpus_per_worker": 1}, acceptance=["numerics", "training"],
                  storage={"path": f"s3://{bucket}/ray", "endpoint_url": seaweed_s3.endpoint_url},
                  tracking={"uri": server.tracking_uri, "experiment": "fmx-test-ddp2"})
    text = yaml.safe_dump(data)
    out = run_sweep(parse_sweep(data), sweep_text=text, address=ray_cluster.address, root=tmp_path, progress=False)
    assert (out.n_trials, out.n_errors) == (1, 0)

    c = tracking.client(server.tracking_uri)
    parent = c.get_run(out.parent_run_id)
    assert parent.info.status == "FINISHED" and parent.data.tags["fmx.git_commit"]
    kids = tracking.child_runs(c, out.experiment_id, out.parent_run_id)
    assert len(kids) == 1
    kid = c.get_run(kids[0].info.run_id)
    assert kid.info.status == "FINISHED"
    assert kid.data.params["model.family"] == "neurofmx" and "sweep.fractals.priors.lambda_spec" in kid.data.params
    assert len(c.get_metric_history(kid.info.run_id, "val/loss")) == 2          # one per epoch
    assert len(c.get_metric_history(kid.info.run_id, "train/loss")) >= 2        # per step
    assert kid.data.metrics["acceptance/numerics_pass"] == 1.0
    assert "acceptance/training_latent_beta" in kid.data.metrics
    last_val = max(m.step for m in c.get_metric_history(kid.info.run_id, "val/loss"))
    assert [m.step for m in c.get_metric_history(kid.info.run_id, "acceptance/numerics_pass")] == [last_val]
    assert any(k.startswith("system/") for k in kid.data.metrics), sorted(kid.data.metrics)
    assert kid.data.metrics["model/params_trainable"] == kid.data.metrics["model/params_total"] > 0  # no adapters
    arts = {a.path for p in ("fingerprint", "acceptance") for a in c.list_artifacts(kid.info.run_id, p)}
    assert {"fingerprint/latent_fingerprint.parquet", "fingerprint/latent_fingerprint.png",
            "acceptance/acceptance.json"} <= arts
    assert {a.path for a in c.list_artifacts(out.parent_run_id, "sweep")} == {"sweep/ddp2.yaml"}
    assert "comparison/trials.parquet" in {a.path for a in c.list_artifacts(out.parent_run_id, "comparison")}
    everything = json.dumps([kid.data.params, kid.data.tags, parent.data.params, parent.data.tags])
    assert seaweed_s3.secret_key not in everything and seaweed_s3.access_key not in everything

    # Checkpoints went to S3 (best-and-latest policy) and restore into the same model.
    s3 = seaweed_s3.client()
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix=f"ray/{out.sweep_id}/trials/")["Contents"]]
    ckpts = sorted({k.rsplit("/", 2)[0] for k in keys if k.endswith("/model.ckpt")})
    assert len(ckpts) in (1, 2), keys
    assert s3.get_object(Bucket=bucket, Key="ray/ddp2.latest.json")["Body"].read()
    fs = st.s3_filesystem(endpoint_url=seaweed_s3.endpoint_url)
    local = Checkpoint(path=kid.data.tags["fmx.checkpoint"], filesystem=fs).to_directory(str(tmp_path / "ck"))
    import torch

    state = torch.load(Path(local) / "model.ckpt", map_location="cpu", weights_only=False)
    module = build_lightning_module(state["hyper_parameters"]["cfg"])
    module.load_state_dict(state["state_dict"])
    assert state["epoch"] == 1  # the latest checkpoint: end of the second (0-indexed) epoch


def _fmx(*args, env, log: Path, wait: bool = True, timeout: float = 420):
    with open(log, "ab") as fh:
        proc = subprocess.Popen([FMX, *args], cwd=REPO, env=env, stdout=fh, stderr=subprocess.STDOUT,
                                start_new_session=True)
    if not wait:
        return proc
    try:
        rc = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        raise
    assert rc == 0, log.read_text()[-4000:]
    return proc


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_crashed_worker_resumes_and_interrupted_sweep_resumes_without_redoing_trials(ray_cluster, mlflow_server,
                                                                                      tmp_path):
    from fmx import tracking

    storage = tmp_path / "ray"
    sweep_file = tmp_path / "resume.yaml"
    sweep_file.write_text(yaml.safe_dump(_sweep(
        "resume", run_cap=2, base=FAST_BASE[:2] + ["trainer.max_epochs=3"] + FAST_BASE[3:],
        storage={"path": str(storage)}, tracking={"uri": mlflow_server.tracking_uri, "experiment": "fmx-resume"})))
    marker = tmp_path / "worker-killed"
    env = dict(os.environ, FMX_TEST_FAULT=json.dumps({"epoch": 1, "marker": str(marker)}))
    log = tmp_path / "fmx.log"
    proc = _fmx("sweep", "run", str(sweep_file), "--address", ray_cluster.address, env=env, log=log, wait=False)

    # Interrupt the driver (Ctrl-C) as soon as the first trial has finished.
    c = tracking.client(mlflow_server.tracking_uri)
    deadline = time.monotonic() + 400
    first = None
    while time.monotonic() < deadline and proc.poll() is None:
        exp = c.get_experiment_by_name("fmx-resume")
        done = [r for r in c.search_runs([exp.experiment_id], f"tags.`{tracking.TAG_KIND}` = 'trial'")
                if r.info.status == "FINISHED"] if exp else []
        if done:
            first = done[0]
            break
        time.sleep(1.0)
    assert first is not None, log.read_text()[-4000:]
    os.killpg(proc.pid, signal.SIGINT)
    try:
        proc.wait(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()

    # The first trial lost its worker mid-epoch 1 and finished from the epoch-0 checkpoint (not from scratch).
    assert marker.exists()
    first = c.get_run(first.info.run_id)
    assert first.data.tags.get("fmx.resumed_from_checkpoint") == "true"
    assert len(c.get_metric_history(first.info.run_id, "val/loss")) == 3  # epochs 0, 1, 2: none validated twice
    # The restarted worker's fingerprint table kept the row of epoch 0, logged before the crash (it was replaced)
    table = c.download_artifacts(first.info.run_id, "fingerprint/latent_fingerprint.parquet", str(tmp_path / "fp"))
    assert sorted(pd.read_parquet(table)["epoch"].unique().tolist()) == [0, 1, 2]
    first_history = len(c.get_metric_history(first.info.run_id, "train/loss"))

    _fmx("sweep", "resume", "resume", "--storage", str(storage), "--address", ray_cluster.address,
         env=dict(os.environ), log=log)
    exp_id = c.get_experiment_by_name("fmx-resume").experiment_id
    parents = c.search_runs([exp_id], f"tags.`{tracking.TAG_KIND}` = 'sweep'")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    kids = tracking.child_runs(c, exp_id, parents[0].info.run_id)
    assert len(kids) == 2 and all(k.info.status == "FINISHED" for k in kids), [k.info.status for k in kids]
    again = c.get_run(first.info.run_id)
    assert "fmx.trial_restarts" not in again.data.tags                     # the finished trial was not re-run
    assert len(c.get_metric_history(first.info.run_id, "train/loss")) == first_history

    status = subprocess.run([FMX, "sweep", "status", "resume", "--storage", str(storage)], cwd=REPO,
                            capture_output=True, text=True, timeout=120)
    assert status.returncode == 0 and "FINISHED=2" in status.stdout, status.stdout + status.stderr


def test_acceptance_benchmarks_on_a_tiny_checkpoint(tmp_path):
    """All five section-14 benchmarks run on a real (untrained) tiny NeuroFMx checkpoint; no servers."""
    import torch
    from ray.train import Checkpoint

    from fmx.acceptance import run_acceptance
    from fmx.config import compose
    from models.registry import build_lightning_module

    cfg = compose(["model=tiny", "data=synthetic"])
    module = build_lightning_module(cfg)
    torch.save({"state_dict": module.state_dict()}, tmp_path / "model.ckpt")
    report = run_acceptance(["numerics", "training", "ablation", "stability", "speed"], cfg=cfg,
                            checkpoint=Checkpoint.from_directory(str(tmp_path)), metrics={"val/latent_beta": 1.15})
    res = report.results
    assert res["numerics"]["pass"] and res["numerics"]["beta_max_err"] <= 0.1 and res["numerics"]["dfa_max_err"] <= 0.05
    assert res["training"] == {"latent_beta": 1.15, "beta_target": 1.0, "beta_gap": pytest.approx(0.15),
                               "pass": True}
    assert res["ablation"]["loss_intact"] > 0 and "drop_pct" in res["ablation"]
    assert res["stability"]["graphfd_var"] >= 0
    assert res["speed"]["ms"] > 0 and ("pass" in res["speed"]) == torch.cuda.is_available()
    metrics = report.metrics()
    assert metrics["acceptance/numerics_pass"] == 1.0 and "acceptance/speed_device" not in metrics
    assert json.loads(json.dumps(report.to_dict()))["benchmarks"]["training"]["pass"] is True

    # the threshold comes from fractals.probes.causal_scale_ablation.min_drop_pct (default 5 %)
    probe = cfg["fractals"]["probes"]["causal_scale_ablation"]
    assert probe["min_drop_pct"] == 5.0 and res["ablation"]["pass"] == (res["ablation"]["drop_pct"] > 5.0)
    probe["min_drop_pct"] = res["ablation"]["drop_pct"] - 1.0
    lower = run_acceptance(["ablation"], cfg=cfg, checkpoint=Checkpoint.from_directory(str(tmp_path)))
    assert lower.results["ablation"]["pass"] is True

    no_ckpt = run_acceptance(["ablation", "training"], cfg=cfg, checkpoint=None, metrics={})
    assert no_ckpt.results == {"ablation": {"reason": "no checkpoint"},
                               "training": {"reason": "val/latent_beta was not logged"}}
    with pytest.raises(ValueError, match="unknown benchmark 'vibes'"):
        run_acceptance(["vibes"], cfg=cfg)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_asha_stops_a_bad_trial_early_and_ends_its_run(ray_cluster, tmp_path, ray_disconnect):
    """Grid search + ASHA on the fast two-moons family: a trial with a learning rate too small to learn is
    cut at the first rung by the good trial that ran before it; its MLflow child run is still ended.

    Its epochs take milliseconds, far less than the Train controller's 0.25 s poll: a worker runs up to about
    three reports ahead of Tune (fmx.train_worker._UploadGate), so the cut comes a few epochs after the rung."""
    from fmx import tracking
    from fmx.runner import run_sweep
    from fmx.schema import parse_sweep

    data = {"name": "asha", "base": ["model=two_moons", "data=two_moons", "trainer.max_epochs=12",
                                     "fractals.enable=false"],
            "method": "grid", "metric": {"name": "val/acc", "goal": "maximize"},
            "parameters": {"model.lr": {"distribution": "grid", "values": [0.05, 1.0e-7]}},
            "early_terminate": {"type": "asha", "grace_period": 1, "reduction_factor": 2},
            "run_cap": 1, "max_concurrent": 1, "resources": {"workers": 1, "cpus_per_worker": 1},
            "storage": {"path": str(tmp_path / "ray")}, "tracking": {"uri": f"sqlite:///{tmp_path}/mlflow.db"}}
    out = run_sweep(parse_sweep(data), sweep_text=yaml.safe_dump(data), address=ray_cluster.address, root=tmp_path,
                    progress=False)
    assert (out.n_trials, out.n_errors) == (2, 0)
    c = tracking.client(out.tracking_uri)
    epochs = {}
    for kid in tracking.child_runs(c, out.experiment_id, out.parent_run_id):
        run = c.get_run(kid.info.run_id)
        assert run.info.status != "RUNNING"
        epochs[float(run.data.params["sweep.model.lr"])] = len(c.get_metric_history(run.info.run_id, "val/acc"))
    assert epochs[0.05] == 12 and epochs[1e-7] < 12, epochs


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_resume_finds_the_tune_state_of_a_sweep_stored_on_s3(moto_s3, tmp_path, monkeypatch):
    """`fmx sweep resume` of an s3:// sweep must look for Tune's state at bucket/prefix/<id> on the S3 filesystem
    (pyarrow refuses an s3:// URI there), so Tune restores it instead of the resume failing."""
    from ray import tune

    from fmx import runner
    from fmx.schema import parse_sweep

    for k, v in moto_s3.env().items():
        monkeypatch.setenv(k, v)
    bucket = moto_s3.make_bucket()
    moto_s3.client().put_object(Bucket=bucket, Key="ray/s3resume-1/tuner.pkl", Body=b"tune state")
    sweep = parse_sweep(_sweep("s3resume", storage={"path": f"s3://{bucket}/ray", "endpoint_url": moto_s3.endpoint_url},
                               tracking={"uri": f"sqlite:///{tmp_path / 'mlflow.db'}"}))

    class Restored(Exception):
        pass

    def restore(path, **kwargs):  # Tune found the state: stop before it unpickles the stand-in
        raise Restored(path)

    monkeypatch.setattr(runner, "init_ray", lambda *a, **k: None)  # no Ray needed up to the restore decision
    monkeypatch.setattr(tune.Tuner, "restore", staticmethod(restore))
    with pytest.raises(Restored, match=f"^{bucket}/ray/s3resume-1$"):
        runner.run_sweep(sweep, resume_id="s3resume-1", root=tmp_path, progress=False)


def test_run_sweep_refuses_an_optuna_sweep_with_nothing_to_search(tmp_path):
    from fmx.runner import run_sweep
    from fmx.schema import parse_sweep

    sweep = parse_sweep(_sweep("nothing", method="tpe", parameters={"optim.lr": {"value": 0.1}}))
    with pytest.raises(ValueError, match="method tpe needs at least one parameter with a distribution"):
        run_sweep(sweep, root=tmp_path, progress=False)
    assert not (tmp_path / "runs").exists()  # nothing recorded


def test_a_trial_larger_than_the_local_ray_is_refused_with_what_it_asks_and_the_fix():
    # Ray Train waits for such a trial's workers forever (a startup timeout every 60 s, retried without limit)
    from fmx.runner import check_trial_fits
    from fmx.schema import Resources

    with pytest.raises(ValueError) as exc:
        check_trial_fits(Resources(workers=2, cpus_per_worker=1), {"CPU": 2.0})
    msg = str(exc.value)
    assert "CPU 2.01" in msg and "resources.workers=2" in msg and "resources.cpus_per_worker=1" in msg
    assert "has CPU 2" in msg and "--num-cpus" in msg
    with pytest.raises(ValueError,
                       match=r"GPU 1 .*resources.gpus_per_worker=0.5.*has CPU 8, GPU 0.*gpus_per_worker: 0"):
        check_trial_fits(Resources(workers=2, cpus_per_worker=1, gpus_per_worker=0.5), {"CPU": 8.0})
    check_trial_fits(Resources(workers=2, cpus_per_worker=1), {"CPU": 4.0})  # fits: no error
    check_trial_fits(Resources(workers=1, cpus_per_worker=1, gpus_per_worker=0.25), {"CPU": 2.0, "GPU": 1.0})


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_run_sweep_on_a_too_small_local_ray_fails_before_any_run_is_recorded(tmp_path):
    """`fmx sweep run --num-cpus 1` with a 2-worker trial on the real local Ray it starts: a clear error within
    seconds, no MLflow store or sweep pointer left behind (the trial would otherwise wait for ever). A subprocess:
    an in-process local Ray, even shut down, breaks later connections of this process to the shared head."""
    sweep = _sweep("toobig", resources={"workers": 2, "cpus_per_worker": 1},
                   storage={"path": str(tmp_path / "ray")}, tracking={"uri": f"sqlite:///{tmp_path}/mlflow.db"})
    (tmp_path / "toobig.yaml").write_text(yaml.safe_dump(sweep))
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "FMX_STORAGE_PATH", "MLFLOW_TRACKING_URI")}
    start = time.monotonic()
    proc = subprocess.run([FMX, "sweep", "run", str(tmp_path / "toobig.yaml"), "--num-cpus", "1"], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0 and time.monotonic() - start < 120
    out = " ".join((proc.stdout + proc.stderr).split())
    assert "CPU 2.01" in out and "local Ray has CPU 1" in out, out[-2000:]
    assert not (tmp_path / "ray" / "toobig.latest.json").exists() and not (tmp_path / "mlflow.db").exists()


def test_relative_data_paths_are_made_absolute_for_the_workers(tmp_path):
    # Trials run in Ray workers with another working directory: data.root=../x must mean the submitter's ../x.
    from fmx.config import absolute_data_paths, trial_config
    from fmx.runner import make_plan
    from fmx.schema import parse_sweep

    base = ["model=tiny", "data=files", "data.root=recordings/eeg", "+data.path=~/corpus",
            "data.pattern=**/*.edf"]
    out = absolute_data_paths(base, tmp_path)
    assert out[2] == f"data.root={(tmp_path / 'recordings' / 'eeg').resolve()}"
    assert out[3] == f"+data.path={Path('~/corpus').expanduser()}"
    assert out[:2] == base[:2] and out[4] == base[4]
    assert absolute_data_paths(["data.root=s3://bucket/eeg", "data.root=null", "data.root=/abs"], tmp_path) == [
        "data.root=s3://bucket/eeg", "data.root=null", "data.root=/abs"]
    sweep = parse_sweep(_sweep("files", base=["model=tiny", "data=files", "data.root=rec"]))
    plan = make_plan(sweep, sweep_id="files-1", root=tmp_path)
    assert trial_config(plan.base, {})["data"]["root"] == str((tmp_path / "rec").resolve())


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_shipped_eegmat_sweep_trains_on_real_eeg(shared_data, ray_cluster, tmp_path, ray_disconnect, monkeypatch):
    """sweeps/eegmat.yaml as shipped (its relative data.root, the tiny preset fitted to 19-channel EEG), cut to one
    short trial; the trial must finish with a finite validation loss and an eeg forecast loss in MLflow."""
    from fmx import tracking
    from fmx.runner import run_sweep
    from fmx.schema import parse_sweep

    data = yaml.safe_load((REPO / "sweeps" / "eegmat.yaml").read_text())
    data["base"] = [b for b in data["base"] if not b.startswith("trainer.")] + [
        "trainer.max_epochs=1", "trainer.limit_train_batches=4", "trainer.limit_val_batches=2",
        "data.max_files=8"]
    data.update(run_cap=1, method="random", acceptance=[], storage={"path": str(tmp_path / "ray")},
                tracking={"uri": f"sqlite:///{tmp_path}/mlflow.db"})
    monkeypatch.chdir(REPO)  # where the shipped relative data.root resolves
    out = run_sweep(parse_sweep(data), sweep_text=yaml.safe_dump(data), address=ray_cluster.address, root=REPO,
                    progress=False)
    assert (out.n_trials, out.n_errors) == (1, 0)
    c = tracking.client(out.tracking_uri)
    (kid,) = tracking.child_runs(c, out.experiment_id, out.parent_run_id)
    metrics = c.get_run(kid.info.run_id).data.metrics
    assert np.isfinite(metrics["val/loss"]) and "val/forecast_eeg_loss" in metrics
