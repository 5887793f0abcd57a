"""FractalPriors checks its latents for NaN/inf once per call, not once per term: each check is a host sync
(eager mode on CUDA), and the three terms used to make three per training step."""
from __future__ import annotations

import pytest
import torch

import fractals.priors
import fractals.regularizers
from fractals.priors import FractalPriors


def _priors(**kw) -> FractalPriors:
    opts = dict(fs=100.0, band=(2.0, 40.0), lambda_spec=0.1, lambda_mf=0.1, lambda_graphfd=0.1, warmup_steps=0,
                scales=[8, 16, 32], eps_values=[1, 2, 3], compile=False)
    opts.update(kw)
    return FractalPriors(**opts)


def _count_checks(monkeypatch) -> list:
    calls = []
    for mod in (fractals.priors, fractals._prior_common):  # _check_latents lives there
        real = mod.check_finite

        def spy(x, name="x", _real=real):
            calls.append(name)
            return _real(x, name)

        monkeypatch.setattr(mod, "check_finite", spy)
    return calls


def test_three_prior_terms_check_the_latents_once(monkeypatch):
    calls = _count_checks(monkeypatch)
    lat = torch.randn(2, 128, 8, generator=torch.Generator().manual_seed(0))
    total, parts = _priors()(lat, step=1)
    assert calls == ["latents"]
    assert all(bool(torch.isfinite(v)) and float(v) != 0.0 for v in parts.values())
    # A standalone term still checks its own input afterwards.
    calls.clear()
    fractals.regularizers.l_spec_1overf(lat, 100.0, (2.0, 40.0), 1.0, 0.1)
    assert calls == ["latents"]


def test_nan_latents_are_still_refused_by_name():
    lat = torch.randn(2, 128, 8)
    lat[1, 5, 3] = float("nan")
    with pytest.raises(ValueError, match="latents: contains 1 NaN"):
        _priors()(lat, step=1)


def test_the_single_check_gives_the_same_loss_as_the_terms_alone():
    lat = torch.randn(2, 128, 8, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    total, _ = _priors()(lat, step=1)
    alone = sum(_priors(**{k: (0.1 if k == on else 0.0) for k in ("lambda_spec", "lambda_mf", "lambda_graphfd")})(
        lat, step=1)[0] for on in ("lambda_spec", "lambda_mf", "lambda_graphfd"))
    torch.testing.assert_close(total, alone)
