#!/usr/bin/env bash
# Idempotent machine set-up shared by both README commands (`tests/demo.sh`, `tests/all.sh`).
#
# Installs, only when missing:
#   - Debian packages: libclang-dev (v4l bindgen), mosquitto + clients (MQTT tests),
#     socat (serial tests), cmake, pkg-config;
#   - Rust targets: thumbv7em-none-eabihf (no_std check of `affect-shared`);
#   - a Python venv in "$AFFECT_CACHE/venv" (outside the clone, reused across clones) holding
#     PyTorch 2.13.0 (the libtorch `tch` links against) and the numerical oracles.
# Then exports LIBTORCH, LD_LIBRARY_PATH, ORT_DYLIB_PATH and AFFECT_PYTHON for the caller.
#
# Source it (`. tests/setup.sh`) so the exports reach the caller's shell.
set -euo pipefail

AFFECT_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export AFFECT_ROOT
export AFFECT_CACHE="${AFFECT_CACHE:-$HOME/.cache/affect}"
mkdir -p "$AFFECT_CACHE"

log() { printf '\033[1;34m[setup]\033[0m %s\n' "$*" >&2; }

sudo_if_needed() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

apt_packages=(libclang-dev mosquitto mosquitto-clients socat cmake pkg-config)
missing=()
for p in "${apt_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  log "installing Debian packages: ${missing[*]}"
  sudo_if_needed apt-get update -qq
  DEBIAN_FRONTEND=noninteractive sudo_if_needed apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# The Debian mosquitto package starts a system broker on :1883; tests start their own on free ports.

if command -v rustup >/dev/null; then
  (cd "$AFFECT_ROOT" && rustup target list --installed 2>/dev/null | grep -q thumbv7em-none-eabihf) \
    || { log "adding Rust target thumbv7em-none-eabihf"; (cd "$AFFECT_ROOT" && rustup target add thumbv7em-none-eabihf >/dev/null); }
fi

venv="$AFFECT_CACHE/venv"
req="$AFFECT_ROOT/tests/requirements.txt"
stamp="$venv/.requirements.sha256"
want="$(sha256sum "$req" | cut -d' ' -f1)"
if [ ! -x "$venv/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  log "creating Python venv in $venv (PyTorch 2.13.0 + oracles; ~5 GB, a few minutes the first time)"
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install -q --upgrade pip
  "$venv/bin/python" -m pip install -q -r "$req"
  echo "$want" > "$stamp"
fi

export AFFECT_PYTHON="$venv/bin/python"
site="$("$AFFECT_PYTHON" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
export LIBTORCH="$site/torch"
export LIBTORCH_BYPASS_VERSION_CHECK="${LIBTORCH_BYPASS_VERSION_CHECK:-0}"
export LD_LIBRARY_PATH="$LIBTORCH/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
ort_lib="$(ls "$site"/onnxruntime/capi/libonnxruntime.so.1.* 2>/dev/null | head -n1 || true)"
export ORT_DYLIB_PATH="${ORT_DYLIB_PATH:-$ort_lib}"
log "LIBTORCH=$LIBTORCH"
log "ORT_DYLIB_PATH=$ORT_DYLIB_PATH"
