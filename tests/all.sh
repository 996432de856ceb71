#!/usr/bin/env bash
# The whole test suite, from a fresh clone: installs what it needs (tests/setup.sh), then checks
# what the workspace declares (format, clippy and rustdoc with warnings as errors, the default
# feature sets, the no_std build for a Cortex-M4F), builds the device packages (arm64 + amd64
# .deb, tests/package.sh), runs every crate's tests (libtorch included,
# the Python-oracle parity tests among them) and fuzzes every `fuzz/` target for a bounded time.
#
# Oracle tests fail instead of skipping when CI is set (this script sets CI=true).
# AFFECT_FUZZ_SECONDS (default 25) bounds each fuzz target's run.
set -euo pipefail
cd "$(dirname "$0")/.."
. tests/setup.sh
export CI=true

# Incremental compilation caches only help the next edit; in a one-shot run they are ~2 GB of disk.
export CARGO_INCREMENTAL=0

target_dir="${CARGO_TARGET_DIR:-$PWD/target}"
suite_started=$SECONDS
# Each step's header says how long the suite has run and how much disk it holds: the suite has
# failed on a CI machine for want of disk before, and this is where its growth shows.
step() {
  local used free
  used="$(du -sh "$target_dir" 2>/dev/null | cut -f1 || true)"
  free="$(df -h --output=avail . 2>/dev/null | tail -1 | tr -d ' ' || true)"
  printf '\n\033[1;32m== [%d s, target %s, %s free] %s\033[0m\n' \
    "$((SECONDS - suite_started))" "${used:-0}" "$free" "$*"
}

step "format"
cargo fmt --all --check

step "no_std: affect-shared core for thumbv7em-none-eabihf"
cargo build -p affect-shared --no-default-features --target thumbv7em-none-eabihf

step "default feature sets: the default members (shared, the edge runtime without onnxruntime), the trainer without torch"
# Type-checked, not code-generated: with every dependency optimised (Cargo.toml's dev profile), a
# second full build of other feature sets cost ~20 of the suite's minutes on 2 cores, and what a
# feature set can break (cfg'd code, missing imports) is caught by checking all targets of it.
cargo check --all-targets
cargo check -p affect-host-trainer --no-default-features

step "clippy, all targets and features, warnings as errors"
cargo clippy --workspace --all-targets --all-features -- -D warnings

step "rustdoc of the library crates, warnings as errors"
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --all-features -p affect-shared -p affect-host-trainer -p affect-edge-runtime

step "device packages: the affect-edge .deb for arm64 (cross-built) and amd64, device profile"
# Checked by edge-runtime/tests/package.rs in the next step (the arm64 binary under qemu).
bash tests/package.sh
export AFFECT_DEB_DIR="${CARGO_TARGET_DIR:-$PWD/target}/debian"

step "workspace tests: shared, libtorch trainer, edge runtime, Python oracles"
# One cargo invocation, so every crate is compiled once with one feature set (all features:
# the ONNX Runtime backend loads the wheel's library at run time; CUDA code compiles without CUDA).
cargo test --workspace --all-targets --all-features

step "fuzz: every target for ${AFFECT_FUZZ_SECONDS:-25} s (a crash fails the suite)"
tests/fuzz.sh "${AFFECT_FUZZ_SECONDS:-25}"

step "done"
