# The policy bucket: how it is locked down, who may read it, and that the
# fragments in it hold references and public keys, never a credential.

mock_provider "google" {
  mock_data "google_project" {
    defaults = {
      number = "123456789012"
    }
  }
}

variables {
  project = "my-broker-project"
  region  = "europe-west2"
  image   = "europe-west2-docker.pkg.dev/my-broker-project/orthanc/broker:v1"
  accounts = {
    "keyless-store" = { project = "hc-project", location = "europe-west2", dataset = "d", dicom_store = "k" }
    "key-store"     = { project = "hc-project", location = "europe-west2", dataset = "d", dicom_store = "s", mode = "key" }
    "user-store"    = { project = "hc-project", location = "europe-west2", dataset = "d", dicom_store = "u", mode = "authorized_user", user_member = "user:alice@example.com" }
  }
  agents = {
    "clinic-a" = { public_key = "ed25519:11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=", accounts = ["keyless-store", "key-store", "user-store"] }
  }
}

run "bucket_is_private_versioned_and_uniform" {
  command = apply

  assert {
    condition     = google_storage_bucket.policy.name == "orthanc-gcp-broker-policy-123456789012" && google_storage_bucket.policy.project == "my-broker-project"
    error_message = "default bucket name is <service_name>-policy-<project number>, in the broker's project"
  }
  assert {
    condition     = google_storage_bucket.policy.uniform_bucket_level_access == true
    error_message = "uniform bucket-level access: IAM only, no object ACLs"
  }
  assert {
    condition     = google_storage_bucket.policy.public_access_prevention == "enforced"
    error_message = "public access prevention is enforced"
  }
  assert {
    condition     = length(google_storage_bucket.policy.versioning) == 1 && google_storage_bucket.policy.versioning[0].enabled == true
    error_message = "versioning is on, so a fragment can be rolled back"
  }
  assert {
    condition     = google_storage_bucket.policy.location == "EUROPE-WEST2"
    error_message = "the bucket is in the broker's region by default"
  }
  assert {
    condition     = google_storage_bucket.policy.force_destroy == false
    error_message = "a protected deployment never force-destroys the policy and its history"
  }
  assert {
    condition     = google_storage_bucket.policy.labels == tomap({ "orthanc-gcp-broker" = "policy" })
    error_message = "the bucket is labelled as the broker's policy"
  }
}

run "broker_may_only_read_the_bucket" {
  command = apply

  assert {
    condition = (
      google_storage_bucket_iam_member.policy_reader.bucket == google_storage_bucket.policy.name &&
      google_storage_bucket_iam_member.policy_reader.role == "roles/storage.objectViewer" &&
      google_storage_bucket_iam_member.policy_reader.member == google_service_account.broker.member
    )
    error_message = "the broker's service account gets roles/storage.objectViewer (list and get objects) on the policy bucket, nothing more"
  }
  assert {
    condition     = length(google_storage_bucket_iam_member.policy_reader.condition) == 0
    error_message = "the binding is plain: no condition widening or narrowing it unexpectedly"
  }
  assert {
    condition = alltrue([for e in google_cloud_run_v2_service.broker.template[0].containers[0].env :
      e.value == "gs://${google_storage_bucket.policy.name}/policy/" if e.name == "BROKER_CONFIG"
    ]) && output.policy_source == "gs://orthanc-gcp-broker-policy-123456789012/policy/"
    error_message = "BROKER_CONFIG is gs://BUCKET/PREFIX/ with the trailing slash"
  }
  assert {
    condition     = output.policy_bucket == google_storage_bucket.policy.name
    error_message = "policy_bucket output"
  }
}

