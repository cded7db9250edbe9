//! The convolution driver: implicit GEMM over channels-last activations, generic over the
//! instruction set's micro-kernel ([`Kernel`]).
//!
//! A convolution is a matrix product `out[m, o] = sum_k patch[m, k] * w[k, o]` where `m` runs over
//! output pixels (all images of the batch), `o` over output channels and `k` over
//! `(kh, kw, ci)`. With channels-last activations a patch is a few contiguous runs of the input
//! (one per tap, or per kernel row where pixels have no gaps), so the patch matrix is never
//! built (no im2col).
//!
//! The micro-kernel computes an `MR x NR` tile of the output in registers (14 x 32 for
//! AVX-512, 14 x 16 for AVX2, in groups of rows). Where the tile's 14 pixels are evenly spaced
//! in the input (a stride-1 row, a 1x1 over an unpadded map, the stem) the kernel reads the
//! input in place, at constant offsets: the spacing is a compile-time parameter (the direct
//! path). Elsewhere (the last partial tile, odd map widths) a block of tiles is first copied,
//! `KC` values of `k` at a time, into a small buffer that stays in cache while every
//! output-channel panel passes over it (the packed path). The int8 kernels' blocks hold
//! [`KC_INT8`] words, the whole reduction of every bottleneck ResNet layer: their integer sums
//! are then exact on both paths, so an image's features do not depend on its batch.
//!
//! Bias, the residual and ReLU are applied to the registers before the one store, so no
//! separate pass reads the output again.

use std::marker::PhantomData;
use std::sync::Mutex;

use rayon::prelude::*;

use super::act::{Act, Layout};
use super::buf::AlignedBuf;
use super::isa::{Avx2Fma, Epilogue, Kernel, MAX_MR};

/// Reduction values per packed block.
const KC: usize = 256;
/// Floats between two pixels' rows of a packed tile: one cache line more than `KC`, so that the
/// 14 rows fall in different L1 sets instead of aliasing 4 KiB apart.
const A_STRIDE: usize = KC + 16;
/// Reduction words per packed block in the int8 kernels: the longest reduction of a bottleneck
/// ResNet's int8 convolutions (a 3x3 over 512 channels: 9 x 128 words). Their integer sums are
/// then never cut into blocks whose partial sums would be added in `f32`, so a tile computes
/// the same values packed as on the direct path, where the reduction is never cut. Which
/// tiles are short, and so packed, depends on the batch: with 256-word blocks an image's
/// features moved by up to 1e-3 (relative L2, block 5) with the images around it.
const KC_INT8: usize = 9 * 128;
/// [`A_STRIDE`] for [`KC_INT8`] (rows 4,672 bytes apart: different L1 sets too).
const A_STRIDE_INT8: usize = KC_INT8 + 16;
/// Largest weight matrix (floats) walked whole for every tile: beyond it, it no longer stays in
/// L2 between tiles.
const TILE_OUTER_MAX_WEIGHTS: usize = 128 * 1024;
/// Most micro-tiles one worker packs at once.
const MAX_TILES_PER_BLOCK: usize = 8;

/// One convolution, weights repacked for kernel `K`: panel `p` holds output channels
/// `p*NR..(p+1)*NR` as `[k][NR]` with `k = (kh * kernel + kw) * cin + ci`.
#[derive(Debug)]
pub(crate) struct PackedConv<K> {
    pub cin: usize,
    pub cout: usize,
    pub kernel: usize,
    pub stride: usize,
    pub pad: usize,
    weights: AlignedBuf,
    bias: AlignedBuf,
    /// Per output channel, what an integer kernel multiplies its sums by (empty for float
    /// kernels).
    scale: AlignedBuf,
    /// `[cout][channels]`, for an int8 convolution whose input has per-channel zero points
    /// and means ([`Act::image_zero`]): each output channel's dequantised weight codes summed
    /// over the taps, per input channel (empty: none; see [`PackedConv::with_channel_sums`]).
    coded: Vec<f32>,
    /// `[cout][channels]`: the same for what the codes lose, the `f32` weights' sums minus
    /// `coded`.
    residue: Vec<f32>,
    packed_for: PhantomData<K>,
}

impl<K: Kernel> PackedConv<K> {
    /// Repacks an OIHW weight (`[cout, cin, kernel, kernel]`) and its bias. `None` when `cout`
    /// is not a multiple of `K::NR`, a size is zero, or the weight's size overflows.
    ///
    /// # Panics
    /// If `oihw` or `bias` does not have that shape's length.
    pub fn new(
        [cin, cout]: [usize; 2],
        kernel: usize,
        stride: usize,
        pad: usize,
        oihw: &[f32],
        bias: &[f32],
    ) -> Option<Self> {
        if !cout.is_multiple_of(K::NR) || cout == 0 || cin == 0 || kernel == 0 || stride == 0 {
            return None;
        }
        let k_len = kernel.checked_mul(kernel)?.checked_mul(cin)?;
        let len = cout.checked_mul(k_len)?;
        assert_eq!(oihw.len(), len, "OIHW weight length");
        assert_eq!(bias.len(), cout, "bias length");
        let nr = K::NR;
        let mut weights = AlignedBuf::zeroed(len);
        for o in 0..cout {
            let panel = &mut weights[(o / nr) * k_len * nr..][..k_len * nr];
            for ci in 0..cin {
                for kh in 0..kernel {
                    for kw in 0..kernel {
                        let k = (kh * kernel + kw) * cin + ci;
                        panel[k * nr + o % nr] = oihw[((o * cin + ci) * kernel + kh) * kernel + kw];
                    }
                }
            }
        }
        Some(Self {
            cin,
            cout,
            kernel,
            stride,
            pad,
            weights,
            bias: AlignedBuf::from_slice(bias),
            scale: AlignedBuf::zeroed(0),
            coded: Vec::new(),
            residue: Vec::new(),
            packed_for: PhantomData,
        })
    }

    /// The same convolution with per-output-channel dequantisation scales, for an integer
    /// kernel.
    ///
    /// # Panics
    /// If `scale` does not hold one value per output channel.
    pub fn with_scale(mut self, scale: &[f32]) -> Self {
        assert_eq!(scale.len(), self.cout, "one scale per output channel");
        self.scale = AlignedBuf::from_slice(scale);
        self
    }

