#!/usr/bin/env bash
# make demo: runs the whole system end to end on this machine (see testbed/cmd/demo).
# Installs Orthanc, its DICOMweb plugin and dcmtk (scripts/install-deps.sh),
# builds the demo, broker and agent, and runs the demo. Arguments are passed
# to the demo (e.g. scripts/demo.sh --keep).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh

GO=${GO:-go}
command -v "$GO" >/dev/null 2>&1 || { echo "demo: the Go toolchain ($GO) is not on PATH" >&2; exit 1; }

bindir=$(mktemp -d "${TMPDIR:-/tmp}/orthanc-gcp-demo-bin.XXXXXX")
trap 'rm -rf "$bindir"' EXIT
echo "demo: building demo, broker and agent"
"$GO" build -o "$bindir/demo" ./testbed/cmd/demo
"$GO" build -o "$bindir/broker" ./cmd/broker
"$GO" build -o "$bindir/agent" ./cmd/agent

# Not exec: the trap removes the binaries once the demo has stopped everything.
status=0
"$bindir/demo" --bin "$bindir" "$@" || status=$?
exit "$status"
