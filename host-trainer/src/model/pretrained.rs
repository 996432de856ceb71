//! Pretrained initialisation from torchvision VGG-16 / ResNet-50 state dicts and from VGG-Face
//! checkpoints, by name mapping.
//!
//! Accepted files: `.safetensors`, or a PyTorch `torch.save(state_dict)` zip (`.pt`, `.pth`,
//! `.bin`). A leading `module.` (DataParallel) is stripped. Name mapping:
//! - torchvision: backbone names are ours already; `classifier.0` → `head.fc1`,
//!   `classifier.3` → `head.fc2` (VGG CNN heads); `fc.*`, `classifier.6.*` and
//!   `num_batches_tracked` are ignored;
//! - VGG-Face (e.g. the `vgg_face_dag` port): `conv{b}_{k}` → the matching `features.{i}`,
//!   `fc6`/`fc7`/`fc8` → `head.fc1`/`fc2`/`fc3`.
//!
//! Every backbone parameter must be present with the exact shape (a width-scaled network
//! cannot take full-size weights). Head weights are taken when the shapes agree, or when ours only
//! has extra input columns for the landmarks (the pretrained columns fill the first ones, the
//! landmark columns keep their random initialisation); otherwise they are skipped and reported.

use std::collections::HashMap;
use std::path::Path;

use tch::{Device, Kind, Tensor};

use super::backbone::vgg16_conv_indices;
use super::{Model, ModelError, NetworkConfig, Outputs};

/// What [`load_backbone`] did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LoadReport {
    /// Our parameters filled from the file.
    pub loaded: Vec<String>,
    /// Head parameters filled only in their first input columns.
    pub partial: Vec<String>,
    /// Names in the file that were not used.
    pub ignored: Vec<String>,
}

/// True for parameters of the convolutional part (`features.*`, `conv1.*`, `bn1.*`, `layer*`).
pub fn is_backbone_parameter(config: &NetworkConfig, name: &str) -> bool {
    let name = match config.outputs {
        Outputs::Joint => name,
        Outputs::PerDimension => name
            .strip_prefix("valence.")
            .or_else(|| name.strip_prefix("arousal."))
            .unwrap_or(name),
    };
    name.starts_with("features.")
        || name.starts_with("conv1.")
        || name.starts_with("bn1.")
        || name.starts_with("layer")
}

/// Reads a state dict from `.safetensors` or a PyTorch zip file, as `f32` on the CPU.
pub fn read_state_dict(path: &Path) -> Result<HashMap<String, Tensor>, ModelError> {
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    let named = match ext {
        "safetensors" => Tensor::read_safetensors(path)?,
        "pt" | "pth" | "bin" => Tensor::loadz_multi_with_device(path, Device::Cpu)?,
        _ => {
            return Err(ModelError::Pretrained {
                path: path.to_owned(),
                message: "expected a .safetensors, .pt, .pth or .bin file".into(),
            });
        }
    };
    Ok(named
        .into_iter()
        .map(|(name, t)| {
            let name = name.strip_prefix("module.").unwrap_or(&name).to_owned();
            (name, t.to_kind(Kind::Float))
        })
        .collect())
}

/// Our (single-network) name for a name in a pretrained file, `None` when it is not used.
fn map_name(source: &str) -> Option<String> {
    if source.ends_with("num_batches_tracked") {
        return None;
    }
    let (layer, param) = source.rsplit_once('.')?;
    let head = |k: u32| Some(format!("head.fc{k}.{param}"));
    match layer {
        "classifier.0" | "fc6" => return head(1),
        "classifier.3" | "fc7" => return head(2),
        "fc8" => return head(3),
        _ => {}
    }
    if let Some(rest) = layer.strip_prefix("conv")
        && let Some((block, k)) = rest.split_once('_')
    {
        let (block, k): (usize, usize) = (block.parse().ok()?, k.parse().ok()?);
        let per_block = [2, 2, 3, 3, 3];
        if !(1..=5).contains(&block) || k == 0 || k > per_block[block - 1] {
            return None;
        }
        let n: usize = per_block[..block - 1].iter().sum::<usize>() + k - 1;
        return Some(format!("features.{}.{param}", vgg16_conv_indices()[n]));
    }
    let ours = layer.starts_with("features.")
        || layer == "conv1"
        || layer == "bn1"
        || layer.starts_with("layer");
    ours.then(|| source.to_owned())
}

