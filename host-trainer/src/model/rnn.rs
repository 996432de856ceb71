//! GRU and peephole-LSTM layers written out gate by gate (libtorch's LSTM has no peepholes), with
//! PyTorch's gate order and parameter names so weights move freely between the two and the ONNX
//! exporter can reorder them for ONNX's `GRU`/`LSTM`.
//!
//! Per layer, in `rnn.l{k}` (`k` from 0, like PyTorch's `_l0`):
//! - `weight_ih` `[G·H, I]`, `weight_hh` `[G·H, H]`, `bias_ih` `[G·H]`, `bias_hh` `[G·H]`, with
//!   `G = 3` row blocks `r, z, n` (GRU) or `G = 4` blocks `i, f, g, o` (LSTM);
//! - LSTM only: `peephole_i`, `peephole_f`, `peephole_o`, each `[H]`.
//!
//! GRU (PyTorch `nn.GRU`, ONNX `linear_before_reset = 1`):
//! ```text
//! r  = σ(W_ir x + b_ir + W_hr h + b_hr)
//! z  = σ(W_iz x + b_iz + W_hz h + b_hz)
//! n  = tanh(W_in x + b_in + r ⊙ (W_hn h + b_hn))
//! h' = (1 − z) ⊙ n + z ⊙ h
//! ```
//! Peephole LSTM (ONNX `LSTM` with `P`, Gers & Schmidhuber):
//! ```text
//! i  = σ(W_ii x + b_ii + W_hi h + b_hi + p_i ⊙ c)
//! f  = σ(W_if x + b_if + W_hf h + b_hf + p_f ⊙ c)
//! g  = tanh(W_ig x + b_ig + W_hg h + b_hg)
//! c' = f ⊙ c + i ⊙ g
//! o  = σ(W_io x + b_io + W_ho h + b_ho + p_o ⊙ c')
//! h' = o ⊙ tanh(c')
//! ```
//! All parameters are initialised like PyTorch: uniform in `±1/√H`.

use affect_shared::metadata::Cell;
use tch::{Tensor, nn};

/// Recurrent state of a stack of layers: `h` `[layers, B, H]`, and for the LSTM also the cell
/// state `c` `[layers, B, H]`.
#[derive(Debug)]
pub struct RnnState {
    /// Hidden state per layer.
    pub h: Tensor,
    /// Cell state per layer (LSTM only).
    pub c: Option<Tensor>,
}

impl RnnState {
    /// A copy that shares no storage (and no autograd history) with `self`.
    pub fn detached(&self) -> Self {
        Self {
            h: self.h.detach().copy(),
            c: self.c.as_ref().map(|c| c.detach().copy()),
        }
    }
}

/// One recurrent layer's parameters.
#[derive(Debug)]
struct Layer {
    weight_ih: Tensor,
    weight_hh: Tensor,
    bias_ih: Tensor,
    bias_hh: Tensor,
    /// `(p_i, p_f, p_o)` for the peephole LSTM.
    peepholes: Option<(Tensor, Tensor, Tensor)>,
}

/// A stack of GRU or peephole-LSTM layers; layer `k + 1` reads layer `k`'s hidden state.
#[derive(Debug)]
pub struct Recurrent {
    cell: Cell,
    hidden: i64,
    layers: Vec<Layer>,
}

impl Recurrent {
    /// Creates `layers` layers of `hidden` units reading `input` features, under `path`
    /// (parameters `path.l{k}.*`).
    pub fn new(path: &nn::Path, cell: Cell, input: i64, hidden: i64, layers: usize) -> Self {
        let gates = match cell {
            Cell::Gru => 3,
            Cell::Lstm => 4,
        };
        let bound = 1.0 / (hidden as f64).sqrt();
        let init = nn::Init::Uniform {
            lo: -bound,
            up: bound,
        };
        let layers = (0..layers)
            .map(|k| {
                let p = path / format!("l{k}");
                let in_features = if k == 0 { input } else { hidden };
                let peepholes = (cell == Cell::Lstm).then(|| {
                    (
                        p.var("peephole_i", &[hidden], init),
                        p.var("peephole_f", &[hidden], init),
                        p.var("peephole_o", &[hidden], init),
                    )
                });
                Layer {
                    weight_ih: p.var("weight_ih", &[gates * hidden, in_features], init),
                    weight_hh: p.var("weight_hh", &[gates * hidden, hidden], init),
                    bias_ih: p.var("bias_ih", &[gates * hidden], init),
                    bias_hh: p.var("bias_hh", &[gates * hidden], init),
                    peepholes,
                }
            })
            .collect();
        Self {
            cell,
            hidden,
            layers,
        }
    }

    /// LSTM only (a GRU has no forget gate): sets every layer's forget-gate bias to `bias`
    /// (`bias_ih`'s `f` block; `bias_hh`'s `f` block becomes 0).
    pub fn set_forget_bias(&mut self, bias: f64) {
        if self.cell != Cell::Lstm {
            return;
        }
        let h = self.hidden;
        tch::no_grad(|| {
            for layer in &mut self.layers {
                let _ = layer.bias_ih.narrow(0, h, h).fill_(bias);
                let _ = layer.bias_hh.narrow(0, h, h).fill_(0.0);
            }
        });
    }

