"""Metamorphic review of the fractals package: relations that must hold between calls.

Batch versus per-series results, affine invariance of scale-free estimators (EEG-sized 1e-6 and
huge 1e6 scales, negative gains), float32 versus float64, strided / transposed / expanded input,
NumPy versus torch, time_dim versus moving the axis, windowed versus manual windows, channel and
node relabelling, seeded generators, and the same checks on real recordings.
"""
import math

import numpy as np
import pytest
import torch

from fractals.criticality_indicators import singular_value_exponent


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


# ----------------------------------------------------------------------------- singular value exponent
def test_singular_value_exponent_ignores_the_zero_singular_values_of_a_dead_unit():
    # A zero column (a dead input unit) adds an exactly zero singular value: it lies beyond the rank r
    # the power law runs over. It was clamped to the smallest float and dominated the fit: a random
    # 32 x 24 Gaussian layer read 0.81, with one dead unit 7.5 in float32 and 54.9 in float64, and
    # the value changed with the layer's scale.
    w = torch.randn(32, 24, generator=_gen(), dtype=torch.float64)
    w[:, 0] = 0.0
    live = singular_value_exponent(w[:, 1:])
    for variant in (w, w.float(), 10 * w, 1e-3 * w.float(), w.T):
        assert float(singular_value_exponent(variant)) == pytest.approx(float(live), abs=1e-4)


def test_singular_value_exponent_of_a_low_rank_layer_is_a_clear_error():
    w = torch.randn(32, 3, generator=_gen(1)) @ torch.randn(3, 24, generator=_gen(2))  # rank 3
    with pytest.raises(ValueError, match="rank"):
        singular_value_exponent(w)


def test_singular_value_exponent_batch_equals_per_matrix_with_mixed_ranks():
    w = torch.randn(3, 16, 12, generator=_gen(3), dtype=torch.float64)
    w[1, :, :2] = 0.0  # rank 10 beside two full-rank matrices
    batch = singular_value_exponent(w)
    per = torch.stack([singular_value_exponent(m) for m in w])
    torch.testing.assert_close(batch, per, rtol=0, atol=1e-12)
    torch.testing.assert_close(batch[1], singular_value_exponent(w[1, :, 2:]), rtol=0, atol=1e-12)


# ----------------------------------------------------------------------------- NumPy views
def test_attention_fd_coupling_takes_flipped_numpy_views():
    # np.flip / [::-1] views have negative strides: torch.as_tensor refused them ("At least one stride in
    # the given numpy array is negative"), so reversing the key order crashed instead of permuting.
    from fractals.probes import attention_fd_coupling

    rng = np.random.default_rng(0)
    attn, fd = rng.random((2, 3, 4, 8, 8)), rng.random((3, 8))
    ref = attention_fd_coupling(attn, fd)
    torch.testing.assert_close(attention_fd_coupling(attn[..., ::-1], fd[:, ::-1]), ref)
    torch.testing.assert_close(attention_fd_coupling([a[..., ::-1] for a in attn], fd[:, ::-1]), ref)


def test_spectrum_helpers_take_reversed_numpy_frequencies():
    from fractals.simulators import fou_log_spectrum
    from fractals.stimuli import one_over_f_psd

    f = np.linspace(1.0, 40.0, 40)
    np.testing.assert_allclose(one_over_f_psd(f[::-1], 1.2, [(10.0, 2.0, 3.0)]),
                               one_over_f_psd(f, 1.2, [(10.0, 2.0, 3.0)])[::-1])
    torch.testing.assert_close(fou_log_spectrum(f[::-1], np.array([0.7, 0.8])[::-1], 3.0, 1.0),
                               fou_log_spectrum(f, np.array([0.8, 0.7]), 3.0, 1.0).flip(-1))


def test_fou_log_spectrum_keeps_zero_dim_numpy_parameters_scalar():
    from fractals.simulators import fou_log_spectrum

    f = np.linspace(1.0, 40.0, 40)
    assert fou_log_spectrum(f, np.array(0.7), np.array(3.0), np.array(1.0)).shape == (40,)


# ----------------------------------------------------------------------------- temporal / DFA / spectral
def _walks(shape, seed=0):
    g = _gen(seed)
    return torch.randn(*shape, generator=g, dtype=torch.float64).cumsum(-1) * 0.3 + torch.randn(
        *shape, generator=g, dtype=torch.float64)


