//! Arbitrary text as a `valence,arousal` file: parsed or rejected with an error, never a panic;
//! everything accepted is finite.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(rows) =
            affect_shared::score::parse_va_csv(text, std::path::Path::new("fuzz.csv"))
    {
        assert!(rows.iter().flatten().all(|v| v.is_finite()));
    }
});
