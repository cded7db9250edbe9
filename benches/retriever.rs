//! Retriever query latency over synthetic catalogues of 10k and 100k items (256-d colour +
//! 1024-d texture vectors, as blocks 2 and 4 give), for each ranking, raw and centred+L2; and
//! the cost of adding one item to a catalogue of 2,000 (`retriever_add`).
//!
//! `cargo bench --bench retriever` (the 100k catalogue holds 0.5 GB of vectors, twice with a
//! transform).

use std::hint::black_box;
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use attrex::{
    Backbone, By, FeatureNorm, Preprocessing, Ranking, ResNetConfig, Retriever, RetrieverConfig,
    Rows,
};
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};

mod common;
use common::SplitMix64;

fn relu_like(rng: &mut SplitMix64, n: usize) -> Vec<f32> {
    (0..n)
        .map(|_| {
            let u = (rng.next_u64() >> 40) as f32 / (1u64 << 24) as f32;
            (u - 0.3).max(0.0) * 4.0
        })
        .collect()
}

fn queries(c: &mut Criterion) {
    let device = attrex::default_device().unwrap();
    let backbone = Arc::new(Backbone::random(
        ResNetConfig::keras_resnet50(),
        Preprocessing::Caffe,
        0,
        &device,
    ));
    let mut group = c.benchmark_group("retriever_query");
    group
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    for n in [10_000usize, 100_000] {
        let mut rng = SplitMix64::new(n as u64);
        let colour = relu_like(&mut rng, n * 256);
        let texture = relu_like(&mut rng, n * 1024);
        let paths: Vec<PathBuf> = (0..n)
            .map(|i| PathBuf::from(format!("item{i}.jpg")))
            .collect();
        let (qc, qt) = (relu_like(&mut rng, 256), relu_like(&mut rng, 1024));
        for norm in [FeatureNorm::None, FeatureNorm::CenterL2] {
            let mut r = Retriever::new(
                backbone.clone(),
                RetrieverConfig {
                    norm,
                    ..RetrieverConfig::default()
                },
            )
            .unwrap();
            r.extend_vectors(
                paths.clone(),
                Rows::new(&colour, 256).unwrap(),
                Rows::new(&texture, 1024).unwrap(),
            )
            .unwrap();
            let top10 = NonZeroUsize::new(10).unwrap();
            for (name, ranking) in [
                ("colour", Ranking::Colour),
                ("texture", Ranking::Texture),
                ("combined", Ranking::BOTH),
            ] {
                group.bench_function(BenchmarkId::new(format!("{name}_{norm:?}"), n), |b| {
                    b.iter(|| {
                        let by = By::Features {
                            colour: &qc,
                            texture: &qt,
                        };
                        black_box(r.query(by).rank(ranking).top(top10).unwrap())
                    })
                });
            }
        }
    }
    group.finish();
}

/// Adding one item to a catalogue of 2,000 (and removing it again, so that every iteration sees
/// the same catalogue): issue #12 measured 202 ms per add when the `BOTH` scales were taken
/// over all pairs; they now come from a fixed sample of pairs.
fn single_add(c: &mut Criterion) {
    let device = attrex::default_device().unwrap();
    let backbone = Arc::new(Backbone::random(
        ResNetConfig::keras_resnet50(),
        Preprocessing::Caffe,
        0,
        &device,
    ));
    let n = 2_000;
    let mut rng = SplitMix64::new(7);
    let colour = relu_like(&mut rng, n * 256);
    let texture = relu_like(&mut rng, n * 1024);
    let paths: Vec<PathBuf> = (0..n)
        .map(|i| PathBuf::from(format!("item{i}.jpg")))
        .collect();
    let (one_c, one_t) = (relu_like(&mut rng, 256), relu_like(&mut rng, 1024));
    let mut group = c.benchmark_group("retriever_add");
    group
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    for norm in [FeatureNorm::None, FeatureNorm::CenterL2] {
        let mut r = Retriever::new(
            backbone.clone(),
            RetrieverConfig {
                norm,
                ..RetrieverConfig::default()
            },
        )
        .unwrap();
        r.extend_vectors(
            paths.clone(),
            Rows::new(&colour, 256).unwrap(),
            Rows::new(&texture, 1024).unwrap(),
        )
        .unwrap();
        group.bench_function(BenchmarkId::new(format!("one_item_{norm:?}"), n), |b| {
            b.iter(|| {
                let ids = r
                    .extend_vectors(
                        vec![PathBuf::from("new.jpg")],
                        Rows::new(&one_c, 256).unwrap(),
                        Rows::new(&one_t, 1024).unwrap(),
                    )
                    .unwrap();
                black_box(r.remove(&ids).unwrap())
            })
        });
    }
    group.finish();
}

criterion_group!(benches, queries, single_add);
criterion_main!(benches);
