"""Review of long NeuroFMx runs through the LightningModule and its callbacks, as a user runs them: an
interrupted fit resumed mid-epoch against an uninterrupted one, gradient accumulation and the steps the
callbacks log at, validation schedules, a validation set of one batch, and ``val/loss`` over batches where
some head had nothing to score."""
from __future__ import annotations

import csv
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import CSVLogger
from torch.utils.data import DataLoader

from configs import tiny_training_config
from models.data.batch import collate_batch
from models.data.datamodule import build_datamodule
from models.lightning import build_lightning_module

_QUIET = dict(accelerator="cpu", devices=1, num_sanity_val_steps=0, enable_progress_bar=False,
              enable_model_summary=False)


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _cfg(*, n_train=8, n_val=2, batch_size=1, every=1000, ablation=False, **priors) -> dict:
    cfg = tiny_training_config(n_train=n_train, n_val=n_val, batch_size=batch_size, **priors)
    cfg["fractals"]["log"].update(fingerprint_every_n_steps=every, tb_hist_every_n=every)
    cfg["fractals"]["probes"]["causal_scale_ablation"]["enable"] = ablation
    return cfg


def _fit(cfg, tmp_path, name, *, ckpt_path=None, callbacks=(), **kw):
    from models.registry import build_module_and_data

    pl.seed_everything(0, verbose=False)
    module, dm = build_module_and_data(cfg)
    trainer = pl.Trainer(**_QUIET, logger=CSVLogger(tmp_path, name=name), callbacks=list(callbacks),
                         **{"enable_checkpointing": False, "log_every_n_steps": 1, **kw})
    trainer.fit(module, datamodule=dm, ckpt_path=ckpt_path)
    return trainer, module


def _rows(trainer) -> list[tuple[int, dict]]:
    """(step, {key: value}) per row of the CSV logger, empty cells and epoch left out."""
    with open(Path(trainer.logger.log_dir) / "metrics.csv") as f:
        return [(int(r["step"]), {k: float(v) for k, v in r.items() if v and k not in ("step", "epoch")})
                for r in csv.DictReader(f)]


# ----------------------------------------------------------------------------- resume
def test_a_fit_interrupted_mid_epoch_and_resumed_matches_an_uninterrupted_one(tmp_path):
    """6 optimizer steps of 2 accumulated batches (4 steps per epoch), the priors switched on at step 1 and ramped
    over 2 steps, the LR warmed up and decayed, the fingerprint and histogram callbacks every 2 steps, against 2
    steps, a checkpoint inside epoch 0 (after batch 4 of 8) and 4 more: the same weights and the same logged rows.
    The callbacks measured and logged again on the resumed fit's first micro-batch (global_step 2 again, before
    any optimizer step): an extra fingerprint and histogram at step 2, taken on the wrong batch."""
    from pytorch_lightning.callbacks import ModelCheckpoint

    cfg = _cfg(every=2, warmup_steps=1, ramp_steps=2)
    cfg["optim"].update(warmup_steps=1, total_steps=6)  # the interrupted fit must share the uninterrupted schedule
    kw = dict(max_steps=6, accumulate_grad_batches=2, limit_val_batches=0)
    full, full_module = _fit(cfg, tmp_path, "full", **kw)
    ckpt = ModelCheckpoint(dirpath=tmp_path / "ck", save_top_k=-1, every_n_train_steps=2, filename="{step}")
    _fit(cfg, tmp_path, "half", callbacks=[ckpt], **{**kw, "max_steps": 2, "enable_checkpointing": True})
    resumed, resumed_module = _fit(cfg, tmp_path, "resumed", ckpt_path=tmp_path / "ck" / "step=2.ckpt", **kw)
    assert resumed.global_step == full.global_step == 6
    for (name, a), (_, b) in zip(full_module.named_parameters(), resumed_module.named_parameters()):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6, msg=name)
    later = [(s, r) for s, r in _rows(full) if s >= 2]
    assert [s for s, _ in _rows(resumed)] == [s for s, _ in later] == [2, 3, 3, 3, 4, 5, 5, 5]
    for (step, got), (_, want) in zip(_rows(resumed), later):
        assert got.keys() == want.keys(), step
        assert got == pytest.approx(want, rel=1e-4, abs=1e-6), step
    assert "train/prior_loss" in dict(later)[4]  # the priors were on after the resume, at full weight
    logged = [s for s, r in _rows(full) if "fingerprint/ssm/higuchi_fd_mean" in r]
    assert logged == [s for s, r in _rows(full) if "hist/latent_hfd_p50" in r] == [1, 3, 5]  # after steps 2, 4, 6


