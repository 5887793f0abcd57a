"""Fractal attention patterns: geometry, shapes, masks, causality, gradients, low-precision stability."""
import math

import pytest
import torch

from models.attention import FractalMultiheadAttention, build_pattern
from models.attention.patterns import (
    cantor_offsets,
    cantor_set,
    hilbert_d2xy,
    hilbert_xy2d,
    julia_escape_time,
    paperfolding,
)

ALL = ["hilbert", "cantor", "dragon", "julia", "fractal_blend"]


def _qkv(b=2, h=2, lq=40, lk=40, e=8, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(b, h, n, e, generator=g).to(dtype) for n in (lq, lk, lk)]


def test_hilbert_curve_is_a_bijection_with_unit_steps():
    order = 4
    d = torch.arange(4**order)
    x, y = hilbert_d2xy(d, order)
    assert torch.equal(hilbert_xy2d(x, y, order), d)
    steps = (x[1:] - x[:-1]).abs() + (y[1:] - y[:-1]).abs()
    assert bool((steps == 1).all())  # consecutive positions are neighbouring cells


def test_cantor_set_is_the_true_ternary_set():
    pts = cantor_set(4)
    assert pts.numel() == 16
    for p in pts.tolist():
        digits = []
        for _ in range(4):
            digits.append(p % 3)
            p //= 3
        assert digits.count(1) == 0
    off, scale = cantor_offsets(1000, depth=3)
    assert off[0] == 0 and bool((off[1:] > off[:-1]).all()) and off.max() < 1000
    assert off.numel() < 8 * math.ceil(math.log(1000, 3)) + 1  # O(2^d log3 n) keys per query


def test_paperfolding_sequence_matches_known_prefix():
    # OEIS A014577 (1 = +1, 0 = -1): 1 1 0 1 1 0 0 1 1 1 0 0 1 0 0
    known = [1, 1, 0, 1, 1, 0, 0, 1, 1, 1, 0, 0, 1, 0, 0]
    got = paperfolding(torch.arange(1, 16))
    assert got.tolist() == [1.0 if b else -1.0 for b in known]


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("lq", [40, 7])
def test_shapes_and_finite_outputs(name, lq):
    q, k, v = _qkv(lq=lq)
    out = build_pattern(name, n_heads=2)(q, k, v)
    assert out.shape == q.shape and bool(torch.isfinite(out).all())


@pytest.mark.parametrize("name", ALL)
def test_padded_keys_do_not_change_outputs(name):
    q, k, v = _qkv()
    mask = torch.ones(2, 1, 1, 40, dtype=torch.bool)
    mask[:, :, :, 30:] = False
    attn = build_pattern(name, n_heads=2)
    out = attn(q, k, v, mask=mask)
    k2, v2 = k.clone(), v.clone()
    k2[:, :, 30:] = 100.0
    v2[:, :, 30:] = -100.0
    torch.testing.assert_close(attn(q, k2, v2, mask=mask), out)


@pytest.mark.parametrize("name", ALL)
def test_causal_outputs_ignore_the_future(name):
    q, k, v = _qkv()
    attn = build_pattern(name, n_heads=2, causal=True)
    out = attn(q, k, v)
    k2, v2 = k.clone(), v.clone()
    k2[:, :, 25:] += 5.0
    v2[:, :, 25:] += 5.0
    out2 = attn(q, k2, v2)
    torch.testing.assert_close(out2[:, :, :25], out[:, :, :25])
    assert not torch.allclose(out2[:, :, 25:], out[:, :, 25:])


def test_fully_masked_query_returns_zeros():
    q, k, v = _qkv()
    mask = torch.zeros(2, 1, 1, 40, dtype=torch.bool)
    for name in ALL:
        assert torch.count_nonzero(build_pattern(name, n_heads=2)(q, k, v, mask=mask)) == 0


def test_gradients_reach_the_julia_parameters_and_blend_weights():
    q, k, v = [t.requires_grad_(True) for t in _qkv()]
    attn = build_pattern("fractal_blend", n_heads=2)
    (attn(q, k, v) ** 2).sum().backward()
    julia = attn.parts["julia"]
    for p in (julia.c_real, julia.c_imag, julia.gain, attn.logits, attn.parts["cantor"].scale_bias, attn.parts["dragon"].weight):
        assert p.grad is not None and bool(torch.isfinite(p.grad).all()) and float(p.grad.abs().sum()) > 0
    assert q.grad is not None and float(q.grad.abs().sum()) > 0


