"""Lightning callbacks that watch the fractal structure of NeuroFMx latents during training.

- :class:`LatentFingerprintCallback` logs the latent fingerprint (beta, Higuchi FD, DFA alpha, and
  whatever :func:`fractals.probes.latent_fd_probe` adds) every ``fingerprint_every_n_steps``.
- :class:`LatentHistogramCallback` logs per-channel histograms of beta and FD every
  ``tb_hist_every_n`` steps: real histograms on loggers that have them (TensorBoard), quantiles as
  scalars everywhere else, nothing without a logger.
- :class:`CausalScaleAblationCallback` ablates one scale band of the inputs of a validation batch
  (:func:`fractals.probes.causal_scale_ablation`) and logs the change in loss and in latent measures.

:func:`latent_measures` is shared with :class:`models.lightning.NeuroFMxModule` for the
``val/latent_*`` metrics.
"""
from __future__ import annotations

import contextlib
import logging
import math
from typing import Any, Mapping

import torch

try:  # Lightning 2.x ships both names; the project depends on pytorch-lightning.
    import pytorch_lightning as pl
except ImportError:  # pragma: no cover
    import lightning.pytorch as pl

__all__ = [
    "latent_measures",
    "latent_band",
    "build_callbacks",
    "LatentFingerprintCallback",
    "LatentHistogramCallback",
    "CausalScaleAblationCallback",
    "LATENT_MEASURES",
    "global_means",
]

log = logging.getLogger("models.callbacks")
_WARNED: set[str] = set()
LATENT_MEASURES = ("beta", "hfd", "dfa")  # what latent_measures returns, in a fixed order for logging


def _warn_once(key: str, msg: str, *args: Any) -> None:
    if key not in _WARNED:
        _WARNED.add(key)
        log.warning(msg, *args)


def _autocast_off(device_type: str):
    """Autocast disabled (a no-op where the device has none): the fits need float32, not bf16 matmuls."""
    if torch.amp.is_autocast_available(device_type):
        return torch.autocast(device_type=device_type, enabled=False)
    return contextlib.nullcontext()


def latent_band(n_samples: int, fs: float, band: tuple[float, float]) -> tuple[float, float]:
    """The configured PSD band clipped to what ``n_samples`` at ``fs`` can resolve.

    Latents live at the token rate (``fs / patch_size``) on short windows, so the raw-signal band
    (2-80 Hz by default) can exceed Nyquist or hold too few Welch bins; the low edge is raised to two
    frequency bins and the high edge lowered to 90 % of Nyquist.
    """
    nperseg = min(n_samples, max(256, 2 ** int(math.floor(math.log2(max(n_samples / 4, 1))))))
    df = fs / nperseg
    low = max(float(band[0]), 2 * df)
    high = min(float(band[1]), 0.45 * fs)
    if high <= low * 1.5:
        low, high = 2 * df, 0.45 * fs
    return low, high


