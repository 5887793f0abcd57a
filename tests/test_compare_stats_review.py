"""Review of the statistics behind ``fmx fingerprint compare``: corner cases recomputed by hand / scipy."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from fmx.fingerprint.compare import contrast_stats, mixed_effects


def _tidy(values: dict, channels=("C3", "C4"), measure="hfd") -> pd.DataFrame:
    """{(subject, condition): [value per channel, None = channel missing]} -> tidy table."""
    rows = []
    for (subject, condition), per_channel in values.items():
        for channel, value in zip(channels, per_channel):
            if value is not None:
                rows.append({"subject": subject, "session": "", "condition": condition, "channel": channel,
                             "measure": measure, "value": float(value)})
    return pd.DataFrame(rows)


def _missing_channel_table() -> pd.DataFrame:
    # C3 rises by 1 in every subject, C4 does not change; s0's C4 is missing in `arith` (a flat channel
    # dropped by the job). The channel means must compare like with like (was: s0's rest mean over C3 and
    # C4 against its arith mean over C3 alone -> a spurious -1.5 change that cancelled the real effect).
    values = {(f"s{i}", c): [i + (c == "arith"), 5 + 2 * i] for i in range(5) for c in ("rest", "arith")}
    values[("s0", "arith")] = [1.0, None]
    return _tidy(values)


def test_channel_mean_uses_the_same_channels_in_both_levels():
    stats, paired = contrast_stats(_missing_channel_table(), "condition", ["rest", "arith"])
    assert paired
    mean = stats.set_index("channel").loc["mean"]
    assert mean["n"] == 5
    # s0 keeps C3 only in both levels (diff 1); the others average C3 (+1) and C4 (0): diff 0.5
    assert mean["diff"] == pytest.approx((1.0 + 4 * 0.5) / 5)
    assert mean["rank_biserial"] == 1.0 and mean["cohens_d"] > 0


def test_mixed_model_channel_means_use_the_same_channels():
    mixed = mixed_effects(_missing_channel_table(), "condition", ["rest", "arith"]).set_index("measure")
    assert mixed.loc["hfd", "coef"] == pytest.approx((1.0 + 4 * 0.5) / 5, abs=1e-6)


def test_mixed_model_on_constant_values_says_why_there_is_no_p():
    table = _tidy({(f"s{i}", c): [1.0, 1.0] for i in range(4) for c in ("rest", "arith")})
    row = mixed_effects(table, "condition", ["rest", "arith"]).iloc[0]
    assert np.isnan(row["p"]) and row["note"] != ""  # was a silent NaN (note "")


def _two_level_table(values: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame([{"subject": f"s{i}", "session": "", "condition": c, "channel": "C3", "measure": "m",
                          "value": float(values[i, j])} for i in range(len(values)) for j, c in enumerate(("r", "a"))])


def test_mixed_model_boundary_fit_is_converged_with_a_note():
    # statsmodels converges here (fit.converged) but warns that the subject variance is 0 (boundary), as for
    # katz_fd / fou_theta on eegmat-dev; was reported converged=False ("did not converge"), hiding valid p-values
    rng = np.random.default_rng(24)
    values = rng.normal(size=(8, 2))
    values[:, 1] += 0.5
    row = mixed_effects(_two_level_table(values), "condition", ["r", "a"]).iloc[0]
    assert bool(row["converged"]) and "boundary" in row["note"]
    # pooled OLS when the subject variance is 0: coef = mean difference
    assert row["coef"] == pytest.approx(values[:, 1].mean() - values[:, 0].mean(), rel=1e-4)


def test_mixed_model_failed_fit_is_not_converged():
    rng = np.random.default_rng(28)
    values = rng.normal(size=(8, 2))
    values[:, 1] += 0.5
    assert not bool(mixed_effects(_two_level_table(values), "condition", ["r", "a"]).iloc[0]["converged"])


def test_unknown_measures_filter_names_the_measures(tmp_path):
    from fmx.fingerprint.compare import compare
    from fmx.fingerprint.job import write_parquet

    table = _tidy({(f"s{i}", c): [i, i + (c == "arith")] for i in range(4) for c in ("rest", "arith")})
    write_parquet(table, str(tmp_path / "fingerprint.parquet"))
    # was: "contrast: condition='rest' not in the results; levels found: []"
    with pytest.raises(ValueError, match=r"measures: none of \['hdf'\].*available: \['hfd'\]"):
        compare(str(tmp_path), contrast="condition=rest,arith", measures=["hdf"], figures=False)


def test_an_infinite_effect_is_drawn_not_left_blank():
    # d = +inf (a constant shift) drew no bar: the largest effect looked like none
    import pandas as pd

    from fmx.fingerprint.plots import plot_channel_effects

    stats = pd.DataFrame({"measure": ["m"] * 3, "channel": ["Fz", "Cz", "Pz"], "cohens_d": [float("inf"), 0.4, -0.8],
                          "q_fdr": [0.01, 0.5, 0.2], "contrast": ["c"] * 3})
    ax = plot_channel_effects(stats, "m").axes[0]
    heights = [bar.get_height() for bar in ax.patches]
    assert heights[0] > 0.8 and all(map(math.isfinite, heights))
    assert any(t.get_text() == "inf" for t in ax.texts)
