"""Review round 9: `fmx sweep submit` and `fmx job` as a user meets them without a cluster."""
from __future__ import annotations

import socket
from pathlib import Path

from typer.testing import CliRunner

from fmx.cli import app

SMOKE = Path(__file__).resolve().parents[1] / "sweeps" / "smoke.yaml"


def _refused_address() -> str:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


def test_submit_reads_file_relative_to_the_shell_not_to_working_dir(tmp_path, monkeypatch):
    # `cd project/sweeps && fmx sweep submit smoke.yaml --working-dir ..`: the file exists where the user
    # runs and lies inside the uploaded folder; it used to be looked up as ../smoke.yaml and refused.
    (tmp_path / "sweeps").mkdir()
    (tmp_path / "sweeps" / "smoke.yaml").write_text(SMOKE.read_text())
    monkeypatch.chdir(tmp_path / "sweeps")
    result = CliRunner().invoke(app, ["sweep", "submit", "smoke.yaml", "--working-dir", "..",
                                      "--address", _refused_address()])
    assert result.exit_code == 2
    assert "not found under working_dir" not in result.output
    assert "no Ray dashboard answered" in result.output  # got past the file check to the connection


def test_a_broken_cluster_record_names_the_file(tmp_path, monkeypatch):
    # An empty record (a `make deploy` cut short) was "Expecting value: line 1 column 1"; a JSON list crashed
    # with AttributeError and a traceback.
    monkeypatch.setenv("FMX_HOME", str(tmp_path))
    (tmp_path / "clusters").mkdir()
    record = tmp_path / "clusters" / "cw.json"
    for text in ("", "[1]", '{"ray_address": '):
        record.write_text(text)
        result = CliRunner().invoke(app, ["job", "list", "--cluster", "cw"])
        assert result.exit_code == 2, result.output
        text = " ".join(result.output.replace("│", " ").split())  # typer boxes and wraps the message
        assert "is not a JSON object" in text and "make deploy" in text


def _sweep_with_data_root(folder: Path, data_root: str) -> Path:
    text = SMOKE.read_text().replace("  - data=synthetic\n", f"  - data=files\n  - data.root={data_root}\n")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "s.yaml").write_text(text)
    return folder / "s.yaml"


def test_submit_refuses_a_relative_data_path_the_upload_does_not_carry(tmp_path, monkeypatch):
    # sweeps/eegmat.yaml's data.root=../shared/data/eegmat-dev, submitted from the repository: the data lies
    # outside the uploaded folder, and the job resolved it against its unpacked copy, where nothing is.
    project = tmp_path / "project"
    (tmp_path / "shared" / "eeg").mkdir(parents=True)
    _sweep_with_data_root(project / "sweeps", "../shared/eeg")
    monkeypatch.chdir(project)
    result = CliRunner().invoke(app, ["sweep", "submit", "sweeps/s.yaml", "--address", _refused_address()])
    text = " ".join(result.output.split())
    assert result.exit_code == 2
    assert "data.root=../shared/eeg is relative" in text and "outside the upload" in text
    assert "no Ray dashboard answered" not in text  # refused before any upload


def test_submit_data_path_inside_the_upload(tmp_path, monkeypatch):
    project = tmp_path / "project"
    (project / "eeg").mkdir(parents=True)
    (project / "sweeps" / "eeg").mkdir(parents=True)
    _sweep_with_data_root(project / "sweeps", "eeg")
    # From the upload's root: the same folder here and in the job; allowed (fails only on the absent server).
    monkeypatch.chdir(project)
    result = CliRunner().invoke(app, ["sweep", "submit", "sweeps/s.yaml", "--address", _refused_address()])
    assert "no Ray dashboard answered" in result.output, result.output
    # From sweeps/ with --working-dir ..: here eeg is sweeps/eeg, in the job project/eeg: refused.
    monkeypatch.chdir(project / "sweeps")
    result = CliRunner().invoke(app, ["sweep", "submit", "s.yaml", "--working-dir", "..",
                                      "--address", _refused_address()])
    text = " ".join(result.output.split())
    assert result.exit_code == 2 and "data.root=eeg is relative" in text, text
