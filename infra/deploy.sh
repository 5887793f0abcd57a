#!/usr/bin/env bash
# make deploy PROVIDER=coreweave|crusoe REGISTRY=... TAG=...
#
# 1. terraform apply in terraform/$PROVIDER (cluster, H100 node pool, bucket, access key)
# 2. Secrets in the neurofmx namespace (generated once, never printed, never in the chart)
# 3. the KubeRay operator (pinned) and the neurofmx chart with helm
# 4. wait for the RayCluster's head, record the cluster for `fmx --cluster`, print the addresses
set -euo pipefail
# shellcheck source=infra/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

check_provider
check_tools terraform helm kubectl base64 od
check_credentials
[[ -n "${REGISTRY:-}" ]] || problems+=("REGISTRY is not set: the registry that make image pushed to, e.g. REGISTRY=registry.example.com/team")
[[ -n "${TAG:-}" ]] || problems+=("TAG is not set: the image tag that make image pushed, e.g. TAG=0.1.0")
# Both become image references in the pods: a malformed one would only show as InvalidImageName after
# the cluster exists and helm's --wait runs out. Docker's reference grammar: host[:port] then lowercase paths.
registry_re='^[a-zA-Z0-9]([a-zA-Z0-9-]*[a-zA-Z0-9])?(\.[a-zA-Z0-9]([a-zA-Z0-9-]*[a-zA-Z0-9])?)*(:[0-9]+)?(/[a-z0-9]+(([._]|__|-+)[a-z0-9]+)*)*$'
if [[ -n "${REGISTRY:-}" ]] && ! [[ "$REGISTRY" =~ $registry_re ]]; then
  problems+=("REGISTRY=$REGISTRY is not a registry path (no scheme, no trailing /, lowercase repository), e.g. REGISTRY=registry.example.com/team")
fi
if [[ -n "${TAG:-}" ]] && ! [[ "$TAG" =~ ^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$ ]]; then
  problems+=("TAG=$TAG is not an image tag (letters, digits, _ . -; at most 128), e.g. TAG=0.1.0")
fi
check_tf_vars
fail_on_problems

TF_DIR="$REPO_ROOT/terraform/$PROVIDER"
mkdir -p "$STATE_DIR"
chmod 700 "$STATE_DIR"

write_remote_state

note "terraform apply ($PROVIDER)"
export TF_VAR_kubeconfig_token="${COREWEAVE_API_TOKEN:-}"
terraform -chdir="$TF_DIR" init -input=false
approve=()
[[ "${AUTO_APPROVE:-0}" == 1 ]] && approve=(-auto-approve)
terraform -chdir="$TF_DIR" apply -input=false "${approve[@]}"

tf_out() { terraform -chdir="$TF_DIR" output -raw "$1"; }
# The new cluster's kubeconfig, never a KUBECONFIG exported for another cluster (helm and kubectl below would
# install there). DEPLOY_KUBECONFIG names one of the new cluster issued elsewhere (e.g. the CoreWeave Console).
use_kubeconfig
if [[ -z "${DEPLOY_KUBECONFIG:-}" ]]; then
  (umask 077 && tf_out kubeconfig > "$KUBECONFIG")
elif [[ ! -f "$KUBECONFIG" ]]; then
  echo "DEPLOY_KUBECONFIG=$DEPLOY_KUBECONFIG is not a file: download the new cluster's kubeconfig there, or unset DEPLOY_KUBECONFIG to use the one Terraform writes" >&2
  exit 2
fi
bucket="$(tf_out bucket_name)"
s3_endpoint="$(tf_out s3_endpoint)"

note "namespace $NAMESPACE and secrets"
kubectl create namespace "$NAMESPACE" --dry-run=client -o yaml | kubectl apply -f - > /dev/null
# Plain assignments, not $(...) inside apply_secret's arguments: there set -e would ignore a failed
# `terraform output` and store an empty key in the Secret.
s3_access_key_id="$(tf_out s3_access_key_id)"
s3_secret_access_key="$(tf_out s3_secret_access_key)"
apply_secret neurofmx-s3 \
  "AWS_ACCESS_KEY_ID=$s3_access_key_id" \
  "AWS_SECRET_ACCESS_KEY=$s3_secret_access_key"
