"""Review-round regressions for the seed models as a user trains and samples them (issue 8):
fractal attention patterns, the byte model's generate/data, and ``fmx infer``."""
import pytest
import torch

from models.byte.model import FractalByteLM, generate


def _tiny_lm():
    torch.manual_seed(0)
    return FractalByteLM(d_model=16, n_layers=1, n_fractals=1, depth_range=(1, 1), dim_range=(8, 8),
                         mamba={"d_state": 4, "headdim": 8}).eval()


def test_generate_takes_a_tensor_prompt_like_a_list():
    # ``not prompt`` on a 2-element tensor raised "Boolean value of Tensor ... is ambiguous".
    model = _tiny_lm()
    assert generate(model, torch.tensor([97, 98]), max_new=3) == generate(model, [97, 98], max_new=3)


@pytest.mark.parametrize("bad", [300, -1, 259])
def test_generate_refuses_ids_outside_the_vocabulary_by_name(bad):
    # Was an IndexError "index out of range in self" from the embedding.
    with pytest.raises(ValueError, match=rf"prompt: .*\[{bad}\]"):
        generate(_tiny_lm(), [97, bad], max_new=1)


@pytest.mark.parametrize("temperature", [1e39, 1e300])
def test_generate_with_a_huge_temperature_samples_instead_of_crashing(temperature):
    # 1e39 is inf in float32 and -inf / inf = NaN for the masked PAD/BOS: multinomial raised.
    got = generate(_tiny_lm(), [97], max_new=4, temperature=temperature, top_k=5, stop_at_eos=False,
                   generator=torch.Generator().manual_seed(0))
    assert len(got) == 5 and all(0 <= i < 256 for i in got)


@pytest.mark.parametrize("field, options", [("temperature", {"temperature": -1.0}), ("max_new", {"max_new": -1})])
def test_generate_refuses_negative_temperature_and_length_by_name(field, options):
    # Both were silently accepted (greedy decoding; the bare prompt back).
    with pytest.raises(ValueError, match=field):
        generate(_tiny_lm(), [97], **options)


@pytest.mark.parametrize("max_bytes", [-5, 1, 0])
def test_byte_data_refuses_a_corpus_cap_below_two_bytes_by_name(tmp_path, max_bytes):
    # -5 silently trained on the first file minus its last 5 bytes; 1 failed later with "ids: needs at least 2 bytes".
    from models.byte.data import build_datamodule

    (tmp_path / "a.txt").write_bytes(b"hello world\n")
    (tmp_path / "b.txt").write_bytes(b"second file\n")
    dm = build_datamodule({"data": {"path": str(tmp_path), "max_bytes": max_bytes}})
    with pytest.raises(ValueError, match="data.max_bytes"):
        dm.setup()


def test_byte_data_takes_a_corpus_cap_given_as_text(tmp_path):
    # A command-line override can arrive as a string: '>=' between int and str raised a TypeError.
    from models.byte.data import build_datamodule

    (tmp_path / "a.txt").write_bytes(b"hello world, hello bytes\n")
    dm = build_datamodule({"data": {"path": str(tmp_path), "max_bytes": "10", "seq_len": 4}})
    dm.setup()
    assert dm.train_set.ids.numel() == 9 and dm.val_set.ids.numel() <= 10  # 90 % of the 10 capped bytes


@pytest.mark.parametrize("name", ["hilbert", "cantor", "dragon", "julia", "fractal_blend"])
def test_patterns_keep_float64_precision_and_pass_gradcheck(name):
    # Scores ran in float32 for float64 inputs too: gradcheck failed and a 1e-10 change of q gave exactly 0.
    from models.attention import build_pattern

    torch.manual_seed(0)
    pattern = build_pattern(name, n_heads=1).double()
    q, k, v = (torch.randn(1, 1, 5, 2, dtype=torch.float64, requires_grad=True) for _ in range(3))
    assert torch.autograd.gradcheck(lambda a, b, c: pattern(a, b, c), (q, k, v))


