"""The two-moons criticality experiment: data, training with the regularizer, indicators, figures."""
import math

import pytest
import pytorch_lightning as pl
import torch

from models.criticality.two_moons import build_datamodule, build_lightning_module, make_moons
from models.registry import build_datamodule as registry_data
from models.registry import build_lightning_module as registry_model


def _cfg(**model):
    base = {"family": "two_moons", "width": 16, "depth": 3, "mode": "fixed", "target": 1.0, "weight": 5.0, "lr": 0.03}
    base.update(model)
    return {"model": base, "data": {"name": "two_moons", "n_train": 512, "n_val": 256}, "seed": 0}


def test_make_moons_is_seeded_and_balanced():
    x1, y1 = make_moons(100, generator=torch.Generator().manual_seed(1))
    x2, _ = make_moons(100, generator=torch.Generator().manual_seed(1))
    assert torch.equal(x1, x2) and x1.shape == (100, 2) and int(y1.sum()) == 50


@pytest.mark.parametrize("mode", ["fixed", "adaptive"])
def test_training_learns_moons_and_holds_sigma_near_target(mode):
    pl.seed_everything(0, verbose=False)
    cfg = _cfg(mode=mode, update_every=1)
    model, data = registry_model(cfg), registry_data(cfg)
    trainer = pl.Trainer(max_epochs=20, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False)
    trainer.fit(model, data)
    m = trainer.callback_metrics
    assert m["val/acc"] > 0.9
    for key in ("val/dead_rate", "val/sensitivity", "val/boundary_dim", "val/sigma_mean"):
        assert key in m
    if mode == "fixed":
        assert float(m["val/sigma_mean"]) == pytest.approx(1.0, abs=0.15)
    else:
        assert "val/criticality_score" in m


def test_figures_and_bad_mode():
    cfg = _cfg()
    model = build_lightning_module(cfg)
    dm = build_datamodule(cfg)
    dm.setup()
    x, y = dm.val_set.tensors
    model._last_indicators = model.indicators(x)
    figs = model.figures((x, y))
    title = figs["decision_boundary"].axes[0].get_title()
    d = model._last_indicators.get("boundary_dim")
    assert ("box dim undefined" in title) if d is None or math.isnan(d) else (f"box dim {d:.2f}" in title)
    assert "nan" not in title
    with pytest.raises(ValueError, match="model.mode"):
        build_lightning_module(_cfg(mode="sometimes"))


def test_null_data_batch_size_falls_back_to_the_trainer_batch_size():
    # The project convention (conf/data/*.yaml): data.batch_size null = trainer.batch_size.
    dm = build_datamodule({"data": {"name": "two_moons", "batch_size": None}, "trainer": {"batch_size": 32}})
    assert dm.batch_size == 32
