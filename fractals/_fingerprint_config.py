"""Config of :func:`fractals.fingerprint.fingerprint`: its defaults and their checked merge.

The defaults mirror ``platform/fmx/conf/fractals/default.yaml`` ``metrics``; the key-by-key meaning is
in the :mod:`fractals.fingerprint` module docstring. Kept apart so that the measuring code reads in
one sitting.
"""
from __future__ import annotations

import copy
import math
import numbers
from typing import Any, Mapping, Optional

import numpy as np
import torch

__all__ = ["DEFAULT_CONFIG", "CONTINUOUS_MEASURES", "INTERVAL_MEASURES", "resolve_config"]

DEFAULT_CONFIG: dict[str, Any] = {
    "temporal": {"higuchi_kmax": 8, "dfa_orders": [4, 16, 64, 256], "psd_freq_band": [2.0, 80.0],
                 "exclude_peaks": True},
    "multifractal": {"q_vals": [-5, -3, -1, 0, 1, 3, 5], "scales": [8, 16, 32, 64, 128, 256]},
    "graph": {"corr_threshold": 0.3, "box_eps": [1, 2, 3, 4, 5, 6], "node_orders": 1},
    "intervals": {"alpha1_beats": [4, 16], "alpha2_beats": [16, 64], "ectopic_filter": False, "min_ms": 300.0,
                  "max_ms": 2000.0, "window": 11, "tolerance": 0.2},
    "quality": {"min_r2": 0.0, "max_flat_fraction": 0.01},
    "measures": None,
}
CONTINUOUS_MEASURES = ("higuchi_fd", "katz_fd", "dfa_alpha", "hurst_rs", "spectral_beta", "mf_width")
INTERVAL_MEASURES = ("dfa_alpha1", "dfa_alpha2", "higuchi_fd", "mf_width")
# Keys of the metrics block that describe windowing/logging, not a single fingerprint: accepted, unused.
_IGNORED_METRIC_KEYS = {"window_size", "hop_size", "sample_rate_hz", "compute_on"}
_RANGE_KEYS = {"psd_freq_band", "alpha1_beats", "alpha2_beats"}  # [lo, hi] pairs


def resolve_config(config: Optional[Mapping[str, Any]] = None) -> dict[str, Any]:
    """Defaults deep-merged with ``config``; unknown keys raise ``ValueError`` naming the path."""
    cfg = copy.deepcopy(DEFAULT_CONFIG)
    if config is None:
        return cfg
    if not isinstance(config, Mapping):
        raise ValueError(f"config: needs a dict, got {type(config).__name__}")
    if "metrics" in config:  # the whole fractals block
        config = config.get("metrics") or {}
    for key, value in config.items():
        if key in _IGNORED_METRIC_KEYS:
            continue
        if key not in cfg:
            raise ValueError(f"config: unknown key {key!r}; allowed: {sorted(set(cfg) | _IGNORED_METRIC_KEYS)}")
        if isinstance(cfg[key], dict):
            if not isinstance(value, Mapping):
                raise ValueError(f"config.{key}: needs a dict, got {value!r}")
            for sub, v in value.items():
                if sub not in cfg[key]:
                    raise ValueError(f"config.{key}: unknown key {sub!r}; allowed: {sorted(cfg[key])}")
                cfg[key][sub] = _check_leaf(f"config.{key}.{sub}", cfg[key][sub], v)
        else:
            cfg[key] = value
    _check_values(cfg)
    return cfg


