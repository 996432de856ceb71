#!/usr/bin/env bash
# The main job on a fresh machine, as far as it exists today: installs what it needs, builds
# `affect-train` (with libtorch) and scores an example prediction file against its ground truth
# (tests/data/example-*.csv, Aff-Wild2 format with -5 unlabelled frames) with the paper's metrics.
# Arguments override the files: tests/demo.sh --pred P.csv --truth T.csv
set -euo pipefail
cd "$(dirname "$0")/.."
. tests/setup.sh
if [ $# -eq 0 ]; then
  set -- --pred tests/data/example-pred.csv --truth tests/data/example-truth.csv
fi
cargo run --release -q -p affect-host-trainer --bin affect-train -- score "$@"
