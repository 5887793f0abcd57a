"""DFA and MFDFA: ground-truth accuracy, the shared kernel's properties, autograd, bad input."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from fractals import stimuli as S
from fractals.dfa import dfa_alpha, fluctuation_functions, hurst_from_dfa, multifractal_spectrum


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_dfa_recovers_H_of_exact_fgn():
    hs = torch.tensor([0.2, 0.5, 0.7, 0.9], dtype=torch.float64)
    x = torch.stack([S.fgn(8192, float(h), n_series=8, generator=gen(i)) for i, h in enumerate(hs)])
    alpha = dfa_alpha(x)  # (4, 8) in one batched call
    assert alpha.shape == (4, 8)
    mae = (alpha - hs[:, None]).abs().mean(-1)
    assert bool((mae <= 0.05).all()), mae
    torch.testing.assert_close(hurst_from_dfa(alpha), alpha)


def test_dfa_of_fbm_is_H_plus_one():
    # fBm is non-stationary: the few largest segments make alpha noisier (sd ~0.06 per series at
    # T=4096) and slightly low (-0.02), hence 32 series for a +-0.05 check.
    x = S.fbm_series(4096, H=0.4, n_series=32, generator=gen(1))
    alpha = dfa_alpha(x)
    assert float(hurst_from_dfa(alpha, signal="fbm").mean()) == pytest.approx(0.4, abs=0.05)


def test_binomial_cascade_tau_matches_theory():
    # The cascade's cell masses mu_i ARE the series analysed (not their cumulative sum): MFDFA's
    # profile of mu is the cumulative measure, so a segment of s cells fluctuates like its box mass
    # m_v and F_q(s) = [(s/N) sum_v m_v^q]^(1/q) ~ s^((1 + tau(q))/q). Hence q h(q) - 1 is the
    # partition-function exponent tau(q) = -log2(p^q + (1-p)^q) (Kantelhardt 2002, eq. 23 with a+b=1).
    p = 0.6
    q = torch.tensor([-3.0, -2.0, -1.0, 0.0, 1.0, 2.0, 3.0], dtype=torch.float64)
    mu = S.cascade_multifractal(depth=13, p=p, n_series=8, generator=gen(2))
    res = multifractal_spectrum(mu, q, scales=[16, 32, 64, 128, 256, 512, 1024])
    theory = -torch.log2(p**q + (1 - p) ** q)
    err = (res["tau"].mean(0) - theory).abs()
    assert bool((err <= 0.1).all()), err
    # The singularity spectrum is as wide as theory says (same finite differences on the q grid).
    alpha_theory = torch.gradient(theory, spacing=(q,))[0]
    width_theory = float(alpha_theory.max() - alpha_theory.min())
    assert float(res["width"].mean()) == pytest.approx(width_theory, abs=0.1)


def test_mfdfa_monofractal_flat_and_q0_log_average():
    x = S.fgn(8192, 0.7, n_series=8, generator=gen(3))
    res = multifractal_spectrum(x)  # default q -5..5 includes q = 0
    assert res["h"].shape == (8, 7) and res["fq"].shape[:2] == (8, 7)
    assert float((res["h"].mean(0) - 0.7).abs().max()) < 0.05
    torch.testing.assert_close(res["tau"][:, 3], torch.full((8,), -1.0, dtype=torch.float64))
    # q = 0 is the geometric mean of the segment RMS, so F_0 lies between F_-1 and F_1 and the
    # generalized means are non-decreasing in q.
    assert bool((res["fq"][:, 1:] >= res["fq"][:, :-1] * (1 - 1e-12)).all())
    # Legendre pair: f(alpha) = q alpha - tau peaks near 1 (the support dimension).
    assert float(res["falpha"][:, 3].mean()) == pytest.approx(1.0, abs=0.05)


def test_dfa_q2_equals_fluctuation_kernel_and_fit():
    x = S.fgn(2048, 0.6, n_series=3, generator=gen(4))
    w = [16, 32, 64, 128, 256]
    alpha, fit = dfa_alpha(x, w, return_fit=True)
    fq, scales = fluctuation_functions(x, [2.0], w)
    torch.testing.assert_close(fit["fluct"], fq[:, 0])
    slope = np.polyfit(np.log(w), np.log(fit["fluct"][0].numpy()), 1)[0]
    assert float(alpha[0]) == pytest.approx(slope, rel=1e-10)
    assert torch.equal(fit["windows"].cpu(), torch.tensor(w))


def test_dfa_order_n_removes_polynomial_trends_of_order_n_minus_1():
    # DFA-n fits order-n polynomials to the *profile*, i.e. removes order n-1 trends of x itself.
    x = S.fgn(4096, 0.5, n_series=4, generator=gen(5))
    t = torch.linspace(-1, 1, 4096, dtype=torch.float64)
    linear = x + 3 * t
    assert float(dfa_alpha(linear, order=2).mean()) == pytest.approx(0.5, abs=0.06)
    assert float(dfa_alpha(linear, order=1).mean()) > 0.7  # DFA1 leaves a quadratic profile
    quadratic = x + 3 * t**2
    assert float(dfa_alpha(quadratic, order=3).mean()) == pytest.approx(0.5, abs=0.06)


def test_windows_as_tensor_list_and_numpy_io():
    x = S.fgn(1024, 0.7, n_series=2, generator=gen(6))
    a = dfa_alpha(x, windows=torch.tensor([16, 32, 64, 128]))
    b = dfa_alpha(x.numpy(), windows=[16, 32, 64, 128])
    assert isinstance(b, np.ndarray) and b.shape == (2,)
    np.testing.assert_allclose(a.numpy(), b)
    res = multifractal_spectrum(x.numpy(), [-2.0, 0.0, 2.0], [16, 32, 64])
    assert isinstance(res["h"], np.ndarray) and res["h"].shape == (2, 3)


def test_float32_close_to_float64_and_input_untouched():
    x = S.fbm_series(8192, H=0.5, n_series=4, generator=gen(7))  # fBm: large profile, hard in float32
    x32 = x.float()
    before = x32.clone()
    a64, a32 = dfa_alpha(x), dfa_alpha(x32)
    assert a32.dtype == torch.float32
    torch.testing.assert_close(a32.double(), a64, atol=1e-4, rtol=0)
    assert torch.equal(x32, before)


def test_float32_smooth_input_negative_q_keeps_precision():
    # fBm input with order-2 detrending: the trend holds all but ~1e-6 of each segment's energy, and
    # q = -5 is dominated by the smallest segments. Energies formed in float32 lost them entirely.
    x = S.fbm_series(8192, H=0.7, n_series=4, generator=gen(13))
    f64, _ = fluctuation_functions(x, [-5.0, 2.0, 5.0], [16, 64, 256], order=2)
    f32, _ = fluctuation_functions(x.float(), [-5.0, 2.0, 5.0], [16, 64, 256], order=2)
    assert float((f32.double() / f64 - 1).abs().max()) < 1e-4


def test_reduced_matmul_precision_setting_does_not_change_results():
    x = S.fbm_series(4096, H=0.5, n_series=2, generator=gen(12)).float()
    ref = dfa_alpha(x)
    previous = torch.get_float32_matmul_precision()
    try:
        torch.set_float32_matmul_precision("medium")
        torch.testing.assert_close(dfa_alpha(x), ref, atol=1e-5, rtol=0)
    finally:
        torch.set_float32_matmul_precision(previous)


def test_autograd_through_dfa_and_mfdfa():
    x = S.fgn(48, 0.6, n_series=1, generator=gen(8)).requires_grad_()
    torch.autograd.gradcheck(lambda v: dfa_alpha(v, [6, 12, 24]), (x,), fast_mode=True)
    torch.autograd.gradcheck(
        lambda v: multifractal_spectrum(v, [-2.0, 0.0, 2.0], [6, 12, 24])["tau"], (x,), fast_mode=True
    )
    y = S.fgn(1024, 0.5, n_series=3, generator=gen(9)).float().requires_grad_()
    loss = (multifractal_spectrum(y)["width"] ** 2).mean() + dfa_alpha(y).sum()
    loss.backward()
    assert y.grad is not None and bool(torch.isfinite(y.grad).all()) and float(y.grad.abs().sum()) > 0


@pytest.mark.parametrize("n", [4096, 3001])
@pytest.mark.parametrize("scales", [[8, 16, 32, 64, 128], [6, 18, 36, 144]])
@pytest.mark.parametrize("both", [True, False])
def test_nested_octave_kernel_equals_per_scale_detrending(n, scales, both):
    # Nested scales with order 1 merge each scale's centred sums from the finest one; any other
    # grid detrends every scale from the samples. Both must give the same segment energies, for
    # start- and end-aligned segments (n = 3001 leaves remainders at every scale).
    from fractals._dfa_nested import _nested_linear_energies, _nested_scales
    from fractals.dfa import _profile, _segment_energies

    assert _nested_scales(scales, 1) and not _nested_scales(scales, 2) and not _nested_scales([8, 12, 24], 1)
    x = S.fgn(n, 0.7, batch_shape=(3,), generator=torch.Generator().manual_seed(4))
    profile = _profile(x)
    prefix = torch.nn.functional.pad(profile.cumsum(-1), (1, 0))
    nested = _nested_linear_energies(profile, scales, both)
    direct = torch.cat([_segment_energies(profile, prefix, s, 1, both) for s in scales], -1)
    torch.testing.assert_close(nested, direct, rtol=1e-9, atol=0.0)


@pytest.mark.parametrize("q_vals", [[-5.0, -3.0, -1.0, 0.0, 1.0, 3.0, 5.0], [-2.5, 0.0, 1.5, 3.0], [-20.0, 0.0, 20.0]])
def test_all_scale_moments_equal_per_scale_log_sum_exp(q_vals):
    # Integer q up to 12 take products of F, others exponentials, all scales at once; both must
    # equal the plain per-scale log-sum-exp, q = 0 (the log average) included.
    from fractals.dfa import _as_q, _log_fq, _log_fq_scales, _segments_per_scale

    n, scales = 4096, [16, 32, 64, 128]
    counts = _segments_per_scale(n, scales, True)
    seg_var = torch.rand(3, sum(counts), generator=torch.Generator().manual_seed(5), dtype=torch.float64) ** 3 + 1e-4
    q = _as_q(q_vals, "cpu")
    ref = torch.stack([_log_fq(v, q) for v in seg_var.split(counts, -1)], -1)
    torch.testing.assert_close(_log_fq_scales(seg_var, counts, q, q.tolist()), ref, rtol=1e-10, atol=1e-12)


def test_hurst_from_dfa_kinds():
    assert hurst_from_dfa(1.7, signal="fbm") == pytest.approx(0.7)
    np.testing.assert_allclose(hurst_from_dfa(np.array([0.3, 0.8])), [0.3, 0.8])
    with pytest.raises(ValueError, match="signal: must be 'fgn'"):
        hurst_from_dfa(0.5, signal="pink")
    # NumPy in, NumPy out with the input's float dtype (float32 came back as float64).
    h32 = hurst_from_dfa(np.array([1.5, 1.7], dtype=np.float32), signal="fbm")
    assert h32.dtype == np.float32 and np.allclose(h32, [0.5, 0.7])
    assert float(dfa_alpha(GOOD[:256]).item()) == pytest.approx(0.5, abs=0.2)  # 3 default octaves at T = 256


def test_zero_fluctuation_segments_raise_or_leave_the_negative_moments():
    # A square wave of half-period 16 has a piecewise-linear profile: every segment of 16 (aligned)
    # is exactly detrended, F(16) = 0 and log F(16) is undefined. It used to come back as
    # sqrt(float tiny) = 1e-154, i.e. alpha = 256.6 (nested order-1 path) or 12.7 (order 2).
    square = torch.tensor([1.0] * 16 + [-1.0] * 16, dtype=torch.float64).repeat(64)
    for order in (1, 2):
        with pytest.raises(ValueError, match="every segment of length 16"):
            dfa_alpha(square, [16, 32, 64], order=order)
    # A flat stretch makes some segments exactly polynomial: their F^q is infinite for q <= 0 (h(-5)
    # came back as -48). Those moments leave such segments out; q > 0 moments keep them (a zero adds
    # 0). Checked against a NumPy MFDFA with the same rule.
    x = torch.randn(2048, dtype=torch.float64, generator=gen(14))
    x[512:1024] = 0.0
    q, scales = [-5.0, -2.0, 0.0, 1.0, 3.0], [16, 32, 64, 128]
    xn = x.numpy()
    profile = np.cumsum(xn - xn.mean())
    for order in (1, 2):
        want = np.empty((len(q), len(scales)))
        for j, s in enumerate(scales):
            segs = profile.reshape(-1, s)
            t = np.arange(s)
            f2 = np.array([np.mean((seg - np.polyval(np.polyfit(t, seg, order), t)) ** 2) for seg in segs])
            live = f2 > 1e-20 * f2.max()
            assert 0 < (~live).sum() < live.size  # the flat stretch is exactly detrended, the rest not
            for i, qi in enumerate(q):
                if qi == 0:
                    want[i, j] = np.exp(0.5 * np.mean(np.log(f2[live])))
                else:
                    used = f2[live] if qi < 0 else np.where(live, f2, 0.0)
                    want[i, j] = np.mean(used ** (qi / 2)) ** (1 / qi)
        fq, _ = fluctuation_functions(x, q, scales, order=order)
        np.testing.assert_allclose(fq.numpy(), want, rtol=1e-7)
        h = multifractal_spectrum(x, q, scales=scales, order=order)["h"]
        assert bool(((h > 0.3) & (h < 0.8)).all()), h


GOOD = torch.randn(512, dtype=torch.float64, generator=gen(10))


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: dfa_alpha(torch.tensor(1.0)), "0-dim"),
        (lambda: dfa_alpha(torch.cat([GOOD[:-1], torch.tensor([float("nan")], dtype=torch.float64)])), "NaN or inf"),
        (lambda: dfa_alpha(torch.ones(2, 512)), "constant"),
        (lambda: dfa_alpha(GOOD[:100]), "too short for the default windows"),
        (lambda: dfa_alpha(GOOD[:200]), "T=200 is too short .* needs T >= 256"),
        (lambda: dfa_alpha(GOOD, windows=[16]), "at least 2 window sizes"),
        (lambda: dfa_alpha(GOOD, windows=[16, 1024]), r"integer in \[3, T=512\]"),
        (lambda: dfa_alpha(GOOD, windows=[2, 16]), r"integer in \[3, T=512\]"),
        (lambda: dfa_alpha(GOOD, windows=[16, 16.5]), "windows: every size"),
        (lambda: dfa_alpha(GOOD, windows=[16, 16]), "distinct"),
        (lambda: dfa_alpha(GOOD, order=-1), "order: needs an integer >= 0"),
        (lambda: dfa_alpha(GOOD, order=1.5), "order: needs an integer >= 0"),
        (lambda: multifractal_spectrum(GOOD, [1.0, 2.0]), "q_vals: needs at least 3"),
        (lambda: multifractal_spectrum(GOOD, [2.0, 1.0, 3.0]), "strictly increasing"),
        (lambda: multifractal_spectrum(GOOD, [1.0, float("nan"), 3.0]), "q_vals: needs at least 3 finite"),
        (lambda: multifractal_spectrum(GOOD, scales=[8]), "scales: needs at least 2"),
    ],
)
def test_bad_input_raises(call, match):
    with pytest.raises(ValueError, match=match):
        call()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_gives_cpu_numbers():
    x = S.fgn(4096, 0.7, n_series=4, generator=gen(11))
    for dtype, tol in ((torch.float64, 1e-10), (torch.float32, 1e-4)):
        xc = x.to(dtype)
        torch.testing.assert_close(dfa_alpha(xc.cuda()).cpu(), dfa_alpha(xc), atol=tol, rtol=0)
        a, b = multifractal_spectrum(xc.cuda()), multifractal_spectrum(xc)
        torch.testing.assert_close(a["h"].cpu(), b["h"], atol=tol, rtol=0)
    previous = torch.backends.cuda.matmul.allow_tf32
    try:  # TF32 matmuls must not leak into the fluctuation energies
        torch.backends.cuda.matmul.allow_tf32 = True
        xf = x.float()
        torch.testing.assert_close(dfa_alpha(xf.cuda()).cpu(), dfa_alpha(xf), atol=1e-4, rtol=0)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = previous
