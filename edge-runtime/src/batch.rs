//! Batches of faces: the layout of several tracks' recurrent state in one `[layers, N, hidden]`
//! tensor (gather before a batched model call, scatter after), the tract plan the tract paths
//! run batches on, and the split of a batch's rows across threads.
//!
//! A frame's faces (and detector tiles) are shared by `threads` CPU threads, each running its
//! part on a single-threaded engine: measured on this 2-core x86 CPU with ONNX Runtime and 28
//! faces through `face-landmarks-68` + `expression-va`, 55 ms on one thread, 32 ms with the
//! sessions' own 2-thread pools (62 ms when their idle workers spin), 30 ms split in two halves,
//! and one face stays at its one-thread time (2.4 ms; 3.1 ms on 2-thread pools).
//!
//! tract runs a batch one row at a time on a plan compiled for a batch of one: measured on this
//! 2-core x86 CPU with `expression-va.onnx`, a concrete batch of N costs 2–2.6× more per face than
//! N runs of one (3.8 ms per face at N = 1, 7.5 ms at 2, 9.1 ms at 8, 9.7 ms at 32, after
//! compilation), and a symbolic N ~70× more. ONNX Runtime runs the true batch.

use std::sync::{Arc, Mutex, PoisonError};

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

/// The network threads `threads` stands for: 0 is one per core, else `threads` itself.
pub fn worker_count(threads: usize) -> usize {
    match threads {
        0 => std::thread::available_parallelism().map_or(1, usize::from),
        n => n,
    }
}

/// Rows per chunk when `rows` rows are shared by `workers` threads: at most one chunk per
/// worker, sizes differing by at most one row for `slice::chunks`-style splitting.
pub fn chunk_rows(rows: usize, workers: usize) -> usize {
    rows.div_ceil(workers.max(1)).max(1)
}

/// Runs `work` on every part at once, the first on the calling thread and each other on a
/// scoped thread of its own, and returns the results in the parts' order. One part runs as a
/// plain call: a single face never waits for a thread. A part the OS gives no thread (a
/// service at its task limit) runs on the calling thread instead: slower, never lost. A
/// panicking part panics the caller.
pub fn run_split<T: Send, R: Send>(
    parts: impl IntoIterator<Item = T>,
    work: impl Fn(T) -> R + Sync,
) -> Vec<R> {
    run_split_with(parts, work, |_| true)
}

/// [`run_split`], asking `may_spawn(i)` before giving the `i`-th part after the first a thread;
/// a refusal is handled like the OS's.
fn run_split_with<T: Send, R: Send>(
    parts: impl IntoIterator<Item = T>,
    work: impl Fn(T) -> R + Sync,
    may_spawn: impl Fn(usize) -> bool,
) -> Vec<R> {
    let mut parts = parts.into_iter();
    let Some(first) = parts.next() else {
        return Vec::new();
    };
    // Each other part waits in a slot for its thread; one that no thread took stays there.
    let slots: Vec<Mutex<Option<T>>> = parts.map(|part| Mutex::new(Some(part))).collect();
    let take = |slot: &Mutex<Option<T>>| slot.lock().unwrap_or_else(PoisonError::into_inner).take();
    let work = &work;
    std::thread::scope(|scope| {
        let threads: Vec<_> = slots
            .iter()
            .enumerate()
            .map(|(i, slot)| {
                may_spawn(i)
                    .then(|| {
                        std::thread::Builder::new()
                            .spawn_scoped(scope, move || take(slot).map(work))
                            .ok()
                    })
                    .flatten()
            })
            .collect();
        let mut results = Vec::with_capacity(slots.len() + 1);
        results.push(work(first));
        for (slot, thread) in slots.iter().zip(threads) {
            let ran = thread.and_then(|thread| {
                thread
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            });
            let result = ran.or_else(|| take(slot).map(work));
            results.push(result.expect("a part is taken either by its thread or here"));
        }
        results
    })
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

    #[test]
    fn split_runs_every_part_once_in_order_on_its_own_thread() {
        let main = std::thread::current().id();
        let parts: Vec<usize> = (0..3).collect();
        let ran = run_split(parts, |p| (p, std::thread::current().id()));
        assert_eq!(ran.iter().map(|r| r.0).collect::<Vec<_>>(), [0, 1, 2]);
        // The first part runs on the calling thread, every other one on a thread of its own.
        assert_eq!(ran[0].1, main);
        assert!(ran[1].1 != main && ran[2].1 != main && ran[1].1 != ran[2].1);
        assert!(run_split(Vec::<usize>::new(), |p| p).is_empty());
    }

    #[test]
    fn a_part_given_no_thread_runs_on_the_calling_thread_in_its_place() {
        let main = std::thread::current().id();
        // The second of the other parts (part 2) gets no thread, as when the OS refuses one.
        let ran = run_split_with(0..4, |p| (p, std::thread::current().id()), |i| i != 1);
        assert_eq!(ran.iter().map(|r| r.0).collect::<Vec<_>>(), [0, 1, 2, 3]);
        assert_eq!((ran[0].1, ran[2].1), (main, main));
        assert!(ran[1].1 != main && ran[3].1 != main);
        // No thread at all: everything on the calling thread, still in order.
        let alone = run_split_with(0..3, |p| (p, std::thread::current().id()), |_| false);
        assert!(alone.iter().enumerate().all(|(i, r)| *r == (i, main)));
    }

    #[test]
    fn rows_split_into_at_most_one_near_equal_chunk_per_worker() {
        let lens = |rows: usize, workers: usize| {
            (0..rows)
                .collect::<Vec<_>>()
                .chunks(chunk_rows(rows, workers))
                .map(<[usize]>::len)
                .collect::<Vec<_>>()
        };
        assert_eq!(lens(28, 2), [14, 14]);
        assert_eq!(lens(29, 2), [15, 14]);
        assert_eq!(lens(3, 4), [1, 1, 1]);
        assert_eq!(lens(1, 2), [1]);
        assert_eq!(lens(5, 1), [5]);
        assert_eq!(chunk_rows(0, 2), 1);
        assert_eq!(chunk_rows(4, 0), 4);
    }
}
