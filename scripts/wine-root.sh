#!/usr/bin/env bash
# wine-root.sh: prints the directory of a Debian trixie minbase root holding
# trixie's wine (10.0, which runs Go 1.26 windows/amd64 binaries headless;
# bookworm's wine 8.0 cannot: bcryptprimitives.dll), made with debootstrap
# plus `apt-get install --no-install-recommends wine64 wine` inside it, and
# cached between runs like the Orthanc roots (scripts/orthanc-root.sh).
# The root is used with chroot, as root; scripts/windows-test.sh mounts
# /proc and /dev there for the run and unmounts them after. Needs root.
# A cold build takes 2 to 7 minutes (debootstrap, then wine; measured 7 min
# on a shared 2-core machine) and about 1.2 GB of disk; a warm call only
# checks the .complete marker.
#
# Safe to run concurrently and again: .ci/run starts it in the background
# early and make windows-test calls it later. One build at a time (flock on
# wine-trixie.lock in the cache); a caller that finds a build under way
# waits for it, then uses its root. The root is built in a temporary
# directory and renamed into place with its .complete marker, so a killed
# build leaves no half root (its leftovers are removed by the next build).
# debootstrap comes from scripts/install-deps.sh (installed here only if
# missing, waiting for another apt's lock). ORTHANC_ROOTS_CACHE builds the
# root elsewhere (e.g. to time a cold build without removing the cache).
set -euo pipefail
export PATH="$PATH:/usr/sbin:/sbin"  # debootstrap, chroot

suite=trixie
cache=${ORTHANC_ROOTS_CACHE:-/var/cache/orthanc-gcp-broker/roots}
root="$cache/wine-$suite"
log() { echo "wine-root: $*" >&2; }

[ "$(id -u)" = 0 ] || { log "needs root (debootstrap, chroot)"; exit 1; }

# Unmounts everything mounted under DIR (deepest first); used on the
# temporary root after each build attempt, whatever happened.
unmount_under() {
  local dir=$1 m
  for m in $(awk -v d="$dir/" 'index($2, d) == 1 {print $2}' /proc/self/mounts | sort -r); do
    umount "$m" 2>/dev/null || umount -l "$m"
  done
}

build() {
  command -v debootstrap >/dev/null || {
    log "installing debootstrap"
    apt-get -o DPkg::Lock::Timeout=600 update -qq &&
      DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends debootstrap >/dev/null
  }
  # Leftovers of a build that was killed (we hold the lock: none is running).
  local old
  for old in "$root".tmp.*; do
    [ -e "$old" ] || continue
    log "removing the unfinished build $old"
    unmount_under "$old"; rm -rf "$old"
  done
  local blog="$cache/wine-$suite.build.log"
  tmp="$root.tmp.$$"
  trap 'unmount_under "$tmp"; rm -rf "$tmp"' EXIT
  : >"$blog"
  for attempt in 1 2 3; do
    unmount_under "$tmp"; rm -rf "$tmp"
    log "debootstrap --variant=minbase $suite, then apt-get install wine64 wine (attempt $attempt)"
    if debootstrap --variant=minbase "$suite" "$tmp" >>"$blog" 2>&1 &&
       mount -t proc proc "$tmp/proc" && mount --bind /dev "$tmp/dev" &&
       chroot "$tmp" env DEBIAN_FRONTEND=noninteractive sh -c \
         'apt-get update -qq && apt-get install -y -qq --no-install-recommends wine64 wine && apt-get clean' >>"$blog" 2>&1; then
      unmount_under "$tmp"
      # /usr/bin/wine is an alternatives link (absolute): test it inside the root.
      chroot "$tmp" test -x /usr/bin/wine || { log "wine missing after the install"; continue; }
      touch "$tmp/.complete"
      rm -rf "$root.old"; [ -d "$root" ] && mv "$root" "$root.old"
      mv "$tmp" "$root"; rm -rf "$root.old"
      trap - EXIT
      return 0
    fi
    unmount_under "$tmp"
    log "build failed (see $blog)"
    sleep $((attempt * 10))
  done
  return 1
}

if [ ! -f "$root/.complete" ]; then
  mkdir -p "$cache"
  exec 9>"$cache/wine-$suite.lock"
  flock 9  # one build at a time; a second caller waits, then finds .complete
  if [ ! -f "$root/.complete" ]; then
    build || { log "no wine root could be made and none is cached"; exit 1; }
  fi
fi
echo "$root"
