// Package deploy holds what puts the broker on Google Cloud (the offline
// broker image check, Terraform checks, Cloud Run deploy) and the tests that
// keep cloudbuild.yaml runnable locally: every Cloud Build step must be a make
// target (or a script a make target runs) that builds paths that exist;
// and every field terraform/'s log-based metrics and alerts name must be one
// a real broker writes (monitoring_test.go runs the broker binary against the
// Google fakes and evaluates the filters on its log lines).
// Shipping the agent lives in packaging/.
package deploy
