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
if ! has_tfvars; then
  [[ -n "${TF_VAR_bucket_name:-}" ]] || problems+=("TF_VAR_bucket_name is not set: export TF_VAR_bucket_name=<a globally unique bucket name> (or write terraform/${PROVIDER:-PROVIDER}/terraform.tfvars)")
  [[ -n "${TF_VAR_cpu_instance_type:-}" ]] || problems+=("TF_VAR_cpu_instance_type is not set: a CPU instance type of ${PROVIDER:-the provider} (docs/deploy.md)")
  if [[ "${PROVIDER:-}" == crusoe ]]; then
    [[ -n "${TF_VAR_kubernetes_version:-}" ]] || problems+=("TF_VAR_kubernetes_version is not set: a Crusoe Managed Kubernetes version (crusoe kubernetes versions list)")
    [[ -n "${TF_VAR_ssh_public_key:-}" ]] || problems+=("TF_VAR_ssh_public_key is not set: export TF_VAR_ssh_public_key=\"\$(cat ~/.ssh/id_ed25519.pub)\"")
  fi
fi
fail_on_problems

TF_DIR="$REPO_ROOT/terraform/$PROVIDER"
mkdir -p "$STATE_DIR"
chmod 700 "$STATE_DIR"

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

note "terraform apply ($PROVIDER)"
export TF_VAR_kubeconfig_token="${COREWEAVE_API_TOKEN:-}"
terraform -chdir="$TF_DIR" init -input=false
approve=()
[[ "${AUTO_APPROVE:-0}" == 1 ]] && approve=(-auto-approve)
terraform -chdir="$TF_DIR" apply -input=false "${approve[@]}"

tf_out() { terraform -chdir="$TF_DIR" output -raw "$1"; }
if [[ -z "${KUBECONFIG:-}" ]]; then
  export KUBECONFIG="$STATE_DIR/$PROVIDER.kubeconfig"
  (umask 077 && tf_out kubeconfig > "$KUBECONFIG")
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
pg_host="$RELEASE-postgres"
[[ "$RELEASE" == *neurofmx* ]] || pg_host="$RELEASE-neurofmx-postgres"
apply_secret neurofmx-mlflow-db "uri=postgresql+psycopg2://mlflow:${pg_password}@${pg_host}:5432/mlflow"
admin_password="$(existing_or_random neurofmx-mlflow-auth admin_password)"
flask_key="$(existing_or_random neurofmx-mlflow-auth flask_secret_key)"
auth_ini="$(< "$REPO_ROOT/infra/mlflow-basic-auth.ini.tmpl")"
auth_db="postgresql+psycopg2://mlflow:${pg_password}@${pg_host}:5432/mlflow_auth"
auth_ini="${auth_ini//@AUTH_DATABASE_URI@/"$auth_db"}" # quoted: no & expansion (bash 5.2)
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
)
helm upgrade --install "$RELEASE" "$REPO_ROOT/helm/neurofmx" --namespace "$NAMESPACE" \
  -f "$REPO_ROOT/helm/neurofmx/values-$PROVIDER.yaml" "${set_args[@]}" --wait --timeout 30m

cluster="$RELEASE"
[[ "$RELEASE" == *neurofmx* ]] || cluster="$RELEASE-neurofmx"
note "waiting for RayCluster $cluster"
kubectl -n "$NAMESPACE" wait "raycluster/$cluster" --for=condition=HeadPodReady --timeout=30m

fmx_home="${FMX_HOME:-$HOME/.fmx}"
mkdir -p "$fmx_home/clusters"
cat > "$fmx_home/clusters/$PROVIDER.json" << JSON
{"ray_address": "http://127.0.0.1:8265", "mlflow_address": "http://127.0.0.1:5000", "namespace": "$NAMESPACE", "ray_cluster": "$cluster", "kubeconfig": "$KUBECONFIG"}
JSON

cat << EOF_MSG

NeuroFMx is running on $PROVIDER (namespace $NAMESPACE).

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
