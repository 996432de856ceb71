//! Frame sources from the outside: an image directory on disk (order, pacing, bad files), the
//! synthetic camera (determinism, truth, motion), and a camera node that does not exist.

use std::path::Path;
use std::time::{Duration, Instant};

use affect_edge::backoff::BackoffConfig;
use affect_edge::source::{
    CameraConfig, FrameSource, ImageDir, ImageDirConfig, InMemoryLoop, OnBadImage, Replay,
    SourceError, SyntheticCamera, SyntheticConfig, V4l2Camera,
};
use image::{Rgb, RgbImage};

const WAIT: Duration = Duration::from_millis(100);

/// A 8×6 image whose every pixel is `(value, 255 - value, 7)`.
fn write_image(path: &Path, value: u8) {
    RgbImage::from_pixel(8, 6, Rgb([value, 255 - value, 7]))
        .save(path)
        .unwrap();
}

fn dir_config(path: &Path, on_error: OnBadImage) -> ImageDirConfig {
    ImageDirConfig {
        path: path.to_path_buf(),
        fps: None,
        on_error,
        repeat: false,
    }
}

#[test]
fn image_dir_delivers_files_in_natural_order_and_ignores_other_files() {
    let dir = tempfile::tempdir().unwrap();
    for (name, value) in [("f10.png", 10), ("f2.png", 2), ("f1.png", 1), ("f3.png", 3)] {
        write_image(&dir.path().join(name), value);
    }
    // A JPEG too (lossy: compare loosely), and a file that is not an image at all.
    RgbImage::from_pixel(8, 8, Rgb([200, 200, 200]))
        .save(dir.path().join("f11.jpg"))
        .unwrap();
    std::fs::write(dir.path().join("notes.txt"), "not a frame").unwrap();

    let mut source = ImageDir::open(&dir_config(dir.path(), OnBadImage::Fail)).unwrap();
    assert!(
        source.describe().contains("(5 files)"),
        "{}",
        source.describe()
    );
    let mut seen = Vec::new();
    while let Some(frame) = source.next_frame(WAIT).unwrap() {
        assert!(frame.truth.is_none());
        seen.push((frame.index, frame.image.get_pixel(0, 0).0[0]));
    }
    assert_eq!(&seen[..4], &[(0, 1), (1, 2), (2, 3), (3, 10)]);
    assert_eq!(seen[4].0, 4);
    assert!(seen[4].1.abs_diff(200) <= 2);
    // Exhausted stays exhausted.
    assert!(source.next_frame(WAIT).unwrap().is_none());
}

#[test]
fn a_bad_image_is_an_error_naming_the_file_or_is_skipped_leaving_an_index_gap() {
    let dir = tempfile::tempdir().unwrap();
    write_image(&dir.path().join("001.png"), 1);
    std::fs::write(dir.path().join("002.png"), b"\x89PNG but truncated").unwrap();
    write_image(&dir.path().join("003.png"), 3);

    let mut strict = ImageDir::open(&dir_config(dir.path(), OnBadImage::Fail)).unwrap();
    assert_eq!(strict.next_frame(WAIT).unwrap().unwrap().index, 0);
    let err = strict.next_frame(WAIT).unwrap_err();
    assert!(matches!(err, SourceError::Decode { .. }), "{err}");
    assert!(err.to_string().contains("002.png"), "{err}");
    // The caller may go on: the next file follows.
    assert_eq!(strict.next_frame(WAIT).unwrap().unwrap().index, 2);

    let mut lenient = ImageDir::open(&dir_config(dir.path(), OnBadImage::Skip)).unwrap();
    let indices: Vec<u64> = std::iter::from_fn(|| lenient.next_frame(WAIT).unwrap())
        .map(|f| f.index)
        .collect();
    assert_eq!(indices, [0, 2]);
    assert_eq!(lenient.skipped(), 1);
}

#[test]
fn image_dir_paces_at_the_frame_rate_and_can_repeat() {
    let dir = tempfile::tempdir().unwrap();
    for i in 0..3 {
        write_image(&dir.path().join(format!("{i}.png")), i);
    }
    let mut source = ImageDir::open(&ImageDirConfig {
        fps: Some(50.0),
        repeat: true,
        ..dir_config(dir.path(), OnBadImage::Fail)
    })
    .unwrap();
    let start = Instant::now();
    let frames: Vec<(u64, u8)> = (0..7)
        .map(|_| {
            let f = source.next_frame(WAIT).unwrap().unwrap();
            (f.index, f.image.get_pixel(0, 0).0[0])
        })
        .collect();
    // 7 frames at 50 fps span at least 6 intervals of 20 ms.
    assert!(start.elapsed() >= Duration::from_millis(120));
    assert_eq!(
        frames,
        [(0, 0), (1, 1), (2, 2), (3, 0), (4, 1), (5, 2), (6, 0)]
    );
}

