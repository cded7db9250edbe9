//! The pixel side of the colour recipe: where the product is, and a histogram of its colours.
//!
//! Everything here reads the network's own input square (the 224x224 crop, before the mean is
//! subtracted), so it costs one pass over 50,176 pixels beside the forward pass.

use image::RgbImage;

/// Largest per-channel difference (0..255) from the border colour that still counts as
/// background.
pub(super) const TOLERANCE: f64 = 24.0;
/// Standard deviation of the centre prior, in units of the image side.
pub(super) const SIGMA: f64 = 0.2;
/// Hue, saturation and value bins of the histogram.
pub(super) const BINS: [usize; 3] = [24, 4, 4];
/// Length of the histogram.
pub(super) const HIST_LEN: usize = BINS[0] * BINS[1] * BINS[2];

/// The Gaussian centre prior at the centre of cell `(i, j)` of a `side x side` grid.
pub(super) fn centre_weight(i: usize, j: usize, side: usize) -> f64 {
    let u = (i as f64 + 0.5) / side as f64 - 0.5;
    let v = (j as f64 + 0.5) / side as f64 - 0.5;
    (-(u * u + v * v) / (2.0 * SIGMA * SIGMA)).exp()
}

/// The border colour: per channel, the median of the crop's outermost ring of pixels (each
/// pixel once; the mean of the two middle values for an even count).
pub(super) fn border_colour(crop: &RgbImage) -> [f64; 3] {
    let (w, h) = crop.dimensions();
    let mut ring: [Vec<u8>; 3] = Default::default();
    let mut push = |x: u32, y: u32| {
        let p = crop.get_pixel(x, y).0;
        for c in 0..3 {
            ring[c].push(p[c]);
        }
    };
    for x in 0..w {
        push(x, 0);
        if h > 1 {
            push(x, h - 1);
        }
    }
    for y in 1..h.saturating_sub(1) {
        push(0, y);
        if w > 1 {
            push(w - 1, y);
        }
    }
    ring.map(|mut v| {
        v.sort_unstable();
        let n = v.len();
        if n == 0 {
            0.0
        } else if n % 2 == 1 {
            f64::from(v[n / 2])
        } else {
            (f64::from(v[n / 2 - 1]) + f64::from(v[n / 2])) / 2.0
        }
    })
}

/// Hue, saturation and value in `[0, 1)`, `[0, 1]`, `[0, 1]`, as Python's `colorsys`.
pub(super) fn hsv(p: [u8; 3]) -> [f64; 3] {
    let [r, g, b] = p.map(|v| f64::from(v) / 255.0);
    let (mx, mn) = (r.max(g).max(b), r.min(g).min(b));
    let d = mx - mn;
    if d == 0.0 {
        return [0.0, 0.0, mx];
    }
    let h = if mx == r {
        (g - b) / d
    } else if mx == g {
        2.0 + (b - r) / d
    } else {
        4.0 + (r - g) / d
    };
    let h = h / 6.0;
    [h - h.floor(), d / mx, mx]
}

/// The two bins a value `t` in `[0, 1]` falls between in a soft (tent) histogram of `n`
/// bins, with their weights; hue wraps around, the others clamp to the end bins.
fn soft(t: f64, n: usize, wrap: bool) -> [(usize, f64); 2] {
    let q = t * n as f64 - 0.5;
    let i0 = q.floor();
    let f = q - i0;
    let idx = |i: f64| {
        let i = i as i64;
        if wrap {
            i.rem_euclid(n as i64) as usize
        } else {
            i.clamp(0, n as i64 - 1) as usize
        }
    };
    [(idx(i0), 1.0 - f), (idx(i0 + 1.0), f)]
}

/// Where the colour recipe looks in one crop, and what it sees there.
pub(super) struct PixelPart {
    /// Weight of each pixel, row-major (`side * side`): the centre prior, zero on background.
    pub weights: Vec<f64>,
    /// The weighted soft HSV histogram, square-rooted and L2-normalised (`HIST_LEN` values).
    pub histogram: Vec<f32>,
}

