//! Pure BlazeFace logic, no model: letterboxing a frame region into the 128×128 input, the 896
//! anchors, decoding raw outputs into detections in frame pixels, tiling large frames, and
//! non-maximum suppression. Everything here is tested without a model file.

use affect_shared::preprocess::FaceBox;
use image::RgbImage;
use serde::{Deserialize, Serialize};

/// Side of BlazeFace's (front / short-range) square input.
pub const INPUT_SIZE: usize = 128;

/// Anchors of the two output layers: 16×16 cells with 2 anchors each, then 8×8 cells with 6.
pub const ANCHOR_LAYERS: [(usize, usize); 2] = [(16, 2), (8, 6)];

/// Total anchors (16·16·2 + 8·8·6).
pub const ANCHOR_COUNT: usize = 896;

/// Regressor values per anchor: box centre (x, y), size (w, h), 6 keypoints (x, y).
pub const REGRESSOR_WIDTH: usize = 16;

/// One detection in frame pixels.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Detection {
    /// Confidence in [0, 1] (sigmoid of the logit).
    pub score: f32,
    /// Box corners `[x0, y0, x1, y1]`.
    pub corners: [f32; 4],
    /// Keypoints: right eye, left eye (subject's; image left first), nose tip, mouth centre,
    /// right ear, left ear.
    pub keypoints: [[f32; 2]; 6],
}

impl Detection {
    /// Intersection over union of the two boxes (0 when either is empty).
    pub fn iou(&self, other: &Detection) -> f32 {
        let [a0, a1, a2, a3] = self.corners;
        let [b0, b1, b2, b3] = other.corners;
        let ix = (a2.min(b2) - a0.max(b0)).max(0.0);
        let iy = (a3.min(b3) - a1.max(b1)).max(0.0);
        let inter = ix * iy;
        let union = (a2 - a0) * (a3 - a1) + (b2 - b0) * (b3 - b1) - inter;
        if union > 0.0 { inter / union } else { 0.0 }
    }
}

/// How overlapping detections are merged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Suppression {
    /// MediaPipe's "weighted" NMS: each cluster (IoU above the threshold with its best member)
    /// becomes the score-weighted mean of its boxes and keypoints, with the best score.
    #[default]
    Weighted,
    /// Classic NMS: keep the best of each cluster as it is.
    Hard,
}

/// Square tiles the detector also runs on, so faces much smaller than the frame are found
/// (BlazeFace's front model sees faces down to ~15 px of its 128 px input).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tiling {
    /// Tile side in frame pixels.
    pub tile: u32,
    /// Overlap of neighbouring tiles in pixels (tiles start every `tile - overlap` pixels);
    /// should exceed the largest face a tile is meant to find.
    pub overlap: u32,
}

/// A frame region `x, y, width, height` (whole pixels) the detector looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Region {
    /// Left edge.
    pub x: u32,
    /// Top edge.
    pub y: u32,
    /// Width.
    pub width: u32,
    /// Height.
    pub height: u32,
}

impl Region {
    /// Whether `face` lies wholly inside the region.
    pub fn contains(&self, face: &FaceBox) -> bool {
        let (x0, y0) = (self.x as f32, self.y as f32);
        face.x >= x0
            && face.y >= y0
            && face.x + face.w <= x0 + self.width as f32
            && face.y + face.h <= y0 + self.height as f32
    }
}

/// The whole frame, then (with tiling, when the frame is larger than a tile) tiles of side
/// `tile` starting every `tile - overlap` pixels, the last one in each direction flush with the
/// frame's edge. A frame smaller than a tile in one direction gets tiles of its full extent.
pub fn regions(width: u32, height: u32, tiling: Option<Tiling>) -> Vec<Region> {
    let whole = Region {
        x: 0,
        y: 0,
        width,
        height,
    };
    let mut out = vec![whole];
    let Some(Tiling { tile, overlap }) = tiling else {
        return out;
    };
    if tile == 0 || (width <= tile && height <= tile) {
        return out;
    }
    let step = tile.saturating_sub(overlap).max(1);
    let starts = |size: u32| -> Vec<u32> {
        if size <= tile {
            return vec![0];
        }
        let mut s: Vec<u32> = (0..size - tile).step_by(step as usize).collect();
        s.push(size - tile);
        s
    };
    for y in starts(height) {
        for x in starts(width) {
            out.push(Region {
                x,
                y,
                width: tile.min(width),
                height: tile.min(height),
            });
        }
    }
    out
}

