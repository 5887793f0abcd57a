"""Tokenize every modality present in a batch and concatenate the tokens for the Perceiver."""
from __future__ import annotations

from typing import Any, Mapping, Optional

import torch
from torch import nn

from models._config_options import _is_real
from models.tokenizers.audio import AudioTokenizer
from models.tokenizers.base import Tokens
from models.tokenizers.behavior import BehaviorTokenizer
from models.tokenizers.calcium import CalciumTokenizer
from models.tokenizers.continuous import CONTINUOUS_KEYS, ContinuousTokenizer
from models.tokenizers.fmri import FMRITokenizer
from models.tokenizers.spikes import SpikesTokenizer
from models.tokenizers.video import VideoTokenizer

__all__ = ["MultimodalTokenizer", "TOKENIZER_KINDS", "build_tokenizer"]

# kind -> class; a modality key defaults to the kind of the same name (``lfp`` etc. -> continuous).
TOKENIZER_KINDS: dict[str, type[nn.Module]] = {
    "spikes": SpikesTokenizer,
    "continuous": ContinuousTokenizer,
    "calcium": CalciumTokenizer,
    "fmri": FMRITokenizer,
    "behavior": BehaviorTokenizer,
    "audio": AudioTokenizer,
    "video": VideoTokenizer,
}
# Modalities on their own clock (frame rates): their token times are rescaled to the common grid.
_OWN_CLOCK = ("audio", "video")


def _kind_of(key: str, opts: Mapping[str, Any]) -> str:
    kind = opts.get("kind") or ("continuous" if key in CONTINUOUS_KEYS else key)
    if kind not in TOKENIZER_KINDS:
        raise ValueError(
            f"model.tokenizers.{key}.kind: unknown tokenizer kind {kind!r}; allowed: {sorted(TOKENIZER_KINDS)}"
        )
    return kind


def build_tokenizer(key: str, *, d_model: int, patch_size: int, **opts: Any) -> nn.Module:
    """Build the tokenizer for batch key ``key`` (options as in that tokenizer's constructor)."""
    kind = _kind_of(key, opts)
    opts = {k: v for k, v in opts.items() if k != "kind"}
    if "dropout" in opts and not (_is_real(opts["dropout"], 0.0) and float(opts["dropout"]) <= 1):
        # "abc" failed as "'<' not supported between instances of 'str' and 'int'"
        raise ValueError(f"model.tokenizers.{key}.dropout: must be a number in [0, 1], got {opts['dropout']!r}")
    if "dropout" in opts:
        opts["dropout"] = float(opts["dropout"])
    if kind == "continuous":
        opts.setdefault("key", key)
    try:
        return TOKENIZER_KINDS[kind](d_model=d_model, patch_size=patch_size, **opts)
    except TypeError as exc:
        raise ValueError(f"model.tokenizers.{key}: bad option for the {kind} tokenizer ({exc})") from exc
    except ValueError as exc:  # a bad option value: say which tokenizer's config holds it
        raise ValueError(f"model.tokenizers.{key}: {exc}") from exc


