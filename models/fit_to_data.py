"""Fit a NeuroFMx config to the data it will train on: tokenizers for the data's modalities, id vocabularies.

The presets are written for the synthetic data (``lfp`` and ``spikes``, at most 16 LFP channels). A folder
of real recordings (``data=files``) brings, say, 19 EEG channels under the batch key ``eeg``: without this
step the model would find no tokenizer for ``eeg`` and, renamed to ``lfp``, channel ids past its vocabulary.
:func:`fit_model_config` makes the changes a user would make by hand, and says which:

- a signal modality of the data without a tokenizer gets one, copied from the config's first continuous
  tokenizer (same layout and options), when the new one is continuous too (EEG, ECoG, iEEG, LFP, EMG);
- a tokenizer's channel-id vocabulary too small for the data's ids (``n_channel_ids`` in the data info,
  or a per-modality count: the synthetic data's ``n_unit_ids`` and ``n_lfp_channels``) is raised to it;
- forecast and reconstruction heads with explicit ``keys`` also cover the new modality;
- the subject-adversarial head's ``n_domains`` is raised to the data's ``n_subjects``.

Nothing is ever shrunk or removed, so a config that already fits comes back unchanged, and the same data
always gives the same model (checkpoints stay loadable).
"""
from __future__ import annotations

import copy
import inspect
import logging
from typing import Any, Mapping, Sequence

from models._config_options import _is_whole
from models.neurofmx import _VOCAB_OPTION, SIGNAL_KEYS, _vocab
from models.tokenizers.continuous import CONTINUOUS_KEYS

__all__ = ["fit_model_config"]

log = logging.getLogger(__name__)

# Data info keys that state one modality's id count (the synthetic data: unit ids are global across
# subjects, so data.n_subjects or data.n_units can outgrow a preset's vocabulary).
_INFO_IDS = {"spikes": "n_unit_ids", "lfp": "n_lfp_channels"}


def _default_vocab(key: str, opts: Mapping[str, Any]) -> int:
    """The id vocabulary the tokenizer of ``key`` takes when its options leave it unset (0 if none)."""
    from models.tokenizers.multimodal import TOKENIZER_KINDS, _kind_of

    params = inspect.signature(TOKENIZER_KINDS[_kind_of(key, opts)].__init__).parameters
    for name in (_VOCAB_OPTION.get(key), "n_channels", "n_units", "n_channel_ids"):
        if name in params and isinstance(params[name].default, int):
            return int(params[name].default)
    return 0


def _continuous(key: str, opts: Mapping[str, Any]) -> bool:
    return (opts.get("kind") or ("continuous" if key in CONTINUOUS_KEYS else key)) == "continuous"


