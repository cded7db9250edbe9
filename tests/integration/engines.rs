//! The two engines that run the network on the CPU: Burn's tensor operations and attrex's native
//! kernels. Each is checked against the reference outputs of the real weights, and against the
//! other on shapes the real input never has.
//!
//! Expected values: `../shared/fixtures/reference_chelsea.safetensors` (an independent NumPy
//! forward pass, see `parity.rs`), and for random weights Burn's own convolutions.

use std::sync::Arc;

use attrex::burn::tensor::{Distribution, Tensor, TensorData};
use attrex::{Backbone, Block, BlockTap, Engine, Preprocessing, ResNetConfig, TapError};

use crate::{device, read_safetensors, rel_l2, shared};

/// Whether this machine runs the native engine by default.
fn native_expected() -> bool {
    #[cfg(target_arch = "x86_64")]
    let avx512 = std::arch::is_x86_feature_detected!("avx512f");
    #[cfg(not(target_arch = "x86_64"))]
    let avx512 = false;
    avx512 && cfg!(feature = "flex")
}

#[test]
fn flex_uses_the_native_engine_where_the_cpu_has_avx512() {
    let backbone = Backbone::random(
        ResNetConfig::keras_resnet50(),
        Preprocessing::Caffe,
        1,
        &device(),
    );
    let want = if native_expected() {
        Engine::Native
    } else {
        Engine::Burn
    };
    assert_eq!(backbone.engine(), want);
    let burn = backbone.with_engine(Engine::Burn).unwrap();
    assert_eq!(burn.engine(), Engine::Burn);
    // Once dropped, the native engine cannot come back: that is a typed error, not a panic.
    assert!(matches!(
        burn.with_engine(Engine::Native),
        Err(TapError::EngineUnavailable { .. })
    ));
}

#[test]
fn burn_engine_matches_the_reference_of_the_real_weights() {
    let r = read_safetensors(&shared().join("fixtures/reference_chelsea.safetensors"));
    let backbone = Backbone::load(None, &device())
        .unwrap_or_else(|e| panic!("the real weights are needed: {e}"))
        .with_engine(Engine::Burn)
        .unwrap();
    let x = Tensor::<4>::from_data(
        TensorData::new(r["input_chw_caffe_rgb"].1.clone(), [1, 3, 224, 224]),
        backbone.device(),
    );
    let features = BlockTap::all(Arc::new(backbone)).extract_tensor(x).unwrap();
    for (i, got) in features[0].blocks.iter().enumerate() {
        let err = rel_l2(got, &r[&format!("pooled_{i}")].1);
        eprintln!("burn engine, block{}: relative L2 error {err:.2e}", i + 1);
        assert!(err < 1e-4, "block{}: {err:.3e}", i + 1);
    }
}

/// Both engines on the same random weights and an odd-sized batch: pixel counts that fill no
/// whole tile, and (for v1.5) the stride on the 3x3 convolution.
fn engines_agree(config: ResNetConfig) {
    if !native_expected() {
        eprintln!("the native engine does not run here; nothing to compare");
        return;
    }
    let make = || Backbone::random(config.clone(), Preprocessing::Caffe, 7, &device());
    let native = Arc::new(make());
    let burn = Arc::new(make().with_engine(Engine::Burn).unwrap());
    assert_eq!(native.engine(), Engine::Native);
    let x = Tensor::<4>::random([3, 3, 67, 45], Distribution::Normal(0.0, 50.0), &device());
    let got = BlockTap::all(native).extract_tensor(x.clone()).unwrap();
    let want = BlockTap::all(burn).extract_tensor(x).unwrap();
    for (image, (g, w)) in got.iter().zip(&want).enumerate() {
        for (b, (g, w)) in g.blocks.iter().zip(&w.blocks).enumerate() {
            let err = rel_l2(g, w);
            assert!(
                err < 1e-5,
                "image {image} block{}: native vs burn relative L2 error {err:.3e}",
                b + 1
            );
        }
    }
    // The early exit of the native engine gives the same block 2 as the full pass.
    let shallow = BlockTap::new(make().into(), &[Block::B2]).unwrap();
    let x = Tensor::<4>::random([2, 3, 64, 64], Distribution::Default, &device());
    let a = shallow.extract_tensor(x.clone()).unwrap();
    let b = BlockTap::all(make().into()).extract_tensor(x).unwrap();
    assert_eq!(a[1].blocks[0], b[1].blocks[1]);
}

#[test]
fn engines_agree_on_random_weights_v1() {
    engines_agree(ResNetConfig::keras_resnet50());
}

#[test]
fn engines_agree_on_random_weights_v1_5() {
    engines_agree(ResNetConfig::torchvision_resnet50());
}

#[cfg(feature = "ndarray")]
#[test]
fn native_engine_is_refused_for_another_device() {
    let device = attrex::device_from_name("ndarray").unwrap();
    let backbone = Backbone::random(
        ResNetConfig::keras_resnet50(),
        Preprocessing::Caffe,
        1,
        &device,
    );
    assert_eq!(backbone.engine(), Engine::Burn);
    let err = backbone.with_engine(Engine::Native).unwrap_err();
    assert!(err.to_string().contains("flex"), "{err}");
}

#[test]
fn images_take_the_same_path_through_either_engine() {
    // Decoded images go to the native engine as a host buffer (no tensor round trip) and to
    // Burn as a tensor: the features must agree, and equal those of the tensor route.
    let photo = attrex::read_image(&shared().join("fixtures/chelsea.png")).unwrap();
    let flat = image::DynamicImage::ImageRgb8(image::RgbImage::from_pixel(
        300,
        200,
        image::Rgb([200, 30, 60]),
    ));
    let images = [photo, flat];
    let make = || {
        Backbone::random(
            ResNetConfig::keras_resnet50(),
            Preprocessing::Caffe,
            3,
            &device(),
        )
    };
    let tap = BlockTap::all(Arc::new(make()));
    let got = tap.extract_images(&images).unwrap();
    let refs: Vec<&image::DynamicImage> = images.iter().collect();
    let via_tensor = tap
        .extract_tensor(tap.backbone().images_to_tensor(&refs))
        .unwrap();
    assert_eq!(got, via_tensor);
    let burn = BlockTap::all(Arc::new(make().with_engine(Engine::Burn).unwrap()));
    for (g, w) in got.iter().zip(burn.extract_images(&images).unwrap()) {
        for (g, w) in g.blocks.iter().zip(&w.blocks) {
            assert!(rel_l2(g, w) < 1e-5);
        }
    }
}
