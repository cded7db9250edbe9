//! The native CPU engine: the same folded ResNet as [`crate::resnet`], run by attrex's own
//! channels-last AVX-512 kernels instead of Burn's tensor operations.
//!
//! Burn's `flex` backend runs each convolution as NCHW-to-NHWC conversion, im2col and a GEMM,
//! then adds the bias, the residual and the ReLU in separate passes over the output. On
//! ResNet-50 most of those passes are memory-bound. This engine keeps every activation
//! channels-last with a zero border sized for the convolution that reads it, and fuses bias,
//! residual, ReLU and the average pool of tapped blocks into the GEMM's register tile
//! ([`kernel`]). `ATTREX_PROFILE=1` prints the time of every convolution and pass to stderr.
//!
//! It is chosen for the `flex` device on CPUs with AVX-512F (see [`crate::Engine`]); elsewhere
//! Burn runs the network. Both compute the same function and are tested against the same
//! reference outputs.

mod act;
mod buf;
mod kernel;

use act::{Act, Pool, max_pool_3x3_s2};
use kernel::{PROFILE, PackedConv, conv, conv_pooled};

use crate::arch::Bottleneck;
use crate::weights::FoldedNet;

pub(crate) use kernel::supported;

/// A folded ResNet packed for the native kernels.
pub(crate) struct NativeNet {
    stem: PackedConv,
    stages: [Vec<Bottleneck<PackedConv>>; 4],
    pool: Pool,
}

impl std::fmt::Debug for NativeNet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NativeNet")
            .field("stem", &self.stem)
            .field(
                "blocks",
                &self.stages.iter().map(Vec::len).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

/// Runs `f`, printing its time under `ATTREX_PROFILE`.
fn timed<T>(label: &str, f: impl FnOnce() -> T) -> T {
    let start = std::time::Instant::now();
    let out = f();
    if *PROFILE {
        eprintln!("op {label} ms={:.2}", start.elapsed().as_secs_f64() * 1e3);
    }
    out
}

impl NativeNet {
    /// Packs the folded convolutions. `None` when a shape does not suit the kernel (an output
    /// width not a multiple of 32) or the CPU lacks AVX-512F.
    pub fn new(net: &FoldedNet) -> Option<Self> {
        if !supported() {
            return None;
        }
        let packed = net
            .convs
            .try_map(|c| {
                let s = &c.spec;
                PackedConv::new(
                    s.channels, s.kernel, s.stride, s.padding, &c.weight, &c.bias,
                )
                .ok_or(())
            })
            .ok()?;
        Some(Self {
            stem: packed.stem,
            stages: packed.stages,
            pool: Pool::default(),
        })
    }

    /// The pooled outputs (`[n][dim]`, row-major) of each block in `wanted`, in block order,
    /// for a preprocessed NCHW batch `[n, 3, h, w]`; and of each `(block index, weights)` of
    /// `weighted`, in that order, pooled under the weights (`h * w` per image of the block's
    /// map, see [`Act::weighted_pool`]). Stages past the deepest block asked for never run.
    pub fn pooled(
        &self,
        nchw: &[f32],
        [n, c, h, w]: [usize; 4],
        wanted: [bool; 5],
        weighted: &[(usize, &[f32])],
    ) -> (Vec<Vec<f32>>, Vec<Vec<f32>>) {
        let deepest = wanted
            .iter()
            .rposition(|&x| x)
            .map_or(0, |i| i + 1)
            .max(weighted.iter().map(|(b, _)| b + 1).max().unwrap_or(0));
        let mut out = Vec::new();
        let mut out_weighted: Vec<Option<Vec<f32>>> = vec![None; weighted.len()];
        let mut pool_weighted = |block: usize, act: &Act| {
            for (slot, (b, weights)) in out_weighted.iter_mut().zip(weighted) {
                if *b == block {
                    *slot = Some(act.weighted_pool(weights));
                }
            }
        };
        if deepest == 0 {
            return (out, Vec::new());
        }
        assert_eq!(c, self.stem.cin, "input channels");
        let t_all = std::time::Instant::now();
        let input = timed("take+fill", || {
            let mut input = self.pool.take(n, h, w, c, self.stem.pad);
            input.fill_from_nchw(nchw);
            input
        });
        let (sh, sw) = (self.stem.out_side(h), self.stem.out_side(w));
        // The max-pool reads a border of 1.
        let mut stem = self.pool.take(n, sh, sw, self.stem.cout, 1);
        // A tapped block's average pool is summed in the epilogue of the convolution that
        // writes it.
        if wanted[0] {
            out.push(conv_pooled(&self.stem, &input, &mut stem, false, true));
        } else {
            conv(&self.stem, &input, &mut stem, false, true);
        }
        pool_weighted(0, &stem);
        self.pool.give(input);
        let mut x = timed("maxpool", || {
            let mut x = self
                .pool
                .take(n, (sh - 1) / 2 + 1, (sw - 1) / 2 + 1, stem.c, 0);
            max_pool_3x3_s2(&stem, &mut x);
            x
        });
        self.pool.give(stem);
        for (i, stage) in self.stages.iter().enumerate().take(deepest - 1) {
            for (j, block) in stage.iter().enumerate() {
                let pooled;
                (x, pooled) = self.bottleneck(block, x, wanted[i + 1] && j + 1 == stage.len());
                out.extend(pooled);
            }
            pool_weighted(i + 1, &x);
        }
        self.pool.give(x);
        if *PROFILE {
            eprintln!("op pooled ms={:.2}", t_all.elapsed().as_secs_f64() * 1e3);
        }
        let weighted = out_weighted
            .into_iter()
            .map(|v| v.expect("every weighted block is at most as deep as the pass"))
            .collect();
        (out, weighted)
    }

    /// One bottleneck; with `pool`, also the average pool of its output.
    fn bottleneck(
        &self,
        b: &Bottleneck<PackedConv>,
        x: Act,
        pool: bool,
    ) -> (Act, Option<Vec<f32>>) {
        // The shortcut buffer receives conv3's output in place (see `conv`'s `accumulate`).
        let (x, mut out) = match &b.downsample {
            Some(d) => {
                let mut s = self
                    .pool
                    .take(x.n, d.out_side(x.h), d.out_side(x.w), d.cout, 0);
                conv(d, &x, &mut s, false, false);
                (Some(x), s)
            }
            None => (None, x),
        };
        let input = x.as_ref().unwrap_or(&out);
        let (h1, w1) = (b.conv1.out_side(input.h), b.conv1.out_side(input.w));
        let mut y1 = self.pool.take(input.n, h1, w1, b.conv1.cout, b.conv2.pad);
        conv(&b.conv1, input, &mut y1, false, true);
        if let Some(x) = x {
            self.pool.give(x);
        }
        let (h2, w2) = (b.conv2.out_side(h1), b.conv2.out_side(w1));
        let mut y2 = self.pool.take(y1.n, h2, w2, b.conv2.cout, b.conv3.pad);
        conv(&b.conv2, &y1, &mut y2, false, true);
        self.pool.give(y1);
        let pooled = if pool {
            Some(conv_pooled(&b.conv3, &y2, &mut out, true, true))
        } else {
            conv(&b.conv3, &y2, &mut out, true, true);
            None
        };
        self.pool.give(y2);
        (out, pooled)
    }
}
