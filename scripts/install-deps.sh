#!/usr/bin/env bash
# Installs what the tests and the demo need on Debian: Orthanc with its
# DICOMweb plugin, dcmtk, swtpm (the software TPM the TPM-bound agent key
# tests talk to), promtool (Debian's prometheus package; the agent's
# alerting rules are tested with it) and debootstrap (make windows-test's
# wine root). Idempotent: does nothing when they
# are present.
set -euo pipefail

need=()
[ -x /usr/sbin/Orthanc ] || need+=(orthanc)
[ -f /usr/share/orthanc/plugins/libOrthancDicomWeb.so ] || need+=(orthanc-dicomweb)
command -v dcmdump >/dev/null 2>&1 || need+=(dcmtk)
command -v swtpm >/dev/null 2>&1 || need+=(swtpm swtpm-tools)
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
# make windows-test: debootstrap builds the trixie root that holds wine (scripts/wine-root.sh).
PATH="$PATH:/usr/sbin:/sbin" command -v debootstrap >/dev/null 2>&1 || need+=(debootstrap)
if [ ${#need[@]} -eq 0 ]; then
  exit 0
fi

sudo=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null 2>&1 || { echo "install-deps: need root (or sudo) to apt-get install ${need[*]}" >&2; exit 1; }
  sudo="sudo"
fi
echo "install-deps: apt-get install ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
# The Debian service cannot start in containers; the tests start Orthanc themselves.
$sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
[ -x /usr/sbin/Orthanc ] && [ -f /usr/share/orthanc/plugins/libOrthancDicomWeb.so ] || {
  echo "install-deps: Orthanc or its DICOMweb plugin is still missing after apt-get" >&2; exit 1; }
# The prometheus package also enables and starts a Prometheus server (:9090)
# where systemd runs; only its promtool is wanted.
if [[ " ${need[*]} " == *" prometheus "* ]] && [ -d /run/systemd/system ]; then
  $sudo systemctl disable --now prometheus.service >/dev/null 2>&1 || true
  echo "install-deps: installed promtool; the prometheus service it brings is disabled"
fi
