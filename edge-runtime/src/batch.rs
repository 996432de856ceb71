//! Batches of faces: the layout of several tracks' recurrent state in one `[layers, N, hidden]`
//! tensor (gather before a batched model call, scatter after), and tract plans compiled per
//! batch size.
//!
//! tract optimises concrete shapes far better than a symbolic batch (measured ~70× slower with
//! `N` symbolic), so [`BatchPlans`] compiles one plan per power-of-two batch size, on first use,
//! and callers pad a batch of `n` rows with zero rows up to [`BatchPlans::batch_for`]`(n)`. The
//! networks treat batch rows independently, so padding rows change nothing in the real ones. At
//! most `log2(largest batch) + 1` plans ever exist, however long the run.

use std::sync::Arc;

use tract_onnx::prelude::*;

/// An optimised tract plan.
pub(crate) type Plan = Arc<TypedRunnableModel>;

/// Copies `rows` (each `[layers, hidden]`, one per track) into a `[layers, batch, hidden]`
/// tensor; rows past `rows.len()` (padding) stay zero.
pub fn gather<'a>(
    rows: impl ExactSizeIterator<Item = &'a [f32]>,
    layers: usize,
    hidden: usize,
    batch: usize,
) -> Vec<f32> {
    let mut out = vec![0.0; layers * batch * hidden];
    for (n, row) in rows.enumerate() {
        for l in 0..layers {
            let at = (l * batch + n) * hidden;
            out[at..at + hidden].copy_from_slice(&row[l * hidden..(l + 1) * hidden]);
        }
    }
    out
}

/// Row `n` (one track, `[layers, hidden]`) of a `[layers, batch, hidden]` tensor.
pub fn scatter(batched: &[f32], layers: usize, hidden: usize, batch: usize, n: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(layers * hidden);
    for l in 0..layers {
        let at = (l * batch + n) * hidden;
        out.extend_from_slice(&batched[at..at + hidden]);
    }
    out
}

/// One network input: its shape for a batch of one and which axis is the batch.
#[derive(Debug, Clone)]
pub(crate) struct BatchedInput {
    /// Shape with the batch axis set to 1.
    pub shape: TVec<usize>,
    /// Index of the batch axis.
    pub axis: usize,
}

impl BatchedInput {
    /// The input's shape for `batch` rows.
    pub fn shape(&self, batch: usize) -> TVec<usize> {
        let mut shape = self.shape.clone();
        shape[self.axis] = batch;
        shape
    }
}

/// tract plans of one network, one per power-of-two batch size, compiled when first needed.
#[derive(Debug, Clone)]
pub(crate) struct BatchPlans {
    model: InferenceModel,
    inputs: Vec<BatchedInput>,
    /// `(batch, plan)`, the batch-1 plan first.
    plans: Vec<(usize, Plan)>,
}

impl BatchPlans {
    /// Compiles the batch-1 plan of `model` (so a model that cannot run fails here, at load);
    /// `inputs` describes the model's inputs in order.
    pub fn new(model: InferenceModel, inputs: Vec<BatchedInput>) -> TractResult<Self> {
        let mut plans = Self {
            model,
            inputs,
            plans: Vec::new(),
        };
        let first = plans.compile(1)?;
        plans.plans.push((1, first));
        Ok(plans)
    }

    /// The batch size the plan for `n` rows runs with (`n` rounded up to a power of two).
    pub fn batch_for(n: usize) -> usize {
        n.max(1).next_power_of_two()
    }

    /// Runs the plan for `batch` (a value of [`Self::batch_for`]) on `inputs`, one flat f32
    /// buffer per model input, each already laid out for `batch` rows.
    pub fn run(&mut self, batch: usize, inputs: &[Vec<f32>]) -> TractResult<TVec<TValue>> {
        let plan = match self.plans.iter().find(|(b, _)| *b == batch) {
            Some((_, plan)) => plan.clone(),
            None => {
                let plan = self.compile(batch)?;
                self.plans.push((batch, plan.clone()));
                plan
            }
        };
        let mut values: TVec<TValue> = tvec![];
        for (input, data) in self.inputs.iter().zip(inputs) {
            values.push(Tensor::from_shape(&input.shape(batch), data)?.into_tvalue());
        }
        plan.run(values)
    }

    fn compile(&self, batch: usize) -> TractResult<Plan> {
        let mut model = self.model.clone();
        for (ix, input) in self.inputs.iter().enumerate() {
            model.set_input_fact(ix, f32::fact(input.shape(batch)).into())?;
        }
        model.into_optimized()?.into_runnable()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gather_then_scatter_round_trips_and_pads_with_zeros() {
        let (layers, hidden) = (2, 3);
        let a: Vec<f32> = (0..6).map(|v| v as f32).collect();
        let b: Vec<f32> = (10..16).map(|v| v as f32).collect();
        let batched = gather([&a[..], &b[..]].into_iter(), layers, hidden, 4);
        // Layer 0: a's, b's, two zero rows; then layer 1 likewise.
        assert_eq!(
            batched,
            [
                0., 1., 2., 10., 11., 12., 0., 0., 0., 0., 0., 0., //
                3., 4., 5., 13., 14., 15., 0., 0., 0., 0., 0., 0.
            ]
        );
        assert_eq!(scatter(&batched, layers, hidden, 4, 0), a);
        assert_eq!(scatter(&batched, layers, hidden, 4, 1), b);
        assert_eq!(scatter(&batched, layers, hidden, 4, 3), vec![0.0; 6]);
    }

    #[test]
    fn batches_round_up_to_powers_of_two() {
        let sizes: Vec<usize> = [0, 1, 2, 3, 5, 8, 9, 29].map(BatchPlans::batch_for).into();
        assert_eq!(sizes, [1, 1, 2, 4, 8, 8, 16, 32]);
    }
}
