"""Tokenizers: shapes, masks (padding never changes real tokens), time indices, bad input."""
import pytest
import torch

from models.tokenizers import (
    AudioTokenizer, BehaviorTokenizer, CalciumTokenizer, ContinuousTokenizer, FMRITokenizer,
    MultimodalTokenizer, SpikesTokenizer, VideoTokenizer,
)

D, P = 16, 4


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("layout", ["channel_patch", "time_mix"])
def test_spikes_shapes_and_time_index(layout):
    tok = SpikesTokenizer(d_model=D, patch_size=P, n_units=50, layout=layout).eval()
    spikes = torch.poisson(torch.full((2, 18, 5), 0.5), generator=_gen())
    out = tok(spikes, unit_ids=torch.arange(5).expand(2, 5))
    n_patches = 5  # ceil(18 / 4)
    n = 5 * n_patches if layout == "channel_patch" else n_patches
    assert out.tokens.shape == (2, n, D) and out.mask.shape == (2, n) and out.mask.all()
    assert out.time_index.max() == n_patches - 1
    if layout == "channel_patch":  # unit-major layout: token c * n_patches + k is unit c, patch k
        assert out.channel_index[0, n_patches] == 1 and out.time_index[0, n_patches] == 0


TIME_MAJOR = {"spikes": True, "calcium": True, "fmri": True, "continuous": False}


def _channel_tokenizer(kind, layout):
    if kind == "spikes":
        return SpikesTokenizer(d_model=D, patch_size=P, n_units=120, layout=layout)
    if kind == "calcium":
        return CalciumTokenizer(d_model=D, patch_size=P, n_neurons=120, layout=layout)
    if kind == "fmri":
        return FMRITokenizer(d_model=D, patch_size=P, n_rois=120, layout=layout)
    return ContinuousTokenizer(d_model=D, patch_size=P, n_channels=120, layout=layout)


@pytest.mark.parametrize("layout", ["channel_patch", "time_mix"])
@pytest.mark.parametrize("kind", ["spikes", "continuous", "calcium", "fmri"])
def test_padded_channels_do_not_change_real_tokens(kind, layout):
    torch.manual_seed(0)
    tok = _channel_tokenizer(kind, layout).eval()
    real = torch.poisson(torch.full((1, 3, 16), 1.0), generator=_gen(1)) + torch.randn(1, 3, 16, generator=_gen(4))
    padded = torch.cat([real, torch.full((1, 2, 16), float("nan"))], dim=1)  # garbage in the padding
    mask = torch.tensor([[True, True, True, False, False]])
    ids, pad_ids = torch.tensor([[4, 7, 2]]), torch.tensor([[4, 7, 2, -1, 999]])
    if TIME_MAJOR[kind]:
        real, padded = real.transpose(1, 2), padded.transpose(1, 2)
    ref = tok(real, **{_id_kw(kind): ids})
    out = tok(padded, mask=mask, **{_id_kw(kind): pad_ids})
    assert torch.isfinite(out.tokens).all()
    if layout == "channel_patch":
        n_real = ref.tokens.shape[1]
        torch.testing.assert_close(out.tokens[:, :n_real], ref.tokens)
        assert out.mask[:, :n_real].all() and not out.mask[:, n_real:].any()
    else:
        torch.testing.assert_close(out.tokens, ref.tokens)


def _id_kw(kind):
    return {"spikes": "unit_ids", "calcium": "neuron_ids", "fmri": "roi_ids", "continuous": "channel_ids"}[kind]


def test_unit_identity_matters():
    tok = SpikesTokenizer(d_model=D, patch_size=P, n_units=20).eval()
    x = torch.ones(1, 8, 2)
    a = tok(x, unit_ids=torch.tensor([[0, 1]])).tokens
    b = tok(x, unit_ids=torch.tensor([[3, 1]])).tokens
    assert not torch.allclose(a[:, :2], b[:, :2]) and torch.allclose(a[:, 2:], b[:, 2:])


def test_continuous_zscore_makes_units_irrelevant_and_masks_channels():
    tok = ContinuousTokenizer(d_model=D, patch_size=P, n_channels=8, key="eeg").eval()
    x = torch.randn(2, 3, 20, generator=_gen(2))
    volts = tok(x * 1e-6)
    micro = tok(x)
    torch.testing.assert_close(volts.tokens, micro.tokens, atol=1e-4, rtol=1e-4)
    batch = {"eeg": torch.cat([x, torch.randn(2, 1, 20) * 1e3], 1),
             "eeg_mask": torch.tensor([[1, 1, 1, 0], [1, 1, 1, 0]], dtype=torch.bool)}
    out = tok.from_batch(batch)
    torch.testing.assert_close(out.tokens[:, : micro.tokens.shape[1]], micro.tokens)
    assert out.tokens.shape == (2, 4 * 5, D)


def test_calcium_and_fmri_shapes():
    ca = CalciumTokenizer(d_model=D, patch_size=P, n_neurons=10)(torch.rand(2, 12, 6))
    assert ca.tokens.shape == (2, 6 * 3, D)
    fm = FMRITokenizer(d_model=D, patch_size=2, n_rois=400, layout="time_mix")(torch.randn(2, 10, 7))
    assert fm.tokens.shape == (2, 5, D) and (fm.channel_index == -1).all()


