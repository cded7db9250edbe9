//! The PostgreSQL store at scale: ingest rate, query latency (p50, p99) and recall@10 against
//! the exact ranking of the memory store, for colour, texture and both.
//!
//! ```text
//! cargo run --release --features postgres --example pg_bench -- --store URL \
//!     [--items 200000] [--queries 200] [--norm center_l2|none|l2|sqrt_l2] [--ef 40,100,200] \
//!     [--depth 100] [--data ../shared/data]
//! ```
//!
//! The catalogue is made from real features: every image under `--data` (the dev sets, about
//! 1,100 photos) through blocks 2 and 4, cached. Each of the `--items` items mixes two of them
//! (the second, half the time, one of the first's 10 nearest), weight uniform in [0, 1], with
//! multiplicative noise `exp(0.1 N(0, 1))` per value; seeded, so every run builds the same
//! catalogue. (Independent noise around single seeds would make each seed's copies
//! nearly equidistant in 1024-d, and recall a coin toss for any index.) Queries are held-out
//! items made the same way. The store is loaded by one `extend_vectors` (a binary COPY in one
//! transaction, then the scales and both HNSW indexes), in schema `attrex_bench`, dropped first.
//!
//! Prints `ingest ...` and one `query ...` line per kind and `ef_search`.

#[macro_use]
#[path = "common/mod.rs"]
mod common;

use std::error::Error;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use clap::Parser;

use attrex::{
    Backbone, Block, BlockTap, By, ExtractOptions, FeatureCache, FeatureNorm, PgConfig, PgStore,
    Ranking, Retriever, RetrieverConfig, Rows,
};

struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn unit(&mut self) -> f32 {
        ((self.next() >> 40) as f32 + 0.5) / (1u64 << 24) as f32
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn normal(&mut self) -> f32 {
        let (u, v) = (self.unit(), self.unit());
        (-2.0 * u.ln()).sqrt() * (std::f32::consts::TAU * v).cos()
    }
}

/// The real feature vectors the items are made from.
struct Seeds {
    dims: [usize; 2],
    rows: [Vec<f32>; 2],
    /// Each seed's 10 nearest other seeds (colour and texture distances summed).
    near: Vec<Vec<usize>>,
}

impl Seeds {
    fn len(&self) -> usize {
        self.rows[0].len() / self.dims[0]
    }

    /// Item `i`'s colour and texture vectors.
    fn item(&self, i: u64) -> [Vec<f32>; 2] {
        let mut rng = SplitMix64(i.wrapping_mul(0x2545_F491_4F6C_DD1D) ^ 7);
        let a = rng.below(self.len());
        let b = if rng.unit() < 0.5 {
            self.near[a][rng.below(self.near[a].len())]
        } else {
            rng.below(self.len())
        };
        let w = rng.unit();
        [0, 1].map(|f| {
            let (d, s) = (self.dims[f], &self.rows[f]);
            (0..d)
                .map(|k| (w * s[a * d + k] + (1.0 - w) * s[b * d + k]) * (0.1 * rng.normal()).exp())
                .collect()
        })
    }
}

fn images(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.path());
    for e in entries {
        let p = e.path();
        if p.is_dir() {
            images(&p, out)?;
        } else if p
            .extension()
            .and_then(|x| x.to_str())
            .is_some_and(|x| attrex::IMAGE_EXTENSIONS.contains(&x.to_lowercase().as_str()))
        {
            out.push(p);
        }
    }
    Ok(())
}

fn seeds(backbone: &Arc<Backbone>, data: &Path) -> Result<Seeds, Box<dyn Error>> {
    let mut paths = Vec::new();
    images(data, &mut paths)?;
    let tap = BlockTap::new(backbone.clone(), &[Block::B2, Block::B4])?;
    let options = ExtractOptions {
        cache: Some(FeatureCache::default_location()),
        progress: common::progress("seed features"),
        on_unreadable: attrex::OnUnreadable::Skip,
    };
    let f = attrex::extract_dataset(&tap, &paths, &options)?;
    let dims = [f.taps[0].dim, f.taps[1].dim];
    let rows = [f.blocks[0].clone(), f.blocks[1].clone()];
    let n = f.len();
    let dist = |f: usize, i: usize, j: usize| {
        let d = dims[f];
        attrex::knn::squared_l2(&rows[f][i * d..(i + 1) * d], &rows[f][j * d..(j + 1) * d]).sqrt()
    };
    let near = (0..n)
        .map(|i| {
            let mut o: Vec<(f32, usize)> = (0..n)
                .filter(|&j| j != i)
                .map(|j| (dist(0, i, j) + dist(1, i, j), j))
                .collect();
            o.sort_by(|a, b| a.0.total_cmp(&b.0));
            o.into_iter().take(10).map(|x| x.1).collect()
        })
        .collect();
    eprintln!("{n} seed images from {}", data.display());
    Ok(Seeds { dims, rows, near })
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    let i = ((v.len() as f64 * p).ceil() as usize).clamp(1, v.len()) - 1;
    v[i]
}

fn main() {
    if let Err(e) = run() {
        common::fail(e.as_ref());
    }
}

