//! The convolution kernel: implicit GEMM over channels-last activations, AVX-512.
//!
//! A convolution is a matrix product `out[m, o] = sum_k patch[m, k] * w[k, o]` where `m` runs over
//! output pixels (all images of the batch), `o` over output channels and `k` over
//! `(kh, kw, ci)`. With channels-last activations a patch is a few contiguous runs of the input
//! (one per tap, or per kernel row where pixels have no gaps), so the patch matrix is never
//! built (no im2col).
//!
//! The micro-kernel keeps a 14 x 32 tile of the output in 28 of the 32 AVX-512 registers and
//! does 28 fused multiply-adds per 2 weight loads and 14 broadcasts. Where the tile's 14 pixels
//! are evenly spaced in the input (a stride-1 row, a 1x1 over an unpadded map, the stem) the
//! broadcasts read the input in place, at constant offsets: the spacing is a compile-time
//! parameter (the direct path). Elsewhere (rows 7 wide, the last partial tile) a block of tiles
//! is first copied, `KC` values of `k` at a time, into a small buffer that stays in cache while
//! every output-channel panel passes over it (the packed path).
//!
//! Bias, the residual and ReLU are applied to the registers before the one store, so no
//! separate pass reads the output again.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::{
    __m512, _MM_HINT_T0, _mm_prefetch, _mm512_add_ps, _mm512_fmadd_ps, _mm512_loadu_ps,
    _mm512_max_ps, _mm512_set1_ps, _mm512_setzero_ps, _mm512_storeu_ps,
};

use rayon::prelude::*;

use super::act::{Act, Layout};
use super::buf::AlignedBuf;

/// Output pixels per micro-tile.
pub(crate) const MR: usize = 14;
/// Output channels per weight panel (two AVX-512 vectors).
pub(crate) const NR: usize = 32;
/// Reduction values per packed block.
const KC: usize = 256;
/// Floats between two pixels' rows of a packed tile: one cache line more than `KC`, so that the
/// 14 rows fall in different L1 sets instead of aliasing 4 KiB apart.
const A_STRIDE: usize = KC + 16;
/// Largest weight matrix (floats) walked whole for every tile: beyond it, it no longer stays in
/// L2 between tiles.
const TILE_OUTER_MAX_WEIGHTS: usize = 128 * 1024;
/// Most micro-tiles one worker packs at once.
const MAX_TILES_PER_BLOCK: usize = 8;

/// Whether this CPU can run the kernel.
pub(crate) fn supported() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// One convolution, weights repacked for the kernel: panel `p` holds output channels
/// `p*NR..(p+1)*NR` as `[k][NR]` with `k = (kh * kernel + kw) * cin + ci`.
#[derive(Debug)]
pub(crate) struct PackedConv {
    pub cin: usize,
    pub cout: usize,
    pub kernel: usize,
    pub stride: usize,
    pub pad: usize,
    weights: AlignedBuf,
    bias: AlignedBuf,
}

