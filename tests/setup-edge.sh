#!/usr/bin/env bash
# Idempotent set-up for the edge runtime alone (the main job, `tests/demo.sh`): the one Debian
# package its build needs (libclang-dev: the `v4l` crate runs bindgen) and nothing else — no
# Python, no PyTorch. `tests/setup.sh` (the test suite) sources this first and adds the rest.
#
# Source it (`. tests/setup-edge.sh`) so the exports reach the caller's shell.
set -euo pipefail

AFFECT_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export AFFECT_ROOT
export AFFECT_CACHE="${AFFECT_CACHE:-$HOME/.cache/affect}"
mkdir -p "$AFFECT_CACHE"

log() { printf '\033[1;34m[setup]\033[0m %s\n' "$*" >&2; }

sudo_if_needed() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

# Installs the Debian packages given as arguments that are not installed yet.
apt_install_missing() {
  local missing=() p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    log "installing Debian packages: ${missing[*]}"
    sudo_if_needed apt-get update -qq
    DEBIAN_FRONTEND=noninteractive sudo_if_needed apt-get install -y -qq --no-install-recommends \
      "${missing[@]}" >/dev/null
  fi
}

apt_install_missing libclang-dev pkg-config
