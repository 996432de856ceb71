//! Pure decoders of the two pixel formats every UVC webcam offers: packed YUYV 4:2:2 and
//! Motion-JPEG. No device needed; the camera feeds them the driver's buffers.

use image::RgbImage;

/// Why a raw camera buffer could not be turned into a picture.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The buffer is shorter than the format and size say.
    #[error("buffer holds {got} bytes, {width}x{height} needs {needed}")]
    Truncated {
        /// Bytes the frame needs.
        needed: usize,
        /// Bytes in the buffer.
        got: usize,
        /// Frame width.
        width: u32,
        /// Frame height.
        height: u32,
    },
    /// The geometry cannot be YUYV (odd width, zero size, or rows shorter than the pixels).
    #[error("invalid YUYV geometry: {0}")]
    Geometry(String),
    /// The JPEG decoder refused the data.
    #[error("JPEG: {0}")]
    Jpeg(#[from] image::ImageError),
}

/// How the luma/chroma codes map onto 0–255.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum YuvRange {
    /// "Studio" range: Y in 16–235, Cb/Cr in 16–240 (what V4L2 calls `LIM_RANGE`, the webcam
    /// default for YUYV).
    #[default]
    Limited,
    /// Y, Cb and Cr in 0–255 (`FULL_RANGE`, JPEG's convention).
    Full,
}

/// BT.601 luma weights.
const KR: f32 = 0.299;
const KB: f32 = 0.114;
const KG: f32 = 1.0 - KR - KB;

/// Per-range scale factors: (luma offset, luma gain, chroma gain).
fn range_scales(range: YuvRange) -> (f32, f32, f32) {
    match range {
        YuvRange::Limited => (16.0, 255.0 / 219.0, 255.0 / 224.0),
        YuvRange::Full => (0.0, 1.0, 1.0),
    }
}

/// One pixel, BT.601: `R = Y' + 2(1−Kr)·Cr`, `B = Y' + 2(1−Kb)·Cb`,
/// `G = Y' − 2(1−Kb)Kb/Kg·Cb − 2(1−Kr)Kr/Kg·Cr`, with `Y'`, `Cb`, `Cr` rescaled to 0–255 and
/// centred chroma; rounded to nearest and clamped to 0–255.
#[inline]
fn ycbcr_to_rgb(y: u8, cb: u8, cr: u8, scales: (f32, f32, f32)) -> [u8; 3] {
    let (offset, luma_gain, chroma_gain) = scales;
    let y = (f32::from(y) - offset) * luma_gain;
    let cb = (f32::from(cb) - 128.0) * chroma_gain;
    let cr = (f32::from(cr) - 128.0) * chroma_gain;
    let r = y + 2.0 * (1.0 - KR) * cr;
    let b = y + 2.0 * (1.0 - KB) * cb;
    let g = y - 2.0 * (1.0 - KB) * KB / KG * cb - 2.0 * (1.0 - KR) * KR / KG * cr;
    [r, g, b].map(|v| v.round().clamp(0.0, 255.0) as u8)
}

/// Converts packed YUYV 4:2:2 (`Y0 Cb Y1 Cr` per pixel pair, V4L2 `YUYV`) to RGB with the
/// BT.601 matrix. `stride` is the driver's bytes per line (≥ `2 × width`; 0 means `2 × width`).
pub fn yuyv_to_rgb(
    data: &[u8],
    width: u32,
    height: u32,
    stride: usize,
    range: YuvRange,
) -> Result<RgbImage, DecodeError> {
    if width == 0 || height == 0 || !width.is_multiple_of(2) {
        return Err(DecodeError::Geometry(format!(
            "{width}x{height} (width must be even and both non-zero)"
        )));
    }
    let row_bytes = width as usize * 2;
    let stride = if stride == 0 { row_bytes } else { stride };
    if stride < row_bytes {
        return Err(DecodeError::Geometry(format!(
            "stride {stride} shorter than a {width}-pixel row ({row_bytes} bytes)"
        )));
    }
    let needed = stride * (height as usize - 1) + row_bytes;
    if data.len() < needed {
        return Err(DecodeError::Truncated {
            needed,
            got: data.len(),
            width,
            height,
        });
    }
    let scales = range_scales(range);
    let mut out = Vec::with_capacity(width as usize * height as usize * 3);
    for row in 0..height as usize {
        let line = &data[row * stride..row * stride + row_bytes];
        for pair in line.chunks_exact(4) {
            let (y0, cb, y1, cr) = (pair[0], pair[1], pair[2], pair[3]);
            out.extend_from_slice(&ycbcr_to_rgb(y0, cb, cr, scales));
            out.extend_from_slice(&ycbcr_to_rgb(y1, cb, cr, scales));
        }
    }
    RgbImage::from_raw(width, height, out)
        .ok_or_else(|| DecodeError::Geometry("pixel count mismatch".into()))
}

