//! The wire format against its written spec (`docs/wire-format.md`) and an independent Python
//! implementation (`tests/oracles/wire_oracle.py`).

use affect_shared::wire::{
    FrameDecoder, MAX_FRAME_LEN, Report, StatusFlags, WireError, decode_frame, encode_frame,
    encode_frame_vec,
};
use proptest::prelude::*;

mod common;
use proptest::strategy::ValueTree;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// The examples of docs/wire-format.md: (report as sent, report as decoded, frame hex).
fn spec_examples() -> Vec<(Report, Report, &'static str)> {
    let one = Report {
        timestamp_ms: 1_700_000_000_123,
        frame: 42,
        track: 1,
        valence: 0.25,
        arousal: -0.5,
        bbox: [120.0, 80.0, 96.0, 96.0],
        score: 0.9876,
        flags: StatusFlags(StatusFlags::NEW_TRACK),
    };
    let zero = Report {
        timestamp_ms: 0,
        frame: 0,
        track: 0,
        valence: 0.0,
        arousal: 0.0,
        bbox: [0.0; 4],
        score: 0.0,
        flags: StatusFlags(0),
    };
    let three = Report {
        timestamp_ms: 1_764_000_000_000,
        frame: 65_536,
        track: 513,
        valence: -1.0,
        arousal: 1.0,
        bbox: [1919.6, 2.4, 640.0, 480.0],
        score: 1.0,
        flags: StatusFlags(StatusFlags::SMOOTHED | StatusFlags::FACE_LOST),
    };
    let three_decoded = Report {
        bbox: [1920.0, 2.0, 640.0, 480.0],
        ..three
    };
    vec![
        (
            one,
            one,
            "08017b68e5cf8b0101022a0101020106c40978ec780250026002600694260197bb00",
        ),
        (
            zero,
            zero,
            "020101010101010101010101010101010101010101010101010101010101035a2300",
        ),
        (
            three,
            three_decoded,
            "020106e897b69a0101010102010a0102f0d810278007020a8002e00110270ad47800",
        ),
    ]
}

#[test]
fn spec_examples_encode_and_decode_byte_exactly() {
    let spec = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../docs/wire-format.md"
    ))
    .expect("docs/wire-format.md");
    for (sent, decoded, frame_hex) in spec_examples() {
        assert!(
            spec.contains(frame_hex),
            "example {frame_hex} missing from the spec"
        );
        let frame = encode_frame_vec(&sent).unwrap();
        assert_eq!(hex(&frame), frame_hex);
        let bytes = unhex(frame_hex);
        assert_eq!(decode_frame(&bytes[..bytes.len() - 1]).unwrap(), decoded);
    }
}

/// A report with the given fixed-point valence, arousal and score (the boundary examples of
/// docs/wire-format.md).
fn boundary_report(valence: f32, arousal: f32, score: f32) -> Report {
    Report {
        timestamp_ms: 7,
        frame: 3,
        track: 2,
        valence,
        arousal,
        bbox: [10.0, 20.0, 30.0, 40.0],
        score,
        flags: StatusFlags(0),
    }
}

#[test]
fn boundary_values_encode_and_decode_byte_exactly() {
    let spec = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../docs/wire-format.md"
    ))
    .expect("docs/wire-format.md");
    for (report, frame_hex) in [
        (
            boundary_report(1.0, -1.0, 1.0),
            "030107010101010101020301010202061027f0d80a0214021e022803102703f7ac00",
        ),
        (
            boundary_report(-1.0, 1.0, 0.0),
            "03010701010101010102030101020206f0d810270a0214021e02280101010394d000",
        ),
    ] {
        assert!(
            spec.contains(frame_hex),
            "example {frame_hex} missing from the spec"
        );
        assert_eq!(hex(&encode_frame_vec(&report).unwrap()), frame_hex);
        let bytes = unhex(frame_hex);
        assert_eq!(decode_frame(&bytes[..bytes.len() - 1]), Ok(report));
    }
}

