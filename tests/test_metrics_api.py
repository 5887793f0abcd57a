"""The fractals.metrics contract, for every exported function.

NumPy in -> NumPy out, torch in -> torch out; float32 and float64 kept; any leading shape, with
each series' result equal to what it gets alone; deterministic; every export listed here.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

import fractals.metrics as metrics

T = 2048
FS = 1000.0
LEAD = (2, 3)


def _series(lead, dtype=np.float64, seed=0):
    rng = np.random.default_rng(seed)
    return np.cumsum(rng.standard_normal((*lead, T)), -1).astype(dtype) * 0.1 + rng.standard_normal((*lead, T)).astype(dtype)


def _latents(lead, dtype=np.float64, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((*lead, 64, 8)) @ rng.standard_normal((8, 8))).astype(dtype)


def _graphs(lead, dtype=np.float64, seed=0):
    rng = np.random.default_rng(seed)
    n = 24
    ring = np.zeros((n, n))
    idx = np.arange(n)
    ring[idx, (idx + 1) % n] = ring[(idx + 1) % n, idx] = 1.0  # connected backbone
    extra = rng.random((*lead, n, n)) < 0.04
    extra = extra | np.swapaxes(extra, -1, -2)
    adj = np.maximum(ring, extra.astype(float))
    adj[..., idx, idx] = 0.0
    return adj.astype(dtype)


def _samples(lead, dtype=np.float64, seed=0):
    u = np.random.default_rng(seed).random((*lead, 300))
    return ((1 - u) ** (-1 / 1.5)).astype(dtype)


# name -> (input builder, call, trailing output shape of the main result)
CASES = {
    "higuchi_fd": (_series, lambda f, x: f(x), ()),
    "katz_fd": (_series, lambda f, x: f(x), ()),
    "hurst_rs": (_series, lambda f, x: f(x), ()),
    "dfa_alpha": (_series, lambda f, x: f(x), ()),
    "hurst_from_dfa": (lambda lead, dtype=np.float64, seed=0: np.full(lead, 0.7, dtype=dtype), lambda f, x: f(x), ()),
    "multifractal_spectrum": (_series, lambda f, x: f(x), None),
    "fluctuation_functions": (_series, lambda f, x: f(x, scales=[16, 32, 64])[0], (1, 3)),
    "welch_psd": (_series, lambda f, x: f(x, FS)[1], (129,)),
    "spectral_beta": (_series, lambda f, x: f(x, FS), ()),
    "fit_aperiodic": (_series, lambda f, x: f(*metrics.welch_psd(x, FS)), ()),
    "functional_connectivity_latents": (_latents, lambda f, x: f(x), (8, 8)),
    "graph_fractal_dim": (_graphs, lambda f, x: f(x, [1, 2, 3, 4]), ()),
    "powerlaw_fit": (_samples, lambda f, x: f(x, min_tail=50), None),
    "windowed": (_series, lambda f, x: f("katz_fd", x, 1024, 512), (3,)),
    "windowed_higuchi_fd": (_series, lambda f, x: f(x, 1024, 512), (3,)),
    "windowed_katz_fd": (_series, lambda f, x: f(x, 1024, 512), (3,)),
    "windowed_hurst_rs": (_series, lambda f, x: f(x, 1024, 512), (3,)),
    "windowed_dfa_alpha": (_series, lambda f, x: f(x, 1024, 512), (3,)),
    "windowed_spectral_beta": (_series, lambda f, x: f(x, 1024, 512, fs=FS), (3,)),
}


def _leaves(out):
    """Array-valued leaves of a result (tensor, array, dict, tuple or dataclass)."""
    if dataclasses.is_dataclass(out):
        out = {f.name: getattr(out, f.name) for f in dataclasses.fields(out)}
    if isinstance(out, dict):
        return {k: v for k, v in out.items() if v is not None}
    if isinstance(out, tuple):
        return dict(enumerate(out))
    return {"out": out}


def _main(out):
    leaves = _leaves(out)
    for key in ("out", "alpha", "width"):
        if key in leaves:
            return leaves[key]
    raise AssertionError(f"no main field in {list(leaves)}")


def test_every_export_is_covered():
    functions = [n for n in metrics.__all__ if not n[0].isupper()]  # result classes are not estimators
    assert set(functions) == set(CASES)
    for name in functions:
        assert callable(getattr(metrics, name))
        assert getattr(metrics, name).__doc__, f"{name} has no docstring"


@pytest.mark.parametrize("name", sorted(CASES))
def test_numpy_in_numpy_out(name):
    make, call, _ = CASES[name]
    out = call(getattr(metrics, name), make(LEAD))
    for key, leaf in _leaves(out).items():
        assert isinstance(leaf, np.ndarray), f"{name}[{key}] is {type(leaf).__name__}, expected ndarray"
        assert not np.issubdtype(leaf.dtype, np.floating) or np.isfinite(leaf).all(), f"{name}[{key}] not finite"


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", sorted(CASES))
def test_torch_in_torch_out_keeps_dtype(name, dtype):
    make, call, _ = CASES[name]
    x = torch.from_numpy(make(LEAD))
    out = call(getattr(metrics, name), x.to(dtype))
    for key, leaf in _leaves(out).items():
        assert isinstance(leaf, torch.Tensor), f"{name}[{key}] is {type(leaf).__name__}, expected a tensor"
        if torch.is_floating_point(leaf):
            assert leaf.dtype == dtype, f"{name}[{key}] has {leaf.dtype}, input was {dtype}"
    main = _main(out)
    ref = _main(call(getattr(metrics, name), make(LEAD)))
    tol = 1e-9 if dtype == torch.float64 else 2e-2
    np.testing.assert_allclose(main.detach().numpy().astype(np.float64), ref, atol=tol, rtol=tol)


@pytest.mark.parametrize("name", sorted(CASES))
def test_leading_shapes_and_rows_independent(name):
    make, call, trailing = CASES[name]
    fn = getattr(metrics, name)
    x = make(LEAD)
    main = _main(call(fn, x))
    if trailing is not None:
        assert main.shape == (*LEAD, *trailing), f"{name}: shape {main.shape}"
    assert main.shape[:2] == LEAD
    single = np.asarray(_main(call(fn, x[1, 2])))
    assert single.shape == main.shape[2:]
    np.testing.assert_allclose(single, main[1, 2], rtol=1e-9, atol=1e-12)
    flat = _main(call(fn, x.reshape(-1, *x.shape[2:])))
    np.testing.assert_allclose(flat.reshape(main.shape), main, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("name", sorted(CASES))
def test_deterministic(name):
    make, call, _ = CASES[name]
    fn = getattr(metrics, name)
    x = make(LEAD, seed=3)
    np.testing.assert_array_equal(_main(call(fn, x)), _main(call(fn, x.copy())))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", sorted(CASES))
def test_cuda_in_cuda_out_matches_cpu(name):
    make, call, _ = CASES[name]
    fn = getattr(metrics, name)
    x = torch.from_numpy(make(LEAD))
    gpu = call(fn, x.cuda())
    assert _main(gpu).device.type == "cuda"
    torch.testing.assert_close(_main(gpu).cpu(), _main(call(fn, x)), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("name", ["higuchi_fd", "katz_fd", "hurst_rs", "dfa_alpha", "multifractal_spectrum"])
def test_complex_input_is_refused_not_truncated(name):
    # Casting complex to float drops the imaginary part (NumPy only warns): that is lost data.
    z = _series((2,)) + 1j * _series((2,), seed=1)
    for x in (z, torch.from_numpy(z)):
        with pytest.raises(ValueError, match="x: complex"):
            getattr(metrics, name)(x)


def test_long_double_and_big_endian_input_are_computed_in_float64():
    # Valid float arrays that torch cannot wrap: np.longdouble raised TypeError, big-endian data
    # (as read from many file formats) a ValueError about byte order.
    x = _series((2,))
    for name in ("katz_fd", "dfa_alpha"):
        for arr in (x.astype(np.longdouble), x.astype(">f8")):
            out = getattr(metrics, name)(arr)
            assert out.dtype == np.float64
            np.testing.assert_allclose(out, getattr(metrics, name)(x), rtol=1e-12)


def test_numpy_scalar_rates_are_accepted_and_bools_are_not():
    # fs read from a file header is often a NumPy scalar; it must work like a Python number.
    import fractals.metrics as fm
    from fractals.regularizers import latent_beta

    x = np.random.default_rng(0).standard_normal((2, 4096))
    want = fm.spectral_beta(x, 1000.0, (2.0, 80.0))
    for fs in (np.float32(1000.0), np.int64(1000), np.float64(1000.0)):
        np.testing.assert_allclose(fm.spectral_beta(x, fs, (2.0, 80.0)), want, rtol=1e-6)
    lat = torch.from_numpy(x.T[None].copy())
    torch.testing.assert_close(latent_beta(lat, np.float32(1000.0), (2.0, 80.0)), latent_beta(lat, 1000.0, (2.0, 80.0)))
    with pytest.raises(ValueError, match="fs"):
        latent_beta(lat, True, (2.0, 80.0))


def test_estimators_ignore_an_enclosing_autocast_region():
    # A bf16-mixed validation or training step wraps everything in autocast; the estimators' slopes,
    # detrending and Gram matrices must still run in the input's precision (they moved by ~2e-3 before).
    import fractals.metrics as fm
    from fractals.regularizers import l_multifractal, l_spec_1overf, latent_beta

    x = torch.from_numpy(np.random.default_rng(3).standard_normal((4, 4096))).float().cumsum(-1) * 0.05
    x = x + torch.from_numpy(np.random.default_rng(4).standard_normal((4, 4096))).float()
    lat = x.T[None].contiguous()
    calls = {
        "higuchi_fd": lambda: fm.higuchi_fd(x), "dfa_alpha": lambda: fm.dfa_alpha(x),
        "hurst_rs": lambda: fm.hurst_rs(x), "spectral_beta": lambda: fm.spectral_beta(x, 1000.0, (2.0, 80.0)),
        "mfdfa": lambda: fm.fluctuation_functions(x, [-3.0, 2.0, 3.0], [16, 32, 64, 128])[0],
        "fc": lambda: fm.functional_connectivity_latents(lat, "pearson", weighted=True),
        "latent_beta": lambda: latent_beta(lat, 1000.0, (2.0, 80.0)),
        "l_spec": lambda: l_spec_1overf(lat, 1000.0, (2.0, 80.0), 1.0, 1.0),
        "l_mf": lambda: l_multifractal(lat, [-3, -1, 1, 3], [16, 32, 64, 128], 1.0),
    }
    for name, call in calls.items():
        plain = call()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            inside = call()
        assert inside.dtype == plain.dtype, name
        torch.testing.assert_close(inside, plain, rtol=0, atol=0, msg=name)
