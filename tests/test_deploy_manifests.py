"""The Helm chart rendered by real Helm (helm-python-sdk embeds Helm 4), then every manifest validated
offline: Kubernetes kinds against the Kubernetes schemas (kubernetes-validate, strict), RayCluster and
RayJob against the KubeRay CRD schemas kept in tests/k8s_schemas/, pod templates inside them against
the Kubernetes PodTemplate schema. Plus the properties the deployment relies on."""
from __future__ import annotations

import json
import re
from pathlib import Path

import jsonschema
import pytest
import yaml
from fixtures_servers import stop_group

helm = pytest.importorskip("helm_python", reason="helm-python-sdk (dev extra) renders the chart offline")
kubernetes_validate = pytest.importorskip("kubernetes_validate", reason="kubernetes-validate (dev extra)")

REPO = Path(__file__).resolve().parents[1]
CHART = REPO / "helm" / "neurofmx"
SCHEMAS = Path(__file__).resolve().parent / "k8s_schemas"
KUBE_VERSIONS = ("1.28", "1.35")
BASE = {
    "image": {"repository": "registry.example.com/ml/neurofmx", "tag": "0.1.0"},
    "mlflow": {"image": {"repository": "registry.example.com/ml/neurofmx-mlflow"}},
    "s3": {"bucket": "neurofmx-runs"},
}
PROVIDERS = {"generic": None, "coreweave": "values-coreweave.yaml", "crusoe": "values-crusoe.yaml"}


def _merge(a: dict, b: dict) -> dict:
    out = dict(a)
    for k, v in b.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def render(provider: str = "generic", **overrides) -> list[dict]:
    values = dict(BASE)
    if PROVIDERS[provider]:
        values = _merge(yaml.safe_load((CHART / PROVIDERS[provider]).read_text()), values)
    values = _merge(values, overrides)
    with helm.Chart.load(str(CHART)) as chart:
        out = chart.render(values, name="nfx", namespace="neurofmx", is_install=True)
    docs = []
    for path, text in out.items():
        if path.endswith(".txt"):
            continue
        docs += [d for d in yaml.safe_load_all(text) if d]
    return docs


def crd_validator(name: str) -> jsonschema.Draft202012Validator:
    schema = json.loads((SCHEMAS / name).read_text())
    return jsonschema.Draft202012Validator(schema)


def pod_templates(doc: dict) -> list[dict]:
    spec = doc.get("spec", {})
    if doc["kind"] == "RayCluster":
        return [spec["headGroupSpec"]["template"]] + [g["template"] for g in spec.get("workerGroupSpecs", [])]
    if doc["kind"] in ("Deployment", "StatefulSet"):
        return [spec["template"]]
    return []


def by_kind(docs: list[dict], kind: str) -> list[dict]:
    return [d for d in docs if d["kind"] == kind]


@pytest.fixture(scope="module", params=list(PROVIDERS))
def provider_docs(request):
    return request.param, render(request.param)


# ---------------------------------------------------------------- schema validation


def test_crd_schemas_are_valid_json_schemas():
    for name in ("raycluster-ray-v1.json", "rayjob-ray-v1.json"):
        jsonschema.Draft202012Validator.check_schema(json.loads((SCHEMAS / name).read_text()))


