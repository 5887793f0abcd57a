"""The fractal priors and metrics as training uses them: bf16/fp16 latents, CPU autocast, autograd corner
cases, torch.compile (graph breaks, recompiles), and half-precision input to the fingerprint metrics."""
from __future__ import annotations

import warnings

import pytest
import torch

from fractals import metrics as fm
from fractals.priors import FractalPriors
from fractals.regularizers import l_graph_fd, l_multifractal, l_spec_1overf

Q = [-5, -3, -1, 0, 1, 3, 5]
KW = dict(warmup_steps=0, fs=250.0, band=(2.0, 80.0), q_vals=Q, scales=[8, 16, 32, 64], compile=False,
          graph_D_target=1.5, tau_target=[-6, -4, -2, -1, 0, 2, 4])
TERMS = {
    "spec": lambda z: l_spec_1overf(z, 250.0, (2.0, 80.0), 1.0, 1.0),
    "mf": lambda z: l_multifractal(z, Q, [8, 16, 32, 64], 1.0, [-6, -4, -2, -1, 0, 2, 4]),
    "graph": lambda z: l_graph_fd(z, [1, 2, 3, 4], 0.3, 1.5, 1.0),
    "all": lambda z: FractalPriors(**KW)(z)[0],
}


def _latents(b=2, t=256, c=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, t, c, generator=g).cumsum(1) * 0.1 + torch.randn(b, t, c, generator=g)
    x[..., :3] += 0.8 * x[..., 3:]  # some channels correlate, so the graph term has edges
    return x


def _value_and_grad(fn, x, autocast_dtype=None):
    x = x.detach().clone().requires_grad_()
    if autocast_dtype is None:
        value = fn(x)
    else:
        with torch.autocast("cpu", dtype=autocast_dtype):
            value = fn(x)
    value.backward()
    return value.detach(), x.grad


@pytest.mark.parametrize("term", sorted(TERMS))
@pytest.mark.parametrize("half", [torch.bfloat16, torch.float16])
def test_half_latents_and_autocast_give_the_float32_loss_and_gradient(term, half):
    # Measured: under CPU autocast the loss and gradient equal float32's exactly (the terms run with
    # autocast off); half latents are upcast, so the loss equals float32's on the same (rounded) values
    # and the gradient differs only by its own rounding to the half dtype (rel <= 2e-3 for bf16).
    fn = TERMS[term]
    x = _latents()
    ref_v, ref_g = _value_and_grad(fn, x)
    v, g = _value_and_grad(fn, x, autocast_dtype=half)
    assert v.dtype == torch.float32 and float(v) == float(ref_v)
    torch.testing.assert_close(g, ref_g, rtol=0, atol=0)
    xh = x.to(half)
    ref_v, ref_g = _value_and_grad(fn, xh.float())
    for dtype in (None, half):  # half latents, with and without autocast around the call
        v, g = _value_and_grad(fn, xh, autocast_dtype=dtype)
        assert v.dtype == torch.float32 and float(v) == pytest.approx(float(ref_v), rel=1e-6)
        assert g.dtype == half and bool(torch.isfinite(g).all())
        assert float((g.float() - ref_g).norm() / ref_g.norm()) < (4e-3 if half == torch.bfloat16 else 1e-3)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_dead_constant_and_zero_channels_get_no_gradient_and_others_finite(dtype):
    x = _latents()
    x[..., 1] = 3.0
    x[..., 4] = 0.0
    x = x.to(dtype).requires_grad_()
    total, parts = FractalPriors(**KW)(x)
    total.backward()
    assert all(bool(torch.isfinite(p)) for p in parts.values())
    assert bool(torch.isfinite(x.grad).all())
    assert float(x.grad[..., [1, 4]].abs().max()) == 0.0
    assert float(x.grad[..., [0, 2]].abs().max()) > 0.0


@pytest.mark.parametrize("scale", [1e-8, 1e4])
def test_tiny_and_large_latents_give_the_scale_free_loss(scale):
    # Every term is scale-free: the loss is the same at any amplitude, and the gradient scales as 1/scale.
    x = _latents()
    ref_v, ref_g = _value_and_grad(TERMS["all"], x)
    v, g = _value_and_grad(TERMS["all"], x * scale)
    assert float(v) == pytest.approx(float(ref_v), rel=1e-4)
    torch.testing.assert_close(g * scale, ref_g, rtol=1e-3, atol=1e-3 * float(ref_g.abs().max()))


def test_batch_of_one_minimum_length_partial_grad_and_double_backward():
    priors = FractalPriors(**{**KW, "graph_D_target": None})  # D variance over a batch of one: 0, no NaN
    x = _latents(b=1, t=32)  # scales 8, 16 are all that fit T/2
    leaf = x[..., :2].clone().requires_grad_()
    total, parts = priors(torch.cat([leaf, x[..., 2:]], -1))
    (grad,) = torch.autograd.grad(total, leaf, create_graph=True)
    assert float(parts["graphfd"].detach()) == 0.0 and bool(torch.isfinite(grad).all()) and float(grad.detach().abs().max()) > 0
    (grad2,) = torch.autograd.grad(grad.square().sum(), leaf)
    assert bool(torch.isfinite(grad2).all())


