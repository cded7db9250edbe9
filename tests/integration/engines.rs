//! The engines that run the network on the CPU: Burn's tensor operations and attrex's native
//! kernels, for each instruction set. The native engine is checked against Burn on shapes the
//! real input never has; `parity.rs` checks every engine against the reference outputs of the
//! real weights.
//!
//! The native engine is tested with every instruction set this CPU has (on an AVX-512 machine
//! the AVX2 kernels too, forced through the builder). One the CPU lacks is skipped, unless
//! `ATTREX_EXPECT_ISA` (comma-separated, set by `.ci/run`) names it: then the tests fail.
//!
//! Expected values: for random weights, Burn's own convolutions (themselves checked against the
//! reference in `parity.rs`).

use std::sync::Arc;

use attrex::burn::tensor::{Distribution, Tensor};
use attrex::{Backbone, Block, BlockTap, Engine, Isa, Preprocessing, ResNetConfig, TapError};

use crate::{ci_expects, device, rel_l2, shared};

/// The instruction sets whose native engine the tests run here: every one this CPU has, on the
/// `flex` device.
///
/// # Panics
/// When `ATTREX_EXPECT_ISA` names an instruction set that cannot be tested here.
pub fn native_isas() -> Vec<Isa> {
    let mut isas = Vec::new();
    for isa in Isa::ALL {
        let testable = isa.is_available() && cfg!(feature = "flex");
        // Read (and checked) whether the CPU has the instruction set or not.
        let expected = ci_expects(&isa.to_string());
        if testable {
            isas.push(isa);
        } else {
            assert!(
                !expected,
                "ATTREX_EXPECT_ISA names {isa}, but its native engine cannot run here \
                 (CPU lacks it, or no `flex` feature)"
            );
            eprintln!("the native engine with {isa} cannot run here: not tested");
        }
    }
    isas
}

/// A ResNet-50 with seeded random weights, run by `engine` (the default one with `None`).
fn random_backbone(config: &ResNetConfig, seed: u64, engine: Option<Engine>) -> Backbone {
    let builder = Backbone::builder()
        .config(config.clone())
        .random_weights(seed, Preprocessing::Caffe)
        .device(device());
    match engine {
        Some(e) => builder.engine(e),
        None => builder,
    }
    .build()
    .unwrap_or_else(|e| panic!("{engine:?}: {e}"))
}

#[test]
fn flex_uses_the_fastest_native_isa_the_cpu_has() {
    let backbone = random_backbone(&ResNetConfig::keras_resnet50(), 1, None);
    let want = match (cfg!(feature = "flex"), Isa::detect()) {
        (true, Some(isa)) => Engine::Native(isa),
        _ => Engine::Burn,
    };
    assert_eq!(backbone.engine(), want);
    let burn = backbone.with_engine(Engine::Burn).unwrap();
    assert_eq!(burn.engine(), Engine::Burn);
    // Once dropped, the native engine cannot come back: that is a typed error, not a panic.
    if let Engine::Native(isa) = want {
        assert!(matches!(
            burn.with_engine(Engine::Native(isa)),
            Err(TapError::EngineUnavailable { .. })
        ));
    }
}

#[test]
fn every_isa_can_be_forced_where_the_cpu_has_it() {
    let config = ResNetConfig::keras_resnet50();
    let testable = native_isas();
    for isa in Isa::ALL {
        let built = Backbone::builder()
            .config(config.clone())
            .random_weights(1, Preprocessing::Caffe)
            .device(device())
            .engine(Engine::Native(isa))
            .build();
        if testable.contains(&isa) {
            let backbone = built.unwrap();
            assert_eq!(backbone.engine(), Engine::Native(isa));
            assert_eq!(backbone.engine().to_string(), format!("native-{isa}"));
            // The weights are packed for one instruction set: no switching to another.
            for other in Isa::ALL.into_iter().filter(|o| *o != isa) {
                let err = random_backbone(&config, 1, Some(Engine::Native(isa)))
                    .with_engine(Engine::Native(other))
                    .unwrap_err();
                assert!(matches!(err, TapError::EngineUnavailable { .. }), "{err}");
            }
        } else {
            let err = built.unwrap_err();
            assert!(matches!(err, TapError::EngineUnavailable { .. }), "{err}");
            eprintln!("{isa} refused as it should be: {err}");
        }
    }
    assert_eq!(Engine::Native(Isa::Avx2).to_string(), "native-avx2");
    assert_eq!(Engine::Native(Isa::Avx512).to_string(), "native-avx512");
    assert_eq!(Engine::Burn.to_string(), "burn");
}

