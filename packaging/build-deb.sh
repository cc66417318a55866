#!/usr/bin/env bash
# build-deb.sh ARCH... - build dist/orthanc-gcp-agent_<version>_<arch>.deb for
# each ARCH (amd64, arm64) with nfpm: no Docker, no dpkg-dev.
#
#   /usr/bin/orthanc-gcp-agent                  static (CGO_ENABLED=0, -trimpath),
#                                               -X main.version=<version>
#   /usr/lib/systemd/system/orthanc-gcp-agent.service
#                                               packaging/systemd's unit, binary path
#                                               /usr/local/bin -> /usr/bin
#   /etc/orthanc-gcp-agent/agent.json           conffile (packaging/agent.json)
#   /usr/share/doc/orthanc-gcp-agent/agent.md   docs/agent.md
#   /usr/share/orthanc-gcp-agent/orthanc-gcp-agent.rules.yml
#                                               packaging's Prometheus alerting rules
#
# Environment: VERSION (default packaging/version.sh), NFPM (the nfpm
# binary), DIST (default dist), GO, PKG_MAINTAINER.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

[[ $# -gt 0 ]] || { echo "usage: build-deb.sh ARCH..." >&2; exit 2; }
GO=${GO:-go}
nfpm=${NFPM:-$root/bin/tools/nfpm}
dist=${DIST:-$root/dist}
[[ -x $nfpm ]] || { echo "build-deb: $nfpm missing (make $nfpm)" >&2; exit 1; }
version=$(VERSION=${VERSION:-} packaging/version.sh)
export VERSION=$version
export PKG_MAINTAINER=${PKG_MAINTAINER:-orthanc-gcp-broker maintainers}
# Reproducible archives: file times are the commit's.
SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || echo 0)}
export SOURCE_DATE_EPOCH

unit_src=packaging/systemd/orthanc-gcp-agent.service
mkdir -p "$dist"
for arch in "$@"; do
	case $arch in amd64 | arm64) ;; *) echo "build-deb: unsupported arch '$arch'" >&2; exit 2 ;; esac
	build=$dist/build/$arch
	rm -rf "$build"
	mkdir -p "$build"
	CGO_ENABLED=0 GOOS=linux GOARCH=$arch "$GO" build -trimpath \
		-ldflags "-s -w -X main.version=$version" -o "$build/orthanc-gcp-agent" ./cmd/agent
	# The unit is packaging/systemd's; only the binary's path differs.
	sed 's|/usr/local/bin/orthanc-gcp-agent|/usr/bin/orthanc-gcp-agent|g' "$unit_src" >"$build/orthanc-gcp-agent.service"
	grep -qx 'ExecStart=/usr/bin/orthanc-gcp-agent run --config /etc/orthanc-gcp-agent/agent.json' "$build/orthanc-gcp-agent.service" || {
		echo "build-deb: $unit_src: ExecStart is not '/usr/(local/)bin/orthanc-gcp-agent run --config /etc/orthanc-gcp-agent/agent.json'" >&2
		exit 1
	}
	deb=$dist/orthanc-gcp-agent_${version}_${arch}.deb
	rm -f "$deb"
	ARCH=$arch BUILD_DIR=$build "$nfpm" package --config packaging/nfpm.yaml --packager deb --target "$deb" >"$build/nfpm.log" 2>&1 || {
		cat "$build/nfpm.log" >&2
		exit 1
	}
	echo "build-deb: $deb ($(du -h "$deb" | cut -f1))"
done
