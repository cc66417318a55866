# Orthanc GCP broker on Cloud Run.
#
# Identity layout (least privilege, nothing project-wide):
#   broker runtime SA  - reads the objects of the policy bucket (that bucket
#                        only) and the credential secrets of key/authorized_user
#                        accounts; may mint tokens for the keyless store SAs.
#                        It has no Healthcare role itself.
#   one SA per store   - a custom role with only the DICOMweb permissions Orthanc
#                        uses (read, write, and delete where allow_delete is
#                        set), bound on that DICOM store only. Not
#                        roles/healthcare.dicomEditor: it also allows bulk
#                        export and import of the whole store.
# No key material ever passes through Terraform: credential secrets are
# created empty and filled with the commands in output.key_loading_commands.
#
# The policy is a set of fragments (docs/design.md) in a bucket of its own,
# read by the broker from gs://BUCKET/PREFIX/: PREFIX/base.json (Audience,
# BaseUrl), PREFIX/accounts/NAME.json and PREFIX/agents/ID.json, one object
# per account and per agent, so a change rewrites one small object and the
# broker re-parses only that one. Fragments hold public keys and sm://
# references, never a credential. Monitoring (log-based metrics and alerts
# on the broker's log lines) is in monitoring.tf.

data "google_project" "this" {
  project_id = var.project
}

locals {
  apis = toset([
    "run.googleapis.com",
    "secretmanager.googleapis.com",
    "iam.googleapis.com",
    "iamcredentials.googleapis.com",
    "healthcare.googleapis.com",
    "storage.googleapis.com",
    "logging.googleapis.com",
    "monitoring.googleapis.com",
  ])

  # Cloud Run's deterministic URL is known before the service exists, so the
  # policy (which must exist before the first revision starts) can name it.
  audience = coalesce(var.audience, "https://${var.service_name}-${data.google_project.this.number}.${var.region}.run.app")

  # The id each account's Google resources are named with: service account
  # "<prefix>-<id>", secret "<prefix>-<id>-sa-key" or "-user-token". Account
  # names follow the broker's rule (up to 63 letters, digits, '_', '.', '-');
  # service account ids are 6-30 lowercase letters, digits and '-'. A name
  # this module always accepted (3-20 lowercase letters, digits or '-',
  # starting with a letter) is its own id, so existing deployments keep their
  # resources. Any other name becomes its first 11 characters, lowercased,
  # '_' and '.' as '-', trailing '-' dropped, then '-' and the first 8 hex
  # digits of the SHA-256 of the name as written: "My.Store" and "my_store"
  # differ from each other and from an account named "my-store". At most 20
  # characters, so any resource_prefix gives a valid service account id.
  # agent/migrate (ResourceID) derives the same ids; tests/naming_vectors.json
  # holds the cases both are tested against.
  resource_ids = {
    for name in keys(var.accounts) : name => (
      can(regex("^[a-z][a-z0-9-]{1,18}[a-z0-9]$", name)) ? name :
      "${replace(substr(replace(lower(name), "/[_.]/", "-"), 0, 11), "/-+$/", "")}-${substr(sha256(name), 0, 8)}"
    )
  }

  store_ids = {
    for name, a in var.accounts : name => "projects/${a.project}/locations/${a.location}/datasets/${a.dataset}/dicomStores/${a.dicom_store}"
  }
  # Accounts that get their own service account: keyless and key-based ones.
  # An authorized_user account acts as the user whose refresh token it holds.
  store_accounts  = { for name, a in var.accounts : name => a if a.mode != "authorized_user" }
  keyless         = { for name, a in var.accounts : name => a if a.mode == "impersonate" }
  secret_accounts = { for name, a in var.accounts : name => a if a.mode != "impersonate" }
  user_bindings   = { for name, a in var.accounts : name => a if a.mode == "authorized_user" && a.user_member != null }

  # One custom role per store project and delete flavour, holding only the
  # permissions behind STOW-RS/QIDO-RS/WADO-RS (and DELETE when allowed).
  dicomweb_roles = {
    for a in values(var.accounts) : "${a.project}/${a.allow_delete ? "delete" : "rw"}" => {
      project      = a.project
      allow_delete = a.allow_delete
    }...
  }
  dicomweb_role_key = { for name, a in var.accounts : name => "${a.project}/${a.allow_delete ? "delete" : "rw"}" }

  credential_refs = {
    for name, s in google_secret_manager_secret.credential : name => "sm://projects/${var.project}/secrets/${s.secret_id}/versions/latest"
  }

  # Bucket names are global: the project number makes the default unique.
  policy_bucket = coalesce(var.policy_bucket, "${var.service_name}-policy-${data.google_project.this.number}")
  policy_source = "gs://${google_storage_bucket.policy.name}/${var.policy_prefix}/"

  # The policy fragments (format in docs/design.md): public keys and
  # references only. The for-expressions drop null fields, so each account
  # carries exactly the fields of its mode.
  policy_base = {
    Audience = local.audience
    BaseUrl  = var.healthcare_base_url
  }
  policy_accounts = {
    for name, a in var.accounts : name => {
      for k, v in {
        Project                   = a.project
        Location                  = a.location
        Dataset                   = a.dataset
        DicomStore                = a.dicom_store
        ImpersonateServiceAccount = a.mode == "impersonate" ? google_service_account.store[name].email : null
        TokenLifetime             = a.token_lifetime
        ServiceAccountSecret      = a.mode == "key" ? local.credential_refs[name] : null
        AuthorizedUserSecret      = a.mode == "authorized_user" ? local.credential_refs[name] : null
        Scopes                    = a.scopes
      } : k => v if v != null
    }
  }
  policy_agents = {
    for id, ag in var.agents : id => {
      for k, v in {
        PublicKey           = ag.public_key
        PublicKeys          = ag.public_keys
        Accounts            = ag.accounts
        AllowedSourceRanges = ag.allowed_source_ranges
        Disabled            = ag.disabled ? true : null
      } : k => v if v != null
    }
  }
}