@pytest.mark.parametrize("kube", KUBE_VERSIONS)
def test_every_manifest_validates(provider_docs, kube):
    provider, docs = provider_docs
    kinds = sorted({d["kind"] for d in docs})
    assert kinds == ["ConfigMap", "Deployment", "NetworkPolicy", "PersistentVolumeClaim", "RayCluster", "Service",
                     "ServiceAccount", "StatefulSet"]
    raycluster = crd_validator("raycluster-ray-v1.json")
    for doc in docs:
        if doc["kind"] == "RayCluster":
            raycluster.validate(doc)
        else:
            kubernetes_validate.validate(doc, kube, strict=True)
        for i, tpl in enumerate(pod_templates(doc)):
            wrapped = {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": f"t{i}"}, "template": tpl}
            kubernetes_validate.validate(wrapped, kube, strict=True)


def test_gcs_fault_tolerance_adds_a_valid_redis():
    docs = render(ray={"gcsFaultTolerance": {"enabled": True}})
    rc = by_kind(docs, "RayCluster")[0]
    crd_validator("raycluster-ray-v1.json").validate(rc)
    ft = rc["spec"]["gcsFaultToleranceOptions"]
    assert ft["redisAddress"] == "nfx-neurofmx-redis:6379"
    assert ft["redisPassword"] == {"valueFrom": {"secretKeyRef": {"name": "neurofmx-redis", "key": "password"}}}
    redis = [d for d in docs if d["metadata"]["name"] == "nfx-neurofmx-redis" and d["kind"] != "NetworkPolicy"]
    assert sorted(d["kind"] for d in redis) == ["Deployment", "Service"]
    for d in redis:
        kubernetes_validate.validate(d, "1.35", strict=True)
    assert any(d["metadata"]["name"] == "nfx-neurofmx-redis" for d in by_kind(docs, "NetworkPolicy"))


def test_crd_schema_catches_what_the_api_server_would_reject():
    rc = by_kind(render(), "RayCluster")[0]
    validator = crd_validator("raycluster-ray-v1.json")
    bad = json.loads(json.dumps(rc))
    bad["spec"]["headGroupSpec"]["rayStartParams"]["num-gpus"] = 0  # map[string]string: an int is rejected
    assert not validator.is_valid(bad)
    bad = json.loads(json.dumps(rc))
    bad["spec"]["workerGroupSpecs"][0]["maxReplica"] = 3  # typo: unknown field
    assert not validator.is_valid(bad)


# ---------------------------------------------------------------- what the deployment relies on


def test_worker_group_has_gpus_shm_nccl_and_autoscaling(provider_docs):
    provider, docs = provider_docs
    rc = by_kind(docs, "RayCluster")[0]["spec"]
    assert rc["enableInTreeAutoscaling"] is True
    (group,) = rc["workerGroupSpecs"]
    assert (group["minReplicas"], group["replicas"], group["maxReplicas"]) == (0, 1, 4)
    pod = group["template"]["spec"]
    (worker,) = pod["containers"]
    assert worker["resources"]["requests"]["nvidia.com/gpu"] == 8 == worker["resources"]["limits"]["nvidia.com/gpu"]
    shm = next(v for v in pod["volumes"] if v["name"] == "dshm")
    assert shm["emptyDir"]["medium"] == "Memory"
    assert {"name": "dshm", "mountPath": "/dev/shm"} in worker["volumeMounts"]
    env = {e["name"]: e.get("value") for e in worker["env"]}
    assert env["NCCL_DEBUG"] == "WARN" and "TORCH_NCCL_ASYNC_ERROR_HANDLING" in env
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    head = rc["headGroupSpec"]["template"]["spec"]["containers"][0]
    assert "nvidia.com/gpu" not in head["resources"].get("limits", {})
    if provider != "generic":
        assert pod["nodeSelector"] == {"neurofmx.io/pool": "h100"}
        assert rc["headGroupSpec"]["template"]["spec"]["nodeSelector"] == {"neurofmx.io/pool": "cpu"}
        assert env["NCCL_SOCKET_IFNAME"] == "eth0"
    if provider == "coreweave":
        assert worker["resources"]["limits"]["rdma/ib"] == 1


def test_ray_version_matches_the_installed_ray():
    ray = pytest.importorskip("ray", reason="ray is a platform dependency")
    rc = by_kind(render(), "RayCluster")[0]
    assert rc["spec"]["rayVersion"] == ray.__version__


def test_pods_run_as_non_root_with_requests_and_limits(provider_docs):
    _, docs = provider_docs
    pods = [tpl["spec"] for d in docs for tpl in pod_templates(d)]
    assert len(pods) == 4  # ray head, ray workers, mlflow, postgres
    for pod in pods:
        assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] > 0
        for c in pod["containers"]:
            assert c["securityContext"]["allowPrivilegeEscalation"] is False
            assert c["securityContext"]["capabilities"]["drop"] == ["ALL"]
            assert c["resources"]["requests"] and c["resources"]["limits"]