def _check_values(cfg: dict[str, Any]) -> None:
    """Values of the right kind but outside what any recording could use: they voided a measure on every
    channel (flagged per channel), were bent silently (8.7 -> 8, a negative window dropped) or failed
    after every measure had run, under the estimator's argument name instead of the config path."""
    t, mf, g, q, iv = cfg["temporal"], cfg["multifractal"], cfg["graph"], cfg["quality"], cfg["intervals"]
    _integers("config.temporal.higuchi_kmax", [t["higuchi_kmax"]], minimum=2)
    t["higuchi_kmax"] = int(t["higuchi_kmax"])
    _integers("config.graph.node_orders", [g["node_orders"]], minimum=1)
    g["node_orders"] = int(g["node_orders"])
    for path, values, minimum in (("config.temporal.dfa_orders", t["dfa_orders"], 3),
                                  ("config.multifractal.scales", mf["scales"], 3),
                                  ("config.graph.box_eps", g["box_eps"], 1),
                                  ("config.intervals.alpha1_beats", iv["alpha1_beats"], 3),
                                  ("config.intervals.alpha2_beats", iv["alpha2_beats"], 3)):
        _integers(path, values, minimum=minimum)
    # The ectopic filter's settings, checked here so a bad one names its config path (clean_rr_intervals
    # named only "window") and a fractional window fails instead of being cut down by int().
    _integers("config.intervals.window", [iv["window"]], minimum=1)
    if int(iv["window"]) % 2 == 0:
        raise ValueError(f"config.intervals.window: needs an odd number of beats (a centred running mean), "
                         f"got {iv['window']!r}; e.g. 11")
    iv["window"] = int(iv["window"])
    if not 0 <= iv["min_ms"] < iv["max_ms"]:
        raise ValueError(f"config.intervals.min_ms, config.intervals.max_ms: need 0 <= min_ms < max_ms (ms), got "
                         f"{iv['min_ms']!r}, {iv['max_ms']!r}; e.g. 300, 2000")
    if not (iv["tolerance"] > 0 and math.isfinite(iv["tolerance"])):
        raise ValueError(f"config.intervals.tolerance: needs a fraction > 0 of the running mean, "
                         f"got {iv['tolerance']!r}; e.g. 0.2")
    if len(g["box_eps"]) < 2 or any(b <= a for a, b in zip(g["box_eps"], g["box_eps"][1:])):
        raise ValueError(f"config.graph.box_eps: needs >= 2 increasing box sizes (graph distance) for a slope, "
                         f"got {g['box_eps']!r}; e.g. [1, 2, 3, 4, 5, 6]")
    finite_q = [v for v in mf["q_vals"] if math.isfinite(v)]
    if len(finite_q) != len(mf["q_vals"]) or len(set(finite_q)) < 3:
        raise ValueError(f"config.multifractal.q_vals: needs >= 3 distinct finite moment orders, got {mf['q_vals']!r}; "
                         "e.g. [-5, -3, -1, 0, 1, 3, 5]")
    if not 0 <= g["corr_threshold"] < 1:
        raise ValueError(f"config.graph.corr_threshold: needs |r| in [0, 1), got {g['corr_threshold']!r}; e.g. 0.3")
    if not math.isfinite(q["min_r2"]):
        raise ValueError(f"config.quality.min_r2: needs a finite r2 (0 switches the poor_fit flag off), "
                         f"got {q['min_r2']!r}")
    if not 0 <= q["max_flat_fraction"] <= 1:
        raise ValueError(f"config.quality.max_flat_fraction: needs a fraction of T in [0, 1], "
                         f"got {q['max_flat_fraction']!r}; e.g. 0.01")
    measures = cfg["measures"]
    if isinstance(measures, str):
        raise ValueError(f"config.measures: needs a list of measure names, got the string {measures!r}; "
                         f"write [{measures!r}]")
    if measures is not None and (not hasattr(measures, "__iter__") or isinstance(measures, Mapping)):
        raise ValueError(f"config.measures: needs a list of measure names or null, got {measures!r}")


def _integers(path: str, values: Any, *, minimum: int) -> None:
    bad = [v for v in values if not float(v).is_integer() or v < minimum]
    if bad:
        raise ValueError(f"{path}: needs whole numbers >= {minimum}, got {bad} in {values!r}")


def _is_number(v: Any) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, (bool, np.bool_))


def _check_leaf(path: str, default: Any, value: Any) -> Any:
    """``value`` must have the default's kind (switch, number, list of numbers), so a scalar where
    a list belongs or a quoted "false" fails here with its path, not as a TypeError deep inside."""
    if isinstance(value, (torch.Tensor, np.ndarray)):
        value = value.tolist()  # plain Python numbers (a 0-dim array gives a scalar)
    if isinstance(default, bool):
        # bool("false") is True: a quoted YAML/CLI value must not silently flip a switch on.
        if not isinstance(value, (bool, np.bool_)):
            raise ValueError(f"{path}: needs true or false, got {value!r}")
        return bool(value)
    if isinstance(default, (int, float)):
        if not _is_number(value):
            raise ValueError(f"{path}: needs a number, got {value!r}")
    elif isinstance(default, list):
        if isinstance(value, (str, bytes, Mapping)) or not hasattr(value, "__iter__") \
                or not all(_is_number(v) for v in value):
            raise ValueError(f"{path}: needs a list of numbers like {default}, got {value!r}")
        value = list(value)
        if path.rsplit(".", 1)[-1] in _RANGE_KEYS and len(value) != 2:
            raise ValueError(f"{path}: needs [lo, hi] (two numbers), got {value!r}")
    return value
