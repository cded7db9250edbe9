//! AttributeIndex against a naive scan on seeded random data, its bookkeeping, and its file
//! format under damage.

use std::num::NonZeroUsize;

use attrex::{AttributeIndex, FileError, IndexError, Rows, Search};

use crate::rng::SplitMix64;

fn random_rows(rng: &mut SplitMix64, n: usize, dim: usize) -> Vec<f32> {
    (0..n * dim)
        .map(|_| (rng.next_u64() >> 40) as f32 / (1u64 << 24) as f32)
        .collect()
}

/// The naive reference: every distance, sorted by (distance, insertion order).
fn naive(data: &[f32], dim: usize, q: &[f32], k: usize) -> Vec<(f32, usize)> {
    let mut all: Vec<(f32, usize)> = data
        .chunks_exact(dim)
        .enumerate()
        .map(|(i, x)| {
            (
                x.iter()
                    .zip(q)
                    .map(|(a, b)| (a - b) * (a - b))
                    .sum::<f32>()
                    .sqrt(),
                i,
            )
        })
        .collect();
    all.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    all.truncate(k);
    all
}

fn check_against_naive(data: &[f32], dim: usize, queries: &[f32], k: usize, search: Search) {
    let mut index = AttributeIndex::new(dim).unwrap().with_search(search);
    for (i, row) in data.chunks_exact(dim).enumerate() {
        index.add(format!("c{}", i % 3), row).unwrap();
    }
    let kk = NonZeroUsize::new(k).unwrap();
    for q in queries.chunks_exact(dim) {
        let got = index.nearest(q, kk).unwrap();
        let want = naive(data, dim, q, k);
        assert_eq!(got.len(), want.len());
        for (g, w) in got.iter().zip(&want) {
            let tol = 1e-4 * w.0.max(1.0);
            assert!(
                (g.distance - w.0).abs() <= tol,
                "dim {dim} {search:?}: {} vs {}",
                g.distance,
                w.0
            );
        }
        // Same rows, except where a float near-tie may order two rows either way.
        let mismatched = got
            .iter()
            .zip(&want)
            .filter(|(g, w)| g.id.0 as usize != w.1 && (g.distance - w.0).abs() > 1e-5)
            .count();
        assert_eq!(mismatched, 0, "dim {dim} {search:?}");
    }
}

#[test]
fn both_engines_agree_with_a_naive_scan_on_random_data() {
    let mut rng = SplitMix64::new(42);
    for dim in [1, 2, 3, 8, 12, 13, 64, 257] {
        let data = random_rows(&mut rng, 700, dim);
        let queries = random_rows(&mut rng, 40, dim);
        for search in [Search::Auto, Search::Scan] {
            check_against_naive(&data, dim, &queries, 5, search);
            check_against_naive(&data, dim, &queries[..dim], 1, search);
        }
    }
}

#[test]
fn duplicates_and_zero_vectors_do_not_break_either_engine() {
    for dim in [4, 8, 256] {
        let mut rng = SplitMix64::new(7);
        let mut data = vec![0f32; 500 * dim]; // 500 all-zero rows (dead ReLUs)
        let one = random_rows(&mut rng, 1, dim);
        for _ in 0..300 {
            data.extend_from_slice(&one); // 300 copies of one point
        }
        let mut half_zero = random_rows(&mut rng, 300, dim);
        for (i, v) in half_zero.iter_mut().enumerate() {
            if i % 2 == 0 {
                *v = 0.0; // many rows sharing coordinates on every other axis
            }
        }
        data.extend_from_slice(&half_zero);
        let mut queries = vec![0f32; dim];
        queries.extend_from_slice(&one);
        queries.extend(random_rows(&mut rng, 20, dim));
        for search in [Search::Auto, Search::Scan] {
            check_against_naive(&data, dim, &queries, 5, search);
        }
        // Ties among duplicates come out oldest first.
        let mut index = AttributeIndex::new(dim).unwrap();
        for row in data.chunks_exact(dim) {
            index.add("x", row).unwrap();
        }
        let ids: Vec<u64> = index
            .nearest(&vec![0.0; dim], NonZeroUsize::new(3).unwrap())
            .unwrap()
            .iter()
            .map(|n| n.id.0)
            .collect();
        assert_eq!(ids, [0, 1, 2]);
    }
}

