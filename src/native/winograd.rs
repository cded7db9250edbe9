//! The `f32` 3x3 convolutions (stride 1, padding 1) by Winograd's minimal filtering F(2x2, 3x3)
//! (Lavin and Gray, "Fast Algorithms for Convolutional Neural Networks", 2016).
//!
//! Each 2 x 2 block of output pixels (a *tile*) is computed from the 4 x 4 input pixels around
//! it in a transformed space where the 3 x 3 filter becomes 16 products instead of 36:
//! `Y = A^T [(G g G^T) . (B^T d B)] A`. Summed over the input channels, the 16 products of a
//! tile are 16 independent matrix products, one per transformed point `xi`:
//! `M[xi][tile][o] = sum_c V[xi][tile][c] U[xi][c][o]`, which the instruction set's own tile
//! kernel ([`Kernel::tile`]) computes as it computes a 1x1 convolution. That is 16 / 36 of the
//! multiply-adds of the direct convolution; the transforms add a few adds per value.
//!
//! The tiles of a batch are cut into chunks that each worker takes whole: it transforms the
//! chunk's input into `V`, runs the 16 products into `M`, and transforms `M` into the output
//! with the bias and ReLU, so `V` and `M` stay in its caches (in L2 where the channels are
//! few; where they are many, a chunk takes more tiles, so that the weights, 16 / 9 of the
//! direct convolution's, are read fewer times). A tile's values do not depend on the other
//! tiles of its chunk (each row of a matrix product is summed on its own, in the same order),
//! so an image's features do not depend on its batch.
//!
//! F(2x2, 3x3)'s transforms only halve, add and subtract, so its rounding error stays near
//! the direct convolution's (F(4x4, 3x3), with a quarter of the multiply-adds, multiplies by
//! up to 8 in its transforms and loses more). The tests bound the error against a direct
//! convolution summed in `f64`: at most 1e-6 of the sum of the products' magnitudes (1.2e-7
//! measured).
//!
//! The transforms are AVX2 ([`Kernel::winograd`] gives the token); the matrix products run on
//! any kernel.
//!
//! The int8 network on AVX2 without AVX-VNNI runs some of its 3x3s so as well
//! ([`conv_pairs`]), with the products in integers: each image's transformed input quantised
//! to 16-bit codes (at most `V_MAX` = 8,191 in magnitude, under 4 x the image's largest input
//! / `V_MAX`, which no transformed value of a ReLU output exceeds), each point's output
//! channel's transformed weights to codes of at most [`w_max`] (512 to 4,096 levels: as many as
//! keep a sum of `cin` products inside `i32`), summed exactly by `vpmaddwd` on words of two
//! codes ([`Avx2Pairs`]), then scaled back to `f32` for the output transform. Finer codes than
//! the int8 kernels' 8 bits: the tests bound the error at 1e-3 of the sum of the products'
//! magnitudes (3.1e-4 measured).

use std::marker::PhantomData;

use rayon::prelude::*;

use super::act::{Act, Layout, channel_stride};
use super::buf::AlignedBuf;
use super::isa::{Avx2Fma, Avx2Pairs, Epilogue, Kernel, MAX_MR};
use super::kernel::SendPtr;

/// Transformed points of a tile: 4 x 4.
const POINTS: usize = 16;
/// Channels per step of the transforms: one AVX2 vector.
const LANES: usize = 8;
/// Bytes of `V` and `M` that one chunk of tiles aims at, at least: about a core's L2 (512 KiB
/// on Zen 3, 1 MiB on Skylake-SP and later). Chunks of 128 KiB to 512 KiB measured within
/// noise of each other on Zen 3.
const CHUNK_BYTES: usize = 512 * 1024;
/// The input channel counts the matrix products are compiled for (their row stride is a
/// compile-time constant, [`Kernel::tile`]'s `STEP`): those of a bottleneck ResNet's 3x3s.
const CHANNELS: [usize; 4] = [64, 128, 256, 512];
/// The most input channels: the zero pixel outside the map is this long.
const MAX_CIN: usize = 512;

/// A 3x3 convolution with stride 1 and padding 1, its weights transformed for F(2x2, 3x3) and
/// packed for kernel `K`: point `xi`'s matrix `U[xi] = (G g G^T)[xi]` as the output-channel
/// panels of [`super::kernel::PackedConv`], `[xi][cout / NR][cin][NR]`.
#[derive(Debug)]
pub(crate) struct WinogradConv<K> {
    pub cin: usize,
    pub cout: usize,
    weights: AlignedBuf,
    bias: AlignedBuf,
    /// For integer weights ([`WinogradConv::new_pairs`]): the scale of each point's output
    /// channel, `[xi][cout]`; empty for `f32`.
    scale: Vec<f32>,
    packed_for: PhantomData<K>,
}

/// `G`, which takes a 3-tap filter row to the 4 transformed points.
const G: [[f64; 3]; 4] = [
    [1.0, 0.0, 0.0],
    [0.5, 0.5, 0.5],
    [0.5, -0.5, 0.5],
    [0.0, 0.0, 1.0],
];