def _estimators():
    from fractals import metrics as fm

    return {
        "higuchi_fd": fm.higuchi_fd,
        "katz_fd": fm.katz_fd,
        "hurst_rs": fm.hurst_rs,
        "dfa_alpha": fm.dfa_alpha,
        "dfa_alpha_order2_uneven": lambda v: fm.dfa_alpha(v, windows=[10, 23, 50, 111], order=2),
        "spectral_beta": lambda v: fm.spectral_beta(v, 250.0),
        "mf_h": lambda v: fm.multifractal_spectrum(v)["h"],
    }


@pytest.mark.parametrize("name", list(_estimators()))
def test_batch_result_is_the_stack_of_per_series_results(name):
    fn = _estimators()[name]
    x = _walks((2, 3, 1024))
    full = fn(x)
    per = torch.stack([fn(x[i, j]) for i in range(2) for j in range(3)]).reshape(full.shape)
    one = torch.stack([fn(x[i:i + 1, j:j + 1])[0, 0] for i in range(2) for j in range(3)]).reshape(full.shape)
    torch.testing.assert_close(full, per, rtol=0, atol=1e-12)
    torch.testing.assert_close(full, one, rtol=0, atol=1e-12)
    # what else is in the batch does not matter
    other = torch.cat([x[:1, :1], _walks((1, 1, 1024), seed=9) * 1e4], 1)
    torch.testing.assert_close(fn(other)[0, 0], full[0, 0], rtol=0, atol=1e-12)


@pytest.mark.parametrize("name", list(_estimators()))
def test_scale_free_estimators_are_affine_invariant(name):
    fn = _estimators()[name]
    x = _walks((2, 1024), seed=1)
    ref = fn(x)
    for a, b in [(2.5, 3.0), (-1.7, 10.0), (1e-6, 0.0), (-1e-6, 1e-6), (1e6, -5.0)]:
        torch.testing.assert_close(fn(a * x + b), ref, rtol=0, atol=1e-7, msg=f"a={a} b={b}")
    for scale in (1e-6, 1e-12, 1e6):  # EEG in volts, and beyond, in float32
        torch.testing.assert_close(fn((x * scale).float()).double(), ref, rtol=0, atol=3e-3, msg=f"float32 {scale}")


@pytest.mark.parametrize("name", list(_estimators()))
def test_layouts_and_kinds_give_the_same_numbers(name):
    fn = _estimators()[name]
    x = _walks((3, 4, 1024), seed=2)
    ref = fn(x)
    strided = torch.zeros(3, 4, 2048, dtype=torch.float64)
    strided[..., ::2] = x
    torch.testing.assert_close(fn(strided[..., ::2]), ref, rtol=0, atol=1e-12)
    torch.testing.assert_close(fn(x.transpose(-1, -2).contiguous().transpose(-1, -2)), ref, rtol=0, atol=1e-12)
    torch.testing.assert_close(fn(x.transpose(0, 1).contiguous().transpose(0, 1)), ref, rtol=0, atol=1e-12)
    torch.testing.assert_close(fn(x[:1, :1].expand(3, 4, 1024)), ref[:1, :1].expand(ref.shape), rtol=0, atol=1e-12)
    np.testing.assert_allclose(fn(x.numpy()), ref.numpy(), rtol=0, atol=1e-12)
    np.testing.assert_allclose(fn(x.numpy()[..., ::-1][..., ::-1]), ref.numpy(), rtol=0, atol=1e-12)
    np.testing.assert_allclose(fn(np.asfortranarray(x.numpy())), ref.numpy(), rtol=0, atol=1e-12)
    grad = fn(x.clone().requires_grad_(True)).detach()
    torch.testing.assert_close(grad, ref, rtol=0, atol=1e-12)


def test_mfdfa_h_at_q2_is_the_dfa_exponent_and_its_fluctuations():
    from fractals.metrics import dfa_alpha, fluctuation_functions, multifractal_spectrum

    x = torch.randn(2, 1500, generator=_gen(3), dtype=torch.float64)
    for scales, order in (([16, 32, 64, 128], 1), ([10, 25, 60, 150], 1), ([16, 32, 64, 128], 2)):
        spec = multifractal_spectrum(x, q_vals=(-2.5, 0.0, 2.0, 3.0), scales=scales, order=order)
        alpha, fit = dfa_alpha(x, windows=scales, order=order, return_fit=True)
        torch.testing.assert_close(spec["h"][..., 2], alpha, rtol=0, atol=1e-12)
        torch.testing.assert_close(spec["fq"][..., 2, :], fit["fluct"], rtol=1e-12, atol=0)
        fq, _ = fluctuation_functions(x, q_vals=(-2.5, 0.0, 2.0, 3.0), scales=scales, order=order)
        torch.testing.assert_close(fq, spec["fq"], rtol=1e-12, atol=0)