resource "google_project_service" "apis" {
  for_each = var.enable_apis ? local.apis : toset([])

  project            = var.project
  service            = each.value
  disable_on_destroy = false
}

resource "google_service_account" "broker" {
  project      = var.project
  account_id   = var.service_name
  display_name = "Orthanc GCP broker"
  description  = "Runtime identity of the ${var.service_name} Cloud Run service. Holds no Healthcare role."

  depends_on = [google_project_service.apis]
}

resource "google_service_account" "store" {
  for_each = local.store_accounts

  project      = var.project
  account_id   = "${var.resource_prefix}-${local.resource_ids[each.key]}"
  display_name = "DICOM store ${each.key}"
  description  = "Orthanc GCP broker account ${each.key} (${each.value.mode}): DICOMweb on ${local.store_ids[each.key]} only."

  depends_on = [google_project_service.apis]
}

resource "google_project_iam_custom_role" "dicomweb" {
  for_each = { for k, v in local.dicomweb_roles : k => v[0] }

  project     = each.value.project
  role_id     = "${var.resource_prefix}DicomWeb${each.value.allow_delete ? "ReadWriteDelete" : "ReadWrite"}"
  title       = "Orthanc GCP broker DICOMweb ${each.value.allow_delete ? "read/write/delete" : "read/write"}"
  description = "DICOMweb calls of an Orthanc behind the Orthanc GCP broker (STOW-RS, QIDO-RS, WADO-RS${each.value.allow_delete ? ", DELETE" : ""}); no export or import."
  permissions = concat(
    ["healthcare.dicomStores.dicomWebRead", "healthcare.dicomStores.dicomWebWrite"],
    each.value.allow_delete ? ["healthcare.dicomStores.dicomWebDelete"] : [],
  )

  depends_on = [google_project_service.apis]
}

resource "google_healthcare_dicom_store_iam_member" "store" {
  for_each = local.store_accounts

  dicom_store_id = local.store_ids[each.key]
  role           = google_project_iam_custom_role.dicomweb[local.dicomweb_role_key[each.key]].name
  member         = google_service_account.store[each.key].member
}