impl<K: Kernel> WinogradConv<K> {
    /// Transforms and packs an OIHW 3x3 weight (`[cout, cin, 3, 3]`) and its bias. `None`
    /// where this path does not take the shape: `cin` not one of 64, 128, 256 and 512, or
    /// `cout` not a multiple of `K::NR` (and of 8).
    ///
    /// # Panics
    /// If `oihw` or `bias` does not have that shape's length.
    pub fn new([cin, cout]: [usize; 2], oihw: &[f32], bias: &[f32]) -> Option<Self> {
        if !CHANNELS.contains(&cin)
            || cout == 0
            || !cout.is_multiple_of(K::NR)
            || !cout.is_multiple_of(LANES)
        {
            return None;
        }
        assert_eq!(oihw.len(), cout * cin * 9, "OIHW weight length");
        assert_eq!(bias.len(), cout, "bias length");
        let nr = K::NR;
        let panels = cout / nr;
        let mut weights = AlignedBuf::zeroed(POINTS * cout * cin);
        for (o, c, xi, u) in transformed(cin, cout, oihw) {
            let panel = (xi * panels + o / nr) * cin * nr;
            weights[panel + c * nr + o % nr] = u as f32;
        }
        Some(Self {
            cin,
            cout,
            weights,
            bias: AlignedBuf::from_slice(bias),
            scale: Vec::new(),
            packed_for: PhantomData,
        })
    }
}

/// Each `(o, c, xi, (G g G^T)[xi])` of an OIHW 3x3 weight, in `f64`, output channel by
/// output channel.
fn transformed(
    cin: usize,
    cout: usize,
    oihw: &[f32],
) -> impl Iterator<Item = (usize, usize, usize, f64)> + '_ {
    (0..cout).flat_map(move |o| {
        (0..cin).flat_map(move |c| {
            let g = &oihw[(o * cin + c) * 9..][..9];
            (0..POINTS).map(move |xi| {
                let (gi, gj) = (G[xi / 4], G[xi % 4]);
                let mut u = 0f64;
                for (kh, &a) in gi.iter().enumerate() {
                    for (kw, &b) in gj.iter().enumerate() {
                        u += a * b * f64::from(g[kh * 3 + kw]);
                    }
                }
                (o, c, xi, u)
            })
        })
    })
}

/// The largest magnitude of a transformed input code (`i16`) in the integer products.
const V_MAX: i32 = 8191;

/// The largest magnitude of a transformed weight code for `cin` input channels: as large as
/// keeps every sum of `cin` products of two codes inside `i32` (`cin * V_MAX * W_MAX`), at
/// most `i16`'s 32,767: 4,096 for 64 channels down to 512 for 512.
fn w_max(cin: usize) -> i32 {
    let most = i64::from(i32::MAX) / (cin.max(1) as i64 * i64::from(V_MAX));
    most.min(32_767) as i32
}

impl WinogradConv<Avx2Pairs> {
    /// [`WinogradConv::new`] with the transformed weights as 16-bit integer codes, two input
    /// channels to a word (channel `2w` in the low half), for the int8 network's 3x3s on AVX2
    /// ([`conv_pairs`]): point `xi`'s output channel `o` takes the scale
    /// `max_c |U[xi][c][o]| / w_max(cin)`, its codes `round(U / scale)`.
    pub fn new_pairs([cin, cout]: [usize; 2], oihw: &[f32], bias: &[f32]) -> Option<Self> {
        let nr = <Avx2Pairs as Kernel>::NR;
        if !CHANNELS.contains(&cin)
            || cout == 0
            || !cout.is_multiple_of(nr)
            || !cout.is_multiple_of(LANES)
        {
            return None;
        }
        assert_eq!(oihw.len(), cout * cin * 9, "OIHW weight length");
        assert_eq!(bias.len(), cout, "bias length");
        // U as [xi][o][c].
        let mut u = vec![0f64; POINTS * cout * cin];
        for (o, c, xi, v) in transformed(cin, cout, oihw) {
            u[(xi * cout + o) * cin + c] = v;
        }
        let most = f64::from(w_max(cin));
        let (words, panels) = (cin / 2, cout / nr);
        let mut weights = AlignedBuf::zeroed(POINTS * cout * words);
        let mut scale = vec![1f32; POINTS * cout];
        for (xo, row) in u.chunks_exact(cin).enumerate() {
            let (xi, o) = (xo / cout, xo % cout);
            let max = row.iter().fold(0f64, |m, v| m.max(v.abs()));
            // A channel of zeros (or one no scale holds) keeps scale 1 and codes 0.
            let s = if max > 0.0 && max.is_finite() {
                max / most
            } else {
                1.0
            };
            scale[xo] = s as f32;
            let code = |v: f64| (v / s).round().clamp(-most, most) as i16 as u16;
            let panel = (xi * panels + o / nr) * words * nr;
            for (w, pair) in row.chunks_exact(2).enumerate() {
                let word = u32::from(code(pair[0])) | (u32::from(code(pair[1])) << 16);
                weights[panel + w * nr + o % nr] = f32::from_bits(word);
            }
        }
        Some(Self {
            cin,
            cout,
            weights,
            bias: AlignedBuf::from_slice(bias),
            scale,
            packed_for: PhantomData,
        })
    }
}

/// The zero pixel read outside the map's border (the last tiles of an odd side reach one
/// pixel past it).
static ZEROS: [f32; MAX_CIN] = [0.0; MAX_CIN];