def test_spectral_beta_is_unchanged_when_fs_and_band_scale_together():
    from fractals.metrics import spectral_beta
    from fractals.stimuli import one_over_f_noise

    x = one_over_f_noise(4096, 1.5, fs=250.0, peaks=[(10.0, 1.5, 4.0)], n_series=3, generator=_gen(4))
    a = spectral_beta(x, 250.0, (2.0, 80.0), return_fit=True)
    b = spectral_beta(x, 500.0, (4.0, 160.0), return_fit=True)
    torch.testing.assert_close(a.beta, b.beta, rtol=0, atol=1e-12)
    torch.testing.assert_close(2 * a.peak_freq, b.peak_freq)
    assert torch.equal(a.mask, b.mask)


# ----------------------------------------------------------------------------- windowed
@pytest.mark.parametrize("name", ["higuchi_fd", "katz_fd", "hurst_rs", "dfa_alpha", "spectral_beta"])
@pytest.mark.parametrize("window,hop,n", [(256, 64, 256), (256, 64, 256 + 63), (256, 64, 320), (300, 100, 1100),
                                          (256, 1000, 1100)])
def test_windowed_equals_the_estimator_on_each_manual_window(name, window, hop, n):
    from fractals import metrics as fm

    kw = {"fs": 250.0} if name == "spectral_beta" else {}
    x = _walks((2, 3, n), seed=5)
    out = fm.windowed(name, x, window, hop, **kw)
    n_windows = (n - window) // hop + 1
    assert out.shape == (2, 3, n_windows)
    manual = torch.stack([getattr(fm, name)(x[..., i * hop:i * hop + window], **kw) for i in range(n_windows)], -1)
    torch.testing.assert_close(out, manual, rtol=0, atol=1e-12)


def test_windowed_blocks_of_series_equal_one_call(monkeypatch):
    import fractals.windowed as fw
    from fractals.metrics import spectral_beta, windowed

    x = _walks((12, 800), seed=6)
    whole = windowed(spectral_beta, x, 512, 96, fs=250.0, return_fit=True)
    monkeypatch.setattr(fw, "FRAME_BLOCK_BYTES", 1 << 14)  # a few series per block
    blocks = windowed(spectral_beta, x, 512, 96, fs=250.0, return_fit=True)
    for field in ("beta", "offset", "mask", "peak_freq", "freqs"):
        torch.testing.assert_close(getattr(blocks, field), getattr(whole, field), rtol=0, atol=1e-12)


# ----------------------------------------------------------------------------- graphs
def test_functional_connectivity_is_symmetric_and_permutes_with_channels():
    from fractals.metrics import functional_connectivity_latents as fc

    x = torch.randn(2, 400, 10, generator=_gen(7), dtype=torch.float64)
    x = x + 0.8 * x.roll(1, -1)
    perm = torch.randperm(10, generator=_gen(8))
    for method in ("pearson", "partial"):
        r = fc(x, method=method, thresh=0.0, weighted=True)
        torch.testing.assert_close(r, r.transpose(-1, -2), rtol=0, atol=0)
        assert bool((r.diagonal(dim1=-2, dim2=-1) == 0).all())
        torch.testing.assert_close(fc(x[..., perm], method=method, thresh=0.0, weighted=True), r[:, perm][:, :, perm])
        torch.testing.assert_close(fc(x[1], method=method, thresh=0.0, weighted=True), r[1])
        flipped = x * torch.tensor([-1.0] * 5 + [1.0] * 5, dtype=torch.float64) * 1e-6 + 3.0
        torch.testing.assert_close(fc(flipped, method=method, thresh=0.0, weighted=True), r, rtol=0, atol=1e-9)
        torch.testing.assert_close(fc(x.float(), method=method, thresh=0.0, weighted=True).double(), r,
                                   rtol=0, atol=1e-5)


def _lattice(rows, cols):
    n = rows * cols
    a = torch.zeros(n, n)
    for i in range(rows):
        for j in range(cols):
            k = i * cols + j
            if i + 1 < rows:
                a[k, k + cols] = a[k + cols, k] = 1
            if j + 1 < cols:
                a[k, k + 1] = a[k + 1, k] = 1
    return a