run "no_credential_in_any_object" {
  command = apply

  assert {
    # Account fragments carry the store, an impersonated service account or
    # an sm:// reference: no field that could hold key material.
    condition = alltrue([for o in values(google_storage_bucket_object.account) : alltrue([for a in values(jsondecode(o.content).Accounts) :
      length(setsubtract(keys(a), ["Project", "Location", "Dataset", "DicomStore", "ImpersonateServiceAccount", "TokenLifetime", "ServiceAccountSecret", "AuthorizedUserSecret", "Scopes"])) == 0
    ])])
    error_message = "an account fragment has a field other than the store, ImpersonateServiceAccount, TokenLifetime, Scopes and secret references"
  }
  assert {
    condition = alltrue([for o in values(google_storage_bucket_object.account) : alltrue([for a in values(jsondecode(o.content).Accounts) :
      alltrue([for k in ["ServiceAccountSecret", "AuthorizedUserSecret"] : startswith(a[k], "sm://projects/my-broker-project/secrets/") if contains(keys(a), k)])
    ])])
    error_message = "credentials are referenced in Secret Manager (sm://), never inlined or read from a file"
  }
  assert {
    condition = alltrue([for o in concat([google_storage_bucket_object.base], values(google_storage_bucket_object.account), values(google_storage_bucket_object.agent)) :
      !strcontains(o.content, "PRIVATE KEY") && !strcontains(o.content, "private_key") && !strcontains(o.content, "refresh_token") &&
      !strcontains(o.content, "client_secret") && !strcontains(o.content, "AuthorizedUserClient") && !strcontains(o.content, "AuthorizedUserRefreshToken")
    ])
    error_message = "no key, refresh token or client secret in any object"
  }
  assert {
    condition = alltrue([for o in values(google_storage_bucket_object.agent) : alltrue([for ag in values(jsondecode(o.content).Agents) :
      length(setsubtract(keys(ag), ["PublicKey", "PublicKeys", "Accounts", "AllowedSourceRanges", "Disabled"])) == 0
    ])])
    error_message = "agent fragments carry public keys, accounts, ranges and Disabled only"
  }
  assert {
    condition     = toset(keys(google_secret_manager_secret.credential)) == toset(["key-store", "user-store"])
    error_message = "the credentials themselves stay in Secret Manager, one secret per key or authorized_user account"
  }
}

run "prefix_and_bucket_name_are_configurable" {
  command = apply

  variables {
    policy_bucket          = "acme-broker-policy"
    policy_bucket_location = "EU"
    policy_prefix          = "prod/policy"
    deletion_protection    = false
  }

  assert {
    condition     = google_storage_bucket.policy.name == "acme-broker-policy" && google_storage_bucket.policy.location == "EU"
    error_message = "policy_bucket and policy_bucket_location are used as given"
  }
  assert {
    condition = (
      google_storage_bucket_object.base.name == "prod/policy/base.json" &&
      google_storage_bucket_object.account["key-store"].name == "prod/policy/accounts/key-store.json" &&
      google_storage_bucket_object.agent["clinic-a"].name == "prod/policy/agents/clinic-a.json" &&
      output.policy_source == "gs://acme-broker-policy/prod/policy/"
    )
    error_message = "every object lives under policy_prefix, which BROKER_CONFIG names"
  }
  assert {
    condition     = google_storage_bucket.policy.force_destroy == true
    error_message = "an unprotected deployment can be destroyed with its old object versions"
  }
  assert {
    condition     = output.policy_objects.agents == { "clinic-a" = "prod/policy/agents/clinic-a.json" } && output.policy_objects.base == "prod/policy/base.json"
    error_message = "policy_objects lists the object names"
  }
}

run "no_agents_still_writes_base_and_accounts" {
  command = apply

  variables {
    agents = {}
  }

  assert {
    condition     = length(google_storage_bucket_object.agent) == 0 && length(google_storage_bucket_object.account) == 3 && jsondecode(google_storage_bucket_object.base.content).Audience == output.broker_url
    error_message = "before the first site is enrolled the prefix holds base.json and the account fragments"
  }
}

run "rejects_a_prefix_with_a_leading_slash" {
  command = plan
  variables {
    policy_prefix = "/policy"
  }
  expect_failures = [var.policy_prefix]
}

run "rejects_a_prefix_with_a_trailing_slash" {
  command = plan
  variables {
    policy_prefix = "policy/"
  }
  expect_failures = [var.policy_prefix]
}

run "rejects_a_dot_dot_prefix" {
  command = plan
  variables {
    policy_prefix = "policy/../other"
  }
  expect_failures = [var.policy_prefix]
}

run "rejects_a_bad_bucket_name" {
  command = plan
  variables {
    policy_bucket = "Acme_Policy"
  }
  expect_failures = [var.policy_bucket]
}

run "rejects_a_goog_bucket_name" {
  command = plan
  variables {
    policy_bucket = "google-policy"
  }
  expect_failures = [var.policy_bucket]
}

run "rejects_a_default_bucket_name_google_refuses" {
  command = plan
  variables {
    service_name = "google-dicom-broker"
  }
  expect_failures = [google_storage_bucket.policy]
}
