//! Face detection (BlazeFace) and 68-point landmarks (face-api.js), both ONNX.
