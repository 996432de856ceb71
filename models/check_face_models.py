#!/usr/bin/env python3
"""Checks the rebuilt ONNX graphs (called by build.sh).

    check_face_models.py OUT_DIR IMAGES.u8 REFERENCE.json BLAZEFACE_PACKAGE.onnx

IMAGES.u8 holds 112x112 RGB test images (row-major uint8); REFERENCE.json is what
`face_api_reference.mjs` computed for them with the package's own tfjs code. ONNX Runtime runs
`face-landmarks-68.onnx` and `expression-va.onnx` on the same images, normalised as face-api.js
does, and the outputs must agree to float32 rounding.

`blazeface.onnx` (dynamic batch) must give, on a batch of the test images (centred on a black
128x128 input) and random inputs, what it gives on each image alone, and on each image alone what
the package's file (BLAZEFACE_PACKAGE.onnx, batch 1) gives.
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
# Batched against one-by-one runs of the same graph, and the rebuilt graph against the package's.
BLAZEFACE_TOLERANCE = 1e-5
BLAZEFACE_SIZE = 128


def check_blazeface(out_dir, images, package_model, options):
    """Batch-N output of blazeface.onnx == N batch-1 runs == the package's model, per image."""
    rng = np.random.default_rng(15)
    inputs = np.full((len(images) + 3, BLAZEFACE_SIZE, BLAZEFACE_SIZE, 3), -1.0, dtype=np.float32)
    at = (BLAZEFACE_SIZE - images.shape[1]) // 2
    inputs[:len(images), at:at + images.shape[1], at:at + images.shape[2]] = images / 127.5 - 1.0
    inputs[len(images):] = rng.uniform(-1.0, 1.0, size=inputs[len(images):].shape)
    rebuilt = ort.InferenceSession(str(out_dir / "blazeface.onnx"), options,
                                   providers=["CPUExecutionProvider"])
    package = ort.InferenceSession(str(package_model), options, providers=["CPUExecutionProvider"])
    name = rebuilt.get_inputs()[0].name
    batched = rebuilt.run(None, {name: inputs})
    errors = {"batch_vs_single": 0.0, "rebuilt_vs_package": 0.0}
    for n in range(len(inputs)):
        single = rebuilt.run(None, {name: inputs[n:n + 1]})
        original = package.run(None, {name: inputs[n:n + 1]})
        for b, s, o in zip(batched, single, original):
            errors["batch_vs_single"] = max(errors["batch_vs_single"], float(np.abs(b[n:n + 1] - s).max()))
            errors["rebuilt_vs_package"] = max(errors["rebuilt_vs_package"], float(np.abs(s - o).max()))
    print(f"blazeface.onnx, batch of {len(inputs)}: max {errors}")
    bad = {k: v for k, v in errors.items() if not v <= BLAZEFACE_TOLERANCE}
    if bad:
        raise SystemExit(f"blazeface.onnx: batched runs disagree: {bad} (tolerance {BLAZEFACE_TOLERANCE})")


def main():
    if len(sys.argv) != 5:
        raise SystemExit(__doc__)
    out_dir, images_path, reference_path, blazeface_package = (Path(a) for a in sys.argv[1:5])
    reference = json.loads(reference_path.read_text())
    images = np.fromfile(images_path, dtype=np.uint8).reshape(-1, 112, 112, 3).astype(np.float32)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    check_blazeface(out_dir, images, blazeface_package, options)

    face = ((images - np.array(FACE_API_MEAN_RGB, dtype=np.float32)) / 255.0).transpose(0, 3, 1, 2)
    face = np.ascontiguousarray(face, dtype=np.float32)
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
