"""NeuroFMx as a researcher uses it: presets on the default data, float64 batches, config errors that name
the field, heads with nothing to score, NaN inputs named."""
from __future__ import annotations

import copy

import pytest
import torch

from models.data.batch import collate_batch
from models.data.synthetic import SyntheticNeuralDataset
from models.lightning import NeuroFMxModule
from models.neurofmx import NeuroFMx
from models.presets import load_preset

ALL_HEADS = {"forecast": {"keys": ["lfp", "spikes"]}, "reconstruction": {"keys": ["lfp", "spikes"]},
             "behavior": {"n_features": 2}, "contrastive": {"view": "behavior", "dim_b": 2, "proj_dim": 8},
             "adversarial": {"n_domains": 2, "hidden": 8}}


def _batch(n: int = 2, n_time: int = 64) -> dict:
    ds = SyntheticNeuralDataset(n_samples=n, config={"n_time": n_time})
    return collate_batch([ds[i] for i in range(n)])


def _tiny(heads=None, **model) -> NeuroFMx:
    cfg = load_preset("tiny")
    cfg["heads"] = copy.deepcopy(heads or ALL_HEADS)
    cfg.update(model)
    torch.manual_seed(0)
    return NeuroFMx.from_config({"model": cfg})


def test_small_preset_runs_as_shipped_on_the_default_synthetic_data():
    """small.yaml sizes the contrastive view for 64 behaviour features (dim_b: 64); the default data has 2.
    Fewer features than dim_b are zero-padded, as the behaviour head takes F <= n_features."""
    torch.manual_seed(0)
    model = NeuroFMx.from_config({"model": load_preset("small")})
    out = model(_batch(n_time=32))
    assert torch.isfinite(out["loss"]) and "contrastive" in out["losses"]


def test_a_contrastive_view_wider_than_dim_b_names_the_field():
    batch = _batch()
    batch["behavior"] = torch.randn(2, 64, 3)
    with pytest.raises(ValueError, match=r"model.heads.contrastive.dim_b=2; raise dim_b to 3"):
        _tiny(heads={"contrastive": {"view": "behavior", "dim_b": 2}})(batch)


def test_float64_batches_give_the_float32_result_and_a_float64_model_runs():
    model = _tiny().eval()
    batch = _batch()
    as64 = {k: v.double() if torch.is_tensor(v) and v.is_floating_point() else v for k, v in batch.items()}
    with torch.no_grad():
        ref, got = model(batch), model(as64)  # numpy recordings arrive as float64
    torch.testing.assert_close(got["loss"], ref["loss"])
    model.double()
    out = model(as64)
    out["loss"].backward()
    assert out["loss"].dtype == torch.float64 and torch.isfinite(out["loss"])
    torch.testing.assert_close(out["loss"].float(), ref["loss"], rtol=1e-4, atol=1e-4)


def test_float64_model_with_behaviour_tokens():
    cfg_tokens = {"lfp": {"n_channels": 16}, "behavior": {"n_features": 2}}
    model = _tiny(heads={"forecast": {"keys": ["lfp"]}}, tokenizers=cfg_tokens).double()
    batch = {k: v.double() if torch.is_tensor(v) and v.is_floating_point() else v for k, v in _batch().items()}
    assert torch.isfinite(model(batch)["loss"])


@pytest.mark.parametrize("edit, field", [
    (lambda m: m["perceiver"].update(n_latent=2), "model.perceiver"),
    (lambda m: m["ssm"].update(dstate=8), "model.ssm"),
    (lambda m: m["popt"].update(n_summary=2), "model.popt"),
    (lambda m: m["heads"]["forecast"].update(horizn=2), "model.heads.forecast"),
    (lambda m: m["heads"]["forecast"].update(loss="l1"), "model.heads.forecast.loss"),
    (lambda m: m["heads"]["forecast"].update(keys="lfp"), "model.heads.forecast.keys"),
    (lambda m: m["heads"].update(contrastive={"view": "behavior"}), "model.heads.contrastive.dim_b"),
    (lambda m: m["heads"].update(adversarial={"target": "subject"}), "model.heads.adversarial.n_domains"),
    (lambda m: m["heads"].update(behavior={"n_features": 0}), "model.heads.behavior.n_features"),
    (lambda m: m["tokenizers"]["lfp"].update(layout="mix"), "model.tokenizers.lfp"),
    (lambda m: m.update(patch_size=2.5), "model.patch_size"),
    (lambda m: m.update(d_model="big"), "model.d_model"),
])
def test_model_config_errors_name_the_field(edit, field):
    cfg = load_preset("tiny")
    edit(cfg)
    with pytest.raises(ValueError, match=field.replace(".", r"\.")):
        NeuroFMx.from_config({"model": cfg})


