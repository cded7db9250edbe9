//! Every kind of image a catalogue throws at us: odd pixel formats decode, broken files are
//! typed errors that name the file.

use std::path::{Path, PathBuf};

use attrex::{DecodeLimits, ImageError, TapError, read_image, read_image_with_limits};
use image::{DynamicImage, ImageBuffer, Luma, LumaA, Rgb, Rgba};

use crate::fixtures;

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

fn png_bytes(img: &DynamicImage) -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

fn gradient() -> DynamicImage {
    DynamicImage::ImageRgb8(ImageBuffer::from_fn(40, 30, |x, y| {
        Rgb([(x * 6) as u8, (y * 8) as u8, 128])
    }))
}

fn assert_names(err: &ImageError, path: &Path) {
    let msg = err.to_string();
    assert!(
        msg.contains(&path.display().to_string()),
        "message does not name the file: {msg}"
    );
}

#[test]
fn grayscale_alpha_and_16_bit_decode_to_the_same_rgb_shape() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "gray.png",
            DynamicImage::ImageLuma8(ImageBuffer::from_fn(40, 30, |x, _| Luma([x as u8 * 5]))),
        ),
        (
            "gray_alpha.png",
            DynamicImage::ImageLumaA8(ImageBuffer::from_fn(40, 30, |x, _| LumaA([x as u8, 100]))),
        ),
        (
            "rgba.png",
            DynamicImage::ImageRgba8(ImageBuffer::from_fn(40, 30, |x, y| {
                Rgba([x as u8, y as u8, 9, 7])
            })),
        ),
        (
            "rgb16.png",
            DynamicImage::ImageRgb16(ImageBuffer::from_fn(40, 30, |x, y| {
                Rgb([x as u16 * 1000, y as u16 * 2000, 65535])
            })),
        ),
        (
            "gray16.png",
            DynamicImage::ImageLuma16(ImageBuffer::from_fn(40, 30, |x, _| Luma([x as u16 * 1500]))),
        ),
    ];
    for (name, img) in cases {
        let p = write(dir.path(), name, &png_bytes(&img));
        let decoded = read_image(&p).unwrap_or_else(|e| panic!("{name}: {e}"));
        let x = attrex::Preprocessing::Caffe.prepare(&decoded);
        assert_eq!(x.len(), 3 * 224 * 224, "{name}");
        assert!(x.iter().all(|v| v.is_finite()), "{name}");
    }
    // 16-bit white maps to 8-bit white: blue channel 255 - 103.939.
    let p = dir.path().join("rgb16.png");
    let x = attrex::Preprocessing::Caffe.prepare(&read_image(&p).unwrap());
    assert!((x[2 * 224 * 224] - (255.0 - 103.939)).abs() < 1e-3);
}

#[test]
fn cmyk_jpeg_decodes() {
    // tests/fixtures/cmyk.jpg: a 16x16 CMYK JPEG written by PIL (make_fixtures.py).
    let img = read_image(&fixtures().join("cmyk.jpg")).unwrap();
    assert_eq!((img.width(), img.height()), (16, 16));
    assert_eq!(
        attrex::Preprocessing::Caffe.prepare(&img).len(),
        3 * 224 * 224
    );
}

#[test]
fn empty_file_is_a_typed_error() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "empty.jpg", b"");
    let err = read_image(&p).unwrap_err();
    assert!(matches!(err, ImageError::Empty { .. }), "{err:?}");
    assert_names(&err, &p);
}

#[test]
fn missing_file_is_an_io_error() {
    let p = PathBuf::from("/nonexistent/attrex/shirt.png");
    let err = read_image(&p).unwrap_err();
    assert!(matches!(err, ImageError::Io { .. }), "{err:?}");
    assert_names(&err, &p);
}

#[test]
fn truncated_png_and_jpeg_are_typed_errors() {
    let dir = tempfile::tempdir().unwrap();
    let png = png_bytes(&gradient());
    let mut jpg = std::io::Cursor::new(Vec::new());
    gradient()
        .write_to(&mut jpg, image::ImageFormat::Jpeg)
        .unwrap();
    let jpg = jpg.into_inner();
    for (name, bytes) in [
        ("cut.png", &png[..png.len() / 2]),
        ("cut.jpg", &jpg[..jpg.len() / 3]),
    ] {
        let p = write(dir.path(), name, bytes);
        let err = read_image(&p).unwrap_err();
        assert!(matches!(err, ImageError::Decode { .. }), "{name}: {err:?}");
        assert_names(&err, &p);
    }
}

#[test]
fn corrupt_data_behind_a_valid_signature_is_a_typed_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = png_bytes(&gradient());
    for b in bytes.iter_mut().skip(40) {
        *b = b.wrapping_mul(31).wrapping_add(7);
    }
    let p = write(dir.path(), "corrupt.png", &bytes);
    let err = read_image(&p).unwrap_err();
    assert!(matches!(err, ImageError::Decode { .. }), "{err:?}");
    assert_names(&err, &p);
}

#[test]
fn unsupported_file_is_a_typed_error() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(
        dir.path(),
        "notes.txt",
        b"not an image at all, just some text\n",
    );
    let err = read_image(&p).unwrap_err();
    assert!(matches!(err, ImageError::Unsupported { .. }), "{err:?}");
    assert_names(&err, &p);
}

#[test]
fn image_over_the_limits_is_a_typed_error() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "big.png", &png_bytes(&gradient()));
    let limits = DecodeLimits {
        max_side: 16,
        ..DecodeLimits::default()
    };
    let err = read_image_with_limits(&p, limits).unwrap_err();
    assert!(matches!(err, ImageError::Limits { .. }), "{err:?}");
    assert_names(&err, &p);
}

#[test]
fn a_bad_file_in_a_batch_names_that_file() {
    let dir = tempfile::tempdir().unwrap();
    let good = write(dir.path(), "good.png", &png_bytes(&gradient()));
    let bad = write(dir.path(), "bad.png", b"\x89PNG\r\n\x1a\n garbage");
    let tap = attrex::BlockTap::new(crate::keras(), &[attrex::Block::B1]).unwrap();
    let err = tap.extract_paths(&[&good, &bad]).unwrap_err();
    match err {
        TapError::Image(e) => assert_names(&e, &bad),
        other => panic!("expected an image error, got {other:?}"),
    }
}
