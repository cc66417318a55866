#!/usr/bin/env bash
# compose-test.sh - make compose-test: run packaging/docker-compose.yml the
# way a site runs it, with Docker Compose v2 against podman, and check that
# the agent in it gets its tokens and fills Orthanc's DICOMweb server list.
#
#  1. scripts/container-deps.sh: podman, runc, Docker Compose (cached);
#     podman's Docker-compatible API on a socket of this run's own
#     (podman system service), stopped at the end. CONTAINERS_CONF is
#     packaging/compose-test/containers.conf.
#  2. Images: the agent image agent-image-check built with ko (IMAGE_TARBALL,
#     podman load, tagged orthanc-gcp-agent:latest as the compose file
#     expects) and an Orthanc stand-in tagged orthancteam/orthanc:<tag of the
#     compose file>: Debian's orthanc and orthanc-dicomweb on the trixie root
#     of scripts/orthanc-root.sh (podman import, podman build,
#     packaging/compose-test/orthanc-standin), labelled as a stand-in. Both
#     the imported root and the stand-in are cached between runs.
#  3. In a scratch directory, as a user would: docker-compose.yml (a
#     byte-for-byte copy) and agent.json (packaging/agent.json with the broker
#     filled in). The only addition is packaging/compose-test/override.yml:
#     one more service, "fakes" (broker + Google fakes), in the Orthanc
#     container's network namespace, so every packet stays on that
#     namespace's loopback. The test reaches into it only with nsenter.
#  4. The steps, each timed: keygen profile, enrol the printed key in the
#     broker's policy, up -d, run --rm agent once, exec agent status,
#     podman healthcheck run, the entry in Orthanc's REST API, down -v and
#     nothing of the project left (containers, volumes, network).
#
# Project name orthanc-gcp-compose-test (-p), so a site's own "orthanc-gcp"
# project on the same machine is never touched; runs take a lock (the
# compose file publishes host port 4242). Needs root (rootful podman,
# nsenter). Environment: GO, IMAGE_TARBALL (default bin/image/agent.tar).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
GO=${GO:-go}
cache=${ORTHANC_GCP_CACHE:-/var/cache/orthanc-gcp-broker}
tarball=${IMAGE_TARBALL:-$root/bin/image/agent.tar}
project=orthanc-gcp-compose-test
export CONTAINERS_CONF=$root/packaging/compose-test/containers.conf

# Ports inside the Orthanc container's network namespace (loopback only).
broker_port=9600
dicomweb_port=9605
agent_id=compose-site
store=store-a
store_path=projects/demo-project/locations/europe-west2/datasets/compose/dicomStores/$store
store_sa=$store@demo-project.iam.gserviceaccount.com

say() { echo "compose-test: $*"; }
fail() { echo "compose-test: FAIL: $*" >&2; exit 1; }
[[ $(id -u) == 0 ]] || fail "needs root (rootful podman and nsenter)"
[[ -s $tarball ]] || fail "no agent image at $tarball (make agent-image-check builds it)"

# Timings of the steps, printed at the end (and on failure).
timings=()
step=
step_t0=0
begin() { step=$1; step_t0=$(date +%s%N); say "$step ..."; }
end() { local ms=$((($(date +%s%N) - step_t0) / 1000000)); timings+=("$(printf '%-54s %7d ms' "$step" "$ms")"); step=; }
print_timings() {
	echo "compose-test: timings"
	local t
	for t in "${timings[@]}"; do echo "  $t"; done
}

mkdir -p "$cache"
exec 8>"$cache/compose-test.lock"
flock -w 1800 8 || fail "another compose-test held $cache/compose-test.lock for 30 minutes"

begin "prepare (scripts/container-deps.sh)"
compose=$("$root/scripts/container-deps.sh")
end

