variable "name" {
  description = "Name of the VPC and CKS cluster (at most 30 characters)."
  type        = string
  default     = "neurofmx"

  validation {
    condition     = can(regex("^[a-z0-9]([-a-z0-9]{0,28}[a-z0-9])?$", var.name))
    error_message = "The name must be a lowercase DNS label of at most 30 characters, e.g. \"neurofmx\"."
  }
}

variable "zone" {
  description = "CoreWeave Availability Zone with H100 capacity, e.g. US-EAST-04A."
  type        = string
  default     = "US-EAST-04A"
}

variable "kubernetes_version" {
  description = "CKS Kubernetes minor version, e.g. v1.35 (patches are applied by CKS)."
  type        = string
  default     = "v1.35"

  validation {
    condition     = can(regex("^v1\\.[0-9]+$", var.kubernetes_version))
    error_message = "The kubernetes_version must look like v1.35."
  }
}

variable "public_api_server" {
  description = "Expose the cluster's API server to the internet (needed to run deploy.sh from a laptop)."
  type        = bool
  default     = true
}

variable "pod_cidr" {
  description = "VPC prefix used for pod IPs."
  type        = string
  default     = "10.0.0.0/13"
}

variable "service_cidr" {
  description = "VPC prefix used for Kubernetes service IPs."
  type        = string
  default     = "10.16.0.0/22"
}

variable "internal_lb_cidr" {
  description = "VPC prefix for internal load balancers (reachable inside the VPC only)."
  type        = string
  default     = "10.32.4.0/22"
}

variable "cpu_instance_type" {
  description = "CoreWeave CPU instance type for the Ray head, MLflow and PostgreSQL (see CoreWeave's instance list)."
  type        = string
}

variable "cpu_nodes" {
  description = "Number of CPU nodes (1 is enough for the head, MLflow and PostgreSQL)."
  type        = number
  default     = 1
}

variable "gpu_instance_type" {
  description = "GPU instance type: 8x H100 80GB SXM with InfiniBand."
  type        = string
  default     = "gd-8xh100ib-i128"
}

variable "gpu_min_nodes" {
  description = "Fewest H100 nodes kept by the node pool autoscaler (0 stops GPU billing when idle)."
  type        = number
  default     = 0
}

variable "gpu_max_nodes" {
  description = "Most H100 nodes the node pool may grow to; match ray.workers.maxReplicas in the chart."
  type        = number
  default     = 4

  validation {
    condition     = var.gpu_max_nodes >= 1
    error_message = "The gpu_max_nodes must be at least 1."
  }
}

variable "bucket_name" {
  description = "Object Storage bucket for Ray checkpoints and MLflow artifacts (globally unique)."
  type        = string
}

variable "access_key_duration_seconds" {
  description = "Lifetime of the Object Storage access key created for the cluster; 0 makes it permanent."
  type        = number
  default     = 7776000
}

variable "kubeconfig_token" {
  description = "CoreWeave API token written into the kubeconfig output (deploy.sh passes COREWEAVE_API_TOKEN)."
  type        = string
  default     = ""
  sensitive   = true
}
