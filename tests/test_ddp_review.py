"""Review of multi-worker training semantics: a real 2-worker Ray Train DDP trial (gloo, CPU) of the tiny
NeuroFMx on synthetic data, running :func:`fmx.train_worker.train_loop` as a trial does, with one worker killed
mid-run (the runner's fault hook) and resumed by Ray from the last checkpoint, logging to a real MLflow store.

Every rank records what it trained on (sample indices, optimizer step, LR, RNG state) in a JSON-lines file, so
the tests read the sharding, the resume position and the per-rank randomness from what really happened.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import signal
from pathlib import Path

import pytest
import torch
import pytorch_lightning as pl
from torch.utils.data import Dataset

from configs import tiny_training_config
from models.data.datamodule import build_datamodule
from models.data.resumable import ResumableSampler
from models.lightning import NeuroFMxModule, warmup_cosine

REPO = Path(__file__).resolve().parents[1]
RECORD_ENV = "FMX_DDP_REVIEW_RECORD"
N_TRAIN, BATCH, EPOCHS, WARMUP = 12, 2, 3, 4  # 2 ranks: 6 samples, 3 batches, 3 optimizer steps per epoch


# ----------------------------------------------------------------------------- what the workers build
class _Indexed(Dataset):
    def __init__(self, base):
        self.base = base

    def __len__(self):
        return len(self.base)

    def __getitem__(self, i):
        return dict(self.base[i], index=i)


def indexed_data(cfg):
    """builders["data"]: the real datamodule, its train samples tagged with their index."""
    dm = build_datamodule(cfg)
    dm.train_set = _Indexed(dm.train_set)
    return dm


class _Recorder(pl.Callback):
    def _write(self, trainer, row):
        path = Path(os.environ[RECORD_ENV]) / f"rank{trainer.global_rank}.jsonl"
        with open(path, "a") as fh:
            fh.write(json.dumps({"rank": trainer.global_rank, "pid": os.getpid(), **row}) + "\n")

    def on_train_start(self, trainer, module):
        rng = hashlib.sha1(torch.get_rng_state().numpy().tobytes()).hexdigest()
        params = float(sum(p.detach().double().sum() for p in module.parameters()))
        self._write(trainer, {"event": "start", "rng": rng, "params": params, "step": trainer.global_step,
                              "resumed": trainer.ckpt_path is not None, "world": trainer.world_size,
                              "stepping": int(trainer.estimated_stepping_batches)})

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        self._write(trainer, {"event": "batch", "epoch": trainer.current_epoch, "batch_idx": batch_idx,
                              "step": trainer.global_step, "lr": trainer.optimizers[0].param_groups[0]["lr"],
                              "idx": batch["index"].tolist()})


class _RecordingModule(NeuroFMxModule):
    def configure_callbacks(self):
        return [*super().configure_callbacks(), _Recorder()]


def recording_module(cfg):
    """builders["module"]: the real NeuroFMx module plus the recorder."""
    return _RecordingModule(cfg)


def _cfg() -> dict:
    cfg = tiny_training_config(n_train=N_TRAIN, n_val=4, batch_size=BATCH, warmup_steps=2)
    cfg["fractals"]["log"].update(fingerprint_every_n_steps=1000, tb_hist_every_n=1000)
    cfg["trainer"].update(max_epochs=EPOCHS, log_every_n_steps=1)
    cfg.setdefault("optim", {})["warmup_steps"] = WARMUP
    cfg["seed"] = 3
    return cfg


# ----------------------------------------------------------------------------- one real trial
@pytest.fixture(scope="module")
def trial(tmp_path_factory):
    pytest.importorskip("ray.train", reason="needs ray[train]")
    return run_trial(tmp_path_factory.mktemp("ddp"))


def run_trial(tmp: Path) -> dict:
    """One 2-worker trial on a private local Ray whose rank 0 is killed once in epoch 1."""
    import ray
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    from fmx import tracking
    from fmx.train_worker import train_loop
    from fmx.trial_support import set_report_poll_interval

    record = tmp / "record"
    record.mkdir()
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    c = tracking.client(uri)
    run_id = c.create_run(c.create_experiment("ddp-review")).info.run_id
    cfg = _cfg()
    env = {RECORD_ENV: str(record), "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO / "tests"), str(REPO),
                                                       os.environ.get("PYTHONPATH")]))}
    saved_env = dict(os.environ)  # ray.init leaves RAY_AUTH_MODE=token (and more) in os.environ: later Ray heads
    # TorchTrainer.fit in this process installs Ray Train's SIGINT handler and leaves it: a later test's Ctrl-C
    # would call into this finished Ray
    saved_signals = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    ray.init(num_cpus=2, include_dashboard=False, runtime_env={"env_vars": env}, log_to_driver=False)
    try:
        set_report_poll_interval()  # as a trial does before its fit (os.environ is restored below)
        result = TorchTrainer(
            train_loop, torch_config=TorchConfig(backend="gloo"),
            train_loop_config={"cfg": cfg, "tracking_uri": uri, "run_id": run_id, "threads_per_worker": 1,
                               "builders": {"module": "test_ddp_review:recording_module",
                                            "data": "test_ddp_review:indexed_data"},
                               "fault": {"epoch": 1, "marker": str(tmp / "killed")}},
            scaling_config=ScalingConfig(num_workers=2, resources_per_worker={"CPU": 1}),
            run_config=RunConfig(name="trial", storage_path=str(tmp / "ray"),
                                 failure_config=FailureConfig(max_failures=1),
                                 checkpoint_config=CheckpointConfig(num_to_keep=None))).fit()
    finally:
        ray.shutdown()
        os.environ.clear()
        os.environ.update(saved_env)  # started by this pytest process would otherwise demand a token
        for sig, handler in saved_signals.items():
            signal.signal(sig, handler)
    rows = {r: [json.loads(line) for line in (record / f"rank{r}.jsonl").read_text().splitlines()] for r in (0, 1)}
    return {"cfg": cfg, "rows": rows, "uri": uri, "run_id": run_id, "result": result, "killed": tmp / "killed",
            "tmp": tmp}


def _attempts(rows):
    """The rows of each worker process (a killed worker group is replaced by new processes)."""
    out = {}
    for row in rows:
        out.setdefault(row["pid"], []).append(row)
    return list(out.values())


def _trained(rows):
    """(epoch, step, lr, idx) of the batches whose step completed: the last attempt wins a step."""
    by_step = {}
    for att in _attempts(rows):
        for row in att:
            if row["event"] == "batch":
                by_step[row["step"]] = row
    return [by_step[s] for s in sorted(by_step)]


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_ranks_train_on_disjoint_reshuffled_shards_through_a_resume(trial):
    rows = trial["rows"]
    assert trial["killed"].exists(), "the fault hook never fired"
    starts = [r for r in rows[0] if r["event"] == "start"]
    assert [s["resumed"] for s in starts] == [False, True] and starts[1]["step"] == 3
    steps_per_epoch = N_TRAIN // 2 // BATCH
    expected = {}
    for rank in (0, 1):
        trained = _trained(rows[rank])
        assert [r["step"] for r in trained] == list(range(EPOCHS * steps_per_epoch))
        for e in range(EPOCHS):
            sampler = ResumableSampler(list(range(N_TRAIN)), num_replicas=2, rank=rank, seed=trial["cfg"]["seed"])
            sampler.set_epoch(e)
            expected[rank, e] = list(sampler)
            got = [i for r in trained if r["epoch"] == e for i in r["idx"]]
            assert got == expected[rank, e], (rank, e)
    for e in range(EPOCHS):
        assert sorted(expected[0, e] + expected[1, e]) == list(range(N_TRAIN))  # disjoint, complete
    assert expected[0, 0] != expected[0, 1]  # reshuffled per epoch


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_lr_schedule_counts_optimizer_steps_of_the_sharded_epoch_across_the_resume(trial):
    """estimated_stepping_batches counts the per-rank (sharded) epoch: 3 steps, not 6; the resumed attempt goes
    on along the same warmup-cosine curve."""
    total = EPOCHS * (N_TRAIN // 2 // BATCH)
    lr = float(trial["cfg"]["optim"]["lr"])
    for rank in (0, 1):
        assert {s["stepping"] for s in trial["rows"][rank] if s["event"] == "start"} == {total}
        for row in _trained(trial["rows"][rank]):
            want = lr * warmup_cosine(row["step"], warmup_steps=WARMUP, total_steps=total)
            assert row["lr"] == pytest.approx(want, rel=1e-6), row


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_ranks_start_from_the_same_weights_but_draw_their_own_random_numbers(trial):
    """Same seed on every rank gave every rank the same torch RNG stream: the same dropout, drop-path and
    masked-reconstruction masks on every rank's (different) samples each step."""
    for attempt in range(2):
        first = [[r for r in trial["rows"][rank] if r["event"] == "start"][attempt] for rank in (0, 1)]
        assert first[0]["params"] == pytest.approx(first[1]["params"], rel=1e-12)
        assert first[0]["rng"] != first[1]["rng"], f"attempt {attempt}: ranks share one RNG stream"


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_metrics_are_logged_once_per_optimizer_step_from_rank_zero(trial):
    """Lightning logs ``train/*`` of optimizer step k at step k and a validation after k + 1 steps at k. Only rank 0
    logs; the one step logged twice is the batch of epoch 1 trained before the kill and again after the resume,
    with the same loss (same weights, optimizer, LR and samples)."""
    from fmx import tracking

    c = tracking.client(trial["uri"])
    history = c.get_metric_history(trial["run_id"], "train/loss")
    steps = [m.step for m in history]
    assert sorted(set(steps)) == list(range(EPOCHS * 3)), steps
    again = sorted({s for s in steps if steps.count(s) > 1})
    assert again == [3], steps  # two ranks logging would double every step
    assert len({round(m.value, 5) for m in history if m.step == 3}) == 1, [m for m in history if m.step == 3]
    val = c.get_metric_history(trial["run_id"], "val/loss")
    assert sorted(m.step for m in val) == [2, 5, 8]
    assert all(math.isfinite(m.value) for m in history + val)
    lrs = {m.step: m.value for m in c.get_metric_history(trial["run_id"], "lr")}
    rank0 = {r["step"]: r["lr"] for r in _trained(trial["rows"][0])}
    assert lrs.keys() == rank0.keys() and all(lrs[s] == pytest.approx(v, rel=1e-6) for s, v in rank0.items())


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_fingerprint_of_a_validation_is_logged_at_the_step_of_its_val_metrics(trial):
    """The fingerprint callback logged at ``global_step`` (3, 6, 9) while the val/* of the same validation sit
    at 2, 5, 8: plotted together in MLflow they were one step apart."""
    from fmx import tracking

    c = tracking.client(trial["uri"])
    val = sorted(m.step for m in c.get_metric_history(trial["run_id"], "val/loss"))
    keys = [k for k in c.get_run(trial["run_id"]).data.metrics if k.startswith("fingerprint/")]
    assert keys
    for key in keys:
        assert sorted({m.step for m in c.get_metric_history(trial["run_id"], key)}) == val, key


