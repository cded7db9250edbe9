//! The native CPU engine: the same folded ResNet as [`crate::resnet`], run by attrex's own
//! channels-last kernels instead of Burn's tensor operations.
//!
//! Burn's `flex` backend runs each convolution as NCHW-to-NHWC conversion, im2col and a GEMM,
//! then adds the bias, the residual and the ReLU in separate passes over the output. On
//! ResNet-50 most of those passes are memory-bound. This engine keeps every activation
//! channels-last with a zero border sized for the convolution that reads it, and fuses bias,
//! residual, ReLU and the average pool of tapped blocks into the GEMM's register tile
//! ([`kernel`]). With [`BackboneBuilder::profile`](crate::BackboneBuilder::profile) it prints
//! the time of every convolution and pass to stderr.
//!
//! The kernels exist for AVX-512F ([`avx512`]) and for AVX2 + FMA ([`avx2`]), and in int8 (the
//! bottleneck stages of [`Precision::Int8`](crate::Precision::Int8), [`int8`]) for AVX512-VNNI,
//! AVX-VNNI and AVX2; [`isa`] holds the tokens that prove the CPU runs them, which every kernel
//! entry point takes. The engine is chosen for the `flex` device where the CPU has one of them
//! (see [`crate::Engine`]);
//! elsewhere Burn runs the network. All compute the same function and are tested against the
//! same reference outputs.

mod act;
mod avx2;
mod avx512;
mod buf;
mod int8;
mod isa;
mod kernel;
mod winograd;

use std::time::Instant;

use rayon::prelude::*;

use act::{Act, Pool, max_pool_3x3_s2};
use kernel::{PackedConv, Stats, conv, conv_stats};
use winograd::WinogradConv;

use crate::arch::Bottleneck;
use crate::weights::{FoldedConv, FoldedNet};

pub(crate) use int8::scheme as int8_scheme;
use isa::{Avx2Fma, Avx2Int8, Avx2Pairs, Avx512, Avx512Vnni, Int8, Kernel};
pub use isa::{Int8Kernel, Isa};

/// A folded ResNet packed for the native kernels of one instruction set.
#[derive(Debug)]
pub(crate) struct NativeNet {
    net: ByIsa,
}

/// The network packed for the kernels of the instruction set the CPU was found to run.
#[derive(Debug)]
enum ByIsa {
    Avx512(Net<Avx512>),
    Avx2(Net<Avx2Fma>),
}

