#!/usr/bin/env python3
"""Independent CCC/MSE (numpy, float64, two-pass) of two `valence,arousal` files, for the
`affect-train score` parity test. Prints the same JSON shape as the Rust command."""
import json
import sys

import numpy as np


def load(path):
    return np.loadtxt(path, delimiter=",", skiprows=1, dtype=np.float64, ndmin=2)


def ccc(x, y):
    mx, my = x.mean(), y.mean()
    vx, vy = ((x - mx) ** 2).mean(), ((y - my) ** 2).mean()
    cov = ((x - mx) * (y - my)).mean()
    den = vx + vy + (mx - my) ** 2
    return 1.0 if den == 0 else 2 * cov / den


pred, truth = load(sys.argv[1]), load(sys.argv[2])
keep = ~(truth == -5).any(axis=1)
p, t = pred[keep], truth[keep]
out = {name: {"ccc": ccc(p[:, d], t[:, d]), "mse": float(((p[:, d] - t[:, d]) ** 2).mean())}
       for d, name in enumerate(["valence", "arousal"])}
out["frames"] = int(keep.sum())
print(json.dumps(out))