/// Where a region lands in the 128×128 input: `input = frame · scale + offset` per axis.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Letterbox {
    /// Input pixels per frame pixel (`128 / max(width, height)` of the region).
    pub scale: f64,
    /// Input coordinate of frame coordinate 0, per axis.
    pub offset: [f64; 2],
}

impl Letterbox {
    /// The mapping of `region` centred in the square input.
    pub fn of(region: Region) -> Self {
        let size = INPUT_SIZE as f64;
        let scale = size / f64::from(region.width.max(region.height));
        let pad = |extent: u32| (size - f64::from(extent) * scale) / 2.0;
        Self {
            scale,
            offset: [
                pad(region.width) - f64::from(region.x) * scale,
                pad(region.height) - f64::from(region.y) * scale,
            ],
        }
    }

    /// Input point → frame point.
    pub fn to_frame(&self, p: [f64; 2]) -> [f32; 2] {
        [
            ((p[0] - self.offset[0]) / self.scale) as f32,
            ((p[1] - self.offset[1]) / self.scale) as f32,
        ]
    }
}

/// Area-averaging weights along one axis: output pixel `u` covers the frame interval
/// `[(u - offset) / scale, (u + 1 - offset) / scale)`; a frame pixel weighs the part of it inside
/// both that interval and `[lo, hi)` (the region), divided by the interval's length, so the
/// letterbox border reads black. Returns, per output pixel, the first frame index and weights.
fn area_weights(scale: f64, offset: f64, lo: u32, hi: u32) -> Vec<(usize, Vec<f32>)> {
    (0..INPUT_SIZE)
        .map(|u| {
            let start = (u as f64 - offset) / scale;
            let end = (u as f64 + 1.0 - offset) / scale;
            let (clo, chi) = (start.max(f64::from(lo)), end.min(f64::from(hi)));
            let length = end - start;
            if chi <= clo {
                return (0, Vec::new());
            }
            let first = clo.floor() as usize;
            let last = (chi.ceil() as usize).min(hi as usize);
            let weights = (first..last)
                .map(|i| ((chi.min(i as f64 + 1.0) - clo.max(i as f64)).max(0.0) / length) as f32)
                .collect();
            (first, weights)
        })
        .collect()
}

/// Values of one region's BlazeFace input (NHWC `128 × 128 × 3`).
pub const INPUT_VALUES: usize = INPUT_SIZE * INPUT_SIZE * 3;

/// The region of `frame` as BlazeFace input: NHWC `128 × 128 × 3` floats, RGB in [-1, 1],
/// area-averaged (box filter) so downscaling does not alias, black (-1) letterbox borders.
/// The region must lie inside the frame. [`letterbox_into`] writes into a caller's buffer.
pub fn letterbox_input(frame: &RgbImage, region: Region) -> (Vec<f32>, Letterbox) {
    let mut out = vec![0.0; INPUT_VALUES];
    let mapping = letterbox_into(frame, region, &mut out, &mut Vec::new());
    (out, mapping)
}

/// [`letterbox_input`] into `out` (exactly [`INPUT_VALUES`] long, every value written), using
/// `scratch` for the vertical pass (resized as needed, so a reused one stops allocating).
pub fn letterbox_into(
    frame: &RgbImage,
    region: Region,
    out: &mut [f32],
    scratch: &mut Vec<f32>,
) -> Letterbox {
    assert_eq!(out.len(), INPUT_VALUES, "one region's input");
    let mapping = Letterbox::of(region);
    let xs = area_weights(
        mapping.scale,
        mapping.offset[0],
        region.x,
        region.x + region.width,
    );
    let ys = area_weights(
        mapping.scale,
        mapping.offset[1],
        region.y,
        region.y + region.height,
    );
    let width = frame.width() as usize;
    let raw = frame.as_raw();
    let x0 = region.x as usize;
    let span = 3 * region.width as usize;
    // Vertical pass first, over whole rows of the region (contiguous, so it vectorises): each
    // output row's weighted sum of the frame rows it covers, `128 × span` values.
    scratch.clear();
    scratch.resize(INPUT_SIZE * span, 0.0);
    for ((first, weights), sums) in ys.iter().zip(scratch.chunks_exact_mut(span)) {
        for (k, &w) in weights.iter().enumerate() {
            let line = &raw[3 * ((first + k) * width + x0)..][..span];
            for (sum, &p) in sums.iter_mut().zip(line) {
                *sum += w * f32::from(p);
            }
        }
    }
    // Horizontal pass over the 128 summed rows.
    for (sums, out_row) in scratch
        .chunks_exact(span)
        .zip(out.chunks_exact_mut(INPUT_SIZE * 3))
    {
        for ((first, weights), px) in xs.iter().zip(out_row.chunks_exact_mut(3)) {
            let mut acc = [0.0f32; 3];
            if !weights.is_empty() {
                let taps = &sums[3 * (first - x0)..][..3 * weights.len()];
                for (&w, p) in weights.iter().zip(taps.chunks_exact(3)) {
                    for c in 0..3 {
                        acc[c] += w * p[c];
                    }
                }
            }
            for c in 0..3 {
                px[c] = acc[c] / 127.5 - 1.0;
            }
        }
    }
    mapping
}

