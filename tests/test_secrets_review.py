"""Review: credentials never reach params, logs, artifacts or error messages (masking bypasses)."""
from __future__ import annotations

import pytest
from typer.testing import CliRunner

from fmx import storage as st
from fmx.cli import app
from fmx.targets import mask_uri_password, uri_has_password

AK, SK, PW = "AKIAFMXLEAKTEST0001", "fmxLeakSecret/ABCxyz+123", "fmxLeakPass"


# ------------------------------------------------------------------ passwords the masks missed
@pytest.mark.parametrize("uri, shown", [
    ("http://user:p@ss@127.0.0.1:5000", "http://***@127.0.0.1:5000"),        # '@' inside the password
    (f"s3://{AK}:{SK}@bucket/ray", "s3://***@bucket/ray"),                   # AWS secrets carry '/' and '+'
    (f" http://u:{PW}@127.0.0.1:5000", f" http://***@127.0.0.1:5000"),       # pasted with a space in front
])
def test_password_uri_detected_and_masked_whole(uri, shown):
    assert uri_has_password(uri)
    assert mask_uri_password(uri) == shown
    assert st.redact(uri, []) == shown


@pytest.mark.parametrize("uri, secret", [
    (f"postgresql+psycopg2://fmx@127.0.0.1:5432/mlflow?password={PW}", PW),   # libpq takes ?password=
    (f"http://127.0.0.1:5000/?token={PW}", PW),
    (f"mysql://fmx@db/mlflow?charset=utf8&passwd={PW}", PW),
    (f"s3://bucket/ray?access_key={AK}&secret_key={SK}", SK),                # pyarrow's from_uri form
])
def test_credentials_in_query_string_refused_and_masked(uri, secret):
    assert uri_has_password(uri)
    assert secret not in mask_uri_password(uri)
    assert secret not in st.redact(f"error: cannot reach {uri}: refused", [])


def test_empty_user_password_redacted_in_free_text():
    assert "onlypass" not in st.redact("connect to http://:onlypass@127.0.0.1:5000 failed", [])


def test_url_encoded_secret_values_are_masked():
    env = {"AWS_SECRET_ACCESS_KEY": SK, "MLFLOW_TRACKING_PASSWORD": "p@ss:w/rd"}
    text = "GET http://u:p%40ss%3Aw%2Frd@h/ and key fmxLeakSecret%2FABCxyz%2B123"
    out = st.redact(text, st.secret_values(env))
    assert "p%40ss" not in out and "fmxLeakSecret" not in out


@pytest.mark.parametrize("uri", ["http://127.0.0.1:5000", "http://127.0.0.1:5000/path@x", "sqlite:///runs/mlflow.db",
                                 "s3://bucket/key@x:y", "databricks://profile:prefix", "runs/ray",
                                 "http://h:5000/?experiment=tokens", "sqlite:///x.db?timeout=30"])
def test_plain_uris_are_not_refused(uri):
    assert not uri_has_password(uri)
    assert mask_uri_password(uri) == uri


# ------------------------------------------------------------------ the places that use the check
def test_storage_path_with_slash_secret_refused_without_echo():
    from fmx.schema import Storage

    with pytest.raises(ValueError) as err:
        Storage(path=f"s3://{AK}:{SK}@bucket/ray")
    assert "fmxLeakSecret" not in str(err.value)


def test_worker_env_drops_tracking_uri_with_query_password():
    from fmx.fingerprint.job import worker_env

    env = worker_env({"MLFLOW_TRACKING_URI": f"postgresql://fmx@h/db?password={PW}", "AWS_REGION": "us-east-1"})
    assert env == {"AWS_REGION": "us-east-1"}


def test_fingerprint_s3_uri_with_slash_secret_refused():
    from fmx.fingerprint import storage as fst

    with pytest.raises(ValueError) as err:
        fst.exists(f"s3://{AK}:{SK}@bucket/fp/x.parquet")
    assert "fmxLeakSecret" not in str(err.value)


def test_fingerprint_fit_space_padded_password_uri_not_echoed(tmp_path):
    res = CliRunner().invoke(app, ["fingerprint", "fit", str(tmp_path), "--out", str(tmp_path / "o"), "--serial",
                                   "--mlflow", f" http://fmxuser:{PW}@127.0.0.1:5000"])
    assert res.exit_code == 2
    assert PW not in res.output


@pytest.mark.parametrize("args", [["job", "status", "raysubmit_x"], ["job", "list"], ["job", "logs", "raysubmit_x"],
                                  ["sweep", "submit", "sweeps/smoke.yaml"]])
@pytest.mark.parametrize("address", [f"http://u:{PW}@127.0.0.1:9", f"http://{PW}@127.0.0.1:9"])
def test_ray_address_with_credentials_refused_without_echo(args, address):
    res = CliRunner().invoke(app, [*args, "--address", address])
    assert res.exit_code == 2
    text = " ".join(res.output.replace("│", " ").split())  # typer wraps BadParameter in a box
    assert PW not in res.output and "credentials never go in the address" in text


# ------------------------------------------------------------------ keys pickled into Ray/Tune state
# Tune pickles RunConfig.storage_filesystem into tuner.pkl and basic-variant-state-*.json, which it syncs to the
# checkpoint store itself (s3://bucket/ray/<sweep>/): a filesystem built with explicit keys carried them there.
@pytest.fixture
def s3_env(monkeypatch, tmp_path):
    for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "FMX_S3_SECRET_FILE"):
        monkeypatch.setenv(k, "x")  # recorded, so keys exported by the code under test are removed afterwards
        monkeypatch.delenv(k)
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    return monkeypatch


