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