impl PackedConv {
    /// Repacks an OIHW weight (`[cout, cin, kernel, kernel]`) and its bias. `None` when `cout`
    /// is not a multiple of [`NR`].
    pub fn new(
        [cin, cout]: [usize; 2],
        kernel: usize,
        stride: usize,
        pad: usize,
        oihw: &[f32],
        bias: &[f32],
    ) -> Option<Self> {
        if cout % NR != 0 || cout == 0 || cin == 0 || kernel == 0 || stride == 0 {
            return None;
        }
        let k_len = kernel * kernel * cin;
        debug_assert_eq!(oihw.len(), cout * k_len);
        let mut weights = AlignedBuf::zeroed(cout * k_len);
        for o in 0..cout {
            let panel = &mut weights[(o / NR) * k_len * NR..][..k_len * NR];
            for ci in 0..cin {
                for kh in 0..kernel {
                    for kw in 0..kernel {
                        let k = (kh * kernel + kw) * cin + ci;
                        panel[k * NR + o % NR] = oihw[((o * cin + ci) * kernel + kh) * kernel + kw];
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
        })
    }

    /// Output side for an input side.
    pub fn out_side(&self, side: usize) -> usize {
        (side + 2 * self.pad - self.kernel) / self.stride + 1
    }

    fn k_len(&self) -> usize {
        self.kernel * self.kernel * self.cin
    }
}

/// Raw pointers that workers write through; each worker touches disjoint output pixels.
#[derive(Clone, Copy)]
struct SendPtr(*mut f32);
// SAFETY: the pointer is only dereferenced at pixels owned by one worker (see `conv`).
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}

impl SendPtr {
    /// The pointer (a method, so closures capture the whole `Send` wrapper).
    fn get(self) -> *mut f32 {
        self.0
    }
}

/// `out = act(conv(input) + bias [+ out])`, written into the interior of `out`.
///
/// With `accumulate`, `out` holds the residual on entry and the sum replaces it in place: the
/// epilogue reads each output vector just before it overwrites it, so the residual costs no
/// separate buffer and its cache lines are fetched once. `input` must carry at least the
/// convolution's padding as a zero border; `out` must have the output's shape.
pub(crate) fn conv(pc: &PackedConv, input: &Act, out: &mut Act, accumulate: bool, relu: bool) {
    run(pc, input, out, accumulate, relu, None);
}

/// [`conv`], also returning the global average pool of the output (`[n][cout]`), summed in the
/// epilogue from the registers instead of read back from memory.
pub(crate) fn conv_pooled(
    pc: &PackedConv,
    input: &Act,
    out: &mut Act,
    accumulate: bool,
    relu: bool,
) -> Vec<f32> {
    let sums = std::sync::Mutex::new(vec![0f64; out.n * pc.cout]);
    run(pc, input, out, accumulate, relu, Some(&sums));
    let count = (out.h * out.w) as f64;
    sums.into_inner()
        .unwrap_or_else(|e| e.into_inner())
        .into_iter()
        .map(|s| (s / count) as f32)
        .collect()
}

fn run(
    pc: &PackedConv,
    input: &Act,
    out: &mut Act,
    accumulate: bool,
    relu: bool,
    pool: Option<&std::sync::Mutex<Vec<f64>>>,
) {
    assert!(
        input.pad >= pc.pad && input.c == pc.cin && out.cs.is_multiple_of(16),
        "conv input layout"
    );
    let (oh, ow) = (pc.out_side(input.h), pc.out_side(input.w));
    assert!(
        out.n == input.n && out.h == oh && out.w == ow && out.c == pc.cout,
        "conv output shape"
    );
    let m_total = input.n * oh * ow;
    let tiles = m_total.div_ceil(MR);
    let threads = rayon::current_num_threads().max(1);
    let blocks = tiles.div_ceil(MAX_TILES_PER_BLOCK).div_ceil(threads).max(1) * threads;
    let per_block = tiles.div_ceil(blocks).max(1);
    let blocks = tiles.div_ceil(per_block);
    // Equal reduction blocks of at most KC, so that no block is a short remainder.
    let k_len = pc.k_len();
    let k_blocks = k_len.div_ceil(KC);
    let kc = k_len.div_ceil(k_blocks);
    let runs: Vec<Vec<Run>> = (0..k_blocks)
        .map(|b| patch_runs(pc, input, b * kc, ((b + 1) * kc).min(k_len)))
        .collect();
    let job = Job {
        pc,
        pool,
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
        direct_runs: patch_runs(pc, input, 0, k_len)
            .into_iter()
            .map(|r| (r.src, r.len))
            .collect(),
    };
    let start = std::time::Instant::now();
    // SAFETY: `supported()` was checked when the network was built, and each block writes
    // only the output pixels of its own tiles.
    (0..blocks)
        .into_par_iter()
        .for_each(|b| unsafe { job.run_block(b) });
    if *PROFILE {
        let s = start.elapsed().as_secs_f64();
        let macs = (m_total * k_len * pc.cout) as f64;
        eprintln!(
            "conv k{} s{} {}->{} {}x{} m={} ms={:.2} gmac/s={:.1}",
            pc.kernel,
            pc.stride,
            pc.cin,
            pc.cout,
            oh,
            ow,
            m_total,
            s * 1e3,
            macs / s / 1e9
        );
    }
}

/// Reduction values `k0..k1` of a patch as contiguous runs of the input, at the same offsets
/// from every patch origin: one per tap, merged along a kernel row where the input's pixels
/// are packed without gaps.
fn patch_runs(pc: &PackedConv, input: &Act, k0: usize, k1: usize) -> Vec<Run> {
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

/// `ATTREX_PROFILE` set: print each convolution's shape, time and rate to stderr.
pub(crate) static PROFILE: std::sync::LazyLock<bool> =
    std::sync::LazyLock::new(|| std::env::var_os("ATTREX_PROFILE").is_some());

/// Everything a worker needs to compute some tiles of one convolution.
struct Job<'a> {
    pc: &'a PackedConv,
    /// Channel sums per image (`[n][cout]`) of the output, when the convolution pools it.
    pool: Option<&'a std::sync::Mutex<Vec<f64>>>,
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
}

// SAFETY: the raw output pointer is written at disjoint pixels by each block.
unsafe impl Sync for Job<'_> {}

thread_local! {
    /// Each worker's packed patch block, kept between calls.
    static APACK: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The pixels of one block of tiles.
struct BlockPixels {
    /// Each pixel's patch origin in the input.
    src: [usize; PIX],
    /// Each pixel's offset in the output.
    dst: [usize; PIX],
    /// Each pixel's image, counted from `first_img`.
    img: [usize; PIX],
    first_img: usize,
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

/// Pixels per block.
const PIX: usize = MR * MAX_TILES_PER_BLOCK;

impl Job<'_> {
    /// For block `b`: each pixel's patch origin in the input and output offset, the number of
    /// tiles and of pixels.
    fn pixel_offsets(&self, b: usize) -> BlockPixels {
        let pc = self.pc;
        let first_tile = b * self.per_block;
        let n_tiles = self.per_block.min(self.tiles - first_tile);
        let m0 = first_tile * MR;
        let pixels = (n_tiles * MR).min(self.m_total - m0);
        let mut px = BlockPixels {
            src: [0; PIX],
            dst: [0; PIX],
            img: [0; PIX],
            first_img: m0 / (self.oh * self.ow),
            n_tiles,
            pixels,
        };
        let (mut n, mut y, mut x) = (px.first_img, m0 / self.ow % self.oh, m0 % self.ow);
        for i in 0..pixels {
            px.src[i] =
                self.input
                    .padded_offset(n, y * pc.stride + self.shift, x * pc.stride + self.shift);
            px.dst[i] = self.out_layout.offset(n, y, x);
            px.img[i] = n - px.first_img;
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

    /// Adds a block's pooled sums to the convolution's totals.
    fn add_sums(&self, px: &BlockPixels, sums: &[f32]) {
        let Some(pool) = self.pool else {
            return;
        };
        let cout = self.pc.cout;
        let mut total = pool.lock().unwrap_or_else(|e| e.into_inner());
        for (i, image) in sums.chunks_exact(cout).enumerate() {
            let at = &mut total[(px.first_img + i) * cout..][..cout];
            for (t, s) in at.iter_mut().zip(image) {
                *t += f64::from(*s);
            }
        }
    }

    /// Computes the tiles of block `b`.
    ///
    /// # Safety
    /// AVX-512F must be available, and no other thread may write the pixels of block `b`.
    #[cfg_attr(target_arch = "x86_64", target_feature(enable = "avx512f"))]
    unsafe fn run_block(&self, b: usize) {
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
        let k_len = pc.k_len();
        let panels = pc.cout / NR;
        let data = &self.input.data;
        let step = pc.stride * self.input.cs;
        // Whether pixels `i..j` of every tile are evenly spaced in the input, one stride apart
        // (each step is at least that, so equal ends mean equal steps).
        let even = |i: usize, j: usize| {
            (0..n_tiles).all(|t| src[t * MR + j - 1] - src[t * MR + i] == (j - 1 - i) * step)
        };
        // Whole tiles evenly spaced, or (maps 7 wide) both halves of every tile.
        let seg = if pixels < n_tiles * MR {
            None
        } else if even(0, MR) {
            Some(MR)
        } else if even(0, MR / 2) && even(MR / 2, MR) {
            Some(MR / 2)
        } else {
            None
        };
        if let Some(seg) = seg {
            // Then the kernel reads the pixels where they are, with no packing.
            // SAFETY: as this function's contract; each tile's pixels, at `src` and one stride
            // apart within each segment, hold the patch runs (the zero border covers the
            // padding).
            let done = unsafe { self.direct_block(&px, pool_base, seg) };
            if done {
                self.add_sums(&px, &sums);
                return;
            }
        }
        APACK.with_borrow_mut(|apack| {
            apack.resize(n_tiles * MR * A_STRIDE, 0.0);
            for (kb, runs) in self.runs.iter().enumerate() {
                let k0 = kb * self.kc;
                let kc = self.kc.min(k_len - k0);
                let (first, last) = (kb == 0, k0 + kc == k_len);
                let pack = |apack: &mut [f32], t: usize| {
                    for i in t * MR..(t + 1) * MR {
                        let row = &mut apack[i * A_STRIDE..][..kc];
                        if i < pixels {
                            for run in runs {
                                let from = src[i] + run.src;
                                copy(
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
                    let panel = &pc.weights[p * k_len * NR + k0 * NR..][..kc * NR];
                    let rows = MR.min(pixels - t * MR);
                    let epilogue = Epilogue {
                        first,
                        last,
                        relu: self.relu,
                        accumulate: self.accumulate,
                        bias: &pc.bias[p * NR..][..NR],
                        pool: pool_at(pool_base, p),
                        pool_stride: pc.cout,
                        row_img: &px.img[t * MR..t * MR + rows],
                    };
                    let mut outs = [std::ptr::null_mut::<f32>(); MR];
                    for r in 0..rows {
                        // SAFETY: `dst` offsets are inside the output (its layout made them) and
                        // this block alone writes them.
                        outs[r] = unsafe { self.out.get().add(dst[t * MR + r] + p * NR) };
                    }
                    // SAFETY: as this function's contract; the A tile holds MR rows of A_STRIDE,
                    // the panel kc rows of NR, and each pointer addresses NR floats.
                    unsafe {
                        tile_kernel::<A_STRIDE, MR>(
                            apack[t * MR * A_STRIDE..].as_ptr(),
                            0,
                            &[(0, kc)],
                            panel.as_ptr(),
                            &outs,
                            rows,
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
        self.add_sums(&px, &sums);
    }
}

/// The epilogue of a tile: add the partial sums or residual held in the output, then (after
/// the last reduction block) the bias and ReLU, and store `rows` rows. A macro, not a function:
/// the accumulators must stay in registers, and a call would take their address.
///
/// Used inside `unsafe` AVX-512 functions whose contract makes `outs[..rows]` address `NR`
/// floats each.
macro_rules! store_tile {
    ($acc:ident, $outs:expr, $rows:expr, $ep:expr) => {{
        let (outs, rows, ep) = ($outs, $rows, $ep);
        let from_out = !ep.first || ep.accumulate;
        if from_out {
            for r in 0..rows {
                $acc[r][0] = _mm512_add_ps($acc[r][0], _mm512_loadu_ps(outs[r]));
                $acc[r][1] = _mm512_add_ps($acc[r][1], _mm512_loadu_ps(outs[r].add(16)));
            }
        }
        if ep.last {
            let bias0 = _mm512_loadu_ps(ep.bias.as_ptr());
            let bias1 = _mm512_loadu_ps(ep.bias.as_ptr().add(16));
            let zero = _mm512_setzero_ps();
            for r in 0..rows {
                let mut v0 = _mm512_add_ps($acc[r][0], bias0);
                let mut v1 = _mm512_add_ps($acc[r][1], bias1);
                if ep.relu {
                    v0 = _mm512_max_ps(v0, zero);
                    v1 = _mm512_max_ps(v1, zero);
                }
                _mm512_storeu_ps(outs[r], v0);
                _mm512_storeu_ps(outs[r].add(16), v1);
            }
            if !ep.pool.is_null() {
                // Channel sums of the rows of each image, read back from L1 (indexing the
                // accumulators here would make LLVM keep them in memory), added to that
                // image's pooled sums when the image changes and at the end.
                let (mut s0, mut s1, mut image) = (zero, zero, ep.row_img[0]);
                for r in 0..rows {
                    if ep.row_img[r] != image {
                        let at = ep.pool.add(image * ep.pool_stride);
                        _mm512_storeu_ps(at, _mm512_add_ps(_mm512_loadu_ps(at), s0));
                        _mm512_storeu_ps(
                            at.add(16),
                            _mm512_add_ps(_mm512_loadu_ps(at.add(16)), s1),
                        );
                        (s0, s1, image) = (zero, zero, ep.row_img[r]);
                    }
                    s0 = _mm512_add_ps(s0, _mm512_loadu_ps(outs[r]));
                    s1 = _mm512_add_ps(s1, _mm512_loadu_ps(outs[r].add(16)));
                }
                let at = ep.pool.add(image * ep.pool_stride);
                _mm512_storeu_ps(at, _mm512_add_ps(_mm512_loadu_ps(at), s0));
                _mm512_storeu_ps(at.add(16), _mm512_add_ps(_mm512_loadu_ps(at.add(16)), s1));
            }
        } else {
            for r in 0..rows {
                _mm512_storeu_ps(outs[r], $acc[r][0]);
                _mm512_storeu_ps(outs[r].add(16), $acc[r][1]);
            }
        }
    }};
}

impl Job<'_> {
    /// The block's tiles straight from the input, without packing, when the distance between
    /// two output pixels' patches in the input (stride x channel stride) is one the direct
    /// kernel is compiled for: those of ResNet-50's stem and stride-1 and stride-2 layers.
    /// Returns whether it ran.
    ///
    /// # Safety
    /// As [`Job::run_block`], and every tile's pixels one stride apart in the input.
    #[cfg_attr(target_arch = "x86_64", target_feature(enable = "avx512f"))]
    unsafe fn direct_block(&self, px: &BlockPixels, pool_base: *mut f32, seg: usize) -> bool {
        type Tiles<'j> = unsafe fn(&Job<'j>, &BlockPixels, *mut f32);
        let kernel: Tiles<'_> = match (self.pc.stride * self.input.cs, seg) {
            (6, MR) => Self::direct_tiles::<6, MR>,
            (64, MR) => Self::direct_tiles::<64, MR>,
            (128, MR) => Self::direct_tiles::<128, MR>,
            (256, MR) => Self::direct_tiles::<256, MR>,
            (272, MR) => Self::direct_tiles::<272, MR>,
            (528, MR) => Self::direct_tiles::<528, MR>,
            (544, MR) => Self::direct_tiles::<544, MR>,
            (1040, MR) => Self::direct_tiles::<1040, MR>,
            (1056, MR) => Self::direct_tiles::<1056, MR>,
            (2064, MR) => Self::direct_tiles::<2064, MR>,
            (2080, MR) => Self::direct_tiles::<2080, MR>,
            // Stage 4 (7-wide maps): the 3x3 (v1; 1056 for v1.5's stride 2) and the
            // stride-2 1x1s into it.
            (528, 7) => Self::direct_tiles::<528, 7>,
            (1056, 7) => Self::direct_tiles::<1056, 7>,
            (2080, 7) => Self::direct_tiles::<2080, 7>,
            _ => return false,
        };
        // SAFETY: passed on from the caller.
        unsafe { kernel(self, px, pool_base) };
        true
    }

    /// [`Job::direct_block`] for pixels `STEP` floats apart.
    ///
    /// # Safety
    /// As [`Job::direct_block`], with `STEP == self.pc.stride * self.input.cs`.
    #[cfg_attr(target_arch = "x86_64", target_feature(enable = "avx512f"))]
    unsafe fn direct_tiles<const STEP: usize, const SEG: usize>(
        &self,
        px: &BlockPixels,
        pool_base: *mut f32,
    ) {
        let pc = self.pc;
        let (src, dst, n_tiles) = (&px.src, &px.dst, px.n_tiles);
        let k_len = pc.k_len();
        let panels = pc.cout / NR;
        let tile = |t: usize, p: usize| {
            let epilogue = Epilogue {
                first: true,
                last: true,
                relu: self.relu,
                accumulate: self.accumulate,
                bias: &pc.bias[p * NR..][..NR],
                pool: pool_at(pool_base, p),
                pool_stride: pc.cout,
                row_img: &px.img[t * MR..(t + 1) * MR],
            };
            let mut outs = [std::ptr::null_mut::<f32>(); MR];
            for (r, out) in outs.iter_mut().enumerate() {
                // SAFETY: `dst` offsets are inside the output and this block alone writes them.
                *out = unsafe { self.out.get().add(dst[t * MR + r] + p * NR) };
            }
            let origin = self.input.data[src[t * MR]..].as_ptr();
            // Rows from SEG on start this far from the first (unused when SEG == MR).
            let jump = if SEG < MR {
                src[t * MR + SEG] - src[t * MR]
            } else {
                0
            };
            let panel = &pc.weights[p * k_len * NR..][..k_len * NR];
            // SAFETY: as this function's contract.
            unsafe {
                tile_kernel::<STEP, SEG>(
                    origin,
                    jump,
                    &self.direct_runs,
                    panel.as_ptr(),
                    &outs,
                    MR,
                    &epilogue,
                );
            }
        };
        if k_len * pc.cout <= TILE_OUTER_MAX_WEIGHTS {
            for t in 0..n_tiles {
                for p in 0..panels {
                    tile(t, p);
                }
            }
        } else {
            for p in 0..panels {
                for t in 0..n_tiles {
                    tile(t, p);
                }
            }
        }
    }
}

/// One 14 x 32 output tile: the micro-kernel of both paths. Row `r`'s patch values are read
/// at `r * STEP` from `a` (rows `SEG..` from `a + jump`, for two rows of a 7-wide map), one
/// contiguous run `(offset, len)` after another; `STEP` is a compile-time constant, so every
/// broadcast has a constant offset. The direct path passes the input itself and its patch
/// runs; the packed path a packed tile (`STEP = A_STRIDE`) and one run. Only `rows` rows are
/// stored.
///
/// # Safety
/// AVX-512F must be available; for every run `(o, len)`, row `r`'s
/// `a + o + r * STEP + i` (`r < SEG`) or `a + jump + o + (r - SEG) * STEP + i` must be readable
/// for `r < MR`, `i < len`; `b` addresses (sum of the lengths) x `NR` floats and `outs[..rows]`
/// `NR` floats each.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn tile_kernel<const STEP: usize, const SEG: usize>(
    a: *const f32,
    jump: usize,
    runs: &[(usize, usize)],
    b: *const f32,
    outs: &[*mut f32; MR],
    rows: usize,
    ep: &Epilogue<'_>,
) {
    // SAFETY: the caller's contract covers every access below.
    unsafe {
        // Partial sums of earlier reduction blocks, or the residual, are in the output and
        // are added after the multiply-adds. Those rows are usually not in cache: start
        // fetching them now.
        if !ep.first || ep.accumulate {
            for out in &outs[..rows] {
                _mm_prefetch::<_MM_HINT_T0>(out.cast::<i8>());
                _mm_prefetch::<_MM_HINT_T0>(out.add(16).cast::<i8>());
            }
        }
        let mut acc = [[_mm512_setzero_ps(); 2]; MR];
        let mut bp = b;
        for &(off, cin) in runs {
            let ap = a.add(off);
            let ap2 = a.wrapping_add(jump + off);
            let step = |acc: &mut [[__m512; 2]; MR], ci: usize, bp: *const f32| {
                let b0 = _mm512_loadu_ps(bp);
                let b1 = _mm512_loadu_ps(bp.add(16));
                for (r, row) in acc.iter_mut().enumerate() {
                    let at = if r < SEG {
                        ap.add(r * STEP + ci)
                    } else {
                        ap2.add((r - SEG) * STEP + ci)
                    };
                    let av: __m512 = _mm512_set1_ps(*at);
                    row[0] = _mm512_fmadd_ps(av, b0, row[0]);
                    row[1] = _mm512_fmadd_ps(av, b1, row[1]);
                }
            };
            let mut ci = 0;
            while ci + 4 <= cin {
                step(&mut acc, ci, bp);
                step(&mut acc, ci + 1, bp.add(NR));
                step(&mut acc, ci + 2, bp.add(2 * NR));
                step(&mut acc, ci + 3, bp.add(3 * NR));
                ci += 4;
                bp = bp.add(4 * NR);
            }
            while ci < cin {
                step(&mut acc, ci, bp);
                ci += 1;
                bp = bp.add(NR);
            }
        }
        store_tile!(acc, outs, rows, ep);
    }
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn tile_kernel<const STEP: usize, const SEG: usize>(
    _a: *const f32,
    _jump: usize,
    _runs: &[(usize, usize)],
    _b: *const f32,
    _outs: &[*mut f32; MR],
    _rows: usize,
    _ep: &Epilogue<'_>,
) {
    unreachable!("the native engine is only built where `supported()` holds");
}

/// `dst.copy_from_slice(src)` in 64-byte vectors: the runs are short (21 floats in the stem, a
/// few hundred elsewhere), where a call to `memcpy` per run costs more than the copy.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
fn copy(dst: &mut [f32], src: &[f32]) {
    use std::arch::x86_64::{_mm512_mask_storeu_ps, _mm512_maskz_loadu_ps};
    assert_eq!(dst.len(), src.len());
    let mut d = dst.chunks_exact_mut(16);
    let mut s = src.chunks_exact(16);
    for (d, s) in (&mut d).zip(&mut s) {
        // SAFETY: both chunks hold 16 floats.
        unsafe { _mm512_storeu_ps(d.as_mut_ptr(), _mm512_loadu_ps(s.as_ptr())) };
    }
    let (d, s) = (d.into_remainder(), s.remainder());
    if !d.is_empty() {
        let mask = (1u16 << d.len()) - 1;
        // SAFETY: the mask covers exactly the `d.len() < 16` floats both slices hold.
        unsafe {
            _mm512_mask_storeu_ps(
                d.as_mut_ptr(),
                mask,
                _mm512_maskz_loadu_ps(mask, s.as_ptr()),
            );
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn copy(dst: &mut [f32], src: &[f32]) {
    dst.copy_from_slice(src);
}

struct Epilogue<'a> {
    /// The first reduction block: start from zero, not from the partial sums in the output.
    first: bool,
    /// The last reduction block: apply bias, residual and ReLU.
    last: bool,
    relu: bool,
    /// The output holds a residual to add (taken in with the first reduction block; later
    /// blocks find it in the partial sums).
    accumulate: bool,
    bias: &'a [f32],
    /// Where this panel's channel sums of image 0 of the block go (null: no pooling); image `i`
    /// at `pool + i * pool_stride`.
    pool: *mut f32,
    pool_stride: usize,
    /// Each row's image, counted from the block's first.
    row_img: &'a [usize],
}

/// The sums of panel `p` in a block's pooled sums (null when not pooling).
fn pool_at(base: *mut f32, p: usize) -> *mut f32 {
    if base.is_null() {
        base
    } else {
        base.wrapping_add(p * NR)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::native::act::Pool;

    /// A direct, unoptimised convolution on NCHW data: the reference for the kernel.
    #[allow(clippy::too_many_arguments)]
    fn naive(
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
    pub(super) fn values(len: usize, seed: u64) -> Vec<f32> {
        let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state >> 40) as f32 / (1u64 << 23) as f32 - 1.0
            })
            .collect()
    }

    fn check(n: usize, cin: usize, cout: usize, hw: [usize; 2], k: usize, stride: usize) {
        if !supported() {
            eprintln!("no AVX-512F here: the native kernel is not used and not tested");
            return;
        }
        let pad = k / 2;
        let [h, w] = hw;
        let x = values(n * cin * h * w, 1);
        let wt = values(cout * cin * k * k, 2);
        let bias = values(cout, 3);
        let residual = values(n * cout * h * w, 4);
        let pc = PackedConv::new([cin, cout], k, stride, pad, &wt, &bias).unwrap();
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
            conv(&pc, &input, &mut out, accumulate, relu);
            let layout = out.layout();
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
                                "k{k} s{stride} {cin}->{cout} at ({b},{o},{y},{xx}): {got} vs {v}"
                            );
                        }
                    }
                }
            }
            // The border the next convolution relies on stays zero.
            assert!((0..out.w + 2).all(|px| {
                out.data[px * cout..(px + 1) * cout]
                    .iter()
                    .all(|&v| v == 0.0)
            }));
            pool.give(out);
        }
    }

    #[test]
    fn pointwise_with_pixel_tail_matches_naive() {
        // 2 * 5 * 7 = 70 pixels: five full tiles, in blocks over both workers.
        check(2, 24, 64, [5, 7], 1, 1);
        // 3 * 3 * 3 = 27 pixels: a partial tile.
        check(3, 8, 32, [3, 3], 1, 1);
    }

    #[test]
    fn reduction_split_into_blocks_matches_naive() {
        // K = 300 and 3 * 3 * 40 = 360: two reduction blocks each, partial sums in between.
        check(1, 300, 32, [4, 6], 1, 1);
        check(2, 40, 64, [6, 5], 3, 1);
    }

    #[test]
    fn strided_and_padded_kernels_match_naive() {
        check(2, 16, 32, [9, 8], 3, 2);
        check(1, 3, 32, [15, 13], 7, 2);
        check(2, 32, 64, [7, 7], 1, 2);
    }

    #[test]
    fn direct_path_matches_naive() {
        // Output rows a multiple of 14 wide: the kernel reads the input in place. Pixels
        // 272 floats apart (256 channels, padded stride), 544 (the same at stride 2), 6 (the
        // stem's 3 channels at stride 2) and 64.
        check(1, 256, 32, [3, 14], 3, 1);
        check(2, 256, 64, [4, 28], 1, 2);
        check(1, 3, 64, [6, 28], 7, 2);
        check(2, 64, 32, [2, 14], 1, 1);
        // 7-wide maps: each tile is two rows of 7 (of one image, or the last row of one and
        // the first of the next), read as two evenly spaced segments.
        check(2, 512, 32, [7, 7], 3, 1);
        check(2, 1024, 32, [14, 14], 1, 2);
    }

    #[test]
    fn pooling_in_the_epilogue_equals_pooling_the_output() {
        if !supported() {
            return;
        }
        // Packed (5 x 7 maps, tiles across images) and direct (14-wide rows), with and without
        // a residual.
        for (n, cin, cout, [h, w], k, stride) in [
            (3, 24, 64, [5, 7], 1, 1),
            (2, 64, 32, [3, 14], 3, 1),
            (2, 256, 32, [2, 14], 1, 1),
        ] {
            let pool = Pool::default();
            let mut input = pool.take(n, h, w, cin, k / 2);
            input.fill_from_nchw(&values(n * cin * h * w, 5));
            let pc = PackedConv::new(
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
                let means = conv_pooled(&pc, &input, &mut out, accumulate, true);
                let want = out.global_avg_pool();
                for (i, (g, w)) in means.iter().zip(&want).enumerate() {
                    assert!((g - w).abs() <= 1e-5 * (1.0 + w.abs()), "{i}: {g} vs {w}");
                }
                pool.give(out);
            }
        }
    }

    #[test]
    fn output_widths_not_a_multiple_of_32_are_refused() {
        assert!(PackedConv::new([8, 48], 1, 1, 0, &[0.0; 8 * 48], &[0.0; 48]).is_none());
    }
}