@pytest.mark.parametrize("source", ["environment", "secret file"])
def test_s3_filesystem_pickles_without_keys(s3_env, tmp_path, source):
    import os
    import pickle

    if source == "environment":
        s3_env.setenv("AWS_ACCESS_KEY_ID", AK)
        s3_env.setenv("AWS_SECRET_ACCESS_KEY", SK)
    else:
        (tmp_path / "s3.env").write_text(f"AWS_ACCESS_KEY_ID={AK}\nAWS_SECRET_ACCESS_KEY={SK}\n")
        s3_env.setenv("FMX_S3_SECRET_FILE", str(tmp_path / "s3.env"))
    import cloudpickle
    from pyarrow import fs as pafs

    target = st.resolve_storage("s3://bucket/ray")
    for dumps in (pickle.dumps, cloudpickle.dumps):  # Ray pickles with cloudpickle
        blob = dumps(target.filesystem)
        assert SK.encode() not in blob and AK.encode() not in blob
    # unpickled (in a Ray worker), it reads the keys again from that process's environment or mounted secret
    back = pickle.loads(blob)
    assert isinstance(back, pafs.S3FileSystem) and back.region == "us-east-1"
    assert pafs.S3FileSystem.__reduce__(back)[1][0]["secret_key"] == SK
    assert back.__reduce__()[1][0]["endpoint_url"] == "http://127.0.0.1:9"
    assert (source == "environment") == ("AWS_SECRET_ACCESS_KEY" in os.environ)  # nothing exported


def test_s3_filesystem_with_explicit_credentials_still_uses_them(s3_env):
    fs = st.s3_filesystem(credentials=st.S3Credentials("key-given", "secret-given"))
    assert b"secret-given" in __import__("pickle").dumps(fs)  # the caller chose to hand them over


# ------------------------------------------------------------------ the job package of `fmx sweep submit`
@pytest.mark.parametrize("secret_rel", ["secrets/s3.json", "s3-creds", ".env.local"])
def test_submit_working_dir_leaves_out_the_mounted_secret(tmp_path, secret_rel):
    from ray._private.runtime_env.packaging import _get_excludes

    from fmx import cluster

    secret = tmp_path / secret_rel
    secret.parent.mkdir(parents=True, exist_ok=True)
    secret.write_text(f'{{"AWS_ACCESS_KEY_ID": "{AK}", "AWS_SECRET_ACCESS_KEY": "{SK}"}}')
    (tmp_path / "sweeps").mkdir()
    (tmp_path / "sweeps" / "s3.json").write_text("{}")  # same name elsewhere: still uploaded
    excludes = sorted(set(cluster.DEFAULT_EXCLUDES)
                      | cluster.secret_excludes(tmp_path, {"FMX_S3_SECRET_FILE": str(secret)}))
    skipped = _get_excludes(tmp_path, excludes)
    assert skipped(secret)
    assert not skipped(tmp_path / "sweeps" / "s3.json")
    assert cluster.secret_excludes(tmp_path, {"FMX_S3_SECRET_FILE": "/elsewhere/s3.json"}) == set()


# ------------------------------------------------------------------ keys copied into Ray's runtime_env
@pytest.mark.slow
def test_tune_trainables_get_no_keys_in_runtime_env(monkeypatch):
    import ray
    from ray.tune.execution import class_cache

    from fmx.ray_setup import init_ray

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", AK)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SK)
    monkeypatch.setattr(class_cache, "ENV_VARS_TO_PROPAGATE", class_cache.ENV_VARS_TO_PROPAGATE)  # restored after
    started = init_ray(None, num_cpus=1)
    try:
        class Trainable:
            pass

        env_vars = class_cache._ActorClassCache().get(Trainable)._default_options["runtime_env"]["env_vars"]
    finally:
        if started:
            ray.shutdown()
    assert SK not in env_vars.values() and AK not in env_vars.values()


def test_sweep_status_storage_with_keys_refused_as_such(tmp_path):
    """It used to reach pyarrow and come back as 'the pointer is damaged', with the secret in the exception."""
    with pytest.raises(ValueError, match="credentials never go") as err:
        st.resolve_storage(f"s3://{AK}:{SK}@bucket/ray", field="--storage")
    assert "fmxLeakSecret" not in str(err.value) and "--storage" in str(err.value)
    res = CliRunner().invoke(app, ["sweep", "status", "smoke", "--storage", f"s3://{AK}:{SK}@bucket/ray"])
    assert res.exit_code == 2 and "credentials never go" in res.output and "damaged" not in res.output


def test_fingerprint_errors_mask_a_password_in_the_data_path(tmp_path):
    """`fmx fingerprint fit http://u:pw@h/data` echoed the password: its _fail did not redact, unlike the others."""
    res = CliRunner().invoke(app, ["fingerprint", "fit", f"http://user:{PW}@127.0.0.1:1/data", "--out",
                                   str(tmp_path / "o"), "--serial"])
    assert res.exit_code != 0 and PW not in res.output, res.output


@pytest.mark.parametrize("path", [f"S3://{AK}:{SK}@bucket/ray", f"gs://{AK}:{SK}@bucket/ray"])
def test_storage_path_with_keys_under_another_scheme_is_refused_without_echo(path):
    """The scheme check ran first and put the raw value, keys included, into the error."""
    from fmx.schema import Storage

    with pytest.raises(ValueError) as err:
        Storage(path=path)
    assert "credentials never go" in str(err.value) and not any(part in str(err.value) for part in ("fmxLeakSecret", "ABCxyz"))
