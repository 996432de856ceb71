//! Histogram-of-oriented-gradients features (Dalal & Triggs 2005) of a face crop.
//!
//! The crop (`3 × S × S`, any normalisation) is averaged to one grey channel; gradients are
//! central differences (one-sided at the border); each `cell × cell` cell gets a histogram of
//! `bins` unsigned orientations (0–180°) weighted by magnitude with linear interpolation between
//! neighbouring bins; overlapping 2×2-cell blocks (stride one cell) are L2-Hys normalised
//! (L2, clip at 0.2, L2 again) and concatenated.

/// HOG parameters.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct HogParams {
    /// Cell side in pixels.
    pub cell: usize,
    /// Orientation bins over 0–180°.
    pub bins: usize,
}

impl Default for HogParams {
    fn default() -> Self {
        Self { cell: 8, bins: 9 }
    }
}

impl HogParams {
    /// Feature length for a `size × size` crop (0 when the crop holds fewer than 2×2 cells).
    pub fn len(&self, size: usize) -> usize {
        let cells = size / self.cell;
        if cells < 2 {
            return 0;
        }
        (cells - 1) * (cells - 1) * 4 * self.bins
    }
}

/// HOG features of a `3 × size × size` CHW crop.
pub fn hog(pixels: &[f32], size: usize, params: HogParams) -> Vec<f32> {
    let plane = size * size;
    let grey: Vec<f32> = (0..plane)
        .map(|i| (pixels[i] + pixels[plane + i] + pixels[2 * plane + i]) / 3.0)
        .collect();
    let at = |x: usize, y: usize| grey[y * size + x];
    let cells = size / params.cell;
    let bins = params.bins;
    let mut hist = vec![0.0f32; cells * cells * bins];
    for y in 0..cells * params.cell {
        for x in 0..cells * params.cell {
            let gx = at((x + 1).min(size - 1), y) - at(x.saturating_sub(1), y);
            let gy = at(x, (y + 1).min(size - 1)) - at(x, y.saturating_sub(1));
            let magnitude = (gx * gx + gy * gy).sqrt();
            if magnitude == 0.0 {
                continue;
            }
            let mut angle = gy.atan2(gx).to_degrees();
            if angle < 0.0 {
                angle += 180.0;
            }
            let pos = angle / 180.0 * bins as f32 - 0.5;
            let lower = pos.floor();
            let frac = pos - lower;
            let b0 = (lower as i64).rem_euclid(bins as i64) as usize;
            let b1 = (b0 + 1) % bins;
            let cell = (y / params.cell) * cells + x / params.cell;
            hist[cell * bins + b0] += magnitude * (1.0 - frac);
            hist[cell * bins + b1] += magnitude * frac;
        }
    }
    let mut out = Vec::with_capacity(params.len(size));
    if cells < 2 {
        return out;
    }
    for by in 0..cells - 1 {
        for bx in 0..cells - 1 {
            let mut block = Vec::with_capacity(4 * bins);
            for (dy, dx) in [(0, 0), (0, 1), (1, 0), (1, 1)] {
                let cell = (by + dy) * cells + bx + dx;
                block.extend_from_slice(&hist[cell * bins..(cell + 1) * bins]);
            }
            for pass in 0..2 {
                let norm = (block.iter().map(|v| v * v).sum::<f32>() + 1e-6).sqrt();
                for v in &mut block {
                    *v /= norm;
                    if pass == 0 {
                        *v = v.min(0.2);
                    }
                }
            }
            out.extend(block);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_vertical_edge_fills_the_horizontal_gradient_bin() {
        let size = 16;
        let mut pixels = vec![0.0; 3 * size * size];
        for c in 0..3 {
            for y in 0..size {
                for x in size / 2..size {
                    pixels[c * size * size + y * size + x] = 1.0;
                }
            }
        }
        let params = HogParams::default();
        let f = hog(&pixels, size, params);
        assert_eq!(f.len(), params.len(size));
        // One block; the edge lies in the left cells' last column: gradient angle 0°, which the
        // interpolation splits between bins 0 and 8 (centres at 10° and 170°).
        let left_top = &f[0..9];
        assert!(
            left_top[0] > 0.3 && (left_top[0] - left_top[8]).abs() < 1e-6,
            "{left_top:?}"
        );
        assert!(left_top[1..8].iter().all(|v| *v == 0.0));
    }
}
