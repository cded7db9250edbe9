//! int8 inference for the bottleneck stages: weights quantised per output channel, activations
//! to 8 bits with a scale per image, products summed exactly in 32-bit integers.
//!
//! The int8 kernels reuse the convolution driver ([`super::kernel`]) unchanged: it sees a
//! convolution whose "channels" are 32-bit words, each holding four input channels as bytes
//! (activations `u8` in 0..=255, weights `i8`), and the micro-kernel multiplies and adds them
//! four at a time: with `vpmaddubsw` and `vpmaddwd` on AVX2 (32 multiply-adds per pair of
//! instructions; see [`super::avx2`]), with one `vpdpbusd` on AVX-VNNI (32) and AVX512-VNNI
//! (64; see [`super::avx512`]). Each sums its integer products exactly. Weights take 8 bits
//! (-127..=127). `vpdpbusd` adds in 32 bits; `vpmaddubsw` adds two products in 16, so on
//! AVX2 a channel whose weights hold a large pair of the same sign takes a coarser scale, as
//! [`channel_codes`] says ([`Int8::pair_limit`]). The words live in
//! the same 64-byte aligned `f32` buffers as the float activations; only copies ever touch
//! them as floats, which keep their bits. Activations take a quarter of their float bytes,
//! weights a quarter too.
//!
//! What stays in `f32`: the stem (3 input channels, and the network's most sensitive layer),
//! the max-pool, every convolution's output, the residual stream and the pooled taps. A
//! convolution's input is quantised in one pass just before it runs (the block input once for
//! both the first 1x1 and the shortcut): a value `x` becomes `round(x / s)` in 0..=255, with a
//! scale `s` per image, which loses nothing to the sign because every quantised tensor is the
//! output of a ReLU (the first 1x1's ReLU is the quantising of its output, see below).
//!
//! The scales. The 3x3's and the last 1x1's inputs take their image's largest value / 255.
//! The block input, the residual stream, is heavy-tailed: its scale is its image's clip (about
//! the 99.9th percentile, from a sample) / 255, and the values above the clip come back as
//! [`Outlier`]s whose excess [`add_outliers`] adds, in `f32`, to the first 1x1's and the
//! shortcut's outputs. The first 1x1 then runs without its ReLU so that they land before it,
//! and quantising its output (negatives to code 0) is the ReLU.
//!
//! Why per image and not calibrated: scales calibrated on 32 dev photos (the 99.99th
//! percentile of each tensor, or its maximum) clipped the tensors of photos brighter than any
//! of the 32, and block 4's pooled output fell to cosine 0.988-0.991 of fp32 on some dev
//! photos. Why the clip and the outliers: with the maximum as the block input's scale, block 4
//! fell to 0.987 on a texture photo; with them every block stays above 0.995 on both dev sets
//! with the VNNI kernels (see `tests/integration/int8.rs`). The scales depend on the image
//! alone, never on the rest of the batch.

use rayon::prelude::*;

use super::act::Act;
use super::avx2::QUANT_GROUP;
use super::isa::{Avx2Fma, Avx2Int8, Int8, Int8Kernel};
use super::kernel::PackedConv;
use crate::arch::Bottleneck;
use crate::weights::FoldedConv;

/// A bottleneck packed for the int8 kernel `I`, with what puts its block input's outliers
/// back: the first 1x1's and the shortcut's weights as the kernel multiplies them
/// (dequantised), input channel by input channel.
pub(crate) struct Int8Bottleneck<I> {
    pub conv1: PackedConv<I>,
    pub conv2: PackedConv<I>,
    pub conv3: PackedConv<I>,
    /// `conv1`'s weights, `[cin][cout]`.
    pub conv1_by_input: Vec<f32>,
    /// The shortcut's convolution, where it has one, and its weights `[cin][cout]`.
    pub shortcut: Option<(PackedConv<I>, Vec<f32>)>,
}

/// Packs a folded bottleneck's convolutions for the int8 kernel `kernel`.
///
/// # Errors
/// When a convolution cannot run in int8: input channels not a multiple of 4, an output
/// width the kernel's panel does not divide, a reduction longer than [`MAX_WORDS`], a weight
/// that is not finite (no scale holds it), or a first convolution or shortcut that is not an
/// unpadded 1x1 (the outliers of the block input are put back for those only).
pub(crate) fn pack_bottleneck<I: Int8>(
    kernel: I,
    b: &Bottleneck<FoldedConv>,
) -> Result<Int8Bottleneck<I>, &'static str> {
    let p = |c: &FoldedConv| {
        if !c.weight.iter().all(|v| v.is_finite()) {
            return Err("a convolution's weights hold a value that is not finite");
        }
        pack(kernel, c).ok_or(
            "a convolution cannot run in int8 (input channels not a multiple of 4, an output \
             width not a multiple of the kernel's panel, 16 or 32, or more than 64,000 inputs \
             per output)",
        )
    };
    let by_input = |c: &FoldedConv| {
        if c.spec.kernel == 1 && c.spec.padding == 0 {
            Ok(by_input(kernel, c))
        } else {
            Err("int8 needs each bottleneck's first convolution and shortcut to be unpadded 1x1s")
        }
    };
    Ok(Int8Bottleneck {
        conv1: p(&b.conv1)?,
        conv2: p(&b.conv2)?,
        conv3: p(&b.conv3)?,
        conv1_by_input: by_input(&b.conv1)?,
        shortcut: match &b.downsample {
            Some(d) => Some((p(d)?, by_input(d)?)),
            None => None,
        },
    })
}

