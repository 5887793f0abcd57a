"""Review round: bugs in code paths that run only on CUDA (Triton kernels, device branches, the GPU
benchmark script), pinned by CPU tests where a CPU test can show them."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from fractals import _rs_triton


def test_rs_kernel_tolerance_does_not_overflow_for_large_float32_series():
    # The CUDA R/S kernel's constant-segment tolerance came from a float32 var: |x| ~ 1e20 gave inf, so
    # hurst_rs raised "every segment ... is constant" on CUDA while the CPU path (float64 sums) worked.
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 1000, generator=g)
    for scale in (1e20, 1.0, 1e-20):
        xs = (x * scale).float()
        want = 64 * torch.finfo(torch.float64).eps * 1000 * xs.double().var(-1, correction=0)
        got = _rs_triton._energy_tol(xs)
        assert got.dtype == torch.float64 and got.shape == (2,)
        torch.testing.assert_close(got, want, rtol=1e-5, atol=0)


def _load_benchmark(name: str):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"_review_bench_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_attention_benchmark_syncs_an_indexed_cuda_device(monkeypatch):
    # `--device cuda:1` passes the script's CUDA check, but `_time` compared the string to "cuda": no
    # synchronize, so the table timed kernel launches only (and peak memory read device 0).
    attention = _load_benchmark("attention")
    synced = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: synced.append(device))
    attention._time(lambda: None, "cuda:1", repeats=2)
    assert len(synced) == 6 and set(synced) == {"cuda:1"}
    synced.clear()
    attention._time(lambda: None, "cpu", repeats=2)
    assert synced == []


# ----------------------------------------------------------------------------- on a GPU (gpu_check.sh runs these)
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@needs_cuda
def test_cuda_hurst_rs_of_large_float32_series_matches_cpu():
    # The Triton R/S kernel on a batch of one, T = 3001 (no window divides it), |x| ~ 1e20 in float32.
    from fractals.temporal import hurst_rs

    x = (torch.randn(1, 2, 3001, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 1e20).float()
    want = hurst_rs(x)
    got = hurst_rs(x.cuda())
    assert got.device.type == "cuda" and _rs_triton.ENABLED, "the R/S kernel fell back to the torch path"
    torch.testing.assert_close(got.cpu(), want, rtol=1e-5, atol=1e-5)


@needs_cuda
def test_cuda_box_kernel_batch_of_one_three_word_graph_matches_cpu():
    # One graph of 130 nodes: three 64-bit words per dual row, the last one partly padding.
    from fractals import _box_triton
    from fractals.graph import graph_fractal_dim

    rng = np.random.default_rng(4)
    n = 130
    a = np.triu(rng.random((n, n)) < 0.02, 1)
    idx = np.arange(n)
    a[idx[:-1], idx[1:]] = True  # a path through every node keeps it connected
    adj = torch.from_numpy((a | a.T).astype(np.float32))[None]
    cpu_d, cpu_box = graph_fractal_dim(adj, [1, 2, 3, 5], return_counts=True)
    gpu_d, gpu_box = graph_fractal_dim(adj.cuda(), [1, 2, 3, 5], return_counts=True)
    assert gpu_d.is_cuda and _box_triton.ENABLED, "the box-covering kernel fell back to the torch loop"
    torch.testing.assert_close(gpu_box.counts.cpu(), cpu_box.counts)
    torch.testing.assert_close(gpu_d.cpu(), cpu_d)


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).norm() / b.float().norm().clamp_min(1e-12))


@needs_cuda
def test_cuda_fc_fd_probe_returns_graph_fd_on_the_input_device():
    # graph_fd came back on the CPU beside CUDA densities: graph_fd * density raised a device mismatch.
    from fractals.probes import fc_fd_probe

    lat = torch.randn(3, 256, 12, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    lat = lat + 0.8 * lat.roll(1, -1)  # neighbouring channels correlate: graphs with edges
    cpu = fc_fd_probe(lat, thresh=0.2, labels=[0.0, 1.0, 2.0])
    gpu = fc_fd_probe(lat.cuda(), thresh=0.2, labels=[0.0, 1.0, 2.0])
    assert gpu["graph_fd"].device.type == "cuda" and gpu["density"].device.type == "cuda"
    torch.testing.assert_close(gpu["graph_fd"].cpu(), cpu["graph_fd"], equal_nan=True)
    torch.testing.assert_close((gpu["graph_fd"] * gpu["density"]).cpu(), cpu["graph_fd"] * cpu["density"].double(),
                               equal_nan=True)


def test_model_benchmark_syncs_the_device_it_times(monkeypatch):
    # model.py's _sync called a bare torch.cuda.synchronize(): with --device cuda:1 it waited for cuda:0,
    # so the SSD and step rows timed kernel launches only.
    model = _load_benchmark("model")
    synced = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: synced.append(device))
    model._time(lambda: None, "cuda:1", repeats=2, warmup=1)
    assert synced == ["cuda:1", "cuda:1"]
    synced.clear()
    model._time(lambda: None, "cpu", repeats=1, warmup=0)
    assert synced == []


@needs_cuda
def test_cuda_generators_are_accepted_by_powerlaw_bootstrap_and_byte_sampling():
    # A CUDA generator (natural beside CUDA input) raised "Expected a 'cpu' device type for generator":
    # the bootstrap draws and the byte sampler drew on the CPU.
    from fractals.graph import powerlaw_fit
    from models.byte.model import FractalByteLM, generate

    u = torch.rand(400, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    x = ((1 - u) ** (-1 / 1.5)).cuda()
    fits = [powerlaw_fit(x, min_tail=50, bootstrap=5, generator=torch.Generator("cuda").manual_seed(1))
            for _ in range(2)]
    assert 0.0 <= float(fits[0].p_value) <= 1.0 and float(fits[0].p_value) == float(fits[1].p_value)
    torch.manual_seed(0)
    model = FractalByteLM().cuda()
    outs = [generate(model, [65, 66], max_new=4, temperature=1.0, generator=torch.Generator("cuda").manual_seed(3),
                     stop_at_eos=False) for _ in range(2)]
    assert len(outs[0]) == 6 and outs[0] == outs[1]


def test_model_benchmark_saves_each_finished_benchmark_before_the_next(monkeypatch, tmp_path):
    # gpu_check.sh bounds `model.py --only ssd step` with a timeout: --out was written only at the very end,
    # so a step benchmark cut by the timeout lost the finished SSD rows too.
    import json

    model = _load_benchmark("model")
    out = tmp_path / "model.json"
    seen = {}

    def step(args):
        seen["during_step"] = json.loads(out.read_text())
        raise KeyboardInterrupt  # what the timeout's signal amounts to: the run stops here

    monkeypatch.setattr(model, "bench_ssd", lambda args: [{"bench": "ssd", "ms_per_step": 1.0}])
    monkeypatch.setattr(model, "bench_step", step)
    with pytest.raises(KeyboardInterrupt):
        model.main(["--device", "cpu", "--only", "ssd", "step", "--out", str(out)])
    assert seen["during_step"]["partial"] is True
    assert seen["during_step"]["rows"] == [{"bench": "ssd", "ms_per_step": 1.0}]


@needs_cuda
def test_cuda_fused_mamba2_under_bf16_autocast_matches_portable():
    # Last in this file: its first Triton compile (mamba_ssm autotunes) is the slowest step. What training
    # runs (bf16-mixed): x, B, C, dt reach the fused scan in bf16, A, D and dt_bias in
    # float32. Batch of one, 300 steps (not a multiple of the fused 256-step chunk), forward and backward.
    from models.backbones import Mamba2, mamba_kernels_available

    if not mamba_kernels_available():
        pytest.skip("mamba_ssm's Triton SSD does not import here (benchmarks/device_wheels.sh brings it)")
    torch.manual_seed(0)
    block = Mamba2(d_model=64, d_state=32, headdim=32, kernels="fused").cuda()
    u = torch.randn(1, 300, 64, device="cuda", requires_grad=True)
    got = {}
    for path in ("fused", "portable"):
        block.kernels = path
        block.zero_grad()
        u.grad = None
        with torch.autocast("cuda", dtype=torch.bfloat16):
            y, state = block(u, return_state=True)
        (y.float().square().mean() + state.float().square().mean()).backward()
        got[path] = {"y": y.detach(), "state": state.detach(), "u.grad": u.grad.clone(),
                     **{f"{k}.grad": p.grad.clone() for k, p in block.named_parameters()}}
    for key, ref in got["portable"].items():
        assert got["fused"][key].shape == ref.shape, key
        assert bool(torch.isfinite(got["fused"][key].float()).all()), key
    # bf16 rounding (eps 2^-8) of the same inputs on both paths; small sums such as D.grad may cancel,
    # so the relative comparison is on the large tensors only.
    for key in ("y", "state", "u.grad", "in_proj.weight.grad", "out_proj.weight.grad"):
        err = _rel(got["fused"][key], got["portable"][key])
        assert err < 5e-2, (key, err)

