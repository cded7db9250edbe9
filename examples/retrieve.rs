//! Retrieval by colour, texture or both (the paper's Figure 6), evaluated by precision@k.
//!
//! ```text
//! cargo run --release --example retrieve -- DIR [--k 10] [--sheet OUT.png] [--queries 5] [--store URL]
//!     [--precision fp32|int8]
//! ```
//!
//! `--store postgres://...` (feature `postgres`) keeps the catalogues in PostgreSQL instead of
//! memory, one schema per transform, and prints the same lines; a second run ingests nothing.
//!
//! Reads `DIR/retrieval.csv` (`path,color,pattern`, paths relative to DIR), ingests every item,
//! queries each item against all the others, and prints for each ranking one line
//! `ranking=combined p10_color=0.409 p10_pattern=0.618 p10_both=0.241`: the share of the top k
//! results with the query's colour, its pattern, and both. The first three rankings are the
//! paper's (block 2, block 4, median-normalised sum); `combined_centred` is attrex's
//! improvement (the same sum over vectors centred on the catalogue mean and L2-normalised,
//! `FeatureNorm::CenterL2`); the lines after it are every training-free variant tried. Writes a contact sheet (queries and their top results
//! under each ranking) to `--sheet` (default `target/attrex-retrieval/contact_sheet.png`).

#[macro_use]
#[path = "common/mod.rs"]
mod common;

use std::error::Error;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use attrex::plot::Canvas;
use attrex::{
    Backbone, By, CatalogueStore, ExtractOptions, FeatureNorm, Fusion, Ranking, Retriever,
    RetrieverConfig,
};
use clap::Parser;

struct Row {
    path: PathBuf,
    colour: String,
    pattern: String,
}

fn read_csv(dir: &Path) -> Result<Vec<Row>, Box<dyn Error>> {
    let file = dir.join("retrieval.csv");
    let text = std::fs::read_to_string(&file).map_err(|e| format!("{}: {e}", file.display()))?;
    let mut rows = Vec::new();
    for (n, line) in text.lines().enumerate().skip(1) {
        if line.trim().is_empty() {
            continue;
        }
        let f: Vec<&str> = line.split(',').map(str::trim).collect();
        let [path, colour, pattern] = f[..] else {
            return Err(
                format!("{}:{}: expected path,color,pattern", file.display(), n + 1).into(),
            );
        };
        rows.push(Row {
            path: dir.join(path),
            colour: colour.into(),
            pattern: pattern.into(),
        });
    }
    Ok(rows)
}

/// Precision@k for colour, pattern and both, each item queried against the others.
fn precision<S: CatalogueStore>(
    r: &Retriever<S>,
    rows: &[Row],
    ranking: Ranking,
    k: NonZeroUsize,
) -> Result<[f64; 3], Box<dyn Error>> {
    let colours: Vec<&str> = rows.iter().map(|r| r.colour.as_str()).collect();
    let patterns: Vec<&str> = rows.iter().map(|r| r.pattern.as_str()).collect();
    Ok(attrex::eval::retrieval_precision(
        r, &colours, &patterns, ranking, k,
    )?)
}

/// Retrieval by colour, texture or both, evaluated by precision@k.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// The catalogue folder, holding retrieval.csv (path,color,pattern).
    dir: PathBuf,
    /// Results per query.
    #[arg(long, default_value = "10")]
    k: NonZeroUsize,
    /// The contact sheet PNG.
    #[arg(
        long,
        value_name = "OUT.png",
        default_value = "target/attrex-retrieval/contact_sheet.png"
    )]
    sheet: PathBuf,
    /// Queries drawn on the contact sheet.
    #[arg(long, default_value_t = 5)]
    queries: usize,
    /// Keep the catalogues in PostgreSQL (`postgres://...`; feature `postgres`).
    #[arg(long, value_name = "URL")]
    store: Option<String>,
    #[command(flatten)]
    setup: common::Setup,
}

fn main() {
    if let Err(e) = run(Args::parse()) {
        common::fail(e.as_ref());
    }
}

fn run(args: Args) -> Result<(), Box<dyn Error>> {
    let Args {
        dir,
        k,
        sheet,
        queries,
        store,
        setup,
    } = args;
    let rows = read_csv(&dir)?;
    if rows.is_empty() {
        return Err(format!(
            "{}: no items (only a header or blank lines): nothing to evaluate",
            dir.join("retrieval.csv").display()
        )
        .into());
    }
    let backbone = Arc::new(setup.backbone()?);
    let paths: Vec<&Path> = rows.iter().map(|r| r.path.as_path()).collect();
    let options = ExtractOptions {
        cache: setup.cache(),
        progress: common::progress("features"),
        ..ExtractOptions::default()
    };
    if let Some(url) = store {
        let (variants, product) = postgres_catalogues(&url, &dir, &backbone, &paths, &options)?;
        return evaluate(&variants, &product, &rows, k, queries, &sheet);
    }
    let mut variants = Vec::new();
    for norm in NORMS {
        let mut r = Retriever::new(
            backbone.clone(),
            RetrieverConfig {
                norm,
                ..RetrieverConfig::default()
            },
        )?;
        r.ingest(&paths, &options)?;
        variants.push((norm, r));
    }
    let mut product = Retriever::new(backbone.clone(), RetrieverConfig::product())?;
    product.ingest(&paths, &options)?;
    evaluate(&variants, &product, &rows, k, queries, &sheet)
}

