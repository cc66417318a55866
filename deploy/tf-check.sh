#!/usr/bin/env bash
# tf-check.sh fmt|validate|test|lint - offline checks of terraform/.
#
# validate and test run against the schema-only google provider installed by
# `make tf-mirror` (TF_CLI_CONFIG_FILE points at its mirror), on a copy of
# terraform/ so no .terraform directory or lock file lands in the tree.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
tf=${TERRAFORM:-terraform}
mirror=${TF_MIRROR_DIR:-$root/bin/tf-mirror}
tflint=${TFLINT:-$root/bin/tools/tflint}
export CHECKPOINT_DISABLE=1 TF_IN_AUTOMATION=1 TF_INPUT=0
unset TF_CLI_CONFIG_FILE # set to the mirror's configuration where a provider is needed

if ! command -v "$tf" >/dev/null; then
	cat >&2 <<MSG
tf-check: terraform not found ($tf).
  Terraform >= 1.7 (1.11.4 is what CI uses) must be installed on the machine
  image at /usr/local/bin/terraform: CI is offline and cannot download it.
  Set TERRAFORM=/path/to/terraform to use another binary.
MSG
	exit 1
fi
ver=$("$tf" version -json | jq -r .terraform_version)
if [[ $(printf '%s\n1.7.0\n' "$ver" | sort -V | head -n1) != 1.7.0 ]]; then
	echo "tf-check: terraform $ver is too old; need >= 1.7 for mock_provider tests" >&2
	exit 1
fi

work() { # copy the module and example to a scratch dir, init both
	tmp=$(mktemp -d)
	trap 'rm -rf "$tmp"' EXIT
	cp -r "$root/terraform" "$tmp/"
	rm -rf "$tmp"/terraform/.terraform "$tmp"/terraform/examples/.terraform "$tmp"/terraform/.terraform.lock.hcl "$tmp"/terraform/examples/.terraform.lock.hcl
	[[ -s $mirror/terraformrc ]] || { echo "tf-check: no provider mirror at $mirror; run 'make tf-mirror'" >&2; exit 1; }
	export TF_CLI_CONFIG_FILE=$mirror/terraformrc
	for d in "$tmp/terraform" "$tmp/terraform/examples"; do
		"$tf" -chdir="$d" init -backend=false -no-color >"$tmp/init.log" 2>&1 || { cat "$tmp/init.log" >&2; exit 1; }
	done
}

case ${1:-} in
fmt)
	"$tf" fmt -check -recursive -diff "$root/terraform"
	echo "tf-check: terraform fmt OK"
	;;
validate)
	work
	"$tf" -chdir="$tmp/terraform" validate -no-color
	"$tf" -chdir="$tmp/terraform/examples" validate -no-color
	;;
test)
	work
	"$tf" -chdir="$tmp/terraform" test -no-color
	;;
lint)
	[[ -x $tflint ]] || { echo "tf-check: $tflint missing; run 'make deploy-tools'" >&2; exit 1; }
	# The terraform ruleset is bundled in tflint: nothing to download.
	(cd "$root/terraform" && "$tflint" --recursive --config="$root/terraform/.tflint.hcl" --format=compact)
	echo "tf-check: tflint OK"
	;;
*)
	echo "usage: tf-check.sh fmt|validate|test|lint" >&2
	exit 2
	;;
esac
