# Offline tests of the module: `terraform test` with a mocked google provider
# (the schema still comes from the provider, so every resource and attribute
# used here is checked against the real schema). Run by `make tf-check`.

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
    "clinic-store" = {
      project        = "hc-project"
      location       = "europe-west2"
      dataset        = "clinics"
      dicom_store    = "clinic-a"
      token_lifetime = "30m"
    }
    "research-store" = {
      project      = "hc-project"
      location     = "europe-west4"
      dataset      = "research"
      dicom_store  = "anon"
      mode         = "key"
      allow_delete = true
    }
    "user-store" = {
      project     = "hc-project"
      location    = "europe-west4"
      dataset     = "research"
      dicom_store = "user"
      mode        = "authorized_user"
      user_member = "user:alice@example.com"
      scopes      = ["https://www.googleapis.com/auth/cloud-healthcare"]
    }
  }
  agents = {
    "clinic-a" = {
      public_key = "ed25519:11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo="
      accounts   = ["clinic-store"]
    }
    "research-gw" = {
      public_key = "ed25519:PUAXw+hDiVqStwqnTRt+vJyYLM8uxJaMwM1V8Sr0Zgw="
      accounts   = ["clinic-store", "research-store"]
      disabled   = true
    }
  }
}

# The policy as fragments in the bucket: base.json (Audience, BaseUrl), one
# object per account and one per agent, each decoded and compared whole.
run "policy_document" {
  command = apply

  assert {
    condition     = output.broker_url == "https://orthanc-gcp-broker-123456789012.europe-west2.run.app"
    error_message = "broker_url must be Cloud Run's deterministic URL"
  }
  assert {
    condition = jsondecode(google_storage_bucket_object.base.content) == {
      Audience = output.broker_url
      BaseUrl  = "https://healthcare.googleapis.com/v1/"
    }
    error_message = "base.json holds Audience (= broker_url) and BaseUrl, nothing else"
  }
  assert {
    condition = jsondecode(google_storage_bucket_object.account["clinic-store"].content) == {
      Accounts = {
        "clinic-store" = {
          Project                   = "hc-project"
          Location                  = "europe-west2"
          Dataset                   = "clinics"
          DicomStore                = "clinic-a"
          ImpersonateServiceAccount = google_service_account.store["clinic-store"].email
          TokenLifetime             = "30m"
        }
      }
    }
    error_message = "keyless account fragment must carry exactly the store, ImpersonateServiceAccount and TokenLifetime"
  }
  assert {
    condition = jsondecode(google_storage_bucket_object.account["research-store"].content) == {
      Accounts = {
        "research-store" = {
          Project              = "hc-project"
          Location             = "europe-west4"
          Dataset              = "research"
          DicomStore           = "anon"
          ServiceAccountSecret = "sm://projects/my-broker-project/secrets/ogb-research-store-sa-key/versions/latest"
        }
      }
    }
    error_message = "key account fragment must reference its secret and nothing else"
  }
  assert {
    condition = jsondecode(google_storage_bucket_object.account["user-store"].content) == {
      Accounts = {
        "user-store" = {
          Project              = "hc-project"
          Location             = "europe-west4"
          Dataset              = "research"
          DicomStore           = "user"
          AuthorizedUserSecret = "sm://projects/my-broker-project/secrets/ogb-user-store-user-token/versions/latest"
          Scopes               = ["https://www.googleapis.com/auth/cloud-healthcare"]
        }
      }
    }
    error_message = "authorized_user account fragment must reference its secret"
  }
  assert {
    condition = jsondecode(google_storage_bucket_object.agent["clinic-a"].content) == {
      Agents = {
        "clinic-a" = {
          PublicKey = "ed25519:11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo="
          Accounts  = ["clinic-store"]
        }
      }
    }
    error_message = "agent fragment carries the public key and accounts"
  }
  assert {
    condition = jsondecode(google_storage_bucket_object.agent["research-gw"].content) == {
      Agents = {
        "research-gw" = {
          PublicKey = "ed25519:PUAXw+hDiVqStwqnTRt+vJyYLM8uxJaMwM1V8Sr0Zgw="
          Accounts  = ["clinic-store", "research-store"]
          Disabled  = true
        }
      }
    }
    error_message = "agent fragment carries Disabled only when set"
  }
  assert {
    condition = (
      google_storage_bucket_object.base.name == "policy/base.json" &&
      { for k, o in google_storage_bucket_object.account : k => o.name } == {
        "clinic-store"   = "policy/accounts/clinic-store.json"
        "research-store" = "policy/accounts/research-store.json"
        "user-store"     = "policy/accounts/user-store.json"
      } &&
      { for k, o in google_storage_bucket_object.agent : k => o.name } == {
        "clinic-a"    = "policy/agents/clinic-a.json"
        "research-gw" = "policy/agents/research-gw.json"
      }
    )
    error_message = "one object per account and per agent, named PREFIX/accounts/NAME.json and PREFIX/agents/ID.json"
  }
  assert {
    condition = alltrue([for o in concat([google_storage_bucket_object.base], values(google_storage_bucket_object.account), values(google_storage_bucket_object.agent)) :
      o.bucket == google_storage_bucket.policy.name && o.content_type == "application/json"
    ])
    error_message = "every fragment is a JSON object in the policy bucket"
  }
  assert {
    # The fragments merged back are the whole policy: every account and
    # agent exactly once, Audience and BaseUrl in one fragment only.
    condition = (
      length([for o in concat([google_storage_bucket_object.base], values(google_storage_bucket_object.account), values(google_storage_bucket_object.agent)) : o if can(jsondecode(o.content).Audience)]) == 1 &&
      length([for o in concat([google_storage_bucket_object.base], values(google_storage_bucket_object.account), values(google_storage_bucket_object.agent)) : o if can(jsondecode(o.content).BaseUrl)]) == 1 &&
      sort(flatten([for o in values(google_storage_bucket_object.account) : keys(jsondecode(o.content).Accounts)])) == sort(keys(var.accounts)) &&
      sort(flatten([for o in values(google_storage_bucket_object.agent) : keys(jsondecode(o.content).Agents)])) == sort(keys(var.agents)) &&
      alltrue([for o in values(google_storage_bucket_object.account) : keys(jsondecode(o.content)) == ["Accounts"]]) &&
      alltrue([for o in values(google_storage_bucket_object.agent) : keys(jsondecode(o.content)) == ["Agents"]])
    )
    error_message = "each account and agent in exactly one fragment, Audience and BaseUrl in base.json only"
  }
}

