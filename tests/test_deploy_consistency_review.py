"""Review round: consistency between the chart, the provider values, Terraform, infra/*.sh and the platform,
checked the way a first deploy would fail. Offline and fast: Helm via helm-python-sdk, the deploy scripts
against stub terraform/kubectl/helm that record their arguments."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

helm = pytest.importorskip("helm_python", reason="helm-python-sdk (dev extra) renders the chart offline")

REPO = Path(__file__).resolve().parents[1]
CHART = REPO / "helm" / "neurofmx"
BASE = {
    "image": {"repository": "registry.example.com/ml/neurofmx", "tag": "0.1.0"},
    "mlflow": {"image": {"repository": "registry.example.com/ml/neurofmx-mlflow"}},
    "s3": {"bucket": "neurofmx-runs"},
}


def _merge(a: dict, b: dict) -> dict:
    out = dict(a)
    for k, v in b.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def render(provider: str | None = None, release: str = "neurofmx", **overrides) -> list[dict]:
    values = dict(BASE)
    if provider:
        values = _merge(yaml.safe_load((CHART / f"values-{provider}.yaml").read_text()), values)
    values = _merge(values, overrides)
    with helm.Chart.load(str(CHART)) as chart:
        out = chart.render(values, name=release, namespace="neurofmx", is_install=True)
    return [d for path, text in out.items() if not path.endswith(".txt") for d in yaml.safe_load_all(text) if d]


# ---------------------------------------------------------------- the autoscaler sidecar's API access


@pytest.mark.parametrize("provider", [None, "coreweave", "crusoe"])
def test_autoscaler_sidecar_gets_a_service_account_token(provider):
    """With in-tree autoscaling KubeRay runs the head under the ServiceAccount named like the RayCluster
    (GetHeadGroupServiceAccountName) and reuses one that already exists. The chart's own ServiceAccount has that
    very name and automountServiceAccountToken: false, so unless the head pod opts back in, the autoscaler
    sidecar has no token: it cannot read pods or patch the RayCluster, and no worker is ever added."""
    docs = render(provider)
    rc = next(d for d in docs if d["kind"] == "RayCluster")
    assert rc["spec"]["enableInTreeAutoscaling"] is True
    head = rc["spec"]["headGroupSpec"]["template"]["spec"]
    sa_name = head.get("serviceAccountName") or rc["metadata"]["name"]
    accounts = {d["metadata"]["name"]: d for d in docs if d["kind"] == "ServiceAccount"}
    mounted = head.get("automountServiceAccountToken")
    if mounted is None:  # the pod inherits the ServiceAccount's setting
        mounted = accounts.get(sa_name, {}).get("automountServiceAccountToken", True)
    assert mounted is True, (sa_name, head.get("automountServiceAccountToken"))


# ---------------------------------------------------------------- infra/*.sh against recording stubs

_STUB_TERRAFORM = r'''#!/usr/bin/env bash
printf 'terraform %s\n' "$*" >> "$STUB_DIR/log"
[[ "$2" == output ]] || exit "${TF_EXIT:-0}"
case "${@: -1}" in
  kubeconfig) echo "apiVersion: v1" ;;
  bucket_name) echo "neurofmx-runs" ;;
  s3_endpoint) echo "https://cwobject.com" ;;
  s3_access_key_id) echo "KEYID" ;;
  s3_secret_access_key) echo "s3cr3t" ;;
  *) echo "Error: Output not found" >&2; exit 1 ;;
esac
'''
_STUB_HELM = r'''#!/usr/bin/env bash
printf 'helm %s\n' "$*" >> "$STUB_DIR/log"
if [[ "$1" == upgrade && "$3" != kuberay-operator ]]; then printf '%s\0' "$@" > "$STUB_DIR/helm-chart-args"; fi
exit "${HELM_EXIT:-0}"
'''
# Secrets live in $STUB_DIR/secrets/NAME/KEY, so a second deploy sees what the first one stored.
_STUB_KUBECTL = r'''#!/usr/bin/env bash
printf 'kubectl %s\n' "$*" >> "$STUB_DIR/log"
[[ -n "${KUBECTL_DOWN:-}" ]] && { echo "Unable to connect to the server: dial tcp: no such host" >&2; exit 1; }
case " $* " in
  *" get secret "*)
    name="$5"; key=""
    for a in "$@"; do [[ "$a" == jsonpath=* ]] && key="${a#jsonpath=\{.data.}" && key="${key%\}}" && key="${key//\\./.}"; done
    [[ -f "$STUB_DIR/secrets/$name/$key" ]] || { echo "Error from server (NotFound): secrets \"$name\" not found" >&2; exit 1; }
    base64 < "$STUB_DIR/secrets/$name/$key" | tr -d '\n' ;;
  *" create secret generic "*)
    prev=""; name=""
    for a in "$@"; do
      [[ "$prev" == generic ]] && name="$a"
      if [[ "$a" == --from-file=* ]]; then
        kv="${a#--from-file=}"; mkdir -p "$STUB_DIR/secrets/$name"; cp "${kv#*=}" "$STUB_DIR/secrets/$name/${kv%%=*}"
      fi
      prev="$a"
    done
    echo "kind: Secret" ;;
  *" apply -f - "*) cat > /dev/null ;;
  *) echo "kind: Namespace" ;;
esac
'''


@pytest.fixture
def stub_env(tmp_path):
    bindir = tmp_path / "stubbin"
    bindir.mkdir()
    for name, text in (("terraform", _STUB_TERRAFORM), ("helm", _STUB_HELM), ("kubectl", _STUB_KUBECTL)):
        (bindir / name).write_text(text)
        (bindir / name).chmod(0o755)
    stub_dir = tmp_path / "stub"
    stub_dir.mkdir()
    return {"PATH": f"{bindir}:/usr/bin:/bin", "HOME": str(tmp_path), "STUB_DIR": str(stub_dir),
            "STATE_DIR": str(tmp_path / "state"), "FMX_HOME": str(tmp_path / "fmx"), "PROVIDER": "coreweave",
            "COREWEAVE_API_TOKEN": "CW-token", "TF_VAR_bucket_name": "b", "TF_VAR_cpu_instance_type": "cpu",
            "REGISTRY": "registry.example.com/team", "TAG": "0.1.0"}


def _run(script: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(REPO / "infra" / script)], env=env, cwd=REPO, capture_output=True, text=True,
                          timeout=60)


def _chart_values(env: dict[str, str]) -> dict:
    """The values `helm upgrade` would see: the provider file plus the --set/--set-string flags deploy.sh passed."""
    args = (Path(env["STUB_DIR"]) / "helm-chart-args").read_text().split("\0")[:-1]
    values: dict = {}
    parsers = {"--set": helm.parse_set_string, "--set-string": helm.parse_set_string_values}
    for flag, value in zip(args, args[1:]):
        if flag in parsers:
            values = _merge(values, parsers[flag](value))
    return values


def test_kuberay_operator_namespace_reaches_the_network_policy(stub_env):
    """deploy.sh installs the operator into $KUBERAY_NAMESPACE; the chart's NetworkPolicy opens the head's
    dashboard to networkPolicy.operatorNamespace only. With KUBERAY_NAMESPACE=kuberay and the chart left at
    ray-system, the operator cannot reach the dashboard: every RayJob (HTTPMode submission) fails."""
    result = _run("deploy.sh", dict(stub_env, KUBERAY_NAMESPACE="kuberay"))
    assert result.returncode == 0, result.stderr
    log = (Path(stub_env["STUB_DIR"]) / "log").read_text()
    assert "--namespace kuberay --create-namespace" in log
    values = _chart_values(stub_env)
    docs = render("coreweave", **values)
    policy = next(d for d in docs if d["kind"] == "NetworkPolicy" and d["metadata"]["name"].endswith("-ray-dashboard"))
    peers = policy["spec"]["ingress"][0]["from"]
    assert {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kuberay"}}} in peers, peers


def test_undeploy_rerun_reaches_terraform_destroy_when_the_cluster_is_gone(stub_env):
    """docs/deploy.md: when the bucket is not empty the first `make undeploy` fails at terraform destroy after
    the cluster is gone, and the user empties the bucket and runs it again. The kubeconfig is still there (the
    first run stopped before removing it), so with PURGE_DATA=1 the rerun's `kubectl delete pvc` hits a cluster
    that no longer exists; it must not stop the rerun before the destroy that deletes the bucket."""
    state = Path(stub_env["STATE_DIR"])
    state.mkdir()
    (state / "coreweave.kubeconfig").write_text("apiVersion: v1\n")
    env = dict(stub_env, KUBECTL_DOWN="1", HELM_EXIT="1", PURGE_DATA="1", AUTO_APPROVE="1")
    result = _run("undeploy.sh", env)
    log = (Path(stub_env["STUB_DIR"]) / "log").read_text()
    assert "destroy -input=false -auto-approve" in log, (result.stdout, result.stderr)
    assert result.returncode == 0, result.stderr
    assert not (state / "coreweave.kubeconfig").exists()


def test_undeploy_order_uninstalls_the_chart_before_destroying_the_cluster(stub_env):
    state = Path(stub_env["STATE_DIR"])
    state.mkdir()
    (state / "coreweave.kubeconfig").write_text("apiVersion: v1\n")
    result = _run("undeploy.sh", dict(stub_env, PURGE_DATA="1", AUTO_APPROVE="1"))
    assert result.returncode == 0, result.stderr
    calls = (Path(stub_env["STUB_DIR"]) / "log").read_text().splitlines()
    order = [next(i for i, c in enumerate(calls) if c.startswith(p))
             for p in ("helm uninstall neurofmx --namespace neurofmx", "kubectl -n neurofmx delete pvc",
                       f"terraform -chdir={REPO / 'terraform' / 'coreweave'} destroy")]
    assert order == sorted(order), calls
    assert calls[-1].endswith("destroy -input=false -auto-approve"), calls


def test_a_long_release_name_gets_the_names_the_chart_renders(stub_env):
    """The chart truncates its names to 40 characters (neurofmx.fullname); deploy.sh derives the PostgreSQL host
    of the MLflow database URI and the RayCluster it waits for from $RELEASE. Both must be the rendered names,
    or MLflow cannot reach its database and `kubectl wait` waits 30 minutes for a RayCluster that does not exist."""
    release = "neurofmx-" + "x" * 31 + "-team"  # 45 characters, within Helm's 53
    result = _run("deploy.sh", dict(stub_env, RELEASE=release))
    assert result.returncode == 0, result.stderr
    docs = render("coreweave", release=release, **_chart_values(stub_env))
    rc = next(d for d in docs if d["kind"] == "RayCluster")["metadata"]["name"]
    pg = next(d for d in docs if d["kind"] == "Service" and d["metadata"]["name"].endswith("-postgres"))["metadata"]["name"]
    uri = (Path(stub_env["STUB_DIR"]) / "secrets" / "neurofmx-mlflow-db" / "uri").read_text()
    assert f"@{pg}:5432/mlflow" in uri, (pg, uri)
    log = (Path(stub_env["STUB_DIR"]) / "log").read_text()
    assert f"wait raycluster/{rc} " in log, (rc, [line for line in log.splitlines() if " wait " in line])
    record = (Path(stub_env["FMX_HOME"]) / "clusters" / "coreweave.json").read_text()
    assert f'"ray_cluster": "{rc}"' in record


def test_a_second_deploy_keeps_every_generated_secret(stub_env):
    """Re-running `make deploy` (an upgrade, or after a timeout) must reuse the generated passwords: PostgreSQL
    keeps the first one in its volume, so a new one would lock MLflow out of its database."""
    first = _run("deploy.sh", stub_env)
    assert first.returncode == 0, first.stderr
    secrets = Path(stub_env["STUB_DIR"]) / "secrets"
    before = {p.relative_to(secrets): p.read_bytes() for p in secrets.rglob("*") if p.is_file()}
    second = _run("deploy.sh", stub_env)
    assert second.returncode == 0, second.stderr
    after = {p.relative_to(secrets): p.read_bytes() for p in secrets.rglob("*") if p.is_file()}
    assert after == before
    assert len(before[Path("neurofmx-postgres/password")]) == 48


# ---------------------------------------------------------------- one S3 addressing knob for MLflow and Ray


def _env(container: dict) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}


@pytest.mark.parametrize("style", ["path", "virtual"])
def test_ray_pods_address_the_bucket_like_mlflow(style, monkeypatch):
    """s3.addressingStyle reached only the MLflow pod (MLFLOW_BOTO_CLIENT_ADDRESSING_STYLE). The Ray pods checkpoint
    through fmx.storage.s3_filesystem, which follows FMX_S3_ADDRESSING_STYLE; without it they use path style for
    any endpoint but CoreWeave's, so a store that needs virtual-hosted requests took MLflow's artifacts and
    refused every Ray checkpoint."""
    from fmx import storage

    docs = render(s3={"bucket": "runs", "endpoint": "https://objects.example.com", "addressingStyle": style})
    mlflow = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"].endswith("-mlflow"))
    assert _env(mlflow["spec"]["template"]["spec"]["containers"][0])["MLFLOW_BOTO_CLIENT_ADDRESSING_STYLE"] == style
    rc = next(d for d in docs if d["kind"] == "RayCluster")["spec"]
    for template in [rc["headGroupSpec"]["template"]] + [g["template"] for g in rc["workerGroupSpecs"]]:
        env = _env(template["spec"]["containers"][0])
        monkeypatch.delenv(storage.ADDRESSING_ENV, raising=False)
        if storage.ADDRESSING_ENV in env:
            monkeypatch.setenv(storage.ADDRESSING_ENV, env[storage.ADDRESSING_ENV])
        assert storage._virtual_addressing("objects.example.com") is (style == "virtual"), env


def test_auto_addressing_leaves_ray_to_its_host_rule():
    """MLflow's boto3 knows "auto"; fmx.storage does not (it raises on it), so "auto" must not reach the Ray pods."""
    docs = render(s3={"bucket": "runs", "endpoint": "https://objects.example.com", "addressingStyle": "auto"})
    rc = next(d for d in docs if d["kind"] == "RayCluster")["spec"]
    assert "FMX_S3_ADDRESSING_STYLE" not in _env(rc["headGroupSpec"]["template"]["spec"]["containers"][0])


