variable "name" {
  description = "Name of the VPC, subnet and Kubernetes cluster."
  type        = string
  default     = "neurofmx"

  validation {
    condition     = can(regex("^[a-z0-9]([-a-z0-9]{0,38}[a-z0-9])?$", var.name))
    error_message = "The name must be a lowercase DNS label of at most 40 characters, e.g. \"neurofmx\"."
  }
}

variable "project_id" {
  description = "Crusoe project (name or ID); null uses the CLI's default project."
  type        = string
  default     = null
}

variable "location" {
  description = "Crusoe location with H100 capacity, e.g. us-east1-a."
  type        = string
  default     = "us-east1-a"
}

variable "kubernetes_version" {
  description = "Crusoe Managed Kubernetes version string as listed by the Crusoe CLI (e.g. 1.33.x-cmk.N)."
  type        = string
}

variable "vpc_cidr" {
  description = "CIDR of the VPC network."
  type        = string
  default     = "10.0.0.0/8"
}

variable "subnet_cidr" {
  description = "CIDR of the cluster's subnet inside the VPC."
  type        = string
  default     = "10.0.0.0/16"
}

variable "ssh_public_key" {
  description = "SSH public key installed on every node (Crusoe requires one per node pool)."
  type        = string

  validation {
    condition     = can(regex("^(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp256) ", var.ssh_public_key))
    error_message = "The ssh_public_key must be an OpenSSH public key line (ssh-ed25519 AAAA...), not a path."
  }
}

variable "cpu_instance_type" {
  description = "Crusoe CPU VM type for the Ray head, MLflow and PostgreSQL (see the Crusoe CLI's VM type list)."
  type        = string
}

variable "cpu_nodes" {
  description = "Number of CPU nodes."
  type        = number
  default     = 1
}

variable "gpu_instance_type" {
  description = "GPU VM type: 8x H100 80GB SXM with InfiniBand."
  type        = string
  default     = "h100-80gb-sxm-ib.8x"
}

variable "gpu_nodes" {
  description = "Number of H100 nodes. Crusoe node pools have a fixed size: match ray.workers.maxReplicas."
  type        = number
  default     = 1

  validation {
    condition     = var.gpu_nodes >= 1
    error_message = "The gpu_nodes must be at least 1."
  }
}

variable "transport_partition_id" {
  description = "Existing InfiniBand partition for the GPU nodes (null: no cross-node IB, NCCL falls back to TCP)."
  type        = string
  default     = null
}

variable "bucket_name" {
  description = "S3-compatible bucket for Ray checkpoints and MLflow artifacts."
  type        = string
}