impl NativeNet {
    /// Packs the folded convolutions for the kernels of `isa`; with `profile`, every pass
    /// prints the time of each convolution and layer to stderr.
    ///
    /// # Errors
    /// Why the engine cannot run: the CPU lacks `isa`, or an output width is not a multiple of
    /// the kernel's panel.
    pub fn new(net: &FoldedNet, isa: Isa, profile: bool) -> Result<Self, &'static str> {
        let net = match isa {
            Isa::Avx512 => ByIsa::Avx512(Net::new(
                Avx512::detect().ok_or(isa.missing())?,
                net,
                profile,
            )?),
            Isa::Avx2 => ByIsa::Avx2(Net::new(
                Avx2Fma::detect().ok_or(isa.missing())?,
                net,
                profile,
            )?),
        };
        Ok(Self { net })
    }

    /// The bottleneck stages and the stem in int8 ([`int8`], [`int8::pack_stem`]): with
    /// `isa`'s float kernels and its int8 kernel (AVX512-VNNI for [`Isa::Avx512`]; for
    /// [`Isa::Avx2`], AVX-VNNI where the CPU has it, else AVX2 alone).
    ///
    /// # Errors
    /// Why it cannot run: the CPU lacks the instruction set (or AVX512-VNNI), or a width does
    /// not fit the kernels.
    pub fn new_int8(net: &FoldedNet, isa: Isa, profile: bool) -> Result<Self, &'static str> {
        let net = match isa {
            Isa::Avx512 => {
                let int8 = Avx512Vnni::detect().ok_or(INT8_AVX512_MISSING)?;
                ByIsa::Avx512(Net::new_int8(
                    int8.fp32(),
                    int8,
                    net,
                    profile,
                    |isa, stages| {
                        Int8Stages::Avx512Vnni(
                            isa,
                            stages,
                            int8::pack_stem(isa, &net.convs.stem).map(Box::new),
                        )
                    },
                )?)
            }
            Isa::Avx2 => {
                let fp32 = Avx2Fma::detect().ok_or(isa.missing())?;
                ByIsa::Avx2(Net::new_int8(
                    fp32,
                    Avx2Int8::from(fp32),
                    net,
                    profile,
                    |isa, mut stages| {
                        // Without AVX-VNNI the 3x3s run by Winograd on 16-bit codes, and the
                        // direct ones keep only their shapes.
                        let winograd = if isa.vnni().is_none() {
                            int8_winograd_stages(net)
                        } else {
                            Default::default()
                        };
                        for (stage, winograd) in stages.iter_mut().zip(&winograd) {
                            for b in stage.iter_mut().take(winograd.len()) {
                                b.conv2.shape_only();
                            }
                        }
                        Int8Stages::Avx2(
                            isa,
                            stages,
                            winograd,
                            int8::pack_stem(isa, &net.convs.stem).map(Box::new),
                        )
                    },
                )?)
            }
        };
        Ok(Self { net })
    }

    /// The instruction set of the fastest int8 kernel this CPU runs: [`Isa::Avx512`] with
    /// AVX512-VNNI, else [`Isa::Avx2`] with AVX2 (and FMA), else `None`.
    pub fn best_int8() -> Option<Isa> {
        if Avx512Vnni::detect().is_some() {
            Some(Isa::Avx512)
        } else {
            Avx2Fma::detect().map(|_| Isa::Avx2)
        }
    }

    /// The int8 kernel that runs the bottleneck stages, or `None` in fp32.
    pub fn int8_kernel(&self) -> Option<Int8Kernel> {
        match &self.net {
            ByIsa::Avx512(net) => net.int8_kernel(),
            ByIsa::Avx2(net) => net.int8_kernel(),
        }
    }

    /// The instruction set the kernels use.
    pub fn isa(&self) -> Isa {
        match &self.net {
            ByIsa::Avx512(_) => Isa::Avx512,
            ByIsa::Avx2(_) => Isa::Avx2,
        }
    }

    /// The pooled outputs (`[n][dim]`, row-major) of each block in `wanted`, in block order,
    /// for a preprocessed NCHW batch `[n, 3, h, w]`; and of each `(block index, weights)` of
    /// `weighted`, in that order, pooled under the weights (`h * w` per image of the block's
    /// map, see [`Act::weighted_pool`]). Stages past the deepest block asked for never run.
    ///
    /// Where [`task_per_image`] says so, each image runs through the whole network as its own
    /// task, side by side with the others (its convolutions still split their tiles among
    /// idle threads). Each image's outputs are exactly those it gets alone in the same pool.
    ///
    /// # Panics
    /// If `dims` does not describe `nchw`, the input does not have the stem's channels, or a
    /// weight map does not match its block's map.
    pub fn pooled(
        &self,
        nchw: &[f32],
        dims: [usize; 4],
        wanted: [bool; 5],
        weighted: &[(usize, &[f32])],
    ) -> (Vec<Vec<f32>>, Vec<Vec<f32>>) {
        let whole = |nchw: &[f32], dims, weighted: &[(usize, &[f32])]| match &self.net {
            ByIsa::Avx512(net) => net.pooled(nchw, dims, wanted, weighted),
            ByIsa::Avx2(net) => net.pooled(nchw, dims, wanted, weighted),
        };
        let [n, c, h, w] = dims;
        if !task_per_image(n, self.int8_kernel().is_some()) {
            return whole(nchw, dims, weighted);
        }
        let per_image = c * h * w;
        assert_eq!(Some(nchw.len()), n.checked_mul(per_image), "input length");
        assert!(
            weighted.iter().all(|(_, w)| w.len().is_multiple_of(n)),
            "one weight per pixel"
        );
        let images: Vec<_> = (0..n)
            .into_par_iter()
            .with_max_len(1)
            .map(|i| {
                // Image `i`, with its plane of each weight map.
                let weighted: Vec<(usize, &[f32])> = weighted
                    .iter()
                    .map(|&(block, weights)| {
                        let plane = weights.len() / n;
                        (block, &weights[i * plane..][..plane])
                    })
                    .collect();
                let x = &nchw[i * per_image..][..per_image];
                whole(x, [1, c, h, w], &weighted)
            })
            .collect();
        // Each output is `[n][dim]`: the images' rows, in order.
        let join = |outputs: Vec<Vec<Vec<f32>>>| {
            outputs
                .into_iter()
                .reduce(|mut all, rows| {
                    for (all, part) in all.iter_mut().zip(rows) {
                        all.extend(part);
                    }
                    all
                })
                .unwrap_or_default()
        };
        let (plain, weighted): (Vec<_>, Vec<_>) = images.into_iter().unzip();
        (join(plain), join(weighted))
    }
}

