"""Perceiver-IO encoder (time structure, masks, causality, pluggable attention) and PopT invariance."""
import pytest
import torch

from models.perceiver import PerceiverIOEncoder, register_attention, sdpa_attention
from models.popt import PopT, channel_summaries
from models.tokenizers import SpikesTokenizer

D = 16


def _tokens(b=2, n=24, n_time=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, n, D, generator=g)
    t = torch.arange(n_time).repeat(n // n_time).expand(b, n)
    return x, t


def test_latents_form_a_time_series():
    enc = PerceiverIOEncoder(d_model=D, n_latents=2, chunk_size=2, n_heads=2).eval()
    x, t = _tokens()
    out = enc(x, time_index=t, n_time=6)
    assert out.latents.shape == (2, 3 * 2, D)
    assert out.time_index.tolist() == [0, 0, 2, 2, 4, 4] and out.chunk_index.tolist() == [0, 0, 1, 1, 2, 2]
    assert enc(x, time_index=t).latents.shape == out.latents.shape  # n_time inferred


def test_padded_tokens_do_not_change_latents():
    torch.manual_seed(0)
    enc = PerceiverIOEncoder(d_model=D, n_heads=4, n_self_layers=2).eval()
    x, t = _tokens()
    ref = enc(x, time_index=t, n_time=6).latents
    pad = torch.randn(2, 10, D) * 100
    xp = torch.cat([x, pad], 1)
    tp = torch.cat([t, torch.randint(0, 6, (2, 10))], 1)
    mask = torch.cat([torch.ones(2, 24), torch.zeros(2, 10)], 1).bool()
    out = enc(xp, mask=mask, time_index=tp, n_time=6).latents
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


def test_fully_masked_chunk_is_finite():
    enc = PerceiverIOEncoder(d_model=D).eval()
    x, t = _tokens()
    mask = t < 3  # chunks 3..5 have no real tokens
    assert torch.isfinite(enc(x, mask=mask, time_index=t, n_time=6).latents).all()


def test_causal_latents_never_see_the_future():
    enc = PerceiverIOEncoder(d_model=D, n_self_layers=2, latent_attention="causal").eval()
    x, t = _tokens()
    ref = enc(x, time_index=t, n_time=6).latents
    x2 = x.clone()
    x2[t >= 4] += torch.randn_like(x2[t >= 4])  # perturb token bins 4 and 5 only
    out = enc(x2, time_index=t, n_time=6).latents
    torch.testing.assert_close(out[:, :4], ref[:, :4])
    assert not torch.allclose(out[:, 4:], ref[:, 4:])
    full = PerceiverIOEncoder(d_model=D, n_self_layers=1, latent_attention="full").eval()
    assert not torch.allclose(full(x2, time_index=t, n_time=6).latents[:, :4], full(x, time_index=t, n_time=6).latents[:, :4])


def test_attention_is_pluggable():
    calls = []

    def counting(q, k, v, *, mask=None, dropout_p=0.0):
        calls.append(q.shape)
        return sdpa_attention(q, k, v, mask=mask, dropout_p=dropout_p)

    register_attention("counting_test", counting)
    x, t = _tokens()
    ref = PerceiverIOEncoder(d_model=D, n_self_layers=1).eval()
    enc = PerceiverIOEncoder(d_model=D, n_self_layers=1, attention="counting_test").eval()
    enc.load_state_dict(ref.state_dict())
    torch.testing.assert_close(enc(x, time_index=t).latents, ref(x, time_index=t).latents)
    assert len(calls) == 2
    with pytest.raises(ValueError, match="attention"):
        PerceiverIOEncoder(d_model=D, attention="nope")


def test_popt_is_permutation_invariant_and_ignores_padding():
    torch.manual_seed(0)
    popt = PopT(d_model=D, n_summary_tokens=3, n_heads=2, n_layers=2).eval()
    x = torch.randn(2, 7, D)
    mask = torch.tensor([[1, 1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1, 1]], dtype=torch.bool)
    ref = popt(x, mask=mask)
    assert ref.shape == (2, 3, D)
    perm = torch.randperm(7)
    torch.testing.assert_close(popt(x[:, perm], mask=mask[:, perm]), ref, atol=1e-5, rtol=1e-5)
    x2 = x.clone()
    x2[0, 5:] = 1e3  # padded units carry garbage
    torch.testing.assert_close(popt(x2, mask=mask)[0], ref[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(popt(x[:1, :5])[0], ref[0], atol=1e-5, rtol=1e-5)


def test_channel_summaries_from_tokenizer_output():
    tok = SpikesTokenizer(d_model=D, patch_size=4, n_units=8).eval()
    spikes = torch.rand(2, 12, 4)
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]], dtype=torch.bool)
    out = tok(spikes, mask=mask)
    summ, smask = channel_summaries(out)
    assert summ.shape == (2, 4, D) and smask.tolist() == mask.tolist()
    torch.testing.assert_close(summ[1, 2], out.tokens[1, 6:9].mean(0))
    assert PopT(d_model=D, n_summary_tokens=2, n_heads=2).from_tokens(out).shape == (2, 2, D)


