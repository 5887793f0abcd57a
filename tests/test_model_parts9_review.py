"""Review round 9: NeuroFMx building blocks used directly (tokenizers, Perceiver-IO, PopT, heads)."""
import pytest
import torch

from models.perceiver import PerceiverIOEncoder
from models.popt import PopT, channel_summaries
from models.tokenizers import ContinuousTokenizer
from models.tokenizers.audio import AudioTokenizer
from models.tokenizers.base import ChannelPatchTokenizer
from models.tokenizers.multimodal import MultimodalTokenizer
from models.tokenizers.video import VideoTokenizer

D = 8


@pytest.mark.parametrize("patch_size", [0, -1, 2.5, "abc"])
def test_audio_patch_size_is_validated_at_build(patch_size):
    # 0 built Linear(0, D) and failed in forward with ZeroDivisionError; 2.5 was read as 2 silently
    with pytest.raises(ValueError, match=r"model.tokenizers.audio: patch_size"):
        MultimodalTokenizer(d_model=D, patch_size=2, modalities={"lfp": {}, "audio": {"n_mels": 4,
                                                                                    "patch_size": patch_size}})


@pytest.mark.parametrize("patch_size", [0, -2, 1.5])
def test_video_patch_size_is_validated_at_build(patch_size):
    # 0 built a Conv3d of kernel 0 and failed in forward with "non-positive stride is not supported"
    with pytest.raises(ValueError, match=r"patch_size"):
        VideoTokenizer(d_model=D, patch_size=patch_size)


def test_channel_patch_tokenizer_refuses_fractional_patch_size():
    with pytest.raises(ValueError, match=r"patch_size"):  # 2.5 was read as 2 silently
        ChannelPatchTokenizer(d_model=D, patch_size=2.5)
    with pytest.raises(ValueError, match=r"patch_size"):  # "abc" failed inside int() without a name
        ContinuousTokenizer(d_model=D, patch_size="abc")
    assert ChannelPatchTokenizer(d_model=D, patch_size=4.0).patch_size == 4  # whole floats (YAML 4.0) still work


def test_video_tokens_of_a_partial_window_sit_in_the_bin_of_their_last_frame():
    # 7 frames, 4 frames per token: one token over frames 0..3 (the partial patch is dropped by the strided
    # conv). Frame 3 ends at 4/7 of the window: common bin 2 of 4, not the last bin 3 (which assumed the
    # token covered the whole window and put it in a later chunk than its frames).
    torch.manual_seed(0)
    tok = VideoTokenizer(d_model=D, patch_size=4)
    out = tok(torch.rand(1, 3, 7, 8, 8), num_time_tokens=4)
    assert out.time_index.tolist() == [[2]]
    # 30 frames -> 7 tokens over 28 frames on 30 common bins: token n ends at frame 4 (n + 1)
    out = tok(torch.rand(1, 3, 30, 8, 8), num_time_tokens=30)
    assert out.time_index[0].tolist() == [4 * (n + 1) - 1 for n in range(7)]
    # whole patches: unchanged
    out = tok(torch.rand(1, 3, 8, 8, 8), num_time_tokens=4)
    assert out.time_index[0].tolist() == [1, 3]


def test_perceiver_mask_of_the_wrong_shape_is_a_value_error():
    enc = PerceiverIOEncoder(d_model=D, n_heads=2).eval()
    x, t = torch.randn(2, 6, D), torch.arange(6).expand(2, 6)
    with pytest.raises(ValueError, match=r"mask: needs shape \(B, N\) = \(2, 6\)"):  # a broadcast RuntimeError
        enc(x, mask=torch.ones(2, 5, dtype=torch.bool), time_index=t)


def test_perceiver_float_time_index_is_a_value_error():
    enc = PerceiverIOEncoder(d_model=D, n_heads=2).eval()
    x, t = torch.randn(2, 6, D), torch.arange(6).expand(2, 6)
    with pytest.raises(ValueError, match=r"time_index: needs an integer"):  # was "scatter(): Expected dtype int64"
        enc(x, time_index=t.float())


def test_popt_mask_all_false_in_one_sample_is_finite_and_batch_invariant():
    torch.manual_seed(0)
    popt = PopT(d_model=D, n_heads=2).eval()
    x = torch.randn(2, 3, D)
    mask = torch.tensor([[False] * 3, [True, True, False]])
    out = popt(x, mask=mask)
    assert bool(out.isfinite().all())
    torch.testing.assert_close(out[1:], popt(x[1:, :2]), atol=1e-6, rtol=1e-6)


