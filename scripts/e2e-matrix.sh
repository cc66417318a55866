#!/usr/bin/env bash
# e2e-matrix.sh: the end-to-end tests (and the Orthanc harness's own tests)
# on every Orthanc generation in ORTHANC_GENERATIONS (default: bookworm
# trixie sid). bookworm is the system's Debian packages; the others come
# from cached debootstrap roots (scripts/orthanc-root.sh). Prints the
# Orthanc and DICOMweb versions each generation really ran.
set -uo pipefail
cd "$(dirname "$0")/.."
GO=${GO:-go}
generations=${ORTHANC_GENERATIONS:-bookworm trixie sid}
log=${E2E_LOG:-/tmp/orthanc-gcp-broker-e2e.log}
: >"$log"
declare -A result versions
status=0
for gen in $generations; do
  echo "== e2e on $gen"
  if [ "$gen" = bookworm ]; then
    unset ORTHANC_BIN ORTHANC_DICOMWEB_PLUGIN
  else
    root=$(scripts/orthanc-root.sh "$gen") || { result[$gen]="FAIL (no $gen root)"; status=1; continue; }
    set -a; . "$root/orthanc-env"; set +a
  fi
  out=$(mktemp)
  "$GO" test -count=1 -timeout 20m -v ./testbed/orthancproc/... ./e2e/... >"$out" 2>&1
  rc=$?
  cat "$out" >>"$log"
  grep -E '^(=== RUN|--- |PASS|FAIL|ok|panic)|e2e:' "$out"
  versions[$gen]=$(grep -oE 'is Orthanc [0-9.]+, DICOMweb [0-9.]+' "$out" | sort -u | sed 's/^is //' | paste -sd';')
  if [ $rc -eq 0 ]; then result[$gen]=ok; else result[$gen]="FAIL (exit $rc)"; status=1; fi
  rm -f "$out"
done
echo "== e2e matrix (full log: $log)"
for gen in $generations; do
  printf '%-9s %-14s %s\n' "$gen" "${result[$gen]}" "${versions[$gen]:-}"
done
exit $status
