//! ONNX export of trained networks: a streaming graph (one frame per call, recurrent state in
//! and out) in fp32 and int8 QDQ form, with the preprocessing and provenance embedded as
//! [`affect_shared::metadata::ModelMetadata`] JSON in `metadata_props`, and a proof that the
//! exported graph computes what the trained network computes.
//!
//! - [`onnx`]: the graph builder (Conv + folded batch norm, Gemm, pools, GRU, peephole LSTM).
//! - [`quantize`]: float graph → QDQ int8 graph, given activation ranges.
//! - [`calibrate`]: activation ranges from running the float graph on training frames.
//! - [`runner`]: the exported graph in tract, frame by frame with carried state.
//! - [`ort_oracle`]: ONNX Runtime and `onnx.checker` through the checked-in Python oracle.
//! - `network` (feature `torch`): trained network → streaming graph.
//! - `proof` (feature `torch`): tch vs tract vs ONNX Runtime on a held-out clip.
//! - `pipeline` (feature `torch`): the whole `affect-train export`.

pub mod calibrate;
#[cfg(feature = "torch")]
pub mod network;
pub mod onnx;
pub mod ort_oracle;
#[cfg(feature = "torch")]
pub mod pipeline;
#[cfg(feature = "torch")]
pub mod proof;
pub mod quantize;
pub mod runner;
