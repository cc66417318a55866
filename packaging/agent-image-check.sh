#!/usr/bin/env bash
# agent-image-check.sh - build the agent's container image offline and check
# what ships, as image-check.sh does for the broker:
#
#  1. serve a throwaway registry on 127.0.0.1 (crane registry serve) and push
#     a base of the shape of gcr.io/distroless/static:nonroot into it:
#     packaging/mkbase.sh's base plus /home/nonroot (0700, 65532:65532), the
#     directory packaging/docker-compose.yml keeps the key in (a named volume
#     takes its owner and mode from the image's directory);
#  2. ko build --push=false --tarball=bin/image/agent.tar ./cmd/agent (the
#     "agent" build of .ko.yaml, version from packaging/version.sh);
#  3. check: user non-root, no shell anywhere, the entrypoint is a static
#     (CGO_ENABLED=0) Go binary, /home/nonroot belongs to the image user;
#  4. run that binary as the image user: `version` prints the version,
#     `keygen` writes the key into (a copy of) /home/nonroot, and `once`
#     with packaging/agent.json plus the environment docker-compose.yml sets
#     accepts the configuration (and fails only to reach a broker).
#
# Environment: TOOLS_BIN (crane, ko), IMAGE_TARBALL, AGENT_VERSION.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
tarball=${IMAGE_TARBALL:-$root/bin/image/agent.tar}
version=${AGENT_VERSION:-$("$root/packaging/version.sh")}
mkdir -p "$(dirname "$tarball")"
check_name=agent-image-check
# shellcheck source=packaging/imagelib.sh
. "$root/packaging/imagelib.sh"

# 1. Loopback registry and base.
start_registry
CRANE=$crane "$root/packaging/mkbase.sh" "$reg/base:nonroot" >/dev/null 2>"$tmp/mkbase.log" || fail "base image: $(cat "$tmp/mkbase.log")"
mkdir -p "$tmp/home/home/nonroot"
chmod 0755 "$tmp/home/home"
chmod 0700 "$tmp/home/home/nonroot"
tar --sort=name --mtime=@0 --numeric-owner --owner=0 --group=0 -C "$tmp/home" -cf "$tmp/home.tar" --no-recursion home
tar --sort=name --mtime=@0 --numeric-owner --owner=65532 --group=65532 -C "$tmp/home" -rf "$tmp/home.tar" --no-recursion home/nonroot
"$crane" append -b "$reg/base:nonroot" -f "$tmp/home.tar" -t "$reg/base:agent" >/dev/null 2>"$tmp/crane.log" || fail "base /home/nonroot layer: $(cat "$tmp/crane.log")"

# 2. Build (.ko.yaml's "agent" build: -trimpath, -s -w, -X main.version).
say "ko build ./cmd/agent (version $version)"
(cd "$root" && AGENT_VERSION=$version KO_DEFAULTBASEIMAGE=$reg/base:agent KO_DOCKER_REPO=$reg/orthanc-gcp-agent \
	"$ko" build --push=false --bare --sbom=none --platform=linux/amd64 --tarball="$tarball" ./cmd/agent >"$tmp/ko.out" 2>"$tmp/ko.log") ||
	fail "ko build: $(cat "$tmp/ko.log")"
say "image tarball $tarball ($(du -h "$tarball" | cut -f1))"

# 3. Inspect and check.
load_image "$tarball" "$reg/orthanc-gcp-agent:check"
check_shipped
[[ $entry == /ko-app/agent ]] || fail "entrypoint '$entry', want /ko-app/agent (docker-compose.yml's healthcheck runs it)"
home=$(tar -tv --numeric-owner -f "$tmp/fs.tar" 2>/dev/null | awk '$NF == "home/nonroot/" || $NF == "home/nonroot" {print $1, $2}')
[[ $home == "drwx------ $uid/$gid" ]] || fail "/home/nonroot is '$home', want 'drwx------ $uid/$gid'"
say "/home/nonroot $home"

# 4. Run the binary as the image user.
chmod 0755 "$tmp" "$tmp/rootfs"
run_as() { setpriv --reuid="$uid" --regid="$gid" --clear-groups env -i HOME=/home/nonroot "$@"; }
v=$(run_as "$bin" version) || fail "version failed"
[[ $v == "orthanc-gcp-agent $version "* ]] || fail "version printed '$v', want 'orthanc-gcp-agent $version ...'"
say "version: $v"
state=$tmp/state # stands in for the named volume on /home/nonroot
install -d -m 0700 -o "$uid" -g "$gid" "$state"
pub=$(run_as "$bin" keygen --out "$state/agent.key") || fail "keygen as $user failed"
[[ $pub == ed25519:* ]] || fail "keygen printed '$pub'"
say "keygen as $user: $pub"
sed -e 's|"Url": "",|"Url": "https://127.0.0.1:1",|' -e 's|"AgentId": "",|"AgentId": "image-check",|' \
	"$root/packaging/agent.json" >"$tmp/agent.json"
chmod 0644 "$tmp/agent.json"
if out=$(run_as AGENT_BROKER_KEY_FILE="$state/agent.key" AGENT_LOG_LEVEL=error timeout 60 "$bin" once --config "$tmp/agent.json" 2>&1); then
	fail "once succeeded without a broker"
fi
out=$(grep -v '^{' <<<"$out" || true)
[[ $out == "agent once:"* ]] || fail "once refused packaging/agent.json in the image: $out"
say "once with packaging/agent.json (+ AGENT_BROKER_KEY_FILE): configuration accepted, no broker: ${out:0:80}"
say "OK"
