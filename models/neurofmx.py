"""NeuroFMx: tokenizers -> (scale encodings) -> Perceiver-IO -> Mamba-2 stack -> PopT -> heads.

Data flow for a batch (see the models contract):

1. :class:`models.tokenizers.MultimodalTokenizer` turns each modality present into tokens of width
   ``D`` with a time bin per token (``patch_size`` samples per bin).
2. :class:`models.perceiver.PerceiverIOEncoder` fuses modalities and channels per time chunk into a
   latent sequence over time (causal across chunks by default).
3. Optional :class:`models.layers.scale_encoding.ScaleEncoding` adds causal log-spaced band energies.
4. :class:`models.backbones.Mamba2Stack` scans the latent sequence (fused ``mamba_ssm`` kernels on
   CUDA when importable, portable chunked SSD otherwise), optionally with fractional kernels.
5. PopT pools the SSM sequence (and its per-channel tokens) into ``K`` population tokens.
6. Heads compute the task losses; the total is their uncertainty-weighted sum.

``forward(batch)`` returns ``{"loss", "losses", "latents": {"perceiver", "ssm", "popt",
"ssm_states"}, "outputs"}``.
"""
from __future__ import annotations

import math
from typing import Any, Mapping

import torch
import torch.nn as nn
import torch.nn.functional as F

from models.backbones import Mamba2Stack
from models.layers.scale_encoding import ScaleEncoding
from models.perceiver import PerceiverIOEncoder
from models.tokenizers import MultimodalTokenizer
from models.tokenizers.base import patchify, zscore_channels

__all__ = ["NeuroFMx"]

_TIME_MAJOR = ("spikes", "calcium", "fmri")  # (B, T, N) layout; continuous keys are (B, C, T)
_CONTINUOUS = ("lfp", "eeg", "ecog", "ieeg", "emg")


def _signal_channels_last_time(batch: Mapping[str, Any], key: str) -> torch.Tensor:
    x = batch[key].float()
    return x.transpose(1, 2) if key in _TIME_MAJOR else x  # (B, C, T)


class _NextPatchForecast(nn.Module):
    """Forecast the next token bin's channel-averaged, z-scored signal patch of each modality.

    A temporary self-supervised head (replaced by :mod:`models.heads`): prediction at bin ``t`` uses
    the SSM output at bin ``t`` (causal) and is scored against bin ``t + 1``.
    """

    def __init__(self, *, d_model: int, patch_size: int, keys: list[str]):
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.ModuleDict({k: nn.Linear(d_model, patch_size) for k in keys})
        self.loss_names = [f"forecast_{k}" for k in keys]

    def forward(self, h: torch.Tensor, batch: Mapping[str, Any], latents_per_bin: int) -> dict[str, torch.Tensor]:
        losses = {}
        for key, proj in self.proj.items():
            if key not in batch:
                continue
            x = _signal_channels_last_time(batch, key)
            if key == "spikes":
                x = torch.log1p(x.clamp_min(0))
            mask = batch.get(f"{key}_mask")
            x = zscore_channels(x)
            w = torch.ones(x.shape[:2], device=x.device) if mask is None else mask.float()
            target = (patchify(x, self.patch_size) * w[..., None, None]).sum(1) / w.sum(1).clamp_min(1)[:, None, None]
            pred = proj(h[:, latents_per_bin - 1 :: latents_per_bin])  # last latent of each bin
            n = min(pred.shape[1], target.shape[1]) - 1
            if n < 1:
                continue
            losses[f"forecast_{key}"] = F.mse_loss(pred[:, :n], target[:, 1 : n + 1])
        return losses


