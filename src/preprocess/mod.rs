//! Decoding image files safely and turning them into network input.

mod decode;
mod resize;

use std::path::Path;

use image::{DynamicImage, RgbImage};
use serde::{Deserialize, Serialize};

use crate::error::ImageError;

pub use decode::{DEFAULT_DECODE_BUDGET, DecodeLimits, decode_budget, set_decode_budget};

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
        self.normalise_into(&centre_crop(image), out);
    }

    /// Resizes, crops and normalises `image` into a new `3 x 224 x 224` CHW vector.
    pub fn prepare(self, image: &DynamicImage) -> Vec<f32> {
        let mut out = vec![0.0; 3 * INPUT_SIDE * INPUT_SIDE];
        self.prepare_into(image, &mut out);
        out
    }

    /// Normalises an already cropped `224 x 224` RGB image into `out` (CHW).
    pub(crate) fn normalise_into(self, crop: &RgbImage, out: &mut [f32]) {
        let (scale, shift) = self.scale_shift();
        let plane = INPUT_SIDE * INPUT_SIDE;
        for (i, px) in crop.pixels().enumerate() {
            for c in 0..3 {
                out[c * plane + i] = (f32::from(px[c]) - shift[c]) * scale[c];
            }
        }
    }
}

/// The network's input square: the shorter side resized to [`RESIZE_SIDE`] (bilinear, as PIL
/// computes it), then the centre [`INPUT_SIDE`] x [`INPUT_SIDE`], computed without holding the
/// resized photo. Every recipe reads this square.
pub fn input_square(image: &DynamicImage) -> RgbImage {
    centre_crop(image)
}

pub(crate) fn centre_crop(image: &DynamicImage) -> RgbImage {
    resize::centre_crop(image, RESIZE_SIDE, INPUT_SIDE as u32)
}

/// Reads and decodes the image at `path` under the default [`DecodeLimits`].
///
/// PNG, JPEG (CMYK too), GIF, BMP, TIFF and WebP are decoded; grayscale, alpha and 16-bit images
/// are accepted and later converted to 8-bit RGB (alpha is dropped, as PIL's `convert("RGB")`).
///
/// # Errors
/// An [`ImageError`] naming the file: not a regular file, too large, empty, unreadable,
/// unsupported, over the limits or the decode budget, truncated or corrupt.
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
    decode::read_and_decode(path, &limits, |image| image)
}

/// Decodes an image file's bytes held in memory under the default [`DecodeLimits`]; `name`
/// stands for the image in errors (a file name, a URL, `bytes[3]`...).
///
/// # Errors
/// As [`read_image`].
pub fn read_image_bytes(bytes: &[u8], name: &Path) -> Result<DynamicImage, ImageError> {
    decode::decode_with(bytes, name, &DecodeLimits::default(), |image| image)
}

/// Decodes `bytes` and returns only the network's input square: the decoded photo is dropped
/// (and its decode budget returned) as soon as the crop is made.
pub(crate) fn crop_from_bytes(
    bytes: &[u8],
    name: &Path,
    limits: &DecodeLimits,
) -> Result<RgbImage, ImageError> {
    decode::decode_with(bytes, name, limits, |image| centre_crop(&image))
}

/// Decodes the bytes of an image file already read; `path` names it in errors.
pub(crate) fn decode_image(
    bytes: Vec<u8>,
    path: &Path,
    limits: DecodeLimits,
) -> Result<DynamicImage, ImageError> {
    decode::decode_with(&bytes, path, &limits, |image| image)
}

/// Reads and decodes the file at `path` into the network's input square.
pub(crate) fn crop_from_file(path: &Path, limits: &DecodeLimits) -> Result<RgbImage, ImageError> {
    decode::read_and_decode(path, limits, |image| centre_crop(&image))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crop_is_centred_and_square_for_any_aspect() {
        for (w, h) in [(60, 80), (451, 300), (300, 300), (1000, 10)] {
            let img = DynamicImage::ImageRgb8(RgbImage::new(w, h));
            let out = centre_crop(&img);
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