run "least_privilege_iam" {
  command = apply

  assert {
    condition     = toset(keys(google_service_account.store)) == toset(["clinic-store", "research-store"])
    error_message = "one service account per keyless or key-based store, none for authorized_user"
  }
  assert {
    condition     = toset(keys(google_project_iam_custom_role.dicomweb)) == toset(["hc-project/rw", "hc-project/delete"])
    error_message = "one DICOMweb custom role per store project and delete flavour"
  }
  assert {
    condition = (
      google_project_iam_custom_role.dicomweb["hc-project/rw"].permissions == toset(["healthcare.dicomStores.dicomWebRead", "healthcare.dicomStores.dicomWebWrite"]) &&
      google_project_iam_custom_role.dicomweb["hc-project/rw"].project == "hc-project"
    )
    error_message = "the read/write role holds dicomWebRead and dicomWebWrite only"
  }
  assert {
    condition     = google_project_iam_custom_role.dicomweb["hc-project/delete"].permissions == toset(["healthcare.dicomStores.dicomWebRead", "healthcare.dicomStores.dicomWebWrite", "healthcare.dicomStores.dicomWebDelete"])
    error_message = "dicomWebDelete only in the role of accounts with allow_delete"
  }
  assert {
    condition = alltrue([for name, b in merge(google_healthcare_dicom_store_iam_member.store, google_healthcare_dicom_store_iam_member.user) :
      b.role != "roles/healthcare.dicomEditor" && !startswith(b.role, "roles/")
    ])
    error_message = "no store binding uses a predefined role (dicomEditor allows bulk export/import)"
  }
  assert {
    condition = (
      google_healthcare_dicom_store_iam_member.store["clinic-store"].role == google_project_iam_custom_role.dicomweb["hc-project/rw"].name &&
      google_healthcare_dicom_store_iam_member.store["research-store"].role == google_project_iam_custom_role.dicomweb["hc-project/delete"].name &&
      google_healthcare_dicom_store_iam_member.user["user-store"].role == google_project_iam_custom_role.dicomweb["hc-project/rw"].name
    )
    error_message = "each store identity gets the custom role of its delete flavour"
  }
  assert {
    condition = alltrue([for name, b in google_healthcare_dicom_store_iam_member.store :
      b.member == google_service_account.store[name].member
    ])
    error_message = "each store SA is bound on its own store"
  }
  assert {
    condition     = google_healthcare_dicom_store_iam_member.store["research-store"].dicom_store_id == "projects/hc-project/locations/europe-west4/datasets/research/dicomStores/anon"
    error_message = "the role is bound on that one DICOM store"
  }
  assert {
    condition     = google_healthcare_dicom_store_iam_member.user["user-store"].member == "user:alice@example.com"
    error_message = "authorized_user's user_member gets the DICOMweb role on its store"
  }
  assert {
    condition     = keys(google_service_account_iam_member.token_creator) == ["clinic-store"]
    error_message = "token creator only on keyless store accounts"
  }
  assert {
    condition = (
      google_service_account_iam_member.token_creator["clinic-store"].role == "roles/iam.serviceAccountTokenCreator" &&
      google_service_account_iam_member.token_creator["clinic-store"].member == google_service_account.broker.member &&
      google_service_account_iam_member.token_creator["clinic-store"].service_account_id == google_service_account.store["clinic-store"].name
    )
    error_message = "the broker may mint tokens for the keyless store account only"
  }
  assert {
    condition     = toset(keys(google_secret_manager_secret.credential)) == toset(["research-store", "user-store"])
    error_message = "one credential secret per key or authorized_user account"
  }
  assert {
    condition = alltrue([for name, b in google_secret_manager_secret_iam_member.credential :
      b.role == "roles/secretmanager.secretAccessor" && b.member == google_service_account.broker.member && b.secret_id == google_secret_manager_secret.credential[name].secret_id
    ])
    error_message = "secretAccessor for the broker on each credential secret only"
  }
}

