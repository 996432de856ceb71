//! Rewrites a float graph into int8 QDQ form (the layout ONNX Runtime and TensorRT turn into
//! integer kernels):
//!
//! - every `Conv` / `Gemm` weight becomes an int8 initializer, symmetric, per output channel
//!   (axis 0), read through `DequantizeLinear`; its bias becomes int32 with scale
//!   `s_input · s_weight[c]` (zero point 0), as integer kernels accumulate it;
//! - every activation entering a `Conv` / `Gemm`, and every activation leaving one (after its
//!   `Relu`, when a `Relu` is its only consumer), passes `QuantizeLinear → DequantizeLinear` with a
//!   per-tensor uint8 scale and zero point from calibrated ranges;
//! - tensors produced by `MaxPool` / `Flatten` from a quantized tensor reuse that tensor's
//!   parameters, so the runtime moves them through in uint8;
//! - graph outputs and everything else (recurrent layers, concatenations) stay float.
//!
//! The pass is pure: ranges come from [`crate::export::calibrate`].

use std::collections::{BTreeSet, HashMap};

use tract_onnx::pb;

/// Observed value range of one activation tensor.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ActivationRange {
    /// Smallest value.
    pub min: f32,
    /// Largest value.
    pub max: f32,
}

/// Why a graph could not be quantized.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum QuantizeError {
    /// The model has no graph.
    #[error("the model has no graph")]
    NoGraph,
    /// No calibrated range for a tensor that needs one.
    #[error("no calibrated range for activation `{0}`")]
    MissingRange(String),
    /// A range is not finite or inverted.
    #[error("activation `{tensor}`: unusable range [{min}, {max}]")]
    BadRange {
        /// Tensor name.
        tensor: String,
        /// Minimum.
        min: f32,
        /// Maximum.
        max: f32,
    },
    /// A Conv/Gemm weight or bias is not a float initializer of the expected shape.
    #[error("node `{node}`: {reason}")]
    Unsupported {
        /// Node name.
        node: String,
        /// Why it cannot be quantized.
        reason: String,
    },
}

/// Per-tensor affine uint8 quantization `q = clamp(round(x / scale) + zero_point, 0, 255)`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AffineUint8 {
    /// Step.
    pub scale: f32,
    /// Integer that represents 0.0.
    pub zero_point: u8,
}

impl AffineUint8 {
    /// Parameters covering `range` extended to include 0 (so 0.0, e.g. padding and ReLU's
    /// floor, is exact).
    pub fn from_range(range: ActivationRange) -> Self {
        let min = range.min.min(0.0);
        let max = range.max.max(0.0);
        if max - min <= f32::EPSILON {
            return Self {
                scale: 1.0,
                zero_point: 0,
            };
        }
        let scale = (max - min) / 255.0;
        let zero_point = (-min / scale).round().clamp(0.0, 255.0) as u8;
        Self { scale, zero_point }
    }
}

/// Symmetric int8 per-channel scales (`max |w| / 127` per output channel) and the quantized
/// weights, for a weight whose first axis is the output channel.
pub fn quantize_weight_per_channel(dims: &[usize], data: &[f32]) -> (Vec<f32>, Vec<i8>) {
    let channels = dims.first().copied().unwrap_or(1).max(1);
    let per_channel = data.len() / channels;
    let mut scales = Vec::with_capacity(channels);
    let mut quantized = Vec::with_capacity(data.len());
    for chunk in data.chunks(per_channel.max(1)) {
        let max = chunk.iter().fold(0.0f32, |m, w| m.max(w.abs()));
        let scale = if max > 0.0 { max / 127.0 } else { 1.0 };
        scales.push(scale);
        quantized.extend(
            chunk
                .iter()
                .map(|w| (w / scale).round().clamp(-127.0, 127.0) as i8),
        );
    }
    (scales, quantized)
}

/// Ops whose output carries its input's quantization parameters (order-preserving or pure
/// data movement), so the runtime can run them on uint8 directly.
const PASS_THROUGH: &[&str] = &["MaxPool", "Flatten", "Reshape"];

struct GraphIndex<'a> {
    graph: &'a pb::GraphProto,
    producer: HashMap<&'a str, usize>,
    consumers: HashMap<&'a str, Vec<usize>>,
    initializers: HashMap<&'a str, &'a pb::TensorProto>,
}