def test_graph_fd_ignores_isolated_nodes_batch_mates_and_adjacency_dtype():
    from fractals.metrics import graph_fractal_dim

    a = _lattice(6, 8)  # 48 nodes, padded to 60: dense BFS distances
    big = _lattice(9, 9)  # 81 nodes: SciPy Dijkstra distances
    for g, eps in ((a, None), (a, [1, 2, 3, 4, 5, 6]), (big, [1, 2, 3, 4, 5, 6])):
        n = g.shape[0]
        ref = graph_fractal_dim(g, eps)
        padded = torch.zeros(n + 12, n + 12)
        padded[12:, 12:] = g
        padded[0, 1] = padded[1, 0] = 1  # a small extra component, left out by components="largest"
        torch.testing.assert_close(graph_fractal_dim(padded, eps), ref)
        for variant in (g.bool(), g.long(), 0.5 * g.double(), g.numpy()):
            assert float(graph_fractal_dim(variant, eps)) == pytest.approx(float(ref), abs=1e-6)
    pair = torch.stack([_lattice(8, 8), _lattice(4, 16)])
    both = graph_fractal_dim(pair)
    torch.testing.assert_close(both, torch.stack([graph_fractal_dim(pair[0]), graph_fractal_dim(pair[1])]))


# ----------------------------------------------------------------------------- generators
def test_seeded_generators_repeat_and_keep_shape_dtype_and_scale():
    from fractals.simulators import fractional_ou
    from fractals.stimuli import (cascade_multifractal, diamond_square, fbm_series, fgn, midpoint_displacement,
                                  one_over_f_noise, one_over_f_texture)

    makers = {
        "fgn": lambda **k: fgn(1000, 0.7, **k),
        "fbm": lambda **k: fbm_series(1000, H=0.3, **k),
        "one_over_f": lambda **k: one_over_f_noise(1001, 1.0, fs=250.0, peaks=[(10.0, 1.0, 3.0)], **k),
        "cascade": lambda **k: cascade_multifractal(1000, p=0.7, **k),
        "texture": lambda **k: one_over_f_texture((16, 20), 2.0, **k),
        "diamond_square": lambda **k: diamond_square(9, 0.5, **k),
        "midpoint": lambda **k: midpoint_displacement(6, 0.5, **k),
        "fou": lambda **k: fractional_ou(1000, 0.7, 5.0, 1.0, 250.0, **k),
    }
    for name, make in makers.items():
        a = make(generator=_gen(1))
        assert torch.equal(a, make(generator=_gen(1))), name
        assert not torch.equal(a, make(generator=_gen(2))), name
        assert a.dtype == torch.float64
        a32 = make(generator=_gen(1), dtype=torch.float32)
        assert a32.dtype == torch.float32
        torch.testing.assert_close(a32.double(), a, rtol=1e-6, atol=1e-6 * float(a.abs().max()), msg=name)
        batch = make(generator=_gen(1), batch_shape=(2, 3))
        assert batch.shape == (2, 3, *a.shape), name
        torch.testing.assert_close(make(generator=_gen(1), batch_shape=(1,))[0], a, msg=name)
    torch.testing.assert_close(fgn(500, 0.7, sigma=2.5, generator=_gen(3)), 2.5 * fgn(500, 0.7, generator=_gen(3)))
    torch.testing.assert_close(fbm_series(500, H=0.7, generator=_gen(3)), fgn(500, 0.7, generator=_gen(3)).cumsum(-1))
    # the aperiodic shape does not depend on the sampling rate; peaks scale with it
    torch.testing.assert_close(one_over_f_noise(999, 1.3, fs=250.0, peaks=[(10, 1, 3)], generator=_gen(4)),
                               one_over_f_noise(999, 1.3, fs=1000.0, peaks=[(40, 4, 3)], generator=_gen(4)))
    full = cascade_multifractal(depth=10, p=0.7, n_series=3, generator=_gen(5))
    torch.testing.assert_close(full.sum(-1), torch.ones(3, dtype=torch.float64))
    torch.testing.assert_close(cascade_multifractal(1000, p=0.7, n_series=3, generator=_gen(5)), full[..., :1000])
    torch.testing.assert_close(fractional_ou(800, 0.7, 3.0, 2.0, 250.0, seed=6),
                               2.0 * fractional_ou(800, 0.7, 3.0, 1.0, 250.0, seed=6))


