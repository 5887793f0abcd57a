"""Epoch-end callbacks that measure the first validation batch reuse the validation's own forward of it.

The causal scale ablation (models) and the platform's latent fingerprint (fmx) each ran a forward of that batch
of their own, on top of the validation step's: on the tiny preset a third of the fingerprint's time per evaluation.
"""
from __future__ import annotations

import pytest
import torch

import pytorch_lightning as pl

from configs import tiny_training_config
from fmx.latents import latent_fingerprint
from models.callbacks import CausalScaleAblationCallback, eval_forward
from models.data.datamodule import build_datamodule
from models.lightning import build_lightning_module


class _Probe(pl.Callback):
    """Counts the module's forward passes per validation and measures the first batch as the callbacks do."""

    def __init__(self):
        self.forwards, self.batch, self.fingerprints, self.cached_seen = 0, None, [], []

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        if batch_idx == 0:
            self.batch = batch

    def on_validation_epoch_end(self, trainer, pl_module):
        self.cached_seen.append(pl_module.first_validation_forward is not None)
        self.fingerprints.append(latent_fingerprint(pl_module, self.batch)[1])


def _fit(tmp_path, callbacks):
    torch.set_num_threads(1)
    cfg = tiny_training_config(n_train=8, n_val=8, batch_size=4)
    torch.manual_seed(0)
    module = build_lightning_module(cfg)
    calls = []
    module.register_forward_hook(lambda *_: calls.append(module.trainer.state.stage))
    trainer = pl.Trainer(max_epochs=2, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                         limit_train_batches=1, limit_val_batches=2, callbacks=callbacks, default_root_dir=tmp_path)
    trainer.fit(module, datamodule=build_datamodule(cfg))
    return module, cfg, [s.value for s in calls]


def test_fingerprint_and_ablation_add_only_the_ablated_forward_per_validation(tmp_path):
    probe = _Probe()
    ablation = CausalScaleAblationCallback(mode="high_beta_only", ablate_ratio=0.15, cfg_fractals={})
    module, cfg, calls = _fit(tmp_path, [ablation, probe])
    # per validation: 2 validation steps + the ablated copy; the intact batch and the fingerprint cost none
    assert calls.count("validate") == 2 * 3, calls
    assert probe.cached_seen == [True, True]
    assert module.first_validation_forward is None  # not kept through the next training epoch

    # The reused forward is the forward: a fresh fingerprint of the same batch, same weights, agrees exactly.
    fresh = latent_fingerprint(module, probe.batch)[1]
    assert fresh and fresh == pytest.approx(probe.fingerprints[-1], rel=1e-6, abs=1e-9)


def test_another_batch_or_training_mode_runs_its_own_forward(tmp_path):
    cfg = tiny_training_config(n_train=8, n_val=8, batch_size=4)
    module = build_lightning_module(cfg)
    data = build_datamodule(cfg)
    data.setup("fit")
    batch = next(iter(data.val_dataloader()))
    sentinel = {"latents": {}, "loss": torch.tensor(0.0)}
    module.eval()
    module.first_validation_forward = (batch, sentinel)
    assert eval_forward(module, batch) is sentinel
    assert eval_forward(module, dict(batch)) is not sentinel  # an equal copy is not the batch the step saw
    module.train()
    out = eval_forward(module, batch)  # a training module was not the one that produced the cached output
    assert out is not sentinel and module.training  # and it is left in the mode it was in