def test_julia_escape_time_is_bounded_and_differentiable():
    c = torch.tensor(-0.7, requires_grad=True)
    z0 = torch.complex(torch.linspace(-1.5, 1.5, 101), torch.zeros(101))
    tau = julia_escape_time(z0, c, torch.tensor(0.27))
    assert float(tau.detach().min()) >= 0 and float(tau.detach().max()) <= 1
    tau.sum().backward()
    assert c.grad is not None and torch.isfinite(c.grad)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("name", ALL)
def test_stable_in_half_precision_with_large_inputs(name, dtype):
    q, k, v = _qkv(dtype=dtype)
    q, k = q * 300, k * 300  # scores far beyond fp16 range if computed in half precision
    out = build_pattern(name, n_heads=2)(q, k, v)
    assert out.dtype == dtype and bool(torch.isfinite(out).all())


@pytest.mark.parametrize("pattern", ["sdpa"] + ALL)
def test_multihead_module_runs_each_pattern(pattern):
    x = torch.randn(2, 33, 16)
    mha = FractalMultiheadAttention(d_model=16, n_heads=4, pattern=pattern, causal=True)
    pad = torch.ones(2, 33, dtype=torch.bool)
    pad[1, 20:] = False
    y = mha(x, key_padding_mask=pad)
    assert y.shape == x.shape and bool(torch.isfinite(y).all())


def test_unknown_pattern_is_an_error():
    with pytest.raises(ValueError, match="attention: unknown pattern"):
        build_pattern("mandelbrot", n_heads=1)


@pytest.mark.parametrize("pattern", ["cantor", "fractal_blend"])
def test_neurofmx_selects_a_pattern_by_config(pattern):
    from fmx.config import compose
    from models.data.datamodule import build_datamodule
    from models.neurofmx import NeuroFMx

    cfg = compose(["model=tiny", f"+model.perceiver.attention={pattern}", f"+model.popt.attention={pattern}",
                   "data.n_train=4", "data.n_val=2"])
    model = NeuroFMx.from_config(cfg)
    kinds = {type(m).__name__ for m in model.modules()}
    assert ("CantorAttention" if pattern == "cantor" else "FractalBlendAttention") in kinds
    dm = build_datamodule(cfg)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    out = model(batch)
    assert torch.isfinite(out["loss"])
    out["loss"].backward()


@pytest.mark.parametrize("name", ["hilbert", "cantor"])
def test_sparse_patterns_do_not_build_a_dense_mask_without_one(name):
    # O(n M) memory as documented: an n x n mask at n = 2**19 would be 256 GiB.
    n = 2**19
    attn = build_pattern(name, n_heads=1, causal=True, **({"window": 1} if name == "hilbert" else {"depth": 1}))
    q = torch.randn(1, 1, n, 1, generator=torch.Generator().manual_seed(0))
    out = attn(q, q, q)
    assert out.shape == q.shape and bool(torch.isfinite(out).all())
    torch.testing.assert_close(out[0, 0, 0], q[0, 0, 0])  # causal: the first query sees only itself


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_julia_gradients_stay_finite_in_half_precision_at_c_zero(dtype):
    # c = 0 (the unit-circle Julia set) keeps z = 0 at offset 0; |z| must not underflow to a sqrt(0) gradient.
    attn = build_pattern("julia", n_heads=2, c=(0.0, 0.0)).to(dtype)
    q, k, v = _qkv(lq=9, lk=9, dtype=dtype)
    attn(q, k, v).float().sum().backward()
    for p in (attn.c_real, attn.c_imag, attn.gain):
        assert p.grad is not None and bool(torch.isfinite(p.grad).all()), p.grad


@pytest.mark.parametrize("name", ["hilbert", "cantor", "fractal_blend"])
def test_training_after_an_inference_mode_pass_of_the_same_length(name):
    # Lightning's sanity-check validation runs under torch.inference_mode before the first training
    # step; the cached key indices must still be usable by autograd afterwards.
    attn = build_pattern(name, n_heads=2)
    q, k, v = _qkv(lq=20, lk=20)
    with torch.inference_mode():
        expected = attn(q, k, v)
    q.requires_grad_(True)
    out = attn(q, k, v)
    out.sum().backward()
    torch.testing.assert_close(out.detach(), expected)
    assert q.grad is not None and float(q.grad.abs().sum()) > 0
