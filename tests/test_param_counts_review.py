"""Fine-tuning runs are compared by what they train: the trainable and total parameter counts reach the loggers
(MLflow in a sweep), not only the console."""
from __future__ import annotations

import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers.logger import Logger

from configs import tiny_training_config
from models.data.datamodule import build_datamodule
from models.lightning import build_lightning_module


class _Recording(Logger):
    def __init__(self):
        super().__init__()
        self.rows = []

    @property
    def name(self):
        return "recording"

    @property
    def version(self):
        return "0"

    def log_hyperparams(self, params, *args, **kwargs):
        pass

    def log_metrics(self, metrics, step=None):
        self.rows.append((dict(metrics), step))


def _counts_logged(cfg) -> tuple[dict, object]:
    module = build_lightning_module(cfg)
    logger = _Recording()
    pl.Trainer(max_steps=1, accelerator="cpu", devices=1, logger=logger, enable_checkpointing=False,
               enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
               limit_val_batches=0).fit(module, datamodule=build_datamodule(cfg))
    rows = [(m, step) for m, step in logger.rows if "model/params_total" in m]
    assert len(rows) == 1, logger.rows
    return rows[0], module


def test_lora_fit_logs_its_trainable_share_of_the_parameters():
    torch.manual_seed(0)
    cfg = tiny_training_config()
    cfg["model"]["adapters"]["kind"] = "lora"
    (metrics, step), module = _counts_logged(cfg)
    trainable = sum(p.numel() for p in module.parameters() if p.requires_grad)
    total = sum(p.numel() for p in module.model.parameters())
    assert step == 0
    assert metrics == {"model/params_trainable": float(trainable), "model/params_total": float(total)}
    assert 0 < trainable < 0.2 * total  # LoRA: most weights frozen


def test_a_full_fit_logs_every_parameter_as_trainable():
    torch.manual_seed(0)
    (metrics, _), module = _counts_logged(tiny_training_config())
    assert metrics["model/params_trainable"] == metrics["model/params_total"] == float(
        sum(p.numel() for p in module.model.parameters()))