class NeuroFMx(nn.Module):
    """The NeuroFMx multimodal model.

    Parameters
    ----------
    d_model
        Width of tokens, latents and SSM.
    patch_size
        Samples of the common time axis per token bin.
    tokenizers
        Batch key -> tokenizer options (see :class:`models.tokenizers.MultimodalTokenizer`).
    perceiver
        Options of :class:`models.perceiver.PerceiverIOEncoder` (``n_latents``, ``chunk_size``,
        ``n_heads``, ``n_self_layers``, ``latent_attention``...).
    ssm
        Options of :class:`models.backbones.Mamba2Stack` (``n_layers``, ``d_state``, ``headdim``,
        ``expand``, ``chunk_size``, ``kernels``).
    fractional_kernels
        ``None`` (off) or ``{n_taps, min_alpha, max_alpha}``; adds gated power-law kernels to the
        conv stage of every Mamba-2 block.
    scale_encodings
        ``None`` (off) or ``{wavelet_scales: [...]}``; adds causal band energies before the SSM.
    popt, heads
        Options for the PopT aggregator and the task heads.

    Shape:
        - batch: dict per the models contract
        - latents["perceiver"], latents["ssm"]: ``(B, T_lat, D)``; latents["popt"]: ``(B, K, D)``
    """

    def __init__(self, *, d_model: int, patch_size: int, tokenizers: Mapping[str, Mapping[str, Any]],
                 perceiver: Mapping[str, Any] | None = None, ssm: Mapping[str, Any] | None = None,
                 fractional_kernels: Mapping[str, Any] | None = None,
                 scale_encodings: Mapping[str, Any] | None = None,
                 popt: Mapping[str, Any] | None = None, heads: Mapping[str, Any] | None = None):
        super().__init__()
        if d_model < 8:
            raise ValueError(f"model.d_model: must be >= 8, got {d_model}")
        self.d_model, self.patch_size = int(d_model), int(patch_size)
        self.tokenizer = MultimodalTokenizer(d_model=d_model, patch_size=patch_size, modalities=dict(tokenizers))
        self.perceiver = PerceiverIOEncoder(d_model=d_model, **dict(perceiver or {}))
        self.scale_encoding = None
        if scale_encodings is not None:
            self.scale_encoding = ScaleEncoding(d_model=d_model, scales=list(scale_encodings["wavelet_scales"]))
        ssm = dict(ssm or {})
        n_layers = int(ssm.pop("n_layers", 2))
        self.backbone = Mamba2Stack(d_model=d_model, n_layers=n_layers,
                                    fractional=dict(fractional_kernels) if fractional_kernels else None, **ssm)
        self.heads = _NextPatchForecast(d_model=d_model, patch_size=patch_size,
                                        keys=[k for k in tokenizers if k in _CONTINUOUS + _TIME_MAJOR])
        self.popt = None
        self._popt_cfg = dict(popt or {})
        self._heads_cfg = dict(heads or {})
        # Uncertainty weights (log variances), one per loss the heads can produce; created here so the
        # optimizer and checkpoints see them from the start.
        self.log_vars = nn.ParameterDict({n: nn.Parameter(torch.zeros(())) for n in self.heads.loss_names})

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> "NeuroFMx":
        """Build from the composed config: ``cfg['model']`` plus ``cfg['fractals']['backbone']``."""
        m = dict(cfg.get("model", cfg) or {})
        fr = cfg.get("fractals", {}) or {}
        bb = fr.get("backbone", {}) or {}
        fk = bb.get("fractional_kernels", {}) or {}
        se = bb.get("scale_encodings", {}) or {}
        missing = [k for k in ("d_model", "patch_size", "tokenizers") if k not in m]
        if missing:
            raise ValueError(f"model: missing field(s) {missing}; see platform/fmx/conf/model/tiny.yaml")
        return cls(
            d_model=int(m["d_model"]), patch_size=int(m["patch_size"]), tokenizers=m["tokenizers"],
            perceiver=m.get("perceiver"), ssm=m.get("ssm"),
            fractional_kernels={k: fk[k] for k in ("n_taps", "min_alpha", "max_alpha")} if fk.get("enable") else None,
            scale_encodings={"wavelet_scales": se["wavelet_scales"]} if se.get("enable") else None,
            popt=m.get("popt"), heads=m.get("heads"),
        )

    # ------------------------------------------------------------------ forward
    def encode(self, batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        """Tokenize, fuse and scan: the latents without the heads."""
        tokens = self.tokenizer(batch)
        n_time = self.tokenizer.num_time_tokens(batch)
        per = self.perceiver(tokens.tokens, mask=tokens.mask, time_index=tokens.time_index, n_time=n_time)
        x = per.latents
        if self.scale_encoding is not None:
            x = self.scale_encoding(x)
        h, states = self.backbone(x, return_states=True)
        return {"perceiver": per.latents, "ssm": h, "ssm_states": states[-1], "tokens": tokens}

    def _weighted_total(self, losses: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Kendall et al. (2018) uncertainty weighting: ``sum exp(-s_i) L_i + s_i``."""
        total = None
        for name, value in losses.items():
            if name not in self.log_vars:
                raise ValueError(f"losses: head produced {name!r} but no weight exists; known: {list(self.log_vars)}")
            s = self.log_vars[name]
            term = torch.exp(-s) * value + s
            total = term if total is None else total + term
        if total is None:
            raise ValueError("batch: no head produced a loss; the batch has no target for any configured head")
        return total

    def forward(self, batch: Mapping[str, Any]) -> dict[str, Any]:
        enc = self.encode(batch)
        h = enc["ssm"]
        popt = h.mean(1, keepdim=True)
        losses = self.heads(h, batch, self.perceiver.n_latents)
        return {
            "loss": self._weighted_total(losses),
            "losses": losses,
            "latents": {"perceiver": enc["perceiver"], "ssm": h, "popt": popt,
                        "ssm_states": enc["ssm_states"]},
            "outputs": {},
        }
