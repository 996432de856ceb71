#!/usr/bin/env python3
"""Tiny streaming affect models in ONNX, and an ONNX Runtime reference run of them.

Independent of the Rust exporter: the edge runtime's backend tests use these to check that
tract and ONNX Runtime serve the streaming contract (DESIGN.md §1) identically.

  stream_model.py make OUT.onnx --cell gru|lstm|none [--landmarks] [--size S] [--seed K]
  stream_model.py run MODEL.onnx INPUTS.json      # prints JSON {"va": [[v,a],...]} frame by frame
INPUTS.json: {"faces": [[...3*S*S floats...], ...], "landmarks": [[...136...], ...] (optional)}
"""
import json
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def make(out, cell, landmarks, size, seed, layers=2, hidden=8):
    rng = np.random.default_rng(seed)
    inits, nodes = [], []

    def w(name, *shape, scale=0.3):
        inits.append(numpy_helper.from_array((rng.standard_normal(shape) * scale).astype(np.float32), name))
        return name

    inputs = [helper.make_tensor_value_info("face", TensorProto.FLOAT, ["N", 3, size, size])]
    outputs = [helper.make_tensor_value_info("va", TensorProto.FLOAT, ["N", 2])]
    nodes.append(helper.make_node("Conv", ["face", w("conv_w", 4, 3, 3, 3), w("conv_b", 4)], ["conv"],
                                  strides=[2, 2], pads=[1, 1, 1, 1]))
    nodes.append(helper.make_node("Relu", ["conv"], ["r1"]))
    nodes.append(helper.make_node("GlobalAveragePool", ["r1"], ["gap"]))
    nodes.append(helper.make_node("Flatten", ["gap"], ["feat"], axis=1))
    feat, width = "feat", 4
    if landmarks:
        inputs.append(helper.make_tensor_value_info("landmarks", TensorProto.FLOAT, ["N", 136]))
        nodes.append(helper.make_node("Concat", ["feat", "landmarks"], ["joined"], axis=1))
        feat, width = "joined", 4 + 136
    nodes.append(helper.make_node("Gemm", [feat, w("fc_w", 16, width), w("fc_b", 16)], ["fc"], transB=1))
    nodes.append(helper.make_node("Relu", ["fc"], ["x"]))
    recurrent = None
    if cell == "none":
        last, last_width = "x", 16
    else:
        recurrent = {"cell": cell, "layers": layers, "hidden": hidden}
        st = [layers, "N", hidden]
        inputs.append(helper.make_tensor_value_info("h_in", TensorProto.FLOAT, st))
        outputs.append(helper.make_tensor_value_info("h_out", TensorProto.FLOAT, st))
        if cell == "lstm":
            inputs.append(helper.make_tensor_value_info("c_in", TensorProto.FLOAT, st))
            outputs.append(helper.make_tensor_value_info("c_out", TensorProto.FLOAT, st))
        # x [N, 16] -> sequence of length 1: [1, N, 16]
        inits.append(numpy_helper.from_array(np.array([0], dtype=np.int64), "axis0"))
        nodes.append(helper.make_node("Unsqueeze", ["x", "axis0"], ["seq0"]))
        seq, in_width, hs, cs = "seq0", 16, [], []
        gates = 3 if cell == "gru" else 4
        for layer in range(layers):
            idx = np.array([layer], dtype=np.int64)
            inits.append(numpy_helper.from_array(idx, f"l{layer}_ix"))
            inits.append(numpy_helper.from_array(idx + 1, f"l{layer}_end"))
            nodes.append(helper.make_node("Slice", ["h_in", f"l{layer}_ix", f"l{layer}_end", "axis0"], [f"h{layer}"]))
            ins = [seq, w(f"W{layer}", 1, gates * hidden, in_width), w(f"R{layer}", 1, gates * hidden, hidden),
                   w(f"B{layer}", 1, 2 * gates * hidden), "", f"h{layer}"]
            outs = [f"y{layer}", f"hn{layer}"]
            if cell == "gru":
                nodes.append(helper.make_node("GRU", ins, outs, hidden_size=hidden, linear_before_reset=1))
            else:
                nodes.append(helper.make_node("Slice", ["c_in", f"l{layer}_ix", f"l{layer}_end", "axis0"], [f"cs{layer}"]))
                ins += [f"cs{layer}", w(f"P{layer}", 1, 3 * hidden)]
                outs.append(f"cn{layer}")
                nodes.append(helper.make_node("LSTM", ins, outs, hidden_size=hidden))
                cs.append(f"cn{layer}")
            hs.append(f"hn{layer}")
            # Y [1, 1(dir), N, H] -> [1, N, H]
            inits.append(numpy_helper.from_array(np.array([1], dtype=np.int64), f"sq{layer}"))
            nodes.append(helper.make_node("Squeeze", [f"y{layer}", f"sq{layer}"], [f"s{layer}"]))
            seq, in_width = f"s{layer}", hidden
        nodes.append(helper.make_node("Concat", hs, ["h_out"], axis=0))
        if cell == "lstm":
            nodes.append(helper.make_node("Concat", cs, ["c_out"], axis=0))
        nodes.append(helper.make_node("Squeeze", [seq, "axis0"], ["last"]))
        last, last_width = "last", hidden
    nodes.append(helper.make_node("Gemm", [last, w("out_w", 2, last_width), w("out_b", 2)], ["lin"], transB=1))
    nodes.append(helper.make_node("Tanh", ["lin"], ["va"]))
    graph = helper.make_graph(nodes, "tiny_affect", inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    metadata = {
        "schema": "1.0",
        "preprocess": {"size": size, "colour": "rgb", "scale": 1 / 255, "mean": [0.5, 0.5, 0.5],
                       "std": [0.25, 0.25, 0.25], "margin": 0.2, "alignment": {"kind": "none"},
                       "landmarks": landmarks},
        "recurrent": recurrent,
        "precision": "fp32",
        "backbone": "tiny-test",
        "dataset_fingerprint": "none",
        "validation": None,
        "git_revision": "test",
        "created": "2026-11-25T00:00:00Z",
        "training_config": {"seed": seed},
    }
    helper.set_model_props(model, {"affect": json.dumps(metadata)})
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, out)


