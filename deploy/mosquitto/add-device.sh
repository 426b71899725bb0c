#!/usr/bin/env bash
# Add a device (or the "monitor" user) to Mosquitto's password file, or change its password.
#
#   add-device.sh [-f PASSWORD_FILE] DEVICE_ID [PASSWORD | -]
#
# PASSWORD "-" reads it from stdin; omitted, a random one is generated and printed on stdout (put it in
# the device's password_file, see deploy/agent.example.toml).  PASSWORD_FILE defaults to
# $MOSQUITTO_PASSWD_FILE or /etc/mosquitto/passwd and is created if missing.  The device id is the MQTT
# username the ACL (./acl) substitutes for %u, so it must be one plain topic level.
# Then reload the broker: systemctl reload mosquitto (SIGHUP re-reads the password file).
set -euo pipefail

usage() { echo "usage: $0 [-f PASSWORD_FILE] DEVICE_ID [PASSWORD | -]" >&2; exit 2; }
die() { echo "add-device: $*" >&2; exit 1; }

passwd_file="${MOSQUITTO_PASSWD_FILE:-/etc/mosquitto/passwd}"
while getopts ":f:h" opt; do
  case "$opt" in
    f) passwd_file="$OPTARG" ;;
    *) usage ;;
  esac
done
shift $((OPTIND - 1))
[[ $# -ge 1 && $# -le 2 ]] || usage
device="$1"
password="${2-}"

# One topic level: the ACL puts it between '/'; '+' and '#' are wildcards (Mosquitto 2.0.11 then
# denies every pattern to the user); ':' separates user and hash in the file.
[[ -n "$device" ]] || die "empty device id"
if [[ "$device" == *[/+#:]* || "$device" =~ [[:space:][:cntrl:]] || "$device" == -* ]]; then
  die "device id '$device' must not contain / + # : or whitespace, nor start with '-'"
fi

tool="$(command -v mosquitto_passwd || true)"
[[ -n "$tool" ]] || tool=/usr/bin/mosquitto_passwd
[[ -x "$tool" ]] || die "mosquitto_passwd not found (apt-get install -y mosquitto)"

generated=0
if [[ "$password" == "-" ]]; then
  IFS= read -r password || true
elif [[ -z "$password" && $# -eq 1 ]]; then
  # 24 random bytes, base64url without padding: safe in TOML, shells and the password file.
  password="$(head -c 24 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n')"
  generated=1
fi
[[ -n "$password" ]] || die "empty password"

if [[ ! -e "$passwd_file" ]]; then
  mkdir -p "$(dirname "$passwd_file")"
  # Created empty rather than with `mosquitto_passwd -c`, which truncates an existing file.
  (umask 027 && : > "$passwd_file")
fi
# -b takes the password on the command line (briefly visible in ps); fine on a provisioning host.
"$tool" -b "$passwd_file" "$device" "$password"

# Mosquitto 2.x reads the password file after dropping to user "mosquitto": give its group read access.
if [[ $EUID -eq 0 ]] && getent group mosquitto >/dev/null; then
  chgrp mosquitto "$passwd_file"
  chmod 640 "$passwd_file"
fi

if [[ $generated -eq 1 ]]; then
  echo "$password"
fi
echo "add-device: $device set in $passwd_file; reload the broker (systemctl reload mosquitto)" >&2