impl<'a> GraphIndex<'a> {
    fn new(graph: &'a pb::GraphProto) -> Self {
        let mut producer = HashMap::new();
        let mut consumers: HashMap<&str, Vec<usize>> = HashMap::new();
        for (i, node) in graph.node.iter().enumerate() {
            for o in &node.output {
                producer.insert(o.as_str(), i);
            }
            for input in &node.input {
                consumers.entry(input.as_str()).or_default().push(i);
            }
        }
        let initializers = graph
            .initializer
            .iter()
            .map(|t| (t.name.as_str(), t))
            .collect();
        Self {
            graph,
            producer,
            consumers,
            initializers,
        }
    }

    fn is_graph_output(&self, tensor: &str) -> bool {
        self.graph.output.iter().any(|o| o.name == tensor)
    }

    /// Conv/Gemm nodes whose weight (and bias) are float initializers.
    fn quantizable_nodes(&self) -> Vec<usize> {
        self.graph
            .node
            .iter()
            .enumerate()
            .filter(|(_, n)| matches!(n.op_type.as_str(), "Conv" | "Gemm"))
            .filter(|(_, n)| {
                n.input
                    .get(1)
                    .is_some_and(|w| self.initializers.contains_key(w.as_str()))
            })
            .map(|(i, _)| i)
            .collect()
    }

    /// The activation tensors that get `QuantizeLinear → DequantizeLinear`.
    fn activations(&self) -> BTreeSet<String> {
        let mut set = BTreeSet::new();
        for i in self.quantizable_nodes() {
            let node = &self.graph.node[i];
            set.insert(node.input[0].clone());
            let mut out = node.output[0].as_str();
            if let Some(users) = self.consumers.get(out)
                && let [single] = users[..]
                && self.graph.node[single].op_type == "Relu"
            {
                out = &self.graph.node[single].output[0];
            }
            if !self.is_graph_output(out) {
                set.insert(out.to_owned());
            }
        }
        set
    }

    /// The tensor whose calibrated range quantizes `tensor` (follows pass-through ops back to a
    /// quantized input).
    fn range_source(&self, tensor: &str, activations: &BTreeSet<String>) -> String {
        let mut current = tensor;
        while let Some(&p) = self.producer.get(current) {
            let node = &self.graph.node[p];
            if PASS_THROUGH.contains(&node.op_type.as_str()) && activations.contains(&node.input[0])
            {
                current = &node.input[0];
            } else {
                break;
            }
        }
        current.to_owned()
    }
}

/// The activation tensors whose value ranges [`quantize_qdq`] needs, in a stable order. Run the
/// float model on calibration data with these as extra outputs.
pub fn calibration_targets(model: &pb::ModelProto) -> Result<Vec<String>, QuantizeError> {
    let graph = model.graph.as_ref().ok_or(QuantizeError::NoGraph)?;
    let index = GraphIndex::new(graph);
    let activations = index.activations();
    let targets: BTreeSet<String> = activations
        .iter()
        .map(|t| index.range_source(t, &activations))
        .collect();
    Ok(targets.into_iter().collect())
}

fn float_initializer_values(tensor: &pb::TensorProto) -> Option<Vec<f32>> {
    if tensor.data_type != pb::tensor_proto::DataType::Float as i32 {
        return None;
    }
    if !tensor.raw_data.is_empty() {
        return Some(
            tensor
                .raw_data
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
        );
    }
    Some(tensor.float_data.clone())
}

fn raw_tensor(
    name: &str,
    dims: &[i64],
    data_type: pb::tensor_proto::DataType,
    raw: Vec<u8>,
) -> pb::TensorProto {
    pb::TensorProto {
        name: name.to_owned(),
        dims: dims.to_vec(),
        data_type: data_type as i32,
        raw_data: raw,
        ..Default::default()
    }
}

fn qdq_node(
    op: &str,
    name: String,
    inputs: [&str; 3],
    output: &str,
    axis: Option<i64>,
) -> pb::NodeProto {
    pb::NodeProto {
        op_type: op.to_owned(),
        name,
        input: inputs.iter().map(|s| (*s).to_owned()).collect(),
        output: vec![output.to_owned()],
        attribute: axis
            .map(|a| pb::AttributeProto {
                name: "axis".into(),
                r#type: pb::attribute_proto::AttributeType::Int as i32,
                i: a,
                ..Default::default()
            })
            .into_iter()
            .collect(),
        ..Default::default()
    }
}