/// Anchor centres in input pixels, in output order: for each layer, rows, columns, anchors.
pub fn anchors() -> Vec<[f64; 2]> {
    let mut out = Vec::with_capacity(ANCHOR_COUNT);
    for (cells, per_cell) in ANCHOR_LAYERS {
        let cell = INPUT_SIZE as f64 / cells as f64;
        for y in 0..cells {
            for x in 0..cells {
                let centre = [(x as f64 + 0.5) * cell, (y as f64 + 0.5) * cell];
                out.extend(std::iter::repeat_n(centre, per_cell));
            }
        }
    }
    out
}

/// Logistic function, with the logit clamped to ±100 as MediaPipe does.
pub fn sigmoid(logit: f32) -> f32 {
    1.0 / (1.0 + (-logit.clamp(-100.0, 100.0)).exp())
}

/// Decodes one run: `logits` (896) and `regressors` (896 × 16, anchor-major) into detections
/// with score at least `min_score`, in frame pixels through `mapping`.
pub fn decode(
    logits: &[f32],
    regressors: &[f32],
    anchors: &[[f64; 2]],
    mapping: &Letterbox,
    min_score: f32,
) -> Vec<Detection> {
    logits
        .iter()
        .zip(regressors.chunks_exact(REGRESSOR_WIDTH))
        .zip(anchors)
        .filter_map(|((&logit, r), anchor)| {
            let score = sigmoid(logit);
            if score.is_nan() || score < min_score || r.iter().any(|v| !v.is_finite()) {
                return None;
            }
            let point = |dx: f32, dy: f32| {
                mapping.to_frame([anchor[0] + f64::from(dx), anchor[1] + f64::from(dy)])
            };
            let [x0, y0] = point(r[0] - r[2] / 2.0, r[1] - r[3] / 2.0);
            let [x1, y1] = point(r[0] + r[2] / 2.0, r[1] + r[3] / 2.0);
            if !(x1 > x0 && y1 > y0) {
                return None;
            }
            let mut keypoints = [[0.0; 2]; 6];
            for (k, kp) in keypoints.iter_mut().enumerate() {
                *kp = point(r[4 + 2 * k], r[5 + 2 * k]);
            }
            Some(Detection {
                score,
                corners: [x0, y0, x1, y1],
                keypoints,
            })
        })
        .collect()
}

