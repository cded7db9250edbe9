//! int8 inference for the bottleneck stages: weights quantised per output channel, activations
//! to 8 bits with a scale per image or per pixel, products summed exactly in 32-bit integers.
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
//! On AVX2 without AVX-VNNI, the 3x3s of the stages with 128 and 256 channels run by
//! Winograd's F(2x2, 3x3) on 16-bit codes instead ([`super::winograd::conv_pairs`]): `vpmaddwd`
//! multiplies and adds 16-bit pairs at the rate `vpmaddubsw` and `vpmaddwd` do bytes, so 16
//! products per tile in 16 bits cost less than 36 in 8. They read the first 1x1's `f32` output
//! and its per-image maxima, and their outputs are quantised per pixel in a pass.
//!
//! The stem runs in int8 too ([`pack_stem`], [`quantize_input`]): its three input
//! channels and a fourth of zero weights make one word per pixel, each image takes one scale
//! (its widest channel range / 255) and each channel its own zero point, so normalised 8-bit
//! pixels come back exactly; the epilogue takes the zero points out and puts back what the
//! weight codes lose on each channel's mean (a per-image bias). Without that correction the
//! codes' error on the pixels' large mean reached every output, and block 5 fell to cosine
//! 0.9925 of fp32 on a colour photo. Until 2026-11-30 the AVX512-VNNI network kept the `f32`
//! stem (an earlier int8 stem, one zero point of 128 and no such correction, had failed the
//! cosine bar there); with this scheme and 8-bit weights it meets it.
//!
//! What stays in `f32`: the max-pool, every convolution's output, the residual stream and the
//! pooled taps. Past the stem, a value `x` becomes `round(x / s)` in 0..=255, which loses
//! nothing to the sign because every tensor quantised there is the output of a ReLU.
//!
//! The scales. The 3x3's input takes its image's largest value / 255, from the maxima the
//! first 1x1's epilogue tracks, in one pass over its output ([`quantize`]). The inputs of the
//! 1x1s, whose patch is one pixel, take a scale per pixel, its largest value over the
//! channels / 255 ([`quantize_per_pixel`]): the last 1x1's input, written by the 3x3's
//! epilogue, and the block input (the residual stream, read by the first 1x1 and the
//! shortcut), written by the block before's last 1x1 (the first block's, from the max-pool,
//! in a pass). The kernel multiplies each output pixel's sums by its input pixel's scale
//! ([`super::isa::Epilogue::row_scale`]).
//!
//! Why per image or per pixel, and not calibrated: scales calibrated on 32 dev photos (the
//! 99.99th percentile of each tensor, or its maximum) clipped the tensors of photos brighter
//! than any of the 32, and block 4's pooled output fell to cosine 0.988-0.991 of fp32 on some
//! dev photos. Why per pixel for the residual stream: it is heavy-tailed, and with its image's
//! maximum as the scale block 4 fell to 0.987 on a texture photo. Until 2026-11-29 its scale
//! was a clip (the 99.9th percentile of a sample) with the values above it put back exactly
//! after the convolutions; scales per pixel keep the pooled blocks as close to fp32 or closer
//! (lowest cosine on 100 texture photos, AVX2 kernel, blocks 2-5: 0.99936, 0.99916, 0.99903,
//! 0.99642 with the clip; 0.99956, 0.99916, 0.99896, 0.99770 per pixel), and the scale of a
//! pixel is known when the convolution that writes it has its channels, so the codes are
//! written in its epilogue, without a pass over the `f32` output. The scales depend on the
//! image alone, never on the rest of the batch.

use rayon::prelude::*;

use super::act::Act;
use super::isa::{Avx2Fma, Avx2Int8, Int8, Int8Kernel, Kernel};
use super::kernel::PackedConv;
use crate::arch::Bottleneck;
use crate::weights::FoldedConv;

/// A bottleneck packed for the int8 kernel `I`.
pub(crate) struct Int8Bottleneck<I> {
    pub conv1: PackedConv<I>,
    pub conv2: PackedConv<I>,
    pub conv3: PackedConv<I>,
    /// The shortcut's convolution, where it has one.
    pub shortcut: Option<PackedConv<I>>,
}

impl<I> Int8Bottleneck<I> {
    /// The border its quantised input needs: the padding of the convolutions that read it.
    pub fn input_border(&self) -> usize {
        self.shortcut
            .as_ref()
            .map_or(0, |d| d.pad)
            .max(self.conv1.pad)
    }
}

