"""NeuroFMx: tokenizers -> Perceiver-IO -> (scale encodings) -> Mamba-2 stack -> PopT -> heads.

Data flow for a batch (see the models contract):

1. :class:`models.tokenizers.MultimodalTokenizer` turns each modality present into tokens of width
   ``D`` with a time bin per token (``patch_size`` samples per bin).
2. :class:`models.perceiver.PerceiverIOEncoder` fuses modalities and channels per time chunk into a
   latent sequence over time (causal across chunks by default).
3. Optional :class:`models.layers.scale_encoding.ScaleEncoding` adds causal log-spaced band energies.
4. :class:`models.backbones.Mamba2Stack` scans the latent sequence (fused ``mamba_ssm`` kernels on
   CUDA when importable, portable chunked SSD otherwise), optionally with fractional kernels.
5. :class:`models.popt.PopT` pools per-channel token summaries and the SSM steps into ``K`` tokens.
6. Heads (:mod:`models.heads`) compute the task losses; the total is their uncertainty-weighted sum.

Every stage is causal in time with ``latent_attention: causal``, so the forecast at step ``s``
depends on samples before the end of step ``s`` only (tested end to end).
"""
from __future__ import annotations

from typing import Any, Mapping, Optional

import torch
import torch.nn as nn

from models._config_options import _build_part, _head_options, _int_option, _refuse_fractions
from models.backbones import Mamba2Stack
from models.backbones.fractional import FractionalKernel
from models.heads import TIME_MAJOR_KEYS, UncertaintyWeightedLoss, channel_view
from models.heads.base import _ID_KEYS, fit_time
from models.neurofmx_parts import _COUNT_KEYS, SIGNAL_KEYS, _NeuroFMxParts
from models.neurofmx_parts import _VOCAB_OPTION, _vocab  # noqa: F401  re-exported: models.fit_to_data reads them here
from models.perceiver import PerceiverIOEncoder
from models.popt import PopT, channel_summaries
from models.tokenizers import MultimodalTokenizer
from models.tokenizers.base import Tokens, check_channel_input

__all__ = ["NeuroFMx", "SIGNAL_KEYS"]

# fractals.backbone.fractional_kernels keys the kernels read (enable only switches them on)
_FRACTIONAL_KEYS = ("n_taps", "min_alpha", "max_alpha", "init_gate")


