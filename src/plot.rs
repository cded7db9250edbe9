//! Small PNG figures drawn with `image` and an embedded 8x8 bitmap font (`font8x8`), so that
//! figures need no system fonts: confusion matrices, and a [`Canvas`] for contact sheets.

use std::path::Path;

use font8x8::UnicodeFonts;
use image::{Rgb, RgbImage};

/// An RGB canvas with rectangles and bitmap text.
pub struct Canvas {
    img: RgbImage,
}

impl Canvas {
    /// A white canvas.
    pub fn new(width: u32, height: u32) -> Self {
        Self {
            img: RgbImage::from_pixel(width, height, Rgb([255, 255, 255])),
        }
    }

    /// Fills a rectangle (clipped to the canvas).
    pub fn rect(&mut self, x: i64, y: i64, w: u32, h: u32, color: [u8; 3]) {
        let (cw, ch) = (i64::from(self.img.width()), i64::from(self.img.height()));
        for yy in y.max(0)..(y + i64::from(h)).min(ch) {
            for xx in x.max(0)..(x + i64::from(w)).min(cw) {
                self.img.put_pixel(xx as u32, yy as u32, Rgb(color));
            }
        }
    }

    /// Width in pixels of `text` at `scale`.
    pub fn text_width(text: &str, scale: u32) -> u32 {
        text.chars().count() as u32 * 8 * scale
    }

    /// Draws `text` with its top-left corner at (x, y); 8 px per character times `scale`.
    pub fn text(&mut self, x: i64, y: i64, text: &str, scale: u32, color: [u8; 3]) {
        for (i, c) in text.chars().enumerate() {
            let glyph = font8x8::BASIC_FONTS
                .get(c)
                .or_else(|| font8x8::BASIC_FONTS.get('?'))
                .unwrap_or([0; 8]);
            for (row, bits) in glyph.iter().enumerate() {
                for col in 0..8 {
                    if bits & (1 << col) != 0 {
                        let px = x + (i as i64 * 8 + col) * i64::from(scale);
                        self.rect(px, y + row as i64 * i64::from(scale), scale, scale, color);
                    }
                }
            }
        }
    }

    /// Draws `text` rotated a quarter turn clockwise (reading downwards) in a column 8 px times
    /// `scale` wide, starting at (x, y).
    pub fn text_vertical(&mut self, x: i64, y: i64, text: &str, scale: u32, color: [u8; 3]) {
        let n = text.chars().count() as i64;
        for (i, c) in text.chars().enumerate() {
            let glyph = font8x8::BASIC_FONTS.get(c).unwrap_or([0; 8]);
            for (row, bits) in glyph.iter().enumerate() {
                for col in 0..8i64 {
                    if bits & (1 << col) != 0 {
                        let px = x + row as i64 * i64::from(scale);
                        let py = y + ((n - 1 - i as i64) * 8 + (7 - col)) * i64::from(scale);
                        self.rect(px, py, scale, scale, color);
                    }
                }
            }
        }
    }

    /// Pastes `img` with its top-left corner at (x, y), clipped to the canvas.
    pub fn paste(&mut self, x: i64, y: i64, img: &RgbImage) {
        image::imageops::overlay(&mut self.img, img, x, y);
    }

    /// Writes the canvas as a PNG, atomically.
    ///
    /// # Errors
    /// The I/O error of writing the file.
    pub fn save_png(&self, path: &Path) -> std::io::Result<()> {
        let mut bytes = std::io::Cursor::new(Vec::new());
        self.img
            .write_to(&mut bytes, image::ImageFormat::Png)
            .map_err(std::io::Error::other)?;
        crate::fsutil::write_atomic(path, bytes.get_ref())
    }

    /// The pixels.
    pub fn image(&self) -> &RgbImage {
        &self.img
    }
}

/// White to dark blue, for `t` in 0..=1.
fn blues(t: f64) -> [u8; 3] {
    let t = t.clamp(0.0, 1.0);
    let lerp = |a: f64, b: f64| (a + (b - a) * t).round() as u8;
    [lerp(247.0, 8.0), lerp(251.0, 48.0), lerp(255.0, 107.0)]
}

