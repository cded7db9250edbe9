//! Parity with the real Keras ImageNet weights, for every engine: Burn's, and the native one
//! with each instruction set this CPU has (see `engines.rs`).
//!
//! Expected values: `../shared/fixtures/reference_chelsea.safetensors`, computed by an
//! independent NumPy forward pass of the same weights and checked against PyTorch
//! (see `../shared/fixtures/README.md`).

use std::sync::Arc;

use attrex::burn::tensor::{Tensor, TensorData};
use attrex::{Backbone, Block, BlockTap, Engine};

use crate::engines::native_isas;
use crate::{device, keras, read_safetensors, rel_l2, shared};

fn reference() -> std::collections::BTreeMap<String, (Vec<usize>, Vec<f32>)> {
    read_safetensors(&shared().join("fixtures/reference_chelsea.safetensors"))
}

/// The five pooled blocks of `backbone` for the reference's preprocessed input are within
/// 1e-4 (relative L2) of the reference's.
fn pooled_blocks_match_reference(backbone: Arc<Backbone>) {
    let r = reference();
    let engine = backbone.engine();
    let (shape, input) = &r["input_chw_caffe_rgb"];
    assert_eq!(shape, &[3, 224, 224]);
    let x = Tensor::<4>::from_data(
        TensorData::new(input.clone(), [1, 3, 224, 224]),
        backbone.device(),
    );
    let features = BlockTap::all(backbone).extract_tensor(x).unwrap();
    for (i, got) in features[0].blocks.iter().enumerate() {
        let want = &r[&format!("pooled_{i}")].1;
        let err = rel_l2(got, want);
        eprintln!("{engine}, block{}: relative L2 error {err:.2e}", i + 1);
        assert!(
            err < 1e-4,
            "{engine}, block{}: relative L2 error {err:.3e} >= 1e-4",
            i + 1
        );
    }
}

#[test]
fn pooled_blocks_match_reference_from_preprocessed_input() {
    pooled_blocks_match_reference(keras());
}

#[test]
fn pooled_blocks_match_reference_with_the_burn_engine() {
    let backbone = Backbone::builder()
        .device(device())
        .engine(Engine::Burn)
        .build()
        .unwrap_or_else(|e| panic!("the real weights are needed: {e}"));
    pooled_blocks_match_reference(Arc::new(backbone));
}

#[test]
fn pooled_blocks_match_reference_with_every_native_isa() {
    for isa in native_isas() {
        let backbone = Backbone::builder()
            .device(device())
            .engine(Engine::Native(isa))
            .build()
            .unwrap_or_else(|e| panic!("the real weights are needed: {e}"));
        pooled_blocks_match_reference(Arc::new(backbone));
    }
}

#[test]
fn logits_match_reference_and_argmax_is_egyptian_cat() {
    let r = reference();
    let backbone = keras();
    let x = Tensor::<4>::from_data(
        TensorData::new(r["input_chw_caffe_rgb"].1.clone(), [1, 3, 224, 224]),
        backbone.device(),
    );
    let logits: Vec<f32> = backbone
        .net()
        .forward(x)
        .expect("the ImageNet head is loaded")
        .into_data()
        .try_into_vec()
        .unwrap();
    let argmax = logits
        .iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .unwrap()
        .0;
    assert_eq!(argmax, 285, "ImageNet class 285 is 'Egyptian cat'");
    assert!(rel_l2(&logits, &r["logits"].1) < 1e-4);
}

#[test]
fn end_to_end_from_png_is_within_two_percent() {
    let r = reference();
    let tap = BlockTap::all(keras());
    let features = tap
        .extract_paths(&[shared().join("fixtures/chelsea.png")])
        .unwrap();
    for (i, got) in features[0].blocks.iter().enumerate() {
        let err = rel_l2(got, &r[&format!("pooled_{i}")].1);
        eprintln!("block{} end to end: relative L2 error {err:.2e}", i + 1);
        assert!(
            err < 2e-2,
            "block{}: relative L2 error {err:.3e} >= 2e-2",
            i + 1
        );
    }
}

#[test]
fn preprocessing_matches_reference_input() {
    let r = reference();
    let image = attrex::read_image(&shared().join("fixtures/chelsea.png")).unwrap();
    let ours = attrex::Preprocessing::Caffe.prepare(&image);
    let want = &r["input_chw_caffe_rgb"].1;
    let mean_abs = ours
        .iter()
        .zip(want)
        .map(|(a, b)| f64::from((a - b).abs()))
        .sum::<f64>()
        / want.len() as f64;
    eprintln!("preprocessing: mean |ours - PIL| = {mean_abs:.3} (0..255 scale)");
    // PIL and `image` resize with slightly different filters; both round to u8.
    assert!(mean_abs < 1.0, "mean absolute difference {mean_abs}");
}

#[test]
fn shallow_tap_matches_full_tap_and_reports_dims() {
    let backbone = keras();
    let full = BlockTap::all(backbone.clone());
    let colour = BlockTap::new(backbone.clone(), &[Block::B2]).unwrap();
    let infos = colour.taps();
    assert_eq!(infos.len(), 1);
    assert_eq!((infos[0].name.as_str(), infos[0].dim), ("block2", 256));
    let dims: Vec<usize> = full.taps().iter().map(|t| t.dim).collect();
    assert_eq!(dims, [64, 256, 512, 1024, 2048]);
    let path = shared().join("fixtures/chelsea.png");
    let a = colour.extract_paths(&[&path]).unwrap();
    let b = full.extract_paths(&[&path]).unwrap();
    assert_eq!(a[0].blocks[0], b[0].blocks[1]);
}

#[test]
fn batch_results_equal_single_image_results() {
    let tap = BlockTap::new(keras(), &[Block::B1, Block::B4])
        .unwrap()
        .with_batch_size(3);
    let data = shared().join("data/color/red");
    let mut paths: Vec<_> = std::fs::read_dir(&data)
        .unwrap_or_else(|e| panic!("{}: {e}", data.display()))
        .map(|e| e.unwrap().path())
        .collect();
    paths.sort();
    paths.truncate(4);
    let batched = tap.extract_paths(&paths).unwrap();
    for (p, f) in paths.iter().zip(&batched) {
        let single = tap.extract_paths(&[p]).unwrap();
        for (x, y) in single[0].blocks.iter().zip(&f.blocks) {
            assert!(rel_l2(x, y) < 1e-5, "{}", p.display());
        }
    }
}