#[test]
fn image_dir_configuration_errors_name_the_directory() {
    let dir = tempfile::tempdir().unwrap();
    let empty = ImageDir::open(&dir_config(dir.path(), OnBadImage::Fail))
        .err()
        .unwrap();
    assert!(
        empty
            .to_string()
            .contains(&dir.path().display().to_string())
    );
    assert!(
        empty.to_string().contains("no .png/.jpg/.jpeg files"),
        "{empty}"
    );
    let missing = ImageDir::open(&dir_config(&dir.path().join("absent"), OnBadImage::Fail))
        .err()
        .unwrap();
    assert!(missing.to_string().contains("absent"), "{missing}");
    write_image(&dir.path().join("a.png"), 0);
    let zero_fps = ImageDir::open(&ImageDirConfig {
        fps: Some(0.0),
        ..dir_config(dir.path(), OnBadImage::Fail)
    })
    .err()
    .unwrap();
    assert!(
        zero_fps
            .to_string()
            .contains("fps must be a positive number")
    );
}

fn synthetic(seed: u64, people: Option<u32>, frames: u64) -> SyntheticConfig {
    SyntheticConfig {
        seed,
        width: 640,
        height: 480,
        people,
        face_size: 112,
        fps: None,
        frames: Some(frames),
        visit_frames: None,
        jpeg_quality: None,
    }
}

#[test]
fn synthetic_camera_is_deterministic_by_seed_and_finite() {
    let run = |seed| {
        let mut camera = SyntheticCamera::new(&synthetic(seed, Some(2), 4)).unwrap();
        std::iter::from_fn(|| camera.next_frame(WAIT).unwrap()).collect::<Vec<_>>()
    };
    let (a, b, c) = (run(7), run(7), run(8));
    assert_eq!(a.len(), 4);
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(x.index, y.index);
        assert_eq!(x.image, y.image);
        assert_eq!(x.truth, y.truth);
    }
    assert_ne!(a[0].image, c[0].image);
    assert_eq!(a.iter().map(|f| f.index).collect::<Vec<_>>(), [0, 1, 2, 3]);
    assert_eq!(a[0].image.dimensions(), (640, 480));
}

#[test]
fn synthetic_truth_boxes_hold_drawn_faces_that_move_slowly() {
    for people in 1..=3 {
        let mut camera = SyntheticCamera::new(&synthetic(3, Some(people), 12)).unwrap();
        let background = SyntheticCamera::new(&SyntheticConfig {
            people: Some(people),
            ..synthetic(3, Some(people), 1)
        })
        .unwrap();
        assert_eq!(background.people(), people as usize);
        let frames: Vec<_> = std::iter::from_fn(|| camera.next_frame(WAIT).unwrap()).collect();
        assert_eq!(frames.len(), 12);
        let mut previous: Option<Vec<[f32; 2]>> = None;
        for frame in &frames {
            let truth = frame.truth.as_ref().unwrap();
            assert!(truth.len() <= people as usize);
            let mut centres = Vec::new();
            for face in truth {
                let b = face.face;
                assert!(b.x >= 0.0 && b.y >= 0.0, "{b:?}");
                assert!(b.x + b.w <= 640.0 && b.y + b.h <= 480.0, "{b:?}");
                assert!(b.w > 30.0 && b.h > 30.0 && b.w < 112.0, "{b:?}");
                assert!((-1.0..=1.0).contains(&face.valence));
                assert!((-1.0..=1.0).contains(&face.arousal));
                centres.push([b.x + b.w / 2.0, b.y + b.h / 2.0]);
            }
            // Slow drift: a face moves a few pixels per frame at most.
            if let Some(prev) = previous.as_ref().filter(|p| p.len() == centres.len()) {
                for (p, c) in prev.iter().zip(&centres) {
                    let moved = ((p[0] - c[0]).powi(2) + (p[1] - c[1]).powi(2)).sqrt();
                    assert!(moved < 12.0, "moved {moved} px in one frame");
                }
            }
            previous = Some(centres);
        }
        // Faces are side by side, never overlapping.
        let truth = frames[0].truth.as_ref().unwrap();
        for (i, a) in truth.iter().enumerate() {
            for b in &truth[i + 1..] {
                let (a, b) = (a.face, b.face);
                let apart = a.x + a.w <= b.x || b.x + b.w <= a.x;
                assert!(apart, "{a:?} overlaps {b:?}");
            }
        }
    }
}

