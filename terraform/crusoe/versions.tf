terraform {
  required_version = ">= 1.6.0"

  required_providers {
    crusoe = {
      source  = "crusoecloud/crusoe"
      version = ">= 1.3.0, < 2.0.0"
    }
  }
}

# Credentials come from ~/.crusoe/config (crusoe CLI) or CRUSOE_ACCESS_KEY_ID / CRUSOE_SECRET_KEY,
# the project from CRUSOE_DEFAULT_PROJECT or var.project_id.
provider "crusoe" {
  project = var.project_id
}