const NORMS: [FeatureNorm; 4] = [
    FeatureNorm::None,
    FeatureNorm::L2,
    FeatureNorm::SqrtL2,
    FeatureNorm::CenterL2,
];

/// The catalogues of `main` in PostgreSQL at `url`: one schema per transform, named after
/// `dir` so that two catalogues do not mix. Ingestion is idempotent: a second run adds nothing.
#[cfg(feature = "postgres")]
fn postgres_catalogues(
    url: &str,
    dir: &Path,
    backbone: &Arc<Backbone>,
    paths: &[&Path],
    options: &ExtractOptions,
) -> Result<PgCatalogues, Box<dyn Error>> {
    use sha2::{Digest, Sha256};
    let canonical = std::fs::canonicalize(dir)?;
    let tag: String = Sha256::digest(canonical.as_os_str().as_encoded_bytes())[..4]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let open = |name: String, config: RetrieverConfig| -> Result<_, Box<dyn Error>> {
        let schema = format!("retrieve_{tag}_{name}");
        let store = attrex::PgStore::connect(url, attrex::PgConfig::with_schema(&schema))?;
        let mut r = Retriever::with_store(backbone.clone(), config, store)?;
        let added = r.ingest(paths, options)?;
        eprintln!(
            "postgres schema {schema}: {} added, {} already there",
            added.ids.len(),
            added.unchanged
        );
        Ok(r)
    };
    let mut variants = Vec::new();
    for norm in NORMS {
        let config = RetrieverConfig {
            norm,
            ..RetrieverConfig::default()
        };
        variants.push((norm, open(format!("{norm:?}").to_lowercase(), config)?));
    }
    let product = open("product".into(), RetrieverConfig::product())?;
    Ok((variants, product))
}

/// One Postgres catalogue per transform (paper recipes), and one of the product preset.
#[cfg(feature = "postgres")]
type PgCatalogues = (
    Vec<(FeatureNorm, Retriever<attrex::PgStore>)>,
    Retriever<attrex::PgStore>,
);

#[cfg(not(feature = "postgres"))]
fn postgres_catalogues(
    _: &str,
    _: &Path,
    _: &Arc<Backbone>,
    _: &[&Path],
    _: &ExtractOptions,
) -> Result<(Vec<(FeatureNorm, Retriever)>, Retriever), Box<dyn Error>> {
    Err("--store needs attrex built with the `postgres` feature".into())
}

/// Prints the precision lines and draws the contact sheet, whichever store holds `variants`
/// (one catalogue per transform, in the order of `NORMS`).
fn evaluate<S: CatalogueStore>(
    variants: &[(FeatureNorm, Retriever<S>)],
    product: &Retriever<S>,
    rows: &[Row],
    k: NonZeroUsize,
    queries: usize,
    out: &Path,
) -> Result<(), Box<dyn Error>> {
    eprintln!(
        "{} items; scales (median distance) colour {:.3}, texture {:.3}",
        rows.len(),
        variants[0].1.scales()?[0],
        variants[0].1.scales()?[1]
    );
    let plain = &variants[0].1;
    for (name, ranking) in [
        ("color", Ranking::Colour),
        ("texture", Ranking::Texture),
        ("combined", Ranking::BOTH),
    ] {
        let [c, p, b] = precision(plain, rows, ranking, k)?;
        out!("ranking={name} p{k}_color={c:.3} p{k}_pattern={p:.3} p{k}_both={b:.3}");
    }
    let [c, p, b] = precision(&variants[3].1, rows, Ranking::BOTH, k)?;
    out!("ranking=combined_centred p{k}_color={c:.3} p{k}_pattern={p:.3} p{k}_both={b:.3}");
    // The product preset: colour recipe for colour, texture recipe for texture, fused as
    // `Ranking::BOTH`.
    let [c, _, _] = precision(product, rows, Ranking::Colour, k)?;
    let [_, p, _] = precision(product, rows, Ranking::Texture, k)?;
    let [_, _, b] = precision(product, rows, Ranking::BOTH, k)?;
    out!("ranking=product p{k}_color={c:.3} p{k}_pattern={p:.3} p{k}_both={b:.3}");
    out!("# training-free variants: feature normalisation x fusion x colour:texture weight");
    for (norm, r) in variants {
        for fusion in [Fusion::Sum, Fusion::Max, Fusion::Product] {
            for (wc, wt) in [(1.0, 1.0), (2.0, 1.0), (1.0, 2.0)] {
                if (*norm, fusion, wc, wt) == (FeatureNorm::None, Fusion::Sum, 1.0, 1.0) {
                    continue;
                }
                let ranking = Ranking::Combined {
                    colour: wc,
                    texture: wt,
                    fusion,
                };
                let [c, p, b] = precision(r, rows, ranking, k)?;
                out!(
                    "ranking=combined norm={norm:?} fusion={fusion:?} weights={wc}:{wt} p{k}_color={c:.3} p{k}_pattern={p:.3} p{k}_both={b:.3}"
                );
            }
        }
    }
    if let Some(parent) = out.parent() {
        std::fs::create_dir_all(parent)?;
    }
    contact_sheet(&variants[3].1, plain, rows, queries, out)?;
    eprintln!("contact sheet: {}", out.display());
    Ok(())
}

