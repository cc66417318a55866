// Package deploy holds what puts the broker on Google Cloud (the offline
// broker image check, Terraform checks, Cloud Run deploy) and the tests that
// keep cloudbuild.yaml runnable locally: every Cloud Build step must be a make
// target (or a script a make target runs) that builds paths that exist.
// Shipping the agent lives in packaging/.
package deploy