tmp=$(mktemp -d /tmp/compose-test.XXXXXX)
chmod 0755 "$tmp"
service_pid=
dc() { (cd "$tmp/site" && "$compose" -p "$project" -f docker-compose.yml -f override.yml "$@"); }
project_left() { # containers, volumes and networks of the project, one per line
	podman ps -a --filter "label=com.docker.compose.project=$project" --format '{{.Names}}'
	podman volume ls --filter "label=com.docker.compose.project=$project" --format '{{.Name}}'
	podman network ls --format '{{.Name}}' | grep -x "${project}_default" || true
}
cleanup() {
	local rc=$?
	set +e
	if [[ -n $step ]]; then
		echo "compose-test: FAILED during: $step" >&2
		if [[ -S $tmp/podman.sock && -f $tmp/site/override.yml ]]; then
			echo "compose-test: logs of the project's containers:" >&2
			dc logs --no-color --tail 40 >&2 2>&1
		fi
	fi
	if [[ -S $tmp/podman.sock && -f $tmp/site/override.yml ]] && [[ -n $(project_left) ]]; then
		dc down -v --remove-orphans --timeout 10 >/dev/null 2>&1
	fi
	if [[ -n $service_pid ]]; then
		kill "$service_pid" 2>/dev/null
		wait "$service_pid" 2>/dev/null
	fi
	rm -rf "$tmp"
	((${#timings[@]})) && print_timings
	exit "$rc"
}
trap cleanup EXIT

# 1. podman's Docker-compatible API on this run's own socket.
begin "podman system service (own socket)"
podman system service --time=0 "unix://$tmp/podman.sock" >"$tmp/podman-service.log" 2>&1 &
service_pid=$!
export DOCKER_HOST=unix://$tmp/podman.sock
export DOCKER_CONFIG=$tmp/docker
mkdir -p "$DOCKER_CONFIG/cli-plugins"
echo '{}' >"$DOCKER_CONFIG/config.json"
ln -s "$compose" "$DOCKER_CONFIG/cli-plugins/docker-compose"
for _ in $(seq 100); do
	curl -sf --noproxy '*' --unix-socket "$tmp/podman.sock" http://d/_ping >/dev/null 2>&1 && break
	kill -0 "$service_pid" 2>/dev/null || fail "podman system service exited: $(cat "$tmp/podman-service.log")"
	sleep 0.1
done
curl -sf --noproxy '*' --unix-socket "$tmp/podman.sock" http://d/_ping >/dev/null || fail "podman's API did not answer on $tmp/podman.sock"
end
left=$(project_left)
[[ -z $left ]] || fail "left over from an earlier run of project $project (remove them with podman): $left"

# 2. Images.
begin "images: agent (podman load), Orthanc stand-in"
"$root/packaging/compose-test/images.sh" "$tarball" >"$tmp/images.log" 2>&1 || fail "images: $(cat "$tmp/images.log")"
sed 's/^/  /' "$tmp/images.log"
base_image=$(sed -n 's/^base image: //p' "$tmp/images.log")
end

# 3. The site directory and the fakes.
begin "build broker and fakegcp (static)"
mkdir -p "$tmp/site" "$tmp/fakes"
(cd "$root" && CGO_ENABLED=0 "$GO" build -trimpath -o "$tmp/fakes/" ./cmd/broker ./testbed/cmd/fakegcp)
end
cp "$root/packaging/docker-compose.yml" "$tmp/site/docker-compose.yml"
cmp "$root/packaging/docker-compose.yml" "$tmp/site/docker-compose.yml"
cp "$root/packaging/compose-test/override.yml" "$tmp/site/override.yml"
cp "$root/packaging/compose-test/fakes.sh" "$tmp/fakes/fakes.sh"
cat >"$tmp/fakes/ports.env" <<EOF
FAKES_BROKER_PORT=$broker_port
FAKES_TOKEN_PORT=9601
FAKES_SECRETMANAGER_PORT=9602
FAKES_IAM_PORT=9603
FAKES_METADATA_PORT=9604
FAKES_DICOMWEB_PORT=$dicomweb_port
FAKES_ADMIN_PORT=9606
EOF
# One store; the fake Healthcare front proxies it to the Orthanc in the
# compose project (the agent only registers it, nothing is sent).
jq -n --arg sa "$store_sa" --arg path "$store_path" '{
	ServiceAccounts: [{Email: $sa, File: "store-a-key.json"}],
	Stores: [{Path: $path, Upstream: "http://127.0.0.1:8042/dicom-web/", Principals: [$sa]}]
}' >"$tmp/fakes/setup.json"
# The site's agent.json: the package's, with the broker filled in and the
# fake front allowed as a DICOMweb host. 0644: the image user reads it.
jq --arg url "http://127.0.0.1:$broker_port" --arg id "$agent_id" --arg front "127.0.0.1:$dicomweb_port" \
	'.Broker.Url = $url | .Broker.AgentId = $id | .AllowedDicomWebHosts = [$front]' \
	"$root/packaging/agent.json" >"$tmp/site/agent.json"
chmod 0644 "$tmp/site/agent.json"
export COMPOSE_TEST_BASE_IMAGE=$base_image COMPOSE_TEST_FAKES_DIR=$tmp/fakes

# run_rm SERVICE OUT ARGS...: `docker-compose ARGS` (a `run --rm` of
# SERVICE), output in OUT; sets rc to the container's exit status. Compose
# run --rm against podman 4.3 exits 0 whatever the container's status
# (measured: a keygen that refused, exit 1, gave 0; without --rm the status
# comes through), so the status is read from podman's "died" event of that
# one-off container instead.
run_rm() {
	local service=$1 out=$2 since
	shift 2
	since=$(date +%s)
	rc=0
	dc "$@" </dev/null >"$out" 2>"$out.err" || rc=$?
	[[ $rc == 0 ]] || return 0
	rc=$(podman events --stream=false --since "$since" --format json | jq -rs --arg p "$project" --arg s "$service" '
		map(select(.Status == "died" and .Attributes["com.docker.compose.project"] == $p and
			.Attributes["com.docker.compose.service"] == $s and .Attributes["com.docker.compose.oneoff"] == "True"))
		| if length == 0 then "no died event" else (last.ContainerExitCode // 0 | tostring) end')
}

# 4. As the compose file's comment tells a site.
begin "keygen (--profile setup run --rm agent-keygen)"
run_rm agent-keygen "$tmp/keygen.out" --profile setup run --rm agent-keygen
[[ $rc == 0 ]] || fail "keygen exited $rc: $(cat "$tmp/keygen.out" "$tmp/keygen.out.err")"
pub=$(grep '^ed25519:' "$tmp/keygen.out" | tr -d '\r' || true)
[[ -n $pub ]] || fail "keygen printed no ed25519: line: $(cat "$tmp/keygen.out" "$tmp/keygen.out.err")"
end
begin "keygen again (refuses to overwrite the key)"
run_rm agent-keygen "$tmp/keygen2.out" --profile setup run --rm agent-keygen
[[ $rc != 0 ]] || fail "a second keygen exited 0: $(cat "$tmp/keygen2.out" "$tmp/keygen2.out.err")"
grep -q 'refusing to overwrite' "$tmp/keygen2.out" "$tmp/keygen2.out.err" || fail "second keygen: $(cat "$tmp/keygen2.out" "$tmp/keygen2.out.err")"
end
say "public key $pub"

begin "enrol the key in the broker's policy"
jq -n --arg aud "http://127.0.0.1:$broker_port" --arg base "http://127.0.0.1:$dicomweb_port/v1/" \
	--arg id "$agent_id" --arg pub "$pub" --arg store "$store" '{
	Audience: $aud, BaseUrl: $base,
	Accounts: {($store): {Project: "demo-project", Location: "europe-west2", Dataset: "compose",
		DicomStore: $store, ServiceAccountSecret: "/run/fakes/store-a-key.json"}},
	Agents: {($id): {PublicKey: $pub, Accounts: [$store]}}
}' >"$tmp/fakes/policy.json"
end

begin "up -d"
dc up -d </dev/null >"$tmp/up.log" 2>&1 || fail "up -d: $(cat "$tmp/up.log")"
end

cid() { podman ps -a --filter "label=com.docker.compose.project=$project" --filter "label=com.docker.compose.service=$1" --format '{{.ID}}' | head -n1; }
orthanc_cid=$(cid orthanc)
[[ -n $orthanc_cid ]] || fail "no orthanc container after up -d"
orthanc_pid=$(podman inspect -f '{{.State.Pid}}' "$orthanc_cid")
# The host's curl in the Orthanc container's network namespace: its loopback.
ns_curl() { nsenter --net="/proc/$orthanc_pid/ns/net" curl -sS --noproxy '*' --max-time 5 "$@"; }
image=$(podman inspect -f '{{.ImageName}}' "$orthanc_cid")
say "orthanc container runs $image ($(podman image inspect -f '{{index .Labels "org.opencontainers.image.title"}}' "$image"))"

begin "Orthanc and broker answer on the namespace's loopback"
fakes_cid=$(cid fakes)
[[ -n $fakes_cid ]] || fail "no fakes container after up -d"
deadline=$(($(date +%s) + 60))
while (($(date +%s) < deadline)); do
	ns_curl -f -o /dev/null http://127.0.0.1:8042/system 2>/dev/null &&
		ns_curl -f -o /dev/null "http://127.0.0.1:$broker_port/healthz" 2>/dev/null && break
	[[ $(podman inspect -f '{{.State.Running}}' "$fakes_cid") == true ]] || fail "the fakes container (broker) exited"
	sleep 0.2
done
ns_curl -f -o /dev/null http://127.0.0.1:8042/system || fail "Orthanc's REST API does not answer on 127.0.0.1:8042 in its namespace"
ns_curl -f -o /dev/null "http://127.0.0.1:$broker_port/healthz" || fail "the broker does not answer on 127.0.0.1:$broker_port"
end

begin "run --rm agent once"
run_rm agent "$tmp/once.out" run --rm agent once
[[ $rc == 0 ]] || fail "agent once exited $rc: $(tail -20 "$tmp/once.out.err")"
end

begin "exec agent /ko-app/agent status (healthy)"
ok=
for _ in $(seq 60); do
	if dc exec -T agent /ko-app/agent status >"$tmp/status.log" 2>&1; then ok=1; break; fi
	sleep 1
done
[[ -n $ok ]] || fail "agent status never healthy within 60 s: $(cat "$tmp/status.log")"
end
say "status: $(tr '\n' ' ' <"$tmp/status.log" | cut -c1-200)"

begin "podman healthcheck run (agent)"
agent_cid=$(cid agent)
[[ -n $agent_cid ]] || fail "no agent container"
hc=0
podman healthcheck run "$agent_cid" >"$tmp/hc.log" 2>&1 || hc=$?
[[ $hc == 0 ]] || fail "podman healthcheck run exited $hc: $(cat "$tmp/hc.log")"
end

begin "the DICOMweb server entry in Orthanc"
ns_curl -f "http://127.0.0.1:8042/dicom-web/servers?expand" >"$tmp/servers.json" || fail "GET /dicom-web/servers"
want_url="http://127.0.0.1:$dicomweb_port/v1/$store_path/dicomWeb/"
got=$(jq -r --arg s "$store" '.[$s].Url // empty' "$tmp/servers.json")
[[ $got == "$want_url" ]] || fail "Orthanc's server $store has Url '$got', want '$want_url': $(cat "$tmp/servers.json")"
jq -e --arg s "$store" '.[$s].HttpHeaders | index("Authorization")' "$tmp/servers.json" >/dev/null ||
	fail "Orthanc's server $store has no Authorization header: $(jq -c --arg s "$store" '.[$s]' "$tmp/servers.json")"
end
say "Orthanc has $store -> $got (with an Authorization header)"

begin "down -v"
ids=$(podman ps -a --no-trunc --filter "label=com.docker.compose.project=$project" --format '{{.ID}}')
[[ -n $ids ]] || fail "no containers of project $project before down -v"
dc down -v --timeout 10 </dev/null >"$tmp/down.log" 2>&1 || fail "down -v: $(cat "$tmp/down.log")"
left=$(project_left)
[[ -z $left ]] || fail "left after down -v: $left"
# No process of those containers either (conmon, exec sessions): they go
# within exit_command_delay (containers.conf) of the last exec.
deadline=$(($(date +%s) + 30))
while procs=$(pgrep -a -f "$(paste -sd'|' <<<"$ids")" || true); [[ -n $procs ]] && (($(date +%s) < deadline)); do sleep 0.5; done
[[ -z $procs ]] || fail "processes of the project's containers still running 30 s after down -v: $procs"
end
say "nothing of project $project left (containers, volumes, network, processes)"
say "OK"
