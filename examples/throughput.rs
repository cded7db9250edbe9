//! Images per second of a tap on random input.
//!
//! ```text
//! cargo run --release --example throughput -- [--batch 8] [--threads 2] [--upto 5] [--device flex]
//!     [--runs 7] [--random-weights] [--engine auto|burn|native|avx512|avx2] [--profile]
//!     [--precision fp32|int8]
//! ```
//!
//! Taps every block up to `--upto` (5 = all five taps), warms up, times `--runs` forward passes
//! (results read back to the host, and the device synchronised) and prints the median as
//! `img_per_s=<x>` on its last line. Uses the real weights when they are found, else random
//! weights (the speed is the same). `--engine burn` forces Burn's engine, `--engine avx2` (or
//! `avx512`) the native engine with that instruction set (also `ATTREX_ENGINE` or
//! `ATTREX_ISA`); `--profile` (or `ATTREX_PROFILE=1`) prints the native engine's time per
//! convolution. `--precision int8` runs the int8 engine (with AVX512-VNNI for `avx512`, the
//! default where the CPU has it), and `precision=` names its kernel (`int8-avx512-vnni`,
//! `int8-avx-vnni`, `int8-avx2`).

#[macro_use]
#[path = "common/mod.rs"]
mod common;

use std::error::Error;
use std::sync::Arc;
use std::time::Instant;

use attrex::burn::tensor::{Distribution, Tensor};
use attrex::{Block, BlockTap, Preprocessing, ResNetConfig};
use clap::Parser;

/// Images per second of a tap on random input.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Images per forward pass.
    #[arg(long, default_value_t = 8)]
    batch: usize,
    /// Rayon threads.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Tap every block up to this one (5: all five).
    #[arg(long, default_value_t = 5)]
    upto: u8,
    /// Timed forward passes (after two warm-up passes); the median is printed.
    #[arg(long, default_value_t = 7)]
    runs: usize,
    /// Random weights even when the real ones are found (the speed is the same).
    #[arg(long)]
    random_weights: bool,
    /// Print the native engine's time per convolution (also `ATTREX_PROFILE=1`).
    #[arg(long, env = "ATTREX_PROFILE")]
    profile: bool,
    #[command(flatten)]
    setup: common::Setup,
}

fn main() {
    if let Err(e) = run(Args::parse()) {
        common::fail(e.as_ref());
    }
}

fn run(args: Args) -> Result<(), Box<dyn Error>> {
    let Args {
        batch,
        threads,
        upto,
        runs,
        ..
    } = args;
    if batch == 0 {
        return Err("--batch must be at least 1".into());
    }
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build_global()?;
    let mut builder = args.setup.builder()?.profile(args.profile);
    let device = args.setup.device()?;
    let real = args
        .setup
        .weights
        .clone()
        .map(Ok)
        .unwrap_or_else(|| attrex::weights::locate(None));
    builder = match (args.random_weights, real) {
        (false, Ok(path)) => builder.weights(path),
        _ => builder
            .config(ResNetConfig::keras_resnet50())
            .random_weights(0, Preprocessing::Caffe),
    };
    let backbone = args.setup.finish(builder)?;
    let engine = backbone.engine();
    let precision = backbone.precision();
    // The int8 kernel, where int8 runs (`avx512-vnni`, `avx-vnni`, `avx2`).
    let precision = match backbone.int8_kernel() {
        Some(kernel) => format!("{precision}-{kernel}"),
        None => precision.to_string(),
    };
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
        "device={device:?} engine={engine} precision={precision} batch={batch} threads={threads} taps={} runs={} median_s={median:.4} min_s={:.4}",
        blocks.len(),
        times.len(),
        times[0]
    );
    out!("img_per_s={:.2}", batch as f64 / median);
    Ok(())
}
