#!/usr/bin/env bash
# image-check.sh - build the broker image offline and check what ships.
#
#  1. serve a throwaway registry on 127.0.0.1 (crane registry serve) and push
#     the minimal base image into it (packaging/mkbase.sh);
#  2. ko build --push=false --tarball=bin/image/broker.tar (no Docker daemon);
#  3. load the tarball into the registry, read its config and filesystem;
#  4. check: user is non-root, no shell anywhere in the filesystem, the
#     entrypoint binary is a static (CGO_ENABLED=0) Go binary;
#  5. run that binary as uid 65532 with a throwaway file policy and expect
#     GET /healthz -> 200.
#
# Environment: BROKER_PKG (default ./cmd/broker), BROKER_MODULE_DIR (the Go
# module to build from, default the repository root), IMAGE_TARBALL.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
pkg=${BROKER_PKG:-./cmd/broker}
moddir=${BROKER_MODULE_DIR:-$root}
tarball=${IMAGE_TARBALL:-$root/bin/image/broker.tar}
mkdir -p "$(dirname "$tarball")"
check_name=image-check
# shellcheck source=packaging/imagelib.sh
. "$root/packaging/imagelib.sh"

# 1. Loopback registry on a port the kernel picks.
start_registry
CRANE=$crane "$root/packaging/mkbase.sh" "$reg/base:nonroot" 2>"$tmp/mkbase.log" || fail "base image: $(cat "$tmp/mkbase.log")"

# 2. Build. .ko.yaml (repository root) pins flags; the base comes from the
# loopback registry instead of gcr.io/distroless/static:nonroot.
say "ko build $pkg"
# (.ko.yaml only applies to this repository; another module gets ko's defaults.)
kocfg=$root
[[ $(cd "$moddir" && pwd) == "$root" ]] || { kocfg=$tmp; : >"$tmp/.ko.yaml"; }
(cd "$moddir" && KO_CONFIG_PATH=$kocfg KO_DEFAULTBASEIMAGE=$reg/base:nonroot KO_DOCKER_REPO=$reg/broker \
	"$ko" build --push=false --bare --sbom=none --platform=linux/amd64 --tarball="$tarball" "$pkg" >"$tmp/ko.out" 2>"$tmp/ko.log") ||
	fail "ko build: $(cat "$tmp/ko.log")"
say "image tarball $tarball ($(du -h "$tarball" | cut -f1))"

# 3. Inspect, 4. check.
load_image "$tarball" "$reg/broker:check"
check_shipped

# 5. Run it as the image user with a throwaway keyless policy.
pub=$(openssl genpkey -algorithm ed25519 2>/dev/null | openssl pkey -pubout -outform DER | tail -c 32 | base64)
cat >"$tmp/policy.json" <<JSON
{
  "Audience": "https://broker.invalid",
  "BaseUrl": "https://healthcare.googleapis.com/v1/",
  "Accounts": {
    "check-store": {
      "Project": "image-check", "Location": "europe-west2", "Dataset": "d", "DicomStore": "s",
      "ImpersonateServiceAccount": "store@image-check.iam.gserviceaccount.com"
    }
  },
  "Agents": { "check-agent": { "PublicKey": "ed25519:$pub", "Accounts": ["check-store"] } }
}
JSON
chmod 0755 "$tmp" "$tmp/rootfs" && chmod 0644 "$tmp/policy.json"
hport=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
setpriv --reuid="$uid" --regid="$gid" --clear-groups \
	env -i PORT="$hport" BROKER_LISTEN_HOST=127.0.0.1 BROKER_CONFIG="$tmp/policy.json" SSL_CERT_FILE="$tmp/rootfs/etc/ssl/certs/ca-certificates.crt" \
	"$bin" >"$tmp/broker.log" 2>&1 &
pids+=($!)
code=000
for _ in $(seq 100); do
	code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$hport/healthz" || true)
	[[ $code == 200 ]] && break
	kill -0 "${pids[-1]}" 2>/dev/null || break
	sleep 0.1
done
[[ $code == 200 ]] || fail "GET /healthz answered $code; broker log:
$(cat "$tmp/broker.log")"
say "GET /healthz -> 200 (as uid $uid)"
say "OK"