#[test]
fn synthetic_faces_differ_from_the_background_inside_their_boxes() {
    let mut camera = SyntheticCamera::new(&synthetic(11, Some(1), 1)).unwrap();
    let frame = camera.next_frame(WAIT).unwrap().unwrap();
    let face = frame.truth.as_ref().unwrap()[0].face;
    // The face's skin dominates the centre of its box; its colour differs from the pixels at the
    // far side of the frame in at least one channel.
    let centre = frame
        .image
        .get_pixel(
            (face.x + face.w / 2.0) as u32,
            (face.y + face.h * 0.3) as u32,
        )
        .0;
    let mut differing = 0;
    for x in (0..640).step_by(16) {
        for y in [5u32, 475] {
            let p = frame.image.get_pixel(x, y).0;
            if (0..3).any(|c| p[c].abs_diff(centre[c]) > 10) {
                differing += 1;
            }
        }
    }
    assert!(
        differing > 40,
        "face centre {centre:?} looks like the background"
    );
}

#[test]
fn synthetic_paced_delivery_follows_the_frame_rate() {
    let mut camera = SyntheticCamera::new(&SyntheticConfig {
        fps: Some(40.0),
        face_size: 64,
        width: 160,
        height: 120,
        ..synthetic(1, Some(1), 5)
    })
    .unwrap();
    let start = Instant::now();
    let frames: Vec<_> = std::iter::from_fn(|| camera.next_frame(WAIT).unwrap()).collect();
    assert!(start.elapsed() >= Duration::from_millis(100));
    let stamps: Vec<u64> = frames
        .iter()
        .map(|f| f.timestamp_ms - frames[0].timestamp_ms)
        .collect();
    assert_eq!(stamps, [0, 25, 50, 75, 100]);
}

#[test]
fn an_absent_camera_reports_unavailable_and_keeps_trying() {
    let mut camera = V4l2Camera::open(&CameraConfig {
        device: "/dev/video-affect-absent".into(),
        backoff: BackoffConfig {
            initial_ms: 10,
            max_ms: 20,
            factor: 2.0,
        },
        ..CameraConfig::default()
    })
    .unwrap();
    for _ in 0..2 {
        let err = camera.next_frame(Duration::from_millis(50)).unwrap_err();
        assert!(matches!(err, SourceError::Unavailable { .. }), "{err}");
        assert!(
            err.to_string().contains("/dev/video-affect-absent"),
            "{err}"
        );
    }
    assert!(!camera.is_open());
}

#[test]
fn replay_delivers_the_recorded_frames_in_order_then_ends() {
    let mut camera = SyntheticCamera::new(&synthetic(3, Some(1), 5)).unwrap();
    let mut replay = Replay::record(&mut camera, Some(3)).unwrap();
    assert_eq!(replay.len(), 3);
    assert!(replay.describe().starts_with("replay of synthetic:3"));
    let mut fresh = SyntheticCamera::new(&synthetic(3, Some(1), 5)).unwrap();
    for _ in 0..3 {
        let (a, b) = (
            replay.next_frame(WAIT).unwrap().unwrap(),
            fresh.next_frame(WAIT).unwrap().unwrap(),
        );
        assert_eq!((a.index, &a.image), (b.index, &b.image));
    }
    assert!(replay.next_frame(WAIT).unwrap().is_none() && replay.is_empty());
}

#[test]
fn an_in_memory_loop_serves_the_decoded_files_over_and_over_stamped_when_handed_out() {
    let dir = tempfile::tempdir().unwrap();
    for (name, value) in [("a.png", 1), ("b.png", 2)] {
        write_image(&dir.path().join(name), value);
    }
    let mut files = ImageDir::open(&dir_config(dir.path(), OnBadImage::Fail)).unwrap();
    let mut looped = InMemoryLoop::record(&mut files, 10).unwrap();
    assert!(
        looped.describe().contains("decoded once"),
        "{}",
        looped.describe()
    );
    // The files are read now, once: the directory can go.
    drop(dir);
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let mut last_stamp = before;
    for index in 0..5 {
        let frame = looped.next_frame(WAIT).unwrap().unwrap();
        assert_eq!(frame.index, index);
        assert_eq!(frame.image.get_pixel(0, 0).0[0], [1, 2][index as usize % 2]);
        assert!(frame.timestamp_ms >= last_stamp, "stamped when handed out");
        last_stamp = frame.timestamp_ms;
    }
}

#[test]
fn an_in_memory_loop_over_nothing_is_refused() {
    let mut camera = SyntheticCamera::new(&synthetic(3, Some(1), 5)).unwrap();
    let mut nothing = Replay::record(&mut camera, Some(0)).unwrap();
    let err = InMemoryLoop::record(&mut nothing, 10)
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("replay of synthetic:3") && err.contains("no frames"),
        "{err}"
    );
}