/// The pixel part of the colour recipe for one square crop.
pub(super) fn pixel_part(crop: &RgbImage) -> PixelPart {
    let side = crop.width() as usize;
    debug_assert_eq!(crop.height() as usize, side, "a square crop");
    let border = border_colour(crop);
    let mut weights = vec![0f64; side * side];
    let (mut sum_w, mut sum_g) = (0f64, 0f64);
    for (i, p) in crop.pixels().enumerate() {
        let g = centre_weight(i % side, i / side, side);
        sum_g += g;
        let is_bg = (0..3).all(|c| (f64::from(p.0[c]) - border[c]).abs() <= TOLERANCE);
        if !is_bg {
            weights[i] = g;
            sum_w += g;
        }
    }
    // All background (a flat image, or a product that fills the frame in the border's
    // colour): the centre prior alone.
    if sum_w < 1e-6 * sum_g {
        for (i, w) in weights.iter_mut().enumerate() {
            *w = centre_weight(i % side, i / side, side);
        }
    }
    let mut hist = vec![0f64; HIST_LEN];
    for (p, &w) in crop.pixels().zip(&weights) {
        if w == 0.0 {
            continue;
        }
        let [h, s, v] = hsv(p.0);
        for (ih, wh) in soft(h, BINS[0], true) {
            for (is, ws) in soft(s, BINS[1], false) {
                for (iv, wv) in soft(v, BINS[2], false) {
                    hist[(ih * BINS[1] + is) * BINS[2] + iv] += w * wh * ws * wv;
                }
            }
        }
    }
    let total: f64 = hist.iter().sum();
    let mut rooted: Vec<f64> = hist
        .iter()
        .map(|&x| if total > 0.0 { (x / total).sqrt() } else { 0.0 })
        .collect();
    let norm = rooted.iter().map(|x| x * x).sum::<f64>().sqrt();
    if norm > 0.0 {
        rooted.iter_mut().for_each(|x| *x /= norm);
    }
    PixelPart {
        weights,
        histogram: rooted.into_iter().map(|x| x as f32).collect(),
    }
}