/// Frames with a valid CRC whose fixed-point values lie outside what the encoder writes:
/// (field, raw value, frame hex).
const OUT_OF_RANGE_FRAMES: [(&str, i32, &str); 5] = [
    (
        "valence",
        10_001,
        "03010701010101010102030101020203112701020a0214021e022801010103ac5100",
    ),
    (
        "valence",
        -32_768,
        "03010701010101010102030101020201028001020a0214021e0228010101036d0b00",
    ),
    (
        "arousal",
        -10_001,
        "030107010101010101020301010202010104efd80a0214021e022801010103400400",
    ),
    (
        "score",
        10_001,
        "03010701010101010102030101020201010101020a0214021e02280311270331b700",
    ),
    (
        "score",
        65_535,
        "03010701010101010102030101020201010101020a0214021e022803ffff038f9000",
    ),
];

#[test]
fn decoder_rejects_values_the_encoder_cannot_produce() {
    let spec = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../docs/wire-format.md"
    ))
    .expect("docs/wire-format.md");
    for (field, raw, frame_hex) in OUT_OF_RANGE_FRAMES {
        assert!(
            spec.contains(frame_hex),
            "example {frame_hex} missing from the spec"
        );
        let bytes = unhex(frame_hex);
        let result = decode_frame(&bytes[..bytes.len() - 1]);
        assert_eq!(
            result,
            Err(WireError::OutOfRange { field, raw }),
            "{frame_hex}"
        );
        let message = result.unwrap_err().to_string();
        assert!(message.contains(field), "{message}");
    }
}

#[test]
fn crc_is_ccitt_false() {
    assert_eq!(affect_shared::wire::CRC.checksum(b"123456789"), 0x29B1);
}

#[test]
fn decoder_resynchronises_after_garbage_and_reports_errors() {
    let (report, _, _) = spec_examples()[0];
    let frame = encode_frame_vec(&report).unwrap();
    let mut stream = vec![0x13, 0x37, 0xFF, 0x00]; // garbage ending in a delimiter
    stream.extend_from_slice(&frame[..10]); // a truncated frame…
    stream.push(0x00); // …cut short by a delimiter
    stream.extend_from_slice(&[0x00, 0x00]); // empty frames: ignored
    stream.extend_from_slice(&[0x55; 100]); // an overlong run
    stream.push(0x00);
    stream.extend_from_slice(&frame); // a good frame
    let mut corrupted = frame.clone();
    corrupted[2] ^= 0x40; // a data byte inside the first COBS block: only the CRC can notice
    stream.extend_from_slice(&corrupted);

    let mut decoder = FrameDecoder::new();
    let out: Vec<_> = stream.iter().filter_map(|&b| decoder.push(b)).collect();
    assert_eq!(out.len(), 5, "{out:?}");
    assert!(out[0].is_err());
    assert!(matches!(
        out[1],
        Err(WireError::Cobs) | Err(WireError::Length(_))
    ));
    assert_eq!(out[2], Err(WireError::Overflow));
    assert_eq!(out[3], Ok(report));
    assert!(matches!(out[4], Err(WireError::Crc { .. })), "{:?}", out[4]);
}

#[test]
fn encoder_rejects_non_finite_values_and_small_buffers() {
    let (report, _, _) = spec_examples()[0];
    let bad = Report {
        valence: f32::NAN,
        ..report
    };
    assert_eq!(encode_frame_vec(&bad), Err(WireError::NonFinite("valence")));
    let mut small = [0u8; 8];
    assert!(matches!(
        encode_frame(&report, &mut small),
        Err(WireError::BufferTooSmall { .. })
    ));
}

fn arb_report() -> impl Strategy<Value = Report> {
    (
        any::<u64>(),
        any::<u32>(),
        any::<u16>(),
        -1.2f32..1.2,
        -1.2f32..1.2,
        prop::array::uniform4(-10f32..70000.0),
        -0.1f32..1.1,
        any::<u8>(),
    )
        .prop_map(
            |(timestamp_ms, frame, track, valence, arousal, bbox, score, flags)| Report {
                timestamp_ms,
                frame,
                track,
                valence,
                arousal,
                bbox,
                score,
                flags: StatusFlags(flags),
            },
        )
}

