#!/usr/bin/env bash
# Install the edgert agent on Raspberry Pi OS or JetPack (Debian / Ubuntu based), as root:
#
#   sudo deploy/install.sh [options]
#
#   --dry-run          print every action, change nothing
#   --root DIR         install into a staging root (files under DIR; useradd/systemctl get --root)
#   --prefix DIR       the venv (default /opt/edgert/venv)
#   --with-broker      also install and enable edgert-fleet-broker.service (single machine, no broker)
#   --no-pip           do not create the venv or pip install (e.g. it is built another way)
#   --no-user          do not create the edgert user and the i2c/video/gpio groups
#   --no-systemctl     install the unit files but do not call systemctl (no enable / restart)
#   --probe-root DIR   read /proc/device-tree/model and /etc/nv_tegra_release under DIR (tests)
#
# Safe to run again: it creates what is missing, refreshes the units and the package, and never
# overwrites /etc/edgert/agent.toml.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEPLOY="$REPO/deploy"
DEFAULT_PREFIX=/opt/edgert/venv
UNIT_DIR=/etc/systemd/system
CONFIG=/etc/edgert/agent.toml
SERVICE_USER=edgert
STATE_DIR=/var/lib/edgert
DEVICE_GROUPS=(i2c video gpio)   # the agent unit's SupplementaryGroups

dry_run=0 root="" prefix="$DEFAULT_PREFIX" probe_root="" with_broker=0
do_pip=1 do_user=1 do_systemctl=1

usage() { sed -n '2,16p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2; exit 2; }
die() { echo "install: $*" >&2; exit 1; }
say() { echo "install: $*"; }
# Every change goes through run: printed always, executed unless --dry-run.
run() {
  printf '+'; printf ' %q' "$@"; printf '\n'
  [[ $dry_run -eq 1 ]] || "$@"
}

while [[ $# -gt 0 ]]; do
  case "$1" in
    --dry-run) dry_run=1 ;;
    --root) root="${2:?--root needs a directory}"; shift ;;
    --prefix) prefix="${2:?--prefix needs a directory}"; shift ;;
    --probe-root) probe_root="${2:?--probe-root needs a directory}"; shift ;;
    --with-broker) with_broker=1 ;;
    --no-pip) do_pip=0 ;;
    --no-user) do_user=0 ;;
    --no-systemctl) do_systemctl=0 ;;
    -h|--help) usage ;;
    *) echo "install: unknown option $1" >&2; usage ;;
  esac
  shift
