"""Views review: clean pieces and trimmed recordings are views of the recording (same numbers, no copy), and
a step-like latent channel costs the latent DFA only that channel.

The large-input measurements (peak RSS on 64 channels x 1.8M float64) are in the session report, not here.
"""
import numpy as np
import pytest
import torch

from models.callbacks import latent_measures  # imports Lightning (~3 s): once, at collection
from models.data.recording import Recording


def _recording(data, fs=100.0, **meta):
    return Recording(data=data, fs=fs, channel_names=tuple(f"c{i}" for i in range(data.shape[0])), meta=meta)


def test_clean_segments_are_views_holding_the_clean_data_and_shifted_meta():
    from models.data.bad_spans import clean_segments

    data = np.random.default_rng(0).standard_normal((3, 1000))
    events = np.array([[1.0, 0.0, 1.0], [6.0, 0.0, 2.0]])
    rec = _recording(data, annotations=((2.0, 0.5, "BAD_blink"), (4.0, 0.0, "stim"), (7.0, 0.0, "BAD boundary")),
                     events=events)
    pieces = clean_segments(rec, min_samples=10)
    assert [(p.meta["onset_s"], p.data.shape[-1]) for p in pieces] == [(0.0, 200), (2.5, 450), (7.01, 299)]
    for p, (start, stop) in zip(pieces, [(0, 200), (250, 700), (701, 1000)]):
        assert np.shares_memory(p.data, rec.data), "a clean piece must not copy the recording"
        assert np.array_equal(p.data, data[:, start:stop])
    assert pieces[1].meta["annotations"] == ((-0.5, 0.5, "BAD_blink"), (1.5, 0.0, "stim"), (4.5, 0.0, "BAD boundary"))
    assert np.array_equal(pieces[2].meta["events"][:, 0], [1.0 - 7.01, 6.0 - 7.01])
    assert np.array_equal(rec.meta["events"], events), "shifting a piece's events must not move the recording's"


def test_trim_flat_edges_is_a_view_of_the_signal_between_the_padding():
    from models.data.preprocess import trim_flat_edges

    rng = np.random.default_rng(1)
    data = rng.standard_normal((2, 900))
    data[:, :100] = 0.5  # padding, a short burst, padding again (eegmat-dev's rest files end like this)
    data[:, 100:110] = rng.standard_normal((2, 10))
    data[:, 110:200] = -0.5
    data[:, -50:] = 2.0
    out = trim_flat_edges(_recording(data))
    head, tail = (round(s * 100) for s in out.meta["trimmed_s"])
    assert (head, tail) == (199, 49)
    assert np.shares_memory(out.data, data)
    assert np.array_equal(out.data, data[:, head:900 - tail])


@pytest.mark.parametrize("block_bytes", [1, 8 * 3 * 7, 1 << 40])
def test_transition_scan_in_time_blocks_equals_the_whole_difference(monkeypatch, block_bytes):
    from models.data import preprocess

    rng = np.random.default_rng(2)
    x = np.round(rng.standard_normal((3, 101)), 0)  # many equal neighbours
    x[0, 10:20], x[1, 30:40], x[2, 50:55] = np.inf, -np.inf, np.nan  # inf - inf is NaN: a change, as before
    x[:, 60:80] = 1.0
    monkeypatch.setattr(preprocess, "MOVING_BLOCK_BYTES", block_bytes)
    with np.errstate(invalid="ignore"):
        want = np.any(np.diff(x, axis=-1) != 0, axis=0)
        got = preprocess._moving(x)
    assert got.dtype == bool and np.array_equal(got, want)


def test_measure_recording_reads_views_without_changing_the_recording_or_its_numbers(monkeypatch):
    from fmx.fingerprint import recording as fp_recording

    rng = np.random.default_rng(3)
    data = rng.standard_normal((2, 2400)).cumsum(-1)
    rec = _recording(data, fs=250.0, annotations=((4.5, 0.5, "BAD_move"),), path="mem")
    before = data.copy()
    cfg = {"fou": {"enable": False}, "fingerprint": {"measures": ["dfa_alpha", "higuchi_fd"]}}
    rows, info = fp_recording.measure_recording(rec, cfg)
    assert info["n_segments"] == 2 and np.array_equal(data, before)
    copies = fp_recording.clean_segments

    def copied(r, **kw):
        return [p.replace(data=p.data.copy()) for p in copies(r, **kw)]

    monkeypatch.setattr(fp_recording, "clean_segments", copied)
    rows_copied, _ = fp_recording.measure_recording(rec, cfg)
    assert rows.reset_index(drop=True).equals(rows_copied.reset_index(drop=True))


def _latents(b=2, t=512, d=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, t, d, generator=g).cumsum(1)


def test_latent_dfa_leaves_out_only_a_step_like_channel():
    x = _latents()
    x[:, :, 2] = (torch.arange(x.shape[1]) >= x.shape[1] // 2).float()  # flat for a whole DFA window
    m = latent_measures(x, fs=100.0, cfg_fractals={})
    assert set(m) == {"beta", "hfd", "dfa"}, "one step-like channel must not drop DFA for the whole batch"
    assert m["beta"].shape == m["hfd"].shape == (2, 4) and m["dfa"].shape == (2, 3)
    others = latent_measures(x[:, :, [0, 1, 3]], fs=100.0, cfg_fractals={})["dfa"]
    assert torch.equal(m["dfa"], others)
    assert torch.isfinite(m["dfa"]).all()


def test_latent_dfa_drops_a_channel_step_like_in_one_batch_element_only():
    x = _latents(b=3)
    x[1, :, 0] = (torch.arange(x.shape[1]) >= 100).float()  # step-like in the second window only
    m = latent_measures(x, fs=100.0, cfg_fractals={})
    assert m["dfa"].shape == (3, 3)
    assert torch.equal(m["dfa"], latent_measures(x[:, :, 1:], fs=100.0, cfg_fractals={})["dfa"])


def test_latent_dfa_step_like_everywhere_is_left_out():
    x = (torch.arange(512) >= 256).float()[None, :, None].repeat(2, 1, 3) * torch.tensor([1.0, 2.0, 3.0])
    m = latent_measures(x, fs=100.0, cfg_fractals={})
    assert "dfa" not in m and m["hfd"].shape == (2, 3)
