//! Images per second of a tap on random input.
//!
//! ```text
//! cargo run --release --example throughput -- [--batch 8] [--threads 2] [--upto 5] [--device flex]
//!     [--runs 7] [--random-weights] [--engine burn|native]
//! ```
//!
//! Taps every block up to `--upto` (5 = all five taps), warms up, times `--runs` forward passes
//! (results read back to the host, and the device synchronised) and prints the median as
//! `img_per_s=<x>` on its last line. Uses the real weights when they are found, else random
//! weights (the speed is the same). `--engine burn` forces Burn's engine; `ATTREX_ISA=avx2`
//! (or `avx512`) forces the native engine with that instruction set; `ATTREX_PROFILE=1` prints
//! the native engine's time per convolution.

#[macro_use]
#[path = "common/mod.rs"]
mod common;

use std::error::Error;
use std::sync::Arc;
use std::time::Instant;

use attrex::burn::tensor::{Distribution, Tensor};
use attrex::{Backbone, Block, BlockTap, Engine, Isa, Preprocessing, ResNetConfig};

fn value<T: std::str::FromStr>(
    it: &mut impl Iterator<Item = String>,
    flag: &str,
) -> Result<T, String> {
    it.next()
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| format!("{flag} needs a valid value"))
}

fn main() -> Result<(), Box<dyn Error>> {
    let (mut batch, mut threads, mut upto, mut runs) = (8usize, 2usize, 5u8, 7usize);
    let (mut device_name, mut random, mut burn) = (None::<String>, false, false);
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--batch" => batch = value(&mut it, "--batch")?,
            "--threads" => threads = value(&mut it, "--threads")?,
            "--upto" => upto = value(&mut it, "--upto")?,
            "--runs" => runs = value(&mut it, "--runs")?,
            "--device" => device_name = Some(value(&mut it, "--device")?),
            "--random-weights" => random = true,
            "--engine" => match value::<String>(&mut it, "--engine")?.as_str() {
                "burn" => burn = true,
                "native" => burn = false,
                other => return Err(format!("--engine burn|native, not {other}").into()),
            },
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build_global()?;
    let device = match &device_name {
        Some(n) => attrex::device_from_name(n)?,
        None => attrex::default_device()?,
    };
    let mut builder = Backbone::builder()
        .device(device.clone())
        .profile(std::env::var_os("ATTREX_PROFILE").is_some());
    builder = match (random, attrex::weights::locate(None)) {
        (false, Ok(path)) => builder.weights(path),
        _ => builder
            .config(ResNetConfig::keras_resnet50())
            .random_weights(0, Preprocessing::Caffe),
    };
    if let Some(name) = std::env::var_os("ATTREX_ISA") {
        let name = name.to_string_lossy();
        let isa = Isa::from_name(&name).ok_or(format!("ATTREX_ISA: unknown {name:?}"))?;
        builder = builder.engine(Engine::Native(isa));
    }
    if burn {
        builder = builder.engine(Engine::Burn);
    }
    let backbone = builder.build()?;
    let engine = backbone.engine();
    let last = Block::new(upto)?;
    let blocks: Vec<Block> = Block::ALL.into_iter().filter(|b| *b <= last).collect();
    let tap = BlockTap::new(Arc::new(backbone), &blocks)?;
    let input = Tensor::<4>::random(
        [batch, 3, 224, 224],
        Distribution::Normal(0.0, 50.0),
        &device,
    );
    let run = || -> Result<f64, Box<dyn Error>> {
        let start = Instant::now();
        for t in tap.forward(input.clone())? {
            t.into_data();
        }
        device.sync().map_err(|e| format!("device sync: {e:?}"))?;
        Ok(start.elapsed().as_secs_f64())
    };
    run()?;
    run()?;
    let mut times = (0..runs.max(1))
        .map(|_| run())
        .collect::<Result<Vec<_>, _>>()?;
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    out!(
        "device={device:?} engine={engine} batch={batch} threads={threads} taps={} runs={} median_s={median:.4} min_s={:.4}",
        blocks.len(),
        times.len(),
        times[0]
    );
    out!("img_per_s={:.2}", batch as f64 / median);
    Ok(())
}
