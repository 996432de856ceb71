//! Batches of faces: the layout of several tracks' recurrent state in one `[layers, N, hidden]`
//! tensor (gather before a batched model call, scatter after), and the tract plan the tract
//! paths run batches on.
//!
//! tract runs a batch one row at a time on a plan compiled for a batch of one: measured on this
//! 2-core x86 CPU with `expression-va.onnx`, a concrete batch of N costs 2–2.6× more per face than
//! N runs of one (3.8 ms per face at N = 1, 7.5 ms at 2, 9.1 ms at 8, 9.7 ms at 32, after
//! compilation), and a symbolic N ~70× more. ONNX Runtime runs the true batch.

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

/// The tract plan of one network for a batch of one row.
#[derive(Debug, Clone)]
pub(crate) struct RowPlan {
    inputs: Vec<BatchedInput>,
    plan: Plan,
}

impl RowPlan {
    /// Compiles `model` for one row (a model that cannot run fails here, at load); `inputs`
    /// describes the model's inputs in order.
    pub fn new(mut model: InferenceModel, inputs: Vec<BatchedInput>) -> TractResult<Self> {
        for (ix, input) in inputs.iter().enumerate() {
            model.set_input_fact(ix, f32::fact(input.shape(1)).into())?;
        }
        let plan = model.into_optimized()?.into_runnable()?;
        Ok(Self { inputs, plan })
    }

    /// Runs one row: one flat f32 buffer per model input.
    pub fn run(&self, inputs: &[Vec<f32>]) -> TractResult<TVec<TValue>> {
        let mut values: TVec<TValue> = tvec![];
        for (input, data) in self.inputs.iter().zip(inputs) {
            values.push(Tensor::from_shape(&input.shape(1), data)?.into_tvalue());
        }
        self.plan.run(values)
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

    /// `backend::set_tract_threads`: tract's matrix products on a 2-thread pool give exactly
    /// what one thread gives (the bundled landmark net, a face-sized input).
    #[test]
    fn a_thread_pool_changes_no_output() {
        use tract_linalg::multithread::{Executor, multithread_tract_scope};
        let bytes = crate::models::ModelFile::embedded("face-landmarks-68.onnx")
            .unwrap()
            .read()
            .unwrap();
        let model = tract_onnx::onnx().model_for_read(&mut &bytes[..]).unwrap();
        let input = BatchedInput {
            shape: tvec![1, 3, 112, 112],
            axis: 0,
        };
        let plan = RowPlan::new(model, vec![input]).unwrap();
        let face: Vec<f32> = (0..3 * 112 * 112)
            .map(|i| ((i * 7919) % 255) as f32 / 255.0 - 0.5)
            .collect();
        let run = || -> Vec<f32> {
            let out = plan.run(std::slice::from_ref(&face)).unwrap();
            out[0]
                .to_plain_array_view::<f32>()
                .unwrap()
                .iter()
                .copied()
                .collect()
        };
        let one = run();
        let pooled = multithread_tract_scope(Executor::multithread(2), run);
        assert_eq!(one.len(), 136);
        assert_eq!(one, pooled);
    }
}
