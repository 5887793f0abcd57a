"""Review round: what a user reads from `fmx` (summaries, paths, tables) in a piped log such as CI or `| tee`."""
from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

mne = pytest.importorskip("mne", reason="the CLI output tests write small FIF recordings with mne")

from fmx.cli import app  # noqa: E402

FS = 250.0
FAST = ["-c", "fingerprint.measures=[higuchi_fd]", "-c", "fou.enable=false"]


def _write_fif(path, seconds=20, annotations=(), seed=0):
    data = np.random.default_rng(seed).standard_normal((2, int(seconds * FS))) * 1e-5
    raw = mne.io.RawArray(data, mne.create_info(["Fz", "Cz"], FS, "eeg"), verbose="error")
    if annotations:
        onset, duration, text = zip(*annotations)
        raw.set_annotations(mne.Annotations(list(onset), list(duration), list(text)))
    path.parent.mkdir(parents=True, exist_ok=True)
    raw.save(path, overwrite=True, verbose="error")


@pytest.fixture
def cohort(tmp_path):
    root = tmp_path / "data"
    # sub-01: 5 s of 20 s annotated BAD -> a quarter of its data is not measured
    _write_fif(root / "sub-01" / "eeg" / "sub-01_task-rest_eeg.fif", annotations=[(5.0, 5.0, "BAD_move")])
    _write_fif(root / "sub-02" / "eeg" / "sub-02_task-rest_eeg.fif", seed=1)
    for seed, subject in enumerate(("sub-01", "sub-02", "sub-03"), start=2):
        _write_fif(root / subject / "eeg" / f"{subject}_task-arithmetic_eeg.fif", seed=seed)
    _write_fif(root / "sub-03" / "eeg" / "sub-03_task-rest_eeg.fif", seed=9)
    return root


def _fit(*args):
    return CliRunner().invoke(app, ["fingerprint", "fit", *args, "--serial", "--no-mlflow", *FAST],
                              catch_exceptions=False)


def test_fit_summary_mentions_the_data_left_out_for_bad_spans(cohort, tmp_path):
    res = _fit(str(cohort), "--out", str(tmp_path / "out"))
    assert res.exit_code == 0, res.output
    text = " ".join(res.output.split())
    assert "left out of the measures: 4.17% of the recorded time, 25% in the 1 of 6 recordings with spans " \
        "annotated BAD" in text, res.output
    assert "recordings.parquet" in text
    # measured through when asked to: no data left out, and the line says so
    res = _fit(str(cohort), "--out", str(tmp_path / "through"), "-c", "preprocess.reject_by_annotation=false")
    text = " ".join(res.output.split())
    assert res.exit_code == 0 and "measured through" in text and "left out" not in text, res.output


def test_fit_summary_mentions_exclusion_only_when_data_was_left_out(tmp_path):
    root = tmp_path / "data"
    _write_fif(root / "sub-01" / "eeg" / "sub-01_task-rest_eeg.fif")
    res = _fit(str(root), "--out", str(tmp_path / "out"))
    assert res.exit_code == 0 and "1 fitted" in res.output, res.output
    assert "left out" not in res.output and "BAD" not in res.output
    # epochs of 7 s in 20 s: the last 6 s are not measured, and the line says so (no BAD spans named)
    res = _fit(str(root), "--out", str(tmp_path / "epochs"), "--epoch", "7")
    text = " ".join(res.output.split())
    assert "left out of the measures: 30% of the recorded time (epoch tails)" in text and "BAD" not in text, res.output


def test_long_output_paths_stay_on_one_line_in_a_piped_log(cohort, tmp_path):
    # a CI log is 80 columns wide: the path was folded mid-word over two lines, so it could not be copied
    out = tmp_path / ("a_long_folder_name_for_the_fingerprint_outputs_" * 2) / "out"
    res = _fit(str(cohort), "--out", str(out))
    assert res.exit_code == 0 and any(line.endswith(str(out)) for line in res.output.splitlines()), res.output
    res = CliRunner().invoke(app, ["fingerprint", "compare", str(out), "--contrast", "condition=rest,arithmetic",
                                   "--no-figures"], catch_exceptions=False)
    assert any(line.endswith(str(out / "compare" / "condition-arithmetic-vs-rest"))
               for line in res.output.splitlines()), res.output


