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