    /// The same int8 convolution for an input with per-channel zero points
    /// ([`Act::image_zero`]): per output channel and input channel, `coded` the dequantised
    /// weight codes' sum over the taps and `residue` the `f32` weights' sum minus it. See
    /// [`PackedConv::image_bias`].
    ///
    /// # Panics
    /// If the two differ in length or do not hold a whole number of values per output channel.
    pub fn with_channel_sums(mut self, coded: Vec<f32>, residue: Vec<f32>) -> Self {
        assert!(
            !coded.is_empty()
                && coded.len().is_multiple_of(self.cout)
                && coded.len() == residue.len(),
            "sums per output channel"
        );
        self.coded = coded;
        self.residue = residue;
        self
    }

    /// Each image's bias for an input with per-channel zero points (`[n][cout]`; empty for
    /// other inputs): `sum_c mean[c] * residue[c] - scale * zero[c] * coded[c]`. The second term
    /// takes each channel's zero point out of the sums; the first puts back what the codes lose
    /// on the image's mean, which an input far from zero on average (the stem's pixels) would
    /// otherwise carry into every output as a bias.
    ///
    /// # Panics
    /// If the input has zero points and the convolution no channel sums, or the other way
    /// round, or their channels differ.
    fn image_bias(&self, input: &Act) -> Vec<f32> {
        assert_eq!(
            input.image_zero.is_empty(),
            self.coded.is_empty(),
            "an input with zero points goes with a convolution with channel sums"
        );
        if input.image_zero.is_empty() {
            return Vec::new();
        }
        let channels = self.coded.len() / self.cout.max(1);
        assert!(
            channels > 0
                && input.image_zero.len() == input.n * channels
                && input.image_mean.len() == input.n * channels
                && input.image_scale.len() == input.n,
            "an input's zero points need the convolution's channel sums, one per channel"
        );
        let mut bias = Vec::with_capacity(input.n * self.cout);
        for ((zero, mean), &scale) in input
            .image_zero
            .chunks_exact(channels)
            .zip(input.image_mean.chunks_exact(channels))
            .zip(&input.image_scale)
        {
            for (coded, residue) in self
                .coded
                .chunks_exact(channels)
                .zip(self.residue.chunks_exact(channels))
            {
                let mut b = 0.0;
                for c in 0..channels {
                    b += mean[c] * residue[c] - scale * zero[c] * coded[c];
                }
                bias.push(b);
            }
        }
        bias
    }

    /// Drops the weights, keeping the shape, for a convolution that another path computes
    /// ([`super::winograd`]): [`conv`] refuses it afterwards.
    pub fn shape_only(&mut self) {
        self.weights = AlignedBuf::zeroed(0);
        self.bias = AlignedBuf::zeroed(0);
        self.scale = AlignedBuf::zeroed(0);
        self.coded = Vec::new();
        self.residue = Vec::new();
    }

    /// Panel `p`'s scales (empty without [`with_scale`](Self::with_scale)).
    fn scale(&self, p: usize) -> &[f32] {
        if self.scale.is_empty() {
            &[]
        } else {
            &self.scale[p * K::NR..][..K::NR]
        }
    }

    /// Output side for an input side.
    pub fn out_side(&self, side: usize) -> usize {
        (side + 2 * self.pad - self.kernel) / self.stride + 1
    }

    /// Reduction length: values per patch.
    pub fn k_len(&self) -> usize {
        self.kernel * self.kernel * self.cin
    }
}

/// Raw pointers that workers write through; each worker touches disjoint output pixels.
#[derive(Clone, Copy)]
pub(super) struct SendPtr(pub(super) *mut f32);
// SAFETY: a `SendPtr` is only dereferenced at the output pixels of one block of tiles (here,
// see `run`) or one chunk of tiles ([`super::winograd`]), which one worker alone computes, so
// moving it to that worker races with nothing.
unsafe impl Send for SendPtr {}
// SAFETY: as for `Send`: sharing it lets each worker write its own disjoint pixels only.
unsafe impl Sync for SendPtr {}

impl SendPtr {
    /// The pointer (a method, so closures capture the whole `Send` wrapper).
    pub(super) fn get(self) -> *mut f32 {
        self.0
    }
}

/// `out = act(conv(input) + bias [+ out])`, written into the interior of `out`, by the kernels
/// that `isa` proves this CPU runs.
///
/// With `accumulate`, `out` holds the residual on entry and the sum replaces it in place: the
/// epilogue reads each output vector just before it overwrites it, so the residual costs no
/// separate buffer and its cache lines are fetched once. `input` must carry at least the
/// convolution's padding as a zero border; `out` must have the output's shape.
///
/// # Panics
/// If the shapes do not fit together.
pub(crate) fn conv<K: Kernel>(
    isa: K,
    pc: &PackedConv<K>,
    input: &Act,
    out: &mut Act,
    accumulate: bool,
    relu: bool,
) {
    conv_stats(isa, pc, input, out, accumulate, relu, false, false, None);
}

/// What [`conv_stats`] gathers about the output it writes, from the registers' stores.
#[derive(Debug, Default)]
pub(crate) struct Stats {
    /// The global average pool (`[n][cout]`), when asked for: summed in the epilogue from the
    /// registers instead of read back from memory.
    pub pooled: Option<Vec<f32>>,
    /// Each image's largest output value, at least 0 (NaN never counts), when asked for: what
    /// the int8 path's quantising pass would otherwise read the whole output again to find.
    pub max: Option<Vec<f32>>,
}

/// [`conv`], also gathering the average pool (`pool`) and each image's largest value (`max`)
/// of the output in the epilogue; with `codes`, also writing the output quantised per pixel
/// for the int8 kernels into it, as [`super::int8::quantize_per_pixel`] writes them, from the
/// output's pixels while they are still in cache.
///
/// # Panics
/// As [`conv`], and if `codes` does not hold the output's pixels in words of four channels.
#[allow(clippy::too_many_arguments)]
pub(crate) fn conv_stats<K: Kernel>(
    isa: K,
    pc: &PackedConv<K>,
    input: &Act,
    out: &mut Act,
    accumulate: bool,
    relu: bool,
    pool: bool,
    max: bool,
    codes: Option<(Avx2Fma, &mut Act)>,
) -> Stats {
    let sums = pool.then(|| Mutex::new(vec![0f64; out.n * pc.cout]));
    let maxes = max.then(|| Mutex::new(vec![0f32; out.n]));
    run(
        isa,
        pc,
        input,
        out,
        [accumulate, relu],
        sums.as_ref(),
        maxes.as_ref(),
        codes,
    );
    let count = (out.h * out.w) as f64;
    fn inner<T>(m: Mutex<T>) -> T {
        m.into_inner().unwrap_or_else(|e| e.into_inner())
    }
    Stats {
        pooled: sums.map(|s| {
            inner(s)
                .into_iter()
                .map(|s: f64| (s / count) as f32)
                .collect()
        }),
        max: maxes.map(inner),
    }
}

