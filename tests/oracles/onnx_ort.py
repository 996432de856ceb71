#!/usr/bin/env python3
"""ONNX Runtime / onnx.checker oracle for exported streaming affect models.

  onnx_ort.py check MODEL.onnx...
      onnx.checker.check_model(full_check=True) on each model; prints {"MODEL": "ok" | error}.
      Exit 1 when any model fails.

  onnx_ort.py run MODEL.onnx FACES.f32 LANDMARKS.f32|- STEPS BATCH [--int8-ops]
      Runs the model in ONNX Runtime (CPU, 1 thread) step by step: FACES holds
      STEPS x BATCH x 3 x S x S little-endian float32 values, LANDMARKS STEPS x BATCH x 136 (or
      "-" when the model takes none). The recurrent state (h_in/c_in, zeros at the start) is
      carried from each step's h_out/c_out. Prints {"va": [[BATCH*2 floats] per step],
      "ops": {op_type: count} of the graph ONNX Runtime actually runs (with --int8-ops)}.
"""
import json
import os
import sys
import tempfile

import numpy as np
import onnx
import onnxruntime as ort


def check(paths):
    report, ok = {}, True
    for path in paths:
        try:
            model = onnx.load(path)
            onnx.checker.check_model(model, full_check=True)
            report[path] = "ok"
        except Exception as e:  # the checker raises several exception types
            report[path] = f"{type(e).__name__}: {e}"
            ok = False
    print(json.dumps(report))
    return 0 if ok else 1


def session(path, optimized_path=None):
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    if optimized_path:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        options.optimized_model_filepath = optimized_path
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def run(path, faces_path, landmarks_path, steps, batch, int8_ops):
    ops = None
    if int8_ops:
        with tempfile.TemporaryDirectory() as tmp:
            optimized = os.path.join(tmp, "optimized.onnx")
            sess = session(path, optimized)
            ops = {}
            for node in onnx.load(optimized).graph.node:
                ops[node.op_type] = ops.get(node.op_type, 0) + 1
    else:
        sess = session(path)
    inputs = {i.name: i for i in sess.get_inputs()}
    size = inputs["face"].shape[2]
    faces = np.fromfile(faces_path, dtype="<f4").reshape(steps, batch, 3, size, size)
    landmarks = None
    if "landmarks" in inputs:
        landmarks = np.fromfile(landmarks_path, dtype="<f4").reshape(steps, batch, 136)
    state = {}
    for name in ("h_in", "c_in"):
        if name in inputs:
            layers, _, hidden = inputs[name].shape
            state[name] = np.zeros((layers, batch, hidden), dtype=np.float32)
    outputs = [o.name for o in sess.get_outputs()]
    va = []
    for t in range(steps):
        feed = {"face": faces[t]}
        if landmarks is not None:
            feed["landmarks"] = landmarks[t]
        feed.update(state)
        result = dict(zip(outputs, sess.run(outputs, feed)))
        va.append(result["va"].reshape(-1).astype(float).tolist())
        for name in list(state):
            state[name] = result[name.replace("_in", "_out")]
    print(json.dumps({"va": va, "ops": ops}))
    return 0


def main(argv):
    if len(argv) >= 2 and argv[0] == "check":
        return check(argv[1:])
    if len(argv) in (6, 7) and argv[0] == "run":
        return run(argv[1], argv[2], argv[3], int(argv[4]), int(argv[5]), "--int8-ops" in argv)
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
