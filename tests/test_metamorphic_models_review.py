"""Metamorphic relations of the models package: batch independence, padding invariance, causality, prefix and
chunking invariance, channel-order equivariance, float64 agreement, priors off == priors at weight 0."""
from __future__ import annotations

import copy

import pytest
import torch

from configs import tiny_training_config
from models.backbones import Mamba2Stack
from models.backbones.ssd import ssd_chunked, ssd_naive
from models.data.batch import collate_batch
from models.data.synthetic import SyntheticConfig, SyntheticNeuralDataset
from models.lightning import build_lightning_module
from models.neurofmx import NeuroFMx
from models.presets import load_preset

ALL_HEADS = {"forecast": {"keys": ["spikes", "lfp"], "horizon": 1}, "behavior": {"n_features": 2},
             "reconstruction": {"keys": ["lfp", "spikes"], "mask_ratio": 0.25},
             "contrastive": {"view": "behavior", "dim_b": 2}, "adversarial": {"target": "subject", "n_domains": 4}}


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def batch():
    ds = SyntheticNeuralDataset(n_samples=4, config=SyntheticConfig(n_time=64))
    return collate_batch([ds[i] for i in range(3)])


def _model(layout="channel_patch", heads=ALL_HEADS, **perceiver):
    cfg = load_preset("tiny")
    cfg["tokenizers"] = {"spikes": {"n_units": 64, "layout": layout}, "lfp": {"n_channels": 16, "layout": layout}}
    cfg["heads"] = copy.deepcopy(heads)
    cfg["perceiver"].update(perceiver)
    torch.manual_seed(0)
    return NeuroFMx.from_config({"model": cfg}).eval()


def _rows(batch, idx):
    n = batch["lfp"].shape[0]
    return {k: (v[idx] if torch.is_tensor(v) and v.ndim and v.shape[0] == n else v) for k, v in batch.items()}


@pytest.mark.parametrize("layout", ["channel_patch", "time_mix"])
def test_eval_outputs_of_a_sample_do_not_depend_on_its_batch(batch, layout):
    m = _model(layout)
    with torch.no_grad():
        full = m(batch)
        one = m(_rows(batch, slice(1, 2)))
    for key in ("perceiver", "ssm", "popt", "ssm_states"):
        torch.testing.assert_close(one["latents"][key][0], full["latents"][key][1], rtol=0, atol=1e-5)
    for key, pred in one["outputs"].items():
        torch.testing.assert_close(pred[0], full["outputs"][key][1], rtol=0, atol=1e-5)


def _pad_channels(batch, fill, extra=3):
    b = dict(batch)
    n, c, t = batch["lfp"].shape
    b["lfp"] = torch.cat([batch["lfp"], torch.full((n, extra, t), fill)], 1)
    b["lfp_mask"] = torch.cat([batch["lfp_mask"], torch.zeros(n, extra, dtype=torch.bool)], 1)
    b["spikes"] = torch.cat([batch["spikes"], torch.full((n, t, extra), fill)], 2)
    b["spikes_mask"] = torch.cat([batch["spikes_mask"], torch.zeros(n, extra, dtype=torch.bool)], 1)
    b["unit_ids"] = torch.cat([batch["unit_ids"], torch.full((n, extra), 63)], 1)
    return b


@pytest.mark.parametrize("fill", [float("nan"), 7.0])
def test_padded_channels_and_their_values_change_no_real_output(batch, fill):
    m = _model("channel_patch")
    with torch.no_grad():
        a, b = m(batch), m(_pad_channels(batch, fill))
    for key in ("perceiver", "ssm", "popt"):
        torch.testing.assert_close(b["latents"][key], a["latents"][key], rtol=0, atol=1e-5)
    for key in a["losses"]:
        torch.testing.assert_close(b["losses"][key], a["losses"][key], rtol=0, atol=1e-5)
    for key, pred in a["outputs"].items():
        torch.testing.assert_close(b["outputs"][key][:, : pred.shape[1]], pred, rtol=0, atol=1e-5)


