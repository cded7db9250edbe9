//! UMAP: determinism, transform, supervision, errors, and Table 2 quality on the dev sets
//! against umap-learn's figures (`../shared/reference/README.md`, from `ref_umap.py`,
//! umap-learn 0.5, n_neighbors 15, min_dist 0.1, seed 0).

use std::sync::Arc;

use attrex::eval::{CvParams, Reduced, cross_validate, cross_validate_inductive};
use attrex::reduce::{Umap, UmapError, UmapParams};
use attrex::{Block, BlockTap, Dataset, Rows, extract_dataset};

use crate::rng::SplitMix64;
use crate::{cached_extraction, keras, shared};

/// Four Gaussian blobs in 20-d, 60 points each.
fn blobs(seed: u64) -> (Vec<f32>, Vec<usize>) {
    let mut rng = SplitMix64::new(seed);
    let mut normal = move || {
        let u = ((rng.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
        let v = ((rng.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
        ((-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()) as f32
    };
    let (mut x, mut y) = (Vec::new(), Vec::new());
    for c in 0..4 {
        for _ in 0..60 {
            for d in 0..20 {
                let centre = if d == c { 6.0 } else { 0.0 };
                x.push(centre + normal());
            }
            y.push(c);
        }
    }
    (x, y)
}

/// k = 5, 5 folds, seed 0, scikit-learn's tie rule.
fn knn_accuracy_on(embedding: Rows<'_>, y: &[usize]) -> f64 {
    cross_validate(embedding, y, &CvParams::default())
        .unwrap()
        .accuracy
}

fn rows(x: &[f32], dim: usize) -> Rows<'_> {
    Rows::new(x, dim).unwrap()
}

#[test]
fn fit_is_deterministic_and_separates_blobs() {
    let (x, y) = blobs(1);
    let p = UmapParams::default();
    let a = Umap::fit(rows(&x, 20), p).unwrap();
    let b = Umap::fit(rows(&x, 20), p).unwrap();
    assert_eq!(a.embedding(), b.embedding(), "same seed, same embedding");
    assert_eq!(a.embedding().as_slice().len(), 240 * 2);
    assert!(knn_accuracy_on(a.embedding(), &y) > 0.97);
    let c = Umap::fit(rows(&x, 20), UmapParams { seed: 7, ..p }).unwrap();
    assert_ne!(a.embedding(), c.embedding(), "another seed, another layout");
}

#[test]
fn transform_places_new_points_with_their_blob() {
    let (x, y) = blobs(2);
    let (train, test): (Vec<usize>, Vec<usize>) = (0..240).partition(|i| i % 4 != 0);
    let pick = |ix: &[usize]| {
        ix.iter()
            .flat_map(|&i| x[i * 20..(i + 1) * 20].to_vec())
            .collect::<Vec<f32>>()
    };
    let umap = Umap::fit(
        rows(&pick(&train), 20),
        UmapParams {
            n_components: 3,
            ..UmapParams::default()
        },
    )
    .unwrap();
    let placed = umap.transform(rows(&pick(&test), 20)).unwrap();
    assert_eq!(placed.len(), test.len() * 3);
    let mut index = attrex::AttributeIndex::new(3).unwrap();
    for (row, &i) in umap.embedding().iter().zip(&train) {
        index.add(y[i].to_string(), row).unwrap();
    }
    let correct = placed
        .chunks_exact(3)
        .zip(&test)
        .filter(|(p, i)| index.classify(p).unwrap().attribute == y[**i].to_string())
        .count();
    assert!(
        correct as f64 / test.len() as f64 > 0.95,
        "{correct}/{}",
        test.len()
    );
    assert!(umap.transform(rows(&[f32::NAN; 20], 20)).is_err());
    assert!(umap.transform(rows(&[0.0; 19], 19)).is_err());
}

#[test]
fn supervision_pulls_classes_apart() {
    // Two overlapping classes: labels help the layout separate them.
    let mut rng = SplitMix64::new(5);
    let (mut x, mut y) = (Vec::new(), Vec::new());
    for i in 0..200 {
        let c = i % 2;
        for d in 0..10 {
            let shift = if d == 0 { c as f32 * 0.8 } else { 0.0 };
            x.push(shift + (rng.next_u64() >> 40) as f32 / (1u64 << 24) as f32 * 2.0);
        }
        y.push(c);
    }
    let p = UmapParams::default();
    let plain = knn_accuracy_on(Umap::fit(rows(&x, 10), p).unwrap().embedding(), &y);
    let supervised = knn_accuracy_on(
        Umap::fit_supervised(rows(&x, 10), &y, p)
            .unwrap()
            .embedding(),
        &y,
    );
    eprintln!("kNN accuracy on the embedding: unsupervised {plain:.3}, supervised {supervised:.3}");
    assert!(supervised > plain + 0.1);
}

#[test]
fn bad_input_is_a_typed_error() {
    assert!(Rows::new(&[0.0; 10], 3).is_err(), "not rows of 3");
    assert!(
        Umap::fit(rows(&[0.0; 30], 3), UmapParams::default()).is_err(),
        "10 points, 15 neighbours"
    );
    let (mut x, _) = blobs(3);
    x[17] = f32::NAN;
    assert!(Umap::fit(rows(&x, 20), UmapParams::default()).is_err());
    assert!(Umap::fit_supervised(rows(&x, 20), &[0; 3], UmapParams::default()).is_err());
}

#[test]
fn every_parameter_is_checked() {
    let ok = UmapParams::default();
    assert!(ok.check().is_ok());
    for (bad, name) in [
        (
            UmapParams {
                n_neighbors: 1,
                ..ok
            },
            "n_neighbors",
        ),
        (
            UmapParams {
                n_components: 0,
                ..ok
            },
            "n_components",
        ),
        (UmapParams { spread: 0.0, ..ok }, "spread"),
        (
            UmapParams {
                min_dist: 2.0,
                ..ok
            },
            "min_dist",
        ),
        (
            UmapParams {
                min_dist: f32::NAN,
                ..ok
            },
            "min_dist",
        ),
        (
            UmapParams {
                learning_rate: -1.0,
                ..ok
            },
            "learning_rate",
        ),
        (
            UmapParams {
                target_weight: 1.5,
                ..ok
            },
            "target_weight",
        ),
    ] {
        match bad.check() {
            Err(UmapError::Param { name: n, .. }) => assert_eq!(n, name),
            other => panic!("{name}: {other:?}"),
        }
    }
}

/// Table 2 at 8 dimensions under both protocols, within 0.03 of umap-learn or better.
fn table2(set: &str, block: Block, all_ref: f64, inductive_ref: f64) {
    let dataset = Dataset::open(shared().join("data").join(set)).unwrap();
    let tap = BlockTap::new(Arc::clone(&keras()), &[block]).unwrap();
    let options = cached_extraction();
    let f = extract_dataset(&tap, dataset.paths(), &options).unwrap();
    let labels = f.select(&dataset.labels());
    let x = f.block(block).unwrap();
    // k = 5, 5 folds, seed 0, scikit-learn's tie rule.
    let cv = CvParams::default();
    let params = UmapParams {
        n_components: 8,
        ..UmapParams::default()
    };
    let start = std::time::Instant::now();
    let umap = Umap::fit(x, params).unwrap();
    let fit = start.elapsed();
    let all = cross_validate(umap.embedding(), &labels, &cv)
        .unwrap()
        .accuracy;
    let inductive = cross_validate_inductive(x, &labels, &cv, |tr, te| {
        let u = Umap::fit(tr, params)?;
        Ok(Reduced {
            train: u.embedding().as_slice().to_vec(),
            test: u.transform(te)?,
            dim: 8,
        })
    })
    .unwrap()
    .accuracy;
    eprintln!(
        "{set} {block} 8-d: all {all:.3} (umap-learn {all_ref}), inductive {inductive:.3} (umap-learn {inductive_ref}); fit {fit:.2?}"
    );
    assert!(
        all >= all_ref - 0.03,
        "{set}: protocol all {all:.3} vs {all_ref}"
    );
    assert!(
        inductive >= inductive_ref - 0.03,
        "{set}: inductive {inductive:.3} vs {inductive_ref}"
    );
}

#[test]
fn table2_colour_block2_at_8d() {
    table2("color", Block::B2, 0.495, 0.487);
}

#[test]
fn table2_texture_block4_at_8d() {
    table2("texture", Block::B4, 0.674, 0.569);
}
