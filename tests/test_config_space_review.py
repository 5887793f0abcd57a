"""Review of the configuration space a sweep can reach: every sampled point must build and train.

Each test pins one concrete config that a shipped sweep (sweeps/*.yaml) or preset reaches and that failed
before its fix.
"""
from __future__ import annotations

import pytest
import torch

from models.backbones.fractional import FractionalKernel
from models.data.batch import collate_batch
from models.data.synthetic import SyntheticConfig, SyntheticNeuralDataset
from models.neurofmx import NeuroFMx
from models.presets import load_preset


@pytest.fixture(scope="module")
def batch():
    ds = SyntheticNeuralDataset(n_samples=2, config=SyntheticConfig(n_time=64))
    return collate_batch([ds[i] for i in range(2)])


def _tiny(fractals=None, **model_overrides):
    cfg = load_preset("tiny")
    cfg.update(model_overrides)
    torch.manual_seed(0)
    return NeuroFMx.from_config({"model": cfg, "fractals": fractals or {}})


def test_fractional_alpha_corner_min_equals_max_trains(batch):
    # sweeps/fractional_alpha.yaml: min_alpha in [0.05, 0.5], max_alpha in [0.5, 1.0]; CMA-ES clips
    # candidates to the bounds, so min_alpha = max_alpha = 0.5 is a reachable trial (a fixed exponent).
    fk = {"enable": True, "n_taps": 65, "min_alpha": 0.5, "max_alpha": 0.5}
    m = _tiny({"backbone": {"fractional_kernels": fk}})
    out = m(batch)
    assert torch.isfinite(out["loss"])
    out["loss"].backward()
    kernel = m.backbone.layers[0].mixer.fractional
    assert torch.allclose(kernel.alpha, torch.full_like(kernel.alpha, 0.5))
    assert all(torch.isfinite(p.grad).all() for p in m.parameters() if p.grad is not None)


def test_fractional_kernel_still_refuses_min_above_max():
    with pytest.raises(ValueError, match="min_alpha"):
        FractionalKernel(n_taps=9, min_alpha=0.6, max_alpha=0.5, channels=2)


@pytest.mark.parametrize("data, key, option, need", [
    ({"n_subjects": 3}, "spikes", "n_units", 96),  # unit ids are global: subject s owns s * n_units + u
    ({"n_units": 64}, "spikes", "n_units", 128),
    ({"n_lfp_channels": 32}, "lfp", "n_channels", 32),
])
def test_synthetic_data_knobs_fit_the_tiny_vocabularies(data, key, option, need):
    # A sweep over data.n_subjects / n_units / n_lfp_channels: ids beyond the tiny preset's vocabulary made
    # training fail at the first batch holding such a unit (mid-epoch, depending on the shuffle).
    from configs import tiny_training_config
    from models.registry import build_module_and_data

    cfg = tiny_training_config(n_train=4, n_val=2, batch_size=4)
    cfg["data"].update(n_time=64, **data)
    cfg["fractals"]["enable"] = False
    module, dm = build_module_and_data(cfg)
    assert module.cfg["model"]["tokenizers"][key][option] == need
    dm.setup("fit")
    out = module(next(iter(dm.train_dataloader())))
    assert torch.isfinite(out["loss"])


@pytest.mark.parametrize("width", [1, 2, 3])
def test_narrow_two_moons_mlp_validates(width):
    # model.width accepts any integer >= 1, but the singular-value exponent needs 4 singular values: widths
    # 1-3 raised a ValueError at the first validation and killed the trial. The exponent is left out
    # instead, as it is for depth 1.
    import math

    from models.criticality.two_moons import build_lightning_module, make_moons

    torch.manual_seed(0)
    module = build_lightning_module({"model": {"family": "two_moons", "width": width, "depth": 3}, "seed": 0})
    x, _ = make_moons(64, generator=torch.Generator().manual_seed(0))
    ind = module.indicators(x)
    assert math.isnan(ind["sv_exponent"])
    assert math.isfinite(ind["sigma_mean"]) and 0.0 <= ind["dead_rate"] <= 1.0