#[allow(clippy::too_many_arguments)]
fn run<K: Kernel>(
    isa: K,
    pc: &PackedConv<K>,
    input: &Act,
    out: &mut Act,
    [accumulate, relu]: [bool; 2],
    pool: Option<&Mutex<Vec<f64>>>,
    max: Option<&Mutex<Vec<f32>>>,
    codes: Option<(Avx2Fma, &mut Act)>,
) {
    // The bounds the kernels' raw reads and writes rely on: both buffers hold their layouts,
    // the input's border covers the padding (so every patch lies inside its padded image),
    // and the output has the convolution's shape.
    input.assert_layout();
    out.assert_layout();
    assert!(
        input.pad >= pc.pad && input.c == pc.cin,
        "conv input layout"
    );
    assert!(
        pc.weights.len() == pc.k_len() * pc.cout && pc.bias.len() == pc.cout,
        "a convolution without its weights (PackedConv::shape_only)"
    );
    // Each pixel's own scale serves a patch of one pixel, and one slot per pixel holds it.
    assert!(
        input.pixel_scale.is_empty()
            || (pc.kernel == 1 && input.pixel_scale.len() * input.cs == input.data.len()),
        "per-pixel scales need a 1x1 convolution"
    );
    let (oh, ow) = (pc.out_side(input.h), pc.out_side(input.w));
    assert!(
        out.n == input.n && out.h == oh && out.w == ow && out.c == pc.cout,
        "conv output shape"
    );
    let codes = codes.map(|(isa, q)| {
        q.assert_layout();
        assert!(
            (q.n, q.h, q.w, q.c * super::int8::PER_WORD) == (out.n, out.h, out.w, out.c),
            "per-pixel codes shape"
        );
        // Every slot is written before it is read: the interior's by the blocks, the border's
        // (unused) here.
        q.pixel_scale = vec![1.0; q.data.len() / q.cs];
        q.image_scale = Vec::new();
        PixelCodes {
            isa,
            data: SendPtr(q.data.as_mut_ptr()),
            layout: q.layout(),
            cs: q.cs,
            scales: SendPtr(q.pixel_scale.as_mut_ptr()),
        }
    });
    let mr = K::MR;
    let m_total = input.n * oh * ow;
    let tiles = m_total.div_ceil(mr);
    let threads = rayon::current_num_threads().max(1);
    let blocks = tiles.div_ceil(MAX_TILES_PER_BLOCK).div_ceil(threads).max(1) * threads;
    let per_block = tiles.div_ceil(blocks).max(1);
    let blocks = tiles.div_ceil(per_block);
    // Equal reduction blocks of at most KC (KC_INT8 words for int8), so that no block is a
    // short remainder.
    let k_len = pc.k_len();
    let k_blocks = k_len.div_ceil(packed_kc::<K>());
    let kc = k_len.div_ceil(k_blocks);
    let runs: Vec<Vec<Run>> = (0..k_blocks)
        .map(|b| patch_runs(pc, input, b * kc, ((b + 1) * kc).min(k_len)))
        .collect();
    let job = Job {
        isa,
        pc,
        pool,
        max,
        codes,
        input,
        out: SendPtr(out.data.as_mut_ptr()),
        out_layout: out.layout(),
        accumulate,
        relu,
        m_total,
        tiles,
        per_block,
        oh,
        ow,
        shift: input.pad - pc.pad,
        kc,
        runs,
        image_bias: pc.image_bias(input),
        direct_runs: patch_runs(pc, input, 0, k_len)
            .into_iter()
            .map(|r| (r.src, r.len))
            .collect(),
    };
    (0..blocks).into_par_iter().for_each(|b| {
        isa.vectorize(|| {
            // SAFETY: block `b` writes only the output pixels of its own tiles, which no other
            // block touches; the layouts were checked above.
            unsafe { job.run_block(b) }
        })
    });
}

/// The most reduction values (words for int8) a packed block holds.
const fn packed_kc<K: Kernel>() -> usize {
    if K::VALUES_PER_WORD > 1 { KC_INT8 } else { KC }
}

/// The floats between two pixels' rows of a packed tile: [`A_STRIDE`] or [`A_STRIDE_INT8`].
const fn a_stride<K: Kernel>() -> usize {
    packed_kc::<K>() + 16
}

/// Reduction values `k0..k1` of a patch as contiguous runs of the input, at the same offsets
/// from every patch origin: one per tap, merged along a kernel row where the input's pixels
/// are packed without gaps.
fn patch_runs<K>(pc: &PackedConv<K>, input: &Act, k0: usize, k1: usize) -> Vec<Run> {
    let row_stride = input.row_stride();
    let mut runs: Vec<Run> = Vec::new();
    let mut k = k0;
    while k < k1 {
        let (tap, ci) = (k / pc.cin, k % pc.cin);
        let (kh, kw) = (tap / pc.kernel, tap % pc.kernel);
        let len = (pc.cin - ci).min(k1 - k);
        let src = kh * row_stride + kw * input.cs + ci;
        let dst = k - k0;
        match runs.last_mut() {
            Some(last) if last.src + last.len == src && last.dst + last.len == dst => {
                last.len += len;
            }
            _ => runs.push(Run { src, dst, len }),
        }
        k += len;
    }
    runs
}

/// A contiguous piece of a patch: `len` floats at `src` past the patch origin in the input go
/// to `dst` in the packed row.
struct Run {
    src: usize,
    dst: usize,
    len: usize,
}

