"""Docs truth review, second pass (2026-11-30): what the docs say after a day of behaviour changes.

Each test reads a doc and the code, config or shipped sweep behind one of its claims: the fingerprint fit's
closing lines, the precisions validate refuses, the shipped sweeps' settings quoted in docs/sweeps.md, the
padding the trim cuts from the eegmat-dev rest files, and the config keys added today. Fast, no servers.
"""
from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "platform" / "fmx" / "conf"
DATA = REPO.parent / "shared" / "data"


def _text(rel: str) -> str:
    return (REPO / rel).read_text(encoding="utf-8")


def _flat(text: str) -> str:
    """Prose with its line breaks and indentation folded to single spaces (quotes wrap across lines)."""
    return re.sub(r"\s+", " ", text)


def _sweep(name: str) -> dict:
    return yaml.safe_load((REPO / "sweeps" / f"{name}.yaml").read_text())


def _base(sweep: dict) -> dict[str, str]:
    return dict(item.lstrip("+").split("=", 1) for item in sweep["base"] if "=" in item)


# --- docs/fingerprint.md: the lines `fmx fingerprint fit` ends with ---------------------------------------------

def test_fingerprint_md_quotes_the_left_out_line_fit_prints():
    from fmx.commands.fingerprint import _left_out_line

    doc = _text("docs/fingerprint.md")
    tails = pd.DataFrame({"status": ["fitted", "fitted"], "duration_s": [60.0, 60.0],
                          "excluded_fraction": [0.0512, 0.0512], "bad_fraction": [0.0, 0.0]})
    line = _left_out_line(tails, "OUT")
    assert line in doc, line  # the example block quotes it verbatim

    def shape(s: str) -> str:  # numbers to placeholders, as the prose writes them
        s = re.sub(r"(?:[\d.]+|[A-Z])%", "%", s.split("; ")[0])
        return re.sub(r"\b\d+ of \d+\b", "N of M", s)

    marked = pd.DataFrame({"status": ["fitted"] * 3, "duration_s": [60.0] * 3,
                           "excluded_fraction": [0.2, 0.0, 0.1], "bad_fraction": [0.2, 0.0, 0.0]})
    quoted = [shape(q) for q in re.findall(r"`(left out of the measures: [^`]*|spans annotated BAD in [^`]*)`",
                                           _flat(doc))]
    assert shape(_left_out_line(marked, "OUT")) in quoted, (_left_out_line(marked, "OUT"), quoted)
    through = marked.assign(excluded_fraction=0.0)
    assert shape(_left_out_line(through, "OUT")) in quoted, (_left_out_line(through, "OUT"), quoted)
    # the plain eegmat-dev run (no BAD spans, no epochs; trimmed padding is not "left out") prints no such line
    assert _left_out_line(tails.assign(excluded_fraction=0.0), "OUT") is None
    assert "plain eegmat-dev run prints no such line" in _flat(doc)


def test_fingerprint_md_quotes_the_summary_and_mlflow_lines_fit_prints():
    from fmx.commands.sweep import ui_command

    src = _text("platform/fmx/commands/fingerprint.py")
    doc = _text("docs/fingerprint.md")
    assert 'recordings: {result.n_fitted} fitted, {result.n_skipped} skipped "' in src
    assert '"(done before), {result.n_failed} failed, in {result.seconds:.1f} s -> {result.out}"' in src
    assert re.search(r"^\d+ recordings: \d+ fitted, \d+ skipped \(done before\), \d+ failed, in [\d.]+ s -> OUT$",
                     doc, re.M)
    assert 'f"MLflow run {result.mlflow_run_id} in {store}; open the MLflow UI: {ui_command(store)}"' in src
    store = "sqlite:////abs/folder/mlflow.db"
    line = f"MLflow run RUN_ID in {store}; open the MLflow UI: {ui_command(store)}"
    assert line.replace(ui_command(store).split(" ui ")[0] + " ui", "fmx ui") in doc
    # the doc's reason for naming the store: a bare `fmx ui` opens runs/mlflow.db, the fit's default is ./mlflow.db
    tracking_src = _text("platform/fmx/commands/tracking.py")
    default = re.search(r'^DEFAULT_TRACKING\s*=\s*"([^"]+)"', tracking_src, re.M)
    defaults_from = default.group(1) if default else None
    if defaults_from is None:  # imported from elsewhere
        from fmx.commands.tracking import DEFAULT_TRACKING as defaults_from
    assert defaults_from.endswith("runs/mlflow.db"), defaults_from
    assert "not the `runs/mlflow.db` a bare `fmx ui` opens" in _flat(doc)
    assert "MLflow's default `./mlflow.db`" in _flat(doc)


