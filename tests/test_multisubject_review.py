"""Review: many subjects and mixed modalities in one batch (padding masks, missing modalities, heads' edge cases)."""
from __future__ import annotations

import pytest
import torch

from models.data.batch import collate_batch
from models.neurofmx import NeuroFMx

torch.set_num_threads(1)


def _assert_close(actual: torch.Tensor, expected: torch.Tensor, atol: float = 1e-6) -> None:
    # torch.testing.assert_close's first call imports torch.distributed (~1.5 s): too slow for a fast test
    assert actual.shape == expected.shape and float((actual - expected).abs().max()) <= atol


def _item(subject: int, n_units: int, n_channels: int, *, n_time: int = 32, n_features: int = 2) -> dict:
    g = torch.Generator().manual_seed(100 * subject + 10 * n_units + n_channels)
    return {"spikes": torch.poisson(torch.full((n_time, n_units), 0.5), generator=g),
            "unit_ids": torch.arange(n_units) + 10 * subject, "lfp": torch.randn(n_channels, n_time, generator=g),
            "behavior": torch.randn(n_time, n_features, generator=g), "subject": subject, "fs": 100.0}


def _model(layout: str = "channel_patch", heads: dict | None = None) -> NeuroFMx:
    torch.manual_seed(0)
    heads = heads or {"forecast": {"keys": ["spikes", "lfp"]}, "reconstruction": {"keys": ["lfp", "spikes"]},
                      "behavior": {"n_features": 2}, "contrastive": {"view": "behavior", "dim_b": 2},
                      "adversarial": {"n_domains": 4}}
    return NeuroFMx(d_model=16, patch_size=4,
                    tokenizers={"spikes": {"n_units": 64, "layout": layout}, "lfp": {"n_channels": 8, "layout": layout},
                                "behavior": {"n_features": 2}},
                    perceiver={"n_heads": 2}, ssm={"n_layers": 1, "d_state": 8, "headdim": 8, "chunk_size": 8},
                    popt={"n_summary_tokens": 2, "n_heads": 2}, heads=heads)


def test_collate_refuses_samples_of_different_lengths():
    # A 24-sample window was zero-padded to 32 with no time mask: the losses scored 8 padded samples as data.
    with pytest.raises(ValueError, match=r"spikes: samples have different lengths \[32, 24\].*crop"):
        collate_batch([_item(0, 5, 3), _item(1, 2, 8, n_time=24)])
    eeg = [{"eeg": torch.randn(19, 250), "subject": 0}, {"eeg": torch.randn(19, 200), "subject": 1}]
    with pytest.raises(ValueError, match=r"eeg: samples have different lengths \[250, 200\]"):
        collate_batch(eeg)
    assert collate_batch([_item(0, 5, 3), _item(1, 2, 8)])["spikes"].shape == (2, 32, 5)  # units padded, not time


def test_collate_masks_behaviour_features_it_pads():
    # Subjects with 2 and 1 behaviour features: the padded feature was a real zero target for the behaviour loss.
    batch = collate_batch([_item(0, 5, 3), _item(1, 2, 8, n_features=1)])
    assert batch["behavior"].shape == (2, 32, 2)
    assert batch["behavior_mask"].tolist() == [[True, True], [True, False]]
    model = _model("time_mix").eval()
    changed = {**batch, "behavior": batch["behavior"].clone()}
    changed["behavior"][1, :, 1] = 5.0
    with torch.no_grad():
        a, b = model(batch), model(changed)
    for name in a["losses"]:
        _assert_close(a["losses"][name], b["losses"][name])
    same = collate_batch([_item(0, 5, 3), _item(1, 2, 8)])
    assert "behavior_mask" not in same  # equal feature counts: the batch keys stay as they were


def test_collate_mixes_int_and_tensor_labels():
    # One dataset gives subject as a 0-d tensor, another as an int: AttributeError "'int' has no attribute 'ndim'".
    a, b = _item(0, 5, 3), _item(1, 2, 8)
    a["subject"] = torch.tensor(0)
    batch = collate_batch([a, b])
    assert batch["subject"].tolist() == [0, 1] and batch["subject"].dtype == torch.long


def test_collate_names_the_missing_modality_and_the_fix():
    a, b = _item(0, 5, 3), _item(1, 2, 8)
    del b["behavior"]
    with pytest.raises(ValueError, match=r"missing \['behavior'\].*_mask all False"):
        collate_batch([a, b])


def _spikes_to_lfp_model() -> NeuroFMx:
    # Cross-modal targets: LFP forecast/reconstructed and behaviour decoded from spikes alone (no LFP tokenizer).
    torch.manual_seed(0)
    return NeuroFMx(d_model=16, patch_size=4, tokenizers={"spikes": {"n_units": 64}}, perceiver={"n_heads": 2},
                    ssm={"n_layers": 1, "d_state": 8, "headdim": 8, "chunk_size": 8},
                    popt={"n_summary_tokens": 2, "n_heads": 2},
                    heads={"forecast": {"keys": ["lfp"]}, "reconstruction": {"keys": ["lfp"]},
                           "behavior": {"n_features": 2}})