/// The PostgreSQL store at scale: ingest rate, query latency and recall@10.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// The database (`postgres://...`).
    #[arg(long, value_name = "URL")]
    store: String,
    /// Catalogue items.
    #[arg(long, default_value_t = 200_000)]
    items: usize,
    /// Held-out queries.
    #[arg(long, default_value_t = 200)]
    queries: usize,
    /// Normalisation: center_l2, none, l2 or sqrt_l2.
    #[arg(long, default_value = "center_l2", value_parser = parse_norm)]
    norm: FeatureNorm,
    /// HNSW ef_search values to try.
    #[arg(long, value_delimiter = ',', default_value = "40,100,200")]
    ef: Vec<usize>,
    /// Candidates from each index before the fused re-rank of `both`.
    #[arg(long, default_value_t = 100)]
    depth: usize,
    /// Folder of the dev sets whose features seed the catalogue.
    #[arg(long, value_name = "DIR", default_value = "../shared/data")]
    data: PathBuf,
}

fn parse_norm(s: &str) -> Result<FeatureNorm, String> {
    Ok(match s {
        "none" => FeatureNorm::None,
        "l2" => FeatureNorm::L2,
        "sqrt_l2" => FeatureNorm::SqrtL2,
        "center_l2" => FeatureNorm::CenterL2,
        other => return Err(format!("unknown norm {other:?}")),
    })
}

fn run() -> Result<(), Box<dyn Error>> {
    let Args {
        store: url,
        items,
        queries,
        norm,
        ef: efs,
        depth,
        data,
    } = Args::parse();
    let backbone = Arc::new(Backbone::load(None, &attrex::default_device()?)?);
    let seeds = seeds(&backbone, &data)?;
    let config = RetrieverConfig {
        norm,
        ..RetrieverConfig::default()
    };

    // The catalogue, made once, and held-out queries.
    let t = Instant::now();
    let (mut colour, mut texture) = (Vec::new(), Vec::new());
    for i in 0..items as u64 {
        let [c, t] = seeds.item(i);
        colour.extend(c);
        texture.extend(t);
    }
    let paths: Vec<PathBuf> = (0..items)
        .map(|i| PathBuf::from(format!("bench/{i:07}.jpg")))
        .collect();
    let qs: Vec<[Vec<f32>; 2]> = (0..queries as u64)
        .map(|q| seeds.item(1_000_000_000 + q))
        .collect();
    eprintln!("{items} items made in {:.1}s", t.elapsed().as_secs_f64());
    fn rows(v: &[f32], d: usize) -> Result<Rows<'_>, attrex::knn::RowsError> {
        Rows::new(v, d)
    }

    // The reference: the memory store's exact ranking.
    let mut memory = Retriever::new(backbone.clone(), config)?;
    memory.extend_vectors(
        paths.clone(),
        rows(&colour, seeds.dims[0])?,
        rows(&texture, seeds.dims[1])?,
    )?;
    let kinds = [
        ("colour", Ranking::Colour),
        ("texture", Ranking::Texture),
        ("both", Ranking::BOTH),
    ];
    let k = NonZeroUsize::new(10).expect("10 > 0");
    let t = Instant::now();
    let truth: Vec<Vec<Vec<PathBuf>>> = kinds
        .iter()
        .map(|(_, ranking)| {
            qs.iter()
                .map(|[c, t]| {
                    let by = By::Features {
                        colour: c,
                        texture: t,
                    };
                    Ok(memory
                        .query(by)
                        .rank(*ranking)
                        .top(k)?
                        .into_iter()
                        .map(|h| h.path)
                        .collect())
                })
                .collect::<Result<_, attrex::RetrieverError>>()
        })
        .collect::<Result<_, _>>()?;
    eprintln!("exact rankings in {:.1}s", t.elapsed().as_secs_f64());

    // Postgres: one bulk load, then the indexes.
    let mut pg_config = PgConfig::with_schema("attrex_bench");
    pg_config.depth = NonZeroUsize::new(depth).ok_or("--depth must be > 0")?;
    let store = PgStore::connect(&url, pg_config)?;
    store.drop_catalogue()?;
    let mut pg = Retriever::with_store(backbone, config, store)?;
    let t = Instant::now();
    pg.extend_vectors(
        paths,
        rows(&colour, seeds.dims[0])?,
        rows(&texture, seeds.dims[1])?,
    )?;
    let total = t.elapsed().as_secs_f64();
    let settle = pg
        .store()
        .last_settle_time()
        .map_or(0.0, |d| d.as_secs_f64());
    out!(
        "ingest items={items} norm={norm:?} rows_s={:.1} rows_per_s={:.0} scales_and_indexes_s={settle:.1} total_s={total:.1} total_per_s={:.0}",
        total - settle,
        items as f64 / (total - settle),
        items as f64 / total
    );
    eprintln!(
        "scales memory {:?}, postgres {:?}",
        memory.scales()?,
        pg.scales()?
    );
    drop(memory);

    for ef in efs {
        pg.store()
            .execute_sql(&format!("SET hnsw.ef_search = {ef}"))?;
        for ((name, ranking), truth) in kinds.iter().zip(&truth) {
            let mut latency = Vec::with_capacity(qs.len());
            let mut found = 0usize;
            for ([c, t], want) in qs.iter().zip(truth) {
                let by = By::Features {
                    colour: c,
                    texture: t,
                };
                let start = Instant::now();
                let hits = pg.query(by).rank(*ranking).top(k)?;
                latency.push(start.elapsed().as_secs_f64() * 1e3);
                found += hits.iter().filter(|h| want.contains(&h.path)).count();
            }
            let recall = found as f64 / (qs.len() * k.get()) as f64;
            out!(
                "query kind={name} items={items} ef_search={ef} depth={} recall@10={recall:.3} p50_ms={:.2} p99_ms={:.2}",
                if *name == "both" {
                    depth.to_string()
                } else {
                    "-".into()
                },
                percentile(&mut latency, 0.5),
                percentile(&mut latency, 0.99)
            );
        }
    }
    Ok(())
}
