#!/usr/bin/env bash
# orthanc-root.sh SUITE: prints the directory of a Debian SUITE root (trixie,
# sid, ...) holding that suite's Orthanc and DICOMweb plugin, made with
# debootstrap and cached between runs, plus an env file to run it:
#   ROOT/orthanc-env: ORTHANC_BIN=ROOT/run-orthanc ORTHANC_DICOMWEB_PLUGIN=...
# The root's Orthanc runs with the root's own loader and libraries (no
# chroot, no root needed at run time). sid moves: a cached sid root is
# refreshed when older than ORTHANC_ROOT_MAX_AGE_DAYS (default 7); if the
# refresh fails (mirror briefly inconsistent) the cached root is used, and
# this says so on stderr.
set -euo pipefail

suite=${1:?usage: orthanc-root.sh SUITE}
cache=${ORTHANC_ROOTS_CACHE:-/var/cache/orthanc-gcp-broker/roots}
root="$cache/$suite"
max_age=${ORTHANC_ROOT_MAX_AGE_DAYS:-7}
log() { echo "orthanc-root($suite): $*" >&2; }
# One builder per suite at a time: concurrent callers (the e2e matrix,
# scripts/container-deps.sh in the background) wait, then find it built.
mkdir -p "$cache"
exec 7>"$cache/$suite.lock"
flock 7

fresh_enough() {
  [ -f "$root/.complete" ] || return 1
  [ "$suite" != sid ] && return 0
  [ -n "$(find "$root/.complete" -mtime -"$max_age" 2>/dev/null)" ]
}

build() {
  command -v debootstrap >/dev/null || {
    log "installing debootstrap"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap >/dev/null
  }
  local tmp="$root.tmp.$$"
  mkdir -p "$cache"
  for attempt in 1 2 3; do
    rm -rf "$tmp"
    log "debootstrap --variant=minbase --include=orthanc,orthanc-dicomweb $suite (attempt $attempt)"
    if debootstrap --variant=minbase --include=orthanc,orthanc-dicomweb "$suite" "$tmp" >"$cache/$suite.debootstrap.log" 2>&1; then
      [ -x "$tmp/usr/sbin/Orthanc" ] && [ -f "$tmp/usr/share/orthanc/plugins/libOrthancDicomWeb.so" ] || {
        log "debootstrap finished without Orthanc or its plugin"; continue; }
      rm -rf "$root.old"; [ -d "$root" ] && mv "$root" "$root.old"
      mv "$tmp" "$root"; rm -rf "$root.old"
      return 0
    fi
    log "debootstrap failed (see $cache/$suite.debootstrap.log)"
    sleep $((attempt * 10))
  done
  rm -rf "$tmp"
  return 1
}

if ! fresh_enough; then
  if ! build; then
    if [ -f "$root/.complete" ]; then
      log "WARNING: could not refresh the $suite root; using the cached one from $(date -r "$root/.complete" -u +%F)"
    else
      log "no $suite root could be made and none is cached"; exit 1
    fi
  fi
fi

libc=$(ls -d "$root"/usr/lib/*-linux-gnu/libc.so.6 2>/dev/null | head -n1 || true)
[ -n "$libc" ] || { log "no libc in $root"; exit 1; }
multiarch=$(basename "$(dirname "$libc")")
loader=$(ls "$root/usr/lib/$multiarch"/ld-linux*.so.* 2>/dev/null | head -n1 || true)
[ -n "$loader" ] || { log "no dynamic loader in $root"; exit 1; }
cat >"$root/run-orthanc" <<WRAP
#!/bin/sh
# Orthanc of the $suite root, with that root's loader, libraries and DICOM dictionary.
export DCMDICTPATH="$root/usr/share/dcmtk/dicom.dic"
exec "$loader" --library-path "$root/usr/lib/$multiarch:$root/lib/$multiarch:$root/usr/lib" "$root/usr/sbin/Orthanc" "\$@"
WRAP
chmod 0755 "$root/run-orthanc"
cat >"$root/orthanc-env" <<ENV
ORTHANC_BIN=$root/run-orthanc
ORTHANC_DICOMWEB_PLUGIN=$root/usr/share/orthanc/plugins/libOrthancDicomWeb.so
ENV
[ -f "$root/.complete" ] || touch "$root/.complete"
echo "$root"