/// `out = act(conv3x3(input) + bias)` by F(2x2, 3x3), written into the interior of `out`: the
/// matrix products by the kernels that `isa` proves this CPU runs, the transforms by AVX2,
/// which `avx2` proves; the same values as [`super::kernel::conv`] with the untransformed
/// weights, to rounding. `act` is ReLU with `relu`, else nothing.
///
/// `input` must carry a zero border of at least 1; `out` must have its map's size and `wc`'s
/// output channels.
///
/// # Panics
/// If the shapes do not fit together.
pub(crate) fn conv<K: Kernel>(
    isa: K,
    avx2: Avx2Fma,
    wc: &WinogradConv<K>,
    input: &Act,
    out: &mut Act,
    relu: bool,
) {
    check_shapes(wc, input, out);
    assert!(K::VALUES_PER_WORD == 1, "f32 weights");
    match wc.cin {
        64 => run::<K, 64>(isa, avx2, wc, input, out, relu, &[]),
        128 => run::<K, 128>(isa, avx2, wc, input, out, relu, &[]),
        256 => run::<K, { 256 + 16 }>(isa, avx2, wc, input, out, relu, &[]),
        512 => run::<K, { 512 + 16 }>(isa, avx2, wc, input, out, relu, &[]),
        _ => unreachable!("WinogradConv::new takes only these channel counts"),
    }
}

/// Checks that `input` (floats with a border of at least 1) and `out` fit `wc`.
///
/// # Panics
/// If they do not.
fn check_shapes<K>(wc: &WinogradConv<K>, input: &Act, out: &Act) {
    input.assert_layout();
    out.assert_layout();
    assert!(
        input.pad >= 1
            && input.c == wc.cin
            && input.pixel_scale.is_empty()
            && input.image_scale.is_empty(),
        "Winograd conv input layout"
    );
    assert!(
        out.n == input.n && out.h == input.h && out.w == input.w && out.c == wc.cout,
        "Winograd conv output shape"
    );
}

/// [`conv`] for the int8 network on AVX2 (weights from [`WinogradConv::new_pairs`]): each
/// tile's transformed input `B^T d B` is quantised to 16-bit codes under its image's scale,
/// `4 max / V_MAX` (`max[n]` is image `n`'s largest input value, at least 0, which bounds
/// every transformed value by 4 max for an input of ReLU outputs; an image of zeros takes
/// scale 1), the 16 matrix products sum the codes' products exactly in 32-bit integers
/// (`vpmaddwd`: as many multiply-adds per instruction as the int8 kernel's `vpmaddubsw` and
/// `vpmaddwd`, where the direct convolution needs 36 / 16 times as many), and the sums, scaled
/// back to `f32`, go through the `f32` output transform.
///
/// # Panics
/// As [`conv`], and if `max` does not hold one value per image.
pub(crate) fn conv_pairs(
    isa: Avx2Pairs,
    wc: &WinogradConv<Avx2Pairs>,
    input: &Act,
    max: &[f32],
    out: &mut Act,
    relu: bool,
) {
    check_shapes(wc, input, out);
    assert_eq!(max.len(), input.n, "one maximum per image");
    let scales: Vec<f32> = max
        .iter()
        .map(|&m| {
            if m > 0.0 && m.is_finite() {
                4.0 * m / V_MAX as f32
            } else {
                1.0
            }
        })
        .collect();
    let avx2 = isa.avx2();
    match wc.cin {
        64 => run::<Avx2Pairs, 32>(isa, avx2, wc, input, out, relu, &scales),
        128 => run::<Avx2Pairs, 64>(isa, avx2, wc, input, out, relu, &scales),
        256 => run::<Avx2Pairs, { 128 + 16 }>(isa, avx2, wc, input, out, relu, &scales),
        512 => run::<Avx2Pairs, { 256 + 16 }>(isa, avx2, wc, input, out, relu, &scales),
        _ => unreachable!("WinogradConv::new_pairs takes only these channel counts"),
    }
}

/// The shape of a convolution's tiles and chunks.
#[derive(Debug, Clone, Copy)]
struct Tiling {
    /// Tiles down and across one image's map.
    th: usize,
    tw: usize,
    /// Tiles of the batch.
    total: usize,
    /// Tiles per chunk, a multiple of `MR` (the last chunk may hold fewer).
    per_chunk: usize,
    /// Rows of `M` from one tile to the next: the output's channels, spread like an [`Act`]'s.
    m_stride: usize,
}

impl Tiling {
    fn new<K: Kernel>(input: &Act, step: usize, cout: usize) -> Self {
        let (th, tw) = (input.h.div_ceil(2), input.w.div_ceil(2));
        let total = input.n * th * tw;
        let m_stride = channel_stride(cout);
        let per_tile = POINTS * size_of::<f32>() * (step + m_stride);
        // A chunk's matrix products read all of `U` (16 cin x cout floats): at least as many
        // bytes of `V` and `M` go with it, so that it is not read again for every few tiles.
        let weights = POINTS * size_of::<f32>() * input.c * cout / K::VALUES_PER_WORD;
        let most = (CHUNK_BYTES.max(weights) / per_tile / K::MR).max(1) * K::MR;
        let threads = rayon::current_num_threads().max(1);
        // At least one chunk per thread, each at most `most` tiles, all about equal.
        let chunks = total.div_ceil(most).max(threads).min(total.div_ceil(K::MR));
        let per_chunk = total.div_ceil(chunks.max(1)).next_multiple_of(K::MR);
        Self {
            th,
            tw,
            total,
            per_chunk,
            m_stride,
        }
    }
}

