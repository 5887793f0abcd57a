# Crusoe Managed Kubernetes on H100 VMs: a VPC and subnet, the cluster, a CPU node pool for the
# control services, a fixed-size H100 node pool labelled and tainted for the Ray workers, and an
# S3-compatible bucket with an access key.

locals {
  pool_label = "neurofmx.io/pool"
}

resource "crusoe_vpc_network" "this" {
  name = var.name
  cidr = var.vpc_cidr
}

resource "crusoe_vpc_subnet" "this" {
  name     = var.name
  cidr     = var.subnet_cidr
  location = var.location
  network  = crusoe_vpc_network.this.id
}

resource "crusoe_kubernetes_cluster" "this" {
  name      = var.name
  version   = var.kubernetes_version
  location  = var.location
  subnet_id = crusoe_vpc_subnet.this.id

  # The chart needs nvidia.com/gpu on the H100 nodes (GPU operator), InfiniBand in the pods (network
  # operator) and the crusoe-csi-driver-fs-sc storage class (CSI driver); CMK installs them only as add-ons.
  add_ons = ["nvidia_gpu_operator", "nvidia_network_operator", "crusoe_csi"]
}

resource "crusoe_kubernetes_node_pool" "cpu" {
  name                  = "cpu"
  cluster_id            = crusoe_kubernetes_cluster.this.id
  instance_count        = var.cpu_nodes
  type                  = var.cpu_instance_type
  ssh_key               = var.ssh_public_key
  subnet_id             = crusoe_vpc_subnet.this.id
  requested_node_labels = { (local.pool_label) = "cpu" }
}

resource "crusoe_kubernetes_node_pool" "h100" {
  name                             = "h100"
  cluster_id                       = crusoe_kubernetes_cluster.this.id
  instance_count                   = var.gpu_nodes
  type                             = var.gpu_instance_type
  ssh_key                          = var.ssh_public_key
  subnet_id                        = crusoe_vpc_subnet.this.id
  transport_partition_id           = var.transport_partition_id
  ephemeral_storage_for_containerd = true
  requested_node_labels            = { (local.pool_label) = "h100" }

  # Only pods that tolerate the taint (the Ray workers) land on the GPU nodes.
  node_taints {
    key    = "nvidia.com/gpu"
    value  = "true"
    effect = "NoSchedule"
  }
}

resource "crusoe_kubeconfig" "this" {
  cluster_id = crusoe_kubernetes_cluster.this.id
}

resource "crusoe_storage_s3_bucket" "runs" {
  name     = var.bucket_name
  location = var.location
  tags     = { app = "neurofmx" }
}

resource "crusoe_storage_s3_key" "cluster" {
  alias = "${var.name}-cluster"
}
