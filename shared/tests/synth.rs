//! The synthetic face renderer: determinism, iBUG landmark layout, affect visible in geometry,
//! landmarks agreeing with the pixels, smooth trajectories and the video's nuisances.

use affect_shared::preprocess::Landmarks68;
use affect_shared::synth::{
    AffectTrajectory, Annotator, AnnotatorNoise, FaceState, Person, SynthConfig, SyntheticVideo,
    mean_annotation, render_face, sin_cos,
};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

fn person() -> Person {
    Person::random(&mut ChaCha8Rng::seed_from_u64(11))
}

fn render(v: f32, a: f32) -> (image::RgbImage, Landmarks68) {
    let state = FaceState::neutral_pose([v, a]);
    render_face(&person(), &state, 112, &mut ChaCha8Rng::seed_from_u64(0))
}

fn mean(points: &[[f32; 2]]) -> [f32; 2] {
    let n = points.len() as f32;
    [
        points.iter().map(|p| p[0]).sum::<f32>() / n,
        points.iter().map(|p| p[1]).sum::<f32>() / n,
    ]
}

/// FNV-1a over bytes: a stable fingerprint for golden values.
fn fnv(bytes: impl IntoIterator<Item = u8>) -> u64 {
    bytes.into_iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[test]
fn polynomial_sin_cos_matches_the_maths_library() {
    for i in -2000..=2000 {
        let x = i as f32 * 0.01;
        let (s, c) = sin_cos(x);
        assert!(
            (s - x.sin()).abs() < 2e-6,
            "sin({x}) = {s}, expected {}",
            x.sin()
        );
        assert!(
            (c - x.cos()).abs() < 2e-6,
            "cos({x}) = {c}, expected {}",
            x.cos()
        );
    }
}

#[test]
fn same_seed_and_index_render_identical_videos() {
    let config = SynthConfig {
        frames: 20,
        ..SynthConfig::default()
    };
    let a: Vec<_> = SyntheticVideo::new(&config, 5, 3).collect();
    let b: Vec<_> = SyntheticVideo::new(&config, 5, 3).collect();
    assert_eq!(a.len(), 20);
    for (fa, fb) in a.iter().zip(&b) {
        assert_eq!(fa.clean, fb.clean);
        assert_eq!(fa.annotation, fb.annotation);
        assert_eq!(fa.state, fb.state);
        match (&fa.face, &fb.face) {
            (Some((ia, la)), Some((ib, lb))) => {
                assert_eq!(ia.as_raw(), ib.as_raw());
                assert_eq!(la, lb);
            }
            (None, None) => {}
            _ => panic!("frame {}: face present in one run only", fa.index),
        }
    }
    let other: Vec<_> = SyntheticVideo::new(&config, 5, 4).take(1).collect();
    assert_ne!(other[0].clean, a[0].clean, "another index is another video");
}

#[test]
fn rendering_is_bit_identical_to_the_recorded_fingerprint() {
    // Recorded once; any change of the random stream, the geometry or the rasteriser shows here,
    // and so does a platform whose arithmetic differs (the renderer avoids libm for this reason).
    let config = SynthConfig {
        frames: 3,
        ..SynthConfig::default()
    };
    let bytes: Vec<u8> = SyntheticVideo::new(&config, 42, 0)
        .flat_map(|f| {
            let (img, lm) = f
                .face
                .expect("no dropped faces in the first 3 frames of this video");
            let mut v = img.into_raw();
            v.extend(lm.0.iter().flatten().flat_map(|x| x.to_le_bytes()));
            v
        })
        .collect();
    assert_eq!(fnv(bytes), GOLDEN_FINGERPRINT);
}

const GOLDEN_FINGERPRINT: u64 = 2_866_803_184_700_608_575;

#[test]
fn landmarks_follow_the_ibug_layout() {
    let (_, lm) = render(0.3, 0.2);
    let p = &lm.0;
    for q in p {
        assert!(
            (0.0..112.0).contains(&q[0]) && (0.0..112.0).contains(&q[1]),
            "{q:?}"
        );
    }
    // Jaw from image left to image right, chin (8) lowest.
    assert!(p[0][0] < p[8][0] && p[8][0] < p[16][0]);
    assert!(p.iter().all(|q| q[1] <= p[8][1] + 1e-3));
    // Brows above eyes above nose tip above mouth.
    let brow_y = mean(&p[17..27])[1];
    let eye_y = mean(&p[36..48])[1];
    assert!(brow_y < eye_y && eye_y < p[30][1] && p[30][1] < p[51][1]);
    // Eye corners: 36 outer-left < 39 inner-left < 42 inner-right < 45 outer-right.
    assert!(p[36][0] < p[39][0] && p[39][0] < p[42][0] && p[42][0] < p[45][0]);
    // Upper lids above lower lids.
    assert!(p[37][1] < p[41][1] && p[44][1] < p[46][1]);
    // Mouth: 48 left corner, 54 right corner, 51 upper lip above 57 lower lip, inner lips inside.
    assert!(p[48][0] < p[51][0] && p[51][0] < p[54][0]);
    assert!(p[51][1] < p[62][1] && p[62][1] <= p[66][1] && p[66][1] < p[57][1]);
    // The face box (landmark extent) fills about 1 / 1.4 of the crop, centred.
    let (xmin, xmax) = p
        .iter()
        .fold((f32::MAX, f32::MIN), |(a, b), q| (a.min(q[0]), b.max(q[0])));
    let width = xmax - xmin;
    assert!((60.0..95.0).contains(&width), "face width {width}");
    assert!(((xmin + xmax) / 2.0 - 56.0).abs() < 3.0);
}

#[test]
fn valence_bends_the_mouth_and_arousal_opens_mouth_and_eyes() {
    let corner_lift = |lm: &Landmarks68| {
        let p = &lm.0;
        (p[62][1] + p[66][1]) / 2.0 - (p[48][1] + p[54][1]) / 2.0
    };
    let mouth_gap = |lm: &Landmarks68| lm.0[66][1] - lm.0[62][1];
    let eye_open = |lm: &Landmarks68| {
        let p = &lm.0;
        (p[41][1] - p[37][1]) + (p[46][1] - p[44][1])
    };
    let brow_height = |lm: &Landmarks68| lm.0[36][1] - mean(&lm.0[17..22])[1];
    let (_, happy) = render(0.9, 0.0);
    let (_, sad) = render(-0.9, 0.0);
    let (_, calm) = render(0.0, -0.9);
    let (_, excited) = render(0.0, 0.9);
    assert!(corner_lift(&happy) > corner_lift(&sad) + 3.0);
    assert!(mouth_gap(&excited) > mouth_gap(&calm) + 3.0);
    assert!(eye_open(&excited) > eye_open(&calm) + 2.0);
    assert!(brow_height(&excited) > brow_height(&calm) + 2.0);
    // Negative valence tilts the brows: inner end (21) lower than the outer (17) when angry.
    let (_, angry) = render(-0.9, 0.9);
    let tilt = |lm: &Landmarks68| lm.0[21][1] - lm.0[17][1];
    assert!(tilt(&angry) > tilt(&happy) + 1.0);
}

#[test]
fn pixels_agree_with_the_landmarks() {
    let p = person();
    let (img, lm) = render(0.0, 0.9);
    let at = |q: [f32; 2]| img.get_pixel(q[0] as u32, q[1] as u32).0;
    let dist = |a: [u8; 3], b: [u8; 3]| {
        a.iter()
            .zip(&b)
            .map(|(x, y)| (i32::from(*x) - i32::from(*y)).abs())
            .max()
            .unwrap()
    };
    // Inside the open mouth it is dark; on the cheek it is skin; in the eye it is not skin.
    let mouth = mean(&lm.0[60..68]);
    assert!(at(mouth).iter().all(|&c| c < 90), "{:?}", at(mouth));
    let cheek = [
        (lm.0[2][0] + lm.0[31][0]) / 2.0,
        (lm.0[2][1] + lm.0[31][1]) / 2.0,
    ];
    assert!(dist(at(cheek), p.skin) < 40, "cheek {:?}", at(cheek));
    let eye = mean(&lm.0[36..42]);
    assert!(dist(at(eye), p.skin) > 40, "eye {:?}", at(eye));
}

#[test]
fn pose_moves_the_landmarks_and_keeps_the_crop_framing() {
    let base = FaceState::neutral_pose([0.0, 0.0]);
    let turned = FaceState {
        yaw: 0.4,
        roll: 0.2,
        ..base.clone()
    };
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let (_, a) = render_face(&person(), &base, 112, &mut rng);
    let (_, b) = render_face(&person(), &turned, 112, &mut rng);
    // Yaw moves the nose tip (which sticks out) sideways more than the jaw's ends.
    assert!(b.0[30][0] - a.0[30][0] > 3.0);
    // Roll tilts the eye line.
    let slope = |l: &Landmarks68| l.0[45][1] - l.0[36][1];
    assert!(slope(&b) > slope(&a) + 5.0);
}

#[test]
fn trajectories_are_smooth_and_bounded() {
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    for _ in 0..10 {
        let mut t = AffectTrajectory::random(&mut rng);
        let values: Vec<[f32; 2]> = (0..500).map(|_| t.step(&mut rng)).collect();
        for d in 0..2 {
            let xs: Vec<f32> = values.iter().map(|v| v[d]).collect();
            assert!(xs.iter().all(|x| (-1.0..=1.0).contains(x)));
            let m = xs.iter().sum::<f32>() / xs.len() as f32;
            let var = xs.iter().map(|x| (x - m) * (x - m)).sum::<f32>() / xs.len() as f32;
            let step = xs.windows(2).map(|w| (w[1] - w[0]).abs()).sum::<f32>() / 499.0;
            assert!(var.sqrt() > 0.05, "the trajectory moves");
            assert!(step < 0.5 * var.sqrt(), "consecutive frames are close");
        }
    }
}

#[test]
fn videos_carry_jitter_nuisances_missing_faces_and_unlabelled_frames() {
    let config = SynthConfig {
        frames: 400,
        blink_rate: 0.05,
        occlusion_rate: 0.05,
        blur_rate: 0.05,
        no_face_rate: 0.02,
        invalid_label_rate: 0.01,
        ..SynthConfig::default()
    };
    let video = SyntheticVideo::new(&config, 1, 0);
    let person = video.person.clone();
    let frames: Vec<_> = video.collect();
    assert_eq!(frames.len(), 400);
    assert!(frames.iter().enumerate().all(|(i, f)| f.index == i));
    let count = |pred: &dyn Fn(&affect_shared::synth::SyntheticFrame) -> bool| {
        frames.iter().filter(|f| pred(f)).count()
    };
    assert!(count(&|f| f.face.is_none()) > 0);
    assert!(count(&|f| f.annotation.is_none()) > 0);
    assert!(count(&|f| f.state.blink > 0.5) > 0);
    assert!(count(&|f| f.state.occlusion.is_some()) > 0);
    assert!(count(&|f| f.state.blur > 0.0) > 0);
    for f in &frames {
        if let Some(ann) = f.annotation {
            for (value, clean) in ann.iter().zip(f.clean) {
                assert!((-1.0..=1.0).contains(value));
                assert!((value * 1000.0 - (value * 1000.0).round()).abs() < 1e-3);
                assert!((value - clean).abs() < 0.3);
            }
        }
        if let Some((img, _)) = &f.face {
            assert_eq!(img.dimensions(), (112, 112));
        }
    }
    // The shown expression jitters around the person's rendering of the clean affect.
    let residual: Vec<f32> = frames
        .iter()
        .map(|f| f.state.valence - person.shown(f.clean)[0])
        .collect();
    let rms = (residual.iter().map(|r| r * r).sum::<f32>() / residual.len() as f32).sqrt();
    assert!((0.05..0.3).contains(&rms), "jitter rms {rms}");
}

/// Pearson correlation.
fn correlation(x: &[f32], y: &[f32]) -> f32 {
    let n = x.len() as f32;
    let (mx, my) = (x.iter().sum::<f32>() / n, y.iter().sum::<f32>() / n);
    let cov: f32 = x.iter().zip(y).map(|(a, b)| (a - mx) * (b - my)).sum();
    let vx: f32 = x.iter().map(|a| (a - mx) * (a - mx)).sum();
    let vy: f32 = y.iter().map(|b| (b - my) * (b - my)).sum();
    cov / (vx * vy).sqrt()
}

#[test]
fn averaging_over_time_recovers_affect_better_than_single_frames() {
    // The design claim behind CNN-RNN > CNN: the expression shown on one frame is a noisy view of
    // the affect; a window of frames of the same person is a much better one.
    let config = SynthConfig {
        frames: 600,
        ..SynthConfig::default()
    };
    let (mut single, mut averaged) = (0.0, 0.0);
    for index in 0..4 {
        let frames: Vec<_> = SyntheticVideo::new(&config, 2, index).collect();
        let clean: Vec<f32> = frames.iter().map(|f| f.clean[0]).collect();
        let shown: Vec<f32> = frames.iter().map(|f| f.state.valence).collect();
        let window = 9;
        let smooth: Vec<f32> = (0..shown.len())
            .map(|i| {
                let lo = i.saturating_sub(window / 2);
                let hi = (i + window / 2 + 1).min(shown.len());
                shown[lo..hi].iter().sum::<f32>() / (hi - lo) as f32
            })
            .collect();
        single += correlation(&shown, &clean) / 4.0;
        averaged += correlation(&smooth, &clean) / 4.0;
    }
    eprintln!("valence correlation: single frames {single:.3}, 9-frame average {averaged:.3}");
    assert!(
        averaged > single + 0.05,
        "single {single:.3}, averaged {averaged:.3}"
    );
}

/// A small, fast configuration with `annotators` annotators of `noise`.
fn annotated(frames: usize, annotators: usize, noise: AnnotatorNoise) -> SynthConfig {
    SynthConfig {
        size: 32,
        frames,
        annotators,
        annotator_noise: noise,
        invalid_label_rate: 0.02,
        ..SynthConfig::default()
    }
}

fn quiet() -> AnnotatorNoise {
    AnnotatorNoise {
        max_lag: 0,
        bias: 0.0,
        scale: 0.0,
        noise: 0.0,
        noise_frames: 15.0,
    }
}

fn round3(v: f32) -> f32 {
    (v * 1000.0).round() / 1000.0
}

#[test]
fn annotations_without_annotators_are_the_recorded_ones() {
    // Recorded at the commit before simulated annotators existed: with `annotators == 0` the
    // labels (and every other output) are what they were.
    let config = SynthConfig {
        size: 32,
        frames: 200,
        ..SynthConfig::default()
    };
    let bytes: Vec<u8> = (0..3)
        .flat_map(|index| SyntheticVideo::new(&config, 7, index))
        .flat_map(|f| match f.annotation {
            Some([v, a]) => [v.to_le_bytes(), a.to_le_bytes()].concat(),
            None => vec![0xff],
        })
        .collect();
    assert_eq!(fnv(bytes), GOLDEN_ANNOTATIONS);
}

const GOLDEN_ANNOTATIONS: u64 = 1_596_134_582_733_652_930;

#[test]
fn annotators_change_only_the_labels_and_the_annotation_is_their_mean() {
    let plain: Vec<_> = SyntheticVideo::new(&annotated(120, 0, quiet()), 3, 1).collect();
    let config = annotated(120, 4, AnnotatorNoise::default());
    let with: Vec<_> = SyntheticVideo::new(&config, 3, 1).collect();
    let again: Vec<_> = SyntheticVideo::new(&config, 3, 1).collect();
    let mut differs = false;
    for ((p, w), w2) in plain.iter().zip(&with).zip(&again) {
        assert_eq!(p.clean, w.clean, "frame {}", p.index);
        assert_eq!(p.state, w.state);
        assert_eq!(
            p.face.as_ref().map(|(i, l)| (i.as_raw(), l)),
            w.face.as_ref().map(|(i, l)| (i.as_raw(), l))
        );
        assert_eq!(p.annotation.is_some(), w.annotation.is_some());
        assert!(p.annotators.is_empty());
        // Deterministic for the seed.
        assert_eq!(w.annotators, w2.annotators);
        assert_eq!(w.annotation, w2.annotation);
        match w.annotation {
            Some(mean) => {
                assert_eq!(w.annotators.len(), 4);
                let average =
                    [0, 1].map(|d| round3(w.annotators.iter().map(|a| a[d]).sum::<f32>() / 4.0));
                assert_eq!(mean, average);
                assert_eq!(Some(mean), mean_annotation(&w.annotators));
                differs |= w.annotators.iter().any(|a| *a != w.annotators[0]);
                for a in &w.annotators {
                    assert!(a.iter().all(|v| (-1.0..=1.0).contains(v)));
                }
            }
            None => assert!(w.annotators.is_empty(), "unannotated for every annotator"),
        }
    }
    assert!(differs, "annotators disagree");
    assert!(
        with.iter().any(|f| f.annotation.is_none()),
        "some frames unannotated"
    );
}

#[test]
fn an_annotator_lags_the_true_affect_by_their_reaction_time() {
    let noise = AnnotatorNoise {
        max_lag: 8,
        ..quiet()
    };
    let config = SynthConfig {
        invalid_label_rate: 0.0,
        ..annotated(80, 6, noise.clone())
    };
    let frames: Vec<_> = SyntheticVideo::new(&config, 4, 0).collect();
    let lags: Vec<usize> = (0..6).map(|k| Annotator::new(&noise, 4, k).lag).collect();
    assert!(lags.iter().any(|&l| l > 0), "lags {lags:?}");
    assert!(lags.iter().all(|&l| l <= 8));
    for (k, &lag) in lags.iter().enumerate() {
        for (t, f) in frames.iter().enumerate() {
            let source = frames[t.saturating_sub(lag)].clean;
            assert_eq!(
                f.annotators[k],
                source.map(round3),
                "annotator {k} (lag {lag}) at frame {t}"
            );
        }
    }
}

#[test]
fn an_annotator_has_their_own_bias_and_scale_in_every_video() {
    let noise = AnnotatorNoise {
        bias: 0.2,
        scale: 0.3,
        ..quiet()
    };
    let config = SynthConfig {
        invalid_label_rate: 0.0,
        ..annotated(40, 3, noise.clone())
    };
    for index in 0..2 {
        for f in SyntheticVideo::new(&config, 9, index) {
            for (k, written) in f.annotators.iter().enumerate() {
                let a = Annotator::new(&noise, 9, k);
                let expected =
                    [0, 1].map(|d| round3((a.scale[d] * f.clean[d] + a.bias[d]).clamp(-1.0, 1.0)));
                assert_eq!(*written, expected, "video {index} annotator {k}");
            }
        }
    }
    // Over many annotators, bias and scale spread as configured.
    let many: Vec<Annotator> = (0..400).map(|k| Annotator::new(&noise, 9, k)).collect();
    let biases: Vec<f32> = many.iter().flat_map(|a| a.bias).collect();
    let sd = (biases.iter().map(|b| b * b).sum::<f32>() / biases.len() as f32).sqrt();
    assert!((0.17..0.23).contains(&sd), "bias sd {sd}");
    let scales: Vec<f32> = many.iter().flat_map(|a| a.scale).collect();
    assert!(scales.iter().all(|s| (0.7..=1.3).contains(s)));
    assert!(scales.iter().any(|s| *s < 0.8) && scales.iter().any(|s| *s > 1.2));
    assert_ne!(
        Annotator::new(&noise, 9, 0),
        Annotator::new(&noise, 10, 0),
        "seeded"
    );
}

#[test]
fn annotator_noise_is_smooth_and_as_large_as_configured() {
    let noise = AnnotatorNoise {
        noise: 0.1,
        noise_frames: 15.0,
        ..quiet()
    };
    let config = SynthConfig {
        invalid_label_rate: 0.0,
        ..annotated(600, 2, noise)
    };
    let frames: Vec<_> = SyntheticVideo::new(&config, 5, 0).collect();
    for k in 0..2 {
        let residual: Vec<f32> = frames
            .iter()
            .map(|f| f.annotators[k][0] - f.clean[0])
            .collect();
        let n = residual.len() as f32;
        let sd = (residual.iter().map(|r| r * r).sum::<f32>() / n).sqrt();
        assert!((0.05..0.16).contains(&sd), "annotator {k}: noise sd {sd}");
        let lag1 = correlation(&residual[1..], &residual[..residual.len() - 1]);
        assert!(
            lag1 > 0.8,
            "annotator {k}: low-pass noise, lag-1 correlation {lag1}"
        );
    }
}