# ---------------------------------------------------------------- inputs refused before anything is created


@pytest.mark.parametrize(("var", "value"), [
    ("REGISTRY", "https://registry.example.com/team"),  # a URL, not a registry path
    ("REGISTRY", "registry.example.com/team/"),  # -> registry.example.com/team//neurofmx
    ("REGISTRY", "registry.example.com/Team"),  # repository paths are lowercase
    ("TAG", "v1.0/rc1"),
    ("TAG", "0.1.0 "),
])
def test_a_malformed_image_reference_is_refused_before_terraform(stub_env, var, value):
    """REGISTRY/TAG end up as image references in the pods. A malformed one used to pass every check: Terraform
    created the GPU cluster (billed by the hour), then the pods sat in InvalidImageName until helm's 30-minute
    --wait gave up. It must be refused up front, naming the variable."""
    result = _run("deploy.sh", dict(stub_env, **{var: value}))
    assert result.returncode == 2, result.stderr
    assert f"{var}=" in result.stderr and "e.g." in result.stderr, result.stderr
    log = Path(stub_env["STUB_DIR"]) / "log"
    assert not log.exists() or "terraform" not in log.read_text()


@pytest.mark.parametrize(("registry", "tag"), [("localhost:5000/ml", "1234567"), ("ghcr.io/org/sub-team", "v0.1.0_rc-1"),
                                               ("myuser", "latest")])
