# Soak test: the whole system for SOAK_DURATION (default 10m) under continuous
# STOW/QIDO/WADO through the site Orthanc and a seeded timeline of faults
# (broker SIGKILL, site Orthanc restarts, key rotations, token endpoint 5xx
# bursts and slow answers, Secret Manager outages, agent restarts); see
# testbed/soak. SOAK_SEED replays a timeline (default: random, printed).
# Included by the root Makefile (include mk/*.mk).
#
#   make soak                                  10 minutes
#   SOAK_DURATION=3m make soak                 what CI runs
#   SOAK_DURATION=10m SOAK_SEED=42 make soak   one timeline again

SOAK_DURATION ?= 10m
SOAK_SEED     ?=

.PHONY: soak

## soak: long run under load and faults; exits non-zero on any avoidable failure
soak: deps
	@bindir=$$(mktemp -d "$${TMPDIR:-/tmp}/orthanc-gcp-soak-bin.XXXXXX"); \
	trap 'rm -rf "$$bindir"' EXIT; \
	echo "soak: building soak, broker and agent"; \
	CGO_ENABLED=0 $(GO) build -trimpath -o "$$bindir/soak" ./testbed/cmd/soak && \
	CGO_ENABLED=0 $(GO) build -trimpath -o "$$bindir/broker" ./cmd/broker && \
	CGO_ENABLED=0 $(GO) build -trimpath -o "$$bindir/agent" ./cmd/agent && \
	SOAK_DURATION="$(SOAK_DURATION)" SOAK_SEED="$(SOAK_SEED)" "$$bindir/soak" --bin "$$bindir"