def test_secrets_are_referenced_never_inlined(provider_docs):
    _, docs = provider_docs
    assert not by_kind(docs, "Secret"), "the chart must not create Secrets: infra/deploy.sh does"
    secretish = re.compile(r"PASSWORD|SECRET|TOKEN|ACCESS_KEY|_URI$")
    checked = 0
    for d in docs:
        for tpl in pod_templates(d):
            for c in tpl["spec"]["containers"]:
                for e in c.get("env", []):
                    if secretish.search(e["name"]) and e["name"] != "MLFLOW_TRACKING_URI":
                        assert "value" not in e and "secretKeyRef" in e["valueFrom"], e
                        checked += 1
    assert checked >= 8
    mlflow = next(d for d in by_kind(docs, "Deployment") if d["metadata"]["name"].endswith("-mlflow"))
    args = mlflow["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--backend-store-uri=$(MLFLOW_BACKEND_STORE_URI)" in args  # expanded by the kubelet, not in the spec


def test_mlflow_runs_with_auth_postgres_and_s3_artifacts(provider_docs):
    _, docs = provider_docs
    mlflow = next(d for d in by_kind(docs, "Deployment") if d["metadata"]["name"] == "nfx-neurofmx-mlflow")
    c = mlflow["spec"]["template"]["spec"]["containers"][0]
    assert "--app-name=basic-auth" in c["args"]
    assert "--artifacts-destination=s3://neurofmx-runs/mlflow" in c["args"]
    env = {e["name"]: e for e in c["env"]}
    assert env["MLFLOW_BACKEND_STORE_URI"]["valueFrom"]["secretKeyRef"] == {"name": "neurofmx-mlflow-db", "key": "uri"}
    assert env["MLFLOW_AUTH_CONFIG_PATH"]["value"] == "/etc/mlflow-auth/basic_auth.ini"
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    ray_env = {e["name"]: e for e in by_kind(docs, "RayCluster")[0]["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["env"]}
    assert ray_env["MLFLOW_TRACKING_URI"]["value"] == "http://nfx-neurofmx-mlflow:5000"


def test_network_policies_deny_by_default_and_open_only_what_is_used(provider_docs):
    _, docs = provider_docs
    pols = {d["metadata"]["name"]: d["spec"] for d in by_kind(docs, "NetworkPolicy")}
    deny = pols["nfx-neurofmx-default-deny-ingress"]
    assert deny["policyTypes"] == ["Ingress"] and "ingress" not in deny
    dash = pols["nfx-neurofmx-ray-dashboard"]
    assert {p["port"] for p in dash["ingress"][0]["ports"]} == {8265, 10001}
    assert dash["ingress"][0]["from"][0]["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": "ray-system"}
    assert pols["nfx-neurofmx-mlflow"]["ingress"][0]["ports"] == [{"protocol": "TCP", "port": 5000}]
    # The Ray pods carry the label the policies select on (KubeRay adds ray.io/cluster to every pod).
    assert pols["nfx-neurofmx-ray-internal"]["podSelector"]["matchLabels"] == {"ray.io/cluster": "nfx-neurofmx"}


def test_postgres_backs_mlflow_and_only_mlflow_reaches_it():
    docs = render()
    (sts,) = by_kind(docs, "StatefulSet")
    pod = sts["spec"]["template"]["spec"]
    env = {e["name"]: e for e in pod["containers"][0]["env"]}
    assert env["POSTGRES_PASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": "neurofmx-postgres", "key": "password"}
    assert sts["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"] == "50Gi"
    (init,) = by_kind(docs, "ConfigMap")
    assert "CREATE DATABASE mlflow_auth" in init["data"]["10-auth-db.sql"]
    pol = next(d for d in by_kind(docs, "NetworkPolicy") if d["metadata"]["name"].endswith("-postgres"))
    assert pol["spec"]["ingress"][0]["from"][0]["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "mlflow"
    external = render(postgres={"deploy": False})
    assert not by_kind(external, "StatefulSet") and not by_kind(external, "ConfigMap")


def test_auth_token_and_data_volume(provider_docs):
    provider, docs = provider_docs
    rc = by_kind(docs, "RayCluster")[0]["spec"]
    assert rc["authOptions"] == {"mode": "token", "secretName": "neurofmx-ray-auth"}
    (pvc,) = by_kind(docs, "PersistentVolumeClaim")
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]
    assert pvc["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    if provider == "coreweave":
        assert pvc["spec"]["storageClassName"] == "shared-vast"


# ---------------------------------------------------------------- bad values fail clearly


def test_missing_image_fails_with_the_fix():
    with helm.Chart.load(str(CHART)) as chart:
        with pytest.raises(helm.HelmError, match=r"image.repository is empty.*make image REGISTRY"):
            chart.render({"s3": {"bucket": "b"}, "mlflow": {"image": {"repository": "m"}}}, name="nfx", namespace="n")


def test_min_above_max_replicas_fails():
    with pytest.raises(helm.HelmError, match=r"minReplicas=5 is above ray.workers.maxReplicas=2"):
        render(ray={"workers": {"minReplicas": 5, "maxReplicas": 2, "replicas": 2}})


def test_values_schema_rejects_a_bad_enum():
    with pytest.raises(helm.HelmError, match="upscalingMode"):
        render(ray={"autoscaling": {"upscalingMode": "Eager"}})


def test_helm_lint_is_clean_in_strict_mode():
    for provider, values_file in PROVIDERS.items():
        values = dict(BASE)
        if values_file:
            values = _merge(yaml.safe_load((CHART / values_file).read_text()), values)
        report = helm.lint(str(CHART), values, strict=True, kube_version="v1.33.0")
        assert report["errors"] == [], (provider, report)
        assert all(m["severity"] < 2 for m in report["messages"]), (provider, report["messages"])


# ---------------------------------------------------------------- RayJob from fmx.cluster


def test_rayjob_manifest_validates_and_targets_the_chart_cluster():
    from fmx.cluster import rayjob_manifest

    rc_name = by_kind(render(), "RayCluster")[0]["metadata"]["name"]
    job = rayjob_manifest("sweeps/smoke.yaml", name="smoke-1", ray_cluster=rc_name, active_deadline_s=3600,
                          entrypoint_num_gpus=0, runtime_env_yaml="env_vars:\n  FMX_SEED: '1'\n")
    crd_validator("rayjob-ray-v1.json").validate(job)
    assert job["spec"]["clusterSelector"] == {"ray.io/cluster": "nfx-neurofmx"}
    assert job["spec"]["entrypoint"] == "fmx sweep run sweeps/smoke.yaml"
    assert job["spec"]["jobId"] == "smoke-1"  # fixed so status is read from the Ray Jobs API by id
    with pytest.raises(ValueError, match="DNS label"):
        rayjob_manifest("s.yaml", name="Smoke_1", ray_cluster=rc_name)
    bad = dict(job, spec=dict(job["spec"], rayClusterSpec={"headGroupSpec": {"template": {}}}))
    assert not crd_validator("rayjob-ray-v1.json").is_valid(bad)  # both a selector and a cluster spec


# ---------------------------------------------------------------- the MLflow pod spec, run for real


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_mlflow_container_spec_runs_a_real_auth_server(tmp_path, seaweed_s3, monkeypatch):
    """Run `mlflow` with the args and env the chart renders (secrets filled locally, the auth config
    from infra/mlflow-basic-auth.ini.tmpl as deploy.sh fills it, artifacts in a SeaweedFS bucket with
    real key auth), then check authentication, host checks and that artifacts land in the bucket."""
    import os
    import secrets
    import subprocess
    import sys
    import time

    import requests

    bucket = seaweed_s3.make_bucket()
    docs = render(s3={"bucket": bucket, "endpoint": seaweed_s3.endpoint_url})
    mlflow_dep = next(d for d in by_kind(docs, "Deployment") if d["metadata"]["name"] == "nfx-neurofmx-mlflow")
    c = mlflow_dep["spec"]["template"]["spec"]["containers"][0]
    password = secrets.token_hex(12)
    secret_values = {
        ("neurofmx-mlflow-db", "uri"): f"sqlite:///{tmp_path}/mlflow.db",
        ("neurofmx-s3", "AWS_ACCESS_KEY_ID"): seaweed_s3.access_key,
        ("neurofmx-s3", "AWS_SECRET_ACCESS_KEY"): seaweed_s3.secret_key,
        ("neurofmx-mlflow-auth", "admin_username"): "admin",
        ("neurofmx-mlflow-auth", "admin_password"): password,
        ("neurofmx-mlflow-auth", "flask_secret_key"): secrets.token_hex(16),
    }
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    for e in c["env"]:
        if "valueFrom" in e:
            ref = e["valueFrom"]["secretKeyRef"]
            env[e["name"]] = secret_values[(ref["name"], ref["key"])]
        else:
            env[e["name"]] = e["value"]
    # The auth config Secret key, filled exactly as infra/deploy.sh does; mounted at MLFLOW_AUTH_CONFIG_PATH.
    ini = (REPO / "infra" / "mlflow-basic-auth.ini.tmpl").read_text()
    ini_path = tmp_path / "basic_auth.ini"
    ini_path.write_text(ini.replace("@AUTH_DATABASE_URI@", f"sqlite:///{tmp_path}/auth.db"))
    assert env["MLFLOW_AUTH_CONFIG_PATH"] == "/etc/mlflow-auth/basic_auth.ini"
    env.update(MLFLOW_AUTH_CONFIG_PATH=str(ini_path), HOME=str(tmp_path))

    port = _free_port()
    args = []
    for a in c["args"]:
        a = a.replace("$(MLFLOW_BACKEND_STORE_URI)", env["MLFLOW_BACKEND_STORE_URI"])  # the kubelet's expansion
        if a.startswith("--host="):
            a = "--host=127.0.0.1"
        elif a.startswith("--port="):
            a = f"--port={port}"
        elif a.startswith("--workers="):
            a = "--workers=1"  # 2-core CI machine
        args.append(a)
    assert f"--artifacts-destination=s3://{bucket}/mlflow" in args
    assert args[0] == "server" and "--app-name=basic-auth" in args
    mlflow_bin = str(Path(sys.executable).parent / "mlflow")
    log = open(tmp_path / "mlflow.log", "w")
    proc = subprocess.Popen([mlflow_bin, *args], env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if requests.get(f"{base}/health", timeout=2).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            assert proc.poll() is None, (tmp_path / "mlflow.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "mlflow did not become healthy in 120 s"
            time.sleep(0.5)
        search = f"{base}/api/2.0/mlflow/experiments/search?max_results=5"
        assert requests.get(search, timeout=10).status_code == 401
        assert requests.get(search, auth=("admin", "wrong"), timeout=10).status_code == 401
        ok = requests.get(search, auth=("admin", password), timeout=10)
        assert ok.status_code == 200, ok.text
        made = requests.post(f"{base}/api/2.0/mlflow/experiments/create", json={"name": "fmx/deploy-check"},
                             auth=("admin", password), timeout=10)
        assert made.status_code == 200 and made.json()["experiment_id"]
        # Host-header protection (DNS rebinding): an unknown Host is refused, the service name is accepted.
        assert requests.get(search, auth=("admin", password), headers={"Host": "evil.example.com"}, timeout=10).status_code in (400, 403)
        svc = requests.get(search, auth=("admin", password), headers={"Host": "nfx-neurofmx-mlflow:5000"}, timeout=10)
        assert svc.status_code == 200
        # A trial logs an artifact the way Ray workers do (user and password from the env the chart
        # gives them); the server proxies it into the bucket with the S3 keys only it holds.
        from mlflow import MlflowClient

        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "admin")
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", password)
        for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "MLFLOW_S3_ENDPOINT_URL", "AWS_ENDPOINT_URL"):
            monkeypatch.delenv(k, raising=False)
        client = MlflowClient(base)
        run = client.create_run(made.json()["experiment_id"])
        client.log_text(run.info.run_id, "hello from a trial", "notes/trial.txt")
        client.set_terminated(run.info.run_id)
        keys = [o["Key"] for o in seaweed_s3.client().list_objects_v2(Bucket=bucket).get("Contents", [])]
        assert any(k.startswith("mlflow/") and k.endswith("notes/trial.txt") for k in keys), keys
    finally:
        stop_group(proc, grace_s=15)
        log.close()


def test_head_shares_its_ray_temp_dir_with_the_autoscaler_sidecar():
    """KubeRay mounts a volume named `ray-logs` at /tmp/ray into the autoscaler sidecar and reuses the
    head's volume only when it has that name; under another name the autoscaler writes its logs and
    events into a private emptyDir the head (dashboard, `ray status`) never reads."""
    rc = by_kind(render(), "RayCluster")[0]["spec"]
    pod = rc["headGroupSpec"]["template"]["spec"]
    (head,) = pod["containers"]
    tmp_ray = [m["name"] for m in head["volumeMounts"] if m["mountPath"] == "/tmp/ray"]
    assert tmp_ray == ["ray-logs"]
    assert next(v for v in pod["volumes"] if v["name"] == "ray-logs")["emptyDir"]["sizeLimit"] == "50Gi"


def test_ray_pods_never_get_a_bucketless_storage_path():
    """FMX_STORAGE_PATH is s3://<s3.bucket>/<rayPrefix>; with MLflow's artifacts sent elsewhere and no
    bucket the chart rendered s3:///ray, which every sweep in the cluster then refused. Fail at render."""
    with pytest.raises(helm.HelmError, match=r"s3\.bucket is empty.*FMX_STORAGE_PATH"):
        render(s3={"bucket": ""}, mlflow={"artifactsDestination": "s3://other-bucket/mlflow"})
    with pytest.raises(helm.HelmError, match=r"s3\.bucket is empty"):
        render(s3={"bucket": ""}, mlflow={"enabled": False})
    env = {e["name"]: e.get("value") for e in
           by_kind(render(), "RayCluster")[0]["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["FMX_STORAGE_PATH"] == "s3://neurofmx-runs/ray"
