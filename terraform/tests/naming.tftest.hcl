# Account names: the broker's rule (up to 63 letters, digits, '_', '.', '-'),
# as old GCP plugin accounts are named, and the service account and secret
# ids derived from them (local.resource_ids). The cases are shared with
# agent/migrate through naming_vectors.json, so `orthanc-gcp-agent migrate`
# writes the secret ids this module creates.

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
  agents  = {}
}

run "derived_ids_match_the_shared_vectors" {
  command = apply

  variables {
    accounts = {
      for i, v in jsondecode(file("tests/naming_vectors.json")).vectors : v.name => {
        project     = "hc-project"
        location    = "europe-west2"
        dataset     = "d"
        dicom_store = "s${i}"
        mode        = i % 2 == 0 ? "key" : "authorized_user"
      }
    }
  }

  assert {
    condition = alltrue([for i, v in jsondecode(file("tests/naming_vectors.json")).vectors :
      output.account_resource_ids[v.name].secret == "ogb-${v.id}-${i % 2 == 0 ? "sa-key" : "user-token"}"
    ])
    error_message = "every secret id is <prefix>-<id>-sa-key|-user-token with the id of naming_vectors.json"
  }
  assert {
    condition = alltrue([for i, v in jsondecode(file("tests/naming_vectors.json")).vectors :
      i % 2 == 0 ? output.account_resource_ids[v.name].service_account == "ogb-${v.id}" : output.account_resource_ids[v.name].service_account == null
    ])
    error_message = "key accounts get the service account <prefix>-<id>; authorized_user accounts none"
  }
  assert {
    condition     = alltrue([for name, sa in google_service_account.store : can(regex("^[a-z][a-z0-9-]{4,28}[a-z0-9]$", sa.account_id))])
    error_message = "every derived service account id is a valid one (6-30 lowercase letters, digits, '-')"
  }
  assert {
    condition     = alltrue([for name, s in google_secret_manager_secret.credential : can(regex("^[A-Za-z0-9_-]{1,255}$", s.secret_id))])
    error_message = "every derived secret id is a valid Secret Manager id"
  }
  assert {
    condition     = length(distinct([for a in values(output.account_resource_ids) : a.secret])) == length(output.account_resource_ids)
    error_message = "names that normalise alike (My.Store, my_store, MY-STORE, my-store) still get distinct ids"
  }
  assert {
    condition = alltrue([for v in jsondecode(file("tests/naming_vectors.json")).vectors :
      keys(jsondecode(google_storage_bucket_object.account[v.name].content).Accounts) == [v.name] &&
      google_storage_bucket_object.account[v.name].name == "policy/accounts/${v.name}.json"
    ]) && length(google_storage_bucket_object.account) == length(jsondecode(file("tests/naming_vectors.json")).vectors)
    error_message = "the policy keeps every account name unchanged (it is the Orthanc DICOMweb server name), in its fragment and its object name"
  }
}

run "long_prefix_still_gives_valid_service_account_ids" {
  command = apply

  variables {
    resource_prefix = "abcdefgh"
    accounts = {
      "Orthanc.Site-A_2024.dicom-store.research.anonymised-images-0001" = { project = "hc-project", location = "eu", dataset = "d", dicom_store = "s1", mode = "key" }
      "abcdefghij-klmnopqrs"                                            = { project = "hc-project", location = "eu", dataset = "d", dicom_store = "s2" }
      "a"                                                               = { project = "hc-project", location = "eu", dataset = "d", dicom_store = "s3" }
    }
  }

  assert {
    condition = (
      google_service_account.store["Orthanc.Site-A_2024.dicom-store.research.anonymised-images-0001"].account_id == "abcdefgh-orthanc-sit-0472a1a3" &&
      google_service_account.store["abcdefghij-klmnopqrs"].account_id == "abcdefgh-abcdefghij-klmnopqrs" &&
      google_service_account.store["a"].account_id == "abcdefgh-a-ca978112"
    )
    error_message = "63-character, 20-character and 1-character names with an 8-character prefix"
  }
  assert {
    condition     = alltrue([for sa in values(google_service_account.store) : can(regex("^[a-z][a-z0-9-]{4,28}[a-z0-9]$", sa.account_id))])
    error_message = "service account ids stay within 6-30 characters"
  }
}

run "agents_reference_migrated_names" {
  command = apply

  variables {
    accounts = {
      "My.Store" = { project = "hc-project", location = "eu", dataset = "d", dicom_store = "s1", mode = "key" }
      "my-store" = { project = "hc-project", location = "eu", dataset = "d", dicom_store = "s2" }
    }
    agents = {
      "clinic-a" = { public_key = "ed25519:11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=", accounts = ["My.Store", "my-store"] }
    }
  }

  assert {
    condition     = jsondecode(google_storage_bucket_object.agent["clinic-a"].content).Agents["clinic-a"].Accounts == ["My.Store", "my-store"]
    error_message = "agents list the account names as written"
  }
  assert {
    condition = (
      google_service_account.store["My.Store"].account_id == "ogb-my-store-7329d7b8" &&
      google_service_account.store["my-store"].account_id == "ogb-my-store" &&
      google_secret_manager_secret.credential["My.Store"].secret_id == "ogb-my-store-7329d7b8-sa-key"
    )
    error_message = "a name that was already valid keeps its id; one that normalises to it gets a hashed id"
  }
}

run "rejects_agent_with_unknown_migrated_name" {
  command = plan

  variables {
    accounts = {
      "My.Store" = { project = "hc-project", location = "eu", dataset = "d", dicom_store = "s1", mode = "key" }
    }
    agents = {
      "clinic-a" = { public_key = "ed25519:11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=", accounts = ["my.store"] }
    }
  }
  expect_failures = [google_storage_bucket_object.base]
}

run "rejects_colliding_derived_ids" {
  command = plan

  variables {
    accounts = {
      "My.Store"          = { project = "hc-project", location = "eu", dataset = "d", dicom_store = "s1", mode = "key" }
      "my-store-7329d7b8" = { project = "hc-project", location = "eu", dataset = "d", dicom_store = "s2", mode = "key" }
    }
  }
  expect_failures = [google_storage_bucket_object.base]
}

run "rejects_name_starting_with_a_dot" {
  command = plan
  variables {
    accounts = {
      ".hidden" = { project = "hc-project", location = "eu", dataset = "d", dicom_store = "s" }
    }
  }
  expect_failures = [var.accounts]
}

run "rejects_name_with_a_slash" {
  command = plan
  variables {
    accounts = {
      "peers/evil" = { project = "hc-project", location = "eu", dataset = "d", dicom_store = "s" }
    }
  }
  expect_failures = [var.accounts]
}

run "rejects_64_character_name" {
  command = plan
  variables {
    accounts = {
      "Orthanc.Site-A_2024.dicom-store.research.anonymised-images-00001" = { project = "hc-project", location = "eu", dataset = "d", dicom_store = "s" }
    }
  }
  expect_failures = [var.accounts]
}