/// The network packed for kernel `K`, with the token that lets it run them.
struct Net<K> {
    isa: K,
    stem: PackedConv<K>,
    stages: Stages<K>,
    /// The `f32` stages' 3x3 convolutions for Winograd's F(2x2, 3x3), by stage and block,
    /// where the kernel runs them so ([`Kernel::winograd`]; the stages then keep only their
    /// shapes, [`PackedConv::shape_only`]); empty otherwise.
    winograd: [Vec<WinogradConv<K>>; 4],
    pool: Pool,
    profile: bool,
}

/// Whether each image of a batch of `n` runs through the whole network as its own task, or
/// the batch as one.
///
/// int8, with more than one thread in rayon's pool: one image per task. Its activations
/// between convolutions are `f32` maps that the quantising passes read back; one image's stay
/// in a core's L2, where a batch's spread over both cores' caches and L3. Measured on the
/// Intel Xeon of `benches/README.md` (batch 8, 2 threads), against the batch as one task:
/// median per-round ratio 1.31 and 1.15 in two sittings (5 and 8 interleaved rounds); two
/// images per task 1.05.
///
/// fp32: the batch is one task, its convolutions split among the threads. Its weights are
/// four times int8's and would be read once per task; split in halves it measured 0.94x in
/// one sitting and about 1.3x in another, so it is left as it was.
fn task_per_image(n: usize, int8: bool) -> bool {
    int8 && n > 1 && rayon::current_num_threads() > 1
}

/// Why the int8 engine cannot run with [`Isa::Avx512`].
const INT8_AVX512_MISSING: &str =
    "this CPU lacks AVX512-VNNI (the int8 kernel for AVX-512; Isa::Avx2 runs int8 without it)";

/// The bottleneck stages, packed for the float kernel `K` or for an int8 kernel.
enum Stages<K> {
    Fp32(Packed<K>),
    Int8(Int8Stages),
}

/// The four stages of bottlenecks, packed for kernel `K`.
type Packed<K> = [Vec<Bottleneck<PackedConv<K>>>; 4];
/// The int8 stages.
type PackedInt8<I> = [Vec<int8::Int8Bottleneck<I>>; 4];

/// The bottleneck stages packed for one of the int8 kernels, with its token.
enum Int8Stages {
    /// With the 3x3s by Winograd's F(2x2, 3x3) on 16-bit codes, by stage and block, where
    /// they run so (AVX2 without AVX-VNNI, [`winograd::conv_pairs`]; the stages then keep
    /// only their shapes); empty otherwise.
    ///
    /// And the stem in int8 where it runs so ([`int8::pack_stem`]; the network's `f32` stem
    /// otherwise).
    Avx2(
        Avx2Int8,
        PackedInt8<Avx2Int8>,
        [Vec<WinogradConv<Avx2Pairs>>; 4],
        Option<Box<PackedConv<Avx2Int8>>>,
    ),
    /// The stages for AVX512-VNNI, and the stem in int8 where it runs so, as for
    /// [`Int8Stages::Avx2`].
    Avx512Vnni(
        Avx512Vnni,
        PackedInt8<Avx512Vnni>,
        Option<Box<PackedConv<Avx512Vnni>>>,
    ),
}