#[test]
fn batch_classification_equals_one_by_one() {
    let mut rng = SplitMix64::new(3);
    for dim in [6, 96] {
        let data = random_rows(&mut rng, 300, dim);
        let mut index = AttributeIndex::new(dim).unwrap();
        for (i, row) in data.chunks_exact(dim).enumerate() {
            index.add(["a", "b", "c", "d"][i % 4], row).unwrap();
        }
        let queries = random_rows(&mut rng, 50, dim);
        let many = index
            .classify_many(Rows::new(&queries, dim).unwrap())
            .unwrap();
        for (q, p) in queries.chunks_exact(dim).zip(&many) {
            assert_eq!(&index.classify(q).unwrap(), p);
        }
    }
}

#[test]
fn votes_evidence_and_tie_break_by_nearest() {
    let mut index = AttributeIndex::new(1)
        .unwrap()
        .with_k(NonZeroUsize::new(4).unwrap());
    index.add("far", &[10.0]).unwrap();
    index.add("far", &[10.5]).unwrap();
    index.add("near", &[1.0]).unwrap();
    index.add("near", &[-2.0]).unwrap();
    index.add("ignored", &[100.0]).unwrap();
    // Two votes each; "near" holds the nearest example.
    let p = index.classify(&[0.0]).unwrap();
    assert_eq!(p.attribute, "near");
    assert_eq!(
        p.votes,
        vec![("near".to_string(), 2), ("far".to_string(), 2)]
    );
    let d: Vec<f32> = p.neighbours.iter().map(|n| n.distance).collect();
    assert_eq!(d, [1.0, 2.0, 10.0, 10.5]);
    let with_sklearn_rule = index
        .clone()
        .with_tie_break(attrex::TieBreak::SmallestLabel);
    assert_eq!(with_sklearn_rule.classify(&[0.0]).unwrap().attribute, "far");
}

#[test]
fn attributes_come_and_go_at_run_time() {
    let mut index = AttributeIndex::new(2)
        .unwrap()
        .with_k(NonZeroUsize::new(1).unwrap());
    let red = index.add("red", &[1.0, 0.0]).unwrap();
    index.add("blue", &[0.0, 1.0]).unwrap();
    index.add("blue", &[0.1, 0.9]).unwrap();
    assert_eq!(index.classify(&[0.9, 0.1]).unwrap().attribute, "red");
    assert!(index.remove(red));
    assert!(!index.remove(red), "already gone");
    assert_eq!(
        index.attributes(),
        ["blue"],
        "an attribute without examples disappears"
    );
    assert_eq!(index.classify(&[0.9, 0.1]).unwrap().attribute, "blue");
    index.add("green", &[5.0, 5.0]).unwrap();
    assert_eq!(index.remove_attribute("blue"), 2);
    assert_eq!(index.len(), 1);
    assert_eq!(index.classify(&[0.0, 0.0]).unwrap().attribute, "green");
    assert_eq!(index.remove_attribute("blue"), 0);
}

#[test]
fn bad_vectors_are_typed_errors() {
    assert!(matches!(
        AttributeIndex::new(0),
        Err(IndexError::ZeroDimension)
    ));
    let mut index = AttributeIndex::new(3).unwrap();
    assert!(matches!(
        index.add("x", &[1.0, 2.0]),
        Err(IndexError::Dimension {
            expected: 3,
            got: 2
        })
    ));
    assert!(matches!(
        index.add("x", &[1.0, f32::NAN, 0.0]),
        Err(IndexError::NotFinite { position: 1 })
    ));
    assert!(matches!(index.classify(&[0.0; 3]), Err(IndexError::Empty)));
    index.add("x", &[0.0; 3]).unwrap();
    assert!(matches!(
        index.classify(&[0.0, 0.0, f32::INFINITY]),
        Err(IndexError::NotFinite { position: 2 })
    ));
    assert!(matches!(
        index.classify_many(Rows::new(&[0.0; 4], 4).unwrap()),
        Err(IndexError::Dimension { .. })
    ));
    assert!(index.len() == 1, "a refused vector is not stored");
}

