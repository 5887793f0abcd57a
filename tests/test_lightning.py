"""NeuroFMx LightningModule: contract metric names from a real Trainer run, checkpoint round trip,
fractal priors moving latent beta, optimizer groups and schedule, callbacks."""
from __future__ import annotations

import copy
import csv
from pathlib import Path

import pytest
import torch

import pytorch_lightning as pl
from pytorch_lightning.loggers import CSVLogger

from models.data.datamodule import build_datamodule
from models.lightning import NeuroFMxModule, build_lightning_module, param_groups, warmup_cosine

from configs import tiny_training_config

CONF = Path(__file__).resolve().parents[1] / "platform" / "fmx" / "conf"



def _cfg(**fractal_priors) -> dict:
    return tiny_training_config(**fractal_priors)


def test_registry_builds_from_the_hydra_composed_config():
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from models.registry import build_lightning_module as registry_build

    with initialize_config_dir(config_dir=str(CONF), version_base=None):
        composed = OmegaConf.to_container(compose(config_name="config", overrides=["model=tiny"]), resolve=True)
    module = registry_build(composed)
    assert isinstance(module, NeuroFMxModule)
    assert module.priors is not None and module.prior_warmup == composed["fractals"]["priors"]["warmup_steps"]
    assert module.model.backbone.layers[0].mixer.fractional is not None  # fractals.backbone defaults are on
    with pytest.raises(ValueError, match="model.family"):
        build_lightning_module({**composed, "model": {**composed["model"], "family": "two_moons"}})


def test_trainer_run_logs_contract_metrics_and_checkpoint_round_trips(tmp_path):
    cfg = _cfg(warmup_steps=2)
    cfg["fractals"]["log"].update(fingerprint_every_n_steps=2, tb_hist_every_n=2)
    torch.manual_seed(0)
    module = build_lightning_module(cfg)
    dm = build_datamodule(cfg)
    trainer = pl.Trainer(max_steps=4, accelerator="cpu", devices=1, logger=CSVLogger(tmp_path, name="run"),
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         log_every_n_steps=1, num_sanity_val_steps=0)
    trainer.fit(module, datamodule=dm)
    metrics = trainer.callback_metrics
    for name in ("train/loss", "train/task_loss", "train/prior_loss", "val/loss", "val/forecast_lfp_loss",
                 "val/forecast_spikes_loss", "val/behavior_loss", "val/latent_beta", "val/latent_hfd",
                 "val/latent_dfa", "val/ablation_delta_loss", "val/ablation_delta_beta"):
        assert name in metrics, f"{name} not logged; got {sorted(metrics)}"
        assert torch.isfinite(torch.as_tensor(metrics[name])), name
    logged = set()
    with open(Path(trainer.logger.log_dir) / "metrics.csv") as fh:
        for row in csv.DictReader(fh):
            logged |= {k for k, v in row.items() if v not in ("", None)}
    assert {"fingerprint/ssm/higuchi_fd_mean", "fingerprint/perceiver/spectral_beta_mean", "hist/latent_beta_p50",
            "lr"} <= logged, sorted(logged)

    ckpt = tmp_path / "tiny.ckpt"
    trainer.save_checkpoint(ckpt)
    restored = NeuroFMxModule.load_from_checkpoint(ckpt)
    batch = next(iter(dm.val_dataloader()))
    module.eval()
    restored.eval()
    with torch.no_grad():
        a, b = module(batch), restored(batch)
    torch.testing.assert_close(b["loss"], a["loss"])
    torch.testing.assert_close(b["latents"]["ssm"], a["latents"]["ssm"])


def test_priors_move_latent_beta_toward_the_target():
    from fractals.regularizers import latent_beta

    target = 1.0
    results = {}
    for lam in (0.0, 1.0):
        cfg = _cfg(lambda_spec=lam, lambda_mf=0.0, lambda_graphfd=0.0, warmup_steps=0, spectral_beta_target=target)
        cfg["fractals"]["enable"] = lam > 0
        dm = build_datamodule(cfg)
        dm.setup("fit")
        batch = next(iter(dm.train_dataloader()))
        torch.manual_seed(0)
        module = NeuroFMxModule(cfg)
        assert (module.priors is not None) == (lam > 0)
        opt = torch.optim.AdamW(module.parameters(), lr=3e-3)
        for _ in range(12):
            out = module(batch)
            prior, _ = module._prior_loss(out, batch)
            loss = out["loss"] if prior is None else out["loss"] + prior
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            beta = latent_beta(module(batch)["latents"]["ssm"], module.latent_rate(batch), (2.0, 80.0))
        results[lam] = float((beta - target).abs().mean())
    assert results[1.0] < 0.6 * results[0.0], results


def test_priors_wait_for_warmup():
    module = NeuroFMxModule(_cfg(warmup_steps=5))
    dm = build_datamodule(module.cfg)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    out = module(batch)
    assert module._prior_loss(out, batch) == (None, {})  # global_step 0 < warmup 5
    module.prior_warmup = 0
    prior, parts = module._prior_loss(out, batch)
    assert prior.ndim == 0 and prior > 0 and set(parts) == {"spec", "mf", "graphfd"}


