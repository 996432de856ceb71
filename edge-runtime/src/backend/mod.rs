//! Inference backends for the exported streaming model: tract (default) and ONNX Runtime.