/// `weights` (`side * side`) averaged over `side / map` x `side / map` cells: the weight of
/// each cell of a `map x map` feature map.
pub(super) fn box_average(weights: &[f64], side: usize, map: usize) -> Vec<f32> {
    let f = side / map;
    let mut out = vec![0f32; map * map];
    for (j, row) in out.chunks_exact_mut(map).enumerate() {
        for (i, cell) in row.iter_mut().enumerate() {
            let mut s = 0.0;
            for y in j * f..(j + 1) * f {
                s += weights[y * side + i * f..y * side + (i + 1) * f]
                    .iter()
                    .sum::<f64>();
            }
            *cell = (s / (f * f) as f64) as f32;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hsv_matches_colorsys() {
        // colorsys.rgb_to_hsv(r/255, g/255, b/255) in Python 3.11.
        let cases: [([u8; 3], [f64; 3]); 5] = [
            ([255, 0, 0], [0.0, 1.0, 1.0]),
            ([0, 128, 255], [0.5830065359477125, 1.0, 1.0]),
            (
                [200, 100, 150],
                [0.9166666666666666, 0.5, 0.7843137254901961],
            ),
            ([10, 10, 10], [0.0, 0.0, 0.0392156862745098]),
            ([255, 0, 10], [0.9934640522875817, 1.0, 1.0]),
        ];
        for (p, want) in cases {
            let got = hsv(p);
            for c in 0..3 {
                assert!(
                    (got[c] - want[c]).abs() < 1e-12,
                    "{p:?}: {got:?} vs {want:?}"
                );
            }
        }
    }

    #[test]
    fn soft_bins_wrap_hue_and_clamp_the_rest() {
        assert_eq!(soft(0.0, 24, true), [(23, 0.5), (0, 0.5)]);
        assert_eq!(soft(1.0, 4, false), [(3, 0.5), (3, 0.5)]);
        let [(a, wa), (b, wb)] = soft(0.3, 4, false);
        assert_eq!((a, b), (0, 1));
        assert!((wa - 0.3).abs() < 1e-12 && (wb - 0.7).abs() < 1e-12);
    }

    #[test]
    fn the_border_median_counts_each_ring_pixel_once() {
        // A 224 crop: 892 ring pixels; 445 of value 10 and 447 of value 20 give 20.
        let mut crop = RgbImage::from_pixel(224, 224, image::Rgb([20, 20, 20]));
        let mut n = 0;
        'outer: for x in 0..224 {
            for y in [0, 223] {
                crop.put_pixel(x, y, image::Rgb([10, 10, 10]));
                n += 1;
                if n == 445 {
                    break 'outer;
                }
            }
        }
        assert_eq!(border_colour(&crop), [20.0; 3]);
        crop.put_pixel(223, 100, image::Rgb([10, 10, 10]));
        assert_eq!(border_colour(&crop), [15.0; 3]);
    }

    /// The crops of `tests/fixtures/make_recipe_reference.py`.
    fn studio() -> RgbImage {
        RgbImage::from_fn(224, 224, |x, y| {
            let (x, y) = (i64::from(x), i64::from(y));
            let mut p = [246i64 + ((x * 7 + y * 3) % 5) - 2; 3];
            if (x - 112).abs() < 50 && y > 90 && y < 210 {
                p = [170 + x % 20, 25 + y % 10, 40 + (x + y) % 15];
            }
            if (x - 112).pow(2) + (y - 55).pow(2) < 30 * 30 {
                p = [224, 172, 140];
            }
            image::Rgb(p.map(|v| v.clamp(0, 255) as u8))
        })
    }

    fn gradient() -> RgbImage {
        RgbImage::from_fn(224, 224, |x, y| {
            let v = |c: u32| ((x * 7 + y * 13 + c * 61 + (x * y) % 17) % 256) as u8;
            image::Rgb([v(0), v(1), v(2)])
        })
    }

    #[test]
    fn the_pixel_part_matches_the_numpy_reference() {
        // tests/fixtures/recipe_reference.json: make_recipe_reference.py (NumPy, f64).
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/recipe_reference.json"
        );
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        for (name, crop) in [("studio", studio()), ("gradient", gradient())] {
            let want = &json[name];
            let border: Vec<f64> = serde_json::from_value(want["border"].clone()).unwrap();
            assert_eq!(border_colour(&crop).to_vec(), border, "{name}");
            let p = pixel_part(&crop);
            let sum: f64 = p.weights.iter().sum();
            let want_sum = want["weight_sum"].as_f64().unwrap();
            assert!(
                (sum - want_sum).abs() < 1e-9 * want_sum,
                "{name}: {sum} vs {want_sum}"
            );
            let w56: f64 = box_average(&p.weights, 224, 56)
                .iter()
                .map(|&v| f64::from(v))
                .sum();
            let want56 = want["weight56_sum"].as_f64().unwrap();
            assert!(
                (w56 - want56).abs() < 1e-5 * want56,
                "{name}: {w56} vs {want56}"
            );
            let hist: Vec<f64> = serde_json::from_value(want["histogram"].clone()).unwrap();
            assert_eq!(p.histogram.len(), hist.len());
            for (i, (g, w)) in p.histogram.iter().zip(&hist).enumerate() {
                assert!(
                    (f64::from(*g) - w).abs() < 1e-6,
                    "{name} bin {i}: {g} vs {w}"
                );
            }
        }
    }

    #[test]
    fn a_flat_image_falls_back_to_the_centre_prior() {
        let crop = RgbImage::from_pixel(224, 224, image::Rgb([250, 250, 250]));
        let p = pixel_part(&crop);
        assert!(p.weights.iter().all(|&w| w > 0.0));
        let n: f32 = p.histogram.iter().map(|x| x * x).sum();
        assert!((n - 1.0).abs() < 1e-5);
    }
}