def test_param_groups_skip_norms_biases_and_ssm_scalars():
    module = NeuroFMxModule(_cfg())
    decay, no_decay = param_groups(module.model, 0.01)
    ids_no = {id(p) for p in no_decay["params"]}
    names_no = {n for n, p in module.model.named_parameters() if id(p) in ids_no}
    mixer = module.model.backbone.layers[0].mixer
    for p in (mixer.A_log, mixer.D, mixer.dt_bias, mixer.norm.weight, mixer.conv1d.bias):
        assert id(p) in ids_no
    assert id(mixer.in_proj.weight) not in ids_no and id(mixer.conv1d.weight) not in ids_no
    assert all("norm" in n or module.model.get_parameter(n).ndim < 2 or n.endswith(("A_log", "D", "dt_bias"))
               for n in names_no)
    assert decay["weight_decay"] == 0.01 and no_decay["weight_decay"] == 0.0


def test_warmup_cosine_schedule_and_optimizer_config():
    assert warmup_cosine(0, warmup_steps=10, total_steps=100) == pytest.approx(0.1)
    assert warmup_cosine(9, warmup_steps=10, total_steps=100) == pytest.approx(1.0)
    assert warmup_cosine(10, warmup_steps=10, total_steps=100) == pytest.approx(1.0)
    assert warmup_cosine(55, warmup_steps=10, total_steps=100) == pytest.approx(0.55, abs=1e-9)
    assert warmup_cosine(100, warmup_steps=10, total_steps=100) == pytest.approx(0.1)
    assert warmup_cosine(500, warmup_steps=10, total_steps=100, schedule="constant") == 1.0
    cfg = _cfg()
    cfg["optim"] = dict(cfg["optim"], total_steps=100)
    conf = NeuroFMxModule(cfg).configure_optimizers()
    opt, sched = conf["optimizer"], conf["lr_scheduler"]["scheduler"]
    assert isinstance(opt, torch.optim.AdamW) and opt.defaults["betas"] == (0.9, 0.95)
    assert conf["lr_scheduler"]["interval"] == "step"
    assert opt.param_groups[0]["lr"] == pytest.approx(cfg["optim"]["lr"] / cfg["optim"]["warmup_steps"])
    bad = copy.deepcopy(cfg)
    bad["optim"]["schedule"] = "linear"
    with pytest.raises(ValueError, match="optim.schedule"):
        NeuroFMxModule(bad)


def test_callbacks_follow_the_config():
    cfg = _cfg()
    names = [type(c).__name__ for c in NeuroFMxModule(cfg).configure_callbacks()]
    assert names == ["LatentFingerprintCallback", "LatentHistogramCallback", "CausalScaleAblationCallback"]
    cfg["fractals"]["enable"] = False
    module = NeuroFMxModule(cfg)
    assert module.configure_callbacks() == [] and module.priors is None
    cfg = _cfg()
    cfg["fractals"]["probes"]["causal_scale_ablation"]["mode"] = "mid_beta"
    with pytest.raises(ValueError, match="causal_scale_ablation.mode"):
        NeuroFMxModule(cfg).configure_callbacks()


class _HistogramLogger(pl.loggers.Logger):
    """A logger whose experiment takes histograms, like TensorBoard's (not installed here)."""

    def __init__(self):
        super().__init__()
        self.histograms, self.scalars = [], {}

    @property
    def name(self):
        return "hist"

    @property
    def version(self):
        return 0

    @property
    def experiment(self):
        return self

    def add_histogram(self, tag, values, global_step=None):
        self.histograms.append((tag, int(values.numel()), global_step))

    def log_metrics(self, metrics, step=None):
        self.scalars.update(metrics)

    def log_hyperparams(self, params, *args, **kwargs):
        pass


def test_histograms_go_to_loggers_that_take_them():
    cfg = _cfg(warmup_steps=0)
    cfg["fractals"]["log"].update(fingerprint_every_n_steps=1000, tb_hist_every_n=1)
    cfg["fractals"]["probes"]["causal_scale_ablation"]["enable"] = False
    logger = _HistogramLogger()
    trainer = pl.Trainer(max_steps=2, accelerator="cpu", devices=1, logger=logger, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                         num_sanity_val_steps=0, log_every_n_steps=1)
    trainer.fit(build_lightning_module(cfg), datamodule=build_datamodule(cfg))
    tags = {t for t, n, step in logger.histograms if n > 0 and step == 1}
    assert {"hist/latent_beta", "hist/latent_hfd", "hist/latent_dfa"} <= tags, logger.histograms
    assert "hist/latent_hfd_p50" in logger.scalars