/// [`conv`] with `STEP` words between two tiles' rows of `V` (floats, or pairs of 16-bit
/// codes under each image's scale in `scales`, empty for floats).
fn run<K: Kernel, const STEP: usize>(
    isa: K,
    avx2: Avx2Fma,
    wc: &WinogradConv<K>,
    input: &Act,
    out: &mut Act,
    relu: bool,
    scales: &[f32],
) {
    let tiling = Tiling::new::<K>(input, STEP, wc.cout);
    if tiling.total == 0 {
        return;
    }
    let dst = Output {
        data: SendPtr(out.data.as_mut_ptr()),
        layout: out.layout(),
        h: out.h,
        w: out.w,
        relu,
    };
    let chunks = tiling.total.div_ceil(tiling.per_chunk);
    let v_len = POINTS * tiling.per_chunk * STEP;
    let m_len = POINTS * tiling.per_chunk * tiling.m_stride;
    (0..chunks).into_par_iter().for_each(|chunk| {
        let t0 = chunk * tiling.per_chunk;
        let tiles = tiling.per_chunk.min(tiling.total - t0);
        // Each tile's rows of `V` in the products take its image's scale.
        let row_scales: Vec<f32> = if scales.is_empty() {
            Vec::new()
        } else {
            (t0..t0 + tiles)
                .map(|t| scales[tile_origin(tiling, t).0])
                .collect()
        };
        SCRATCH.with_borrow_mut(|(v, m)| {
            for (buf, len) in [(&mut *v, v_len), (&mut *m, m_len)] {
                if buf.len() < len {
                    *buf = AlignedBuf::zeroed(len);
                }
            }
            let (v, m) = (&mut v[..v_len], &mut m[..m_len]);
            isa.vectorize(|| {
                if scales.is_empty() {
                    transform_input::<STEP>(avx2, input, tiling, t0, tiles, v);
                } else {
                    transform_input_pairs::<STEP>(avx2, input, tiling, t0, tiles, v, scales);
                }
                products::<K, STEP>(isa, wc, tiling, tiles, v, m, &row_scales);
                transform_output(avx2, wc, tiling, t0, tiles, m, dst);
            });
        });
    });
}

thread_local! {
    /// Each worker's `V` and `M`, kept between calls (as the driver keeps its packed patches)
    /// and grown when a convolution needs more.
    static SCRATCH: std::cell::RefCell<(AlignedBuf, AlignedBuf)> =
        std::cell::RefCell::new((AlignedBuf::zeroed(0), AlignedBuf::zeroed(0)));
}

/// Where the workers write the output, and whether through ReLU.
#[derive(Clone, Copy)]
struct Output {
    data: SendPtr,
    layout: Layout,
    h: usize,
    w: usize,
    relu: bool,
}

/// Tile `t` of the batch: its image and the top-left pixel of its 2 x 2 outputs.
fn tile_origin(tiling: Tiling, t: usize) -> (usize, usize, usize) {
    let per_image = tiling.th * tiling.tw;
    let (n, r) = (t / per_image, t % per_image);
    (n, 2 * (r / tiling.tw), 2 * (r % tiling.tw))
}

/// `V[xi][t - t0] = (B^T d B)[xi]` for the chunk's tiles `t0..t0 + tiles`, `d` the tile's
/// 4 x 4 input pixels (zero past the border).
#[inline(always)]
fn transform_input<const STEP: usize>(
    avx2: Avx2Fma,
    input: &Act,
    tiling: Tiling,
    t0: usize,
    tiles: usize,
    v: &mut [f32],
) {
    let cin = input.c;
    let plane = tiling.per_chunk * STEP;
    assert!(
        cin <= STEP
            && cin.is_multiple_of(LANES)
            && tiles <= tiling.per_chunk
            && v.len() >= POINTS * plane,
        "Winograd input scratch"
    );
    let (rows, cols) = (input.h + 2 * input.pad, input.w + 2 * input.pad);
    for t in 0..tiles {
        let (n, y, x) = tile_origin(tiling, t0 + t);
        // Padded coordinates of the 4 x 4 pixels: one before the tile's outputs.
        let (py, px) = (y + input.pad - 1, x + input.pad - 1);
        let d: [*const f32; POINTS] = std::array::from_fn(|k| {
            let (yy, xx) = (py + k / 4, px + k % 4);
            if yy < rows && xx < cols {
                input.data[input.padded_offset(n, yy, xx)..][..cin].as_ptr()
            } else {
                ZEROS[..cin].as_ptr()
            }
        });
        let v_tile = v[t * STEP..].as_mut_ptr();
        // SAFETY: each of the 16 pointers addresses `cin` floats (checked above), a multiple
        // of `LANES`; `v_tile + xi * plane` row `t < per_chunk` of plane `xi`, `cin <= STEP`
        // floats inside `v` (checked above).
        unsafe { input_tile(avx2, &d, cin, v_tile, plane) };
    }
}

