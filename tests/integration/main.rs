//! Integration tests, one binary (each test binary re-links Burn).
//!
//! Needs the real weights (`weights/fetch.sh`) and the shared data folder `../shared` beside the
//! repository (or `ATTREX_SHARED`). Missing either is a failure, not a skip.

mod backends;
mod bad_images;
mod bad_weights;
mod cluster;
mod engines;
mod hardening;
mod index;
mod int8;
mod parity;
#[cfg(feature = "postgres")]
mod postgres;
mod proptests;
mod recipes;
mod retriever;
mod rng;
mod table1;
mod torchvision;
mod umap;

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use attrex::Backbone;
use attrex::burn::tensor::Device;

/// `../shared` beside the repository, or `$ATTREX_SHARED`.
pub fn shared() -> PathBuf {
    let dir = std::env::var_os("ATTREX_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared"));
    assert!(
        dir.join("fixtures").is_dir(),
        "shared data not found at {} (set ATTREX_SHARED)",
        dir.display()
    );
    dir
}

/// This repository's `tests/fixtures`.
pub fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

pub fn device() -> Device {
    attrex::default_device().expect("the default CPU device is always available")
}

/// The Keras ImageNet ResNet-50, loaded once for the whole binary.
pub fn keras() -> Arc<Backbone> {
    static BACKBONE: OnceLock<Arc<Backbone>> = OnceLock::new();
    BACKBONE
        .get_or_init(|| {
            Arc::new(
                Backbone::load(None, &device())
                    .unwrap_or_else(|e| panic!("the real weights are needed: {e}")),
            )
        })
        .clone()
}

/// All tensors of a safetensors file as (shape, f32 values).
pub fn read_safetensors(
    path: &std::path::Path,
) -> std::collections::BTreeMap<String, (Vec<usize>, Vec<f32>)> {
    use attrex::burn::store::{ModuleStore, SafetensorsStore};
    let mut store = SafetensorsStore::from_file(path);
    let all = store
        .get_all_tensors()
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    all.iter()
        .map(|(name, t)| {
            let data = attrex::burn::store::bridge::to_data(t)
                .unwrap()
                .convert::<f32>();
            let shape = data.shape().to_vec();
            (name.clone(), (shape, data.try_into_vec::<f32>().unwrap()))
        })
        .collect()
}

/// Extraction options with the on-disk feature cache that the dataset tests share, so that the
/// real network runs over each dataset once per build.
pub fn cached_extraction() -> attrex::ExtractOptions {
    attrex::ExtractOptions {
        cache: Some(attrex::FeatureCache::new(concat!(
            env!("CARGO_TARGET_TMPDIR"),
            "/feature-cache"
        ))),
        ..attrex::ExtractOptions::default()
    }
}

/// ||a - b|| / ||b||
pub fn rel_l2(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    let num: f64 = a.iter().zip(b).map(|(x, y)| f64::from(x - y).powi(2)).sum();
    let den: f64 = b.iter().map(|y| f64::from(*y).powi(2)).sum();
    (num / den).sqrt()
}

/// Whether `ATTREX_EXPECT_ISA` (comma-separated, set by `.ci/run` from /proc/cpuinfo) names
/// `name`: an instruction set as `attrex::Isa` displays it, or an int8 kernel's VNNI extension
/// (`avx512vnni`, `avxvnni`). Its tests must then run here, not skip.
///
/// # Panics
/// When the variable names anything else.
pub fn ci_expects(name: &str) -> bool {
    let names = std::env::var("ATTREX_EXPECT_ISA").unwrap_or_default();
    let names: Vec<&str> = names
        .split(',')
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .collect();
    // Every name is checked, not only those before a match, so that a misspelt one fails
    // wherever the variable is read.
    for n in &names {
        assert!(
            attrex::Isa::from_name(n).is_some() || ["avx512vnni", "avxvnni"].contains(n),
            "ATTREX_EXPECT_ISA: unknown instruction set {n:?}"
        );
    }
    names.contains(&name)
}
