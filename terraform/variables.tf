variable "project" {
  description = "ID of the Google Cloud project that hosts the broker: its Cloud Run service, secrets and service accounts. DICOM stores may live in other projects."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{4,28}[a-z0-9]$", var.project))
    error_message = "The project must be a project ID: 6-30 lowercase letters, digits or hyphens, starting with a letter."
  }
}

variable "region" {
  description = "Cloud Run region of the broker, e.g. europe-west2."
  type        = string

  validation {
    condition     = can(regex("^[a-z]+-[a-z]+[0-9]+$", var.region))
    error_message = "The region must look like europe-west2 or us-central1."
  }
}

variable "service_name" {
  description = "Name of the Cloud Run service; also the broker's runtime service account ID, the first part of the default policy bucket name and of the log-based metric names."
  type        = string
  default     = "orthanc-gcp-broker"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{4,28}[a-z0-9]$", var.service_name))
    error_message = "The service_name must be 6-30 lowercase letters, digits or hyphens, starting with a letter (it is also a service account ID)."
  }
}

variable "image" {
  description = "Container image of the first broker revision (an Artifact Registry image built by cloudbuild.yaml, ideally by digest). Later images are deployed by Cloud Build; Terraform ignores image changes so an apply never rolls a deploy back."
  type        = string

  validation {
    condition     = can(regex("^[a-z0-9.-]+(:[0-9]+)?/[^\\s]+$", var.image))
    error_message = "The image must be a full reference such as europe-west2-docker.pkg.dev/PROJECT/REPO/broker@sha256:...."
  }
}

variable "resource_prefix" {
  description = "Prefix of the per-store service accounts and credential secrets (<prefix>-<id>, where <id> is the account name when it is 3-20 lowercase letters, digits or hyphens starting with a letter, else derived from it: see output account_resource_ids)."
  type        = string
  default     = "ogb"

  validation {
    condition     = can(regex("^[a-z][a-z0-9]{1,7}$", var.resource_prefix))
    error_message = "The resource_prefix must be 2-8 lowercase letters or digits, starting with a letter."
  }
}

