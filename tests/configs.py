"""Config builders shared by tests (importable: pytest puts tests/ on sys.path for its conftest)."""
from __future__ import annotations

from pathlib import Path

import yaml

CONF = Path(__file__).resolve().parents[1] / "platform" / "fmx" / "conf"


def tiny_training_config(*, n_train: int = 8, n_val: int = 4, batch_size: int = 4, **fractal_priors) -> dict:
    """The composed default config (tiny model, synthetic data, 128 samples), shrunk for CPU tests;
    ``fractal_priors`` update ``fractals.priors``."""
    root = yaml.safe_load((CONF / "config.yaml").read_text())
    root.pop("defaults")
    cfg = {**root,
           "model": yaml.safe_load((CONF / "model" / "tiny.yaml").read_text()),
           "data": yaml.safe_load((CONF / "data" / "synthetic.yaml").read_text()),
           "fractals": yaml.safe_load((CONF / "fractals" / "default.yaml").read_text()),
           "trainer": yaml.safe_load((CONF / "trainer" / "default.yaml").read_text())}
    cfg["data"].update(n_train=n_train, n_val=n_val, n_time=128)
    cfg["trainer"]["batch_size"] = batch_size
    cfg["fractals"]["priors"].update(fractal_priors)
    return cfg
