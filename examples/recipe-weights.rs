//! What the colour recipe looks at: for a dozen photos, the network's input square beside the
//! same square under the recipe's pixel weights (the background it estimates is dark, the centre
//! prior fades the edges), in one PNG.
//!
//! ```text
//! cargo run --release --example recipe-weights -- [DIR] [--count 12] [--out PNG]
//! ```
//!
//! `DIR` is a folder of class folders (default `../shared/data/color`); the photos are taken
//! from each class in turn. Writes `--out` (default
//! `target/attrex-recipe/colour_weights.png`) and prints, per photo, the share of its square
//! taken for background. No network runs: the weights come from the pixels alone.

#[macro_use]
#[path = "common/mod.rs"]
mod common;

use std::error::Error;
use std::path::PathBuf;

use attrex::plot::Canvas;
use attrex::{Dataset, Recipe, input_square, read_image};
use clap::Parser;
use image::{Rgb, RgbImage};

/// Draws which pixels the colour recipe pools, for a dozen photos.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// A folder of class folders of photos.
    #[arg(default_value = "../shared/data/color")]
    dir: PathBuf,
    /// Photos to draw.
    #[arg(long, default_value_t = 12)]
    count: usize,
    /// The PNG to write.
    #[arg(long, default_value = "target/attrex-recipe/colour_weights.png")]
    out: PathBuf,
}

fn main() {
    if let Err(e) = run(Args::parse()) {
        common::fail(e.as_ref());
    }
}

fn run(args: Args) -> Result<(), Box<dyn Error>> {
    let data = Dataset::open(&args.dir)?;
    // Each class in turn: its first photo, then its second, ...
    let mut by_class: Vec<Vec<&attrex::Item>> = vec![Vec::new(); data.classes.len()];
    for item in &data.items {
        by_class[item.label].push(item);
    }
    let mut picked = Vec::new();
    for round in 0.. {
        let before = picked.len();
        for class in &by_class {
            if picked.len() < args.count
                && let Some(item) = class.get(round)
            {
                picked.push(*item);
            }
        }
        if picked.len() == args.count || picked.len() == before {
            break;
        }
    }
    if picked.is_empty() {
        return Err(format!("{}: no photos", args.dir.display()).into());
    }
    let side = attrex::INPUT_SIDE as u32;
    let (cols, label_h, gap) = (4u32, 22u32, 12u32);
    let rows = (picked.len() as u32).div_ceil(cols);
    let cell_w = 2 * side + gap;
    let mut canvas = Canvas::new(cols * cell_w + gap, rows * (side + label_h) + gap + 30);
    canvas.text(
        gap as i64,
        8,
        "colour recipe: input square | the pixels it pools (dark: background or far from the centre)",
        1,
        [0, 0, 0],
    );
    for (i, item) in picked.iter().enumerate() {
        let crop = input_square(&read_image(&item.path)?);
        let weights = Recipe::Colour
            .pixel_weights(&crop)
            .ok_or("the colour recipe weighs pixels")?;
        let max = weights.iter().copied().fold(0f32, f32::max).max(1e-12);
        let shaded = RgbImage::from_fn(side, side, |x, y| {
            let w = weights[(y * side + x) as usize] / max;
            let Rgb(p) = *crop.get_pixel(x, y);
            // Pooled pixels keep their colour; the rest fade to a dark blue.
            Rgb(p.map(|c| (f32::from(c) * w + 30.0 * (1.0 - w)) as u8))
        });
        let background =
            weights.iter().filter(|&&w| w == 0.0).count() as f64 / weights.len() as f64;
        let (col, row) = (i as u32 % cols, i as u32 / cols);
        let (x, y) = (
            (gap + col * cell_w) as i64,
            (30 + row * (side + label_h)) as i64,
        );
        canvas.paste(x, y, &crop);
        canvas.paste(x + side as i64, y, &shaded);
        let class = &data.classes[item.label];
        canvas.text(
            x,
            y + side as i64 + 4,
            &format!("{class}: background {:.0} %", background * 100.0),
            1,
            [0, 0, 0],
        );
        out!(
            "path={} class={class} background={background:.3}",
            item.path.display()
        );
    }
    if let Some(parent) = args.out.parent() {
        std::fs::create_dir_all(parent)?;
    }
    canvas.save_png(&args.out)?;
    eprintln!("wrote {}", args.out.display());
    Ok(())
}
