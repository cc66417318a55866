#!/bin/sh
# orthanc-standin: entrypoint of the Orthanc stand-in image (Containerfile).
# Writes /etc/orthanc-standin/orthanc.json, the one configuration file the
# command names, from the variables packaging/docker-compose.yml sets, read
# the way orthancteam/orthanc reads them:
#   ORTHANC__REMOTE_ACCESS_ALLOWED=false  ->  "RemoteAccessAllowed": false
#   DICOM_WEB_PLUGIN_ENABLED=true         ->  the DICOMweb plugin, on /dicom-web/
# A variable of either form that the stand-in cannot honour (a nested key,
# another plugin, a value with quotes) stops it with an error, so the test
# never passes on a setting that was silently dropped. Then runs the command.
set -eu
die() { echo "orthanc-standin: $*" >&2; exit 1; }
conf=/etc/orthanc-standin/orthanc.json
mkdir -p "${conf%/*}"

pascal() { echo "$1" | awk -F_ '{ for (i = 1; i <= NF; i++) printf "%s%s", toupper(substr($i, 1, 1)), tolower(substr($i, 2)) }'; }
jsonval() {
	case $1 in
	true | false) echo "$1" ;;
	'' | *[!0-9]*)
		case $1 in *'"'* | *'\'*) die "value '$1' has a quote or backslash" ;; esac
		echo "\"$1\""
		;;
	*) echo "$1" ;;
	esac
}

settings=
keys=" "
for var in $(env | sed -n 's/^\(ORTHANC__[A-Za-z0-9_]*\)=.*/\1/p'); do
	name=${var#ORTHANC__}
	case $name in *__*) die "$var: nested settings are not supported by the stand-in" ;; esac
	key=$(pascal "$name")
	settings="$settings  \"$key\": $(jsonval "$(printenv "$var")"),
"
	keys="$keys$key "
done
dicomweb=false
for var in $(env | sed -n 's/^\([A-Z0-9_]*_PLUGIN_ENABLED\)=.*/\1/p'); do
	val=$(printenv "$var")
	case $var=$val in
	DICOM_WEB_PLUGIN_ENABLED=true) dicomweb=true ;;
	*=true) die "$var: the stand-in has only the DICOMweb plugin" ;;
	*=false) ;;
	*) die "$var=$val: want true or false" ;;
	esac
done
# Defaults of the stand-in, where the environment sets nothing.
for kv in 'Name:"orthanc-standin"' 'StorageDirectory:"/var/lib/orthanc/db"' 'IndexDirectory:"/var/lib/orthanc/db"' \
	'HttpPort:8042' 'DicomPort:4242'; do
	case $keys in *" ${kv%%:*} "*) continue ;; esac
	settings="$settings  \"${kv%%:*}\": ${kv#*:},
"
done
if [ "$dicomweb" = true ]; then
	case $keys in *" Plugins "* | *" DicomWeb "*) die "Plugins and DicomWeb are set by DICOM_WEB_PLUGIN_ENABLED" ;; esac
	settings="$settings  \"Plugins\": [\"/usr/share/orthanc/plugins/libOrthancDicomWeb.so\"],
  \"DicomWeb\": {\"Enable\": true, \"Root\": \"/dicom-web/\"},
"
fi
printf '{\n%s  "StandIn": "not orthancteam/orthanc"\n}\n' "$settings" >"$conf"
echo "orthanc-standin: NOT orthancteam/orthanc (Debian's orthanc packages); $conf:" >&2
cat "$conf" >&2
exec "$@"