def test_compare_table_shows_whole_measure_names_in_a_piped_log(tmp_path, monkeypatch):
    import pandas as pd

    from fmx.fingerprint import compare as fp_compare

    measures = ["dfa_alpha", "fc_density", "fou_sigma", "fou_theta", "higuchi_fd", "spectral_beta"]
    stats = pd.DataFrame({"measure": measures, "channel": "mean", "mean_a": 0.002543, "mean_b": 0.002004,
                          "cohens_d": -0.42, "rank_biserial": -0.46, "p": 0.00488, "q_fdr": 0.0537, "note": ""})
    result = fp_compare.CompareResult(name="condition-arithmetic-vs-rest", out=str(tmp_path), stats=stats,
                                      mixed=None, paired=True, figures=[])
    monkeypatch.setattr(fp_compare, "compare", lambda *a, **k: result)
    res = CliRunner().invoke(app, ["fingerprint", "compare", str(tmp_path), "--contrast", "condition=rest,arithmetic"],
                             catch_exceptions=False)
    assert res.exit_code == 0, res.output
    # "higuchi…" / "spectra…" in an 80-column log: the user could not tell which measure a row is
    for name in measures:
        assert f" {name} " in res.output, res.output


def test_fit_names_the_mlflow_store_it_logged_to_and_how_to_open_it(cohort, tmp_path, monkeypatch):
    # "MLflow run <id>" alone: the default store is ./mlflow.db, but `fmx ui` opens runs/mlflow.db by default,
    # so a user following the usual command saw no fingerprint run at all
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    (tmp_path / "wd x").mkdir()
    monkeypatch.chdir(tmp_path / "wd x")
    res = CliRunner().invoke(app, ["fingerprint", "fit", str(cohort), "--out", str(tmp_path / "out"), "--serial",
                                   *FAST], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    text = " ".join(res.output.split())
    # the folder as it is named (MLflow's default URI reads wd%20x), quoted so the command can be pasted
    store = f"sqlite:///{(tmp_path / 'wd x' / 'mlflow.db').resolve()}"
    assert "MLflow run" in text and f"fmx ui --tracking-uri '{store}'" in text, res.output
    res = CliRunner().invoke(app, ["fingerprint", "fit", str(cohort), "--out", str(tmp_path / "out2"), "--serial",
                                   "--mlflow", "sqlite:///stores/fp.db", *FAST], catch_exceptions=False)
    text = " ".join(res.output.split())
    assert f"fmx ui --tracking-uri 'sqlite:///{(tmp_path / 'wd x' / 'stores' / 'fp.db').resolve()}'" in text, res.output


def test_sweep_lines_print_the_metric_as_the_tables_do_not_to_17_digits(capsys, monkeypatch):
    # "val/loss=2.9185147285461426": float noise presented as precision; the tables print 2.919
    import types

    import pandas as pd

    from fmx import compare, tracking
    from fmx.commands.sweep import _print_outcome
    from fmx.progress import SweepProgress

    trial = types.SimpleNamespace(trial_id="6ed4e_00000", last_result={"val/loss": 2.9185147285461426})
    with SweepProgress(total=1, metric="val/loss", mode="min") as progress:
        progress.on_trial_result(0, [], trial, trial.last_result)
        progress.on_trial_complete(0, [], trial)
    printed = capsys.readouterr().out
    assert "val/loss=2.919" in printed and "2.9185147" not in printed, printed
    frame = pd.DataFrame({"trial_id": ["6ed4e_00000"], "status": ["FINISHED"], "val/loss": [2.9185147285461426]})
    monkeypatch.setattr(tracking, "client", lambda uri: None)
    monkeypatch.setattr(compare, "trials_frame", lambda *a: frame)
    outcome = types.SimpleNamespace(tracking_uri="sqlite:////tmp/x.db", experiment_id="1", parent_run_id="p",
                                    best={"mode": "min"}, sweep_id="smoke-1", n_trials=1, n_errors=0,
                                    storage_uri="/tmp/ray")
    _print_outcome(outcome, "val/loss")
    printed = capsys.readouterr().out
    assert "val/loss = 2.919" in printed and "2.9185147" not in printed, printed
