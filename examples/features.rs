//! Pooled block features of images.
//!
//! ```text
//! cargo run --release --example features -- IMAGE... [--json] [--device flex|ndarray|wgpu]
//!     [--weights PATH] [--engine auto|burn|native|avx512|avx2] [--precision fp32|int8]
//! ```
//!
//! With `--json`, one line per image:
//! `{"path": "...", "blocks": [[64 floats], [256], [512], [1024], [2048]]}`.
//! Without it, a short summary per image.

#[macro_use]
#[path = "common/mod.rs"]
mod common;

use std::error::Error;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use attrex::BlockTap;
use clap::Parser;

/// Pooled block features of images (the five blocks of ResNet-50).
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// The images.
    #[arg(required = true, value_name = "IMAGE")]
    images: Vec<PathBuf>,
    /// One JSON line per image instead of a summary.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    setup: common::Setup,
}

fn main() {
    if let Err(e) = run(Args::parse()) {
        common::fail(e.as_ref());
    }
}

fn run(args: Args) -> Result<(), Box<dyn Error>> {
    let backbone = Arc::new(args.setup.backbone()?);
    if !args.json {
        out!(
            "weights {} loaded in {:.2?} on {:?}, engine {}, precision {}{}",
            &backbone.weights_id()[..12],
            backbone.load_time(),
            backbone.device(),
            backbone.engine(),
            backbone.precision(),
            backbone
                .int8_kernel()
                .map(|k| format!(" (the {k} int8 kernel)"))
                .unwrap_or_default()
        );
    }
    let tap = BlockTap::all(backbone);
    let taps = tap.taps();
    let print = |path: &std::path::Path, f: &attrex::Features, took: std::time::Duration| {
        if args.json {
            // Written by hand so that "path" comes first, as documented.
            let path = serde_json::to_string(&path.display().to_string())?;
            out!(
                "{{\"path\": {path}, \"blocks\": {}}}",
                serde_json::to_string(&f.blocks)?
            );
        } else {
            out!("{} ({took:.2?})", path.display());
            for (info, v) in taps.iter().zip(&f.blocks) {
                let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
                let (imax, max) = v
                    .iter()
                    .enumerate()
                    .fold((0, f32::MIN), |m, (i, &x)| if x > m.1 { (i, x) } else { m });
                let zeros = v.iter().filter(|&&x| x == 0.0).count();
                out!(
                    "  {:<6} dim={:<4} l2={norm:<9.3} max={max:.3}@{imax:<4} zeros={zeros}",
                    info.name,
                    info.dim
                );
            }
        }
        Ok::<(), Box<dyn Error>>(())
    };
    // A batch at a time (decoded in parallel); the time shown is the batch's share per image.
    for chunk in args.images.chunks(tap.batch_size()) {
        let start = Instant::now();
        match tap.extract_paths(chunk) {
            Ok(features) => {
                let each = start.elapsed() / chunk.len() as u32;
                for (path, f) in chunk.iter().zip(&features) {
                    print(path, f, each)?;
                }
            }
            // Image by image, so that the readable ones before the bad one are still printed.
            Err(_) => {
                for path in chunk {
                    let start = Instant::now();
                    let features = tap.extract_paths(std::slice::from_ref(path))?;
                    print(path, &features[0], start.elapsed())?;
                }
            }
        }
    }
    Ok(())
}
