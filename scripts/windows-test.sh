#!/usr/bin/env bash
# windows-test.sh: runs the agent's Go tests as Windows programs under
# Debian trixie's wine (scripts/wine-root.sh), then agent.exe keygen and
# once against the real test stack on loopback (testbed/wintest).
#
# Each package of the agent (./cmd/agent/... ./agent/... ./internal/...)
# that has tests is compiled with GOOS=windows go test -c and run in the
# wine root with chroot, from its own package directory (testdata paths)
# and with umask 077: wine derives a file's DACL from its Unix mode, and a
# group- or world-readable mode becomes an Everyone entry. The worktree is
# bind-mounted at the same path inside the root, so paths match. One
# wineserver is started (-p: persistent) for the whole run and stopped at
# the end; /proc, /dev and the bind mounts are unmounted on exit.
#
# Usage: scripts/windows-test.sh [PKG_PATTERN...]   (default: the agent's)
# WINDOWS_TEST_E2E=0 skips the agent.exe run against the stack. Needs root.
# Concurrent runs wait for each other (a lock next to the root).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd -P)
GO=${GO:-go}
log() { echo "windows-test: $*" >&2; }

root=$(scripts/wine-root.sh)
# One run at a time: runs share the root's mounts, prefix and wineserver.
exec 8>"$root.run.lock"
flock 8
out=$(mktemp -d /tmp/windows-test.XXXXXX)
prefix=/tmp/wineprefix   # inside the root: kept between runs (first run makes it, ~7 s)

mounts=()
cleanup() {
  set +e
  # Stop the wineserver this run started (wineserver -k talks to the one of
  # this prefix only; nothing else uses this root's prefix).
  [ -n "${started_server:-}" ] && chroot "$root" env WINEPREFIX=$prefix wineserver -k >/dev/null 2>&1
  local i
  for ((i = ${#mounts[@]} - 1; i >= 0; i--)); do
    umount "${mounts[i]}" 2>/dev/null || umount -l "${mounts[i]}"
  done
  rm -rf "$out"
}
trap cleanup EXIT

mnt() { # mnt TARGET ARGS...: mount and remember it for cleanup
  local target=$1; shift
  mkdir -p "$target"
  mount "$@" "$target"
  mounts+=("$target")
}
mnt "$root/proc" -t proc proc
mnt "$root/dev" --bind /dev
mnt "$root$repo" --bind "$repo"
mnt "$root$out" --bind "$out"

# wine in the root: headless (no X server needed for console programs).
wine() { # wine DIR EXE ARGS...: runs EXE under wine with DIR as working directory
  local dir=$1; shift
  chroot "$root" env -i PATH=/usr/bin:/bin HOME=/root WINEPREFIX=$prefix WINEDEBUG=-all \
    XDG_RUNTIME_DIR=/tmp LANG=C.UTF-8 sh -c 'umask 077; cd "$1" && shift && exec wine "$@"' sh "$dir" "$@"
}

mkdir -p "$root$prefix"
# The wineserver creates the files (wine's NtCreateFile opens them in the
# server), so it is the wineserver's umask that decides their DACL: 077.
chroot "$root" env WINEPREFIX=$prefix WINEDEBUG=-all XDG_RUNTIME_DIR=/tmp sh -c 'umask 077; exec wineserver -p'
started_server=1
[ -d "$root$prefix/drive_c" ] || { log "making the wine prefix"; wine / cmd /c exit 0 >/dev/null 2>&1 || true; }

patterns=("$@")
[ ${#patterns[@]} -gt 0 ] || patterns=(./cmd/agent/... ./agent/... ./internal/...)
mapfile -t pkgs < <(GOOS=windows $GO list -f '{{if or .TestGoFiles .XTestGoFiles}}{{.ImportPath}} {{.Dir}}{{end}}' "${patterns[@]}")

failed=()
for line in "${pkgs[@]}"; do
  pkg=${line% *} dir=${line#* }
  exe="$out/$(echo "${pkg#*/orthanc-gcp-broker/}" | tr / _).test.exe"
  if ! GOOS=windows GOARCH=amd64 CGO_ENABLED=0 $GO test -c -o "$exe" "$pkg"; then
    log "FAIL $pkg (build)"; failed+=("$pkg"); continue
  fi
  start=$(date +%s%N)
  if wine "$dir" "$exe" -test.count=1 -test.timeout=5m ${WINDOWS_TEST_FLAGS:-} >"$exe.log" 2>&1; then
    printf 'ok   %-70s %6dms\n' "$pkg" $((($(date +%s%N) - start) / 1000000))
  else
    printf 'FAIL %-70s %6dms\n' "$pkg" $((($(date +%s%N) - start) / 1000000))
    grep -E -e '^(--- FAIL|panic|FAIL)' -e '_test.go:[0-9]+:' "$exe.log" | head -40 | sed 's/^/    /'
    failed+=("$pkg")
  fi
done

if [ "${WINDOWS_TEST_E2E:-1}" != 0 ]; then
  GOOS=windows GOARCH=amd64 CGO_ENABLED=0 $GO build -o "$out/agent.exe" ./cmd/agent
  # The stack runs on the host (broker, Google fakes, a real Linux Orthanc);
  # agent.exe runs in the root, which shares the host's network namespace.
  if WINE_ROOT=$root WINE_PREFIX=$prefix AGENT_EXE=$out/agent.exe WORK_DIR=$out \
     $GO test -count=1 -timeout 5m -run TestAgentExeUnderWine ./testbed/wintest; then
    echo "ok   agent.exe keygen + once against the stack"
  else
    echo "FAIL agent.exe keygen + once against the stack"; failed+=(agent.exe)
  fi
fi

if [ ${#failed[@]} -gt 0 ]; then
  log "${#failed[@]} failed: ${failed[*]}"; exit 1
fi
log "all passed"
