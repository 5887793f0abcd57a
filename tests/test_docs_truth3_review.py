"""Docs truth review, third pass (2026-11-30): claims the docs gained for the day's behaviour changes.

Each test reads a doc and the code behind one of its claims: Ray's own trial error files are masked, the
`--address local` form, the fingerprint signature with ``progress``, the padding ``collate_batch`` refuses or
masks, the views the preprocessing returns, and the runtime image's wget. Fast, no servers, no Ray.
"""
from __future__ import annotations

import inspect
import re
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


def _flat(rel: str) -> str:
    """The doc's prose with line breaks and indentation folded to single spaces (quotes wrap across lines)."""
    return re.sub(r"\s+", " ", (REPO / rel).read_text(encoding="utf-8"))


def test_sweeps_md_says_rays_error_files_are_masked_and_the_code_masks_them(monkeypatch):
    from fmx.trial_support import MaskedTrialError, masked_trial_error

    text = _flat("docs/sweeps.md")
    assert "is not masked" not in text
    assert "`error.pkl` in the trial's folder, and the Tune log) is masked too" in text
    secret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    try:
        raise RuntimeError(f"S3 refused key {secret}")
    except RuntimeError as exc:
        masked = masked_trial_error(exc)
    assert isinstance(masked, MaskedTrialError)
    assert secret not in str(masked) and "(secret values masked)" in str(masked)


def test_address_local_is_documented_and_never_probed_as_host_port():
    from fmx.commands.sweep import _check_ray_address

    assert "--address local" in _flat("docs/sweeps.md")
    assert "/ local)" in _flat("README.md")
    assert _check_ray_address("local") is None  # Ray's own word for "start one here": no socket is tried


def test_methods_md_gives_fingerprints_signature_with_progress():
    from fractals.fingerprint import fingerprint

    params = inspect.signature(fingerprint).parameters
    shown = ", ".join(f"{n}={p.default!r}".replace("'", '"') if p.default is not inspect.Parameter.empty else n
                      for n, p in params.items())
    assert f"`fingerprint({shown})`" in _flat("docs/methods_fractals.md")
    calls = []
    x = np.random.default_rng(0).standard_normal((3, 4096))
    fingerprint(x, 250.0, config={"measures": ["higuchi_fd"]}, progress=lambda d, t, s: calls.append((d, t, s)))
    assert calls[0][2] == "quality" and calls[-1] == (calls[-1][1], calls[-1][1], "done")


def test_model_md_collate_claims_hold():
    from models.data.batch import collate_batch

    text = _flat("docs/model.md")
    assert "`behavior_mask` when the behaviour feature counts differ" in text
    batch = collate_batch([{"eeg": torch.zeros(3, 10), "behavior": torch.zeros(10, 2)},
                           {"eeg": torch.zeros(5, 10), "behavior": torch.zeros(10, 4)}])
    assert batch["eeg_mask"].tolist()[0] == [True] * 3 + [False] * 2
    assert batch["behavior_mask"].tolist()[0] == [True, True, False, False]
    with pytest.raises(ValueError, match="eeg: samples have different lengths"):
        collate_batch([{"eeg": torch.zeros(3, 10)}, {"eeg": torch.zeros(3, 12)}])
    with pytest.raises(ValueError, match="audio: samples have different shapes"):
        collate_batch([{"audio": torch.zeros(8, 10)}, {"audio": torch.zeros(6, 10)}])


def test_fingerprint_md_views_claim_holds():
    from models.data.bad_spans import clean_segments
    from models.data.preprocess import epoch, trim_flat_edges
    from models.data.recording import Recording

    assert "writing into one writes into the recording" in _flat("docs/fingerprint.md")
    data = np.random.default_rng(0).standard_normal((2, 1000))
    data[:, 900:] = 0.0  # constant padding at the end
    rec = Recording(data=data, fs=100.0, channel_names=("a", "b"), meta={"annotations": [(3.0, 1.0, "BAD_blink")]})
    pieces = clean_segments(rec)
    assert len(pieces) == 2
    for piece in [trim_flat_edges(rec), *epoch(rec, 2.0), *pieces]:
        assert np.shares_memory(piece.data, rec.data)


def test_deploy_md_wget_claim_matches_the_runtime_image():
    assert "`wget`, which KubeRay's exec readiness/liveness probes run" in _flat("docs/deploy.md")
    dockerfile = (REPO / "docker" / "Dockerfile").read_text()
    runtime = dockerfile[dockerfile.rindex("FROM "):]
    assert re.search(r"apt-get install[^\n]*\bwget\b", runtime)