variable "accounts" {
  description = <<-EOT
    DICOM stores the broker hands out tokens for, keyed by account name (the
    name agents ask for and the Orthanc DICOMweb server name: 1-63 letters,
    digits, '_', '.' or '-', so an old GCP plugin account keeps its name;
    output account_resource_ids shows the Google resource ids derived from
    each name). Each has the
    store's project, location, dataset and dicom_store, and a mode:
      impersonate      keyless: the broker impersonates a per-store service
                       account (token_lifetime optional, e.g. "15m", max "1h"
                       unless the org policy allows longer).
      key              a per-store service account whose JSON key is loaded
                       into an (initially empty) Secret Manager secret.
      authorized_user  a user's refresh token loaded into an empty secret;
                       user_member (e.g. "user:alice@example.com") is then
                       granted the DICOMweb role on the store.
    The store's identity gets a custom role with only the DICOMweb
    permissions Orthanc uses: dicomWebRead and dicomWebWrite, plus
    dicomWebDelete when allow_delete = true (default false).
    scopes overrides the default https://www.googleapis.com/auth/cloud-healthcare.
  EOT
  type = map(object({
    project        = string
    location       = string
    dataset        = string
    dicom_store    = string
    mode           = optional(string, "impersonate")
    token_lifetime = optional(string)
    scopes         = optional(list(string))
    user_member    = optional(string)
    allow_delete   = optional(bool, false)
  }))

  validation {
    condition     = length(var.accounts) > 0
    error_message = "At least one account is needed."
  }
  validation {
    # The broker policy's rule for account names (the Orthanc DICOMweb server
    # name, e.g. an old GCP plugin account such as "My.Store"). Service
    # account and secret ids are derived from it: local.resource_ids. Its
    # home is wire.StoreNameRule (internal/wire), whose tests hold this copy
    # to it character for character.
    condition     = alltrue([for name in keys(var.accounts) : can(regex("^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$", name))])
    error_message = "Account names must be 1-63 letters, digits, '_', '.' or '-', starting with a letter or digit (the broker's rule for account names)."
  }
  validation {
    condition     = alltrue([for a in values(var.accounts) : contains(["impersonate", "key", "authorized_user"], a.mode)])
    error_message = "Each account's mode must be impersonate, key or authorized_user."
  }
  validation {
    condition = alltrue([for a in values(var.accounts) :
      can(regex("^[a-z][a-z0-9-]{4,28}[a-z0-9]$", a.project)) &&
      can(regex("^[a-z0-9-]+$", a.location)) &&
      can(regex("^[A-Za-z0-9_.-]{1,256}$", a.dataset)) &&
      can(regex("^[A-Za-z0-9_.-]{1,256}$", a.dicom_store))
    ])
    error_message = "Each account needs a project ID, a location, and dataset and dicom_store IDs (letters, digits, _ . -)."
  }
  validation {
    condition = alltrue([for a in values(var.accounts) :
      a.token_lifetime == null || (a.mode == "impersonate" && can(regex("^([0-9]+h)?([0-9]+m)?([0-9]+s)?$", a.token_lifetime)) && a.token_lifetime != "")
    ])
    error_message = "token_lifetime applies to impersonate accounts only and is a duration such as \"15m\" or \"1h\"."
  }
  validation {
    condition = alltrue([for a in values(var.accounts) :
      a.scopes == null || alltrue([for s in coalesce(a.scopes, []) : startswith(s, "https://www.googleapis.com/auth/")])
    ])
    error_message = "scopes must be Google OAuth scope URLs (https://www.googleapis.com/auth/...)."
  }
  validation {
    condition = alltrue([for a in values(var.accounts) :
      a.user_member == null || (a.mode == "authorized_user" && can(regex("^(user|group):[^@\\s]+@[^@\\s]+$", a.user_member)))
    ])
    error_message = "user_member applies to authorized_user accounts only and looks like user:alice@example.com."
  }
}

