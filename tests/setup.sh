#!/usr/bin/env bash
# Idempotent machine set-up for the whole test suite (`tests/all.sh`). On top of
# `tests/setup-edge.sh` (what the edge runtime's build needs) it installs, only when missing:
#   - Debian packages: mosquitto + clients (MQTT tests), socat (serial tests), cmake, chromium
#     (the status page is checked in a real headless browser);
#   - `tests/browser/node_modules`: playwright-core from npm (pinned by its package-lock.json),
#     which drives that Chromium;
#   - Rust: the thumbv7em-none-eabihf target (no_std check of `affect-shared`) and cargo-fuzz
#     (bounded fuzzing of every `fuzz/` target; pinned, built from crates.io);
#   - the device toolchain: Debian's aarch64 cross gcc + sysroot and qemu-user, Rust's
#     aarch64-unknown-linux-gnu target, cargo-deb (pinned, crates.io), and the aarch64
#     `onnxruntime` wheel's libonnxruntime.so (PyPI), run under qemu to check the ONNX Runtime
#     backend of the device build (tests/package.sh);
#   - a Python venv in "$AFFECT_CACHE/venv" (outside the clone, reused across clones) holding
#     PyTorch 2.13.0 (the libtorch `tch` links against) and the numerical oracles.
# Then exports LIBTORCH, LD_LIBRARY_PATH, ORT_DYLIB_PATH and AFFECT_PYTHON for the caller.
#
# Source it (`. tests/setup.sh`) so the exports reach the caller's shell.
set -euo pipefail

. "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/setup-edge.sh"

apt_install_missing mosquitto mosquitto-clients socat cmake chromium \
  gcc-aarch64-linux-gnu libc6-dev-arm64-cross libstdc++6-arm64-cross qemu-user

browser="$AFFECT_ROOT/tests/browser"
browser_lock="$(sha256sum "$browser/package-lock.json" | cut -d' ' -f1)"
if [ "$(cat "$browser/node_modules/.affect-lock.sha256" 2>/dev/null)" != "$browser_lock" ]; then
  log "installing playwright-core (npm, tests/browser)"
  (cd "$browser" && npm ci --no-audit --no-fund --silent)
  echo "$browser_lock" > "$browser/node_modules/.affect-lock.sha256"
fi
# The Debian mosquitto package starts a system broker on :1883; tests start their own on free ports.

if command -v rustup >/dev/null; then
  (cd "$AFFECT_ROOT" && rustup target list --installed 2>/dev/null | grep -q thumbv7em-none-eabihf) \
    || { log "adding Rust target thumbv7em-none-eabihf"; (cd "$AFFECT_ROOT" && rustup target add thumbv7em-none-eabihf >/dev/null); }
  (cd "$AFFECT_ROOT" && rustup target list --installed 2>/dev/null | grep -q aarch64-unknown-linux-gnu) \
    || { log "adding Rust target aarch64-unknown-linux-gnu"; (cd "$AFFECT_ROOT" && rustup target add aarch64-unknown-linux-gnu >/dev/null); }
fi

cargo_deb_version="3.8.0"
if ! cargo deb --version 2>/dev/null | grep -q "$cargo_deb_version"; then
  log "installing cargo-deb $cargo_deb_version (crates.io)"
  (cd "$AFFECT_ROOT" && cargo install -q --locked cargo-deb --version "$cargo_deb_version")
fi

cargo_fuzz_version="0.13.2"
if ! cargo fuzz --version 2>/dev/null | grep -q "$cargo_fuzz_version"; then
  log "installing cargo-fuzz $cargo_fuzz_version (crates.io)"
  (cd "$AFFECT_ROOT" && cargo install -q --locked cargo-fuzz --version "$cargo_fuzz_version")
fi

venv="$AFFECT_CACHE/venv"
req="$AFFECT_ROOT/tests/requirements.txt"
stamp="$venv/.requirements.sha256"
want="$(sha256sum "$req" | cut -d' ' -f1)"
if [ ! -x "$venv/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  log "creating Python venv in $venv (PyTorch 2.13.0 + oracles; ~5 GB, a few minutes the first time)"
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install -q --no-cache-dir --upgrade pip
  "$venv/bin/python" -m pip install -q --no-cache-dir -r "$req"
  echo "$want" > "$stamp"
fi

export AFFECT_PYTHON="$venv/bin/python"
site="$("$AFFECT_PYTHON" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
export LIBTORCH="$site/torch"
export LIBTORCH_BYPASS_VERSION_CHECK="${LIBTORCH_BYPASS_VERSION_CHECK:-0}"
export LD_LIBRARY_PATH="$LIBTORCH/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
# The same ONNX Runtime release for the device (aarch64), from its manylinux wheel, for qemu runs.
ort_version="$(sed -n 's/^onnxruntime==//p' "$req")"
ort_aarch64="$AFFECT_CACHE/onnxruntime-$ort_version-aarch64/libonnxruntime.so.$ort_version"
if [ ! -f "$ort_aarch64" ]; then
  log "fetching the aarch64 onnxruntime $ort_version wheel (PyPI) for the device build's qemu run"
  wheels="$(mktemp -d)"
  "$venv/bin/python" -m pip download -q --no-cache-dir --no-deps --only-binary=:all: --python-version 3.11 \
    --platform manylinux_2_27_aarch64 --platform manylinux_2_28_aarch64 \
    --platform manylinux2014_aarch64 -d "$wheels" "onnxruntime==$ort_version"
  mkdir -p "$(dirname "$ort_aarch64")"
  "$venv/bin/python" - "$wheels"/onnxruntime-*.whl "$ort_aarch64" <<'PY'
import sys, zipfile
wheel, out = sys.argv[1], sys.argv[2]
name = "onnxruntime/capi/" + out.rsplit("/", 1)[1]
with zipfile.ZipFile(wheel) as z, open(out + ".part", "wb") as f:
    f.write(z.read(name))
import os; os.replace(out + ".part", out)
PY
  rm -rf "$wheels"
fi
export AFFECT_ORT_AARCH64="$ort_aarch64"

ort_lib="$(ls "$site"/onnxruntime/capi/libonnxruntime.so.1.* 2>/dev/null | head -n1 || true)"
export ORT_DYLIB_PATH="${ORT_DYLIB_PATH:-$ort_lib}"
log "LIBTORCH=$LIBTORCH"
log "ORT_DYLIB_PATH=$ORT_DYLIB_PATH"