def test_fingerprint_md_says_hidden_files_are_skipped(tmp_path):
    from fmx.fingerprint.discover import discover

    doc = _flat(_text("docs/fingerprint.md"))
    assert "hidden files and folders (names starting with `.`: macOS `._` copies, `.ipynb_checkpoints/`)" in doc
    eeg = tmp_path / "sub-01" / "eeg"
    eeg.mkdir(parents=True)
    (eeg / "sub-01_task-rest_eeg.npz").write_bytes(b"")
    (eeg / "._sub-01_task-rest_eeg.npz").write_bytes(b"")
    (tmp_path / ".ipynb_checkpoints" / "sub-02" / "eeg").mkdir(parents=True)
    (tmp_path / ".ipynb_checkpoints" / "sub-02" / "eeg" / "sub-02_task-rest_eeg.npz").write_bytes(b"")
    found = discover(str(tmp_path))
    assert [Path(p).name for p in found["path"]] == ["sub-01_task-rest_eeg.npz"], found


# --- docs/sweeps.md and trainer/default.yaml: the precisions validate refuses --------------------------------------

@pytest.mark.parametrize("precision", ["16-true", "transformer-engine-float16", 32.0])
def test_sweeps_md_lists_the_precisions_validate_refuses(precision):
    from fmx.config import trainer_options

    trainer = yaml.safe_load((CONF / "trainer" / "default.yaml").read_text())
    with pytest.raises(ValueError, match="trainer.precision"):
        trainer_options({**trainer, "precision": precision})
    doc = _flat(_text("docs/sweeps.md"))
    quoted = f"`trainer.precision={precision}`" if isinstance(precision, float) else f"`{precision}`"
    assert quoted in doc, quoted
    assert "use `16-mixed` or `bf16-mixed`" in doc
    for ok in ("16-mixed", "bf16-mixed", "bf16-true"):  # the alternatives the doc names are accepted
        trainer_options({**trainer, "precision": ok})


def test_trainer_default_comment_does_not_claim_the_shipped_sweeps_set_a_precision():
    # the comment said "GPU sweeps use bf16-mixed"; no shipped sweep sets trainer.precision
    comment = (CONF / "trainer" / "default.yaml").read_text()
    assert "the shipped GPU sweeps keep it too" in comment and "16-true is refused" in comment
    for path in (REPO / "sweeps").glob("*.yaml"):
        sweep = yaml.safe_load(path.read_text())
        assert "trainer.precision" not in _base(sweep) and "trainer.precision" not in sweep["parameters"], path.name


# --- docs/sweeps.md: the shipped sweeps as described ----------------------------------------------------------------

def test_sweeps_md_lambda_grid_and_beta_star_settings():
    doc = _flat(_text("docs/sweeps.md"))
    priors = yaml.safe_load((CONF / "fractals" / "default.yaml").read_text())["priors"]
    grid = _sweep("lambda_grid")["parameters"]
    assert grid["fractals.priors.lambda_mf"]["values"] == [0.0, 0.5]
    assert grid["fractals.priors.lambda_graphfd"]["values"] == [0.0, 1.0]
    assert "lambda_mf 0.5 and lambda_graphfd 1.0 as the \"on\" arms" in doc
    assert f"the design defaults {priors['lambda_mf']} and {priors['lambda_graphfd']} moved" in doc
    assert "like `beta_star`, no early stopping" in doc
    for name in ("lambda_grid", "beta_star"):
        assert _sweep(name)["early_terminate"]["type"] == "none", name
    # "these 40-step trials": 10 epochs of n_train / (batch_size x workers) steps
    data = yaml.safe_load((CONF / "data" / "synthetic.yaml").read_text())
    batch = yaml.safe_load((CONF / "trainer" / "default.yaml").read_text())["batch_size"]
    for name in ("lambda_grid", "beta_star", "fractional_alpha", "ablations"):
        sweep = _sweep(name)
        steps = int(_base(sweep)["trainer.max_epochs"]) * data["n_train"] // (batch * sweep["resources"]["workers"])
        assert steps == 40, (name, steps)


