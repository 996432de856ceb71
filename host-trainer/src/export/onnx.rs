//! A small ONNX graph builder: float initializers, the operators the paper's networks need
//! (Conv with batch-norm folded in, Gemm, Relu, pools, Concat, Flatten, Add, GRU, peephole LSTM)
//! and model assembly with `metadata_props`, written as opset [`OPSET`] / IR [`IR_VERSION`]
//! protobuf through the prost types of `tract_onnx::pb`.
//!
//! Recurrent layers take PyTorch-layout weights (GRU gates `r, z, n`; LSTM gates `i, f, g, o`;
//! peepholes `p_i, p_f, p_o`) and are rewritten into ONNX's layout (GRU `z, r, h` with
//! `linear_before_reset = 1`; LSTM `i, o, f, c` with `P = [p_i, p_o, p_f]`). They run one time
//! step per call: the streaming graph feeds `[N, features]` and carries `[layers, N, hidden]` state.

use std::collections::HashSet;

use prost::Message;
use tract_onnx::pb;

/// ONNX operator set the graphs are written for.
pub const OPSET: i64 = 17;

/// ONNX IR version matching [`OPSET`] (ONNX 1.12+ reads it; ONNX Runtime ≥ 1.12 runs it).
pub const IR_VERSION: i64 = 8;

/// Name of the symbolic batch dimension of every graph input and output.
pub const BATCH_DIM: &str = "N";

/// Why a graph could not be built.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum OnnxError {
    /// A tensor's data does not fill its shape.
    #[error("tensor `{name}`: shape {dims:?} needs {expected} values, found {found}")]
    ShapeMismatch {
        /// Tensor name.
        name: String,
        /// Declared shape.
        dims: Vec<usize>,
        /// Product of `dims`.
        expected: usize,
        /// Values given.
        found: usize,
    },
    /// Two weights of one layer do not fit together (e.g. bias length ≠ output channels).
    #[error("layer `{layer}`: {reason}")]
    Incompatible {
        /// Layer name.
        layer: String,
        /// What does not fit.
        reason: String,
    },
    /// A tensor name is used twice.
    #[error("tensor name `{0}` is used twice in the graph")]
    DuplicateName(String),
}

/// A dense row-major float tensor (a weight or a batch-norm parameter).
#[derive(Debug, Clone, PartialEq)]
pub struct FloatTensor {
    /// Shape.
    pub dims: Vec<usize>,
    /// `dims.iter().product()` values, row-major.
    pub data: Vec<f32>,
}

impl FloatTensor {
    /// Checks that `data` fills `dims`; `name` is used in the error.
    pub fn new(name: &str, dims: Vec<usize>, data: Vec<f32>) -> Result<Self, OnnxError> {
        let expected = dims.iter().product::<usize>();
        if expected != data.len() {
            return Err(OnnxError::ShapeMismatch {
                name: name.to_owned(),
                dims,
                expected,
                found: data.len(),
            });
        }
        Ok(Self { dims, data })
    }

    /// Number of values.
    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// Whether the tensor holds no values.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Rows of equal length along the first axis, reordered: row block `order[k]` of `blocks`
    /// equal blocks becomes block `k`. Used to permute stacked gate weights.
    fn reorder_blocks(&self, blocks: usize, order: &[usize]) -> Vec<f32> {
        let block = self.data.len() / blocks;
        order
            .iter()
            .flat_map(|&b| self.data[b * block..(b + 1) * block].iter().copied())
            .collect()
    }
}

/// Batch-norm parameters in eval mode: `y = (x - mean) / sqrt(var + eps) * weight + bias`.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchNorm {
    /// Scale γ, `[C]`.
    pub weight: Vec<f32>,
    /// Shift β, `[C]`.
    pub bias: Vec<f32>,
    /// Running mean, `[C]`.
    pub running_mean: Vec<f32>,
    /// Running variance, `[C]`.
    pub running_var: Vec<f32>,
    /// ε added to the variance.
    pub eps: f64,
}