/// Loads the backbone (and compatible head layers) of every network of `model` from `path`.
pub fn load_backbone(model: &mut Model, path: &Path) -> Result<LoadReport, ModelError> {
    let source = read_state_dict(path)?;
    let err = |message: String| ModelError::Pretrained {
        path: path.to_owned(),
        message,
    };
    let mapped: HashMap<String, &str> = source
        .keys()
        .filter_map(|k| map_name(k).map(|ours| (ours, k.as_str())))
        .collect();
    let prefixes: &[&str] = match model.config.outputs {
        Outputs::Joint => &[""],
        Outputs::PerDimension => &["valence.", "arousal."],
    };
    let variables = model.vs.variables();
    let mut report = LoadReport::default();
    let mut used = std::collections::HashSet::new();
    let mut names: Vec<&String> = variables.keys().collect();
    names.sort();
    for name in names {
        let mut ours = variables[name].shallow_clone();
        let short = prefixes
            .iter()
            .find_map(|p| name.strip_prefix(p))
            .unwrap_or(name);
        let backbone = is_backbone_parameter(&model.config, name);
        let Some(src_name) = mapped.get(short) else {
            if backbone {
                return Err(err(format!("no weights for backbone parameter `{short}`")));
            }
            continue;
        };
        let src = &source[*src_name];
        let (want, have) = (ours.size(), src.size());
        tch::no_grad(|| -> Result<(), ModelError> {
            if want == have {
                ours.copy_(&src.to_device(ours.device()));
                report.loaded.push(name.clone());
            } else if backbone {
                return Err(err(format!(
                    "`{src_name}` has shape {have:?}, the network's `{short}` needs {want:?} \
                     (check `network.width` and `network.backbone`)"
                )));
            } else if want.len() == 2 && have.len() == 2 && want[0] == have[0] && want[1] > have[1]
            {
                ours.narrow(1, 0, have[1])
                    .copy_(&src.to_device(ours.device()));
                report.partial.push(name.clone());
            } else {
                return Ok(());
            }
            used.insert(*src_name);
            Ok(())
        })?;
    }
    if report.loaded.is_empty() {
        return Err(err("no parameter matched this network".into()));
    }
    report.ignored = source
        .keys()
        .filter(|k| !used.contains(k.as_str()))
        .cloned()
        .collect();
    report.ignored.sort();
    tracing::info!(
        loaded = report.loaded.len(),
        partial = report.partial.len(),
        ignored = report.ignored.len(),
        "pretrained weights from {}",
        path.display()
    );
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::map_name;

    #[test]
    fn vgg_face_and_torchvision_names_map_to_ours() {
        assert_eq!(map_name("conv1_1.weight").unwrap(), "features.0.weight");
        assert_eq!(map_name("conv3_3.bias").unwrap(), "features.14.bias");
        assert_eq!(map_name("conv5_3.weight").unwrap(), "features.28.weight");
        assert_eq!(map_name("fc7.weight").unwrap(), "head.fc2.weight");
        assert_eq!(map_name("classifier.0.bias").unwrap(), "head.fc1.bias");
        assert_eq!(
            map_name("layer2.0.downsample.1.running_var").unwrap(),
            "layer2.0.downsample.1.running_var"
        );
        assert_eq!(map_name("bn1.num_batches_tracked"), None);
        assert_eq!(map_name("fc.weight"), None);
        assert_eq!(map_name("conv6_1.weight"), None);
    }
}
