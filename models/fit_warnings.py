"""Start-of-fit warnings of the NeuroFMx LightningModule: settings that would make a fit do less than asked."""
from __future__ import annotations

import logging
import math
from typing import Any, Mapping

# The training module's logger name: users and tests filter these warnings by it.
log = logging.getLogger("models.lightning")


class _FitWarnings:
    """Mixin of :class:`models.lightning.NeuroFMxModule`: reads its ``model``, ``priors``, ``cfg`` and trainer."""

    def _warn_forecast_never_scored(self, batch: Mapping[str, Any]) -> None:
        """Say so when the windows are too short for the forecast horizon while other heads still score: the
        forecast head then never trains, without a word (horizon counts SSM steps, not samples)."""
        n_steps = -(-self.model.tokenizer.num_time_tokens(batch) // self.model.perceiver.chunk_size)
        short = sorted(k for k, head in self.model.forecast.items() if k in batch and n_steps <= head.horizon)
        if short:
            log.warning(
                "model.heads.forecast.horizon=%d steps but the windows give %d steps of %d samples: forecast_%s is "
                "never scored and never trains. The horizon counts steps (model.patch_size * perceiver.chunk_size "
                "samples); lower it below %d, or use longer windows (data.window or data.n_time).",
                self.model.forecast[short[0]].horizon, n_steps, self.model.step_size, "/forecast_".join(short), n_steps)

    def _warn_priors_never_on(self) -> None:
        """Say so when the fractal priors cannot switch on inside this fit: their settings then change nothing
        (a 10-epoch sweep trial of 80 steps under the default ``warmup_steps: 1000``)."""
        trainer = self._trainer
        if self.priors is None or trainer is None or not trainer.is_global_zero:
            return
        if not any(getattr(self.priors, f"lambda_{term}", 0.0) > 0 for term in ("spec", "mf", "graphfd")):
            return
        total = trainer.estimated_stepping_batches
        if not math.isfinite(total) or self.prior_warmup < total:
            return
        log.warning(
            "fractals.priors.warmup_steps=%d but this fit runs %d optimizer steps: the fractal priors never switch "
            "on, so fractals.priors.* (spectral_beta_target, lambda_spec, lambda_mf, lambda_graphfd) change nothing "
            "in this run. Set fractals.priors.warmup_steps below the step count, or train longer.",
            self.prior_warmup, int(total))

    def _warn_lr_warmup_outlasts_fit(self) -> None:
        """Say so when the LR warmup is longer than the fit: the learning rate then never reaches ``optim.lr``
        and the cosine decay never starts (``warmup_steps: 50`` in a 40-step sweep trial peaks at 0.8 x lr)."""
        trainer = self._trainer
        if trainer is None or not trainer.is_global_zero:
            return
        warmup = int((self.cfg.get("optim", {}) or {}).get("warmup_steps", 0) or 0)
        total = trainer.estimated_stepping_batches
        if not math.isfinite(total) or warmup <= total:
            return
        lr = float((self.cfg.get("optim", {}) or {}).get("lr", 3e-4))
        log.warning(
            "optim.warmup_steps=%d but this fit runs %d optimizer steps: the learning rate never reaches "
            "optim.lr=%g (it climbs linearly to %.2f x optim.lr on the last step, %.2f x on average) and the "
            "%s schedule after the warmup never starts. Set optim.warmup_steps below the step count, or train longer.",
            warmup, int(total), lr, total / warmup, (total + 1) / (2 * warmup),
            (self.cfg.get("optim", {}) or {}).get("schedule", "cosine"))

    def _warn_mid_epoch_resume(self) -> None:
        """Say what happens when fit resumes from a checkpoint saved inside an epoch.

        Lightning restores the step counters but restarts a train dataloader without
        ``state_dict``/``load_state_dict`` from its first batch, then ends the epoch after the batches it
        had left: the epoch's first batches are trained on again and its last ones not at all. Our data
        modules' train loaders are resumable (:mod:`models.data.resumable`), so this speaks only for
        custom data modules.
        """
        trainer = self._trainer
        if trainer is None or trainer.ckpt_path is None or not trainer.is_global_zero:
            return
        n = trainer.num_training_batches
        done = trainer.fit_loop.epoch_loop.batch_progress.current.processed
        if not (isinstance(n, int) and 0 < done < n):
            return
        loaders = trainer.train_dataloader
        loaders = list(loaders.values()) if isinstance(loaders, Mapping) else (
            list(loaders) if isinstance(loaders, (list, tuple)) else [loaders])
        if all(hasattr(dl, "state_dict") and hasattr(dl, "load_state_dict") for dl in loaders):
            return  # Lightning restores a resumable loader's position itself
        rest = n - done
        log.warning(
            "resuming from %s inside epoch %d after %d of its %d training batches. The train dataloader is not "
            "resumable, so the remaining %d batch(es) of this epoch are the loader's first %d: "
            "batches 0-%d of the epoch are trained on twice (when the loader repeats its order: a fixed seed, or "
            "DDP's sampler) and batches %d-%d not at all. global_step, the LR schedule and the prior warmup "
            "continue from step %d. Resume from an end-of-epoch checkpoint to avoid this.",
            trainer.ckpt_path, trainer.current_epoch, done, n, rest, rest, min(done, rest) - 1, max(done, rest),
            n - 1, trainer.global_step)