/// [`transform_input`] into 16-bit codes, two channels to a word of `V`: tile `t`'s values
/// times `1 / scales[n]` for its image `n`, rounded, within `V_MAX`.
#[inline(always)]
fn transform_input_pairs<const STEP: usize>(
    avx2: Avx2Fma,
    input: &Act,
    tiling: Tiling,
    t0: usize,
    tiles: usize,
    v: &mut [f32],
    scales: &[f32],
) {
    /// Channels transformed at a time: 16 points of them stay in L1 before they are coded.
    const BLOCK: usize = 64;
    let cin = input.c;
    let plane = tiling.per_chunk * STEP;
    assert!(
        cin.is_multiple_of(BLOCK)
            && cin / 2 <= STEP
            && tiles <= tiling.per_chunk
            && v.len() >= POINTS * plane
            && scales.len() == input.n,
        "Winograd input scratch"
    );
    let (rows, cols) = (input.h + 2 * input.pad, input.w + 2 * input.pad);
    let mut block = [0f32; POINTS * BLOCK];
    for t in 0..tiles {
        let (n, y, x) = tile_origin(tiling, t0 + t);
        let inv = 1.0 / scales[n];
        let (py, px) = (y + input.pad - 1, x + input.pad - 1);
        let d: [&[f32]; POINTS] = std::array::from_fn(|k| {
            let (yy, xx) = (py + k / 4, px + k % 4);
            if yy < rows && xx < cols {
                &input.data[input.padded_offset(n, yy, xx)..][..cin]
            } else {
                &ZEROS[..cin]
            }
        });
        for c0 in (0..cin).step_by(BLOCK) {
            let dc: [*const f32; POINTS] = std::array::from_fn(|k| d[k][c0..].as_ptr());
            // SAFETY: each pointer addresses `BLOCK` floats (`c0 + BLOCK <= cin`), a multiple
            // of `LANES`; `block` holds 16 points of `BLOCK`.
            unsafe { input_tile(avx2, &dc, BLOCK, block.as_mut_ptr(), BLOCK) };
            for (xi, values) in block.chunks_exact(BLOCK).enumerate() {
                let at = xi * plane + t * STEP + c0 / 2;
                avx2.code_pairs(values, inv, V_MAX, &mut v[at..at + BLOCK / 2]);
            }
        }
    }
}

/// `M[xi] = V[xi] U[xi]` for the chunk's `tiles` tiles, by `K`'s tile kernel: for each point,
/// each group of `MR` tiles passes over every panel of `U[xi]` while its rows of `V` stay in
/// L1.
///
/// # Panics
/// Unless `v` holds `POINTS` planes of `per_chunk` rows of `STEP >= cin` floats, and `m` as
/// many rows of `m_stride >= cout`.
#[inline(always)]
fn products<K: Kernel, const STEP: usize>(
    isa: K,
    wc: &WinogradConv<K>,
    tiling: Tiling,
    tiles: usize,
    v: &[f32],
    m: &mut [f32],
    row_scales: &[f32],
) {
    const { assert!(K::MR <= MAX_MR) };
    // Integer words: the weights' scales per point and channel, and each tile's row scale.
    let int = K::VALUES_PER_WORD > 1;
    let cin = wc.cin / K::VALUES_PER_WORD;
    assert!(
        v.len() >= POINTS * tiling.per_chunk * STEP
            && m.len() >= POINTS * tiling.per_chunk * tiling.m_stride
            && STEP >= cin
            && tiling.m_stride >= wc.cout
            && tiling.per_chunk.is_multiple_of(K::MR)
            && tiles <= tiling.per_chunk
            && (!int || (wc.scale.len() == POINTS * wc.cout && row_scales.len() == tiles)),
        "Winograd scratch layout"
    );
    let nr = K::NR;
    let panels = wc.cout / nr;
    let runs = [(0, cin)];
    let images = [0usize; MAX_MR];
    let m_ptr = m.as_mut_ptr();
    for xi in 0..POINTS {
        let a_plane = xi * tiling.per_chunk * STEP;
        let m_plane = xi * tiling.per_chunk * tiling.m_stride;
        for r0 in (0..tiles).step_by(K::MR) {
            let rows = K::MR.min(tiles - r0);
            let a = v[a_plane + r0 * STEP..].as_ptr();
            for p in 0..panels {
                let mut outs = [std::ptr::null_mut(); MAX_MR];
                for (r, o) in outs.iter_mut().enumerate().take(rows) {
                    // SAFETY: row `r0 + r < per_chunk` of plane `xi`, panel `p`'s `NR`
                    // floats: inside `m` (checked above).
                    *o = unsafe { m_ptr.add(m_plane + (r0 + r) * tiling.m_stride + p * nr) };
                }
                let ep = Epilogue {
                    first: true,
                    last: false,
                    relu: false,
                    accumulate: false,
                    bias: &wc.bias[p * nr..][..nr],
                    scale: if int {
                        &wc.scale[xi * wc.cout + p * nr..][..nr]
                    } else {
                        &[]
                    },
                    row_scale: if int { &row_scales[r0..r0 + rows] } else { &[] },
                    image_bias: std::ptr::null(),
                    pool: std::ptr::null_mut(),
                    pool_stride: 0,
                    max: std::ptr::null_mut(),
                    row_img: &images[..rows],
                };
                let b = wc.weights[(xi * panels + p) * cin * nr..][..cin * nr].as_ptr();
                // SAFETY: all `MR` rows of the group lie in `v` (the plane has `per_chunk`
                // rows, a multiple of `MR`), each `cin <= STEP` long; `b` is panel `p` of
                // `U[xi]`, `cin` x `NR` floats; the stored rows' outputs are disjoint `NR`
                // floats of `m`, which this worker alone holds; nothing is pooled.
                unsafe { isa.tile::<STEP, false>(a, 0, &runs, b, &outs, &ep) };
            }
        }
    }
}