def test_warmup_and_grad_free_calls_build_no_graph():
    priors = FractalPriors(**{**KW, "warmup_steps": 5})
    x = _latents().requires_grad_()
    total, parts = priors(x, step=4)
    assert float(total) == 0.0 and not total.requires_grad and all(not p.requires_grad for p in parts.values())
    (x.square().mean() + total).backward()  # adding the warmup zero leaves the task gradient intact
    assert bool(torch.isfinite(x.grad).all())
    with torch.no_grad():
        nograd, _ = priors(x, step=5)
    with torch.inference_mode():
        inference, _ = priors(x.detach(), step=5)
    on, _ = priors(x, step=5)
    assert not nograd.requires_grad and not inference.requires_grad and on.requires_grad
    assert float(nograd) == float(inference) == float(on.detach()) > 0


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_fingerprint_metrics_accept_half_latents_as_float32(dtype):
    x = _latents(t=1024).transpose(1, 2)  # (B, C, T)
    xh = x.to(dtype)
    for fn in (fm.higuchi_fd, fm.dfa_alpha, lambda z: fm.spectral_beta(z, 250.0, (2.0, 80.0))):
        out = fn(xh)
        assert out.dtype == torch.float32
        torch.testing.assert_close(out, fn(xh.float()), rtol=0, atol=0)


@pytest.mark.slow  # a TorchDynamo trace of the three priors: ~2-3 s on a loaded 2-core machine
def test_priors_trace_into_one_graph_under_autocast():
    # A custom loop calls the (compiled) priors inside torch.autocast; each term switches autocast off.
    # Entering that switch through a contextlib.ExitStack broke the trace into 5 graphs (4 breaks).
    import torch._dynamo as dynamo

    priors = FractalPriors(**KW)
    x = _latents()
    dynamo.reset()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        report = dynamo.explain(priors._terms)(x, 250.0)
    dynamo.reset()
    assert report.graph_break_count == 0, [str(b.reason)[:200] for b in report.break_reasons]
    assert report.graph_count == 1


@pytest.mark.parametrize("scales", [[8, 8], [16, 8, 16]])
def test_multifractal_prior_refuses_repeated_scales(scales):
    # [8, 8] gave log F_q at one scale only: slope 0, tau = -1 for every q, a silent zero-gradient prior
    # (the MFDFA metric refuses repeated scales).
    x = _latents(t=64).requires_grad_()
    with pytest.raises(ValueError, match="scales"):
        l_multifractal(x, Q, scales, 1.0, [-6, -4, -2, -1, 0, 2, 4])
    with pytest.raises(ValueError, match="scales"):
        FractalPriors(**{**KW, "scales": scales})


def test_spectral_norm_under_autocast_equals_float32():
    # Lightning runs training_step (and so the criticality SpectralRegularizer) inside bf16 autocast. The
    # power iteration's einsums then ran in bf16: on an nn.Linear-like Gaussian matrix (small spectral gap)
    # sigma came back 2 % low, in bf16, with a gradient pointing elsewhere.
    from torch import nn

    from fractals.criticality import SpectralRegularizer, top_singular_value

    g = torch.Generator().manual_seed(0)
    w = (torch.randn(256, 128, generator=g) / 128**0.5).requires_grad_()
    ref = top_singular_value(w, n_iter=400, tol=1e-7)
    (ref_grad,) = torch.autograd.grad(ref, w)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        sigma = top_singular_value(w, n_iter=400, tol=1e-7)
    (grad,) = torch.autograd.grad(sigma, w)
    assert sigma.dtype == torch.float32
    assert float(sigma.detach()) == pytest.approx(float(ref.detach()), rel=1e-6)
    torch.testing.assert_close(grad, ref_grad, rtol=0, atol=1e-6)

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(128, 256), nn.ReLU(), nn.Linear(256, 128))
    plain, mixed = SpectralRegularizer(targets=1.0, weight=1.0), SpectralRegularizer(targets=1.0, weight=1.0)
    with warnings.catch_warnings():  # 2 warm-started iterations per call, as in training: "did not converge"
        warnings.simplefilter("ignore", RuntimeWarning)
        for _ in range(2):
            loss, _ = plain(model)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                mixed_loss, _ = mixed(model)
            assert mixed_loss.dtype == torch.float32
            assert float(mixed_loss.detach()) == pytest.approx(float(loss.detach()), rel=1e-5)


@pytest.mark.parametrize("cfg,words", [
    ({"metrics": {"temporal": {"psd_freq_band": 40.0}}}, "fractals.metrics.temporal.psd_freq_band: must be a list"),
    ({"metrics": {"multifractal": {"scales": 8}}}, "fractals.metrics.multifractal.scales: must be a list"),
    ({"metrics": {"multifractal": {"q_vals": "2"}}}, "fractals.metrics.multifractal.q_vals: must be a list"),
    ({"metrics": {"graph": {"box_eps": 3}}}, "fractals.metrics.graph.box_eps: must be a list"),
    ({"metrics": {"sample_rate_hz": "abc"}}, "fractals.metrics.sample_rate_hz: must be a number, got 'abc'"),
    ({"metrics": {"graph": {"corr_threshold": None}}}, "fractals.metrics.graph.corr_threshold: must be a number"),
    ({"enable": "false"}, "fractals.enable: must be true or false, got 'false'"),
])
def test_priors_config_errors_name_the_key_and_value(cfg, words):
    # scalars where lists belong gave TypeErrors ("'float' object is not iterable"); "abc" a bare float() error;
    # enable: "false" switched the priors on
    from fractals.priors import FractalPriors

    with pytest.raises(ValueError) as err:
        FractalPriors.from_config(cfg)
    assert words in str(err.value)
