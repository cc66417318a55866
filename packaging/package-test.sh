#!/usr/bin/env bash
# package-test.sh DEB - install the agent's amd64 .deb for real, with dpkg,
# into a clean Debian root of its own, and check what the package promises:
# user, paths, modes and owners, conffile, service neither enabled nor
# started, the binary runs as the service user, reinstall and upgrades (an
# operator's edit of agent.json survives --force-confold; --force-confnew
# replaces it with the right owner and mode), remove keeps the configuration
# and the key, purge deletes them and the user, maintainer scripts that run
# twice, and `systemd-analyze verify` of the unit.
#
# The root is `debootstrap --variant=minbase --include=systemd,<the package's
# Depends> SUITE`, made once and cached in $PKGTEST_CACHE/pkgtest-SUITE (made
# again when the Depends change); each run works on a fresh copy (cp -a onto
# a tmpfs) that is discarded afterwards.
#
# Environment: PKGTEST_SUITE (default trixie; bookworm works too),
# PKGTEST_CACHE (default /var/cache/orthanc-gcp-broker/roots),
# PKGTEST_MIRROR (default debootstrap's), PKGTEST_KEEP=1 leaves the root
# mounted for a post-mortem. Needs root (chroot, mount).
set -euo pipefail

deb=${1:?usage: package-test.sh path/to/orthanc-gcp-agent_VERSION_amd64.deb}
[[ -f $deb ]] || { echo "package-test: $deb: no such file (make package)" >&2; exit 1; }
deb=$(realpath "$deb")
suite=${PKGTEST_SUITE:-trixie}
cache=${PKGTEST_CACHE:-/var/cache/orthanc-gcp-broker/roots}
base=$cache/pkgtest-$suite
# What the root holds besides minbase: systemd (systemctl, systemd-analyze)
# and the package's Depends (first alternative, no version), so dpkg -i finds
# them installed. A change here remakes the root.
include=systemd,$(dpkg-deb -f "$deb" Depends | tr ',' '\n' | sed -E 's/\|.*//; s/\(.*\)//; s/[[:space:]]//g' | grep . | sort -u | paste -sd,)
[[ $(id -u) == 0 ]] || { echo "package-test: needs root (debootstrap, chroot, mount)" >&2; exit 1; }

NAME=orthanc-gcp-agent
BIN=/usr/bin/$NAME
UNIT=/usr/lib/systemd/system/$NAME.service
CONF_DIR=/etc/$NAME
CONF=$CONF_DIR/agent.json
STATE=/var/lib/$NAME
KEY=$STATE/agent.key
RULES=/usr/share/$NAME/$NAME.rules.yml

t0=$SECONDS
step=0
say() { echo "package-test: $*"; }
stepn() { step=$((step + 1)); echo "package-test: [$step] $* ($((SECONDS - t0))s)"; }
fail() {
	echo "package-test: FAIL (step $step): $*" >&2
	exit 1
}

# ---- the cached root -------------------------------------------------------
make_root() {
	if ! command -v debootstrap >/dev/null; then
		say "installing debootstrap"
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap >/dev/null
	fi
	local tmp=$base.tmp.$$ log=$cache/pkgtest-$suite.debootstrap.log attempt
	for attempt in 1 2 3; do
		rm -rf --one-file-system "$tmp"
		say "debootstrap --variant=minbase --include=$include $suite (attempt $attempt, log $log)"
		if debootstrap --variant=minbase --include="$include" "$suite" "$tmp" ${PKGTEST_MIRROR:-} >"$log" 2>&1; then
			[[ -x $tmp/usr/bin/dpkg && -x $tmp/usr/bin/systemctl ]] || { say "debootstrap finished without dpkg or systemd"; continue; }
			rm -rf "$tmp/var/cache/apt/archives/"*.deb "$tmp/var/lib/apt/lists/"*_Packages 2>/dev/null || true
			echo "$include $(date -u +%FT%TZ)" >"$tmp/.pkgtest-complete"
			rm -rf --one-file-system "$base"
			mv "$tmp" "$base"
			return 0
		fi
		say "debootstrap failed: $(tail -n 3 "$log" | tr '\n' ' ')"
		sleep $((attempt * 10))
	done
	rm -rf --one-file-system "$tmp"
	return 1
}