proptest! {
    #[test]
    fn roundtrip_within_quantisation(report in arb_report()) {
        let frame = encode_frame_vec(&report).unwrap();
        prop_assert!(frame.len() <= MAX_FRAME_LEN);
        prop_assert_eq!(frame.iter().filter(|&&b| b == 0).count(), 1);
        let back = decode_frame(&frame[..frame.len() - 1]).unwrap();
        prop_assert_eq!(back.timestamp_ms, report.timestamp_ms);
        prop_assert_eq!((back.frame, back.track, back.flags), (report.frame, report.track, report.flags));
        prop_assert!((back.valence - report.valence.clamp(-1.0, 1.0)).abs() <= 0.5e-4 + 1e-6);
        prop_assert!((back.arousal - report.arousal.clamp(-1.0, 1.0)).abs() <= 0.5e-4 + 1e-6);
        prop_assert!((back.score - report.score.clamp(0.0, 1.0)).abs() <= 0.5e-4 + 1e-6);
        for (b, r) in back.bbox.iter().zip(report.bbox) {
            prop_assert!((b - r.clamp(0.0, 65535.0)).abs() <= 0.5);
        }
        // Re-encoding decoded values is lossless.
        let again = encode_frame_vec(&back).unwrap();
        prop_assert_eq!(decode_frame(&again[..again.len() - 1]).unwrap(), back);
    }

    #[test]
    fn decoder_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
        let mut decoder = FrameDecoder::new();
        for b in bytes {
            let _ = decoder.push(b);
        }
    }
}

#[test]
fn independent_python_implementation_agrees_both_ways() {
    let Some(python) = common::oracle_env("AFFECT_PYTHON", "the Python wire oracle") else {
        return;
    };
    let oracle = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/oracles/wire_oracle.py"
    );
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let reports: Vec<Report> = (0..300)
        .map(|_| arb_report().new_tree(&mut runner).unwrap().current())
        .collect();
    let run = |mode: &str, input: String| -> Vec<String> {
        use std::io::Write;
        let mut child = std::process::Command::new(&python)
            .args([oracle, mode])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success());
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect()
    };
    // Python encodes the same reports → identical bytes. `{:?}` prints the shortest string that
    // parses back to the same f32, which the oracle rounds to binary32 as the spec says.
    let json: String = reports
        .iter()
        .map(|r| {
            format!(
                "{{\"timestamp_ms\":{},\"frame\":{},\"track\":{},\"valence\":{:?},\"arousal\":{:?},\
                 \"bbox\":[{:?},{:?},{:?},{:?}],\"score\":{:?},\"flags\":{}}}\n",
                r.timestamp_ms,
                r.frame,
                r.track,
                r.valence,
                r.arousal,
                r.bbox[0],
                r.bbox[1],
                r.bbox[2],
                r.bbox[3],
                r.score,
                r.flags.0
            )
        })
        .collect();
    let python_frames = run("encode", json);
    let rust_frames: Vec<String> = reports
        .iter()
        .map(|r| hex(&encode_frame_vec(r).unwrap()))
        .collect();
    assert_eq!(python_frames, rust_frames);
    // Python decodes Rust's frames → the values Rust decodes.
    let decoded = run("decode", rust_frames.join("\n"));
    assert_eq!(decoded.len(), reports.len());
    for (line, frame) in decoded.iter().zip(&rust_frames) {
        let bytes = unhex(frame);
        let ours = decode_frame(&bytes[..bytes.len() - 1]).unwrap();
        let theirs: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(theirs["timestamp_ms"].as_u64(), Some(ours.timestamp_ms));
        assert_eq!(theirs["frame"].as_u64(), Some(u64::from(ours.frame)));
        assert_eq!(theirs["track"].as_u64(), Some(u64::from(ours.track)));
        assert_eq!(theirs["flags"].as_u64(), Some(u64::from(ours.flags.0)));
        for (key, value) in [
            ("valence", ours.valence),
            ("arousal", ours.arousal),
            ("score", ours.score),
        ] {
            assert!(
                (theirs[key].as_f64().unwrap() - f64::from(value)).abs() < 1e-6,
                "{key}"
            );
        }
        for i in 0..4 {
            assert_eq!(theirs["bbox"][i].as_f64(), Some(f64::from(ours.bbox[i])));
        }
    }
}
