#!/usr/bin/env python3
"""PyTorch twin of one `affect-train` training step, for `affect-train bench-train`.

Usage: torch_bench_train.py SPEC.json

SPEC.json (written by the Rust side) holds the network config (backbone, kind, landmarks, cell,
hidden, layers, width, input_size, pool side, outputs, feature_norm), the loss (kind, moment
anchor and MSE weights), batch shape, threads, steps, warm-up, lr and weight decay, and paths to
  weights.safetensors  the Rust model's initial parameters and buffers (our names)
  batch.safetensors    faces [B,T,3,S,S], landmarks [B,T,136], labels [B,T,2], mask [B,T]
The script builds the same network in PyTorch with the same parameter names, loads the weights
with strict=True (so names and shapes must agree), checks that the first loss equals the Rust
side's, then times `steps` steps (forward, CCC loss, backward, Adam) after `warmup` steps.
Prints one JSON line: {"frames_per_second": …, "first_loss": …, "last_loss": …, "seconds": …}.
Dropout is off on both sides (its random numbers differ between the implementations).
"""
import json
import struct
import sys
import time

import numpy as np
import torch
from torch import nn


def read_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        dtype = {"F32": np.float32, "I64": np.int64, "F64": np.float64}[meta["dtype"]]
        a, b = meta["data_offsets"]
        out[name] = torch.from_numpy(np.frombuffer(data[a:b], dtype=dtype).reshape(meta["shape"]).copy())
    return out


def scaled(c, w):
    return max(1, int(round(c * w)))


VGG16 = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]


class Vgg(nn.Module):
    def __init__(self, width, pool):
        super().__init__()
        layers, c = [], 3
        for v in VGG16:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                o = scaled(v, width)
                layers += [nn.Conv2d(c, o, 3, padding=1), nn.ReLU(inplace=True)]
                c = o
        self.features = nn.Sequential(*layers)
        self.pool, self.out_features = pool, c * pool * pool

    def forward(self, x, _train):
        x = self.features(x)
        k = x.shape[2] // self.pool
        return nn.functional.avg_pool2d(x, k, k).flatten(1)


class Bottleneck(nn.Module):
    def __init__(self, cin, w, stride):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(cin, w, 1, bias=False), nn.BatchNorm2d(w)
        self.conv2, self.bn2 = nn.Conv2d(w, w, 3, stride, 1, bias=False), nn.BatchNorm2d(w)
        self.conv3, self.bn3 = nn.Conv2d(w, 4 * w, 1, bias=False), nn.BatchNorm2d(4 * w)
        self.downsample = None
        if stride != 1 or cin != 4 * w:
            self.downsample = nn.Sequential(nn.Conv2d(cin, 4 * w, 1, stride, bias=False), nn.BatchNorm2d(4 * w))

    def forward(self, x):
        y = torch.relu(self.bn1(self.conv1(x)))
        y = torch.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return torch.relu(y + (x if self.downsample is None else self.downsample(x)))


class ResNet50(nn.Module):
    def __init__(self, width):
        super().__init__()
        stem = scaled(64, width)
        self.conv1, self.bn1 = nn.Conv2d(3, stem, 7, 2, 3, bias=False), nn.BatchNorm2d(stem)
        c = stem
        for li, (n, base, stride) in enumerate([(3, 64, 1), (4, 128, 2), (6, 256, 2), (3, 512, 2)]):
            blocks = []
            for j in range(n):
                blocks.append(Bottleneck(c, scaled(base, width), stride if j == 0 else 1))
                c = 4 * scaled(base, width)
            setattr(self, f"layer{li + 1}", nn.Sequential(*blocks))
        self.out_features = c

    def forward(self, x, _train):
        x = nn.functional.max_pool2d(torch.relu(self.bn1(self.conv1(x))), 3, 2, 1)
        for li in range(1, 5):
            x = getattr(self, f"layer{li}")(x)
        return x.mean((2, 3))