/// Rewrites a float model into QDQ int8 form (see the module doc). `ranges` must hold every
/// tensor [`calibration_targets`] lists. Metadata, inputs and outputs are kept.
pub fn quantize_qdq(
    model: &pb::ModelProto,
    ranges: &HashMap<String, ActivationRange>,
) -> Result<pb::ModelProto, QuantizeError> {
    use pb::tensor_proto::DataType;
    let graph = model.graph.as_ref().ok_or(QuantizeError::NoGraph)?;
    let index = GraphIndex::new(graph);
    let activations = index.activations();

    // Activation parameters, stored as scalar initializers `{t}.scale` / `{t}.zero_point`.
    let mut params: HashMap<String, (AffineUint8, String)> = HashMap::new();
    let mut new_initializers = Vec::new();
    for tensor in &activations {
        let source = index.range_source(tensor, &activations);
        let range = *ranges
            .get(&source)
            .ok_or_else(|| QuantizeError::MissingRange(source.clone()))?;
        if !(range.min.is_finite() && range.max.is_finite() && range.min <= range.max) {
            return Err(QuantizeError::BadRange {
                tensor: source,
                min: range.min,
                max: range.max,
            });
        }
        if !params.contains_key(&source) {
            let affine = AffineUint8::from_range(range);
            new_initializers.push(raw_tensor(
                &format!("{source}.scale"),
                &[],
                DataType::Float,
                affine.scale.to_le_bytes().to_vec(),
            ));
            new_initializers.push(raw_tensor(
                &format!("{source}.zero_point"),
                &[],
                DataType::Uint8,
                vec![affine.zero_point],
            ));
            params.insert(source.clone(), (affine, source.clone()));
        }
        if source != *tensor {
            let shared = params[&source].clone();
            params.insert(tensor.clone(), shared);
        }
    }

    let dequantized = |t: &str| format!("{t}.dq");
    let qdq_pair = |tensor: &str| -> [pb::NodeProto; 2] {
        let (_, source) = &params[tensor];
        let scale = format!("{source}.scale");
        let zero = format!("{source}.zero_point");
        let quantized = format!("{tensor}.q");
        [
            qdq_node(
                "QuantizeLinear",
                format!("{tensor}.quantize"),
                [tensor, &scale, &zero],
                &quantized,
                None,
            ),
            qdq_node(
                "DequantizeLinear",
                format!("{tensor}.dequantize"),
                [&quantized, &scale, &zero],
                &dequantized(tensor),
                None,
            ),
        ]
    };

    // Weights and biases of the quantized nodes.
    let mut replaced_inputs: HashMap<(usize, usize), String> = HashMap::new();
    let mut weight_nodes: HashMap<usize, Vec<pb::NodeProto>> = HashMap::new();
    let mut dropped_initializers = BTreeSet::new();
    for i in index.quantizable_nodes() {
        let node = &graph.node[i];
        let unsupported = |reason: String| QuantizeError::Unsupported {
            node: node.name.clone(),
            reason,
        };
        let weight = index.initializers[node.input[1].as_str()];
        let values = float_initializer_values(weight)
            .ok_or_else(|| unsupported(format!("weight `{}` is not float", weight.name)))?;
        let dims: Vec<usize> = weight.dims.iter().map(|&d| d as usize).collect();
        if node.op_type == "Gemm" {
            let trans_b = node
                .attribute
                .iter()
                .find(|a| a.name == "transB")
                .is_some_and(|a| a.i == 1);
            if !trans_b {
                return Err(unsupported(
                    "Gemm weights must be [out, in] (transB = 1) for per-output-channel scales"
                        .into(),
                ));
            }
        }
        let (scales, quantized) = quantize_weight_per_channel(&dims, &values);
        let channels = scales.len();
        let w = &weight.name;
        new_initializers.push(raw_tensor(
            &format!("{w}.quantized"),
            &weight.dims,
            DataType::Int8,
            quantized.iter().map(|&q| q as u8).collect(),
        ));
        new_initializers.push(raw_tensor(
            &format!("{w}.scale"),
            &[channels as i64],
            DataType::Float,
            scales.iter().flat_map(|s| s.to_le_bytes()).collect(),
        ));
        new_initializers.push(raw_tensor(
            &format!("{w}.zero_point"),
            &[channels as i64],
            DataType::Int8,
            vec![0; channels],
        ));
        let mut extra = vec![qdq_node(
            "DequantizeLinear",
            format!("{w}.dequantize"),
            [
                &format!("{w}.quantized"),
                &format!("{w}.scale"),
                &format!("{w}.zero_point"),
            ],
            &dequantized(w),
            Some(0),
        )];
        replaced_inputs.insert((i, 1), dequantized(w));
        dropped_initializers.insert(w.clone());
        if let Some(bias_name) = node.input.get(2).filter(|b| !b.is_empty()) {
            let bias = index
                .initializers
                .get(bias_name.as_str())
                .ok_or_else(|| unsupported(format!("bias `{bias_name}` is not an initializer")))?;
            let values = float_initializer_values(bias)
                .ok_or_else(|| unsupported(format!("bias `{bias_name}` is not float")))?;
            if values.len() != channels {
                return Err(unsupported(format!(
                    "bias `{bias_name}` has {} values for {channels} output channels",
                    values.len()
                )));
            }
            let input_scale = params[&node.input[0]].0.scale;
            let bias_scales: Vec<f32> = scales.iter().map(|s| s * input_scale).collect();
            let quantized: Vec<i32> = values
                .iter()
                .zip(&bias_scales)
                .map(|(b, s)| {
                    (f64::from(*b) / f64::from(*s))
                        .round()
                        .clamp(f64::from(i32::MIN), f64::from(i32::MAX)) as i32
                })
                .collect();
            new_initializers.push(raw_tensor(
                &format!("{bias_name}.quantized"),
                &bias.dims,
                DataType::Int32,
                quantized.iter().flat_map(|q| q.to_le_bytes()).collect(),
            ));
            new_initializers.push(raw_tensor(
                &format!("{bias_name}.scale"),
                &[channels as i64],
                DataType::Float,
                bias_scales.iter().flat_map(|s| s.to_le_bytes()).collect(),
            ));
            new_initializers.push(raw_tensor(
                &format!("{bias_name}.zero_point"),
                &[channels as i64],
                DataType::Int32,
                vec![0; 4 * channels],
            ));
            extra.push(qdq_node(
                "DequantizeLinear",
                format!("{bias_name}.dequantize"),
                [
                    &format!("{bias_name}.quantized"),
                    &format!("{bias_name}.scale"),
                    &format!("{bias_name}.zero_point"),
                ],
                &dequantized(bias_name),
                Some(0),
            ));
            replaced_inputs.insert((i, 2), dequantized(bias_name));
            dropped_initializers.insert(bias_name.clone());
        }
        weight_nodes.insert(i, extra);
    }

    // Rebuild the node list in topological order: QDQ of graph inputs first, each node's weight
    // DequantizeLinear just before it, each activation's QDQ pair right after its producer.
    let graph_input_qdq: Vec<pb::NodeProto> = graph
        .input
        .iter()
        .filter(|i| activations.contains(&i.name))
        .flat_map(|i| qdq_pair(&i.name))
        .collect();
    let mut nodes = graph_input_qdq;
    for (i, node) in graph.node.iter().enumerate() {
        nodes.extend(weight_nodes.remove(&i).unwrap_or_default());
        let mut node = node.clone();
        for (slot, input) in node.input.iter_mut().enumerate() {
            if let Some(new) = replaced_inputs.get(&(i, slot)) {
                *input = new.clone();
            } else if activations.contains(input.as_str()) {
                *input = dequantized(input);
            }
        }
        let produced: Vec<String> = node
            .output
            .iter()
            .filter(|o| activations.contains(o.as_str()))
            .cloned()
            .collect();
        nodes.push(node);
        for tensor in produced {
            nodes.extend(qdq_pair(&tensor));
        }
    }

    let still_used: BTreeSet<&str> = nodes
        .iter()
        .flat_map(|n| n.input.iter().map(String::as_str))
        .collect();
    let mut initializers: Vec<pb::TensorProto> = graph
        .initializer
        .iter()
        .filter(|t| !dropped_initializers.contains(&t.name) || still_used.contains(t.name.as_str()))
        .cloned()
        .collect();
    initializers.extend(new_initializers);

    let mut quantized = model.clone();
    let out_graph = quantized.graph.as_mut().ok_or(QuantizeError::NoGraph)?;
    out_graph.node = nodes;
    out_graph.initializer = initializers;
    Ok(quantized)
}
