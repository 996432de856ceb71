//! The wire format against its written spec (`docs/wire-format.md`) and an independent Python
//! implementation (`tests/oracles/wire_oracle.py`).

use affect_shared::wire::{
    FrameDecoder, LATENCY_MAX_MS, MAX_FRAME_LEN, Report, StatusFlags, V1_PAYLOAD_LEN, WireError,
    decode_frame, encode_frame, encode_frame_vec,
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

/// The text of docs/wire-format.md, whose examples the tests check byte for byte.
fn spec() -> String {
    std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../docs/wire-format.md"
    ))
    .expect("docs/wire-format.md")
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
        latency_ms: Some(35),
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
        latency_ms: Some(0),
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
        latency_ms: Some(100_000),
    };
    let three_decoded = Report {
        bbox: [1920.0, 2.0, 640.0, 480.0],
        latency_ms: Some(u32::from(LATENCY_MAX_MS)),
        ..three
    };
    vec![
        (
            one,
            one,
            "08027b68e5cf8b0101022a0101020106c40978ec78025002600260059426012303d68900",
        ),
        (
            zero,
            zero,
            "020201010101010101010101010101010101010101010101010101010101010103c04300",
        ),
        (
            three,
            three_decoded,
            "020206e897b69a0101010102010a0102f0d810278007020c8002e00110270afefffdcf00",
        ),
    ]
}

#[test]
fn spec_examples_encode_and_decode_byte_exactly() {
    let spec = spec();
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

/// A report with the given fixed-point valence, arousal, score and latency (the boundary
/// examples of docs/wire-format.md).
fn boundary_report(valence: f32, arousal: f32, score: f32, latency_ms: Option<u32>) -> Report {
    Report {
        timestamp_ms: 7,
        frame: 3,
        track: 2,
        valence,
        arousal,
        bbox: [10.0, 20.0, 30.0, 40.0],
        score,
        flags: StatusFlags(0),
        latency_ms,
    }
}

#[test]
fn boundary_values_encode_and_decode_byte_exactly() {
    let spec = spec();
    for (report, frame_hex) in [
        (
            boundary_report(1.0, -1.0, 1.0, Some(u32::from(LATENCY_MAX_MS))),
            "030207010101010101020301010202061027f0d80a0214021e022803102705feff1f0200",
        ),
        (
            boundary_report(-1.0, 1.0, 0.0, None),
            "03020701010101010102030101020206f0d810270a0214021e022801010105ffffdf2000",
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
        "03020701010101010102030101020203112701020a0214021e0228010101020c034fe700",
    ),
    (
        "valence",
        -32_768,
        "03020701010101010102030101020201028001020a0214021e0228010101020c0356cf00",
    ),
    (
        "arousal",
        -10_001,
        "030207010101010101020301010202010104efd80a0214021e0228010101020c03a72a00",
    ),
    (
        "score",
        10_001,
        "03020701010101010102030101020201010101020a0214021e0228031127020c034f0f00",
    ),
    (
        "score",
        65_535,
        "03020701010101010102030101020201010101020a0214021e022803ffff020c032bd600",
    ),
];

#[test]
fn decoder_rejects_values_the_encoder_cannot_produce() {
    let spec = spec();
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

/// Example 1 of docs/wire-format.md as version 1 wrote it (no latency).
const V1_EXAMPLE: &str = "08017b68e5cf8b0101022a0101020106c40978ec780250026002600694260197bb00";

#[test]
fn version_1_frames_still_decode_with_the_latency_unknown() {
    assert!(spec().contains(V1_EXAMPLE), "example {V1_EXAMPLE} missing");
    let (one, _, _) = spec_examples()[0];
    let v1 = Report {
        latency_ms: None,
        ..one
    };
    let bytes = unhex(V1_EXAMPLE);
    assert_eq!(
        bytes.len(),
        V1_PAYLOAD_LEN + 2 + 2,
        "COBS code byte, payload, CRC, 0x00"
    );
    assert_eq!(decode_frame(&bytes[..bytes.len() - 1]), Ok(v1));
    // The streaming decoder takes both versions on one line (an old queue drained, then new
    // reports), and a relayed version-1 report goes out as version 2 with the latency unknown.
    let v2 = encode_frame_vec(&one).unwrap();
    let unknown = encode_frame_vec(&v1).unwrap();
    let mut stream = bytes.clone();
    stream.extend_from_slice(&v2);
    stream.extend_from_slice(&unknown);
    let mut decoder = FrameDecoder::new();
    let out: Vec<_> = stream.iter().filter_map(|&b| decoder.push(b)).collect();
    assert_eq!(out, [Ok(v1), Ok(one), Ok(v1)]);
    assert_eq!(unknown.len(), v2.len());
}

#[test]
fn frames_whose_version_and_length_disagree_are_rejected() {
    let spec = spec();
    for (frame_hex, expected) in [
        (
            "03020701010101010102030101020201010101020a0214021e022801010103324700",
            WireError::VersionLength {
                version: 2,
                expected: 32,
                len: 30,
            },
        ),
        (
            "03010701010101010102030101020201010101020a0214021e0228010101020c03ed2c00",
            WireError::VersionLength {
                version: 1,
                expected: 30,
                len: 32,
            },
        ),
        (
            "03030701010101010102030101020201010101020a0214021e0228010101020c03619e00",
            WireError::Version(3),
        ),
    ] {
        assert!(
            spec.contains(frame_hex),
            "example {frame_hex} missing from the spec"
        );
        let bytes = unhex(frame_hex);
        let result = decode_frame(&bytes[..bytes.len() - 1]);
        assert_eq!(result, Err(expected), "{frame_hex}");
        let message = result.unwrap_err().to_string();
        assert!(message.contains("version"), "{message}");
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
        prop_oneof![
            Just(None),
            (0u32..70_000).prop_map(Some),
            any::<u32>().prop_map(Some),
        ],
    )
        .prop_map(
            |(timestamp_ms, frame, track, valence, arousal, bbox, score, flags, latency_ms)| {
                Report {
                    timestamp_ms,
                    frame,
                    track,
                    valence,
                    arousal,
                    bbox,
                    score,
                    flags: StatusFlags(flags),
                    latency_ms,
                }
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
        // Latency saturates at LATENCY_MAX_MS; unknown stays unknown.
        prop_assert_eq!(
            back.latency_ms,
            report.latency_ms.map(|ms| ms.min(u32::from(LATENCY_MAX_MS)))
        );
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
                 \"bbox\":[{:?},{:?},{:?},{:?}],\"score\":{:?},\"flags\":{},\"latency_ms\":{}}}\n",
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
                r.flags.0,
                r.latency_ms
                    .map_or_else(|| "null".to_owned(), |ms| ms.to_string())
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
        assert_eq!(
            theirs["latency_ms"].as_u64(),
            ours.latency_ms.map(u64::from)
        );
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
    // Python reads version 1 too, with the latency unknown.
    let v1: serde_json::Value =
        serde_json::from_str(&run("decode", V1_EXAMPLE.to_owned())[0]).unwrap();
    assert_eq!(v1["frame"], 42);
    assert!(v1["latency_ms"].is_null(), "{v1}");
}
