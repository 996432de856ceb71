//! Arbitrary serial bytes into the one-frame decoder and the streaming decoder: no panic, and
//! anything the decoder accepts re-encodes to exactly the same bytes and decodes to the same
//! value (so the decoder accepts nothing the encoder cannot write).
#![no_main]

use affect_shared::wire::{FrameDecoder, decode_frame, encode_frame_vec};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(report) = decode_frame(data) {
        let frame = encode_frame_vec(&report).expect("decoded reports are encodable");
        assert_eq!(&frame[..frame.len() - 1], data, "{report:?} re-encodes differently");
        assert_eq!(decode_frame(&frame[..frame.len() - 1]), Ok(report));
    }
    let mut decoder = FrameDecoder::new();
    let mut since_delimiter = Vec::new();
    for &byte in data {
        if byte != 0 {
            since_delimiter.push(byte);
        }
        if let Some(Ok(report)) = decoder.push(byte) {
            let frame = encode_frame_vec(&report).expect("decoded reports are encodable");
            assert_eq!(&frame[..frame.len() - 1], &since_delimiter[..]);
            assert_eq!(decode_frame(&frame[..frame.len() - 1]), Ok(report));
        }
        if byte == 0 {
            since_delimiter.clear();
        }
    }
});
