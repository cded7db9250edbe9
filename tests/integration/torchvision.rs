//! torchvision state dicts (v1.5) through burn-store, on a small fixture.
//!
//! `tests/fixtures/tiny_resnet.{pth,safetensors}` is a ResNet v1.5 with torchvision's names
//! (stem 8, widths [4, 8, 16, 32], [1, 2, 1, 1] blocks, 10 classes, random weights and BN
//! statistics); `tiny_resnet_expected.safetensors` holds PyTorch's outputs for a random input.
//! Both are made by `tests/fixtures/make_fixtures.py`.

use attrex::burn::tensor::{Tensor, TensorData};
use attrex::{Backbone, BlockTap, Preprocessing, ResNetConfig, Variant};

use crate::{device, fixtures, read_safetensors, rel_l2};

fn tiny_config() -> ResNetConfig {
    ResNetConfig::new()
        .with_variant(Variant::V1_5)
        .with_stem_width(8)
        .with_widths([4, 8, 16, 32])
        .with_layers([1, 2, 1, 1])
        .with_num_classes(10)
}

fn check(file: &str) {
    let backbone = std::sync::Arc::new(
        Backbone::from_file(&fixtures().join(file), Some(tiny_config()), &device())
            .unwrap_or_else(|e| panic!("{file}: {e}")),
    );
    assert_eq!(backbone.preprocessing(), Preprocessing::Torchvision);
    let want = read_safetensors(&fixtures().join("tiny_resnet_expected.safetensors"));
    let (shape, input) = &want["input"];
    let x = || {
        Tensor::<4>::from_data(
            TensorData::new(input.clone(), [shape[0], shape[1], shape[2], shape[3]]),
            backbone.device(),
        )
    };
    let logits: Vec<f32> = backbone
        .net()
        .forward(x())
        .unwrap()
        .into_data()
        .try_into_vec()
        .unwrap();
    let err = rel_l2(&logits, &want["logits"].1);
    assert!(err < 1e-4, "{file}: logits relative error {err:.2e}");
    let tap = BlockTap::all(backbone.clone());
    let pooled = tap.forward(x()).unwrap();
    for (i, t) in pooled.into_iter().enumerate() {
        let got: Vec<f32> = t.into_data().try_into_vec().unwrap();
        let err = rel_l2(&got, &want[&format!("pooled_{i}")].1);
        assert!(
            err < 1e-4,
            "{file}: block{} relative error {err:.2e}",
            i + 1
        );
    }
}

#[test]
fn torchvision_pth_matches_pytorch() {
    check("tiny_resnet.pth");
}

#[test]
fn torchvision_safetensors_matches_pytorch() {
    check("tiny_resnet.safetensors");
}

#[test]
fn torchvision_file_for_another_shape_names_the_tensor() {
    // The tiny file read as a full ResNet-50: the first tensor checked is the stem.
    let err = Backbone::from_file(&fixtures().join("tiny_resnet.safetensors"), None, &device())
        .unwrap_err();
    match err {
        attrex::WeightsError::UnexpectedShape { tensor, .. } => assert_eq!(tensor, "conv1.weight"),
        other => panic!("{other:?}"),
    }
}
