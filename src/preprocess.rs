//! Decoding image files safely and turning them into network input.

use std::io::ErrorKind;
use std::path::Path;

use image::imageops::FilterType;
use image::{DynamicImage, ImageReader, Limits, RgbImage};
use serde::{Deserialize, Serialize};

use crate::error::ImageError;

/// Side of the square the network sees.
pub const INPUT_SIDE: usize = 224;
/// The shorter side is resized to this before the centre crop.
pub const RESIZE_SIDE: u32 = 256;

/// The per-channel preprocessing a set of weights was trained with. Both resize the shorter
/// side to 256 (bilinear) and take the centre 224x224 crop, in RGB order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Preprocessing {
    /// Keras/Caffe: 0..255 values minus the mean `[123.68, 116.779, 103.939]`, no scaling.
    Caffe,
    /// torchvision: divided by 255, minus `[0.485, 0.456, 0.406]`, over `[0.229, 0.224, 0.225]`.
    Torchvision,
}

impl Preprocessing {
    /// A stable name, part of the feature-cache key.
    pub fn name(self) -> &'static str {
        match self {
            Self::Caffe => "caffe-rgb-256-crop224",
            Self::Torchvision => "torchvision-256-crop224",
        }
    }

    fn scale_shift(self) -> ([f32; 3], [f32; 3]) {
        match self {
            Self::Caffe => ([1.0; 3], [123.68, 116.779, 103.939]),
            Self::Torchvision => (
                [
                    1.0 / (255.0 * 0.229),
                    1.0 / (255.0 * 0.224),
                    1.0 / (255.0 * 0.225),
                ],
                [0.485 * 255.0, 0.456 * 255.0, 0.406 * 255.0],
            ),
        }
    }

    /// Resizes, crops and normalises `image` into `out`, a `3 x 224 x 224` CHW buffer.
    pub fn prepare_into(self, image: &DynamicImage, out: &mut [f32]) {
        let crop = resize_and_crop(image);
        let (scale, shift) = self.scale_shift();
        let plane = INPUT_SIDE * INPUT_SIDE;
        for (i, px) in crop.pixels().enumerate() {
            for c in 0..3 {
                out[c * plane + i] = (f32::from(px[c]) - shift[c]) * scale[c];
            }
        }
    }

    /// Resizes, crops and normalises `image` into a new `3 x 224 x 224` CHW vector.
    pub fn prepare(self, image: &DynamicImage) -> Vec<f32> {
        let mut out = vec![0.0; 3 * INPUT_SIDE * INPUT_SIDE];
        self.prepare_into(image, &mut out);
        out
    }
}

/// Shorter side to 256 with a bilinear (triangle) filter, then the centre 224x224, as PIL's
/// `resize(..., BILINEAR)` and `crop` do in the reference pipeline.
fn resize_and_crop(image: &DynamicImage) -> RgbImage {
    let rgb = image.to_rgb8();
    let (w, h) = rgb.dimensions();
    let s = f64::from(RESIZE_SIDE) / f64::from(w.min(h));
    let side = INPUT_SIDE as u32;
    let nw = ((f64::from(w) * s).round() as u32).max(side);
    let nh = ((f64::from(h) * s).round() as u32).max(side);
    let resized = if (nw, nh) == (w, h) {
        rgb
    } else {
        image::imageops::resize(&rgb, nw, nh, FilterType::Triangle)
    };
    let (l, t) = ((nw - side) / 2, (nh - side) / 2);
    image::imageops::crop_imm(&resized, l, t, side, side).to_image()
}

/// Limits on what a decoder may allocate for one image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeLimits {
    /// Largest width or height accepted.
    pub max_side: u32,
    /// Largest decoder allocation in bytes.
    pub max_alloc: u64,
}

impl Default for DecodeLimits {
    /// 16384 pixels a side and 512 MiB.
    fn default() -> Self {
        Self {
            max_side: 16_384,
            max_alloc: 512 * 1024 * 1024,
        }
    }
}