variable "agents" {
  description = <<-EOT
    Agents (Orthanc sites) keyed by agent id. Each has:
      public_key             the key line `agent keygen` printed
                             ("ed25519:<base64>", or "ecdsa-p256:<base64>"
                             for a TPM-made key), or instead
      public_keys            a list of 1 or 2 such lines, any of which
                             authenticates: the current key and the next
                             one while a site rolls its key over.
                             Set exactly one of the two.
      accounts               the account names the agent may use.
      allowed_source_ranges  optional CIDR prefixes (IPv4 or IPv6, written
                             canonically: 203.0.113.0/24, 203.0.113.7/32,
                             2001:db8:cafe::/48) the site's requests must
                             come from; absent = from anywhere. A key
                             copied off the site is then of no use
                             elsewhere. See trusted_proxy_hops.
      disabled               true to revoke the agent without deleting the
                             entry.
  EOT
  type = map(object({
    public_key            = optional(string)
    public_keys           = optional(list(string))
    accounts              = list(string)
    allowed_source_ranges = optional(list(string))
    disabled              = optional(bool, false)
  }))
  default = {}

  validation {
    # Narrower than the broker's rule for agent ids (no '@', 63 characters
    # at most): wire.TerraformAgentIDRule (internal/wire), whose tests hold
    # this copy to it; `agent enrol` and `agent migrate` check it too.
    condition     = alltrue([for id in keys(var.agents) : can(regex("^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$", id))])
    error_message = "Agent ids must be 1-63 letters, digits, '.', '_' or '-', starting with a letter or digit."
  }
  validation {
    condition     = alltrue([for a in values(var.agents) : (a.public_key == null) != (a.public_keys == null)])
    error_message = "Each agent needs exactly one of public_key (one key line) and public_keys (a list of 1 or 2)."
  }
  validation {
    condition = alltrue([for a in values(var.agents) :
      a.public_keys == null || (length(coalesce(a.public_keys, [])) >= 1 && length(coalesce(a.public_keys, [])) <= 2 && length(distinct(coalesce(a.public_keys, []))) == length(coalesce(a.public_keys, [])))
    ])
    error_message = "Each public_keys must list 1 or 2 different keys (the current key and the next one)."
  }
  validation {
    # The key lines of broker/policy (internal/agentkey), whose tests hold
    # this rule to them (TestTerraformKeyRuleMatches): an Ed25519 key is 32
    # raw bytes, a P-256 key the 65-byte uncompressed point (0x04 first),
    # each in standard base64 with padding. Weak keys are the broker's to
    # refuse.
    condition = alltrue(flatten([for a in values(var.agents) : [
      for k in concat(a.public_key == null ? [] : [a.public_key], coalesce(a.public_keys, [])) :
      can(regex("^(ed25519:[A-Za-z0-9+/]{42}[AEIMQUYcgkosw048]=|ecdsa-p256:B[A-P][A-Za-z0-9+/]{84}[AEIMQUYcgkosw048]=)$", k))
    ]]))
    error_message = "Each public_key (and each entry of public_keys) must be the line `agent keygen` prints: ed25519: followed by the base64 of a 32-byte key, or ecdsa-p256: followed by the base64 of a 65-byte uncompressed P-256 point."
  }
  validation {
    condition     = alltrue([for a in values(var.agents) : length(a.accounts) > 0 && length(distinct(a.accounts)) == length(a.accounts)])
    error_message = "Each agent needs a non-empty list of distinct account names."
  }
  validation {
    # The broker refuses an empty list (it would lock the agent out), a
    # prefix with host bits set (10.0.0.1/8) and a repeated one.
    # cidrsubnet(r, 0, 0) is r's canonical form, so comparing with it
    # refuses host bits, leading zeros and other spellings alike.
    condition = alltrue([for a in values(var.agents) :
      a.allowed_source_ranges == null || (
        length(coalesce(a.allowed_source_ranges, [])) > 0 &&
        length(distinct(coalesce(a.allowed_source_ranges, []))) == length(coalesce(a.allowed_source_ranges, [])) &&
        alltrue([for r in coalesce(a.allowed_source_ranges, []) : can(cidrsubnet(r, 0, 0)) && try(cidrsubnet(r, 0, 0) == lower(r), false)])
      )
    ])
    error_message = "Each allowed_source_ranges must be a non-empty list of distinct CIDR prefixes in canonical form, such as 203.0.113.0/24, 203.0.113.7/32 or 2001:db8:cafe::/48 (no host bits set: 10.0.0.0/8, not 10.0.0.1/8). Leave it out to allow any address."
  }
}