def _heads():
    from models.heads import BehaviorHead, ForecastHead, MaskedReconstructionHead

    torch.manual_seed(0)
    return (BehaviorHead(d_model=D, patch_size=2, n_features=3), ForecastHead(d_model=D, patch_size=2, n_channel_ids=4),
            MaskedReconstructionHead(d_model=D, patch_size=2, n_channel_ids=4))


def test_heads_refuse_a_target_longer_than_the_latents_cover():
    # 4 steps of 2 samples cover 8 samples: an 11-sample target lost its last 3 samples silently, and the
    # prediction came back (B, 8, F) although the docstrings promise the target's T
    behavior, forecast, recon = _heads()
    z = torch.randn(2, 4, D)
    with pytest.raises(ValueError, match=r"target: has 11 time samples, more than the 4 latent steps"):
        behavior(z, target=torch.randn(2, 11, 2))
    for head in (forecast, recon):
        with pytest.raises(ValueError, match=r"target: has 11 time samples, more than the 4 latent steps"):
            head(z, target=torch.randn(2, 3, 11))


def test_heads_keep_the_target_length_for_a_partial_last_step():
    behavior, forecast, recon = _heads()
    z = torch.randn(2, 4, D)
    assert behavior(z, target=torch.randn(2, 7, 2)).prediction.shape == (2, 7, 2)
    assert recon(z, target=torch.randn(2, 3, 7)).prediction.shape == (2, 3, 7)
    assert forecast(z, target=torch.randn(2, 3, 7)).prediction.shape == (2, 3, 8)  # shifted by horizon: S * P


def test_contrastive_head_names_a_view_of_the_wrong_width():
    from models.heads import ContrastiveHead

    head = ContrastiveHead(dim_a=D, dim_b=3)
    with pytest.raises(ValueError, match=r"b: has 5 features on the last axis, the head takes dim_b=3"):
        head(torch.randn(2, 4, D), torch.randn(2, 5))  # was LayerNorm's "normalized_shape=[3]" RuntimeError
    with pytest.raises(ValueError, match=r"a: has 6 features on the last axis, the head takes dim_a=8"):
        head(torch.randn(2, 4, 6), torch.randn(2, 3))


