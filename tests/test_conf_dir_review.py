"""FMX_CONF_DIR: a site copy of the config folder, read when a config is composed (not when fmx is imported)."""
from __future__ import annotations

import shutil

import pytest

from fmx import config


def test_fmx_conf_dir_set_after_import_is_used_for_its_extra_options(tmp_path, monkeypatch):
    # Was: read once at import, so a notebook that set it after `import fmx` still composed the packaged configs
    # and its own option was "unknown".
    site = tmp_path / "site conf"
    shutil.copytree(config.CONF_DIR, site)
    (site / "model" / "lab_small.yaml").write_text((site / "model" / "tiny.yaml").read_text())
    with pytest.raises(ValueError, match="lab_small"):
        config.compose(["model=lab_small"])
    monkeypatch.setenv("FMX_CONF_DIR", str(site))
    assert config.conf_dir() == site
    assert config.compose(["model=lab_small"])["model"] == config.compose(["model=tiny"])["model"]
    monkeypatch.delenv("FMX_CONF_DIR")
    assert config.conf_dir() == config.CONF_DIR


def test_fmx_conf_dir_without_a_config_yaml_names_the_variable_and_the_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("FMX_CONF_DIR", str(tmp_path))
    with pytest.raises(ValueError, match=r"FMX_CONF_DIR=.*no config.yaml there; point it at a copy of .*conf"):
        config.compose([])


def test_fmx_sweep_validate_with_a_wrong_fmx_conf_dir_says_so_in_one_line(tmp_path):
    # Was: a traceback, or (through compose) "base[0]: override does not apply to the config".
    import os
    import subprocess
    import sys
    from pathlib import Path

    import yaml

    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({"name": "lab", "base": ["model=tiny", "data=synthetic"],
                                    "metric": {"name": "val/loss", "goal": "minimize"},
                                    "parameters": {"optim.lr": {"distribution": "log_uniform", "min": 1e-4,
                                                                "max": 1e-2}}}))
    env = {**os.environ, "FMX_CONF_DIR": str(tmp_path / "missing")}
    done = subprocess.run([str(Path(sys.executable).with_name("fmx")), "sweep", "validate", str(path)], env=env,
                          capture_output=True, text=True, timeout=120)
    text = " ".join((done.stdout + done.stderr).split())
    assert done.returncode == 2 and "Traceback" not in text, text
    assert "error: FMX_CONF_DIR=" in text and "no config.yaml there" in text and "base[0]" not in text, text
