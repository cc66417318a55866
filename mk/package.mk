# Shipping the agent the way sites install software: Debian packages (nfpm,
# no Docker), the agent's container image (ko, no Docker daemon) and a
# docker compose file that runs it beside Orthanc. Included by the root
# Makefile (include mk/*.mk). Everything these targets run lives in
# packaging/; the broker on Google Cloud is mk/deploy.mk and deploy/.
#
#   make package            dist/orthanc-gcp-agent_<version>_{amd64,arm64}.deb
#   make package-check      install the amd64 .deb for real (dpkg -i in a cached
#                           debootstrap root, chroot; needs root)
#   make agent-image        dist/orthanc-gcp-agent-image_amd64.tar (docker load;
#                           base gcr.io/distroless/static:nonroot, needs the internet)
#   make agent-image-check  build the image offline and check user, shell, binary
#   make compose-check      packaging/docker-compose.yml: Compose schema and model
#                           (compose-go, Docker Compose's loader) and the
#                           structure this project promises (no Docker)
#   make compose-test       run packaging/docker-compose.yml as a site does, with
#                           Docker Compose v2 (built from tools/compose/go.mod)
#                           against podman's Docker API: keygen profile, up -d,
#                           run --rm agent once, exec agent status, podman
#                           healthcheck run, the entry in Orthanc, down -v. The
#                           agent image is agent-image-check's; Orthanc is a
#                           stand-in built from Debian's packages (not
#                           orthancteam/orthanc, which cannot be pulled here);
#                           the broker and Google fakes run in Orthanc's network
#                           namespace (packaging/compose-test/override.yml).
#                           Needs root; podman, runc, Compose and the Debian root
#                           are installed and cached by scripts/container-deps.sh
#   make rules-check        packaging/orthanc-gcp-agent.rules.yml, the agent's
#                           Prometheus alerting rules: promtool check rules and
#                           promtool test rules (Debian's prometheus package)
#
# VERSION defaults to packaging/version.sh (git describe as a Debian version);
# `make package VERSION=1.2.3` overrides it.

GO             ?= go
PKG_DIST       := $(CURDIR)/dist
PKG_TOOLS_BIN  := $(CURDIR)/bin/tools
NFPM           := $(PKG_TOOLS_BIN)/nfpm
# packaging/composecheck is a module of its own (compose-go stays out of go.mod).
COMPOSECHECK   := $(PKG_TOOLS_BIN)/composecheck
# Built from tools/tfschema/go.mod (its `tool` directives) by mk/deploy.mk's
# $(TOOLS_BIN)/% rule, like ko and crane.
TOOL_PKG_nfpm  := github.com/goreleaser/nfpm/v2/cmd/nfpm
PKG_ARCHES     := amd64 arm64
# Computed once, when first used.
PKG_VERSION     = $(eval PKG_VERSION := $(shell VERSION='$(VERSION)' packaging/version.sh))$(PKG_VERSION)

# promtool comes with Debian's prometheus package.
PROMTOOL       ?= promtool
RULES          := packaging/orthanc-gcp-agent.rules.yml
RULES_TEST     := packaging/orthanc-gcp-agent.rules.test.yml

.PHONY: package package-check agent-image agent-image-check compose-check compose-test rules-check

## package: the agent's .deb files (static binary, systemd unit, conffile, maintainer scripts)
package: $(NFPM)
	@test -n "$(PKG_VERSION)" || { echo "package: no valid version (packaging/version.sh)" >&2; exit 1; }
	rm -f $(PKG_DIST)/orthanc-gcp-agent_*.deb
	VERSION='$(PKG_VERSION)' NFPM=$(NFPM) GO=$(GO) DIST=$(PKG_DIST) packaging/build-deb.sh $(PKG_ARCHES)

## package-check: dpkg -i / upgrade / remove / purge the amd64 .deb in a clean Debian root
package-check: package
	packaging/package-test.sh $(PKG_DIST)/orthanc-gcp-agent_$(PKG_VERSION)_amd64.deb

## agent-image: the agent image as a docker-loadable tarball tagged orthanc-gcp-agent:latest and :<version>
agent-image: $(PKG_TOOLS_BIN)/ko
	@mkdir -p $(PKG_DIST)
	AGENT_VERSION='$(PKG_VERSION)' KO_DOCKER_REPO=orthanc-gcp-agent $(PKG_TOOLS_BIN)/ko build --push=false --bare \
		--sbom=none --platform=linux/amd64 --tags=latest,$(shell VERSION='$(PKG_VERSION)' packaging/version.sh --image-tag) \
		--tarball=$(PKG_DIST)/orthanc-gcp-agent-image_amd64.tar ./cmd/agent

## agent-image-check: build the agent image offline (ko + local base); check user, no shell, static, version runs
agent-image-check: $(PKG_TOOLS_BIN)/ko $(PKG_TOOLS_BIN)/crane
	TOOLS_BIN=$(PKG_TOOLS_BIN) AGENT_VERSION='$(PKG_VERSION)' packaging/agent-image-check.sh

$(COMPOSECHECK): $(wildcard packaging/composecheck/*.go) packaging/composecheck/go.mod packaging/composecheck/go.sum
	@mkdir -p $(PKG_TOOLS_BIN)
	cd packaging/composecheck && CGO_ENABLED=0 $(GO) build -o $@ .

## compose-check: packaging/docker-compose.yml is a valid Compose file with the promised structure
compose-check: $(COMPOSECHECK)
	GO=$(GO) COMPOSECHECK=$(COMPOSECHECK) packaging/compose-check.sh

## compose-test: docker-compose.yml run for real (Docker Compose v2 + podman), the agent reaching Orthanc
compose-test: agent-image-check
	GO=$(GO) IMAGE_TARBALL=$(CURDIR)/bin/image/agent.tar packaging/compose-test.sh

## rules-check: the agent's alerting rules are valid and fire as their tests say (promtool check/test rules)
rules-check:
	@command -v $(PROMTOOL) >/dev/null || { echo "rules-check: $(PROMTOOL) not found: apt-get install --no-install-recommends prometheus (Debian ships promtool in it)" >&2; exit 1; }
	$(PROMTOOL) check rules $(RULES)
	$(PROMTOOL) test rules $(RULES_TEST)
