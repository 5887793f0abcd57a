"""Review of the model families' config errors: a bad value gets a ValueError at build time that names the config
key, the value given and what is needed, never a TypeError/RuntimeError from deep inside torch, a later crash in the
first step, or a silently degenerate model (zero-width readouts, NaN gradient reversal, a model with no layers).

Each case is one config value a user can write in platform/fmx/conf/model/*.yaml (or a sweep can sample) that did
not get such an error before its fix.
"""
from __future__ import annotations

import copy
import math

import pytest
import torch
import yaml

from configs import CONF, tiny_training_config
from models.registry import build_lightning_module


def _neurofmx(path: str, value, heads: dict | None = None) -> dict:
    cfg = tiny_training_config()
    cfg["fractals"]["enable"] = False
    if heads is not None:
        cfg["model"]["heads"] = copy.deepcopy(heads)
    node = cfg
    keys = path.split(".")
    for key in keys[:-1]:
        node = node[key]
    node[keys[-1]] = value
    return cfg


def _family(name: str, key: str, value, **model) -> dict:
    cfg = {"model": yaml.safe_load((CONF / "model" / f"{name}.yaml").read_text()), "seed": 0}
    cfg["model"].update(model)
    node, keys = cfg["model"], key.split(".")
    for k in keys[:-1]:
        node = node[k]
    node[keys[-1]] = value
    return cfg


_OTHER_HEADS = {"reconstruction": {"keys": ["lfp"], "embed_dim": 8},
                "contrastive": {"view": "behavior", "dim_b": 2, "proj_dim": 8, "temperature": 0.1},
                "adversarial": {"target": "subject", "n_domains": 2, "hidden": 8, "scale": 1.0}}

