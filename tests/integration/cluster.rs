//! HDBSCAN and the ARI/AMI scores against the reference Python `hdbscan` 0.8 and scikit-learn.
//!
//! `../shared/fixtures/hdbscan_blobs.csv`: 660 points in 8-d (5 blobs + 60 noise points), with
//! the generating blob (`true`) and the reference labelling (`hdbscan`, min_cluster_size 50,
//! min_samples 10, Euclidean); its README gives ARI 0.9915 and AMI 0.9887 of the reference
//! labelling against `true`.

use attrex::Rows;
use attrex::cluster::{
    ClusterError, HdbscanParams, adjusted_mutual_information, adjusted_rand_index, hdbscan,
};

use crate::shared;

fn blobs() -> (Vec<f32>, Vec<i64>, Vec<i64>) {
    let text = std::fs::read_to_string(shared().join("fixtures/hdbscan_blobs.csv")).unwrap();
    let (mut x, mut truth, mut reference) = (Vec::new(), Vec::new(), Vec::new());
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split(',').collect();
        x.extend(f[..8].iter().map(|v| v.parse::<f32>().unwrap()));
        truth.push(f[8].parse().unwrap());
        reference.push(f[9].parse().unwrap());
    }
    (x, truth, reference)
}

#[test]
fn ari_and_ami_match_the_fixture_readme() {
    let (_, truth, reference) = blobs();
    let ari = adjusted_rand_index(&truth, &reference);
    let ami = adjusted_mutual_information(&truth, &reference);
    assert!((ari - 0.9915).abs() < 5e-5, "ARI {ari}");
    assert!((ami - 0.9887).abs() < 5e-5, "AMI {ami}");
}

#[test]
fn hdbscan_reproduces_the_reference_clusters() {
    let (x, truth, reference) = blobs();
    let labels = hdbscan(Rows::new(&x, 8).unwrap(), HdbscanParams::default()).unwrap();
    let clusters = labels
        .iter()
        .filter(|&&l| l >= 0)
        .collect::<std::collections::BTreeSet<_>>()
        .len();
    let noise = labels.iter().filter(|&&l| l < 0).count();
    let agreement = adjusted_rand_index(&reference, &labels);
    eprintln!(
        "{clusters} clusters, {noise} noise points; ARI vs reference {agreement:.4}; vs truth ARI {:.4} AMI {:.4}",
        adjusted_rand_index(&truth, &labels),
        adjusted_mutual_information(&truth, &labels)
    );
    assert!(
        agreement >= 0.98,
        "ARI against the reference labelling {agreement}"
    );
}

#[test]
fn bad_parameters_and_input_are_typed_errors() {
    let (x, _, _) = blobs();
    let rows = Rows::new(&x, 8).unwrap();
    let small = HdbscanParams {
        min_cluster_size: 1,
        ..HdbscanParams::default()
    };
    assert!(matches!(
        hdbscan(rows, small),
        Err(ClusterError::Param {
            name: "min_cluster_size",
            ..
        })
    ));
    let mut nan = x.clone();
    nan[5] = f32::NAN;
    let err = hdbscan(Rows::new(&nan, 8).unwrap(), HdbscanParams::default()).unwrap_err();
    assert!(matches!(err, ClusterError::Rows(_)), "{err:?}");
    let err = hdbscan(Rows::new(&[], 8).unwrap(), HdbscanParams::default()).unwrap_err();
    assert!(matches!(err, ClusterError::Hdbscan(_)), "{err:?}");
    assert!(
        std::error::Error::source(&err).is_some(),
        "the cause is kept"
    );
}