/// Folds an eval-mode batch norm that follows a convolution into the convolution's weight and
/// bias (computed in f64): `w' = w · γ/σ` per output channel, `b' = (b − μ) · γ/σ + β`.
pub fn fold_batch_norm(
    layer: &str,
    weight: &FloatTensor,
    bias: Option<&FloatTensor>,
    bn: &BatchNorm,
) -> Result<(FloatTensor, FloatTensor), OnnxError> {
    let out = *weight.dims.first().ok_or_else(|| OnnxError::Incompatible {
        layer: layer.to_owned(),
        reason: "convolution weight has no dimensions".into(),
    })?;
    let lengths = [
        bn.weight.len(),
        bn.bias.len(),
        bn.running_mean.len(),
        bn.running_var.len(),
    ];
    if lengths.iter().any(|&l| l != out) {
        return Err(OnnxError::Incompatible {
            layer: layer.to_owned(),
            reason: format!(
                "batch norm has {lengths:?} (weight, bias, mean, var) values for {out} output channels"
            ),
        });
    }
    if let Some(b) = bias
        && b.len() != out
    {
        return Err(OnnxError::Incompatible {
            layer: layer.to_owned(),
            reason: format!("bias has {} values for {out} output channels", b.len()),
        });
    }
    let per_channel = weight.len() / out;
    let mut folded_weight = Vec::with_capacity(weight.len());
    let mut folded_bias = Vec::with_capacity(out);
    for c in 0..out {
        let gain = f64::from(bn.weight[c]) / (f64::from(bn.running_var[c]) + bn.eps).sqrt();
        folded_weight.extend(
            weight.data[c * per_channel..(c + 1) * per_channel]
                .iter()
                .map(|&w| (f64::from(w) * gain) as f32),
        );
        let b = bias.map_or(0.0, |b| f64::from(b.data[c]));
        folded_bias
            .push(((b - f64::from(bn.running_mean[c])) * gain + f64::from(bn.bias[c])) as f32);
    }
    Ok((
        FloatTensor {
            dims: weight.dims.clone(),
            data: folded_weight,
        },
        FloatTensor {
            dims: vec![out],
            data: folded_bias,
        },
    ))
}

/// A dimension of a graph input or output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dim {
    /// A fixed size.
    Fixed(usize),
    /// The symbolic batch dimension [`BATCH_DIM`].
    Batch,
}

/// Convolution geometry (2-D).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvSpec {
    /// Stride (height, width).
    pub strides: [usize; 2],
    /// Padding (top, left, bottom, right).
    pub pads: [usize; 4],
    /// Dilation (height, width).
    pub dilations: [usize; 2],
    /// Channel groups.
    pub groups: usize,
}

impl ConvSpec {
    /// Stride `stride`, symmetric padding `pad`, no dilation, one group (PyTorch's `Conv2d`).
    pub fn new(stride: usize, pad: usize) -> Self {
        Self {
            strides: [stride, stride],
            pads: [pad; 4],
            dilations: [1, 1],
            groups: 1,
        }
    }
}

/// Pooling geometry (2-D).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolSpec {
    /// Window (height, width).
    pub kernel: [usize; 2],
    /// Stride (height, width).
    pub strides: [usize; 2],
    /// Padding (top, left, bottom, right).
    pub pads: [usize; 4],
    /// Output size rounds up instead of down (PyTorch `ceil_mode`).
    pub ceil_mode: bool,
}

impl PoolSpec {
    /// Square window `kernel`, stride `stride`, symmetric padding `pad`, floor rounding.
    pub fn new(kernel: usize, stride: usize, pad: usize) -> Self {
        Self {
            kernel: [kernel; 2],
            strides: [stride; 2],
            pads: [pad; 4],
            ceil_mode: false,
        }
    }
}

/// One recurrent layer's weights in PyTorch layout (`H` hidden units, `I` inputs, `G` gates:
/// 3 for GRU `r, z, n`, 4 for LSTM `i, f, g, o`).
#[derive(Debug, Clone, PartialEq)]
pub struct RecurrentLayer {
    /// `[G·H, I]`.
    pub weight_ih: FloatTensor,
    /// `[G·H, H]`.
    pub weight_hh: FloatTensor,
    /// `[G·H]`.
    pub bias_ih: FloatTensor,
    /// `[G·H]`.
    pub bias_hh: FloatTensor,
    /// LSTM peepholes `(p_i, p_f, p_o)`, each `[H]`; `None` for GRU or a plain LSTM.
    pub peepholes: Option<[FloatTensor; 3]>,
}

