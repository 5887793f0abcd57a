"""The two-moons criticality experiment as a model family the platform can sweep.

An MLP classifies the two-moons set while a spectral regularizer holds each hidden layer's top
singular value at a fixed target, or at targets that adapt to criticality indicators (ASISR).
Every validation logs accuracy, the indicators (dead-neuron rate, perturbation sensitivity,
decision-boundary box dimension, singular-value exponent) and the mean sigma, and
:meth:`TwoMoonsModule.figures` draws the decision boundary for the tracker.

Select it with ``model=two_moons data=two_moons`` (see ``sweeps/criticality_two_moons.yaml``).
"""
from __future__ import annotations

import math
import numbers
from typing import Any, Mapping, Sequence

import pytorch_lightning as pl
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from fractals.criticality import (
    AdaptiveSpectralRegularizer,
    CriticalityLR,
    SpectralRegularizer,
    boundary_box_dimension,
    dead_neuron_rate,
    layerwise_targets,
    perturbation_sensitivity,
    singular_value_exponent,
)
from models._config_options import _is_real, _is_whole, _refuse_float16_weights

BOUNDS = (-1.5, 2.5, -1.0, 1.5)  # the two moons live inside this box


def make_moons(n: int, *, noise: float = 0.1, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Two interleaved half circles with Gaussian noise (as scikit-learn's ``make_moons``).

    Shape:
        returns x ``(n, 2)`` float32 and y ``(n,)`` long
    """
    if n < 2:
        raise ValueError(f"n: needs at least 2 points, got {n}")
    n0 = n // 2
    t0 = torch.rand(n0, generator=generator) * math.pi
    t1 = torch.rand(n - n0, generator=generator) * math.pi
    upper = torch.stack([torch.cos(t0), torch.sin(t0)], 1)
    lower = torch.stack([1 - torch.cos(t1), 0.5 - torch.sin(t1)], 1)
    x = torch.cat([upper, lower]) + noise * torch.randn(n, 2, generator=generator)
    y = torch.cat([torch.zeros(n0, dtype=torch.long), torch.ones(n - n0, dtype=torch.long)])
    return x.float(), y


class TwoMoonsMLP(nn.Module):
    """ReLU MLP ``2 -> width x depth -> 2``; hidden activations are kept for the indicators."""

    def __init__(self, *, width: int = 64, depth: int = 4) -> None:
        super().__init__()
        dims = [2] + [width] * depth
        self.hidden = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))
        self.out = nn.Linear(width, 2)
        self.activations: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.activations = []
        for layer in self.hidden:
            x = torch.relu(layer(x))
            self.activations.append(x)
        return self.out(x)


class TwoMoonsModule(pl.LightningModule):
    """Lightning wrapper: cross-entropy plus a fixed or adaptive spectral regularizer.

    Parameters
    ----------
    width, depth : int
        MLP size.
    mode : {"fixed", "adaptive", "none"}
        ``fixed`` holds targets; ``adaptive`` moves them every ``update_every`` epochs from the
        indicators; ``none`` trains without the regularizer (the baseline).
    target : float
        Fixed target, or start target for ``adaptive``.
    layerwise : tuple (first, last) or None
        Depth-interpolated targets instead of one ``target``.
    weight, rate, lr, criticality_lr : see :mod:`fractals.criticality`.
    """

    def __init__(
        self,
        *,
        width: int = 64,
        depth: int = 4,
        mode: str = "fixed",
        target: float = 1.0,
        layerwise: tuple[float, float] | None = None,
        weight: float = 5.0,
        rate: float = 0.05,
        update_every: int = 5,
        lr: float = 1e-2,
        criticality_lr: bool = False,
    ) -> None:
        super().__init__()
        if mode not in ("fixed", "adaptive", "none"):
            raise ValueError(f"model.mode: {mode!r} is not one of fixed, adaptive, none")
        for name, value in (("width", width), ("depth", depth), ("update_every", update_every)):
            # update_every=0 raised ZeroDivisionError after the first validation; depth=0 a matmul error in fit.
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
                raise ValueError(f"model.{name}: must be an integer >= 1, got {value!r}")
        if layerwise is not None and len(layerwise) != 2:  # a third entry was silently dropped
            raise ValueError(f"model.layerwise: needs [first, last] (2 targets) or null, got {list(layerwise)!r}")
        for name, value in (("weight", weight), ("rate", rate)):
            # strings failed as "'>=' not supported" inside the regularizer, which named neither option
            if not _is_real(value, 0.0):
                raise ValueError(f"model.{name}: must be a finite number >= 0, got {value!r}")
        weight, rate = float(weight), float(rate)
        if not isinstance(criticality_lr, bool):  # any truthy value ('false', -1) switched the LR scaling on
            raise ValueError(f"model.criticality_lr: needs true or false, got {criticality_lr!r}")
        for name, values in (("target", [target]), ("layerwise", list(layerwise or [])), ("lr", [lr])):
            # a negative target trains towards collapsed weights; lr 0 trains nothing
            if not all(isinstance(v, numbers.Real) and not isinstance(v, bool) and 0 < v < math.inf for v in values):
                raise ValueError(f"model.{name}: must be finite numbers > 0, got {values if name == 'layerwise' else values[0]!r}")
        self.save_hyperparameters()
        self.net = TwoMoonsMLP(width=width, depth=depth)
        targets = layerwise_targets(depth, first=layerwise[0], last=layerwise[1]) if layerwise else target
        kwargs = dict(targets=targets, weight=weight if mode != "none" else 0.0, exclude=["out"])
        self.reg = AdaptiveSpectralRegularizer(rate=rate, **kwargs) if mode == "adaptive" else SpectralRegularizer(**kwargs)
        self.lr_sched = CriticalityLR() if criticality_lr else None
        self._last_indicators: dict[str, float] = {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (n, 3) and float64 points failed inside the first matmul; NaN points gave a NaN loss
        if not isinstance(x, torch.Tensor) or x.ndim != 2 or x.shape[1] != 2 or x.is_complex():
            raise ValueError(f"x: needs real points of shape (n, 2), got "
                             f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}")
        x = x.to(self.net.out.weight.dtype)
        if not bool(torch.isfinite(x).all()):
            raise ValueError("x: has NaN or inf coordinates; drop those points")
        return self.net(x)

    @staticmethod
    def _labels(logits: torch.Tensor, y) -> torch.Tensor:
        """``y`` checked: one class label in {0, 1} per point (out of range was an IndexError in the loss)."""
        ok = isinstance(y, torch.Tensor) and not y.is_floating_point() and not y.is_complex() \
            and tuple(y.shape) == (logits.shape[0],)
        if ok and y.numel():
            lo, hi = torch.stack(torch.aminmax(y.long())).tolist()
            ok = 0 <= lo and hi <= 1
        if not ok:
            got = (f"shape {tuple(y.shape)} {y.dtype} with values {y.unique()[:4].tolist()}"
                   if isinstance(y, torch.Tensor) else repr(y))
            raise ValueError(f"y: needs integer class labels in {{0, 1}} of shape ({logits.shape[0]},), got {got}")
        return y.long()

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # ASISR's moved targets are plain floats outside the state_dict: without them a reloaded model, or a
        # trial resumed from its checkpoint, would restart from model.target.
        if getattr(self.reg, "current", None) is not None:
            checkpoint["asisr_targets"] = dict(self.reg.current)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if isinstance(self.reg, AdaptiveSpectralRegularizer) and checkpoint.get("asisr_targets") is not None:
            self.reg.current = {str(k): float(v) for k, v in checkpoint["asisr_targets"].items()}

    def training_step(self, batch, batch_idx):
        x, y = batch
        logits = self(x)
        task = nn.functional.cross_entropy(logits, self._labels(logits, y))
        reg, sigmas = self.reg(self.net)
        if self.lr_sched is not None and sigmas:
            targets = self.reg.layer_targets(list(sigmas))
            factor = self.lr_sched.update(sigmas, targets)
            for group in self.optimizers().param_groups:
                group["lr"] = self.hparams.lr * factor
        self.log_dict({"train/loss": task + reg, "train/task_loss": task, "train/spectral_loss": reg}, on_epoch=True)
        return task + reg

    def indicators(self, x: torch.Tensor) -> dict[str, float]:
        with torch.no_grad():
            self(x)
            dead = dead_neuron_rate(self.net.activations)
        sens = perturbation_sensitivity(self, x, generator=torch.Generator().manual_seed(0))
        try:
            bdim = boundary_box_dimension(lambda p: self(p.to(self.device)).argmax(-1).cpu(), BOUNDS, coarse=8, levels=4, min_level=1)
        except ValueError:
            # An untrained net can predict one class everywhere: no boundary, so no dimension
            # (left out of the logged metrics rather than logged as NaN).
            bdim = float("nan")
        weights = [m.weight for m in self.net.hidden]
        # The exponent's fit needs 4 singular values (1 skipped, 3 fitted): none for depth 1 or width < 4.
        square = weights[1:] if self.hparams.width >= 4 else []
        exponents = []
        for w in square:
            try:
                exponents.append(singular_value_exponent(w))
            except ValueError:  # a layer collapsed below rank 4 (dead units): no power law to fit there
                continue
        return {
            "dead_rate": dead,
            "sensitivity": sens,
            "boundary_dim": bdim,
            "sv_exponent": float(torch.stack(exponents).mean()) if exponents else float("nan"),
            # float32 at least: torch has no half-precision matrix norm (bf16-true validation crashed here)
            "sigma_mean": float(torch.stack([torch.linalg.matrix_norm(w.detach().to(torch.promote_types(
                w.dtype, torch.float32)), ord=2) for w in weights]).mean()),
        }

    def validation_step(self, batch, batch_idx):
        x, y = batch
        logits = self(x)
        y = self._labels(logits, y)
        loss = nn.functional.cross_entropy(logits, y)
        acc = (logits.argmax(-1) == y).float().mean()
        self.log_dict({"val/loss": loss, "val/acc": acc}, prog_bar=True, sync_dist=True)
        if batch_idx == 0:
            ind = self.indicators(x)
            self._last_indicators = ind
            self.log_dict({f"val/{k}": v for k, v in ind.items() if math.isfinite(v)}, sync_dist=True)

    def on_validation_epoch_end(self) -> None:
        # Lightning's sanity-check validation runs before any training step: it must not move targets.
        if isinstance(self.reg, AdaptiveSpectralRegularizer) and self._last_indicators and not self.trainer.sanity_checking:
            if (self.current_epoch + 1) % self.hparams.update_every == 0:
                score = self.reg.update_targets(self.net, self._last_indicators)
                self.log("val/criticality_score", score, sync_dist=True)
        if getattr(self.reg, "current", None):
            self.log("val/target_mean", sum(self.reg.current.values()) / len(self.reg.current), sync_dist=True)

    def configure_optimizers(self):
        _refuse_float16_weights(self.parameters())
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)

    def figures(self, batch=None) -> dict[str, Any]:
        """The decision boundary over a batch ``(x, y)`` as a matplotlib Figure, for the tracker.

        The platform calls ``figures(batch)`` on any LightningModule that has it and logs each
        figure to the trial's MLflow run.
        """
        x, y = batch if batch is not None else (None, None)
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        xs, ys = torch.meshgrid(torch.linspace(BOUNDS[0], BOUNDS[1], 200), torch.linspace(BOUNDS[2], BOUNDS[3], 160), indexing="xy")
        with torch.no_grad():
            grid = torch.stack([xs.reshape(-1), ys.reshape(-1)], 1).to(self.device)
            prob = self(grid).softmax(-1)[:, 1].float().cpu()
        fig, ax = plt.subplots(figsize=(5, 4))
        ax.contourf(xs, ys, prob.reshape(xs.shape), levels=20, cmap="RdBu_r", alpha=0.7)
        ax.contour(xs, ys, prob.reshape(xs.shape), levels=[0.5], colors="k", linewidths=1)
        if x is not None and y is not None:
            # float: numpy has no bfloat16 (bf16-true trials lost their figure)
            ax.scatter(x[:, 0].float().cpu(), x[:, 1].float().cpu(), c=y.cpu(), s=6, cmap="RdBu_r", edgecolors="none")
        d = self._last_indicators.get("boundary_dim")
        if d is not None and math.isfinite(d):
            ax.set_title(f"decision boundary (box dim {d:.2f})")
        else:  # untrained: no boundary crosses the grid yet, so its dimension is undefined, not "nan"
            ax.set_title("decision boundary (box dim undefined: no boundary yet)")
        ax.set_xlabel("x1")
        ax.set_ylabel("x2")
        fig.tight_layout()
        return {"decision_boundary": fig}


class TwoMoonsData(pl.LightningDataModule):
    """Seeded train/validation splits of :func:`make_moons` (map-style, DDP-friendly)."""

    def __init__(self, *, n_train: int = 1024, n_val: int = 512, noise: float = 0.15, batch_size: int = 128, seed: int = 0) -> None:
        super().__init__()
        for name, value, least in (("n_train", n_train, 2), ("n_val", n_val, 2), ("batch_size", batch_size, 1)):
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < least:
                raise ValueError(f"data.{name}: must be an integer >= {least}, got {value!r}")
        if not (isinstance(noise, numbers.Real) and 0 <= noise < math.inf):  # NaN noise gave NaN inputs
            raise ValueError(f"data.noise: must be a finite number >= 0, got {noise!r}")
        self.n_train, self.n_val, self.noise, self.batch_size, self.seed = n_train, n_val, noise, batch_size, seed

    def setup(self, stage: str | None = None) -> None:
        g = torch.Generator().manual_seed(self.seed)
        self.train_set = TensorDataset(*make_moons(self.n_train, noise=self.noise, generator=g))
        self.val_set = TensorDataset(*make_moons(self.n_val, noise=self.noise, generator=g))

    def train_dataloader(self):
        return DataLoader(self.train_set, batch_size=self.batch_size, shuffle=True)

    def val_dataloader(self):
        return DataLoader(self.val_set, batch_size=self.n_val)


_MODEL_KEYS = ("width", "depth", "mode", "target", "layerwise", "weight", "rate", "update_every", "criticality_lr")


def _refuse_unknown(section: str, values: Mapping[str, Any], known: tuple[str, ...]) -> None:
    """A typo (``model.widht``) would otherwise train the default silently."""
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ValueError(f"{section}.{unknown[0]}: not an option of the two-moons {section}; "
                         f"allowed: {', '.join(sorted(known))}")


def build_lightning_module(cfg: Mapping[str, Any]) -> TwoMoonsModule:
    """Entry point for :mod:`models.registry` (``model.family: two_moons``)."""
    m = dict(cfg.get("model", {}))
    _refuse_unknown("model", m, (*_MODEL_KEYS, "family", "lr"))
    kwargs = {k: m[k] for k in _MODEL_KEYS if k in m and m[k] is not None}
    if "layerwise" in kwargs:
        value = kwargs["layerwise"]
        if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):  # tuple(0.5) was a TypeError
            raise ValueError(f"model.layerwise: needs [first, last] (2 targets) or null, got {value!r}")
        kwargs["layerwise"] = tuple(value)
    lr = cfg.get("optim", {}).get("lr")
    if m.get("lr") is not None:
        lr = m["lr"]
    if lr is not None:
        try:
            lr = float(lr)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"model.lr: must be a number > 0, got {lr!r}") from exc
    return TwoMoonsModule(**kwargs, **({"lr": lr} if lr is not None else {}))


def build_datamodule(cfg: Mapping[str, Any]) -> TwoMoonsData:
    """Entry point for :mod:`models.registry` (``data.name: two_moons``)."""
    d = dict(cfg.get("data", {}))
    _refuse_unknown("data", d, ("name", "n_train", "n_val", "noise", "batch_size"))
    batch = cfg.get("trainer", {}).get("batch_size", d.get("batch_size", 128))

    def whole(value):  # int() read 2.5 as 2 and failed on "abc" naming no option: TwoMoonsData names it
        return int(value) if _is_whole(value, -(2 ** 63)) else value

    noise = d.get("noise", 0.15)
    return TwoMoonsData(
        n_train=whole(d.get("n_train", 1024)),
        n_val=whole(d.get("n_val", 512)),
        noise=float(noise) if _is_real(noise, -math.inf) else noise,
        # null = trainer.batch_size, as in conf/data/*.yaml (0 fell through to it without a word)
        batch_size=whole(d["batch_size"] if d.get("batch_size") is not None else batch),
        seed=int(cfg.get("seed", 0)),
    )
