terraform {
  # removed blocks (forgetting the old policy secret, main.tf) and the
  # module's tests (mock_provider in tests/*.tftest.hcl) need 1.7.
  required_version = ">= 1.7.0"

  required_providers {
    google = {
      source  = "hashicorp/google"
      version = ">= 6.50.0, < 7.0.0"
    }
  }
}