def test_generated_parameters_are_recovered():
    from fractals.metrics import dfa_alpha, higuchi_fd, spectral_beta
    from fractals.stimuli import fbm_series, fgn, one_over_f_noise

    h = dfa_alpha(fgn(8192, 0.7, n_series=8, generator=_gen(7))).mean()
    assert float(h) == pytest.approx(0.7, abs=0.05)
    fd = higuchi_fd(fbm_series(8192, H=0.3, n_series=8, generator=_gen(8))).mean()
    assert float(fd) == pytest.approx(1.7, abs=0.05)
    beta = spectral_beta(one_over_f_noise(8192, 1.5, fs=1000.0, n_series=8, generator=_gen(9)), 1000.0).mean()
    assert float(beta) == pytest.approx(1.5, abs=0.1)


def test_fractional_ou_fit_is_batch_independent_and_affine_equivariant():
    from fractals.simulators import fit_fractional_ou, fractional_ou

    y = fractional_ou(2048, torch.tensor([0.3, 0.7, 0.85], dtype=torch.float64), 30.0, 1.0, 250.0, seed=7)
    fit = fit_fractional_ou(y, 250.0, freq_band=(1.0, 100.0), steps=40)
    one = fit_fractional_ou(y[1], 250.0, freq_band=(1.0, 100.0), steps=40)
    torch.testing.assert_close(fit.H[1], one.H, rtol=0, atol=1e-12)
    torch.testing.assert_close(fit.theta[1], one.theta, rtol=1e-12, atol=0)
    moved = fit_fractional_ou(-3e-6 * y + 7e-3, 250.0, freq_band=(1.0, 100.0), steps=40)
    torch.testing.assert_close(moved.H, fit.H, rtol=0, atol=1e-9)
    torch.testing.assert_close(moved.theta, fit.theta, rtol=1e-8, atol=0)
    torch.testing.assert_close(moved.sigma, 3e-6 * fit.sigma, rtol=1e-8, atol=0)
    faster = fit_fractional_ou(y, 500.0, freq_band=(2.0, 200.0), steps=40)  # time in half-seconds
    torch.testing.assert_close(faster.H, fit.H, rtol=0, atol=1e-9)
    torch.testing.assert_close(faster.theta, 2 * fit.theta, rtol=1e-8, atol=0)


# ----------------------------------------------------------------------------- time_dim and probes
def test_time_dim_equals_moving_the_axis_yourself():
    from fractals.probes import fc_fd_probe, latent_fd_probe
    from fractals.regularizers import latent_beta, latent_tau, soft_graph_dimension
    from fractals.stimuli import one_over_f_noise

    bct = one_over_f_noise(1024, 1.0, fs=250.0, batch_shape=(3, 5), generator=_gen(10))  # (B, C, T)
    btc = bct.transpose(1, 2).contiguous()
    ref = latent_fd_probe(btc, fs=250.0)
    assert {"higuchi_fd_mean", "spectral_beta_mean", "hurst_mean", "mf_width_mean"} <= set(ref)
    for variant, td in ((bct, 2), (bct, -1), (btc.permute(1, 0, 2), 0), (bct.transpose(1, 2), 1),
                        (btc[..., torch.randperm(5, generator=_gen(11))], 1), (btc * 1e-6 + 3.0, 1)):
        got = latent_fd_probe(variant, fs=250.0, time_dim=td)
        assert set(got) == set(ref)
        for k in ref:
            assert float(got[k]) == pytest.approx(float(ref[k]), abs=1e-5), k
    for fn in (lambda v, **k: latent_beta(v, 250.0, (2.0, 80.0), **k),
               lambda v, **k: latent_tau(v, [-2.0, 0.0, 2.0], [8, 16, 32, 64], **k),
               lambda v, **k: soft_graph_dimension(v, [1, 2, 3], 0.05, **k)):
        out = fn(btc)
        torch.testing.assert_close(fn(bct, time_dim=-1), out)
        torch.testing.assert_close(fn(bct, time_dim=2), out)
        torch.testing.assert_close(fn(btc.float()).double(), out, rtol=0, atol=1e-5)
    lat = torch.randn(4, 300, 12, generator=_gen(12), dtype=torch.float64)
    lat = lat + 0.9 * lat.roll(1, -1)
    fd = fc_fd_probe(lat, thresh=0.2)["graph_fd"]
    torch.testing.assert_close(fc_fd_probe(lat.transpose(1, 2), thresh=0.2, time_dim=2)["graph_fd"], fd)
    torch.testing.assert_close(fc_fd_probe(lat.permute(1, 0, 2), thresh=0.2, time_dim=0)["graph_fd"], fd)
    torch.testing.assert_close(fc_fd_probe(lat[1:2], thresh=0.2)["graph_fd"], fd[1:2])


