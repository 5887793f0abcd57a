"""Low-rank adapters (LoRA) for fine-tuning a pretrained NeuroFMx with few trainable parameters.

:func:`add_lora` wraps chosen ``nn.Linear`` layers in :class:`LoRALinear` (frozen base plus a trainable rank-``r``
update ``scale * B A``) and freezes everything else except the parameters named in ``train_also``;
:func:`merge_lora` folds the updates back into plain layers. :func:`configure_finetuning` reads the config
(``model.init_from``, ``model.init_from_skip``, ``model.adapters``; see ``platform/fmx/conf/model/tiny.yaml``) and
applies both, in that order: pretrained weights first, adapters on top.
"""
from __future__ import annotations

import fnmatch
import logging
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
import torch.nn as nn

__all__ = ["LoRALinear", "add_lora", "merge_lora", "trainable_fraction", "configure_finetuning"]

log = logging.getLogger("models.adapters")

ADAPTER_KEYS = ("kind", "rank", "alpha", "dropout", "targets", "train_also")


class LoRALinear(nn.Module):
    """A frozen ``nn.Linear`` plus a trainable low-rank update: ``y = base(x) + (alpha / rank) * B A dropout(x)``.

    ``A`` starts Kaiming-uniform and ``B`` at zero, so the wrapped layer computes exactly what ``base`` does until
    the first optimiser step (Hu et al. 2021, LoRA).

    Parameters
    ----------
    base
        The layer to adapt; its weight and bias are frozen (``requires_grad = False``) and kept as they are.
    rank
        Rank ``r`` of the update (an integer >= 1); trainable parameters ``r * (in_features + out_features)``.
    alpha
        Scale numerator (> 0): the update is multiplied by ``alpha / rank``, so changing the rank does not change
        the update's initial size per unit of learning rate.
    dropout
        Dropout probability on the adapter's input only (the base path sees ``x`` unchanged), in [0, 1).

    Shape:
        - input: ``(*, in_features)``
        - output: ``(*, out_features)``
    """

    def __init__(self, *, base: nn.Linear, rank: int, alpha: float, dropout: float = 0.0):
        super().__init__()
        if not isinstance(base, nn.Linear):
            raise ValueError(f"base: needs an nn.Linear, got {type(base).__name__}")
        rank, alpha, dropout = _check_sizes(rank, alpha, dropout)
        self.base, self.rank, self.alpha = base, rank, alpha
        self.scaling = alpha / rank
        for p in base.parameters():
            p.requires_grad_(False)
        weight = base.weight
        self.lora_A = nn.Parameter(torch.empty(rank, base.in_features, device=weight.device, dtype=weight.dtype))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, rank, device=weight.device, dtype=weight.dtype))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))  # nn.Linear's own init
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        update = nn.functional.linear(nn.functional.linear(self.dropout(x), self.lora_A), self.lora_B)
        return self.base(x) + self.scaling * update

    @torch.no_grad()
    def merge(self) -> nn.Linear:
        """A plain ``nn.Linear`` with weight ``W + (alpha / rank) * B A`` and the base's bias (frozen, as the base)."""
        base = self.base
        merged = nn.Linear(base.in_features, base.out_features, bias=base.bias is not None,
                           device=base.weight.device, dtype=base.weight.dtype)
        merged.weight.copy_(base.weight + self.scaling * (self.lora_B @ self.lora_A))
        if base.bias is not None:
            merged.bias.copy_(base.bias)
        merged.requires_grad_(False)
        return merged

    def extra_repr(self) -> str:
        return f"rank={self.rank}, alpha={self.alpha:g}"


def _check_sizes(rank: Any, alpha: Any, dropout: Any) -> tuple[int, float, float]:
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
        raise ValueError(f"rank: needs an integer >= 1 (typically 4-16), got {rank!r}")
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not math.isfinite(alpha) or alpha <= 0:
        raise ValueError(f"alpha: needs a finite number > 0 (commonly 2 x rank), got {alpha!r}")
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout: needs a number in [0, 1) (0 = off), got {dropout!r}")
    return rank, float(alpha), float(dropout)


def _patterns(value: Any, name: str, *, allow_empty: bool) -> list[str]:
    if isinstance(value, str) or not isinstance(value, Sequence) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"{name}: needs a list of name patterns (fnmatch, e.g. 'backbone.*.out_proj'), got {value!r}")
    if not value and not allow_empty:
        raise ValueError(f"{name}: needs at least one name pattern, got an empty list")
    return list(value)