# ----------------------------------------------------------------------------- val/loss
class _Val(pl.LightningDataModule):
    def __init__(self, cfg, batch_size):
        super().__init__()
        self.inner, self.batch_size = build_datamodule(cfg), batch_size

    def val_dataloader(self):
        self.inner.setup("validate")
        return DataLoader(self.inner.val_set, batch_size=self.batch_size, collate_fn=collate_batch)


def test_val_loss_is_the_weighted_total_of_each_heads_epoch_mean():
    """A contrastive head scores only batches of >= 2 samples: 3 validation windows in batches of 2 leave it out of
    the last batch, whose weighted total (of the other heads only) is smaller. Averaging the batches' totals
    mixed totals of different heads, so val/loss fell with the batch size (0.12 lower here) on the same model."""
    cfg = _cfg(n_val=3)
    cfg["model"]["heads"]["contrastive"] = {"view": "behavior", "dim_b": 2, "proj_dim": 16, "pairing": "sample"}
    torch.manual_seed(0)
    module = build_lightning_module(cfg)
    with torch.no_grad():  # weights away from 1, so the test also checks which weights apply
        for i, p in enumerate(module.model.loss_weighting.log_vars.values()):
            p.fill_(0.3 * (i - 1))
    by2 = pl.Trainer(**_QUIET, logger=False).validate(module, datamodule=_Val(cfg, 2), verbose=False)[0]
    heads = {name: torch.tensor(by2[f"val/{name}_loss"]) for name in module.model.loss_names}
    assert set(heads) == {"forecast_lfp", "forecast_spikes", "behavior", "contrastive"}
    with torch.no_grad():
        expected = float(module.model.loss_weighting(heads))
    assert by2["val/loss"] == pytest.approx(expected, rel=1e-5)


class _RecordLR(pl.Callback):
    def __init__(self):
        self.lrs = []

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        self.lrs.append((trainer.global_step, trainer.optimizers[0].param_groups[0]["lr"]))


def test_a_fit_resumed_to_train_longer_takes_its_first_step_on_the_new_schedule(tmp_path):
    """A 1-epoch fit (4 steps) resumed with max_epochs=3: the cosine is rebuilt over 12 steps and continues at step 4,
    but the first resumed step ran at the old fit's last LR (0.1 x lr, the end of a 4-step cosine), not 0.85 x lr."""
    cfg = _cfg(batch_size=2)
    cfg["fractals"]["enable"] = False
    cfg["optim"]["warmup_steps"] = 1
    first, _ = _fit(cfg, tmp_path, "first", max_epochs=1, limit_val_batches=0)
    first.save_checkpoint(tmp_path / "epoch1.ckpt")
    resumed, full = _RecordLR(), _RecordLR()
    _fit(cfg, tmp_path, "resumed", ckpt_path=tmp_path / "epoch1.ckpt", callbacks=[resumed], max_epochs=3,
         limit_val_batches=0)
    _fit(cfg, tmp_path, "full", callbacks=[full], max_epochs=3, limit_val_batches=0)
    assert [s for s, _ in resumed.lrs] == list(range(4, 12))
    assert [v for _, v in resumed.lrs] == pytest.approx([v for _, v in full.lrs[4:]], rel=1e-6)


