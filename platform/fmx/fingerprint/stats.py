"""Two-sample statistics for fingerprint contrasts: tests, effect sizes, multiple-comparison control.

Sign convention everywhere: positive effects mean the second level is higher (``b > a``), e.g.
``condition=rest,arithmetic`` gives ``d > 0`` when arithmetic values exceed rest.

- :func:`paired_stats`: Wilcoxon signed-rank and paired t-test; Cohen's ``d_z`` (mean difference
  over the SD of differences) and the matched-pairs rank-biserial correlation.
- :func:`unpaired_stats`: Mann-Whitney U and Welch's t-test; Cohen's ``d`` with the pooled SD and
  the rank-biserial correlation ``2 U_b / (n_a n_b) - 1``.
- :func:`p_adjust`: Benjamini-Hochberg FDR and Holm step-down adjusted p-values.
"""
from __future__ import annotations

import math

import numpy as np

__all__ = ["paired_stats", "unpaired_stats", "p_adjust"]


def _clean(values, name: str) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64).reshape(-1)
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name}: contains NaN or inf; drop incomplete subjects before testing")
    return arr


def paired_stats(a, b) -> dict[str, float]:
    """Paired comparison of ``b`` against ``a`` (same subjects, same order).

    Returns ``n``, ``mean_a``, ``mean_b``, ``diff`` (mean of ``b - a``), ``t``, ``p_ttest``,
    ``w``, ``p_wilcoxon``, ``cohens_d`` (d_z) and ``rank_biserial``. Needs ``n >= 3``.
    """
    from scipy import stats

    a, b = _clean(a, "a"), _clean(b, "b")
    if a.shape != b.shape:
        raise ValueError(f"a, b: paired samples need equal lengths, got {a.size} and {b.size}")
    if a.size < 3:
        raise ValueError(f"a, b: a paired test needs at least 3 pairs, got {a.size}")
    d = b - a
    sd = d.std(ddof=1)
    out = {"n": int(a.size), "mean_a": float(a.mean()), "mean_b": float(b.mean()), "diff": float(d.mean())}
    if sd == 0:
        # Every pair moved by the same amount: no spread to test against.
        out.update(t=math.copysign(math.inf, d.mean()) if d.mean() else 0.0, p_ttest=0.0 if d.mean() else 1.0,
                   cohens_d=math.copysign(math.inf, d.mean()) if d.mean() else 0.0)
    else:
        res = stats.ttest_rel(b, a)
        out.update(t=float(res.statistic), p_ttest=float(res.pvalue), cohens_d=float(d.mean() / sd))
    nonzero = d[d != 0]
    if nonzero.size == 0:
        out.update(w=0.0, p_wilcoxon=1.0, rank_biserial=0.0)
    else:
        res = stats.wilcoxon(b, a, zero_method="wilcox")
        ranks = stats.rankdata(np.abs(nonzero))
        r_plus, r_minus = ranks[nonzero > 0].sum(), ranks[nonzero < 0].sum()
        out.update(w=float(res.statistic), p_wilcoxon=float(res.pvalue),
                   rank_biserial=float((r_plus - r_minus) / (r_plus + r_minus)))
    return out


def unpaired_stats(a, b) -> dict[str, float]:
    """Independent-samples comparison of ``b`` against ``a``.

    Returns ``n_a``, ``n_b``, ``mean_a``, ``mean_b``, ``diff`` (``mean_b - mean_a``), ``t``,
    ``p_welch``, ``u``, ``p_mannwhitney``, ``cohens_d`` (pooled SD) and ``rank_biserial``.
    Needs at least 2 values per group.
    """
    from scipy import stats

    a, b = _clean(a, "a"), _clean(b, "b")
    if a.size < 2 or b.size < 2:
        raise ValueError(f"a, b: an unpaired test needs at least 2 values per group, got {a.size} and {b.size}")
    na, nb = a.size, b.size
    pooled = math.sqrt(((na - 1) * a.var(ddof=1) + (nb - 1) * b.var(ddof=1)) / (na + nb - 2))
    diff = float(b.mean() - a.mean())
    out = {"n_a": int(na), "n_b": int(nb), "mean_a": float(a.mean()), "mean_b": float(b.mean()), "diff": diff}
    if pooled == 0:
        out.update(t=math.copysign(math.inf, diff) if diff else 0.0, p_welch=0.0 if diff else 1.0,
                   cohens_d=math.copysign(math.inf, diff) if diff else 0.0)
    else:
        res = stats.ttest_ind(b, a, equal_var=False)
        out.update(t=float(res.statistic), p_welch=float(res.pvalue), cohens_d=diff / pooled)
    res = stats.mannwhitneyu(b, a, alternative="two-sided")
    out.update(u=float(res.statistic), p_mannwhitney=float(res.pvalue),
               rank_biserial=float(2.0 * res.statistic / (na * nb) - 1.0))
    return out


def p_adjust(p, method: str = "fdr_bh") -> np.ndarray:
    """Adjusted p-values: ``fdr_bh`` (Benjamini-Hochberg) or ``holm`` (Holm-Bonferroni).

    Shape:
        ``p``: (m,) p-values in [0, 1]; output (m,), same order, each >= its input.
    """
    p = np.asarray(p, dtype=np.float64).reshape(-1)
    if p.size == 0:
        return p.copy()
    if not np.all((p >= 0) & (p <= 1)):
        raise ValueError(f"p: p-values must lie in [0, 1], got min {np.nanmin(p)} max {np.nanmax(p)}")
    m = p.size
    order = np.argsort(p, kind="mergesort")
    ranked = p[order]
    if method == "fdr_bh":
        adjusted = ranked * m / np.arange(1, m + 1)
        adjusted = np.minimum.accumulate(adjusted[::-1])[::-1]  # step-up: enforce monotonicity from the top
    elif method == "holm":
        adjusted = np.maximum.accumulate(ranked * (m - np.arange(m)))  # step-down
    else:
        raise ValueError(f"method: must be 'fdr_bh' or 'holm', got {method!r}")
    out = np.empty(m)
    out[order] = np.minimum(adjusted, 1.0)
    return out
