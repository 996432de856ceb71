//! Where models come from: a file, or one of the models compiled into the binary, so the
//! binary alone runs anywhere (checked against `models/SHA256SUMS*` when it is built, see
//! `build.rs`). A models directory in the configuration, `$AFFECT_MODELS` or `--model` override
//! the embedded copies.

use std::borrow::Cow;
use std::path::{Path, PathBuf};

/// A model compiled into the binary.
#[derive(Debug)]
pub struct Embedded {
    /// File name in `models/`.
    pub name: &'static str,
    /// The ONNX bytes.
    pub bytes: &'static [u8],
}

/// Every embedded model (the ones `build.rs` checks).
pub static EMBEDDED: [Embedded; 4] = [
    Embedded {
        name: "blazeface.onnx",
        bytes: include_bytes!("../../models/blazeface.onnx"),
    },
    Embedded {
        name: "face-landmarks-68.onnx",
        bytes: include_bytes!("../../models/face-landmarks-68.onnx"),
    },
    Embedded {
        name: "expression-va.onnx",
        bytes: include_bytes!("../../models/expression-va.onnx"),
    },
    Embedded {
        name: "affect-synth.onnx",
        bytes: include_bytes!("../../models/affect-synth.onnx"),
    },
];

/// An ONNX model to load.
#[derive(Debug, Clone)]
pub enum ModelFile {
    /// A file on disk.
    Path(PathBuf),
    /// A model compiled into the binary.
    Embedded(&'static Embedded),
}

impl ModelFile {
    /// The embedded model called `name`, if there is one.
    pub fn embedded(name: &str) -> Option<Self> {
        EMBEDDED
            .iter()
            .find(|m| m.name == name)
            .map(ModelFile::Embedded)
    }

    /// `name` in `dir` when a directory is given, else the embedded copy (or, for a name
    /// nothing embeds, the path `name` itself, so the error names what was missing).
    pub fn resolve(dir: Option<&Path>, name: &str) -> Self {
        match dir {
            Some(dir) => ModelFile::Path(dir.join(name)),
            None => Self::embedded(name).unwrap_or_else(|| ModelFile::Path(name.into())),
        }
    }

    /// The model's bytes.
    pub fn read(&self) -> std::io::Result<Cow<'static, [u8]>> {
        match self {
            ModelFile::Path(path) => std::fs::read(path).map(Cow::Owned),
            ModelFile::Embedded(m) => Ok(Cow::Borrowed(m.bytes)),
        }
    }

    /// Whether the model can be read (an embedded one always can).
    pub fn exists(&self) -> bool {
        match self {
            ModelFile::Path(path) => path.is_file(),
            ModelFile::Embedded(_) => true,
        }
    }

    /// How messages name it: the path, or `embedded:NAME`.
    pub fn describe(&self) -> String {
        match self {
            ModelFile::Path(path) => path.display().to_string(),
            ModelFile::Embedded(m) => format!("embedded:{}", m.name),
        }
    }
}

impl From<&Path> for ModelFile {
    fn from(path: &Path) -> Self {
        ModelFile::Path(path.to_owned())
    }
}

impl From<&PathBuf> for ModelFile {
    fn from(path: &PathBuf) -> Self {
        ModelFile::Path(path.clone())
    }
}

impl From<PathBuf> for ModelFile {
    fn from(path: PathBuf) -> Self {
        ModelFile::Path(path)
    }
}

impl From<&ModelFile> for ModelFile {
    fn from(model: &ModelFile) -> Self {
        model.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_models_are_the_files_in_models() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models");
        for m in &EMBEDDED {
            assert_eq!(
                std::fs::read(dir.join(m.name)).unwrap(),
                m.bytes,
                "{}",
                m.name
            );
        }
    }

    #[test]
    fn a_directory_overrides_the_embedded_copy() {
        let embedded = ModelFile::resolve(None, "blazeface.onnx");
        assert_eq!(embedded.describe(), "embedded:blazeface.onnx");
        assert!(embedded.exists());
        let on_disk = ModelFile::resolve(Some(Path::new("/opt/m")), "blazeface.onnx");
        assert_eq!(on_disk.describe(), "/opt/m/blazeface.onnx");
        assert!(!on_disk.exists());
        let unknown = ModelFile::resolve(None, "other.onnx");
        assert_eq!(unknown.describe(), "other.onnx");
    }
}
