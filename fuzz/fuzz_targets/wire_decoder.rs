//! Arbitrary serial bytes into the streaming decoder and the one-frame decoder: no panic, and
//! every decoded report re-encodes to a frame that decodes to itself.
#![no_main]

use affect_shared::wire::{FrameDecoder, decode_frame, encode_frame_vec};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = decode_frame(data);
    let mut decoder = FrameDecoder::new();
    for &byte in data {
        if let Some(Ok(report)) = decoder.push(byte) {
            let frame = encode_frame_vec(&report).expect("decoded reports are encodable");
            assert_eq!(decode_frame(&frame[..frame.len() - 1]), Ok(report));
        }
    }
});
