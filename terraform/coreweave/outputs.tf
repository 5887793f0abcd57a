output "cluster_id" {
  description = "CKS cluster ID."
  value       = coreweave_cks_cluster.this.id
}

output "cluster_endpoint" {
  description = "The cluster's Kubernetes API server endpoint."
  value       = coreweave_cks_cluster.this.api_server_endpoint
}

output "kubeconfig" {
  description = "Kubeconfig for the cluster, authenticating with the CoreWeave API token (kubeconfig_token)."
  sensitive   = true
  value = yamlencode({
    apiVersion      = "v1"
    kind            = "Config"
    current-context = var.name
    clusters = [{
      name    = var.name
      cluster = { server = "https://${coreweave_cks_cluster.this.api_server_endpoint}" }
    }]
    users    = [{ name = "${var.name}-token", user = { token = var.kubeconfig_token } }]
    contexts = [{ name = var.name, context = { cluster = var.name, user = "${var.name}-token" } }]
  })
}

output "bucket_name" {
  description = "Object Storage bucket for checkpoints and MLflow artifacts."
  value       = coreweave_object_storage_bucket.runs.name
}

output "s3_endpoint" {
  description = "S3 API endpoint of CoreWeave AI Object Storage."
  value       = "https://cwobject.com"
}

output "s3_access_key_id" {
  description = "Access key ID for the bucket."
  value       = coreweave_object_storage_access_key.cluster.id
}

output "s3_secret_access_key" {
  description = "Secret for s3_access_key_id (also kept in the Terraform state: protect the state)."
  value       = coreweave_object_storage_access_key.cluster.secret_key
  sensitive   = true
}

output "gpu_node_selector" {
  description = "Node label the chart's Ray workers select (values-coreweave.yaml)."
  value       = { (local.pool_label) = "h100" }
}