/// Reads and decodes the image at `path` under the default [`DecodeLimits`].
///
/// PNG, JPEG (CMYK too), GIF, BMP, TIFF and WebP are decoded; grayscale, alpha and 16-bit images
/// are accepted and later converted to 8-bit RGB (alpha is dropped, as PIL's `convert("RGB")`).
///
/// # Errors
/// An [`ImageError`] naming the file: empty, unreadable, unsupported, over the limits, or
/// truncated/corrupt.
pub fn read_image(path: &Path) -> Result<DynamicImage, ImageError> {
    read_image_with_limits(path, DecodeLimits::default())
}

/// [`read_image`] with explicit limits.
///
/// # Errors
/// As [`read_image`].
pub fn read_image_with_limits(
    path: &Path,
    limits: DecodeLimits,
) -> Result<DynamicImage, ImageError> {
    let bytes = std::fs::read(path).map_err(|source| ImageError::Io {
        path: path.to_owned(),
        source,
    })?;
    decode_image(bytes, path, limits)
}

/// Decodes an image file's bytes held in memory under the default [`DecodeLimits`]; `name`
/// stands for the image in errors (a file name, a URL, `bytes[3]`...).
///
/// # Errors
/// As [`read_image`].
pub fn read_image_bytes(bytes: &[u8], name: &Path) -> Result<DynamicImage, ImageError> {
    decode_image(bytes.to_vec(), name, DecodeLimits::default())
}

/// Decodes the bytes of an image file already read; `path` names it in errors.
pub(crate) fn decode_image(
    bytes: Vec<u8>,
    path: &Path,
    limits: DecodeLimits,
) -> Result<DynamicImage, ImageError> {
    let io = |source| ImageError::Io {
        path: path.to_owned(),
        source,
    };
    if bytes.is_empty() {
        return Err(ImageError::Empty {
            path: path.to_owned(),
        });
    }
    let mut reader = ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .map_err(io)?;
    let mut l = Limits::default();
    l.max_image_width = Some(limits.max_side);
    l.max_image_height = Some(limits.max_side);
    l.max_alloc = Some(limits.max_alloc);
    reader.limits(l);
    let image = reader.decode().map_err(|source| classify(path, source))?;
    if image.width() == 0 || image.height() == 0 {
        return Err(ImageError::NoPixels {
            path: path.to_owned(),
            width: image.width(),
            height: image.height(),
        });
    }
    Ok(image)
}

fn classify(path: &Path, source: image::ImageError) -> ImageError {
    let path = path.to_owned();
    match source {
        image::ImageError::Unsupported(_) => ImageError::Unsupported { path, source },
        image::ImageError::Limits(_) => ImageError::Limits { path, source },
        image::ImageError::IoError(ref e) if e.kind() != ErrorKind::UnexpectedEof => {
            ImageError::Io {
                path,
                source: std::io::Error::new(e.kind(), e.to_string()),
            }
        }
        _ => ImageError::Decode { path, source },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crop_is_centred_and_square_for_any_aspect() {
        for (w, h) in [(60, 80), (451, 300), (300, 300), (1000, 10)] {
            let img = DynamicImage::ImageRgb8(RgbImage::new(w, h));
            let out = resize_and_crop(&img);
            assert_eq!(out.dimensions(), (224, 224), "{w}x{h}");
        }
    }

    #[test]
    fn caffe_subtracts_the_mean_per_channel() {
        let img =
            DynamicImage::ImageRgb8(RgbImage::from_pixel(300, 300, image::Rgb([200, 100, 50])));
        let x = Preprocessing::Caffe.prepare(&img);
        let plane = 224 * 224;
        assert!((x[0] - (200.0 - 123.68)).abs() < 1e-4);
        assert!((x[plane] - (100.0 - 116.779)).abs() < 1e-4);
        assert!((x[2 * plane + 5] - (50.0 - 103.939)).abs() < 1e-4);
    }
}
