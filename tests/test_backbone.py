"""Mamba-2 backbone: portable chunked SSD against the sequential recurrence, block invariants,
state-dict layout shared with mamba_ssm, the kernel-path switch, and scale encodings."""
from __future__ import annotations

import logging
import math

import pytest
import torch

from models.backbones import Mamba2, Mamba2Stack, mamba_kernels_available, segsum, ssd_chunked, ssd_naive
from models.backbones import mamba2 as mamba2_module
from models.layers.scale_encoding import ScaleEncoding, WaveletScatteringEncoding, band_energies
from interpreter import importable, run_interpreted


def _ssd_inputs(b=2, l=37, h=4, p=3, g=2, n=5, dtype=torch.float64, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(b, l, h, p, generator=gen, dtype=dtype)
    dt = torch.rand(b, l, h, generator=gen, dtype=dtype) * 0.5 + 0.01
    A = -torch.rand(h, generator=gen, dtype=dtype) * 2 - 0.1
    B = torch.randn(b, l, g, n, generator=gen, dtype=dtype)
    C = torch.randn(b, l, g, n, generator=gen, dtype=dtype)
    return x, dt, A, B, C


@pytest.mark.parametrize("chunk_size", [1, 4, 8, 37, 64])
def test_chunked_ssd_equals_sequential_recurrence(chunk_size):
    x, dt, A, B, C = _ssd_inputs()
    D = torch.randn(4, dtype=torch.float64)
    s0 = torch.randn(2, 4, 3, 5, dtype=torch.float64)
    y, s = ssd_chunked(x, dt, A, B, C, chunk_size=chunk_size, D=D, initial_states=s0)
    y_ref, s_ref = ssd_naive(x, dt, A, B, C, D=D, initial_states=s0)
    torch.testing.assert_close(y, y_ref, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(s, s_ref, rtol=1e-10, atol=1e-10)


def test_chunked_ssd_gradients_equal_sequential():
    x, dt, A, B, C = (t.requires_grad_() for t in _ssd_inputs(l=20))
    y, s = ssd_chunked(x, dt, A, B, C, chunk_size=8)
    grads = torch.autograd.grad((y.square().sum() + s.sum()), (x, dt, A, B, C))
    y2, s2 = ssd_naive(x, dt, A, B, C)
    grads_ref = torch.autograd.grad((y2.square().sum() + s2.sum()), (x, dt, A, B, C))
    for g, r in zip(grads, grads_ref):
        torch.testing.assert_close(g, r, rtol=1e-9, atol=1e-9)


def test_chunked_ssd_headdim_skip_and_streaming():
    x, dt, A, B, C = _ssd_inputs(l=32)
    D = torch.randn(4, 3, dtype=torch.float64)
    y_full, s_full = ssd_chunked(x, dt, A, B, C, chunk_size=8, D=D)
    # Streaming: the state after the first half seeds the second half.
    y1, s1 = ssd_chunked(x[:, :16], dt[:, :16], A, B[:, :16], C[:, :16], chunk_size=8, D=D)
    y2, s2 = ssd_chunked(x[:, 16:], dt[:, 16:], A, B[:, 16:], C[:, 16:], chunk_size=8, D=D, initial_states=s1)
    torch.testing.assert_close(torch.cat([y1, y2], 1), y_full, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(s2, s_full, rtol=1e-10, atol=1e-10)


def test_segsum_matches_definition():
    x = torch.randn(6, dtype=torch.float64)
    out = segsum(x)
    for i in range(6):
        for j in range(6):
            want = x[j + 1 : i + 1].sum() if i >= j else -math.inf
            assert float(out[i, j]) == pytest.approx(float(want), abs=1e-12)


def test_ssd_bad_shapes_name_the_argument():
    x, dt, A, B, C = _ssd_inputs()
    with pytest.raises(ValueError, match="dt"):
        ssd_chunked(x, dt[:, :-1], A, B, C)
    with pytest.raises(ValueError, match="groups"):
        ssd_chunked(x, dt, A, B[:, :, :1].expand(-1, -1, 3, -1), C[:, :, :1].expand(-1, -1, 3, -1))


def _block(**kw):
    torch.manual_seed(0)
    return Mamba2(d_model=16, d_state=8, headdim=8, kernels="portable", **kw).double()


def test_block_is_chunk_size_invariant_and_causal():
    m = _block(chunk_size=4)
    u = torch.randn(2, 30, 16, dtype=torch.float64)
    y, state = m(u, return_state=True)
    assert y.shape == (2, 30, 16) and state.shape == (2, 4, 8, 8)
    m.chunk_size = 64
    torch.testing.assert_close(m(u), y, rtol=1e-10, atol=1e-10)
    u2 = u.clone()
    u2[:, 17:] += 5.0
    y2 = m(u2)
    torch.testing.assert_close(y2[:, :17], y[:, :17], rtol=0, atol=1e-12)
    assert (y2[:, 17:] - y[:, 17:]).abs().max() > 1e-3


def test_state_dict_matches_mamba_ssm_layout_and_round_trips():
    m = Mamba2(d_model=32, d_state=16, headdim=16, ngroups=2, d_conv=4)
    d_inner, nheads, conv_dim = 64, 4, 64 + 2 * 2 * 16
    expected = {
        "in_proj.weight": (2 * d_inner + 2 * 2 * 16 + nheads, 32),
        "conv1d.weight": (conv_dim, 1, 4),
        "conv1d.bias": (conv_dim,),
        "dt_bias": (nheads,),
        "A_log": (nheads,),
        "D": (nheads,),
        "norm.weight": (d_inner,),
        "out_proj.weight": (32, d_inner),
    }
    assert {k: tuple(v.shape) for k, v in m.state_dict().items()} == expected
    stack = Mamba2Stack(d_model=32, n_layers=2, d_state=16, headdim=16, kernels="portable")
    keys = set(stack.state_dict())
    assert {"layers.0.norm.weight", "layers.1.mixer.A_log", "norm_f.weight"} <= keys
    other = Mamba2Stack(d_model=32, n_layers=2, d_state=16, headdim=16, kernels="portable")
    other.load_state_dict(stack.state_dict())
    u = torch.randn(2, 20, 32)
    torch.testing.assert_close(other(u), stack(u))


def test_no_decay_markers_and_dt_init_range():
    m = Mamba2(d_model=32, d_state=16, headdim=16, dt_min=1e-3, dt_max=0.1)
    assert all(getattr(p, "_no_weight_decay", False) for p in (m.A_log, m.D, m.dt_bias))
    dt = torch.nn.functional.softplus(m.dt_bias.detach())
    assert float(dt.min()) >= 1e-3 * 0.999 and float(dt.max()) <= 0.1 * 1.001
    A = torch.exp(m.A_log)
    assert float(A.min()) >= 1.0 and float(A.max()) <= 16.0


def test_kernel_path_logged_once_and_fused_request_fails_clearly(caplog, monkeypatch):
    monkeypatch.setattr(mamba2_module, "_LOGGED", set())
    m = Mamba2(d_model=16, d_state=8, headdim=8)
    with caplog.at_level(logging.INFO, logger="models.backbones"):
        m(torch.randn(1, 8, 16))
        m(torch.randn(1, 8, 16))
    msgs = [r.getMessage() for r in caplog.records if r.name == "models.backbones"]
    assert len(msgs) == 1 and "portable" in msgs[0]
    fused = Mamba2(d_model=16, d_state=8, headdim=8, kernels="fused")
    with pytest.raises(RuntimeError, match="fused"):
        fused(torch.randn(1, 8, 16))
    with pytest.raises(ValueError, match="kernels"):
        Mamba2(d_model=16, headdim=8, kernels="cuda")
    with pytest.raises(ValueError, match="headdim"):
        Mamba2(d_model=16, headdim=12)


def test_guarded_import_survives_a_broken_mamba_ssm(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def broken(name, *args, **kwargs):
        if name.startswith("mamba_ssm"):
            raise OSError("undefined symbol: selective_scan_cuda")  # what a bad build raises
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(mamba2_module, "_FUSED", None)
    monkeypatch.setattr(builtins, "__import__", broken)
    assert mamba2_module._load_fused() == {}
    assert "selective_scan_cuda" in mamba2_module._FUSED_ERROR
    assert not mamba_kernels_available()


@pytest.mark.skipif(not mamba_kernels_available(), reason="needs CUDA and an importable mamba_ssm")
def test_fused_path_agrees_with_portable_and_mamba_ssm():
    from mamba_ssm.modules.mamba2 import Mamba2 as RefMamba2

    torch.manual_seed(0)
    ours = Mamba2(d_model=128, d_state=64, headdim=64, kernels="fused").cuda()
    ref = RefMamba2(d_model=128, d_state=64, headdim=64, use_mem_eff_path=False).cuda()
    ref.load_state_dict(ours.state_dict())
    u = torch.randn(2, 512, 128, device="cuda")
    y_fused = ours(u)
    ours.kernels = "portable"
    y_portable = ours(u)
    torch.testing.assert_close(y_fused, y_portable, rtol=2e-3, atol=2e-3)
    torch.testing.assert_close(y_fused, ref(u), rtol=2e-3, atol=2e-3)


# ----------------------------------------------------------------------------- scale encodings
@pytest.mark.parametrize("period_index", [0, 1, 2, 3])
def test_band_energy_peaks_at_the_matching_scale(period_index):
    scales = [8, 16, 32, 64]
    t = torch.arange(1024, dtype=torch.float64)
    x = torch.sin(2 * math.pi * t / scales[period_index])
    e = band_energies(x, scales)[:, 512:].mean(-1)
    assert int(e.argmax()) == period_index
    assert float(e[period_index]) == pytest.approx(math.log1p(0.25), rel=0.05)
    others = torch.cat([e[:period_index], e[period_index + 1 :]])
    assert float(others.max()) < 0.02 * float(e[period_index])


def test_scale_encoding_shapes_causality_and_zero_init():
    enc = ScaleEncoding(d_model=16, scales=[4, 8, 16], n_probe=4)
    x = torch.randn(2, 50, 16)
    torch.testing.assert_close(enc(x), x)  # zero-initialised projection: off until trained
    assert enc.energies(x).shape == (2, 50, 4, 3)
    torch.nn.init.normal_(enc.proj.weight)
    y = enc(x)
    x2 = x.clone()
    x2[:, 30:] += 3.0
    torch.testing.assert_close(enc(x2)[:, :30], y[:, :30])
    with pytest.raises(ValueError, match="scales"):
        ScaleEncoding(d_model=16, scales=[1, 8])


def test_wavelet_scattering_encoding():
    pytest.importorskip("kymatio", reason="kymatio (dev extra) provides the scattering front end")
    torch.manual_seed(0)
    enc = WaveletScatteringEncoding(d_model=16, J=2, n_probe=3)
    x = torch.randn(2, 64, 16)
    torch.testing.assert_close(enc(x), x)  # zero-initialised projection: off at start
    torch.nn.init.normal_(enc.proj.weight)
    for t in (64, 37):  # any length >= 2**J, one operator per length, same parameters
        y = enc(x[:, :t])
        assert y.shape == (2, t, 16) and torch.isfinite(y).all() and not torch.allclose(y, x[:, :t])
    assert "_operators" not in str(list(enc.state_dict()))
    # Non-causal by design: the future changes the past (why the model refuses it with forecasting).
    x2 = x.clone()
    x2[:, 40:] += 5.0
    assert not torch.allclose(enc(x2)[:, :32], enc(x)[:, :32])
    with pytest.raises(ValueError, match="at least 2\\*\\*J = 4"):
        enc(x[:, :3])


def test_portable_scan_runs_in_float32_under_autocast():
    x, dt, A, B, C = (t.float() for t in _ssd_inputs(l=24))
    ref, _ = ssd_chunked(x, dt, A, B, C, chunk_size=8)
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        y, state = ssd_chunked(x, dt, A, B, C, chunk_size=8)
    assert state.dtype == torch.float32
    torch.testing.assert_close(y, ref)


@pytest.mark.skipif(not (importable("triton") and importable("mamba_ssm")),
                    reason="needs triton and mamba_ssm's sources (make setup installs both)")
def test_fused_path_equals_portable_in_the_triton_interpreter():
    """mamba_ssm's real Triton SSD kernels, run on CPU by Triton's interpreter, against the portable
    path: output, final state and every gradient (forward and backward kernels), over several chunks
    and with one and two B/C groups. The CUDA test above repeats this on the GPU machine."""
    report = run_interpreted("triton_interpreter_mamba.py")
    assert len(report["cases"]) == 2
    for case, diffs in report["cases"].items():
        assert len(diffs) == 2 + 1 + 8, case  # y, state, input grad and the 8 parameter grads
        for key, d in diffs.items():
            assert d["max_abs"] > 0, (case, key)  # every quantity is exercised
            assert d["max_diff"] <= 1e-4 * d["max_abs"] + 1e-8, (case, key, d)


def test_fused_branch_calls_kernels_with_mamba_ssm_conventions(monkeypatch):
    """The CUDA branch, run on CPU with stand-ins that follow the documented semantics of
    ``mamba_chunk_scan_combined`` (dt_bias added and softplus applied inside) and
    ``causal_conv1d_fn`` ((B, D, L) input, (D, W) weight, SiLU): it must equal the portable path."""
    import torch.nn.functional as F

    calls = {}

    def scan(x, dt, A, B, C, chunk_size, D=None, z=None, dt_bias=None, initial_states=None,
             seq_idx=None, dt_softplus=False, return_final_states=False, **_):
        calls["scan"] = (z, dt_softplus, return_final_states)
        if dt_bias is not None:
            dt = dt + dt_bias
        dt = F.softplus(dt) if dt_softplus else dt
        y, s = ssd_chunked(x, dt, A, B, C, chunk_size=64, D=D, initial_states=initial_states)
        return (y, s) if return_final_states else y

    def conv(x, weight, bias=None, activation=None):
        calls["conv"] = (tuple(x.shape), tuple(weight.shape), activation)
        y = F.conv1d(x, weight.unsqueeze(1), bias, padding=weight.shape[-1] - 1, groups=x.shape[1])[..., : x.shape[-1]]
        return F.silu(y) if activation == "silu" else y

    torch.manual_seed(0)
    m = Mamba2(d_model=16, d_state=8, headdim=8, kernels="portable")
    u = torch.randn(2, 24, 16)
    ref, ref_state = m(u, return_state=True)
    monkeypatch.setattr(mamba2_module, "_FUSED", {"scan": scan, "conv": conv})
    monkeypatch.setattr(Mamba2, "_use_fused", lambda self, x: True)
    y, state = m(u, return_state=True)
    torch.testing.assert_close(y, ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(state, ref_state, rtol=1e-5, atol=1e-5)
    assert calls["scan"] == (None, True, True)
    assert calls["conv"] == ((2, m.conv_dim, 24), (m.conv_dim, 4), "silu")


def test_portable_scan_and_block_run_on_the_meta_device():
    # The module docstring promises the portable scan runs on meta (shape inference without memory);
    # torch.autocast has no meta backend, so the autocast guard must not be entered there.
    x, dt, A, B, C = (t.to("meta") for t in _ssd_inputs(l=20))
    y, state = ssd_chunked(x, dt, A, B, C, chunk_size=8, D=torch.ones(4, device="meta"))
    assert y.device.type == "meta" and y.shape == (2, 20, 4, 3) and state.shape == (2, 4, 3, 5)
    with torch.device("meta"):
        m = Mamba2(d_model=16, d_state=8, headdim=8, kernels="portable")
        out, state = m(torch.empty(2, 10, 16), return_state=True)
    assert out.shape == (2, 10, 16) and state.shape == (2, 4, 8, 8)


def test_chunked_ssd_on_an_empty_sequence_passes_the_state_through():
    # Streaming may hand the scan an empty piece: no output, and the carried state unchanged.
    x, dt, A, B, C = _ssd_inputs(l=0)
    s0 = torch.randn(2, 4, 3, 5, dtype=torch.float64)
    y, state = ssd_chunked(x, dt, A, B, C, chunk_size=8, D=torch.ones(4, dtype=torch.float64), initial_states=s0)
    assert y.shape == (2, 0, 4, 3)
    torch.testing.assert_close(state, s0, rtol=0, atol=0)


def test_wavelet_scattering_encoding_names_a_bad_input_shape():
    pytest.importorskip("kymatio", reason="kymatio (dev extra) provides the scattering front end")
    enc = WaveletScatteringEncoding(d_model=16, J=2, n_probe=3)
    with pytest.raises(ValueError, match="x: needs shape"):
        enc(torch.randn(64, 16))


def test_float64_block_keeps_float64_precision():
    # A float64 block (gradient checks, reference runs) must not round dt and A through float32.
    import torch.nn.functional as F

    from models.backbones.ssd import ssd_naive

    torch.manual_seed(0)
    m = Mamba2(d_model=16, d_state=8, headdim=8, kernels="portable").double()
    u = torch.randn(2, 24, 16, dtype=torch.float64)
    y = m(u)
    z, xbc, dt = torch.split(m.in_proj(u), [m.d_inner, m.conv_dim, m.nheads], dim=-1)
    xbc = m._conv(xbc, False)
    x, B, C = torch.split(xbc, [m.d_ssm, m.ngroups * m.d_state, m.ngroups * m.d_state], -1)
    ref, _ = ssd_naive(x.reshape(2, 24, m.nheads, m.headdim), F.softplus(dt + m.dt_bias), -torch.exp(m.A_log),
                       B.reshape(2, 24, m.ngroups, m.d_state), C.reshape(2, 24, m.ngroups, m.d_state), D=m.D)
    ref = m.out_proj(m.norm(ref.reshape(2, 24, m.d_ssm), z))
    assert y.dtype == torch.float64
    torch.testing.assert_close(y, ref, rtol=1e-12, atol=1e-12)


def test_a_failing_fused_scan_falls_back_to_the_portable_path(monkeypatch, caplog):
    # With kernels="auto" a scan that cannot compile (no C compiler for Triton, a kernel bug) must not
    # stop training: the portable path gives the same output, once warned; kernels="fused" still raises.
    def broken(*args, **kwargs):
        raise RuntimeError("Failed to find C compiler")

    torch.manual_seed(0)
    m = Mamba2(d_model=16, d_state=8, headdim=8, kernels="portable")
    u = torch.randn(2, 24, 16)
    want = m(u)
    monkeypatch.setattr(mamba2_module, "_FUSED", {"scan": broken})
    monkeypatch.setattr(mamba2_module, "_FUSED_ERROR", "")
    monkeypatch.setattr(Mamba2, "_use_fused", lambda self, x: "scan" in mamba2_module._FUSED)
    m.kernels = "auto"
    with caplog.at_level("WARNING", logger="models.backbones"):
        torch.testing.assert_close(m(u), want)
    assert mamba2_module._FUSED == {} and "Failed to find C compiler" in caplog.text
    monkeypatch.setattr(mamba2_module, "_FUSED", {"scan": broken})
    m.kernels = "fused"
    with pytest.raises(RuntimeError, match="C compiler"):
        m(u)


def test_mamba2_refuses_an_empty_sequence_by_name():
    # A length-0 input used to fail deep in conv1d; it is an input error, named as one.
    from models.backbones.mamba2 import Mamba2

    block = Mamba2(d_model=16, d_state=4, headdim=8)
    with pytest.raises(ValueError, match=r"u: needs shape \(batch, length >= 1, 16\), got \(2, 0, 16\)"):
        block(torch.randn(2, 0, 16))
    assert block(torch.randn(2, 1, 16)).shape == (2, 1, 16)