/// Packs a folded bottleneck's convolutions for the int8 kernel `kernel`.
///
/// # Errors
/// When a convolution cannot run in int8: input channels not a multiple of 4, an output
/// width the kernel's panel does not divide, a reduction longer than [`MAX_WORDS`], a weight
/// that is not finite (no scale holds it), or a first convolution or shortcut that is not an
/// unpadded 1x1 (the block input's scales are per pixel, which serves a patch of one pixel).
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
    // The block input is quantised per pixel: each patch of the convolutions that read it
    // must be one pixel.
    let first = |c: &FoldedConv| {
        if c.spec.kernel == 1 && c.spec.padding == 0 {
            p(c)
        } else {
            Err("int8 needs each bottleneck's first convolution and shortcut to be unpadded 1x1s")
        }
    };
    Ok(Int8Bottleneck {
        conv1: first(&b.conv1)?,
        conv2: p(&b.conv2)?,
        conv3: p(&b.conv3)?,
        shortcut: b.downsample.as_ref().map(first).transpose()?,
    })
}

/// The largest activation code (unsigned 8 bits).
const ACT_MAX: f32 = 255.0;
/// Names the quantisation scheme where its features are cached: a change to the codes (their
/// widths, rounding, scales or clips) must change it. The weights' width depends on the
/// kernel, so the name does too.
pub(crate) fn scheme(kernel: Int8Kernel) -> &'static str {
    match kernel {
        Int8Kernel::Avx2 => "int8-v6-w8p-wino16-stem8",
        // Both `vpdpbusd` kernels code and sum alike, the stem in int8 ([`pack_stem`]).
        Int8Kernel::AvxVnni | Int8Kernel::Avx512Vnni => "int8-v6-w8-stem8",
    }
}
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

/// Quantises the stem, a convolution of fewer than four input channels (ResNet's 3), for the
/// int8 kernel `kernel`: input channels padded to one word with zero weights, the weights coded
/// as [`pack`] codes them, with the [`PackedConv::with_channel_sums`] that its input's zero
/// points and means ([`quantize_input`]) need. `None` for four input channels or more, or as
/// [`pack`].
pub(crate) fn pack_stem<I: Int8>(kernel: I, conv: &FoldedConv) -> Option<PackedConv<I>> {
    let s = &conv.spec;
    let [cin, cout] = s.channels;
    let taps = s.kernel * s.kernel;
    if cin >= PER_WORD || conv.weight.len() != cout * cin * taps {
        return None;
    }
    let mut weight = vec![0f32; cout * PER_WORD * taps];
    for (to, from) in weight
        .chunks_exact_mut(PER_WORD * taps)
        .zip(conv.weight.chunks_exact(cin * taps))
    {
        to[..cin * taps].copy_from_slice(from);
    }
    let mut coded = Vec::with_capacity(cout * cin);
    let mut residue = Vec::with_capacity(cout * cin);
    for w in weight.chunks_exact(PER_WORD * taps) {
        // The codes `pack` gives this channel.
        let (scale, codes) = channel_codes(kernel, w, taps);
        for (w, codes) in w.chunks_exact(taps).zip(codes.chunks_exact(taps)).take(cin) {
            let sum: f64 = codes.iter().map(|&c| f64::from(c)).sum::<f64>() * f64::from(scale);
            let exact: f64 = w.iter().map(|&v| f64::from(v)).sum();
            coded.push(sum as f32);
            residue.push((exact - sum) as f32);
        }
    }
    let padded = FoldedConv {
        spec: crate::arch::ConvSpec {
            channels: [PER_WORD, cout],
            ..s.clone()
        },
        weight,
        bias: conv.bias.clone(),
    };
    Some(pack(kernel, &padded)?.with_channel_sums(coded, residue))
}