/// Everything a worker needs to compute some tiles of one convolution.
struct Job<'a, K> {
    isa: K,
    pc: &'a PackedConv<K>,
    /// Channel sums per image (`[n][cout]`) of the output, when the convolution pools it.
    pool: Option<&'a Mutex<Vec<f64>>>,
    /// Each image's largest value of the output, when the convolution tracks it.
    max: Option<&'a Mutex<Vec<f32>>>,
    /// Where the output goes quantised per pixel as well, when it does.
    codes: Option<PixelCodes>,
    input: &'a Act,
    out: SendPtr,
    out_layout: Layout,
    accumulate: bool,
    relu: bool,
    m_total: usize,
    tiles: usize,
    per_block: usize,
    oh: usize,
    ow: usize,
    /// Input border minus convolution padding: the offset of the first tap in padded coords.
    shift: usize,
    /// Reduction values per block (the last block may be shorter).
    kc: usize,
    /// The patch runs of each reduction block.
    runs: Vec<Vec<Run>>,
    /// The whole patch as contiguous runs of the input (offset from the patch origin, floats),
    /// for the direct path.
    direct_runs: Vec<(usize, usize)>,
    /// Each image's bias from its input's zero points and means (`[n][cout]`; empty for
    /// none), see [`PackedConv::image_bias`].
    image_bias: Vec<f32>,
}

/// An activation quantised per pixel ([`Act::pixel_scale`]) that a convolution's workers write
/// into, each its own pixels.
struct PixelCodes {
    isa: Avx2Fma,
    data: SendPtr,
    layout: Layout,
    cs: usize,
    scales: SendPtr,
}

