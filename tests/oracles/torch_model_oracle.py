#!/usr/bin/env python3
"""PyTorch reference outputs for the trainer's networks (host-trainer/tests/model_parity.rs).

Usage: torch_model_oracle.py OUT_DIR CASE [CASE...]   (writes OUT_DIR/CASE/*, seed 0 per case)

CASE is one of
  vgg16     torchvision VGG-16 with random init: weights.pt (torch.save state dict),
            input.safetensors {"x"}, expected.safetensors {"features"} = avgpool+flatten of the
            conv part, for a 32x32 input (feature map 1x1, pool 1)
  resnet50  torchvision ResNet-50, random init (and random BatchNorm statistics, so eval-mode
            BatchNorm is exercised): weights.safetensors, input, expected {"features"} (2048)
  gru       nn.GRU, 2 layers: weights.safetensors with our names rnn.l{k}.*, input {"x","h0"},
            expected {"y","h_n"}
  lstm      peephole LSTM written out by hand below (nn.LSTM has no peepholes), 2 layers;
            its peephole-free special case is checked against nn.LSTM here first.

Everything is float32, random, no downloads. Tensors go to disk as safetensors written by the
small writer below (the `safetensors` package is not needed).
"""
import json
import struct
import sys

import numpy as np
import torch
import torchvision


def save_safetensors(path, tensors):
    header, blobs, offset = {}, [], 0
    for name, t in tensors.items():
        a = np.ascontiguousarray(t.detach().cpu().numpy().astype("<f4"))
        b = a.tobytes()
        header[name] = {"dtype": "F32", "shape": list(a.shape), "data_offsets": [offset, offset + len(b)]}
        blobs.append(b)
        offset += len(b)
    h = json.dumps(header).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def randomise_batchnorm(model):
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.1, 0.1)


def vgg16(out):
    model = torchvision.models.vgg16(weights=None).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        f = torch.nn.functional.adaptive_avg_pool2d(model.features(x), 1).flatten(1)
    state = {k: v for k, v in model.state_dict().items() if k.startswith("features.")}
    torch.save(state, f"{out}/weights.pt")
    save_safetensors(f"{out}/input.safetensors", {"x": x})
    save_safetensors(f"{out}/expected.safetensors", {"features": f})


def resnet50(out):
    model = torchvision.models.resnet50(weights=None)
    randomise_batchnorm(model)
    model.eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        m = model
        y = m.maxpool(m.relu(m.bn1(m.conv1(x))))
        y = m.layer4(m.layer3(m.layer2(m.layer1(y))))
        f = m.avgpool(y).flatten(1)
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("fc.") and "num_batches" not in k}
    save_safetensors(f"{out}/weights.safetensors", state)
    save_safetensors(f"{out}/input.safetensors", {"x": x})
    save_safetensors(f"{out}/expected.safetensors", {"features": f})


B, T, I, H, L = 3, 7, 20, 16, 2


def gru(out):
    rnn = torch.nn.GRU(I, H, num_layers=L, batch_first=True)
    x = torch.randn(B, T, I)
    h0 = torch.randn(L, B, H)
    with torch.no_grad():
        y, h_n = rnn(x, h0)
    weights = {}
    for k in range(L):
        for p in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            weights[f"rnn.l{k}.{p}"] = getattr(rnn, f"{p}_l{k}")
    save_safetensors(f"{out}/weights.safetensors", weights)
    save_safetensors(f"{out}/input.safetensors", {"x": x, "h0": h0})
    save_safetensors(f"{out}/expected.safetensors", {"y": y, "h_n": h_n})


def peephole_lstm(x, h0, c0, params):
    """Peephole LSTM (gate order i, f, g, o), layer by layer, step by step."""
    inp = x
    hs, cs = [], []
    for k in range(L):
        p = lambda n: params[f"rnn.l{k}.{n}"]
        h, c = h0[k], c0[k]
        outs = []
        for t in range(inp.shape[1]):
            gates = inp[:, t] @ p("weight_ih").T + p("bias_ih") + h @ p("weight_hh").T + p("bias_hh")
            gi, gf, gg, go = gates.chunk(4, dim=-1)
            i = torch.sigmoid(gi + p("peephole_i") * c)
            f = torch.sigmoid(gf + p("peephole_f") * c)
            g = torch.tanh(gg)
            c = f * c + i * g
            o = torch.sigmoid(go + p("peephole_o") * c)
            h = o * torch.tanh(c)
            outs.append(h)
        inp = torch.stack(outs, 1)
        hs.append(h)
        cs.append(c)
    return inp, torch.stack(hs), torch.stack(cs)


def lstm(out):
    reference = torch.nn.LSTM(I, H, num_layers=L, batch_first=True)
    x = torch.randn(B, T, I)
    h0, c0 = torch.randn(L, B, H), torch.randn(L, B, H)
    params = {}
    for k in range(L):
        for p in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            params[f"rnn.l{k}.{p}"] = getattr(reference, f"{p}_l{k}").detach()
        for g in "ifo":
            params[f"rnn.l{k}.peephole_{g}"] = torch.zeros(H)
    with torch.no_grad():
        # The hand-written cell without peepholes must be PyTorch's LSTM.
        y_ref, (h_ref, c_ref) = reference(x, (h0, c0))
        y0, h_0, c_0 = peephole_lstm(x, h0, c0, params)
        assert (y_ref - y0).abs().max() < 1e-5 and (c_ref - c_0).abs().max() < 1e-5
        for k in range(L):
            for g in "ifo":
                params[f"rnn.l{k}.peephole_{g}"] = torch.empty(H).uniform_(-0.5, 0.5)
        y, h_n, c_n = peephole_lstm(x, h0, c0, params)
    save_safetensors(f"{out}/weights.safetensors", params)
    save_safetensors(f"{out}/input.safetensors", {"x": x, "h0": h0, "c0": c0})
    save_safetensors(f"{out}/expected.safetensors", {"y": y, "h_n": h_n, "c_n": c_n})


if __name__ == "__main__":
    import os

    torch.set_num_threads(1)
    cases = {"vgg16": vgg16, "resnet50": resnet50, "gru": gru, "lstm": lstm}
    for case in sys.argv[2:]:
        out = os.path.join(sys.argv[1], case)
        os.makedirs(out, exist_ok=True)
        torch.manual_seed(0)
        cases[case](out)