# (config, fragments the message must hold: the key (path), the value given, the need)
CASES = {
    # ZeroDivisionError / a RuntimeError in the first forward / "unsupported operand type(s) for %"
    "perceiver_n_heads_0": (_neurofmx("model.perceiver.n_heads", 0), ["model.perceiver", "n_heads", "0", ">= 1"]),
    "perceiver_n_heads_neg": (_neurofmx("model.perceiver.n_heads", -1), ["model.perceiver", "n_heads", "-1", ">= 1"]),
    "perceiver_n_heads_str": (_neurofmx("model.perceiver.n_heads", "abc"),
                              ["model.perceiver", "n_heads", "'abc'", "integer"]),
    "popt_n_heads_0": (_neurofmx("model.popt.n_heads", 0), ["model.popt", "n_heads", "0", ">= 1"]),
    # -1 silently built no set-attention block; 2.5 "'float' object cannot be interpreted as an integer"
    "popt_n_layers_neg": (_neurofmx("model.popt.n_layers", -1), ["model.popt", "n_layers", "-1", ">= 0"]),
    "popt_n_summary_str": (_neurofmx("model.popt.n_summary_tokens", "abc"),
                           ["model.popt", "n_summary_tokens", "'abc'", ">= 1"]),
    # "invalid literal for int() with base 10" without the option's name
    "forecast_horizon_str": (_neurofmx("model.heads.forecast.horizon", "abc"),
                             ["model.heads.forecast", "horizon", "'abc'", "integer"]),
    "forecast_kernel_none": (_neurofmx("model.heads.forecast.kernel_size", None),
                             ["model.heads.forecast", "kernel_size", "None", ">= 1"]),
    # -1: "Trying to create tensor with negative dimension"; 0: a readout that ignores the latents
    "forecast_embed_neg": (_neurofmx("model.heads.forecast.embed_dim", -1),
                           ["model.heads.forecast", "embed_dim", "-1", ">= 1"]),
    "forecast_embed_0": (_neurofmx("model.heads.forecast.embed_dim", 0),
                         ["model.heads.forecast", "embed_dim", "0", ">= 1"]),
    "behavior_hidden_str": (_neurofmx("model.heads.behavior.hidden", "abc"),
                            ["model.heads.behavior", "hidden", "'abc'", ">= 0"]),
    # the message named n_channel_ids, an option no config has
    "lfp_n_channels_neg": (_neurofmx("model.tokenizers.lfp.n_channels", -1),
                           ["model.tokenizers.lfp", "n_channels", "-1", ">= 0"]),
    "lfp_n_channels_str": (_neurofmx("model.tokenizers.lfp.n_channels", "abc"),
                           ["model.tokenizers.lfp", "n_channels", "'abc'", "integer"]),
    # 0 (no channel-id embedding) was refused as "model.heads.forecast: n_channel_ids: must be >= 1, got 0"
    "lfp_n_channels_0_forecast": (_neurofmx("model.tokenizers.lfp.n_channels", 0),
                                  ["model.tokenizers.lfp.n_channels", "0", "model.heads.forecast"]),
    # reported under model.ssm, a section the user did not touch
    "fractional_n_taps_str": (_neurofmx("fractals.backbone.fractional_kernels.n_taps", "abc"),
                              ["fractals.backbone.fractional_kernels", "n_taps", "'abc'", ">= 1"]),
    "fractional_min_alpha_neg": (_neurofmx("fractals.backbone.fractional_kernels.min_alpha", -1.0),
                                 ["fractals.backbone.fractional_kernels", "min_alpha", "-1", "0 <= min_alpha"]),
    # "'float' object is not iterable"
    "wavelet_scales_scalar": (_neurofmx("fractals.backbone.scale_encodings.wavelet_scales", 2.5),
                              ["fractals.backbone.scale_encodings.wavelet_scales", "2.5", "list"]),
    # OverflowError: cannot convert float infinity to integer
    "contrastive_dim_b_inf": (_neurofmx("model.heads.contrastive.dim_b", math.inf, _OTHER_HEADS),
                              ["model.heads.contrastive.dim_b", "inf", "integer"]),
    # 0 projected both views to nothing: a constant loss; -1 a RuntimeError
    "contrastive_proj_dim_0": (_neurofmx("model.heads.contrastive.proj_dim", 0, _OTHER_HEADS),
                               ["model.heads.contrastive", "proj_dim", "0", ">= 1"]),
    "contrastive_temperature_inf": (_neurofmx("model.heads.contrastive.temperature", math.inf, _OTHER_HEADS),
                                    ["model.heads.contrastive", "temperature", "inf", "> 0"]),
    "contrastive_temperature_str": (_neurofmx("model.heads.contrastive.temperature", "abc", _OTHER_HEADS),
                                    ["model.heads.contrastive", "temperature", "'abc'", "> 0"]),
    # NaN gradient reversal: a finite loss, NaN gradients in the whole encoder
    "adversarial_scale_nan": (_neurofmx("model.heads.adversarial.scale", math.nan, _OTHER_HEADS),
                              ["model.heads.adversarial", "scale", "nan", ">= 0"]),
    "adversarial_hidden_0": (_neurofmx("model.heads.adversarial.hidden", 0, _OTHER_HEADS),
                             ["model.heads.adversarial", "hidden", "0", ">= 1"]),
    "adversarial_n_domains_str": (_neurofmx("model.heads.adversarial.n_domains", "abc", _OTHER_HEADS),
                                  ["model.heads.adversarial", "n_domains", "'abc'", ">= 2"]),
    "reconstruction_embed_str": (_neurofmx("model.heads.reconstruction.embed_dim", "abc", _OTHER_HEADS),
                                 ["model.heads.reconstruction", "embed_dim", "'abc'", "integer"]),
    # TypeError: unhashable type: 'list'
    "family_list": ({"model": {"family": []}}, ["model.family", "[]", "allowed"]),
    # byte family: TypeErrors from torch, messages without the model. path, n_layers 0 silently a bigram model
    "byte_d_model_neg": (_family("fractal_byte", "d_model", -1), ["model.d_model", "-1", ">= 1"]),
    "byte_d_model_float": (_family("fractal_byte", "d_model", 2.5), ["model.d_model", "2.5", "integer"]),
    "byte_n_layers_0": (_family("fractal_byte", "n_layers", 0), ["model.n_layers", "0", ">= 1"]),
    "byte_n_fractals_str": (_family("fractal_byte", "n_fractals", "abc"), ["model.n_fractals", "'abc'", ">= 1"]),
    "byte_depth_range_scalar": (_family("fractal_byte", "depth_range", 3), ["model.depth_range", "3", "min, max"]),
    "byte_dim_range_empty": (_family("fractal_byte", "dim_range", []), ["model.dim_range", "[]", "min, max"]),
    "byte_drop_path_str": (_family("fractal_byte", "drop_path", "abc"), ["model.drop_path", "'abc'", "[0, 1]"]),
    "byte_mamba_d_state_0": (_family("fractal_byte", "mamba.d_state", 0), ["model.mamba.d_state", "0", ">= 1"]),
    # two-moons: TypeErrors ("'>=' not supported", "'float' object is not iterable")
    "moons_weight_str": (_family("two_moons", "weight", "abc"), ["model.weight", "'abc'", ">= 0"]),
    "moons_rate_str": (_family("two_moons", "rate", "abc", mode="adaptive"), ["model.rate", "'abc'", ">= 0"]),
    "moons_layerwise_scalar": (_family("two_moons", "layerwise", 0.5), ["model.layerwise", "0.5", "[first, last]"]),
}


