"""Review round: NeuroFMx called with odd-but-valid and bad inputs (dtypes, batch layout, padding, ids)."""
from __future__ import annotations

import copy

import pytest
import torch

from models.neurofmx import NeuroFMx
from models.tokenizers import AudioTokenizer, BehaviorTokenizer, VideoTokenizer

CFG = dict(
    d_model=16, patch_size=4,
    tokenizers={"spikes": {"n_units": 16, "layout": "channel_patch"}, "lfp": {"n_channels": 8},
                "behavior": {"n_features": 2}},
    perceiver={"n_latents": 1, "chunk_size": 2, "n_heads": 2, "n_self_layers": 1},
    ssm={"n_layers": 1, "d_state": 8, "headdim": 8, "chunk_size": 4},
    popt={"n_summary_tokens": 2, "n_heads": 2, "n_layers": 1},
    heads={"forecast": {"keys": ["lfp", "spikes"]}, "behavior": {"n_features": 2}},
)


def _model(**changes) -> NeuroFMx:
    torch.manual_seed(0)
    return NeuroFMx(**{**copy.deepcopy(CFG), **changes}).eval()


def _batch(b: int = 3, t: int = 32, c: int = 3, u: int = 4) -> dict:
    g = torch.Generator().manual_seed(1)
    return {"lfp": torch.randn(b, c, t, generator=g), "lfp_mask": torch.ones(b, c, dtype=torch.bool),
            "spikes": torch.poisson(torch.full((b, t, u), 0.5), generator=g),
            "spikes_mask": torch.ones(b, u, dtype=torch.bool), "behavior": torch.randn(b, t, 2, generator=g)}


# ------------------------------------------------------------------ dtypes
def test_bfloat16_model_with_behavior_tokens_runs_in_bfloat16():
    # The behaviour tokens added a float32 time encoding, turning them float32 inside a bf16 model:
    # the Perceiver's bf16 LayerNorm then failed with "mixed dtype".
    model = _model().bfloat16()
    batch = {k: v.bfloat16() if v.is_floating_point() else v for k, v in _batch().items()}
    with torch.no_grad():
        out = model(batch)
    assert out["latents"]["ssm"].dtype == torch.bfloat16
    assert torch.isfinite(out["loss"].float())


@pytest.mark.parametrize("make, args", [
    (lambda: BehaviorTokenizer(d_model=8, patch_size=2, n_features=3), (torch.randn(2, 10, 3),)),
    (lambda: AudioTokenizer(d_model=8, n_mels=4, patch_size=2), (torch.randn(2, 4, 10),)),
    (lambda: VideoTokenizer(d_model=8, patch_size=2, hidden=4), (torch.randn(2, 3, 6, 5, 5),)),
])
def test_own_feature_tokenizers_keep_the_module_dtype(make, args):
    tok = make().bfloat16()
    assert tok(*args).tokens.dtype == torch.bfloat16


# ------------------------------------------------------------------ batch layout
def test_modalities_with_different_batch_sizes_name_the_keys():
    batch = _batch()
    batch["spikes"], batch["spikes_mask"] = batch["spikes"][:2], batch["spikes_mask"][:2]
    with pytest.raises(ValueError, match=r"batch size.*'spikes': 2, 'lfp': 3"):
        _model()(batch)


def test_longer_modality_is_refused_instead_of_silently_cropped():
    # The first configured tokenizer's modality set the time axis: a longer one's tail was dropped unseen,
    # a shorter one accepted, so the result hung on the config's key order.
    batch = _batch()
    batch["spikes"] = torch.cat([batch["spikes"], batch["spikes"]], 1)
    with pytest.raises(ValueError, match=r"different lengths \{'spikes': 64, 'lfp': 32"):
        _model()(batch)
    batch = _batch(t=31)
    batch["spikes"] = _batch(t=32)["spikes"]  # same number of 4-sample bins: accepted
    assert torch.isfinite(_model()(batch)["loss"])


def test_empty_batch_is_a_value_error():
    with pytest.raises(ValueError, match="no samples"):
        _model()({k: v[:0] for k, v in _batch().items()})