class NeuroFMx(_NeuroFMxParts, nn.Module):
    """The NeuroFMx multimodal model.

    Parameters
    ----------
    d_model
        Width of tokens, latents and SSM.
    patch_size
        Samples of the common time axis per token bin.
    tokenizers
        Batch key -> tokenizer options (:class:`models.tokenizers.MultimodalTokenizer`).
    perceiver
        Options of :class:`models.perceiver.PerceiverIOEncoder` (``n_latents``, ``chunk_size``,
        ``n_heads``, ``n_self_layers``, ``latent_attention``...).
    ssm
        ``n_layers`` plus options of :class:`models.backbones.Mamba2` (``d_state``, ``headdim``,
        ``expand``, ``chunk_size``, ``kernels``).
    fractional_kernels
        ``None`` (off) or ``{n_taps, min_alpha, max_alpha[, init_gate]}``: gated power-law kernels on the conv
        stage of every Mamba-2 block.
    scale_encodings
        ``None`` (off), ``{kind: filterbank, wavelet_scales: [...]}`` (causal band energies added
        before the SSM) or ``{kind: scattering, J, Q, n_probe}`` (kymatio wavelet scattering;
        non-causal, so not with the forecast head).
    popt
        Options of :class:`models.popt.PopT` (``n_summary_tokens``, ``n_layers``, ``n_heads``).
    heads
        Which heads to build, e.g. ``{forecast: {keys: [lfp], horizon: 1}, reconstruction: {keys:
        [lfp], mask_ratio: 0.25}, behavior: {n_features: 2}, contrastive: {view: behavior},
        adversarial: {target: subject, n_domains: 4}}``; see ``platform/fmx/conf/model/*.yaml``. ``null``
        turns a head off; ``{}`` builds it with its defaults. The contrastive head reads the PopT tokens
        (``pairing: sample``) or the latent steps (``pairing: time``). A head with nothing to score in a batch (target
        absent, every channel masked, no step ``horizon`` ahead) adds no loss.

    Shape:
        - batch: dict per the models contract
        - output ``latents``: ``perceiver`` and ``ssm`` ``(B, S, D)``, ``popt`` ``(B, K, D)``,
          ``ssm_states`` ``(B, H, P, N)`` (last layer's final SSM state)
        - output ``scored``: names of the heads that had something real to score (``losses`` holds
          the others' zero losses too when none had)
        - output ``unscorable``: the heads with their target here, when the window is too short for all of them
          (forecast needs more steps than its horizon, reconstruction 2); empty otherwise
    """

    def __init__(self, *, d_model: int, patch_size: int, tokenizers: Mapping[str, Mapping[str, Any]],
                 perceiver: Mapping[str, Any] | None = None, ssm: Mapping[str, Any] | None = None,
                 fractional_kernels: Mapping[str, Any] | None = None,
                 scale_encodings: Mapping[str, Any] | None = None,
                 popt: Mapping[str, Any] | None = None, heads: Mapping[str, Any] | None = None):
        super().__init__()
        d_model = _int_option(d_model, "model.d_model", 8)
        patch_size = _int_option(patch_size, "model.patch_size", 1)
        self.d_model, self.patch_size = d_model, patch_size
        if not isinstance(tokenizers, Mapping) or not tokenizers:
            raise ValueError("model.tokenizers: needs at least one batch key with its tokenizer options, e.g. "
                             f"{{lfp: {{n_channels: 16}}}}, got {tokenizers!r}")
        self.tokenizer_options = {k: dict(v or {}) for k, v in tokenizers.items()}
        self.tokenizer = MultimodalTokenizer(d_model=d_model, patch_size=patch_size, modalities=self.tokenizer_options)
        self.perceiver = _build_part("model.perceiver", PerceiverIOEncoder, d_model=d_model, **dict(perceiver or {}))
        if self.perceiver.latent_attention == "full" and _head_options(dict(heads or {}), "forecast") is not None:
            raise ValueError("model.perceiver.latent_attention: 'full' lets every step attend to later steps, so the "
                             "forecast head would read the samples it predicts; use causal (or local), or drop "
                             "model.heads.forecast")
        # One SSM/head step covers chunk_size token bins.
        self.step_size = self.patch_size * self.perceiver.chunk_size
        self.scale_encoding = self._build_scale_encoding(None if scale_encodings is None else dict(scale_encodings),
                                                        heads)
        if fractional_kernels:  # checked here so a bad option is named under its own section, not model.ssm
            _build_part("fractals.backbone.fractional_kernels", FractionalKernel, channels=1, **{
                k: v for k, v in dict(fractional_kernels).items() if k in _FRACTIONAL_KEYS})
        ssm = dict(ssm or {})
        n_layers = _int_option(ssm.pop("n_layers", 2), "model.ssm.n_layers", 1)
        self.backbone = _build_part("model.ssm", Mamba2Stack, d_model=d_model, n_layers=n_layers,
                                    fractional=dict(fractional_kernels) if fractional_kernels else None, **ssm)
        popt = dict(popt or {})
        self.popt = _build_part("model.popt", PopT, d_model=d_model, **popt)
        self._build_heads(dict(heads or {}))
        self.loss_weighting = UncertaintyWeightedLoss(task_names=self.loss_names)

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
        _refuse_fractions(m, "model")
        _refuse_fractions(bb, "fractals.backbone")
        for name, block in (("fractional_kernels", fk), ("scale_encodings", se)):
            # any truthy value switched the part on: enable: 'false' (a quoted override) built it
            if block.get("enable") is not None and not isinstance(block.get("enable"), bool):
                raise ValueError(f"fractals.backbone.{name}.enable: needs true or false, got {block['enable']!r}")
        fk_missing = [k for k in ("n_taps", "min_alpha", "max_alpha") if k not in fk]
        if fk.get("enable") and fk_missing:
            raise ValueError(f"fractals.backbone.fractional_kernels: missing {fk_missing} (enable is true); "
                             "see platform/fmx/conf/fractals/default.yaml")
        return cls(
            d_model=m["d_model"], patch_size=m["patch_size"], tokenizers=m["tokenizers"],
            perceiver=m.get("perceiver"), ssm=m.get("ssm"),
            fractional_kernels={k: fk[k] for k in _FRACTIONAL_KEYS if k in fk} if fk.get("enable") else None,
            scale_encodings={k: v for k, v in se.items() if k != "enable"} if se.get("enable") else None,
            popt=m.get("popt"), heads=m.get("heads"),
        )

    # ------------------------------------------------------------------ forward
    def _step_mask(self, batch_size: int, n_steps: int, device) -> torch.Tensor | None:
        """Steps hidden from the encoder for masked reconstruction (True = hidden and scored).

        Random in training; a fixed pattern in eval so validation losses are comparable across epochs. The eval
        pattern is one row shared by every sample: a row per batch position made a sample's outputs depend on
        where it sat in the batch.
        """
        if not self.reconstruction or n_steps < 2:
            return None
        if self.training:
            u = torch.rand(batch_size, n_steps, device=device)
        else:
            g = torch.Generator().manual_seed(0)
            u = torch.rand(1, n_steps, generator=g).to(device).expand(batch_size, n_steps)
        mask = u < self.mask_ratio
        mask[mask.all(1), 0] = False  # every window keeps at least one visible step
        return mask

    def encode(self, batch: Mapping[str, Any], *, step_mask: torch.Tensor | None = None) -> dict[str, Any]:
        """Tokenize, fuse and scan. ``step_mask`` ``(B, S)`` hides whole steps from the encoder."""
        tokens = self.tokenizer(batch)
        n_time = self.tokenizer.num_time_tokens(batch)
        mask = tokens.mask
        if step_mask is not None:
            step_of_token = torch.div(tokens.time_index, self.perceiver.chunk_size, rounding_mode="floor")
            hidden = torch.gather(step_mask, 1, step_of_token.clamp_max(step_mask.shape[1] - 1))
            mask = mask & ~hidden
        per = self.perceiver(tokens.tokens, mask=mask, time_index=tokens.time_index, n_time=n_time)
        x = per.latents
        if self.scale_encoding is not None:
            try:
                x = self.scale_encoding(x)
            except ValueError as exc:  # a window too short for the scattering: say which window and which field
                raise ValueError(f"batch: a window of {n_time} token bins ({x.shape[1]} latent steps of "
                                 f"{self.step_size} samples) is too short for fractals.backbone.scale_encodings "
                                 f"({exc}); use longer windows") from exc
        h, states = self.backbone(x, return_states=True)
        return {"perceiver": per.latents, "ssm": h, "ssm_states": states[-1],
                "tokens": Tokens(tokens.tokens, mask, tokens.time_index, tokens.channel_index, tokens.modality_index)}

    def _popt(self, tokens: Tokens, steps: torch.Tensor) -> torch.Tensor:
        """PopT over per-channel token summaries (when the tokens keep channels) and the SSM steps."""
        parts, masks = [steps], [torch.ones(steps.shape[:2], dtype=torch.bool, device=steps.device)]
        chan = tokens.channel_index
        # One host sync answers both "any channel tokens?" (largest index >= 0) and how many channels.
        top = int(chan.max()) if chan.numel() else -1
        if top >= 0:
            summ, smask = channel_summaries(tokens, top + 1)
            parts.insert(0, summ.to(steps.dtype))
            masks.insert(0, smask)
        return self.popt(torch.cat(parts, 1), mask=torch.cat(masks, 1))

    def _fit_view_features(self, view: torch.Tensor) -> torch.Tensor:
        """Zero-pad the contrastive view's features up to ``dim_b``, as the behaviour head and tokenizer take
        ``F <= n_features``; more features than ``dim_b`` is a config error."""
        n, dim_b = view.shape[-1], self.contrastive_dim_b
        if n > dim_b:
            raise ValueError(f"batch[{self.contrastive_view!r}]: has {n} features, more than "
                             f"model.heads.contrastive.dim_b={dim_b}; raise dim_b to {n}")
        return nn.functional.pad(view, (0, dim_b - n)) if n < dim_b else view

    def _check_finite_inputs(self, batch: Mapping[str, Any]) -> None:
        """Raise a ValueError naming the first batch key read by the model with NaN/inf in a real channel."""
        # Head targets too: a forecast/reconstruction target no tokenizer reads (spikes -> LFP) made a silent NaN loss.
        keys = list(self.tokenizer_options) + [k for k in ("behavior", self.contrastive_view) if k]
        keys += list(self.forecast) + list(self.reconstruction)
        for key in dict.fromkeys(keys):
            x = batch.get(key)
            if not isinstance(x, torch.Tensor) or not x.is_floating_point():
                continue
            bad = ~torch.isfinite(x)
            mask, time_major = batch.get(f"{key}_mask"), key in TIME_MAJOR_KEYS
            per_channel = x.shape[::2] if time_major else x.shape[:2]
            if isinstance(mask, torch.Tensor) and x.ndim == 3 and mask.shape == per_channel:
                # Padding may hold anything: the tokenizers never read it.
                bad = bad & (mask.bool()[:, None, :] if time_major else mask.bool()[:, :, None])
            if bool(bad.any()):
                raise ValueError(f"batch[{key!r}]: {int(bad.sum())} NaN or inf value(s) in real channels make the "
                                 f"loss NaN; interpolate them, or mark the channel as padding in {key}_mask")

    def _target_view(self, batch: Mapping[str, Any], key: str):
        """``channel_view`` of a forecast/reconstruction target, its mask and ids checked against it (a target no
        tokenizer reads was not: a mask of the wrong width failed as a broadcast RuntimeError)."""
        x, m, ids = channel_view(batch, key)
        check_channel_input(x, m, ids, key, _ID_KEYS.get(key, f"{key}_channel_ids"))
        return x, m, ids

    def _check_target_lengths(self, batch: Mapping[str, Any], n_tok: int) -> None:
        """Head targets no tokenizer reads need the window's token bins too: the heads crop or pad a target to the
        window, so a longer one lost its tail (and a misaligned one was scored against the wrong samples) unseen."""
        keys = list(self.forecast) + list(self.reconstruction) + (["behavior"] if self.behavior is not None else [])
        lengths = {}
        for key in dict.fromkeys(keys):
            x = batch.get(key)
            if isinstance(x, torch.Tensor) and x.ndim == 3:
                lengths[key] = x.shape[1] if key in TIME_MAJOR_KEYS else x.shape[-1]
        view = batch.get(self.contrastive_view) if self.contrastive is not None else None
        if self.contrastive is not None and self.contrastive.pairing == "time" and isinstance(view, torch.Tensor) \
                and view.ndim == 3 and view.shape[1] != -(-n_tok // self.perceiver.chunk_size):
            lengths[self.contrastive_view] = view.shape[1]  # not one row per step: on the sample axis, time-paired
        bad = {k: t for k, t in lengths.items() if -(-t // self.patch_size) != n_tok}
        if bad:
            raise ValueError(f"batch: head target(s) {bad} (time samples) do not span the window of the tokenized "
                             f"modalities ({n_tok} token bins of {self.patch_size} samples); crop or pad every "
                             "modality to one length T per batch")

    def forward(self, batch: Mapping[str, Any]) -> dict[str, Any]:
        n_tok = self.tokenizer.num_time_tokens(batch)
        if n_tok is None:
            raise ValueError(f"batch: needs at least one time-aligned modality of {list(self.tokenizer_options)}")
        n_steps = -(-n_tok // self.perceiver.chunk_size)
        b = next(v.shape[0] for k, v in batch.items() if k in self.tokenizer_options)
        step_mask = self._step_mask(b, n_steps, next(self.parameters()).device)
        enc = self.encode(batch, step_mask=step_mask)
        self._check_target_lengths(batch, n_tok)  # after the tokenizer's own check of the modalities it reads
        h = enc["ssm"]
        k = self.perceiver.n_latents
        steps = h[:, k - 1 :: k]  # last latent of each chunk: one per step, sees the whole chunk
        popt = self._popt(enc["tokens"], steps)
        losses, outputs, metrics = {}, {}, {}
        # Losses of heads that had nothing to score (no step `horizon` ahead inside the window, every channel
        # or feature masked, no hidden step, a single sample to contrast) are 0 by construction: summed, they
        # would pull the epoch's mean loss down and drive their uncertainty weights up, so they count only
        # when no head scored anything.
        empty: dict[str, torch.Tensor] = {}
        pending: list[tuple[str, torch.Tensor, bool, list[torch.Tensor]]] = []

        def add(name: str, loss: torch.Tensor, scored: bool, *masks: Optional[torch.Tensor]) -> None:
            # Whether each mask holds anything real is read below for all heads at once: one host sync per
            # forward instead of one per head.
            pending.append((name, loss, scored, [m for m in masks if m is not None]))

        too_short = []  # heads whose target is here but the window has too few steps for (every batch alike)
        for key, head in self.forecast.items():
            if key in batch:
                x, m, ids = self._target_view(batch, key)
                out = head(steps, target=x, channel_mask=m, channel_ids=ids)
                # x.numel(): a modality with no channel (B, 0, T) has nothing to score, mask or not
                add(f"forecast_{key}", out.loss, steps.shape[1] > head.horizon and x.numel() > 0, m)
                outputs[f"forecast_{key}"] = out.prediction
                too_short += [f"forecast_{key}"] if steps.shape[1] <= head.horizon else []
        for key, head in self.reconstruction.items():
            too_short += [f"recon_{key}"] if key in batch and step_mask is None else []
            if key in batch and step_mask is not None:
                x, m, ids = self._target_view(batch, key)
                out = head(steps, target=x, channel_mask=m, channel_ids=ids, step_mask=step_mask)
                add(f"recon_{key}", out.loss, x.numel() > 0, m, step_mask)
                outputs[f"recon_{key}"] = out.prediction
        if self.behavior is not None and "behavior" in batch:
            mask = batch.get("behavior_mask")
            try:
                out = self.behavior(steps, target=batch["behavior"], mask=mask)
            except ValueError as exc:  # the head says "target": name the batch key and the config field
                raise ValueError(f"batch['behavior'] (model.heads.behavior.n_features="
                                 f"{self.behavior.n_features}): {exc}") from exc
            add("behavior", out.loss, batch["behavior"].numel() > 0, mask)
            outputs["behavior"] = out.prediction
            metrics.update({f"behavior_{n}": v for n, v in out.metrics.items()})
        if self.contrastive is not None and self.contrastive_view in batch:
            view = batch[self.contrastive_view]
            if self.contrastive.pairing == "time" and view.ndim != 3:
                raise ValueError(f"batch[{self.contrastive_view!r}] (model.heads.contrastive.view): has shape "
                                 f"{tuple(view.shape)}, one vector per sample, but model.heads.contrastive.pairing "
                                 "'time' pairs time steps and needs a (B, T, F) view; use pairing: sample")
            feature_mask = batch.get(f"{self.contrastive_view}_mask")
            has_view = None
            if feature_mask is not None and self.contrastive_view in TIME_MAJOR_KEYS:
                # (B, T, F) with a (B, F) mask: missing features must not reach the loss.
                view = torch.where(feature_mask.bool()[:, None, :], view, torch.zeros((), dtype=view.dtype,
                                                                                      device=view.device))
                # A sample without one real feature has no view: it is no pair (nor a negative).
                has_view = feature_mask.bool().any(1)
            sample_mask = has_view
            if has_view is not None and self.contrastive.pairing == "time" and not bool(has_view.any()):
                sample_mask = None  # no pair at all, which the head refuses: computed as before, scored as nothing
            view, view_mask, latents = self._fit_view_features(view), None, popt
            if self.contrastive.pairing == "time":
                # Time pairing contrasts latent steps (PopT tokens have no time axis) with the view pooled to
                # steps: a view on the sample axis is padded (or cropped) to whole steps, padding left unpooled.
                latents = steps
                if view.ndim == 3 and view.shape[1] != steps.shape[1]:
                    fitted, valid = fit_time(view.transpose(1, 2), steps.shape[1] * self.step_size)
                    view, view_mask = fitted.transpose(1, 2), valid.expand(view.shape[0], -1)
            if view.shape[0] != latents.shape[0]:
                raise ValueError(f"batch[{self.contrastive_view!r}] (model.heads.contrastive.view): has "
                                 f"{view.shape[0]} samples on axis 0, the other modalities {latents.shape[0]}; "
                                 "give every batch key one row per sample")
            out = self.contrastive(latents, view, b_mask=view_mask, sample_mask=sample_mask)
            time_pairs = self.contrastive.pairing == "time"
            enough = None if has_view is None else (has_view if time_pairs else has_view.sum() > 1)  # 2 to contrast
            add("contrastive", out.loss, time_pairs or popt.shape[0] > 1, enough)
            metrics.update({f"contrastive_{n}": v for n, v in out.metrics.items()})
        if self.adversarial is not None and self.adversarial_target in batch:
            try:
                out = self.adversarial(popt, target=batch[self.adversarial_target])
            except ValueError as exc:  # the head says "target": name the batch key and the config field
                raise ValueError(f"batch[{self.adversarial_target!r}] (model.heads.adversarial): {exc}") from exc
            add("adversarial", out.loss, True)
            metrics.update({f"adversarial_{n}": v for n, v in out.metrics.items()})
        unscorable = tuple(too_short) if too_short and all(name in too_short for name, *_ in pending) else ()
        checks = [m.bool().any().to(steps.device) for _, _, scored, masks in pending if scored for m in masks]
        # Counts scored with the Poisson NLL must be >= 0: with a negative target exp(r) - y * r has no lower
        # bound, so the loss would run to -inf instead of failing. Read in the same host sync as the masks.
        count_keys = [k for k in _COUNT_KEYS if k in batch and (k in self.forecast or k in self.reconstruction)]
        for key in count_keys:
            x, m, _ = channel_view(batch, key)
            neg = x < 0
            if isinstance(m, torch.Tensor):
                neg = neg & m.bool()[:, :, None]
            checks.append(neg.any().to(steps.device))
        flags_all = torch.stack(checks).tolist() if checks else []
        negative = [k for k, bad in zip(count_keys, flags_all[len(flags_all) - len(count_keys):]) if bad]
        if negative:
            raise ValueError(f"batch[{negative[0]!r}]: has negative values in real channels, but it is scored as "
                             "counts (Poisson loss); pass binned spike counts >= 0, or mark those units False in "
                             f"{negative[0]}_mask")
        real = iter(flags_all[: len(flags_all) - len(count_keys)])
        for name, loss, scored, masks in pending:
            flags = [next(real) for _ in masks] if scored else []
            (losses if scored and all(flags) else empty)[name] = loss
        scored_names = tuple(losses)  # validation averages each head over the batches where it scored
        if not losses:
            losses = empty
        if not losses and unscorable:  # the targets are here: the windows are too short to score them
            raise ValueError(f"batch: its windows give {steps.shape[1]} step(s) of {self.step_size} samples, too few "
                             f"for every head with its target here {list(unscorable)} (forecast needs more steps "
                             "than its horizon, reconstruction 2). Use longer windows (data.window or data.n_time)")
        if not losses:
            raise ValueError(f"batch: no configured head {self.loss_names} found its target; batch keys: {sorted(batch)}")
        # Nothing scored: the zero losses, still in the graph, but not their weights' 0.5 * s_i terms, whose
        # gradient would move every log-variance on a batch with nothing to learn from.
        total = self.loss_weighting(losses) if scored_names else sum(losses.values())
        if not bool(torch.isfinite(total.detach())):
            self._check_finite_inputs(batch)  # name the batch key that brought the NaN, if one did
        return {
            "loss": total,
            "losses": losses,
            "latents": {"perceiver": enc["perceiver"], "ssm": h, "popt": popt, "ssm_states": enc["ssm_states"]},
            "outputs": outputs,
            "metrics": metrics,
            "scored": scored_names,
            "unscorable": unscorable,
        }
