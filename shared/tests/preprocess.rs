//! Preprocessing invariants: identity crops, in-bounds output for any box, landmarks following the
//! same transform as the pixels, normalisation conventions, typed errors.

use affect_shared::preprocess::{
    Alignment, ColourOrder, FaceBox, Landmarks68, Preprocess, PreprocessError,
};
use image::{Rgb, RgbImage};
use proptest::prelude::*;

fn test_image(w: u32, h: u32) -> RgbImage {
    RgbImage::from_fn(w, h, |x, y| {
        Rgb([
            (x * 7 % 256) as u8,
            (y * 13 % 256) as u8,
            ((x + y) * 3 % 256) as u8,
        ])
    })
}

fn plain(size: u32) -> Preprocess {
    Preprocess {
        margin: 0.0,
        ..Preprocess::imagenet(size)
    }
}

#[test]
fn box_covering_the_image_at_native_size_is_the_identity() {
    let img = test_image(64, 64);
    let crop = plain(64)
        .crop(
            &img,
            &FaceBox {
                x: 0.0,
                y: 0.0,
                w: 64.0,
                h: 64.0,
            },
            None,
        )
        .unwrap();
    assert_eq!(crop, img);
}

#[test]
fn margin_enlarges_the_square_around_the_box_centre() {
    // Box 20×20 at (22, 22) with 50 % margin → 40×40 region at (12, 12); at size 40 that is a copy.
    let img = test_image(64, 64);
    let p = Preprocess {
        margin: 0.5,
        ..plain(40)
    };
    let crop = p
        .crop(
            &img,
            &FaceBox {
                x: 22.0,
                y: 22.0,
                w: 20.0,
                h: 20.0,
            },
            None,
        )
        .unwrap();
    assert_eq!(
        crop,
        image::imageops::crop_imm(&img, 12, 12, 40, 40).to_image()
    );
}

fn landmarks_with(eye_l: [f32; 2], eye_r: [f32; 2], nose: [f32; 2]) -> Landmarks68 {
    let mut lm = [[0.0f32; 2]; 68];
    for (i, p) in lm.iter_mut().enumerate() {
        *p = match i {
            36..=41 => eye_l,
            42..=47 => eye_r,
            _ => nose,
        };
    }
    Landmarks68(lm)
}

#[test]
fn eye_alignment_puts_eyes_on_targets_and_landmarks_follow_the_pixels() {
    let mut img = RgbImage::new(160, 120);
    let nose = [97.0f32, 78.0];
    for dy in 0..3 {
        for dx in 0..3 {
            img.put_pixel(96 + dx, 77 + dy, Rgb([255, 255, 255]));
        }
    }
    let lm = landmarks_with([70.0, 50.0], [110.0, 62.0], nose); // tilted face
    let p = Preprocess {
        alignment: Alignment::Eyes {
            left: [0.3, 0.35],
            right: [0.7, 0.35],
        },
        landmarks: true,
        ..plain(100)
    };
    let face = FaceBox {
        x: 50.0,
        y: 30.0,
        w: 80.0,
        h: 80.0,
    };
    let in_crop = p.landmarks_in_crop(&face, &lm).unwrap();
    assert!(
        (in_crop[72] - 0.3).abs() < 1e-4 && (in_crop[73] - 0.35).abs() < 1e-4,
        "left eye"
    );
    assert!(
        (in_crop[84] - 0.7).abs() < 1e-4 && (in_crop[85] - 0.35).abs() < 1e-4,
        "right eye"
    );
    // The bright dot at the nose landmark appears where the nose landmark maps to.
    let crop = p.crop(&img, &face, Some(&lm)).unwrap();
    let (mut best, mut at) = (0u32, (0, 0));
    for (x, y, px) in crop.enumerate_pixels() {
        let v = px.0.iter().map(|&c| u32::from(c)).sum::<u32>();
        if v > best {
            (best, at) = (v, (x, y));
        }
    }
    let expected = (in_crop[60] * 100.0, in_crop[61] * 100.0);
    assert!(
        (at.0 as f32 + 0.5 - expected.0).abs() < 2.0
            && (at.1 as f32 + 0.5 - expected.1).abs() < 2.0,
        "dot at {at:?}, nose landmark maps to {expected:?}"
    );
}

#[test]
fn normalisation_follows_colour_order_and_conventions() {
    let img = RgbImage::from_pixel(4, 4, Rgb([255, 128, 0]));
    let face = FaceBox {
        x: 0.0,
        y: 0.0,
        w: 4.0,
        h: 4.0,
    };
    let imagenet = plain(4).face_input(&img, &face, None).unwrap();
    assert_eq!(imagenet.pixels.len(), 3 * 16);
    assert!((imagenet.pixels[0] - (1.0 - 0.485) / 0.229).abs() < 1e-5); // R plane first
    assert!((imagenet.pixels[32] - (0.0 - 0.406) / 0.225).abs() < 1e-5); // B plane last
    let vgg = Preprocess {
        margin: 0.0,
        ..Preprocess::vgg_face(4)
    };
    assert_eq!(vgg.colour, ColourOrder::Bgr);
    let out = vgg.face_input(&img, &face, None).unwrap();
    assert!((out.pixels[0] - (0.0 - 93.594)).abs() < 1e-4); // B plane first
    assert!((out.pixels[32] - (255.0 - 129.186)).abs() < 1e-3); // R plane last
    assert_eq!(out.landmarks, None);
}

