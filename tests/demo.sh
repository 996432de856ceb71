#!/usr/bin/env bash
# The main job on a fresh machine: installs what the edge runtime needs (tests/setup-edge.sh: one
# Debian package, no Python), builds it and runs it end to end with no camera and no broker: the
# synthetic camera (generator faces with known valence/arousal) → the bundled model (tract) →
# live valence/arousal as JSON lines on stdout, then a summary on stderr with per-stage times and
# the CCC/MSE against the synthetic ground truth. Arguments are passed to `affect-edge run` and
# override the defaults, e.g.
#   tests/demo.sh --source images:DIR --faces bundled
#   tests/demo.sh --report mqtt://127.0.0.1:1883/affect
set -euo pipefail
cd "$(dirname "$0")/.."
. tests/setup-edge.sh
# The `demo` profile (Cargo.toml) builds in about a third of the release build's time.
cargo build --profile demo -q -p affect-edge-runtime --bin affect-edge
exec target/demo/affect-edge run --source synthetic:7 --max-frames 3000 "$@"