def test_scale_ablation_handles_signals_slower_than_the_configured_band():
    """At fMRI-like rates 0.45 * fs lies below the band's 2 Hz low edge: the ablation must work inside
    what the rate resolves instead of ending every validation epoch with a ValueError."""
    from models.callbacks import CausalScaleAblationCallback

    cb = CausalScaleAblationCallback(mode="high_beta_only", ablate_ratio=0.15, cfg_fractals=_cfg()["fractals"])
    gen = torch.Generator().manual_seed(0)
    batch = {"lfp": torch.randn(2, 3, 128, generator=gen), "spikes": 3 + torch.rand(2, 128, 5, generator=gen), "fs": 2.0}
    out = cb.ablate(batch, fs=2.0)
    freqs = torch.fft.rfftfreq(128, d=1 / 2.0)
    for key, time_dim in (("lfp", -1), ("spikes", 1)):
        assert out[key].shape == batch[key].shape
        removed = torch.fft.rfft((batch[key] - out[key]).movedim(time_dim, -1), dim=-1).abs().amax((0, 1))
        touched = freqs[removed > 1e-4]
        assert touched.numel() > 0 and float(touched.max()) <= 0.9 + 1e-9, touched  # only below 0.45 fs


def test_priors_fit_latents_slower_than_the_configured_band():
    """At 8 Hz data the tiny model's latents run at 2 Hz, below the 1/f band's 2 Hz low edge: the prior
    must fit where the latents resolve (as val/latent_beta does) instead of raising once warmup ends."""
    module = NeuroFMxModule(_cfg(warmup_steps=0))
    dm = build_datamodule(module.cfg)
    dm.setup("fit")
    batch = dict(next(iter(dm.train_dataloader())), fs=8.0)
    assert module.latent_rate(batch) == 2.0
    out = module(batch)
    prior, parts = module._prior_loss(out, batch)
    assert torch.isfinite(prior) and float(parts["spec"].detach()) > 0
    # A rate that resolves the configured band keeps it.
    prior_fast, _ = module._prior_loss(module(dict(batch, fs=100.0)), dict(batch, fs=100.0))
    assert module.priors.band == (2.0, 80.0) and torch.isfinite(prior_fast)


def test_fingerprint_and_histogram_log_once_per_optimizer_step():
    """With gradient accumulation on_train_batch_end runs once per micro-batch while global_step moves
    only on optimizer steps: each logged step must be measured and logged once, not once per micro-batch."""
    from types import SimpleNamespace

    from models.callbacks import LatentFingerprintCallback, LatentHistogramCallback

    latents = torch.randn(2, 64, 4, generator=torch.Generator().manual_seed(0))
    steps: list = []

    class _Module:  # the parts of a LightningModule the callbacks use
        training = True
        logger = SimpleNamespace(log_metrics=lambda metrics, step=None: steps.append(step))

        def eval(self):
            return self

        def train(self, mode=True):
            return self

        def __call__(self, batch):
            return {"latents": {"ssm": latents, "perceiver": latents}}

        def latent_rate(self, batch):
            return 100.0

    fr = _cfg()["fractals"]
    for cb in (LatentFingerprintCallback(every_n_steps=1, cfg_fractals=fr),
               LatentHistogramCallback(every_n_steps=1, cfg_fractals=fr)):
        steps.clear()
        for global_step in (0, 1, 1, 2, 2):  # accumulate_grad_batches=2
            module = _Module()
            module.global_step = global_step
            cb.on_train_batch_end(SimpleNamespace(global_step=global_step), module, None, {}, 0)
        assert steps == [1, 2], (type(cb).__name__, steps)


def test_latent_measures_take_the_first_live_channels():
    """``max_channels`` counts non-constant channels (as documented): a dead channel among the first
    ones must not shrink the measured set."""
    from models.callbacks import latent_measures

    lat = torch.randn(2, 128, 4, generator=torch.Generator().manual_seed(0))
    lat[..., 0] = 1.0  # a dead channel
    out = latent_measures(lat, fs=100.0, cfg_fractals=_cfg()["fractals"], max_channels=2)
    assert set(out) == {"beta", "hfd", "dfa"}
    for name, v in out.items():
        assert v.shape == (2, 2), (name, v.shape)
    torch.testing.assert_close(out["hfd"], latent_measures(lat[..., 1:3], fs=100.0, cfg_fractals=_cfg()["fractals"])["hfd"])


def test_latent_measures_and_priors_ignore_autocast():
    """bf16-mixed training runs validation_step and the prior inside autocast: the measures' and priors'
    fits must still run in float32 (under bf16 autocast their matmuls moved latent beta by up to 4)."""
    from models.callbacks import latent_measures

    module = NeuroFMxModule(_cfg(warmup_steps=0))
    dm = build_datamodule(module.cfg)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    with torch.no_grad():
        out = module(batch)
    fs = module.latent_rate(batch)
    measures = latent_measures(out["latents"]["ssm"], fs=fs, cfg_fractals=module.fractals_cfg)
    _, parts = module._prior_loss(out, batch)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        measures_ac = latent_measures(out["latents"]["ssm"], fs=fs, cfg_fractals=module.fractals_cfg)
        _, parts_ac = module._prior_loss(out, batch)
    for name, v in measures.items():
        torch.testing.assert_close(measures_ac[name], v, msg=name)
    for name, v in parts.items():
        torch.testing.assert_close(parts_ac[name], v, msg=name)