run "cloud_run_service" {
  command = apply

  assert {
    condition     = google_cloud_run_v2_service.broker.invoker_iam_disabled == true && google_cloud_run_v2_service.broker.ingress == "INGRESS_TRAFFIC_ALL"
    error_message = "agents authenticate to the broker itself: no IAM invoker check"
  }
  assert {
    condition     = google_cloud_run_v2_service.broker.template[0].service_account == google_service_account.broker.email
    error_message = "the service runs as its own service account"
  }
  assert {
    condition = {
      for e in google_cloud_run_v2_service.broker.template[0].containers[0].env : e.name => e.value
      } == {
      BROKER_CONFIG             = "gs://orthanc-gcp-broker-policy-123456789012/policy/"
      BROKER_REFRESH            = "5m"
      BROKER_MIN_REMAINING      = "15m"
      BROKER_TRUSTED_PROXY_HOPS = "1"
      GOMEMLIMIT                = "240MiB"
    }
    error_message = "broker environment; BROKER_TRUSTED_PROXY_HOPS is 1 by default (the client is the X-Forwarded-For entry Google's front end appends)"
  }
  assert {
    condition     = google_cloud_run_v2_service.broker.template[0].scaling[0].min_instance_count == 0
    error_message = "scales to zero by default"
  }
  assert {
    condition     = output.key_loading_commands["research-store"] == "gcloud iam service-accounts keys create /dev/stdout --iam-account=${google_service_account.store["research-store"].email} --project=my-broker-project | gcloud secrets versions add ogb-research-store-sa-key --project=my-broker-project --data-file=-"
    error_message = "key loading command pipes the new key straight into the secret"
  }
  assert {
    condition     = !contains(keys(output.key_loading_commands), "clinic-store")
    error_message = "keyless accounts need no key"
  }
}

