#!/usr/bin/env python3
"""ONNX Runtime oracle for the face pipeline (edge-runtime/src/faces), written independently
in numpy from the same specification:

1. letterbox the frame into 128x128 (scale = 128 / max(W, H), centred, black borders) with an
   area-averaging (box filter) resize, then scale to [-1, 1];
2. BlazeFace: 896 anchors (16x16x2 then 8x8x6, centres at cell centres, unit size), boxes and
   6 keypoints decoded as anchor * 128 + offset (128-pixel units), sigmoid scores, weighted NMS
   (MediaPipe "WEIGHTED": score-weighted mean of each cluster with IoU > iou_threshold, score
   of the best), boxes and keypoints mapped back to frame pixels;
3. landmarks: a square crop of side max(w, h) * (1 + 2 * margin) around the box centre, sampled
   bilinearly at pixel centres (outside the frame is black), rounded to bytes, 112x112, RGB minus
   face-api.js's mean, / 255; the net gives (x, y) fractions of the crop.

With --tile T, the detector also runs on T x T tiles (step T - overlap) and detections touching
an inner tile edge are dropped before the NMS, so small faces in large frames are found.

    faces_ort.py MODELS_DIR IMAGE [--score 0.5] [--iou 0.3] [--margin 0.2] [--tile T --overlap O]
                 [--no-landmarks] [--bench RUNS]

Prints JSON: {"faces": [{"box": [x, y, w, h], "score": s, "keypoints": [[x, y] * 6],
"landmarks": [[x, y] * 68], "va": [v, a]}], "latency_ms": {...}} ("va" with --expression:
expression-va.onnx on the crop its metadata describes) (latency only with --bench: median
single-thread ONNX Runtime time per model over RUNS runs).
"""

import argparse
import json
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
from PIL import Image

DETECTOR_SIZE = 128
LANDMARK_SIZE = 112
FACE_API_MEAN = np.array([122.782, 117.001, 104.298], dtype=np.float32)


def area_weights(out_size, lo_limit, hi_limit, in_size, scale, offset):
    """[out_size, in_size] matrix: output pixel u covers the frame interval
    [lo_limit + (u - offset) / scale, lo_limit + (u + 1 - offset) / scale); each frame pixel
    weighs the fraction of it covered, divided by the interval length. Only frame pixels inside
    [lo_limit, hi_limit) count: the rest of the interval (letterbox border) is black."""
    w = np.zeros((out_size, in_size), dtype=np.float64)
    for u in range(out_size):
        lo, hi = lo_limit + (u - offset) / scale, lo_limit + (u + 1 - offset) / scale
        clo, chi = max(lo, lo_limit), min(hi, hi_limit)
        for i in range(max(0, int(np.floor(clo))), min(in_size, int(np.ceil(chi)))):
            w[u, i] = max(0.0, min(chi, i + 1) - max(clo, i))
        w[u] /= hi - lo
    return w


def letterbox(frame, rect):
    """The frame region rect = (x, y, w, h) (integers) scaled by 128 / max(w, h) into the centre
    of a 128x128 image, in [-1, 1]; returns the tensor and the frame -> input mapping."""
    rx, ry, rw, rh = rect
    scale = DETECTOR_SIZE / max(rw, rh)
    ox, oy = (DETECTOR_SIZE - rw * scale) / 2, (DETECTOR_SIZE - rh * scale) / 2
    wx = area_weights(DETECTOR_SIZE, rx, rx + rw, frame.shape[1], scale, ox)
    wy = area_weights(DETECTOR_SIZE, ry, ry + rh, frame.shape[0], scale, oy)
    rows = np.tensordot(wy, frame.astype(np.float64), axes=(1, 0))  # [128, W, 3]
    img = np.tensordot(rows, wx, axes=(1, 1)).transpose(0, 2, 1)  # [128, 128, 3]
    return (img / 127.5 - 1.0).astype(np.float32)[None], scale, (ox - rx * scale, oy - ry * scale)


def regions(width, height, tile, overlap):
    """The whole frame, then (with tile > 0) square tiles of side `tile` whose starts step by
    tile - overlap, the last one in each direction flush with the frame edge."""
    out = [(0, 0, width, height)]
    if tile <= 0 or (width <= tile and height <= tile):
        return out
    def starts(size):
        if size <= tile:
            return [0]
        step = tile - overlap
        s = list(range(0, size - tile, step))
        return s + [size - tile]
    for y in starts(height):
        for x in starts(width):
            out.append((x, y, min(tile, width), min(tile, height)))
    return out


