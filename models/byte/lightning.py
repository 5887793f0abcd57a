"""LightningModule for the byte model: next-byte cross-entropy, reported in bits per byte."""
from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import pytorch_lightning as pl
import torch
from torch import nn

from models._config_options import _refuse_float16_weights
from models.byte.model import FractalByteLM
from models.byte.tokenizer import PAD, VOCAB_SIZE


class FractalByteModule(pl.LightningModule):
    """Wraps :class:`FractalByteLM`; logs ``train/loss``, ``val/loss`` and ``val/bpb``."""

    def __init__(self, *, model: Mapping[str, Any], lr: float = 3e-3, weight_decay: float = 0.01) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.model = FractalByteLM(**dict(model))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.model(ids)

    @staticmethod
    def _targets(logits: torch.Tensor, y) -> torch.Tensor:
        """``y`` checked against the logits: byte ids in ``[0, 259)``, one per input position."""
        if not isinstance(y, torch.Tensor) or y.is_floating_point() or y.is_complex() or \
                tuple(y.shape) != tuple(logits.shape[:2]):
            got = f"{tuple(y.shape)} {y.dtype}" if isinstance(y, torch.Tensor) else type(y).__name__
            raise ValueError(f"batch targets: need integer next-byte ids of shape {tuple(logits.shape[:2])} (one per "
                             f"input byte), got {got}")
        y = y.long()
        if y.numel():
            lo, hi = torch.stack(torch.aminmax(y)).tolist()
            # -100 (cross_entropy's ignore_index) made an all-ignored batch's loss NaN and left it out of val/bpb
            # while counting it as a real byte; > 258 failed as "Target ... is out of bounds"
            if lo < 0 or hi >= VOCAB_SIZE:
                raise ValueError(f"batch targets: byte ids must lie in [0, {VOCAB_SIZE}), got range [{lo}, {hi}]; pad "
                                 f"with PAD={PAD} instead")
        return y

    def _loss(self, batch) -> torch.Tensor:
        x, y = batch
        logits = self(x)
        y = self._targets(logits, y)
        return nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), y.reshape(-1))

    def training_step(self, batch, batch_idx):
        loss = self._loss(batch)
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        logits = self(x)
        y = self._targets(logits, y)
        nll = nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), y.reshape(-1), reduction="none")
        # Bits per byte count real bytes only: EOS separators and padding are not bytes of the data.
        real = y.reshape(-1) < 256
        n_real = int(real.sum())
        bpb = nll[real].sum() / max(n_real, 1) / math.log(2)
        self.log_dict({"val/loss": nll.mean()}, prog_bar=True, sync_dist=True)
        # Weighted by real bytes: a batch of EOS-only targets weighs 0 instead of adding a perfect 0.0 bpb.
        self.log_dict({"val/bpb": bpb}, prog_bar=True, sync_dist=True, batch_size=n_real)

    def configure_optimizers(self):
        from models.lightning import param_groups

        _refuse_float16_weights(self.parameters())
        # optim.weight_decay on weight matrices only, as for NeuroFMx: decaying Mamba's A_log/D/dt_bias pulled the
        # SSM's decay rates towards exp(0) at every step, and the RMSNorm gains towards 0
        return torch.optim.AdamW(param_groups(self.model, self.hparams.weight_decay), lr=self.hparams.lr)


def _is_list(value: Any) -> bool:
    return isinstance(value, Sequence) and not isinstance(value, (str, bytes))


_MODEL_KEYS = ("d_model", "n_layers", "n_fractals", "depth_range", "dim_range", "seed", "drop_path", "mamba")


def build_lightning_module(cfg: Mapping[str, Any]) -> FractalByteModule:
    """Entry point for :mod:`models.registry` (``model.family: fractal_byte``)."""
    m = dict(cfg.get("model", {}))
    # A range that is no list is passed as given, for the model to refuse by name (tuple(3) was a TypeError).
    kwargs = {k: (list(m[k]) if k.endswith("_range") and _is_list(m[k]) else m[k])
              for k in _MODEL_KEYS if m.get(k) is not None}
    if "mamba" in kwargs:
        kwargs["mamba"] = dict(kwargs["mamba"])
    kwargs.setdefault("seed", int(cfg.get("seed", 0)))
    optim = cfg.get("optim", {})
    lr, decay = m.get("lr", optim.get("lr", 3e-3)), optim.get("weight_decay", 0.01)
    for name, value, ok in (("model.lr", lr, lambda v: 0 < v < math.inf), ("optim.weight_decay", decay,
                                                                           lambda v: 0 <= v < math.inf)):
        try:  # lr 0 would train nothing without a word
            good = not isinstance(value, bool) and ok(float(value))
        except (TypeError, ValueError):
            good = False
        if not good:
            raise ValueError(f"{name}: needs a finite number {'> 0' if name == 'model.lr' else '>= 0'}, got {value!r}")
    try:
        return FractalByteModule(model=kwargs, lr=float(lr), weight_decay=float(decay))
    except ValueError as exc:  # the model names the option ("d_model: ..."); say where it lives in the config
        raise ValueError(f"model.{exc}") from exc


def load_for_inference(checkpoint: str, map_location: str = "cpu") -> FractalByteLM:
    """The byte model from a Lightning checkpoint written by a trial."""
    module = FractalByteModule.load_from_checkpoint(checkpoint, map_location=map_location)
    return module.model.eval()