mkdir -p "$cache"
exec 9>"$base.lock"
flock 9 # one builder at a time; copies are taken under the lock too
if [[ $(cut -d' ' -f1 "$base/.pkgtest-complete" 2>/dev/null) != "$include" ]]; then
	stepn "make the cached $suite root"
	make_root || fail "could not debootstrap $suite"
fi

# ---- a fresh copy, chroot plumbing -----------------------------------------
mounts=()
cleanup() {
	local rc=$? m i
	if [[ -n ${PKGTEST_KEEP:-} ]]; then
		echo "package-test: kept $r (mounted); afterwards: umount -R $r && rm -rf $work" >&2
		exit "$rc"
	fi
	for ((i = ${#mounts[@]} - 1; i >= 0; i--)); do
		m=${mounts[$i]}
		umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
	done
	if findmnt -rn -o TARGET | grep -q "^$work/"; then
		echo "package-test: mounts left under $work; not deleting it" >&2
	else
		rm -rf --one-file-system "$work"
	fi
	exit "$rc"
}
work=$(mktemp -d /var/tmp/pkgtest.XXXXXX)
trap cleanup EXIT
trap 'exit 130' INT TERM
r=$work/root
stepn "fresh copy of $base (made $(cut -d' ' -f2 "$base/.pkgtest-complete")) on a tmpfs"
# In memory: no disk I/O for the copy, dpkg's writes or the clean-up.
mkdir "$r"
mount -t tmpfs -o mode=0755,size=2g pkgtest "$r"
mounts+=("$r")
cp -a "$base/." "$r/"
flock -u 9
# dpkg's fsyncs only slow a throwaway root down.
echo force-unsafe-io >"$r/etc/dpkg/dpkg.cfg.d/pkgtest-unsafe-io"

mount -t proc proc "$r/proc"
mounts+=("$r/proc")
# /dev: a tmpfs with only the nodes dpkg and the scripts use, bound from the host.
mount -t tmpfs -o mode=0755,nosuid dev "$r/dev"
mounts+=("$r/dev")
for n in null zero full random urandom tty; do
	touch "$r/dev/$n"
	mount --bind "/dev/$n" "$r/dev/$n"
	mounts+=("$r/dev/$n")
done
ln -s /proc/self/fd "$r/dev/fd"

# inroot CMD... - run in the root with a clean environment. /usr/local/sbin is
# first so the systemctl stub below sees every call the maintainer scripts make.
inroot() {
	chroot "$r" /usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
		LANG=C.UTF-8 DEBIAN_FRONTEND=noninteractive "$@"
}
# as_agent CMD... - run as the service user (its uid, gid and groups only).
as_agent() { inroot setpriv --reuid="$NAME" --regid="$NAME" --init-groups "$@"; }
perm() { inroot stat -c '%a %U:%G' "$1"; }
expect_perm() {
	local got
	got=$(perm "$1") || fail "$1 is missing"
	[[ $got == "$2" ]] || fail "$1 is '$got', want '$2'"
	say "  $1 $got"
}
absent() { [[ ! -e $r$1 && ! -L $r$1 ]] || fail "$1 still exists"; }
no_agent_process() {
	local p
	for p in /proc/[0-9]*; do
		[[ $(readlink "$p/exe" 2>/dev/null) == "$r$BIN" ]] && fail "an agent process runs (pid ${p#/proc/}): $*"
	done
	return 0
}
dpkg_state() { inroot dpkg-query -W -f='${db:Status-Abbrev}${Version}' "$NAME" 2>/dev/null || true; }
md5() { inroot md5sum "$1" | cut -d' ' -f1; }

# The maintainer scripts only talk to systemd when it runs: pretend it does
# and record every systemctl call with a stub in front of the real one.
mkdir -p "$r/run/systemd/system"
cat >"$r/usr/local/sbin/systemctl" <<'EOF'
#!/bin/sh
echo "$*" >>/tmp/systemctl.log
EOF
chmod 0755 "$r/usr/local/sbin/systemctl"
systemctl_calls() {
	local f=$r/tmp/systemctl.log
	if [[ -f $f ]]; then cat "$f"; fi
	rm -f "$f"
}
# expect_calls WANT - the systemctl calls since the last check, one per line.
expect_calls() {
	local got
	got=$(systemctl_calls | tr '\n' ';')
	[[ $got == "$1" ]] || fail "maintainer scripts called systemctl '$got', want '$1'"
	say "  systemctl calls: ${1:-none}"
}
# real_systemctl ARGS - the real one, offline (as in any chroot).
real_systemctl() {
	local rc=0
	rmdir "$r/run/systemd/system"
	inroot /usr/bin/systemctl "$@" || rc=$?
	mkdir -p "$r/run/systemd/system"
	return $rc
}

cp "$deb" "$r/tmp/pkg.deb"
version=$(dpkg-deb -f "$deb" Version)
arch=$(dpkg-deb -f "$deb" Architecture)
[[ $arch == amd64 ]] || fail "$deb is $arch, this test runs amd64"
say "package $NAME $version on $suite ($(inroot dpkg-query -W -f='${Version}' dpkg | sed 's/^/dpkg /'))"

# ---- install -----------------------------------------------------------------
stepn "dpkg -i $(basename "$deb")"
inroot dpkg -i /tmp/pkg.deb || fail "dpkg -i failed"
[[ $(dpkg_state) == "ii $version" ]] || fail "dpkg state '$(dpkg_state)', want 'ii $version'"
expect_calls "daemon-reload;"
no_agent_process "after install"

stepn "system user $NAME"
pw=$(inroot getent passwd "$NAME") || fail "no user $NAME"
IFS=: read -r _ _ uid gid _ home shell <<<"$pw"
((uid < 1000)) || fail "uid $uid is not a system uid (< 1000)"
[[ $shell == /usr/sbin/nologin ]] || fail "shell $shell, want /usr/sbin/nologin"
[[ -x $r$shell ]] || fail "$shell does not exist in the root"
[[ $home == "$STATE" ]] || fail "home $home, want $STATE"
grp=$(inroot getent group "$NAME") || fail "no group $NAME"
[[ $(cut -d: -f3 <<<"$grp") == "$gid" ]] || fail "user's gid $gid is not group $NAME ($grp)"
if inroot setpriv --reuid="$NAME" --regid="$NAME" --init-groups "$shell" -c true >/dev/null 2>&1; then
	fail "$shell let the user run a command"
fi
say "  $pw"

stepn "paths, modes and owners"
expect_perm "$BIN" "755 root:root"
expect_perm "$UNIT" "644 root:root"
expect_perm "$CONF_DIR" "750 root:$NAME"
expect_perm "$CONF" "640 root:$NAME"
expect_perm "$STATE" "700 $NAME:$NAME"
expect_perm "$RULES" "644 root:root"
readelf -l "$r$BIN" | grep -q INTERP && fail "$BIN is dynamically linked"
grep -qx "ExecStart=$BIN run --config $CONF" "$r$UNIT" || fail "$UNIT: ExecStart is not '$BIN run --config $CONF'"
grep -qx "User=$NAME" "$r$UNIT" || fail "$UNIT: no User=$NAME"
# The issue's name for the unit is /lib/systemd/system/...: on merged-/usr
# Debian (bookworm and later) /lib is /usr/lib, so the packaged path is that
# file; shipping it under /lib makes dpkg warn on purge ("not empty").
[ "$(readlink -f "$r/lib/systemd/system/$NAME.service")" = "$(readlink -f "$r$UNIT")" ] \
	|| fail "/lib/systemd/system/$NAME.service is not the packaged unit"
listed=$(inroot dpkg -L "$NAME")
for p in "$BIN" "$UNIT" "$CONF" /usr/share/doc/$NAME/agent.md "$RULES"; do
	grep -qx "$p" <<<"$listed" || fail "dpkg -L does not list $p"
done
grep -q "^$STATE" <<<"$listed" && fail "dpkg -L lists $STATE (it is the maintainer scripts')"
# The service's group can read the configuration; nobody else can.
as_agent cat "$CONF" >/dev/null || fail "$NAME cannot read $CONF"
if inroot setpriv --reuid=nobody --regid=nogroup --clear-groups cat "$CONF" >/dev/null 2>&1; then
	fail "user nobody can read $CONF"
fi
say "  $CONF readable by $NAME, not by nobody"

stepn "conffile"
conffiles=$(inroot dpkg-query -W -f='${Conffiles}' "$NAME" | sed '/^[[:space:]]*$/d')
read -r cpath csum <<<"$conffiles"
[[ $cpath == "$CONF" ]] || fail "conffiles '$conffiles', want $CONF"
[[ $csum == "$(md5 "$CONF")" ]] || fail "conffile md5 $csum differs from the installed file"
say "  $cpath $csum"

stepn "service neither enabled nor started"
state=$(real_systemctl is-enabled "$NAME.service" 2>&1 || true)
[[ $state == disabled ]] || fail "systemctl is-enabled: '$state', want 'disabled'"
ls "$r"/etc/systemd/system/*.wants/"$NAME.service" >/dev/null 2>&1 && fail "an enable symlink exists"
no_agent_process "after install"
say "  is-enabled: $state; no agent process; postinst made no start/enable call"

if inroot test -x /usr/bin/systemd-analyze; then
	stepn "systemd-analyze verify $UNIT"
	out=$(inroot systemd-analyze verify "$UNIT" 2>&1) || fail "systemd-analyze verify:
$out"
	[[ -z $out ]] || fail "systemd-analyze verify warns:
$out"
	say "  clean"
	if out=$(inroot systemd-analyze security --offline=yes --no-pager "$UNIT" 2>&1); then
		say "  $(tail -n 1 <<<"$out" | sed 's/^→ *//')"
	else
		say "  (systemd-analyze security --offline not available here)"
	fi
else
	say "SKIP systemd-analyze verify: no systemd-analyze in the $suite root"
fi

# ---- run the binary as the service user -------------------------------------
stepn "$NAME version (as $NAME)"
v=$(as_agent "$BIN" version) || fail "version failed"
[[ $v == "$NAME $version "* ]] || fail "version printed '$v', want '$NAME $version ...'"
say "  $v"

stepn "the example agent.json: refused only for its placeholders Broker.Url, Broker.AgentId"
# once_err CONFIG - stderr of `once` as the service user (it must fail).
once_err() {
	local out
	if out=$(as_agent env AGENT_LOG_LEVEL=error timeout 60 "$BIN" once --config "$1" 2>&1); then
		echo "once --config $1 succeeded (exit 0)"
		return
	fi
	grep -v '^{' <<<"$out" || true # the message, without the JSON log lines
}
err=$(once_err "$CONF")
[[ $err == *"config: Broker.Url: is required"* ]] || fail "installed agent.json: '$err', want Broker.Url is required"
say "  as installed: $err"
fill() { # fill SRC DST URL AGENTID
	sed -e "s|\"Url\": \"\",|\"Url\": \"$3\",|" -e "s|\"AgentId\": \"\",|\"AgentId\": \"$4\",|" "$r$1" >"$r$2"
	chmod 0644 "$r$2"
}
fill "$CONF" /tmp/url-only.json "https://127.0.0.1:1" ""
err=$(once_err /tmp/url-only.json)
[[ $err == *"config: Broker.AgentId: is required"* ]] || fail "with Broker.Url filled: '$err', want Broker.AgentId is required"
say "  Url filled: $err"

stepn "keygen --out $KEY (as $NAME)"
pub=$(as_agent "$BIN" keygen --out "$KEY") || fail "keygen failed"
[[ $pub =~ ^ed25519:[A-Za-z0-9+/]{43}=$ ]] || fail "keygen printed '$pub'"
expect_perm "$KEY" "600 $NAME:$NAME"
if as_agent "$BIN" keygen --out "$KEY" >/dev/null 2>&1; then fail "keygen overwrote $KEY"; fi
say "  $pub (a second keygen refuses to overwrite)"
keysum=$(md5 "$KEY")

fill "$CONF" /tmp/filled.json "https://127.0.0.1:1" "pkgtest"
err=$(once_err /tmp/filled.json)
[[ $err == *"config"* && $err != *"agent once:"* ]] && fail "with Broker.Url and Broker.AgentId filled, the configuration is still refused: $err"
[[ $err == "agent once:"* ]] || fail "once with a filled config: '$err', want a sync failure (no broker on 127.0.0.1:1)"
say "  both filled: configuration accepted; sync fails as it should without a broker: ${err:0:100}"

# ---- reinstall, upgrades -----------------------------------------------------
snapshot() { echo "$(inroot getent passwd "$NAME") $(md5 "$KEY") $(perm "$STATE") $(perm "$CONF") $(md5 "$CONF")"; }
before=$(snapshot)
stepn "dpkg -i the same package again"
inroot dpkg -i /tmp/pkg.deb >/dev/null || fail "reinstall failed"
[[ $(dpkg_state) == "ii $version" ]] || fail "dpkg state '$(dpkg_state)'"
expect_calls "daemon-reload;try-restart $NAME.service;"
[[ $(snapshot) == "$before" ]] || fail "reinstall changed user, key, modes or config:
 before: $before
 after:  $(snapshot)"
no_agent_process "after reinstall"
say "  user, key, modes and agent.json unchanged; a stopped service stays stopped"

stepn "postinst configure run twice by hand"
inroot /var/lib/dpkg/info/$NAME.postinst configure "$version" >/dev/null || fail "postinst configure (1)"
inroot /var/lib/dpkg/info/$NAME.postinst configure "$version" >/dev/null || fail "postinst configure (2)"
systemctl_calls >/dev/null
[[ $(snapshot) == "$before" ]] || fail "postinst changed user, key, modes or config"
say "  no change"

# repack SUFFIX SED - the same package, version VERSION+SUFFIX, with the
# maintainer's agent.json edited by SED (a new upstream default).
repack() {
	local dir=/tmp/repack-$1 out=/tmp/pkg-$1.deb
	inroot sh -e -c "rm -rf $dir && dpkg-deb -R /tmp/pkg.deb $dir &&
		sed -i 's/^Version: .*/Version: $version+$1/' $dir/DEBIAN/control &&
		sed -i '$2' $dir$CONF &&
		cd $dir && find . -path ./DEBIAN -prune -o -type f -printf '%P\n' | sort | xargs md5sum >DEBIAN/md5sums &&
		dpkg-deb -Zgzip -z1 -b $dir $out >/dev/null"
	echo "$out"
}

stepn "operator edits agent.json; upgrade with a changed conffile and --force-confold"
fill "$CONF" /tmp/edited.json "https://broker.example.test" "pkgtest"
cat "$r/tmp/edited.json" >"$r$CONF" # keep the inode's owner and mode, as an editor would
edited=$(md5 "$CONF")
err=$(once_err "$CONF")
[[ $err == "agent once:"* ]] || fail "the operator's agent.json is refused: $err"
v2=$(repack pkgtest2 's/"CheckInterval": "10s"/"CheckInterval": "15s"/')
inroot dpkg -i --force-confold "$v2" >/dev/null || fail "upgrade with --force-confold failed"
[[ $(dpkg_state) == "ii $version+pkgtest2" ]] || fail "dpkg state '$(dpkg_state)'"
expect_calls "daemon-reload;try-restart $NAME.service;"
[[ $(md5 "$CONF") == "$edited" ]] || fail "--force-confold did not keep the operator's agent.json"
grep -q '"CheckInterval": "15s"' "$r$CONF.dpkg-dist" || fail "no $CONF.dpkg-dist with the new default"
expect_perm "$CONF" "640 root:$NAME"
[[ $(md5 "$KEY") == "$keysum" ]] || fail "upgrade changed the key"
say "  operator's edit kept; the new default is in $CONF.dpkg-dist; key unchanged"

stepn "upgrade with a changed conffile and --force-confnew"
v3=$(repack pkgtest3 's/"CheckInterval": "10s"/"CheckInterval": "20s"/')
inroot dpkg -i --force-confnew "$v3" >/dev/null || fail "upgrade with --force-confnew failed"
systemctl_calls >/dev/null
grep -q '"CheckInterval": "20s"' "$r$CONF" || fail "--force-confnew did not install the new agent.json"
[[ $(md5 "$CONF.dpkg-old") == "$edited" ]] || fail "no $CONF.dpkg-old with the operator's version"
expect_perm "$CONF" "640 root:$NAME"
say "  new agent.json installed (owner and mode right), operator's in $CONF.dpkg-old"

stepn "systemctl enable (as the operator would) is possible"
real_systemctl enable "$NAME.service" >/dev/null 2>&1 || fail "systemctl enable failed"
ls "$r"/etc/systemd/system/multi-user.target.wants/"$NAME.service" >/dev/null || fail "enable made no symlink"
say "  multi-user.target.wants/$NAME.service"

# ---- remove, purge -----------------------------------------------------------
stepn "dpkg -r (remove)"
inroot dpkg -r "$NAME" >/dev/null || fail "dpkg -r failed"
expect_calls "stop $NAME.service;daemon-reload;"
[[ $(dpkg_state) == "rc $version+pkgtest3" ]] || fail "dpkg state '$(dpkg_state)', want 'rc ...'"
absent "$BIN"
absent "$UNIT"
expect_perm "$CONF" "640 root:$NAME"
expect_perm "$KEY" "600 $NAME:$NAME"
[[ $(md5 "$KEY") == "$keysum" ]] || fail "remove changed the key"
inroot getent passwd "$NAME" >/dev/null || fail "remove deleted the user"
say "  binary and unit gone; configuration, key and user kept"

stepn "dpkg -P (purge)"
cp "$r/var/lib/dpkg/info/$NAME.postrm" "$r/tmp/postrm"
inroot dpkg -P "$NAME" >/dev/null || fail "dpkg -P failed"
expect_calls "daemon-reload;"
[[ -z $(dpkg_state) || $(dpkg_state) == "un "* ]] || fail "dpkg state '$(dpkg_state)' after purge"
absent "$CONF_DIR"
absent "$STATE"
absent "/etc/systemd/system/multi-user.target.wants/$NAME.service"
inroot getent passwd "$NAME" >/dev/null && fail "purge left the user"
inroot getent group "$NAME" >/dev/null && fail "purge left the group"
say "  $CONF_DIR, $STATE, the enable symlink, the user and the group are gone"

stepn "postrm purge run again; install after purge"
inroot /tmp/postrm purge || fail "a second postrm purge failed"
systemctl_calls >/dev/null
inroot dpkg -i /tmp/pkg.deb >/dev/null || fail "install after purge failed"
systemctl_calls >/dev/null
inroot getent passwd "$NAME" >/dev/null || fail "no user after reinstall"
expect_perm "$STATE" "700 $NAME:$NAME"
absent "$KEY"
inroot dpkg -P "$NAME" >/dev/null || fail "second purge failed"
systemctl_calls >/dev/null
say "  clean reinstall (new user, no key) and purge"

stepn "install over a hand install (docs/agent.md's old steps), --force-confold"
inroot useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin "$NAME"
inroot install -d -m 0700 -o "$NAME" -g "$NAME" "$STATE"
inroot install -d -m 0750 -o root -g "$NAME" "$CONF_DIR"
dpkg-deb -x "$deb" "$work/old" && cp "$work/old$BIN" "$r/tmp/orthanc-gcp-agent" # the hand-installed binary
as_agent /tmp/orthanc-gcp-agent keygen --out "$KEY" >/dev/null || fail "hand install: keygen failed"
hand_key=$(md5 "$KEY")
cp "$r/tmp/edited.json" "$r$CONF"
chmod 0600 "$r$CONF" # a wrong mode, to be fixed
hand_conf=$(md5 "$CONF")
hand_uid=$(inroot id -u "$NAME")
inroot dpkg -i --force-confold /tmp/pkg.deb >/dev/null || fail "install over a hand install failed"
systemctl_calls >/dev/null
[[ $(md5 "$CONF") == "$hand_conf" ]] || fail "the hand-written agent.json was replaced"
[[ $(inroot id -u "$NAME") == "$hand_uid" ]] || fail "the existing user was replaced"
[[ $(md5 "$KEY") == "$hand_key" ]] || fail "the existing key was changed"
expect_perm "$CONF" "640 root:$NAME"
expect_perm "$STATE" "700 $NAME:$NAME"
err=$(once_err "$CONF")
[[ $err == "agent once:"* ]] || fail "the hand-written agent.json is refused: $err"
say "  existing user (uid $hand_uid), key and agent.json kept (and accepted); agent.json back to 0640 root:$NAME"

say "OK: $NAME $version on $suite in $((SECONDS - t0))s"
