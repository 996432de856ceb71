#!/usr/bin/env bash
# Builds what goes onto devices: the `affect-edge` Debian packages for arm64 (Jetson-class, cross
# built with Debian's aarch64 gcc) and amd64, from the `device` profile (stripped, thin LTO) with
# the ONNX Runtime backend and its CUDA/TensorRT providers compiled in (the library itself is
# loaded at run time from ORT_DYLIB_PATH). Prints each package's and binary's size.
#
# The packages are then checked by `edge-runtime/tests/package.rs` (contents, conffile, unit,
# system user, a scratch-root install that runs, arm64 under qemu equal to amd64), which finds
# them through AFFECT_DEB_DIR; this script exports it when sourced.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
target_dir="${CARGO_TARGET_DIR:-$root/target}"
export AFFECT_DEB_DIR="$target_dir/debian"
rm -f "$AFFECT_DEB_DIR"/affect-edge_*.deb

for triple in aarch64-unknown-linux-gnu x86_64-unknown-linux-gnu; do
  (cd "$root" && cargo deb -q -p affect-edge-runtime --profile device --features cuda \
    --target "$triple" --output "$AFFECT_DEB_DIR/")
  bin="$target_dir/$triple/device/affect-edge"
  printf '%s: binary %s bytes (stripped), package %s\n' "$triple" "$(stat -c %s "$bin")" \
    "$(ls -s --block-size=1 "$AFFECT_DEB_DIR"/affect-edge_*_"$(case $triple in aarch64*) echo arm64;; *) echo amd64;; esac)".deb)"
done