/// The native engine with each instruction set and Burn, on the same random weights and an
/// odd-sized batch: pixel counts that fill no whole tile, and (for v1.5) the stride on the 3x3
/// convolution.
fn engines_agree(config: ResNetConfig) {
    let burn = Arc::new(random_backbone(&config, 7, Some(Engine::Burn)));
    let x = Tensor::<4>::random([3, 3, 67, 45], Distribution::Normal(0.0, 50.0), &device());
    let want = BlockTap::all(burn).extract_tensor(x.clone()).unwrap();
    for isa in native_isas() {
        let make = || random_backbone(&config, 7, Some(Engine::Native(isa)));
        let got = BlockTap::all(Arc::new(make()))
            .extract_tensor(x.clone())
            .unwrap();
        for (image, (g, w)) in got.iter().zip(&want).enumerate() {
            for (b, (g, w)) in g.blocks.iter().zip(&w.blocks).enumerate() {
                let err = rel_l2(g, w);
                assert!(
                    err < 1e-5,
                    "{isa}: image {image} block{}: native vs burn relative L2 error {err:.3e}",
                    b + 1
                );
            }
        }
        // The early exit of the native engine gives the same block 2 as the full pass.
        let shallow = BlockTap::new(make().into(), &[Block::B2]).unwrap();
        let x = Tensor::<4>::random([2, 3, 64, 64], Distribution::Default, &device());
        let a = shallow.extract_tensor(x.clone()).unwrap();
        let b = BlockTap::all(make().into()).extract_tensor(x).unwrap();
        assert_eq!(a[1].blocks[0], b[1].blocks[1], "{isa}");
    }
}

#[test]
fn engines_agree_on_random_weights_v1() {
    engines_agree(ResNetConfig::keras_resnet50());
}

#[test]
fn engines_agree_on_random_weights_v1_5() {
    engines_agree(ResNetConfig::torchvision_resnet50());
}

#[test]
fn avx2_engine_takes_widths_the_avx512_panel_does_not() {
    // Widths that are multiples of 16 but not of 32: the AVX2 kernels (panels of 16) run
    // them, AVX-512 (panels of 32) is refused, and the default falls back to Burn.
    let config = ResNetConfig::new()
        .with_layers([1, 1, 1, 1])
        .with_stem_width(48)
        .with_widths([16, 16, 48, 80])
        .with_num_classes(0);
    let burn = Arc::new(random_backbone(&config, 5, Some(Engine::Burn)));
    let x = Tensor::<4>::random([2, 3, 45, 38], Distribution::Normal(0.0, 50.0), &device());
    let want = BlockTap::all(burn).extract_tensor(x.clone()).unwrap();
    for isa in native_isas() {
        let built = Backbone::builder()
            .config(config.clone())
            .random_weights(5, Preprocessing::Caffe)
            .device(device())
            .engine(Engine::Native(isa))
            .build();
        if isa == Isa::Avx512 {
            assert!(matches!(built, Err(TapError::EngineUnavailable { .. })));
            continue;
        }
        let got = BlockTap::all(Arc::new(built.unwrap()))
            .extract_tensor(x.clone())
            .unwrap();
        for (g, w) in got.iter().zip(&want) {
            for (b, (g, w)) in g.blocks.iter().zip(&w.blocks).enumerate() {
                let err = rel_l2(g, w);
                assert!(err < 1e-5, "{isa}: block{}: {err:.3e}", b + 1);
            }
        }
    }
    let default = random_backbone(&config, 5, None);
    if Isa::detect() == Some(Isa::Avx512) {
        assert_eq!(default.engine(), Engine::Burn);
    }
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
    for isa in Isa::ALL {
        let err = Backbone::random(
            ResNetConfig::keras_resnet50(),
            Preprocessing::Caffe,
            1,
            &device,
        )
        .with_engine(Engine::Native(isa))
        .unwrap_err();
        assert!(err.to_string().contains("flex"), "{err}");
    }
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