@pytest.mark.parametrize("name", ["hilbert", "cantor", "dragon", "julia", "fractal_blend"])
def test_perceiver_latent_of_an_empty_chunk_attends_its_null_key_whatever_the_batch(name):
    # One latent per chunk and at most one token per chunk: 1 query vs 2 keys (token + null) looked like
    # self-attention, so the latent of an empty chunk counted as a padded query and got zeros (not even
    # the null key); with a 2-token chunk elsewhere in the batch it got the null value. SDPA agrees with neither.
    from models.perceiver import PerceiverIOEncoder

    torch.manual_seed(0)
    enc = PerceiverIOEncoder(d_model=8, n_latents=1, chunk_size=1, n_heads=2, n_self_layers=0, attention=name).eval()
    with torch.no_grad():
        for p in enc.parameters():
            p.add_(torch.randn_like(p) * 0.3)
        tok = torch.randn(1, 3, 8)
        crowded = enc(tok, time_index=torch.tensor([[0, 2, 2]]), n_time=3).latents  # chunk 2 holds two tokens
        sparse = enc(tok[:, :2], time_index=torch.tensor([[0, 2]]), n_time=3).latents  # each chunk at most one
    torch.testing.assert_close(sparse[0, 1], crowded[0, 1])  # chunk 1 is empty in both


@pytest.mark.parametrize("name", ["hilbert", "cantor", "dragon", "julia"])
def test_padded_self_attention_queries_attend_only_real_keys(name):
    from models.attention import build_pattern

    torch.manual_seed(0)
    pattern = build_pattern(name, n_heads=2)
    q, k, v = (torch.randn(2, 2, 9, 4) for _ in range(3))
    mask = (torch.arange(9)[None] < torch.tensor([[5], [9]]))[:, None, None, :]
    out = pattern(q, k, v, mask=mask)
    k2, v2 = k.clone(), v.clone()
    k2[0, :, 5:], v2[0, :, 5:] = 100.0, -100.0
    torch.testing.assert_close(pattern(q, k2, v2, mask=mask), out)
    assert bool(out[0, :, 5:].abs().sum(-1).gt(0).all())  # a weighted mean of real values, not zeros


def test_byte_data_refuses_a_one_byte_corpus_whose_val_bpb_would_read_a_perfect_zero(tmp_path):
    # The only target of a one-byte file is EOS: no byte to score, and val/bpb was logged as 0.0 bits.
    from models.byte.data import build_datamodule

    (tmp_path / "one.txt").write_bytes(b"x")
    dm = build_datamodule({"data": {"path": str(tmp_path / "one.txt")}})
    with pytest.raises(ValueError, match=r"data.path: .*one.txt.* 1 byte"):
        dm.setup()


def test_val_bpb_of_a_batch_without_real_bytes_carries_no_weight():
    # An EOS-only batch logged bpb 0.0 with weight 1, pulling the epoch's val/bpb towards a perfect score.
    from models.byte.lightning import FractalByteModule
    from models.byte.tokenizer import EOS

    module = FractalByteModule(model={"d_model": 16, "n_layers": 1, "dim_range": (8, 8), "mamba": {"headdim": 16}})
    module.forward = lambda ids: torch.zeros(1, 3, 259)
    weights = {}
    module.log_dict = lambda metrics, **kw: weights.update({k: kw.get("batch_size") for k in metrics})
    module.validation_step((torch.zeros(1, 3, dtype=torch.long), torch.full((1, 3), EOS)), 0)
    assert weights["val/bpb"] == 0


@pytest.mark.parametrize("name", ["hilbert", "cantor", "dragon", "julia", "fractal_blend"])
@pytest.mark.parametrize("lq, lk", [(0, 0), (3, 0), (0, 3)])
def test_patterns_take_an_empty_sequence_like_sdpa(name, lq, lk):
    # Dragon/Julia raised "upper bound and lower bound inconsistent" (arange(-(lk-1), lk) with lk=0),
    # Hilbert "index_select(): self indexing axis dim should be positive"; SDPA gives zeros.
    from models.attention import build_pattern

    q, k, v = torch.randn(1, 2, lq, 4), torch.randn(1, 2, lk, 4), torch.randn(1, 2, lk, 4)
    out = build_pattern(name, n_heads=2)(q, k, v)
    expected = torch.nn.functional.scaled_dot_product_attention(q, k, v)
    assert out.shape == expected.shape == (1, 2, lq, 4) and torch.count_nonzero(out) == 0


@pytest.mark.parametrize("name", ["cantor", "dragon", "julia", "fractal_blend"])
def test_patterns_refuse_a_head_count_other_than_their_own_by_name(name):
    # Per-head biases broadcast against one head: a (1, 1, 6, 4) input silently came back (1, 2, 6, 4).
    from models.attention import build_pattern

    q = torch.randn(1, 1, 6, 4)
    with pytest.raises(ValueError, match=r"n_heads=2.*\(1, 1, 6, 4\).*n_heads=1"):
        build_pattern(name, n_heads=2)(q, q, q)


