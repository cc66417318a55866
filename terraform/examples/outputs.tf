output "broker_url" {
  description = "Put this in each agent's Broker.Url."
  value       = module.broker.broker_url
}

output "key_loading_commands" {
  description = "Run these once per key-based account (and again to rotate)."
  value       = module.broker.key_loading_commands
}

output "store_service_accounts" {
  description = "Per-store service accounts."
  value       = module.broker.store_service_accounts
}

output "credential_secrets" {
  description = "Secret Manager references of key and authorized_user accounts (what `orthanc-gcp-agent migrate`'s load-secrets.sh fills)."
  value       = module.broker.credential_secrets
}

output "account_resource_ids" {
  description = "Per account, the service account and secret ids derived from its name."
  value       = module.broker.account_resource_ids
}

output "policy_bucket" {
  description = "The bucket of the policy fragments (runbook section 9)."
  value       = module.broker.policy_bucket
}