def test_valid_image_references_still_deploy(stub_env, registry, tag):
    result = _run("deploy.sh", dict(stub_env, REGISTRY=registry, TAG=tag))
    assert result.returncode == 0, result.stderr
    assert f"image.repository={registry}/neurofmx" in (Path(stub_env["STUB_DIR"]) / "helm-chart-args").read_text()


# ---------------------------------------------------------------- a second `make deploy` keeps documented overrides


def test_redeploy_keeps_values_set_with_helm_upgrade(stub_env):
    """docs/deploy.md configures the release with `helm upgrade --reuse-values --set ...` (GCS fault tolerance,
    external PostgreSQL, ...). A later `make deploy` (a new TAG) ran `helm upgrade` without reusing values, which
    resets every such override to the chart default: Redis and fault tolerance silently gone, MLflow pointed back
    at the in-release PostgreSQL. --reset-then-reuse-values (Helm >= 3.14, the documented minimum) keeps them
    while the provider file and deploy.sh's --set flags still win."""
    result = _run("deploy.sh", stub_env)
    assert result.returncode == 0, result.stderr
    args = (Path(stub_env["STUB_DIR"]) / "helm-chart-args").read_text().split("\0")
    assert "--reset-then-reuse-values" in args, args


def test_redeploy_keeps_a_database_secret_pointed_elsewhere(stub_env):
    """External PostgreSQL (docs/deploy.md): the user points Secret neurofmx-mlflow-db (and the auth database in
    basic_auth.ini) at it. deploy.sh rewrote both to the in-release host on every run."""
    assert _run("deploy.sh", stub_env).returncode == 0
    secrets = Path(stub_env["STUB_DIR"]) / "secrets"
    external = "postgresql+psycopg2://mlflow@db.example.com:5432/mlflow"
    (secrets / "neurofmx-mlflow-db" / "uri").write_text(external)
    ini = (secrets / "neurofmx-mlflow-auth" / "basic_auth.ini")
    edited = ini.read_text().replace("neurofmx-postgres", "db.example.com")
    ini.write_text(edited)
    result = _run("deploy.sh", stub_env)
    assert result.returncode == 0, result.stderr
    assert (secrets / "neurofmx-mlflow-db" / "uri").read_text() == external
    assert ini.read_text() == edited