variable "trusted_proxy_hops" {
  description = <<-EOT
    BROKER_TRUSTED_PROXY_HOPS: how many proxies in front of the broker
    append to X-Forwarded-For, so which entry, counted from the right, is
    the client address agents' allowed_source_ranges are checked against
    and audit lines show. The default, 1, is a broker reached directly at
    its run.app URL: Google's front end appends the one address it saw.
    Behind an external Application Load Balancer (serverless NEG), which
    appends "<client-ip>,<load-balancer-ip>", set 2. A value too high lets
    a client choose its own address; too low refuses every bound agent
    (its log line shows the load balancer's address), so check the
    "client" of audit lines after a change. See docs/design.md.
  EOT
  type        = number
  default     = 1

  validation {
    condition     = var.trusted_proxy_hops >= 0 && floor(var.trusted_proxy_hops) == var.trusted_proxy_hops
    error_message = "The trusted_proxy_hops must be a whole number >= 0 (0: the TCP peer is the client, which on Cloud Run is Google's proxy)."
  }
}

variable "audience" {
  description = "The broker URL that agents use and sign into their JWT `aud` (https://host, no path). Default: Cloud Run's deterministic URL https://SERVICE-PROJECT_NUMBER.REGION.run.app, known before the service exists. Set it when agents reach the broker through a custom domain."
  type        = string
  default     = null

  validation {
    condition     = var.audience == null || can(regex("^https://[a-z0-9.-]+(:[0-9]+)?$", var.audience))
    error_message = "The audience must be an https:// URL with no path or trailing slash."
  }
}

variable "healthcare_base_url" {
  description = "Base URL of the Cloud Healthcare API, written into the policy as BaseUrl."
  type        = string
  default     = "https://healthcare.googleapis.com/v1/"

  validation {
    # The broker's rule (broker/policy checkBaseURL, tested against this
    # line): https to a lower-case host under googleapis.com, no user
    # information, query or fragment.
    condition     = can(regex("^https://([a-z0-9]([a-z0-9-]*[a-z0-9])?\\.)+googleapis\\.com(:[0-9]{1,5})?(/[^?#]*)?$", var.healthcare_base_url))
    error_message = "The healthcare_base_url must be https to a lower-case host under googleapis.com (such as https://healthcare.googleapis.com/v1/ or a regional or Private Service Connect endpoint), with no user, query or fragment."
  }
}

variable "refresh_period" {
  description = "BROKER_REFRESH: how often the broker re-reads the policy and secrets (Go duration). Policy changes, new keys and revocations take effect within this period."
  type        = string
  default     = "5m"

  validation {
    condition     = can(regex("^([0-9]+h)?([0-9]+m)?([0-9]+s)?$", var.refresh_period)) && var.refresh_period != ""
    error_message = "The refresh_period must be a duration such as \"5m\" or \"30s\"."
  }
}

variable "min_remaining" {
  description = "BROKER_MIN_REMAINING: the least lifetime a cached Google token must have left to be handed out (Go duration)."
  type        = string
  default     = "15m"

  validation {
    condition     = can(regex("^([0-9]+h)?([0-9]+m)?([0-9]+s)?$", var.min_remaining)) && var.min_remaining != ""
    error_message = "The min_remaining must be a duration such as \"15m\"."
  }
}

variable "min_instances" {
  description = "Minimum Cloud Run instances. 0 scales to zero (a cold start of about a second on the first request after idling); 1 keeps the token cache warm."
  type        = number
  default     = 0

  validation {
    condition     = var.min_instances >= 0 && floor(var.min_instances) == var.min_instances
    error_message = "The min_instances must be a whole number >= 0."
  }
}

variable "memory_mib" {
  description = "Memory limit of a broker instance in MiB. The module sets GOMEMLIMIT to 94% of it so the Go collector works harder before Cloud Run's limit is reached. 256 serves up to about 1,000 sites; give 10,000 sites 512 (docs/runbook.md, \"Sizing\")."
  type        = number
  default     = 256

  validation {
    condition     = var.memory_mib >= 128 && var.memory_mib <= 32768 && floor(var.memory_mib) == var.memory_mib
    error_message = "The memory_mib must be a whole number of MiB from 128 to 32768."
  }
}

variable "max_instances" {
  description = "Maximum Cloud Run instances. Each instance mints its own Google tokens, so a few instances are plenty."
  type        = number
  default     = 3

  validation {
    condition     = var.max_instances >= 1 && var.max_instances <= 100 && floor(var.max_instances) == var.max_instances
    error_message = "The max_instances must be a whole number from 1 to 100."
  }
}

variable "ingress" {
  description = "Cloud Run ingress. Agents on site networks usually need INGRESS_TRAFFIC_ALL; use INTERNAL_ONLY or INTERNAL_LOAD_BALANCER when sites reach Google privately."
  type        = string
  default     = "INGRESS_TRAFFIC_ALL"

  validation {
    condition     = contains(["INGRESS_TRAFFIC_ALL", "INGRESS_TRAFFIC_INTERNAL_ONLY", "INGRESS_TRAFFIC_INTERNAL_LOAD_BALANCER"], var.ingress)
    error_message = "The ingress must be INGRESS_TRAFFIC_ALL, INGRESS_TRAFFIC_INTERNAL_ONLY or INGRESS_TRAFFIC_INTERNAL_LOAD_BALANCER."
  }
}

variable "enable_apis" {
  description = "Enable the Google APIs the broker needs in var.project (Cloud Run, Secret Manager, IAM, IAM Credentials, Healthcare). They are left enabled on destroy."
  type        = bool
  default     = true
}

variable "deletion_protection" {
  description = "Protect the Cloud Run service and the secrets from terraform destroy; when false, destroy also deletes the policy bucket with every old version of its objects."
  type        = bool
  default     = true
}

variable "labels" {
  description = "Labels put on the Cloud Run service, the secrets and the policy bucket."
  type        = map(string)
  default     = {}
}

variable "policy_bucket" {
  description = "Name of the bucket the module creates for the policy fragments (BROKER_CONFIG gs://BUCKET/PREFIX/). Default: <service_name>-policy-<project number>. Bucket names are global: pick one no one else holds."
  type        = string
  default     = null

  validation {
    # Google's rule for names without dots: never "goog" first, never "google".
    condition     = var.policy_bucket == null || (can(regex("^[a-z0-9][a-z0-9_-]{1,61}[a-z0-9]$", var.policy_bucket)) && !startswith(coalesce(var.policy_bucket, "x"), "goog") && !strcontains(coalesce(var.policy_bucket, "x"), "google"))
    error_message = "The policy_bucket must be 3-63 lowercase letters, digits, '-' or '_', starting and ending with a letter or digit, not starting with \"goog\" nor containing \"google\"."
  }
}

variable "policy_bucket_location" {
  description = "Location of the policy bucket (a region such as EUROPE-WEST2, or a dual- or multi-region). Default: the broker's region."
  type        = string
  default     = null
}

variable "policy_prefix" {
  description = "The folder of the bucket the fragments live in: PREFIX/base.json, PREFIX/accounts/NAME.json, PREFIX/agents/ID.json. Every object under it whose name ends in .json is part of the policy, including ones an operator's pipeline uploads (docs/runbook.md)."
  type        = string
  default     = "policy"

  validation {
    condition     = can(regex("^[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*$", var.policy_prefix)) && !contains(split("/", var.policy_prefix), ".") && !contains(split("/", var.policy_prefix), "..")
    error_message = "The policy_prefix must be one or more '/'-separated names of letters, digits, '.', '_' or '-' (no leading or trailing '/', no '.' or '..' part), such as \"policy\" or \"prod/policy\"."
  }
}

variable "silent_site_minutes" {
  description = "An enrolled agent that got no token for this many minutes raises the \"site silent\" alert. Keep it above the agents' refresh interval (they ask again before a token's hour is up), so 90 by default. Cloud Monitoring caps an absence window at 23.5 hours (1410 minutes); see docs/runbook.md, \"Watching the fleet\", for what absence cannot see."
  type        = number
  default     = 90

  validation {
    condition     = var.silent_site_minutes >= 5 && var.silent_site_minutes <= 1410 && floor(var.silent_site_minutes) == var.silent_site_minutes
    error_message = "The silent_site_minutes must be a whole number of minutes from 5 to 1410 (23.5 hours, Cloud Monitoring's longest absence window)."
  }
}

variable "auth_failure_burst" {
  description = "The \"authentication failures\" alert opens when more than this many requests fail agent authentication within 5 minutes, all agents and reasons together."
  type        = number
  default     = 20

  validation {
    condition     = var.auth_failure_burst >= 0 && floor(var.auth_failure_burst) == var.auth_failure_burst
    error_message = "The auth_failure_burst must be a whole number >= 0."
  }
}

variable "notification_channels" {
  description = "Cloud Monitoring notification channels the alert policies notify, as ids (projects/PROJECT/notificationChannels/ID). Empty: the alerts open incidents in the console only."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for c in var.notification_channels : can(regex("^projects/[^/]+/notificationChannels/[^/]+$", c))])
    error_message = "Each notification channel must be an id such as projects/my-project/notificationChannels/1234567890."
  }
}