def test_behavior_masked_features_are_ignored():
    tok = BehaviorTokenizer(d_model=D, patch_size=P, n_features=6).eval()
    x = torch.randn(2, 16, 4, generator=_gen(3))
    ref = tok(x)
    assert ref.tokens.shape == (2, 4, D)
    noisy = x.clone()
    noisy[..., 3] = 1e6
    out = tok(noisy, mask=torch.tensor([[1, 1, 1, 0]] * 2, dtype=torch.bool))
    ref3 = tok(x[..., :3])
    torch.testing.assert_close(out.tokens, ref3.tokens)


def test_audio_and_video_map_to_common_grid():
    audio = AudioTokenizer(d_model=D, n_mels=8, patch_size=4)(torch.randn(2, 8, 40), num_time_tokens=5)
    assert audio.tokens.shape == (2, 10, D)
    assert audio.time_index[0].tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    video = VideoTokenizer(d_model=D, patch_size=2, hidden=4)(torch.rand(1, 3, 8, 16, 16), num_time_tokens=8)
    assert video.tokens.shape == (1, 4, D) and video.time_index[0].tolist() == [1, 3, 5, 7]


def test_audio_and_video_tokens_never_see_later_bins():
    # The forecast path is causal end to end: a token placed in common bin n may only depend on
    # frames inside bins <= n, so changing the frames of the last bins leaves earlier tokens alone.
    torch.manual_seed(0)
    audio_tok = AudioTokenizer(d_model=D, n_mels=8, patch_size=16).eval()
    audio = torch.randn(1, 8, 64)
    late = audio.clone()
    late[..., 44:] += 5.0  # frames 44.. are common bins 11.. of 16; one token spans 4 bins
    a, b = audio_tok(audio, num_time_tokens=16), audio_tok(late, num_time_tokens=16)
    assert a.time_index[0].tolist() == [3, 7, 11, 15]  # the bin of each token's last frame
    early = a.time_index[0] < 11
    torch.testing.assert_close(b.tokens[0, early], a.tokens[0, early])
    # A partial last patch: 9 frames in patches of 4 end at frames 3, 7, 8 (one frame per bin).
    short = AudioTokenizer(d_model=D, n_mels=8, patch_size=4)(torch.randn(1, 8, 9), num_time_tokens=9)
    assert short.time_index[0].tolist() == [3, 7, 8]
    video_tok = VideoTokenizer(d_model=D, patch_size=2, hidden=4).eval()
    video = torch.rand(1, 3, 8, 8, 8)
    late = video.clone()
    late[:, :, 6:] = 1.0  # frames 6.. are common bins 12.. of 16
    a, b = video_tok(video, num_time_tokens=16), video_tok(late, num_time_tokens=16)
    early = a.time_index[0] < 12
    assert early.sum() == 3
    torch.testing.assert_close(b.tokens[0, early], a.tokens[0, early])


def test_multimodal_concatenates_and_offsets_channels():
    mm = MultimodalTokenizer(d_model=D, patch_size=P, modalities={
        "spikes": {"n_units": 10}, "lfp": {"n_channels": 4}, "behavior": {"n_features": 2}, "audio": {"n_mels": 8},
    })
    batch = {"spikes": torch.rand(2, 16, 3), "lfp": torch.randn(2, 2, 16), "behavior": torch.randn(2, 16, 2),
             "audio": torch.randn(2, 8, 32)}
    out = mm(batch)
    assert out.tokens.shape == (2, 3 * 4 + 2 * 4 + 4 + 8, D)
    assert sorted(out.channel_index[0].unique().tolist()) == [-1, 0, 1, 2, 3, 4]
    assert out.time_index.max() == 3 and out.modality_index.max() == 3
    only_lfp = mm({"lfp": batch["lfp"]})
    assert only_lfp.tokens.shape == (2, 8, D)


def test_bad_input_names_the_argument():
    tok = SpikesTokenizer(d_model=D, patch_size=P, n_units=4)
    with pytest.raises(ValueError, match=r"unit_ids: .* \(model.tokenizers.spikes.n_units\) to at least 10"):
        tok(torch.rand(1, 8, 2), unit_ids=torch.tensor([[0, 9]]))
    with pytest.raises(ValueError, match="unit_ids: needs shape"):  # the batch key, not a made-up name
        tok(torch.rand(1, 8, 2), unit_ids=torch.tensor([[0, 1, 2]]))
    with pytest.raises(ValueError, match="spikes"):
        tok(torch.rand(8, 2))
    with pytest.raises(ValueError, match="spikes_mask"):
        tok(torch.rand(1, 8, 2), mask=torch.ones(1, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="layout"):
        SpikesTokenizer(d_model=D, patch_size=P, layout="bogus")
    with pytest.raises(ValueError, match="batch"):
        MultimodalTokenizer(d_model=D, patch_size=P, modalities={"eeg": {}})({"lfp": torch.zeros(1, 1, 4)})


def test_causal_zscore_never_sees_the_future():
    from models.tokenizers.base import causal_zscore_channels

    x = torch.randn(2, 3, 200, dtype=torch.float64) * 50 + 7
    y = causal_zscore_channels(x)
    x2 = x.clone()
    x2[..., 120:] += 1000.0
    torch.testing.assert_close(causal_zscore_channels(x2)[..., :120], y[..., :120])
    # once enough samples are in, the running statistics standardise stationary data
    assert abs(float(y[..., 100:].mean())) < 0.2 and abs(float(y[..., 100:].std()) - 1) < 0.2