/// Draws a confusion matrix (`matrix[true][predicted]`) as a heat map normalised per true class
/// (each row sums to 1), with the counts in the cells, class names on both axes and a title.
pub fn confusion_matrix(matrix: &[Vec<usize>], classes: &[String], title: &str) -> Canvas {
    let n = classes.len();
    let cell = 44u32;
    let label_w = classes
        .iter()
        .map(|c| Canvas::text_width(c, 1))
        .max()
        .unwrap_or(0)
        + 16;
    let (left, top) = (label_w as i64 + 24, 40i64);
    let width = left as u32 + cell * n as u32 + 20;
    let height = top as u32 + cell * n as u32 + label_w + 30;
    let mut c = Canvas::new(width, height.max(120));
    c.text(10, 12, title, 2, [0, 0, 0]);
    for (t, row) in matrix.iter().enumerate() {
        let total: usize = row.iter().sum();
        for (p, &count) in row.iter().enumerate() {
            let frac = if total == 0 {
                0.0
            } else {
                count as f64 / total as f64
            };
            let color = blues(frac);
            let (x, y) = (
                left + (p as u32 * cell) as i64,
                top + (t as u32 * cell) as i64,
            );
            c.rect(x, y, cell - 1, cell - 1, color);
            let s = count.to_string();
            let ink = if frac > 0.5 {
                [255, 255, 255]
            } else {
                [0, 0, 0]
            };
            let tw = Canvas::text_width(&s, 1) as i64;
            c.text(
                x + (i64::from(cell) - tw) / 2,
                y + i64::from(cell) / 2 - 4,
                &s,
                1,
                ink,
            );
        }
        let tw = Canvas::text_width(&classes[t], 1) as i64;
        c.text(
            left - 8 - tw,
            top + (t as u32 * cell + cell / 2) as i64 - 4,
            &classes[t],
            1,
            [0, 0, 0],
        );
    }
    for (p, name) in classes.iter().enumerate() {
        let x = left + (p as u32 * cell + cell / 2) as i64 - 4;
        c.text_vertical(x, top + (n as u32 * cell) as i64 + 8, name, 1, [0, 0, 0]);
    }
    c.text_vertical(4, top, "true", 1, [90, 90, 90]);
    c.text(
        left,
        top + (n as u32 * cell) as i64 + label_w as i64 + 10,
        "predicted",
        1,
        [90, 90, 90],
    );
    c
}

/// A line chart of one or more series over the same categorical x axis, y from 0 to 1 (scores
/// such as ARI and AMI), with a legend.
pub fn line_chart(
    title: &str,
    x_labels: &[String],
    series: &[(&str, Vec<f64>, [u8; 3])],
) -> Canvas {
    let (left, top, w, h) = (60i64, 50i64, 480i64, 300i64);
    let mut c = Canvas::new((left + w + 150) as u32, (top + h + 60) as u32);
    c.text(10, 14, title, 2, [0, 0, 0]);
    // Axes and grid at 0, 0.25, ... 1.
    for g in 0..=4 {
        let y = top + h - h * g / 4;
        c.rect(left, y, w as u32, 1, [220, 220, 220]);
        c.text(
            left - 44,
            y - 4,
            &format!("{:.2}", g as f64 / 4.0),
            1,
            [80, 80, 80],
        );
    }
    c.rect(left, top, 1, h as u32, [0, 0, 0]);
    c.rect(left, top + h, w as u32, 1, [0, 0, 0]);
    let n = x_labels.len().max(1) as i64;
    let x_at = |i: usize| left + w * (2 * i as i64 + 1) / (2 * n);
    for (i, label) in x_labels.iter().enumerate() {
        let tw = Canvas::text_width(label, 1) as i64;
        c.text(x_at(i) - tw / 2, top + h + 10, label, 1, [0, 0, 0]);
    }
    let y_at = |v: f64| top + h - (v.clamp(0.0, 1.0) * h as f64).round() as i64;
    for (s, (name, values, color)) in series.iter().enumerate() {
        // Segments drawn as dense dots, points as squares.
        for i in 1..values.len() {
            let (x0, y0, x1, y1) = (x_at(i - 1), y_at(values[i - 1]), x_at(i), y_at(values[i]));
            let steps = (x1 - x0).abs().max((y1 - y0).abs()).max(1);
            for t in 0..=steps {
                c.rect(
                    x0 + (x1 - x0) * t / steps - 1,
                    y0 + (y1 - y0) * t / steps - 1,
                    3,
                    3,
                    *color,
                );
            }
        }
        for (i, v) in values.iter().enumerate() {
            c.rect(x_at(i) - 4, y_at(*v) - 4, 9, 9, *color);
            c.text(x_at(i) + 6, y_at(*v) - 14, &format!("{v:.2}"), 1, *color);
        }
        let ly = top + 10 + 20 * s as i64;
        c.rect(left + w + 20, ly, 20, 8, *color);
        c.text(left + w + 48, ly, name, 1, [0, 0, 0]);
    }
    c
}