def test_sweeps_md_ablations_fractional_alpha_and_gpu_claims():
    doc = _flat(_text("docs/sweeps.md"))
    assert _sweep("ablations")["metric"] == {"name": "acceptance/ablation_drop_pct", "goal": "maximize"}
    assert "ranked by `acceptance/ablation_drop_pct`" in doc
    frac = _sweep("fractional_alpha")
    default_gate = yaml.safe_load((CONF / "fractals" / "default.yaml").read_text())["backbone"][
        "fractional_kernels"]["init_gate"]
    assert f"the default `init_gate` {default_gate}" in doc
    gate = _base(frac)["fractals.backbone.fractional_kernels.init_gate"]
    assert f"`fractals.backbone.fractional_kernels.init_gate={gate}`" in doc
    assert "training" not in frac["acceptance"]  # its priors stay off (warmup 1000): every trial failed it
    cpu_only = sorted(p.stem for p in (REPO / "sweeps").glob("*.yaml")
                      if not 0 < yaml.safe_load(p.read_text())["resources"]["gpus_per_worker"] < 1)
    assert cpu_only == ["criticality_two_moons", "eegmat", "smoke"], cpu_only
    assert "All but `smoke`, `criticality_two_moons` and `eegmat` ask for fractions of a GPU" in doc


def test_sweeps_md_eegmat_validation_and_training_budget():
    doc = _flat(_text("docs/sweeps.md"))
    base = _base(_sweep("eegmat"))
    stride, window = int(base["data.val_stride"]), int(base["data.window"])
    assert f"(`data.val_stride={stride}`)" in doc and stride / 250.0 == 10.0  # "one window every 10 s" at 250 Hz
    assert f"2 epochs of {base['trainer.limit_train_batches']} batches" in doc and base["trainer.max_epochs"] == "2"
    assert "trainer.limit_val_batches" not in base  # validation reads every held-out recording
    held_out = round(float(base["data.val_fraction"]) * 12)
    # 60 s arithmetic recordings and rest recordings after their 1.44-1.99 s trim (docs/fingerprint.md)
    per_recording = {(int(seconds * 250) - window) // stride + 1 for seconds in (60.0, 60.0 - 1.44, 60.0 - 1.99)}
    assert per_recording == {6}
    assert f"the {held_out} held-out subjects, {6 * 2 * held_out} windows" in doc


# --- the eegmat-dev padding the trim cuts ---------------------------------------------------------------------------

@pytest.mark.skipif(not (DATA / "eegmat-dev").is_dir(), reason="needs ../shared/data/eegmat-dev")
def test_docs_state_the_padding_the_trim_cuts_from_the_eegmat_rest_files():
    from models.data.preprocess import trim_flat_edges
    from models.data.readers import read_recording

    files = sorted((DATA / "eegmat-dev").glob("sub-*/eeg/*task-rest*_eeg.edf"))
    assert len(files) == 12
    cut = sorted(sum(trim_flat_edges(read_recording(p)).meta["trimmed_s"]) for p in files)
    lo, hi = cut[0], cut[-1]
    near = sum(1 for c in cut if c >= 1.95)
    fp = _flat(_text("docs/fingerprint.md"))
    assert f"the trim cuts {lo:.2f}-{hi:.2f} s, 1.95-{hi:.2f} s in {near} of the 12" in fp
    assert f"12 rest files trimmed by {lo:.2f}-{hi:.2f} s of padding" in fp
    span = f"{lo:.1f}-{round(hi + 0.05, 1):.1f} s"  # 1.4-2.0 s
    assert f"rest files end with {span} of it" in _flat(_text("docs/model.md"))
    assert f"rest files end with {span}" in (CONF / "fingerprint" / "default.yaml").read_text()


# --- config keys added on 2026-11-30 --------------------------------------------------------------------------------

def test_new_config_keys_are_documented_with_their_defaults():
    files = yaml.safe_load((CONF / "data" / "files.yaml").read_text())
    job = yaml.safe_load((CONF / "fingerprint" / "default.yaml").read_text())
    fractals = yaml.safe_load((CONF / "fractals" / "default.yaml").read_text())
    model = _flat(_text("docs/model.md"))
    fp = _flat(_text("docs/fingerprint.md"))
    assert files["reject_by_annotation"] is True and "`data.reject_by_annotation: true`" in model
    assert job["preprocess"]["reject_by_annotation"] is True
    assert "`preprocess.reject_by_annotation: true`" in fp
    assert "`--config preprocess.reject_by_annotation=false`" in fp
    gate = fractals["backbone"]["fractional_kernels"]["init_gate"]
    assert f"starts at `init_gate`, default {gate}" in model


# --- docs/criticality.md: singular_value_exponent on a layer with a dead unit ---------------------------------------

def test_criticality_md_singular_value_exponent_example():
    import torch

    from fractals.criticality_indicators import singular_value_exponent

    torch.manual_seed(0)
    layer = torch.randn(32, 24)
    whole = float(singular_value_exponent(layer))
    layer[:, 0] = 0.0  # one dead unit: a zero singular value, left out of the fit
    dead = float(singular_value_exponent(layer))
    assert abs(float(singular_value_exponent(layer.double())) - dead) < 1e-6
    doc = _flat(_text("docs/criticality.md"))
    assert f"a 32 x 24 Gaussian layer reads {whole:.2f}, {dead:.2f} with one dead unit" in doc, (whole, dead)


def test_sweeps_md_counts_the_schema_test_cases():
    import ast

    tree = ast.parse(_text("tests/test_sweep_schema.py"))
    sizes = {node.targets[0].id: len(node.value.elts) for node in tree.body
             if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name)
             and node.targets[0].id in ("MALFORMED", "CONFIG_ERRORS") and isinstance(node.value, ast.List)}
    assert set(sizes) == {"MALFORMED", "CONFIG_ERRORS"}, sizes
    doc = _flat(_text("docs/sweeps.md"))
    assert (f"`tests/test_sweep_schema.py` (shipped files, {sizes['MALFORMED']} malformed kinds, "
            f"{sizes['CONFIG_ERRORS']} config-path errors)") in doc, sizes