resource "google_healthcare_dicom_store_iam_member" "user" {
  for_each = local.user_bindings

  dicom_store_id = local.store_ids[each.key]
  role           = google_project_iam_custom_role.dicomweb[local.dicomweb_role_key[each.key]].name
  member         = each.value.user_member
}

# Keyless: the broker may mint tokens for this store's account and no other.
resource "google_service_account_iam_member" "token_creator" {
  for_each = local.keyless

  service_account_id = google_service_account.store[each.key].name
  role               = "roles/iam.serviceAccountTokenCreator"
  member             = google_service_account.broker.member
}

# Key-based and authorized_user accounts: an empty secret per account. The
# key or refresh token is added as a version outside Terraform, so it never
# enters the state file.
resource "google_secret_manager_secret" "credential" {
  for_each = local.secret_accounts

  project             = var.project
  secret_id           = "${var.resource_prefix}-${local.resource_ids[each.key]}-${each.value.mode == "key" ? "sa-key" : "user-token"}"
  labels              = merge(var.labels, { "orthanc-gcp-broker" = "credential" })
  deletion_protection = var.deletion_protection

  replication {
    auto {}
  }

  depends_on = [google_project_service.apis]
}

resource "google_secret_manager_secret_iam_member" "credential" {
  for_each = local.secret_accounts

  project   = var.project
  secret_id = google_secret_manager_secret.credential[each.key].secret_id
  role      = "roles/secretmanager.secretAccessor"
  member    = google_service_account.broker.member
}

# The policy bucket: uniform bucket-level access (IAM only, no ACLs), no
# public access whatever IAM says, and versioning, so every earlier version
# of a fragment can be copied back (docs/runbook.md, "Roll back a fragment").
resource "google_storage_bucket" "policy" {
  project                     = var.project
  name                        = local.policy_bucket
  location                    = coalesce(var.policy_bucket_location, upper(var.region))
  storage_class               = "STANDARD"
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  labels                      = merge(var.labels, { "orthanc-gcp-broker" = "policy" })
  # Old versions stay after the objects are gone: without this a destroy
  # of an unprotected deployment would stop at a non-empty bucket.
  force_destroy = !var.deletion_protection

  versioning {
    enabled = true
  }

  lifecycle {
    precondition {
      # The default name starts with service_name, which may not suit.
      condition     = !startswith(local.policy_bucket, "goog") && !strcontains(local.policy_bucket, "google")
      error_message = "Bucket names may not start with \"goog\" or contain \"google\": set policy_bucket."
    }
  }

  depends_on = [google_project_service.apis]
}

# The broker reads (lists and gets) objects of this bucket, nothing else:
# no write, no project-wide Storage role.
resource "google_storage_bucket_iam_member" "policy_reader" {
  bucket = google_storage_bucket.policy.name
  role   = "roles/storage.objectViewer"
  member = google_service_account.broker.member
}

resource "google_storage_bucket_object" "base" {
  bucket       = google_storage_bucket.policy.name
  name         = "${var.policy_prefix}/base.json"
  content_type = "application/json"
  content      = jsonencode(local.policy_base)

  lifecycle {
    precondition {
      condition     = alltrue(flatten([for ag in values(var.agents) : [for acc in ag.accounts : contains(keys(var.accounts), acc)]]))
      error_message = "Every account an agent lists must be a key of var.accounts."
    }
    precondition {
      # Only an account named like another's derived id (e.g. "my-store-7329d7b8"
      # next to "My.Store") could collide; Google would refuse the second resource.
      condition     = length(distinct(values(local.resource_ids))) == length(local.resource_ids)
      error_message = "Two account names derive the same resource id (see output account_resource_ids); rename one."
    }
  }
}

resource "google_storage_bucket_object" "account" {
  for_each = local.policy_accounts

  bucket       = google_storage_bucket.policy.name
  name         = "${var.policy_prefix}/accounts/${each.key}.json"
  content_type = "application/json"
  content      = jsonencode({ Accounts = { (each.key) = each.value } })
}

