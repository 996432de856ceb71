//! The streaming model contract: the one place that names the exported ONNX model's tensors and
//! fixes their layouts. The trainer's exporter writes graphs with these names, its export checks
//! and the edge runtime's backends read them, and the tests build graphs from them.
//!
//! # Tensors
//!
//! | name | direction | shape | when |
//! |---|---|---|---|
//! | [`FACE`] | input | `[N, 3, S, S]` | always (`S` = preprocessing crop size) |
//! | [`LANDMARKS`] | input | `[N,` [`LANDMARK_VALUES`]`]` | scenario 2 networks |
//! | [`H_IN`] | input | `[layers, N, hidden]` ([`state_shape`]) | recurrent networks |
//! | [`C_IN`] | input | `[layers, N, hidden]` | LSTM networks |
//! | [`VA`] | output | `[N, 2]` (valence, arousal) | always |
//! | [`H_OUT`] | output | like [`H_IN`] | recurrent networks |
//! | [`C_OUT`] | output | like [`C_IN`] | LSTM networks |
//!
//! # Frames without a face
//!
//! **The recurrent state advances only on frames that have a face; a frame without a face leaves
//! the state unchanged.** Training and evaluation mask such frames out of the recurrence (the
//! state is carried over them, not stepped with a zero input), the export proof steps the ONNX
//! model only on frames with a face, and the edge runtime does not run a track's model on a frame
//! where its face was missed. A sequence with gaps therefore gives the same outputs, at every frame
//! with a face, as the same sequence with the face-less frames removed.

/// Number of facial landmarks (iBUG 300-W 68-point ordering).
pub const LANDMARK_POINTS: usize = 68;
/// Values per landmarks row: [`LANDMARK_POINTS`] × (x, y), laid out `x0, y0, x1, y1, …`.
pub const LANDMARK_VALUES: usize = LANDMARK_POINTS * 2;

/// Input: preprocessed face crops `[N, 3, S, S]`.
pub const FACE: &str = "face";
/// Input: landmark values `[N, LANDMARK_VALUES]` (scenario 2 networks only).
pub const LANDMARKS: &str = "landmarks";
/// Input: recurrent hidden state `[layers, N, hidden]`.
pub const H_IN: &str = "h_in";
/// Input: recurrent cell state `[layers, N, hidden]` (LSTM only).
pub const C_IN: &str = "c_in";
/// Output: valence and arousal `[N, 2]`.
pub const VA: &str = "va";
/// Output: next hidden state, laid out like [`H_IN`].
pub const H_OUT: &str = "h_out";
/// Output: next cell state, laid out like [`C_IN`] (LSTM only).
pub const C_OUT: &str = "c_out";

/// Every input name the contract allows.
pub const INPUTS: [&str; 4] = [FACE, LANDMARKS, H_IN, C_IN];

/// Shape of a recurrent state tensor ([`H_IN`], [`H_OUT`], [`C_IN`], [`C_OUT`]):
/// `[layers, N, hidden]`, the one axis order everybody uses.
pub const fn state_shape(layers: usize, batch: usize, hidden: usize) -> [usize; 3] {
    [layers, batch, hidden]
}