def test_permuting_channels_with_their_ids_permutes_the_outputs_only(batch):
    m = _model("channel_patch")
    n, c, _ = batch["lfp"].shape
    u = batch["spikes"].shape[2]
    base = dict(batch, lfp_channel_ids=torch.arange(c).expand(n, c).clone())
    g = torch.Generator().manual_seed(3)
    pc, pu = torch.randperm(c, generator=g), torch.randperm(u, generator=g)
    perm = dict(base, lfp=base["lfp"][:, pc], lfp_mask=base["lfp_mask"][:, pc],
                lfp_channel_ids=base["lfp_channel_ids"][:, pc], spikes=base["spikes"][:, :, pu],
                spikes_mask=base["spikes_mask"][:, pu], unit_ids=base["unit_ids"][:, pu])
    with torch.no_grad():
        a, b = m(base), m(perm)
    for key in ("ssm", "popt"):  # PopT (sdpa) is permutation invariant over units
        torch.testing.assert_close(b["latents"][key], a["latents"][key], rtol=0, atol=1e-5)
    for key, pred in a["outputs"].items():
        if key == "behavior":
            torch.testing.assert_close(b["outputs"][key], pred, rtol=0, atol=1e-5)
        else:
            order = pc if key.endswith("lfp") else pu
            torch.testing.assert_close(b["outputs"][key], pred[:, order], rtol=0, atol=1e-5)


@pytest.mark.parametrize("attention", ["sdpa", "hilbert", "dragon"])
def test_chunked_latents_stay_causal_and_batch_independent(batch, attention):
    m = _model("channel_patch", heads={"forecast": {"keys": ["spikes", "lfp"], "horizon": 1}},
               n_latents=2, chunk_size=2, attention=attention)
    step, cut = 4 * 2, 3
    changed = {k: (v.clone() if torch.is_tensor(v) else v) for k, v in batch.items()}
    changed["lfp"][..., cut * step:] += 5 * torch.randn_like(changed["lfp"][..., cut * step:])
    with torch.no_grad():
        a, b, one = m(batch), m(changed), m(_rows(batch, slice(2, 3)))
    torch.testing.assert_close(b["latents"]["ssm"][:, : cut * 2], a["latents"]["ssm"][:, : cut * 2], rtol=0, atol=1e-5)
    assert (b["latents"]["ssm"][:, cut * 2:] - a["latents"]["ssm"][:, cut * 2:]).abs().max() > 1e-3
    torch.testing.assert_close(one["latents"]["ssm"][0], a["latents"]["ssm"][2], rtol=0, atol=1e-5)


def test_a_shorter_window_gives_the_prefix_of_the_latents(batch):
    # Every stage is causal (running z-score, causal chunks, causal conv, scan, scale encodings, fractional
    # kernels): the first steps of a cropped window equal those of the whole window, even a partial last step.
    cfg = tiny_training_config()
    torch.manual_seed(0)
    m = NeuroFMx.from_config(cfg).eval()
    with torch.no_grad():
        full = m(batch)
        for t in (4, 33, 61):
            cut = dict(batch, spikes=batch["spikes"][:, :t], behavior=batch["behavior"][:, :t], lfp=batch["lfp"][..., :t])
            out = m(cut)
            s = t // 4
            torch.testing.assert_close(out["latents"]["ssm"][:, :s], full["latents"]["ssm"][:, :s], rtol=0, atol=1e-5)
            torch.testing.assert_close(out["outputs"]["forecast_lfp"][..., : s * 4],
                                       full["outputs"]["forecast_lfp"][..., : s * 4], rtol=0, atol=1e-5)