def test_printed_next_steps_name_the_kubeconfig_they_need(stub_env):
    """deploy.sh writes the new cluster's kubeconfig to infra/.state/<provider>.kubeconfig and exports KUBECONFIG
    only inside its own process. The kubectl commands it prints (port-forward, the token and password Secrets)
    run in the user's shell, where KUBECONFIG is unset or names another cluster: they fail, or reach the wrong
    cluster, unless the printout sets it first."""
    result = _run("deploy.sh", stub_env)
    assert result.returncode == 0, result.stderr
    kubeconfig = Path(stub_env["STATE_DIR"]) / "coreweave.kubeconfig"
    out = result.stdout
    export = out.find(f"export KUBECONFIG={kubeconfig}")
    assert export != -1, out
    assert export < out.find("port-forward"), out


def test_undeploy_asks_for_the_terraform_variables_before_uninstalling(stub_env):
    """`terraform destroy` needs every root-module variable without a default (bucket_name, cpu_instance_type, and
    on Crusoe kubernetes_version and ssh_public_key), just as apply does. `make undeploy PROVIDER=...` from a new
    shell (docs/deploy.md, Tear down) uninstalled the chart first and only then failed in Terraform; like deploy.sh
    it must name the missing variables before it touches anything."""
    state = Path(stub_env["STATE_DIR"])
    state.mkdir()
    (state / "coreweave.kubeconfig").write_text("apiVersion: v1\n")
    env = {k: v for k, v in stub_env.items() if not k.startswith("TF_VAR_")}
    result = _run("undeploy.sh", env)
    assert result.returncode == 2, result.stderr
    assert "TF_VAR_bucket_name is not set" in result.stderr and "TF_VAR_cpu_instance_type is not set" in result.stderr
    log = Path(stub_env["STUB_DIR"]) / "log"
    assert not log.exists() or "helm uninstall" not in log.read_text()


