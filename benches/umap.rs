//! UMAP fit time on 1000 x 256 points (10 Gaussian blobs, like block-2 features of a small
//! catalogue), to 2 and 8 dimensions, and transform of 200 new points. Compare with umap-learn
//! on the same shapes: `python benches/umap_side_by_side.py`.

use std::hint::black_box;
use std::time::Duration;

use attrex::Rows;
use attrex::reduce::{Umap, UmapParams};
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};

mod common;
use common::SplitMix64;

fn blobs(n: usize, dim: usize, seed: u64) -> Vec<f32> {
    let mut rng = SplitMix64::new(seed);
    let mut normal = move || {
        let u = ((rng.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
        let v = ((rng.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
        ((-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()) as f32
    };
    let centres: Vec<f32> = (0..10 * dim).map(|_| normal() * 3.0).collect();
    (0..n)
        .flat_map(|i| {
            let c = (i % 10) * dim;
            (0..dim)
                .map(|d| centres[c + d] + normal())
                .collect::<Vec<_>>()
        })
        .collect()
}

fn umap(c: &mut Criterion) {
    let mut group = c.benchmark_group("umap");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(8));
    let x = blobs(1000, 256, 1);
    let x = Rows::new(&x, 256).expect("whole rows");
    for d in [2usize, 8] {
        let p = UmapParams {
            n_components: d,
            ..UmapParams::default()
        };
        group.bench_function(BenchmarkId::new("fit_1000x256", d), |b| {
            b.iter(|| black_box(Umap::fit(x, p).unwrap()))
        });
        let fitted = Umap::fit(x, p).unwrap();
        let new = blobs(200, 256, 2);
        let new = Rows::new(&new, 256).expect("whole rows");
        group.bench_function(BenchmarkId::new("transform_200", d), |b| {
            b.iter(|| black_box(fitted.transform(new).unwrap()))
        });
    }
    group.finish();
}

criterion_group!(benches, umap);
criterion_main!(benches);