class Layer(nn.Module):
    def __init__(self, cell, i, h):
        super().__init__()
        g = 3 if cell == "gru" else 4
        self.weight_ih = nn.Parameter(torch.empty(g * h, i))
        self.weight_hh = nn.Parameter(torch.empty(g * h, h))
        self.bias_ih = nn.Parameter(torch.empty(g * h))
        self.bias_hh = nn.Parameter(torch.empty(g * h))
        if cell == "lstm":
            self.peephole_i, self.peephole_f, self.peephole_o = (nn.Parameter(torch.empty(h)) for _ in range(3))


class Recurrent(nn.Module):
    """The same per-step loop as the Rust cells (input projections for all steps at once)."""

    def __init__(self, cell, i, h, layers):
        super().__init__()
        self.cell, self.h = cell, h
        for k in range(layers):
            self.add_module(f"l{k}", Layer(cell, i if k == 0 else h, h))
        self.layers = layers

    def forward(self, x):
        b = x.shape[0]
        for k in range(self.layers):
            p = getattr(self, f"l{k}")
            xg = nn.functional.linear(x, p.weight_ih, p.bias_ih)
            h = x.new_zeros(b, self.h)
            c = x.new_zeros(b, self.h)
            outs = []
            for t in range(x.shape[1]):
                hg = nn.functional.linear(h, p.weight_hh, p.bias_hh)
                if self.cell == "gru":
                    xr, xz, xn = xg[:, t].chunk(3, -1)
                    hr, hz, hn = hg.chunk(3, -1)
                    r, z = torch.sigmoid(xr + hr), torch.sigmoid(xz + hz)
                    n = torch.tanh(xn + r * hn)
                    h = n + z * (h - n)
                else:
                    gi, gf, gg, go = (xg[:, t] + hg).chunk(4, -1)
                    i = torch.sigmoid(gi + p.peephole_i * c)
                    f = torch.sigmoid(gf + p.peephole_f * c)
                    c = f * c + i * torch.tanh(gg)
                    h = torch.sigmoid(go + p.peephole_o * c) * torch.tanh(c)
                outs.append(h)
            x = torch.stack(outs, 1)
        return x


class Network(nn.Module):
    def __init__(self, n):
        super().__init__()
        if n["backbone"] == "resnet50":
            self.backbone = ResNet50(n["width"])
        else:
            self.backbone = Vgg(n["width"], n["pool"])
        f = self.backbone.out_features
        self.head = nn.Module()
        self.fcs, self.landmarks_at = n["fcs"], n["landmarks_at"]
        self.feature_norm = n["feature_norm"]
        if self.landmarks_at is not None:
            # Training-set landmark statistics (buffers), as in host-trainer/src/model/mod.rs.
            self.landmarks = nn.Module()
            self.landmarks.register_buffer("mean", torch.zeros(136))
            self.landmarks.register_buffer("std", torch.ones(136))
        for k, units in enumerate(self.fcs):
            if self.landmarks_at == k:
                f += 136
            self.head.add_module(f"fc{k + 1}", nn.Linear(f, units))
            f = units
        if self.landmarks_at == len(self.fcs):
            f += 136
        self.rnn = None
        if n["kind"] == "cnn_rnn":
            self.rnn = Recurrent(n["cell"], f, n["hidden"], n["layers"])
            f = n["hidden"]
        self.out = nn.Linear(f, n["outputs"])

    def forward(self, faces, landmarks):
        b, t = faces.shape[:2]
        x = self.backbone(faces.reshape(b * t, *faces.shape[2:]), True)
        lm = landmarks.reshape(b * t, 136)
        if self.landmarks_at is not None:
            lm = (lm - self.landmarks.mean) / self.landmarks.std
        for k in range(len(self.fcs)):
            if self.landmarks_at == k:
                x = torch.cat([x, lm], 1)
            x = torch.relu(getattr(self.head, f"fc{k + 1}")(x))
        if self.feature_norm:
            # host-trainer/src/model/mod.rs: LayerNorm without learnt parameters, eps 1e-5.
            x = torch.nn.functional.layer_norm(x, [x.shape[1]], eps=1e-5)
        if self.landmarks_at == len(self.fcs):
            x = torch.cat([x, lm], 1)
        if self.rnn is None:
            return self.out(x).reshape(b, t, -1)
        return self.out(self.rnn(x.reshape(b, t, -1)))


