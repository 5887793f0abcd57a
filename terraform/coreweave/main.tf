# A CKS cluster in its own VPC, a CPU node pool for the control services, an autoscaled H100 node
# pool labelled and tainted for the Ray workers, and an Object Storage bucket with an access key.

locals {
  pool_label = "neurofmx.io/pool"
}

resource "coreweave_networking_vpc" "this" {
  name = var.name
  zone = var.zone

  vpc_prefixes = [
    { name = "pod-cidr", value = var.pod_cidr },
    { name = "service-cidr", value = var.service_cidr },
    { name = "internal-lb-cidr", value = var.internal_lb_cidr },
  ]
}

resource "coreweave_cks_cluster" "this" {
  name                   = var.name
  version                = var.kubernetes_version
  zone                   = var.zone
  vpc_id                 = coreweave_networking_vpc.this.id
  public                 = var.public_api_server
  pod_cidr_name          = "pod-cidr"
  service_cidr_name      = "service-cidr"
  internal_lb_cidr_names = ["internal-lb-cidr"]
}

resource "coreweave_cks_node_pool" "cpu" {
  cluster_id    = coreweave_cks_cluster.this.id
  name          = "cpu"
  instance_type = var.cpu_instance_type
  target_nodes  = var.cpu_nodes
  labels        = { (local.pool_label) = "cpu" }
}

resource "coreweave_cks_node_pool" "h100" {
  cluster_id    = coreweave_cks_cluster.this.id
  name          = "h100"
  instance_type = var.gpu_instance_type
  target_nodes  = var.gpu_min_nodes
  autoscaling   = true
  min_nodes     = var.gpu_min_nodes
  max_nodes     = var.gpu_max_nodes
  labels        = { (local.pool_label) = "h100" }

  # Only pods that tolerate the taint (the Ray workers) land on the GPU nodes.
  taints = [
    { key = "nvidia.com/gpu", value = "true", effect = "NoSchedule" },
  ]
}

resource "coreweave_object_storage_bucket" "runs" {
  name = var.bucket_name
  zone = var.zone
}

# The key's permissions come from the organization's Object Storage access policies.
resource "coreweave_object_storage_access_key" "cluster" {
  duration_seconds = var.access_key_duration_seconds
  attributes       = { application = "neurofmx" }
}
