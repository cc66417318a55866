#!/usr/bin/env bash
# fetch-cdktf.sh DEST.tgz - fetch the pinned CDKTF google provider package
# (npm pack; the npm registry is reachable from CI) and check its digest.
# Its generated sources carry the google provider 6.50.0 schema, from which
# tools/tfschema derives the schema for offline `terraform validate`.
set -euo pipefail
dest=${1:?usage: fetch-cdktf.sh DEST.tgz}
pkg=@cdktf/provider-google@16.12.1
sha256=c13e11596542ffb7412d5f4caa9376525fbef88d18cdedac03c9b3c392a1fc80

command -v npm >/dev/null || { echo "fetch-cdktf: npm not found (apt-get install -y npm)" >&2; exit 1; }
mkdir -p "$(dirname "$dest")"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && npm pack --silent "$pkg" >/dev/null)
got=$(sha256sum "$tmp"/*.tgz | cut -d' ' -f1)
[[ $got == "$sha256" ]] || { echo "fetch-cdktf: $pkg has sha256 $got, want $sha256" >&2; exit 1; }
mv "$tmp"/*.tgz "$dest"
echo "fetch-cdktf: $pkg -> $dest"
