"""Review-round regressions for the fractal attention patterns, the byte model and the Mamba-2 backbone."""
import pytest
import torch

from models.byte.model import FractalByteLM, generate


def _tiny_lm():
    torch.manual_seed(0)
    return FractalByteLM(d_model=16, n_layers=1, n_fractals=1, depth_range=(1, 1), dim_range=(8, 8),
                         mamba={"d_state": 4, "headdim": 8}).eval()


@pytest.mark.parametrize("temperature", [1e-39, 1e-30])
def test_generate_with_a_tiny_temperature_samples_the_greedy_byte_instead_of_crashing(temperature):
    # logits / 1e-39 overflowed to inf, softmax gave NaN and torch.multinomial raised.
    model = _tiny_lm()
    greedy = generate(model, [97, 98], max_new=3, temperature=0.0)
    got = generate(model, [97, 98], max_new=3, temperature=temperature, generator=torch.Generator().manual_seed(0))
    assert got == greedy


@pytest.mark.parametrize("bad", [float("inf"), float("nan")])
def test_generate_refuses_a_non_finite_temperature_by_name(bad):
    with pytest.raises(ValueError, match="temperature"):
        generate(_tiny_lm(), [97], max_new=1, temperature=bad)


def test_generate_refuses_a_negative_top_k_by_name():
    with pytest.raises(ValueError, match="top_k"):
        generate(_tiny_lm(), [97], max_new=1, temperature=1.0, top_k=-1)


def test_fractional_kernel_refuses_an_infinite_max_alpha_instead_of_returning_nan():
    from models.backbones import FractionalKernel

    with pytest.raises(ValueError, match="max_alpha"):
        FractionalKernel(n_taps=3, min_alpha=0.1, max_alpha=float("inf"), channels=2)


@pytest.mark.parametrize("name, options, field", [
    ("julia", {"iterations": 0}, "iterations"),     # was a NaN output
    ("julia", {"span": float("inf")}, "span"),       # was a NaN output
    ("dragon", {"n_scales": 0}, "n_scales"),         # was a ZeroDivisionError
])
def test_pattern_options_that_gave_nan_or_a_crash_are_refused_by_name(name, options, field):
    from models.attention import build_pattern

    with pytest.raises(ValueError, match=field):
        build_pattern(name, n_heads=2, **options)


@pytest.mark.parametrize("field, value", [("seq_len", 0), ("seq_len", -3), ("windows_per_epoch", 0)])
def test_byte_data_refuses_empty_windows_by_name(tmp_path, field, value):
    # seq_len=0 gave (B, 0) batches and a NaN loss; -3 a torch.stack error; 0 windows a sampler error.
    from models.byte.data import build_datamodule

    (tmp_path / "a.txt").write_bytes(b"hello world\n")
    with pytest.raises(ValueError, match=f"data.{field}"):
        build_datamodule({"data": {"path": str(tmp_path), "batch_size": 2, field: value}})


def test_byte_model_refuses_zero_fractal_modules_by_name():
    # Was accepted, then forward failed with "stack expects a non-empty TensorList".
    with pytest.raises(ValueError, match="n_fractals"):
        FractalByteLM(d_model=16, n_fractals=0, mamba={"d_state": 4, "headdim": 8})


@pytest.mark.parametrize("name", ["hilbert", "cantor", "dragon", "julia"])
def test_pattern_scores_stay_float32_under_fp16_autocast(name):
    # Autocast ran the q.float() @ k.float() einsum in fp16 again: q . k = 9 * 8 * 120^2 > 65504 -> inf -> NaN.
    from models.attention import build_pattern

    torch.manual_seed(0)
    pattern = build_pattern(name, n_heads=2)
    q = torch.randn(1, 2, 9, 8) * 120
    with torch.autocast("cpu", dtype=torch.float16):
        out = pattern(q, q, q)
    torch.testing.assert_close(out, pattern(q, q, q))


def test_ssd_naive_matches_ssd_chunked_on_an_empty_sequence():
    # ssd_chunked returns (B, 0, H, P) and the initial state; the oracle raised on torch.stack([]).
    from models.backbones.ssd import ssd_chunked, ssd_naive

    args = (torch.randn(1, 0, 2, 3), torch.rand(1, 0, 2), -torch.rand(2), torch.randn(1, 0, 1, 4), torch.randn(1, 0, 1, 4))
    init = torch.randn(1, 2, 3, 4)
    y_ref, s_ref = ssd_chunked(*args, chunk_size=4, initial_states=init)
    y, s = ssd_naive(*args, initial_states=init)
    assert y.shape == y_ref.shape == (1, 0, 2, 3)
    torch.testing.assert_close(s, s_ref)


@pytest.mark.parametrize("pattern", ["hilbert", "cantor", "dragon", "julia", "fractal_blend"])
def test_popt_summary_of_a_set_does_not_depend_on_padding_in_the_batch(pattern):
    from models.popt import PopT

    torch.manual_seed(0)
    popt = PopT(d_model=16, n_heads=2, n_layers=1, attention=pattern).eval()
    with torch.no_grad():
        for p in popt.parameters():
            p.add_(torch.randn_like(p) * 0.3)
        sets = [torch.randn(1, 5, 16), torch.randn(1, 12, 16)]
        alone = torch.cat([popt(x) for x in sets])
        # padded to 20 units: 21 keys with the null key, past the 16 cells of the 5- and 12-unit Hilbert grids
        batch = torch.cat([torch.cat([x, torch.randn(1, 20 - x.shape[1], 16)], 1) for x in sets])
        mask = torch.arange(20)[None, :] < torch.tensor([[5], [12]])
        padded = popt(batch, mask=mask)
    torch.testing.assert_close(padded, alone, atol=1e-4, rtol=1e-4)
