#!/usr/bin/env bash
# The whole test suite, from a fresh clone: installs what it needs (tests/setup.sh), then runs
# every crate's tests (libtorch included), the no_std build for a Cortex-M4F,
# and the Python-oracle parity tests that the Rust tests call.
set -euo pipefail
cd "$(dirname "$0")/.."
. tests/setup.sh

step() { printf '\n\033[1;32m== %s\033[0m\n' "$*"; }

step "format"
cargo fmt --all --check

step "no_std: affect-shared core for thumbv7em-none-eabihf"
cargo build -p affect-shared --no-default-features --target thumbv7em-none-eabihf

step "workspace tests: shared, libtorch trainer, edge runtime, Python oracles"
# One cargo invocation, so every crate is compiled once with one feature set (all features:
# the ONNX Runtime backend loads the wheel's library at run time; CUDA code compiles without CUDA).
cargo test --workspace --all-targets --all-features
