"""The pruned x_min search of ``powerlaw_fit`` returns exactly what the full O(n^2) search does."""
import math

import numpy as np
import pytest
import torch

from fractals.powerlaw import _fit_tail, _ks_bounds_continuous, powerlaw_fit


def _full_search(x: torch.Tensor, min_tail: int, xmin=None):
    """The KS search over every candidate and every tail sample, as it was before pruning."""
    n = x.numel()
    suffix = torch.flip(torch.cumsum(torch.flip(torch.log(x), [0]), 0), [0])
    first = torch.ones(n, dtype=torch.bool)
    first[1:] = x[1:] != x[:-1]
    cand = torch.nonzero(first).squeeze(-1)
    if xmin is not None:
        cand = torch.searchsorted(x, torch.tensor([xmin], dtype=x.dtype))
    cand = cand[(n - cand) >= min_tail]
    n_tail = (n - cand).to(x.dtype)
    xm = x[cand] if xmin is None else torch.full_like(n_tail, xmin)
    alpha = 1.0 + n_tail / (suffix[cand] - n_tail * torch.log(xm))
    alpha = torch.where(x[-1] == xm, math.inf, alpha)
    j = torch.arange(n)
    in_tail = j.unsqueeze(0) >= cand.unsqueeze(1)
    nt = n_tail.unsqueeze(1)
    model = 1.0 - (x.unsqueeze(0) / xm.unsqueeze(1)) ** (1.0 - alpha.unsqueeze(1))
    rank = (j.unsqueeze(0) - cand.unsqueeze(1)).to(x.dtype)
    d_hi = torch.where(in_tail, (rank + 1) / nt - model, -math.inf).amax(1)
    d_lo = torch.where(in_tail, model - rank / nt, -math.inf).amax(1)
    d = torch.maximum(d_hi, d_lo)
    i = int(torch.argmin(d))
    return float(alpha[i]), float(xm[i]), float(d[i]), int(n_tail[i])


def _samples():
    rng = np.random.default_rng(7)
    pareto = lambda n, a=2.5: (1 - rng.random(n)) ** (-1 / (a - 1))  # noqa: E731
    yield "pareto_small", pareto(40)
    yield "pareto_700", pareto(700)
    yield "pareto_3000", pareto(3000, 2.1)
    yield "mixture", np.concatenate([rng.uniform(1, 5, 400), 5 * pareto(1000)])
    yield "rounded_ties", np.round(pareto(2500), 1)
    yield "lognormal", rng.lognormal(0.0, 1.0, 2000)
    yield "exponential", rng.exponential(1.0, 1500) + 1e-3
    yield "constant_tail", np.concatenate([rng.uniform(1, 2, 200), np.full(50, 3.0)])


@pytest.mark.parametrize("name,values", list(_samples()), ids=[n for n, _ in _samples()])
def test_pruned_search_equals_the_full_search_bit_for_bit(name, values):
    x = torch.sort(torch.as_tensor(values, dtype=torch.float64)).values
    assert _fit_tail(x, False, None, 10) == _full_search(x, 10)


def test_pruned_search_with_a_fixed_xmin_equals_the_full_search():
    rng = np.random.default_rng(3)
    x = torch.sort(torch.from_numpy((1 - rng.random(900)) ** (-1 / 1.5))).values
    assert _fit_tail(x, False, 2.0, 10) == _full_search(x, 10, xmin=2.0)


def test_bounds_enclose_the_exact_distance_at_every_stride():
    rng = np.random.default_rng(11)
    x = torch.sort(torch.from_numpy(np.concatenate([rng.uniform(1, 4, 300), 4 * (1 - rng.random(700)) ** -0.8]))).values
    n = x.numel()
    cand = torch.arange(0, n - 10, 7)
    nt = (n - cand).double()
    suffix = torch.flip(torch.cumsum(torch.flip(torch.log(x), [0]), 0), [0])
    alpha = 1.0 + nt / (suffix[cand] - nt * torch.log(x[cand]))
    exact, _ = _ks_bounds_continuous(x, cand, alpha, x[cand], 1)
    for stride in (3, 16, 128, 5000):
        lower, upper = _ks_bounds_continuous(x, cand, alpha, x[cand], stride)
        assert bool((lower <= exact + 1e-15).all()) and bool((upper >= exact - 1e-15).all()), stride
        assert float((upper - lower).max()) > 0  # the coarse grid does leave a gap to prune on


def test_bootstrap_p_value_is_unchanged_by_the_pruned_search():
    # Pinned with the full search (commit 8736135): 40 synthetic sets, default seed-0 generator.
    rng = np.random.default_rng(0)
    fit = powerlaw_fit((1 - rng.random(600)) ** (-1 / 1.5), bootstrap=40)
    assert float(fit.p_value) == 0.925
    assert float(fit.alpha) == 2.432340831618652 and float(fit.xmin) == 1.8011224252481026


def _alstott_fit(values, **kwargs):
    powerlaw = pytest.importorskip("powerlaw")  # in the dev extras; the reference of Alstott et al. (2014)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return powerlaw.Fit(values, verbose=False, **kwargs).power_law


def test_continuous_fit_matches_the_powerlaw_package():
    # Same x_min and MLE exponent. Their KS distance is a different statistic: they renormalise the
    # whole sample's empirical CDF above x_min (tail CDF r / (n_t - 1), between the two sides of
    # each step) and compare only there; ours is CSN's supremum over both sides of every step,
    # so at the same fit ours is never smaller, and equal where the largest gap is on the upper side.
    rng = np.random.default_rng(0)
    pareto = (1 - rng.random(3000)) ** (-1 / 1.5)
    mixture = np.concatenate([rng.uniform(1, 5, 400), 5 * (1 - rng.random(1000)) ** (-1 / 1.5)])
    for values in (pareto, mixture):
        ref, ours = _alstott_fit(values), powerlaw_fit(values, min_tail=2)
        assert float(ours.xmin) == ref.xmin
        assert float(ours.alpha) == pytest.approx(ref.alpha, rel=1e-12)
        assert float(ours.ks) >= ref.D - 1e-12
    assert float(ours.ks) > ref.D + 5e-4  # the mixture: the definitions above differ by 0.001


def test_discrete_fit_matches_the_powerlaw_package():
    from scipy.stats import zipf

    degrees = zipf.rvs(2.5, size=3000, random_state=1).astype(float)
    ref, ours = _alstott_fit(degrees, discrete=True, estimate_discrete=False), powerlaw_fit(degrees, discrete=True, min_tail=2)
    assert float(ours.xmin) == ref.xmin
    # Theirs stops its optimiser at ~1e-5; ours searches to float64 resolution (CSN eq. 3.5 either way).
    assert float(ours.alpha) == pytest.approx(ref.alpha, abs=2e-5)
    assert float(ours.ks) == pytest.approx(ref.D, abs=1e-5)


def test_a_steep_non_constant_discrete_tail_is_not_called_constant():
    # alpha ~ 959 here: zeta underflows, so the fit has no usable tail, but the tail is not constant.
    with pytest.raises(ValueError, match=r"no usable tail \(alpha=inf\): the tail above x_min=400\.0 is constant, "
                                         r"or so steep that its law cannot be evaluated.*lower xmin or min_tail"):
        powerlaw_fit(np.array([3.0] * 5 + [400.0] * 11 + [401.0]), discrete=True, xmin=400)
