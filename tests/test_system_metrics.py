"""Rank 0's system metrics (``fmx.tracking.start_system_metrics``): one sample every 10 s by default (it was 2 s,
1 % of a Train worker's CPU beside training), and a fit shorter than that still logs its sample at ``finish()``,
which MLflow's own monitor drops."""
from __future__ import annotations

import time

from fmx import storage as st
from fmx import tracking


def _system_steps(c, run_id):
    run = c.get_run(run_id)
    keys = sorted(k for k in run.data.metrics if k.startswith("system/"))
    steps = sorted({m.step for m in c.get_metric_history(run_id, keys[0])}) if keys else []
    return keys, steps


def test_a_fit_shorter_than_the_interval_keeps_its_sample_and_a_restart_goes_on(file_mlflow_run):
    r = file_mlflow_run
    monitor = tracking.start_system_metrics(r.run_id, tracking_uri=r.uri, interval_s=30.0)
    assert monitor is not None and monitor.sampling_interval == 30.0
    time.sleep(0.3)  # the first sample is taken at once; the next would be 30 s later
    monitor.finish()
    keys, steps = _system_steps(r.c, r.run_id)
    assert "system/cpu_utilization_percentage" in keys, keys
    assert steps == [0]
    # a restarted worker's sampler continues the run's steps (resume_logging)
    again = tracking.start_system_metrics(r.run_id, tracking_uri=r.uri, interval_s=30.0)
    time.sleep(0.3)
    again.finish()
    assert _system_steps(r.c, r.run_id)[1] == [0, 1]


def test_default_interval_and_the_environment_override(file_mlflow_run, monkeypatch):
    r = file_mlflow_run
    monitor = tracking.start_system_metrics(r.run_id, tracking_uri=r.uri)
    assert monitor.sampling_interval == tracking.SYSTEM_METRICS_INTERVAL_S == 10.0
    monitor.finish()
    monkeypatch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "3")
    monitor = tracking.start_system_metrics(r.run_id, tracking_uri=r.uri)
    assert float(monitor.sampling_interval) == 3.0
    monitor.finish()
    assert "MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL" in st.FORWARDED_ENV  # it reaches the Train workers
