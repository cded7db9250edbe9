//! The centre crop of a bilinear resize, computed without the resize.
//!
//! The reference pipeline resizes the whole photo so that its shorter side is 256 (PIL,
//! `Image.resize(..., BILINEAR)`), then crops the centre 224x224. Resizing first holds an
//! intermediate as large as the resized photo: a 16384x1 strip becomes 4 million pixels wide.
//! Here only the output pixels inside the crop are computed, each from the same source pixels
//! and with the same weights as the full resize would use, so the result is the same crop.
//!
//! The arithmetic is Pillow's (`libImaging/Resample.c`): a triangle filter whose support widens
//! by the scale when shrinking, coefficients normalised per output pixel and rounded to 22-bit
//! fixed point, a horizontal pass over the source rows that the crop needs, rounded to 8 bits,
//! then a vertical pass. A PNG therefore gives the reference's input byte for byte.

use image::{DynamicImage, RgbImage};

/// Fraction bits of the fixed-point coefficients (Pillow's `PRECISION_BITS`, for 8-bit
/// channels: 32 - 8 - 2).
const PRECISION_BITS: u32 = 22;

/// Which source pixels, with which fixed-point weights, make each output pixel of one axis.
struct Coeffs {
    /// `(first source index, count)` per output pixel.
    bounds: Vec<(usize, usize)>,
    /// `ksize` weights per output pixel.
    weights: Vec<i32>,
    ksize: usize,
}

impl Coeffs {
    /// The coefficients of output pixels `first..first + count` of a resize from `in_size` to
    /// `out_size` (Pillow's `precompute_coeffs` over the whole input, then
    /// `normalize_coeffs_8bpc`).
    fn new(in_size: usize, out_size: usize, first: usize, count: usize) -> Self {
        let scale = in_size as f64 / out_size as f64;
        let filterscale = scale.max(1.0);
        // The triangle filter's support is 1.
        let support = filterscale;
        let ksize = support.ceil() as usize * 2 + 1;
        let mut bounds = Vec::with_capacity(count);
        let mut weights = vec![0i32; count * ksize];
        let mut k = vec![0f64; ksize];
        for (i, xx) in (first..first + count).enumerate() {
            let center = (xx as f64 + 0.5) * scale;
            // C's (int) cast truncates toward zero; negative values are clamped to 0 anyway.
            let xmin = ((center - support + 0.5) as i64).max(0) as usize;
            let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
            let n = xmax.saturating_sub(xmin);
            let mut ww = 0.0;
            for (x, kx) in k.iter_mut().enumerate().take(n) {
                let d = ((x + xmin) as f64 - center + 0.5) / filterscale;
                *kx = (1.0 - d.abs()).max(0.0);
                ww += *kx;
            }
            for (x, kx) in k.iter().enumerate().take(n) {
                let w = if ww != 0.0 { kx / ww } else { *kx };
                let fixed = w * f64::from(1u32 << PRECISION_BITS);
                weights[i * ksize + x] = if w < 0.0 {
                    (fixed - 0.5) as i32
                } else {
                    (fixed + 0.5) as i32
                };
            }
            bounds.push((xmin, n));
        }
        Self {
            bounds,
            weights,
            ksize,
        }
    }

    /// Output pixel `i`'s weighted sum of `src` (`channels` interleaved values per pixel),
    /// rounded and clipped to 8 bits, written to `out`.
    #[inline]
    fn apply(&self, i: usize, src: impl Fn(usize, usize) -> u8, out: &mut [u8]) {
        let (first, n) = self.bounds[i];
        let k = &self.weights[i * self.ksize..][..n];
        for (c, o) in out.iter_mut().enumerate() {
            let mut ss: i32 = 1 << (PRECISION_BITS - 1);
            for (x, &w) in k.iter().enumerate() {
                ss += i32::from(src(first + x, c)) * w;
            }
            *o = clip8(ss);
        }
    }
}

fn clip8(v: i32) -> u8 {
    if v >= (1 << PRECISION_BITS << 8) {
        255
    } else if v <= 0 {
        0
    } else {
        (v >> PRECISION_BITS) as u8
    }
}

