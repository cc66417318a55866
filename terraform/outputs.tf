output "broker_url" {
  description = "The URL agents put in Broker.Url; it is also the policy's Audience (JWT aud)."
  value       = local.audience
}

output "service_uri" {
  description = "The Cloud Run service's own URI (another name of the same service)."
  value       = google_cloud_run_v2_service.broker.uri
}

output "broker_service_account" {
  description = "Email of the broker's runtime service account."
  value       = google_service_account.broker.email
}

output "store_service_accounts" {
  description = "Per-store service account emails, keyed by account name (impersonate and key accounts)."
  value       = { for name, sa in google_service_account.store : name => sa.email }
}

output "credential_secrets" {
  description = "Secret Manager references of key and authorized_user accounts, keyed by account name."
  value       = local.credential_refs
}

output "policy_source" {
  description = "Where the broker reads its policy (BROKER_CONFIG): gs://BUCKET/PREFIX/, one fragment per object (docs/design.md)."
  value       = local.policy_source
}

output "policy_bucket" {
  description = "Name of the versioned bucket that holds the policy fragments."
  value       = google_storage_bucket.policy.name
}

output "policy_objects" {
  description = "The policy fragments this module writes, as object names: base (Audience and BaseUrl), accounts and agents keyed by name. Objects added under the prefix by other means are read by the broker too."
  value = {
    base     = google_storage_bucket_object.base.name
    accounts = { for name, o in google_storage_bucket_object.account : name => o.name }
    agents   = { for id, o in google_storage_bucket_object.agent : id => o.name }
  }
}

output "key_loading_commands" {
  # authorized_user: delete the local copy, never `gcloud auth
  # application-default revoke`: that revokes the refresh token just stored,
  # and the broker would get invalid_grant.
  description = "Per account, the shell commands that put its credential into its secret without the credential touching Terraform (see docs/runbook.md); an authorized_user's local copy is deleted afterwards."
  value = {
    for name, a in local.secret_accounts : name => (
      a.mode == "key" ?
      "gcloud iam service-accounts keys create /dev/stdout --iam-account=${google_service_account.store[name].email} --project=${var.project} | gcloud secrets versions add ${google_secret_manager_secret.credential[name].secret_id} --project=${var.project} --data-file=-" :
      "gcloud auth application-default login --scopes=${join(",", coalesce(a.scopes, ["https://www.googleapis.com/auth/cloud-healthcare"]))} && gcloud secrets versions add ${google_secret_manager_secret.credential[name].secret_id} --project=${var.project} --data-file=\"$HOME/.config/gcloud/application_default_credentials.json\" && rm -f \"$HOME/.config/gcloud/application_default_credentials.json\""
    )
  }
}

output "account_resource_ids" {
  description = "Per account name, the ids of the Google resources named after it: service_account (impersonate and key accounts) and secret (key and authorized_user accounts), null where the account has none. A name of 3-20 lowercase letters, digits or hyphens starting with a letter is used as it is; other names get a derived id (see local.resource_ids)."
  value = {
    for name, a in var.accounts : name => {
      service_account = a.mode != "authorized_user" ? google_service_account.store[name].account_id : null
      secret          = a.mode != "impersonate" ? google_secret_manager_secret.credential[name].secret_id : null
    }
  }
}
