//! Inference backends for the exported streaming model: tract (default) and ONNX Runtime.
//!
//! INTERFACE (fixed by the skeleton; implementations may add items).
