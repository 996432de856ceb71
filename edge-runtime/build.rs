//! Checks the models compiled into the binary (`src/models.rs`) against `models/SHA256SUMS*`
//! before they are embedded: a model file changed without its checksum (or a checkout that
//! mangled it, e.g. a Git LFS pointer) fails the build, naming the file.
//!
//! Also sets `AFFECT_BUILD_EPOCH` (Unix seconds) for `affect-edge doctor`'s clock check: the
//! reproducible-builds `SOURCE_DATE_EPOCH` when set (Debian's packaging sets it from the
//! changelog), else the time this script ran. The clock check only needs a lower bound of
//! today's date, and both are one.

use std::path::Path;

use sha2::{Digest, Sha256};

/// The embedded models; keep in step with `BUNDLED` in `src/models.rs`.
const EMBEDDED: [&str; 4] = [
    "blazeface.onnx",
    "face-landmarks-68.onnx",
    "expression-va.onnx",
    "affect-synth.onnx",
];
const SUMS: [&str; 2] = ["SHA256SUMS", "SHA256SUMS.affect-synth"];

fn main() {
    println!("cargo::rerun-if-env-changed=SOURCE_DATE_EPOCH");
    let epoch = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs())
        });
    println!("cargo::rustc-env=AFFECT_BUILD_EPOCH={epoch}");
    let models = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models");
    let mut expected = Vec::new();
    for sums in SUMS {
        let path = models.join(sums);
        println!("cargo::rerun-if-changed={}", path.display());
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        for (n, line) in text.lines().enumerate() {
            let Some((sum, name)) = line.split_once("  ") else {
                panic!("{}:{}: expected `SHA256  NAME`", path.display(), n + 1);
            };
            expected.push((name.trim().to_owned(), sum.trim().to_owned()));
        }
    }
    for name in EMBEDDED {
        let path = models.join(name);
        println!("cargo::rerun-if-changed={}", path.display());
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let actual: String = Sha256::digest(&bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let Some((_, want)) = expected.iter().find(|(n, _)| n == name) else {
            panic!("{}: no checksum in models/SHA256SUMS*", path.display());
        };
        assert!(
            *want == actual,
            "{}: SHA-256 {actual} differs from models/SHA256SUMS* ({want}); rebuild the model \
             with its script or update the checksum",
            path.display()
        );
    }
}