@pytest.fixture(scope="module")
def mixed_batch():
    return collate_batch([_item(0, 5, 3), _item(1, 2, 8), _item(2, 1, 1)])


def test_untokenized_target_with_nan_names_the_key_instead_of_a_nan_loss(mixed_batch):
    model = _spikes_to_lfp_model()
    bad = {**mixed_batch, "lfp": mixed_batch["lfp"].clone()}
    bad["lfp"][0, 0, 5] = float("nan")
    with pytest.raises(ValueError, match=r"batch\['lfp'\]: 1 NaN"):  # was a NaN loss, returned silently
        model(bad)
    padded_nan = {**mixed_batch, "lfp": torch.where(mixed_batch["lfp_mask"][..., None], mixed_batch["lfp"],
                                                    torch.tensor(float("nan")))}
    assert torch.isfinite(model(padded_nan)["loss"])  # padding may hold anything


def test_untokenized_target_mask_and_ids_of_the_wrong_width_are_value_errors(mixed_batch):
    model = _spikes_to_lfp_model()
    with pytest.raises(ValueError, match=r"lfp_mask: needs shape \(B, C\) = \(3, 8\)"):  # was a RuntimeError
        model({**mixed_batch, "lfp_mask": mixed_batch["lfp_mask"][:, :5]})
    with pytest.raises(ValueError, match=r"lfp_channel_ids: needs shape \(B, C\) = \(3, 8\)"):
        model({**mixed_batch, "lfp_channel_ids": torch.zeros(3, 5, dtype=torch.long)})


def test_untokenized_target_of_another_length_is_refused_not_cropped(mixed_batch):
    model = _spikes_to_lfp_model()
    # 64 behaviour samples against a 32-sample window: the second half was dropped from the loss unseen.
    with pytest.raises(ValueError, match=r"head target\(s\) \{'behavior': 64\}.*8 token bins"):
        model({**mixed_batch, "behavior": torch.randn(3, 64, 2)})
    with pytest.raises(ValueError, match=r"head target\(s\) \{'lfp': 20\}"):
        model({**mixed_batch, "lfp": mixed_batch["lfp"][..., :20]})
    out = model({**mixed_batch, "behavior": mixed_batch["behavior"][:, :31]})  # same 8 token bins: accepted
    assert out["outputs"]["behavior"].shape == (3, 31, 2)


def test_channel_readout_heads_check_mask_and_id_widths():
    from models.heads import ForecastHead, MaskedReconstructionHead

    latents, target = torch.randn(2, 8, 16), torch.randn(2, 3, 32)
    for head in (ForecastHead(d_model=16, patch_size=4, n_channel_ids=8),
                 MaskedReconstructionHead(d_model=16, patch_size=4, n_channel_ids=8)):
        with pytest.raises(ValueError, match=r"channel_mask: needs shape \(B, C\) = \(2, 3\)"):
            head(latents, target=target, channel_mask=torch.ones(2, 4, dtype=torch.bool))
        with pytest.raises(ValueError, match=r"channel_ids: needs shape \(B, C\) = \(2, 3\)"):
            head(latents, target=target, channel_ids=torch.zeros(2, 4, dtype=torch.long))


@pytest.mark.parametrize("layout", ["channel_patch", "time_mix"])
def test_padding_never_reaches_real_outputs_losses_or_gradients(mixed_batch, layout):
    # Three subjects (5/2/1 units, 3/8/1 channels), every head on: padding holds NaN, inf and a foreign unit id.
    model = _model(layout).eval()
    dirty = {k: (v.clone() if torch.is_tensor(v) else v) for k, v in mixed_batch.items()}
    dirty["spikes"].masked_fill_(~dirty["spikes_mask"][:, None, :], float("nan"))
    dirty["lfp"].masked_fill_(~dirty["lfp_mask"][:, :, None], float("inf"))
    dirty["unit_ids"].masked_fill_(~dirty["spikes_mask"], 63)
    with torch.no_grad():
        clean, noisy = model(mixed_batch), model(dirty)
    assert clean["scored"] == tuple(model.loss_names)
    for name in clean["losses"]:
        _assert_close(noisy["losses"][name], clean["losses"][name])
    for key in ("spikes", "lfp"):
        real = mixed_batch[f"{key}_mask"]
        _assert_close(noisy["outputs"][f"forecast_{key}"][real], clean["outputs"][f"forecast_{key}"][real])
    model.train()
    model(dirty)["loss"].backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_collate_turns_numpy_samples_into_tensors_the_model_reads():
    import numpy as np

    # A dataset reading .npy files: the arrays became lists of arrays, and the model failed on them.
    items = [_item(0, 5, 3), _item(1, 2, 8)]
    for it in items:
        it.update(lfp=it["lfp"].numpy(), spikes=it["spikes"].numpy().astype(np.int64), subject=np.int64(it["subject"]),
                  tag=np.array(["a", "b"]))
    batch = collate_batch(items)
    assert batch["lfp"].shape == (2, 8, 32) and batch["lfp_mask"].tolist()[0] == [True] * 3 + [False] * 5
    assert batch["spikes"].dtype == torch.int64 and batch["subject"].tolist() == [0, 1]
    assert isinstance(batch["tag"], list)  # strings stay as they were
    with torch.no_grad():
        assert torch.isfinite(_model("time_mix").eval()(batch)["loss"])