/// `Y = act(A^T M A + bias)` of the chunk's tiles into their output pixels inside the map.
#[inline(always)]
fn transform_output<K: Kernel>(
    avx2: Avx2Fma,
    wc: &WinogradConv<K>,
    tiling: Tiling,
    t0: usize,
    tiles: usize,
    m: &[f32],
    out: Output,
) {
    let plane = tiling.per_chunk * tiling.m_stride;
    assert!(
        wc.cout <= tiling.m_stride && tiles <= tiling.per_chunk && m.len() >= POINTS * plane,
        "Winograd output scratch"
    );
    for t in 0..tiles {
        let (n, y, x) = tile_origin(tiling, t0 + t);
        let (ys, xs) = ((out.h - y).min(2), (out.w - x).min(2));
        let m_tile = m[t * tiling.m_stride..].as_ptr();
        let at = out.layout.offset(n, y, x);
        let pixels = [
            Some(at),
            (xs > 1).then(|| at + out.layout.cs()),
            (ys > 1).then(|| at + out.layout.row()),
            (ys > 1 && xs > 1).then(|| at + out.layout.row() + out.layout.cs()),
        ]
        .map(|p| p.map_or(std::ptr::null_mut(), |p| out.data.get().wrapping_add(p)));
        // SAFETY: `m_tile + xi * plane` is row `t < per_chunk` of plane `xi`, `cout <=
        // m_stride` floats inside `m` (checked above); the non-null pixels lie inside image
        // `n`'s map (`ys`, `xs`), each `cout` floats of `out`, and belong to tile `t0 + t`,
        // which only this worker computes.
        unsafe { output_tile(avx2, m_tile, plane, wc.cout, &wc.bias, pixels, out.relu) };
    }
}

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::{
    __m256, _mm256_add_ps, _mm256_loadu_ps, _mm256_max_ps, _mm256_setzero_ps, _mm256_storeu_ps,
    _mm256_sub_ps,
};

/// One tile's `B^T d B` for each group of 8 channels: `d[k]` is its input pixel `k` (row-major
/// 4 x 4), and point `xi`'s values go to `v + xi * plane`.
///
/// # Safety
/// `cin` must be a multiple of 8, each `d[k]` address `cin` floats, and `v + xi * plane`
/// `cin` writable floats for each point `xi`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn input_tile(_: Avx2Fma, d: &[*const f32; POINTS], cin: usize, v: *mut f32, plane: usize) {
    // SAFETY: as the contract says.
    unsafe {
        for c in (0..cin).step_by(LANES) {
            let d: [__m256; POINTS] = std::array::from_fn(|k| _mm256_loadu_ps(d[k].add(c)));
            // B^T d: rows 0 - 2, 1 + 2, 2 - 1, 1 - 3, column by column.
            let mut r = [_mm256_setzero_ps(); POINTS];
            for j in 0..4 {
                let [d0, d1, d2, d3] = [d[j], d[4 + j], d[8 + j], d[12 + j]];
                r[j] = _mm256_sub_ps(d0, d2);
                r[4 + j] = _mm256_add_ps(d1, d2);
                r[8 + j] = _mm256_sub_ps(d2, d1);
                r[12 + j] = _mm256_sub_ps(d1, d3);
            }
            // (B^T d) B: the same on the columns, row by row.
            for i in 0..4 {
                let [r0, r1, r2, r3] = [r[4 * i], r[4 * i + 1], r[4 * i + 2], r[4 * i + 3]];
                let vals = [
                    _mm256_sub_ps(r0, r2),
                    _mm256_add_ps(r1, r2),
                    _mm256_sub_ps(r2, r1),
                    _mm256_sub_ps(r1, r3),
                ];
                for (j, val) in vals.into_iter().enumerate() {
                    _mm256_storeu_ps(v.add((4 * i + j) * plane + c), val);
                }
            }
        }
    }
}

