"""How often Ray Train's controller takes the workers' reports (fmx.trial_support.report_poll_interval).

Ray's default, one poll every 2 s with a one-report queue per worker, held every epoch shorter than 2 s in
``ray.train.report`` until the next poll. The end-to-end check that the trial's value reaches the Train workers
is in test_trial_failure_review (its failing builder quotes the variable).
"""
from __future__ import annotations

import pytest

from fmx import storage as st
from fmx.trial_support import REPORT_POLL_ENV, REPORT_POLL_S, report_poll_interval, set_report_poll_interval


def test_unset_gives_fmx_default_below_rays_two_seconds():
    assert report_poll_interval({}) == REPORT_POLL_S < 2.0
    assert report_poll_interval({REPORT_POLL_ENV: "  "}) == REPORT_POLL_S


@pytest.mark.parametrize("raw,value", [("1.5", 1.5), ("0.1", 0.1), ("2", 2.0)])
def test_a_callers_setting_wins(raw, value):
    env = {REPORT_POLL_ENV: raw}
    assert report_poll_interval(env) == value
    assert set_report_poll_interval(env) == value and float(env[REPORT_POLL_ENV]) == value


def test_set_writes_the_default_where_it_was_unset():
    env: dict = {}
    assert set_report_poll_interval(env) == REPORT_POLL_S
    assert env == {REPORT_POLL_ENV: repr(REPORT_POLL_S)}


@pytest.mark.parametrize("raw", ["abc", "0", "-1", "nan", "inf", "2s"])
def test_a_bad_value_names_the_variable_the_value_and_the_fix(raw):
    with pytest.raises(ValueError) as err:
        report_poll_interval({REPORT_POLL_ENV: raw})
    msg = str(err.value)
    assert msg.startswith(f"{REPORT_POLL_ENV}:") and repr(raw) in msg and "positive number" in msg
    assert f"{REPORT_POLL_ENV}={REPORT_POLL_S}" in msg


def test_the_callers_setting_is_forwarded_to_the_cluster_trials():
    assert REPORT_POLL_ENV in st.FORWARDED_ENV


def test_run_sweep_refuses_a_bad_value_before_ray_starts_or_a_run_is_recorded(tmp_path, monkeypatch):
    from fmx import runner
    from fmx.schema import parse_sweep

    def no_ray(*args, **kwargs):
        raise AssertionError("Ray was started")

    monkeypatch.setattr(runner, "init_ray", no_ray)
    monkeypatch.setenv(REPORT_POLL_ENV, "fast")
    sweep = parse_sweep({"name": "poll", "base": ["model=tiny", "data=synthetic"], "method": "random",
                         "metric": {"name": "val/loss", "goal": "minimize"},
                         "parameters": {"fractals.priors.spectral_beta_target": {"value": 1.0}}, "run_cap": 1,
                         "storage": {"path": str(tmp_path / "ray")},
                         "tracking": {"uri": f"sqlite:///{tmp_path}/mlflow.db"}})
    with pytest.raises(ValueError, match=f"{REPORT_POLL_ENV}: .*'fast'"):
        runner.run_sweep(sweep, root=tmp_path, progress=False)
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "ray").exists()
