# Soak test: the whole system for SOAK_DURATION (default 10m) under continuous
# STOW/QIDO/WADO through the site Orthanc and a seeded timeline of faults
# (broker SIGKILL, site Orthanc restarts, key rotations, token endpoint 5xx
# bursts and slow answers, Secret Manager outages, agent restarts); see
# testbed/soak. SOAK_SEED replays a timeline (default: random, printed).
# Included by the root Makefile (include mk/*.mk).
#
# At the end it prints the fault timeline, each unavoidable failure in a
# line, every avoidable failure in full (the call and its times, each hop's
# HTTP status or error, the site Orthanc's failed job, the cloud front's
# answers, the agent's view of the store, the faults active or recently
# ended, the store's entry in Orthanc, and the agent's, broker's, fakes'
# and both Orthancs' log lines around it), the verdict, and "logs: DIR":
# the directory holding every log (agent, broker, tap, fakes, front, both
# Orthancs) and report.txt. SOAK_LOGS=DIR keeps them in a new
# DIR/soak-SEED-TIME whatever the verdict; without it they go to a
# temporary directory kept only when the run fails.
#
#   make soak                                  10 minutes
#   SOAK_DURATION=3m make soak                 what CI runs
#   SOAK_DURATION=10m SOAK_SEED=42 make soak   one timeline again
#   SOAK_LOGS=/var/tmp/soak make soak          keep the logs of every run

SOAK_DURATION ?= 10m
SOAK_SEED     ?=
SOAK_LOGS     ?=

.PHONY: soak

## soak: long run under load and faults; exits non-zero on any avoidable failure
soak: deps
	@bindir=$$(mktemp -d "$${TMPDIR:-/tmp}/orthanc-gcp-soak-bin.XXXXXX"); \
	trap 'rm -rf "$$bindir"' EXIT; \
	echo "soak: building soak, broker and agent"; \
	CGO_ENABLED=0 $(GO) build -trimpath -o "$$bindir/soak" ./testbed/cmd/soak && \
	CGO_ENABLED=0 $(GO) build -trimpath -o "$$bindir/broker" ./cmd/broker && \
	CGO_ENABLED=0 $(GO) build -trimpath -o "$$bindir/agent" ./cmd/agent && \
	SOAK_DURATION="$(SOAK_DURATION)" SOAK_SEED="$(SOAK_SEED)" SOAK_LOGS="$(SOAK_LOGS)" "$$bindir/soak" --bin "$$bindir"