def test_contrastive_and_adversarial_masks_of_the_wrong_shape_are_value_errors():
    from models.heads import ContrastiveHead, DomainAdversarialHead

    z = torch.randn(2, 4, D)
    head = ContrastiveHead(dim_a=D, dim_b=3, pairing="time")
    with pytest.raises(ValueError, match=r"b_mask: needs shape \(B, S'\) = \(2, 8\)"):  # was a reshape RuntimeError
        head(z, torch.randn(2, 8, 3), b_mask=torch.ones(2, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"a_mask: needs shape \(B, S\) = \(2, 4\)"):
        head(z, torch.randn(2, 8, 3), a_mask=torch.ones(2, 3, dtype=torch.bool))
    adversarial = DomainAdversarialHead(d_model=D, n_domains=3)
    with pytest.raises(ValueError, match=r"mask: needs shape \(B, S\) = \(2, 4\)"):  # was a broadcast RuntimeError
        adversarial(z, target=torch.tensor([0, 1]), mask=torch.ones(2, 3))


def test_popt_from_tokens_refuses_tokens_without_channels():
    # time_mix tokens all carry channel_index -1: every token was ignored and the K tokens came out the same
    # for any input (only the seeds attending to the null key)
    torch.manual_seed(0)
    popt = PopT(d_model=D, n_heads=2).eval()
    tok = ContinuousTokenizer(d_model=D, patch_size=2, layout="time_mix")
    with pytest.raises(ValueError, match=r"tokens: no token belongs to a channel"):
        popt.from_tokens(tok(torch.randn(2, 3, 8)))
    per_channel = ContinuousTokenizer(d_model=D, patch_size=2)
    a, b = popt.from_tokens(per_channel(torch.randn(2, 3, 8))), popt.from_tokens(per_channel(torch.randn(2, 3, 8)))
    assert a.shape == (2, 4, D) and not torch.allclose(a, b)


def test_behaviour_with_no_features_is_padding_like_an_absent_modality():
    # (B, T, 0) behaviour was read as real input (an all-zero patch per step), changing the latents; the
    # docstring: "A sample with no real feature has no behaviour: its tokens are padding"
    from models.tokenizers.behavior import BehaviorTokenizer

    tok = BehaviorTokenizer(d_model=D, patch_size=2, n_features=3)
    assert not bool(tok(torch.randn(2, 8, 0)).mask.any())
    assert not bool(tok(torch.randn(2, 8, 0), mask=torch.zeros(2, 0, dtype=torch.bool)).mask.any())
    assert bool(tok(torch.randn(2, 8, 2)).mask.all())

    from models.neurofmx import NeuroFMx

    torch.manual_seed(0)
    model = NeuroFMx(d_model=16, patch_size=4, tokenizers={"lfp": {"n_channels": 4}, "behavior": {"n_features": 2}},
                     perceiver={"n_heads": 2}, ssm={"headdim": 16, "d_state": 8, "chunk_size": 8},
                     popt={"n_heads": 2}, heads={"forecast": {"keys": ["lfp"]}}).eval()
    lfp = torch.randn(2, 3, 32)
    with torch.no_grad():
        ref = model.encode({"lfp": lfp})["ssm"]
        out = model.encode({"lfp": lfp, "behavior": torch.randn(2, 32, 0)})["ssm"]
    torch.testing.assert_close(out, ref, atol=1e-6, rtol=1e-6)


def test_channel_readout_refuses_non_integer_float_ids():
    # .long() read channel 2.5 as channel 2 (the tokenizers already refuse it; a forecast target no tokenizer
    # reads reached the readout unchecked)
    from models.heads import ForecastHead

    head = ForecastHead(d_model=D, patch_size=2, n_channel_ids=4)
    z, target = torch.randn(2, 4, D), torch.randn(2, 2, 8)
    with pytest.raises(ValueError, match=r"channel_ids: must be integers"):
        head(z, target=target, channel_ids=torch.tensor([[0.0, 2.5], [1.0, 3.0]]))
    whole = head(z, target=target, channel_ids=torch.tensor([[0.0, 2.0], [1.0, 3.0]])).prediction
    torch.testing.assert_close(whole, head(z, target=target, channel_ids=torch.tensor([[0, 2], [1, 3]])).prediction)
    masked = torch.tensor([[True, False], [True, True]])  # a padded channel may hold anything
    head(z, target=target, channel_mask=masked, channel_ids=torch.tensor([[0.0, 2.5], [1.0, 3.0]]))


@pytest.mark.parametrize("n_time", [0, -3, 2.5, "6"])
def test_perceiver_n_time_must_be_a_whole_number_of_bins(n_time):
    # 0 returned (B, 0, D) latents (every token dropped), 2.5 was read as 2 (bins 2.. dropped), -3 failed in arange
    enc = PerceiverIOEncoder(d_model=D, n_heads=2).eval()
    x, t = torch.randn(2, 6, D), torch.arange(6).expand(2, 6)
    with pytest.raises(ValueError, match=r"n_time: must be an integer >= 1"):
        enc(x, time_index=t, n_time=n_time)
    assert enc(x, time_index=t, n_time=6.0).latents.shape == (2, 6, D)  # a whole float still works


def test_a_modality_with_no_channel_is_not_scored_as_a_zero_loss():
    # Was: {"lfp": (2, 0, 32)} without a mask counted forecast_lfp as scored with loss exactly 0, pulling the
    # epoch mean down and that head's uncertainty weight up; heads with nothing to score are to be skipped.
    from models.neurofmx import NeuroFMx

    torch.manual_seed(0)
    model = NeuroFMx(d_model=16, patch_size=4, tokenizers={"lfp": {"n_channels": 4}, "behavior": {"n_features": 2}},
                     perceiver={"n_heads": 2}, ssm={"headdim": 16, "d_state": 8, "chunk_size": 8},
                     popt={"n_heads": 2}, heads={"forecast": {"keys": ["lfp"]},
                                                 "behavior": {"n_features": 2}}).eval()
    beh = torch.randn(2, 32, 2)
    with torch.no_grad():
        full = model({"lfp": torch.randn(2, 4, 32), "behavior": beh})
        empty = model({"lfp": torch.randn(2, 0, 32), "behavior": beh})
        no_beh = model({"lfp": torch.randn(2, 4, 32), "behavior": torch.randn(2, 32, 0)})
    assert {"forecast_lfp", "behavior"} <= set(full["scored"])
    assert "forecast_lfp" not in empty["scored"] and "forecast_lfp" not in empty["losses"]
    assert "behavior" in empty["scored"]  # the other head still scores
    assert "behavior" not in no_beh["scored"] and "forecast_lfp" in no_beh["scored"]