@pytest.mark.parametrize("name", list(CASES))
def test_bad_config_value_names_key_value_and_need(name):
    cfg, fragments = CASES[name]
    with pytest.raises(ValueError) as info:
        build_lightning_module(copy.deepcopy(cfg))
    message = str(info.value)
    missing = [f for f in fragments if f not in message]
    assert not missing, f"{name}: {missing} not in {message!r}"


def test_whole_float_sizes_still_build():
    # YAML or a sweep can give 2.0 for an integer size: the new checks must keep accepting whole floats.
    cfg = _neurofmx("model.popt.n_layers", 1.0)
    cfg["model"]["heads"]["forecast"]["embed_dim"] = 16.0
    cfg["model"]["perceiver"]["n_heads"] = 2.0
    module = build_lightning_module(cfg)
    assert len(module.model.popt.set_blocks) == 1
    byte = build_lightning_module(_family("fractal_byte", "d_model", 32.0, dim_range=[8, 16],
                                          mamba={"d_state": 8, "headdim": 16, "expand": 2}))
    ids = torch.randint(0, 256, (1, 9))
    assert byte(ids).shape == (1, 9, 259)


def test_contrastive_view_and_adversarial_target_must_name_a_batch_key():
    # view: 0 / target: null never matched a batch key: the head silently never scored.
    for head, key in (("contrastive", "view"), ("adversarial", "target")):
        cfg = _neurofmx(f"model.heads.{head}.{key}", 0, _OTHER_HEADS)
        with pytest.raises(ValueError, match=rf"model\.heads\.{head}\.{key}: .*got 0"):
            build_lightning_module(cfg)


@pytest.fixture(scope="module")
def tiny_and_batch():
    from models.data.batch import collate_batch
    from models.data.synthetic import SyntheticConfig, SyntheticNeuralDataset

    ds = SyntheticNeuralDataset(n_samples=2, config=SyntheticConfig(n_time=64))
    torch.manual_seed(0)
    return build_lightning_module(_neurofmx("model.d_model", 32)).model, collate_batch([ds[i] for i in range(2)])