impl<K> Stages<K> {
    /// Bottlenecks per stage.
    fn lens(&self) -> [usize; 4] {
        match self {
            Stages::Fp32(s) => s.each_ref().map(Vec::len),
            Stages::Int8(s) => s.lens(),
        }
    }
}

impl Int8Stages {
    /// Bottlenecks per stage.
    fn lens(&self) -> [usize; 4] {
        match self {
            Int8Stages::Avx2(_, s, ..) => s.each_ref().map(Vec::len),
            Int8Stages::Avx512Vnni(_, s, _) => s.each_ref().map(Vec::len),
        }
    }

    /// The kernel, as the public API names it.
    fn kernel(&self) -> Int8Kernel {
        match self {
            Int8Stages::Avx2(isa, ..) => isa.name(),
            Int8Stages::Avx512Vnni(isa, ..) => isa.name(),
        }
    }
}

impl<K: Kernel> std::fmt::Debug for Net<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Net")
            .field("isa", &K::ISA)
            .field("stem", &self.stem)
            .field("blocks", &self.stages.lens())
            .field("int8", &self.int8_kernel())
            .finish_non_exhaustive()
    }
}

/// A folded convolution packed for the float kernel `K`.
///
/// # Errors
/// When its output width is not a whole number of `K`'s panels.
fn pack_float<K: Kernel>(c: &FoldedConv) -> Result<PackedConv<K>, &'static str> {
    let s = &c.spec;
    PackedConv::new(
        s.channels, s.kernel, s.stride, s.padding, &c.weight, &c.bias,
    )
    .ok_or(match K::ISA {
        Isa::Avx512 => "an output width is not a multiple of 32 (the AVX-512 panel)",
        Isa::Avx2 => "an output width is not a multiple of 16 (the AVX2 panel)",
    })
}

/// Every bottleneck's 3x3 for Winograd's F(2x2, 3x3), by stage: `None` unless all of them
/// have the shape it takes (every bottleneck ResNet's do), so that a network runs one way.
fn winograd_stages<K: Kernel>(net: &FoldedNet) -> Option<[Vec<WinogradConv<K>>; 4]> {
    let mut stages: [Vec<_>; 4] = Default::default();
    for (out, stage) in stages.iter_mut().zip(&net.convs.stages) {
        for b in stage {
            let (c, s) = (&b.conv2, &b.conv2.spec);
            if (s.kernel, s.stride, s.padding) != (3, 1, 1) {
                return None;
            }
            out.push(WinogradConv::new(s.channels, &c.weight, &c.bias)?);
        }
    }
    Some(stages)
}

/// The int8 network's 3x3s on AVX2 without AVX-VNNI that run by Winograd on 16-bit codes
/// ([`winograd::conv_pairs`]): those of the stages whose 3x3s take 128 or 256 channels
/// (ResNet-50's stages 2 and 3, on 28 x 28 and 14 x 14 maps), by stage and block; the other
/// stages' are empty. Measured on AMD Zen 3 (one thread, batch 8, fastest of 12 passes): the
/// 3x3s of stage 2 took 38.4 ms instead of 47.1 directly, stage 3's 53.2 instead of 68.3; stage
/// 1's (64 channels: 32 words per product, which its epilogue outweighs) 37.2 instead of 36.4,
/// and stage 4's (7 x 7 maps: 31 % of the products past the border, and 8 MB of weights per
/// convolution) 36.2 instead of 34.4, so those stay direct (`benches/README.md`).
fn int8_winograd_stages(net: &FoldedNet) -> [Vec<WinogradConv<Avx2Pairs>>; 4] {
    net.convs.stages.each_ref().map(|stage| {
        let takes = |b: &Bottleneck<FoldedConv>| {
            let s = &b.conv2.spec;
            (s.kernel, s.stride, s.padding) == (3, 1, 1) && matches!(s.channels[0], 128 | 256)
        };
        if !stage.iter().all(takes) {
            return Vec::new();
        }
        stage
            .iter()
            .map(|b| WinogradConv::new_pairs(b.conv2.spec.channels, &b.conv2.weight, &b.conv2.bias))
            .collect::<Option<Vec<_>>>()
            .unwrap_or_default()
    })
}

