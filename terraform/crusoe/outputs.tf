output "cluster_id" {
  description = "Crusoe Managed Kubernetes cluster ID."
  value       = crusoe_kubernetes_cluster.this.id
}

output "cluster_endpoint" {
  description = "The cluster's Kubernetes API server address."
  value       = crusoe_kubeconfig.this.cluster_address
}

output "kubeconfig" {
  description = "Kubeconfig (client certificate) for the cluster."
  value       = crusoe_kubeconfig.this.kubeconfig_yaml
  sensitive   = true
}

output "bucket_name" {
  description = "Bucket for checkpoints and MLflow artifacts."
  value       = crusoe_storage_s3_bucket.runs.name
}

output "s3_endpoint" {
  description = "S3 endpoint URL for the bucket."
  value       = crusoe_storage_s3_bucket.runs.s3_url
}

output "s3_access_key_id" {
  description = "Access key ID for the bucket."
  value       = crusoe_storage_s3_key.cluster.access_key_id
}

output "s3_secret_access_key" {
  description = "Secret for s3_access_key_id (also kept in the Terraform state: protect the state)."
  value       = crusoe_storage_s3_key.cluster.secret_access_key
  sensitive   = true
}

output "gpu_node_selector" {
  description = "Node label the chart's Ray workers select (values-crusoe.yaml)."
  value       = { (local.pool_label) = "h100" }
}