/// One tile's `act(A^T M A + bias)` for each group of 8 channels: point `xi`'s sums at
/// `m + xi * plane`, the 2 x 2 outputs (row-major) to `out`, of which null ones are outside
/// the map and skipped.
///
/// # Safety
/// `cout` must be a multiple of 8, `bias` hold `cout` floats, `m + xi * plane` address `cout`
/// floats for each point `xi`, and each non-null `out[k]` `cout` writable floats.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn output_tile(
    _: Avx2Fma,
    m: *const f32,
    plane: usize,
    cout: usize,
    bias: &[f32],
    out: [*mut f32; 4],
    relu: bool,
) {
    assert!(bias.len() >= cout, "one bias per channel");
    // SAFETY: as the contract says.
    unsafe {
        let zero = _mm256_setzero_ps();
        for c in (0..cout).step_by(LANES) {
            let mv: [__m256; POINTS] =
                std::array::from_fn(|k| _mm256_loadu_ps(m.add(k * plane + c)));
            // A^T M: rows 0 + 1 + 2 and 1 - 2 - 3, column by column.
            let top: [__m256; 4] =
                std::array::from_fn(|j| _mm256_add_ps(_mm256_add_ps(mv[j], mv[4 + j]), mv[8 + j]));
            let bottom: [__m256; 4] = std::array::from_fn(|j| {
                _mm256_sub_ps(_mm256_sub_ps(mv[4 + j], mv[8 + j]), mv[12 + j])
            });
            let b = _mm256_loadu_ps(bias.as_ptr().add(c));
            // (A^T M) A: the same on the columns.
            let y = [
                _mm256_add_ps(_mm256_add_ps(top[0], top[1]), top[2]),
                _mm256_sub_ps(_mm256_sub_ps(top[1], top[2]), top[3]),
                _mm256_add_ps(_mm256_add_ps(bottom[0], bottom[1]), bottom[2]),
                _mm256_sub_ps(_mm256_sub_ps(bottom[1], bottom[2]), bottom[3]),
            ];
            for (&o, y) in out.iter().zip(y) {
                if o.is_null() {
                    continue;
                }
                let mut y = _mm256_add_ps(y, b);
                if relu {
                    // `max_ps` returns its second operand when either is NaN: as the direct
                    // kernels, NaN gives 0.
                    y = _mm256_max_ps(y, zero);
                }
                _mm256_storeu_ps(o.add(c), y);
            }
        }
    }
}

/// Off x86-64 no token exists: unreachable.
#[cfg(not(target_arch = "x86_64"))]
unsafe fn input_tile(isa: Avx2Fma, _: &[*const f32; POINTS], _: usize, _: *mut f32, _: usize) {
    isa.never()
}