def test_mask_that_is_not_a_tensor_is_a_value_error_naming_the_key(mixed_batch):
    model = _model("time_mix")
    with pytest.raises(ValueError, match="lfp_mask: needs a torch.Tensor.*list"):  # was AttributeError (.shape)
        model({**mixed_batch, "lfp_mask": mixed_batch["lfp_mask"].tolist()})
    with pytest.raises(ValueError, match="unit_ids: needs a torch.Tensor.*ndarray"):
        model({**mixed_batch, "unit_ids": mixed_batch["unit_ids"].numpy()})
    with pytest.raises(ValueError, match="behavior_mask: needs a torch.Tensor.*list"):
        model({**mixed_batch, "behavior_mask": [[True, True]] * 3})


def test_time_paired_view_of_another_length_is_refused_not_cropped(mixed_batch):
    torch.manual_seed(0)
    model = NeuroFMx(d_model=16, patch_size=4, tokenizers={"spikes": {"n_units": 64}}, perceiver={"n_heads": 2},
                     ssm={"n_layers": 1, "d_state": 8, "headdim": 8, "chunk_size": 8},
                     popt={"n_summary_tokens": 2, "n_heads": 2},
                     heads={"contrastive": {"view": "behavior", "dim_b": 2, "pairing": "time"}})
    # 64 samples against a 32-sample window: cropped to the first 32 and paired with the wrong steps, unseen.
    with pytest.raises(ValueError, match=r"head target\(s\) \{'behavior': 64\}"):
        model({**mixed_batch, "behavior": torch.randn(3, 64, 2)})
    for n in (8, 31):  # one row per step, or the window's 8 token bins: accepted
        assert torch.isfinite(model({**mixed_batch, "behavior": torch.randn(3, n, 2)})["loss"])


def test_untokenized_time_major_target_of_the_wrong_rank_names_the_key(mixed_batch):
    torch.manual_seed(0)
    model = NeuroFMx(d_model=16, patch_size=4, tokenizers={"lfp": {"n_channels": 8}}, perceiver={"n_heads": 2},
                     ssm={"n_layers": 1, "d_state": 8, "headdim": 8, "chunk_size": 8},
                     popt={"n_summary_tokens": 2, "n_heads": 2}, heads={"forecast": {"keys": ["calcium"]}})
    with pytest.raises(ValueError, match=r"calcium: needs a tensor"):  # was IndexError "Dimension out of range"
        model({**mixed_batch, "calcium": torch.randn(3, 32)})
    assert torch.isfinite(model({**mixed_batch, "calcium": torch.randn(3, 32, 2)})["loss"])


def test_collate_refuses_video_frames_or_mel_bands_of_different_sizes():
    # No mask exists for them: zero borders were averaged into the video features, zero mel bands tokenized.
    video = [{"video": torch.rand(3, 8, 6, 6)}, {"video": torch.rand(3, 8, 4, 6)}]
    with pytest.raises(ValueError, match=r"video: samples have different shapes"):
        collate_batch(video)
    audio = [{"audio": torch.randn(8, 20)}, {"audio": torch.randn(6, 20)}]
    with pytest.raises(ValueError, match=r"audio: samples have different shapes"):
        collate_batch(audio)
    assert collate_batch([{"audio": torch.randn(8, 20)}] * 2)["audio"].shape == (2, 8, 20)


def test_sample_with_every_behaviour_feature_masked_is_encoded_as_without_behaviour(mixed_batch):
    # The recommended stand-in for a modality a sample lacks (its mask all False) worked for channel modalities,
    # but behaviour tokens stayed real: the sample was encoded as "every feature is 0".
    model = _model("time_mix", heads={"forecast": {"keys": ["spikes", "lfp"]}}).eval()
    one = {k: (v[:1] if torch.is_tensor(v) and v.ndim else v) for k, v in mixed_batch.items()}
    without = {k: v for k, v in one.items() if k != "behavior"}
    with torch.no_grad():
        a = model(without)["latents"]["ssm"]
        b = model({**one, "behavior_mask": torch.zeros(1, 2, dtype=torch.bool)})["latents"]["ssm"]
        c = model({**one, "behavior_mask": torch.tensor([[True, False]])})["latents"]["ssm"]
    _assert_close(b, a)
    assert float((c - a).abs().max()) > 1e-3  # one real feature: behaviour is read
