"""Synthetic multimodal recordings with known ground truth: the default NeuroFMx dataset.

Generative model, per sample (one window of ``n_time`` bins at ``fs`` Hz):

1. Latent drives ``z (T, K)``: fractional Ornstein-Uhlenbeck series (long memory, Hurst ``hurst``,
   mean reversion ``theta``; :func:`fractals.simulators.fractional_ou`), standardised per drive.
2. Spikes ``(T, U)``: ``Poisson(softplus(z @ C_s + b_s))`` counts per bin with a subject-specific
   readout ``C_s (K, U)`` and a bias giving ``base_rate_hz`` at ``z = 0``.
3. LFP ``(C, T)``: ``lfp_gain * (z @ A_s).T`` plus 1/f^``lfp_beta`` noise with an oscillatory peak
   at ``peak_hz`` (:func:`fractals.stimuli.one_over_f_noise`).
4. Behaviour ``(T, F)``: ``z @ W + behavior_noise * noise``, one readout ``W`` shared by subjects,
   so behaviour is linearly decodable from the drives (R^2 ~ 1 / (1 + noise^2 / var)).
5. Optional ``stimulus`` modality (add it to ``modalities``): each sample shows one of
   ``n_stimuli`` stimuli, given as an embedding ``(stimulus_dim,)`` plus its ``stimulus_id``; the
   stimulus shifts the drives by ``stimulus_gain * o_k``, so neural data and stimulus share
   information (a target for the contrastive head).

Subjects differ in their unit and channel counts (subject ``s`` keeps ``n_units - s * n_units // 4``
units but at least 1, likewise channels; the rest is padding marked in the masks) and in their readouts, which
exercises padding masks and the domain-adversarial head. Unit ids are global: ``s * n_units + u``.

Every sample is a pure function of ``(seed, split, index)``, so the data are identical in any
worker, process or DDP rank; the readouts depend only on ``seed`` and are shared by the splits.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping, Optional

import numpy as np
import torch
from torch.utils.data import Dataset

from fractals.simulators import fractional_ou
from fractals.stimuli import one_over_f_noise

__all__ = ["SyntheticConfig", "SyntheticNeuralDataset", "SPLITS", "MODALITIES"]

SPLITS = ("train", "val", "test")
MODALITIES = ("spikes", "lfp", "behavior", "stimulus")
DEFAULT_MODALITIES = ("spikes", "lfp", "behavior")


@dataclasses.dataclass(frozen=True)
class SyntheticConfig:
    """Generator settings (each field's reason in platform/fmx/conf/data/synthetic.yaml)."""

    n_time: int = 256
    fs: float = 100.0
    n_latents: int = 4
    n_units: int = 32
    n_lfp_channels: int = 8
    n_behavior: int = 2
    n_subjects: int = 2
    hurst: float = 0.75
    theta: float = 2.0
    base_rate_hz: float = 10.0
    spike_gain: float = 0.8
    lfp_gain: float = 0.5
    lfp_beta: float = 1.5
    peak_hz: float = 10.0
    peak_ratio: float = 4.0
    behavior_noise: float = 0.1
    n_stimuli: int = 4
    stimulus_dim: int = 8
    stimulus_gain: float = 1.0
    modalities: tuple[str, ...] = DEFAULT_MODALITIES
    include_drives: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("n_time", "n_latents", "n_units", "n_lfp_channels", "n_behavior", "n_subjects", "n_stimuli",
                     "stimulus_dim"):
            v = getattr(self, name)
            if not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"data.{name}: must be an integer >= 1, got {v!r}")
        if not isinstance(self.seed, (int, np.integer)) or self.seed < 0:  # numpy SeedSequence entropy
            raise ValueError(f"data.seed: must be an integer >= 0, got {self.seed!r}")
        if self.n_time < 16:
            raise ValueError(f"data.n_time: needs >= 16 bins for the drive simulator, got {self.n_time}")
        if not 0 < self.hurst < 1:
            raise ValueError(f"data.hurst: must lie in (0, 1), got {self.hurst!r}")
        for name in ("fs", "theta", "base_rate_hz"):
            if not getattr(self, name) > 0:
                raise ValueError(f"data.{name}: must be > 0, got {getattr(self, name)!r}")
        if self.base_rate_hz >= self.fs:
            raise ValueError(f"data.base_rate_hz: {self.base_rate_hz} must be below fs={self.fs} (counts per bin < 1)")
        if not 0 < self.peak_hz < self.fs / 2:
            raise ValueError(f"data.peak_hz: must lie in (0, fs/2 = {self.fs / 2}), got {self.peak_hz!r}")
        bad = sorted(set(self.modalities) - set(MODALITIES))
        if bad or not self.modalities:
            raise ValueError(f"data.modalities: unknown {bad or 'empty list'}; choose from {list(MODALITIES)}")

    @classmethod
    def from_mapping(cls, cfg: Mapping[str, Any]) -> "SyntheticConfig":
        fields = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in cfg.items() if k in fields}
        if "modalities" in kwargs:  # one name (data.modalities=lfp on the command line), not its letters
            m = kwargs["modalities"]
            kwargs["modalities"] = (m,) if isinstance(m, str) else tuple(m)
        return cls(**kwargs)

    def units_of(self, subject: int) -> int:
        return max(1, self.n_units - subject * (self.n_units // 4))

    def channels_of(self, subject: int) -> int:
        return max(1, self.n_lfp_channels - subject * (self.n_lfp_channels // 4))


def _ground_truth(cfg: SyntheticConfig) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(int(np.random.SeedSequence([cfg.seed, 7]).generate_state(1)[0]))
    k, s = cfg.n_latents, cfg.n_subjects
    rate = cfg.base_rate_hz / cfg.fs  # expected counts per bin at z = 0
    return {
        "spike_readout": torch.randn(s, k, cfg.n_units, generator=g) * cfg.spike_gain / math.sqrt(k),
        "spike_bias": torch.full((s, cfg.n_units), math.log(math.expm1(rate))),
        "lfp_mixing": torch.randn(s, k, cfg.n_lfp_channels, generator=g) / math.sqrt(k),
        "behavior_readout": torch.randn(k, cfg.n_behavior, generator=g),
        "stimulus_embedding": torch.randn(cfg.n_stimuli, cfg.stimulus_dim, generator=g),
        "stimulus_drive": torch.randn(cfg.n_stimuli, k, generator=g),
    }


class SyntheticNeuralDataset(Dataset):
    """Map-style dataset of synthetic windows (module docstring); works with any sampler/DDP.

    Parameters
    ----------
    n_samples : int
        Windows in this split.
    split : {"train", "val", "test"}
        Splits draw disjoint random streams from the same readouts.
    config : SyntheticConfig or mapping
        Generator settings.
    cache : bool
        Keep generated samples in memory (a few MB at the default size) so later epochs cost nothing.

    Attributes
    ----------
    ground_truth : dict of tensors
        ``spike_readout (S, K, U)``, ``spike_bias (S, U)``, ``lfp_mixing (S, K, C)``,
        ``behavior_readout (K, F)``, ``stimulus_embedding (n_stimuli, stimulus_dim)``,
        ``stimulus_drive (n_stimuli, K)``.

    Shape:
        One sample (see :mod:`models.data.batch`): ``spikes (T, U)``, ``spikes_mask (U,)``,
        ``unit_ids (U,)``, ``lfp (C, T)``, ``lfp_mask (C,)``, ``behavior (T, F)``, ``subject ()``,
        ``fs`` float; ``stimulus (stimulus_dim,)`` and ``stimulus_id ()`` with the stimulus modality;
        ``drives (T, K)`` with ``include_drives`` (including the stimulus shift).
    """

    def __init__(self, *, n_samples: int, split: str = "train",
                 config: SyntheticConfig | Mapping[str, Any] | None = None, cache: bool = True):
        if split not in SPLITS:
            raise ValueError(f"split: must be one of {SPLITS}, got {split!r}")
        if not isinstance(n_samples, (int, np.integer)) or n_samples < 1:
            raise ValueError(f"n_samples: must be an integer >= 1, got {n_samples!r}")
        if config is None:
            config = SyntheticConfig()
        elif not isinstance(config, SyntheticConfig):
            config = SyntheticConfig.from_mapping(config)
        self.config, self.split, self.n_samples = config, split, int(n_samples)
        self.ground_truth = _ground_truth(config)
        self._cache: Optional[dict[int, dict[str, Any]]] = {} if cache else None

    def __len__(self) -> int:
        return self.n_samples

    @property
    def n_unit_ids(self) -> int:
        """Unit-id vocabulary the spikes tokenizer needs (``n_subjects * n_units``)."""
        return self.config.n_subjects * self.config.n_units

    def _generator(self, index: int) -> torch.Generator:
        state = np.random.SeedSequence([self.config.seed, SPLITS.index(self.split), int(index)]).generate_state(1)[0]
        return torch.Generator().manual_seed(int(state))

    def subject_of(self, index: int) -> int:
        return int(index) % self.config.n_subjects

    def drives(self, index: int) -> torch.Tensor:
        """Ground-truth latent drives ``(T, K)`` of sample ``index``."""
        return self._sample(index, self._generator(index))["drives"]

    def _sample(self, index: int, g: torch.Generator) -> dict[str, Any]:
        cfg = self.config
        z = fractional_ou(cfg.n_time, cfg.hurst, cfg.theta, 1.0, cfg.fs, batch_shape=(cfg.n_latents,), generator=g)
        z = ((z - z.mean(-1, keepdim=True)) / z.std(-1, keepdim=True).clamp_min(1e-8)).T.float().contiguous()
        out: dict[str, Any] = {"drives": z}
        if "stimulus" in cfg.modalities:
            k = int(torch.randint(cfg.n_stimuli, (1,), generator=g))
            out["stimulus_id"] = k
            out["drives"] = z + cfg.stimulus_gain * self.ground_truth["stimulus_drive"][k]
        return out

    def __getitem__(self, index: int) -> dict[str, Any]:
        index = int(index)
        if not 0 <= index < self.n_samples:
            raise IndexError(f"index {index} out of range for {self.n_samples} samples")
        if self._cache is not None and index in self._cache:
            item = self._cache[index]
        else:
            item = self._make(index)
            if self._cache is not None:
                self._cache[index] = item
        # Copies: a caller editing a sample in place must not corrupt the cache.
        return {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in item.items()}

    def _make(self, index: int) -> dict[str, Any]:
        cfg, gt = self.config, self.ground_truth
        g = self._generator(index)
        latent = self._sample(index, g)
        z = latent["drives"]  # (T, K)
        s = self.subject_of(index)
        item: dict[str, Any] = {}
        if "spikes" in cfg.modalities:
            n_real = cfg.units_of(s)
            rates = torch.nn.functional.softplus(z @ gt["spike_readout"][s] + gt["spike_bias"][s])
            counts = torch.poisson(rates, generator=g)
            mask = torch.arange(cfg.n_units) < n_real
            item["spikes"] = counts * mask
            item["spikes_mask"] = mask
            item["unit_ids"] = s * cfg.n_units + torch.arange(cfg.n_units)
        if "lfp" in cfg.modalities:
            n_real = cfg.channels_of(s)
            noise = one_over_f_noise(cfg.n_time, cfg.lfp_beta, cfg.fs, peaks=[(cfg.peak_hz, 2.0, cfg.peak_ratio)],
                                     batch_shape=(cfg.n_lfp_channels,), generator=g, dtype=torch.float32)
            lfp = cfg.lfp_gain * (z @ gt["lfp_mixing"][s]).T + noise
            mask = torch.arange(cfg.n_lfp_channels) < n_real
            item["lfp"] = lfp * mask[:, None]
            item["lfp_mask"] = mask
        if "behavior" in cfg.modalities:
            noise = torch.randn(cfg.n_time, cfg.n_behavior, generator=g)
            item["behavior"] = z @ gt["behavior_readout"] + cfg.behavior_noise * noise
        if "stimulus" in cfg.modalities:
            item["stimulus"] = gt["stimulus_embedding"][latent["stimulus_id"]].clone()
            item["stimulus_id"] = torch.tensor(latent["stimulus_id"], dtype=torch.long)
        item["subject"] = torch.tensor(s, dtype=torch.long)
        item["fs"] = float(cfg.fs)
        if cfg.include_drives:
            item["drives"] = z
        return item