# ----------------------------------------------------------------------------- callbacks on short latents
def test_the_fingerprint_says_when_the_latents_are_too_short_for_every_measure(tmp_path, caplog):
    """16-sample windows give the tiny model 4 latent steps: the probe leaves out every measure, and the run logged
    fingerprint/*/n_dead alone, without a word why. Training, validation and the other callbacks carry on."""
    import logging

    from models import callbacks

    callbacks._WARNED.discard("fingerprint-short")
    cfg = _cfg(n_train=2, n_val=1, every=1, ablation=True, lambda_mf=0.0, lambda_spec=0.0)
    cfg["data"]["n_time"] = 16
    with caplog.at_level(logging.WARNING, logger="models.callbacks"):
        trainer, _ = _fit(cfg, tmp_path, "short", max_steps=2)
    rows = _rows(trainer)
    fingerprints = [r for _, r in rows if any(k.startswith("fingerprint/") for k in r)]
    assert len(fingerprints) == 2 and all(set(r) == {"fingerprint/perceiver/n_dead", "fingerprint/ssm/n_dead"}
                                          for r in fingerprints)
    text = " ".join(r.getMessage() for r in caplog.records if r.name == "models.callbacks")
    assert "too short for every fractal measure" in text and "'ssm': 4" in text, text
    val = [r for _, r in rows if "val/loss" in r]
    assert len(val) == 1 and all(torch.isfinite(torch.tensor(v)) for v in val[0].values())
    assert "val/ablation_delta_loss" in val[0]


class _HistogramLogger(pl.loggers.Logger):
    """A logger whose experiment takes histograms, like TensorBoard's (not installed here)."""

    def __init__(self):
        super().__init__()
        self.histograms, self.scalars = [], {}

    name = "hist"
    version = 0

    @property
    def experiment(self):
        return self

    def add_histogram(self, tag, values, global_step=None):
        self.histograms.append((tag, global_step))

    def log_metrics(self, metrics, step=None):
        self.scalars.setdefault(step, {}).update(metrics)

    def log_hyperparams(self, params, *args, **kwargs):
        pass


def test_histograms_and_fingerprints_reach_every_logger(tmp_path):
    """Trainer(logger=[CSVLogger, TensorBoard-like]): the callbacks wrote to pl_module.logger, the first one only, so
    the TensorBoard logger got neither the histograms the docs promise to loggers that take them nor any
    fingerprint/hist scalars, while Lightning's own train/* and val/* reached both."""
    cfg = _cfg(n_train=4, every=2)
    hist = _HistogramLogger()
    pl.seed_everything(0, verbose=False)
    trainer = pl.Trainer(**_QUIET, logger=[CSVLogger(tmp_path, name="csv"), hist], enable_checkpointing=False,
                         log_every_n_steps=1, max_steps=2, limit_val_batches=0)
    trainer.fit(build_lightning_module(cfg), datamodule=build_datamodule(cfg))
    assert {tag for tag, step in hist.histograms if step == 1} == {"hist/latent_beta", "hist/latent_hfd",
                                                                   "hist/latent_dfa"}
    assert {"fingerprint/ssm/higuchi_fd_mean", "hist/latent_hfd_p50", "train/loss"} <= set(hist.scalars[1])
    csv_keys = set().union(*(r for s, r in _rows(trainer) if s == 1))
    assert {"fingerprint/ssm/higuchi_fd_mean", "hist/latent_hfd_p50", "train/loss"} <= csv_keys


# ----------------------------------------------------------------------------- validation schedules
@pytest.mark.parametrize("kw, val_steps", [
    (dict(max_epochs=3, check_val_every_n_epoch=2), [3]),  # after epoch 2 (steps 2 and 3 of 2 per epoch)
    (dict(max_epochs=1, limit_val_batches=0), []),  # no validation: no val/* key, the ablation callback quiet
])
def test_validation_schedules_log_every_key_exactly_when_validation_runs(tmp_path, kw, val_steps):
    cfg = _cfg(n_train=2, n_val=1, ablation=True)
    trainer, _ = _fit(cfg, tmp_path, "sched", limit_train_batches=2, **kw)
    rows = [(s, r) for s, r in _rows(trainer) if any(k.startswith("val/") for k in r)]
    assert [s for s, _ in rows] == val_steps
    want = {"val/loss", "val/forecast_lfp_loss", "val/forecast_spikes_loss", "val/behavior_loss", "val/latent_beta",
            "val/latent_hfd", "val/latent_dfa", "val/ablation_delta_loss", "val/ablation_delta_beta",
            "val/ablation_delta_hfd", "val/ablation_delta_dfa"}
    for _, r in rows:  # one validation batch of one window: every head, measure and ablation delta, all finite
        assert {k for k in r if k.startswith("val/")} == want
        assert all(torch.isfinite(torch.tensor(v)) for v in r.values())