fn saved_index(dir: &std::path::Path) -> (AttributeIndex, std::path::PathBuf) {
    let mut rng = SplitMix64::new(11);
    let mut index = AttributeIndex::new(5)
        .unwrap()
        .with_k(NonZeroUsize::new(3).unwrap());
    for (i, row) in random_rows(&mut rng, 60, 5).chunks_exact(5).enumerate() {
        index
            .add(["striped", "polka", "plain"][i % 3], row)
            .unwrap();
    }
    index.remove(attrex::ExampleId(4));
    let path = dir.join("colours.idx");
    index.save(&path).unwrap();
    (index, path)
}

#[test]
fn save_and_load_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let (index, path) = saved_index(dir.path());
    let loaded = AttributeIndex::load(&path).unwrap();
    assert_eq!(loaded.len(), index.len());
    assert_eq!(loaded.k(), index.k());
    assert_eq!(loaded.attributes(), index.attributes());
    let q = [0.5; 5];
    assert_eq!(loaded.classify(&q).unwrap(), index.classify(&q).unwrap());
    // New ids continue after the old ones.
    let mut loaded = loaded;
    assert_eq!(loaded.add("plain", &q).unwrap().0, 60);
    let leftovers: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(leftovers.len(), 1, "no temporary file is left behind");
}

#[test]
fn class_number_labels_vote_and_persist() {
    let dir = tempfile::tempdir().unwrap();
    let mut index = AttributeIndex::<usize>::with_dim(2)
        .unwrap()
        .with_k(NonZeroUsize::new(2).unwrap())
        .with_tie_break(attrex::TieBreak::SmallestLabel);
    index.add(7usize, &[1.0, 0.0]).unwrap();
    index.add(3usize, &[-1.0, 0.0]).unwrap();
    // One vote each at equal distance: the smallest label wins.
    assert_eq!(index.classify(&[0.0, 0.0]).unwrap().attribute, 3);
    let path = dir.path().join("classes.idx");
    index.save(&path).unwrap();
    let loaded = AttributeIndex::<usize>::load_labels(&path).unwrap();
    assert_eq!(loaded.attributes(), [7, 3]);
    // An index of class numbers is not an index of names.
    assert!(matches!(
        AttributeIndex::load(&path),
        Err(IndexError::File(FileError::Corrupt { .. }))
    ));
}

#[test]
fn truncated_index_file_is_a_typed_error() {
    let dir = tempfile::tempdir().unwrap();
    let (_, path) = saved_index(dir.path());
    let bytes = std::fs::read(&path).unwrap();
    for cut in [bytes.len() - 1, bytes.len() / 2, 40, 10] {
        std::fs::write(&path, &bytes[..cut]).unwrap();
        let err = AttributeIndex::load(&path).unwrap_err();
        assert!(
            matches!(
                err,
                IndexError::File(
                    FileError::Truncated { .. }
                        | FileError::Corrupt { .. }
                        | FileError::NotOurs { .. }
                )
            ),
            "cut at {cut}: {err:?}"
        );
        assert!(err.to_string().contains(&path.display().to_string()));
    }
    std::fs::write(&path, &bytes[..bytes.len() - 1]).unwrap();
    assert!(matches!(
        AttributeIndex::load(&path),
        Err(IndexError::File(FileError::Truncated { .. }))
    ));
}

#[test]
fn corrupt_index_file_is_a_typed_error() {
    let dir = tempfile::tempdir().unwrap();
    let (_, path) = saved_index(dir.path());
    let mut bytes = std::fs::read(&path).unwrap();
    let n = bytes.len();
    bytes[n - 100] ^= 0x08; // a bit inside the vectors
    std::fs::write(&path, &bytes).unwrap();
    let err = AttributeIndex::load(&path).unwrap_err();
    assert!(
        matches!(err, IndexError::File(FileError::Corrupt { .. })),
        "{err:?}"
    );
}

