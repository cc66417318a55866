#!/usr/bin/env bash
# mkbase.sh REF - build the minimal base image of the broker and agent images
# without a Docker daemon and push it to REF (normally a loopback `crane
# registry serve`). deploy/image-check.sh (broker) and
# packaging/agent-image-check.sh (agent, which adds /home/nonroot) use it.
#
# The image is one layer: /etc/passwd and /etc/group with the distroless
# "nonroot" user (65532), the machine's CA bundle at
# /etc/ssl/certs/ca-certificates.crt (Go's crypto/x509 reads it), and a
# sticky /tmp. No shell, no package manager, no libc: the broker and the
# agent are static binaries. User 65532:65532, platform linux/amd64.
#
# In Cloud Build (the broker) and `make agent-image` the same role is played
# by gcr.io/distroless/static:nonroot (see .ko.yaml); this recipe exists so CI
# can build the images offline.
set -euo pipefail

ref=${1:?usage: mkbase.sh REGISTRY/REPO:TAG}
crane=${CRANE:-$(dirname "$0")/../bin/tools/crane}
certs=${CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}
[[ -s $certs ]] || { echo "mkbase: no CA bundle at $certs (apt-get install ca-certificates)" >&2; exit 1; }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
root=$tmp/root
mkdir -p "$root/etc/ssl/certs" "$root/tmp"
printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' >"$root/etc/passwd"
printf 'root:x:0:\nnonroot:x:65532:\n' >"$root/etc/group"
cp "$certs" "$root/etc/ssl/certs/ca-certificates.crt"
chmod 0644 "$root/etc/passwd" "$root/etc/group" "$root/etc/ssl/certs/ca-certificates.crt"
chmod 1777 "$root/tmp"
# Reproducible layer: fixed order, times and owners.
tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -C "$root" -cf "$tmp/layer.tar" etc tmp

"$crane" append -f "$tmp/layer.tar" -t "$ref" >/dev/null
"$crane" mutate "$ref" --user 65532:65532 --set-platform linux/amd64 -t "$ref" >/dev/null
echo "mkbase: $ref"
