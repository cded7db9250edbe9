//! The product-aware recipes on the dev sets: each beats the paper's block by a stated
//! margin, and lands within 0.02 of the Python reference implementation of the same recipe.
//!
//! Reference figures: the research note behind `src/recipe` (a NumPy + scikit-learn
//! implementation of exactly these recipes on the same crops, `KNeighborsClassifier(5)`,
//! `StratifiedKFold(5, shuffle=True, random_state=0)`): colour 0.685, texture 0.791; the
//! paper's blocks on the same folds: block 2 colour 0.555, block 4 texture 0.666
//! (`../shared/data/README.md`).

use std::sync::Arc;

use attrex::eval::{CvParams, cross_validate};
use attrex::{Block, BlockTap, Dataset, Recipe, extract_dataset};

use crate::{cached_extraction, keras, shared};

/// Accuracy of `recipe` and of the paper's `block` on the dev set `set`, one forward pass.
fn accuracies(set: &str, recipe: Recipe, block: Block) -> (f64, f64) {
    let dataset = Dataset::open(shared().join("data").join(set)).unwrap();
    let tap =
        BlockTap::with_recipes(Arc::clone(&keras()), &[recipe, Recipe::Paper(block)]).unwrap();
    let features = extract_dataset(&tap, dataset.paths(), &cached_extraction()).unwrap();
    assert_eq!(
        features.len(),
        dataset.items.len(),
        "no image may be dropped"
    );
    let labels = features.select(&dataset.labels());
    let params = CvParams::default();
    let acc = |r: Recipe| {
        cross_validate(features.recipe(r).unwrap(), &labels, &params)
            .unwrap()
            .accuracy
    };
    let (got, paper) = (acc(recipe), acc(Recipe::Paper(block)));
    eprintln!("{set}: recipe={recipe} accuracy={got:.3} paper {block} accuracy={paper:.3}");
    (got, paper)
}

#[test]
fn the_colour_recipe_beats_block_2_by_a_tenth() {
    let (colour, paper) = accuracies("color", Recipe::Colour, Block::B2);
    assert!(
        colour >= paper + 0.10,
        "colour {colour:.3} vs block 2 {paper:.3}"
    );
    assert!(
        (colour - 0.685).abs() <= 0.02,
        "colour {colour:.3}, reference 0.685"
    );
}

#[test]
fn the_texture_recipe_beats_block_4_by_a_tenth() {
    let (texture, paper) = accuracies("texture", Recipe::Texture, Block::B4);
    assert!(
        texture >= paper + 0.10,
        "texture {texture:.3} vs block 4 {paper:.3}"
    );
    assert!(
        (texture - 0.791).abs() <= 0.02,
        "texture {texture:.3}, reference 0.791"
    );
}

#[test]
fn both_engines_compute_the_same_recipes() {
    use attrex::{Backbone, Engine, Preprocessing, ResNetConfig};
    let make = |engine| {
        Backbone::builder()
            .config(ResNetConfig::keras_resnet50())
            .random_weights(11, Preprocessing::Caffe)
            .device(crate::device())
            .engine(engine)
            .build()
            .unwrap()
    };
    let images = product_photos(3);
    let recipes = [Recipe::Colour, Recipe::Texture, Recipe::Paper(Block::B3)];
    let burn = BlockTap::with_recipes(Arc::new(make(Engine::Burn)), &recipes).unwrap();
    let b = burn.extract_images(&images).unwrap();
    for isa in crate::engines::native_isas() {
        let native = BlockTap::with_recipes(Arc::new(make(Engine::Native(isa))), &recipes).unwrap();
        let a = native.extract_images(&images).unwrap();
        for (fa, fb) in a.iter().zip(&b) {
            for (r, (va, vb)) in recipes.iter().zip(fa.blocks.iter().zip(&fb.blocks)) {
                let e = crate::rel_l2(va, vb);
                assert!(e < 1e-5, "{isa} {r}: relative error {e:e}");
            }
        }
    }
}

/// `n` synthetic product photos: a coloured garment on a near-white background, each a
/// different width and colour, so that the recipes' pixel weights differ between them.
pub fn product_photos(n: u32) -> Vec<image::DynamicImage> {
    (0..n)
        .map(|k| {
            image::DynamicImage::ImageRgb8(image::RgbImage::from_fn(120 + 30 * k, 160, |x, y| {
                if (30..90).contains(&x) && (40..140).contains(&y) {
                    image::Rgb([(x * 3 + k * 40) as u8, (y * 2) as u8, 90])
                } else {
                    image::Rgb([240, 240, 238])
                }
            }))
        })
        .collect()
}