#[test]
fn wrong_version_and_foreign_files_are_typed_errors() {
    let dir = tempfile::tempdir().unwrap();
    let (_, path) = saved_index(dir.path());
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[8..12].copy_from_slice(&99u32.to_le_bytes());
    std::fs::write(&path, &bytes).unwrap();
    assert!(matches!(
        AttributeIndex::load(&path),
        Err(IndexError::File(FileError::Version {
            found: 99,
            supported: 1,
            ..
        }))
    ));
    std::fs::write(&path, b"PK\x03\x04 some zip file").unwrap();
    assert!(matches!(
        AttributeIndex::load(&path),
        Err(IndexError::File(FileError::NotOurs { .. }))
    ));
    let missing = dir.path().join("none.idx");
    assert!(matches!(
        AttributeIndex::load(&missing),
        Err(IndexError::File(FileError::Io { .. }))
    ));
}

#[test]
fn failed_save_keeps_the_old_file() {
    let dir = tempfile::tempdir().unwrap();
    let (index, path) = saved_index(dir.path());
    let before = std::fs::read(&path).unwrap();
    // Saving into a folder that does not exist fails and touches nothing.
    let err = index
        .save(dir.path().join("no/such/folder/x.idx"))
        .unwrap_err();
    assert!(matches!(err, IndexError::File(FileError::Io { .. })));
    assert_eq!(std::fs::read(&path).unwrap(), before);
}

#[test]
fn a_split_vote_or_a_far_example_is_unsure() {
    let mut index = AttributeIndex::new(1)
        .unwrap()
        .with_k(NonZeroUsize::new(5).unwrap());
    for (label, x) in [("a", 0.0), ("a", 0.1), ("b", 0.2), ("b", 0.3), ("c", 0.4)] {
        index.add(label, &[x]).unwrap();
    }
    // 2 / 2 / 1 votes: the default never abstains; at least 3 votes does.
    let p = index.classify(&[0.0]).unwrap();
    assert_eq!(
        (p.winner_votes(), p.unsure, p.answer()),
        (2, false, Some(&"a".to_string()))
    );
    let strict = index
        .clone()
        .with_abstain(attrex::Abstain::new(3, None).unwrap());
    let p = strict.classify(&[0.0]).unwrap();
    assert_eq!(
        (p.attribute.as_str(), p.unsure, p.answer()),
        ("a", true, None)
    );
    assert!(
        !strict
            .clone()
            .with_abstain(attrex::Abstain::new(2, None).unwrap())
            .classify(&[0.0])
            .unwrap()
            .unsure
    );
    // The nearest example is 10 away from 10.0: unsure beyond 5, sure within 20.
    let far = index
        .clone()
        .with_abstain(attrex::Abstain::new(0, Some(5.0)).unwrap());
    assert!(far.classify(&[10.0]).unwrap().unsure);
    assert!(!far.classify(&[0.05]).unwrap().unsure);
    for bad in [f32::NAN, f32::INFINITY, -1.0] {
        assert!(matches!(
            attrex::Abstain::new(3, Some(bad)),
            Err(IndexError::Threshold { .. })
        ));
    }
}

#[test]
fn the_recipe_is_saved_with_the_index() {
    let dir = tempfile::tempdir().unwrap();
    let (index, path) = saved_index(dir.path());
    assert_eq!(AttributeIndex::load(&path).unwrap().recipe(), None);
    index.with_recipe("colour-v1").save(&path).unwrap();
    assert_eq!(
        AttributeIndex::load(&path).unwrap().recipe(),
        Some("colour-v1")
    );
}

#[test]
fn accuracy_at_coverage_answers_the_surest_first() {
    use attrex::eval::{Outcome, accuracy_at_coverage};
    let o = |truth, predicted, votes, nearest| Outcome {
        truth,
        predicted,
        votes,
        nearest,
    };
    // Sorted surest first: 5 votes (right), 4 votes at 0.5 (right), 4 votes at 0.9 (wrong),
    // 2 votes (wrong).
    let outcomes = [
        o(0, 1, 2, 0.1),
        o(1, 0, 4, 0.9),
        o(0, 0, 5, 3.0),
        o(2, 2, 4, 0.5),
    ];
    assert_eq!(accuracy_at_coverage(&outcomes, 1.0), (1.0, 0.5));
    assert_eq!(accuracy_at_coverage(&outcomes, 0.5), (0.5, 1.0));
    assert_eq!(accuracy_at_coverage(&outcomes, 0.75), (0.75, 2.0 / 3.0));
    assert_eq!(accuracy_at_coverage(&[], 0.8), (0.0, 0.0));
}
