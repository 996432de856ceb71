//! The pipeline's rule for frames where a track's face is missed (`affect_shared::contract`):
//! the track's recurrent state does not advance, so the first report after the gap equals the
//! report of a run that never saw the face-less frames — the rule the trainer trains with and
//! the export proof checks.

use std::path::Path;

use affect_edge::backend::TractBackend;
use affect_edge::faces::{Face, FaceError, FaceFinder};
use affect_edge::pipeline::{FaceMode, Pipeline, PipelineConfig};
use affect_edge::source::Frame;
use affect_shared::preprocess::FaceBox;
use affect_shared::wire::{Report, StatusFlags};
use image::RgbImage;

const SIDE: u32 = 96;

/// A face finder that finds the same face box on the frames its script marks present.
struct ScriptedFaces {
    present: Vec<bool>,
    next: usize,
}

impl FaceFinder for ScriptedFaces {
    fn find(&mut self, _frame: &RgbImage) -> Result<Vec<Face>, FaceError> {
        let present = self.present.get(self.next).copied().unwrap_or(false);
        self.next += 1;
        Ok(if present {
            vec![Face {
                bbox: FaceBox {
                    x: 16.0,
                    y: 16.0,
                    w: 64.0,
                    h: 64.0,
                },
                score: 0.99,
                keypoints: [[0.0; 2]; 6],
                landmarks: None,
            }]
        } else {
            Vec::new()
        })
    }
}

/// Frame `index` of a clip whose picture changes from frame to frame, so each step moves the
/// recurrent state differently.
fn frame(index: u64) -> Frame {
    let image = RgbImage::from_fn(SIDE, SIDE, |x, y| {
        let v = (x * 3 + y * 5 + index as u32 * 37) % 256;
        image::Rgb([
            v as u8,
            (255 - v) as u8,
            ((x + index as u32 * 11) % 256) as u8,
        ])
    });
    Frame {
        index,
        timestamp_ms: 1_764_000_000_000 + index * 40,
        image,
        truth: None,
        cut: false,
    }
}

/// A pipeline with the bundled model whose face is present on the frames `present` marks.
fn pipeline(present: &[bool]) -> Pipeline {
    let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/affect-synth.onnx");
    let backend = TractBackend::load(&model).expect("bundled model");
    let faces = ScriptedFaces {
        present: present.to_vec(),
        next: 0,
    };
    Pipeline::new(
        FaceMode::Detect(Box::new(faces)),
        Box::new(backend),
        PipelineConfig::default(),
    )
    .unwrap()
}

/// Runs frames `indices` through [`pipeline`]; returns the reports of each frame.
fn run(indices: &[u64], present: &[bool]) -> Vec<Vec<Report>> {
    let mut pipeline = pipeline(present);
    indices
        .iter()
        .map(|&i| pipeline.process(&frame(i)).unwrap())
        .collect()
}

fn va(report: &Report) -> [f32; 2] {
    [report.valence, report.arousal]
}

#[test]
fn a_missed_face_leaves_the_track_state_as_it_was() {
    let all: Vec<u64> = (0..8).collect();
    // Frames 3 and 4 have no face.
    let with_gap = run(&all, &[true, true, true, false, false, true, true, true]);
    assert!(with_gap[3].is_empty() && with_gap[4].is_empty());
    // The same track continues after the gap.
    let track = with_gap[0][0].track;
    for reports in with_gap.iter().skip(5) {
        assert_eq!(reports.len(), 1);
        assert_eq!(reports[0].track, track);
        assert!(!reports[0].flags.contains(StatusFlags::NEW_TRACK));
    }

    // A run that never saw frames 3 and 4 reports the same after the gap, frame for frame.
    let without = run(&[0, 1, 2, 5, 6, 7], &[true; 6]);
    for (gap, skip) in with_gap.iter().skip(5).zip(without.iter().skip(3)) {
        assert_eq!(va(&gap[0]), va(&skip[0]));
    }

    // And the rule matters: had frames 3 and 4 been stepped, the state would differ.
    let stepped = run(&all, &[true; 8]);
    assert_ne!(va(&stepped[5][0]), va(&with_gap[5][0]));
}

#[test]
fn a_track_that_ends_gets_one_final_report_with_its_last_values() {
    // Seen on frames 0–2, then gone: unseen for more than `max_missed` (5) frames, it is lost on
    // frame 8; the face comes back on frame 10 as a new track, which ends with the run.
    let mut present = vec![true; 3];
    present.extend([false; 7]);
    present.extend([true; 2]);
    let max_missed = PipelineConfig::default().tracker.max_missed as usize;
    assert_eq!(max_missed, 5);
    let mut pipeline = pipeline(&present);
    let frames: Vec<Vec<Report>> = (0..present.len() as u64)
        .map(|i| pipeline.process(&frame(i)).unwrap())
        .collect();
    let lost = |r: &&Report| r.flags.contains(StatusFlags::FACE_LOST);
    let finals: Vec<(usize, Report)> = frames
        .iter()
        .enumerate()
        .flat_map(|(i, reports)| reports.iter().filter(lost).map(move |r| (i, *r)))
        .collect();
    assert_eq!(finals.len(), 1, "{finals:?}");
    let (at, last) = finals[0];
    assert_eq!(at, 3 + max_missed);
    let before = frames[2][0];
    assert_eq!(last.track, before.track);
    assert_eq!(
        (last.frame, last.timestamp_ms),
        (at as u32, frame(at as u64).timestamp_ms)
    );
    assert_eq!((va(&last), last.bbox), (va(&before), before.bbox));
    assert!(!last.flags.contains(StatusFlags::NEW_TRACK));

    let back = frames[10][0];
    assert!(back.flags.contains(StatusFlags::NEW_TRACK));
    assert_ne!(back.track, before.track);
    let ended = pipeline.finish();
    assert_eq!(ended.len(), 1);
    assert_eq!(ended[0].track, back.track);
    assert!(ended[0].flags.contains(StatusFlags::FACE_LOST));
    assert_eq!(va(&ended[0]), va(&frames[11][0]));
    assert_eq!(ended[0].frame, 11);
    assert!(pipeline.finish().is_empty(), "a track ends once");
}