done
[[ "$prefix" == /* ]] || die "--prefix must be an absolute path, got $prefix"
if [[ -n "$root" ]]; then
  [[ $dry_run -eq 1 || -d "$root" ]] || die "--root $root is not a directory"
  root="$(cd "$root" 2>/dev/null && pwd || echo "$root")"
fi
if [[ $dry_run -eq 0 && -z "$root" && $EUID -ne 0 ]]; then
  die "run as root (or use --dry-run, or --root DIR to stage)"
fi

# -- platform ---------------------------------------------------------------------------------------
# /proc/device-tree/model is NUL-terminated ("Raspberry Pi 5 Model B Rev 1.0\0",
# "NVIDIA Jetson Orin Nano Developer Kit\0"); /etc/nv_tegra_release exists on every L4T/JetPack.
model=""
if [[ -r "$probe_root/proc/device-tree/model" ]]; then
  model="$(tr -d '\0' < "$probe_root/proc/device-tree/model")"
fi
if [[ -e "$probe_root/etc/nv_tegra_release" || "$model" == *Jetson* ]]; then
  platform=jetson
elif [[ "$model" == *"Raspberry Pi"* ]]; then
  platform=rpi
else
  platform=generic
fi
say "platform: $platform${model:+ ($model)}"
[[ $dry_run -eq 1 ]] && say "dry run: nothing will be changed"

# -- user and groups ---------------------------------------------------------------------------------
# With --root, look in and write to the staging root's /etc/group and /etc/passwd.
has_group() {
  if [[ -n "$root" ]]; then grep -q "^$1:" "$root/etc/group" 2>/dev/null; else getent group "$1" >/dev/null; fi
}
has_user() {
  if [[ -n "$root" ]]; then grep -q "^$1:" "$root/etc/passwd" 2>/dev/null; else id -u "$1" >/dev/null 2>&1; fi
}
if [[ $do_user -eq 1 ]]; then
  rootopt=()
  [[ -n "$root" ]] && rootopt=(--root "$root")
  for g in "${DEVICE_GROUPS[@]}"; do
    # Raspberry Pi OS has all three; JetPack may lack gpio or i2c, and systemd will not start a unit
    # whose SupplementaryGroups names a missing group.
    has_group "$g" || run groupadd --system "${rootopt[@]}" "$g"
  done
  if has_user "$SERVICE_USER"; then
    say "user $SERVICE_USER exists"
  else
    run useradd --system "${rootopt[@]}" --user-group --home-dir "$STATE_DIR" --no-create-home \
      --shell /usr/sbin/nologin --comment "edgert agent" "$SERVICE_USER"
  fi
fi

# -- venv and package -------------------------------------------------------------------------------
if [[ $do_pip -eq 1 ]]; then
  venv="$root$prefix"
  if [[ -n "$root" ]]; then
    say "note: a venv built under --root has $venv baked into its scripts; it works once the root is mounted at /"
  fi
  python3 -m venv --help >/dev/null 2>&1 || die "python3 venv is missing: apt-get install -y python3-venv"
  if [[ ! -x "$venv/bin/python" ]]; then
    venv_opts=()
    # JetPack ships TensorRT and OpenCV-with-CUDA as apt packages for the system python only.
    [[ $platform == jetson ]] && venv_opts=(--system-site-packages)
    run mkdir -p "$(dirname "$venv")"
    run python3 -m venv "${venv_opts[@]}" "$venv"
  fi
  run "$venv/bin/python" -m pip install --upgrade pip
  run "$venv/bin/python" -m pip install "$REPO[agent,ort]"
  if [[ $platform == jetson ]]; then
    say "hint: the onnxruntime from PyPI is CPU-only on Jetson. For the GPU, install NVIDIA's"
    say "      onnxruntime-gpu wheel for your JetPack (Jetson Zoo: https://elinux.org/Jetson_Zoo#ONNX_Runtime)"
    say "      into $prefix and uninstall onnxruntime. This installer downloads nothing from there."
  fi
fi

# -- configuration ----------------------------------------------------------------------------------
run mkdir -p "$root$(dirname "$CONFIG")"
if [[ -e "$root$CONFIG" ]]; then
  say "keeping existing $root$CONFIG"
else
  run install -m 644 "$DEPLOY/agent.example.toml" "$root$CONFIG"
fi

# -- systemd ----------------------------------------------------------------------------------------
units=(edgert-agent.service)
[[ $with_broker -eq 1 ]] && units+=(edgert-fleet-broker.service)
run mkdir -p "$root$UNIT_DIR"
for unit in "${units[@]}"; do
  # Ours, not the admin's: refreshed on every run (local changes belong in a drop-in).
  run install -m 644 "$DEPLOY/systemd/$unit" "$root$UNIT_DIR/$unit"
  if [[ "$prefix" != "$DEFAULT_PREFIX" ]]; then
    run sed -i "s|$DEFAULT_PREFIX/|$prefix/|g" "$root$UNIT_DIR/$unit"
  fi
done
if [[ $do_systemctl -eq 0 ]]; then
  say "not calling systemctl: enable ${units[*]} yourself"
elif [[ -n "$root" ]]; then
  # Offline: creates only the [Install] symlinks under the staging root; needs no running systemd.
  run systemctl --root="$root" enable "${units[@]}"
else
  run systemctl daemon-reload
  run systemctl enable "${units[@]}"
  # An upgrade restarts what is already running; a first install is left for the operator to start
  # once agent.toml points at the right broker.
  run systemctl try-restart "${units[@]}"
  say "edit $CONFIG, then: systemctl start ${units[*]}"
fi

say "done"