def _few(names: Sequence[str], n: int = 8) -> str:
    shown = ", ".join(names[:n])
    return f"{shown}, ... ({len(names)} in all)" if len(names) > n else shown


def add_lora(model: nn.Module, *, targets: Sequence[str], rank: int, alpha: float, dropout: float = 0.0,
             train_also: Sequence[str] = ()) -> list[str]:
    """Wrap the ``nn.Linear`` layers of ``model`` whose qualified names match ``targets`` in :class:`LoRALinear`
    and freeze every parameter except the adapters' and those matching ``train_also``.

    Parameters
    ----------
    model
        Modified in place.
    targets
        fnmatch patterns over module names (``model.named_modules()``; ``*`` also crosses dots), e.g.
        ``["perceiver.*.attn.q", "backbone.layers.*.mixer.out_proj"]``. Each must match at least one ``nn.Linear``.
    rank, alpha, dropout
        As in :class:`LoRALinear`.
    train_also
        fnmatch patterns over parameter names (``model.named_parameters()``) left trainable, e.g. ``["behavior.*"]``
        for a head re-learned on the new subject. Each must match at least one parameter.

    Returns
    -------
    list of str
        The names of the wrapped layers.

    Raises
    ------
    ValueError
        Bad ``rank``/``alpha``/``dropout``, a pattern that matches nothing (the message lists names that exist),
        or a target that already carries LoRA.
    """
    rank, alpha, dropout = _check_sizes(rank, alpha, dropout)
    targets = _patterns(targets, "targets", allow_empty=False)
    train_also = _patterns(train_also, "train_also", allow_empty=True)
    wrapped = [n for n, m in model.named_modules() if isinstance(m, LoRALinear)]
    inside = tuple(f"{n}." for n in wrapped)
    linears = [n for n, m in model.named_modules() if isinstance(m, nn.Linear) and not n.startswith(inside)]
    chosen: list[str] = []
    for pattern in targets:
        again = [n for n in wrapped if fnmatch.fnmatchcase(n, pattern) or fnmatch.fnmatchcase(f"{n}.base", pattern)]
        if again:
            raise ValueError(f"targets: {pattern!r} matches {_few(again)}, which already carry LoRA; "
                             "merge_lora(model) first or build a fresh model")
        hits = [n for n in linears if fnmatch.fnmatchcase(n, pattern)]
        if not hits:
            raise ValueError(f"targets: {pattern!r} matches no nn.Linear of the model; some that exist: "
                             f"{_few(linears)}")
        chosen += [n for n in hits if n not in chosen]
    param_names = [n for n, _ in model.named_parameters()]
    for pattern in train_also:
        if not any(fnmatch.fnmatchcase(n, pattern) for n in param_names):
            tops = sorted({n.split(".")[0] for n in param_names})
            raise ValueError(f"train_also: {pattern!r} matches no parameter; parameter names start with {tops}, "
                             f"e.g. {_few(param_names, 4)}")
    model.requires_grad_(False)
    for name in chosen:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        setattr(parent, child, LoRALinear(base=getattr(parent, child), rank=rank, alpha=alpha, dropout=dropout))
    for name, p in model.named_parameters():
        if name.endswith((".lora_A", ".lora_B")) or any(fnmatch.fnmatchcase(name, pat) for pat in train_also):
            p.requires_grad_(True)
    return chosen


def merge_lora(model: nn.Module) -> list[str]:
    """Replace every :class:`LoRALinear` of ``model`` by its :meth:`LoRALinear.merge` (in place): the same outputs
    with no adapter overhead, for inference or export. Returns the merged layers' names."""
    names = [n for n, m in model.named_modules() if isinstance(m, LoRALinear)]
    for name in names:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        setattr(parent, child, getattr(parent, child).merge())
    return names


def trainable_fraction(model: nn.Module) -> float:
    """Share of ``model``'s parameters (adapters included) that require gradients, in [0, 1]."""
    counts = [(p.numel(), p.requires_grad) for p in model.parameters()]
    total = sum(n for n, _ in counts)
    return sum(n for n, grad in counts if grad) / total if total else 0.0