@pytest.mark.parametrize("change, fragments", [
    # AttributeError: 'list' object has no attribute 'shape'
    (lambda b: {"lfp": b["lfp"].tolist()}, ["lfp", "list", "torch.as_tensor"]),
    # RuntimeError: cannot reshape tensor of 0 elements
    (lambda b: {"lfp": b["lfp"][..., :0], "spikes": b["spikes"][:, :0], "behavior": b["behavior"][:, :0]},
     ["batch", "lfp", "T=0"]),
    # the cast to float silently dropped the imaginary part
    (lambda b: {"lfp": b["lfp"].to(torch.complex64)}, ["lfp", "complex", "real"]),
    # .long() silently read unit 3.5 as unit 3
    (lambda b: {"unit_ids": b["unit_ids"].float() + 0.5}, ["unit_ids", "integers", "0.5"]),
])
def test_bad_batch_values_name_the_key(tiny_and_batch, change, fragments):
    model, batch = tiny_and_batch
    with pytest.raises(ValueError) as info:
        model({**batch, **change(batch)})
    missing = [f for f in fragments if f not in str(info.value)]
    assert not missing, f"{missing} not in {str(info.value)!r}"


def test_whole_float_ids_still_work(tiny_and_batch):
    model, batch = tiny_and_batch
    out = model({**batch, "unit_ids": batch["unit_ids"].float()})
    assert torch.isfinite(out["loss"])


@pytest.mark.parametrize("key", ["J", "Q", "n_probe"])
def test_scattering_options_name_their_key(key):
    # int("abc") failed as "invalid literal for int()", naming no option; -1 under the class name only
    cfg = _neurofmx(f"fractals.backbone.scale_encodings.{key}", "abc")
    cfg["fractals"]["backbone"]["scale_encodings"]["kind"] = "scattering"
    cfg["model"]["heads"].pop("forecast")
    with pytest.raises(ValueError, match=rf"fractals\.backbone\.scale_encodings\.{key}: needs an integer >= 1, "
                                         "got 'abc'"):
        build_lightning_module(cfg)


@pytest.mark.parametrize("fs", [0.0, -100.0, math.nan])
def test_bad_batch_sample_rate_is_named_not_blamed_on_window_length(fs):
    # was "fractals.priors: cannot be computed on the SSM latents (64 steps at 0 Hz ...) ... Use longer windows"
    from models.data.batch import collate_batch
    from models.data.synthetic import SyntheticConfig, SyntheticNeuralDataset

    ds = SyntheticNeuralDataset(n_samples=2, config=SyntheticConfig(n_time=64))
    module = build_lightning_module(tiny_training_config(warmup_steps=0))
    batch = {**collate_batch([ds[i] for i in range(2)]), "fs": torch.tensor([fs, fs])}
    with pytest.raises(ValueError, match=r"batch\['fs'\]: needs the sample rate in Hz, a finite number > 0, got"):
        module.latent_rate(batch)


@pytest.mark.parametrize("crit, fragments", [
    # refused by the regularizer as "targets: need finite singular values >= 0", not under criticality
    ({"target": -1.0}, ["criticality.target", "-1", ">= 0"]),
    ({"weight": math.nan}, ["criticality.weight", "nan", ">= 0"]),
    # AttributeError "'int' object has no attribute 'named_modules'" in the first step
    ({"modules": ["d_model"]}, ["criticality.modules", "'d_model'", "backbone"]),
    # TypeError "'NoneType' object is not iterable"
    ({"modules": None}, ["criticality.modules", "None", "list"]),
    # criticality enabled, nothing regularized, no word
    ({"modules": []}, ["criticality.modules", "[]", "at least one"]),
])
def test_criticality_block_errors_name_the_key(crit, fragments):
    cfg = tiny_training_config()
    cfg["criticality"] = {"enable": True, **crit}
    with pytest.raises(ValueError) as info:
        build_lightning_module(cfg)
    missing = [f for f in fragments if f not in str(info.value)]
    assert not missing, f"{missing} not in {str(info.value)!r}"


def test_bad_fractals_metrics_option_is_a_value_error_naming_the_section():
    # psd_freq_band: 0 failed as TypeError "'int' object is not iterable" from inside the priors
    cfg = tiny_training_config()
    cfg["fractals"]["metrics"]["temporal"]["psd_freq_band"] = 0
    with pytest.raises(ValueError, match=r"fractals\.metrics / fractals\.priors: .*default\.yaml"):
        build_lightning_module(cfg)