/// Raw outputs of one run on `N` regions, row-major: per anchor layer ([`ANCHOR_LAYERS`] order:
/// 16×16, then 8×8), the score logits `[N, anchors, 1]` and the regressors
/// `[N, anchors, 16]`.
#[derive(Debug, Clone, Copy)]
pub struct RawOutputs<'a> {
    /// Score logits of the two layers.
    pub logits: [&'a [f32]; 2],
    /// Regressors of the two layers.
    pub regressors: [&'a [f32]; 2],
}

/// Decodes every row of a run on several regions, row `n` through `mappings[n]` (its region's
/// letterbox), as [`decode`] does one: detections with score at least `min_score`, per row.
/// Errors when the outputs do not hold `mappings.len()` rows of every layer.
pub fn decode_rows(
    outputs: RawOutputs<'_>,
    anchors: &[[f64; 2]],
    mappings: &[Letterbox],
    min_score: f32,
) -> Result<Vec<Vec<Detection>>, String> {
    let rows = mappings.len();
    let per_layer = ANCHOR_LAYERS.map(|(cells, per_cell)| cells * cells * per_cell);
    if anchors.len() != per_layer.iter().sum::<usize>() {
        return Err(format!(
            "{} anchors, expected {ANCHOR_COUNT}",
            anchors.len()
        ));
    }
    for (layer, count) in per_layer.iter().enumerate() {
        let (logits, regressors) = (outputs.logits[layer], outputs.regressors[layer]);
        if logits.len() != rows * count || regressors.len() != rows * count * REGRESSOR_WIDTH {
            return Err(format!(
                "layer {layer}: {} logits and {} regressor values for {rows} regions of {count} \
                 anchors",
                logits.len(),
                regressors.len()
            ));
        }
    }
    let (first, second) = anchors.split_at(per_layer[0]);
    Ok(mappings
        .iter()
        .enumerate()
        .map(|(n, mapping)| {
            let layer = |l: usize, anchors: &[[f64; 2]]| {
                let count = per_layer[l];
                decode(
                    &outputs.logits[l][n * count..][..count],
                    &outputs.regressors[l][n * count * REGRESSOR_WIDTH..]
                        [..count * REGRESSOR_WIDTH],
                    anchors,
                    mapping,
                    min_score,
                )
            };
            let mut found = layer(0, first);
            found.extend(layer(1, second));
            found
        })
        .collect())
}

/// Whether a detection from a tile touches one of the tile's edges that is not a frame edge
/// (within two input pixels): such a face is cut and is found whole elsewhere.
pub fn touches_inner_edge(
    detection: &Detection,
    region: Region,
    frame_width: u32,
    frame_height: u32,
) -> bool {
    let eps = 2.0 * region.width.max(region.height) as f32 / INPUT_SIZE as f32;
    let [x0, y0, x1, y1] = detection.corners;
    let (rx0, ry0) = (region.x as f32, region.y as f32);
    let (rx1, ry1) = (rx0 + region.width as f32, ry0 + region.height as f32);
    (region.x > 0 && x0 < rx0 + eps)
        || (region.y > 0 && y0 < ry0 + eps)
        || (region.x + region.width < frame_width && x1 > rx1 - eps)
        || (region.y + region.height < frame_height && y1 > ry1 - eps)
}

/// Non-maximum suppression: best first; each pick absorbs every remaining detection whose IoU
/// with it exceeds `iou_threshold`. Returns at most `max` detections, best first.
pub fn suppress(
    mut candidates: Vec<Detection>,
    iou_threshold: f32,
    kind: Suppression,
    max: usize,
) -> Vec<Detection> {
    candidates.sort_by(|a, b| b.score.total_cmp(&a.score));
    let mut out = Vec::new();
    while !candidates.is_empty() && out.len() < max {
        let best = candidates[0];
        let (cluster, rest): (Vec<Detection>, Vec<Detection>) = candidates
            .into_iter()
            .partition(|d| best.iou(d) > iou_threshold || *d == best);
        candidates = rest;
        out.push(match kind {
            Suppression::Hard => best,
            Suppression::Weighted => weighted_mean(&cluster, best.score),
        });
    }
    out
}

/// Score-weighted mean of boxes and keypoints, carrying `score`.
fn weighted_mean(cluster: &[Detection], score: f32) -> Detection {
    let total: f64 = cluster.iter().map(|d| f64::from(d.score)).sum();
    let mut corners = [0.0f64; 4];
    let mut keypoints = [[0.0f64; 2]; 6];
    for d in cluster {
        let w = f64::from(d.score) / total;
        for (acc, v) in corners.iter_mut().zip(d.corners) {
            *acc += w * f64::from(v);
        }
        for (acc, kp) in keypoints.iter_mut().zip(d.keypoints) {
            acc[0] += w * f64::from(kp[0]);
            acc[1] += w * f64::from(kp[1]);
        }
    }
    Detection {
        score,
        corners: corners.map(|v| v as f32),
        keypoints: keypoints.map(|p| [p[0] as f32, p[1] as f32]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn det(score: f32, corners: [f32; 4]) -> Detection {
        Detection {
            score,
            corners,
            keypoints: [[corners[0], corners[1]]; 6],
        }
    }

    #[test]
    fn anchors_follow_the_two_layers() {
        let a = anchors();
        assert_eq!(a.len(), ANCHOR_COUNT);
        assert_eq!(a[0], [4.0, 4.0]);
        assert_eq!(a[1], [4.0, 4.0]);
        assert_eq!(a[2], [12.0, 4.0]);
        assert_eq!(a[511], [124.0, 124.0]);
        assert_eq!(a[512], [8.0, 8.0]);
        assert_eq!(a[517], [8.0, 8.0]);
        assert_eq!(a[518], [24.0, 8.0]);
        assert_eq!(a[895], [120.0, 120.0]);
    }

    #[test]
    fn letterbox_centres_the_region_and_maps_back() {
        let wide = Letterbox::of(Region {
            x: 0,
            y: 0,
            width: 640,
            height: 480,
        });
        assert_eq!(wide.scale, 0.2);
        assert_eq!(wide.offset, [0.0, 16.0]);
        assert_eq!(wide.to_frame([64.0, 64.0]), [320.0, 240.0]);
        let tile = Letterbox::of(Region {
            x: 256,
            y: 128,
            width: 256,
            height: 256,
        });
        assert_eq!(tile.to_frame([0.0, 0.0]), [256.0, 128.0]);
        assert_eq!(tile.to_frame([128.0, 128.0]), [512.0, 384.0]);
    }

    #[test]
    fn letterbox_input_averages_areas_and_pads_black() {
        // 256×128 frame: left half white, right half black → top/bottom quarters padding.
        let frame = RgbImage::from_fn(256, 128, |x, _| {
            if x < 128 {
                image::Rgb([255, 255, 255])
            } else {
                image::Rgb([0, 0, 0])
            }
        });
        let region = Region {
            x: 0,
            y: 0,
            width: 256,
            height: 128,
        };
        let (input, mapping) = letterbox_input(&frame, region);
        assert_eq!(mapping.scale, 0.5);
        let at = |u: usize, v: usize| input[(v * INPUT_SIZE + u) * 3];
        assert_eq!(at(10, 10), -1.0, "padding is black");
        assert!(
            (at(10, 64) - 1.0).abs() < 1e-5,
            "white half: {}",
            at(10, 64)
        );
        assert!((at(100, 64) + 1.0).abs() < 1e-5, "black half");
        // Padding boundary is exact: rows 32..96 hold the picture.
        assert_eq!(at(10, 31), -1.0);
        assert!((at(10, 32) - 1.0).abs() < 1e-5);
        // A 3-pixel frame upscaled: each input pixel still averages to the frame's value.
        let grey = RgbImage::from_pixel(3, 3, image::Rgb([51, 102, 153]));
        let (input, _) = letterbox_input(
            &grey,
            Region {
                x: 0,
                y: 0,
                width: 3,
                height: 3,
            },
        );
        for px in input.chunks_exact(3) {
            assert!((px[0] - (51.0 / 127.5 - 1.0)).abs() < 1e-5);
            assert!((px[2] - (153.0 / 127.5 - 1.0)).abs() < 1e-5);
        }
    }

    #[test]
    fn letterbox_input_of_a_tile_reads_only_the_tile() {
        let frame = RgbImage::from_fn(300, 200, |x, y| image::Rgb([x as u8, y as u8, 0]));
        let region = Region {
            x: 100,
            y: 50,
            width: 128,
            height: 128,
        };
        let (input, mapping) = letterbox_input(&frame, region);
        assert_eq!(mapping.scale, 1.0);
        let at = |u: usize, v: usize, c: usize| (input[(v * INPUT_SIZE + u) * 3 + c] + 1.0) * 127.5;
        assert!((at(0, 0, 0) - 100.0).abs() < 1e-3);
        assert!((at(0, 0, 1) - 50.0).abs() < 1e-3);
        assert!((at(127, 127, 0) - 227.0).abs() < 1e-3);
    }

    #[test]
    fn decode_maps_offsets_around_anchors_to_frame_pixels() {
        let anchors = anchors();
        let mut logits = vec![-10.0; ANCHOR_COUNT];
        let mut regs = vec![0.0; ANCHOR_COUNT * REGRESSOR_WIDTH];
        // Anchor 512 (8×8 layer, cell (0,0), centre (8, 8)): box centred 2 px right, 20×10.
        logits[512] = 2.0;
        regs[512 * 16..512 * 16 + 6].copy_from_slice(&[2.0, 0.0, 20.0, 10.0, -3.0, -1.0]);
        let mapping = Letterbox::of(Region {
            x: 0,
            y: 0,
            width: 256,
            height: 256,
        });
        let found = decode(&logits, &regs, &anchors, &mapping, 0.5);
        assert_eq!(found.len(), 1);
        let d = found[0];
        assert!((d.score - sigmoid(2.0)).abs() < 1e-7);
        assert_eq!(d.corners, [0.0, 6.0, 40.0, 26.0]);
        assert_eq!(d.keypoints[0], [10.0, 14.0]);
        assert_eq!(d.keypoints[1], [16.0, 16.0]);
        // Nothing above the threshold → nothing; NaN regressors are dropped.
        assert!(decode(&logits, &regs, &anchors, &mapping, 0.9).is_empty());
        regs[512 * 16] = f32::NAN;
        assert!(decode(&logits, &regs, &anchors, &mapping, 0.5).is_empty());
    }

    #[test]
    fn decode_rows_decodes_each_row_through_its_own_mapping() {
        let anchors = anchors();
        let (rows, first) = (3, 512);
        let second = ANCHOR_COUNT - first;
        let mut logits = [vec![-10.0; rows * first], vec![-10.0; rows * second]];
        let mut regs = [
            vec![0.0; rows * first * REGRESSOR_WIDTH],
            vec![0.0; rows * second * REGRESSOR_WIDTH],
        ];
        // Row 0: the 8×8 layer's first anchor (overall 512, centre (8, 8)), a 20×10 box.
        logits[1][0] = 2.0;
        regs[1][..4].copy_from_slice(&[2.0, 0.0, 20.0, 10.0]);
        // Row 1: nothing. Row 2: the 16×16 layer's anchor 3 (centre (12, 4)) and the 8×8
        // layer's last anchor (overall 895).
        logits[0][2 * first + 3] = 1.0;
        regs[0][(2 * first + 3) * REGRESSOR_WIDTH..][..4].copy_from_slice(&[0.0, 0.0, 8.0, 8.0]);
        logits[1][3 * second - 1] = 3.0;
        regs[1][(3 * second - 1) * REGRESSOR_WIDTH..][..4].copy_from_slice(&[0.0, 0.0, 4.0, 4.0]);
        let mappings = [
            Letterbox::of(Region {
                x: 0,
                y: 0,
                width: 256,
                height: 256,
            }),
            Letterbox::of(Region {
                x: 0,
                y: 0,
                width: 128,
                height: 128,
            }),
            Letterbox::of(Region {
                x: 100,
                y: 50,
                width: 128,
                height: 128,
            }),
        ];
        let outputs = RawOutputs {
            logits: [&logits[0], &logits[1]],
            regressors: [&regs[0], &regs[1]],
        };
        let found = decode_rows(outputs, &anchors, &mappings, 0.5).unwrap();
        assert_eq!(found.len(), rows);
        // Each row equals a single-row decode of that row's 896 anchors.
        for (n, mapping) in mappings.iter().enumerate() {
            let mut row_logits = logits[0][n * first..][..first].to_vec();
            row_logits.extend_from_slice(&logits[1][n * second..][..second]);
            let mut row_regs =
                regs[0][n * first * REGRESSOR_WIDTH..][..first * REGRESSOR_WIDTH].to_vec();
            row_regs.extend_from_slice(
                &regs[1][n * second * REGRESSOR_WIDTH..][..second * REGRESSOR_WIDTH],
            );
            assert_eq!(
                found[n],
                decode(&row_logits, &row_regs, &anchors, mapping, 0.5),
                "row {n}"
            );
        }
        assert_eq!(found[0].len(), 1);
        assert_eq!(found[0][0].corners, [0.0, 6.0, 40.0, 26.0], "scale 0.5");
        assert!(found[1].is_empty());
        // Row 2 (a tile at (100, 50), scale 1): the 16×16 detection first, then the 8×8 one.
        assert_eq!(found[2].len(), 2);
        assert_eq!(found[2][0].corners, [108.0, 50.0, 116.0, 58.0]);
        assert_eq!(found[2][1].corners, [218.0, 168.0, 222.0, 172.0]);
        // Outputs that do not hold a row per mapping are refused.
        assert!(decode_rows(outputs, &anchors, &mappings[..2], 0.5).is_err());
        let short = RawOutputs {
            regressors: [&regs[0][1..], &regs[1]],
            ..outputs
        };
        assert!(decode_rows(short, &anchors, &mappings, 0.5).is_err());
    }

    #[test]
    fn letterbox_into_a_reused_buffer_matches_a_fresh_one() {
        let frame = RgbImage::from_fn(300, 200, |x, y| image::Rgb([x as u8, y as u8, 7]));
        let (mut out, mut scratch) = (vec![5.0; INPUT_VALUES], vec![1.0; 3]);
        for region in regions(
            300,
            200,
            Some(Tiling {
                tile: 128,
                overlap: 32,
            }),
        ) {
            let mapping = letterbox_into(&frame, region, &mut out, &mut scratch);
            assert_eq!((out.clone(), mapping), letterbox_input(&frame, region));
        }
    }

    /// The letterbox by definition: each input pixel is the mean of the frame over the square
    /// it covers, clipped to the region (black outside), in f64.
    fn letterbox_by_definition(frame: &RgbImage, region: Region) -> Vec<f32> {
        let mapping = Letterbox::of(region);
        let mut out = vec![0.0; INPUT_VALUES];
        for v in 0..INPUT_SIZE {
            for u in 0..INPUT_SIZE {
                let [x0, y0] = mapping.to_frame([u as f64, v as f64]);
                let [x1, y1] = mapping.to_frame([u as f64 + 1.0, v as f64 + 1.0]);
                let area = f64::from(x1 - x0) * f64::from(y1 - y0);
                let mut sum = [0.0f64; 3];
                for y in region.y..region.y + region.height {
                    let dy = (f64::from(y1).min(f64::from(y) + 1.0)
                        - f64::from(y0).max(f64::from(y)))
                    .max(0.0);
                    if dy == 0.0 {
                        continue;
                    }
                    for x in region.x..region.x + region.width {
                        let dx = (f64::from(x1).min(f64::from(x) + 1.0)
                            - f64::from(x0).max(f64::from(x)))
                        .max(0.0);
                        let p = frame.get_pixel(x, y).0;
                        for c in 0..3 {
                            sum[c] += dx * dy * f64::from(p[c]);
                        }
                    }
                }
                for c in 0..3 {
                    out[(v * INPUT_SIZE + u) * 3 + c] = (sum[c] / area / 127.5 - 1.0) as f32;
                }
            }
        }
        out
    }

    #[test]
    fn letterbox_equals_the_area_mean_by_definition_when_shrinking_and_enlarging() {
        let frame = RgbImage::from_fn(301, 203, |x, y| {
            image::Rgb([(x * 7 + y * 3) as u8, (x ^ y) as u8, (x * y % 251) as u8])
        });
        for region in [
            // Shrunk 2×, tall (padded left and right), a tile away from the origin.
            Region {
                x: 40,
                y: 10,
                width: 256,
                height: 190,
            },
            // Shrunk by a fraction that is not a power of two, wide.
            Region {
                x: 0,
                y: 0,
                width: 301,
                height: 203,
            },
            // Enlarged (fewer than 128 pixels): each frame pixel spreads over several.
            Region {
                x: 250,
                y: 150,
                width: 51,
                height: 37,
            },
        ] {
            let (fast, _) = letterbox_input(&frame, region);
            let exact = letterbox_by_definition(&frame, region);
            let worst = fast
                .iter()
                .zip(&exact)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f32::max);
            assert!(worst < 1e-4, "{region:?}: off by {worst}");
        }
    }

    #[test]
    fn sigmoid_is_clamped_and_symmetric() {
        assert_eq!(sigmoid(0.0), 0.5);
        assert_eq!(sigmoid(1e9), sigmoid(100.0));
        assert!((sigmoid(3.0) + sigmoid(-3.0) - 1.0).abs() < 1e-6);
    }

    #[test]
    fn weighted_nms_averages_clusters_and_keeps_separate_faces() {
        let a = det(0.9, [0.0, 0.0, 10.0, 10.0]);
        let b = det(0.3, [2.0, 0.0, 12.0, 10.0]);
        let c = det(0.8, [50.0, 50.0, 60.0, 60.0]);
        let out = suppress(vec![b, c, a], 0.3, Suppression::Weighted, 10);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].score, 0.9);
        assert!((out[0].corners[0] - 0.5).abs() < 1e-6, "{:?}", out[0]);
        assert!((out[0].corners[2] - 10.5).abs() < 1e-6);
        assert!((out[0].keypoints[0][0] - 0.5).abs() < 1e-6);
        assert_eq!(out[1], c);
        let hard = suppress(vec![b, c, a], 0.3, Suppression::Hard, 10);
        assert_eq!(hard, vec![a, c]);
        assert_eq!(suppress(vec![b, c, a], 0.3, Suppression::Hard, 1), vec![a]);
        assert!(suppress(Vec::new(), 0.3, Suppression::Weighted, 5).is_empty());
    }

    #[test]
    fn iou_of_disjoint_nested_and_equal_boxes() {
        let a = det(1.0, [0.0, 0.0, 10.0, 10.0]);
        assert_eq!(a.iou(&a), 1.0);
        assert_eq!(a.iou(&det(1.0, [20.0, 0.0, 30.0, 10.0])), 0.0);
        assert_eq!(a.iou(&det(1.0, [0.0, 0.0, 5.0, 10.0])), 0.5);
        assert_eq!(a.iou(&det(1.0, [3.0, 3.0, 3.0, 3.0])), 0.0);
    }

    #[test]
    fn regions_cover_the_frame_with_flush_last_tiles() {
        assert_eq!(regions(640, 480, None).len(), 1);
        let r = regions(
            600,
            300,
            Some(Tiling {
                tile: 256,
                overlap: 56,
            }),
        );
        let xs: Vec<u32> = r[1..].iter().filter(|t| t.y == 0).map(|t| t.x).collect();
        let ys: Vec<u32> = r[1..].iter().filter(|t| t.x == 0).map(|t| t.y).collect();
        assert_eq!(xs, vec![0, 200, 344]);
        assert_eq!(ys, vec![0, 44]);
        assert!(r[1..].iter().all(|t| t.width == 256 && t.height == 256));
        // A frame no larger than a tile is not tiled; a thin one gets full-height tiles.
        let tiling = Some(Tiling {
            tile: 256,
            overlap: 0,
        });
        assert_eq!(regions(200, 256, tiling).len(), 1);
        let thin = regions(600, 100, tiling);
        assert_eq!(thin.len(), 4);
        assert!(thin[1..].iter().all(|t| t.height == 100 && t.width == 256));
    }

    #[test]
    fn a_region_contains_the_boxes_wholly_inside_it() {
        let tile = Region {
            x: 160,
            y: 0,
            width: 256,
            height: 256,
        };
        let face = |x: f32, y: f32| FaceBox {
            x,
            y,
            w: 50.0,
            h: 60.0,
        };
        assert!(tile.contains(&face(160.0, 0.0)), "touching its edges");
        assert!(tile.contains(&face(366.0, 196.0)), "in its far corner");
        assert!(!tile.contains(&face(159.0, 10.0)), "one pixel left of it");
        assert!(
            !tile.contains(&face(367.0, 10.0)),
            "one pixel out on the right"
        );
        assert!(
            !tile.contains(&face(200.0, 197.0)),
            "one pixel out at the bottom"
        );
    }

    #[test]
    fn detections_on_inner_tile_edges_are_recognised() {
        let tile = Region {
            x: 100,
            y: 0,
            width: 128,
            height: 128,
        };
        let inside = det(0.9, [120.0, 10.0, 160.0, 50.0]);
        let cut_left = det(0.9, [100.5, 10.0, 140.0, 50.0]);
        let at_frame_top = det(0.9, [120.0, 0.0, 160.0, 40.0]);
        assert!(!touches_inner_edge(&inside, tile, 400, 300));
        assert!(touches_inner_edge(&cut_left, tile, 400, 300));
        assert!(!touches_inner_edge(&at_frame_top, tile, 400, 300));
        let last = Region { x: 272, ..tile };
        assert!(!touches_inner_edge(
            &det(0.9, [300.0, 10.0, 400.0, 50.0]),
            last,
            400,
            300
        ));
    }
}