/// Writes an NCHW batch of fewer than four channels into `dst`, one word per pixel, for the
/// stem that [`pack_stem`] packed. Each image takes one scale `s`, its channels' widest range
/// (every range stretched to take in 0) / 255, and each channel a zero point `z = -min / s`:
/// a value `x` becomes `round(x / s + z)` in 0..=255 (ties to even; NaN to 0), its channel's
/// byte of the word, the fourth byte 0. Normalised 8-bit pixels, whose widest channel spans 255
/// levels, so come back exactly. The border holds each channel's `round(z)`, the code of 0
/// (the zero padding). The scales go to `dst.image_scale`, the zero points and each
/// channel's mean to `dst.image_zero` and `dst.image_mean`, for the stem's epilogue
/// ([`PackedConv::with_channel_sums`]). An image of one value, or one not finite, takes scale
/// 1.
///
/// # Panics
/// If `nchw` does not hold `dst`'s images of `c` channels, `c` is not below four, or `dst`
/// does not hold one word per pixel.
pub(crate) fn quantize_input(isa: Avx2Fma, nchw: &[f32], c: usize, dst: &mut Act) {
    dst.assert_layout();
    let (h, w) = (dst.h, dst.w);
    assert!(
        c < PER_WORD && dst.c == 1 && dst.cs == 1 && nchw.len() == dst.n * c * h * w,
        "the stem's input shape"
    );
    let layout = dst.layout();
    let img = layout.offset(1, 0, 0) - layout.offset(0, 0, 0);
    type Image = (f32, Vec<f32>, Vec<f32>);
    let per_image: Vec<Image> = dst
        .data
        .par_chunks_exact_mut(img)
        .zip(nchw.par_chunks_exact(c * h * w))
        .map(|(image, planes)| {
            isa.vectorize(|| {
                let planes: Vec<&[f32]> = planes.chunks_exact(h * w).collect();
                // Each channel's range, with 0 in it (the padding's code must exist), and mean.
                let stats: Vec<(f32, f32, f32)> = planes.iter().map(|p| channel_stats(p)).collect();
                let widest = stats.iter().map(|(lo, hi, _)| hi - lo).fold(0f32, f32::max);
                let s = if widest > 0.0 && widest.is_finite() {
                    widest / ACT_MAX
                } else {
                    1.0
                };
                let inv = 1.0 / s;
                let zero: Vec<f32> = stats.iter().map(|&(lo, ..)| -lo * inv).collect();
                let mean = stats.iter().map(|&(.., m)| m).collect();
                let mut border = [0u8; PER_WORD];
                for (b, z) in border.iter_mut().zip(&zero) {
                    *b = z.round_ties_even().clamp(0.0, ACT_MAX) as u8;
                }
                image.fill(word(border));
                let lo: Vec<f32> = stats.iter().map(|&(lo, ..)| lo).collect();
                for y in 0..h {
                    let line = &mut image[layout.offset(0, y, 0)..][..w];
                    let row = |ch: usize| &planes[ch][y * w..][..w];
                    match c {
                        1 => code_line([row(0)], [lo[0]], inv, line),
                        2 => code_line([row(0), row(1)], [lo[0], lo[1]], inv, line),
                        _ => code_line([row(0), row(1), row(2)], [lo[0], lo[1], lo[2]], inv, line),
                    }
                }
                (s, zero, mean)
            })
        })
        .collect();
    dst.image_scale = per_image.iter().map(|(s, ..)| *s).collect();
    dst.image_zero = per_image.iter().flat_map(|(_, z, _)| z.clone()).collect();
    dst.image_mean = per_image.into_iter().flat_map(|(.., m)| m).collect();
}

/// A plane's lowest and highest values, stretched to take in 0 (NaN never counts), and its
/// mean.
#[inline(always)]
fn channel_stats(plane: &[f32]) -> (f32, f32, f32) {
    // Eight lanes, so that the loops vectorise (`f32::min` and a sum in order would not).
    // The sum in `f32` lanes over 256 values at a time, then in `f64`.
    let (mut lo, mut hi, mut sum) = ([0f32; 8], [0f32; 8], 0f64);
    for run in plane.chunks(256) {
        let mut part = [0f32; 8];
        for chunk in run.chunks(8) {
            for (i, &v) in chunk.iter().enumerate() {
                lo[i] = if v < lo[i] { v } else { lo[i] };
                hi[i] = if v > hi[i] { v } else { hi[i] };
                part[i] += v;
            }
        }
        sum += part.iter().map(|&v| f64::from(v)).sum::<f64>();
    }
    let lo = lo.iter().copied().fold(0f32, f32::min);
    let hi = hi.iter().copied().fold(0f32, f32::max);
    (lo, hi, (sum / plane.len().max(1) as f64) as f32)
}

/// 2^23: added to a float in 0..2^22, it leaves the value rounded to an integer (ties to even,
/// the default rounding) in the low bits of its mantissa.
const ROUND: f32 = 8_388_608.0;

/// One row of the stem's input codes: `C` channels' values `rows`, each less its channel's
/// `lo`, times `inv`, rounded (ties to even) into 0..=255 (NaN to 0), from the lowest byte of
/// each word of `out` up; the bytes above 0.
#[inline(always)]
fn code_line<const C: usize>(rows: [&[f32]; C], lo: [f32; C], inv: f32, out: &mut [f32]) {
    for (x, out) in out.iter_mut().enumerate() {
        let mut bits = 0u32;
        for ch in 0..C {
            let v = (rows[ch][x] - lo[ch]) * inv;
            // NaN to 0.
            let v = if v > 0.0 { v.min(ACT_MAX) } else { 0.0 };
            // Adding 2^23 rounds a value in 0..2^22 to an integer, ties to even.
            let q = (v + ROUND).to_bits() & 0xff;
            bits |= q << (8 * ch);
        }
        *out = f32::from_bits(bits);
    }
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
    write_codes(isa, src, dst, &scales);
    dst.image_scale = scales;
    dst.pixel_scale = Vec::new();
}