thread_local! {
    /// Each worker's packed patch block, kept between calls.
    static APACK: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Pixels per block, at most.
const PIX: usize = MAX_MR * MAX_TILES_PER_BLOCK;

/// The pixels of one block of tiles.
struct BlockPixels {
    /// Each pixel's patch origin in the input.
    src: [usize; PIX],
    /// Each pixel's offset in the output.
    dst: [usize; PIX],
    /// Each pixel's image, counted from `first_img`.
    img: [usize; PIX],
    /// Each pixel's input scale, for an int8 kernel: its image's, or (an input quantised per
    /// pixel, read by a 1x1 convolution) its input pixel's. Unused for floats.
    scale: [f32; PIX],
    first_img: usize,
    /// The block's first pixel, counted over the batch's output pixels.
    m0: usize,
    n_tiles: usize,
    pixels: usize,
}

impl BlockPixels {
    /// Images the block touches.
    fn images(&self) -> usize {
        self.pixels
            .checked_sub(1)
            .map_or(0, |last| self.img[last] + 1)
    }
}

/// The sums of panel `p` in a block's pooled sums (null when not pooling).
fn pool_at(base: *mut f32, p: usize, nr: usize) -> *mut f32 {
    if base.is_null() {
        base
    } else {
        base.wrapping_add(p * nr)
    }
}

impl<K: Kernel> Job<'_, K> {
    /// For block `b`: each pixel's patch origin in the input and output offset, the number of
    /// tiles and of pixels.
    fn pixel_offsets(&self, b: usize) -> BlockPixels {
        const { assert!(K::MR <= MAX_MR && K::MR.is_multiple_of(2)) };
        let pc = self.pc;
        let first_tile = b * self.per_block;
        let n_tiles = self.per_block.min(self.tiles - first_tile);
        let m0 = first_tile * K::MR;
        let pixels = (n_tiles * K::MR).min(self.m_total - m0);
        let mut px = BlockPixels {
            src: [0; PIX],
            dst: [0; PIX],
            img: [0; PIX],
            scale: [0.0; PIX],
            first_img: m0 / (self.oh * self.ow),
            m0,
            n_tiles,
            pixels,
        };
        let (mut n, mut y, mut x) = (px.first_img, m0 / self.ow % self.oh, m0 % self.ow);
        let (by_image, by_pixel) = (&self.input.image_scale, &self.input.pixel_scale);
        for i in 0..pixels {
            px.src[i] =
                self.input
                    .padded_offset(n, y * pc.stride + self.shift, x * pc.stride + self.shift);
            px.dst[i] = self.out_layout.offset(n, y, x);
            px.img[i] = n - px.first_img;
            px.scale[i] = if by_pixel.is_empty() {
                by_image.get(n).copied().unwrap_or(0.0)
            } else {
                // A 1x1 convolution's patch is its origin pixel (see `run`).
                by_pixel[px.src[i] / self.input.cs]
            };
            x += 1;
            if x == self.ow {
                x = 0;
                y += 1;
                if y == self.oh {
                    y = 0;
                    n += 1;
                }
            }
        }
        px
    }

    /// Panel `p`'s image biases of the block's first image (null without any).
    fn image_bias_at(&self, px: &BlockPixels, p: usize) -> *const f32 {
        if self.image_bias.is_empty() {
            std::ptr::null()
        } else {
            self.image_bias[px.first_img * self.pc.cout + p * K::NR..].as_ptr()
        }
    }

    /// The input scales of tile `t`'s first `rows` rows (empty for floats).
    fn row_scale<'p>(&self, px: &'p BlockPixels, t: usize, rows: usize) -> &'p [f32] {
        if self.input.image_scale.is_empty() && self.input.pixel_scale.is_empty() {
            &[]
        } else {
            &px.scale[t * K::MR..t * K::MR + rows]
        }
    }

    /// Adds a block's pooled sums to the convolution's totals, and its images' lane maxima
    /// (`NR` per image) to their maxima.
    fn finish(&self, px: &BlockPixels, sums: &[f32], maxes: &[f32]) {
        if let Some(pool) = self.pool {
            let cout = self.pc.cout;
            let mut total = pool.lock().unwrap_or_else(|e| e.into_inner());
            for (i, image) in sums.chunks_exact(cout).enumerate() {
                let at = &mut total[(px.first_img + i) * cout..][..cout];
                for (t, s) in at.iter_mut().zip(image) {
                    *t += f64::from(*s);
                }
            }
        }
        if let Some(max) = self.max {
            let mut total = max.lock().unwrap_or_else(|e| e.into_inner());
            for (i, lanes) in maxes.chunks_exact(K::NR).enumerate() {
                let at = &mut total[px.first_img + i];
                *at = lanes.iter().copied().fold(*at, f32::max);
            }
        }
    }

    /// Writes the codes and scales of the block's output pixels `rows` (counted in the block)
    /// where the convolution quantises its output per pixel; nothing otherwise.
    ///
    /// # Safety
    /// As [`Job::run_block`]; the block has stored those pixels.
    #[inline(always)]
    unsafe fn quantise_pixels(&self, px: &BlockPixels, rows: std::ops::Range<usize>) {
        let Some(codes) = &self.codes else {
            return;
        };
        let cout = self.pc.cout;
        let words = cout / super::int8::PER_WORD;
        for i in rows {
            let m = px.m0 + i;
            let (n, y, x) = (m / (self.oh * self.ow), m / self.ow % self.oh, m % self.ow);
            let at = codes.layout.offset(n, y, x);
            // SAFETY: the pixel's `cout` outputs, its `cout / 4` code words and its scale slot
            // lie inside their buffers (`run` checked the layouts), and only this block
            // accesses them.
            unsafe {
                let values = std::slice::from_raw_parts(self.out.get().add(px.dst[i]), cout);
                let out = std::slice::from_raw_parts_mut(codes.data.get().add(at), words);
                *codes.scales.get().add(at / codes.cs) =
                    self.isa.quantize_pixel(codes.isa, values, out);
            }
        }
    }

    /// Computes the tiles of block `b`. Inlined into [`Kernel::vectorize`]'s function, so that
    /// the packing loops are compiled for the instruction set.
    ///
    /// # Safety
    /// No other thread may access the output pixels of block `b`.
    #[inline(always)]
    unsafe fn run_block(&self, b: usize) {
        let (mr, nr) = (K::MR, K::NR);
        let pc = self.pc;
        let px = self.pixel_offsets(b);
        let (src, dst, n_tiles, pixels) = (&px.src, &px.dst, px.n_tiles, px.pixels);
        // This block's share of the pooled output, when the convolution pools: channel sums per
        // image, added to the convolution's totals at the end.
        let mut sums = vec![
            0f32;
            if self.pool.is_some() {
                px.images() * pc.cout
            } else {
                0
            }
        ];
        let pool_base = if self.pool.is_some() {
            sums.as_mut_ptr()
        } else {
            std::ptr::null_mut()
        };
        // And its lane maxima per image, when the convolution tracks them (0: the maximum of
        // no values, as the quantising pass counts it).
        let mut maxes = vec![
            0f32;
            if self.max.is_some() {
                px.images() * nr
            } else {
                0
            }
        ];
        let max_base = if self.max.is_some() {
            maxes.as_mut_ptr()
        } else {
            std::ptr::null_mut()
        };
        let k_len = pc.k_len();
        let panels = pc.cout / nr;
        let data = &self.input.data;
        let step = pc.stride * self.input.cs;
        // Whether pixels `i..j` of the first `tiles` tiles are evenly spaced in the input, one
        // stride apart (each step is at least that, so equal ends mean equal steps).
        let even = |tiles: usize, i: usize, j: usize| {
            (0..tiles).all(|t| src[t * mr + j - 1] - src[t * mr + i] == (j - 1 - i) * step)
        };
        // The tiles with a second half: all, or all but a last half tile (on 7-wide maps an
        // image alone, or an odd number of them, ends in one; its second half then reads the
        // first again, and only the first half's rows are stored, see `direct_tiles`).
        let whole = if pixels == n_tiles * mr {
            Some(n_tiles)
        } else if pixels + mr / 2 == n_tiles * mr {
            Some(n_tiles - 1)
        } else {
            None
        };
        // Whole tiles evenly spaced, or (maps 7 wide) each half of every tile.
        let split = match whole {
            Some(w) if w == n_tiles && even(n_tiles, 0, mr) => Some(false),
            Some(w) if even(n_tiles, 0, mr / 2) && even(w, mr / 2, mr) => Some(true),
            _ => None,
        };
        if let Some(split) = split
            // SAFETY: as this function's contract; each tile's pixels, at `src` and one stride
            // apart within each half, hold the patch runs (the zero border covers the
            // padding).
            && unsafe { self.direct_block(&px, pool_base, max_base, split) }
        {
            self.finish(&px, &sums, &maxes);
            return;
        }
        APACK.with_borrow_mut(|apack| {
            let stride = a_stride::<K>();
            // The micro-kernel compiled for rows `stride` floats apart.
            type Tile<K> = unsafe fn(
                K,
                *const f32,
                usize,
                &[(usize, usize)],
                *const f32,
                &[*mut f32; MAX_MR],
                &Epilogue<'_>,
            );
            let tile_at_stride: Tile<K> = if stride == A_STRIDE_INT8 {
                K::tile::<A_STRIDE_INT8, false>
            } else {
                K::tile::<A_STRIDE, false>
            };
            apack.resize(n_tiles * mr * stride, 0.0);
            for (kb, runs) in self.runs.iter().enumerate() {
                let k0 = kb * self.kc;
                let kc = self.kc.min(k_len - k0);
                let (first, last) = (kb == 0, k0 + kc == k_len);
                let pack = |apack: &mut [f32], t: usize| {
                    for i in t * mr..(t + 1) * mr {
                        let row = &mut apack[i * stride..][..kc];
                        if i < pixels {
                            for run in runs {
                                let from = src[i] + run.src;
                                self.isa.copy(
                                    &mut row[run.dst..run.dst + run.len],
                                    &data[from..from + run.len],
                                );
                            }
                        } else {
                            row.fill(0.0);
                        }
                    }
                };
                let tile = |apack: &[f32], t: usize, p: usize| {
                    let panel = &pc.weights[p * k_len * nr + k0 * nr..][..kc * nr];
                    let rows = mr.min(pixels - t * mr);
                    let epilogue = Epilogue {
                        first,
                        last,
                        relu: self.relu,
                        accumulate: self.accumulate,
                        bias: &pc.bias[p * nr..][..nr],
                        scale: pc.scale(p),
                        row_scale: self.row_scale(&px, t, rows),
                        image_bias: self.image_bias_at(&px, p),
                        pool: pool_at(pool_base, p, nr),
                        pool_stride: pc.cout,
                        max: max_base,
                        row_img: &px.img[t * mr..t * mr + rows],
                    };
                    let mut outs = [std::ptr::null_mut::<f32>(); MAX_MR];
                    for r in 0..rows {
                        // SAFETY: `dst` offsets are inside the output (its layout made them) and
                        // this block alone writes them.
                        outs[r] = unsafe { self.out.get().add(dst[t * mr + r] + p * nr) };
                    }
                    let a = &apack[t * mr * stride..][..mr * stride];
                    // SAFETY: the A tile holds MR rows of `stride` >= kc floats, the panel kc
                    // rows of NR, each stored row's pointer NR floats of a pixel this block
                    // alone writes, and the pooled sums every image of the block.
                    unsafe {
                        tile_at_stride(
                            self.isa,
                            a.as_ptr(),
                            0,
                            &[(0, kc)],
                            panel.as_ptr(),
                            &outs,
                            &epilogue,
                        );
                    }
                };
                if first && last && kc * pc.cout <= TILE_OUTER_MAX_WEIGHTS {
                    // The whole reduction in one block, and weights small enough to stay in L2:
                    // each tile is packed just before it runs across every panel (so it stays in
                    // L1), and writes its pixels' full channel rows in order.
                    for t in 0..n_tiles {
                        pack(apack, t);
                        for p in 0..panels {
                            tile(apack, t, p);
                        }
                    }
                } else {
                    // Several reduction blocks (or large weights): the block's tiles are packed
                    // once, and each weight panel stays in cache while it passes over them.
                    for t in 0..n_tiles {
                        pack(apack, t);
                    }
                    for p in 0..panels {
                        for t in 0..n_tiles {
                            tile(apack, t, p);
                        }
                    }
                }
            }
        });
        // SAFETY: the block has stored all its pixels.
        unsafe { self.quantise_pixels(&px, 0..pixels) };
        self.finish(&px, &sums, &maxes);
    }

    /// The block's tiles straight from the input, without packing, when the distance between
    /// two output pixels' patches in the input (stride x channel stride) is one the direct
    /// kernel is compiled for: those of ResNet-50's stem and stride-1 and stride-2 layers.
    /// Returns whether it ran.
    ///
    /// # Safety
    /// As [`Job::run_block`], and every tile's pixels one stride apart in the input (within
    /// each half of the tile, with `split`; a last tile of half the rows, with `split`, reads
    /// its first half twice).
    unsafe fn direct_block(
        &self,
        px: &BlockPixels,
        pool_base: *mut f32,
        max_base: *mut f32,
        split: bool,
    ) -> bool {
        type Tiles<'j, K> = unsafe fn(&Job<'j, K>, &BlockPixels, *mut f32, *mut f32);
        let kernel: Tiles<'_, K> = match (self.pc.stride * self.input.cs, split) {
            (6, false) => Self::direct_tiles::<6, false>,
            // The int8 stem: one word per pixel, stride 2.
            (2, false) => Self::direct_tiles::<2, false>,
            // The int8 kernel's words (four channels): 64 and 128 channels.
            (16, false) => Self::direct_tiles::<16, false>,
            (32, false) => Self::direct_tiles::<32, false>,
            (64, false) => Self::direct_tiles::<64, false>,
            (128, false) => Self::direct_tiles::<128, false>,
            (256, false) => Self::direct_tiles::<256, false>,
            (272, false) => Self::direct_tiles::<272, false>,
            (528, false) => Self::direct_tiles::<528, false>,
            (544, false) => Self::direct_tiles::<544, false>,
            (1040, false) => Self::direct_tiles::<1040, false>,
            (1056, false) => Self::direct_tiles::<1056, false>,
            (2064, false) => Self::direct_tiles::<2064, false>,
            (2080, false) => Self::direct_tiles::<2080, false>,
            // Stage 4 (7-wide maps): the 3x3 (v1; 1056 for v1.5's stride 2) and the
            // stride-2 1x1s into it.
            (528, true) => Self::direct_tiles::<528, true>,
            // The int8 kernel's words: 512 channels, and the stride-2 1x1s from 1024.
            (128, true) => Self::direct_tiles::<128, true>,
            (544, true) => Self::direct_tiles::<544, true>,
            (1056, true) => Self::direct_tiles::<1056, true>,
            // The 1x1 from 2048 channels, where an odd number of images ends in a half tile.
            (2064, true) => Self::direct_tiles::<2064, true>,
            (2080, true) => Self::direct_tiles::<2080, true>,
            _ => return false,
        };
        // SAFETY: passed on from the caller.
        unsafe { kernel(self, px, pool_base, max_base) };
        true
    }

    /// [`Job::direct_block`] for pixels `STEP` floats apart (in each half of a tile, with
    /// `SPLIT`).
    ///
    /// # Safety
    /// As [`Job::direct_block`], with `STEP == self.pc.stride * self.input.cs`.
    unsafe fn direct_tiles<const STEP: usize, const SPLIT: bool>(
        &self,
        px: &BlockPixels,
        pool_base: *mut f32,
        max_base: *mut f32,
    ) {
        let (mr, nr) = (K::MR, K::NR);
        let pc = self.pc;
        let (src, dst, n_tiles) = (&px.src, &px.dst, px.n_tiles);
        let k_len = pc.k_len();
        let panels = pc.cout / nr;
        let tile = |t: usize, p: usize| {
            // All rows, or (the last tile, with SPLIT) the first half.
            let rows = mr.min(px.pixels - t * mr);
            let epilogue = Epilogue {
                first: true,
                last: true,
                relu: self.relu,
                accumulate: self.accumulate,
                bias: &pc.bias[p * nr..][..nr],
                scale: pc.scale(p),
                row_scale: self.row_scale(px, t, rows),
                image_bias: self.image_bias_at(px, p),
                pool: pool_at(pool_base, p, nr),
                pool_stride: pc.cout,
                max: max_base,
                row_img: &px.img[t * mr..t * mr + rows],
            };
            let mut outs = [std::ptr::null_mut::<f32>(); MAX_MR];
            for (r, out) in outs.iter_mut().enumerate().take(rows) {
                // SAFETY: `dst` offsets are inside the output and this block alone writes them.
                *out = unsafe { self.out.get().add(dst[t * mr + r] + p * nr) };
            }
            let origin = self.input.data[src[t * mr]..].as_ptr();
            // Rows from the second half on start this far from the first (unused unless
            // SPLIT); a half tile's second half reads its first again.
            let jump = if SPLIT && rows == mr {
                src[t * mr + mr / 2] - src[t * mr]
            } else {
                0
            };
            let panel = &pc.weights[p * k_len * nr..][..k_len * nr];
            // SAFETY: as this function's contract: every row's patch runs lie inside the
            // input's padded image, the panel holds k_len rows of NR, and each row's pointer
            // NR floats of a pixel this block alone writes.
            unsafe {
                self.isa.tile::<STEP, SPLIT>(
                    origin,
                    jump,
                    &self.direct_runs,
                    panel.as_ptr(),
                    &outs,
                    &epilogue,
                );
            }
        };
        // In a function compiled for the instruction set, where the micro-kernel can be
        // inlined.
        self.isa.vectorize(|| {
            if k_len * pc.cout <= TILE_OUTER_MAX_WEIGHTS {
                // Where a patch is one run (a 1x1 convolution's) and the kernel asks for it,
                // fetch the next tile's input rows into L2 while this tile's panels run, a
                // share of the rows before each panel; `len` counts 4-byte words, 16 a line.
                let next_rows = match self.direct_runs.as_slice() {
                    &[run] if K::PREFETCH_NEXT_INPUT => Some(run),
                    _ => None,
                };
                let input = self.input.data.as_ptr();
                for t in 0..n_tiles {
                    let next = (t + 1) * mr;
                    let rows = mr.min(px.pixels.saturating_sub(next));
                    for p in 0..panels {
                        if let Some((off, len)) = next_rows {
                            for r in rows * p / panels..rows * (p + 1) / panels {
                                let row = input.wrapping_add(src[next + r] + off);
                                for word in (0..len).step_by(16) {
                                    prefetch_l2(row.wrapping_add(word));
                                }
                            }
                        }
                        tile(t, p);
                    }
                    // SAFETY: the tile has stored its pixels (still in cache).
                    unsafe { self.quantise_pixels(px, t * mr..(t * mr + mr).min(px.pixels)) };
                }
            } else {
                for p in 0..panels {
                    for t in 0..n_tiles {
                        tile(t, p);
                    }
                }
                // SAFETY: the block has stored all its pixels.
                unsafe { self.quantise_pixels(px, 0..px.pixels) };
            }
        });
    }
}

