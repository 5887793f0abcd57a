"""FractionalKernel: causal power-law taps, bounded alpha, FFT == direct conv, gating inside Mamba-2."""
from __future__ import annotations

import pytest
import torch

from models.backbones import FractionalKernel, Mamba2, causal_direct_conv, causal_fft_conv


def _kernel(**kw):
    opts = dict(n_taps=33, min_alpha=0.2, max_alpha=0.8, channels=6)
    opts.update(kw)
    return FractionalKernel(**opts)


def test_taps_are_normalised_power_laws():
    k = _kernel()
    h = k.taps().detach()
    torch.testing.assert_close(h.sum(-1), torch.ones(6))
    t = torch.arange(1, 34, dtype=torch.float32)
    # log h is linear in log(t+1) with slope -alpha.
    slope = ((h.log() - h.log().mean(-1, keepdim=True)) * (t.log() - t.log().mean())).sum(-1) / (
        (t.log() - t.log().mean()) ** 2
    ).sum()
    torch.testing.assert_close(-slope, k.alpha.detach(), rtol=1e-4, atol=1e-4)
    assert bool((h[:, 1:] <= h[:, :-1]).all())  # memory decays


def test_output_is_causal():
    k = _kernel()
    x = torch.randn(2, 6, 80)
    y = k(x)
    x2 = x.clone()
    x2[..., 50:] = torch.randn(2, 6, 30)
    y2 = k(x2)
    torch.testing.assert_close(y2[..., :50], y[..., :50])
    assert (y2[..., 50:] - y[..., 50:]).abs().max() > 1e-3
    # Impulse response equals the taps.
    imp = torch.zeros(1, 6, 40)
    imp[..., 0] = 1
    torch.testing.assert_close(k(imp)[0, :, :33], k.taps().detach(), atol=1e-6, rtol=1e-5)


def test_alpha_stays_within_bounds_under_large_updates():
    k = _kernel(min_alpha=0.3, max_alpha=0.6)
    opt = torch.optim.SGD(k.parameters(), lr=1e4)
    for sign in (1.0, -1.0):
        for _ in range(3):
            opt.zero_grad()
            (sign * k.alpha.sum()).backward()
            opt.step()
            a = k.alpha.detach()
            assert float(a.min()) >= 0.3 and float(a.max()) <= 0.6
    g = k.gate.detach()
    assert bool(((g > 0) & (g < 1)).all())


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
def test_fft_equals_direct(dtype, tol):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(3, 5, 300, generator=gen, dtype=dtype)
    h = torch.rand(5, 97, generator=gen, dtype=dtype)
    torch.testing.assert_close(causal_fft_conv(x, h), causal_direct_conv(x, h), rtol=tol, atol=tol)
    # The module picks FFT above the threshold and gives the same answer as the direct path.
    k_long = _kernel(n_taps=128, channels=5).to(dtype)
    k_short = _kernel(n_taps=128, channels=5, fft_threshold=10_000).to(dtype)
    k_short.load_state_dict(k_long.state_dict())
    torch.testing.assert_close(k_long(x), k_short(x), rtol=tol * 10, atol=tol * 10)


def test_blend_mixes_by_gate():
    k = _kernel(init_gate=0.25)
    x = torch.randn(2, 6, 40)
    standard = torch.randn(2, 6, 40)
    torch.testing.assert_close(k.blend(x, standard), 0.75 * standard + 0.25 * k(x))


def test_bad_arguments_raise_with_the_field_name():
    with pytest.raises(ValueError, match="min_alpha"):
        _kernel(min_alpha=0.9, max_alpha=0.8)
    with pytest.raises(ValueError, match="n_taps"):
        _kernel(n_taps=0)
    with pytest.raises(ValueError, match="x: needs shape"):
        _kernel()(torch.randn(2, 5, 10))


def test_mamba2_with_fractional_kernel_stays_causal_and_trains_alpha():
    torch.manual_seed(0)
    m = Mamba2(d_model=16, d_state=8, headdim=8, kernels="portable",
               fractional={"n_taps": 33, "min_alpha": 0.2, "max_alpha": 0.8})
    assert m.fractional is not None and m.fractional.channels == m.conv_dim
    u = torch.randn(2, 40, 16)
    y = m(u)
    u2 = u.clone()
    u2[:, 25:] += 2.0
    torch.testing.assert_close(m(u2)[:, :25], y[:, :25])
    y.square().mean().backward()
    assert m.fractional.alpha_raw.grad is not None and m.fractional.alpha_raw.grad.abs().sum() > 0
    assert m.fractional.gate_logit.grad.abs().sum() > 0


def test_init_gate_reaches_every_kernel_from_the_config_and_is_checked():
    """fractals.backbone.fractional_kernels.init_gate sets the kernels' starting weight (fixed at 0.1 before, so a
    short trial's kernels stayed at a tenth of the conv path whatever their alpha bounds)."""
    from fmx.config import compose
    from models.registry import build_lightning_module

    key = "fractals.backbone.fractional_kernels.init_gate"
    module = build_lightning_module(compose(["model=tiny", f"{key}=0.5"]))
    gates = [float(m.gate.mean()) for m in module.modules() if isinstance(m, FractionalKernel)]
    assert gates and all(abs(g - 0.5) < 1e-6 for g in gates)
    with pytest.raises(ValueError, match=r"fractals.backbone.fractional_kernels: init_gate: must lie in \(0, 1\), got 1.5"):
        build_lightning_module(compose(["model=tiny", f"{key}=1.5"]))
