# The fleet seen from the broker's log lines. Broker instances share no
# state, so counts come from Cloud Logging: Cloud Run stores each JSON line
# the broker writes on standard output as one entry, its "severity" as the
# entry's severity and every other field, "message" included, under
# jsonPayload. The lines and fields used here are the broker's contract
# (docs/design.md, "Log-based metrics and alerts"); deploy/monitoring_test.go
# checks every filter and label extractor against lines a real broker wrote.

locals {
  broker_logs   = "resource.type=\"cloud_run_revision\" AND resource.labels.service_name=\"${var.service_name}\""
  user_metric   = "logging.googleapis.com/user/"
  alert_labels  = { "orthanc-gcp-broker" = var.service_name }
  silent_window = "${var.silent_site_minutes * 60}s"
}

# One "token issued" audit line per token handed out (cached or freshly
# minted), labelled with the agent. Only the agent: one time series per
# site, whatever its number of stores.
resource "google_logging_metric" "tokens_issued" {
  project     = var.project
  name        = "${var.service_name}/tokens_issued"
  description = "Tokens the broker handed out (its audit lines), by agent."
  filter      = "${local.broker_logs} AND jsonPayload.event=\"token_issued\""

  label_extractors = {
    agent = "EXTRACT(jsonPayload.agent)"
  }

  metric_descriptor {
    metric_kind  = "DELTA"
    value_type   = "INT64"
    unit         = "1"
    display_name = "Broker tokens issued"

    labels {
      key         = "agent"
      value_type  = "STRING"
      description = "Agent (site) id the token went to."
    }
  }
}

# Requests refused at agent authentication, by reason (bad_signature,
# unknown_agent, replayed, source_not_allowed, ...). The claimed agent id is
# not a label: anyone can send any id, so it would let strangers create time
# series; it stays in the log line.
resource "google_logging_metric" "auth_failures" {
  project     = var.project
  name        = "${var.service_name}/auth_failures"
  description = "Requests the broker refused at agent authentication, by reason."
  filter      = "${local.broker_logs} AND severity=WARNING AND jsonPayload.event=\"auth_failed\""

  label_extractors = {
    reason = "EXTRACT(jsonPayload.reason)"
  }

  metric_descriptor {
    metric_kind  = "DELTA"
    value_type   = "INT64"
    unit         = "1"
    display_name = "Broker authentication failures"

    labels {
      key         = "reason"
      value_type  = "STRING"
      description = "Why the assertion was refused (broker/agentauth reasons)."
    }
  }
}

# Failed upstream mints (no token for that store in the answer), by account
# and the error word the agent got (upstream_error, forbidden, ...).
resource "google_logging_metric" "mint_failures" {
  project     = var.project
  name        = "${var.service_name}/mint_failures"
  description = "Google tokens the broker could not obtain, by account and error code."
  filter      = "${local.broker_logs} AND severity=ERROR AND jsonPayload.event=\"mint_failed\""

  label_extractors = {
    account = "EXTRACT(jsonPayload.account)"
    code    = "EXTRACT(jsonPayload.code)"
  }

  metric_descriptor {
    metric_kind  = "DELTA"
    value_type   = "INT64"
    unit         = "1"
    display_name = "Broker mint failures"

    labels {
      key         = "account"
      value_type  = "STRING"
      description = "Account (store) name of the policy."
    }
    labels {
      key         = "code"
      value_type  = "STRING"
      description = "Error word the agent was answered (internal/wire)."
    }
  }
}