def _load_state(path: Any) -> dict[str, torch.Tensor]:
    """The ``model.``-prefixed weights (the NeuroFMx of a NeuroFMxModule) of the Lightning checkpoint at ``path``."""
    if not isinstance(path, (str, Path)) or not str(path):
        raise ValueError(f"model.init_from: needs the path of a Lightning checkpoint (.ckpt) or null, got {path!r}")
    if "://" in str(path):  # models does not fetch: the platform downloads first (fmx.init_from)
        raise ValueError(f"model.init_from: {path} is a URI; the fmx platform fetches s3:// checkpoints before "
                         "building (fmx.train_worker); in plain Python download it first and pass the file path")
    if not Path(path).expanduser().is_absolute():  # a Ray trial runs in another working directory
        raise ValueError(f"model.init_from: needs an absolute path (Ray trials run in another working directory, "
                         f"where a relative one names another file), got {str(path)!r}")
    path = Path(path).expanduser()
    if path.is_dir():  # a Ray checkpoint is a folder holding model.ckpt: the likeliest slip
        inside = sorted(str(p) for p in path.glob("*.ckpt"))[:3]
        raise ValueError(f"model.init_from: {str(path)!r} is a folder; give the checkpoint file in it"
                         + (f", e.g. {inside[0]!r}" if inside else " (a pretraining trial's model.ckpt)"))
    if not path.is_file():
        raise ValueError(f"model.init_from: no file at {str(path)!r}; give the model.ckpt of the pretraining run")
    try:
        # mmap: only the tensors read are paged in (a meta-device build, as `fmx sweep validate` does, reads none)
        ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as exc:  # noqa: BLE001 - unpickling raises many types; report them under the field
        # torch's own message for a non-zip file is about mmap and re-saving, which misleads here
        reason = "not a zip-format torch.save file" if "mmap" in str(exc) else str(exc).splitlines()[0]
        raise ValueError(f"model.init_from: {str(path)!r} cannot be read as a torch checkpoint ({reason}); give "
                         "the Lightning checkpoint (.ckpt) that trainer.save_checkpoint wrote") from exc
    state = ckpt.get("state_dict") if isinstance(ckpt, Mapping) else None
    if not isinstance(state, Mapping):
        raise ValueError(f"model.init_from: {str(path)!r} holds no 'state_dict'; give a Lightning checkpoint saved by "
                         "trainer.save_checkpoint (the sweep's model.ckpt)")
    weights = {k[len("model."):]: v for k, v in state.items() if k.startswith("model.")}
    if not weights:
        raise ValueError(f"model.init_from: {str(path)!r} has no NeuroFMx weights (no 'model.*' keys)")
    if any(k.endswith((".lora_A", ".lora_B")) for k in weights):
        raise ValueError(f"model.init_from: {str(path)!r} holds LoRA adapters; fold them in first: module = "
                         "NeuroFMxModule.load_from_checkpoint(path); merge_lora(module.model); "
                         "torch.save({'state_dict': module.state_dict()}, new_path), and start from new_path")
    return weights


def load_pretrained(model: nn.Module, path: Any, skip: Sequence[str] = ()) -> list[str]:
    """Load the NeuroFMx weights of the Lightning checkpoint at ``path`` into ``model``, strictly: every weight
    must be present on both sides with the same shape, except names matching a ``skip`` pattern (fnmatch), which
    keep their fresh initialisation. Returns the skipped names of ``model``."""
    skip = _patterns(skip, "model.init_from_skip", allow_empty=True)
    own = model.state_dict()
    on_meta = any(t.is_meta for t in own.values())  # a build that only checks the config (fmx sweep validate)
    if on_meta and isinstance(path, str) and "://" in path:
        return []  # an s3:// checkpoint is fetched where a trial builds for real (fmx.train_worker), not here
    if on_meta and isinstance(path, (str, Path)) and Path(path).expanduser().is_absolute() \
            and not Path(path).expanduser().exists():
        # The file may exist only on a cluster's nodes (validate and `fmx sweep run --address` build here); a
        # sweep on a local Ray has its paths checked where it starts (fmx.commands.sweep._check_local_data).
        return []
    ckpt = _load_state(path)
    for pattern in skip:
        if not any(fnmatch.fnmatchcase(n, pattern) for n in [*own, *ckpt]):
            raise ValueError(f"model.init_from_skip: {pattern!r} matches no weight of the model or the checkpoint; "
                             f"names start with {sorted({n.split('.')[0] for n in own})}")
    skipped = sorted(n for n in own if any(fnmatch.fnmatchcase(n, pat) for pat in skip))
    kept = {k: v for k, v in ckpt.items() if not any(fnmatch.fnmatchcase(k, pat) for pat in skip)}
    missing = [n for n in own if n not in kept and n not in skipped]
    unexpected = [k for k in kept if k not in own]
    shapes = [f"{k} {tuple(v.shape)} vs model {tuple(own[k].shape)}" for k, v in kept.items()
              if k in own and v.shape != own[k].shape]
    for what, names in (("weights missing from the checkpoint", missing),
                        ("checkpoint weights the model lacks", unexpected), ("shape mismatches", shapes)):
        if names:
            raise ValueError(f"model.init_from: {str(path)!r} does not fit this model: {what}: {_few(names, 4)}. "
                             "Use the pretraining run's model config, or list the parts to leave at their fresh "
                             "init in model.init_from_skip (e.g. '*.lfp.*channel_*' for a new LFP channel count)")
    if not on_meta:  # on meta there is nothing to copy into
        model.load_state_dict(kept, strict=False)
    return skipped