/// Fetches the cache line at `at` into L2 (a hint: any address will do).
#[inline(always)]
fn prefetch_l2(at: *const f32) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch reads nothing the program sees and never faults.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T1 }>(at.cast::<i8>());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = at;
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::native::act::Pool;
    use crate::native::isa::each_kernel;

    /// A direct, unoptimised convolution on NCHW data, summed in f64: the reference for the
    /// kernels.
    #[allow(clippy::too_many_arguments)]
    pub(in crate::native) fn naive(
        x: &[f32],
        [n, cin, h, w]: [usize; 4],
        wt: &[f32],
        bias: &[f32],
        cout: usize,
        k: usize,
        stride: usize,
        pad: usize,
    ) -> (Vec<f32>, usize, usize) {
        let oh = (h + 2 * pad - k) / stride + 1;
        let ow = (w + 2 * pad - k) / stride + 1;
        let mut out = vec![0f32; n * cout * oh * ow];
        for b in 0..n {
            for o in 0..cout {
                for y in 0..oh {
                    for xx in 0..ow {
                        let mut s = f64::from(bias[o]);
                        for c in 0..cin {
                            for ky in 0..k {
                                for kx in 0..k {
                                    let iy = (y * stride + ky) as isize - pad as isize;
                                    let ix = (xx * stride + kx) as isize - pad as isize;
                                    if iy < 0 || ix < 0 || iy >= h as isize || ix >= w as isize {
                                        continue;
                                    }
                                    let v = x[((b * cin + c) * h + iy as usize) * w + ix as usize];
                                    let f = wt[((o * cin + c) * k + ky) * k + kx];
                                    s += f64::from(v) * f64::from(f);
                                }
                            }
                        }
                        out[((b * cout + o) * oh + y) * ow + xx] = s as f32;
                    }
                }
            }
        }
        (out, oh, ow)
    }

    /// Deterministic values in [-1, 1).
    pub(in crate::native) fn values(len: usize, seed: u64) -> Vec<f32> {
        let mut rng = crate::rng::SplitMix64::new(seed);
        (0..len).map(|_| rng.signed_unit()).collect()
    }

    /// Kernel `isa` against [`naive`] on one shape (`pad = k / 2`), without and with ReLU and
    /// a residual.
    fn check<K: Kernel>(
        isa: K,
        n: usize,
        [cin, cout]: [usize; 2],
        [h, w]: [usize; 2],
        k: usize,
        stride: usize,
    ) {
        let pad = k / 2;
        let x = values(n * cin * h * w, 1);
        let wt = values(cout * cin * k * k, 2);
        let bias = values(cout, 3);
        let residual = values(n * cout * h * w, 4);
        let pc = PackedConv::<K>::new([cin, cout], k, stride, pad, &wt, &bias).unwrap();
        let pool = Pool::default();
        // An input border wider than the convolution needs must work too.
        let mut input = pool.take(n, h, w, cin, pad + 1);
        input.fill_from_nchw(&x);
        let (want, oh, ow) = naive(&x, [n, cin, h, w], &wt, &bias, cout, k, stride, pad);
        for (accumulate, relu) in [(false, false), (false, true), (true, true)] {
            let mut out = pool.take(n, oh, ow, cout, 1);
            if accumulate {
                out.fill_from_nchw(&residual[..n * cout * oh * ow]);
            }
            let stats = conv_stats(
                isa, &pc, &input, &mut out, accumulate, relu, false, true, None,
            );
            let layout = out.layout();
            // Each image's largest stored value (at least 0), tracked in the epilogue.
            for (b, &max) in stats.max.expect("asked for").iter().enumerate() {
                let mut want = 0f32;
                for y in 0..oh {
                    for xx in 0..ow {
                        let px = &out.data[layout.offset(b, y, xx)..][..cout];
                        want = px.iter().copied().fold(want, f32::max);
                    }
                }
                assert_eq!(max, want, "{}: image {b}'s maximum", K::ISA);
            }
            for b in 0..n {
                for o in 0..cout {
                    for y in 0..oh {
                        for xx in 0..ow {
                            let i = ((b * cout + o) * oh + y) * ow + xx;
                            let mut v = want[i] + if accumulate { residual[i] } else { 0.0 };
                            if relu {
                                v = v.max(0.0);
                            }
                            let got = out.data[layout.offset(b, y, xx) + o];
                            assert!(
                                (got - v).abs() <= 1e-4 * (1.0 + v.abs()),
                                "{}: k{k} s{stride} {cin}->{cout} at ({b},{o},{y},{xx}): \
                                 {got} vs {v}",
                                K::ISA
                            );
                        }
                    }
                }
            }
            // The border the next convolution relies on stays zero.
            let row = out.row_stride();
            assert!(out.data[..row].iter().all(|&v| v == 0.0), "{}", K::ISA);
            pool.give(out);
        }
    }

    #[test]
    fn pointwise_with_pixel_tail_matches_naive() {
        each_kernel!(|isa| {
            // 2 * 5 * 7 = 70 pixels: five full tiles, in blocks over both workers.
            check(isa, 2, [24, 64], [5, 7], 1, 1);
            // 3 * 3 * 3 = 27 pixels: a partial tile.
            check(isa, 3, [8, 32], [3, 3], 1, 1);
        });
    }

    #[test]
    fn reduction_split_into_blocks_matches_naive() {
        each_kernel!(|isa| {
            // K = 300 and 3 * 3 * 40 = 360: two reduction blocks each, partial sums in between.
            check(isa, 1, [300, 32], [4, 6], 1, 1);
            check(isa, 2, [40, 64], [6, 5], 3, 1);
        });
    }

    #[test]
    fn strided_and_padded_kernels_match_naive() {
        each_kernel!(|isa| {
            check(isa, 2, [16, 32], [9, 8], 3, 2);
            check(isa, 1, [3, 32], [15, 13], 7, 2);
            check(isa, 2, [32, 64], [7, 7], 1, 2);
        });
    }

    #[test]
    fn direct_path_matches_naive() {
        each_kernel!(|isa| {
            // Output rows a multiple of 14 wide: the kernel reads the input in place. Pixels
            // 272 floats apart (256 channels, padded stride), 544 (the same at stride 2), 6
            // (the stem's 3 channels at stride 2) and 64.
            check(isa, 1, [256, 32], [3, 14], 3, 1);
            check(isa, 2, [256, 64], [4, 28], 1, 2);
            check(isa, 1, [3, 64], [6, 28], 7, 2);
            check(isa, 2, [64, 32], [2, 14], 1, 1);
            // 7-wide maps: each tile is two rows of 7 (of one image, or the last row of one
            // and the first of the next), read as two evenly spaced segments.
            check(isa, 2, [512, 32], [7, 7], 3, 1);
            check(isa, 2, [1024, 32], [14, 14], 1, 2);
            // An odd number of 7-wide maps ends in a half tile: its first half only, the
            // second reading the first again. A 3x3, a stride-2 1x1, and a 1x1 over pixels
            // without gaps between them.
            check(isa, 1, [512, 32], [7, 7], 3, 1);
            check(isa, 3, [1024, 32], [14, 14], 1, 2);
            check(isa, 1, [2048, 32], [7, 7], 1, 1);
        });
    }

    #[test]
    fn output_widths_of_whole_panels_match_naive() {
        // 48 output channels: three AVX2 panels of 16; not a whole AVX-512 panel, refused.
        each_kernel!(|isa| {
            if 48 % isa_nr(isa) == 0 {
                check(isa, 2, [24, 48], [5, 7], 1, 1);
                check(isa, 1, [16, 48], [3, 14], 3, 1);
            } else {
                assert!(new_conv(isa, [8, 48]).is_none());
            }
        });
    }

    fn isa_nr<K: Kernel>(_: K) -> usize {
        K::NR
    }

    fn new_conv<K: Kernel>(_: K, [cin, cout]: [usize; 2]) -> Option<PackedConv<K>> {
        PackedConv::new(
            [cin, cout],
            1,
            1,
            0,
            &vec![0.0; cin * cout],
            &vec![0.0; cout],
        )
    }

    #[test]
    fn pooling_in_the_epilogue_equals_pooling_the_output() {
        each_kernel!(|isa| pooling_matches(isa));
    }

    fn pooling_matches<K: Kernel>(isa: K) {
        // Packed (5 x 7 maps, tiles across images) and direct (14-wide rows; a 7-wide map
        // alone, ending in a half tile), with and without a residual.
        for (n, cin, cout, [h, w], k, stride) in [
            (3, 24, 64, [5, 7], 1, 1),
            (1, 512, 32, [7, 7], 3, 1),
            (2, 64, 32, [3, 14], 3, 1),
            (2, 256, 32, [2, 14], 1, 1),
        ] {
            let pool = Pool::default();
            let mut input = pool.take(n, h, w, cin, k / 2);
            input.fill_from_nchw(&values(n * cin * h * w, 5));
            let pc = PackedConv::<K>::new(
                [cin, cout],
                k,
                stride,
                k / 2,
                &values(cout * cin * k * k, 6),
                &values(cout, 7),
            )
            .unwrap();
            let (oh, ow) = (pc.out_side(h), pc.out_side(w));
            for accumulate in [false, true] {
                let mut out = pool.take(n, oh, ow, cout, 0);
                out.fill_from_nchw(&values(n * cout * oh * ow, 8));
                let stats = conv_stats(
                    isa, &pc, &input, &mut out, accumulate, true, true, false, None,
                );
                let means = stats.pooled.expect("asked for");
                let want = out.global_avg_pool();
                for (i, (g, w)) in means.iter().zip(&want).enumerate() {
                    assert!(
                        (g - w).abs() <= 1e-5 * (1.0 + w.abs()),
                        "{}: {i}: {g} vs {w}",
                        K::ISA
                    );
                }
                pool.give(out);
            }
        }
    }

    #[test]
    fn output_widths_not_a_multiple_of_the_panel_are_refused() {
        each_kernel!(|isa| {
            let nr = isa_nr(isa);
            assert!(new_conv(isa, [8, nr + nr / 2]).is_none());
            assert!(new_conv(isa, [8, 0]).is_none());
            assert!(new_conv(isa, [8, 2 * nr]).is_some());
        });
    }
}