run "rejects_bad_public_key" {
  command = plan
  variables {
    agents = {
      "bad" = { public_key = "ed25519:not-a-key", accounts = ["clinic-store"] }
    }
  }
  expect_failures = [var.agents]
}

# public_keys (1 or 2 keys, any kind) instead of public_key, and
# allowed_source_ranges, rendered into the policy as the broker reads them.
run "agents_take_public_keys_and_source_ranges" {
  command = apply
  variables {
    agents = {
      "clinic-a" = {
        public_keys           = ["ed25519:11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=", "ecdsa-p256:BDyjCCQNuVjcCXIw/WLLyRQo0gjnhycgcAvfNBrOUmJMndNcPfwOVQPGLMa7Aj/LU+SaByXvjaqdnH9sgh8dYtI="]
        accounts              = ["clinic-store"]
        allowed_source_ranges = ["203.0.113.0/24", "198.51.100.7/32", "2001:db8:cafe::/48"]
      }
      "research-gw" = {
        public_key = "ecdsa-p256:BDyjCCQNuVjcCXIw/WLLyRQo0gjnhycgcAvfNBrOUmJMndNcPfwOVQPGLMa7Aj/LU+SaByXvjaqdnH9sgh8dYtI="
        accounts   = ["research-store"]
      }
    }
  }
  assert {
    condition = jsondecode(google_storage_bucket_object.agent["clinic-a"].content).Agents == {
      "clinic-a" = {
        PublicKeys          = ["ed25519:11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=", "ecdsa-p256:BDyjCCQNuVjcCXIw/WLLyRQo0gjnhycgcAvfNBrOUmJMndNcPfwOVQPGLMa7Aj/LU+SaByXvjaqdnH9sgh8dYtI="]
        Accounts            = ["clinic-store"]
        AllowedSourceRanges = ["203.0.113.0/24", "198.51.100.7/32", "2001:db8:cafe::/48"]
      }
    }
    error_message = "an agent carries PublicKeys, and AllowedSourceRanges when set"
  }
  assert {
    condition = jsondecode(google_storage_bucket_object.agent["research-gw"].content).Agents == {
      "research-gw" = {
        PublicKey = "ecdsa-p256:BDyjCCQNuVjcCXIw/WLLyRQo0gjnhycgcAvfNBrOUmJMndNcPfwOVQPGLMa7Aj/LU+SaByXvjaqdnH9sgh8dYtI="
        Accounts  = ["research-store"]
      }
    }
    error_message = "an agent carries PublicKey, and no AllowedSourceRanges when unset"
  }
}

run "trusted_proxy_hops_behind_a_load_balancer" {
  command = apply
  variables {
    trusted_proxy_hops = 2
  }
  assert {
    condition     = [for e in google_cloud_run_v2_service.broker.template[0].containers[0].env : e.value if e.name == "BROKER_TRUSTED_PROXY_HOPS"] == ["2"]
    error_message = "trusted_proxy_hops is passed as BROKER_TRUSTED_PROXY_HOPS"
  }
}

run "rejects_negative_trusted_proxy_hops" {
  command = plan
  variables {
    trusted_proxy_hops = -1
  }
  expect_failures = [var.trusted_proxy_hops]
}

