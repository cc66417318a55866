# orthanc-gcp-broker. `make demo` runs the whole system end to end;
# `make test` runs every test (installing Orthanc first if it is missing).
SHELL := /bin/bash
export PATH := $(PATH):/usr/local/go/bin:$(HOME)/go/bin
GO ?= go
# An execution count, not a duration: Go 1.26's fuzz coordinator can report a
# spurious "context deadline exceeded" when a -fuzztime duration ends under
# CPU contention (golang/go#75804, fixed in 1.27); a count has no deadline.
FUZZTIME ?= 100000x
UNIT_PKGS = $(shell $(GO) list ./... | grep -v -e /e2e -e /testbed/orthancproc -e /testbed/wintest)

.PHONY: all build test test-unit test-e2e lint fuzz bench bench-fleet demo deps clean

all: build

## build: static binaries of the broker, the agent and the fakes into bin/
build:
	CGO_ENABLED=0 $(GO) build -trimpath -o bin/ ./cmd/broker ./cmd/agent ./testbed/cmd/fakegcp

## test: lint, the agent's alerting rules (promtool), unit and integration
## tests (race detector), end-to-end tests with real Orthanc, brief fuzzing,
## the offline deploy checks, the compose file run with podman (compose-test)
## and the agent's tests under wine (windows-test)
test: deps lint rules-check test-unit test-e2e fuzz deploy-check package-check agent-image-check compose-check compose-test windows-check windows-test

## deps: install Orthanc, its DICOMweb plugin and dcmtk if missing (apt)
deps:
	scripts/install-deps.sh

## lint: gofmt and go vet must be clean
lint:
	@unformatted=$$(gofmt -l $$(git ls-files '*.go')); \
	  if [ -n "$$unformatted" ]; then echo "gofmt needed:"; echo "$$unformatted"; exit 1; fi
	$(GO) vet ./...

## test-unit: every package but e2e, with the race detector
test-unit:
	$(GO) test -race -count=1 -timeout 15m $(UNIT_PKGS)

## test-e2e: the whole system with two real Orthancs, on each Orthanc
## generation (ORTHANC_GENERATIONS, default bookworm trixie sid)
test-e2e:
	GO=$(GO) scripts/e2e-matrix.sh

## fuzz: every fuzz target in the tree for FUZZTIME executions each
## (TestMakeFuzzRunsEveryTarget fails when a func Fuzz... is not listed here)
FUZZ_TARGETS = \
	./agent/brokerclient:FuzzTokens \
	./agent/config:FuzzParse \
	./broker/agentauth:FuzzVerify \
	./broker/api:FuzzTokenRequest \
	./broker/clientaddr:FuzzFrom \
	./broker/policy:FuzzParse \
	./internal/strictjson:FuzzUnmarshal
fuzz:
	@set -e; for t in $(FUZZ_TARGETS); do \
	  echo "fuzz $${t#*:} in $${t%%:*}"; \
	  $(GO) test -run='^$$' -fuzz="^$${t#*:}\$$" -fuzztime=$(FUZZTIME) "$${t%%:*}"; \
	done

## bench: load generators and Go benchmarks; figures go to BENCHMARKS.md
bench:
	CGO_ENABLED=0 $(GO) build -trimpath -o bin/broker ./cmd/broker
	$(GO) run ./bench/broker -broker-bin bin/broker -out BENCHMARKS.md
	$(GO) test -run='^$$' -bench=. -benchtime=20000x -count=3 ./broker/agentauth | \
	  $(GO) run ./bench/gobench -section agentauth -title "Assertion verification vs bare ed25519.Verify" \
	    -cmd "go test -run='^\$$' -bench=. -benchtime=20000x -count=3 ./broker/agentauth"
	$(GO) test -run='^$$' -bench=MintServiceAccountKey -benchtime=300x -count=3 -cpu=1 ./broker/mint | \
	  $(GO) run ./bench/gobench -section mint -title "Mint: one JWT-bearer grant against the fake token endpoint" \
	    -cmd "go test -run='^\$$' -bench=MintServiceAccountKey -benchtime=300x -count=3 -cpu=1 ./broker/mint"
	$(GO) run ./bench/agent -out BENCHMARKS.md
	taskset -c 1 $(GO) test -run='^$$' -bench='FullParse|FirstLoad|Reload' -benchtime=20x -cpu=1 -benchmem ./broker/policysrc | \
	  $(GO) run ./bench/gobench -section policy-reload -title "Policy reload by change" \
	    -cmd "taskset -c 1 go test -run='^\$$' -bench='FullParse|FirstLoad|Reload' -benchtime=20x -cpu=1 -benchmem ./broker/policysrc"

## bench-fleet: one broker pinned to one core (taskset) from 10 to 10,000 agents; several minutes
bench-fleet:
	CGO_ENABLED=0 $(GO) build -trimpath -o bin/broker ./cmd/broker
	$(GO) run ./bench/fleet -broker-bin bin/broker -out BENCHMARKS.md

## demo: the whole system end to end on this machine
demo:
	scripts/demo.sh

clean:
	rm -rf bin

# More targets in mk/: deploy.mk (the broker on Google Cloud: terraform, image,
# Cloud Build), package.mk (shipping the agent: .deb, image, compose), soak.mk,
# windows.mk.
-include mk/*.mk
