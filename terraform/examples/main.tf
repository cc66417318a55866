# Example root configuration: one keyless store, one key-based store, two
# agents. Copy this directory, fill example.tfvars, then:
#   terraform init && terraform apply -var-file=example.tfvars
# Migrating from Orthanc's old GCP plugin: `orthanc-gcp-agent migrate` writes
# accounts.auto.tfvars.json; put it here (Terraform loads it by itself) and
# take `accounts` out of example.tfvars, which would otherwise replace it.

terraform {
  required_version = ">= 1.7.0"

  required_providers {
    google = {
      source  = "hashicorp/google"
      version = ">= 6.50.0, < 7.0.0"
    }
  }
}

provider "google" {
  project = var.project
  region  = var.region
}

module "broker" {
  source = "../"

  project  = var.project
  region   = var.region
  image    = var.image
  accounts = var.accounts
  agents   = var.agents

  notification_channels = var.notification_channels
}
