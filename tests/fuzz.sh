#!/usr/bin/env bash
# Builds every cargo-fuzz target in fuzz/ and runs each for SECONDS (default 25) from an empty
# corpus; a crash, panic or leak fails the script (libFuzzer prints the reproducer's path).
# cargo-fuzz needs unstable rustc flags: RUSTC_BOOTSTRAP lets the pinned stable toolchain accept
# them, so no nightly toolchain has to be fetched.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
seconds="${1:-25}"
export RUSTC_BOOTSTRAP=1
cargo fuzz build -O
corpus="$(mktemp -d)"
trap 'rm -rf "$corpus"' EXIT
for target in $(cargo fuzz list); do
  mkdir -p "$corpus/$target"
  printf '\033[1;34m[fuzz]\033[0m %s for %s s\n' "$target" "$seconds" >&2
  cargo fuzz run -O "$target" "$corpus/$target" -- -max_total_time="$seconds"
done
