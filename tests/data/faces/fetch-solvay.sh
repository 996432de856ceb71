#!/usr/bin/env bash
# Puts the Solvay conference group photo (`test.png` of the `rustface` crate, 2 MB, many small
# faces) at tests/data/faces/solvay.png, taken from the crate tarball that cargo downloads from
# crates.io into its registry cache. Idempotent; the image is not committed (see .gitignore).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
out="$here/solvay.png"
want="$(cut -d' ' -f1 "$here/solvay.png.sha256")"
if [ -f "$out" ] && [ "$(sha256sum "$out" | cut -d' ' -f1)" = "$want" ]; then exit 0; fi

crate_name="rustface-0.1.7"
cargo_home="${CARGO_HOME:-$HOME/.cargo}"
find_crate() { ls "$cargo_home"/registry/cache/*/"$crate_name.crate" 2>/dev/null | head -n1 || true; }
crate="$(find_crate)"
if [ -z "$crate" ]; then
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' EXIT
  mkdir -p "$tmp/src"
  : > "$tmp/src/lib.rs"
  printf '[package]\nname = "solvay-fetch"\nversion = "0.0.0"\nedition = "2021"\n\n[dependencies]\nrustface = "=0.1.7"\n' \
    > "$tmp/Cargo.toml"
  echo "[faces] cargo fetch $crate_name (for its test image)" >&2
  (cd "$tmp" && cargo fetch --quiet)
  crate="$(find_crate)"
  [ -n "$crate" ] || { echo "fetch-solvay.sh: $crate_name.crate not found under $cargo_home/registry/cache" >&2; exit 1; }
fi
tar xzf "$crate" -O "$crate_name/test.png" > "$out.tmp"
got="$(sha256sum "$out.tmp" | cut -d' ' -f1)"
if [ "$got" != "$want" ]; then
  rm -f "$out.tmp"
  echo "fetch-solvay.sh: $crate_name/test.png has SHA-256 $got, expected $want" >&2
  exit 1
fi
mv "$out.tmp" "$out"
