#!/bin/sh
# fakes.sh: command of the test-only "fakes" service (override.yml) of make
# compose-test. Runs the Google fakes (testbed/cmd/fakegcp) and the broker
# (cmd/broker) in the Orthanc container's network namespace, on its loopback
# only. packaging/compose-test.sh bind-mounts /fakes: the static fakegcp and
# broker binaries, setup.json (fakegcp's setup), policy.json (the broker's
# policy, the agent's public key enrolled) and ports.env (FAKES_*_PORT).
# Then the broker is the container's main process; fakegcp, its child, goes
# when the container stops.
set -eu
. /fakes/ports.env
state=/run/fakes
mkdir -p "$state"
/fakes/fakegcp --setup /fakes/setup.json --state "$state/state.json" --out-dir "$state" \
	--token-addr "127.0.0.1:$FAKES_TOKEN_PORT" --secretmanager-addr "127.0.0.1:$FAKES_SECRETMANAGER_PORT" \
	--iam-addr "127.0.0.1:$FAKES_IAM_PORT" --metadata-addr "127.0.0.1:$FAKES_METADATA_PORT" \
	--dicomweb-addr "127.0.0.1:$FAKES_DICOMWEB_PORT" --admin-addr "127.0.0.1:$FAKES_ADMIN_PORT" &
i=0
while [ ! -s "$state/state.json" ]; do
	kill -0 $! 2>/dev/null || { echo "fakes: fakegcp exited" >&2; exit 1; }
	i=$((i + 1))
	[ $i -le 300 ] || { echo "fakes: fakegcp did not write its state in 30 s" >&2; exit 1; }
	sleep 0.1
done
echo "fakes: Google fakes up; starting the broker on 127.0.0.1:$FAKES_BROKER_PORT" >&2
exec env -i PATH=/usr/bin:/bin HOME=/run/fakes TZ=UTC \
	PORT="$FAKES_BROKER_PORT" BROKER_LISTEN_HOST=127.0.0.1 BROKER_CONFIG=/fakes/policy.json BROKER_REFRESH=1s \
	BROKER_SECRETMANAGER_ENDPOINT="127.0.0.1:$FAKES_SECRETMANAGER_PORT" \
	BROKER_IAMCREDENTIALS_ENDPOINT="http://127.0.0.1:$FAKES_IAM_PORT" \
	GCE_METADATA_HOST="127.0.0.1:$FAKES_METADATA_PORT" \
	/fakes/broker
