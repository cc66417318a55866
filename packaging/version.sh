#!/usr/bin/env bash
# version.sh [--image-tag] - the agent's version for this tree, as a valid
# Debian version (also what `orthanc-gcp-agent version` prints):
#
#   git describe --tags --always --dirty   ->  version
#   v1.2.3                                 ->  1.2.3
#   v1.2.3-rc.1                            ->  1.2.3~rc.1        (sorts before 1.2.3)
#   v1.2.3-4-gabc1234                      ->  1.2.3+git20261201221733.4.abc1234
#   abc1234 (no tag reachable)             ->  0.0.0~git20261201221733.abc1234
#   ...-dirty                              ->  ...+dirty
#
# The timestamp is the commit's (UTC), so snapshots sort in commit order and a
# build of the same commit always gets the same version. Outside a git
# checkout: 0.0.0~unknown. VERSION in the environment, if set, is used as is
# (checked). --image-tag prints the same version as a valid container image
# tag ('~' and '+' become '-').
set -euo pipefail
cd "$(dirname "$0")/.."

debian_version() {
	local d sha tag n ts dirty=""
	d=$(git describe --tags --always --dirty 2>/dev/null) || { echo "0.0.0~unknown"; return; }
	if [[ $d == *-dirty ]]; then d=${d%-dirty}; dirty="+dirty"; fi
	ts=$(TZ=UTC git log -1 --format=%cd --date=format-local:%Y%m%d%H%M%S)
	if [[ $d =~ ^(.+)-([0-9]+)-g([0-9a-f]+)$ ]]; then
		tag=${BASH_REMATCH[1]} n=${BASH_REMATCH[2]} sha=${BASH_REMATCH[3]}
		echo "$(from_tag "$tag")+git$ts.$n.$sha$dirty"
	elif [[ $d =~ ^[0-9a-f]{4,40}$ ]] && ! git rev-parse -q --verify "refs/tags/$d" >/dev/null; then
		echo "0.0.0~git$ts.$d$dirty"
	else
		echo "$(from_tag "$d")$dirty"
	fi
}

# from_tag v1.2.3-rc.1 -> 1.2.3~rc.1
from_tag() {
	local t=${1#v}
	t=${t#V}
	if [[ $t =~ ^([0-9][0-9.]*)-(.+)$ ]]; then t="${BASH_REMATCH[1]}~${BASH_REMATCH[2]//-/.}"; fi
	echo "$t"
}

v=${VERSION:-$(debian_version)}
# Debian upstream_version without a revision: digits first, then
# alphanumerics and . + ~ (no '-': nfpm adds no Debian revision).
[[ $v =~ ^[0-9][A-Za-z0-9.+~]*$ ]] || { echo "version.sh: '$v' is not a valid Debian version (from tag or VERSION)" >&2; exit 1; }
if [[ ${1:-} == --image-tag ]]; then
	v=${v//\~/-}
	v=${v//+/-}
fi
echo "$v"
