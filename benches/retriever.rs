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

/// A random ResNet-50: the retriever needs one, the timings do not read it.
fn random_backbone() -> Arc<Backbone> {
    let device = attrex::default_device().unwrap();
    Arc::new(Backbone::random(
        ResNetConfig::keras_resnet50(),
        Preprocessing::Caffe,
        0,
        &device,
    ))
}

/// `n` items of ReLU-like 256-d colour and 1024-d texture vectors.
struct Synthetic {
    paths: Vec<PathBuf>,
    colour: Vec<f32>,
    texture: Vec<f32>,
}

impl Synthetic {
    fn new(rng: &mut SplitMix64, n: usize) -> Self {
        Self {
            colour: relu_like(rng, n * 256),
            texture: relu_like(rng, n * 1024),
            paths: (0..n)
                .map(|i| PathBuf::from(format!("item{i}.jpg")))
                .collect(),
        }
    }

    /// A catalogue of these items under `norm`.
    fn catalogue(&self, backbone: &Arc<Backbone>, norm: FeatureNorm) -> Retriever {
        let mut r = Retriever::new(
            backbone.clone(),
            RetrieverConfig {
                norm,
                ..RetrieverConfig::default()
            },
        )
        .unwrap();
        r.extend_vectors(
            self.paths.clone(),
            Rows::new(&self.colour, 256).unwrap(),
            Rows::new(&self.texture, 1024).unwrap(),
        )
        .unwrap();
        r
    }
}

fn queries(c: &mut Criterion) {
    let backbone = random_backbone();
    let mut group = c.benchmark_group("retriever_query");
    group
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    for n in [10_000usize, 100_000] {
        let mut rng = SplitMix64::new(n as u64);
        let items = Synthetic::new(&mut rng, n);
        let (qc, qt) = (relu_like(&mut rng, 256), relu_like(&mut rng, 1024));
        for norm in [FeatureNorm::None, FeatureNorm::CenterL2] {
            let r = items.catalogue(&backbone, norm);
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
    let backbone = random_backbone();
    let n = 2_000;
    let mut rng = SplitMix64::new(7);
    let items = Synthetic::new(&mut rng, n);
    let (one_c, one_t) = (relu_like(&mut rng, 256), relu_like(&mut rng, 1024));
    let mut group = c.benchmark_group("retriever_add");
    group
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    for norm in [FeatureNorm::None, FeatureNorm::CenterL2] {
        let mut r = items.catalogue(&backbone, norm);
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