class _StepLogger(pl.loggers.logger.Logger):
    """Every (key, step) a Trainer logs."""

    def __init__(self):
        super().__init__()
        self.logged = []

    name, version, experiment = "steps", 0, None

    def log_metrics(self, metrics, step=None):
        self.logged += [(k, step) for k in metrics]

    def log_hyperparams(self, params, *args, **kwargs):
        pass


def test_train_step_callbacks_log_at_the_step_of_the_batch_they_measured():
    """The fingerprint and histogram callbacks run after optimizer step k; Lightning logs that step's train/loss
    at k, they logged at ``global_step`` = k + 1, so each point sat one step after the batch it measured."""
    cfg = tiny_training_config(n_train=4, n_val=2, batch_size=2)
    cfg["fractals"]["log"].update(fingerprint_every_n_steps=1, tb_hist_every_n=1)
    cfg["fractals"]["probes"]["causal_scale_ablation"]["enable"] = False
    logger = _StepLogger()
    trainer = pl.Trainer(max_steps=2, accelerator="cpu", devices=1, logger=logger, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                         num_sanity_val_steps=0, log_every_n_steps=1)
    trainer.fit(NeuroFMxModule(cfg), datamodule=build_datamodule(cfg))
    train = sorted(s for k, s in logger.logged if k == "train/loss")
    assert train == [0, 1]
    for prefix in ("fingerprint/", "hist/"):
        steps = sorted({s for k, s in logger.logged if k.startswith(prefix)})
        assert steps == train, (prefix, logger.logged)  # measured after steps 0 and 1, not at "2"


