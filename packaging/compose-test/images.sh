#!/usr/bin/env bash
# images.sh AGENT_TARBALL - the images make compose-test runs, in podman's
# store (CONTAINERS_CONF set by the caller, packaging/compose-test.sh):
#
#   orthanc-gcp-agent:latest   the agent image agent-image-check built with
#                              ko (podman load of AGENT_TARBALL, retagged)
#   orthancteam/orthanc:TAG    TAG as in packaging/docker-compose.yml: the
#                              Orthanc stand-in (orthanc-standin/), built on
#   localhost/orthanc-gcp-compose-test/debian:trixie-STAMP
#                              the trixie root of scripts/orthanc-root.sh
#                              (Debian's orthanc and orthanc-dicomweb),
#                              podman import; STAMP is the root's build time
#
# The imported root and the stand-in are kept: the next run reuses them
# while the root and the stand-in's files are unchanged (the stand-in is
# also tagged with a hash of its files). A real orthancteam/orthanc:TAG in
# the store (no stand-in label) is left alone and used as it is. Prints
# "base image: REF" (the imported root, which the test's fakes service runs
# on).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
tarball=${1:?usage: images.sh AGENT_TARBALL}
standin_dir=$root/packaging/compose-test/orthanc-standin
label=io.github.orthanc-gcp-broker.stand-in

orthanc_ref=$(sed -n 's/^ *image: *\(orthancteam\/orthanc:[^ #]*\).*/\1/p' "$root/packaging/docker-compose.yml")
[[ -n $orthanc_ref ]] || { echo "images: no orthancteam/orthanc image in packaging/docker-compose.yml" >&2; exit 1; }
orthanc_ref=docker.io/$orthanc_ref

# The agent: load, tag as the compose file's default AGENT_IMAGE, and drop
# the load's own name (ko's registry, a port of the build) and the image
# this replaces, if nothing else names it.
old=$(podman image inspect -f '{{.Id}}' localhost/orthanc-gcp-agent:latest 2>/dev/null || true)
loaded=$(podman load -q -i "$tarball" | sed -n "s/^Loaded image[^:]*: *//p" | head -n1)
[[ -n $loaded ]] || { echo "images: podman load of $tarball named no image" >&2; exit 1; }
podman tag "$loaded" localhost/orthanc-gcp-agent:latest
[[ $loaded == localhost/orthanc-gcp-agent:latest ]] || podman untag "$loaded" "$loaded"
new=$(podman image inspect -f '{{.Id}}' localhost/orthanc-gcp-agent:latest)
if [[ -n $old && $old != "$new" ]]; then podman rmi "$old" >/dev/null 2>&1 || true; fi
echo "agent: localhost/orthanc-gcp-agent:latest ${new:0:12} (podman load)"

# The Debian root, imported once per root build.
rootdir=$("$root/scripts/orthanc-root.sh" trixie)
stamp=$(date -u -r "$rootdir/.complete" +%Y%m%d%H%M%S)
base=localhost/orthanc-gcp-compose-test/debian:trixie-$stamp
if ! podman image exists "$base"; then
	t0=$(date +%s)
	tar --numeric-owner -C "$rootdir" -c --exclude=./proc/* --exclude=./sys/* --exclude=./dev/* . |
		podman import -q --change 'CMD ["/bin/sh"]' - "$base" >/dev/null
	echo "base: imported $rootdir as $base in $(($(date +%s) - t0)) s"
	# Earlier imports of this root (older stamps) go, unless in use.
	for ref in $(podman images --format '{{.Repository}}:{{.Tag}}' localhost/orthanc-gcp-compose-test/debian); do
		[[ $ref == "$base" ]] || podman rmi "$ref" >/dev/null 2>&1 || true
	done
fi
echo "base image: $base"

# The stand-in: rebuilt when its files or the base change.
hash=$( (echo "$base"; cat "$standin_dir/Containerfile" "$standin_dir/entrypoint.sh") | sha256sum | cut -c1-16)
standin=localhost/orthanc-gcp-compose-test/orthanc-standin:$hash
if podman image exists "$orthanc_ref" && [[ -z $(podman image inspect -f "{{index .Labels \"$label\"}}" "$orthanc_ref") ]]; then
	echo "orthanc: $orthanc_ref is in the store and is not our stand-in: using it as it is"
	exit 0
fi
if ! podman image exists "$standin"; then
	t0=$(date +%s)
	podman build -q --build-arg "BASE=$base" -t "$standin" -f "$standin_dir/Containerfile" "$standin_dir" >/dev/null
	echo "orthanc: built the stand-in $standin in $(($(date +%s) - t0)) s"
fi
podman tag "$standin" "$orthanc_ref"
echo "orthanc: $orthanc_ref = $standin ($label=$(podman image inspect -f "{{index .Labels \"$label\"}}" "$standin"))"
