"""fractals.regularizers: gradients, agreement with fractals.metrics, descent to target, zero cost when off."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

import fractals.regularizers as reg
from fractals import metrics as fm
from fractals.regularizers import (
    FractalPriors,
    l_graph_fd,
    l_multifractal,
    l_spec_1overf,
    latent_beta,
    latent_tau,
    soft_graph_dimension,
)
from fractals.stimuli import one_over_f_noise

CONF = Path(__file__).resolve().parents[1] / "platform" / "fmx" / "conf" / "fractals" / "default.yaml"



def _small(seed=0, shape=(2, 64, 5)):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g, dtype=torch.float64).requires_grad_(True)


# ---------------------------------------------------------------- gradients
# Full (not fast-mode) gradcheck: every input element, on inputs small enough to stay < 1 s.
def test_gradcheck_spectral_prior():
    x = _small(0, (1, 32, 3))
    assert torch.autograd.gradcheck(lambda z: l_spec_1overf(z, 100.0, (2.0, 45.0), 1.0, 0.5, nperseg=16), (x,))
    x_peaks = _small(3, (1, 64, 2))
    assert torch.autograd.gradcheck(
        lambda z: l_spec_1overf(z, 100.0, (2.0, 45.0), 1.0, 0.5, exclude_peaks=True), (x_peaks,), fast_mode=True)


def test_gradcheck_multifractal_prior_with_target():
    x = _small(1, (1, 32, 3))
    assert torch.autograd.gradcheck(
        lambda z: l_multifractal(z, [-3, -1, 0, 2], [4, 8], 0.5, tau_target=[-3.0, -1.5, -1.0, 0.2]), (x,))


@pytest.mark.parametrize("target", [1.5, None])
def test_gradcheck_graph_prior(target):
    x = _small(2, (2, 24, 5))
    assert torch.autograd.gradcheck(lambda z: l_graph_fd(z, [1, 2, 3], 0.1, target, 0.5, temperature=0.2), (x,))


# ---------------------------------------------------------------- agreement with the metrics
def test_latent_beta_matches_metrics_on_pink_noise():
    x = one_over_f_noise(2048, 1.0, fs=500.0, batch_shape=(2, 3), generator=torch.Generator().manual_seed(0))
    mine = latent_beta(x, 500.0, (2.0, 100.0), time_dim=-1, nperseg=512)
    ref = fm.spectral_beta(x, 500.0, (2.0, 100.0), exclude_peaks=False)
    assert mine.shape == (2, 3)
    assert float((mine - ref).abs().max()) < 0.1
    assert float(mine.mean()) == pytest.approx(1.0, abs=0.1)


def test_latent_beta_ignores_an_oscillatory_peak():
    g = torch.Generator().manual_seed(1)
    x = one_over_f_noise(4096, 1.0, fs=500.0, peaks=[(10.0, 1.5, 20.0)], batch_shape=(4,), generator=g)
    with_mask = latent_beta(x, 500.0, (2.0, 100.0), time_dim=-1, exclude_peaks=True)
    without = latent_beta(x, 500.0, (2.0, 100.0), time_dim=-1)
    assert float((with_mask - 1.0).abs().mean()) < float((without - 1.0).abs().mean())
    assert float(with_mask.mean()) == pytest.approx(1.0, abs=0.15)


def test_latent_tau_matches_mfdfa():
    x = one_over_f_noise(2048, 0.6, batch_shape=(3,), generator=torch.Generator().manual_seed(2))
    q, scales = [-5, -3, -1, 0, 1, 3, 5], [16, 32, 64, 128, 256]
    mine = latent_tau(x, q, scales, time_dim=-1)
    ref = fm.multifractal_spectrum(x, q, scales)["tau"]
    assert torch.allclose(mine, ref, atol=1e-6)


def _ring_latents(c=24, t=4000, seed=0):
    # channel i = s_i + s_{i+1}: neighbours correlate at 0.5, others near 0, a ring graph at |r| > 0.3.
    s = torch.randn(t, c, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return (s + s.roll(-1, dims=1))[None]


def _hard_cluster_dimension(adj: np.ndarray, eps) -> float:
    n = adj.shape[0]
    hop = adj + np.eye(n)
    reach, masses = np.eye(n), []
    for l in range(1, max(eps) + 1):
        reach = (reach @ hop > 0).astype(float)
        if l in eps:
            masses.append(reach.sum(1).mean())
    return float(np.polyfit(np.log(eps), np.log(masses), 1)[0])


def test_soft_graph_dimension_equals_hard_cluster_growing_on_a_ring():
    x = _ring_latents()
    eps = [1, 2, 3, 4, 5, 6]
    soft = float(soft_graph_dimension(x, eps, 0.3, sharpness=20.0)[0])
    corr = np.corrcoef(x[0].T.numpy())
    adj = ((np.abs(corr) > 0.3) & ~np.eye(24, dtype=bool)).astype(float)
    assert adj.sum(1).tolist() == [2.0] * 24  # the construction gives a ring
    hard = _hard_cluster_dimension(adj, eps)
    assert soft == pytest.approx(hard, abs=0.02)
    assert hard == pytest.approx(np.polyfit(np.log(eps), np.log([2 * e + 1 for e in eps]), 1)[0], abs=1e-9)
    # Box covering of the same ring gives D = 1; the surrogate is biased low by the +1 of M = 2l + 1.
    box = float(torch.as_tensor(fm.graph_fractal_dim(torch.as_tensor(adj), eps)))
    assert 0.75 < soft < box + 0.1


def test_soft_graph_dimension_grows_with_lattice_dimension():
    g = torch.Generator().manual_seed(3)
    side, t = 8, 3000
    s = torch.randn(t, side, side, generator=g, dtype=torch.float64)
    torus = (s + s.roll(-1, 1) + s.roll(-1, 2)).reshape(1, t, side * side)  # 2-D grid-like links
    d_ring = float(soft_graph_dimension(_ring_latents(64), [1, 2, 3], 0.3)[0])
    d_torus = float(soft_graph_dimension(torus, [1, 2, 3], 0.3)[0])
    assert d_torus > d_ring + 0.5


# ---------------------------------------------------------------- optimisation
def test_descent_brings_white_noise_beta_to_target():
    torch.manual_seed(0)
    z = torch.randn(2, 512, 3).requires_grad_(True)
    before = float(latent_beta(z.detach(), 1000.0, (2.0, 80.0)).mean())
    m, v = torch.zeros_like(z), torch.zeros_like(z)
    for i in range(1, 41):  # plain Adam (torch.optim's first use costs seconds of imports)
        (g,) = torch.autograd.grad(l_spec_1overf(z, 1000.0, (2.0, 80.0), 1.0, 1.0), z)
        m, v = 0.9 * m + 0.1 * g, 0.999 * v + 0.001 * g * g
        with torch.no_grad():
            z -= 0.05 * (m / (1 - 0.9**i)) / ((v / (1 - 0.999**i)).sqrt() + 1e-8)
    after = fm.spectral_beta(z.detach().transpose(1, 2), 1000.0, (2.0, 80.0), exclude_peaks=False)
    assert abs(before) < 0.2
    assert float((after - 1.0).abs().max()) < 0.15


def test_graph_variance_prior_is_zero_for_one_sample():
    assert float(l_graph_fd(_ring_latents(), [1, 2, 3], 0.3, None, 1.0)) == 0.0


# ---------------------------------------------------------------- zero cost when off
@pytest.fixture
def forbid_compute(monkeypatch):
    def boom(*a, **k):
        raise AssertionError("prior computed although its weight is zero")

    for name in ("latent_beta", "latent_tau", "soft_graph_dimension"):
        monkeypatch.setattr(f"{getattr(reg, name).__module__}.{name}", boom)  # in the module that calls it


def test_zero_weight_returns_zero_without_compute(forbid_compute):
    x = torch.randn(2, 64, 3)
    for value in (l_spec_1overf(x, 100.0, (2, 40), 1.0, 0.0), l_multifractal(x, [-1, 0, 1], [4, 8], 0.0),
                  l_graph_fd(x, [1, 2], 0.3, None, 0.0)):
        assert value.shape == () and float(value) == 0.0
    priors = FractalPriors(lambda_spec=0.0, lambda_mf=0.0, lambda_graphfd=0.0)
    total, parts = priors(x)
    assert float(total) == 0.0 and set(parts) == {"spec", "mf", "graphfd"}
    off_total, _ = FractalPriors(enable=False)(x)
    warm_total, _ = FractalPriors(warmup_steps=10)(x, step=3)
    assert float(off_total) == 0.0 and float(warm_total) == 0.0


def test_negative_weight_rejected():
    with pytest.raises(ValueError, match="weight"):
        l_spec_1overf(torch.randn(1, 64, 2), 100.0, (2, 40), 1.0, -1.0)


# ---------------------------------------------------------------- module and config
def test_from_config_reads_the_default_yaml():
    cfg = yaml.safe_load(CONF.read_text())
    priors = FractalPriors.from_config(cfg, fs=250.0)
    assert priors.lambda_spec == cfg["priors"]["lambda_spec"]
    assert priors.lambda_mf == cfg["priors"]["lambda_mf"]
    assert priors.lambda_graphfd == cfg["priors"]["lambda_graphfd"]
    assert priors.warmup_steps == cfg["priors"]["warmup_steps"]
    assert priors.band == tuple(cfg["metrics"]["temporal"]["psd_freq_band"])
    assert priors.eps_values == cfg["metrics"]["graph"]["box_eps"] and priors.fs == 250.0
    with pytest.raises(ValueError, match="lambda_spek"):
        FractalPriors.from_config({"priors": {"lambda_spek": 1.0}})


def test_forward_parts_sum_and_layout():
    g = torch.Generator().manual_seed(5)
    x = torch.randn(3, 512, 8, generator=g).requires_grad_(True)
    priors = FractalPriors(warmup_steps=2, fs=250.0, band=(2.0, 60.0), scales=(8, 16, 32, 64), eps_values=(1, 2, 3),
                           corr_threshold=0.05)
    total, parts = priors(x, step=5)
    assert torch.allclose(total, parts["spec"] + parts["mf"] + parts["graphfd"])
    assert all(float(v.detach()) > 0 for v in parts.values())
    total.backward()
    assert x.grad is not None and bool(torch.isfinite(x.grad).all()) and float(x.grad.abs().sum()) > 0
    # The same latents with time last give the same loss when told so.
    t_last = FractalPriors(warmup_steps=2, fs=250.0, band=(2.0, 60.0), scales=(8, 16, 32, 64), eps_values=(1, 2, 3),
                           corr_threshold=0.05, time_dim=-1)
    total2, _ = t_last(x.detach().transpose(1, 2), step=5)
    assert float(total2) == pytest.approx(float(total.detach()), rel=1e-5)


def test_band_error_names_the_time_axis():
    with pytest.raises(ValueError, match="time_dim"):
        latent_beta(torch.randn(2, 16, 300), 1000.0, (2.0, 80.0))


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_priors_on_cuda_match_cpu():
    x = torch.randn(4, 512, 16, generator=torch.Generator().manual_seed(7))
    priors = FractalPriors(warmup_steps=0, fs=250.0, band=(2.0, 60.0), scales=(8, 16, 32, 64), corr_threshold=0.1)
    cpu_total, _ = priors(x)
    xc = x.cuda().requires_grad_(True)
    gpu_total, parts = priors(xc)
    gpu_total.backward()
    assert gpu_total.device.type == "cuda" and bool(torch.isfinite(xc.grad).all())
    assert float(gpu_total.detach().cpu()) == pytest.approx(float(cpu_total), rel=1e-3)
    # compile="auto" compiles on CUDA: this is the compiled path, and it must not have fallen back.
    assert priors.compile == "auto" and priors._compiled is not None, "torch.compile fell back to eager on CUDA"


def test_slow_latents_clip_the_band_and_fs_override_is_used():
    # Tiny-model latents: T = 64 steps at 62.5 Hz; the config band 2-80 Hz is clipped to 0.45 fs.
    x = torch.randn(4, 64, 8, generator=torch.Generator().manual_seed(9))
    priors = FractalPriors.from_config({"priors": {"exclude_peaks": True, "warmup_steps": 0}})
    total, parts = priors(x, fs=62.5)
    assert priors.exclude_peaks and bool(torch.isfinite(total)) and float(parts["spec"]) > 0
    assert float(parts["spec"]) == pytest.approx(
        float(l_spec_1overf(x, 62.5, (2.0, 28.125), 1.0, 0.05, exclude_peaks=True)), rel=1e-6)


# ---------------------------------------------------------------- dead (constant) latent channels
def test_spectral_prior_leaves_a_constant_channel_out():
    # A constant channel has no spectrum; the mean removal left rounding noise whose "beta" entered
    # the loss with gradients of ~1e30 (float64) on that channel.
    g = torch.Generator().manual_seed(11)
    live = torch.randn(2, 256, 3, generator=g, dtype=torch.float64)
    x = torch.cat([live[..., :1], torch.full((2, 256, 1), 0.3, dtype=torch.float64), live[..., 1:]], -1)
    x.requires_grad_(True)
    loss = l_spec_1overf(x, 100.0, (2.0, 40.0), 1.0, 0.5)
    loss.backward()
    assert float(loss.detach()) == pytest.approx(float(l_spec_1overf(live, 100.0, (2.0, 40.0), 1.0, 0.5)), rel=1e-12)
    assert bool(torch.isfinite(x.grad).all()) and float(x.grad[..., 1].abs().max()) == 0.0


def test_graph_prior_gives_a_constant_channel_no_gradient():
    # z-scoring a constant channel scaled its rounding noise up to unit norm (gradients ~1e3-1e8).
    x = _ring_latents().detach().clone()
    x[..., 2] = 0.3
    x.requires_grad_(True)
    l_graph_fd(x, [1, 2, 3], 0.3, 2.0, 1.0).backward()
    assert bool(torch.isfinite(x.grad).all()) and float(x.grad[..., 2].abs().max()) == 0.0


def test_graph_sharpness_is_checked_and_large_values_reach_the_hard_limit():
    # sharpness=0 divided 0 by 0 (a silent NaN D); sharpness > ~1420 overflowed math.exp.
    x = _ring_latents(c=12, t=2000)
    with pytest.raises(ValueError, match="sharpness"):
        soft_graph_dimension(x, [1, 2, 3], 0.3, sharpness=0.0)
    hard = float(np.polyfit(np.log([1, 2, 3]), np.log([3, 5, 7]), 1)[0])  # ring: M(l) = 2l + 1
    d = soft_graph_dimension(x, [1, 2, 3], 0.3, sharpness=5000.0, temperature=1e-3)
    assert float(d[0]) == pytest.approx(hard, abs=1e-6)


def test_priors_trace_into_one_graph_each_for_torch_compile():
    # Training runs the priors every step; on a GPU their ~1000 small ops are launch-bound, and
    # torch.compile fuses them only if the trace has no break (no host sync, no data-dependent
    # shape, no NumPy on traced values). TorchDynamo's explain traces without compiling.
    import torch._dynamo as dynamo

    x = torch.randn(2, 256, 16, requires_grad=True)
    priors = FractalPriors(warmup_steps=0, fs=1000.0, band=(2.0, 80.0), q_vals=[-5, -3, -1, 0, 1, 3, 5],
                           scales=[8, 16, 32, 64], eps_values=[1, 2, 3, 4, 5, 6], corr_threshold=0.3)
    calls = {
        "spec": lambda z: l_spec_1overf(z, 1000.0, (2.0, 80.0), 1.0, 1.0),
        "mf": lambda z: l_multifractal(z, [-5, -3, -1, 0, 1, 3, 5], [8, 16, 32, 64], 1.0),
        "graph": lambda z: l_graph_fd(z, [1, 2, 3, 4, 5, 6], 0.3, 1.5, 1.0),
        "all": lambda z: priors(z)[0],
    }
    for name, fn in calls.items():
        dynamo.reset()
        report = dynamo.explain(fn)(x)
        assert report.graph_break_count == 0, (name, [str(b.reason)[:200] for b in report.break_reasons])
        assert report.graph_count == 1, name


def test_compiled_spectral_prior_backward_equals_eager():
    # Under torch.compile (inductor, CPU) the backward of a one-window unfold corrupted the heap
    # (the process aborts), and the prior's first Welch resolution is nperseg = T. A subprocess
    # keeps such an abort from taking pytest down; the compiled gradient must equal eager's.
    import subprocess
    import sys
    import textwrap

    code = textwrap.dedent("""
        import torch
        from fractals.regularizers import l_spec_1overf
        torch.manual_seed(0)
        x = torch.randn(2, 256, 8, requires_grad=True)
        f = lambda z: l_spec_1overf(z, 1000.0, (2.0, 80.0), 1.0, 1.0)
        f(x).backward(); eager = x.grad.clone(); x.grad = None
        torch.compile(f)(x).backward()
        print(float((x.grad - eager).abs().max() / eager.abs().max()))
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert float(proc.stdout.strip().splitlines()[-1]) < 1e-5