/// Writes `src` (`c` channels, a multiple of 4) quantised per pixel into the interior of
/// `dst`, as [`quantize`] does per image: each pixel's scale is its largest value / 255 (1.0
/// for a pixel of zeros), into `dst.pixel_scale`. Negative values become code 0.
///
/// # Panics
/// If the shapes differ.
pub(crate) fn quantize_per_pixel(isa: Avx2Fma, src: &Act, dst: &mut Act) {
    check_shapes(src, dst);
    let from = src.layout();
    let (h, w, c, pad, cs) = (src.h, src.w, src.c, dst.pad, dst.cs);
    let rows = h + 2 * pad;
    let row_len = dst.row_stride();
    // The border's slots are unused; 1.0 there, as where an epilogue writes the codes.
    let mut scales = vec![1f32; dst.data.len() / cs];
    dst.data
        .par_chunks_exact_mut(row_len)
        .zip(scales.par_chunks_exact_mut(w + 2 * pad))
        .enumerate()
        .for_each(|(i, (line, line_scales))| {
            let (n, py) = (i / rows, i % rows);
            if py < pad || py >= h + pad {
                return;
            }
            let y = py - pad;
            for x in 0..w {
                let px = &src.data[from.offset(n, y, x)..][..c];
                let out = &mut line[(x + pad) * cs..][..c / PER_WORD];
                line_scales[x + pad] = quantize_pixel(isa, px, out);
            }
        });
    dst.image_scale = Vec::new();
    dst.pixel_scale = scales;
}