/// The largest activation code (unsigned 8 bits).
const ACT_MAX: f32 = 255.0;
/// Names the quantisation scheme where its features are cached: a change to the codes (their
/// widths, rounding, scales or clips) must change it. The weights' width depends on the
/// kernel, so the name does too.
pub(crate) fn scheme(kernel: Int8Kernel) -> &'static str {
    match kernel {
        Int8Kernel::Avx2 => "int8-v3-w8p",
        Int8Kernel::AvxVnni | Int8Kernel::Avx512Vnni => "int8-v3-w8",
    }
}
/// Runs of consecutive values sampled from each image to choose the clip of its block input,
/// and their length: 4,096 values.
const CLIP_RUNS: usize = 64;
const CLIP_RUN: usize = 64;
/// The share of the sampled values above the clip: the clip is their 99.9th percentile.
const CLIP_TAIL: f64 = 0.001;
/// How many of the largest sampled values [`sampled_clip`] keeps: enough for the whole tail.
const CLIP_TOP: usize = 5;
const _: () = assert!((CLIP_RUNS * CLIP_RUN) as f64 * CLIP_TAIL + 0.5 <= CLIP_TOP as f64);
/// Input channels per 32-bit word: four bytes.
pub(crate) const PER_WORD: usize = 4;
/// The longest reduction (words per output value) whose 32-bit integer sums cannot overflow:
/// each word adds at most 4 x 255 x 127 = 129,540 in magnitude, and `i32::MAX` / 129,540 is
/// 16,577. ResNet-50's longest is 1,152 (a 3x3 over 512 channels).
pub(crate) const MAX_WORDS: usize = 16_000;

/// Quantises a folded convolution for the int8 kernel `kernel`: each output channel's weights
/// to codes as [`channel_codes`] chooses them, four input channels to a word, with the
/// channels' scales as the panel's. `None` when the input channels are not a multiple of 4
/// (the stem's 3), when the reduction is longer than [`MAX_WORDS`], or as
/// [`PackedConv::new`].
pub(crate) fn pack<I: Int8>(kernel: I, conv: &FoldedConv) -> Option<PackedConv<I>> {
    let s = &conv.spec;
    let [cin, cout] = s.channels;
    let k = s.kernel;
    let per_out = cin * k * k;
    if !cin.is_multiple_of(PER_WORD) || per_out / PER_WORD > MAX_WORDS {
        return None;
    }
    let mut scales = Vec::with_capacity(cout);
    let mut words = vec![0f32; cout * per_out / PER_WORD];
    for (w, out) in conv
        .weight
        .chunks_exact(per_out)
        .zip(words.chunks_exact_mut(per_out / PER_WORD))
    {
        let (s_o, codes) = channel_codes(kernel, w, k * k);
        scales.push(s_o);
        // OIHW with the input channels in fours: word (o, c / 4, kh, kw) holds channels c..c + 4
        // of tap (kh, kw), channel c in its lowest byte.
        for cq in 0..cin / PER_WORD {
            for tap in 0..k * k {
                let bytes = std::array::from_fn(|i| codes[(PER_WORD * cq + i) * k * k + tap] as u8);
                out[cq * k * k + tap] = word(bytes);
            }
        }
    }
    PackedConv::new(
        [cin / PER_WORD, cout],
        k,
        s.stride,
        s.padding,
        &words,
        &conv.bias,
    )
    .map(|pc| pc.with_scale(&scales))
}

/// The largest weight code: weights are symmetric `i8`, -127..=127.
const WEIGHT_MAX: i32 = 127;

