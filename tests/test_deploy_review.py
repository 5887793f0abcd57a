"""Review-round checks of the deployment against the providers' documented requirements."""
from __future__ import annotations

from pathlib import Path

import pytest

from test_deploy_manifests import by_kind, render

REPO_ROOT = Path(__file__).resolve().parents[1]


def _mlflow_env(provider: str) -> dict[str, str]:
    deployment = next(d for d in by_kind(render(provider), "Deployment") if d["metadata"]["name"].endswith("mlflow"))
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e.get("value") for e in container.get("env", [])}


def test_mlflow_on_coreweave_addresses_the_bucket_virtual_hosted(monkeypatch):
    """CoreWeave AI Object Storage refuses path-style requests (https://cwobject.com/BUCKET/key), and boto3
    with a custom endpoint defaults to exactly that: the MLflow server must ask for virtual-hosted style."""
    env = _mlflow_env("coreweave")
    assert env["MLFLOW_S3_ENDPOINT_URL"] == "https://cwobject.com"
    assert env.get("MLFLOW_BOTO_CLIENT_ADDRESSING_STYLE") == "virtual"
    # What that setting does inside the MLflow server: its boto3 client signs BUCKET.cwobject.com URLs.
    from mlflow.store.artifact.s3_artifact_repo import _get_s3_client

    for name in ("MLFLOW_S3_ENDPOINT_URL", "MLFLOW_BOTO_CLIENT_ADDRESSING_STYLE", "AWS_DEFAULT_REGION"):
        monkeypatch.setenv(name, env[name])
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "id")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    url = _get_s3_client().generate_presigned_url("get_object", Params={"Bucket": "neurofmx-runs", "Key": "mlflow/a"})
    assert url.startswith("https://neurofmx-runs.cwobject.com/mlflow/a"), url


@pytest.mark.parametrize("provider", ["generic", "crusoe"])
def test_other_stores_keep_boto3s_default_addressing(provider):
    # S3-compatible stores on a bare host:port (and Crusoe's s3_url) are not switched to virtual hosting.
    assert "MLFLOW_BOTO_CLIENT_ADDRESSING_STYLE" not in _mlflow_env(provider)


def _s3_backend(text: str) -> dict:
    """The `backend "s3"` block, with python-hcl2's quoting (which varies by version) taken off."""
    import hcl2

    block = hcl2.loads(text)["terraform"][0]["backend"][0]
    unquote = lambda v: v.strip('"') if isinstance(v, str) else v  # noqa: E731
    s3 = block.get("s3") or block['"s3"']
    return {k: ({kk: unquote(vv) for kk, vv in v.items()} if isinstance(v, dict) else unquote(v)) for k, v in s3.items()}


def _remote_state_backend(tmp_path, **env) -> dict:
    """Run deploy.sh (stubbed terraform/helm/kubectl) with remote state; return the backend it wrote."""
    from test_terraform import REPO, _deploy, stub_env

    written = REPO / "terraform" / "coreweave" / "remote-state.tf"
    assert not written.exists(), f"{written} exists (a real deploy's file?); this test would overwrite it"
    try:
        result = _deploy(dict(stub_env.__wrapped__(tmp_path), TF_STATE_BUCKET="tf-state", **env))
        assert result.returncode == 0, result.stderr
        return _s3_backend(written.read_text())
    finally:
        written.unlink(missing_ok=True)


def test_remote_state_on_coreweave_object_storage_is_virtual_hosted(tmp_path):
    """docs/deploy.md and remote-state.tf.example point TF_STATE_ENDPOINT at https://cwobject.com, which
    refuses path-style requests: the backend deploy.sh writes must not force path style there."""
    backend = _remote_state_backend(tmp_path, TF_STATE_ENDPOINT="https://cwobject.com")
    assert backend["endpoints"] == {"s3": "https://cwobject.com"}
    assert backend["use_path_style"] is False
    example = _s3_backend((REPO_ROOT / "terraform" / "coreweave" / "remote-state.tf.example").read_text())
    assert example["endpoints"] == {"s3": "https://cwobject.com"} and example["use_path_style"] is False


def test_remote_state_path_style_stays_available(tmp_path):
    # MinIO-like stores on a bare host:port still need path style: TF_STATE_PATH_STYLE=true asks for it.
    backend = _remote_state_backend(tmp_path, TF_STATE_ENDPOINT="http://10.0.0.5:9000", TF_STATE_PATH_STYLE="true")
    assert backend["use_path_style"] is True


def test_training_image_pins_the_mlflow_client_to_the_servers_version():
    """The trials log to the chart's MLflow server (docker/mlflow.Dockerfile, pinned); an unpinned client in
    docker/Dockerfile would be whatever PyPI serves on build day, newer than the server it talks to."""
    import re

    server = re.search(r"ARG MLFLOW_VERSION=(\S+)", (REPO_ROOT / "docker" / "mlflow.Dockerfile").read_text()).group(1)
    train = (REPO_ROOT / "docker" / "Dockerfile").read_text()
    arg = re.search(r"ARG MLFLOW_VERSION=(\S+)", train)
    assert arg and arg.group(1) == server, "docker/Dockerfile needs ARG MLFLOW_VERSION equal to the server's"
    install = next(line for line in train.splitlines() if '".[gpu]"' in line)
    assert '"mlflow==${MLFLOW_VERSION}"' in install