def test_causal_scale_ablation_dim_batch_affine_and_idempotence():
    from fractals.probes import causal_scale_ablation

    y = torch.randn(2, 3, 1000, generator=_gen(13), dtype=torch.float64)
    out = causal_scale_ablation(y, fs=250.0, band=(2, 80))
    torch.testing.assert_close(causal_scale_ablation(y.transpose(1, 2), fs=250.0, band=(2, 80), dim=1).transpose(1, 2),
                               out)
    torch.testing.assert_close(causal_scale_ablation(y[1, 2], fs=250.0, band=(2, 80)), out[1, 2])
    torch.testing.assert_close(causal_scale_ablation(3 * y + 1e3, fs=250.0, band=(2, 80)), 3 * out + 1e3)
    torch.testing.assert_close(causal_scale_ablation(out, fs=250.0, band=(2, 80)), out)
    phase = causal_scale_ablation(y, fs=250.0, band=(2, 80), replace="phase", generator=_gen(14))
    torch.testing.assert_close(causal_scale_ablation(y, fs=250.0, band=(2, 80), replace="phase", generator=_gen(14)),
                               phase)
    torch.testing.assert_close(torch.fft.rfft(phase).abs(), torch.fft.rfft(y).abs())


def test_attention_fd_coupling_relabelling():
    from fractals.probes import attention_fd_coupling

    g = _gen(15)
    attn = torch.softmax(torch.randn(2, 3, 4, 8, 8, generator=g), -1)
    fd = torch.randn(3, 8, generator=g)
    r = attention_fd_coupling(attn, fd)
    keys, batch = torch.randperm(8, generator=g), torch.randperm(3, generator=g)
    torch.testing.assert_close(attention_fd_coupling(attn[..., keys], fd[:, keys]), r)
    torch.testing.assert_close(attention_fd_coupling(attn[:, batch], fd[batch]), r)
    torch.testing.assert_close(attention_fd_coupling(attn[:, :, [2, 0, 1, 3]], fd), r[:, [2, 0, 1, 3]])
    torch.testing.assert_close(attention_fd_coupling([attn[0], attn[1]], fd), r)
    torch.testing.assert_close(attention_fd_coupling(attn, 2 * fd + 5), r, rtol=0, atol=1e-6)
    torch.testing.assert_close(attention_fd_coupling(attn, -fd), -r)


# ----------------------------------------------------------------------------- fingerprint on real recordings
@pytest.mark.realdata
def test_fingerprint_of_real_eeg_follows_channel_order_dtype_kind_and_units(shared_data):
    mne = pytest.importorskip("mne", reason="reading EDF needs mne")
    from fractals.fingerprint import fingerprint

    path = shared_data / "eegmat-dev" / "sub-01" / "eeg" / "sub-01_task-arithmetic_eeg.edf"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    raw = mne.io.read_raw_edf(path, preload=True, verbose="ERROR")
    x, names = raw.get_data()[:, :250 * 4], list(raw.ch_names)  # volts, 4 s
    cfg = {"measures": ["higuchi_fd", "katz_fd", "dfa_alpha", "spectral_beta"]}
    table, summary = fingerprint(x, 250.0, cfg, channel_names=names)
    assert list(table.loc[table.measure == "higuchi_fd", "channel"]) == names
    perm = np.random.default_rng(0).permutation(len(names))
    t_p, s_p = fingerprint(x[perm], 250.0, cfg, channel_names=[names[i] for i in perm])
    assert list(t_p.loc[t_p.measure == "higuchi_fd", "channel"]) == [names[i] for i in perm]
    by = table.set_index(["channel", "measure"]).sort_index()
    by_p = t_p.set_index(["channel", "measure"]).sort_index()
    np.testing.assert_allclose(by_p["value"], by["value"], rtol=0, atol=1e-12)
    assert (by_p["flag"] == by["flag"]).all()
    for variant, tol in ((x.astype(np.float32), 2e-3), (torch.from_numpy(x), 1e-12), (x * 1e6, 1e-9)):
        t_v, s_v = fingerprint(variant, 250.0, cfg, channel_names=names)
        assert list(t_v["flag"]) == list(table["flag"])
        for k, v in summary.items():
            if isinstance(v, float) and not np.isnan(v):
                assert s_v[k] == pytest.approx(v, abs=tol), k
            else:
                assert s_v[k] == v or (isinstance(v, float) and np.isnan(s_v[k])), k


