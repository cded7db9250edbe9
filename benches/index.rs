//! AttributeIndex: build and query time for 1k, 10k and 100k references at dimensions 8, 64,
//! 256 and 2048, for the k-d tree engine, the blocked scan and a naive loop; plus kiddo's tree
//! alone at 2-64 dimensions against the scan, to show where the tree stops paying off.
//!
//! `cargo bench --bench index` (a few minutes; the 100k x 2048 case holds 800 MB of vectors).
//! `cargo bench --bench index -- crossover` runs only the crossover group.

use std::hint::black_box;
use std::num::NonZeroUsize;
use std::time::Duration;

use attrex::{AttributeIndex, Search};
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};

mod common;
use common::SplitMix64;

fn rows(seed: u64, n: usize, dim: usize) -> Vec<f32> {
    let mut rng = SplitMix64::new(seed);
    (0..n * dim)
        .map(|_| (rng.next_u64() >> 40) as f32 / (1u64 << 24) as f32)
        .collect()
}

fn index_of(data: &[f32], dim: usize, search: Search) -> AttributeIndex {
    let mut index = AttributeIndex::new(dim)
        .expect("dim > 0")
        .with_search(search);
    for (i, row) in data.chunks_exact(dim).enumerate() {
        index
            .add(["a", "b", "c", "d", "e"][i % 5], row)
            .expect("finite rows");
    }
    index
}

/// The naive reference: every distance, then a full sort.
fn naive(data: &[f32], dim: usize, q: &[f32], k: usize) -> Vec<(f32, usize)> {
    let mut all: Vec<(f32, usize)> = data
        .chunks_exact(dim)
        .enumerate()
        .map(|(i, x)| {
            (
                x.iter().zip(q).map(|(a, b)| (a - b) * (a - b)).sum::<f32>(),
                i,
            )
        })
        .collect();
    all.sort_by(|a, b| a.0.total_cmp(&b.0));
    all.truncate(k);
    all
}

fn engines(c: &mut Criterion) {
    let k = NonZeroUsize::new(5).unwrap();
    let mut group = c.benchmark_group("index");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(2));
    for dim in [8usize, 64, 256, 2048] {
        for n in [1_000usize, 10_000, 100_000] {
            let data = rows(1, n, dim);
            let queries = rows(2, 16, dim);
            let id = format!("n{n}_d{dim}");
            // The tree engine serves up to 12 dimensions; above, Search::Auto is the scan.
            let mut list = vec![("scan", Search::Scan)];
            if dim <= attrex::knn::KDTREE_MAX_DIM {
                list.push(("kdtree", Search::Auto));
            }
            for (name, search) in list {
                group.bench_function(BenchmarkId::new(format!("build_{name}"), &id), |b| {
                    b.iter(|| {
                        let index = index_of(&data, dim, search);
                        // The tree is built lazily on the first query.
                        black_box(index.nearest(&queries[..dim], k).unwrap());
                    })
                });
                let index = index_of(&data, dim, search);
                index.nearest(&queries[..dim], k).unwrap();
                group.bench_function(BenchmarkId::new(format!("query_{name}"), &id), |b| {
                    let mut i = 0;
                    b.iter(|| {
                        i = (i + 1) % 16;
                        black_box(index.nearest(&queries[i * dim..(i + 1) * dim], k).unwrap())
                    })
                });
            }
            group.bench_function(BenchmarkId::new("query_naive", &id), |b| {
                let mut i = 0;
                b.iter(|| {
                    i = (i + 1) % 16;
                    black_box(naive(&data, dim, &queries[i * dim..(i + 1) * dim], 5))
                })
            });
        }
    }
    group.finish();
}

macro_rules! kiddo_query {
    ($group:expr, $data:expr, $queries:expr, $($k:literal),*) => {$(
        {
            use kiddo::dist::SquaredEuclidean;
            let pts: Vec<[f32; $k]> = rows(1, 100_000, $k).chunks_exact($k).map(|c| c.try_into().unwrap()).collect();
            let tree: kiddo::ImmutableKdTree<f32, $k> = kiddo::ImmutableKdTree::new_from_slice(&pts).unwrap();
            let qs = rows(2, 16, $k);
            $group.bench_function(BenchmarkId::new("kiddo", format!("n100000_d{}", $k)), |b| {
                let mut i = 0;
                b.iter(|| {
                    i = (i + 1) % 16;
                    let q: &[f32; $k] = qs[i * $k..(i + 1) * $k].try_into().unwrap();
                    black_box(tree.query(q).nearest_n::<SquaredEuclidean<f32>>(NonZeroUsize::new(5).unwrap()).execute())
                })
            });
            let data = rows(1, 100_000, $k);
            let index = index_of(&data, $k, Search::Scan);
            $group.bench_function(BenchmarkId::new("scan", format!("n100000_d{}", $k)), |b| {
                let mut i = 0;
                b.iter(|| {
                    i = (i + 1) % 16;
                    black_box(index.nearest(&qs[i * $k..(i + 1) * $k], NonZeroUsize::new(5).unwrap()).unwrap())
                })
            });
        }
    )*};
}

fn crossover(c: &mut Criterion) {
    let mut group = c.benchmark_group("crossover");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(2));
    kiddo_query!(group, data, queries, 2, 4, 8, 10, 12, 16, 24, 32, 64);
    group.finish();
}

criterion_group!(benches, engines, crossover);
criterion_main!(benches);