impl RecurrentLayer {
    /// Checks the shapes for `gates` gates and returns `(hidden, inputs)`.
    fn geometry(&self, layer: &str, gates: usize) -> Result<(usize, usize), OnnxError> {
        let bad = |reason: String| OnnxError::Incompatible {
            layer: layer.to_owned(),
            reason,
        };
        let [rows, inputs] = self.weight_ih.dims[..] else {
            return Err(bad(format!(
                "weight_ih must be 2-D, found {:?}",
                self.weight_ih.dims
            )));
        };
        if rows % gates != 0 || rows == 0 {
            return Err(bad(format!(
                "weight_ih has {rows} rows, not a positive multiple of {gates} gates"
            )));
        }
        let hidden = rows / gates;
        let checks = [
            ("weight_hh", &self.weight_hh.dims, vec![rows, hidden]),
            ("bias_ih", &self.bias_ih.dims, vec![rows]),
            ("bias_hh", &self.bias_hh.dims, vec![rows]),
        ];
        for (name, dims, want) in checks {
            if *dims != want {
                return Err(bad(format!("{name} is {dims:?}, expected {want:?}")));
            }
        }
        if let Some(peepholes) = &self.peepholes {
            if gates != 4 {
                return Err(bad("peepholes exist only on LSTM layers".into()));
            }
            for (name, p) in ["peephole_i", "peephole_f", "peephole_o"]
                .iter()
                .zip(peepholes)
            {
                if p.dims != [hidden] {
                    return Err(bad(format!("{name} is {:?}, expected [{hidden}]", p.dims)));
                }
            }
        }
        Ok((hidden, inputs))
    }
}

/// Which recurrent cell a stack of [`RecurrentLayer`]s is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecurrentCell {
    /// GRU (PyTorch formulation = ONNX `linear_before_reset = 1`).
    Gru,
    /// LSTM, with peepholes when the layers carry them.
    Lstm,
}

/// A named value (tensor) in the graph under construction.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Value(pub String);

impl Value {
    /// The tensor's name in the graph.
    pub fn name(&self) -> &str {
        &self.0
    }
}

/// Output of a recurrent stack for one time step.
#[derive(Debug, Clone, PartialEq)]
pub struct RecurrentOutput {
    /// Last layer's hidden state, `[N, H]` (the input of the next layer of the network).
    pub y: Value,
    /// New hidden state of every layer, `[layers, N, H]`.
    pub h: Value,
    /// New cell state of every layer, `[layers, N, H]` (LSTM only).
    pub c: Option<Value>,
}

/// Builds one ONNX graph node by node. Node outputs are named after the layer that makes them,
/// so the graph reads like the network's parameter names.
#[derive(Debug, Default)]
pub struct GraphBuilder {
    nodes: Vec<pb::NodeProto>,
    initializers: Vec<pb::TensorProto>,
    inputs: Vec<pb::ValueInfoProto>,
    outputs: Vec<pb::ValueInfoProto>,
    names: HashSet<String>,
}

fn attr_int(name: &str, value: i64) -> pb::AttributeProto {
    pb::AttributeProto {
        name: name.to_owned(),
        r#type: pb::attribute_proto::AttributeType::Int as i32,
        i: value,
        ..Default::default()
    }
}

fn attr_ints(name: &str, values: &[usize]) -> pb::AttributeProto {
    pb::AttributeProto {
        name: name.to_owned(),
        r#type: pb::attribute_proto::AttributeType::Ints as i32,
        ints: values.iter().map(|&v| v as i64).collect(),
        ..Default::default()
    }
}

fn attr_float(name: &str, value: f32) -> pb::AttributeProto {
    pb::AttributeProto {
        name: name.to_owned(),
        r#type: pb::attribute_proto::AttributeType::Float as i32,
        f: value,
        ..Default::default()
    }
}