/// One pixel's channels `values` quantised into `out` (`values.len() / 4` words) under the
/// pixel's own scale, its largest value / 255, which it returns: what [`quantize_per_pixel`]
/// and a convolution's epilogue ([`super::kernel::conv_stats`]) write for each pixel.
pub(crate) fn quantize_pixel(isa: Avx2Fma, values: &[f32], out: &mut [f32]) -> f32 {
    let s = scale(isa.max(values, 0.0));
    isa.quantize_u8(values, 1.0 / s, out);
    s
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
pub(crate) fn scale(max: f32) -> f32 {
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

/// Writes the codes of `src` under each image's scale into `dst`.
fn write_codes(isa: Avx2Fma, src: &Act, dst: &mut Act, scales: &[f32]) {
    let from = src.layout();
    let (h, w, c, pad, cs) = (src.h, src.w, src.c, dst.pad, dst.cs);
    let rows = h + 2 * pad;
    let row_len = dst.row_stride();
    dst.data
        .par_chunks_exact_mut(row_len)
        .enumerate()
        .for_each(|(i, line)| {
            let (n, py) = (i / rows, i % rows);
            if py < pad || py >= h + pad {
                return;
            }
            let y = py - pad;
            let inv = 1.0 / scales[n];
            if src.cs == c && cs * PER_WORD == c {
                // Channels without gaps on both sides: the row's pixels are one run.
                let px = &src.data[from.offset(n, y, 0)..][..w * c];
                isa.quantize_u8(px, inv, &mut line[pad * cs..][..w * cs]);
            } else {
                for x in 0..w {
                    let px = &src.data[from.offset(n, y, x)..][..c];
                    isa.quantize_u8(px, inv, &mut line[(x + pad) * cs..][..c / PER_WORD]);
                }
            }
        });
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

    /// `x` (NCHW, `[n, c, h, w]`) quantised per image, with a border of `pad`.
    fn quantised(
        isa: Avx2Fma,
        pool: &Pool,
        x: &[f32],
        [n, c, h, w]: [usize; 4],
        pad: usize,
    ) -> Act {
        let mut input = pool.take(n, h, w, c, pad);
        input.fill_from_nchw(x);
        let mut q = pool.take(n, h, w, c / PER_WORD, pad);
        quantize(isa, &input, &mut q, None);
        q
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
        isa.quantize_u8(&values, 1.0, &mut out);
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

    /// Every int8 kernel's [`Kernel::quantize_pixel`] (the AVX512-VNNI kernel's own, in
    /// 512-bit vectors) writes the codes and returns the scale of [`quantize_pixel`], bit for
    /// bit: ties, negatives, beyond 255, NaN, infinities, a pixel of zeros, one of negatives
    /// and one of NaN, at the channel counts of ResNet-50's 1x1s and at 8 and 24 (not a
    /// whole number of 16, where the AVX512-VNNI kernel falls back on [`quantize_pixel`]).
    #[test]
    fn every_kernel_quantises_a_pixel_as_quantize_pixel() {
        each_int8_kernel!(|kernel| kernel_codes_match(kernel));
    }

    fn kernel_codes_match<I: Int8>(kernel: I) {
        let isa = kernel.avx2();
        for (len, seed) in [
            (8, 1),
            (24, 2),
            (64, 3),
            (128, 4),
            (256, 5),
            (512, 6),
            (2048, 7),
        ] {
            let mut pixel: Vec<f32> = values(len, seed).iter().map(|v| v * 300.0).collect();
            let planted = [0.5, 1.5, 2.5, -3.0, 254.5, 255.5, 3e9, f32::NAN];
            pixel[..8].copy_from_slice(&planted);
            let scaled: Vec<f32> = pixel.iter().map(|v| v / 40.0).collect();
            let mut infinite = scaled.clone();
            infinite[len - 1] = f32::INFINITY;
            infinite[len / 2] = f32::NEG_INFINITY;
            let negative: Vec<f32> = scaled.iter().map(|v| -v.abs()).collect();
            let cases = [
                pixel,
                scaled,
                infinite,
                negative,
                vec![0.0; len],
                vec![-0.0; len],
                vec![f32::NAN; len],
            ];
            for (case, values) in cases.iter().enumerate() {
                let (mut got, mut want) = (vec![0f32; len / 4], vec![0f32; len / 4]);
                let got_scale = kernel.quantize_pixel(isa, values, &mut got);
                let want_scale = quantize_pixel(isa, values, &mut want);
                let context = format!("{:?}, {len} channels, case {case}", kernel.name());
                assert_eq!(
                    got_scale.to_bits(),
                    want_scale.to_bits(),
                    "scale: {context}"
                );
                let bits = |w: &[f32]| w.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&got), bits(&want), "codes: {context}");
            }
        }
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
                conv_stats(kernel, &pc, &q, &mut out, false, true, false, false, None);
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
            let q = quantised(isa, &pool, &x, [n, cin, h, w], pad);
            // Each image's scale: its own maximum / 255.
            for (b, image) in x.chunks_exact(cin * h * w).enumerate() {
                let max = image.iter().fold(0f32, |m, v| m.max(*v));
                assert_eq!(q.image_scale[b], max / 255.0);
            }
            let (oh, ow) = (pc.out_side(h), pc.out_side(w));
            let mut out = pool.take(n, oh, ow, cout, 0);
            let stats = conv_stats(kernel, &pc, &q, &mut out, false, false, false, true, None);
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

    /// Quantising per pixel: each pixel's scale is its largest value / 255 (1.0 for a pixel
    /// of zeros) and its codes `round(v / s)`, and a 1x1 convolution of the codes equals plain
    /// integer arithmetic on them under each input pixel's scale. 64 channels (pixels without
    /// gaps) and 256 (with gaps between pixels), stride 1 and 2, borders 0 and 1; image 0 has
    /// values planted at 55-300x the others, image 1 a pixel of zeros.
    #[test]
    fn per_pixel_codes_equal_integer_arithmetic() {
        each_int8_kernel!(|kernel| per_pixel_codes_match(kernel));
    }

    fn per_pixel_codes_match<I: Int8>(kernel: I) {
        let isa = kernel.avx2();
        for (cin, cout, h, w, stride, border) in [(64, 32, 9, 7, 1, 0), (256, 64, 10, 10, 2, 1)] {
            let n = 2;
            let image = cin * h * w;
            let mut x: Vec<f32> = values(n * image, 31).iter().map(|v| v.max(0.0)).collect();
            // Planted (image 0): 100 at channel 0 of pixel (0, 3), 300 at the last channel of
            // the last pixel, 55.5 at channel cin / 2 of pixel (0, 0). Zeros: image 1's pixel
            // (0, 1).
            for (i, v) in [(3, 100.0), (image - 1, 300.0), (cin / 2 * h * w, 55.5)] {
                x[i] = v;
            }
            for c in 0..cin {
                x[image + c * h * w + 1] = 0.0;
            }
            let at = |b: usize, c: usize, y: usize, xx: usize| x[((b * cin + c) * h + y) * w + xx];
            let weight = values(cout * cin, 32);
            let bias = values(cout, 33);
            let folded = folded([cin, cout], 1, stride, weight.clone(), bias.clone());
            let pc: PackedConv<I> = pack(kernel, &folded).unwrap();
            let pool = Pool::default();
            let mut input = pool.take(n, h, w, cin, 0);
            input.fill_from_nchw(&x);
            let mut q = pool.take(n, h, w, cin / PER_WORD, border);
            quantize_per_pixel(isa, &input, &mut q);
            assert!(q.image_scale.is_empty());
            let layout = q.layout();
            let scale_at =
                |b: usize, y: usize, xx: usize| q.pixel_scale[layout.offset(b, y, xx) / q.cs];
            let code_at = |b: usize, c: usize, y: usize, xx: usize| {
                i64::from(unword(q.data[layout.offset(b, y, xx) + c / PER_WORD])[c % PER_WORD])
            };
            for b in 0..n {
                for y in 0..h {
                    for xx in 0..w {
                        let max = (0..cin).fold(0f32, |m, c| m.max(at(b, c, y, xx)));
                        let s = if max > 0.0 { max / 255.0 } else { 1.0 };
                        assert_eq!(scale_at(b, y, xx), s, "pixel ({b}, {y}, {xx})");
                        for c in 0..cin {
                            let want = (at(b, c, y, xx) * (1.0 / s)).round_ties_even() as i64;
                            assert_eq!(code_at(b, c, y, xx), want.min(255));
                        }
                    }
                }
            }
            assert_eq!(scale_at(1, 0, 1), 1.0);
            assert_eq!(scale_at(0, 0, 0), 55.5 / 255.0);
            let (oh, ow) = (pc.out_side(h), pc.out_side(w));
            let mut out = pool.take(n, oh, ow, cout, 0);
            conv_stats(kernel, &pc, &q, &mut out, false, false, false, false, None);
            let out_layout = out.layout();
            for o in 0..cout {
                let wo = &weight[o * cin..][..cin];
                let (s_o, codes) = reference_codes(kernel, wo, 1);
                for b in 0..n {
                    for y in 0..oh {
                        for xx in 0..ow {
                            let (iy, ix) = (y * stride, xx * stride);
                            let (mut int, mut float) = (0i64, 0f64);
                            for (c, &wv) in wo.iter().enumerate() {
                                int += code_at(b, c, iy, ix) * codes[c];
                                float += f64::from(at(b, c, iy, ix)) * f64::from(wv);
                            }
                            let s_p = scale_at(b, iy, ix);
                            let want = int as f64 * f64::from(s_o * s_p) + f64::from(bias[o]);
                            let got = f64::from(out.data[out_layout.offset(b, y, xx) + o]);
                            assert!(
                                (got - want).abs() <= 1e-5 * (1.0 + want.abs()),
                                "{cin}->{cout} s{stride} ({b},{o},{y},{xx}): {got} vs {want}"
                            );
                            // Each product is off by at most half a step of each factor.
                            let bound =
                                cin as f64 * (f64::from(s_p) * 0.5 + 300.0 * f64::from(s_o) * 0.5);
                            let float = float + f64::from(bias[o]);
                            assert!((got - float).abs() <= bound, "{got} vs float {float}");
                        }
                    }
                }
            }
        }
    }

    /// The codes a convolution's epilogue writes per pixel equal a pass over its output
    /// ([`quantize_per_pixel`]), bit for bit, on each of the driver's paths: a direct 1x1 that
    /// runs every panel per tile, a padded 3x3 on a 7-wide map (split tiles), a 1x1 whose
    /// weights are too large for that (panel by panel, on 14 x 14), and a packed 1x1 on 5 x 6
    /// maps (pixels not evenly spaced in tiles).
    #[test]
    fn per_pixel_codes_from_the_epilogue_equal_a_pass() {
        each_int8_kernel!(|kernel| epilogue_codes_match(kernel));
    }

    fn epilogue_codes_match<I: Int8>(kernel: I) {
        let isa = kernel.avx2();
        for (n, cin, cout, h, w, k) in [
            (2, 64, 256, 9, 7, 1),
            (3, 64, 64, 7, 7, 3),
            (1, 2048, 512, 14, 14, 1),
            (2, 128, 32, 5, 6, 1),
        ] {
            let pad = k / 2;
            let x: Vec<f32> = values(n * cin * h * w, 41)
                .into_iter()
                .map(|v| v.max(0.0) * 2.0)
                .collect();
            let folded = folded(
                [cin, cout],
                k,
                1,
                values(cout * cin * k * k, 42),
                values(cout, 43),
            );
            let pc: PackedConv<I> = pack(kernel, &folded).unwrap();
            let pool = Pool::default();
            let q = quantised(isa, &pool, &x, [n, cin, h, w], pad);
            for border in [0, 1] {
                let mut out = pool.take(n, h, w, cout, 0);
                let mut by_epilogue = pool.take(n, h, w, cout / PER_WORD, border);
                conv_stats(
                    kernel,
                    &pc,
                    &q,
                    &mut out,
                    false,
                    true,
                    false,
                    false,
                    Some((isa, &mut by_epilogue)),
                );
                let mut by_pass = pool.take(n, h, w, cout / PER_WORD, border);
                quantize_per_pixel(isa, &out, &mut by_pass);
                let same = by_pass
                    .data
                    .iter()
                    .zip(by_epilogue.data.iter())
                    .all(|(a, b)| a.to_bits() == b.to_bits());
                assert!(
                    same,
                    "k{k} {cin}->{cout} {h}x{w} border {border}: codes differ"
                );
                let layout = by_pass.layout();
                for b in 0..n {
                    for y in 0..h {
                        for xx in 0..w {
                            let slot = layout.offset(b, y, xx) / by_pass.cs;
                            assert_eq!(
                                by_pass.pixel_scale[slot], by_epilogue.pixel_scale[slot],
                                "k{k} {cin}->{cout} ({b}, {y}, {xx}): scales differ"
                            );
                        }
                    }
                }
            }
        }
    }

    /// The stem's NCHW input as 8-bit pixels less each channel's `mean` (pixels from `seed`;
    /// channel 0 of every image spans 0..=255).
    fn pixels(n: usize, [h, w]: [usize; 2], mean: [f32; 3], seed: u64) -> (Vec<f32>, Vec<f32>) {
        let plane = h * w;
        let mut px: Vec<f32> = values(n * 3 * plane, seed)
            .iter()
            .map(|v| ((v + 1.0) * 128.0).floor().min(255.0))
            .collect();
        for b in 0..n {
            px[b * 3 * plane] = 0.0;
            px[b * 3 * plane + 1] = 255.0;
        }
        let x = px
            .iter()
            .enumerate()
            .map(|(i, p)| p - mean[i / plane % 3])
            .collect();
        (px, x)
    }

    #[test]
    fn stem_input_codes_are_the_pixels() {
        let Some(isa) = Avx2Fma::detect() else {
            skip(Isa::Avx2);
            return;
        };
        let (n, h, w) = (2, 5, 9);
        // Whole means: every code and the border's (the code of 0) are exact.
        let (px, mut x) = pixels(n, [h, w], [104.0, 117.0, 124.0], 41);
        let pool = Pool::default();
        let mut q = pool.take(n, h, w, 1, 3);
        quantize_input(isa, &x, 3, &mut q);
        assert_eq!(q.image_scale, vec![1.0; n]);
        let layout = q.layout();
        for b in 0..n {
            // Each channel's codes are its pixels less its darkest, its zero the mean less that.
            let lowest: Vec<f32> = (0..3)
                .map(|c| {
                    px[(b * 3 + c) * h * w..][..h * w]
                        .iter()
                        .fold(255f32, |m, &v| m.min(v))
                })
                .collect();
            let zero: Vec<f32> = [104.0, 117.0, 124.0]
                .iter()
                .zip(&lowest)
                .map(|(m, l)| m - l)
                .collect();
            assert_eq!(q.image_zero[b * 3..][..3], zero[..]);
            for y in 0..h {
                for xx in 0..w {
                    let got = unword(q.data[layout.offset(b, y, xx)]);
                    let want: Vec<u8> = (0..3)
                        .map(|c| (px[((b * 3 + c) * h + y) * w + xx] - lowest[c]) as u8)
                        .collect();
                    assert_eq!(&got[..3], &want[..], "image {b} pixel ({y}, {xx})");
                    assert_eq!(got[3], 0);
                }
            }
            let border = [zero[0] as u8, zero[1] as u8, zero[2] as u8, 0];
            assert_eq!(unword(q.data[q.padded_offset(b, 0, 0)]), border);
            assert_eq!(unword(q.data[q.padded_offset(b, h + 5, w + 5)]), border);
        }
        // NaN codes 0 and does not move the range; infinity leaves scale 1.
        x[3] = f32::NAN;
        quantize_input(isa, &x, 3, &mut q);
        assert_eq!(unword(q.data[layout.offset(0, 0, 3)])[0], 0);
        assert_eq!(q.image_scale, vec![1.0; n]);
        x[4] = f32::INFINITY;
        quantize_input(isa, &x, 3, &mut q);
        assert_eq!(q.image_scale[0], 1.0);
    }

    /// The int8 stem on every int8 kernel against the `f32` convolution (summed in `f64`) of
    /// the same input: exactly (to `f32` rounding) where the weights' codes are exact and the
    /// means whole, and otherwise within the bound of each output's errors: a weight code's
    /// error is at most half its channel's scale, and what is left of it once the epilogue
    /// puts back its error on the channel means multiplies each tap's distance from its
    /// channel's mean (the padding's 0 included); each padded tap's input code is off by at
    /// most half the input scale.
    #[test]
    fn int8_stem_matches_the_f32_convolution() {
        crate::native::isa::each_int8_kernel!(|kernel| stem_matches_the_f32_convolution(kernel));
        // The AVX512-VNNI tile's own code (its per-image biases) where the CPU lacks it.
        if let Some(isa) = Avx2Fma::detect() {
            stem_matches_the_f32_convolution(crate::native::avx512::testing::EmulatedVnni(isa));
        }
    }

    fn stem_matches_the_f32_convolution<I: Int8>(kernel: I) {
        let isa = kernel.avx2();
        let (n, cout, h, w, k, stride) = (2, 32, 19, 22, 7, 2);
        // Exact codes: channels 0 and 2 hold multiples of 1 / 1000 up to 127 of them (each
        // output channel reaches 127; channel 2 pairs with the padding's zero weights), channel
        // 1 zeros, so no pair binds.
        let exact: Vec<f32> = values(cout * 3 * k * k, 42)
            .iter()
            .enumerate()
            .map(|(i, v)| match i / (k * k) % 3 {
                1 => 0.0,
                _ if i % (3 * k * k) == 0 => 0.127,
                _ => (v * 127.0).round() / 1000.0,
            })
            .collect();
        let random: Vec<f32> = values(cout * 3 * k * k, 43)
            .iter()
            .map(|v| v * 0.2)
            .collect();
        // A flat image (whole pixels and means): no tap differs from its channel's mean, so
        // with the codes' error on the means put back, every output whose taps all lie inside
        // is exact, whatever the weights.
        let flat: Vec<f32> = [255.0, 60.0 - 17.0, -124.0]
            .iter()
            .flat_map(|&v| vec![v; h * w])
            .collect::<Vec<f32>>()
            .repeat(n);
        let (_, whole) = pixels(n, [h, w], [104.0, 117.0, 124.0], 45);
        let (_, fractional) = pixels(n, [h, w], [103.939, 116.779, 123.68], 45);
        for (weight, x, exact, interior_exact) in [
            (exact, whole, true, true),
            (random.clone(), fractional, false, false),
            (random, flat, false, true),
        ] {
            let bias = values(cout, 44);
            let pc = pack_stem(
                kernel,
                &folded([3, cout], k, stride, weight.clone(), bias.clone()),
            )
            .expect("a stem");
            let pool = Pool::default();
            let mut q = pool.take(n, h, w, 1, 3);
            quantize_input(isa, &x, 3, &mut q);
            let (oh, ow) = (pc.out_side(h), pc.out_side(w));
            let mut out = pool.take(n, oh, ow, cout, 0);
            conv_stats(kernel, &pc, &q, &mut out, false, false, false, false, None);
            let (want, ..) = crate::native::kernel::tests::naive(
                &x,
                [n, 3, h, w],
                &weight,
                &bias,
                cout,
                k,
                stride,
                k / 2,
            );
            let largest = want.iter().fold(0f32, |m, v| m.max(v.abs()));
            let layout = out.layout();
            let taps = k * k;
            for b in 0..n {
                let image = &x[b * 3 * h * w..][..3 * h * w];
                let means: Vec<f64> = image
                    .chunks_exact(h * w)
                    .map(|p| p.iter().map(|&v| f64::from(v)).sum::<f64>() / (h * w) as f64)
                    .collect();
                let s = f64::from(q.image_scale[b]);
                for o in 0..cout {
                    let wo = &weight[o * 3 * taps..][..3 * taps];
                    let mut padded = wo.to_vec();
                    padded.resize(PER_WORD * taps, 0.0);
                    let half_step = f64::from(channel_codes(kernel, &padded, taps).0) / 2.0;
                    for y in 0..oh {
                        for xx in 0..ow {
                            let mut bound = 0.0;
                            let mut padded_taps = false;
                            for (i, &wi) in wo.iter().enumerate() {
                                let (c, ky, kx) = (i / taps, i % taps / k, i % k);
                                let iy = (y * stride + ky) as isize - (k / 2) as isize;
                                let ix = (xx * stride + kx) as isize - (k / 2) as isize;
                                let inside =
                                    (0..h as isize).contains(&iy) && (0..w as isize).contains(&ix);
                                let v = if inside {
                                    f64::from(image[(c * h + iy as usize) * w + ix as usize])
                                } else {
                                    0.0
                                };
                                bound += half_step * (v - means[c]).abs();
                                if !inside {
                                    padded_taps = true;
                                    bound += 0.5 * s * (f64::from(wi).abs() + half_step);
                                }
                            }
                            // `f32` rounding: sums of a few hundred products.
                            let rounding = 1e-5 * f64::from(largest);
                            let bound = if exact || (interior_exact && !padded_taps) {
                                rounding
                            } else {
                                bound + rounding
                            };
                            let got = out.data[layout.offset(b, y, xx) + o];
                            let want = want[((b * cout + o) * oh + y) * ow + xx];
                            assert!(
                                f64::from((got - want).abs()) <= bound,
                                "image {b} channel {o} ({y}, {xx}): {got}, not {want}; bound {bound}"
                            );
                        }
                    }
                }
            }
        }
    }
}
