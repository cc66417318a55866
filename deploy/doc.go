// Package deploy holds the deployment scripts (image base recipe, offline
// image check, Terraform checks, Cloud Run deploy) and the tests that keep
// cloudbuild.yaml runnable locally: every Cloud Build step must be a make
// target (or a script a make target runs) that builds paths that exist.
package deploy