resource "google_storage_bucket_object" "agent" {
  for_each = local.policy_agents

  bucket       = google_storage_bucket.policy.name
  name         = "${var.policy_prefix}/agents/${each.key}.json"
  content_type = "application/json"
  content      = jsonencode({ Agents = { (each.key) = each.value } })

  # An account is written before the agents that use it and removed after
  # them, so a broker re-reading mid-apply never sees an agent naming an
  # account that is not there (it would keep the last good policy anyway).
  depends_on = [google_storage_bucket_object.account]
}

# Deployments made before the policy moved to the bucket kept it in the
# secret "<service_name>-policy". Terraform forgets that secret instead of
# destroying it (its deletion protection would stop the apply); delete it
# by hand once the broker runs from the bucket (docs/runbook.md). The
# broker's access to it is removed by the apply.
removed {
  from = google_secret_manager_secret_version.policy
  lifecycle {
    destroy = false
  }
}

removed {
  from = google_secret_manager_secret.policy
  lifecycle {
    destroy = false
  }
}

resource "google_cloud_run_v2_service" "broker" {
  project             = var.project
  name                = var.service_name
  location            = var.region
  description         = "Orthanc GCP broker: hands short-lived DICOMweb tokens to enrolled agents."
  ingress             = var.ingress
  labels              = var.labels
  deletion_protection = var.deletion_protection

  # The broker authenticates every agent itself (Ed25519-signed JWT, see
  # docs/design.md). Agents have no Google identity - that is the point - so they
  # cannot pass Cloud Run's IAM invoker check. Disabling the invoker check is
  # the equivalent of granting roles/run.invoker to allUsers, but also works
  # where the org policy forbids allUsers bindings. Cloud Run serves HTTPS only.
  invoker_iam_disabled = true

  template {
    service_account                  = google_service_account.broker.email
    max_instance_request_concurrency = 80
    timeout                          = "30s"

    scaling {
      min_instance_count = var.min_instances
      max_instance_count = var.max_instances
    }

    containers {
      image = var.image

      ports {
        container_port = 8080
      }

      env {
        name  = "BROKER_CONFIG"
        value = local.policy_source
      }
      env {
        name  = "BROKER_REFRESH"
        value = var.refresh_period
      }
      env {
        name  = "BROKER_MIN_REMAINING"
        value = var.min_remaining
      }
      # Where a request comes from: the Nth X-Forwarded-For entry from the
      # right (docs/design.md, "Bound networks").
      env {
        name  = "BROKER_TRUSTED_PROXY_HOPS"
        value = tostring(var.trusted_proxy_hops)
      }
      # The Go runtime's soft memory limit, under the container's: at 10,000
      # sites the heap otherwise grows past 256 MiB between collections
      # (BENCHMARKS.md, "Fleet").
      env {
        name  = "GOMEMLIMIT"
        value = "${floor(var.memory_mib * 0.94)}MiB"
      }

      resources {
        limits = {
          cpu    = "1"
          memory = "${var.memory_mib}Mi"
        }
        cpu_idle = true
      }

      # /healthz answers 200 once the policy has loaded: every fragment
      # under the prefix read, merged and valid.
      startup_probe {
        http_get {
          path = "/healthz"
        }
        period_seconds    = 2
        failure_threshold = 15
      }
      liveness_probe {
        http_get {
          path = "/healthz"
        }
        period_seconds = 30
      }
    }
  }

  lifecycle {
    # Cloud Build deploys new images (cloudbuild.yaml); don't roll them back.
    ignore_changes = [
      template[0].containers[0].image,
      client,
      client_version,
    ]
  }

  depends_on = [
    google_storage_bucket_object.base,
    google_storage_bucket_object.account,
    google_storage_bucket_object.agent,
    google_storage_bucket_iam_member.policy_reader,
    google_secret_manager_secret_iam_member.credential,
    google_service_account_iam_member.token_creator,
  ]
}