def test_negative_unit_id_error_does_not_suggest_raising_the_vocabulary():
    batch = _batch()
    batch["unit_ids"] = torch.tensor([[0, 1, -1, 2]] * 3)
    with pytest.raises(ValueError, match=r"unit_ids: .*negative ids are not allowed.*spikes_mask") as err:
        _model()(batch)
    assert "at least 0" not in str(err.value)


def test_negative_spike_counts_are_refused_not_scored_by_an_unbounded_poisson_loss():
    batch = _batch()
    batch["spikes"] = batch["spikes"] - 1.0
    with pytest.raises(ValueError, match=r"batch\['spikes'\]: has negative values"):
        _model()(batch)
    batch["spikes_mask"] = torch.zeros(3, 4, dtype=torch.bool)  # padded units may hold anything
    assert torch.isfinite(_model()(batch)["loss"])


def test_adversarial_target_as_a_plain_int_is_a_value_error():
    model = _model(heads={**CFG["heads"], "adversarial": {"n_domains": 3}})
    with pytest.raises(ValueError, match=r"batch\['subject'\].*needs shape \(B,\) = \(3,\), got \(1,\)"):
        model({**_batch(), "subject": 2})


@pytest.mark.parametrize("key, message", [("lfp", r"lfp: needs a torch.Tensor .*got ndarray"),
                                          ("spikes", r"spikes: needs a tensor \(B, T, U\), got ndarray")])
def test_numpy_modality_is_named_as_a_type_error_not_a_shape_error(key, message):
    # "needs a tensor (B, C, T), got (3, 3, 32)": the right shape, reported as the problem
    batch = _batch()
    batch[key] = batch[key].numpy()
    with pytest.raises(ValueError, match=message):
        _model()(batch)


def test_behaviour_target_with_too_many_features_names_the_batch_key():
    model = _model(tokenizers={k: v for k, v in CFG["tokenizers"].items() if k != "behavior"})
    batch = {**_batch(), "behavior": torch.randn(3, 32, 3)}
    with pytest.raises(ValueError, match=r"batch\['behavior'\] \(model.heads.behavior.n_features=2\)"):
        model(batch)