def test_deploy_runs_its_steps_in_order(stub_env):
    """Cluster first, then the kubeconfig and bucket outputs, Secrets before the chart that references them, the
    operator (CRDs) before the chart's RayCluster, and the wait last."""
    result = _run("deploy.sh", dict(stub_env, AUTO_APPROVE="1"))
    assert result.returncode == 0, result.stderr
    calls = (Path(stub_env["STUB_DIR"]) / "log").read_text().splitlines()
    tf_dir = REPO / "terraform" / "coreweave"
    steps = [f"terraform -chdir={tf_dir} init -input=false", f"terraform -chdir={tf_dir} apply -input=false -auto-approve",
             f"terraform -chdir={tf_dir} output -raw kubeconfig", "kubectl create namespace neurofmx",
             "kubectl -n neurofmx create secret generic neurofmx-s3", "helm repo add kuberay",
             "helm upgrade --install kuberay-operator kuberay/kuberay-operator --version 1.7.0 --namespace ray-system",
             "helm upgrade --install --reset-then-reuse-values neurofmx", "kubectl -n neurofmx wait raycluster/neurofmx"]
    at = [next((i for i, c in enumerate(calls) if c.startswith(s)), None) for s in steps]
    assert None not in at and at == sorted(at), list(zip(steps, at))