def fit_model_config(cfg: Mapping[str, Any], info: Mapping[str, Any]) -> tuple[dict, list[str]]:
    """Return ``(cfg, changes)``: a copy of ``cfg`` whose ``model`` block fits the data described by ``info``.

    Parameters
    ----------
    cfg : mapping
        The composed config (``model`` block of the ``neurofmx`` family; other families pass through).
    info : mapping
        The datamodule's ``info``: ``modalities`` (batch keys) and, for one-key data such as
        ``data=files``, ``n_channel_ids``; per-modality id counts ``n_unit_ids`` (spikes) and
        ``n_lfp_channels`` (lfp) from the synthetic data; ``n_subjects`` (the adversarial head's domains).

    Returns
    -------
    cfg : dict
        The fitted config (a deep copy; the input is not modified).
    changes : list of str
        One line per change, as ``model.<path>: <what>``, empty when the config already fits.
    """
    out = copy.deepcopy(dict(cfg))
    model = out.get("model")
    if not isinstance(model, Mapping) or model.get("family", "neurofmx") != "neurofmx":
        return out, []
    tokenizers = model.setdefault("tokenizers", {})
    if not isinstance(tokenizers, Mapping):  # NeuroFMx names it; here it failed as "'NoneType' is not iterable"
        return out, []
    modalities = [k for k in (info.get("modalities") or []) if k in SIGNAL_KEYS]
    n_ids = info.get("n_channel_ids")
    changes: list[str] = []
    for key in modalities:
        added = key not in tokenizers
        if added:
            source = next((k for k, o in tokenizers.items() if _continuous(k, o or {})), None)
            if not _continuous(key, {}) or source is None:
                raise ValueError(
                    f"model.tokenizers: the data has modality {key!r} but the model has no tokenizer for it "
                    f"(it has {sorted(tokenizers)}); add model.tokenizers.{key} to the model config")
            opts = {k: v for k, v in dict(tokenizers[source] or {}).items()
                    if k not in ("key", "kind", "n_channels", "n_channel_ids")}
            tokenizers[key] = opts
            changes.append(f"model.tokenizers.{key}: added, options copied from model.tokenizers.{source}")
        opts = tokenizers[key] = dict(tokenizers[key] or {})
        for name in (_VOCAB_OPTION.get(key), "n_channels", "n_units", "n_channel_ids"):
            if name and name in opts and not _is_whole(opts[name], 0):  # int() failed naming no option
                raise ValueError(f"model.tokenizers.{key}.{name}: needs an integer >= 0 (the channel-id vocabulary), "
                                 f"got {opts[name]!r}")
        need = [int(n_ids)] if n_ids is not None and len(modalities) == 1 else []
        count = info.get(_INFO_IDS.get(key, ""))
        # A per-modality count raises a vocabulary only past what the tokenizer takes already, its default
        # included: an unset spikes vocabulary (1024 ids) is not cut to the synthetic data's 64.
        if count is not None and int(count) > (_vocab(key, opts, default=0) or _default_vocab(key, opts)):
            need.append(int(count))
        if need:
            have, want = _vocab(key, opts, default=0), max(need)
            # A configured tokenizer whose vocabulary is unset takes its default (256 channel ids for a continuous
            # one): setting it to the data's 19 ids shrank it. A tokenizer added here gets the data's count.
            if have < want and (added or have or _default_vocab(key, opts) < want):
                name = next((n for n in (_VOCAB_OPTION.get(key), "n_channels", "n_units", "n_channel_ids")
                             if n and n in opts), _VOCAB_OPTION.get(key) or "n_channels")
                opts[name] = want
                changes.append(f"model.tokenizers.{key}.{name}: {have or 'unset'} -> {want} "
                               f"(the data has {want} channel ids)")
    heads = model.get("heads") or {}
    for kind in ("forecast", "reconstruction"):
        head = heads.get(kind)
        if not head or "keys" not in head:
            continue  # no head, or keys default to every signal tokenizer (new ones included)
        if isinstance(head["keys"], (str, bytes)) or not isinstance(head["keys"], Sequence):
            continue  # NeuroFMx refuses it by name; list("lfp") was read as the modalities l, f and p
        keys = list(head["keys"])
        missing = [k for k in modalities if k not in keys]
        if missing:
            head["keys"] = keys + missing
            changes.append(f"model.heads.{kind}.keys: added {missing}")
    adversarial = heads.get("adversarial")
    n_subjects = info.get("n_subjects")
    # Subject labels run over [0, n_subjects): a preset's n_domains (64) below that failed mid-epoch, at the
    # first batch holding a higher subject id. Only the subject target is counted by the data's info.
    if (isinstance(adversarial, Mapping) and adversarial.get("target", "subject") == "subject"
            and n_subjects is not None and _is_whole(adversarial.get("n_domains"), 0)
            and int(n_subjects) > int(adversarial["n_domains"])):
        have = int(adversarial["n_domains"])
        adversarial["n_domains"] = int(n_subjects)
        changes.append(f"model.heads.adversarial.n_domains: {have} -> {int(n_subjects)} "
                       f"(the data has {int(n_subjects)} subjects)")
    for line in changes:
        log.info("fitted to the data: %s", line)
    return out, changes