/// One output channel's weights `w` (OIHW: input channel by input channel, `taps` taps each)
/// quantised for `kernel`: its scale `s_o = max |w| / m` and the codes `round(v / s_o)`,
/// clamped to -m..=m. `m` is [`WEIGHT_MAX`] unless the kernel's [`Int8::pair_limit`] binds:
/// then it is the largest `m` found (by bisection, at least `limit / 2`, where no pair can
/// exceed it) under which no two codes of the same sign that the kernel multiplies as a pair
/// add up to more than the limit in magnitude. Only channels with such a pair lose precision,
/// and only as much as it takes (7 bits at worst). A channel of zeros has scale 1 (and so
/// would one whose largest magnitude is not finite; [`pack_bottleneck`] refuses those).
///
/// Why not 7-bit weights everywhere on AVX2, as before: they left block 5 at cosine 0.99474
/// of fp32 on a texture photo; with 8 bits where the pairs allow, the lowest is 0.99642.
fn channel_codes<I: Int8>(kernel: I, w: &[f32], taps: usize) -> (f32, Vec<i8>) {
    let max = w.iter().fold(0f32, |m, v| m.max(v.abs()));
    if max <= 0.0 || !max.is_finite() {
        return (1.0, vec![0; w.len()]);
    }
    let codes = |m: i32| {
        let s = max / m as f32;
        let c = w
            .iter()
            .map(|v| (v / s).round().clamp(-m as f32, m as f32) as i8)
            .collect();
        (s, c)
    };
    let Some(limit) = kernel.pair_limit() else {
        return codes(WEIGHT_MAX);
    };
    let fits = |c: &[i8]| {
        c.chunks_exact(2 * taps).all(|two| {
            let (a, b) = two.split_at(taps);
            a.iter().zip(b).all(|(&a, &b)| {
                let (a, b) = (i32::from(a), i32::from(b));
                a * b <= 0 || a.abs() + b.abs() <= limit
            })
        })
    };
    let top = codes(WEIGHT_MAX);
    if fits(&top.1) {
        return top;
    }
    // `lo` always fits: its codes are at most limit / 2 in magnitude. `hi` does not.
    let (mut lo, mut hi) = ((limit / 2).min(WEIGHT_MAX), WEIGHT_MAX);
    while hi - lo > 1 {
        let mid = (lo + hi) / 2;
        if fits(&codes(mid).1) {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    codes(lo)
}

/// A 1x1 convolution's weights as the int8 kernel multiplies them, `code * s_o`, laid out
/// `[cin][cout]`: what one input value's excess over its clip adds to each output channel.
fn by_input<I: Int8>(kernel: I, conv: &FoldedConv) -> Vec<f32> {
    let [cin, cout] = conv.spec.channels;
    let mut out = vec![0f32; cin * cout];
    for (o, w) in conv.weight.chunks_exact(cin).enumerate() {
        let (s_o, codes) = channel_codes(kernel, w, 1);
        for (c, &code) in codes.iter().enumerate() {
            out[c * cout + o] = f32::from(code) * s_o;
        }
    }
    out
}

/// Four bytes in one 32-bit word, the first in the lowest byte (the first in memory), as the
/// kernel's `vpmaddubsw` reads them.
fn word(bytes: [u8; PER_WORD]) -> f32 {
    f32::from_bits(u32::from_le_bytes(bytes))
}

/// The bytes a word holds.
#[cfg(test)]
fn unword(w: f32) -> [u8; PER_WORD] {
    w.to_bits().to_le_bytes()
}

/// Writes `src` (`c` channels, a multiple of 4) quantised into the interior of `dst`, which
/// holds `c / 4` words of four `u8` codes per pixel (its border stays zero, the code of 0.0),
/// and each image's scale, its largest value / 255 (1.0 for an image of zeros), into
/// `dst.image_scale`. `max` holds each image's largest value (at least 0, NaN never counting)
/// where the convolution that wrote `src` found it ([`super::kernel::conv_stats`]); without it,
/// a first pass over `src` finds it. Negative values become code 0: quantising is also the
/// ReLU.
///
/// # Panics
/// If the shapes differ, or `max` does not hold one value per image.
pub(crate) fn quantize(isa: Avx2Fma, src: &Act, dst: &mut Act, max: Option<&[f32]>) {
    check_shapes(src, dst);
    assert!(
        max.is_none_or(|m| m.len() == src.n),
        "one maximum per image"
    );
    let scales: Vec<f32> = match max {
        Some(max) => max.iter().map(|&m| scale(m)).collect(),
        None => (0..src.n)
            .into_par_iter()
            .map(|n| scale(largest(isa, src, n)))
            .collect(),
    };
    let outliers = write_codes(isa, src, dst, &scales, false);
    debug_assert!(outliers.is_empty());
    dst.image_scale = scales;
}

/// One value of a block input above its image's clip. Its code is the largest, 255, and
/// `excess` is what that code leaves out: the value is `255 x scale + excess`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Outlier {
    pub n: u32,
    pub y: u32,
    pub x: u32,
    pub c: u32,
    pub excess: f32,
}

/// [`quantize`] for a block input, under `scales` from [`block_input_scales`], which leave
/// each image's largest values out: its clip is the 99.9th percentile of 4,096 of its values
/// (see [`sampled_clip`]; the image's largest value where the sample holds no positive
/// value). Codes are `round(v / s)` with `s = clip / 255`, at most 255, as [`quantize`] writes
/// them; every value above `255 x s` comes back as an [`Outlier`] with its excess, which
/// [`add_outliers`] puts back exactly after the convolutions that read the codes.
///
/// Why: the block inputs (the residual stream) are heavy-tailed. With each image's maximum as
/// its clip, a few large values set a step too coarse for the rest, and block 4's pooled
/// output fell to cosine 0.987 of fp32 on the texture photos. Clipping them instead (at a
/// percentile, with nothing put back) passed or failed by where the percentile happened to
/// fall on the photos. With the outliers put back no value is clipped: the clip sets only the
/// step for the rest and how many values come back (about 0.1%).
///
/// # Panics
/// If the shapes differ as [`quantize`] says, or `scales` does not hold one value per image.
pub(crate) fn quantize_block_input(
    isa: Avx2Fma,
    src: &Act,
    dst: &mut Act,
    scales: Vec<f32>,
) -> Vec<Outlier> {
    check_shapes(src, dst);
    assert_eq!(scales.len(), src.n, "one scale per image");
    let outliers = write_codes(isa, src, dst, &scales, true);
    dst.image_scale = scales;
    outliers
}

/// The scales [`quantize_block_input`] takes: each image's clip / 255, where the clip is
/// positive; else its largest value / 255, from a pass over the image (rare: a sample with no
/// positive value).
pub(crate) fn block_input_scales(isa: Avx2Fma, src: &Act) -> Vec<f32> {
    (0..src.n)
        .into_par_iter()
        .map(|n| {
            let clip = sampled_clip(src, n);
            if clip > 0.0 && clip.is_finite() {
                clip / ACT_MAX
            } else {
                scale(largest(isa, src, n))
            }
        })
        .collect()
}

/// Adds the outliers' excess times `by_input` (a 1x1 convolution's weights, `[cin][cout]`,
/// stride `stride`, no padding) to `out`, the convolution's output from the codes: `out` then
/// holds the convolution of the codes' values plus the outliers' excess, as if they had not
/// been clipped. Outliers on pixels the stride skips add nothing. With `max`, each image's
/// largest value there grows to cover the changed outputs.
///
/// `outliers` must be in memory order, as [`quantize_block_input`] returns them.
///
/// # Panics
/// If an outlier lies outside `out` (after the stride), or `by_input` does not hold `cout`
/// weights for its channel, or `max` does not hold one value per image.
pub(crate) fn add_outliers(
    isa: Avx2Fma,
    out: &mut Act,
    outliers: &[Outlier],
    by_input: &[f32],
    stride: usize,
    max: Option<&mut [f32]>,
) {
    assert!(
        outliers.last().is_none_or(|o| (o.n as usize) < out.n),
        "outlier outside the output"
    );
    let layout = out.layout();
    let (h, w, cout) = (out.h, out.w, out.c);
    let per_image = layout.offset(1, 0, 0) - layout.offset(0, 0, 0);
    let add = |n: usize, image: &mut [f32], mut max: Option<&mut f32>| {
        // Outliers come in memory order, so image n's are one run.
        let first = outliers.partition_point(|o| (o.n as usize) < n);
        let last = outliers.partition_point(|o| (o.n as usize) <= n);
        for o in &outliers[first..last] {
            let (y, x, c) = (o.y as usize, o.x as usize, o.c as usize);
            if !(y.is_multiple_of(stride) && x.is_multiple_of(stride)) {
                continue;
            }
            let (y, x) = (y / stride, x / stride);
            assert!(y < h && x < w, "outlier outside the output");
            let at = layout.offset(n, y, x) - layout.offset(n, 0, 0);
            let row = &mut image[at..][..cout];
            isa.axpy(o.excess, &by_input[c * cout..][..cout], row);
            if let Some(max) = max.as_deref_mut() {
                *max = isa.max(row, *max);
            }
        }
    };
    let base = layout.offset(0, 0, 0);
    let images = out.data[base..].par_chunks_mut(per_image).take(out.n);
    match max {
        Some(max) => {
            assert_eq!(max.len(), out.n, "one maximum per image");
            images
                .zip(max.par_iter_mut())
                .enumerate()
                .for_each(|(n, (image, m))| add(n, image, Some(m)));
        }
        None => images
            .enumerate()
            .for_each(|(n, image)| add(n, image, None)),
    }
}

fn check_shapes(src: &Act, dst: &Act) {
    assert!(
        src.c.is_multiple_of(PER_WORD)
            && dst.c * PER_WORD == src.c
            && (dst.n, dst.h, dst.w) == (src.n, src.h, src.w),
        "quantised activation shape"
    );
}

/// The scale of an image whose largest value is `max`: NaN never wins `max`, and an image of
/// zeros quantises exactly under any scale.
fn scale(max: f32) -> f32 {
    if max > 0.0 && max.is_finite() {
        max / ACT_MAX
    } else {
        1.0
    }
}

/// Image `n`'s largest value (at least 0, NaN never counting).
fn largest(isa: Avx2Fma, src: &Act, n: usize) -> f32 {
    let from = src.layout();
    let (h, w, c) = (src.h, src.w, src.c);
    let mut max = 0f32;
    for y in 0..h {
        let row = &src.data[from.offset(n, y, 0)..];
        if src.cs == c {
            // Channels without gaps: the row's pixels are one run.
            max = isa.max(&row[..w * c], max);
        } else {
            for x in 0..w {
                max = isa.max(&row[x * src.cs..][..c], max);
            }
        }
    }
    max
}

/// The 99.9th percentile of a sample of image `n`: [`CLIP_RUNS`] runs of [`CLIP_RUN`]
/// consecutive values (in (y, x, channel) order), at pixels spread evenly over the image,
/// each run starting at another window of channels (the windows taken in steps of 7, so that
/// every one comes up). Runs, not single values, because each cache line then serves 16
/// sampled values: a strided sample of single values cost 10 ms of a batch-8 pass in cache
/// misses. The percentile is the `k`-th largest sampled value (`k` = 0.1% of the sample, at
/// least 1), kept in one pass: sorting the sample cost more than reading it. Every sampled
/// value is one of the image's, so this is at most its largest; NaN never counts, and the
/// result can be 0 or less (minus infinity where nothing was sampled), which the caller does
/// not take.
fn sampled_clip(src: &Act, n: usize) -> f32 {
    let (w, c) = (src.w, src.c);
    let pixels = src.h * w;
    let layout = src.layout();
    let windows = (c / CLIP_RUN).max(1);
    let runs = CLIP_RUNS.min(pixels);
    // The `CLIP_TOP` largest sampled values, largest first.
    let mut top = [f32::NEG_INFINITY; CLIP_TOP];
    let mut count = 0;
    for r in 0..runs {
        let mut p = r * pixels / runs;
        let mut ch = if c >= CLIP_RUN {
            (r * 7 % windows) * CLIP_RUN
        } else {
            0
        };
        let mut left = CLIP_RUN;
        while left > 0 && p < pixels && c > 0 {
            let k = left.min(c - ch);
            let run = &src.data[layout.offset(n, p / w, p % w) + ch..][..k];
            for &v in run {
                if v > top[CLIP_TOP - 1] {
                    let mut i = CLIP_TOP - 1;
                    while i > 0 && top[i - 1] < v {
                        top[i] = top[i - 1];
                        i -= 1;
                    }
                    top[i] = v;
                }
            }
            (count, left, ch, p) = (count + k, left - k, 0, p + 1);
        }
    }
    let above = ((count as f64 * CLIP_TAIL).round() as usize).max(1);
    top[above - 1]
}

/// Calls `f(i, v)` for each value `v` of `values` above `top`, at index `i`, looking only in
/// the [`QUANT_GROUP`]s that [`Avx2Fma::quantize_u8`] flagged (`groups`, which it then clears).
fn each_above(values: &[f32], top: f32, groups: &mut Vec<u32>, mut f: impl FnMut(usize, f32)) {
    for g in groups.drain(..) {
        let from = g as usize * QUANT_GROUP;
        let to = (from + QUANT_GROUP).min(values.len());
        for (i, &v) in values[from..to].iter().enumerate() {
            if v > top {
                f(from + i, v);
            }
        }
    }
}

/// Writes the codes of `src` under each image's scale into `dst`; with `outliers`, also
/// returns every value above 255 x its image's scale, in memory order.
fn write_codes(
    isa: Avx2Fma,
    src: &Act,
    dst: &mut Act,
    scales: &[f32],
    outliers: bool,
) -> Vec<Outlier> {
    let from = src.layout();
    let (h, w, c, pad, cs) = (src.h, src.w, src.c, dst.pad, dst.cs);
    let rows = h + 2 * pad;
    let row_len = dst.row_stride();
    dst.data
        .par_chunks_exact_mut(row_len)
        .enumerate()
        .flat_map_iter(|(i, line)| {
            let (n, py) = (i / rows, i % rows);
            let mut found = Vec::new();
            if py < pad || py >= h + pad {
                return found;
            }
            let y = py - pad;
            let inv = 1.0 / scales[n];
            let top = ACT_MAX * scales[n];
            let mut keep = |x: usize, ch: usize, v: f32| {
                found.push(Outlier {
                    n: n as u32,
                    y: y as u32,
                    x: x as u32,
                    c: ch as u32,
                    excess: v - top,
                });
            };
            let mut groups = Vec::new();
            if src.cs == c && cs * PER_WORD == c {
                // Channels without gaps on both sides: the row's pixels are one run.
                let px = &src.data[from.offset(n, y, 0)..][..w * c];
                let out = &mut line[pad * cs..][..w * cs];
                isa.quantize_u8(px, inv, out, outliers.then_some(&mut groups));
                each_above(px, top, &mut groups, |i, v| keep(i / c, i % c, v));
            } else {
                for x in 0..w {
                    let px = &src.data[from.offset(n, y, x)..][..c];
                    let out = &mut line[(x + pad) * cs..][..c / PER_WORD];
                    isa.quantize_u8(px, inv, out, outliers.then_some(&mut groups));
                    each_above(px, top, &mut groups, |ch, v| keep(x, ch, v));
                }
            }
            found
        })
        .collect()
}

const _: () = {
    use super::isa::{Avx512Vnni, Kernel};
    assert!(<Avx2Int8 as Kernel>::VALUES_PER_WORD == PER_WORD);
    assert!(<Avx512Vnni as Kernel>::VALUES_PER_WORD == PER_WORD);
};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::ConvSpec;
    use crate::native::act::Pool;
    use crate::native::isa::testing::skip;
    use crate::native::isa::{Avx2Fma, Isa, each_int8_kernel};
    use crate::native::kernel::conv_stats;

    /// Deterministic values in [-1, 1).
    fn values(len: usize, seed: u64) -> Vec<f32> {
        let mut rng = crate::rng::SplitMix64::new(seed);
        (0..len).map(|_| rng.signed_unit()).collect()
    }

    /// A `k` x `k` convolution, `cin` to `cout` channels, padded by `k / 2`.
    fn folded(
        [cin, cout]: [usize; 2],
        k: usize,
        stride: usize,
        weight: Vec<f32>,
        bias: Vec<f32>,
    ) -> FoldedConv {
        FoldedConv {
            spec: ConvSpec {
                conv: "test".into(),
                bn: "test".into(),
                channels: [cin, cout],
                kernel: k,
                stride,
                padding: k / 2,
            },
            weight,
            bias,
        }
    }

    #[test]
    fn quantised_codes_round_to_nearest_even_and_clamp() {
        let Some(isa) = Avx2Fma::detect() else {
            skip(Isa::Avx2);
            return;
        };
        // 68 values: two vectors of 32 and a tail of 4; ties, negatives, beyond 255, NaN.
        let mut values: Vec<f32> = values(68, 21).iter().map(|v| v * 300.0).collect();
        values[..8].copy_from_slice(&[0.5, 1.5, 2.5, -3.0, 254.5, 255.5, 3e9, f32::NAN]);
        values[40] = -3e9;
        values[66] = 7.5;
        let mut out = vec![0f32; 17];
        let mut high = Vec::new();
        isa.quantize_u8(&values, 1.0, &mut out, Some(&mut high));
        // Group 0 holds 254.5 (not above it), 255.5 and 3e9; the others, the tail of 4
        // among them, hold values up to 300 from `values`.
        let want_high: Vec<u32> = values
            .chunks(QUANT_GROUP)
            .enumerate()
            .filter(|(_, g)| g.iter().any(|&v| v > 254.5))
            .map(|(g, _)| g as u32)
            .collect();
        assert_eq!(high, want_high, "groups above 254.5");
        assert!(high.contains(&0));
        let got: Vec<u8> = out.iter().flat_map(|w| unword(*w)).collect();
        let want: Vec<u8> = values
            .iter()
            .map(|v| v.round_ties_even().clamp(0.0, 255.0) as u8)
            .collect();
        assert_eq!(got, want);
        assert_eq!(&got[..8], &[0, 2, 2, 0, 254, 255, 255, 0]);
        assert_eq!(isa.max(&values, 0.0), 3e9);
        assert_eq!(isa.max(&[f32::NAN; 9], 3.0), 3.0);
    }

    #[test]
    fn words_hold_four_bytes_in_memory_order() {
        for bytes in [[0, 0, 0, 0], [1, 2, 3, 4], [255, 0, 193, 63]] {
            assert_eq!(unword(word(bytes)), bytes);
            // The kernel runs on x86-64, little-endian: the first byte is the first in memory.
            #[cfg(target_endian = "little")]
            assert_eq!(word(bytes).to_ne_bytes(), bytes);
        }
    }

    /// Each channel's weight codes against the slow search ([`reference_codes`]) on every int8
    /// kernel: random channels, and planted pairs of large weights. On AVX2 the pair limit
    /// binds: the pair 1.0, 0.99 (of the same sign) fits only at `m` = 64 (64 + 63 = 127,
    /// where 65 gives 65 + 64 = 129).
    #[test]
    fn weight_codes_keep_every_pair_within_the_kernels_limit() {
        each_int8_kernel!(|kernel| weight_codes_match(kernel));
    }

    fn weight_codes_match<I: Int8>(kernel: I) {
        let mut channels: Vec<(Vec<f32>, usize)> = [(1, 1), (2, 9), (3, 1), (4, 9)]
            .into_iter()
            .map(|(seed, taps)| (values(256 * taps, seed), taps))
            .collect();
        let mut same = values(64, 5);
        (same[10], same[11]) = (1.0, 0.99);
        let mut opposite = values(64, 6);
        (opposite[10], opposite[11]) = (-1.0, 0.99);
        channels.extend([(same, 1), (opposite, 1)]);
        for (w, taps) in &channels {
            let (s, codes) = channel_codes(kernel, w, *taps);
            let (want_s, want) = reference_codes(kernel, w, *taps);
            assert_eq!(s, want_s, "{} taps", taps);
            let codes: Vec<i64> = codes.into_iter().map(i64::from).collect();
            assert_eq!(codes, want, "{} taps", taps);
        }
        let planted = channel_codes(kernel, &channels[4].0, 1).0;
        let m = if kernel.pair_limit().is_some() {
            64.0
        } else {
            127.0
        };
        assert_eq!(planted, 1.0 / m);
        assert_eq!(channel_codes(kernel, &[0.0; 8], 1), (1.0, vec![0; 8]));
    }

    /// A weight that is not finite has no scale: packing refuses the bottleneck, rather than
    /// quantising its channel to zeros.
    #[test]
    fn weights_that_are_not_finite_are_refused() {
        let conv = |cin: usize, cout: usize, k: usize, bad: Option<f32>| {
            let mut weight = values(cout * cin * k * k, 7);
            if let Some(v) = bad {
                weight[5] = v;
            }
            folded([cin, cout], k, 1, weight, vec![0.0; cout])
        };
        each_int8_kernel!(|kernel| {
            for bad in [None, Some(f32::NAN), Some(f32::INFINITY)] {
                let b = Bottleneck {
                    conv1: conv(128, 32, 1, None),
                    conv2: conv(32, 32, 3, bad),
                    conv3: conv(32, 128, 1, None),
                    downsample: None,
                };
                let packed = pack_bottleneck(kernel, &b);
                assert_eq!(packed.is_ok(), bad.is_none(), "{bad:?}");
            }
        });
    }

    /// The int8 convolution against the same arithmetic in plain integers: quantised input
    /// codes times quantised weight codes, summed exactly, then scaled; and within the
    /// quantisation error of the float convolution.
    #[test]
    fn int8_convolution_equals_integer_arithmetic() {
        each_int8_kernel!(|kernel| int8_convolution_matches(kernel));
    }

    /// Each image's outputs are the same, bit for bit, alone or batched. 1x1 convolutions from
    /// 2048 channels (512 words, more than the `f32` kernels' packed block) over unpadded maps:
    /// on 8 x 8 maps an image's last 8 pixels share a direct tile with the next image's first
    /// when batched, and are a short, packed tile alone; on 7 x 7 maps its last row is, alone,
    /// a half tile. Packed int8 reductions cut into 256-word blocks, whose partial sums were
    /// added in `f32`, made these differ in the last bits.
    /// Expected values: the same kernel on the batch.
    #[test]
    fn int8_outputs_do_not_depend_on_the_batch() {
        each_int8_kernel!(|kernel| outputs_alone_equal_batched(kernel));
    }

    fn outputs_alone_equal_batched<I: Int8>(kernel: I) {
        let isa = kernel.avx2();
        let (n, cin, cout) = (3, 2048, 32);
        let folded = folded([cin, cout], 1, 1, values(cout * cin, 22), values(cout, 23));
        let pc: PackedConv<I> = pack(kernel, &folded).unwrap();
        let pool = Pool::default();
        for side in [8, 7] {
            let per_image = cin * side * side;
            let x: Vec<f32> = values(n * per_image, 21)
                .into_iter()
                .map(|v| v.max(0.0) * 3.0)
                .collect();
            // Images `first..first + count`' outputs, image by image, pixel by pixel.
            let outputs = |first: usize, count: usize| -> Vec<Vec<f32>> {
                let mut input = pool.take(count, side, side, cin, 0);
                input.fill_from_nchw(&x[first * per_image..][..count * per_image]);
                let mut q = pool.take(count, side, side, cin / PER_WORD, 0);
                quantize(isa, &input, &mut q, None);
                let mut out = pool.take(count, side, side, cout, 0);
                conv_stats(kernel, &pc, &q, &mut out, false, true, false, false);
                let layout = out.layout();
                (0..count)
                    .map(|b| {
                        (0..side * side)
                            .flat_map(|p| {
                                let at = layout.offset(b, p / side, p % side);
                                out.data[at..][..cout].to_vec()
                            })
                            .collect()
                    })
                    .collect()
            };
            let batched = outputs(0, n);
            for (b, want) in batched.iter().enumerate() {
                let alone = &outputs(b, 1)[0];
                let same = alone
                    .iter()
                    .zip(want)
                    .all(|(a, w)| a.to_bits() == w.to_bits());
                assert!(
                    same,
                    "{side} x {side} image {b}: alone differs from batched"
                );
            }
        }
    }

    /// The AVX512-VNNI kernel's code, its intrinsics emulated: on CPUs without AVX512-VNNI
    /// (where the test above skips it), its indexing, row split and epilogue still run.
    #[test]
    fn emulated_avx512_vnni_tile_equals_integer_arithmetic() {
        let Some(isa) = Avx2Fma::detect() else {
            skip(Isa::Avx2);
            return;
        };
        int8_convolution_matches(crate::native::avx512::testing::EmulatedVnni(isa));
    }

    /// One output channel's weight codes as [`channel_codes`] should choose them, found the
    /// slow way: the largest code maximum `m` (tried from 127 down, one at a time) under which
    /// no same-sign pair of input channels `2j`, `2j + 1` at one tap exceeds the kernel's
    /// pair limit; the scale is `max |w| / m`.
    fn reference_codes<I: Int8>(kernel: I, w: &[f32], taps: usize) -> (f32, Vec<i64>) {
        let max = w.iter().fold(0f32, |m, v| m.max(v.abs()));
        for m in (1..=127).rev() {
            let s = max / m as f32;
            let m = m as f32;
            let codes: Vec<i64> = w
                .iter()
                .map(|v| (v / s).round().clamp(-m, m) as i64)
                .collect();
            let cin = w.len() / taps;
            let fits = kernel.pair_limit().is_none_or(|limit| {
                (0..cin).step_by(2).all(|c| {
                    (0..taps).all(|t| {
                        let (a, b) = (codes[c * taps + t], codes[(c + 1) * taps + t]);
                        a * b <= 0 || a.abs() + b.abs() <= i64::from(limit)
                    })
                })
            });
            if fits {
                return (s, codes);
            }
        }
        unreachable!("m = 1 always fits")
    }

    fn int8_convolution_matches<I: Int8>(kernel: I) {
        let isa = kernel.avx2();
        // A padded 3x3 on a 7-wide map (packed and split tiles; alone, on 512 channels, ending
        // in a half tile on the direct path), 1x1s whose packed reductions are one block (2048
        // channels) and two (5120), a strided 1x1, and a 3x3 over two panels of the AVX-512
        // kernel (four of the AVX2 one). Output widths are multiples of 32, every kernel's
        // panel.
        for (n, cin, cout, h, w, k, stride) in [
            (2, 64, 32, 7, 7, 3, 1),
            (1, 512, 32, 7, 7, 3, 1),
            (1, 2048, 32, 5, 6, 1, 1),
            (1, 5120, 32, 5, 6, 1, 1),
            (2, 256, 32, 14, 14, 1, 2),
            (1, 128, 64, 4, 28, 3, 1),
        ] {
            let pad = k / 2;
            let x: Vec<f32> = values(n * cin * h * w, 11)
                .into_iter()
                .map(|v| v.max(0.0) * 3.0)
                .collect();
            let weight = values(cout * cin * k * k, 12);
            let bias = values(cout, 13);
            let folded = folded([cin, cout], k, stride, weight.clone(), bias.clone());
            let pc: PackedConv<I> = pack(kernel, &folded).unwrap();
            let pool = Pool::default();
            let mut input = pool.take(n, h, w, cin, pad);
            input.fill_from_nchw(&x);
            let mut q = pool.take(n, h, w, cin / PER_WORD, pad);
            quantize(isa, &input, &mut q, None);
            // Each image's scale: its own maximum / 255.
            for (b, image) in x.chunks_exact(cin * h * w).enumerate() {
                let max = image.iter().fold(0f32, |m, v| m.max(*v));
                assert_eq!(q.image_scale[b], max / 255.0);
            }
            let (oh, ow) = (pc.out_side(h), pc.out_side(w));
            let mut out = pool.take(n, oh, ow, cout, 0);
            let stats = conv_stats(kernel, &pc, &q, &mut out, false, false, false, true);
            let layout = out.layout();
            // The maxima found in the epilogue quantise the output as a pass over it does.
            let max = stats.max.expect("asked for");
            let mut by_pass = pool.take(n, oh, ow, cout / PER_WORD, 1);
            let mut by_epilogue = pool.take(n, oh, ow, cout / PER_WORD, 1);
            quantize(isa, &out, &mut by_pass, None);
            quantize(isa, &out, &mut by_epilogue, Some(&max));
            assert_eq!(by_pass.image_scale, by_epilogue.image_scale);
            assert!(
                by_pass
                    .data
                    .iter()
                    .zip(by_epilogue.data.iter())
                    .all(|(a, b)| a.to_bits() == b.to_bits())
            );
            let xq = |b: usize, c: usize, y: isize, xx: isize| -> i64 {
                if y < 0 || xx < 0 || y >= h as isize || xx >= w as isize {
                    return 0;
                }
                let v = x[((b * cin + c) * h + y as usize) * w + xx as usize];
                (v * (1.0 / q.image_scale[b]))
                    .round_ties_even()
                    .clamp(0.0, 255.0) as i64
            };
            for o in 0..cout {
                let wo = &weight[o * cin * k * k..][..cin * k * k];
                let (s_o, codes) = reference_codes(kernel, wo, k * k);
                for b in 0..n {
                    for y in 0..oh {
                        for xx in 0..ow {
                            let (mut int, mut float) = (0i64, 0f64);
                            for c in 0..cin {
                                for ky in 0..k {
                                    for kx in 0..k {
                                        let iy = (y * stride + ky) as isize - pad as isize;
                                        let ix = (xx * stride + kx) as isize - pad as isize;
                                        let wv = wo[(c * k + ky) * k + kx];
                                        let wq = codes[(c * k + ky) * k + kx];
                                        int += xq(b, c, iy, ix) * wq;
                                        if iy >= 0 && ix >= 0 && iy < h as isize && ix < w as isize
                                        {
                                            let v = x[((b * cin + c) * h + iy as usize) * w
                                                + ix as usize];
                                            float += f64::from(v) * f64::from(wv);
                                        }
                                    }
                                }
                            }
                            let s_b = q.image_scale[b];
                            let want = int as f64 * f64::from(s_b * s_o) + f64::from(bias[o]);
                            let got = f64::from(out.data[layout.offset(b, y, xx) + o]);
                            assert!(
                                (got - want).abs() <= 1e-5 * (1.0 + want.abs()),
                                "k{k} {cin}->{cout} ({b},{o},{y},{xx}): {got} vs integer {want}"
                            );
                            // Each product is off by at most half a step of each factor.
                            let bound = (cin * k * k) as f64
                                * (f64::from(s_b) * 0.5 * 1.0 + 3.0 * f64::from(s_o) * 0.5);
                            let float = float + f64::from(bias[o]);
                            assert!((got - float).abs() <= bound, "{got} vs float {float}");
                        }
                    }
                }
            }
        }
    }

    /// The block input's clip and outliers: the codes and the outliers' excess together give
    /// back every value, and a 1x1 convolution of the codes plus [`add_outliers`] equals plain
    /// integer arithmetic on the codes plus the excess times the dequantised weights, so that
    /// the clipped values are not lost. 64 channels (pixels without gaps) and 256 (with gaps
    /// between pixels), stride 1 and 2; image 0 has planted outliers 55-300x its typical
    /// values, image 1 a single positive value (no sampled value is positive, so its clip is
    /// its largest value and nothing is an outlier).
    #[test]
    fn block_input_outliers_come_back_exactly() {
        each_int8_kernel!(|kernel| outliers_come_back(kernel));
    }

    fn outliers_come_back<I: Int8>(kernel: I) {
        let isa = kernel.avx2();
        for (cin, cout, h, w, stride) in [(64, 32, 9, 7, 1), (256, 64, 10, 10, 2)] {
            let n = 2;
            let image = cin * h * w;
            let mut x: Vec<f32> = values(n * image, 31).iter().map(|v| v.max(0.0)).collect();
            let planted = [(3, 100.0), (image - 1, 300.0), (cin, 55.5)];
            for (i, v) in planted {
                x[i] = v;
            }
            x[image..].fill(0.0);
            x[image + image / 3] = 0.25;
            let weight = values(cout * cin, 32);
            let bias = values(cout, 33);
            let folded = folded([cin, cout], 1, stride, weight.clone(), bias.clone());
            let pc: PackedConv<I> = pack(kernel, &folded).unwrap();
            let by_input = by_input(kernel, &folded);
            let pool = Pool::default();
            let mut input = pool.take(n, h, w, cin, 0);
            input.fill_from_nchw(&x);
            let mut q = pool.take(n, h, w, cin / PER_WORD, 0);
            let outliers =
                quantize_block_input(isa, &input, &mut q, block_input_scales(isa, &input));
            let at = |b: usize, c: usize, y: usize, xx: usize| x[((b * cin + c) * h + y) * w + xx];
            // Image 0's clip lies below its planted values, so they are outliers, each with
            // its exact excess; image 1's is its single value.
            let s0 = q.image_scale[0];
            assert!(
                s0 * 255.0 < 55.5 && s0 * 255.0 >= 0.5,
                "clip {}",
                s0 * 255.0
            );
            assert_eq!(q.image_scale[1], 0.25 / 255.0);
            let mut want = Vec::new();
            for b in 0..n {
                let top = 255.0 * q.image_scale[b];
                for y in 0..h {
                    for xx in 0..w {
                        for c in 0..cin {
                            if at(b, c, y, xx) > top {
                                want.push((b, y, xx, c));
                            }
                        }
                    }
                }
            }
            let got: Vec<_> = outliers
                .iter()
                .map(|o| (o.n as usize, o.y as usize, o.x as usize, o.c as usize))
                .collect();
            assert_eq!(got, want);
            for o in &outliers {
                let v = at(o.n as usize, o.c as usize, o.y as usize, o.x as usize);
                assert_eq!(o.excess, v - 255.0 * q.image_scale[o.n as usize]);
            }
            let (oh, ow) = (pc.out_side(h), pc.out_side(w));
            let mut out = pool.take(n, oh, ow, cout, 0);
            let stats = conv_stats(kernel, &pc, &q, &mut out, false, false, false, true);
            let mut max = stats.max.expect("asked for");
            add_outliers(isa, &mut out, &outliers, &by_input, stride, Some(&mut max));
            let layout = out.layout();
            for (b, &image_max) in max.iter().enumerate() {
                let s_b = q.image_scale[b];
                let mut largest = 0f32;
                for o in 0..cout {
                    let wo = &weight[o * cin..][..cin];
                    let (s_o, codes) = reference_codes(kernel, wo, 1);
                    for y in 0..oh {
                        for xx in 0..ow {
                            let (iy, ix) = (y * stride, xx * stride);
                            let (mut int, mut excess, mut float) = (0i64, 0f64, 0f64);
                            for (c, &wv) in wo.iter().enumerate() {
                                let v = at(b, c, iy, ix);
                                let wq = codes[c];
                                int += (v / s_b).round_ties_even().clamp(0.0, 255.0) as i64 * wq;
                                let e = f64::from(v) - 255.0 * f64::from(s_b);
                                if e > 0.0 {
                                    excess += e * wq as f64 * f64::from(s_o);
                                }
                                float += f64::from(v) * f64::from(wv);
                            }
                            let want =
                                int as f64 * f64::from(s_b * s_o) + excess + f64::from(bias[o]);
                            let got = out.data[layout.offset(b, y, xx) + o];
                            largest = largest.max(got);
                            let got = f64::from(got);
                            assert!(
                                (got - want).abs() <= 1e-5 * (1.0 + want.abs()),
                                "{cin}->{cout} s{stride} ({b},{o},{y},{xx}): {got} vs {want}"
                            );
                            // Only the codes' rounding and the weights' remain: the outliers
                            // (up to 300) are not clipped.
                            let float = float + f64::from(bias[o]);
                            let bound = cin as f64 * f64::from(s_b) * 0.5
                                + (300 + cin) as f64 * f64::from(s_o);
                            assert!((got - float).abs() <= bound, "{got} vs float {float}");
                        }
                    }
                }
                // At least the largest output (it may keep a value an outlier then lowered).
                assert!(image_max >= largest, "image {b}: {image_max} < {largest}");
            }
        }
    }
}