def configure_finetuning(model: nn.Module, model_cfg: Mapping[str, Any]) -> dict[str, Any]:
    """Apply ``model.init_from`` (with ``model.init_from_skip``) and then ``model.adapters`` to ``model``.

    Returns a report: ``init_from``, ``skipped`` (weights left at their fresh init), ``wrapped`` (layers given LoRA),
    ``trainable`` and ``total`` parameter counts. Errors name the config path and value.
    """
    init_from = model_cfg.get("init_from")
    report: dict[str, Any] = {"init_from": init_from, "skipped": [], "wrapped": []}
    skip = model_cfg.get("init_from_skip") or []
    if init_from is not None:
        report["skipped"] = load_pretrained(model, init_from, skip)
    elif skip:
        raise ValueError(f"model.init_from_skip: set to {skip!r} but model.init_from is null; it only applies when "
                         "loading pretrained weights")
    adapters = model_cfg.get("adapters")
    if adapters is None:
        adapters = {}
    if not isinstance(adapters, Mapping):
        raise ValueError(f"model.adapters: needs a mapping (kind: none | lora, ...), got {adapters!r}")
    unknown = sorted(set(adapters) - set(ADAPTER_KEYS))
    if unknown:
        raise ValueError(f"model.adapters: unknown key(s) {unknown}; allowed: {list(ADAPTER_KEYS)}")
    kind = adapters.get("kind", "none")
    if kind not in ("none", "lora"):
        raise ValueError(f"model.adapters.kind: needs 'none' or 'lora', got {kind!r}")
    options = {k: adapters[k] for k in ("targets", "rank", "alpha", "dropout", "train_also") if k in adapters}
    if isinstance(options.get("rank"), float) and options["rank"].is_integer():
        options["rank"] = int(options["rank"])  # a sweep's 8.0 is rank 8; 8.5 is refused
    try:  # checked with kind: none too, so a bad value in a sweep fails at once, not when LoRA is switched on
        _check_sizes(options.get("rank", 8), options.get("alpha", 16.0), options.get("dropout", 0.0))
        if kind == "lora":
            missing = [k for k in ("targets", "rank", "alpha") if k not in options]
            if missing:
                raise ValueError(f"{missing[0]}: needed with kind: lora; see platform/fmx/conf/model/tiny.yaml")
            report["wrapped"] = add_lora(model, **options)
    except ValueError as exc:
        raise ValueError(f"model.adapters.{exc}") from exc
    trains = {n.replace(".base.", "."): p.requires_grad for n, p in model.named_parameters()}
    fresh_frozen = [n for n in report["skipped"] if trains.get(n) is False]
    if fresh_frozen:  # random and never trained: e.g. a new subject's channel embeddings, silently noise
        log.warning("model.init_from_skip leaves %s at their random init, and model.adapters freezes them, so "
                    "they never train; add their patterns to model.adapters.train_also", _few(fresh_frozen, 4))
    report["trainable"] = sum(p.numel() for p in model.parameters() if p.requires_grad)
    report["total"] = sum(p.numel() for p in model.parameters())
    return report