# A site silent longer than silent_site_minutes: one time series per agent
# (summed over revisions and instances, so a new revision does not make
# every site look silent), absent for the whole window. Absence cannot see
# an agent that never got a token, nor one silent for longer than 23.5
# hours: docs/runbook.md, "Watching the fleet", covers both.
resource "google_monitoring_alert_policy" "site_silent" {
  project               = var.project
  display_name          = "${var.service_name}: site silent for ${var.silent_site_minutes} minutes"
  combiner              = "OR"
  severity              = "WARNING"
  notification_channels = var.notification_channels
  user_labels           = local.alert_labels

  conditions {
    display_name = "No token issued to an agent for ${var.silent_site_minutes} minutes"

    condition_absent {
      filter   = "metric.type=\"${local.user_metric}${google_logging_metric.tokens_issued.name}\" AND resource.type=\"cloud_run_revision\""
      duration = local.silent_window

      aggregations {
        alignment_period     = "300s"
        per_series_aligner   = "ALIGN_DELTA"
        cross_series_reducer = "REDUCE_SUM"
        group_by_fields      = ["metric.label.agent"]
      }

      trigger {
        count = 1
      }
    }
  }

  documentation {
    mime_type = "text/markdown"
    subject   = "Site $${metric.label.agent} silent for ${var.silent_site_minutes} minutes"
    content   = "Agent `$${metric.label.agent}` has got no token from ${var.service_name} for ${var.silent_site_minutes} minutes: its Orthanc keeps working until the token it holds expires. Check the site's agent (`orthanc-gcp-agent status`, its /healthz) and its network; a site that was revoked or decommissioned also ends here once. See docs/runbook.md, \"Watching the fleet\"."
  }
}

resource "google_monitoring_alert_policy" "mint_failures" {
  project               = var.project
  display_name          = "${var.service_name}: Google token mint failures"
  combiner              = "OR"
  severity              = "ERROR"
  notification_channels = var.notification_channels
  user_labels           = local.alert_labels

  conditions {
    display_name = "Mint failures for an account in 5 minutes"

    condition_threshold {
      filter          = "metric.type=\"${local.user_metric}${google_logging_metric.mint_failures.name}\" AND resource.type=\"cloud_run_revision\""
      comparison      = "COMPARISON_GT"
      threshold_value = 0
      duration        = "0s"

      aggregations {
        alignment_period     = "300s"
        per_series_aligner   = "ALIGN_DELTA"
        cross_series_reducer = "REDUCE_SUM"
        group_by_fields      = ["metric.label.account", "metric.label.code"]
      }

      trigger {
        count = 1
      }
    }
  }

  documentation {
    mime_type = "text/markdown"
    subject   = "Broker cannot mint for account $${metric.label.account} ($${metric.label.code})"
    content   = "${var.service_name} could not obtain a Google token for account `$${metric.label.account}`; agents get `$${metric.label.code}` for that store (or a cached token while one is valid). The broker's ERROR line \"token mint failed\" has the detail. See docs/runbook.md, \"Troubleshooting\"."
  }
}

resource "google_monitoring_alert_policy" "auth_failures" {
  project               = var.project
  display_name          = "${var.service_name}: burst of authentication failures"
  combiner              = "OR"
  severity              = "WARNING"
  notification_channels = var.notification_channels
  user_labels           = local.alert_labels

  conditions {
    display_name = "More than ${var.auth_failure_burst} authentication failures in 5 minutes"

    condition_threshold {
      filter          = "metric.type=\"${local.user_metric}${google_logging_metric.auth_failures.name}\" AND resource.type=\"cloud_run_revision\""
      comparison      = "COMPARISON_GT"
      threshold_value = var.auth_failure_burst
      duration        = "0s"

      aggregations {
        alignment_period     = "300s"
        per_series_aligner   = "ALIGN_DELTA"
        cross_series_reducer = "REDUCE_SUM"
      }

      trigger {
        count = 1
      }
    }
  }

  documentation {
    mime_type = "text/markdown"
    subject   = "Burst of agent authentication failures at ${var.service_name}"
    content   = "More than ${var.auth_failure_burst} requests failed agent authentication within 5 minutes. The broker's WARNING lines \"agent authentication failed\" carry the reason, the claimed agent and the client address: a site with a wrong clock (expired, not_yet_valid), a rolled key not yet enrolled (bad_signature), a wrong BROKER_TRUSTED_PROXY_HOPS (source_not_allowed), or someone probing. See docs/runbook.md, \"Watching the fleet\"."
  }
}