/// JPEG markers used below.
const SOI: [u8; 2] = [0xFF, 0xD8];
const DHT: u8 = 0xC4;
const SOS: u8 = 0xDA;
/// The APP0 "AVI1" segment that marks a Motion-JPEG frame: it tells the decoder to use the
/// standard Huffman tables of JPEG Annex K.3 when the frame carries none.
const APP0_AVI1: [u8; 9] = [0xFF, 0xE0, 0x00, 0x07, b'A', b'V', b'I', b'1', 0x00];

/// Whether a DHT segment appears before the first SOS (walking the marker segments).
fn has_huffman_tables(data: &[u8]) -> bool {
    let mut at = 2;
    while at + 4 <= data.len() {
        if data[at] != 0xFF {
            return false; // not at a marker: malformed, let the decoder report it
        }
        let marker = data[at + 1];
        if marker == 0xFF {
            at += 1; // fill byte
            continue;
        }
        if marker == DHT {
            return true;
        }
        if marker == SOS {
            return false;
        }
        let length = usize::from(u16::from_be_bytes([data[at + 2], data[at + 3]]));
        at += 2 + length;
    }
    false
}

/// Decodes one Motion-JPEG frame to RGB. Many webcams strip the Huffman tables from every frame
/// (they are the fixed ones of JPEG Annex K.3); such frames are decoded with those tables.
pub fn mjpeg_to_rgb(data: &[u8]) -> Result<RgbImage, DecodeError> {
    let decode = |bytes: &[u8]| {
        image::load_from_memory_with_format(bytes, image::ImageFormat::Jpeg).map(|i| i.to_rgb8())
    };
    if data.starts_with(&SOI) && !has_huffman_tables(data) {
        let mut patched = Vec::with_capacity(data.len() + APP0_AVI1.len());
        patched.extend_from_slice(&SOI);
        patched.extend_from_slice(&APP0_AVI1);
        patched.extend_from_slice(&data[2..]);
        return Ok(decode(&patched)?);
    }
    Ok(decode(data)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// BT.601 in f64 straight from the standard's coefficients (independent of the f32 code).
    fn reference(y: u8, cb: u8, cr: u8, limited: bool) -> [u8; 3] {
        let (yo, yg, cg) = if limited {
            (16.0, 255.0 / 219.0, 255.0 / 224.0)
        } else {
            (0.0, 1.0, 1.0)
        };
        let y = (f64::from(y) - yo) * yg;
        let pb = (f64::from(cb) - 128.0) * cg;
        let pr = (f64::from(cr) - 128.0) * cg;
        let r = y + 1.402 * pr;
        let g = y - 0.344_136_286 * pb - 0.714_136_286 * pr;
        let b = y + 1.772 * pb;
        [r, g, b].map(|v| v.round().clamp(0.0, 255.0) as u8)
    }

    #[test]
    fn yuyv_pixels_match_bt601_exactly() {
        // Two rows of 4 pixels, each pixel pair with its own chroma; a stride with 4 padding
        // bytes per row, as drivers produce.
        let samples: [[u8; 4]; 4] = [
            [16, 128, 235, 128], // black, white
            [81, 90, 145, 240],  // red-ish chroma, two lumas
            [41, 240, 170, 110], // blue chroma
            [100, 60, 200, 200], // arbitrary
        ];
        let mut data = Vec::new();
        for row in samples.chunks(2) {
            for pair in row {
                data.extend_from_slice(pair);
            }
            data.extend_from_slice(&[0xEE; 4]);
        }
        for (range, limited) in [(YuvRange::Limited, true), (YuvRange::Full, false)] {
            let image = yuyv_to_rgb(&data, 4, 2, 12, range).unwrap();
            for (i, [y0, cb, y1, cr]) in samples.iter().copied().enumerate() {
                let (x, row) = ((i % 2) as u32 * 2, (i / 2) as u32);
                assert_eq!(image.get_pixel(x, row).0, reference(y0, cb, cr, limited));
                assert_eq!(
                    image.get_pixel(x + 1, row).0,
                    reference(y1, cb, cr, limited)
                );
            }
        }
        let studio = yuyv_to_rgb(&data, 4, 2, 12, YuvRange::Limited).unwrap();
        assert_eq!(studio.get_pixel(0, 0).0, [0, 0, 0]);
        assert_eq!(studio.get_pixel(1, 0).0, [255, 255, 255]);
    }

    #[test]
    fn yuyv_colour_bars_decode_to_the_primaries() {
        // 100 % colour bars in 8-bit BT.601 studio range (ITU-R BT.801): Y, Cb, Cr.
        let bars: [([u8; 3], [u8; 3]); 8] = [
            ([235, 128, 128], [255, 255, 255]),
            ([210, 16, 146], [255, 255, 0]),
            ([170, 166, 16], [0, 255, 255]),
            ([145, 54, 34], [0, 255, 0]),
            ([106, 202, 222], [255, 0, 255]),
            ([81, 90, 240], [255, 0, 0]),
            ([41, 240, 110], [0, 0, 255]),
            ([16, 128, 128], [0, 0, 0]),
        ];
        let data: Vec<u8> = bars
            .iter()
            .flat_map(|([y, cb, cr], _)| [*y, *cb, *y, *cr])
            .collect();
        let image = yuyv_to_rgb(&data, 16, 1, 0, YuvRange::Limited).unwrap();
        for (i, (_, rgb)) in bars.iter().enumerate() {
            let got = image.get_pixel(2 * i as u32, 0).0;
            for c in 0..3 {
                assert!(
                    got[c].abs_diff(rgb[c]) <= 2,
                    "bar {i}: got {got:?}, want {rgb:?}"
                );
            }
        }
    }

    #[test]
    fn yuyv_rejects_short_buffers_and_bad_geometry() {
        let err = yuyv_to_rgb(&[0; 10], 4, 2, 0, YuvRange::Limited).unwrap_err();
        assert!(
            matches!(
                err,
                DecodeError::Truncated {
                    needed: 16,
                    got: 10,
                    ..
                }
            ),
            "{err}"
        );
        assert!(yuyv_to_rgb(&[0; 64], 3, 2, 0, YuvRange::Limited).is_err());
        assert!(yuyv_to_rgb(&[0; 64], 4, 2, 6, YuvRange::Limited).is_err());
    }

    /// A 32×32 JPEG of four flat 16×16 colour blocks (one MCU each, even with chroma
    /// subsampling), quality 100 (quantiser 1: the DC term is exact).
    fn flat_blocks_jpeg() -> (Vec<u8>, [[u8; 3]; 4]) {
        let colours = [[200, 40, 40], [30, 160, 60], [20, 40, 220], [128, 128, 128]];
        let image = RgbImage::from_fn(32, 32, |x, y| {
            image::Rgb(colours[(y / 16 * 2 + x / 16) as usize])
        });
        let mut bytes = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, 100)
            .encode_image(&image)
            .unwrap();
        (bytes, colours)
    }

    /// Removes every DHT segment, as MJPEG cameras do.
    fn strip_huffman_tables(jpeg: &[u8]) -> Vec<u8> {
        let mut out = jpeg[..2].to_vec();
        let mut at = 2;
        loop {
            let marker = jpeg[at + 1];
            if marker == SOS {
                out.extend_from_slice(&jpeg[at..]);
                return out;
            }
            let length = usize::from(u16::from_be_bytes([jpeg[at + 2], jpeg[at + 3]]));
            if marker != DHT {
                out.extend_from_slice(&jpeg[at..at + 2 + length]);
            }
            at += 2 + length;
        }
    }

    #[test]
    fn mjpeg_flat_blocks_decode_to_their_colours() {
        let (jpeg, colours) = flat_blocks_jpeg();
        let image = mjpeg_to_rgb(&jpeg).unwrap();
        assert_eq!(image.dimensions(), (32, 32));
        for (i, colour) in colours.iter().enumerate() {
            let (bx, by) = ((i % 2) as u32 * 16, (i / 2) as u32 * 16);
            // Away from block edges, where chroma upsampling would blend neighbours.
            for (x, y) in [(bx + 4, by + 4), (bx + 11, by + 11), (bx + 8, by + 5)] {
                let got = image.get_pixel(x, y).0;
                for c in 0..3 {
                    // A flat block keeps only its DC term: the YCbCr round trip (JFIF full-range
                    // BT.601) and DC quantisation move a channel by at most 2 levels.
                    assert!(
                        got[c].abs_diff(colour[c]) <= 2,
                        "block {i}: {got:?} vs {colour:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn mjpeg_without_huffman_tables_decodes_like_the_full_jpeg() {
        let (jpeg, _) = flat_blocks_jpeg();
        let stripped = strip_huffman_tables(&jpeg);
        assert!(has_huffman_tables(&jpeg));
        assert!(!has_huffman_tables(&stripped));
        assert!(stripped.len() < jpeg.len());
        assert_eq!(
            mjpeg_to_rgb(&stripped).unwrap(),
            mjpeg_to_rgb(&jpeg).unwrap()
        );
    }

    #[test]
    fn mjpeg_garbage_is_an_error_not_a_panic() {
        assert!(mjpeg_to_rgb(&[0xFF, 0xD8, 0xFF, 0xDB, 0x00]).is_err());
        assert!(mjpeg_to_rgb(b"not a jpeg").is_err());
        let (jpeg, _) = flat_blocks_jpeg();
        assert!(mjpeg_to_rgb(&jpeg[..jpeg.len() / 3]).is_err());
    }
}