@pytest.mark.realdata
def test_fingerprint_of_real_rr_intervals_is_per_row_and_unit_free(shared_data):
    from fractals.fingerprint import clean_rr_intervals, fingerprint

    path = shared_data / "hrv_rr_dev.npz"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    d = np.load(path)
    rr, off = d["rr_ms"], d["offsets"]
    rows = [clean_rr_intervals(rr[off[k]:off[k + 1]].astype(np.float64))[:2000] for k in range(3)]
    x = np.full((3, 2000), np.nan)
    for i, r in enumerate(rows):
        x[i, :len(r) - 300 * i] = r[:len(r) - 300 * i]  # ragged rows, NaN-padded
    cfg = {"intervals": {"ectopic_filter": False}}
    table, summary = fingerprint(x, None, cfg, kind="intervals")
    for i in range(3):
        alone, _ = fingerprint(x[i, np.isfinite(x[i])], None, cfg, kind="intervals")
        np.testing.assert_allclose(table.loc[table.channel == f"ch{i}", "value"], alone["value"], rtol=0, atol=1e-12)
    _, seconds = fingerprint(x / 1000.0, None, cfg, kind="intervals")  # ms -> s
    _, single = fingerprint(x.astype(np.float32), None, cfg, kind="intervals")
    for k, v in summary.items():
        if isinstance(v, float):
            assert seconds[k] == pytest.approx(v, abs=1e-9), k
            assert single[k] == pytest.approx(v, abs=1e-4), k


def test_reversed_numpy_views_are_taken_as_arguments_everywhere():
    # The same values as a reversed NumPy view were refused with a misleading message ("eps_values: needs a
    # sequence of integer box sizes, got array([1, 2, 3, 4, 5, 6])") or torch's negative-stride error.
    from fractals.metrics import graph_fractal_dim, welch_psd
    from fractals.regularizers import l_multifractal
    from fractals.simulators import fractional_ou

    ring = np.eye(20, k=1) + np.eye(20, k=-1)
    assert graph_fractal_dim(ring, np.arange(6, 0, -1)[::-1]) == graph_fractal_dim(ring, [1, 2, 3, 4, 5, 6])
    x = np.random.default_rng(1).standard_normal(1000)
    window = np.hanning(256)  # symmetric: reversed it is the same window
    np.testing.assert_array_equal(welch_psd(x, 250.0, nperseg=256, window=window[::-1])[1],
                                  welch_psd(x, 250.0, nperseg=256, window=window)[1])
    torch.testing.assert_close(fractional_ou(64, np.array([0.7, 0.3])[::-1], 3.0, 1.0, 250.0, seed=0),
                               fractional_ou(64, np.array([0.3, 0.7]), 3.0, 1.0, 250.0, seed=0))
    lat = torch.randn(2, 512, 3, generator=_gen(16))
    q, scales = [-2.0, 0.0, 2.0], [8, 16, 32]
    torch.testing.assert_close(l_multifractal(lat, q, scales, 1.0, np.array([1.0, -1.0, -3.0])[::-1]),
                               l_multifractal(lat, q, scales, 1.0, [-3.0, -1.0, 1.0]))


def test_two_moons_indicators_survive_a_layer_collapsed_below_rank_four():
    """singular_value_exponent refuses a layer of numerical rank < 4; the two-moons validation must not crash on
    a collapsed layer (left out of the exponent instead)."""
    from models.criticality.two_moons import TwoMoonsModule

    torch.manual_seed(0)
    model = TwoMoonsModule(width=8, depth=3)
    with torch.no_grad():
        model.net.hidden[1].weight.zero_()
    ind = model.indicators(torch.randn(64, 2))
    assert math.isfinite(ind["sv_exponent"])  # the other square layer still fits
    with torch.no_grad():
        model.net.hidden[2].weight.zero_()
    assert math.isnan(model.indicators(torch.randn(64, 2))["sv_exponent"])
