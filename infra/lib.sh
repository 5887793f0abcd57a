# Shared by deploy.sh and undeploy.sh: argument and environment checks that fail early and say
# what to do. Sourced, not executed.
# shellcheck shell=bash

NAMESPACE="${NAMESPACE:-neurofmx}"
RELEASE="${RELEASE:-neurofmx}"
KUBERAY_NAMESPACE="${KUBERAY_NAMESPACE:-ray-system}"
KUBERAY_VERSION="${KUBERAY_VERSION:-1.7.0}"
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
STATE_DIR="${STATE_DIR:-$REPO_ROOT/infra/.state}"

problems=()

die() {
  echo "error: $*" >&2
  exit 2
}

note() {
  echo "==> $*"
}

check_provider() {
  case "${PROVIDER:-}" in
    coreweave | crusoe) ;;
    "") problems+=("PROVIDER is not set: run make deploy PROVIDER=coreweave or PROVIDER=crusoe") ;;
    *) problems+=("PROVIDER=${PROVIDER} is not supported: use coreweave or crusoe") ;;
  esac
}

check_tools() {
  local tool
  for tool in "$@"; do
    command -v "$tool" > /dev/null 2>&1 || problems+=("$tool is not on PATH: install it (see docs/deploy.md, Prerequisites)")
  done
}

check_credentials() {
  case "${PROVIDER:-}" in
    coreweave)
      [[ -n "${COREWEAVE_API_TOKEN:-}" ]] ||
        problems+=("COREWEAVE_API_TOKEN is not set: create an API token in the CoreWeave Cloud Console and export it")
      ;;
    crusoe)
      if [[ -z "${CRUSOE_ACCESS_KEY_ID:-}" || -z "${CRUSOE_SECRET_KEY:-}" ]] && [[ ! -f "${HOME}/.crusoe/config" ]]; then
        problems+=("no Crusoe credentials: export CRUSOE_ACCESS_KEY_ID and CRUSOE_SECRET_KEY, or run crusoe init (~/.crusoe/config)")
      fi
      ;;
  esac
}

fail_on_problems() {
  if ((${#problems[@]})); then
    local p
    for p in "${problems[@]}"; do
      echo "error: $p" >&2
    done
    exit 2
  fi
}

# A random secret, generated once: kept when the Kubernetes Secret already exists.
existing_or_random() {
  local secret="$1" key="$2" value
  value="$(kubectl -n "$NAMESPACE" get secret "$secret" -o "jsonpath={.data.$key}" 2> /dev/null | base64 -d 2> /dev/null || true)"
  if [[ -z "$value" ]]; then
    value="$(od -An -N24 -tx1 /dev/urandom | tr -d ' \n')"
  fi
  printf '%s' "$value"
}

# The value under KEY of Secret NAME, else FALLBACK: what was generated once, or pointed elsewhere by hand
# (an external database, docs/deploy.md), survives the next deploy.
existing_or() {
  local secret="$1" key="$2" fallback="$3" value
  value="$(kubectl -n "$NAMESPACE" get secret "$secret" -o "jsonpath={.data.${key//./\\.}}" 2> /dev/null | base64 -d 2> /dev/null || true)"
  printf '%s' "${value:-$fallback}"
}

apply_secret() {
  # apply_secret NAME KEY=VALUE...: create or update a Secret. Values go through files in a private
  # temporary folder, never through command-line arguments (visible in ps) or stdout.
  local name="$1" dir pair args=()
  shift
  dir="$(mktemp -d)"
  chmod 700 "$dir"
  for pair in "$@"; do
    printf '%s' "${pair#*=}" > "$dir/${pair%%=*}"
    args+=("--from-file=${pair%%=*}=$dir/${pair%%=*}")
  done
  kubectl -n "$NAMESPACE" create secret generic "$name" "${args[@]}" --dry-run=client -o yaml | kubectl apply -f - > /dev/null
  rm -rf "$dir"
}

# True when terraform/$PROVIDER has a terraform.tfvars: variables then need not come from TF_VAR_*.
has_tfvars() {
  [[ -f "$REPO_ROOT/terraform/${PROVIDER:-none}/terraform.tfvars" ]]
}

# Root-module variables without a default: `terraform apply` and `terraform destroy` both need them.
check_tf_vars() {
  if ! has_tfvars; then
    [[ -n "${TF_VAR_bucket_name:-}" ]] || problems+=("TF_VAR_bucket_name is not set: export TF_VAR_bucket_name=<a globally unique bucket name> (or write terraform/${PROVIDER:-PROVIDER}/terraform.tfvars)")
    [[ -n "${TF_VAR_cpu_instance_type:-}" ]] || problems+=("TF_VAR_cpu_instance_type is not set: a CPU instance type of ${PROVIDER:-the provider} (docs/deploy.md)")
    if [[ "${PROVIDER:-}" == crusoe ]]; then
      [[ -n "${TF_VAR_kubernetes_version:-}" ]] || problems+=("TF_VAR_kubernetes_version is not set: a Crusoe Managed Kubernetes version (crusoe kubernetes versions list)")
      [[ -n "${TF_VAR_ssh_public_key:-}" ]] || problems+=("TF_VAR_ssh_public_key is not set: export TF_VAR_ssh_public_key=\"\$(cat ~/.ssh/id_ed25519.pub)\"")
    fi
  fi
}

# With TF_STATE_BUCKET, terraform/$PROVIDER/remote-state.tf (an S3 backend): deploy.sh and undeploy.sh
# both write it, so either can run from a checkout that has never seen the state.
write_remote_state() {
  if [[ -n "${TF_STATE_BUCKET:-}" ]]; then
    note "remote Terraform state in s3://$TF_STATE_BUCKET/neurofmx/$PROVIDER.tfstate"
    # Virtual-hosted (BUCKET.host) by default: AWS and CoreWeave AI Object Storage refuse or deprecate
    # path style; TF_STATE_PATH_STYLE=true for stores on a bare host:port (MinIO, SeaweedFS).
    case "${TF_STATE_PATH_STYLE:-false}" in
      true | false) ;;
      *) die "TF_STATE_PATH_STYLE=${TF_STATE_PATH_STYLE} must be true or false" ;;
    esac
    cat > "$TF_DIR/remote-state.tf" << HCL
terraform {
  backend "s3" {
    bucket                      = "$TF_STATE_BUCKET"
    key                         = "neurofmx/$PROVIDER.tfstate"
    region                      = "${TF_STATE_REGION:-us-east-1}"
    endpoints                   = { s3 = "${TF_STATE_ENDPOINT:-https://s3.amazonaws.com}" }
    use_path_style              = ${TF_STATE_PATH_STYLE:-false}
    skip_credentials_validation = true
    skip_region_validation      = true
    skip_requesting_account_id  = true
  }
}
HCL
  fi
}

# Export KUBECONFIG for this script: DEPLOY_KUBECONFIG when set, else the file deploy.sh writes from Terraform's
# output. A KUBECONFIG already exported in the shell usually names another cluster (a team's default): deploy
# would install there and undeploy would uninstall (and with PURGE_DATA delete volumes) there, so it is ignored.
use_kubeconfig() {
  local wanted="${DEPLOY_KUBECONFIG:-$STATE_DIR/$PROVIDER.kubeconfig}"
  if [[ -n "${KUBECONFIG:-}" && "$KUBECONFIG" != "$wanted" ]]; then
    note "ignoring KUBECONFIG=$KUBECONFIG from the environment (it may name another cluster); using $wanted (DEPLOY_KUBECONFIG=FILE names another kubeconfig of this cluster)"
  fi
  export KUBECONFIG="$wanted"
}
