"""Review round: fingerprint config values, job config checks, RR jobs without fOU, compare edge cases."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from fmx.fingerprint.compare import MEAN_CHANNEL, compare, contrast_stats
from fmx.fingerprint.job import run_fingerprint_job, write_parquet
from fmx.fingerprint.stats import p_adjust
from fractals.fingerprint import fingerprint

X = np.random.default_rng(0).standard_normal((3, 512))


# --------------------------------------------------------------------------------------------------
# fractals.fingerprint: config values that voided every channel (or were bent silently) now raise
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("config, path", [
    ({"measures": 3}, "config.measures"),  # was TypeError: object of type 'int' has no len()
    ({"temporal": {"higuchi_kmax": 1}}, "config.temporal.higuchi_kmax"),  # every higuchi_fd NaN, flagged
    ({"temporal": {"higuchi_kmax": 8.7}}, "config.temporal.higuchi_kmax"),  # silently 8
    ({"temporal": {"dfa_orders": [4.5, 16.2, 64]}}, "config.temporal.dfa_orders"),  # silently [4, 16, 64]
    ({"temporal": {"dfa_orders": [-4, 16, 64]}}, "config.temporal.dfa_orders"),  # -4 silently dropped
    ({"multifractal": {"q_vals": [1, 2]}}, "config.multifractal.q_vals"),  # every mf_width NaN
    ({"multifractal": {"q_vals": [math.nan, 1, 2]}}, "config.multifractal.q_vals"),
    ({"graph": {"box_eps": []}}, "config.graph.box_eps"),  # graph_fd NaN on every recording
    ({"graph": {"box_eps": [0, 1, 2]}}, "config.graph.box_eps"),
    ({"graph": {"corr_threshold": 1.5}}, "config.graph.corr_threshold"),  # was "thresh: ..." after all measures
    ({"quality": {"min_r2": math.nan}}, "config.quality.min_r2"),  # never flags
    ({"quality": {"max_flat_fraction": math.nan}}, "config.quality.max_flat_fraction"),  # never flags
    ({"quality": {"max_flat_fraction": -1}}, "config.quality.max_flat_fraction"),
    ({"intervals": {"alpha1_beats": [4.5, 16]}}, "config.intervals.alpha1_beats"),  # silently [4, 16]
])
def test_config_values_that_would_void_or_bend_every_channel_raise(config, path):
    with pytest.raises(ValueError, match=path.replace(".", r"\.")) as info:
        fingerprint(X, 250.0, config)
    assert "got" in str(info.value)


def test_valid_edge_values_are_still_accepted():
    table, summary = fingerprint(X, 250.0, {"temporal": {"higuchi_kmax": 2.0, "dfa_orders": [4, 16]},
                                            "multifractal": {"q_vals": [-2, 0, 2], "scales": [8, 16]},
                                            "graph": {"corr_threshold": 0.0, "box_eps": [1, 2]},
                                            "quality": {"max_flat_fraction": 0, "min_r2": -1}})
    assert table["value"].notna().all() and summary["fc_density"] == 1.0


# --------------------------------------------------------------------------------------------------
# fmx fingerprint fit: a bad job config stops the job before any recording, naming the job's key
# --------------------------------------------------------------------------------------------------
@pytest.fixture()
def rr_file(tmp_path):
    path = tmp_path / "data" / "sub-01" / "ecg" / "sub-01_task-rest_ecg.npz"
    path.parent.mkdir(parents=True)
    rng = np.random.default_rng(1)
    np.savez(path, rr_ms=800 + np.cumsum(rng.standard_normal(3000)) + 20 * rng.standard_normal(3000))
    return path


def _job(data, out, config):
    return run_fingerprint_job(str(data), str(out), config=config, executor="serial", log_mlflow=False,
                               progress=False)


@pytest.mark.parametrize("override, field", [
    ("fou.steps=abc", "fou.steps"),  # was, per recording: "invalid literal for int() with base 10: 'abc'"
    ("fou.n_bins=2.5", "fou.n_bins"),
    ("fou.enable=no", "fou.enable"),  # the string "no" is truthy: the fit ran
    ("preprocess.trim_flat_edges=no", "preprocess.trim_flat_edges"),  # trimmed anyway
    ("intervals.ectopic_filter=off", "intervals.ectopic_filter"),
    ("preprocess.epoch=-5", "preprocess.epoch"),
    ("+fou.stepz=3", "fou"),  # a typo was ignored
    ("+extra.key=1", "extra"),
    ("fingerprint.quality.min_r2=abc", "fingerprint.quality.min_r2"),  # was "config.quality.min_r2" per recording
    ("fingerprint.measures=higuchi_fd", "fingerprint.measures"),
])
def test_a_bad_job_config_fails_before_any_recording(rr_file, tmp_path, override, field):
    with pytest.raises(ValueError, match=field.replace(".", r"\.")):
        _job(rr_file.parents[2], tmp_path / "out", ["hrv", override])
    assert not (tmp_path / "out").exists()


def test_rr_recordings_get_no_fou_fit_whatever_the_config(rr_file, tmp_path):
    # the default config fitted fOU to beat series as if sampled on a clock (fou_theta 1e-4, fou_H 0.11 on nsr001);
    # --config eeg failed every RR file ("freq_band: needs 0 <= lo < hi <= fs/2 = 0.78")
    for name in ("default", "eeg"):
        res = _job(rr_file.parents[2], tmp_path / name, [name])
        assert (res.n_fitted, res.n_failed) == (1, 0), res.failures
        assert sorted(res.table["measure"].unique()) == ["dfa_alpha1", "dfa_alpha2", "higuchi_fd", "mf_width"]


# --------------------------------------------------------------------------------------------------
# fmx fingerprint compare
# --------------------------------------------------------------------------------------------------
def _tidy(n_subjects=8, seed=0, conditions=("rest", "arithmetic")):
    rng = np.random.default_rng(seed)
    rows = []
    for s in range(n_subjects):
        for k, condition in enumerate(conditions):
            for channel in ("Fz", "Cz", "Pz"):
                value = 1.2 + 0.05 * k + 0.03 * rng.standard_normal()
                rows.append((f"sub-{s:02d}", "", condition, channel, "hfd", value))
            rows.append((f"sub-{s:02d}", "", condition, "network", "fc_density", 0.7 + 0.02 * rng.standard_normal()))
            rows.append((f"sub-{s:02d}", "", condition, "network", "graph_fd", 2.3 + 0.1 * rng.standard_normal()))
    return pd.DataFrame(rows, columns=["subject", "session", "condition", "channel", "measure", "value"])


def test_network_measures_are_corrected_with_the_channel_means():
    # docs/fingerprint.md: "each measure's channels form one family and the channel means/network values another";
    # each network measure was its own family of one, so its q_fdr was its raw p
    stats, paired = contrast_stats(_tidy(), "condition", ["rest", "arithmetic"])
    assert paired
    summary_rows = stats["channel"].isin([MEAN_CHANNEL, "network"])
    assert summary_rows.sum() == 3
    np.testing.assert_allclose(stats.loc[summary_rows, "q_fdr"], p_adjust(stats.loc[summary_rows, "p"].to_numpy()))
    channels = stats[stats["measure"] == "hfd"].loc[~summary_rows]
    np.testing.assert_allclose(channels["q_fdr"], p_adjust(channels["p"].to_numpy()))


def _out_folder(tmp_path, table, participants=None):
    out = tmp_path / "run"
    write_parquet(table, str(out / "fingerprint.parquet"))
    if participants is not None:
        write_parquet(participants, str(out / "participants.parquet"))
    return str(out)


def test_forcing_paired_without_shared_subjects_is_a_clear_error(tmp_path):
    # was KeyError: 'cohens_d' (every paired test failed, the stats table had no effect columns)
    table = _tidy(conditions=("rest",))
    groups = pd.DataFrame({"subject": sorted(table["subject"].unique()), "group": ["A", "B"] * 4})
    out = _out_folder(tmp_path, table, groups)
    with pytest.raises(ValueError, match="paired: .*0 subjects have both levels"):
        compare(out, group_by="group", paired=True, figures=False)
    assert compare(out, group_by="group", figures=False).paired is False


def test_a_contrast_no_test_can_run_on_keeps_its_columns_and_says_why(tmp_path):
    # subject=sub-00,sub-01 has one value per level: the stats table lacked cohens_d/mean_a, so the figures died
    # with KeyError: 'cohens_d' and the CLI with AttributeError: 'Pandas' object has no attribute 'mean_a'
    from typer.testing import CliRunner

    from fmx.cli import app

    out = _out_folder(tmp_path, _tidy())
    result = compare(out, contrast="subject=sub-00,sub-01")
    assert result.stats["p"].isna().all() and result.stats["cohens_d"].isna().all()
    assert result.stats["note"].str.contains("at least 2 values per group").all()
    assert any(f.endswith("cohort.png") for f in result.figures)
    cli = CliRunner().invoke(app, ["fingerprint", "compare", out, "--contrast", "subject=sub-00,sub-01",
                                   "--no-figures"])
    assert cli.exit_code == 0, cli.output
    assert "no test could run" in cli.output and "at least 2 values per group" in " ".join(cli.output.split())


def test_alpha_outside_0_1_is_refused(tmp_path):
    out = _out_folder(tmp_path, _tidy())
    with pytest.raises(ValueError, match=r"alpha: .*\(0, 1\).*got 2"):
        compare(out, contrast="condition=rest,arithmetic", alpha=2, figures=False)


def test_a_rerun_without_participant_columns_leaves_no_stale_participants(rr_file, tmp_path):
    # first run: participants.tsv gives `group`; the re-run over a manifest without it kept the old
    # participants.parquet, and `compare --group-by group` went on testing the removed grouping
    data = rr_file.parents[2]
    (data / "participants.tsv").write_text("participant_id\tgroup\nsub-01\tA\n")
    out = tmp_path / "out"
    _job(data, out, ["hrv"])
    assert "group" in pd.read_parquet(out / "participants.parquet").columns
    manifest = tmp_path / "manifest.csv"
    manifest.write_text(f"path\n{rr_file}\n")
    assert _job(manifest, out, ["hrv"]).n_failed == 0
    assert list(pd.read_parquet(out / "participants.parquet").columns) == ["subject"]


def test_duplicate_channel_names_are_refused_not_averaged(tmp_path):
    # an .npz with channel_names [Cz, Cz, Pz] was fitted: the job's per-channel mean merged both Cz rows into one
    with pytest.raises(ValueError, match=r"channel_names: .*'Cz'.*unique"):
        fingerprint(X, 250.0, channel_names=["Cz", "Cz", "Pz"])
    path = tmp_path / "data" / "sub-01" / "eeg" / "sub-01_task-rest_eeg.npz"
    path.parent.mkdir(parents=True)
    np.savez(path, data=np.random.default_rng(2).standard_normal((3, 4000)), fs=250.0,
             channel_names=np.array(["Cz", "Cz", "Pz"]))
    res = _job(path.parents[2], tmp_path / "out", ["default", "fou.enable=false"])
    assert res.n_failed == 1 and "unique" in res.failures["error"].iloc[0]


@pytest.mark.parametrize("kwargs, field", [({"num_cpus": -2}, "num_cpus"), ({"num_cpus": 0}, "num_cpus"),
                                           ({"gpus_per_task": -1}, "gpus_per_task"),
                                           ({"gpus_per_task": math.nan}, "gpus_per_task")])
def test_ray_resources_are_checked_before_ray_starts(rr_file, tmp_path, kwargs, field):
    # --num-cpus -2 surfaced as Ray's "Resource quantities must be nonnegative ... 'CPU': -2"; 0 silently used all
    # CPUs; --gpus-per-task -1 passed unnoticed without GPUs
    with pytest.raises(ValueError, match=field):
        run_fingerprint_job(str(rr_file.parents[2]), str(tmp_path / "out"), config=["hrv"], log_mlflow=False,
                            progress=False, **kwargs)


def test_bids_derivatives_and_sourcedata_are_not_taken_for_raw_recordings(rr_file, tmp_path):
    # a BIDS root with derivatives/ (e.g. a cleaned copy) was refused: "several recordings share subject/session/
    # condition"; BIDS keeps processed and source files there, never the raw recordings
    from fmx.fingerprint.discover import discover

    root = rr_file.parents[2]
    for folder in ("derivatives/clean", "sourcedata", "code"):
        copy = root / folder / rr_file.relative_to(root)
        copy.parent.mkdir(parents=True)
        copy.write_bytes(rr_file.read_bytes())
    found = discover(str(root))
    assert found["path"].tolist() == [str(rr_file)]
    # pointed at a derivative itself, its files are the recordings
    assert len(discover(str(root / "derivatives" / "clean"))) == 1


def test_an_rr_series_too_short_for_every_measure_counts_as_flagged():
    # 1 beat counted in n_flagged, 2..31 beats (every measure NaN, flagged too_short) did not
    rr = 800 + 40 * np.random.default_rng(3).standard_normal(300)
    for n in (1, 20):
        table, summary = fingerprint(rr[:n], None, kind="intervals")
        assert (table["flag"] == "too_short").all() and summary["n_flagged"] == 1, n
    table, summary = fingerprint(rr[:100], None, kind="intervals")  # alpha1 and Higuchi measurable
    assert summary["n_flagged"] == 0 and table["value"].notna().any()
    two = np.full((2, 300), np.nan)
    two[0], two[1, :20] = rr, rr[:20]
    assert fingerprint(two, None, kind="intervals")[1]["n_flagged"] == 1


def test_an_out_folder_that_cannot_be_created_fails_before_any_recording(rr_file, tmp_path):
    # was a NotADirectoryError traceback at the first part's write, after that recording had been fitted
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    calls = []
    with pytest.raises(ValueError, match=r"out: .*cannot be created"):
        run_fingerprint_job(str(rr_file.parents[2]), str(blocker / "out"), config=["hrv"], executor="serial",
                            log_mlflow=False, progress=False, on_result=calls.append)
    assert calls == []
