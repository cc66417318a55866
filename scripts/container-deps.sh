#!/usr/bin/env bash
# container-deps.sh: installs what make compose-test needs and prints the
# path of the Docker Compose binary. Everything is cached on this machine:
#   - podman and runc, Debian packages (apt-get; podman's default crun fails
#     in this kind of sandbox, packaging/compose-test/containers.conf picks
#     runc), and jq, curl and pgrep, which the test runs;
#   - Docker Compose, the version tools/compose/go.mod pins (go.sum pins its
#     dependencies), built with the Go toolchain from the module proxy
#     (cold: 4m45s of CPU) into CACHE/tools/docker-compose-vX.Y.Z; the
#     test installs it as the docker-compose CLI plugin of its DOCKER_CONFIG;
#   - the Debian trixie root with orthanc and orthanc-dicomweb
#     (scripts/orthanc-root.sh, shared with the e2e tests), the Orthanc
#     stand-in's base.
# Idempotent, and safe to run twice at once (a lock): CI can start it in the
# background early (.ci/run) and make compose-test calls it again, which
# then waits for the first and finds everything done. Needs root (apt-get).
# CACHE is ORTHANC_GCP_CACHE (default /var/cache/orthanc-gcp-broker).
set -euo pipefail
cd "$(dirname "$0")/.."
GO=${GO:-go}
cache=${ORTHANC_GCP_CACHE:-/var/cache/orthanc-gcp-broker}
log() { echo "container-deps: $*" >&2; }

mkdir -p "$cache/tools"
exec 9>"$cache/container-deps.lock"
flock 9

need=()
command -v podman >/dev/null 2>&1 || need+=(podman)
command -v runc >/dev/null 2>&1 || need+=(runc)
# What packaging/compose-test.sh itself runs on the host.
command -v jq >/dev/null 2>&1 || need+=(jq)
command -v curl >/dev/null 2>&1 || need+=(curl)
command -v pgrep >/dev/null 2>&1 || need+=(procps)
if [ ${#need[@]} -gt 0 ]; then
  [ "$(id -u)" = 0 ] || { log "need root to apt-get install ${need[*]}"; exit 1; }
  log "apt-get install ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # Lock::Timeout: another apt-get (CI's own installs) may be running.
  apt-get -o DPkg::Lock::Timeout=300 update -qq
  apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

version=$(cd tools/compose && "$GO" list -m -f '{{.Version}}' github.com/docker/compose/v2)
compose=$cache/tools/docker-compose-$version
if [ ! -x "$compose" ] || ! "$compose" version --short 2>/dev/null | grep -qx "${version#v}"; then
  log "building Docker Compose $version (tools/compose/go.mod; a few minutes)"
  t0=$(date +%s)
  (cd tools/compose && CGO_ENABLED=0 "$GO" build -trimpath -ldflags "-s -w -X github.com/docker/compose/v2/internal.Version=$version" \
    -o "$compose.tmp.$$" github.com/docker/compose/v2/cmd)
  mv "$compose.tmp.$$" "$compose"
  log "built $compose in $(($(date +%s) - t0)) s"
fi

scripts/orthanc-root.sh trixie >/dev/null
echo "$compose"
