#!/usr/bin/env python3
"""Checks the rebuilt face-api.js ONNX graphs against face-api.js itself (called by build.sh).

    check_face_models.py OUT_DIR IMAGES.u8 REFERENCE.json

IMAGES.u8 holds 112x112 RGB test images (row-major uint8); REFERENCE.json is what
`face_api_reference.mjs` computed for them with the package's own tfjs code. ONNX Runtime runs
`face-landmarks-68.onnx` and `expression-va.onnx` on the same images, normalised as face-api.js
does, and the outputs must agree to float32 rounding.
"""

import json
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

sys.path.insert(0, str(Path(__file__).resolve().parent))
from build_face_models import FACE_API_MEAN_RGB, circumplex_matrix  # noqa: E402

TOLERANCE = 1e-4


def main():
    out_dir, images_path, reference_path = (Path(a) for a in sys.argv[1:4])
    reference = json.loads(reference_path.read_text())
    images = np.fromfile(images_path, dtype=np.uint8).reshape(-1, 112, 112, 3).astype(np.float32)
    face = ((images - np.array(FACE_API_MEAN_RGB, dtype=np.float32)) / 255.0).transpose(0, 3, 1, 2)
    face = np.ascontiguousarray(face, dtype=np.float32)

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    landmarks = ort.InferenceSession(str(out_dir / "face-landmarks-68.onnx"), options,
                                     providers=["CPUExecutionProvider"]).run(["landmarks"], {"face": face})[0]
    va = ort.InferenceSession(str(out_dir / "expression-va.onnx"), options,
                              providers=["CPUExecutionProvider"]).run(["va"], {"face": face})[0]
    want_landmarks = np.array(reference["landmarks"], dtype=np.float32)
    want_va = np.array(reference["expressions"], dtype=np.float32) @ circumplex_matrix()
    errors = {
        "landmarks": float(np.abs(landmarks - want_landmarks).max()),
        "va": float(np.abs(va - want_va).max()),
    }
    print(f"max |onnx - face-api.js| over {len(face)} images: {errors}")
    bad = {k: v for k, v in errors.items() if not v <= TOLERANCE}
    if bad:
        raise SystemExit(f"rebuilt graphs disagree with face-api.js: {bad} (tolerance {TOLERANCE})")

    metadata = {p.key: p.value for p in onnx.load(str(out_dir / "expression-va.onnx")).metadata_props}
    json.loads(metadata["affect"])


if __name__ == "__main__":
    main()
