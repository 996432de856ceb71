#!/usr/bin/env bash
# Rebuilds the bundled `affect-synth.onnx` (+ `affect-synth.int8.onnx`, `affect-synth.export.json`):
# renders the synthetic dataset, trains the network of `affect-synth.toml` on it with the
# trainer, and exports it with its proof — everything from this repository, nothing downloaded.
#
#   . tests/setup.sh && models/build-affect-synth.sh [WORK_DIR]
#
# Needs libtorch (tests/setup.sh exports LIBTORCH from the PyTorch wheel). About 10 minutes on a
# 2-core CPU once built. Training is seeded; with the same libtorch and thread count (the config
# pins 2) the weights and metrics repeat exactly (measured: debug and release builds, two runs);
# the files differ only in their metadata (creation time, git revision, work directory).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
work="${1:-$(mktemp -d)}"
mkdir -p "$work"

cd "$root"
cargo build --release -p affect-host-trainer --bin affect-train
train="$root/target/release/affect-train"

rm -rf "$work/data" "$work/run"
"$train" synth --out "$work/data" --videos 320 --frames 100 --size 64 --seed 11 --val-fraction 0.125
"$train" train --config "$here/affect-synth.toml" --data "$work/data" --out "$work/run" \
  --set "data.cache_dir=\"$work/cache\""
"$train" eval --run "$work/run"
"$train" export --run "$work/run" --out "$here/affect-synth.onnx" --int8

(cd "$here" && sha256sum affect-synth.onnx affect-synth.int8.onnx > SHA256SUMS.affect-synth)
echo "[models] affect-synth.onnx rebuilt; run, evaluation and plots in $work/run" >&2
