"""Review round 9: `fmx fingerprint compare` options as a researcher combines them on a small cohort."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from fmx.fingerprint.compare import compare
from fmx.fingerprint.job import write_parquet

CHANNELS = ["Fz", "Cz", "Pz"]


def _cohort(tmp_path, n_subjects=6, shift=0.3, seed=0):
    """Every subject in both conditions, arithmetic shifted up by `shift` with a little noise."""
    rng = np.random.default_rng(seed)
    rows = []
    for s in range(n_subjects):
        base = rng.normal(1.3, 0.05)
        for condition, extra in (("rest", 0.0), ("arithmetic", shift)):
            for ch in CHANNELS:
                rows.append({"subject": f"sub-{s:02d}", "session": "", "condition": condition, "channel": ch,
                             "measure": "higuchi_fd", "value": base + extra + rng.normal(0, 0.02)})
    out = tmp_path / "out dir"
    write_parquet(pd.DataFrame(rows), str(out / "fingerprint.parquet"))
    participants = pd.DataFrame({"subject": [f"sub-{s:02d}" for s in range(n_subjects)],
                                 "group": ["A" if s % 3 else "B" for s in range(n_subjects)]})
    write_parquet(participants, str(out / "participants.parquet"))
    return out


def test_group_by_a_within_subject_column_is_tested_paired(tmp_path):
    # --group-by condition: every subject has both levels; forcing unpaired tests treated the dependent samples
    # as independent (Mann-Whitney on 6 + 6 values) instead of the paired test --contrast runs on the same data.
    out = _cohort(tmp_path)
    by_group = compare(str(out), group_by="condition", levels=["rest", "arithmetic"], figures=False)
    by_contrast = compare(str(out), contrast="condition=rest,arithmetic", figures=False)
    assert by_group.paired and by_contrast.paired
    pd.testing.assert_series_equal(by_group.stats["p"], by_contrast.stats["p"])
    # participants columns (one level per subject) stay unpaired
    assert not compare(str(out), group_by="group", figures=False).paired


def test_group_by_unknown_level_names_the_levels_option(tmp_path):
    out = _cohort(tmp_path)
    with pytest.raises(ValueError, match=r"levels: group='C' not in the results; levels found: \['A', 'B'\]"):
        compare(str(out), group_by="group", levels=["A", "C"], figures=False)


def test_levels_with_contrast_is_refused_not_ignored(tmp_path):
    # --contrast condition=rest,arithmetic --levels arithmetic,rest silently ran rest-vs-arithmetic's reverse
    out = _cohort(tmp_path)
    with pytest.raises(ValueError, match="levels: only with group_by"):
        compare(str(out), contrast="condition=rest,arithmetic", levels=["arithmetic", "rest"], figures=False)


def test_group_of_one_subject_keeps_counts_and_means(tmp_path):
    # one subject in group B: no test can run, but n and the group means are known (were NaN)
    out = _cohort(tmp_path, n_subjects=3)
    res = compare(str(out), group_by="group", figures=False)
    row = res.stats[(res.stats["channel"] == "mean")].iloc[0]
    table = pd.read_parquet(out / "fingerprint.parquet")
    per_subject = table.groupby("subject")["value"].mean()
    assert np.isnan(row["p"]) and "at least 2 values per group" in row["note"]
    assert (row["n_a"], row["n_b"]) == (2, 1)
    assert row["mean_a"] == pytest.approx(per_subject[["sub-01", "sub-02"]].mean())
    assert row["mean_b"] == pytest.approx(per_subject["sub-00"])
    assert row["diff"] == pytest.approx(row["mean_b"] - row["mean_a"])


def test_unequal_groups_match_scipy(tmp_path):
    out = _cohort(tmp_path, n_subjects=7)
    res = compare(str(out), group_by="group", levels=["A", "B"], test="t", figures=False)
    table = pd.read_parquet(out / "fingerprint.parquet")
    per = table[table["channel"] == "Pz"].groupby("subject")["value"].mean()
    groups = {s: "A" if int(s[-2:]) % 3 else "B" for s in per.index}
    a = per[[groups[s] == "A" for s in per.index]].to_numpy()
    b = per[[groups[s] == "B" for s in per.index]].to_numpy()
    row = res.stats[res.stats["channel"] == "Pz"].iloc[0]
    assert (row["n_a"], row["n_b"]) == (4, 3)
    assert row["p"] == pytest.approx(sps.ttest_ind(b, a, equal_var=False).pvalue)
    assert row["p_mannwhitney"] == pytest.approx(sps.mannwhitneyu(b, a).pvalue)


def test_rerun_removes_the_previous_runs_mixed_table_and_figures(tmp_path):
    # a rerun without --mixed on fewer measures left mixed.csv and the dropped measure's figures of the old run
    out = _cohort(tmp_path)
    table = pd.read_parquet(out / "fingerprint.parquet")
    write_parquet(pd.concat([table, table.assign(measure="katz_fd")], ignore_index=True),
                  str(out / "fingerprint.parquet"))
    first = compare(str(out), contrast="condition=rest,arithmetic", mixed=True)
    folder = out / "compare" / first.name
    assert (folder / "mixed.csv").exists() and (folder / "figures" / "effects_katz_fd.png").exists()
    second = compare(str(out), contrast="condition=rest,arithmetic", measures=["higuchi_fd"])
    assert not (folder / "mixed.csv").exists() and not (folder / "mixed.parquet").exists()
    assert sorted(p.name for p in (folder / "figures").iterdir()) == sorted(Path(f).name for f in second.figures)
    assert not (folder / "figures" / "effects_katz_fd.png").exists()


def test_measures_subset_refuses_a_misspelt_name_and_takes_one_name(tmp_path):
    out = _cohort(tmp_path)
    with pytest.raises(ValueError, match=r"measures: \['higuchi'\] not in the results; available: \['higuchi_fd'\]"):
        compare(str(out), contrast="condition=rest,arithmetic", measures=["higuchi_fd", "higuchi"], figures=False)
    one = compare(str(out), contrast="condition=rest,arithmetic", measures="higuchi_fd", figures=False)
    assert set(one.stats["measure"]) == {"higuchi_fd"}


@pytest.mark.slow
def test_rerun_on_s3_removes_the_stale_mixed_table_and_figures(tmp_path, seaweed_s3, monkeypatch):
    from fmx.fingerprint import storage

    for key, value in seaweed_s3.env().items():
        monkeypatch.setenv(key, value)
    bucket = seaweed_s3.make_bucket()
    local = _cohort(tmp_path)
    out = f"s3://{bucket}/runs/one"
    for name in ("fingerprint.parquet", "participants.parquet"):
        storage.write_bytes_atomic(f"{out}/{name}", (local / name).read_bytes())
    first = compare(out, contrast="condition=rest,arithmetic", mixed=True)
    assert storage.exists(f"{first.out}/mixed.csv") and first.figures
    compare(out, contrast="condition=rest,arithmetic", figures=False)
    assert storage.list_files(first.out) == [f"{first.out}/stats.csv", f"{first.out}/stats.parquet"]


def test_levels_as_one_comma_string_as_the_error_suggests(tmp_path):
    out = _cohort(tmp_path, n_subjects=7)
    as_text = compare(str(out), group_by="group", levels="B, A", figures=False)
    as_list = compare(str(out), group_by="group", levels=["B", "A"], figures=False)
    assert as_text.name == as_list.name == "group-A-vs-B"
    pd.testing.assert_frame_equal(as_text.stats, as_list.stats)


def test_cli_mixed_table_says_why_a_between_subject_p_is_nan(tmp_path):
    # Was: `--group-by group --mixed` printed NaN coef/se/p with no reason (the reason was only in mixed.csv).
    from typer.testing import CliRunner

    from fmx.cli import app

    out = _cohort(tmp_path)
    result = CliRunner().invoke(app, ["fingerprint", "compare", str(out), "--group-by", "group", "--mixed",
                                      "--no-figures"], env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    assert "needs repeated measures per subject" in result.output, result.output
