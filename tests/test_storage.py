"""Storage: credentials only from env or a mounted secret, redacted everywhere; checkpoints and MLflow artifacts
round-trip through a real S3-compatible server (SeaweedFS with real auth) on 127.0.0.1."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from fmx import storage as st

ENV_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL",
            "AWS_ENDPOINT_URL_S3", "MLFLOW_S3_ENDPOINT_URL", st.SECRET_FILE_ENV)


@pytest.fixture
def clean_env(monkeypatch):
    for k in ENV_KEYS:
        monkeypatch.delenv(k, raising=False)
    return monkeypatch


def test_credentials_from_environment(clean_env):
    clean_env.setenv("AWS_ACCESS_KEY_ID", "AKIAEXAMPLEKEY123456")
    clean_env.setenv("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMIexamplesecret")
    creds = st.load_credentials()
    assert creds.secret_key == "wJalrXUtnFEMIexamplesecret" and creds.source == "environment"
    assert "wJalr" not in repr(creds) and "wJalr" not in str(creds)


@pytest.mark.parametrize("layout", ["json", "keyvalue", "k8s_dir"])
def test_credentials_from_mounted_secret(clean_env, tmp_path, layout):
    if layout == "json":
        secret = tmp_path / "s3.json"
        secret.write_text(json.dumps({"access_key_id": "ak-json", "secret_access_key": "sk-json-value"}))
    elif layout == "keyvalue":
        secret = tmp_path / "s3.env"
        secret.write_text("# mounted\nAWS_ACCESS_KEY_ID=ak-json\nAWS_SECRET_ACCESS_KEY=\"sk-json-value\"\n")
    else:
        secret = tmp_path / "secret"
        secret.mkdir()
        (secret / "access_key_id").write_text("ak-json\n")
        (secret / "secret_access_key").write_text("sk-json-value\n")
    clean_env.setenv(st.SECRET_FILE_ENV, str(secret))
    creds = st.load_credentials()
    assert (creds.access_key, creds.secret_key) == ("ak-json", "sk-json-value")
    assert "sk-json-value" in st.secret_values()


def test_missing_or_incomplete_secret_is_a_clear_error(clean_env, tmp_path):
    clean_env.setenv(st.SECRET_FILE_ENV, str(tmp_path / "absent"))
    with pytest.raises(ValueError, match="FMX_S3_SECRET_FILE: secret file .* does not exist"):
        st.load_credentials()
    partial = tmp_path / "partial.json"
    partial.write_text(json.dumps({"access_key_id": "only-the-id"}))
    clean_env.setenv(st.SECRET_FILE_ENV, str(partial))
    with pytest.raises(ValueError, match="needs an access key and a secret key"):
        st.load_credentials()


def test_no_credentials_is_none(clean_env):
    assert st.load_credentials() is None


def test_redact_masks_known_values_patterns_and_secret_keys(clean_env):
    clean_env.setenv("AWS_ACCESS_KEY_ID", "ak-visible-id")
    clean_env.setenv("AWS_SECRET_ACCESS_KEY", "very-secret-value")
    text = "uri http://user:pw123@host/x key AKIAABCDEFGHIJKLMNOP secret very-secret-value"
    out = st.redact(text)
    assert "very-secret-value" not in out and "pw123" not in out and "AKIAABCDEFGHIJKLMNOP" not in out
    nested = st.redact({"a": ["very-secret-value"], "db_password": "hunter2", "ok": 3})
    assert nested == {"a": ["***"], "db_password": "***", "ok": 3}


def test_redact_keeps_config_keys_that_merely_contain_token(clean_env):
    # flattened model params are logged through redact: tokenizer settings must not become "***"
    params = {"model.tokenizers.lfp.n_channels": 16, "model.popt.n_summary_tokens": 4,
              "MLFLOW_TRACKING_TOKEN": "tok-value", "session_token": "tok-value", "sessionToken": "tok-value"}
    assert st.redact(params, secrets=[]) == {"model.tokenizers.lfp.n_channels": 16, "model.popt.n_summary_tokens": 4,
                                             "MLFLOW_TRACKING_TOKEN": "***", "session_token": "***",
                                             "sessionToken": "***"}


def test_resolve_local_storage_is_absolute_and_created(tmp_path):
    target = st.resolve_storage("runs/ray", root=tmp_path)
    assert target.storage_path == str((tmp_path / "runs" / "ray").resolve()) and Path(target.storage_path).is_dir()
    assert not target.is_s3 and target.filesystem is None
    st.write_bytes(target, "a/b.json", b"{}")
    assert st.read_bytes(target, "a/b.json") == b"{}" and st.read_bytes(target, "missing") is None


def test_a_home_relative_path_means_home_not_a_folder_named_tilde(tmp_path, monkeypatch):
    # storage: {path: ~/ckpt} made <project>/~/ckpt (a folder named "~": `rm -rf ~` away from disaster)
    from fmx import tracking

    home, project = tmp_path / "home", tmp_path / "project"
    monkeypatch.setenv("HOME", str(home))
    assert st.resolve_storage("~/ckpt", root=project).uri == str((home / "ckpt").resolve())
    assert tracking.resolve_tracking_uri("~/mlflow", root=project) == \
        f"sqlite:///{(home / 'mlflow' / 'mlflow.db').resolve()}"
    assert not (project / "~").exists()


@pytest.mark.parametrize("bad", ["s3://", "gs://bucket/x", "s3:///ray"])
def test_resolve_rejects_bad_uris(bad):
    with pytest.raises(ValueError, match="storage.path"):
        st.resolve_storage(bad)


# ------------------------------------------------------------------------------------------ real S3 server
@pytest.mark.slow
def test_s3_round_trip_with_real_auth(seaweed_s3, clean_env):
    for k, v in seaweed_s3.env().items():
        clean_env.setenv(k, v)
    bucket = seaweed_s3.make_bucket()
    target = st.resolve_storage(f"s3://{bucket}/sweeps", endpoint_url=seaweed_s3.endpoint_url)
    assert target.is_s3 and target.storage_path == f"{bucket}/sweeps"
    st.write_bytes(target, "smoke.latest.json", b'{"sweep_id": "x"}')
    assert st.read_bytes(target, "smoke.latest.json") == b'{"sweep_id": "x"}'
    assert st.exists(target, "smoke.latest.json") and not st.exists(target, "other.json")
    body = seaweed_s3.client().get_object(Bucket=bucket, Key="sweeps/smoke.latest.json")["Body"].read()
    assert body == b'{"sweep_id": "x"}'
    wrong = st.s3_filesystem(endpoint_url=seaweed_s3.endpoint_url,
                             credentials=st.S3Credentials("wrong-key", "wrong-secret"))
    with pytest.raises(OSError):
        with wrong.open_input_stream(f"{bucket}/sweeps/smoke.latest.json") as fh:
            fh.read()


@pytest.mark.slow
def test_ray_checkpoint_round_trip_through_s3(seaweed_s3, clean_env, tmp_path):
    import pyarrow.fs as pafs
    import torch
    from ray.train import Checkpoint

    for k, v in seaweed_s3.env().items():
        clean_env.setenv(k, v)
    bucket = seaweed_s3.make_bucket()
    fs = st.s3_filesystem(endpoint_url=seaweed_s3.endpoint_url)
    local = tmp_path / "ckpt"
    local.mkdir()
    state = {"w": torch.arange(6.0).reshape(2, 3), "step": 7}
    torch.save(state, local / "model.ckpt")
    pafs.copy_files(str(local), f"{bucket}/trial/checkpoint_000001", destination_filesystem=fs)
    restored = Checkpoint(path=f"{bucket}/trial/checkpoint_000001", filesystem=fs).to_directory(str(tmp_path / "r"))
    back = torch.load(Path(restored) / "model.ckpt", weights_only=True)
    assert back["step"] == 7 and torch.equal(back["w"], state["w"])


@pytest.mark.slow
def test_mlflow_artifacts_go_to_s3_and_secrets_stay_out(seaweed_s3, mlflow_server_s3, clean_env, tmp_path):
    from fmx import tracking

    server, bucket = mlflow_server_s3
    c = tracking.client(server.tracking_uri)
    exp = tracking.ensure_experiment(c, "s3-artifacts")
    run_id, _ = tracking.get_or_create_run(c, exp, tags={"fmx.trial_id": "t0"}, run_name="t0")
    clean_env.setenv("AWS_SECRET_ACCESS_KEY", seaweed_s3.secret_key)  # known to this process: must be masked
    tracking.log_params(c, run_id, {"storage.note": f"key={seaweed_s3.secret_key}", "lr": 0.1})
    tracking.log_json(c, run_id, {"token": "abc", "echo": seaweed_s3.secret_key, "x": 1}, "acceptance.json")
    local = c.download_artifacts(run_id, "acceptance.json", str(tmp_path))
    data = json.loads(Path(local).read_text())
    assert data == {"token": "***", "echo": "***", "x": 1}
    assert seaweed_s3.secret_key not in json.dumps(c.get_run(run_id).data.params)
    keys = [o["Key"] for o in seaweed_s3.client().list_objects_v2(Bucket=bucket)["Contents"]]
    assert any(k.endswith("acceptance.json") for k in keys), keys


def test_coreweave_endpoints_are_addressed_virtual_hosted_and_the_style_can_be_forced(monkeypatch):
    # CoreWeave object storage serves only BUCKET.cwobject.com; MinIO/SeaweedFS on host:port need path style.
    monkeypatch.delenv(st.ADDRESSING_ENV, raising=False)
    assert st._virtual_addressing("cwobject.com") and st._virtual_addressing("accel.cwlota.com")
    assert not st._virtual_addressing("127.0.0.1") and not st._virtual_addressing("minio.internal")
    monkeypatch.setenv(st.ADDRESSING_ENV, "virtual")
    assert st._virtual_addressing("127.0.0.1")
    monkeypatch.setenv(st.ADDRESSING_ENV, "path")
    assert not st._virtual_addressing("cwobject.com")
    monkeypatch.setenv(st.ADDRESSING_ENV, "sideways")
    with pytest.raises(ValueError, match=st.ADDRESSING_ENV):
        st.s3_filesystem(endpoint_url="https://cwobject.com")
    assert st.ADDRESSING_ENV in st.FORWARDED_ENV  # Ray workers build the same filesystem
