"""Build-time parts of NeuroFMx: the signal-key tables and the heads and scale encoding built from their options."""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch.nn as nn

from models._config_options import _build_part, _head_options, _int_option
from models.heads import (
    BehaviorHead,
    ContrastiveHead,
    DomainAdversarialHead,
    ForecastHead,
    MaskedReconstructionHead,
)
from models.layers.scale_encoding import ScaleEncoding, WaveletScatteringEncoding

__all__ = ["SIGNAL_KEYS"]

SIGNAL_KEYS = ("spikes", "lfp", "eeg", "ecog", "ieeg", "emg", "calcium", "fmri")
_COUNT_KEYS = ("spikes",)  # Poisson losses; everything else is z-scored MSE
_VOCAB_OPTION = {"spikes": "n_units", "calcium": "n_neurons", "fmri": "n_rois"}


def _vocab(key: str, opts: Mapping[str, Any], default: int = 256) -> int:
    """Channel-id vocabulary of a modality, read from its tokenizer options."""
    for name in (_VOCAB_OPTION.get(key), "n_channels", "n_units", "n_channel_ids"):
        if name and name in opts:
            return int(opts[name])
    return default


class _NeuroFMxParts:
    """Mixin of :class:`models.neurofmx.NeuroFMx`: builds its heads and scale encoding in ``__init__``."""

    def _build_scale_encoding(self, se: dict | None, heads: Mapping[str, Any] | None) -> nn.Module | None:
        if se is None:
            return None
        kind = se.get("kind", "filterbank")
        if kind == "filterbank":
            scales = se.get("wavelet_scales")
            if not scales or isinstance(scales, (str, bytes)) or not isinstance(scales, Sequence):
                raise ValueError("fractals.backbone.scale_encodings.wavelet_scales: kind 'filterbank' needs a list of "
                                 f"scales in latent steps, e.g. [8, 16, 32, 64]; got {se.get('wavelet_scales')!r}")
            return _build_part("fractals.backbone.scale_encodings.wavelet_scales", ScaleEncoding, d_model=self.d_model,
                               scales=list(se["wavelet_scales"]))
        if kind == "scattering":
            if _head_options(dict(heads or {}), "forecast") is not None:
                raise ValueError(
                    "fractals.backbone.scale_encodings.kind: 'scattering' is non-causal and the forecast head "
                    "would see the future; use kind=filterbank or drop model.heads.forecast"
                )
            opts = {k: _int_option(se[k], f"fractals.backbone.scale_encodings.{k}", 1) for k in ("J", "Q", "n_probe")
                    if k in se}
            return WaveletScatteringEncoding(d_model=self.d_model, **opts)
        raise ValueError(f"fractals.backbone.scale_encodings.kind: must be 'filterbank' or 'scattering', got {kind!r}")

    def _build_heads(self, heads: dict[str, Any]) -> None:
        unknown = set(heads) - {"forecast", "reconstruction", "behavior", "contrastive", "adversarial"}
        if unknown:
            raise ValueError(f"model.heads: unknown head(s) {sorted(unknown)}; allowed: forecast, reconstruction, "
                             "behavior, contrastive, adversarial")
        d, p = self.d_model, self.step_size
        self.forecast = nn.ModuleDict()
        self.reconstruction = nn.ModuleDict()
        self.mask_ratio = 0.0
        for kind, table in (("forecast", self.forecast), ("reconstruction", self.reconstruction)):
            opts = _head_options(heads, kind)
            if opts is None:
                continue
            keys = opts.pop("keys", [k for k in self.tokenizer_options if k in SIGNAL_KEYS])
            if isinstance(keys, str) or not isinstance(keys, Sequence):
                raise ValueError(f"model.heads.{kind}.keys: needs a list of modality names, e.g. [lfp], got {keys!r}")
            if not keys:  # built a head with nothing to score, silently
                raise ValueError(f"model.heads.{kind}.keys: needs at least one modality, e.g. [lfp], got []; turn the "
                                 f"head off with model.heads.{kind}: null")
            if "loss" in opts:
                raise ValueError(f"model.heads.{kind}.loss: the loss is set per modality (poisson for spikes, mse "
                                 f"otherwise), got {opts['loss']!r}; remove the option")
            if kind == "reconstruction":
                ratio = opts.pop("mask_ratio", 0.25)
                try:
                    self.mask_ratio = float(ratio)
                except (TypeError, ValueError):
                    self.mask_ratio = float("nan")
                if not 0.0 < self.mask_ratio < 1.0:
                    raise ValueError(f"model.heads.reconstruction.mask_ratio: must lie in (0, 1), got {ratio!r}")
            for key in keys:
                if key not in SIGNAL_KEYS:
                    raise ValueError(f"model.heads.{kind}.keys: {key!r} is not a signal modality {SIGNAL_KEYS}")
                cls = ForecastHead if kind == "forecast" else MaskedReconstructionHead
                loss = "poisson" if key in _COUNT_KEYS else "mse"
                # The readout takes the ids its tokenizer takes: the tokenizer's own vocabulary, defaults included
                # (spikes and calcium default to 1024 ids, fMRI to 400), not a fixed 256.
                embed = getattr(self.tokenizer.tokenizers[key], "embed", None) if key in self.tokenizer.tokenizers \
                    else None
                n_ids = getattr(embed, "n_channel_ids", None)
                n_ids = _vocab(key, self.tokenizer_options.get(key, {})) if n_ids is None else n_ids
                if n_ids == 0:  # the head's own check named its n_channel_ids, an option no config holds
                    option = getattr(embed, "vocab_option", "n_channels")
                    raise ValueError(f"model.tokenizers.{key}.{option}: 0 (no channel ids) leaves model.heads.{kind} "
                                     f"no channel vocabulary to read {key!r} out by; set it to the number of "
                                     "channels/units (ids lie in [0, n)), or drop the key from the head's keys")
                table[key] = _build_part(f"model.heads.{kind}", cls, d_model=d, patch_size=p, loss=loss,
                                         n_channel_ids=n_ids, **opts)
        self.behavior = None
        opts = _head_options(heads, "behavior")
        if opts is not None:
            if "n_features" not in opts:
                raise ValueError("model.heads.behavior.n_features: required, the number of behaviour features "
                                 "(e.g. 2 for x/y kinematics)")
            opts["n_features"] = _int_option(opts["n_features"], "model.heads.behavior.n_features", 1)
            self.behavior = _build_part("model.heads.behavior", BehaviorHead, d_model=d, patch_size=p, **opts)
        self.contrastive, self.contrastive_view = None, None
        opts = _head_options(heads, "contrastive")
        if opts is not None:
            self.contrastive_view = opts.pop("view", "behavior")
            if not isinstance(self.contrastive_view, str):  # never a batch key: the head silently never scored
                raise ValueError("model.heads.contrastive.view: needs the batch key of the second view, e.g. "
                                 f"behavior, got {self.contrastive_view!r}")
            if "dim_b" not in opts:
                raise ValueError("model.heads.contrastive.dim_b: required, the feature width of the view "
                                 f"{self.contrastive_view!r} (behavior: model.heads.behavior.n_features)")
            self.contrastive_dim_b = _int_option(opts.pop("dim_b"), "model.heads.contrastive.dim_b", 1)
            self.contrastive = _build_part("model.heads.contrastive", ContrastiveHead, dim_a=d,
                                           dim_b=self.contrastive_dim_b, **opts)
        self.adversarial, self.adversarial_target = None, None
        opts = _head_options(heads, "adversarial")
        if opts is not None:
            self.adversarial_target = opts.pop("target", "subject")
            if not isinstance(self.adversarial_target, str):  # never a batch key: the head silently never scored
                raise ValueError("model.heads.adversarial.target: needs the batch key of the domain labels, e.g. "
                                 f"subject, got {self.adversarial_target!r}")
            if "n_domains" not in opts:
                raise ValueError("model.heads.adversarial.n_domains: required, the number of subjects or species "
                                 f"(labels of batch[{self.adversarial_target!r}] lie in [0, n_domains))")
            self.adversarial = _build_part("model.heads.adversarial", DomainAdversarialHead, d_model=d, **opts)
        names = [f"forecast_{k}" for k in self.forecast] + [f"recon_{k}" for k in self.reconstruction]
        names += [n for n, h in (("behavior", self.behavior), ("contrastive", self.contrastive),
                                 ("adversarial", self.adversarial)) if h is not None]
        if not names:
            raise ValueError("model.heads: configure at least one head, e.g. {forecast: {keys: [lfp]}}")
        self.loss_names = names
