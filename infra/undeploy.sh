#!/usr/bin/env bash
# make undeploy PROVIDER=coreweave|crusoe
#
# Removes the chart (the data PVC is kept unless PURGE_DATA=1) and destroys the Terraform
# resources: cluster, node pools, bucket and access key. GPU billing stops when this returns.
set -euo pipefail
# shellcheck source=infra/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

check_provider
check_tools terraform helm kubectl
check_credentials
check_tf_vars
fail_on_problems

TF_DIR="$REPO_ROOT/terraform/$PROVIDER"
# Backend and providers first: from a fresh checkout, destroy would otherwise fail, or, with no backend,
# find an empty local state and destroy nothing while the cluster keeps running.
write_remote_state
terraform -chdir="$TF_DIR" init -input=false
# The kubeconfig deploy.sh recorded for this provider (DEPLOY_KUBECONFIG there, e.g. one from the Console), unless
# DEPLOY_KUBECONFIG names one now; never an exported KUBECONFIG of another cluster (helm uninstall would run there).
record="${FMX_HOME:-$HOME/.fmx}/clusters/$PROVIDER.json"
if [[ -z "${DEPLOY_KUBECONFIG:-}" && -f "$record" ]]; then
  recorded="$(sed -n 's/.*"kubeconfig": "\([^"]*\)".*/\1/p' "$record")"
  if [[ -n "$recorded" && -f "$recorded" ]]; then
    DEPLOY_KUBECONFIG="$recorded"
  fi
fi
use_kubeconfig

if [[ -f "$KUBECONFIG" ]] && ! kubectl get --raw /readyz --request-timeout=30s > /dev/null 2>&1; then
  # A rerun after a failed destroy (a bucket that was not empty) finds the kubeconfig of a cluster
  # that is already gone: nothing is left to uninstall, and the destroy below must still run.
  note "the cluster in $KUBECONFIG does not answer (already destroyed?): skipping helm and the data volume"
elif [[ -f "$KUBECONFIG" ]]; then
  note "helm uninstall $RELEASE"
  helm uninstall "$RELEASE" --namespace "$NAMESPACE" --wait --timeout 15m || note "release $RELEASE not found"
  if [[ "${PURGE_DATA:-0}" == 1 ]]; then
    note "deleting the data volume (PURGE_DATA=1)"
    kubectl -n "$NAMESPACE" delete pvc -l "app.kubernetes.io/instance=$RELEASE" --wait=true
  fi
else
  note "no kubeconfig at $KUBECONFIG: skipping helm, destroying the infrastructure directly"
fi

note "terraform destroy ($PROVIDER)"
export TF_VAR_kubeconfig_token="${COREWEAVE_API_TOKEN:-}"
approve=()
[[ "${AUTO_APPROVE:-0}" == 1 ]] && approve=(-auto-approve)
terraform -chdir="$TF_DIR" destroy -input=false "${approve[@]}"
rm -f "$STATE_DIR/$PROVIDER.kubeconfig" "${FMX_HOME:-$HOME/.fmx}/clusters/$PROVIDER.json"
note "done: $PROVIDER resources destroyed"