def state_names(model):
    """Our flat names: the backbone's parameters sit at the root, like in the Rust VarStore."""
    return {k.removeprefix("backbone."): k for k in model.state_dict() if "num_batches_tracked" not in k}


def ccc_loss(pred, truth, mask):
    m = mask.unsqueeze(-1).expand_as(pred).reshape(-1, 2)
    x, y = pred.reshape(-1, 2), truth.reshape(-1, 2)
    n = m.sum(0).clamp_min(1)
    mx, my = (x * m).sum(0) / n, (y * m).sum(0) / n
    dx, dy = (x - mx) * m, (y - my) * m
    vx, vy, cov = (dx * dx).sum(0) / n, (dy * dy).sum(0) / n, (dx * dy).sum(0) / n
    ccc = 2 * cov / (vx + vy + (mx - my) ** 2 + 1e-12)
    return 1 - ccc.mean()


def masked_moments(v, m, n):
    mean = (v * m).sum(0) / n
    d = (v - mean) * m
    return mean, ((d * d).sum(0) / n + 1e-12).sqrt()


def moment_anchor(pred, truth, mask):
    """host-trainer/src/loss.rs: (mean_pred - mean_label)^2 + (sd_pred - sd_label)^2, averaged."""
    m = mask.unsqueeze(-1).expand_as(pred).reshape(-1, 2)
    n = mask.sum().clamp_min(1)
    mx, sx = masked_moments(pred.reshape(-1, 2), m, n)
    my, sy = masked_moments(truth.reshape(-1, 2), m, n)
    return ((mx - my) ** 2 + (sx - sy) ** 2).mean()


def mse_loss(pred, truth, mask):
    m = mask.unsqueeze(-1).expand_as(pred)
    return (((pred - truth) ** 2) * m).sum() / (m.sum().clamp_min(1))


def loss_value(spec, pred, truth, mask):
    """host-trainer/src/train/mod.rs `loss_value`."""
    kind = spec["kind"]
    def ccc():
        c = ccc_loss(pred, truth, mask)
        if spec["anchor_weight"] > 0:
            c = c + moment_anchor(pred, truth, mask) * spec["anchor_weight"]
        return c
    if kind == "ccc":
        return ccc()
    if kind == "mse":
        return mse_loss(pred, truth, mask)
    return ccc() + mse_loss(pred, truth, mask) * spec["mse_weight"]


def main():
    spec = json.load(open(sys.argv[1]))
    torch.set_num_threads(spec["threads"])
    model = Network(spec["network"])
    names = state_names(model)
    weights = read_safetensors(spec["weights"])
    missing = set(names) ^ set(weights)
    if missing:
        raise SystemExit(f"parameter names differ between Rust and PyTorch: {sorted(missing)[:10]}")
    model.load_state_dict({names[k]: v for k, v in weights.items()}, strict=False)
    batch = read_safetensors(spec["batch"])
    opt = torch.optim.Adam(model.parameters(), lr=spec["lr"], weight_decay=spec["weight_decay"])
    model.train()

    def step():
        opt.zero_grad(set_to_none=True)
        pred = model(batch["faces"], batch["landmarks"])
        loss = loss_value(spec["loss"], pred, batch["labels"], batch["mask"])
        loss.backward()
        opt.step()
        return loss.item()

    first = step()
    for _ in range(spec["warmup"]):
        step()
    start = time.perf_counter()
    last = first
    for _ in range(spec["steps"]):
        last = step()
    seconds = time.perf_counter() - start
    frames = batch["faces"].shape[0] * batch["faces"].shape[1] * spec["steps"]
    print(json.dumps({"frames_per_second": frames / seconds, "first_loss": first, "last_loss": last, "seconds": seconds}))


if __name__ == "__main__":
    main()