run "rejects_fractional_trusted_proxy_hops" {
  command = plan
  variables {
    trusted_proxy_hops = 1.5
  }
  expect_failures = [var.trusted_proxy_hops]
}

run "rejects_both_public_key_and_public_keys" {
  command = plan
  variables {
    agents = {
      "clinic-a" = {
        public_key  = "ed25519:11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo="
        public_keys = ["ed25519:PUAXw+hDiVqStwqnTRt+vJyYLM8uxJaMwM1V8Sr0Zgw="]
        accounts    = ["clinic-store"]
      }
    }
  }
  expect_failures = [var.agents]
}

run "rejects_an_agent_without_a_key" {
  command = plan
  variables {
    agents = {
      "clinic-a" = { accounts = ["clinic-store"] }
    }
  }
  expect_failures = [var.agents]
}

run "rejects_three_public_keys" {
  command = plan
  variables {
    agents = {
      "clinic-a" = {
        public_keys = [
          "ed25519:11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=",
          "ed25519:PUAXw+hDiVqStwqnTRt+vJyYLM8uxJaMwM1V8Sr0Zgw=",
          "ed25519:hNjVQ9ax4p0k+/S+BsiOrbsymk7OIhaui7/MXucvdv0=",
        ]
        accounts = ["clinic-store"]
      }
    }
  }
  expect_failures = [var.agents]
}

run "rejects_empty_public_keys" {
  command = plan
  variables {
    agents = {
      "clinic-a" = { public_keys = [], accounts = ["clinic-store"] }
    }
  }
  expect_failures = [var.agents]
}

run "rejects_a_key_listed_twice" {
  command = plan
  variables {
    agents = {
      "clinic-a" = {
        public_keys = ["ed25519:11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=", "ed25519:11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo="]
        accounts    = ["clinic-store"]
      }
    }
  }
  expect_failures = [var.agents]
}

run "rejects_a_bad_key_in_public_keys" {
  command = plan
  variables {
    agents = {
      "clinic-a" = {
        public_keys = ["ed25519:11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=", "ecdsa-p256:AAAA"]
        accounts    = ["clinic-store"]
      }
    }
  }
  expect_failures = [var.agents]
}

run "rejects_empty_allowed_source_ranges" {
  command = plan
  variables {
    agents = {
      "clinic-a" = { public_key = "ed25519:11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=", accounts = ["clinic-store"], allowed_source_ranges = [] }
    }
  }
  expect_failures = [var.agents]
}

run "rejects_a_range_with_host_bits_set" {
  command = plan
  variables {
    agents = {
      "clinic-a" = { public_key = "ed25519:11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=", accounts = ["clinic-store"], allowed_source_ranges = ["203.0.113.0/24", "10.0.0.1/8"] }
    }
  }
  expect_failures = [var.agents]
}

run "rejects_an_ipv6_range_with_host_bits_set" {
  command = plan
  variables {
    agents = {
      "clinic-a" = { public_key = "ed25519:11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=", accounts = ["clinic-store"], allowed_source_ranges = ["2001:db8::1/64"] }
    }
  }
  expect_failures = [var.agents]
}

run "rejects_a_bare_address_as_a_range" {
  command = plan
  variables {
    agents = {
      "clinic-a" = { public_key = "ed25519:11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=", accounts = ["clinic-store"], allowed_source_ranges = ["203.0.113.7"] }
    }
  }
  expect_failures = [var.agents]
}

run "rejects_a_range_with_leading_zeros" {
  command = plan
  variables {
    agents = {
      "clinic-a" = { public_key = "ed25519:11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=", accounts = ["clinic-store"], allowed_source_ranges = ["010.0.0.0/8"] }
    }
  }
  expect_failures = [var.agents]
}

