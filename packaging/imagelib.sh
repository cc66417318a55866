# imagelib.sh - what packaging/agent-image-check.sh (the agent's image) and
# deploy/image-check.sh (the broker's) share; the one copy, beside
# packaging/mkbase.sh, the base both build on. Sourced, not run, after the
# caller sets root (the repository) and check_name (the prefix of every line
# it prints). Sourcing finds crane and ko in TOOLS_BIN (default bin/tools),
# makes the scratch directory tmp and the list pids of background processes,
# both cleaned up on exit, and defines fail and say.

tools=${TOOLS_BIN:-$root/bin/tools}
crane=$tools/crane
ko=$tools/ko
for t in "$crane" "$ko"; do
	[[ -x $t ]] || { echo "$check_name: $t missing; run 'make deploy-tools'" >&2; exit 1; }
done

tmp=$(mktemp -d)
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	rm -rf "$tmp"
}
trap cleanup EXIT
fail() { echo "$check_name: FAIL: $*" >&2; exit 1; }
say() { echo "$check_name: $*"; }

# start_registry serves a throwaway registry on a loopback port the kernel
# picks and sets reg to its address.
start_registry() {
	"$crane" registry serve --address 127.0.0.1:0 >"$tmp/registry.log" 2>&1 &
	pids+=($!)
	local port=
	for _ in $(seq 50); do
		port=$(grep -o 'serving on port [0-9]*' "$tmp/registry.log" | awk '{print $4}' || true)
		[[ -n $port ]] && break
		sleep 0.1
	done
	[[ -n $port ]] || fail "registry did not start: $(cat "$tmp/registry.log")"
	reg=127.0.0.1:$port
}

# load_image TARBALL REF pushes an image tarball to REF, sets user and
# entry from its config, and unpacks its filesystem into $tmp/rootfs (the
# layer tar stays in $tmp/fs.tar, its paths in $tmp/files).
load_image() {
	"$crane" push "$1" "$2" >/dev/null 2>"$tmp/crane.log" || fail "crane push: $(cat "$tmp/crane.log")"
	"$crane" config "$2" >"$tmp/config.json"
	user=$(jq -r '.config.User // ""' "$tmp/config.json")
	entry=$(jq -r '.config.Entrypoint[0] // ""' "$tmp/config.json")
	mkdir "$tmp/rootfs"
	"$crane" export "$2" "$tmp/fs.tar" 2>"$tmp/crane.log" || fail "crane export: $(cat "$tmp/crane.log")"
	tar -x -C "$tmp/rootfs" --no-same-owner -f "$tmp/fs.tar" 2>/dev/null
	tar -t -f "$tmp/fs.tar" 2>/dev/null | sed 's|^/||' >"$tmp/files"
}

# check_shipped checks what every image of ours must be: its user is not
# root, no shell is anywhere in it, and its entrypoint is a static
# (CGO_ENABLED=0) Go binary. Sets uid, gid and bin (the entrypoint's path
# under $tmp/rootfs).
check_shipped() {
	uid=${user%%:*}
	gid=${user#*:}
	[[ -n $uid && $uid != 0 && $uid != root && $gid != 0 ]] || fail "image user is '${user}', want non-root"
	say "user $user"
	local shells
	shells=$(grep -E '(^|/)(bin|sbin)/(sh|bash|dash|ash|busybox)$' "$tmp/files" || true)
	[[ -z $shells ]] || fail "shell in image: $shells"
	say "no shell among $(wc -l <"$tmp/files") paths"
	[[ -n $entry ]] || fail "no entrypoint"
	bin=$tmp/rootfs$entry
	[[ -f $bin ]] || fail "entrypoint $entry not in the filesystem"
	if readelf -l "$bin" | grep -q 'INTERP'; then fail "$entry is dynamically linked"; fi
	go version -m "$bin" | grep -q 'CGO_ENABLED=0' || fail "$entry not built with CGO_ENABLED=0"
	say "$entry is static (no ELF interpreter, CGO_ENABLED=0)"
}