def _val_rank(out_dir: str) -> None:
    """One rank of the plain 2-process DDP fit below (LOCAL_RANK etc. come from the environment)."""
    import datetime

    from pytorch_lightning.strategies import DDPStrategy

    torch.set_num_threads(1)
    cfg = tiny_training_config(n_train=4, n_val=5, batch_size=2)
    cfg["fractals"]["log"].update(fingerprint_every_n_steps=1000, tb_hist_every_n=1000)
    dm = build_datamodule(cfg)
    dm.val_set = _Indexed(dm.val_set)
    seen = []

    class Record(pl.Callback):
        def on_validation_batch_start(self, trainer, module, batch, batch_idx, dataloader_idx=0):
            seen.extend(batch["index"].tolist())

        def on_fit_end(self, trainer, module):
            Path(out_dir, f"val{trainer.global_rank}.json").write_text(json.dumps(
                {"seen": seen, "val_loss": float(trainer.callback_metrics["val/loss"])}))

    trainer = pl.Trainer(max_steps=1, limit_train_batches=1, accelerator="cpu", devices=2, logger=False,
                         strategy=DDPStrategy(process_group_backend="gloo", find_unused_parameters=True,
                                              timeout=datetime.timedelta(seconds=60)),
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         num_sanity_val_steps=0, callbacks=[Record()])
    trainer.fit(NeuroFMxModule(cfg), datamodule=dm)


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_ddp_validation_scores_each_sample_once(tmp_path):
    """5 validation samples on 2 ranks: Lightning's padded DistributedSampler gave rank 1 sample 0 again, so
    val/* weighted it twice in the global means."""
    from ddp_ranks import run_ranks

    run_ranks(__file__, ["--val-rank", tmp_path], timeout_s=150,
              hang="the DDP fit hung in validation (a rank with one batch fewer?)")
    ranks = [json.loads((tmp_path / f"val{r}.json").read_text()) for r in (0, 1)]
    assert sorted(ranks[0]["seen"] + ranks[1]["seen"]) == list(range(5)), ranks
    assert ranks[0]["val_loss"] == pytest.approx(ranks[1]["val_loss"], rel=1e-6)


if __name__ == "__main__":  # pragma: no cover
    import sys

    if sys.argv[1:2] == ["--val-rank"]:
        _val_rank(sys.argv[2])
    else:
        raise SystemExit(pytest.main([__file__, "-q"]))