    /// Cell type.
    pub fn cell(&self) -> Cell {
        self.cell
    }

    /// Hidden units per layer.
    pub fn hidden(&self) -> i64 {
        self.hidden
    }

    /// Number of stacked layers.
    pub fn num_layers(&self) -> usize {
        self.layers.len()
    }

    /// The all-zero state for `batch` sequences, on the parameters' device.
    pub fn zero_state(&self, batch: i64) -> RnnState {
        let shape = [self.layers.len() as i64, batch, self.hidden];
        let options = (
            self.layers[0].weight_hh.kind(),
            self.layers[0].weight_hh.device(),
        );
        RnnState {
            h: Tensor::zeros(shape, options),
            c: (self.cell == Cell::Lstm).then(|| Tensor::zeros(shape, options)),
        }
    }

    /// Runs `x` `[B, T, I]` from `state` (zeros when `None`): returns the last layer's outputs
    /// `[B, T, H]` and the state after the last step. `dropout` (training only) applies to every
    /// layer's output sequence, as PyTorch's `dropout` argument does between layers, and also
    /// after the last layer.
    ///
    /// `present` `[B, T]` (nonzero = the frame has a face; `None` = every frame has one) applies
    /// the rule of [`affect_shared::contract`]: on a frame without a face every layer keeps its
    /// state (`h`, `c`) and outputs it unchanged, so a sequence with gaps gives, at its frames
    /// with a face, exactly what the same sequence without the face-less frames gives.
    pub fn forward(
        &self,
        x: &Tensor,
        present: Option<&Tensor>,
        state: Option<&RnnState>,
        dropout: f64,
        train: bool,
    ) -> (Tensor, RnnState) {
        let (batch, steps) = (x.size()[0], x.size()[1]);
        let zero;
        let state = match state {
            Some(s) => s,
            None => {
                zero = self.zero_state(batch);
                &zero
            }
        };
        // `[B, T, 1]` booleans, broadcast over the hidden units at each step.
        let present = present.map(|p| p.to_device(x.device()).ne(0.0).unsqueeze(-1));
        let mut input = x.shallow_clone();
        let (mut hs, mut cs) = (Vec::new(), Vec::new());
        for (k, layer) in self.layers.iter().enumerate() {
            // Input projections for all steps at once; the recurrence only adds W_hh h.
            let projected = input.linear(&layer.weight_ih, Some(&layer.bias_ih));
            let mut h = state.h.get(k as i64);
            let mut c = state.c.as_ref().map(|c| c.get(k as i64));
            let mut outputs = Vec::with_capacity(steps as usize);
            for t in 0..steps {
                let xg = projected.select(1, t);
                let (mut h_next, mut c_next) = self.cell_step(layer, &xg, &h, c.as_ref());
                if let Some(present) = &present {
                    let here = present.select(1, t);
                    h_next = h_next.where_self(&here, &h);
                    c_next = c_next
                        .zip(c.as_ref())
                        .map(|(next, c)| next.where_self(&here, c));
                }
                outputs.push(h_next.shallow_clone());
                h = h_next;
                c = c_next;
            }
            input = Tensor::stack(&outputs, 1).dropout(dropout, train);
            hs.push(h);
            if let Some(c) = c {
                cs.push(c);
            }
        }
        let next = RnnState {
            h: Tensor::stack(&hs, 0),
            c: (!cs.is_empty()).then(|| Tensor::stack(&cs, 0)),
        };
        (input, next)
    }

    /// One time step of one layer; `xg` is `W_ih x + b_ih`, `[B, G·H]`.
    fn cell_step(
        &self,
        layer: &Layer,
        xg: &Tensor,
        h: &Tensor,
        c: Option<&Tensor>,
    ) -> (Tensor, Option<Tensor>) {
        let hg = h.linear(&layer.weight_hh, Some(&layer.bias_hh));
        match (&layer.peepholes, c) {
            (Some((p_i, p_f, p_o)), Some(c)) => {
                let gates = xg + hg;
                let g = gates.chunk(4, -1);
                let i = (&g[0] + p_i * c).sigmoid();
                let f = (&g[1] + p_f * c).sigmoid();
                let cand = g[2].tanh();
                let c_next = f * c + i * cand;
                let o = (&g[3] + p_o * &c_next).sigmoid();
                let h_next = o * c_next.tanh();
                (h_next, Some(c_next))
            }
            _ => {
                let xc = xg.chunk(3, -1);
                let hc = hg.chunk(3, -1);
                let r = (&xc[0] + &hc[0]).sigmoid();
                let z = (&xc[1] + &hc[1]).sigmoid();
                let n = (&xc[2] + r * &hc[2]).tanh();
                let h_next = &n + z * (h - &n);
                (h_next, None)
            }
        }
    }
}
