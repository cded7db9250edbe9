//! The paper's Table 1: kNN accuracy of each block under stratified k-fold cross-validation.
//!
//! ```text
//! cargo run --release --example evaluate -- DATASET_DIR [--blocks 1,2,3,4,5] [--k 5] [--folds 5]
//!     [--recipe paper|colour|texture] [--seed N] [--cluster] [--reduce umap:D|umap:sweep]
//!     [--out DIR] [--device flex] [--weights PATH] [--engine auto] [--cache-dir DIR]
//!     [--no-cache] [--skip-unreadable] [--precision fp32|int8]
//! ```
//!
//! With `--recipe colour` (or `texture`) the one recipe is evaluated instead of the blocks:
//! `recipe=colour-v1 dim=640 accuracy=.. accuracy_nearest=..`, the same folds and tie rules,
//! then accuracy against coverage (`coverage=0.80 accuracy=..`: the surest 80 % answered, most
//! votes first, then the nearest example) and the share answered at 3 of 5 votes.
//!
//! Prints one line per block, `block=2 dim=256 accuracy=0.581 accuracy_nearest=0.590 ...`, then
//! a table and each block's confusion matrix. `accuracy` breaks a tied vote as scikit-learn does
//! (the first class wins), which is how the reference figures were made; `accuracy_nearest` uses
//! attrex's default (the class with the nearest example wins). Folds are scikit-learn's
//! `StratifiedKFold(folds, shuffle=True, random_state=seed)`, reproduced exactly. Also
//! writes `confusion_block<N>.png` heat maps to `--out`. With `--cluster`, each block's
//! features are also clustered by HDBSCAN (min_cluster_size 50, min_samples 10, Euclidean) and
//! the line gains `ari=.. ami=..` against the classes; `clusters_ari_ami.png` plots them by
//! block (the paper's Figure 3). With `--reduce umap:8` (or `umap:2,8,32`, or `umap:sweep` for
//! 2, 4, 8, ... up to the block's dimension: Table 2) each block is also reduced by UMAP under two
//! protocols, printed as `block=2 dim=8 protocol=all accuracy=..` (UMAP fitted on every image
//! before the cross-validation, as the paper did) and `protocol=inductive` (fitted on the
//! training folds, the test fold transformed, as a deployed system would); with `--cluster` too,
//! the `protocol=all` line adds HDBSCAN's ARI and AMI on the reduced vectors. Output folder:
//! `--out`
//! (default `target/attrex-eval/<dataset folder name>`).

#[macro_use]
#[path = "common/mod.rs"]
mod common;

use std::error::Error;
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use attrex::cluster::{HdbscanParams, adjusted_mutual_information, adjusted_rand_index};
use attrex::eval::{
    CvParams, Reduced, accuracy_at_coverage, cross_validate, cross_validate_inductive,
};
use attrex::reduce::{Umap, UmapParams};
use attrex::{
    Block, BlockTap, Dataset, ExtractOptions, OnUnreadable, Recipe, Rows, TieBreak, extract_dataset,
};
use clap::Parser;

/// The paper's Table 1: kNN accuracy of each block (or a recipe) under stratified k-fold
/// cross-validation.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// A folder of class folders of images.
    dir: PathBuf,
    /// The blocks to evaluate, under `--recipe paper`.
    #[arg(long, value_delimiter = ',', value_parser = parse_block, default_value = "1,2,3,4,5")]
    blocks: Vec<Block>,
    /// `paper` (each block's global average, Table 1), `colour`, `texture`, or `paper:N`.
    #[arg(long, default_value = "paper")]
    recipe: String,
    /// Neighbours that vote.
    #[arg(long, default_value = "5")]
    k: NonZeroUsize,
    /// Cross-validation folds.
    #[arg(long, default_value_t = 5)]
    folds: usize,
    /// The folds' seed (scikit-learn's `random_state`).
    #[arg(long, default_value_t = 0)]
    seed: u32,
    /// Where the PNGs go (default target/attrex-eval/<dataset folder name>).
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Skip unreadable images instead of stopping.
    #[arg(long)]
    skip_unreadable: bool,
    /// Also cluster each block's features with HDBSCAN and score them against the classes.
    #[arg(long)]
    cluster: bool,
    /// UMAP: `umap:D`, `umap:D1,D2,...` or `umap:sweep` (2, 4, 8, ... up to the dimension).
    #[arg(long, value_parser = parse_reduce, default_value = "")]
    reduce: Reduce,
    #[command(flatten)]
    setup: common::Setup,
}

/// UMAP target dimensions.
#[derive(Debug, Clone, Default)]
struct Reduce(Vec<usize>);

fn parse_block(s: &str) -> Result<Block, String> {
    let n: u8 = s.trim().parse().map_err(|e| format!("{s:?}: {e}"))?;
    Block::new(n).map_err(|e| e.to_string())
}