@pytest.mark.parametrize("change, fragments", [
    # TypeError "argument of type 'NoneType' is not iterable" while fitting the config to the data
    (lambda m: m.update(tokenizers=None), ["model.tokenizers", "None"]),
    # ValueError "invalid literal for int() with base 10: 'abc'", naming no option
    (lambda m: m["tokenizers"]["lfp"].update(n_channels="abc"), ["model.tokenizers.lfp.n_channels", "'abc'", ">= 0"]),
    # list("lfp") was read as the modalities l, f and p: "'l' is not a signal modality"
    (lambda m: m["heads"]["forecast"].update(keys="lfp"), ["model.heads.forecast.keys", "'lfp'", "list"]),
    # model: null was reported as a missing spikes tokenizer
    (lambda m: m.clear(), ["model", "missing"]),
])
def test_fitting_the_model_to_the_data_leaves_bad_options_to_named_errors(change, fragments):
    from models.registry import build_module_and_data

    cfg = tiny_training_config()
    change(cfg["model"])
    if not cfg["model"]:
        cfg["model"] = None
    with pytest.raises(ValueError) as info:
        build_module_and_data(cfg)
    missing = [f for f in fragments if f not in str(info.value)]
    assert not missing, f"{missing} not in {str(info.value)!r}"


@pytest.mark.parametrize("attention, fragments", [
    # refused only in the first forward, as "window: ..." without the section, or a TypeError for "abc"
    ({"name": "hilbert", "window": 4}, ["model.perceiver", "attention (hilbert)", "window", "4", "odd"]),
    ({"name": "hilbert", "window": "abc"}, ["model.perceiver", "window", "'abc'", "odd"]),
    ({"name": "cantor", "depth": 2.5}, ["model.perceiver", "attention (cantor)", "depth", "2.5", ">= 0"]),
    # IndexError: list index out of range
    ({"name": "julia", "c": [1.0]}, ["model.perceiver", "c", "[1.0]", "two finite numbers"]),
    # "hilbert" was read as the patterns h, i, l, b, ...
    ({"name": "fractal_blend", "patterns": "hilbert"}, ["model.perceiver", "patterns", "'hilbert'", "list"]),
])
def test_attention_pattern_options_are_checked_at_build_time(attention, fragments):
    cfg = _neurofmx("model.perceiver.attention", attention)
    with pytest.raises(ValueError) as info:
        build_lightning_module(cfg)
    missing = [f for f in fragments if f not in str(info.value)]
    assert not missing, f"{missing} not in {str(info.value)!r}"


def _byte_module():
    torch.manual_seed(0)
    return build_lightning_module(_family("fractal_byte", "d_model", 32, dim_range=[8, 16],
                                          mamba={"d_state": 8, "headdim": 16, "expand": 2}))


@pytest.mark.parametrize("change, fragments", [
    # IndexError "index out of range in self" inside the embedding
    (lambda x, y: (x + 300, y), ["ids", "[0, 259)", "range"]),
    # IndexError "Target 548 is out of bounds"
    (lambda x, y: (x, y + 300), ["targets", "[0, 259)", "range"]),
    # -100 (cross_entropy's ignore_index) everywhere: a NaN loss
    (lambda x, y: (x, torch.full_like(y, -100)), ["targets", "[-100, -100]", "[0, 259)"]),
    # RuntimeError "expected target dtype to be Long or Byte, but got Float"
    (lambda x, y: (x, y.float()), ["targets", "integer", "torch.float32"]),
])
def test_byte_batch_errors_name_ids_or_targets(change, fragments):
    module = _byte_module()
    ids = torch.randint(0, 256, (2, 9))
    batch = change(ids[:, :-1], ids[:, 1:])
    for step in (module._loss, lambda b: module.validation_step(b, 0)):
        with pytest.raises(ValueError) as info:
            step(batch)
        missing = [f for f in fragments if f not in str(info.value)]
        assert not missing, f"{missing} not in {str(info.value)!r}"


