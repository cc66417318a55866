project = "my-broker-project"
region  = "europe-west2"
image   = "europe-west2-docker.pkg.dev/my-broker-project/orthanc/broker@sha256:0000000000000000000000000000000000000000000000000000000000000000"

accounts = {
  # Keyless: the broker impersonates a per-store service account.
  "clinic-store" = {
    project        = "my-healthcare-project"
    location       = "europe-west2"
    dataset        = "clinics"
    dicom_store    = "clinic-a"
    mode           = "impersonate"
    token_lifetime = "30m"
    # Orthanc may also DELETE studies in this store (adds dicomWebDelete).
    allow_delete = true
  }
  # Key-based: load the key with `terraform output key_loading_commands`.
  "research-store" = {
    project     = "my-healthcare-project"
    location    = "europe-west2"
    dataset     = "research"
    dicom_store = "anonymised"
    mode        = "key"
  }
}

agents = {
  # Paste the line `agent keygen --out /var/lib/orthanc-gcp-agent/agent.key` printed on each site.
  "clinic-a" = {
    public_key = "ed25519:11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo="
    accounts   = ["clinic-store"]
    # Only from the site's own addresses (its internet egress, as Google sees it):
    # allowed_source_ranges = ["203.0.113.0/24", "2001:db8:cafe::/48"]
    # While rolling its key over, list the current and the next key instead of public_key:
    # public_keys = ["ed25519:<current>", "ed25519:<next>"]
  }
  "research-gw" = {
    public_key = "ed25519:PUAXw+hDiVqStwqnTRt+vJyYLM8uxJaMwM1V8Sr0Zgw="
    accounts   = ["clinic-store", "research-store"]
  }
}

# Where the fleet alerts (site silent, mint failures, authentication bursts) go.
# notification_channels = ["projects/my-broker-project/notificationChannels/1234567890"]
