# Log-based metrics and alert policies. Which log fields the filters and
# label extractors name is checked against the broker's real lines by
# deploy/monitoring_test.go; here, how the resources are wired.

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
    "clinic-store" = { project = "hc-project", location = "europe-west2", dataset = "d", dicom_store = "s" }
  }
  agents = {
    "clinic-a" = { public_key = "ed25519:11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=", accounts = ["clinic-store"] }
  }
}

run "log_based_metrics" {
  command = apply

  assert {
    condition = (
      google_logging_metric.tokens_issued.name == "orthanc-gcp-broker/tokens_issued" &&
      google_logging_metric.auth_failures.name == "orthanc-gcp-broker/auth_failures" &&
      google_logging_metric.mint_failures.name == "orthanc-gcp-broker/mint_failures"
    )
    error_message = "metric names are <service_name>/..., so two brokers in one project keep apart"
  }
  assert {
    condition = alltrue([for m in [google_logging_metric.tokens_issued, google_logging_metric.auth_failures, google_logging_metric.mint_failures] :
      startswith(m.filter, "resource.type=\"cloud_run_revision\" AND resource.labels.service_name=\"orthanc-gcp-broker\" AND ") &&
      m.project == "my-broker-project" && m.metric_descriptor[0].metric_kind == "DELTA" && m.metric_descriptor[0].value_type == "INT64"
    ])
    error_message = "each metric counts lines of this service only, as a DELTA INT64 counter"
  }
  assert {
    condition = (
      google_logging_metric.tokens_issued.label_extractors == tomap({ agent = "EXTRACT(jsonPayload.agent)" }) &&
      google_logging_metric.auth_failures.label_extractors == tomap({ reason = "EXTRACT(jsonPayload.reason)" }) &&
      google_logging_metric.mint_failures.label_extractors == tomap({ account = "EXTRACT(jsonPayload.account)", code = "EXTRACT(jsonPayload.code)" })
    )
    error_message = "tokens by agent, authentication failures by reason, mint failures by account and code"
  }
  assert {
    # Every extracted label is declared in the descriptor, and no other.
    condition = alltrue([for m in [google_logging_metric.tokens_issued, google_logging_metric.auth_failures, google_logging_metric.mint_failures] :
      toset([for l in m.metric_descriptor[0].labels : l.key]) == toset(keys(m.label_extractors))
    ])
    error_message = "metric_descriptor labels and label_extractors name the same labels"
  }
  assert {
    condition     = !strcontains(google_logging_metric.auth_failures.filter, "claimed_agent") && !contains(keys(google_logging_metric.auth_failures.label_extractors), "claimed_agent")
    error_message = "the claimed agent id (anyone's choice) never becomes a label"
  }
}

run "site_silent_alert" {
  command = apply

  assert {
    condition     = google_monitoring_alert_policy.site_silent.conditions[0].condition_absent[0].duration == "5400s"
    error_message = "silent_site_minutes defaults to 90 minutes"
  }
  assert {
    condition     = google_monitoring_alert_policy.site_silent.conditions[0].condition_absent[0].filter == "metric.type=\"logging.googleapis.com/user/orthanc-gcp-broker/tokens_issued\" AND resource.type=\"cloud_run_revision\""
    error_message = "absence of the tokens_issued metric"
  }
  assert {
    condition = (
      google_monitoring_alert_policy.site_silent.conditions[0].condition_absent[0].aggregations[0].group_by_fields == tolist(["metric.label.agent"]) &&
      google_monitoring_alert_policy.site_silent.conditions[0].condition_absent[0].aggregations[0].cross_series_reducer == "REDUCE_SUM" &&
      google_monitoring_alert_policy.site_silent.conditions[0].condition_absent[0].aggregations[0].per_series_aligner == "ALIGN_DELTA"
    )
    error_message = "one series per agent, summed over revisions and instances (a new revision must not make every site silent)"
  }
  assert {
    condition     = google_monitoring_alert_policy.site_silent.notification_channels == null || length(coalesce(google_monitoring_alert_policy.site_silent.notification_channels, [])) == 0
    error_message = "no notification channel by default"
  }
}

run "alerts_notify_the_given_channels" {
  command = apply

  variables {
    silent_site_minutes   = 180
    auth_failure_burst    = 5
    notification_channels = ["projects/my-broker-project/notificationChannels/111", "projects/my-broker-project/notificationChannels/222"]
  }

  assert {
    condition = alltrue([for p in [google_monitoring_alert_policy.site_silent, google_monitoring_alert_policy.mint_failures, google_monitoring_alert_policy.auth_failures] :
      p.notification_channels == tolist(["projects/my-broker-project/notificationChannels/111", "projects/my-broker-project/notificationChannels/222"]) &&
      p.project == "my-broker-project" && p.combiner == "OR" && p.user_labels == tomap({ "orthanc-gcp-broker" = "orthanc-gcp-broker" })
    ])
    error_message = "every alert policy notifies notification_channels"
  }
  assert {
    condition     = google_monitoring_alert_policy.site_silent.conditions[0].condition_absent[0].duration == "10800s"
    error_message = "silent_site_minutes = 180 is a 3-hour absence window"
  }
  assert {
    condition = (
      google_monitoring_alert_policy.auth_failures.conditions[0].condition_threshold[0].threshold_value == 5 &&
      google_monitoring_alert_policy.auth_failures.conditions[0].condition_threshold[0].comparison == "COMPARISON_GT" &&
      google_monitoring_alert_policy.auth_failures.conditions[0].condition_threshold[0].aggregations[0].alignment_period == "300s" &&
      google_monitoring_alert_policy.auth_failures.conditions[0].condition_threshold[0].filter == "metric.type=\"logging.googleapis.com/user/orthanc-gcp-broker/auth_failures\" AND resource.type=\"cloud_run_revision\""
    )
    error_message = "more than auth_failure_burst failures in 5 minutes, all reasons together"
  }
  assert {
    condition = (
      google_monitoring_alert_policy.mint_failures.conditions[0].condition_threshold[0].threshold_value == 0 &&
      google_monitoring_alert_policy.mint_failures.conditions[0].condition_threshold[0].comparison == "COMPARISON_GT" &&
      google_monitoring_alert_policy.mint_failures.conditions[0].condition_threshold[0].aggregations[0].group_by_fields == tolist(["metric.label.account", "metric.label.code"]) &&
      google_monitoring_alert_policy.mint_failures.conditions[0].condition_threshold[0].filter == "metric.type=\"logging.googleapis.com/user/orthanc-gcp-broker/mint_failures\" AND resource.type=\"cloud_run_revision\""
    )
    error_message = "any mint failure opens an incident per account"
  }
}

run "rejects_silent_window_over_23_5_hours" {
  command = plan
  variables {
    silent_site_minutes = 1411
  }
  expect_failures = [var.silent_site_minutes]
}

run "rejects_silent_window_under_5_minutes" {
  command = plan
  variables {
    silent_site_minutes = 4
  }
  expect_failures = [var.silent_site_minutes]
}

run "rejects_a_channel_that_is_not_an_id" {
  command = plan
  variables {
    notification_channels = ["ops@example.com"]
  }
  expect_failures = [var.notification_channels]
}

run "rejects_a_negative_burst" {
  command = plan
  variables {
    auth_failure_burst = -1
  }
  expect_failures = [var.auth_failure_burst]
}