def test_byte_model_takes_raw_uint8_bytes():
    # torch.frombuffer / numpy bytes are uint8: refused by the embedding ("Expected ... Long, Int")
    module = _byte_module().eval()
    ids = torch.randint(0, 256, (1, 9))
    torch.testing.assert_close(module(ids.to(torch.uint8)), module(ids))


@pytest.mark.parametrize("change, fragments", [
    # RuntimeError "mat1 and mat2 shapes cannot be multiplied (8x3 and 2x8)"
    (lambda x, y: (torch.randn(8, 3), y), ["x", "(n, 2)", "(8, 3)"]),
    # a NaN loss, no word
    (lambda x, y: (torch.full_like(x, math.nan), y), ["x", "NaN"]),
    # IndexError "Target 2 is out of bounds"
    (lambda x, y: (x, y + 2), ["y", "{0, 1}", "[2, 3]"]),
])
def test_two_moons_batch_errors_name_x_or_y(change, fragments):
    torch.manual_seed(0)
    module = build_lightning_module(_family("two_moons", "width", 8, depth=2))
    module.log_dict = lambda *a, **k: None
    x, y = torch.randn(8, 2), torch.randint(0, 2, (8,))
    with pytest.raises(ValueError) as info:
        module.training_step(change(x, y), 0)
    missing = [f for f in fragments if f not in str(info.value)]
    assert not missing, f"{missing} not in {str(info.value)!r}"


def test_two_moons_takes_float64_points():
    # "mat1 and mat2 must have the same dtype, but got Double and Float"
    torch.manual_seed(0)
    module = build_lightning_module(_family("two_moons", "width", 8, depth=2))
    x = torch.randn(8, 2, dtype=torch.float64)
    torch.testing.assert_close(module(x), module(x.float()))


@pytest.mark.parametrize("key, value, fragments", [
    # log(-1) = NaN: NaN gradients behind a finite loss
    ("A_init_range", [-1, 1], ["model.ssm", "A_init_range", "[-1, 1]", "0 < low"]),
    # RuntimeError "uniform_ expects to return a [from, to) range"
    ("A_init_range", [2, 1], ["model.ssm", "A_init_range", "[2, 1]", "low <= high"]),
    # "model.ssm: math domain error"
    ("dt_min", 0, ["model.ssm", "dt_min", "0", "0 < dt_min"]),
    # NaN gradients behind a finite loss
    ("dt_max", math.inf, ["model.ssm", "dt_max", "inf", "< inf"]),
    # layer 5 of a 2-layer stack: the fractional kernels were silently off
    ("fractional_layers", [5], ["model.ssm", "fractional_layers", "[5]", "[0, 2)"]),
])
def test_ssm_init_options_are_checked(key, value, fragments):
    cfg = _neurofmx(f"model.ssm.{key}", value)
    cfg["fractals"]["backbone"]["fractional_kernels"]["enable"] = True
    with pytest.raises(ValueError) as info:
        build_lightning_module(cfg)
    missing = [f for f in fragments if f not in str(info.value)]
    assert not missing, f"{missing} not in {str(info.value)!r}"


@pytest.mark.parametrize("key, opts, fragments", [
    # 2.5 silently read as 2 features
    ("behavior", {"n_features": 2.5}, ["model.tokenizers.behavior.n_features", "2.5", "integer"]),
    # RuntimeError "Trying to create tensor with negative dimension"; 0 a projection of nothing
    ("audio", {"n_mels": -1}, ["model.tokenizers.audio", "n_mels", "-1", ">= 1"]),
    ("audio", {"n_mels": 0}, ["model.tokenizers.audio", "n_mels", "0", ">= 1"]),
    ("video", {"hidden": -1}, ["model.tokenizers.video", "hidden", "-1", ">= 1"]),
    # "'<' not supported between instances of 'str' and 'int'"
    ("eeg", {"n_channels": 4, "dropout": "abc"}, ["model.tokenizers.eeg.dropout", "'abc'", "[0, 1]"]),
])
def test_other_tokenizer_options_name_their_key(key, opts, fragments):
    cfg = tiny_training_config()
    cfg["fractals"]["enable"] = False
    cfg["model"]["tokenizers"][key] = opts
    with pytest.raises(ValueError) as info:
        build_lightning_module(cfg)
    missing = [f for f in fragments if f not in str(info.value)]
    assert not missing, f"{missing} not in {str(info.value)!r}"