/// Ten distinguishable colours (matplotlib's tab10), reused cyclically.
pub(crate) const PALETTE: [[u8; 3]; 10] = [
    [31, 119, 180],
    [255, 127, 14],
    [44, 160, 44],
    [214, 39, 40],
    [148, 103, 189],
    [140, 86, 75],
    [227, 119, 194],
    [127, 127, 127],
    [188, 189, 34],
    [23, 190, 207],
];

/// The colour a class is drawn in: its own colour when the class is named after one (so that a
/// "red" class is red), else the palette's.
pub fn class_colour(name: &str, index: usize) -> [u8; 3] {
    match name.to_ascii_lowercase().as_str() {
        "black" => [20, 20, 20],
        "white" => [225, 225, 225],
        "gray" | "grey" => [140, 140, 140],
        "red" => [220, 20, 30],
        "pink" => [255, 130, 190],
        "orange" => [255, 140, 0],
        "yellow" => [230, 200, 0],
        "green" => [30, 150, 40],
        "blue" => [30, 80, 220],
        "purple" => [130, 40, 170],
        "brown" => [130, 80, 30],
        _ => PALETTE[index % PALETTE.len()],
    }
}

/// Draws `title` at scale 2, or 1 when that would not fit in `width`.
fn title(c: &mut Canvas, title: &str, width: u32) {
    let scale = if Canvas::text_width(title, 2) + 20 <= width {
        2
    } else {
        1
    };
    c.text(10, 12, title, scale, [0, 0, 0]);
}

/// A scatter plot of 2-D points coloured by class, with a legend of the class names.
pub fn scatter(heading: &str, points: &[[f32; 2]], classes: &[usize], names: &[String]) -> Canvas {
    let (left, top, side) = (20i64, 44i64, 520i64);
    let legend_w = names
        .iter()
        .map(|n| Canvas::text_width(n, 1))
        .max()
        .unwrap_or(0) as i64
        + 50;
    let width = (left + side + 20 + legend_w) as u32;
    let mut c = Canvas::new(width, (top + side + 20) as u32);
    title(&mut c, heading, width);
    c.rect(left, top, side as u32, 1, [160, 160, 160]);
    c.rect(left, top + side, side as u32, 1, [160, 160, 160]);
    c.rect(left, top, 1, side as u32, [160, 160, 160]);
    c.rect(left + side, top, 1, side as u32 + 1, [160, 160, 160]);
    let (mut lo, mut hi) = ([f32::MAX; 2], [f32::MIN; 2]);
    for p in points {
        for d in 0..2 {
            lo[d] = lo[d].min(p[d]);
            hi[d] = hi[d].max(p[d]);
        }
    }
    let pad = 12.0;
    let at = |v: f32, d: usize| -> i64 {
        let span = (hi[d] - lo[d]).max(f32::MIN_POSITIVE);
        let t = (v - lo[d]) / span;
        let t = if d == 1 { 1.0 - t } else { t };
        (pad + t * (side as f32 - 2.0 * pad)) as i64
    };
    for (p, &class) in points.iter().zip(classes) {
        let color = class_colour(names.get(class).map_or("", String::as_str), class);
        c.rect(left + at(p[0], 0) - 2, top + at(p[1], 1) - 2, 5, 5, color);
    }
    for (i, name) in names.iter().enumerate() {
        let y = top + 8 + 16 * i as i64;
        c.rect(left + side + 20, y, 10, 10, class_colour(name, i));
        c.text(left + side + 36, y + 1, name, 1, [0, 0, 0]);
    }
    c
}