run "rejects_a_range_listed_twice" {
  command = plan
  variables {
    agents = {
      "clinic-a" = { public_key = "ed25519:11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=", accounts = ["clinic-store"], allowed_source_ranges = ["203.0.113.0/24", "203.0.113.0/24"] }
    }
  }
  expect_failures = [var.agents]
}

run "takes_a_regional_base_url" {
  command = apply
  variables {
    healthcare_base_url = "https://europe-west2-healthcare.googleapis.com/v1/"
  }
  assert {
    condition     = jsondecode(google_storage_bucket_object.base.content).BaseUrl == "https://europe-west2-healthcare.googleapis.com/v1/"
    error_message = "policy BaseUrl is the regional endpoint"
  }
}

# The whole rule is tested against the broker's cases in broker/policy
# (TestTerraformBaseURLRuleMatches); here, that a refusal stops the plan.
run "rejects_base_url_outside_googleapis" {
  command = plan
  variables {
    healthcare_base_url = "https://healthcare.googleapis.com.evil.example/v1/"
  }
  expect_failures = [var.healthcare_base_url]
}

run "rejects_unknown_mode" {
  command = plan
  variables {
    accounts = {
      "x-store" = { project = "hc-project", location = "eu", dataset = "d", dicom_store = "s", mode = "keyfile" }
    }
    agents = {}
  }
  expect_failures = [var.accounts]
}

run "rejects_token_lifetime_on_key_account" {
  command = plan
  variables {
    accounts = {
      "x-store" = { project = "hc-project", location = "eu", dataset = "d", dicom_store = "s", mode = "key", token_lifetime = "1h" }
    }
    agents = {}
  }
  expect_failures = [var.accounts]
}

run "rejects_agent_with_unknown_account" {
  command = plan
  variables {
    agents = {
      "clinic-a" = { public_key = "ed25519:11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=", accounts = ["no-such-store"] }
    }
  }
  expect_failures = [google_storage_bucket_object.base]
}

run "authorized_user_loading_command_keeps_the_refresh_token" {
  command = apply

  assert {
    condition     = !strcontains(output.key_loading_commands["user-store"], "revoke")
    error_message = "the authorized_user command must not revoke the refresh token it just stored (the broker would get invalid_grant)"
  }
  assert {
    condition     = endswith(output.key_loading_commands["user-store"], "&& rm -f \"$HOME/.config/gcloud/application_default_credentials.json\"")
    error_message = "the authorized_user command ends by deleting the local credential file"
  }
  assert {
    condition     = strcontains(output.key_loading_commands["user-store"], "gcloud secrets versions add ${google_secret_manager_secret.credential["user-store"].secret_id} ")
    error_message = "the authorized_user command loads its own secret"
  }
  assert {
    condition     = strcontains(output.key_loading_commands["research-store"], "--data-file=-") && !strcontains(output.key_loading_commands["research-store"], "rm -f")
    error_message = "the key command pipes the new key into its secret"
  }
}

run "memory_limit_and_gomemlimit" {
  command = apply
  variables {
    memory_mib = 512
  }
  assert {
    condition     = google_cloud_run_v2_service.broker.template[0].containers[0].resources[0].limits.memory == "512Mi"
    error_message = "memory_mib is the container's memory limit"
  }
  assert {
    condition     = [for e in google_cloud_run_v2_service.broker.template[0].containers[0].env : e.value if e.name == "GOMEMLIMIT"] == ["481MiB"]
    error_message = "GOMEMLIMIT is 94% of memory_mib"
  }
}

run "default_memory_keeps_gomemlimit_under_it" {
  command = apply
  assert {
    condition     = [for e in google_cloud_run_v2_service.broker.template[0].containers[0].env : e.value if e.name == "GOMEMLIMIT"] == ["240MiB"]
    error_message = "256 MiB gives GOMEMLIMIT=240MiB, the setting bench/fleet measured"
  }
}

run "rejects_tiny_memory" {
  command = plan
  variables {
    memory_mib = 64
  }
  expect_failures = [var.memory_mib]
}
