#!/usr/bin/env bash
# The main job on a fresh machine: installs what it needs, then runs the edge runtime end to end
# on the bundled model and the synthetic camera (no camera, no broker needed).
set -euo pipefail
cd "$(dirname "$0")/.."
. tests/setup.sh
cargo run --release -p affect-edge-runtime --bin affect-edge -- run --source synthetic "$@"