/// The sizes of the whole resize (shorter side to `resize`, each side at least `crop`), rounded
/// half to even as Python's `round` does.
pub(super) fn resized_size(width: u32, height: u32, resize: u32, crop: u32) -> (u32, u32) {
    let s = f64::from(resize) / f64::from(width.min(height));
    let side = |v: u32| ((f64::from(v) * s).round_ties_even() as u32).max(crop);
    (side(width), side(height))
}

/// Row `y` of `image` as 8-bit RGB, alpha dropped (as PIL's `convert("RGB")` and `image`'s
/// `to_rgb8` do, with `image`'s own rounding of 16-bit and float values), into `out`
/// (`3 * width` bytes).
fn rgb_row(image: &DynamicImage, y: u32, out: &mut [u8]) {
    use image::buffer::ConvertBuffer;
    use image::{ImageBuffer, Pixel};
    let w = image.width();
    macro_rules! convert {
        ($buf:expr, $p:ty) => {{
            let per = usize::from(<$p as Pixel>::CHANNEL_COUNT) * w as usize;
            let row = &$buf.as_raw()[y as usize * per..][..per];
            let one: ImageBuffer<$p, &[<$p as Pixel>::Subpixel]> =
                ImageBuffer::from_raw(w, 1, row).expect("one row of the image's own buffer");
            let rgb: RgbImage = one.convert();
            out.copy_from_slice(rgb.as_raw());
        }};
    }
    match image {
        DynamicImage::ImageRgb8(b) => convert!(b, image::Rgb<u8>),
        DynamicImage::ImageLuma8(b) => convert!(b, image::Luma<u8>),
        DynamicImage::ImageLumaA8(b) => convert!(b, image::LumaA<u8>),
        DynamicImage::ImageRgba8(b) => convert!(b, image::Rgba<u8>),
        DynamicImage::ImageLuma16(b) => convert!(b, image::Luma<u16>),
        DynamicImage::ImageLumaA16(b) => convert!(b, image::LumaA<u16>),
        DynamicImage::ImageRgb16(b) => convert!(b, image::Rgb<u16>),
        DynamicImage::ImageRgba16(b) => convert!(b, image::Rgba<u16>),
        DynamicImage::ImageRgb32F(b) => convert!(b, image::Rgb<f32>),
        DynamicImage::ImageRgba32F(b) => convert!(b, image::Rgba<f32>),
        // A pixel format added to `image` later: convert the whole image (correct, not lean).
        other => {
            let rgb = other.to_rgb8();
            let stride = 3 * w as usize;
            out.copy_from_slice(&rgb.as_raw()[y as usize * stride..][..stride]);
        }
    }
}