def test_undeploy_from_another_checkout_uses_the_remote_state(stub_env):
    """Remote state (TF_STATE_BUCKET, docs/deploy.md) exists so that another machine (a teammate, CI) can manage
    the cluster. Only deploy.sh wrote the backend file and ran `terraform init`: `make undeploy` from a fresh
    checkout ran `terraform destroy` with no backend and no providers, so it failed, or, after a plain
    `terraform init`, destroyed an empty local state and reported success while the GPU nodes kept billing."""
    written = REPO / "terraform" / "coreweave" / "remote-state.tf"
    assert not written.exists(), f"{written} exists (a real deploy's file?); this test would overwrite it"
    try:
        result = _run("undeploy.sh", dict(stub_env, TF_STATE_BUCKET="tf-state", AUTO_APPROVE="1"))
        backend = written.read_text() if written.exists() else ""
    finally:
        written.unlink(missing_ok=True)
    assert result.returncode == 0, result.stderr
    assert 'bucket                      = "tf-state"' in backend and 'key                         = "neurofmx/coreweave.tfstate"' in backend
    calls = (Path(stub_env["STUB_DIR"]) / "log").read_text().splitlines()
    tf_dir = REPO / "terraform" / "coreweave"
    init = calls.index(f"terraform -chdir={tf_dir} init -input=false")
    destroy = calls.index(f"terraform -chdir={tf_dir} destroy -input=false -auto-approve")
    assert init < destroy, calls


# ---------------------------------------------------------------- a KUBECONFIG exported for another cluster


def _recording_kubeconfig(stub_env):
    """Make the helm and kubectl stubs record the KUBECONFIG they ran with."""
    bindir = Path(stub_env["PATH"].split(":")[0])
    for name in ("helm", "kubectl"):
        text = (bindir / name).read_text().replace(
            "#!/usr/bin/env bash\n", '#!/usr/bin/env bash\nprintf \'%s\\n\' "${KUBECONFIG:-}" >> "$STUB_DIR/kubeconfigs"\n', 1)
        (bindir / name).write_text(text)
    return Path(stub_env["STUB_DIR"]) / "kubeconfigs"


def test_deploy_ignores_a_kubeconfig_exported_for_another_cluster(stub_env, tmp_path):
    """A researcher's shell often exports KUBECONFIG for the team's everyday cluster. deploy.sh used it as is:
    the Secrets, KubeRay and the chart went to that cluster, not the one Terraform had just created."""
    seen = _recording_kubeconfig(stub_env)
    other = tmp_path / "team-cluster.kubeconfig"
    other.write_text("apiVersion: v1\n# the team's everyday cluster\n")
    result = _run("deploy.sh", dict(stub_env, KUBECONFIG=str(other)))
    assert result.returncode == 0, result.stderr
    new = Path(stub_env["STATE_DIR"]) / "coreweave.kubeconfig"
    assert new.read_text() == "apiVersion: v1\n"
    assert set(seen.read_text().split()) == {str(new)}
    assert f"ignoring KUBECONFIG={other}" in result.stdout and "DEPLOY_KUBECONFIG" in result.stdout


def test_deploy_kubeconfig_names_a_console_kubeconfig(stub_env, tmp_path):
    seen = _recording_kubeconfig(stub_env)
    console = tmp_path / "console.kubeconfig"
    missing = _run("deploy.sh", dict(stub_env, DEPLOY_KUBECONFIG=str(console)))
    assert missing.returncode == 2 and f"DEPLOY_KUBECONFIG={console} is not a file" in missing.stderr
    console.write_text("apiVersion: v1\n# from the Console\n")
    result = _run("deploy.sh", dict(stub_env, DEPLOY_KUBECONFIG=str(console)))
    assert result.returncode == 0, result.stderr
    assert set(seen.read_text().split()) == {str(console)}
    assert not (Path(stub_env["STATE_DIR"]) / "coreweave.kubeconfig").exists()


def test_undeploy_never_uninstalls_from_a_kubeconfig_exported_for_another_cluster(stub_env, tmp_path):
    """undeploy.sh took an exported KUBECONFIG as is too: `helm uninstall neurofmx` (and with PURGE_DATA=1 the
    volume deletion) ran against the team's cluster."""
    seen = _recording_kubeconfig(stub_env)
    state = Path(stub_env["STATE_DIR"])
    state.mkdir()
    (state / "coreweave.kubeconfig").write_text("apiVersion: v1\n")
    other = tmp_path / "team-cluster.kubeconfig"
    other.write_text("apiVersion: v1\n")
    result = _run("undeploy.sh", dict(stub_env, KUBECONFIG=str(other), PURGE_DATA="1"))
    assert result.returncode == 0, result.stderr
    assert set(seen.read_text().split()) == {str(state / "coreweave.kubeconfig")}