@pytest.mark.parametrize("section, key, value, need", [
    ("perceiver", "dropout", math.nan, "[0, 1)"),  # passed nn.Dropout, failed in the first attention call
    ("popt", "dropout", "abc", "[0, 1)"),  # "'<' not supported between instances of 'str' and 'int'"
    ("popt", "mlp_ratio", 0, ">= 1"),  # silently an MLP of nothing
    ("popt", "mlp_ratio", 2.5, ">= 1"),  # "empty(): argument 'size' ..."
])
def test_attention_block_options_name_their_key(section, key, value, need):
    cfg = _neurofmx(f"model.{section}.{key}", value)
    with pytest.raises(ValueError) as info:
        build_lightning_module(cfg)
    missing = [f for f in (f"model.{section}", key, repr(value), need) if f not in str(info.value)]
    assert not missing, f"{missing} not in {str(info.value)!r}"


def test_behavior_mask_of_the_wrong_width_is_named(tiny_and_batch):
    # RuntimeError "The size of tensor a (2) must match the size of tensor b (3) at non-singleton dimension 2"
    model, batch = tiny_and_batch
    with pytest.raises(ValueError, match=r"batch\['behavior'\].*mask: needs shape \(B, F\) = \(2, 2\).*got \(2, 3\)"):
        model({**batch, "behavior_mask": torch.ones(2, 3, dtype=torch.bool)})


def test_fused_kernels_on_cpu_say_what_to_set_instead(tiny_and_batch):
    # "kernels='fused' but the mamba_ssm kernels cannot run: input not on CUDA" gave no way out
    _, batch = tiny_and_batch
    cfg = _neurofmx("model.ssm.kernels", "fused")
    model = build_lightning_module(cfg).model
    with pytest.raises(RuntimeError, match=r"kernels='fused'.*use kernels='auto'"):
        model(batch)


@pytest.mark.parametrize("key, value, fragments", [
    ("seq_len", 2.5, ["data.seq_len", "2.5", "integer >= 1"]),  # int() read it as 2
    ("seq_len", "abc", ["data.seq_len", "'abc'", "integer >= 1"]),  # "invalid literal for int()"
    ("batch_size", 0, ["data.batch_size", "0", "integer >= 1"]),  # silently became trainer.batch_size
    ("windows_per_epoch", "abc", ["data.windows_per_epoch", "'abc'", "integer >= 1"]),
    ("val_fraction", "abc", ["data.val_fraction", "'abc'", "(0, 1)"]),  # "could not convert string to float"
])
def test_byte_data_options_name_their_key(tmp_path, key, value, fragments):
    from models.registry import build_datamodule

    (tmp_path / "a.txt").write_bytes(b"hello world " * 20)
    with pytest.raises(ValueError) as info:
        build_datamodule({"data": {"name": "bytes", "path": str(tmp_path), key: value}})
    missing = [f for f in fragments if f not in str(info.value)]
    assert not missing, f"{missing} not in {str(info.value)!r}"