def test_adaptive_two_moons_targets_survive_a_checkpoint(tmp_path):
    # model.mode=adaptive (sweeps/criticality_two_moons.yaml): ASISR's moved targets lived outside the
    # state_dict, so a reloaded model, or a trial Ray resumed from its checkpoint, restarted them at model.target.
    import pytorch_lightning as pl

    from models.criticality.two_moons import TwoMoonsModule, build_datamodule, build_lightning_module

    cfg = {"model": {"family": "two_moons", "width": 8, "depth": 2, "mode": "adaptive", "update_every": 1},
           "data": {"name": "two_moons", "n_train": 32, "n_val": 32, "batch_size": 16}, "seed": 0}
    pl.seed_everything(0, verbose=False)
    module = build_lightning_module(cfg)
    trainer = pl.Trainer(max_epochs=1, limit_train_batches=1, num_sanity_val_steps=0, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(module, build_datamodule(cfg))
    moved = dict(module.reg.current)
    assert any(t != 1.0 for t in moved.values())
    path = tmp_path / "two_moons.ckpt"
    trainer.save_checkpoint(path)
    assert TwoMoonsModule.load_from_checkpoint(path).reg.current == moved


def _fit_tiny(cfg, max_steps):
    import pytorch_lightning as pl

    from models.registry import build_module_and_data

    pl.seed_everything(0, verbose=False)
    module, dm = build_module_and_data(cfg)
    trainer = pl.Trainer(max_steps=max_steps, limit_val_batches=0, num_sanity_val_steps=0, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(module, datamodule=dm)
    return module


@pytest.mark.parametrize("warmup, warns", [(1000, True), (1, False)])
def test_priors_that_never_switch_on_are_reported(caplog, warmup, warns):
    # sweeps/beta_star.yaml and lambda_grid.yaml sample fractals.priors.* for 10-epoch trials (80 steps) while the
    # priors switch on at warmup_steps=1000: every trial trained the same model without a word.
    from configs import tiny_training_config

    cfg = tiny_training_config(n_train=4, n_val=2, batch_size=2, warmup_steps=warmup, lambda_mf=0.0,
                               lambda_graphfd=0.0)
    cfg["data"]["n_time"] = 64
    cfg["fractals"]["probes"]["causal_scale_ablation"]["enable"] = False
    with caplog.at_level("WARNING", logger="models.lightning"):
        _fit_tiny(cfg, max_steps=2)
    said = [r.getMessage() for r in caplog.records if "never switch on" in r.getMessage()]
    assert bool(said) == warns
    if warns:
        assert "fractals.priors.warmup_steps=1000" in said[0] and "2 optimizer steps" in said[0]


@pytest.mark.parametrize("family, data, fix", [
    ("fractal_byte", "synthetic", "data=bytes"),
    ("two_moons", "files", "data=two_moons"),
    ("neurofmx", "bytes", "data=synthetic"),
])
def test_a_model_family_on_another_familys_data_is_refused_at_build(family, data, fix):
    # A sweep sampling the model group (model: [tiny, fractal_byte]) over data=synthetic crashed at the first
    # step with "too many values to unpack" or a dtype error from deep inside the model.
    from models.registry import build_module_and_data

    cfg = {"model": {"family": family}, "data": {"name": data}}
    with pytest.raises(ValueError, match=rf"data.name.*{fix}"):
        build_module_and_data(cfg)


def test_time_pairing_on_a_per_sample_view_names_the_config_fields():
    # model.heads.contrastive {view: stimulus, pairing: time}: the stimulus is one vector per sample, so there is
    # nothing to pair per step. The error said "a, b: pairing='time' needs (B, S, *) views", naming no field.
    ds = SyntheticNeuralDataset(n_samples=2, config=SyntheticConfig(n_time=64, modalities=("lfp", "stimulus")))
    stim_batch = collate_batch([ds[i] for i in range(2)])
    heads = {"contrastive": {"view": "stimulus", "dim_b": 8, "pairing": "time"}}
    m = _tiny(heads=heads)
    with pytest.raises(ValueError, match=r"batch\['stimulus'\].*model.heads.contrastive.pairing.*sample"):
        m(stim_batch)


def test_fractional_wavelet_scale_is_refused_not_truncated():
    # fractals.backbone.scale_encodings.wavelet_scales=[8.5] built a period-8 band without a word.
    with pytest.raises(ValueError, match=r"wavelet_scales.*8\.5"):
        _tiny({"backbone": {"scale_encodings": {"enable": True, "kind": "filterbank", "wavelet_scales": [8.5]}}})
    m = _tiny({"backbone": {"scale_encodings": {"enable": True, "kind": "filterbank", "wavelet_scales": [8.0, 16]}}})
    assert m.scale_encoding.scales == [8, 16]  # whole floats (a sweep's 8.0) stay fine


@pytest.mark.parametrize("path, value", [
    ("fractals.backbone.fractional_kernels.n_taps", 33.5),  # a uniform distribution over n_taps in a sweep
    ("model.popt.n_summary_tokens", 4.5),
    ("model.heads.forecast.kernel_size", 4.5),
    ("model.heads.forecast.embed_dim", 16.5),
    ("model.tokenizers.lfp.n_channels", 16.5),
])
def test_fractional_sizes_are_refused_not_truncated(path, value):
    # int() truncated these silently: the trial ran n_taps=33 while MLflow logged the sampled 33.5.
    import copy

    cfg = {"model": load_preset("tiny"),
           "fractals": {"backbone": {"fractional_kernels": {"enable": True, "n_taps": 33, "min_alpha": 0.2,
                                                            "max_alpha": 0.8}}}}
    bad = copy.deepcopy(cfg)
    node = bad
    *parents, leaf = path.split(".")
    for key in parents:
        node = node[key]
    node[leaf] = value
    with pytest.raises(ValueError, match=rf"{path}: needs an integer, got {value}"):
        NeuroFMx.from_config(bad)
    node[leaf] = float(int(value))  # a whole float (33.0) is still an integer
    NeuroFMx.from_config(bad)


def test_data_fitting_never_cuts_an_unset_vocabulary_below_the_tokenizer_default():
    from models.fit_to_data import fit_model_config

    cfg = {"model": {"family": "neurofmx", "tokenizers": {"spikes": {"layout": "time_mix"}, "lfp": {}}}}
    info = {"modalities": ["spikes", "lfp"], "n_unit_ids": 64, "n_lfp_channels": 8}
    fitted, changes = fit_model_config(cfg, info)  # defaults (1024 unit ids, 256 channels) already fit
    assert changes == [] and fitted == cfg
    fitted, _ = fit_model_config(cfg, {**info, "n_unit_ids": 2000})
    assert fitted["model"]["tokenizers"]["spikes"]["n_units"] == 2000


@pytest.mark.parametrize("lr", [0.0, -1e-3, float("nan")])
def test_fractal_byte_refuses_a_learning_rate_that_trains_nothing(lr):
    # model=fractal_byte model.lr=0 built and "trained" without moving a weight; NeuroFMx (optim.lr) and the
    # two-moons MLP (model.lr) refuse it.
    from models.byte.lightning import build_lightning_module

    cfg = {"model": {"family": "fractal_byte", "d_model": 32, "n_layers": 1, "lr": lr,
                     "mamba": {"d_state": 8, "headdim": 16, "expand": 2}}}
    with pytest.raises(ValueError, match="model.lr"):
        build_lightning_module(cfg)


@pytest.mark.parametrize("n_time, fails", [(4, True), (5, False)])
def test_a_window_too_short_for_every_head_is_an_error_not_a_zero_loss(n_time, fails):
    # data=files data.window=4 on the tiny preset (patch_size 4, forecast heads only for EEG) with
    # fractals.enable=false: one step per window, no step ahead to forecast, and the trial trained on
    # train/loss = 0.0 with no val/loss at all.
    # The model's forward still returns the zero loss (latents of short windows stay readable); training refuses.
    from models.lightning import NeuroFMxModule

    torch.manual_seed(0)
    batch = {"lfp": torch.randn(2, 3, n_time), "lfp_mask": torch.ones(2, 3, dtype=torch.bool)}
    model = load_preset("tiny")
    model["heads"] = {"forecast": {"keys": ["lfp"], "horizon": 1}}
    module = NeuroFMxModule({"model": model, "fractals": {"enable": False}})
    assert module(batch)["unscorable"] == (("forecast_lfp",) if fails else ())
    if fails:
        with pytest.raises(ValueError, match=r"1 step\(s\) of 4 samples.*forecast_lfp.*data.window"):
            module.training_step(batch, 0)
    else:
        assert float(module.training_step(batch, 0).detach()) > 0