ray_token="$(existing_or_random neurofmx-ray-auth auth_token)"
apply_secret neurofmx-ray-auth "auth_token=$ray_token"
pg_password="$(existing_or_random neurofmx-postgres password)"
apply_secret neurofmx-postgres "password=$pg_password"
# The chart's object names (neurofmx.fullname in _helpers.tpl): the release name, suffixed with the
# chart name unless it contains it, cut to 40 characters, one trailing '-' trimmed.
fullname="$RELEASE"
[[ "$RELEASE" == *neurofmx* ]] || fullname="$RELEASE-neurofmx"
fullname="${fullname:0:40}"
fullname="${fullname%-}"
pg_host="$fullname-postgres"
db_uri="$(existing_or neurofmx-mlflow-db uri "postgresql+psycopg2://mlflow:${pg_password}@${pg_host}:5432/mlflow")"
apply_secret neurofmx-mlflow-db "uri=$db_uri"
admin_password="$(existing_or_random neurofmx-mlflow-auth admin_password)"
flask_key="$(existing_or_random neurofmx-mlflow-auth flask_secret_key)"
auth_ini="$(< "$REPO_ROOT/infra/mlflow-basic-auth.ini.tmpl")"
auth_db="postgresql+psycopg2://mlflow:${pg_password}@${pg_host}:5432/mlflow_auth"
auth_ini="${auth_ini//@AUTH_DATABASE_URI@/"$auth_db"}" # quoted: no & expansion (bash 5.2)
auth_ini="$(existing_or neurofmx-mlflow-auth basic_auth.ini "$auth_ini")"
apply_secret neurofmx-mlflow-auth \
  "basic_auth.ini=$auth_ini" \
  "admin_username=admin" \
  "admin_password=$admin_password" \
  "flask_secret_key=$flask_key"

note "KubeRay operator $KUBERAY_VERSION in $KUBERAY_NAMESPACE"
helm repo add kuberay https://ray-project.github.io/kuberay-helm/ --force-update > /dev/null
helm upgrade --install kuberay-operator kuberay/kuberay-operator --version "$KUBERAY_VERSION" \
  --namespace "$KUBERAY_NAMESPACE" --create-namespace --wait --timeout 10m

note "neurofmx chart"
# --set-string: with --set an all-digit TAG (a short git SHA such as 1234567) becomes a number,
# which values.schema.json rejects for image.tag.
set_args=(
  --set-string "image.repository=$REGISTRY/neurofmx" --set-string "image.tag=$TAG"
  --set-string "mlflow.image.repository=$REGISTRY/neurofmx-mlflow" --set-string "mlflow.image.tag=$TAG"
  --set-string "s3.bucket=$bucket" --set-string "s3.endpoint=$s3_endpoint"
  # The head's NetworkPolicy admits the operator's namespace only: it must be the one installed above.
  --set-string "networkPolicy.operatorNamespace=$KUBERAY_NAMESPACE"
)
# --reset-then-reuse-values (Helm >= 3.14): overrides made with `helm upgrade --reuse-values --set ...`
# (docs/deploy.md, Configuration reference) survive a redeploy; the provider file and set_args still win.
helm upgrade --install --reset-then-reuse-values "$RELEASE" "$REPO_ROOT/helm/neurofmx" --namespace "$NAMESPACE" \
  -f "$REPO_ROOT/helm/neurofmx/values-$PROVIDER.yaml" "${set_args[@]}" --wait --timeout 30m

cluster="$fullname"
note "waiting for RayCluster $cluster"
kubectl -n "$NAMESPACE" wait "raycluster/$cluster" --for=condition=HeadPodReady --timeout=30m

fmx_home="${FMX_HOME:-$HOME/.fmx}"
mkdir -p "$fmx_home/clusters"
# temp file then mv: an interrupted deploy leaves the previous record (or none), never a cut-short one
cat > "$fmx_home/clusters/.$PROVIDER.json.tmp" << JSON
{"ray_address": "http://127.0.0.1:8265", "mlflow_address": "http://127.0.0.1:5000", "namespace": "$NAMESPACE", "ray_cluster": "$cluster", "kubeconfig": "$KUBECONFIG"}
JSON
mv -f "$fmx_home/clusters/.$PROVIDER.json.tmp" "$fmx_home/clusters/$PROVIDER.json"

cat << EOF_MSG

NeuroFMx is running on $PROVIDER (namespace $NAMESPACE).

Kubeconfig of this cluster (the kubectl commands below need it in your shell):
  export KUBECONFIG=$(printf '%q' "$KUBECONFIG")
Ray dashboard / Jobs API:
  kubectl -n $NAMESPACE port-forward svc/$cluster-head-svc 8265:8265 &
  http://127.0.0.1:8265   (token: kubectl -n $NAMESPACE get secret neurofmx-ray-auth -o jsonpath='{.data.auth_token}' | base64 -d)
MLflow:
  kubectl -n $NAMESPACE port-forward svc/$cluster-mlflow 5000:5000 &
  http://127.0.0.1:5000   (user admin; password: kubectl -n $NAMESPACE get secret neurofmx-mlflow-auth -o jsonpath='{.data.admin_password}' | base64 -d)
Run a sweep:
  export RAY_AUTH_TOKEN=\$(kubectl -n $NAMESPACE get secret neurofmx-ray-auth -o jsonpath='{.data.auth_token}' | base64 -d)
  fmx sweep submit sweeps/smoke.yaml --cluster $PROVIDER
EOF_MSG