/// Queries spread over the catalogue, each with its top 4 under colour, texture and combined.
fn contact_sheet<S: CatalogueStore>(
    best: &Retriever<S>,
    plain: &Retriever<S>,
    rows: &[Row],
    queries: usize,
    out: &Path,
) -> Result<(), Box<dyn Error>> {
    const T: u32 = 96;
    const TOP: NonZeroUsize = NonZeroUsize::new(4).expect("4 > 0");
    let thumb = |p: &Path| -> Result<image::RgbImage, Box<dyn Error>> {
        let img = attrex::read_image(p)?;
        Ok(image::imageops::thumbnail(&img.to_rgb8(), T, T))
    };
    let rankings: [(&str, &Retriever<S>, Ranking); 4] = [
        ("colour (block 2)", plain, Ranking::Colour),
        ("texture (block 4)", plain, Ranking::Texture),
        ("combined", plain, Ranking::BOTH),
        ("combined, centred+L2", best, Ranking::BOTH),
    ];
    let col_w = TOP.get() as u32 * (T + 4) + 16;
    let width = 20 + T + 20 + col_w * rankings.len() as u32;
    let row_h = T + 34;
    let mut c = Canvas::new(width, 40 + row_h * queries as u32 + 20);
    let legend_y = (40 + row_h * queries as u32) as i64;
    c.text(
        20,
        legend_y,
        "under each result: its colour and pattern;",
        1,
        [0, 0, 0],
    );
    c.text(
        380,
        legend_y,
        "green = both match the query",
        1,
        [0, 140, 0],
    );
    c.text(620, legend_y, "orange = one matches", 1, [200, 120, 0]);
    c.text(800, legend_y, "red = neither", 1, [200, 0, 0]);
    c.text(20, 12, "query", 1, [0, 0, 0]);
    for (j, (name, _, _)) in rankings.iter().enumerate() {
        c.text(
            (20 + T + 20 + col_w * j as u32) as i64,
            12,
            name,
            1,
            [0, 0, 0],
        );
    }
    let step = (rows.len() / queries.max(1)).max(1);
    for qn in 0..queries.min(rows.len()) {
        let q = qn * step + step / 2;
        let y = 36 + qn as u32 * row_h;
        c.paste(20, y as i64, &thumb(&rows[q].path)?);
        c.text(
            20,
            (y + T + 4) as i64,
            &format!("{} {}", rows[q].colour, rows[q].pattern),
            1,
            [0, 0, 0],
        );
        for (j, (_, r, ranking)) in rankings.iter().enumerate() {
            let x0 = 20 + T + 20 + col_w * j as u32;
            let top = r.query(By::Item(q)).rank(*ranking).top(TOP)?;
            for (i, h) in top.iter().enumerate() {
                let x = (x0 + i as u32 * (T + 4)) as i64;
                c.paste(x, y as i64, &thumb(&h.path)?);
                let (cm, pm) = (
                    rows[h.item].colour == rows[q].colour,
                    rows[h.item].pattern == rows[q].pattern,
                );
                let ink = match (cm, pm) {
                    (true, true) => [0, 140, 0],
                    (false, false) => [200, 0, 0],
                    _ => [200, 120, 0],
                };
                c.rect(x, (y + T + 2) as i64, T, 3, ink);
                c.text(
                    x,
                    (y + T + 8) as i64,
                    &format!(
                        "{} {}",
                        &rows[h.item].colour,
                        rows[h.item].pattern.chars().take(4).collect::<String>()
                    ),
                    1,
                    ink,
                );
            }
        }
    }
    c.save_png(out)?;
    Ok(())
}