def test_fractal_backbone_config_errors_name_the_field():
    cfg = {"model": load_preset("tiny")}
    with pytest.raises(ValueError, match=r"fractals.backbone.fractional_kernels: missing \['n_taps'"):
        NeuroFMx.from_config({**cfg, "fractals": {"backbone": {"fractional_kernels": {"enable": True}}}})
    with pytest.raises(ValueError, match="fractals.backbone.scale_encodings.wavelet_scales"):
        NeuroFMx.from_config({**cfg, "fractals": {"backbone": {"scale_encodings": {"enable": True}}}})


@pytest.mark.parametrize("optim, field", [
    ({"betas": [0.9]}, "optim.betas"), ({"lr": "1e-3x"}, "optim.lr"), ({"weight_decay": -1}, "optim.weight_decay"),
    ({"warmup_steps": -5}, "optim.warmup_steps"), ({"total_steps": 0}, "optim.total_steps"),
    ({"grad_clip": "x"}, "optim.grad_clip"),
])
def test_optimiser_config_errors_name_the_field_when_the_module_is_built(optim, field):
    with pytest.raises(ValueError, match=field.replace(".", r"\.")):
        NeuroFMxModule({"model": load_preset("tiny"), "optim": optim})


def test_an_empty_head_mapping_turns_the_head_on_with_its_defaults():
    heads = {"forecast": {"keys": ["lfp"]}, "reconstruction": {}}
    model = _tiny(heads=heads)
    assert list(model.reconstruction) == ["lfp", "spikes"] and model.mask_ratio == 0.25
    assert not _tiny(heads={"forecast": {"keys": ["lfp"]}, "reconstruction": None}).reconstruction


def test_heads_with_nothing_to_score_add_no_zero_loss():
    model = _tiny()
    batch = _batch(n=3)
    batch["lfp_mask"] = torch.zeros_like(batch["lfp_mask"])  # every LFP channel padded
    losses = model(batch)["losses"]
    assert not {"forecast_lfp", "recon_lfp"} & set(losses) and "forecast_spikes" in losses
    one = {k: v[:1] if torch.is_tensor(v) else v for k, v in _batch(n=3).items()}
    assert "contrastive" not in model(one)["losses"]  # one sample: no negative to contrast with
    short = _batch(n=3, n_time=16)
    for key in ("lfp", "spikes", "behavior"):  # four samples, one step: no step `horizon` ahead to forecast
        short[key] = short[key][..., :4] if key == "lfp" else short[key][:, :4]
    losses = model(short)["losses"]
    assert not any(k.startswith("forecast") for k in losses) and "behavior" in losses
    only_forecast = _tiny(heads={"forecast": {"keys": ["lfp"]}})
    assert float(only_forecast(short)["losses"]["forecast_lfp"].detach()) == 0.0  # nothing else: the old zero, no crash


def test_a_nan_in_a_real_channel_is_named_and_padding_may_hold_nan():
    model = _tiny()
    batch = _batch(n=3)
    padded = (~batch["lfp_mask"]).nonzero()
    assert len(padded), "the synthetic data pads the second subject's channels"
    b, c = padded[0].tolist()
    batch["lfp"][b, c] = float("nan")
    assert torch.isfinite(model(batch)["loss"])
    batch["behavior"][0, 5, 1] = float("nan")
    with pytest.raises(ValueError, match=r"batch\['behavior'\]: 1 NaN"):
        model(batch)