fn parse_reduce(v: &str) -> Result<Reduce, String> {
    if v.is_empty() {
        return Ok(Reduce::default());
    }
    let dims = v
        .strip_prefix("umap:")
        .ok_or("--reduce takes umap:D, umap:D1,D2,... or umap:sweep")?;
    Ok(Reduce(if dims == "sweep" {
        // Table 2: 2, 4, 8, ... up to the block's dimension (capped per block below).
        (1..=11).map(|p| 1usize << p).collect()
    } else {
        dims.split(',')
            .map(|d| d.trim().parse().map_err(|e| format!("{d:?}: {e}")))
            .collect::<Result<_, _>>()?
    }))
}

fn main() {
    if let Err(e) = run() {
        common::fail(e.as_ref());
    }
}

fn run() -> Result<(), Box<dyn Error>> {
    let args = Args::parse();
    // `paper` evaluates each of --blocks; another recipe is evaluated alone.
    let recipes: Vec<Recipe> = if args.recipe.trim().eq_ignore_ascii_case("paper") {
        args.blocks.iter().map(|&b| Recipe::Paper(b)).collect()
    } else {
        vec![Recipe::from_name(&args.recipe)?]
    };
    let product = !matches!(recipes[..], [Recipe::Paper(_), ..]);
    let dataset = Dataset::open(&args.dir)?;
    eprintln!(
        "{}: {} images in {} classes ({}); {} non-image files ignored",
        args.dir.display(),
        dataset.items.len(),
        dataset.classes.len(),
        dataset.classes.join(", "),
        dataset.non_images.len()
    );
    let backbone = Arc::new(args.setup.backbone()?);
    eprintln!(
        "engine {}, precision {}",
        backbone.engine(),
        backbone.precision()
    );
    let tap = BlockTap::with_recipes(backbone, &recipes)?;
    let options = ExtractOptions {
        on_unreadable: if args.skip_unreadable {
            OnUnreadable::Skip
        } else {
            OnUnreadable::Fail
        },
        cache: args.setup.cache(),
        progress: common::progress("features"),
    };
    let start = Instant::now();
    let features = extract_dataset(&tap, dataset.paths(), &options)?;
    let labels = features.select(&dataset.labels());
    let secs = start.elapsed().as_secs_f64();
    eprintln!(
        "features of {} images in {secs:.1}s ({} from the cache, {} cache entries rebuilt, {} unreadable skipped)",
        features.len(),
        features.cache_hits,
        features.cache_rebuilt,
        features.skipped.len()
    );
    for e in &features.skipped {
        eprintln!("  skipped: {e}");
    }
    let out_dir = args.out.clone().unwrap_or_else(|| {
        let name = args
            .dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        PathBuf::from("target/attrex-eval").join(name)
    });
    std::fs::create_dir_all(&out_dir)?;
    let mut rows = Vec::new();
    let mut cluster_rows = Vec::new();
    let cv_params = |tie_break| CvParams {
        k: args.k,
        folds: args.folds,
        seed: args.seed,
        tie_break,
    };
    for (info, matrix) in features.iter() {
        // `accuracy`: scikit-learn's rule (a tie goes to the first class), as the reference;
        // `accuracy_nearest`: attrex's default rule (a tie goes to the nearest example).
        let cv = |tie| {
            cross_validate(matrix, &labels, &cv_params(tie))
                .map_err(|e| e.with_class_names(&dataset.classes))
        };
        let (r, nearest) = (cv(TieBreak::SmallestLabel)?, cv(TieBreak::Nearest)?);
        let clusters = if args.cluster {
            let c = cluster_scores(matrix, &labels)?;
            cluster_rows.push((info.block.number(), c.ari, c.ami));
            format!(
                " ari={:.3} ami={:.3} clusters={} noise={}",
                c.ari, c.ami, c.clusters, c.noise
            )
        } else {
            String::new()
        };
        let head = if product {
            format!("recipe={}", info.recipe)
        } else {
            format!("block={}", info.block.number())
        };
        out!(
            "{head} dim={} accuracy={:.3} accuracy_nearest={:.3} k={} folds={} seed={} n={}{clusters}",
            info.dim,
            r.accuracy,
            nearest.accuracy,
            args.k,
            args.folds,
            args.seed,
            labels.len()
        );
        if product {
            // Accuracy against coverage: the surest predictions answered first (most votes,
            // then the nearest example), with attrex's tie rule; and the default abstention.
            for coverage in [1.0, 0.9, 0.8, 0.7, 0.5] {
                let (answered, accuracy) = accuracy_at_coverage(&nearest.outcomes, coverage);
                out!("{head} coverage={answered:.2} accuracy={accuracy:.3}");
            }
            let sure: Vec<_> = nearest.outcomes.iter().filter(|o| o.votes >= 3).collect();
            let right = sure.iter().filter(|o| o.correct()).count();
            out!(
                "{head} min_votes=3 answered={:.3} accuracy={:.3}",
                sure.len() as f64 / nearest.outcomes.len().max(1) as f64,
                right as f64 / sure.len().max(1) as f64
            );
        }
        let png = out_dir.join(format!("confusion_{}.png", info.name));
        // An embedding needs fewer dimensions than the block has, and than the points allow.
        let n_points = labels.len();
        for &d in args
            .reduce
            .0
            .iter()
            .filter(|&&d| d < info.dim && d < n_points / 2)
        {
            let params = UmapParams {
                n_components: d,
                seed: u64::from(args.seed),
                ..UmapParams::default()
            };
            let start = Instant::now();
            let umap = Umap::fit(matrix, params)?;
            let fit_s = start.elapsed().as_secs_f64();
            let sklearn = cv_params(TieBreak::SmallestLabel);
            let all = cross_validate(umap.embedding(), &labels, &sklearn)?;
            let inductive = cross_validate_inductive(matrix, &labels, &sklearn, |train, test| {
                let u = Umap::fit(train, params)?;
                Ok(Reduced {
                    train: u.embedding().as_slice().to_vec(),
                    test: u.transform(test)?,
                    dim: d,
                })
            })?;
            let clusters = if args.cluster {
                let c = cluster_scores(umap.embedding(), &labels)?;
                format!(" ari={:.3} ami={:.3}", c.ari, c.ami)
            } else {
                String::new()
            };
            out!(
                "block={} dim={d} protocol=all accuracy={:.3} fit_s={fit_s:.2}{clusters}",
                info.block.number(),
                all.accuracy
            );
            out!(
                "block={} dim={d} protocol=inductive accuracy={:.3}",
                info.block.number(),
                inductive.accuracy
            );
        }
        let name = args.dir.file_name().unwrap_or_default().to_string_lossy();
        let title = format!("{name}: {} (accuracy {:.3})", info.recipe, r.accuracy);
        attrex::plot::confusion_matrix(&r.confusion, &dataset.classes, &title).save_png(&png)?;
        rows.push((info.clone(), r, nearest.accuracy, png));
    }
    if !cluster_rows.is_empty() {
        let labels: Vec<String> = cluster_rows
            .iter()
            .map(|r| format!("block {}", r.0))
            .collect();
        let name = args.dir.file_name().unwrap_or_default().to_string_lossy();
        let chart = attrex::plot::line_chart(
            &format!("{name}: HDBSCAN clusters vs classes"),
            &labels,
            &[
                (
                    "ARI",
                    cluster_rows.iter().map(|r| r.1).collect(),
                    [31, 119, 180],
                ),
                (
                    "AMI",
                    cluster_rows.iter().map(|r| r.2).collect(),
                    [214, 39, 40],
                ),
            ],
        );
        let png = out_dir.join("clusters_ari_ami.png");
        chart.save_png(&png)?;
        eprintln!("ARI/AMI by block: {}", png.display());
    }
    out!();
    out!("| block | dim  | accuracy | nearest tie-break | per fold");
    out!("|-------|------|----------|-------------------|---------");
    for (info, r, nearest, _) in &rows {
        let folds: Vec<String> = r.fold_accuracy.iter().map(|a| format!("{a:.3}")).collect();
        out!(
            "| {:5} | {:4} | {:8.3} | {nearest:17.3} | {}",
            if product {
                info.name.clone()
            } else {
                info.block.number().to_string()
            },
            info.dim,
            r.accuracy,
            folds.join(" ")
        );
    }
    let width = dataset
        .classes
        .iter()
        .map(|c| c.chars().count())
        .max()
        .unwrap_or(4)
        .max(4);
    for (info, r, _, png) in &rows {
        out!(
            "\nconfusion matrix, {} (rows: true, columns: predicted; {})",
            info.name,
            png.display()
        );
        let head: Vec<String> = dataset
            .classes
            .iter()
            .map(|c| format!("{:>5}", c.chars().take(5).collect::<String>()))
            .collect();
        out!("{:width$} {}", "", head.join(""));
        for (c, row) in dataset.classes.iter().zip(&r.confusion) {
            let cells: Vec<String> = row.iter().map(|n| format!("{n:5}")).collect();
            out!("{c:width$} {}", cells.join(""));
        }
    }
    Ok(())
}

/// HDBSCAN (the paper's settings) on `matrix`, scored against the class labels.
struct ClusterScores {
    ari: f64,
    ami: f64,
    clusters: usize,
    noise: usize,
}

fn cluster_scores(matrix: Rows<'_>, labels: &[usize]) -> Result<ClusterScores, Box<dyn Error>> {
    let found = attrex::cluster::hdbscan(matrix, HdbscanParams::default())?;
    let truth: Vec<i64> = labels.iter().map(|&l| l as i64).collect();
    Ok(ClusterScores {
        ari: adjusted_rand_index(&truth, &found),
        ami: adjusted_mutual_information(&truth, &found),
        clusters: found
            .iter()
            .filter(|&&l| l >= 0)
            .collect::<std::collections::BTreeSet<_>>()
            .len(),
        noise: found.iter().filter(|&&l| l < 0).count(),
    })
}
