#!/usr/bin/env bash
# Writes the perception benchmark's image directories (README, "Perception benchmark") under
# DIR (default /tmp/bench): A = DIR/astronaut (scikit-image's astronaut, one face), E =
# DIR/eight (8 Solvay faces, 120 px crops around the 8 faces BlazeFace is surest of, pasted on
# a 1024×512 grey canvas at 256 px spacing: large enough to be tiled), S = DIR/solvay (the whole
# Solvay photo). Python with scikit-image and Pillow from $AFFECT_PYTHON (`. tests/setup.sh`
# sets it). Deterministic: the same files on every run.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
out="${1:-/tmp/bench}"
python="${AFFECT_PYTHON:?set AFFECT_PYTHON (. tests/setup.sh)}"
bash "$here/fetch-solvay.sh"
mkdir -p "$out/astronaut" "$out/eight" "$out/solvay"
cp "$here/solvay.png" "$out/solvay/solvay.png"
"$python" - "$here/solvay.png" "$out" <<'PY'
import os, sys
import skimage
from PIL import Image
solvay, out = sys.argv[1], sys.argv[2]
Image.fromarray(skimage.data.astronaut()).save(os.path.join(out, "astronaut", "astronaut.png"))
photo = Image.open(solvay).convert("RGB")
# Face centres (x, y) in the Solvay photo: the 8 highest-scoring BlazeFace detections.
centres = [(594, 231), (796, 225), (1291, 240), (896, 282),
           (1195, 288), (1452, 245), (920, 126), (314, 294)]
canvas = Image.new("RGB", (1024, 512), (128, 128, 128))
for i, (x, y) in enumerate(centres):
    crop = photo.crop((x - 60, y - 60, x + 60, y + 60))
    canvas.paste(crop, (68 + 256 * (i % 4), 68 + 256 * (i // 4)))
canvas.save(os.path.join(out, "eight", "eight.png"))
PY
echo "$out/astronaut $out/eight $out/solvay"
