//! What the product-aware recipes cost on top of the paper's: one tap computing the paper's
//! colour and texture vectors (blocks 2 and 4, global averages) against one computing
//! `Recipe::Colour` and `Recipe::Texture`, on the same eight photo-sized images (decoded, so
//! the resize and crop are timed too, as in `extract_paths`). Both run the network up to block
//! 4 once; the recipes add the background mask, the HSV histogram and two weighted pools.
//! Issue #10 allows them at most 10 % more time: compare the two lines' img/s.
//!
//! `RAYON_NUM_THREADS=2 cargo bench --bench recipes`. Random weights: the cost does not depend
//! on their values.

use std::sync::Arc;

use attrex::{Backbone, Block, BlockTap, Preprocessing, Recipe};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use image::{DynamicImage, Rgb, RgbImage};

/// A studio photo's layout: a coloured, striped garment in the middle of a near-white ground.
fn photo(k: u32) -> DynamicImage {
    DynamicImage::ImageRgb8(RgbImage::from_fn(600, 800, |x, y| {
        if (150..450).contains(&x) && (150..700).contains(&y) {
            let stripe = ((y / 12) % 2) as u8 * 60;
            Rgb([40 + stripe + (k * 20) as u8, 60, 150 - stripe])
        } else {
            Rgb([244, 243, 240])
        }
    }))
}

fn recipes(c: &mut Criterion) {
    let backbone = Arc::new(
        Backbone::builder()
            .random_weights(7, Preprocessing::Caffe)
            .build()
            .expect("a random ResNet-50 on the default device"),
    );
    eprintln!("engine {}", backbone.engine());
    let images: Vec<DynamicImage> = (0..8).map(photo).collect();
    let mut group = c.benchmark_group("recipes");
    group.sample_size(10);
    group.throughput(Throughput::Elements(images.len() as u64));
    for (name, set) in [
        (
            "paper_b2_b4",
            [Recipe::Paper(Block::B2), Recipe::Paper(Block::B4)],
        ),
        ("colour_texture", [Recipe::Colour, Recipe::Texture]),
    ] {
        let tap = BlockTap::with_recipes(backbone.clone(), &set).unwrap();
        group.bench_function(name, |b| {
            b.iter(|| tap.extract_images(&images).unwrap().len())
        });
    }
    group.finish();
}

criterion_group!(benches, recipes);
criterion_main!(benches);
