#!/usr/bin/env python3
"""PyTorch reference for the small test network of `host-trainer/tests/export_onnx.rs`, computed
from PyTorch-layout weights (unfolded batch norm, GRU gates r,z,n via torch.nn.GRU, a hand-written
peephole LSTM with gates i,f,g,o), independently of the ONNX graph the Rust builder writes.

  onnx_reference_net.py SPEC.json FACES.f32 LANDMARKS.f32|-

SPEC.json: {"size", "batch", "steps", "landmarks": bool, "cell": "gru"|"lstm"|null, "layers",
"hidden", "eps", "weights": {name: {"shape": [...], "data": [...]}}}.
Network (the Rust test builds the same one as ONNX):
  x = relu(bn1(conv1(face)));  x = maxpool2(x)
  x = relu(x + bn3(conv3(relu(bn2(conv2(x))))))
  x = relu(conv4(x))                       (stride 2, with bias)
  f = cat(flatten(avgpool2(x)), flatten(global_avgpool(x)) [, landmarks])
  f = relu(fc1(f));  [f, state = rnn(f, state)];  va = out(f)
Prints {"step": [[BATCH*2] per step], "sequence": [[BATCH*2] per step]}: the same network run one
frame at a time with carried state, and (for recurrent cells) over the whole clip in one call.
"""
import json
import sys

import numpy as np
import torch
import torch.nn.functional as F

torch.set_num_threads(1)


def main(spec_path, faces_path, landmarks_path):
    spec = json.load(open(spec_path))
    w = {k: torch.tensor(v["data"], dtype=torch.float64).reshape(v["shape"])
         for k, v in spec["weights"].items()}
    steps, batch, size = spec["steps"], spec["batch"], spec["size"]
    faces = torch.from_numpy(np.fromfile(faces_path, dtype="<f4").astype(np.float64))
    faces = faces.reshape(steps, batch, 3, size, size)
    lms = None
    if spec["landmarks"]:
        lms = torch.from_numpy(np.fromfile(landmarks_path, dtype="<f4").astype(np.float64))
        lms = lms.reshape(steps, batch, 136)
    eps = spec["eps"]

    def bn(x, name):
        return F.batch_norm(x, w[f"{name}.running_mean"], w[f"{name}.running_var"],
                            w[f"{name}.weight"], w[f"{name}.bias"], False, 0.0, eps)

    def features(face, lm):
        x = F.relu(bn(F.conv2d(face, w["conv1.weight"], padding=1), "bn1"))
        x = F.max_pool2d(x, 2, 2)
        y = F.relu(bn(F.conv2d(x, w["conv2.weight"], padding=1), "bn2"))
        y = bn(F.conv2d(y, w["conv3.weight"], padding=1), "bn3")
        x = F.relu(x + y)
        x = F.relu(F.conv2d(x, w["conv4.weight"], w["conv4.bias"], stride=2, padding=1))
        parts = [torch.flatten(F.avg_pool2d(x, 2, 2), 1),
                 torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)]
        if lm is not None:
            parts.append(lm)
        return F.relu(F.linear(torch.cat(parts, 1), w["fc1.weight"], w["fc1.bias"]))

    def head(f):
        return F.linear(f, w["out.weight"], w["out.bias"])

    cell, layers, hidden = spec["cell"], spec["layers"], spec["hidden"]

    def lstm_step(x, h, c):
        new_h, new_c = [], []
        for k in range(layers):
            p = f"rnn.l{k}"
            gates = F.linear(x, w[f"{p}.weight_ih"], w[f"{p}.bias_ih"]) + \
                F.linear(h[k], w[f"{p}.weight_hh"], w[f"{p}.bias_hh"])
            i, f, g, o = gates.chunk(4, 1)
            i = torch.sigmoid(i + w[f"{p}.peephole_i"] * c[k])
            f = torch.sigmoid(f + w[f"{p}.peephole_f"] * c[k])
            ck = f * c[k] + i * torch.tanh(g)
            o = torch.sigmoid(o + w[f"{p}.peephole_o"] * ck)
            x = o * torch.tanh(ck)
            new_h.append(x)
            new_c.append(ck)
        return x, torch.stack(new_h), torch.stack(new_c)

    gru = None
    if cell == "gru":
        gru = torch.nn.GRU(w["rnn.l0.weight_ih"].shape[1], hidden, layers).double()
        with torch.no_grad():
            for k in range(layers):
                for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                    getattr(gru, f"{name}_l{k}").copy_(w[f"rnn.l{k}.{name}"])

    with torch.no_grad():
        step_out = []
        h = torch.zeros(layers, batch, hidden, dtype=torch.float64)
        c = torch.zeros_like(h)
        feats = []
        for t in range(steps):
            f = features(faces[t], None if lms is None else lms[t])
            feats.append(f)
            if cell == "gru":
                y, h = gru(f.unsqueeze(0), h)
                f = y[0]
            elif cell == "lstm":
                f, h, c = lstm_step(f, h, c)
            step_out.append(head(f).reshape(-1).tolist())
        sequence_out = step_out
        if cell == "gru":
            y, _ = gru(torch.stack(feats), torch.zeros(layers, batch, hidden, dtype=torch.float64))
            sequence_out = [head(y[t]).reshape(-1).tolist() for t in range(steps)]
    print(json.dumps({"step": step_out, "sequence": sequence_out}))


if __name__ == "__main__":
    if len(sys.argv) != 4:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    main(*sys.argv[1:])