@pytest.mark.parametrize("drop_path", [-1.0, float("nan"), 1.5])
def test_byte_model_refuses_a_drop_path_outside_0_1_by_name(drop_path):
    # Was accepted: NaN and -1 never dropped a branch, 1.5 always dropped both (one kept at random).
    with pytest.raises(ValueError, match="drop_path"):
        FractalByteLM(d_model=16, drop_path=drop_path, mamba={"d_state": 4, "headdim": 8})


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_generate_refuses_a_model_with_nan_logits_by_name(temperature):
    # A diverged checkpoint: greedy decoding silently emitted byte 0 forever, sampling crashed in multinomial.
    model = _tiny_lm()
    with torch.no_grad():
        model.norm.weight.fill_(float("nan"))
    with pytest.raises(ValueError, match="model: the next-byte logits are not finite"):
        generate(model, [97], max_new=3, temperature=temperature)


def test_read_corpus_joins_every_byte_value_and_empty_files_with_eos(tmp_path):
    from models.byte.data import read_corpus
    from models.byte.tokenizer import EOS

    (tmp_path / "a").write_bytes(b"ab")
    (tmp_path / "b").write_bytes(b"")
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "d").write_bytes(bytes(range(256)))
    got = read_corpus(tmp_path)
    assert got.dtype == torch.long and got.tolist() == [97, 98, EOS, EOS] + list(range(256)) + [EOS]
    assert read_corpus(tmp_path, max_bytes=6).tolist() == [97, 98, EOS, EOS, 0, 1]


@pytest.mark.parametrize("ids", [torch.tensor([97, 98]), torch.tensor([[97.0, 98.0]]), torch.zeros(2, 0, dtype=torch.long)])
def test_byte_model_refuses_ids_of_the_wrong_shape_or_dtype_by_name(ids):
    # (L,) ids failed in Mamba-2 as "u: needs shape (batch, length >= 1, 16)", float ids inside the embedding.
    with pytest.raises(ValueError, match=r"ids: needs an integer \(batch, length >= 1\)"):
        _tiny_lm()(ids)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_blend_weight_gradients_stay_finite_in_half_precision(dtype):
    # The fp16 blend's weight gradient summed outs * grad over the batch in fp16: inf at inputs ~30.
    from models.attention import build_pattern

    torch.manual_seed(0)
    blend = build_pattern("fractal_blend", n_heads=2).to(dtype)
    q = (torch.randn(1, 2, 11, 4) * 30).to(dtype)
    (blend(q, q, q).float() ** 2).sum().backward()
    assert all(bool(p.grad.float().isfinite().all()) for p in blend.parameters())


def test_byte_model_refuses_a_seed_of_none_whose_architecture_could_not_be_rebuilt():
    # random.Random(None) drew a clock-seeded architecture: its checkpoint failed to load into the next draw.
    with pytest.raises(ValueError, match="seed: must be an integer"):
        FractalByteLM(d_model=16, seed=None, mamba={"d_state": 4, "headdim": 8})


def test_multihead_attention_refuses_pattern_options_with_sdpa():
    # FractalMultiheadAttention(pattern="sdpa", window=3) silently dropped window=3.
    from models.attention import FractalMultiheadAttention

    with pytest.raises(ValueError, match=r"pattern: 'sdpa' takes no pattern options, got \['window'\]"):
        FractalMultiheadAttention(d_model=8, n_heads=2, pattern="sdpa", window=3)


@pytest.mark.parametrize("pattern", ["hilbert", "cantor", "dragon", "julia", "fractal_blend"])
def test_marked_cross_attention_latents_do_not_depend_on_the_batch(pattern):
    # 7 latents against a 4-token context padded to 7 (+ the null key): the counts look like
    # self-attention, and without the mark the padded keys' positions were taken for padded latents.
    from models.perceiver import MultiheadAttention

    torch.manual_seed(0)
    att = MultiheadAttention(d_model=8, n_heads=2, attention=pattern, cross=True).eval()
    q = torch.randn(2, 7, 8)
    ctx = torch.randn(2, 7, 8)
    mask = torch.ones(2, 1, 7, dtype=torch.bool)
    mask[0, :, 4:] = False
    batched = att(q, ctx, mask=mask)
    alone = att(q[:1], ctx[:1, :4], mask=mask[:1, :, :4])
    torch.testing.assert_close(batched[:1], alone, rtol=1e-5, atol=1e-6)
