"""fmx.fingerprint.stats / compare: tests and corrections pinned to scipy/statsmodels, planted effects found."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from fmx.fingerprint.compare import compare, contrast_stats, mixed_effects, parse_contrast
from fmx.fingerprint.job import write_parquet
from fmx.fingerprint.stats import p_adjust, paired_stats, unpaired_stats

CHANNELS = ["Fz", "Cz", "Pz", "O1", "O2", "C3"]


def test_p_adjust_matches_statsmodels():
    from statsmodels.stats.multitest import multipletests

    p = np.random.default_rng(0).uniform(0, 0.2, 40) ** 2
    for method in ("fdr_bh", "holm"):
        np.testing.assert_allclose(p_adjust(p, method), multipletests(p, method=method)[1], rtol=1e-12)
    # pinned small case: BH of (0.01, 0.04, 0.03) -> (0.03, 0.04, 0.04); Holm -> (0.03, 0.06, 0.06)
    np.testing.assert_allclose(p_adjust([0.01, 0.04, 0.03]), [0.03, 0.04, 0.04])
    np.testing.assert_allclose(p_adjust([0.01, 0.04, 0.03], "holm"), [0.03, 0.06, 0.06])
    with pytest.raises(ValueError, match="method: must be"):
        p_adjust([0.1], "bonf")
    with pytest.raises(ValueError, match=r"p: p-values must lie in \[0, 1\]"):
        p_adjust([1.5])


def test_paired_stats_pinned():
    a = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    b = a + np.array([0.5, 1.0, 0.2, 0.8, -0.1, 0.6])
    res = paired_stats(a, b)
    d = b - a
    assert res["cohens_d"] == pytest.approx(d.mean() / d.std(ddof=1))
    assert res["p_ttest"] == pytest.approx(sps.ttest_rel(b, a).pvalue)
    assert res["p_wilcoxon"] == pytest.approx(sps.wilcoxon(b, a).pvalue)
    # ranks of |d|: 0.1->1 (negative), 0.2->2, 0.5->3, 0.6->4, 0.8->5, 1.0->6: (20 - 1) / 21
    assert res["rank_biserial"] == pytest.approx(19 / 21)
    assert paired_stats(a, a + 1)["rank_biserial"] == 1.0
    with pytest.raises(ValueError, match="at least 3 pairs"):
        paired_stats([1, 2], [2, 3])
    with pytest.raises(ValueError, match="NaN"):
        paired_stats([1, np.nan, 3], [1, 2, 3])


def test_unpaired_stats_pinned():
    a = np.array([1.0, 2.0, 3.0, 4.0])
    b = np.array([3.5, 5.0, 6.0, 7.0, 8.0])
    res = unpaired_stats(a, b)
    pooled = np.sqrt((3 * a.var(ddof=1) + 4 * b.var(ddof=1)) / 7)
    assert res["cohens_d"] == pytest.approx((b.mean() - a.mean()) / pooled)
    assert res["p_welch"] == pytest.approx(sps.ttest_ind(b, a, equal_var=False).pvalue)
    # U_b counts pairs with b > a: 19 of 20 (3.5 < 4): r = 2 * 19 / 20 - 1
    assert res["u"] == 19 and res["rank_biserial"] == pytest.approx(0.9)
    assert unpaired_stats(b, a)["rank_biserial"] == pytest.approx(-0.9)


def _planted(n_subjects=12, shift_channels=("Fz", "Cz"), shift=1.5, seed=0):
    """Tidy table: measure 'hfd' shifted by `shift` SD in arithmetic on `shift_channels`; 'beta' null."""
    rng = np.random.default_rng(seed)
    rows = []
    for s in range(n_subjects):
        base = rng.normal(0, 1, size=(2, len(CHANNELS)))  # subject-level offsets (what pairing removes)
        for condition in ("rest", "arithmetic"):
            for m, measure in enumerate(("hfd", "beta")):
                noise = rng.normal(0, 0.5, len(CHANNELS))
                for c, channel in enumerate(CHANNELS):
                    value = 10 * (m + 1) + base[m, c] + noise[c]
                    if measure == "hfd" and condition == "arithmetic" and channel in shift_channels:
                        value += shift
                    rows.append((f"sub-{s:02d}", "", condition, channel, measure, value))
    return pd.DataFrame(rows, columns=["subject", "session", "condition", "channel", "measure", "value"])


def test_planted_paired_shift_detected_with_fdr():
    table = _planted()
    stats, paired = contrast_stats(table, "condition", ["rest", "arithmetic"])
    assert paired
    hfd = stats[(stats["measure"] == "hfd")].set_index("channel")
    for channel in ("Fz", "Cz"):
        assert hfd.loc[channel, "q_fdr"] < 0.05 and hfd.loc[channel, "cohens_d"] > 1
        assert hfd.loc[channel, "rank_biserial"] > 0.8 and hfd.loc[channel, "diff"] == pytest.approx(1.5, abs=0.5)
    nulls = stats[(stats["measure"] == "beta") & (stats["channel"] != "mean")]
    assert (nulls["q_fdr"] > 0.05).all()
    per_channel = stats[stats["channel"] != "mean"]
    # FDR was applied per measure family: q >= p and equals BH of that family's p-values
    assert (per_channel["q_fdr"] >= per_channel["p"] - 1e-15).all()
    family = per_channel[per_channel["measure"] == "hfd"]
    np.testing.assert_allclose(family["q_fdr"], p_adjust(family["p"].to_numpy()))
    assert (per_channel["q_holm"] >= per_channel["q_fdr"] - 1e-15).all()
    # the same data unpaired loses the subject offsets: the planted effect is weaker
    unpaired, was_paired = contrast_stats(table, "condition", ["rest", "arithmetic"], paired=False)
    assert not was_paired
    up = unpaired[unpaired["measure"] == "hfd"].set_index("channel")
    assert up.loc["Fz", "p"] > hfd.loc["Fz", "p"]


def test_measure_missing_in_one_level_is_noted_not_fatal():
    table = _planted()
    only_rest = table[(table["measure"] == "hfd") & (table["condition"] == "rest")].assign(measure="graph_fd")
    stats, _ = contrast_stats(pd.concat([table, only_rest]), "condition", ["rest", "arithmetic"])
    lonely = stats[stats["measure"] == "graph_fd"]
    assert lonely["p"].isna().all() and lonely["note"].str.contains("at least 3 pairs").all()
    assert stats.loc[stats["measure"] == "hfd", "p"].notna().all()


def test_mixed_effects_recovers_shift():
    table = _planted(shift_channels=tuple(CHANNELS), shift=1.0)
    mixed = mixed_effects(table, "condition", ["rest", "arithmetic"]).set_index("measure")
    assert mixed.loc["hfd", "coef"] == pytest.approx(1.0, abs=0.35) and mixed.loc["hfd", "p"] < 0.001
    assert mixed.loc["beta", "p"] > 0.01
    assert mixed.loc["hfd", "n_subjects"] == 12 and mixed.loc["hfd", "n_obs"] == 24


def test_parse_contrast_errors():
    assert parse_contrast("condition=rest, arithmetic") == ("condition", ["rest", "arithmetic"])
    for bad in ("condition", "condition=rest", "=a,b", "condition=a,a"):
        with pytest.raises(ValueError, match="contrast:"):
            parse_contrast(bad)


@pytest.fixture()
def out_folder(tmp_path):
    table = _planted()
    write_parquet(table, str(tmp_path / "fingerprint.parquet"))
    groups = pd.DataFrame({"subject": sorted(table["subject"].unique())})
    groups["group"] = np.where(np.arange(len(groups)) < 6, "A", "B")
    write_parquet(groups, str(tmp_path / "participants.parquet"))
    return tmp_path


def test_compare_writes_tables_and_figures(out_folder):
    result = compare(str(out_folder), contrast="condition=rest,arithmetic", mixed=True)
    target = out_folder / "compare" / "condition-arithmetic-vs-rest"
    assert result.paired and (target / "stats.parquet").is_file() and (target / "mixed.csv").is_file()
    saved = pd.read_parquet(target / "stats.parquet")
    assert {"measure", "channel", "cohens_d", "rank_biserial", "p", "q_fdr", "q_holm"} <= set(saved.columns)
    assert len(saved) == 2 * (len(CHANNELS) + 1)  # every channel plus the channel mean, per measure
    names = {p.name for p in (target / "figures").iterdir()}
    assert {"effects_hfd.png", "scalp_hfd.png", "cohort.png"} <= names
    assert all((target / "figures" / n).stat().st_size > 5000 for n in names)


def test_group_contrast_is_unpaired(out_folder):
    result = compare(str(out_folder), group_by="group", figures=False)
    assert not result.paired and result.name == "group-B-vs-A"
    assert {"p_mannwhitney", "p_welch"} <= set(result.stats.columns)
    with pytest.raises(ValueError, match="group_by: 'nope' is not a participants column"):
        compare(str(out_folder), group_by="nope")
    with pytest.raises(ValueError, match="give exactly one"):
        compare(str(out_folder))
    # the same level twice was "X must have 2 or fewer dimensions" from deep inside the statistics
    with pytest.raises(ValueError, match=r"levels: \['A', 'A'\] for group_by 'group'.*two different levels"):
        compare(str(out_folder), group_by="group", levels=["A", "A"])
    with pytest.raises(ValueError, match=r"condition='sleep' not in the results; levels found"):
        compare(str(out_folder), contrast="condition=rest,sleep")


def test_cli_compare(out_folder):
    from typer.testing import CliRunner

    from fmx.cli import app

    res = CliRunner().invoke(app, ["fingerprint", "compare", str(out_folder), "--contrast",
                                   "condition=rest,arithmetic", "--no-figures", "--test", "t"])
    assert res.exit_code == 0, res.output
    assert "hfd" in res.output and "paired" in res.output
    bad = CliRunner().invoke(app, ["fingerprint", "compare", str(out_folder), "--contrast", "oops"])
    assert bad.exit_code == 2 and "COLUMN=LEVEL_A,LEVEL_B" in bad.output


def test_one_subject_missing_a_level_keeps_the_contrast_paired():
    # a single failed recording (sub-00 has no arithmetic rows) must not turn a within-subject design into
    # unpaired tests on non-independent samples; the paired tests use the 11 complete subjects
    table = _planted()
    table = table[~((table["subject"] == "sub-00") & (table["condition"] == "arithmetic"))]
    stats, paired = contrast_stats(table, "condition", ["rest", "arithmetic"])
    assert paired
    assert (stats.loc[stats["p"].notna(), "n"] == 11).all()