@torch.no_grad()
def latent_measures(latents: torch.Tensor, *, fs: float, cfg_fractals: Mapping[str, Any],
                    max_channels: int = 64) -> dict[str, torch.Tensor]:
    """Per-channel fractal measures of ``(B, T, D)`` latents (time on axis 1).

    Returns a dict of ``(B, C)`` tensors ``beta`` (1/f exponent), ``hfd`` (Higuchi FD), ``dfa``
    (DFA alpha), for the first ``max_channels`` non-constant channels (channels holding NaN or inf are
    left out, with one warning). A measure whose estimator is not available or rejects the input (too
    short, constant) is left out, with one warning.
    Where an estimator rejects only some channels (DFA on a step-like channel: a stretch exactly flat
    for a whole DFA window), only those channels are left out of that measure, with one warning naming
    them, so its tensor may have fewer columns than the others.
    """
    from fractals import metrics as fm

    x = latents.detach().float().transpose(1, 2)  # (B, C, T)
    # Dead channels (constant over time) make every estimator undefined: drop them, do not fail.
    finite = torch.isfinite(x).all(-1).all(0)
    live = finite & ((x.amax(-1) - x.amin(-1)).amin(0) > 1e-8)
    if not bool(finite.all()):
        # NaN channels were dropped as "constant": a diverged model read as dead latents, or measured healthy
        # over the channels it had left.
        _warn_once("non-finite", "latent_measures: latent channel(s) %s of %d hold NaN or inf (has training "
                   "diverged?); left out of the measures", torch.nonzero(~finite).flatten().tolist(), x.shape[1])
    x = x[:, live][:, :max_channels]
    out: dict[str, torch.Tensor] = {}
    if x.shape[1] == 0:
        if bool(finite.any()):
            _warn_once("dead", "latent_measures: every latent channel is constant; no measures logged")
        return out
    temporal = cfg_fractals.get("metrics", {}).get("temporal", {})
    n = x.shape[-1]
    band = latent_band(n, fs, tuple(temporal.get("psd_freq_band", (2.0, 80.0))))
    kmax = min(int(temporal.get("higuchi_kmax", 8)), n // 2)
    windows = [w for w in temporal.get("dfa_orders", [4, 16, 64, 256]) if 4 <= w <= n // 2]
    exclude_peaks = bool(temporal.get("exclude_peaks", True))

    def beta(v):
        try:
            return fm.spectral_beta(v, fs, band, exclude_peaks)
        except (RuntimeError, ValueError) as exc:
            # Smooth, short latents can defeat the peak search (singular fit, or "peaks" over the
            # whole band); the aperiodic slope without peak masking is still a valid measure.
            if not exclude_peaks:
                raise
            _warn_once("beta-peaks", "latent_measures: peak exclusion failed (%s); beta fitted without it", exc)
            return fm.spectral_beta(v, fs, band, False)

    calls = {
        "beta": beta,
        "hfd": lambda v: fm.higuchi_fd(v, kmax=kmax),
        "dfa": lambda v: fm.dfa_alpha(v, windows=windows if len(windows) >= 2 else None),
    }
    with _autocast_off(x.device.type):  # validation_step runs inside bf16-mixed autocast
        for name, call in calls.items():
            try:
                out[name] = call(x)
            except (NotImplementedError, ValueError, ImportError, RuntimeError) as exc:
                kept = _per_channel(call, x) if isinstance(exc, (ValueError, RuntimeError)) else None
                if kept is None:
                    # A measure must never stop training: log what failed once and leave it out.
                    _warn_once(f"measure-{name}", "latent_measures: %s not computed (%s)", name, exc)
                    continue
                out[name], failed = kept
                if not failed:  # rejected as a batch, accepted channel by channel
                    continue
                channels = torch.nonzero(live).flatten()[:max_channels].tolist()  # latent channel of each column
                _warn_once(f"measure-{name}-channels", "latent_measures: %s left out for latent channel(s) %s of "
                           "%d (%s); logged over the other channels", name, [channels[c] for c in failed],
                           len(channels), exc)
    return out


def _per_channel(call, x: torch.Tensor):
    """``call`` channel by channel, after it rejected the whole ``(B, C, T)`` batch: ``(values of the channels
    it accepts (B, C'), indices of those it rejects)``, or None when it rejects every channel. One step-like
    channel must not cost the measure of the others (the fingerprint isolates failing channels the same way)."""
    if x.shape[1] < 2:
        return None
    cols, failed = [], []
    for c in range(x.shape[1]):
        try:
            cols.append(call(x[:, c:c + 1]).reshape(x.shape[0], 1))
        except (ValueError, RuntimeError):
            failed.append(c)
    return (torch.cat(cols, 1), failed) if cols else None


def global_means(trainer: Any, keys: list[str], totals: torch.Tensor) -> dict[str, torch.Tensor]:
    """``sum / count`` per key over every DDP rank; keys that no rank counted are left out.

    ``totals`` ``(2, len(keys))`` holds this rank's weighted sums and counts. They are added over the
    ranks in one all-reduce, so a rank with nothing to score for a key (its batches lacked the head's
    target) adds nothing to that key's mean, and every rank gets the same keys in the same order: what
    Lightning's ``sync_dist`` needs (a key logged on one rank only hangs it or pairs mismatched values).
    """
    if trainer is not None and getattr(trainer, "world_size", 1) > 1:
        totals = trainer.strategy.reduce(totals, reduce_op="sum")
    sums, counts = totals[0], totals[1].tolist()
    return {key: sums[i] / counts[i] for i, key in enumerate(keys) if counts[i] > 0}


def _logged_step(trainer: Any) -> int:
    """The step Lightning's loggers put the metrics logged now at: the index of the optimizer step just taken
    (``train/loss`` of step k is logged at k; a validation after k+1 steps at k), so the callbacks' metrics line up
    with ``train/*`` and ``val/*``. ``trainer.global_step`` is one ahead of it after each step."""
    loop = getattr(getattr(trainer, "fit_loop", None), "epoch_loop", None)
    step = getattr(loop, "_batches_that_stepped", None)
    return int(step) if isinstance(step, int) else int(getattr(trainer, "global_step", 0))


def _loggers(trainer: Any, pl_module: "pl.LightningModule") -> list:
    """Every logger of the trainer: ``pl_module.logger`` is the first one only, so with ``logger=[csv, tensorboard]``
    TensorBoard got neither the histograms nor the fingerprint scalars."""
    loggers = list(getattr(trainer, "loggers", None) or [])
    return loggers or ([pl_module.logger] if pl_module.logger is not None else [])


def _log_scalars(pl_module: "pl.LightningModule", values: Mapping[str, float]) -> None:
    trainer = getattr(pl_module, "_trainer", None)
    step = _logged_step(trainer) if trainer is not None else pl_module.global_step
    for logger in _loggers(trainer, pl_module):
        logger.log_metrics({k: float(v) for k, v in values.items()}, step=step)


def _stepped(callback: Any, step: int) -> bool:
    """Whether the batch that just ended took an optimizer step. A fit resumed from a checkpoint saved at step k
    under gradient accumulation starts on a micro-batch at global_step k, which the callbacks' own ``_last_step``
    (not in the checkpoint) cannot tell from the batch that completed step k: it measured and logged step k twice."""
    return callback._start_step is None or step != callback._start_step


def eval_forward(pl_module, batch) -> Any:
    """``pl_module(batch)`` in eval mode without gradients; the running validation's own output when ``batch`` is
    its first batch (``pl_module.first_validation_forward``), so epoch-end callbacks measuring that batch cost no
    forward pass of their own (a third of the tiny preset's per-evaluation fingerprint time)."""
    cached = getattr(pl_module, "first_validation_forward", None)
    if cached is not None and cached[0] is batch and not pl_module.training:
        return cached[1]
    was_training = pl_module.training
    pl_module.eval()
    try:
        with torch.no_grad():
            return pl_module(batch)
    finally:
        pl_module.train(was_training)


def _forward_latents(pl_module, batch) -> torch.Tensor:
    out = eval_forward(pl_module, batch)
    if hasattr(pl_module, "clean_latents"):  # unmasked latents when reconstruction hides steps
        with torch.no_grad():
            out = {**out, "latents": pl_module.clean_latents(batch, out)}
    return out


class LatentFingerprintCallback(pl.Callback):
    """Log the latent fingerprint every ``every_n_steps`` training steps (on the current batch).

    Uses :func:`fractals.probes.latent_fd_probe` on the Perceiver and SSM latents (keys
    ``fingerprint/<latent>/<measure>_<mean|std>``: Higuchi FD, spectral beta, Hurst, MF width);
    falls back to :func:`latent_measures` (``fingerprint/<latent>/<beta|hfd|dfa>_<mean|std>``) when
    the probe is not available.
    """

    def __init__(self, *, every_n_steps: int, cfg_fractals: Mapping[str, Any]):
        from models._config_options import _int_option

        # 2.5 ran as every 2 steps and "5" failed as a TypeError naming no field.
        self.every_n_steps = _int_option(every_n_steps, "fractals.log.fingerprint_every_n_steps", 1)
        self.cfg_fractals = cfg_fractals
        self._last_step = -1  # global_step stays put over accumulated micro-batches: log each step once
        self._start_step = None  # global_step before this batch; see _stepped

    def fingerprint(self, latents: Mapping[str, torch.Tensor], fs: float) -> dict[str, float]:
        """Scalars for the time-resolved latents (``perceiver``, ``ssm``) at latent rate ``fs``."""
        series = {k: latents[k].detach().float() for k in ("perceiver", "ssm") if k in latents}
        try:
            from fractals.probes import latent_fd_probe

            probe = latent_fd_probe(series, self.cfg_fractals, fs=fs)
            live = any(float(probe.get(f"{k}/n_dead", 0)) < min(v.shape[-1], 64) for k, v in series.items())
            if live and all(k.endswith("n_dead") for k in probe):  # the probe leaves out what is too short for it
                steps = {k: int(v.shape[1]) for k, v in series.items()}
                _warn_once("fingerprint-short", "fingerprint: the latents (%s time steps) are too short for every "
                           "fractal measure; only fingerprint/*/n_dead is logged. Use longer windows (data.window or "
                           "data.n_time) or a smaller model.patch_size", steps)
            return {f"fingerprint/{k}": float(torch.as_tensor(v).float().mean()) for k, v in probe.items()
                    if torch.as_tensor(v).numel() > 0}
        except (ImportError, AttributeError, NotImplementedError, TypeError, ValueError, RuntimeError) as exc:
            _warn_once("probe", "fractals.probes.latent_fd_probe unavailable (%s); using latent_measures", exc)
        values: dict[str, float] = {}
        for key, lat in series.items():
            for name, v in latent_measures(lat, fs=fs, cfg_fractals=self.cfg_fractals).items():
                values[f"fingerprint/{key}/{name}_mean"] = float(v.mean())
                values[f"fingerprint/{key}/{name}_std"] = float(v.std()) if v.numel() > 1 else 0.0
        return values

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self._start_step = trainer.global_step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        step = trainer.global_step
        if (pl_module.logger is None or step == 0 or step % self.every_n_steps or step == self._last_step
                or not _stepped(self, step)):
            return
        self._last_step = step
        out = _forward_latents(pl_module, batch)
        _log_scalars(pl_module, self.fingerprint(out["latents"], pl_module.latent_rate(batch)))


class LatentHistogramCallback(pl.Callback):
    """Histograms of per-channel beta/FD of the SSM latents every ``every_n_steps`` steps."""

    def __init__(self, *, every_n_steps: int, cfg_fractals: Mapping[str, Any]):
        from models._config_options import _int_option

        # 2.5 ran as every 2 steps and "5" failed as a TypeError naming no field.
        self.every_n_steps = _int_option(every_n_steps, "fractals.log.tb_hist_every_n", 1)
        self.cfg_fractals = cfg_fractals
        self._last_step = -1  # global_step stays put over accumulated micro-batches: log each step once
        self._start_step = None  # global_step before this batch; see _stepped

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self._start_step = trainer.global_step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        step = trainer.global_step
        if (pl_module.logger is None or step == 0 or step % self.every_n_steps or step == self._last_step
                or not _stepped(self, step)):
            return
        self._last_step = step
        out = _forward_latents(pl_module, batch)
        measures = latent_measures(out["latents"]["ssm"], fs=pl_module.latent_rate(batch),
                                   cfg_fractals=self.cfg_fractals)
        experiments = [getattr(logger, "experiment", None) for logger in _loggers(trainer, pl_module)]
        scalars = {}
        for name, v in measures.items():
            flat = v.flatten().float().cpu()
            for experiment in experiments:
                if hasattr(experiment, "add_histogram"):
                    experiment.add_histogram(f"hist/latent_{name}", flat, global_step=_logged_step(trainer))
            q = torch.quantile(flat, torch.tensor([0.1, 0.5, 0.9]))
            scalars.update({f"hist/latent_{name}_p10": q[0], f"hist/latent_{name}_p50": q[1],
                            f"hist/latent_{name}_p90": q[2]})
        _log_scalars(pl_module, scalars)


class CausalScaleAblationCallback(pl.Callback):
    """At each validation end, ablate one scale band of the first validation batch's inputs.

    Logs ``val/ablation_delta_loss`` (ablated minus intact loss) and ``val/ablation_delta_<m>`` for
    each latent measure, the design's test of which scales the model causally relies on.
    """

    def __init__(self, *, mode: str, ablate_ratio: float, cfg_fractals: Mapping[str, Any]):
        if mode not in ("high_beta_only", "low_beta_only"):
            raise ValueError(
                f"fractals.probes.causal_scale_ablation.mode: must be 'high_beta_only' or 'low_beta_only', got {mode!r}"
            )
        try:
            ratio = float(ablate_ratio)
        except (TypeError, ValueError):
            ratio = float("nan")
        if not (0.0 < ratio < 1.0):
            raise ValueError("fractals.probes.causal_scale_ablation.ablate_ratio: must lie in (0, 1), "
                             f"got {ablate_ratio!r}")
        self.mode, self.ratio, self.cfg_fractals = mode, float(ablate_ratio), cfg_fractals
        self._batch = None

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        if batch_idx == 0:
            self._batch = batch

    def ablate(self, batch: Mapping[str, Any], fs: float) -> dict[str, Any]:
        """Copy of ``batch`` with every signal modality ablated along its time axis."""
        from fractals.probes import causal_scale_ablation

        out = dict(batch)
        band = tuple(self.cfg_fractals.get("metrics", {}).get("temporal", {}).get("psd_freq_band", (2.0, 80.0)))

        def fit(n: int) -> tuple[float, float]:
            lo, hi = float(band[0]), min(float(band[1]), 0.45 * fs)
            # Slow signals (fMRI at 0.5 Hz) lie entirely below the raw band: ablate what they resolve.
            return (lo, hi) if hi > 1.5 * lo else latent_band(n, fs, band)

        def run(x: torch.Tensor, mask: Any) -> torch.Tensor:
            # x (B, C, T). Padded channels may hold anything, NaN included (the model never reads them, and its
            # NaN error says to mark such channels as padding), but the ablation refuses non-finite input:
            # ablate zeros there and hand the padding back as it was.
            pad = None
            if isinstance(mask, torch.Tensor) and tuple(mask.shape) == tuple(x.shape[:2]):
                pad = ~mask.to(x.device).bool()[:, :, None]
                x_in = torch.where(pad, torch.zeros((), dtype=x.dtype, device=x.device), x)
            else:
                x_in = x
            y = causal_scale_ablation(x_in, mode=self.mode, ratio=self.ratio, fs=fs, band=fit(x.shape[-1]))
            return y if pad is None else torch.where(pad, x, y)

        for key in ("lfp", "eeg", "ecog", "ieeg", "emg"):
            if key in batch:
                out[key] = run(batch[key], batch.get(f"{key}_mask"))
        for key in ("spikes", "calcium", "fmri"):
            if key in batch:  # (B, T, N): time on axis 1
                y = run(batch[key].transpose(1, 2), batch.get(f"{key}_mask")).transpose(1, 2)
                out[key] = y.clamp_min(0) if key == "spikes" else y
        return out

    def on_validation_epoch_end(self, trainer, pl_module):
        if trainer.sanity_checking:
            return
        batch, self._batch = self._batch, None
        keys = ["val/ablation_delta_loss"] + [f"val/ablation_delta_{name}" for name in LATENT_MEASURES]
        totals = torch.zeros(2, len(keys), device=pl_module.device)
        try:
            values = self._deltas(pl_module, batch) if batch is not None else {}
        except (ImportError, AttributeError, NotImplementedError) as exc:
            _warn_once("ablation", "causal scale ablation skipped: fractals.probes not available (%s)", exc)
            values = {}
        for i, key in enumerate(keys):
            if key in values:
                totals[0, i], totals[1, i] = values[key], 1.0
        # Every rank takes part in the reduction, even one whose measures failed, and logs the same keys.
        for key, v in global_means(trainer, keys, totals).items():
            pl_module.log(key, v, on_epoch=True, sync_dist=True, batch_size=1)

    def _deltas(self, pl_module, batch) -> dict[str, float]:
        ablated = self.ablate(batch, pl_module.sample_rate(batch))
        intact, broken = _forward_latents(pl_module, batch), _forward_latents(pl_module, ablated)
        values = {"val/ablation_delta_loss": float(broken["loss"] - intact["loss"])}
        fs = pl_module.latent_rate(batch)
        m0 = latent_measures(intact["latents"]["ssm"], fs=fs, cfg_fractals=self.cfg_fractals)
        m1 = latent_measures(broken["latents"]["ssm"], fs=fs, cfg_fractals=self.cfg_fractals)
        for name in m0.keys() & m1.keys():
            values[f"val/ablation_delta_{name}"] = float(m1[name].mean() - m0[name].mean())
        return values


def build_callbacks(cfg: Mapping[str, Any]) -> list[pl.Callback]:
    """The fractal callbacks the composed config asks for (none when ``fractals.enable`` is false)."""
    fr = cfg.get("fractals", {}) or {}
    if not fr.get("enable", False):
        return []
    from models._config_options import _int_option, _mapping_option

    logc = _mapping_option(fr, "log", "fractals.log")
    every = {name: _int_option(logc.get(name, default), f"fractals.log.{name}", 1)
             for name, default in (("fingerprint_every_n_steps", 200), ("tb_hist_every_n", 500))}
    cbs: list[pl.Callback] = [
        LatentFingerprintCallback(every_n_steps=every["fingerprint_every_n_steps"], cfg_fractals=fr),
        LatentHistogramCallback(every_n_steps=every["tb_hist_every_n"], cfg_fractals=fr),
    ]
    abl = _mapping_option(_mapping_option(fr, "probes", "fractals.probes"), "causal_scale_ablation",
                "fractals.probes.causal_scale_ablation")
    if abl.get("enable", False):
        cbs.append(CausalScaleAblationCallback(mode=abl.get("mode", "high_beta_only"),
                                               ablate_ratio=abl.get("ablate_ratio", 0.15), cfg_fractals=fr))
    return cbs