class MultimodalTokenizer(nn.Module):
    """One tokenizer per configured modality; concatenates the tokens of those present in a batch.

    A learned modality embedding is added to every token; channel indices are offset per modality so
    that they are unique across modalities (PopT pools per channel). Modalities missing from a batch
    are skipped, so one model trains on datasets with different modality sets.

    Parameters
    ----------
    d_model : int
        Shared token width ``D``.
    patch_size : int
        Time bins per token for the modalities on the common time axis (neural signals, behaviour);
        audio/video keep their own ``patch_size`` option (frames per token).
    modalities : mapping
        Batch key -> constructor options of its tokenizer (``kind:`` overrides the kind inferred
        from the key), e.g. ``{"spikes": {"n_units": 64}, "lfp": {"n_channels": 16},
        "behavior": {"n_features": 2}}``.

    Shape:
        - batch: dict per :mod:`models.data.batch`
        - output :class:`~models.tokenizers.base.Tokens` ``(B, sum_m N_m, D)``; time indices on the
          common grid ``0 .. ceil(T / patch_size) - 1``
    """

    def __init__(self, *, d_model: int, patch_size: int, modalities: Mapping[str, Mapping[str, Any]]) -> None:
        super().__init__()
        if not modalities:
            raise ValueError("modalities: needs at least one modality, e.g. {'spikes': {'n_units': 64}}")
        self.d_model, self.patch_size = int(d_model), int(patch_size)
        self.keys = list(modalities)
        built = {}
        for key, opts in modalities.items():
            opts = dict(opts or {})
            if opts.get("key", key) != key:  # was a TypeError (key passed twice); the config key is the batch key
                raise ValueError(f"model.tokenizers.{key}.key: {opts['key']!r} differs from the modality name "
                                 f"{key!r}, which is the batch key read; drop the option or rename the modality")
            opts.pop("key", None)
            if _kind_of(key, opts) in _OWN_CLOCK:
                built[key] = build_tokenizer(key, d_model=d_model, **{"patch_size": 4, **opts})
            else:
                built[key] = build_tokenizer(key, d_model=d_model, patch_size=patch_size, **opts)
        for key, tok in built.items():
            # Each tokenizer reads its own batch key (spikes -> batch["spikes"], unit_ids, spikes_mask): under
            # another config key it would tokenize that modality's data, or fail with a KeyError.
            read = getattr(tok, "batch_key", key)
            if read != key:
                raise ValueError(f"model.tokenizers.{key}: a {_kind_of(key, modalities[key] or {})!r} tokenizer "
                                 f"reads batch[{read!r}], not batch[{key!r}]; name the modality {read!r} (only "
                                 "kind 'continuous' reads any batch key)")
        self.tokenizers = nn.ModuleDict(built)
        self.modality_embedding = nn.Embedding(len(self.keys), self.d_model)

    def num_time_tokens(self, batch: Mapping[str, Any]) -> Optional[int]:
        """Token bins of the common time axis, from the first aligned modality in the batch."""
        for key in self.keys:
            if key in batch and key not in _OWN_CLOCK:
                x = batch[key]
                if not hasattr(x, "shape"):  # a list failed as "'list' object has no attribute 'shape'"
                    raise ValueError(f"{key}: needs a torch.Tensor, got {type(x).__name__}; convert with "
                                     "torch.as_tensor")
                t = x.shape[-1] if isinstance(self.tokenizers[key], ContinuousTokenizer) else x.shape[1]
                return -(-t // self.patch_size)
        return None

    def _check_aligned(self, batch: Mapping[str, Any], present: list[str], n_time: Optional[int]) -> None:
        """One batch size for all modalities, one token-bin count for those on the common time axis.

        Without this, a longer modality's tail was silently dropped (and which one set the length
        depended on the order of the config's tokenizers), and a batch-size mismatch failed deep in
        ``torch.cat``.
        """
        sizes = {k: batch[k].shape[0] for k in present if isinstance(batch[k], torch.Tensor) and batch[k].ndim}
        if len(set(sizes.values())) > 1:
            raise ValueError(f"batch: modalities disagree on the batch size (axis 0): {sizes}; every modality "
                             "needs one row per sample, in the same order")
        if 0 in sizes.values():
            raise ValueError(f"batch: has no samples (batch size 0 in {sizes}); drop empty batches before the model")
        bins = {}
        for k in present:
            x = batch[k]
            if k in _OWN_CLOCK or not isinstance(x, torch.Tensor) or x.ndim != 3:
                continue  # own-clock modalities are rescaled; a bad shape is named by the modality's tokenizer
            t = x.shape[-1] if isinstance(self.tokenizers[k], ContinuousTokenizer) else x.shape[1]
            bins[k] = (t, -(-t // self.patch_size))
        empty = {k: t for k, (t, _) in bins.items() if t == 0}
        if empty:  # failed inside a reshape ("cannot reshape tensor of 0 elements")
            raise ValueError(f"batch: {sorted(empty)} has no time samples (T=0); drop empty windows before the model")
        complex_keys = [k for k in present if isinstance(batch[k], torch.Tensor) and batch[k].is_complex()]
        if complex_keys:  # the cast to real silently dropped the imaginary part
            raise ValueError(f"{complex_keys[0]}: complex dtype {batch[complex_keys[0]].dtype} is not supported; pass "
                             "a real signal (e.g. its .real or .abs())")
        if n_time is not None and any(n != n_time for _, n in bins.values()):
            lengths = {k: t for k, (t, _) in bins.items()}
            raise ValueError(f"batch: modalities on the common time axis have different lengths {lengths} "
                             f"(time samples), i.e. different numbers of {self.patch_size}-sample token bins; "
                             "crop or pad them to one length T per batch")

    def forward(self, batch: Mapping[str, Any]) -> Tokens:
        present = [k for k in self.keys if k in batch]
        if not present:
            raise ValueError(
                f"batch: has none of the configured modalities {self.keys}; batch keys: {sorted(batch)}"
            )
        n_time = self.num_time_tokens(batch)
        self._check_aligned(batch, present, n_time)
        outs: list[Tokens] = []
        for key in present:
            tok = self.tokenizers[key]
            kind_own_clock = isinstance(tok, (AudioTokenizer, VideoTokenizer))
            outs.append(tok.from_batch(batch, num_time_tokens=n_time) if kind_own_clock else tok.from_batch(batch))
        # Channels per modality (largest index + 1; 0 for channel-mixing tokens), read for all modalities
        # in one host sync.
        tops = [out.channel_index.max().clamp_min(-1) for out in outs if out.channel_index.numel()]
        top_values = iter(torch.stack(tops).tolist() if tops else [])
        parts: list[Tokens] = []
        offset = 0
        for key, out in zip(present, outs):
            m = self.keys.index(key)
            emb = self.modality_embedding.weight[m]
            chan = out.channel_index
            n_chan = int(next(top_values)) + 1 if chan.numel() else 0
            chan = torch.where(chan >= 0, chan + offset, chan)
            offset += n_chan
            parts.append(Tokens(out.tokens + emb, out.mask, out.time_index, chan, torch.full_like(chan, m)))
        return Tokens(*(torch.cat(fields, dim=1) for fields in zip(*parts)))