def test_priors_compile_option_equals_eager_and_survives_copies():
    # compile=True runs the three terms through torch.compile (inductor on CPU here, Triton on CUDA);
    # a subprocess keeps an inductor abort from taking pytest down.
    import subprocess
    import sys
    import textwrap

    code = textwrap.dedent("""
        import copy, pickle, torch
        from fractals.priors import FractalPriors
        torch.manual_seed(0)
        x = torch.randn(2, 256, 8, requires_grad=True)
        kw = dict(warmup_steps=0, scales=[8, 16, 32, 64])
        total, parts = FractalPriors(compile=False, **kw)(x)
        total.backward(); eager = x.grad.clone(); x.grad = None
        priors = FractalPriors(compile=True, **kw)
        ctotal, cparts = priors(x)
        ctotal.backward()
        assert priors.compile is True and priors._compiled is not None, "fell back to eager"
        assert copy.deepcopy(priors)._compiled is None and pickle.loads(pickle.dumps(priors)).compile is True
        print(float(abs(ctotal - total) / total), max(float(abs(cparts[k] - parts[k])) for k in parts),
              float((x.grad - eager).abs().max() / eager.abs().max()))
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rel_total, abs_parts, rel_grad = map(float, proc.stdout.strip().splitlines()[-1].split())
    assert rel_total < 1e-5 and abs_parts < 1e-6 and rel_grad < 1e-4


def test_priors_compile_failure_falls_back_to_eager_once(monkeypatch, caplog):
    from fractals import priors as priors_mod

    def broken_compile(fn, **kwargs):
        def run(*args, **kw):
            raise RuntimeError("inductor: no C compiler")
        return run

    monkeypatch.setattr(priors_mod.torch, "compile", broken_compile)
    x = torch.randn(2, 256, 8)
    kw = dict(warmup_steps=0, scales=[8, 16, 32, 64])
    priors = FractalPriors(compile=True, **kw)
    with caplog.at_level("WARNING", logger="fractals"):
        total, _ = priors(x)
        again, _ = priors(x)
    assert [r.message.count("torch.compile failed") for r in caplog.records] == [1]
    assert priors.compile is False
    expected, _ = FractalPriors(compile=False, **kw)(x)
    assert float(total) == float(again) == float(expected)


def test_priors_compile_option_is_checked_and_configurable():
    with pytest.raises(ValueError, match="compile"):
        FractalPriors(compile="yes")
    cfg = {"enable": True, "priors": {"lambda_spec": 0.05, "compile": False}}
    assert FractalPriors.from_config(cfg).compile is False
    assert FractalPriors.from_config({"enable": True}).compile == "auto"
    bad = torch.randn(2, 256, 8)
    with pytest.raises(ValueError, match="band"):  # bad input is an error, not a compile fallback
        FractalPriors(compile=True, warmup_steps=0, band=(600.0, 900.0), lambda_mf=0, lambda_graphfd=0)(bad)