# ------------------------------------------------------------------ invariances (regression guards)
def test_sample_outputs_do_not_depend_on_batch_neighbours_padding_or_reload():
    model = _model()
    base = _batch()
    with torch.no_grad():
        ref = model(base)
        one = model({k: v[1:2] for k, v in base.items()})
        perm = torch.tensor([2, 0, 1])
        shuffled = model({k: v[perm] for k, v in base.items()})
        padded = dict(base)
        padded["lfp"] = torch.cat([base["lfp"], torch.full((3, 2, 32), 1e6)], 1)
        padded["lfp_mask"] = torch.cat([base["lfp_mask"], torch.zeros(3, 2, dtype=torch.bool)], 1)
        padded["spikes"] = torch.cat([base["spikes"], torch.full((3, 32, 1), float("nan"))], 2)
        padded["spikes_mask"] = torch.cat([base["spikes_mask"], torch.zeros(3, 1, dtype=torch.bool)], 1)
        pad = model(padded)
        reloaded = NeuroFMx(**copy.deepcopy(CFG)).eval()
        reloaded.load_state_dict(model.state_dict(), strict=True)
        again = reloaded(base)
    for name in ("ssm", "popt"):
        r = ref["latents"][name]
        torch.testing.assert_close(one["latents"][name][0], r[1], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(shuffled["latents"][name], r[perm], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(pad["latents"][name], r, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(again["latents"][name], r, atol=0, rtol=0)
    torch.testing.assert_close(pad["outputs"]["forecast_lfp"][:, :3], ref["outputs"]["forecast_lfp"])
    torch.testing.assert_close(pad["loss"], ref["loss"])


def test_readout_heads_take_every_id_their_tokenizer_takes_with_default_vocabularies():
    # Without n_units/n_neurons in the config the tokenizers take 1024 ids, but the forecast and
    # reconstruction readouts were built for 256: unit id 500 passed the tokenizer and failed the head.
    model = NeuroFMx(d_model=16, patch_size=4, tokenizers={"spikes": {}, "calcium": {}}, perceiver={"n_heads": 2},
                     ssm={"n_layers": 1, "d_state": 8, "headdim": 8}, popt={"n_heads": 2},
                     heads={"forecast": {}, "reconstruction": {}})
    for table in (model.forecast, model.reconstruction):
        assert {k: h.readout.n_channel_ids for k, h in table.items()} == {"spikes": 1024, "calcium": 1024}
    batch = {"spikes": torch.ones(2, 16, 3), "unit_ids": torch.tensor([[0, 500, 1023]] * 2)}
    assert torch.isfinite(model(batch)["loss"])


# ------------------------------------------------------------------ gradients with respect to the inputs
@pytest.mark.parametrize("normalize", ["causal_zscore", "zscore"])
def test_input_gradients_are_finite_for_saliency(normalize):
    # sqrt of the zero running variance at the first sample (and of a flat channel's variance) has an
    # infinite derivative: d loss / d input came back NaN everywhere, useless for attribution maps.
    tokenizers = {**CFG["tokenizers"], "lfp": {"n_channels": 8, "normalize": normalize}}
    model = _model(tokenizers=tokenizers, heads={"behavior": {"n_features": 2}})
    batch = _batch()
    lfp = batch["lfp"].clone()
    lfp[0, 1] = 3.0  # a flat channel
    lfp.requires_grad_(True)
    model({**batch, "lfp": lfp})["loss"].backward()
    assert torch.isfinite(lfp.grad).all() and lfp.grad.abs().sum() > 0


def test_standardisation_values_unchanged_by_the_gradient_fix():
    from models.tokenizers.base import causal_zscore_channels, zscore_channels

    x = torch.tensor([[0.0, 0.0, 1.0, 3.0], [2.0, 2.0, 2.0, 2.0]], dtype=torch.float64)
    # running mean/std by hand: t=2: mean 1/3, std sqrt(2/9); t=3: mean 1, std sqrt(1.5)
    expected = torch.tensor([[0.0, 0.0, (1 - 1 / 3) / (2 / 9) ** 0.5, 2 / 1.5 ** 0.5], [0.0] * 4],
                            dtype=torch.float64)
    torch.testing.assert_close(causal_zscore_channels(x), expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(zscore_channels(x)[1], torch.zeros(4, dtype=torch.float64))
    torch.testing.assert_close(zscore_channels(x)[0], (x[0] - 1) / 1.5 ** 0.5, rtol=1e-12, atol=1e-12)


def test_eval_outputs_with_reconstruction_do_not_depend_on_batch_position():
    # The eval step mask drew one row per batch position, so reordering the batch changed which steps a
    # sample's encoder saw, and with them its latents, forecasts and reconstructions.
    model = _model(heads={**CFG["heads"], "reconstruction": {"keys": ["lfp"], "mask_ratio": 0.3}})
    batch, perm = _batch(t=64), torch.tensor([2, 0, 1])
    with torch.no_grad():
        ref, shuffled = model(batch), model({k: v[perm] for k, v in batch.items()})
        alone = model({k: v[2:] for k, v in batch.items()})
    for name in ("ssm", "popt"):
        torch.testing.assert_close(shuffled["latents"][name], ref["latents"][name][perm], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(alone["latents"][name][0], ref["latents"][name][2], atol=1e-5, rtol=1e-5)
    for name in ("forecast_lfp", "recon_lfp"):
        torch.testing.assert_close(shuffled["outputs"][name], ref["outputs"][name][perm], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(shuffled["losses"]["recon_lfp"], ref["losses"]["recon_lfp"])


# ------------------------------------------------------------------ config values that failed late or obscurely
@pytest.mark.parametrize("part, option, value, message", [
    ("ssm", "headdim", 0, r"model.ssm: headdim: must be an integer >= 1"),  # was ZeroDivisionError
    ("ssm", "d_state", 0, r"model.ssm: d_state: must be an integer >= 1"),  # was accepted: a stateless SSM
    ("ssm", "chunk_size", 0, r"model.ssm: chunk_size: must be an integer >= 1"),  # was raised only in forward
    ("heads", "forecast", {"kernel_size": 0}, r"model.heads.forecast: kernel_size: must be >= 1"),  # oneDNN error
    ("heads", "behavior", {"n_features": 2, "hidden": -1}, r"model.heads.behavior: hidden: must be >= 0"),
    # int() read these silently: chunk 2.5 -> 2 (another step size), -1 self layers -> none, horizon 1.5 -> 1
    ("perceiver", "chunk_size", 2.5, r"model.perceiver: chunk_size: must be an integer >= 1, got 2.5"),
    ("perceiver", "n_self_layers", -1, r"model.perceiver: n_self_layers: must be an integer >= 0"),
    ("heads", "forecast", {"horizon": 1.5}, r"model.heads.forecast: horizon: must be an integer >= 1 step"),
])
def test_bad_model_options_are_value_errors_naming_the_field(part, option, value, message):
    cfg = copy.deepcopy(CFG)
    cfg[part] = {**cfg[part], option: value}
    with pytest.raises(ValueError, match=message):
        NeuroFMx(**cfg)


def test_window_too_short_for_scattering_names_the_window_and_the_field():
    pytest.importorskip("kymatio", reason="kind=scattering needs kymatio (dev extra)")
    cfg = copy.deepcopy(CFG)
    cfg["tokenizers"] = {"lfp": {"n_channels": 8}}
    cfg["heads"] = {"behavior": {"n_features": 2}}
    model = NeuroFMx(**cfg, scale_encodings={"kind": "scattering", "J": 3, "Q": 1}).eval()
    batch = {"lfp": torch.randn(2, 3, 24), "behavior": torch.randn(2, 24, 2)}  # 6 bins -> 3 steps < 2**3
    with pytest.raises(ValueError, match=r"window of 6 token bins \(3 latent steps.*scale_encodings.*lower J"):
        model(batch)


@pytest.mark.parametrize("modalities, message", [
    # kind=spikes under another key read batch["spikes"]: a KeyError, or the wrong modality's data
    ({"ca1": {"kind": "spikes", "n_units": 8}}, r"model.tokenizers.ca1: a 'spikes' tokenizer reads batch\['spikes'\]"),
    ({"mic": {"kind": "audio"}}, r"model.tokenizers.mic: a 'audio' tokenizer reads batch\['audio'\]"),
    ({"lfp": {"key": "eeg"}}, r"model.tokenizers.lfp.key: 'eeg' differs"),  # was a TypeError
])
def test_tokenizer_reading_another_batch_key_is_refused(modalities, message):
    from models.tokenizers import MultimodalTokenizer

    with pytest.raises(ValueError, match=message):
        MultimodalTokenizer(d_model=8, patch_size=4, modalities=modalities)
    MultimodalTokenizer(d_model=8, patch_size=4, modalities={"meg": {"kind": "continuous"}, "lfp": {"key": "lfp"}})


def test_adversarial_target_with_fractional_labels_is_refused():
    model = _model(heads={**CFG["heads"], "adversarial": {"n_domains": 3}})
    with pytest.raises(ValueError, match=r"batch\['subject'\].*must be integers"):
        model({**_batch(), "subject": torch.tensor([0.0, 1.5, 2.0])})
    assert torch.isfinite(model({**_batch(), "subject": torch.tensor([0.0, 1.0, 2.0])})["loss"])


def test_contrastive_view_with_another_batch_size_names_the_batch_key():
    model = _model(tokenizers={k: v for k, v in CFG["tokenizers"].items() if k != "behavior"},
                   heads={"forecast": {"keys": ["lfp"]}, "contrastive": {"view": "behavior", "dim_b": 2}})
    batch = {**_batch(), "behavior": torch.randn(2, 32, 2)}  # was "a, b: need the same batch size"
    with pytest.raises(ValueError, match=r"batch\['behavior'\] \(model.heads.contrastive.view\): has 2 samples"):
        model(batch)