def test_fingerprint_md_clean_piece_lengths_are_what_the_job_needs():
    from fmx.fingerprint.recording import _longest_window

    job = yaml.safe_load((CONF / "fingerprint" / "default.yaml").read_text())
    doc = _flat(_text("docs/fingerprint.md"))
    full = _longest_window(job)[0]
    assert f"({full} samples with the default config;" in doc
    higuchi = _longest_window({**job, "fingerprint": {**job["fingerprint"], "measures": ["higuchi_fd"]}})[0]
    dfa = _longest_window({**job, "fingerprint": {**job["fingerprint"], "measures": ["dfa_alpha"]}})[0]
    assert f"({higuchi} samples for `measures: [higuchi_fd]`, {dfa} for `[dfa_alpha]`)" in doc, (higuchi, dfa)


def test_fingerprint_md_mixed_table_reads_boundary_fits_as_the_code_reports_them():
    # katz_fd and fou_theta were listed as "no" (not converged); compare reports converged=True with a note
    src = _text("platform/fmx/fingerprint/compare.py")
    note = re.search(r'note = \("(subject variance on the boundary \(0\): the fit ignores the pairing)"', src)
    assert note, "compare.mixed_effects no longer writes the boundary note the doc quotes"
    doc = _text("docs/fingerprint.md")
    table = doc.split("Mixed model `value ~ condition + (1 | subject)`", 1)[1].split("\n\n", 2)[1]
    rows = [r.strip("|").split("|") for r in table.splitlines()[2:]]
    converged = {r[0].strip(): r[-1].strip() for r in rows}
    assert set(converged.values()) <= {"yes", "no", "yes (subject variance 0)"}, converged
    assert converged["katz_fd"] == converged["fou_theta"] == "yes (subject variance 0)", converged
    assert "the fit ignores the pairing" in _flat(doc) and "`note` column of `mixed.csv`" in _flat(doc)
