"""Optimizer and LR schedule against the length a fit really trains: the schedule's step count, a warmup longer
than the fit, resume, and which parameters get weight decay (NeuroFMx and the byte LM)."""
from __future__ import annotations

import math

import pytest
import pytorch_lightning as pl
import torch

from configs import tiny_training_config


class _RecordLR(pl.Callback):
    """(global_step, lr) at every training batch: the LR each optimizer step really uses."""

    def __init__(self):
        self.lrs = []

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        self.lrs.append((trainer.global_step, trainer.optimizers[0].param_groups[0]["lr"]))


def _cfg(warmup: int, n_train: int = 8, batch_size: int = 2) -> dict:
    cfg = tiny_training_config(n_train=n_train, n_val=2, batch_size=batch_size)
    cfg["data"]["n_time"] = 64
    cfg["fractals"]["enable"] = False
    cfg["optim"]["warmup_steps"] = warmup
    return cfg


def _fit(cfg, *, ckpt_path=None, callbacks=(), **trainer_kwargs):
    from models.registry import build_module_and_data

    pl.seed_everything(0, verbose=False)
    module, dm = build_module_and_data(cfg)
    record = _RecordLR()
    trainer = pl.Trainer(accelerator="cpu", devices=1, limit_val_batches=0, num_sanity_val_steps=0, logger=False,
                         enable_progress_bar=False, enable_model_summary=False,
                         callbacks=[record, *callbacks], **{"enable_checkpointing": False, **trainer_kwargs})
    trainer.fit(module, datamodule=dm, ckpt_path=ckpt_path)
    return trainer, record.lrs


@pytest.mark.parametrize("warmup, warns", [(50, True), (2, False)])
def test_an_lr_warmup_longer_than_the_fit_is_reported(caplog, warmup, warns):
    # The shipped synthetic sweeps run 40-step trials under optim.warmup_steps: 50: the LR climbed for the whole
    # trial and peaked at 0.80 x optim.lr (0.41 x on average) without a word. Two accumulated batches per step:
    # 4 batches a epoch make 2 optimizer steps, the count the message must name.
    with caplog.at_level("WARNING", logger="models.lightning"):
        _fit(_cfg(warmup), max_epochs=1, accumulate_grad_batches=2)
    said = [r.getMessage() for r in caplog.records if "optim.warmup_steps" in r.getMessage()]
    assert len(said) == int(warns)
    if warns:
        assert "optim.warmup_steps=50" in said[0] and "2 optimizer steps" in said[0] and "0.04 x" in said[0]


def test_the_schedule_spans_the_steps_the_trainer_really_takes():
    # total_steps unset: the cosine must end at the fit's last optimizer step whatever accumulation and
    # limit_train_batches make of the epochs (2 epochs x 3 of 4 batches, 2 per step: 2 x ceil(3/2) = 4 steps).
    cfg = _cfg(1)
    trainer, lrs = _fit(cfg, max_epochs=2, limit_train_batches=3, accumulate_grad_batches=2)
    assert trainer.estimated_stepping_batches == 4 and trainer.global_step == 4
    lr = cfg["optim"]["lr"]
    per_step = dict(lrs)
    assert sorted(per_step) == [0, 1, 2, 3]
    for step, value in per_step.items():  # warmup 1 step, then cosine from 1.0 to 0.1 over 3 steps
        want = 1.0 if step == 0 else 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (step - 1) / 3))
        assert value == pytest.approx(lr * want, rel=1e-6), step


def test_a_resumed_fit_continues_the_schedule_where_it_stopped(tmp_path):
    from pytorch_lightning.callbacks import ModelCheckpoint

    cfg = _cfg(2)
    ckpt = ModelCheckpoint(dirpath=tmp_path, save_top_k=-1, every_n_train_steps=3, filename="{step}")
    _, full = _fit(cfg, max_epochs=2, callbacks=[ckpt], enable_checkpointing=True, default_root_dir=tmp_path)
    # step 3 is inside the first epoch of 4 batches: a mid-epoch resume
    _, resumed = _fit(cfg, ckpt_path=str(tmp_path / "step=3.ckpt"), max_epochs=2, default_root_dir=tmp_path)
    assert [s for s, _ in resumed] == [3, 4, 5, 6, 7]
    assert [v for _, v in resumed] == pytest.approx([v for s, v in full if s >= 3], rel=1e-6)


def test_neurofmx_optimizer_takes_the_configured_betas_decay_and_clip():
    cfg = _cfg(0)
    cfg["optim"].update(betas=[0.8, 0.9], weight_decay=0.05, grad_clip=1e-3)
    seen = {}

    class Spy(pl.Callback):
        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):  # grads kept after the step
            seen.setdefault("norm", float(torch.nn.utils.get_total_norm(
                [p.grad for p in module.parameters() if p.grad is not None])))

    trainer, _ = _fit(cfg, max_steps=1, callbacks=[Spy()])
    opt = trainer.optimizers[0]
    assert opt.defaults["betas"] == (0.8, 0.9)
    assert sorted(g["weight_decay"] for g in opt.param_groups) == [0.0, 0.05]
    assert seen["norm"] == pytest.approx(1e-3, rel=1e-3)  # clipped by optim.grad_clip, the Trainer set none


def test_byte_lm_skips_weight_decay_on_norms_biases_and_ssm_scalars():
    # optim.weight_decay is "skipped for norms and biases" (conf/config.yaml), and the byte LM reads it: AdamW
    # decayed every parameter, Mamba's A_log/D/dt_bias and the RMSNorm gains too, pulling A_log (the SSM's decay
    # rates) towards 0 at every step.
    from models.byte.lightning import build_lightning_module

    module = build_lightning_module({"model": {"family": "fractal_byte", "d_model": 32, "n_layers": 1,
                                               "n_fractals": 1, "depth_range": [1, 1], "dim_range": [32, 32],
                                               "mamba": {"d_state": 8, "headdim": 16}},
                                     "optim": {"weight_decay": 0.1}})
    opt = module.configure_optimizers()
    opt = opt["optimizer"] if isinstance(opt, dict) else opt
    decay_of = {id(p): g["weight_decay"] for g in opt.param_groups for p in g["params"]}
    assert len(decay_of) == sum(1 for _ in module.parameters())
    for name, p in module.named_parameters():
        quiet = p.ndim < 2 or getattr(p, "_no_weight_decay", False) or "norm" in name.lower()
        assert decay_of[id(p)] == (0.0 if quiet else 0.1), name
    mixer = module.model.layers[0].mixer
    assert decay_of[id(mixer.A_log)] == 0.0 and decay_of[id(mixer.in_proj.weight)] == 0.1
