"""Numerical robustness of the fractal estimators, priors and probes (review round 5).

Scale-free estimates must not move (or overflow) when a series is multiplied by a constant or
shifted by a large offset in float32; results must not depend on the input's precision beyond
rounding; empty batches raise like every other estimator.
"""
import numpy as np
import pytest
import torch

from fractals import metrics as fm
from fractals import probes
from fractals.priors import FractalPriors
from fractals.regularizers import l_graph_fd, l_spec_1overf, latent_beta, soft_graph_dimension

FS = 1000.0


def _series(shape, seed=0):
    """Red-ish noise (white plus a weak random walk), float64, time last."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=torch.float64).cumsum(-1) * 0.05 + torch.randn(
        *shape, generator=g, dtype=torch.float64)


def _latents(seed=0):
    """(B, T, C) latents with one correlated channel pair, float64."""
    x = _series((2, 6, 1024), seed).transpose(1, 2).contiguous()
    x[..., 3] += x[..., 1]
    return x


# ----------------------------------------------------------------------------- spectral beta
@pytest.mark.parametrize("factor", [1e-30, 1e19, 1e30])
def test_spectral_beta_float32_is_scale_free(factor):
    # float32 |x| >= 1e19 overflowed the PSD (beta NaN); |x| <= 1e-20 underflowed it (ValueError "zero power").
    x = _series((3, 2048)).float()
    ref = fm.spectral_beta(x, FS, return_fit=True)
    fit = fm.spectral_beta(x * factor, FS, return_fit=True)
    torch.testing.assert_close(fit.beta, ref.beta, atol=1e-5, rtol=0)
    torch.testing.assert_close(fit.r2, ref.r2, atol=1e-5, rtol=0)
    # The offset (log10 power at 1 Hz) carries the scale: 2 log10(factor).
    torch.testing.assert_close(fit.offset.double() - 2 * np.log10(factor), ref.offset.double(), atol=1e-4, rtol=0)


def test_spectral_beta_float64_extreme_scale():
    x = _series((2, 2048))
    ref = fm.spectral_beta(x, FS)
    torch.testing.assert_close(fm.spectral_beta(x * 1e300, FS), ref, atol=1e-12, rtol=0)


def test_windowed_spectral_beta_float32_offset_matches_float64():
    # x + 1e6 in float32: the float32 segment means kept ~0.1 of the offset, leaking into the lowest
    # bins (windowed beta off by up to 0.05 from the same values in float64).
    x = (_series((3, 2048), seed=3).float() + 1e6)
    b32 = fm.windowed_spectral_beta(x, fs=FS)
    b64 = fm.windowed_spectral_beta(x.double(), fs=FS)
    torch.testing.assert_close(b32.double(), b64, atol=1e-4, rtol=0)


# ----------------------------------------------------------------------------- connectivity
@pytest.mark.parametrize("method", ["pearson", "partial"])
@pytest.mark.parametrize("factor", [1e-30, 1e19])
def test_fc_float32_is_scale_free(method, factor):
    # float32 |x| >= 1e19: the Gram matrix overflowed, r was NaN and every edge silently vanished
    # (partial: a false "singular" error); |x| <= 1e-20 underflowed it.
    lat = _latents().float()
    ref = fm.functional_connectivity_latents(lat, method, thresh=0.0, weighted=True)
    out = fm.functional_connectivity_latents(lat * factor, method, thresh=0.0, weighted=True)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)


def test_fc_float32_offset_matches_float64():
    lat = _latents().float() + 1e6
    r32 = fm.functional_connectivity_latents(lat, thresh=0.0, weighted=True)
    r64 = fm.functional_connectivity_latents(lat.double(), thresh=0.0, weighted=True)
    torch.testing.assert_close(r32.double(), r64, atol=1e-5, rtol=0)


def test_fc_partial_float32_ill_conditioned_matches_float64():
    # Two nearly collinear channels (cond(R) ~ 3e6): the float32 inverse amplified the rounding of r
    # and partial correlations were off by 0.02 (edges near the threshold flip).
    g = torch.Generator().manual_seed(0)
    x = torch.randn(500, 5, generator=g, dtype=torch.float64)
    x[:, 4] = x[:, 0] + 1e-3 * torch.randn(500, generator=g, dtype=torch.float64)
    r64 = fm.functional_connectivity_latents(x, "partial", thresh=0.0, weighted=True)
    r32 = fm.functional_connectivity_latents(x.float(), "partial", thresh=0.0, weighted=True)
    assert r32.dtype == torch.float32
    torch.testing.assert_close(r32.double(), r64, atol=1e-4, rtol=0)
    lat = x.float().requires_grad_(True)
    fm.functional_connectivity_latents(lat, "partial", thresh=0.0, weighted=True).sum().backward()
    assert lat.grad.dtype == torch.float32 and torch.isfinite(lat.grad).all()


def test_fc_and_powerlaw_empty_batch_raise_like_every_estimator():
    with pytest.raises(ValueError, match="latents: is empty"):
        fm.functional_connectivity_latents(torch.randn(0, 100, 5))
    with pytest.raises(ValueError, match="values: is empty"):
        fm.powerlaw_fit(np.ones((0, 50)))
    with pytest.raises(ValueError, match="x: is empty"):  # the convention they now follow
        fm.higuchi_fd(np.zeros((0, 100)))


# ----------------------------------------------------------------------------- temporal
@pytest.mark.parametrize("fn", [fm.higuchi_fd, fm.katz_fd], ids=["higuchi", "katz"])
def test_temporal_fd_float32_huge_magnitude(fn):
    # float32 |x| ~ 1e37: the summed |diffs| overflowed (Higuchi returned NaN, Katz a false
    # "never moves" error). Both FDs are scale-free.
    x = _series((3, 2048)).float()
    torch.testing.assert_close(fn(x * 1e37), fn(x), atol=1e-5, rtol=0)


@pytest.mark.parametrize("factor", [1e-300, 1e300])
def test_dfa_mfdfa_rs_float64_extreme_magnitude(factor):
    # float64 |x| ~ 1e300 (or 1e-300): the segment energies over/underflowed and every estimator
    # raised a false "exactly a polynomial" / "every segment constant" error. All three are scale-free.
    x = _series((2, 2048))
    torch.testing.assert_close(fm.dfa_alpha(x * factor), fm.dfa_alpha(x), atol=1e-10, rtol=0)
    torch.testing.assert_close(fm.hurst_rs(x * factor), fm.hurst_rs(x), atol=1e-10, rtol=0)
    mf, ref = fm.multifractal_spectrum(x * factor), fm.multifractal_spectrum(x)
    torch.testing.assert_close(mf["h"], ref["h"], atol=1e-10, rtol=0)
    torch.testing.assert_close(mf["fq"] / factor, ref["fq"], rtol=1e-10, atol=0)  # F carries the scale


def test_hurst_from_dfa_integer_bool_and_bad_input():
    # int tensors gave float32 (NumPy ints give float64), bool tensors a RuntimeError, strings or None
    # a message that did not name alpha.
    out = fm.hurst_from_dfa(torch.tensor([1, 2]), "fbm")
    assert out.dtype == torch.float64 and out.tolist() == [0.0, 1.0]
    assert fm.hurst_from_dfa(torch.tensor([True])).dtype == torch.float64
    for bad in ("abc", None):
        with pytest.raises(ValueError, match="alpha: needs real DFA exponent"):
            fm.hurst_from_dfa(bad)


# ----------------------------------------------------------------------------- priors
@pytest.mark.parametrize("factor", [1e-30, 1e19])
def test_spectral_prior_float32_is_scale_free(factor):
    # 1e19: NaN loss; 1e-30: the power fell under the floor and beta read 0 (loss off by 0.57).
    lat = _latents().float()
    torch.testing.assert_close(latent_beta(lat * factor, FS, (2.0, 80.0)), latent_beta(lat, FS, (2.0, 80.0)),
                               atol=1e-5, rtol=0)
    ref = l_spec_1overf(lat, FS, (2.0, 80.0), 1.0, 1.0)
    scaled = (lat * factor).requires_grad_(True)
    loss = l_spec_1overf(scaled, FS, (2.0, 80.0), 1.0, 1.0)
    torch.testing.assert_close(loss, ref, atol=1e-5, rtol=0)
    loss.backward()
    assert torch.isfinite(scaled.grad).all()


def test_spectral_prior_float32_offset_matches_float64():
    lat = _latents().float() + 1e6
    b32 = latent_beta(lat, FS, (2.0, 80.0))
    b64 = latent_beta(lat.double(), FS, (2.0, 80.0))
    torch.testing.assert_close(b32.double(), b64, atol=1e-4, rtol=0)


@pytest.mark.parametrize("factor", [1e-30, 1e19])
def test_graph_prior_float32_is_scale_free(factor):
    lat = _latents().float()
    torch.testing.assert_close(soft_graph_dimension(lat * factor, [1, 2, 3], 0.3),
                               soft_graph_dimension(lat, [1, 2, 3], 0.3), atol=1e-5, rtol=0)
    torch.testing.assert_close(l_graph_fd(lat * factor, [1, 2, 3], 0.3, 1.5, 1.0),
                               l_graph_fd(lat, [1, 2, 3], 0.3, 1.5, 1.0), atol=1e-5, rtol=0)


def test_graph_prior_float32_offset_matches_float64():
    # The float32 mean of an offset of 1e6 is off by ~0.03: a bias in |r| that the soft edges amplified
    # to 8e-4 in D (the same values in float64 as reference).
    for seed in (1, 3, 5):  # seeds with an |r| near the threshold (seed 3 was off by 8e-4)
        lat = _latents(seed).float() + 1e6
        d32 = soft_graph_dimension(lat, [1, 2, 3], 0.3)
        d64 = soft_graph_dimension(lat.double(), [1, 2, 3], 0.3)
        torch.testing.assert_close(d32.double(), d64, atol=1e-5, rtol=0)


def test_fractal_priors_float32_large_latents_finite():
    lat = _latents().float()
    priors = FractalPriors(lambda_spec=1.0, lambda_mf=1.0, lambda_graphfd=1.0, graph_D_target=1.5, compile=False)
    ref, _ = priors(lat)
    big = (lat * 1e19).requires_grad_(True)
    total, parts = priors(big)
    assert all(torch.isfinite(v) for v in parts.values()), parts
    torch.testing.assert_close(total, ref, atol=1e-4, rtol=0)


# ----------------------------------------------------------------------------- probes
@pytest.mark.parametrize("factor", [1e-150, 1e150])
def test_latent_fd_probe_keeps_float64(factor):
    # The probe cast latents to float32: valid float64 latents of 1e-150 read as all dead channels,
    # of 1e150 as "contains inf".
    lat = _latents()
    ref = probes.latent_fd_probe(lat, fs=FS)
    out = probes.latent_fd_probe(lat * factor, fs=FS)
    assert out.keys() == ref.keys()
    assert float(out["n_dead"]) == 0.0
    for k in ref:
        torch.testing.assert_close(out[k], ref[k], atol=1e-4, rtol=0)


def test_latent_fd_probe_float32_large_latents():
    lat = _latents().float()
    ref = probes.latent_fd_probe(lat, fs=FS)
    out = probes.latent_fd_probe(lat * 1e19, fs=FS)
    assert out.keys() == ref.keys()
    for k in ref:
        torch.testing.assert_close(out[k], ref[k], atol=1e-4, rtol=0)


# ----------------------------------------------------------------------------- bad input to priors and probes
def test_priors_reject_nonfinite_latents():
    # A NaN channel read as dead and was left out (a silently smaller loss); inf gave a finite tau.
    from fractals.regularizers import l_multifractal

    lat = _latents().float()
    for bad in (float("nan"), float("inf")):
        x = lat.clone()
        x[0, 10, 2] = bad
        for term in (lambda v: l_spec_1overf(v, FS, (2.0, 80.0), 1.0, 1.0),
                     lambda v: l_multifractal(v, [-3, -1, 0, 1, 3], [8, 16, 32, 64], 1.0),
                     lambda v: l_graph_fd(v, [1, 2, 3], 0.3, 1.5, 1.0)):
            with pytest.raises(ValueError, match="latents: contains 1 NaN or inf"):
                term(x)


def test_priors_and_probes_reject_empty_or_numpy_latents():
    priors = FractalPriors(lambda_spec=1.0, lambda_mf=1.0, lambda_graphfd=1.0, compile=False)
    lat = _latents().float()
    with pytest.raises(ValueError, match="latents: is empty"):  # was an MKL RuntimeError
        priors(lat[:0])
    with pytest.raises(ValueError, match="latents: needs a torch.Tensor"):  # was a TypeError
        priors(lat.numpy())
    with pytest.raises(ValueError, match="is empty"):  # was an IndexError
        probes.latent_fd_probe(lat[:0], fs=FS)
    with pytest.raises(ValueError, match="x: is empty"):  # was an MKL RuntimeError
        probes.causal_scale_ablation(torch.zeros(0, 1000))


def test_causal_scale_ablation_float32_huge_magnitude():
    # float32 |x| ~ 1e37: the FFT overflowed and the ablated signal came back NaN.
    x = _series((3, 1000)).float()
    ref = probes.causal_scale_ablation(x)
    out = probes.causal_scale_ablation(x * 1e37)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out / 1e37, ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("method", ["pearson", "spearman"])
def test_attention_fd_coupling_is_scale_free(method):
    # float32 FD values of 1e19 overflowed the denominator (r = 0), of 1e-30 underflowed it (r = NaN);
    # float64 FDs of 1e-150 were cast to float32 zeros (NaN).
    g = torch.Generator().manual_seed(0)
    attn = torch.softmax(torch.randn(2, 4, 8, 8, generator=g), -1)
    fd = torch.randn(2, 8, generator=g, dtype=torch.float64)
    ref = probes.attention_fd_coupling(attn, fd, method=method)
    assert torch.isfinite(ref).all()
    for scaled in (fd.float() * 1e19, fd.float() * 1e-30, fd * 1e-150, fd.float() * 1e3 + 1e6):
        out = probes.attention_fd_coupling(attn, scaled, method=method)
        tol = 1e-3 if scaled.dtype == torch.float32 and float(scaled.mean()) > 1e5 else 1e-5  # +1e6: input rounding
        torch.testing.assert_close(out, ref, atol=tol, rtol=0)


def test_welch_psd_float32_large_but_representable():
    # float32 |x| ~ 1e19: the PSD (~1e35 x^2/Hz) fits in float32, but |X(f)|^2 overflowed on the way (inf).
    x = _series((2, 2048)).float()
    _, p = fm.welch_psd(x * 1e19, FS)
    _, ref = fm.welch_psd(x, FS)
    assert torch.isfinite(p).all()
    torch.testing.assert_close(p.double() / 1e38, ref.double(), rtol=1e-5, atol=0)


@pytest.mark.parametrize("factor", [1e21, 1e-22])
def test_welch_psd_out_of_float32_range_raises(factor):
    # float32 |x| of 1e21 gave an inf PSD, of 1e-22 an all-zero one, silently.
    x = _series((2, 2048)).float()
    with pytest.raises(ValueError, match="outside the range of torch.float32; pass float64"):
        fm.welch_psd(x * factor, FS)
    f64, p64 = fm.welch_psd(x.double() * factor, FS)  # float64 holds it: same numbers, scaled
    f32, p32 = fm.welch_psd(x, FS)
    torch.testing.assert_close(p64 / factor**2, p32.double(), rtol=1e-5, atol=0)


def test_causal_scale_ablation_float32_offset():
    # x + 1e6 in float32: the FFT spread the offset's rounding over every bin and the removed band
    # (x - ablated) was off by 0.33 from the same values in float64; now by the output's rounding
    # (half an ulp of 1e6 = 0.031).
    x = _series((3, 1000), seed=2).float() + 1e6
    band32 = x - probes.causal_scale_ablation(x)
    band64 = x.double() - probes.causal_scale_ablation(x.double())
    torch.testing.assert_close(band32.double(), band64, atol=0.04, rtol=0)


def test_probe_argument_checks():
    lat = _latents().float()
    with pytest.raises(ValueError, match="max_channels: needs an integer >= 1"):  # -1 dropped the last channel
        probes.latent_fd_probe(lat, fs=FS, max_channels=-1)
    with pytest.raises(ValueError, match=r"labels: NaN at sample\(s\) \[1\]"):  # was an IndexError
        probes.fc_fd_probe(lat, thresh=0.1, labels=[0.0, np.float32("nan")])
    with pytest.raises(ValueError, match="attn_weights: is empty"):  # was a silent NaN per head
        probes.attention_fd_coupling(torch.ones(0, 1, 1, 1), torch.ones(0, 1))


# ----------------------------------------------------------------------------- every scale-free estimator
SCALE_FREE = {
    "higuchi_fd": fm.higuchi_fd,
    "katz_fd": fm.katz_fd,
    "hurst_rs": fm.hurst_rs,
    "dfa_alpha": fm.dfa_alpha,
    "mf_h": lambda x: fm.multifractal_spectrum(x)["h"],
    "spectral_beta": lambda x: fm.spectral_beta(x, FS),
    "fc_pearson": lambda x: fm.functional_connectivity_latents(x.transpose(-1, -2), thresh=0.0, weighted=True),
    "fc_partial": lambda x: fm.functional_connectivity_latents(x.transpose(-1, -2), "partial", thresh=0.0,
                                                               weighted=True),
    "windowed_higuchi_fd": lambda x: fm.windowed_higuchi_fd(x, 1024, 512),
    "windowed_spectral_beta": lambda x: fm.windowed_spectral_beta(x, 1024, 512, fs=FS),
}


@pytest.mark.parametrize("name", sorted(SCALE_FREE))
def test_scale_free_estimates_do_not_move_with_scale_or_offset(name):
    fn = SCALE_FREE[name]
    x64 = _series((3, 2048), seed=5)
    x32 = x64.float()
    ref32, ref64 = fn(x32), fn(x64)
    for factor in (1e-12, 1e6, 1e19):
        torch.testing.assert_close(fn(x32 * factor), ref32, atol=1e-4, rtol=0, msg=f"{name}: float32 x {factor:g}")
    for factor in (1e-150, 1e150):
        torch.testing.assert_close(fn(x64 * factor), ref64, atol=1e-9, rtol=0, msg=f"{name}: float64 x {factor:g}")
    shifted = x32 + 1e6  # float32 rounds the data to 1/16; the estimate must match those values in float64
    torch.testing.assert_close(fn(shifted).double(), fn(shifted.double()), atol=1e-4, rtol=0,
                               msg=f"{name}: float32 + 1e6 vs the same values in float64")


def test_fit_fractional_ou_float64_tiny_magnitude():
    # float64 |x| ~ 1e-150: the periodogram fell below the smallest double and was clamped there, so
    # H came out off by 0.34 with no warning. H and theta are scale-free, sigma scales with x.
    from fractals.simulators import fit_fractional_ou, fractional_ou

    x = fractional_ou(2048, H=0.7, theta=2 * np.pi * 20, sigma=1.0, fs=FS, batch_shape=(2,),
                      generator=torch.Generator().manual_seed(0))
    ref = fit_fractional_ou(x, FS, steps=30)
    with pytest.raises(ValueError, match="x: is empty"):  # was an MKL RuntimeError
        fit_fractional_ou(x[:0], FS)
    for factor in (1e-150, 1e150):
        fit = fit_fractional_ou(x * factor, FS, steps=30)
        torch.testing.assert_close(fit.H, ref.H, atol=1e-9, rtol=0)
        torch.testing.assert_close(fit.theta, ref.theta, rtol=1e-9, atol=0)
        torch.testing.assert_close(fit.sigma / factor, ref.sigma, rtol=1e-9, atol=0)
