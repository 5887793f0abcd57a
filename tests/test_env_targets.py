"""Where a sweep's checkpoints and runs go: the sweep file, else FMX_STORAGE_PATH / MLFLOW_TRACKING_URI, else the
local defaults (fmx.runner.resolve_targets). No servers: S3 targets are built but never contacted."""
from __future__ import annotations

import pytest

from fmx.runner import STORAGE_ENV, TRACKING_ENV, make_plan, resolve_targets
from fmx.schema import DEFAULT_STORAGE_PATH, SweepFileError, choose_target, parse_sweep

SECRET = "wJalrXUtnFEMI-K7MDENG-bPxRfiCYEXAMPLEKEY"
ACCESS = "AKIAIOSFODNN7EXAMPLE"


def _sweep(**over):
    data = {"name": "envs", "metric": {"name": "val/loss", "goal": "minimize"}, "base": ["model=tiny"]}
    data.update(over)
    return parse_sweep(data)


@pytest.fixture
def clean_env(monkeypatch):
    """No storage/tracking/S3 variables from the machine running the tests; fake S3 credentials are set."""
    for k in (STORAGE_ENV, TRACKING_ENV, "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "FMX_S3_SECRET_FILE"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    return monkeypatch


def test_choose_target_precedence_file_then_environment_then_default():
    """The rule alone (light: fmx.schema, no Ray), as the CLI's --storage default can use it too."""
    env = {STORAGE_ENV: "s3://b/ray"}
    pick = lambda value, env: choose_target(value, default=DEFAULT_STORAGE_PATH, env_var=STORAGE_ENV, env=env)  # noqa: E731
    assert pick("s3://mine/x", env) == ("s3://mine/x", "sweep file")
    assert pick(DEFAULT_STORAGE_PATH, env) == ("s3://b/ray", STORAGE_ENV)
    assert pick(DEFAULT_STORAGE_PATH, {STORAGE_ENV: " s3://b/ray\n"}) == ("s3://b/ray", STORAGE_ENV)
    assert pick(DEFAULT_STORAGE_PATH, {STORAGE_ENV: ""}) == (DEFAULT_STORAGE_PATH, "default")
    assert pick(DEFAULT_STORAGE_PATH, {}) == (DEFAULT_STORAGE_PATH, "default")


def test_defaults_without_environment_are_local_under_the_project(clean_env, tmp_path):
    t = resolve_targets(_sweep(), root=tmp_path)
    assert (t.storage_source, t.tracking_source) == ("default", "default")
    assert t.storage.uri == str((tmp_path / "runs" / "ray").resolve()) and t.storage.filesystem is None
    assert (tmp_path / "runs" / "ray").is_dir()
    assert t.tracking_uri == f"sqlite:///{(tmp_path / 'runs' / 'mlflow.db').resolve()}"


@pytest.mark.parametrize("spelled_out", [False, True], ids=["omitted", "default-written"])
def test_environment_replaces_defaults(clean_env, tmp_path, spelled_out):
    """Cluster pods: FMX_STORAGE_PATH and MLFLOW_TRACKING_URI take the place of the defaults, whether the file
    omits storage/tracking or writes the default values (as the shipped sweeps do)."""
    clean_env.setenv(STORAGE_ENV, "s3://fmx-bucket/ray")
    clean_env.setenv(TRACKING_ENV, "http://neurofmx-mlflow:5000")
    clean_env.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    over = {"storage": {"path": "runs/ray"}, "tracking": {"uri": "sqlite:///runs/mlflow.db"}} if spelled_out else {}
    t = resolve_targets(_sweep(**over), root=tmp_path)
    assert (t.storage_source, t.tracking_source) == (STORAGE_ENV, TRACKING_ENV)
    assert (t.storage.uri, t.storage.storage_path) == ("s3://fmx-bucket/ray", "fmx-bucket/ray")
    assert type(t.storage.filesystem).__name__ == "S3FileSystem"
    assert t.tracking_uri == "http://neurofmx-mlflow:5000"
    assert not (tmp_path / "runs").exists()  # nothing local was created


def test_explicit_sweep_file_values_win_over_environment(clean_env, tmp_path):
    clean_env.setenv(STORAGE_ENV, "s3://fmx-bucket/ray")
    clean_env.setenv(TRACKING_ENV, "http://neurofmx-mlflow:5000")
    t = resolve_targets(_sweep(storage={"path": "ckpts"}, tracking={"uri": "http://other:5000"}), root=tmp_path)
    assert (t.storage_source, t.tracking_source) == ("sweep file", "sweep file")
    assert t.storage.uri == str((tmp_path / "ckpts").resolve())
    assert t.tracking_uri == "http://other:5000"
    # an explicit local path that differs from the default only in spelling keeps a pod's checkpoints local
    t = resolve_targets(_sweep(storage={"path": "./runs/ray"}), root=tmp_path)
    assert t.storage_source == "sweep file" and t.storage.uri == str((tmp_path / "runs" / "ray").resolve())
    assert t.tracking_source == TRACKING_ENV  # each target is decided on its own


def test_each_target_falls_back_on_its_own_and_empty_variables_are_unset(clean_env, tmp_path):
    clean_env.setenv(STORAGE_ENV, "   ")
    clean_env.setenv(TRACKING_ENV, "mlruns")  # a relative folder: a sqlite store in it, against the project
    t = resolve_targets(_sweep(), root=tmp_path)
    assert t.storage_source == "default" and t.storage.uri.endswith("/runs/ray")
    assert t.tracking_source == TRACKING_ENV and t.tracking_uri == f"sqlite:///{(tmp_path / 'mlruns' / 'mlflow.db').resolve()}"


def test_an_explicit_env_mapping_is_read_instead_of_os_environ(clean_env, tmp_path):
    clean_env.setenv(STORAGE_ENV, "s3://ignored/ray")
    t = resolve_targets(_sweep(), root=tmp_path, env={STORAGE_ENV: str(tmp_path / "abs"), TRACKING_ENV: ""})
    assert (t.storage_source, t.storage.uri) == (STORAGE_ENV, str((tmp_path / "abs").resolve()))
    assert t.tracking_source == "default"


@pytest.mark.parametrize("value,words", [
    ("gs://bucket/ray", "only local paths and s3:// URIs"),
    ("s3://", "needs a bucket"),
    (f"s3://{ACCESS}:{SECRET}@bucket/ray", "credentials never go in storage.path"),
])
def test_a_bad_storage_variable_is_named_with_the_fix(clean_env, tmp_path, value, words):
    clean_env.setenv(STORAGE_ENV, value)
    with pytest.raises(ValueError, match=STORAGE_ENV) as exc:
        resolve_targets(_sweep(), root=tmp_path)
    msg = str(exc.value)
    assert words in msg and "set it to s3://bucket/prefix or a local folder, or unset it" in msg
    assert SECRET not in msg and ACCESS not in msg
    # the sweep file's own value is used without looking at the variable
    assert resolve_targets(_sweep(storage={"path": "mine"}), root=tmp_path).storage_source == "sweep file"


def test_a_tracking_variable_with_a_password_is_refused_without_showing_it(clean_env, tmp_path):
    clean_env.setenv(TRACKING_ENV, f"http://admin:{SECRET}@neurofmx-mlflow:5000")
    with pytest.raises(ValueError, match="MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD") as exc:
        resolve_targets(_sweep(), root=tmp_path)
    assert SECRET not in str(exc.value) and "http://***@neurofmx-mlflow:5000" in str(exc.value)
    with pytest.raises(SweepFileError, match="tracking.uri: credentials never go") as exc:
        _sweep(tracking={"uri": f"https://admin:{SECRET}@mlflow.example.org"})
    assert SECRET not in str(exc.value)
    with pytest.raises(SweepFileError, match="storage.path: credentials never go") as exc:
        _sweep(storage={"path": f"s3://{ACCESS}:{SECRET}@bucket/ray"})
    assert SECRET not in str(exc.value) and ACCESS not in str(exc.value)
    # a user name alone is not a credential (sqlite and plain hosts pass)
    assert _sweep(tracking={"uri": "http://mlflow@neurofmx-mlflow:5000"}).tracking.uri.startswith("http://mlflow@")


def test_describe_names_each_source_and_no_credentials(clean_env, tmp_path):
    clean_env.setenv(STORAGE_ENV, "s3://fmx-bucket/ray")
    t = resolve_targets(_sweep(), root=tmp_path)
    line = t.describe()
    assert "checkpoints: s3://fmx-bucket/ray (from FMX_STORAGE_PATH)" in line
    assert f"tracking: sqlite:///{(tmp_path / 'runs' / 'mlflow.db').resolve()} (from default)" in line
    assert SECRET not in line and ACCESS not in line and SECRET not in repr(t) and ACCESS not in repr(t)


def test_the_plan_carries_the_chosen_targets_and_their_sources(clean_env, tmp_path):
    clean_env.setenv(STORAGE_ENV, "s3://fmx-bucket/ray")
    clean_env.setenv(TRACKING_ENV, "http://neurofmx-mlflow:5000")
    plan = make_plan(_sweep(storage={"path": "runs/ray", "endpoint_url": "http://127.0.0.1:9"}), sweep_id="envs-1",
                     root=tmp_path)
    assert (plan.storage_uri, plan.storage_path, plan.storage_source) == ("s3://fmx-bucket/ray", "fmx-bucket/ray",
                                                                         STORAGE_ENV)
    assert (plan.tracking_uri, plan.tracking_source) == ("http://neurofmx-mlflow:5000", TRACKING_ENV)
    assert plan.endpoint_url == "http://127.0.0.1:9"
    assert type(plan.target().filesystem).__name__ == "S3FileSystem"  # what trials rebuild on the workers
    assert SECRET not in repr(plan) and ACCESS not in repr(plan)


def test_ray_workers_never_receive_a_uri_with_a_password(clean_env, monkeypatch):
    """A sweep file with its own tracking.uri leaves MLFLOW_TRACKING_URI unused (so not refused): it must still not
    be forwarded into Ray's runtime_env, where the dashboard shows it."""
    import ray

    from fmx import runner

    clean_env.setenv(TRACKING_ENV, f"http://admin:{SECRET}@neurofmx-mlflow:5000")
    clean_env.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9000")
    clean_env.delenv("RAY_ADDRESS", raising=False)
    seen = {}
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **kwargs: seen.update(kwargs))  # records what a local Ray would get
    runner.init_ray(None, num_cpus=1)
    env_vars = (seen.get("runtime_env") or {}).get("env_vars", {})
    assert env_vars.get("AWS_ENDPOINT_URL") == "http://127.0.0.1:9000"
    assert TRACKING_ENV not in env_vars and SECRET not in str(seen)