def anchors():
    out = []
    for cells, per_cell in ((16, 2), (8, 6)):
        for y in range(cells):
            for x in range(cells):
                out.extend([((x + 0.5) / cells, (y + 0.5) / cells)] * per_cell)
    return np.array(out, dtype=np.float64)


def iou(a, b):
    """a, b: [x0, y0, x1, y1]."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def decode(session, frame, rect):
    """Candidates of one region in frame pixels: (score, [x0, y0, x1, y1], [[x, y] * 6])."""
    tensor, scale, (ox, oy) = letterbox(frame, rect)
    outputs = session.run(None, {session.get_inputs()[0].name: tensor})
    scores = np.concatenate([o.reshape(-1) for o in outputs if o.shape[-1] == 1])
    regs = np.concatenate([o.reshape(-1, 16) for o in outputs if o.shape[-1] == 16])
    if scores.shape[0] != 896:  # outputs of the two layers in the order 16x16 then 8x8
        raise SystemExit("unexpected BlazeFace outputs")
    probs = 1.0 / (1.0 + np.exp(-np.clip(scores.astype(np.float64), -100, 100)))
    a = anchors() * DETECTOR_SIZE
    cx, cy = a[:, 0] + regs[:, 0], a[:, 1] + regs[:, 1]
    bw, bh = regs[:, 2].astype(np.float64), regs[:, 3].astype(np.float64)
    corners = np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], axis=1)
    kps = a[:, None, :] + regs[:, 4:].reshape(-1, 6, 2)
    corners = (corners - [ox, oy, ox, oy]) / scale
    kps = (kps - [ox, oy]) / scale
    return probs, corners, kps, tensor


def detect(session, frame, score_threshold, iou_threshold, tile=0, overlap=0):
    height, width, _ = frame.shape
    probs, corners, kps = [], [], []
    first_input = None
    for rect in regions(width, height, tile, overlap):
        p, c, k, tensor = decode(session, frame, rect)
        first_input = tensor if first_input is None else first_input
        keep = p >= score_threshold
        if rect != (0, 0, width, height):
            # Faces cut by an inner tile edge are found whole in a neighbouring tile or the frame.
            rx, ry, rw, rh = rect
            eps = 2.0 * max(rw, rh) / DETECTOR_SIZE
            keep &= ~((rx > 0) & (c[:, 0] < rx + eps))
            keep &= ~((ry > 0) & (c[:, 1] < ry + eps))
            keep &= ~((rx + rw < width) & (c[:, 2] > rx + rw - eps))
            keep &= ~((ry + rh < height) & (c[:, 3] > ry + rh - eps))
        probs.append(p[keep])
        corners.append(c[keep])
        kps.append(k[keep])
    probs, corners, kps = np.concatenate(probs), np.concatenate(corners), np.concatenate(kps)
    order = list(np.argsort(-probs, kind="stable"))
    faces = []
    while order:
        best = order[0]
        cluster = [i for i in order if iou(corners[best], corners[i]) > iou_threshold]
        order = [i for i in order if i not in cluster]
        weights = probs[cluster]
        x0, y0, x1, y1 = (corners[cluster] * weights[:, None]).sum(0) / weights.sum()
        kp = (kps[cluster] * weights[:, None, None]).sum(0) / weights.sum()
        faces.append({"box": [x0, y0, x1 - x0, y1 - y0], "score": float(probs[best]),
                      "keypoints": kp.tolist()})
    return faces, first_input


def crop(frame, cx, cy, side):
    """side x side frame square centred at (cx, cy), sampled bilinearly at the 112x112 pixel
    centres (continuous coordinates, pixel i covers [i, i + 1)), black outside, rounded."""
    h, w, _ = frame.shape
    t = (np.arange(LANDMARK_SIZE) + 0.5) * side / LANDMARK_SIZE
    xs, ys = cx - side / 2 + t - 0.5, cy - side / 2 + t - 0.5
    padded = np.zeros((h + 4, w + 4, 3), dtype=np.float64)
    padded[2:-2, 2:-2] = frame
    x0, y0 = np.floor(xs), np.floor(ys)
    fx, fy = (xs - x0)[None, :, None], (ys - y0)[:, None, None]
    xi = np.clip(x0.astype(int) + 2, 0, w + 2)
    yi = np.clip(y0.astype(int) + 2, 0, h + 2)
    # Samples further out than the 2-pixel border read black too.
    inside_x = ((x0 >= -2) & (x0 <= w))[None, :, None]
    inside_y = ((y0 >= -2) & (y0 <= h))[:, None, None]
    p = lambda dy, dx: padded[(yi + dy)[:, None], (xi + dx)[None, :]]  # noqa: E731
    top = p(0, 0) + (p(0, 1) - p(0, 0)) * fx
    bottom = p(1, 0) + (p(1, 1) - p(1, 0)) * fx
    out = (top + (bottom - top) * fy) * inside_x * inside_y
    return np.clip(np.round(out), 0, 255)


def normalised_crop(frame, cx, cy, side, mean=FACE_API_MEAN, std=255.0):
    pixels = crop(frame, cx, cy, side).astype(np.float32)
    return ((pixels - mean) / std).transpose(2, 0, 1)[None].astype(np.float32)


def valence_arousal(session, frame, box):
    """expression-va.onnx on a face, preprocessed as its `affect` metadata says."""
    meta = json.loads(session.get_modelmeta().custom_metadata_map["affect"])
    pre = meta["preprocess"]
    if pre["colour"] != "rgb" or pre["alignment"]["kind"] != "none" or pre["size"] != LANDMARK_SIZE:
        raise SystemExit(f"oracle does not implement preprocess {pre}")
    x, y, w, h = box
    side = max(w, h) * (1 + 2 * pre["margin"])
    mean = np.array(pre["mean"], dtype=np.float32)
    std = np.array(pre["std"], dtype=np.float32)
    tensor = normalised_crop(frame, x + w / 2, y + h / 2, side, mean * 255.0 / pre["scale"], std * 255.0 / pre["scale"])
    return session.run(["va"], {"face": tensor})[0][0].tolist()


def landmarks(session, frame, cx, cy, side):
    tensor = normalised_crop(frame, cx, cy, side)
    fractions = session.run(["landmarks"], {"face": tensor})[0].reshape(68, 2).astype(np.float64)
    return fractions * side + [cx - side / 2, cy - side / 2], tensor


def median_ms(fn, runs):
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return float(np.median(times))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", type=Path)
    parser.add_argument("image", type=Path)
    parser.add_argument("--score", type=float, default=0.5)
    parser.add_argument("--iou", type=float, default=0.3)
    parser.add_argument("--margin", type=float, default=0.2)
    parser.add_argument("--tile", type=int, default=0)
    parser.add_argument("--overlap", type=int, default=0)
    parser.add_argument("--no-landmarks", action="store_true")
    parser.add_argument("--expression", action="store_true", help="also run expression-va.onnx")
    parser.add_argument("--bench", type=int, default=0)
    args = parser.parse_args()

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    providers = ["CPUExecutionProvider"]
    detector = ort.InferenceSession(str(args.models / "blazeface.onnx"), options, providers=providers)
    marker = ort.InferenceSession(str(args.models / "face-landmarks-68.onnx"), options, providers=providers)

    frame = np.asarray(Image.open(args.image).convert("RGB"))
    faces, detector_input = detect(detector, frame, args.score, args.iou, args.tile, args.overlap)
    landmark_input = None
    for face in faces if not args.no_landmarks else []:
        x, y, w, h = face["box"]
        points, landmark_input = landmarks(marker, frame, x + w / 2, y + h / 2, max(w, h) * (1 + 2 * args.margin))
        face["landmarks"] = points.tolist()
    if args.expression:
        expression = ort.InferenceSession(str(args.models / "expression-va.onnx"), options, providers=providers)
        for face in faces:
            face["va"] = valence_arousal(expression, frame, face["box"])
    result = {"faces": faces}
    if args.bench:
        if landmark_input is None:
            landmark_input = np.zeros((1, 3, LANDMARK_SIZE, LANDMARK_SIZE), dtype=np.float32)
        name = detector.get_inputs()[0].name
        result["latency_ms"] = {
            "blazeface": median_ms(lambda: detector.run(None, {name: detector_input}), args.bench),
            "landmarks68": median_ms(lambda: marker.run(None, {"face": landmark_input}), args.bench),
        }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