def run(model_path, inputs_path):
    import onnxruntime as ort
    sess = ort.InferenceSession(model_path, providers=["CPUExecutionProvider"])
    names = {i.name: i for i in sess.get_inputs()}
    data = json.load(open(inputs_path))
    faces = np.asarray(data["faces"], dtype=np.float32)
    size = int(round((faces.shape[1] / 3) ** 0.5))
    state = {}
    for n in ("h_in", "c_in"):
        if n in names:
            layers, _, hidden = names[n].shape
            state[n] = np.zeros((layers, 1, hidden), np.float32)
    out = []
    for t in range(len(faces)):
        feed = {"face": faces[t].reshape(1, 3, size, size)}
        if "landmarks" in names:
            feed["landmarks"] = np.asarray(data["landmarks"][t], np.float32).reshape(1, 136)
        feed.update(state)
        res = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feed)))
        out.append(res["va"][0].tolist())
        for n in list(state):
            state[n] = res[n.replace("_in", "_out")]
    print(json.dumps({"va": out}))


if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "make":
        args = sys.argv[2:]
        out = args[0]
        opt = dict(cell="gru", landmarks=False, size=16, seed=1)
        i = 1
        while i < len(args):
            if args[i] == "--landmarks":
                opt["landmarks"] = True
                i += 1
            else:
                key = args[i].lstrip("-")
                opt[key] = args[i + 1] if key == "cell" else int(args[i + 1])
                i += 2
        make(out, **opt)
    elif cmd == "run":
        run(sys.argv[2], sys.argv[3])
    else:
        sys.exit(f"unknown command {cmd}")