/// Off x86-64 no token exists: unreachable.
#[cfg(not(target_arch = "x86_64"))]
unsafe fn output_tile(
    isa: Avx2Fma,
    _: *const f32,
    _: usize,
    _: usize,
    _: &[f32],
    _: [*mut f32; 4],
    _: bool,
) {
    isa.never()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::native::act::Pool;
    use crate::native::isa::each_kernel;
    use crate::native::kernel::tests::{naive, values};

    /// F(2x2, 3x3) by kernel `isa` against the direct convolution summed in `f64`, without
    /// and with ReLU, from an input with a border of `pads[0]` into an output with one of
    /// `pads[1]`. Returns the largest error relative to the sum of the products' magnitudes.
    fn check<K: Kernel>(
        isa: K,
        avx2: Avx2Fma,
        n: usize,
        [cin, cout]: [usize; 2],
        [h, w]: [usize; 2],
        [pad_in, pad_out]: [usize; 2],
    ) -> f64 {
        let x = values(n * cin * h * w, 21);
        let wt = values(cout * cin * 9, 22);
        let bias = values(cout, 23);
        let wc = WinogradConv::<K>::new([cin, cout], &wt, &bias).expect("a shape it takes");
        let (want, ..) = naive(&x, [n, cin, h, w], &wt, &bias, cout, 3, 1, 1);
        // The sum of the products' magnitudes, the scale of the rounding error.
        let abs = |v: &[f32]| v.iter().map(|x| x.abs()).collect::<Vec<_>>();
        let (scale, ..) = naive(
            &abs(&x),
            [n, cin, h, w],
            &abs(&wt),
            &abs(&bias),
            cout,
            3,
            1,
            1,
        );
        let pool = Pool::default();
        let mut input = pool.take(n, h, w, cin, pad_in);
        input.fill_from_nchw(&x);
        let mut worst = 0f64;
        for relu in [false, true] {
            let mut out = pool.take(n, h, w, cout, pad_out);
            // Interior pixels left unwritten would fail as NaN.
            let layout = out.layout();
            for b in 0..n {
                for y in 0..h {
                    for xx in 0..w {
                        out.data[layout.offset(b, y, xx)..][..cout].fill(f32::NAN);
                    }
                }
            }
            conv(isa, avx2, &wc, &input, &mut out, relu);
            for b in 0..n {
                for o in 0..cout {
                    for y in 0..h {
                        for xx in 0..w {
                            let i = ((b * cout + o) * h + y) * w + xx;
                            let v = if relu { want[i].max(0.0) } else { want[i] };
                            let got = out.data[layout.offset(b, y, xx) + o];
                            let err = f64::from((got - v).abs()) / f64::from(scale[i]);
                            assert!(
                                err <= 1e-6,
                                "{}: {cin}->{cout} {h}x{w} at ({b},{o},{y},{xx}): {got} vs {v}",
                                K::ISA
                            );
                            worst = worst.max(err);
                        }
                    }
                }
            }
            // The border the next convolution relies on stays zero.
            let row = out.row_stride();
            assert!(out.data[..row * pad_out].iter().all(|&v| v == 0.0));
            pool.give(out);
        }
        worst
    }

    /// [`conv_pairs`] against the direct convolution summed in `f64`, from an input of
    /// ReLU outputs (at least 0, as the int8 network's 3x3 inputs are), with ReLU. Returns the
    /// largest error relative to the sum of the products' magnitudes.
    fn check_pairs(
        isa: Avx2Pairs,
        n: usize,
        [cin, cout]: [usize; 2],
        [h, w]: [usize; 2],
        [pad_in, pad_out]: [usize; 2],
    ) -> f64 {
        let x: Vec<f32> = values(n * cin * h * w, 31)
            .iter()
            .map(|v| v.max(0.0))
            .collect();
        let wt = values(cout * cin * 9, 32);
        let bias = values(cout, 33);
        let wc = WinogradConv::new_pairs([cin, cout], &wt, &bias).expect("a shape it takes");
        let (want, ..) = naive(&x, [n, cin, h, w], &wt, &bias, cout, 3, 1, 1);
        let abs = |v: &[f32]| v.iter().map(|x| x.abs()).collect::<Vec<_>>();
        let (scale, ..) = naive(&x, [n, cin, h, w], &abs(&wt), &abs(&bias), cout, 3, 1, 1);
        let max: Vec<f32> = x
            .chunks_exact(cin * h * w)
            .map(|image| image.iter().fold(0f32, |m, &v| m.max(v)))
            .collect();
        let pool = Pool::default();
        let mut input = pool.take(n, h, w, cin, pad_in);
        input.fill_from_nchw(&x);
        let mut out = pool.take(n, h, w, cout, pad_out);
        let layout = out.layout();
        for b in 0..n {
            for y in 0..h {
                for xx in 0..w {
                    out.data[layout.offset(b, y, xx)..][..cout].fill(f32::NAN);
                }
            }
        }
        conv_pairs(isa, &wc, &input, &max, &mut out, true);
        let mut worst = 0f64;
        for b in 0..n {
            for o in 0..cout {
                for y in 0..h {
                    for xx in 0..w {
                        let i = ((b * cout + o) * h + y) * w + xx;
                        let v = want[i].max(0.0);
                        let got = out.data[layout.offset(b, y, xx) + o];
                        let err = f64::from((got - v).abs()) / f64::from(scale[i]);
                        assert!(
                            err <= 1e-3,
                            "{cin}->{cout} {h}x{w} at ({b},{o},{y},{xx}): {got} vs {v}"
                        );
                        worst = worst.max(err);
                    }
                }
            }
        }
        let row = out.row_stride();
        assert!(out.data[..row * pad_out].iter().all(|&v| v == 0.0));
        worst
    }

    #[test]
    fn winograd_pairs_match_naive() {
        let Some(avx2) = Avx2Fma::detect() else {
            crate::native::isa::testing::skip(crate::native::Isa::Avx2);
            return;
        };
        let isa = Avx2Pairs::from(avx2);
        let mut worst = 0f64;
        for (n, channels, side, pads) in [
            (2, [64, 64], [7, 7], [1, 0]),
            (1, [128, 64], [6, 5], [2, 1]),
            (3, [64, 128], [5, 9], [1, 1]),
            (2, [256, 64], [14, 14], [1, 0]),
            (1, [512, 64], [7, 7], [1, 0]),
            (3, [64, 64], [28, 28], [1, 0]),
        ] {
            worst = worst.max(check_pairs(isa, n, channels, side, pads));
        }
        eprintln!("16-bit codes: largest error / sum of |products| {worst:.2e}");
    }

    #[test]
    fn an_empty_batch_writes_nothing() {
        let Some(avx2) = Avx2Fma::detect() else {
            crate::native::isa::testing::skip(crate::native::Isa::Avx2);
            return;
        };
        let wc = WinogradConv::new([64, 64], &values(64 * 64 * 9, 1), &values(64, 2)).unwrap();
        let pool = Pool::default();
        let input = pool.take(0, 7, 7, 64, 1);
        let mut out = pool.take(0, 7, 7, 64, 0);
        conv(avx2, avx2, &wc, &input, &mut out, true);
        assert!(out.data.is_empty());
    }

    fn isa_of<K: Kernel>(_: K) -> crate::native::Isa {
        K::ISA
    }

    #[test]
    fn winograd_matches_naive() {
        let Some(avx2) = Avx2Fma::detect() else {
            crate::native::isa::testing::skip(crate::native::Isa::Avx2);
            return;
        };
        each_kernel!(|isa| {
            let mut worst = 0f64;
            for (n, channels, side, pads) in [
                // Odd sides: the last tiles reach past the border and keep one row or column.
                (2, [64, 64], [7, 7], [1, 0]),
                (1, [128, 64], [6, 5], [2, 1]),
                (3, [64, 128], [5, 9], [1, 1]),
                // A 256- and 512-channel input: rows of V padded by a cache line.
                (2, [256, 64], [14, 14], [1, 0]),
                (1, [512, 64], [7, 7], [1, 0]),
                // 588 tiles: many chunks, the last one short.
                (3, [64, 64], [28, 28], [1, 0]),
            ] {
                worst = worst.max(check(isa, avx2, n, channels, side, pads));
            }
            eprintln!(
                "{}: largest error / sum of |products| {worst:.2e}",
                isa_of(isa)
            );
        });
    }
}