impl<K: Kernel> Net<K> {
    fn new(isa: K, net: &FoldedNet, profile: bool) -> Result<Self, &'static str> {
        let mut packed = net.convs.try_map(pack_float)?;
        let winograd = if isa.winograd().is_some() {
            winograd_stages(net).unwrap_or_default()
        } else {
            Default::default()
        };
        // The direct 3x3s' weights are not needed where Winograd's run instead.
        for (stage, winograd) in packed.stages.iter_mut().zip(&winograd) {
            for b in stage.iter_mut().take(winograd.len()) {
                b.conv2.shape_only();
            }
        }
        Ok(Self {
            isa,
            stem: packed.stem,
            stages: Stages::Fp32(packed.stages),
            winograd,
            pool: Pool::default(),
            profile,
        })
    }

    /// See [`NativeNet::int8_kernel`].
    fn int8_kernel(&self) -> Option<Int8Kernel> {
        match &self.stages {
            Stages::Fp32(_) => None,
            Stages::Int8(s) => Some(s.kernel()),
        }
    }

    /// The network with its stem in `isa`'s float kernel and its bottleneck stages packed for
    /// the int8 kernel `int8` (`wrap` names which).
    fn new_int8<I: Int8>(
        isa: K,
        int8: I,
        net: &FoldedNet,
        profile: bool,
        wrap: impl FnOnce(I, PackedInt8<I>) -> Int8Stages,
    ) -> Result<Self, &'static str> {
        let stem = pack_float(&net.convs.stem)?;
        let mut stages: [Vec<_>; 4] = Default::default();
        for (out, stage) in stages.iter_mut().zip(&net.convs.stages) {
            for b in stage {
                out.push(int8::pack_bottleneck(int8, b)?);
            }
        }
        Ok(Self {
            isa,
            stem,
            stages: Stages::Int8(wrap(int8, stages)),
            winograd: Default::default(),
            pool: Pool::default(),
            profile,
        })
    }

    /// Runs `f`, printing its time under `profile`.
    fn timed<T>(&self, label: &str, f: impl FnOnce() -> T) -> T {
        let start = Instant::now();
        let out = f();
        if self.profile {
            eprintln!("op {label} ms={:.2}", start.elapsed().as_secs_f64() * 1e3);
        }
        out
    }

    /// Runs `f`, a convolution by `pc` into an output of `[n, h, w]` pixels, printing its
    /// shape, time and rate under `profile`.
    fn timed_conv<J: Kernel, T>(
        &self,
        pc: &PackedConv<J>,
        [n, h, w]: [usize; 3],
        f: impl FnOnce() -> T,
    ) -> T {
        let start = Instant::now();
        let result = f();
        if self.profile {
            let s = start.elapsed().as_secs_f64();
            let m = n * h * w;
            let macs = (m * pc.k_len() * J::VALUES_PER_WORD * pc.cout) as f64;
            eprintln!(
                "conv {}{} k{} s{} {}->{} {}x{} m={m} ms={:.2} gmac/s={:.1}",
                J::ISA,
                if J::VALUES_PER_WORD > 1 { "-int8" } else { "" },
                pc.kernel,
                pc.stride,
                pc.cin * J::VALUES_PER_WORD,
                pc.cout,
                h,
                w,
                s * 1e3,
                macs / s / 1e9
            );
        }
        result
    }

    /// [`conv`] with kernel `isa`, timed.
    fn conv<J: Kernel>(
        &self,
        isa: J,
        pc: &PackedConv<J>,
        input: &Act,
        out: &mut Act,
        accumulate: bool,
        relu: bool,
    ) {
        self.timed_conv(pc, [out.n, out.h, out.w], || {
            conv(isa, pc, input, out, accumulate, relu);
        });
    }

    /// [`conv_stats`] with kernel `isa`, timed.
    #[allow(clippy::too_many_arguments)]
    fn conv_stats<J: Kernel>(
        &self,
        isa: J,
        pc: &PackedConv<J>,
        input: &Act,
        out: &mut Act,
        [accumulate, relu]: [bool; 2],
        pool: bool,
        max: bool,
        codes: Option<(Avx2Fma, &mut Act)>,
    ) -> Stats {
        self.timed_conv(pc, [out.n, out.h, out.w], || {
            conv_stats(isa, pc, input, out, accumulate, relu, pool, max, codes)
        })
    }

    /// The stem `pc` on `input` into `out` (ReLU; with `pool`, the average pool too), timed;
    /// `input` goes back to the pool.
    fn stem_stats<J: Kernel>(
        &self,
        isa: J,
        pc: &PackedConv<J>,
        input: Act,
        out: &mut Act,
        pool: bool,
    ) -> Stats {
        let stats = self.conv_stats(isa, pc, &input, out, [false, true], pool, false, None);
        self.pool.give(input);
        stats
    }

    /// The int8 stem `pc` ([`int8::pack_stem`]) on the NCHW batch `nchw` of shape `[n, c, h,
    /// w]`, quantised first ([`int8::quantize_input`]), into `out`, as [`Net::stem_stats`].
    fn stem_int8<I: Int8>(
        &self,
        isa: I,
        pc: &PackedConv<I>,
        nchw: &[f32],
        [n, c, h, w]: [usize; 4],
        out: &mut Act,
        pool: bool,
    ) -> Stats {
        let input = self.timed("take+fill", || {
            let mut q = self.pool.take(n, h, w, 1, pc.pad);
            int8::quantize_input(isa.avx2(), nchw, c, &mut q);
            q
        });
        self.stem_stats(isa, pc, input, out, pool)
    }

    /// `x` quantised for the int8 kernel, with a border of `pad`, timed; `max` is each image's
    /// largest value where the convolution that wrote `x` found it.
    fn quantized(&self, isa: impl Int8, x: &Act, max: Option<&[f32]>, pad: usize) -> Act {
        self.timed("quantize", || {
            let mut q = self.pool.take(x.n, x.h, x.w, x.c / int8::PER_WORD, pad);
            int8::quantize(isa.avx2(), x, &mut q, max);
            q
        })
    }

    /// See [`NativeNet::pooled`].
    fn pooled(
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
        assert_eq!(Some(nchw.len()), n.checked_mul(c * h * w), "input length");
        let t_all = Instant::now();
        let (sh, sw) = (self.stem.out_side(h), self.stem.out_side(w));
        // The max-pool reads a border of 1.
        let mut stem = self.pool.take(n, sh, sw, self.stem.cout, 1);
        // A tapped block's average pool is summed in the epilogue of the convolution that
        // writes it.
        let stats = match &self.stages {
            Stages::Int8(Int8Stages::Avx2(isa, _, _, Some(stem8))) => {
                self.stem_int8(*isa, stem8, nchw, [n, c, h, w], &mut stem, wanted[0])
            }
            Stages::Int8(Int8Stages::Avx512Vnni(isa, _, Some(stem8))) => {
                self.stem_int8(*isa, stem8, nchw, [n, c, h, w], &mut stem, wanted[0])
            }
            _ => {
                let input = self.timed("take+fill", || {
                    let mut input = self.pool.take(n, h, w, c, self.stem.pad);
                    input.fill_from_nchw(nchw);
                    input
                });
                self.stem_stats(self.isa, &self.stem, input, &mut stem, wanted[0])
            }
        };
        out.extend(stats.pooled);
        pool_weighted(0, &stem);
        let mut x = self.timed("maxpool", || {
            let mut x = self
                .pool
                .take(n, (sh - 1) / 2 + 1, (sw - 1) / 2 + 1, stem.c, 0);
            max_pool_3x3_s2(self.isa, &stem, &mut x);
            x
        });
        self.pool.give(stem);
        let lens = self.stages.lens();
        // In int8, the next block's input quantised per pixel, where the block before wrote it.
        let mut xq = None;
        let stages = deepest - 1;
        for (i, &len) in lens.iter().enumerate().take(stages) {
            for j in 0..len {
                let pool = wanted[i + 1] && j + 1 == len;
                let pooled;
                (x, pooled) = match &self.stages {
                    Stages::Fp32(stages) => {
                        let winograd = self.winograd[i].get(j);
                        self.bottleneck(&stages[i][j], winograd, x, pool)
                    }
                    Stages::Int8(int8) => match int8 {
                        Int8Stages::Avx2(isa, s, winograd, _) => {
                            let winograd =
                                winograd[i].get(j).map(|w| (Avx2Pairs::from(isa.avx2()), w));
                            self.bottleneck_int8(
                                *isa,
                                &s[..stages],
                                [i, j],
                                x,
                                &mut xq,
                                pool,
                                winograd,
                            )
                        }
                        Int8Stages::Avx512Vnni(isa, s, _) => {
                            self.bottleneck_int8(*isa, &s[..stages], [i, j], x, &mut xq, pool, None)
                        }
                    },
                };
                out.extend(pooled);
            }
            pool_weighted(i + 1, &x);
        }
        self.pool.give(x);
        if self.profile {
            eprintln!("op pooled ms={:.2}", t_all.elapsed().as_secs_f64() * 1e3);
        }
        let weighted = out_weighted
            .into_iter()
            .map(|v| v.expect("every weighted block is at most as deep as the pass"))
            .collect();
        (out, weighted)
    }

    /// One bottleneck, its 3x3 by `winograd` where given; with `pool`, also the average pool
    /// of its output.
    fn bottleneck(
        &self,
        b: &Bottleneck<PackedConv<K>>,
        winograd: Option<&WinogradConv<K>>,
        x: Act,
        pool: bool,
    ) -> (Act, Option<Vec<f32>>) {
        // The shortcut buffer receives conv3's output in place (see `conv`'s `accumulate`).
        let (x, mut out) = match &b.downsample {
            Some(d) => {
                let mut s = self
                    .pool
                    .take(x.n, d.out_side(x.h), d.out_side(x.w), d.cout, 0);
                self.conv(self.isa, d, &x, &mut s, false, false);
                (Some(x), s)
            }
            None => (None, x),
        };
        let input = x.as_ref().unwrap_or(&out);
        let (h1, w1) = (b.conv1.out_side(input.h), b.conv1.out_side(input.w));
        let mut y1 = self.pool.take(input.n, h1, w1, b.conv1.cout, b.conv2.pad);
        self.conv(self.isa, &b.conv1, input, &mut y1, false, true);
        if let Some(x) = x {
            self.pool.give(x);
        }
        let (h2, w2) = (b.conv2.out_side(h1), b.conv2.out_side(w1));
        let mut y2 = self.pool.take(y1.n, h2, w2, b.conv2.cout, b.conv3.pad);
        match winograd.zip(self.isa.winograd()) {
            Some((w, avx2)) => self.timed_conv(&b.conv2, [y2.n, y2.h, y2.w], || {
                winograd::conv(self.isa, avx2, w, &y1, &mut y2, true);
            }),
            None => self.conv(self.isa, &b.conv2, &y1, &mut y2, false, true),
        }
        self.pool.give(y1);
        let pooled = self
            .conv_stats(
                self.isa,
                &b.conv3,
                &y2,
                &mut out,
                [true, true],
                pool,
                false,
                None,
            )
            .pooled;
        self.pool.give(y2);
        (out, pooled)
    }

    /// Bottleneck `[i, j]` of `stages` in int8: each convolution's input quantised, outputs and
    /// the residual in `f32`. Returns the output, and with `pool` its average pool.
    ///
    /// The block input is quantised per pixel ([`int8::quantize_per_pixel`]): `carried`, where
    /// the block before wrote it in its last convolution's epilogue, else from `x`. This
    /// block's last convolution writes its output so into `carried` in turn when a block
    /// follows in `stages`.
    #[allow(clippy::too_many_arguments)]
    fn bottleneck_int8<I: Int8>(
        &self,
        isa: I,
        stages: &[Vec<int8::Int8Bottleneck<I>>],
        [i, j]: [usize; 2],
        x: Act,
        carried: &mut Option<Act>,
        pool: bool,
        winograd: Option<(Avx2Pairs, &WinogradConv<Avx2Pairs>)>,
    ) -> (Act, Option<Vec<f32>>) {
        let c = &stages[i][j];
        let next = stages[i]
            .get(j + 1)
            .or_else(|| stages.get(i + 1).and_then(|s| s.first()));
        let xq = match carried.take() {
            Some(q) => q,
            None => self.timed("quantize", || {
                let mut q = self
                    .pool
                    .take(x.n, x.h, x.w, x.c / int8::PER_WORD, c.input_border());
                int8::quantize_per_pixel(isa.avx2(), &x, &mut q);
                q
            }),
        };
        // The shortcut buffer receives conv3's output in place.
        let mut out = match &c.shortcut {
            Some(d) => {
                let mut s = self
                    .pool
                    .take(x.n, d.out_side(x.h), d.out_side(x.w), d.cout, 0);
                self.conv(isa, d, &xq, &mut s, false, false);
                self.pool.give(x);
                s
            }
            None => x,
        };
        let (h1, w1) = (c.conv1.out_side(xq.h), c.conv1.out_side(xq.w));
        // Winograd's transform reads the map's zero border itself.
        let border = if winograd.is_some() { 1 } else { 0 };
        let mut y1 = self.pool.take(xq.n, h1, w1, c.conv1.cout, border);
        let s1 = self.conv_stats(
            isa,
            &c.conv1,
            &xq,
            &mut y1,
            [false, true],
            false,
            true,
            None,
        );
        self.pool.give(xq);
        let (h2, w2) = (c.conv2.out_side(h1), c.conv2.out_side(w1));
        let mut y2 = self.pool.take(y1.n, h2, w2, c.conv2.cout, 0);
        let mut y2q = self
            .pool
            .take(y1.n, h2, w2, c.conv2.cout / int8::PER_WORD, c.conv3.pad);
        if let Some((pairs, wc)) = winograd {
            let max = s1.max.as_deref().expect("conv1 tracks its maxima");
            self.timed_conv(&c.conv2, [y2.n, y2.h, y2.w], || {
                winograd::conv_pairs(pairs, wc, &y1, max, &mut y2, true);
            });
            self.pool.give(y1);
            // conv3 (a 1x1) reads its input quantised per pixel.
            self.timed("quantize", || {
                int8::quantize_per_pixel(isa.avx2(), &y2, &mut y2q);
            });
        } else {
            let y1q = self.quantized(isa, &y1, s1.max.as_deref(), c.conv2.pad);
            self.pool.give(y1);
            // conv3 (a 1x1) reads its input quantised per pixel, which conv2 writes as it
            // goes.
            self.conv_stats(
                isa,
                &c.conv2,
                &y1q,
                &mut y2,
                [false, true],
                false,
                false,
                Some((isa.avx2(), &mut y2q)),
            );
            self.pool.give(y1q);
        }
        self.pool.give(y2);
        let mut codes = next.map(|next| {
            self.pool.take(
                out.n,
                out.h,
                out.w,
                out.c / int8::PER_WORD,
                next.input_border(),
            )
        });
        let pooled = self
            .conv_stats(
                isa,
                &c.conv3,
                &y2q,
                &mut out,
                [true, true],
                pool,
                false,
                codes.as_mut().map(|q| (isa.avx2(), q)),
            )
            .pooled;
        self.pool.give(y2q);
        *carried = codes;
        (out, pooled)
    }
}
