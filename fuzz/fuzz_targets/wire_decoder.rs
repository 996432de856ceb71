//! Arbitrary serial bytes into the one-frame decoder and the streaming decoder: no panic, and
//! anything the decoder accepts decodes to a report that re-encodes to bytes decoding to the same
//! value. A version-2 frame re-encodes to exactly the same bytes (so the decoder accepts nothing
//! the encoder cannot write); a version-1 frame, which the encoder no longer writes, comes back as
//! version 2 with the latency unknown, two bytes longer.
#![no_main]

use affect_shared::wire::{FrameDecoder, Report, decode_frame, encode_frame_vec};
use libfuzzer_sys::fuzz_target;

/// Checks the re-encoding of `report`, decoded from the COBS bytes `input` (no delimiter).
fn check(report: Report, input: &[u8]) {
    let frame = encode_frame_vec(&report).expect("decoded reports are encodable");
    let encoded = &frame[..frame.len() - 1];
    if encoded != input {
        assert_eq!(report.latency_ms, None, "{report:?} re-encodes differently");
        assert_eq!(encoded.len(), input.len() + 2, "{report:?}: not a version-1 frame");
    }
    assert_eq!(decode_frame(encoded), Ok(report));
}

fuzz_target!(|data: &[u8]| {
    if let Ok(report) = decode_frame(data) {
        check(report, data);
    }
    let mut decoder = FrameDecoder::new();
    let mut since_delimiter = Vec::new();
    for &byte in data {
        if byte != 0 {
            since_delimiter.push(byte);
        }
        if let Some(Ok(report)) = decoder.push(byte) {
            check(report, &since_delimiter);
        }
        if byte == 0 {
            since_delimiter.clear();
        }
    }
});
