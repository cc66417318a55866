// Package fakegcp holds local doubles of the Google Cloud services the broker talks to,
// faithful enough that Google's real Go clients use them unchanged:
//
//   - TokenServer: oauth2.googleapis.com/token (JWT-bearer grant checked against the
//     key's public half, refresh-token grant), plus /tokeninfo. It is the one authority
//     for tokens: the other fakes ask it who a bearer token belongs to.
//   - SecretManager: the Secret Manager gRPC service (plain gRPC, no auth).
//   - IAMCredentials: the REST generateAccessToken call used for keyless impersonation.
//   - Metadata: the GCE / Cloud Run metadata server, for GCE_METADATA_HOST.
//   - DICOMwebFront: the Healthcare API's DICOMweb endpoint, checking tokens per store
//     and reverse-proxying to an Orthanc that plays the DICOM store.
//   - Storage: Cloud Storage (github.com/fsouza/fake-gcs-server's fakestorage), for
//     policies read from gs://BUCKET/PREFIX/ (BROKER_STORAGE_ENDPOINT).
//
// StartCloud starts them all on loopback; Run is the logic of testbed/cmd/fakegcp (setup
// document, state file, admin API). Clocks are injectable (TokenServer.SetNow) so
// expiry is tested without sleeping. The fakes may log, but never token or key values.
//
// Client notes measured against these fakes: metadata.OnGCE is memoized per process,
// so set GCE_METADATA_HOST before anything calls it; the Secret Manager client retries
// UNAVAILABLE on AccessSecretVersion for up to 60 s and the IAM Credentials REST client
// retries HTTP 503/504, so give calls a context deadline when testing outages; x/oauth2's
// service-account token source leaves RetrieveError.ErrorCode empty (the body and
// Error() text carry "invalid_grant"), while the authorized-user source fills it.
package fakegcp
