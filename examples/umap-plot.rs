//! 2-D UMAP of each block's features, coloured by class (the paper's Figures 4 and 5).
//!
//! ```text
//! cargo run --release --example umap-plot -- DATASET_DIR [--out DIR] [--seed N] [--supervised]
//! ```
//!
//! Writes `umap_block<N>.png` for blocks 1 to 5 into `--out` (default
//! `target/attrex-umap/<dataset folder name>`), and prints the kNN accuracy (k = 5, 5 folds)
//! of each 2-D embedding, as a number to go with the picture.

use std::error::Error;
use std::path::PathBuf;
use std::sync::Arc;

#[macro_use]
#[path = "common/mod.rs"]
mod common;

use attrex::eval::{CvParams, cross_validate};
use attrex::reduce::{Umap, UmapParams};
use attrex::{BlockTap, Dataset, ExtractOptions, extract_dataset};
use clap::Parser;

fn main() {
    if let Err(e) = run() {
        common::fail(e.as_ref());
    }
}

/// 2-D UMAP of each block's features, coloured by class (the paper's Figures 4 and 5).
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// A folder of class folders of images.
    dir: PathBuf,
    /// Where the PNGs go (default target/attrex-umap/<dataset folder name>).
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// UMAP's seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Supervised UMAP (the class labels guide the layout).
    #[arg(long)]
    supervised: bool,
    #[command(flatten)]
    setup: common::Setup,
}

fn run() -> Result<(), Box<dyn Error>> {
    let Args {
        dir,
        out,
        seed,
        supervised,
        setup,
    } = Args::parse();
    let name = dir
        .file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .into_owned();
    let out = out.unwrap_or_else(|| PathBuf::from("target/attrex-umap").join(&name));
    std::fs::create_dir_all(&out)?;
    let dataset = Dataset::open(&dir)?;
    let backbone = Arc::new(setup.backbone()?);
    let tap = BlockTap::all(backbone);
    let options = ExtractOptions {
        cache: setup.cache(),
        progress: common::progress("features"),
        ..ExtractOptions::default()
    };
    let features = extract_dataset(&tap, dataset.paths(), &options)?;
    let labels = features.select(&dataset.labels());
    let params = UmapParams {
        seed,
        ..UmapParams::default()
    };
    for (info, matrix) in features.iter() {
        let umap = if supervised {
            Umap::fit_supervised(matrix, &labels, params)?
        } else {
            Umap::fit(matrix, params)?
        };
        let points: Vec<[f32; 2]> = umap.embedding().iter().map(|p| [p[0], p[1]]).collect();
        // k = 5, 5 folds, seed 0, scikit-learn's tie rule.
        let acc = cross_validate(umap.embedding(), &labels, &CvParams::default())?;
        let title = format!(
            "{name}: UMAP of block {} ({}-d), kNN acc {:.3}",
            info.block.number(),
            info.dim,
            acc.accuracy
        );
        let png = out.join(format!("umap_block{}.png", info.block.number()));
        attrex::plot::scatter(&title, &points, &labels, &dataset.classes).save_png(&png)?;
        out!(
            "block={} dim=2 knn_accuracy={:.3} png={}",
            info.block.number(),
            acc.accuracy,
            png.display()
        );
    }
    Ok(())
}