#[test]
fn bad_input_gives_typed_errors() {
    let img = test_image(8, 8);
    let p = plain(8);
    let bad = FaceBox {
        x: 0.0,
        y: f32::NAN,
        w: 4.0,
        h: 4.0,
    };
    assert!(
        matches!(p.crop(&img, &bad, None), Err(PreprocessError::InvalidBox(b)) if b.y.is_nan())
    );
    let zero = FaceBox {
        x: 0.0,
        y: 0.0,
        w: 0.0,
        h: 4.0,
    };
    assert!(matches!(
        p.crop(&img, &zero, None),
        Err(PreprocessError::InvalidBox(_))
    ));
    let face = FaceBox {
        x: 0.0,
        y: 0.0,
        w: 4.0,
        h: 4.0,
    };
    assert!(matches!(
        p.crop(&RgbImage::new(0, 0), &face, None),
        Err(PreprocessError::EmptyFrame { .. })
    ));
    let needs = Preprocess {
        landmarks: true,
        ..p.clone()
    };
    assert!(matches!(
        needs.face_input(&img, &face, None),
        Err(PreprocessError::Landmarks(_))
    ));
    let broken = Preprocess {
        std: [1.0, 0.0, 1.0],
        ..p
    };
    assert!(matches!(
        broken.crop(&img, &face, None),
        Err(PreprocessError::Invalid(_))
    ));
}

#[test]
fn description_round_trips_through_json() {
    let p = Preprocess {
        alignment: Alignment::Eyes {
            left: [0.3, 0.4],
            right: [0.7, 0.4],
        },
        ..Preprocess::vgg_face(96)
    };
    let json = serde_json::to_string(&p).unwrap();
    assert_eq!(serde_json::from_str::<Preprocess>(&json).unwrap(), p);
}

proptest! {
    #[test]
    fn any_box_gives_a_full_finite_crop(
        x in -300f32..400.0, y in -300f32..400.0, w in 0.5f32..500.0, h in 0.5f32..500.0,
        margin in 0f32..1.0, size in 1u32..48,
    ) {
        let img = test_image(100, 80);
        let p = Preprocess { margin, ..Preprocess::imagenet(size) };
        let out = p.face_input(&img, &FaceBox { x, y, w, h }, None).unwrap();
        prop_assert_eq!(out.pixels.len(), (3 * size * size) as usize);
        prop_assert!(out.pixels.iter().all(|v| v.is_finite()));
    }

    #[test]
    fn landmarks_inside_the_square_map_into_unit_range(
        x in 0f32..50.0, y in 0f32..50.0, side in 4f32..50.0, fx in 0f32..1.0, fy in 0f32..1.0,
    ) {
        let p = plain(32);
        let face = FaceBox { x, y, w: side, h: side };
        let point = [x + fx * side, y + fy * side];
        let lm = Landmarks68([point; 68]);
        let out = p.landmarks_in_crop(&face, &lm).unwrap();
        prop_assert!((out[0] - fx).abs() < 1e-4 && (out[1] - fy).abs() < 1e-4);
    }
}

/// Bilinear sampling written out per pixel, independently of the library's per-row/column fast
/// path: output pixel (u, v) samples the source at `origin + (u + ½) · step − ½`.
fn reference_crop(img: &RgbImage, origin: [f32; 2], step: f32, size: u32) -> RgbImage {
    let at = |x: i64, y: i64, c: usize| -> f32 {
        if x < 0 || y < 0 || x >= i64::from(img.width()) || y >= i64::from(img.height()) {
            0.0
        } else {
            f32::from(img.get_pixel(x as u32, y as u32).0[c])
        }
    };
    RgbImage::from_fn(size, size, |u, v| {
        let fx = step * (u as f32 + 0.5) + origin[0] - 0.5;
        let fy = step * (v as f32 + 0.5) + origin[1] - 0.5;
        let (x0, y0) = (fx.floor(), fy.floor());
        let (wx, wy) = (fx - x0, fy - y0);
        let (x0, y0) = (x0 as i64, y0 as i64);
        Rgb(std::array::from_fn(|c| {
            let top = at(x0, y0, c) + (at(x0 + 1, y0, c) - at(x0, y0, c)) * wx;
            let bottom = at(x0, y0 + 1, c) + (at(x0 + 1, y0 + 1, c) - at(x0, y0 + 1, c)) * wx;
            (top + (bottom - top) * wy).round().clamp(0.0, 255.0) as u8
        }))
    })
}

proptest! {
    #[test]
    fn axis_aligned_crops_equal_per_pixel_bilinear_sampling(
        x in -20.0f32..60.0,
        y in -20.0f32..60.0,
        side in 8.0f32..90.0,
        size in 8u32..48,
    ) {
        let img = test_image(64, 48);
        let face = FaceBox { x, y, w: side, h: side };
        let crop = plain(size).crop(&img, &face, None).unwrap();
        let expected = reference_crop(&img, [x, y], side / size as f32, size);
        // The library composes the same affine map in another order, so a sample position may
        // differ in its last bits and round the other way at a tie: at most one level apart.
        let worst = crop
            .pixels()
            .zip(expected.pixels())
            .flat_map(|(a, b)| (0..3).map(move |c| a.0[c].abs_diff(b.0[c])))
            .max()
            .unwrap_or(0);
        prop_assert!(worst <= 1, "a pixel differs by {worst} levels");
    }
}