@pytest.mark.parametrize("max_bytes", [2.5, "abc"])
def test_byte_corpus_cap_must_be_whole(tmp_path, max_bytes):
    # int() read 2.5 as 2 (a 2-byte corpus, no word) and failed on "abc" naming no option
    from models.registry import build_datamodule

    (tmp_path / "a.txt").write_bytes(b"hello world " * 20)
    dm = build_datamodule({"data": {"name": "bytes", "path": str(tmp_path), "max_bytes": max_bytes}})
    with pytest.raises(ValueError, match=rf"data\.max_bytes: must be an integer >= 2 .*got {max_bytes!r}"):
        dm.setup()


@pytest.mark.parametrize("key, value, fragments", [
    ("n_train", 2.5, ["data.n_train", "2.5", "integer >= 2"]),  # int() read it as 2
    ("noise", "abc", ["data.noise", "'abc'", ">= 0"]),  # "could not convert string to float"
    ("batch_size", 0, ["data.batch_size", "0", "integer >= 1"]),  # silently became trainer.batch_size
])
def test_two_moons_data_options_name_their_key(key, value, fragments):
    from models.registry import build_datamodule

    with pytest.raises(ValueError) as info:
        build_datamodule({"data": {"name": "two_moons", key: value}})
    missing = [f for f in fragments if f not in str(info.value)]
    assert not missing, f"{missing} not in {str(info.value)!r}"


def test_a_forecast_horizon_beyond_the_window_is_reported(tiny_and_batch, caplog):
    # horizon 20 steps on 16-step windows: the behaviour head still scored, so forecast never trained, no word
    import logging

    _, batch = tiny_and_batch
    cfg = _neurofmx("model.heads.forecast.horizon", 20)
    module = build_lightning_module(cfg)
    module.log = lambda *a, **k: None
    with caplog.at_level(logging.WARNING, logger="models.lightning"):
        loss = module.training_step(batch, 0)
    assert torch.isfinite(loss)
    assert "model.heads.forecast.horizon=20 steps but the windows give 16 steps" in caplog.text
    assert "forecast_lfp/forecast_spikes is never scored" in caplog.text


@pytest.mark.parametrize("path, value, fragments", [
    # any truthy value switched the part on: a quoted 'false' built it
    ("fractals.backbone.fractional_kernels.enable", "false", ["fractals.backbone.fractional_kernels.enable",
                                                             "'false'", "true or false"]),
    ("fractals.backbone.scale_encodings.enable", 1, ["fractals.backbone.scale_encodings.enable", "1",
                                                     "true or false"]),
    # a forecast head with nothing to score, no word
    ("model.heads.forecast.keys", [], ["model.heads.forecast.keys", "[]", "at least one"]),
])
def test_switches_and_empty_key_lists_are_refused(path, value, fragments):
    with pytest.raises(ValueError) as info:
        build_lightning_module(_neurofmx(path, value))
    missing = [f for f in fragments if f not in str(info.value)]
    assert not missing, f"{missing} not in {str(info.value)!r}"


@pytest.mark.parametrize("section, value", [("fractals", "false"), ("criticality", "no")])
def test_training_switches_must_be_booleans(section, value):
    # fractals.enable: 'false' (a quoted override) switched the fractal priors on
    cfg = tiny_training_config()
    cfg.setdefault(section, {})["enable"] = value
    with pytest.raises(ValueError, match=rf"{section}\.enable: needs true or false, got {value!r}"):
        build_lightning_module(cfg)


def test_two_moons_criticality_lr_must_be_a_boolean():
    # 'false' switched the criticality-scaled learning rate on
    with pytest.raises(ValueError, match=r"model\.criticality_lr: needs true or false, got 'false'"):
        build_lightning_module(_family("two_moons", "criticality_lr", "false"))


def test_a_deep_cantor_pattern_gives_the_offsets_its_window_can_use():
    """depth=100 built 2**100 Cantor points (the process died); levels whose points all lie beyond the window
    change nothing."""
    from models.attention.patterns import cantor_offsets

    for n in (1, 2, 7, 64, 200):
        deep, shallow = cantor_offsets(n, depth=100), cantor_offsets(n, depth=6)
        assert all(torch.equal(a, b) for a, b in zip(deep, shallow)), n
