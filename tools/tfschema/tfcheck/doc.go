// Package tfcheck holds the end-to-end tests of the offline Terraform check:
// the schema derived from the CDKTF package, served by the schema-only
// provider from a filesystem mirror, must let `terraform validate` accept
// terraform/ as written and reject it when broken the ways people break it.
//
// The tests need the package (TFSCHEMA_PACKAGE, fetched by `make
// tfschema-test`) and a terraform binary on PATH; without them they fail.
package tfcheck
