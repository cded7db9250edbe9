//! Property tests (proptest): bad bytes give typed errors, never panics, and the index's
//! neighbours follow an independent `f64` scan. Case counts stay modest so the suite stays fast.

use std::num::NonZeroUsize;
use std::path::Path;

use attrex::knn::max_magnitude;
use attrex::{AttributeIndex, Retriever, RetrieverConfig, read_image_bytes};
use image::{DynamicImage, ImageFormat, RgbImage};
use proptest::prelude::*;

use crate::keras;

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Small valid images of every format the crate reads, to damage.
fn valid_images() -> Vec<Vec<u8>> {
    let img = DynamicImage::ImageRgb8(RgbImage::from_fn(17, 9, |x, y| {
        image::Rgb([(x * 13) as u8, (y * 27) as u8, ((x ^ y) * 7) as u8])
    }));
    [
        ImageFormat::Png,
        ImageFormat::Jpeg,
        ImageFormat::Gif,
        ImageFormat::Bmp,
        ImageFormat::Tiff,
        ImageFormat::WebP,
    ]
    .into_iter()
    .map(|f| {
        let mut out = std::io::Cursor::new(Vec::new());
        img.write_to(&mut out, f).unwrap();
        out.into_inner()
    })
    .collect()
}

/// A valid file with bytes flipped (XOR with a non-zero mask) or cut.
#[derive(Debug, Clone)]
enum Damage {
    Flip(Vec<(prop::sample::Index, u8)>),
    Cut(prop::sample::Index),
}

fn damage() -> impl Strategy<Value = Damage> {
    prop_oneof![
        prop::collection::vec((any::<prop::sample::Index>(), 1u8..=255), 1..8)
            .prop_map(Damage::Flip),
        any::<prop::sample::Index>().prop_map(Damage::Cut),
    ]
}

fn apply(bytes: &[u8], d: &Damage) -> Vec<u8> {
    let mut out = bytes.to_vec();
    match d {
        Damage::Flip(flips) => {
            for (i, mask) in flips {
                let i = i.index(out.len());
                out[i] ^= mask;
            }
        }
        Damage::Cut(at) => out.truncate(at.index(out.len())), // strictly shorter
    }
    out
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn decoding_arbitrary_bytes_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..4096)) {
        let _ = read_image_bytes(&bytes, Path::new("arbitrary.bin"));
    }

    #[test]
    fn decoding_damaged_images_never_panics(which in 0usize..6, d in damage()) {
        let valid = &valid_images()[which];
        let _ = read_image_bytes(&apply(valid, &d), Path::new("damaged"));
    }
}

fn saved_index() -> Vec<u8> {
    let mut index = AttributeIndex::new(3).unwrap();
    index.add("red", &[1.0, 0.0, 0.0]).unwrap();
    index.add("blue", &[0.0, 0.0, 1.0]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("i.idx");
    index.save(&p).unwrap();
    std::fs::read(p).unwrap()
}

proptest! {
    #![proptest_config(config(128))]

    #[test]
    fn loading_arbitrary_bytes_as_an_index_is_an_error(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.idx");
        std::fs::write(&p, &bytes).unwrap();
        prop_assert!(AttributeIndex::load(&p).is_err());
    }

    #[test]
    fn a_damaged_index_file_is_an_error(d in damage()) {
        // Every byte is under the sha256 (or is the sha256): any flip or cut must be refused.
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.idx");
        std::fs::write(&p, apply(&saved_index(), &d)).unwrap();
        prop_assert!(AttributeIndex::load(&p).is_err());
    }
}

fn saved_catalogue() -> Vec<u8> {
    static BYTES: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    BYTES
        .get_or_init(|| {
            let r = Retriever::new(keras(), RetrieverConfig::default()).unwrap();
            let dir = tempfile::tempdir().unwrap();
            let p = dir.path().join("c.cat");
            r.save(&p).unwrap();
            std::fs::read(p).unwrap()
        })
        .clone()
}

proptest! {
    #![proptest_config(config(64))]

    #[test]
    fn loading_arbitrary_or_damaged_bytes_as_a_catalogue_is_an_error(
        bytes in prop::collection::vec(any::<u8>(), 0..512),
        d in damage(),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.cat");
        std::fs::write(&p, &bytes).unwrap();
        prop_assert!(Retriever::load(&p, keras()).is_err());
        std::fs::write(&p, apply(&saved_catalogue(), &d)).unwrap();
        prop_assert!(Retriever::load(&p, keras()).is_err());
    }
}

/// One value of a random vector: ordinary, near the index's largest magnitude, tiny
/// (subnormal when squared in f32), zero, or a copy from a small pool (duplicates).
fn value(limit: f32) -> impl Strategy<Value = f32> {
    prop_oneof![
        -1e3f32..1e3,
        (-1.0f32..1.0).prop_map(move |f| f * limit),
        -1e-30f32..1e-30,
        Just(0.0f32),
        prop::sample::select(vec![1.0f32, -2.5, 1e-20]),
    ]
}

fn examples() -> impl Strategy<Value = (usize, Vec<Vec<f32>>, Vec<f32>)> {
    (1usize..=16).prop_flat_map(|dim| {
        let limit = max_magnitude(dim);
        (
            Just(dim),
            prop::collection::vec(prop::collection::vec(value(limit), dim), 1..24),
            prop::collection::vec(value(limit), dim),
        )
    })
}

fn f64_sq(a: &[f32], b: &[f32]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (f64::from(*x) - f64::from(*y)).powi(2))
        .sum()
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn neighbours_follow_a_naive_f64_scan((dim, rows, query) in examples(), k in 1usize..30) {
        let k = NonZeroUsize::new(k).unwrap();
        for search in [attrex::Search::Auto, attrex::Search::Scan] {
            let mut index = AttributeIndex::<usize>::with_dim(dim).unwrap().with_search(search).with_k(k);
            for (i, r) in rows.iter().enumerate() {
                index.add(i % 3, r).unwrap();
            }
            let p = index.classify(&query).unwrap();
            prop_assert_eq!(p.neighbours.len(), k.get().min(rows.len()));
            let all = index.nearest(&query, NonZeroUsize::MAX).unwrap();
            prop_assert_eq!(all.len(), rows.len());
            // The reference: exact squared distances in f64 (every f32 difference and square is
            // exact there up to 2^53 relative precision).
            let d64: Vec<f64> = all.iter().map(|n| f64_sq(&rows[n.id.0 as usize], &query)).collect();
            for w in d64.windows(2) {
                // f32 sums of up to 16 squares: relative error below 16 * 2^-24 = 1e-6; squares
                // below f32's normal range (1.2e-38) round to subnormals or zero.
                prop_assert!(w[0] <= w[1] * (1.0 + 1e-5) + 1e-30, "{:?} {search:?}", d64);
            }
            let best = d64.iter().cloned().fold(f64::INFINITY, f64::min);
            prop_assert!(d64[0] <= best * (1.0 + 1e-5) + 1e-30);
            prop_assert!(p.neighbours.iter().all(|n| n.distance.is_finite()));
        }
    }
}