def test_ssd_chunk_size_does_not_change_the_model(batch):
    cfg = tiny_training_config()
    torch.manual_seed(0)
    m = NeuroFMx.from_config(cfg).eval()
    other = copy.deepcopy(cfg)
    other["model"]["ssm"]["chunk_size"] = 5  # 16 steps: chunks end mid-sequence, last one partial
    m2 = NeuroFMx.from_config(other).eval()
    m2.load_state_dict(m.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(m2(batch)["latents"]["ssm"], m(batch)["latents"]["ssm"], rtol=0, atol=1e-5)


def test_float64_model_agrees_with_float32(batch):
    cfg = tiny_training_config()
    torch.manual_seed(0)
    m = NeuroFMx.from_config(cfg).eval()
    m64 = copy.deepcopy(m).double()
    b64 = {k: (v.double() if torch.is_tensor(v) and v.is_floating_point() else v) for k, v in batch.items()}
    with torch.no_grad():
        a, b = m(batch), m64(b64)
    assert b["latents"]["ssm"].dtype == torch.float64
    torch.testing.assert_close(b["latents"]["ssm"], a["latents"]["ssm"].double(), rtol=0, atol=1e-5)
    torch.testing.assert_close(b["loss"], a["loss"].double(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("n_taps", [None, 8, 80])  # 80 taps: the FFT path of the fractional kernel
def test_backbone_is_causal_and_prefix_consistent_at_chunk_edges(n_taps):
    frac = None if n_taps is None else {"n_taps": n_taps, "min_alpha": 0.2, "max_alpha": 1.0}
    torch.manual_seed(0)
    m = Mamba2Stack(d_model=16, n_layers=2, d_state=8, headdim=8, chunk_size=8, kernels="portable",
                    fractional=frac).eval()
    x = torch.randn(2, 17, 16)  # 17 = two chunks of 8 plus one step
    with torch.no_grad():
        y = m(x)
        for t0 in (0, 7, 8, 15):
            x2 = x.clone()
            x2[:, t0 + 1:] = 10 * torch.randn_like(x2[:, t0 + 1:])
            torch.testing.assert_close(m(x2)[:, : t0 + 1], y[:, : t0 + 1], rtol=0, atol=1e-5)
            torch.testing.assert_close(m(x[:, : t0 + 1]), y[:, : t0 + 1], rtol=0, atol=1e-5)


def test_ssd_streaming_in_two_pieces_equals_one_shot():
    g = torch.Generator().manual_seed(1)
    b, length, h, p, n = 2, 37, 4, 3, 5
    x = torch.randn(b, length, h, p, generator=g, dtype=torch.float64)
    dt = 0.5 * torch.rand(b, length, h, generator=g, dtype=torch.float64)
    a = -3 * torch.rand(h, generator=g, dtype=torch.float64)
    bb = torch.randn(b, length, 2, n, generator=g, dtype=torch.float64)
    cc = torch.randn(b, length, 2, n, generator=g, dtype=torch.float64)
    d = torch.randn(h, generator=g, dtype=torch.float64)
    y, state = ssd_chunked(x, dt, a, bb, cc, chunk_size=8, D=d)
    torch.testing.assert_close(y, ssd_naive(x, dt, a, bb, cc, D=d)[0], rtol=0, atol=1e-10)
    for cut in (1, 8, 13):
        y1, s1 = ssd_chunked(x[:, :cut], dt[:, :cut], a, bb[:, :cut], cc[:, :cut], chunk_size=8, D=d)
        y2, s2 = ssd_chunked(x[:, cut:], dt[:, cut:], a, bb[:, cut:], cc[:, cut:], chunk_size=8, D=d,
                             initial_states=s1)
        torch.testing.assert_close(torch.cat([y1, y2], 1), y, rtol=0, atol=1e-10)
        torch.testing.assert_close(s2, state, rtol=0, atol=1e-10)


def test_priors_at_weight_zero_equal_priors_disabled(batch):
    zero = tiny_training_config(warmup_steps=0, lambda_spec=0.0, lambda_mf=0.0, lambda_graphfd=0.0)
    off = copy.deepcopy(zero)
    off["fractals"]["enable"] = False
    torch.manual_seed(0)
    m0 = build_lightning_module(zero)
    torch.manual_seed(0)
    m1 = build_lightning_module(off)
    assert m0.priors is not None and m1.priors is None
    with pytest.warns(UserWarning, match="trainer"):  # self.log without a Trainer
        l0, l1 = m0.training_step(batch, 0), m1.training_step(batch, 0)
    assert float(l0.detach()) == float(l1.detach())
    l0.backward()
    l1.backward()
    for p0, p1 in zip(m0.parameters(), m1.parameters()):
        assert (p0.grad is None) == (p1.grad is None)
        if p0.grad is not None:
            torch.testing.assert_close(p0.grad, p1.grad, rtol=0, atol=0)


def test_ablation_callback_accepts_nan_in_padded_channels(batch):
    # The model's own NaN error says "mark the channel as padding in <key>_mask", and the model then trains;
    # the default causal-scale-ablation callback refused the same batch at the first validation end.
    from models.callbacks import CausalScaleAblationCallback, build_callbacks

    cfg = tiny_training_config()
    torch.manual_seed(0)
    module = build_lightning_module(cfg).eval()
    cb = next(c for c in build_callbacks(cfg) if isinstance(c, CausalScaleAblationCallback))
    padded = _pad_channels(batch, float("nan"), extra=2)
    with torch.no_grad():
        assert torch.isfinite(module.model(padded)["loss"])
    clean, nan = cb._deltas(module, _pad_channels(batch, 0.0, extra=2)), cb._deltas(module, padded)
    assert set(nan) == set(clean) and "val/ablation_delta_loss" in nan
    for key, value in clean.items():
        assert nan[key] == pytest.approx(value, abs=1e-6)
    ablated = cb.ablate(padded, 100.0)
    assert torch.isnan(ablated["lfp"][:, -2:]).all()  # padding handed back unchanged
    assert torch.isfinite(ablated["lfp"][:, :-2]).all()
    assert not torch.equal(ablated["lfp"][:, :-2], padded["lfp"][:, :-2])  # real channels ablated


def test_byte_lm_is_causal_batch_independent_and_greedy_generation_agrees():
    from models.byte.model import FractalByteLM, generate

    torch.manual_seed(0)
    m = FractalByteLM(d_model=32, n_layers=2, n_fractals=2, dim_range=(8, 16),
                      mamba={"d_state": 8, "headdim": 16, "chunk_size": 4}).eval()
    ids = torch.randint(0, 256, (3, 11), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        y = m(ids)
        changed = ids.clone()
        changed[:, 6:] = (changed[:, 6:] + 1) % 256
        torch.testing.assert_close(m(changed)[:, :6], y[:, :6], rtol=0, atol=1e-5)
        torch.testing.assert_close(m(ids[1:2]), y[1:2], rtol=0, atol=1e-5)
        out = generate(m, ids[0, :4].tolist(), max_new=4, stop_at_eos=False)
        logits = m(torch.tensor([out]))[0, :, :256]
    assert out[4:] == [int(logits[i].argmax()) for i in range(3, len(out) - 1)]


def test_fit_to_data_is_idempotent():
    from models.fit_to_data import fit_model_config

    cfg = tiny_training_config()
    for info in ({"modalities": ["eeg"], "n_channel_ids": 19},
                 {"modalities": ["spikes", "lfp"], "n_unit_ids": 500, "n_lfp_channels": 20}):
        once, changes = fit_model_config(cfg, info)
        twice, again = fit_model_config(once, info)
        assert changes and again == [] and twice == once


@pytest.mark.parametrize("layout", ["channel_patch", "time_mix"])
def test_a_fully_masked_modality_equals_an_absent_one(batch, layout):
    m = _model(layout)
    masked = dict(batch, lfp_mask=torch.zeros_like(batch["lfp_mask"]))
    absent = {k: v for k, v in batch.items() if not k.startswith("lfp")}
    with torch.no_grad():
        a, b = m(masked), m(absent)
    for key in ("perceiver", "ssm", "popt"):
        torch.testing.assert_close(a["latents"][key], b["latents"][key], rtol=0, atol=1e-5)
    assert a["scored"] == b["scored"] and not any("lfp" in name for name in a["scored"])


def test_a_sample_without_real_channels_adds_nothing_to_that_heads_loss(batch):
    m = _model("channel_patch")
    masked = dict(batch, lfp_mask=batch["lfp_mask"].clone())
    masked["lfp_mask"][1] = False
    rest = _rows(batch, [0, 2])
    with torch.no_grad():
        a, b = m(masked), m(rest)
    for key in ("forecast_lfp", "recon_lfp"):
        torch.testing.assert_close(a["losses"][key], b["losses"][key], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("key", ["audio", "video"])
def test_own_clock_modalities_do_not_reach_earlier_steps(batch, key):
    # Audio and video tokens sit in the common bin holding their last frame: changing frames from j0 on must
    # leave every step that ends before frame j0 starts unchanged.
    cfg = load_preset("tiny")
    cfg["tokenizers"][key] = {"n_mels": 8} if key == "audio" else {"hidden": 4}
    torch.manual_seed(0)
    m = NeuroFMx.from_config({"model": cfg}).eval()
    n_frames, n_steps = 50, batch["lfp"].shape[-1] // 4
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 8, n_frames, generator=g) if key == "audio" else torch.rand(3, 3, n_frames, 6, 6, generator=g)
    with torch.no_grad():
        base = m(dict(batch, **{key: x}))["latents"]["ssm"]
        for j0 in (9, 30):
            changed = x.clone()
            changed[:, :, j0:] += 3.0
            out = m(dict(batch, **{key: changed}))["latents"]["ssm"]
            safe = j0 * n_steps // n_frames  # steps ending at or before frame j0's start
            torch.testing.assert_close(out[:, :safe], base[:, :safe], rtol=0, atol=1e-5)
            assert (out - base).abs().max() > 1e-4