/// The `crop x crop` centre of `image` resized so that its shorter side is `resize`.
pub(super) fn centre_crop(image: &DynamicImage, resize: u32, crop: u32) -> RgbImage {
    let (w, h) = (image.width(), image.height());
    let (nw, nh) = resized_size(w, h, resize, crop);
    let (left, top) = ((nw - crop) / 2, (nh - crop) / 2);
    let side = crop as usize;
    let (wu, hu) = (w as usize, h as usize);
    // Horizontal pass over the source rows the crop needs; then the vertical pass.
    let horizontal = (nw != w).then(|| Coeffs::new(wu, nw as usize, left as usize, side));
    let vertical = (nh != h).then(|| Coeffs::new(hu, nh as usize, top as usize, side));
    let (row0, rows) = match &vertical {
        Some(v) => {
            let first = v.bounds[0].0;
            let (last_start, last_n) = v.bounds[side - 1];
            (first, last_start + last_n - first)
        }
        None => (top as usize, side),
    };
    let mut src_row = vec![0u8; 3 * wu];
    let mut temp = vec![0u8; rows * side * 3];
    for (r, out) in temp.chunks_exact_mut(side * 3).enumerate() {
        rgb_row(image, (row0 + r) as u32, &mut src_row);
        match &horizontal {
            Some(hc) => {
                for (i, px) in out.chunks_exact_mut(3).enumerate() {
                    hc.apply(i, |x, c| src_row[3 * x + c], px);
                }
            }
            None => out.copy_from_slice(&src_row[3 * left as usize..][..3 * side]),
        }
    }
    let mut out = RgbImage::new(crop, crop);
    let buf: &mut [u8] = &mut out;
    match &vertical {
        Some(vc) => {
            for (i, row) in buf.chunks_exact_mut(side * 3).enumerate() {
                for (x, px) in row.chunks_exact_mut(3).enumerate() {
                    vc.apply(i, |y, c| temp[((y - row0) * side + x) * 3 + c], px);
                }
            }
        }
        None => buf.copy_from_slice(&temp),
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};

    /// The synthetic image of `tests/fixtures/make_resize_digests.py`.
    fn pixels(w: u32, h: u32) -> DynamicImage {
        DynamicImage::ImageRgb8(RgbImage::from_fn(w, h, |x, y| {
            let v = |c: u32| ((x * 7 + y * 13 + c * 61 + (x * y) % 17) % 256) as u8;
            image::Rgb([v(0), v(1), v(2)])
        }))
    }

    #[test]
    fn the_crop_is_pils_byte_for_byte() {
        // (width, height, sha256 of PIL's 224x224x3 crop, pixel (0, 0), pixel (row 111, col
        // 200)), printed by tests/fixtures/make_resize_digests.py with Pillow 13.0.
        type Case = (u32, u32, &'static str, [u8; 3], [u8; 3]);
        let cases: [Case; 7] = [
            (
                60,
                80,
                "3b998f7b3bab6c94fef63f2027dcb36067b3111368f6a8e55c24bd78166fa8ac",
                [200, 5, 66],
                [103, 164, 225],
            ),
            (
                451,
                300,
                "63668fa3b60858c2530e18852889276e6dc51f8518c520c8b80e20449b3924c4",
                [138, 199, 67],
                [147, 208, 63],
            ),
            (
                300,
                300,
                "9b4b5d4143435f21a36324d3e3e6ff2901ee9f4ab064c4b81f5636cc00242600",
                [122, 183, 242],
                [132, 193, 183],
            ),
            (
                1000,
                10,
                "06d3fe8f147c9e130fdf226707764acb2cc4faee06df343d3e845f29a14f07cb",
                [140, 201, 6],
                [139, 67, 128],
            ),
            (
                17,
                300,
                "240a6f627e65e2f5309f71038a77357ed29be1af01d275f1299b5b584662e6e7",
                [63, 124, 185],
                [140, 65, 126],
            ),
            (
                256,
                300,
                "5c887767b4984f087887525bd038c1716aa367b206cc2cc814302dfad6a52f6f",
                [107, 168, 229],
                [124, 185, 246],
            ),
            (
                2000,
                1500,
                "dbbc6c59c6c538ea112235f6a2ab1ad961957e800858b3dc3885f682bdaa6b0d",
                [77, 133, 182],
                [98, 159, 182],
            ),
        ];
        for (w, h, digest, first, sample) in cases {
            let crop = centre_crop(&pixels(w, h), 256, 224);
            assert_eq!(crop.dimensions(), (224, 224));
            assert_eq!(crop.get_pixel(0, 0).0, first, "{w}x{h} pixel (0, 0)");
            assert_eq!(
                crop.get_pixel(200, 111).0,
                sample,
                "{w}x{h} pixel (111, 200)"
            );
            let got: String = Sha256::digest(crop.as_raw())
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            assert_eq!(got, digest, "{w}x{h}");
        }
    }

    #[test]
    fn other_pixel_formats_crop_as_their_rgb8_conversion() {
        let rgb = pixels(90, 70);
        for img in [
            DynamicImage::ImageRgba8(rgb.to_rgba8()),
            DynamicImage::ImageLuma8(rgb.to_luma8()),
            DynamicImage::ImageRgb16(rgb.to_rgb16()),
            DynamicImage::ImageRgba32F(rgb.to_rgba32f()),
        ] {
            let expected = centre_crop(&DynamicImage::ImageRgb8(img.to_rgb8()), 256, 224);
            assert_eq!(centre_crop(&img, 256, 224), expected, "{:?}", img.color());
        }
    }

    #[test]
    fn an_extreme_strip_holds_no_large_intermediate() {
        // 16384 x 1: the full resize would be 4194304 x 256 pixels (3 GiB).
        let strip = DynamicImage::ImageLuma8(image::GrayImage::from_fn(16_384, 1, |x, _| {
            image::Luma([(x % 256) as u8])
        }));
        let start = std::time::Instant::now();
        let crop = centre_crop(&strip, 256, 224);
        assert_eq!(crop.dimensions(), (224, 224));
        assert!(start.elapsed().as_secs() < 5, "{:?}", start.elapsed());
    }
}