def test_grouped_cross_attention_matches_dense_masking():
    torch.manual_seed(1)
    enc = PerceiverIOEncoder(d_model=D, n_latents=2, chunk_size=2, n_heads=2, n_self_layers=0).eval()
    x, t = _tokens(n=30, n_time=5)
    mask = torch.rand(2, 30) > 0.3
    out = enc(x, mask=mask, time_index=t, n_time=5).latents
    # Reference: every latent attends to all N tokens with a (latent chunk == token chunk) mask.
    chunk_of_latent = torch.arange(3).repeat_interleave(2)
    from models.tokenizers.base import sinusoidal_encoding
    q = (enc.latent_array.repeat(3, 1) + sinusoidal_encoding(chunk_of_latent, D)).expand(2, -1, -1)
    dense_mask = (chunk_of_latent[None, :, None] == (t // 2)[:, None, :]) & mask[:, None, :]
    ref = enc.norm(enc.cross(q, x, mask=dense_mask))
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


def test_group_by_chunk_layout():
    from models.perceiver import group_by_chunk
    tokens = torch.arange(6.0).view(1, 6, 1)
    chunk = torch.tensor([[1, 0, 1, 0, 2, 1]])
    mask = torch.tensor([[True, True, True, True, True, False]])
    grouped, valid = group_by_chunk(tokens, mask, chunk, 3)
    assert grouped.shape == (3, 2, 1)
    assert grouped[..., 0].tolist() == [[1.0, 3.0], [0.0, 2.0], [4.0, 0.0]]
    assert valid.tolist() == [[True, True], [True, True], [True, False]]


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_tokenizers_perceiver_popt_heads_on_cuda_bf16():
    from models.heads import ForecastHead
    from models.popt import channel_summaries
    from models.tokenizers import MultimodalTokenizer

    dev = torch.device("cuda")
    mm = MultimodalTokenizer(d_model=D, patch_size=4, modalities={"spikes": {"n_units": 8}, "lfp": {"n_channels": 4}}).to(dev)
    enc = PerceiverIOEncoder(d_model=D, n_heads=2).to(dev)
    popt = PopT(d_model=D, n_summary_tokens=2, n_heads=2).to(dev)
    head = ForecastHead(d_model=D, patch_size=4, n_channel_ids=4).to(dev)
    batch = {"spikes": torch.poisson(torch.full((2, 32, 8), 0.3)).to(dev), "lfp": torch.randn(2, 3, 32, device=dev),
             "lfp_mask": torch.tensor([[True, True, False], [True, True, True]], device=dev)}
    with torch.autocast("cuda", dtype=torch.bfloat16):
        tok = mm(batch)
        lat = enc(tok.tokens, mask=tok.mask, time_index=tok.time_index, n_time=8).latents
        summ, smask = channel_summaries(tok)
        pooled = popt(summ, mask=smask)
        out = head(lat, target=batch["lfp"], channel_mask=batch["lfp_mask"])
    (out.loss + pooled.float().pow(2).mean()).backward()
    assert lat.shape == (2, 8, D) and pooled.shape == (2, 2, D) and torch.isfinite(out.loss)
    assert all(torch.isfinite(p.grad).all() for p in enc.parameters() if p.grad is not None)


def test_padded_units_do_not_change_latents_end_to_end():
    from models.tokenizers import MultimodalTokenizer

    torch.manual_seed(0)
    mm = MultimodalTokenizer(d_model=D, patch_size=4, modalities={"spikes": {"n_units": 16}, "lfp": {"n_channels": 8}}).eval()
    enc = PerceiverIOEncoder(d_model=D, n_heads=2, n_self_layers=1).eval()
    popt = PopT(d_model=D, n_summary_tokens=2, n_heads=2).eval()
    spikes, lfp = torch.poisson(torch.full((1, 24, 3), 0.5)), torch.randn(1, 2, 24)

    def run(batch):
        tok = mm(batch)
        summ, smask = channel_summaries(tok)
        return enc(tok.tokens, mask=tok.mask, time_index=tok.time_index, n_time=6).latents, popt(summ, mask=smask)

    ref_lat, ref_pop = run({"spikes": spikes, "lfp": lfp})
    padded = {"spikes": torch.cat([spikes, torch.full((1, 24, 2), 7.0)], 2),
              "spikes_mask": torch.tensor([[True, True, True, False, False]]),
              "unit_ids": torch.tensor([[0, 1, 2, 9, 9]]),
              "lfp": torch.cat([lfp, torch.randn(1, 1, 24) * 50], 1), "lfp_mask": torch.tensor([[True, True, False]])}
    lat, pop = run(padded)
    torch.testing.assert_close(lat, ref_lat, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(pop, ref_pop, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("attention", ["cantor", "hilbert", {"name": "dragon"}, "fractal_blend"])
def test_fractal_patterns_are_selectable_by_name(attention):
    torch.manual_seed(0)
    sdpa = PerceiverIOEncoder(d_model=D, n_heads=2, n_self_layers=1)
    enc = PerceiverIOEncoder(d_model=D, n_heads=2, n_self_layers=1, attention=attention)
    x, t = _tokens()
    mask = torch.rand(2, 24) > 0.2
    out = enc(x, mask=mask, time_index=t, n_time=6).latents
    assert out.shape == (2, 6, D) and torch.isfinite(out).all()
    out.sum().backward()
    assert all(p.grad is not None for p in enc.cross.parameters())
    assert sum(p.numel() for p in enc.parameters()) >= sum(p.numel() for p in sdpa.parameters())
    assert PopT(d_model=D, n_heads=2, attention=attention)(x[:, :7]).shape == (2, 4, D)


def test_unknown_attention_lists_the_choices():
    with pytest.raises(ValueError, match="cantor"):
        PerceiverIOEncoder(d_model=D, attention="mandelbrot")


def test_fractal_self_attention_keeps_query_positions_despite_the_null_key():
    # MultiheadAttention appends one null key after the real keys; a position-based pattern must
    # still place self-attention query i at key position i (a 1-cell Hilbert window: key i only).
    from models.perceiver import MultiheadAttention

    torch.manual_seed(0)
    attn = MultiheadAttention(d_model=8, n_heads=1, attention={"name": "hilbert", "window": 1})
    x = torch.randn(1, 10, 8)
    with torch.no_grad():
        ref = attn(x, x)
        for j in range(10):
            context = x.clone()
            context[0, j] += 1.0
            changed = (attn(x, context) - ref).abs().amax(-1)[0] > 1e-6
            assert changed.nonzero().flatten().tolist() == [j]
