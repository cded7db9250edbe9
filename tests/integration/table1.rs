//! The paper's Table 1 on the dev sets, and the fold splitter against scikit-learn.
//!
//! Reference accuracies: `../shared/data/README.md`, produced by `../shared/reference/ref_pipeline.py`
//! (PyTorch + scikit-learn: KNeighborsClassifier(5), StratifiedKFold(5, shuffle=True,
//! random_state=0), mean of the fold accuracies). attrex uses the same split (its splitter
//! reproduces scikit-learn's, tested below) and scikit-learn's tie rule, so what remains is the
//! features themselves (JPEG decoder, resize filter).

use std::sync::Arc;

use attrex::eval::{CvParams, cross_validate, stratified_folds};
use attrex::{BlockTap, Dataset, extract_dataset};

use crate::{cached_extraction, fixtures, keras, shared};

#[test]
fn stratified_folds_reproduce_scikit_learn() {
    // tests/fixtures/sklearn_folds.json: made by make_sklearn_folds.py with scikit-learn 1.9.
    let text = std::fs::read_to_string(fixtures().join("sklearn_folds.json")).unwrap();
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    let cases = json["cases"].as_array().unwrap();
    assert!(cases.len() >= 18);
    for case in cases {
        let labels: Vec<usize> = serde_json::from_value(case["labels"].clone()).unwrap();
        let want: Vec<usize> = serde_json::from_value(case["folds"].clone()).unwrap();
        let folds = case["n_splits"].as_u64().unwrap() as usize;
        let seed = case["seed"].as_u64().unwrap() as u32;
        let got = stratified_folds(&labels, folds, seed).unwrap();
        assert_eq!(got, want, "{} folds={folds} seed={seed}", case["name"]);
    }
}

fn table1(set: &str, reference: [f64; 5]) {
    let dataset = Dataset::open(shared().join("data").join(set)).unwrap();
    let tap = BlockTap::all(Arc::clone(&keras()));
    let options = cached_extraction();
    let features = extract_dataset(&tap, dataset.paths(), &options).unwrap();
    assert_eq!(
        features.len(),
        dataset.items.len(),
        "no image may be dropped"
    );
    let labels = features.select(&dataset.labels());
    // k = 5, 5 folds, seed 0, scikit-learn's tie rule: the reference's settings.
    let params = CvParams::default();
    for ((info, matrix), want) in features.iter().zip(reference) {
        let r = cross_validate(matrix, &labels, &params).unwrap();
        eprintln!(
            "{set} block={} dim={} accuracy={:.3} reference={want:.3}",
            info.block.number(),
            info.dim,
            r.accuracy
        );
        assert!(
            (r.accuracy - want).abs() <= 0.02,
            "{set} block {}: accuracy {:.3}, reference {want:.3}",
            info.block.number(),
            r.accuracy
        );
    }
}

#[test]
fn table1_colour_matches_the_reference() {
    table1("color", [0.507, 0.555, 0.532, 0.475, 0.378]);
}

#[test]
fn table1_texture_matches_the_reference() {
    table1("texture", [0.235, 0.562, 0.635, 0.666, 0.653]);
}