/// A float `TensorProto` (raw little-endian data).
pub fn float_tensor_proto(name: &str, dims: &[usize], data: &[f32]) -> pb::TensorProto {
    pb::TensorProto {
        name: name.to_owned(),
        dims: dims.iter().map(|&d| d as i64).collect(),
        data_type: pb::tensor_proto::DataType::Float as i32,
        raw_data: data.iter().flat_map(|v| v.to_le_bytes()).collect(),
        ..Default::default()
    }
}

/// An int64 `TensorProto` (shapes, axes, slice bounds).
pub fn int64_tensor_proto(name: &str, dims: &[usize], data: &[i64]) -> pb::TensorProto {
    pb::TensorProto {
        name: name.to_owned(),
        dims: dims.iter().map(|&d| d as i64).collect(),
        data_type: pb::tensor_proto::DataType::Int64 as i32,
        raw_data: data.iter().flat_map(|v| v.to_le_bytes()).collect(),
        ..Default::default()
    }
}

/// A float tensor `ValueInfoProto` with the given dimensions.
pub fn float_value_info(name: &str, dims: &[Dim]) -> pb::ValueInfoProto {
    use pb::tensor_shape_proto::{Dimension, dimension};
    let dim = dims
        .iter()
        .map(|d| Dimension {
            value: Some(match d {
                Dim::Fixed(n) => dimension::Value::DimValue(*n as i64),
                Dim::Batch => dimension::Value::DimParam(BATCH_DIM.to_owned()),
            }),
            ..Default::default()
        })
        .collect();
    pb::ValueInfoProto {
        name: name.to_owned(),
        r#type: Some(pb::TypeProto {
            value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                elem_type: pb::tensor_proto::DataType::Float as i32,
                shape: Some(pb::TensorShapeProto { dim }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

impl GraphBuilder {
    /// An empty graph.
    pub fn new() -> Self {
        Self::default()
    }

    fn claim(&mut self, name: &str) -> Result<Value, OnnxError> {
        if !self.names.insert(name.to_owned()) {
            return Err(OnnxError::DuplicateName(name.to_owned()));
        }
        Ok(Value(name.to_owned()))
    }

    fn node(
        &mut self,
        op: &str,
        name: &str,
        inputs: &[&str],
        outputs: &[&str],
        attributes: Vec<pb::AttributeProto>,
    ) -> Result<Vec<Value>, OnnxError> {
        let values = outputs
            .iter()
            .map(|o| self.claim(o))
            .collect::<Result<Vec<_>, _>>()?;
        self.nodes.push(pb::NodeProto {
            op_type: op.to_owned(),
            name: name.to_owned(),
            input: inputs.iter().map(|s| (*s).to_owned()).collect(),
            output: outputs.iter().map(|s| (*s).to_owned()).collect(),
            attribute: attributes,
            ..Default::default()
        });
        Ok(values)
    }

    fn single(
        &mut self,
        op: &str,
        name: &str,
        inputs: &[&str],
        attributes: Vec<pb::AttributeProto>,
    ) -> Result<Value, OnnxError> {
        Ok(self
            .node(op, name, inputs, &[name], attributes)?
            .swap_remove(0))
    }

    /// Declares a float graph input.
    pub fn input(&mut self, name: &str, dims: &[Dim]) -> Result<Value, OnnxError> {
        let value = self.claim(name)?;
        self.inputs.push(float_value_info(name, dims));
        Ok(value)
    }

    /// Declares `value` as graph output `name` (through an `Identity` when the names differ).
    pub fn output(&mut self, name: &str, value: &Value, dims: &[Dim]) -> Result<(), OnnxError> {
        if value.0 != name {
            self.single("Identity", name, &[&value.0], vec![])?;
        }
        self.outputs.push(float_value_info(name, dims));
        Ok(())
    }

    /// Adds a float initializer.
    pub fn initializer(&mut self, name: &str, tensor: &FloatTensor) -> Result<Value, OnnxError> {
        let value = self.claim(name)?;
        self.initializers
            .push(float_tensor_proto(name, &tensor.dims, &tensor.data));
        Ok(value)
    }

    fn int64_initializer(&mut self, name: &str, data: &[i64]) -> Result<Value, OnnxError> {
        let value = self.claim(name)?;
        self.initializers
            .push(int64_tensor_proto(name, &[data.len()], data));
        Ok(value)
    }

    /// `Conv` with weight `[O, I/groups, kh, kw]` and optional bias `[O]`; parameters are stored
    /// as `{name}.weight` / `{name}.bias`.
    pub fn conv(
        &mut self,
        name: &str,
        x: &Value,
        weight: &FloatTensor,
        bias: Option<&FloatTensor>,
        spec: &ConvSpec,
    ) -> Result<Value, OnnxError> {
        let [out, _, kh, kw] = weight.dims[..] else {
            return Err(OnnxError::Incompatible {
                layer: name.to_owned(),
                reason: format!("conv weight must be 4-D, found {:?}", weight.dims),
            });
        };
        if let Some(b) = bias
            && b.dims != [out]
        {
            return Err(OnnxError::Incompatible {
                layer: name.to_owned(),
                reason: format!("bias is {:?}, expected [{out}]", b.dims),
            });
        }
        let w = self.initializer(&format!("{name}.weight"), weight)?;
        let mut inputs = vec![x.0.clone(), w.0];
        if let Some(b) = bias {
            inputs.push(self.initializer(&format!("{name}.bias"), b)?.0);
        }
        let inputs: Vec<&str> = inputs.iter().map(String::as_str).collect();
        self.single(
            "Conv",
            name,
            &inputs,
            vec![
                attr_ints("kernel_shape", &[kh, kw]),
                attr_ints("strides", &spec.strides),
                attr_ints("pads", &spec.pads),
                attr_ints("dilations", &spec.dilations),
                attr_int("group", spec.groups as i64),
            ],
        )
    }

    /// `Conv` followed by an eval-mode batch norm, folded into one `Conv`.
    pub fn conv_bn(
        &mut self,
        name: &str,
        x: &Value,
        weight: &FloatTensor,
        bias: Option<&FloatTensor>,
        bn: &BatchNorm,
        spec: &ConvSpec,
    ) -> Result<Value, OnnxError> {
        let (w, b) = fold_batch_norm(name, weight, bias, bn)?;
        self.conv(name, x, &w, Some(&b), spec)
    }

    /// Fully connected layer `y = x Wᵀ + b` (`Gemm`, `transB = 1`) with PyTorch's `[out, in]`
    /// weight; parameters stored as `{name}.weight` / `{name}.bias`.
    pub fn gemm(
        &mut self,
        name: &str,
        x: &Value,
        weight: &FloatTensor,
        bias: &FloatTensor,
    ) -> Result<Value, OnnxError> {
        let [out, _] = weight.dims[..] else {
            return Err(OnnxError::Incompatible {
                layer: name.to_owned(),
                reason: format!("weight must be 2-D [out, in], found {:?}", weight.dims),
            });
        };
        if bias.dims != [out] {
            return Err(OnnxError::Incompatible {
                layer: name.to_owned(),
                reason: format!("bias is {:?}, expected [{out}]", bias.dims),
            });
        }
        let w = self.initializer(&format!("{name}.weight"), weight)?;
        let b = self.initializer(&format!("{name}.bias"), bias)?;
        self.single(
            "Gemm",
            name,
            &[&x.0, &w.0, &b.0],
            vec![
                attr_float("alpha", 1.0),
                attr_float("beta", 1.0),
                attr_int("transB", 1),
            ],
        )
    }

    /// `Relu`.
    pub fn relu(&mut self, name: &str, x: &Value) -> Result<Value, OnnxError> {
        self.single("Relu", name, &[&x.0], vec![])
    }

    /// Element-wise `Add` (residual connections).
    pub fn add(&mut self, name: &str, a: &Value, b: &Value) -> Result<Value, OnnxError> {
        self.single("Add", name, &[&a.0, &b.0], vec![])
    }

    /// `(x − mean) / std` as `Sub` and `Div` with initializers `{name}.mean` and `{name}.std`
    /// (broadcast over the batch).
    pub fn standardise(
        &mut self,
        name: &str,
        x: &Value,
        mean: &FloatTensor,
        std: &FloatTensor,
    ) -> Result<Value, OnnxError> {
        let m = self.initializer(&format!("{name}.mean"), mean)?;
        let s = self.initializer(&format!("{name}.std"), std)?;
        let centred = self.single("Sub", &format!("{name}.sub"), &[&x.0, &m.0], vec![])?;
        self.single("Div", &format!("{name}.div"), &[&centred.0, &s.0], vec![])
    }

    /// `LayerNormalization` over the last axis of `x` `[N, width]` without a learnt scale or
    /// shift (initializers `{name}.scale` = 1 and `{name}.bias` = 0).
    pub fn layer_norm(
        &mut self,
        name: &str,
        x: &Value,
        width: usize,
        epsilon: f32,
    ) -> Result<Value, OnnxError> {
        let constant = |value: f32| FloatTensor {
            dims: vec![width],
            data: vec![value; width],
        };
        let scale = self.initializer(&format!("{name}.scale"), &constant(1.0))?;
        let bias = self.initializer(&format!("{name}.bias"), &constant(0.0))?;
        self.single(
            "LayerNormalization",
            name,
            &[&x.0, &scale.0, &bias.0],
            vec![attr_int("axis", -1), attr_float("epsilon", epsilon)],
        )
    }

    fn pool_attributes(spec: &PoolSpec) -> Vec<pb::AttributeProto> {
        vec![
            attr_ints("kernel_shape", &spec.kernel),
            attr_ints("strides", &spec.strides),
            attr_ints("pads", &spec.pads),
            attr_int("ceil_mode", i64::from(spec.ceil_mode)),
        ]
    }

    /// `MaxPool` (padding never wins the max, as in PyTorch).
    pub fn max_pool(&mut self, name: &str, x: &Value, spec: &PoolSpec) -> Result<Value, OnnxError> {
        self.single("MaxPool", name, &[&x.0], Self::pool_attributes(spec))
    }

    /// `AveragePool`; `count_include_pad` as in PyTorch's `AvgPool2d` (default there: true).
    pub fn average_pool(
        &mut self,
        name: &str,
        x: &Value,
        spec: &PoolSpec,
        count_include_pad: bool,
    ) -> Result<Value, OnnxError> {
        let mut attributes = Self::pool_attributes(spec);
        attributes.push(attr_int("count_include_pad", i64::from(count_include_pad)));
        self.single("AveragePool", name, &[&x.0], attributes)
    }

    /// `GlobalAveragePool`: `[N, C, H, W] → [N, C, 1, 1]`.
    pub fn global_average_pool(&mut self, name: &str, x: &Value) -> Result<Value, OnnxError> {
        self.single("GlobalAveragePool", name, &[&x.0], vec![])
    }

    /// `Flatten` from `axis` (1: `[N, …] → [N, ∏…]`, like `torch.flatten(x, 1)`).
    pub fn flatten(&mut self, name: &str, x: &Value, axis: i64) -> Result<Value, OnnxError> {
        self.single("Flatten", name, &[&x.0], vec![attr_int("axis", axis)])
    }

    /// `Concat` along `axis`.
    pub fn concat(&mut self, name: &str, xs: &[&Value], axis: i64) -> Result<Value, OnnxError> {
        let inputs: Vec<&str> = xs.iter().map(|v| v.0.as_str()).collect();
        self.single("Concat", name, &inputs, vec![attr_int("axis", axis)])
    }

    /// One time step of a stack of recurrent layers: input `x` `[N, I]`, state `h_in`
    /// (and `c_in` for LSTM) `[layers, N, H]`, of which layer `k` reads row
    /// `first_state_layer + k` (several stacks can share one state tensor). Weights are stored in
    /// ONNX layout as `{name}.l{k}.{W,R,B,P}`.
    #[allow(clippy::too_many_arguments)]
    pub fn recurrent(
        &mut self,
        name: &str,
        cell: RecurrentCell,
        x: &Value,
        h_in: &Value,
        c_in: Option<&Value>,
        first_state_layer: usize,
        layers: &[RecurrentLayer],
    ) -> Result<RecurrentOutput, OnnxError> {
        let bad = |reason: String| OnnxError::Incompatible {
            layer: name.to_owned(),
            reason,
        };
        if layers.is_empty() {
            return Err(bad("a recurrent stack needs at least one layer".into()));
        }
        if (cell == RecurrentCell::Lstm) != c_in.is_some() {
            return Err(bad(
                "an LSTM needs a cell state input; a GRU has none".into()
            ));
        }
        let gates = match cell {
            RecurrentCell::Gru => 3,
            RecurrentCell::Lstm => 4,
        };
        let mut hidden_sizes = Vec::with_capacity(layers.len());
        for (k, layer) in layers.iter().enumerate() {
            let (hidden, inputs) = layer.geometry(&format!("{name}.l{k}"), gates)?;
            if k > 0 && inputs != hidden_sizes[k - 1] {
                return Err(bad(format!(
                    "layer {k} takes {inputs} inputs but layer {} gives {}",
                    k - 1,
                    hidden_sizes[k - 1]
                )));
            }
            if cell == RecurrentCell::Gru && layer.peepholes.is_some() {
                return Err(bad("GRU layers have no peepholes".into()));
            }
            hidden_sizes.push(hidden);
        }
        if hidden_sizes.iter().any(|&h| h != hidden_sizes[0]) {
            return Err(bad(format!(
                "all layers must have the same hidden size to share one state tensor, found {hidden_sizes:?}"
            )));
        }
        let hidden = hidden_sizes[0];
        let axes0 = self.int64_initializer(&format!("{name}.axes0"), &[0])?;
        let axes1 = self.int64_initializer(&format!("{name}.axes1"), &[1])?;
        let axes01 = self.int64_initializer(&format!("{name}.axes01"), &[0, 1])?;
        let mut sequence = self.single(
            "Unsqueeze",
            &format!("{name}.x_seq"),
            &[&x.0, &axes0.0],
            vec![],
        )?;
        let mut last_y = None;
        let (mut h_outs, mut c_outs) = (Vec::new(), Vec::new());
        for (k, layer) in layers.iter().enumerate() {
            let prefix = format!("{name}.l{k}");
            let row = (first_state_layer + k) as i64;
            let starts = self.int64_initializer(&format!("{prefix}.start"), &[row])?;
            let ends = self.int64_initializer(&format!("{prefix}.end"), &[row + 1])?;
            let slice = |b: &mut Self, state: &Value, label: &str| {
                b.single(
                    "Slice",
                    &format!("{prefix}.{label}_in"),
                    &[&state.0, &starts.0, &ends.0, &axes0.0],
                    vec![],
                )
            };
            let h_k = slice(self, h_in, "h")?;
            let c_k = c_in.map(|c| slice(self, c, "c")).transpose()?;
            let order: &[usize] = match cell {
                RecurrentCell::Gru => &[1, 0, 2],
                RecurrentCell::Lstm => &[0, 3, 1, 2],
            };
            let w = FloatTensor {
                dims: vec![1, gates * hidden, layer.weight_ih.dims[1]],
                data: layer.weight_ih.reorder_blocks(gates, order),
            };
            let r = FloatTensor {
                dims: vec![1, gates * hidden, hidden],
                data: layer.weight_hh.reorder_blocks(gates, order),
            };
            let mut bias = layer.bias_ih.reorder_blocks(gates, order);
            bias.extend(layer.bias_hh.reorder_blocks(gates, order));
            let b = FloatTensor {
                dims: vec![1, 2 * gates * hidden],
                data: bias,
            };
            let w = self.initializer(&format!("{prefix}.W"), &w)?;
            let r = self.initializer(&format!("{prefix}.R"), &r)?;
            let b = self.initializer(&format!("{prefix}.B"), &b)?;
            let y_name = format!("{prefix}.Y");
            let h_name = format!("{prefix}.Y_h");
            let c_name = format!("{prefix}.Y_c");
            let outputs = match cell {
                RecurrentCell::Gru => {
                    let outs = self.node(
                        "GRU",
                        &prefix,
                        &[&sequence.0, &w.0, &r.0, &b.0, "", &h_k.0],
                        &[&y_name, &h_name],
                        vec![
                            attr_int("hidden_size", hidden as i64),
                            attr_int("linear_before_reset", 1),
                        ],
                    )?;
                    (outs[0].clone(), outs[1].clone(), None)
                }
                RecurrentCell::Lstm => {
                    let c_k = c_k.as_ref().map(|c| c.0.clone()).unwrap_or_default();
                    let mut inputs = vec![
                        sequence.0.clone(),
                        w.0,
                        r.0,
                        b.0,
                        String::new(),
                        h_k.0.clone(),
                        c_k,
                    ];
                    if let Some([p_i, p_f, p_o]) = &layer.peepholes {
                        let data = [p_i, p_o, p_f]
                            .iter()
                            .flat_map(|p| p.data.iter().copied())
                            .collect();
                        let p = FloatTensor {
                            dims: vec![1, 3 * hidden],
                            data,
                        };
                        inputs.push(self.initializer(&format!("{prefix}.P"), &p)?.0);
                    }
                    let inputs: Vec<&str> = inputs.iter().map(String::as_str).collect();
                    let outs = self.node(
                        "LSTM",
                        &prefix,
                        &inputs,
                        &[&y_name, &h_name, &c_name],
                        vec![attr_int("hidden_size", hidden as i64)],
                    )?;
                    (outs[0].clone(), outs[1].clone(), Some(outs[2].clone()))
                }
            };
            let (y, y_h, y_c) = outputs;
            h_outs.push(y_h);
            c_outs.extend(y_c);
            // Y is [seq = 1, directions = 1, N, H]: drop the direction axis for the next layer.
            sequence = self.single(
                "Squeeze",
                &format!("{prefix}.y_seq"),
                &[&y.0, &axes1.0],
                vec![],
            )?;
            last_y = Some(y);
        }
        let last_y = last_y.expect("at least one layer was checked above");
        let y = self.single(
            "Squeeze",
            &format!("{name}.y"),
            &[&last_y.0, &axes01.0],
            vec![],
        )?;
        let stack = |b: &mut Self, states: &[Value], label: &str| -> Result<Value, OnnxError> {
            if states.len() == 1 {
                return Ok(states[0].clone());
            }
            let refs: Vec<&Value> = states.iter().collect();
            b.concat(&format!("{name}.{label}_out"), &refs, 0)
        };
        let h = stack(self, &h_outs, "h")?;
        let c = if c_outs.is_empty() {
            None
        } else {
            Some(stack(self, &c_outs, "c")?)
        };
        Ok(RecurrentOutput { y, h, c })
    }

    /// Assembles the model: opset [`OPSET`], IR [`IR_VERSION`], the given `metadata_props`.
    pub fn finish(self, graph_name: &str, metadata: &[(String, String)]) -> pb::ModelProto {
        pb::ModelProto {
            ir_version: IR_VERSION,
            opset_import: vec![pb::OperatorSetIdProto {
                domain: String::new(),
                version: OPSET,
            }],
            producer_name: "affect-train".into(),
            producer_version: env!("CARGO_PKG_VERSION").into(),
            graph: Some(pb::GraphProto {
                name: graph_name.to_owned(),
                node: self.nodes,
                initializer: self.initializers,
                input: self.inputs,
                output: self.outputs,
                ..Default::default()
            }),
            metadata_props: metadata
                .iter()
                .map(|(key, value)| pb::StringStringEntryProto {
                    key: key.clone(),
                    value: value.clone(),
                })
                .collect(),
            ..Default::default()
        }
    }
}

/// Serialises a model to ONNX protobuf bytes.
pub fn encode(model: &pb::ModelProto) -> Vec<u8> {
    model.encode_to_vec()
}
