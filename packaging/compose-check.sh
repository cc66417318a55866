#!/usr/bin/env bash
# compose-check.sh - check packaging/docker-compose.yml without a Docker engine:
#
#  1. composecheck (packaging/composecheck) loads it with compose-go, the
#     loader Docker Compose uses: the Compose specification's JSON schema,
#     interpolation of ${AGENT_IMAGE:-...}, and the model's own checks
#     (network_mode and depends_on name services that exist, volumes are
#     declared), with and without the "setup" profile;
#  2. the Go test TestComposeFile (packaging/compose_test.go) decodes it
#     strictly with gopkg.in/yaml.v3 and checks what this project promises:
#     services, network_mode "service:orthanc", the read-only config mount and
#     the key volume, read_only, user 65532, no privileges, image names;
#  3. where the compose plugin is installed, `docker compose config` too.
#
# Environment: GO, COMPOSECHECK (default bin/tools/composecheck; make
# compose-check builds it).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
GO=${GO:-go}
composecheck=${COMPOSECHECK:-$root/bin/tools/composecheck}
file=$root/packaging/docker-compose.yml
[[ -x $composecheck ]] || { echo "compose-check: $composecheck missing (make compose-check builds it)" >&2; exit 1; }

"$composecheck" "$file"
"$composecheck" -profile setup "$file" >/dev/null
(cd "$root" && "$GO" test -count=1 -run '^TestCompose' ./packaging/)
if docker compose version >/dev/null 2>&1; then
	docker compose -f "$file" --profile setup config --quiet
	echo "compose-check: docker compose config accepts it"
else
	echo "compose-check: no docker compose plugin here (checked with compose-go and the Go test)"
fi