def test_out_of_vocabulary_ids_name_the_batch_key_and_the_config_option_to_raise():
    model = _tiny()
    batch = _batch()
    batch["lfp_channel_ids"] = torch.arange(8).expand(2, 8) + 10
    with pytest.raises(ValueError, match=r"lfp_channel_ids: .*model\.tokenizers\.lfp\.n_channels\) to at least 18"):
        model(batch)
    batch = _batch()
    batch["unit_ids"] = batch["unit_ids"] + 100
    with pytest.raises(ValueError, match=r"unit_ids: .*model\.tokenizers\.spikes\.n_units\)"):
        model(batch)
    batch = _batch()
    batch["subject"] = batch["subject"] + 5
    with pytest.raises(ValueError, match=r"batch\['subject'\] \(model\.heads\.adversarial\).*raise n_domains"):
        model(batch)


@pytest.mark.parametrize("n_time", [64, 61])
def test_time_pairing_contrasts_latent_steps_with_behaviour_pooled_to_steps(n_time):
    """PopT's K summary tokens have no time axis; time pairing must pair each latent step with the behaviour
    of its samples, also when the window is not a whole number of steps."""
    model = _tiny(heads={"contrastive": {"view": "behavior", "dim_b": 2, "pairing": "time"}})
    batch = _batch(n=3)
    for key in ("lfp", "spikes", "behavior"):
        batch[key] = batch[key][..., :n_time] if key == "lfp" else batch[key][:, :n_time]
    seen = []
    model.contrastive.register_forward_hook(lambda mod, args, out: seen.append(out.prediction.shape))
    out = model(batch)
    n_steps = -(-n_time // model.step_size)
    assert out["latents"]["ssm"].shape[1] == n_steps and seen == [(3 * n_steps, 3 * n_steps)]
    assert torch.isfinite(out["loss"])


def test_a_float64_trainer_runs_a_step():
    """Trainer(precision="64-true") makes the module float64; the tokenizers used to cast inputs to float32."""
    import pytorch_lightning as pl

    from configs import tiny_training_config
    from models.data.datamodule import build_datamodule

    cfg = tiny_training_config(n_train=4, n_val=2, batch_size=2)
    cfg["fractals"]["enable"] = False
    torch.manual_seed(0)
    module = NeuroFMxModule(cfg)
    trainer = pl.Trainer(max_steps=1, precision="64-true", accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0)
    trainer.fit(module, datamodule=build_datamodule(cfg))
    assert trainer.global_step == 1 and torch.isfinite(trainer.callback_metrics["train/loss"])
    assert next(module.parameters()).dtype == torch.float64


@pytest.mark.parametrize("edit, field", [
    (lambda c: c["fractals"]["log"].update(fingerprint_every_n_steps="often"), "fractals.log.fingerprint_every_n_steps"),
    (lambda c: c["fractals"]["log"].update(tb_hist_every_n=2.5), "fractals.log.tb_hist_every_n"),
    (lambda c: c["fractals"]["probes"]["causal_scale_ablation"].update(ablate_ratio="x"),
     "fractals.probes.causal_scale_ablation.ablate_ratio"),
    (lambda c: c["fractals"]["priors"].update(warmup_steps="x"), "fractals.priors.warmup_steps"),
    (lambda c: c["criticality"].update(enable=True, target="x"), "criticality.target"),
    (lambda c: c["criticality"].update(enable=True, modules="backbone"), "criticality.modules: needs a list"),
])
def test_training_config_errors_name_the_field(edit, field):
    from configs import tiny_training_config

    cfg = tiny_training_config()
    edit(cfg)
    with pytest.raises(ValueError, match=field.replace(".", r"\.")):
        NeuroFMxModule(cfg).configure_callbacks()


def test_full_latent_attention_with_a_forecast_head_is_refused():
    """Full attention lets step s read step s + 1, the forecast target (as scattering would; refused alike)."""
    cfg = load_preset("tiny")
    cfg["perceiver"]["latent_attention"] = "full"
    with pytest.raises(ValueError, match=r"model\.perceiver\.latent_attention: 'full'.*model\.heads\.forecast"):
        NeuroFMx.from_config({"model": cfg})
    cfg["heads"] = {"behavior": {"n_features": 2}}  # no forecasting: full attention is fine
    assert NeuroFMx.from_config({"model": cfg}).perceiver.latent_attention == "full"
