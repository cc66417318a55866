# Deploy-as-code targets: the broker's Cloud Run image, Cloud Build steps and
# offline checks of terraform/ (scripts in deploy/). Included by the root
# Makefile (include mk/*.mk). Shipping the agent is mk/package.mk (packaging/).
#
#   make deploy-check    everything below that runs offline (CI)
#   make tf-fmt tf-validate tf-test tf-lint tfschema-test cloudbuild-test image-check
#   make image-push      Cloud Build step "image" (needs KO_DOCKER_REPO, registry auth)
#   make cloudrun-deploy Cloud Build step "deploy" (needs gcloud, PROJECT REGION SERVICE)

GO              ?= go
DEPLOY_BIN      := $(CURDIR)/bin
TOOLS_BIN       := $(DEPLOY_BIN)/tools
TF_MIRROR_DIR   := $(DEPLOY_BIN)/tf-mirror
CDKTF_TGZ       := $(DEPLOY_BIN)/cache/cdktf-provider-google-16.12.1.tgz
GOOGLE_PROVIDER := 6.50.0
TFSCHEMA_MOD    := tools/tfschema
TFSCHEMA_SRC    := $(shell find $(TFSCHEMA_MOD) -name '*.go' -o -name 'go.mod' -o -name 'go.sum')
IMAGE_REF_FILE  ?= image.ref
IMAGE_TAGS      ?= latest

# Tools pinned by tools/tfschema/go.mod (tool directives), never the root go.mod.
TOOL_PKG_ko     := github.com/google/ko
TOOL_PKG_crane  := github.com/google/go-containerregistry/cmd/crane
TOOL_PKG_tflint := github.com/terraform-linters/tflint
TOOL_PKG_tfschema := ./cmd/tfschema
TOOL_PKG_terraform-provider-google := ./cmd/terraform-provider-google

.PHONY: deploy-check deploy-tools tf-fmt tf-validate tf-test tf-lint tf-mirror tfschema-test \
	cloudbuild-test image-check image-push cloudrun-deploy

## deploy-check: offline checks of terraform/, cloudbuild.yaml and the image
deploy-check: tf-fmt tf-validate tf-test tf-lint tfschema-test cloudbuild-test image-check

deploy-tools: $(TOOLS_BIN)/ko $(TOOLS_BIN)/crane $(TOOLS_BIN)/tflint

$(TOOLS_BIN)/%: $(TFSCHEMA_SRC)
	@mkdir -p $(TOOLS_BIN)
	cd $(TFSCHEMA_MOD) && CGO_ENABLED=0 $(GO) build -o $@ $(TOOL_PKG_$*)

$(CDKTF_TGZ): deploy/fetch-cdktf.sh
	deploy/fetch-cdktf.sh $@

## tf-mirror: schema-only google provider (schema derived from the CDKTF package) in a filesystem mirror
tf-mirror: $(TF_MIRROR_DIR)/terraformrc

$(TF_MIRROR_DIR)/terraformrc: $(CDKTF_TGZ) $(TOOLS_BIN)/tfschema $(TOOLS_BIN)/terraform-provider-google
	$(TOOLS_BIN)/tfschema -package $(CDKTF_TGZ) -provider-version $(GOOGLE_PROVIDER) \
		-provider-bin $(TOOLS_BIN)/terraform-provider-google -mirror $(TF_MIRROR_DIR) >/dev/null

tf-fmt:
	deploy/tf-check.sh fmt

tf-validate: tf-mirror
	TF_MIRROR_DIR=$(TF_MIRROR_DIR) deploy/tf-check.sh validate

tf-test: tf-mirror
	TF_MIRROR_DIR=$(TF_MIRROR_DIR) deploy/tf-check.sh test

tf-lint: $(TOOLS_BIN)/tflint
	TFLINT=$(TOOLS_BIN)/tflint deploy/tf-check.sh lint

## tfschema-test: unit tests of the schema derivation, and proof that validate catches broken configs
tfschema-test: $(CDKTF_TGZ)
	cd $(TFSCHEMA_MOD) && TFSCHEMA_PACKAGE=$(CDKTF_TGZ) $(GO) test -count=1 ./...

## cloudbuild-test: every cloudbuild.yaml step maps to a make target; terraform/'s log filters match the broker's real lines
cloudbuild-test:
	$(GO) test -count=1 ./deploy/

## image-check: build the broker image offline (ko + packaging/mkbase.sh's base), check user/shell/static, run /healthz
image-check: $(TOOLS_BIN)/ko $(TOOLS_BIN)/crane
	TOOLS_BIN=$(TOOLS_BIN) deploy/image-check.sh

## image-push: Cloud Build step "image": ko build on distroless static:nonroot, push to KO_DOCKER_REPO
image-push: $(TOOLS_BIN)/ko
	@test -n "$(KO_DOCKER_REPO)" || { echo "image-push: set KO_DOCKER_REPO=REGION-docker.pkg.dev/PROJECT/REPOSITORY/broker" >&2; exit 1; }
	KO_DOCKER_REPO=$(KO_DOCKER_REPO) $(TOOLS_BIN)/ko build --bare --platform=linux/amd64 \
		--tags=$(IMAGE_TAGS) --image-refs=$(IMAGE_REF_FILE) ./cmd/broker

## cloudrun-deploy: Cloud Build step "deploy": roll the service to the pushed image
cloudrun-deploy:
	deploy/cloudrun-deploy.sh
