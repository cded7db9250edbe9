//! Regression tests for the hardening issue: inputs that used to panic, hang, blow up memory or
//! give a silently wrong answer. Each test is named after what it guards.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use attrex::burn::tensor::{Tensor, TensorData};
use attrex::{
    Backbone, Block, BlockTap, DecodeLimits, Engine, ImageError, Preprocessing, ResNetConfig,
    TapError, read_image, read_image_with_limits,
};
use image::{DynamicImage, ImageFormat, RgbImage};

use crate::device;

fn photo() -> DynamicImage {
    DynamicImage::ImageRgb8(RgbImage::from_fn(96, 80, |x, y| {
        image::Rgb([(x * 3) as u8, (y * 5) as u8, ((x + y) * 2) as u8])
    }))
}

fn encode(img: &DynamicImage, format: ImageFormat) -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, format).unwrap();
    out.into_inner()
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

#[test]
fn truncated_jpegs_are_an_error_unless_partial_decodes_are_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let jpg = encode(&photo(), ImageFormat::Jpeg);
    for percent in (10..=95).step_by(5) {
        let cut = jpg.len() * percent / 100;
        let p = write(dir.path(), &format!("cut{percent}.jpg"), &jpg[..cut]);
        let err = read_image(&p).unwrap_err();
        assert!(
            matches!(
                err,
                ImageError::Truncated { .. } | ImageError::Decode { .. }
            ),
            "cut at {percent}%: {err:?}"
        );
        assert!(err.to_string().contains(&p.display().to_string()));
    }
    // The explicit option accepts what the decoder can make of a file cut in its scan data.
    let p = write(dir.path(), "cut90.jpg", &jpg[..jpg.len() * 9 / 10]);
    let limits = DecodeLimits {
        allow_truncated: true,
        ..DecodeLimits::default()
    };
    let partial = read_image_with_limits(&p, limits).unwrap();
    assert_eq!((partial.width(), partial.height()), (96, 80));
}

#[test]
fn truncated_files_of_every_format_are_typed_errors() {
    let dir = tempfile::tempdir().unwrap();
    for (format, ext) in [
        (ImageFormat::Png, "png"),
        (ImageFormat::Gif, "gif"),
        (ImageFormat::Bmp, "bmp"),
        (ImageFormat::Tiff, "tiff"),
        (ImageFormat::WebP, "webp"),
    ] {
        let bytes = encode(&photo(), format);
        for percent in [10, 50, 90] {
            let cut = bytes.len() * percent / 100;
            let p = write(dir.path(), &format!("cut{percent}.{ext}"), &bytes[..cut]);
            match read_image(&p) {
                Err(
                    ImageError::Decode { .. }
                    | ImageError::Truncated { .. }
                    | ImageError::Unsupported { .. }
                    | ImageError::Io { .. },
                ) => {}
                other => panic!("{ext} cut at {percent}%: {other:?}"),
            }
        }
    }
}

#[cfg(unix)]
#[test]
fn a_fifo_named_like_an_image_is_refused_without_blocking() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("x.jpg");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("mkfifo (coreutils) runs");
    assert!(made.success());
    let err = read_image(&fifo).unwrap_err();
    assert!(matches!(err, ImageError::NotAFile { .. }), "{err:?}");
}

#[cfg(unix)]
#[test]
fn dev_zero_is_refused_not_read_forever() {
    let err = read_image(Path::new("/dev/zero")).unwrap_err();
    assert!(matches!(err, ImageError::NotAFile { .. }), "{err:?}");
    let err = attrex::AttributeIndex::load("/dev/zero").unwrap_err();
    assert!(err.to_string().contains("/dev/zero"), "{err}");
}

#[test]
fn files_over_the_size_limit_are_refused_before_decoding() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "big.png", &encode(&photo(), ImageFormat::Png));
    let limits = DecodeLimits {
        max_file_bytes: 100,
        ..DecodeLimits::default()
    };
    let err = read_image_with_limits(&p, limits).unwrap_err();
    assert!(
        matches!(err, ImageError::FileTooLarge { max: 100, .. }),
        "{err:?}"
    );
}

#[test]
fn a_16384_by_1_png_is_cropped_without_a_huge_intermediate() {
    // 128 bytes of PNG that used to resize into 4194304 x 256 pixels (3.4 GB, 25 s).
    let strip = DynamicImage::ImageLuma8(image::GrayImage::new(16_384, 1));
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "strip.png", &encode(&strip, ImageFormat::Png));
    let tap = BlockTap::new(crate::keras(), &[Block::B1]).unwrap();
    let paths = vec![p; 8];
    let features = tap.extract_paths(&paths).unwrap();
    assert_eq!(features.len(), 8);
    assert!(
        features
            .iter()
            .all(|f| f.blocks[0].iter().all(|v| v.is_finite()))
    );
}

#[test]
fn non_finite_input_is_refused_alike_by_both_engines() {
    let make = |engine| {
        Backbone::builder()
            .config(ResNetConfig::new().with_layers([1, 1, 1, 1]))
            .random_weights(3, Preprocessing::Caffe)
            .device(device())
            .engine(engine)
            .build()
            .unwrap()
    };
    let mut engines = vec![make(Engine::Burn)];
    for isa in crate::engines::native_isas() {
        engines.push(make(Engine::Native(isa)));
    }
    for backbone in engines {
        let engine = backbone.engine();
        let tap = BlockTap::new(Arc::new(backbone), &[Block::B2]).unwrap();
        for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            let mut values = vec![0.5f32; 3 * 64 * 64];
            values[1234] = bad;
            let x = Tensor::<4>::from_data(TensorData::new(values, [1, 3, 64, 64]), &device());
            let err = tap.forward(x).unwrap_err();
            assert!(
                matches!(err, TapError::NotFinite),
                "{engine}: {bad}: {err:?}"
            );
        }
    }
}
