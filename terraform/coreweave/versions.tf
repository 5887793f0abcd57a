terraform {
  required_version = ">= 1.6.0"

  required_providers {
    coreweave = {
      source = "coreweave/coreweave"
      # coreweave_cks_node_pool needs a provider release that ships it (documented in the provider's docs).
      version = ">= 0.15.0, < 1.0.0"
    }
  }
}

# The API token comes from COREWEAVE_API_TOKEN (never from a file in this repository).
provider "coreweave" {}
