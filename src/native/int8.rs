//! int8 inference for the bottleneck stages: weights quantised per output channel, activations
//! to 8 bits with a scale per image, products summed exactly in 32-bit integers.
//!
//! The int8 kernels reuse the convolution driver ([`super::kernel`]) unchanged: it sees a
//! convolution whose "channels" are 32-bit words, each holding four input channels as bytes
//! (activations `u8` in 0..=255, weights `i8` in -63..=63), and the micro-kernel multiplies
//! and adds them four at a time: with `vpmaddubsw` and `vpmaddwd` on AVX2 (32 multiply-adds
//! per pair of instructions; see [`super::avx2`]), with one `vpdpbusd` on AVX-VNNI (32) and
//! AVX512-VNNI (64; see [`super::avx512`]). All sum the same integer products exactly, so the
//! kernels compute the same values. The words live in the same 64-byte aligned
//! `f32` buffers as the float activations; only copies ever touch them as floats, which keep
//! their bits. Activations take a quarter of their float bytes, weights a quarter too.
//!
//! What stays in `f32`: the stem (3 input channels, and the network's most sensitive layer),
//! the max-pool, every convolution's output, the residual stream and the pooled taps. A
//! convolution's input is quantised in one pass just before it runs (the block input once for
//! both the first 1x1 and the shortcut). Each image's quantised tensor has one scale, its own
//! largest value / 255: a value `x` becomes `round(x / s)` in 0..=255, which loses nothing to
//! the sign because every quantised tensor is the output of a ReLU.
//!
//! Why per image and not calibrated: scales calibrated on 32 dev photos (the 99.99th
//! percentile of each tensor, or its maximum) clipped the tensors of photos brighter than any
//! of the 32, and block 4's pooled output fell to cosine 0.988-0.991 of fp32 on some dev
//! photos; with each image's own maximum every block stays above 0.995 (see
//! `tests/integration/int8.rs`). The scale depends on the image alone, never on the rest of
//! the batch, and the cost is one more read of each quantised tensor.

use rayon::prelude::*;

use super::act::Act;
use super::isa::{Avx2Fma, Avx2Int8, Int8};
use super::kernel::PackedConv;
use crate::arch::Bottleneck;
use crate::weights::FoldedConv;

/// Packs a folded bottleneck's convolutions for the int8 kernel.
///
/// # Errors
/// When a convolution cannot run in int8: input channels not a multiple of 4, or an output
/// width the kernel's panel does not divide.
pub(crate) fn pack_bottleneck<I: Int8>(
    b: &Bottleneck<FoldedConv>,
) -> Result<Bottleneck<PackedConv<I>>, &'static str> {
    let p = |c: &FoldedConv| {
        pack(c).ok_or(
            "a convolution cannot run in int8 (input channels not a multiple of 4, or an \
             output width not a multiple of the kernel's panel, 16 or 32)",
        )
    };
    Ok(Bottleneck {
        conv1: p(&b.conv1)?,
        conv2: p(&b.conv2)?,
        conv3: p(&b.conv3)?,
        downsample: b.downsample.as_ref().map(p).transpose()?,
    })
}

/// The largest activation code (unsigned 8 bits).
const ACT_MAX: f32 = 255.0;
/// The largest weight code (symmetric: -63..=63, 7 bits of the byte): with activations up to
/// 255, `vpmaddubsw`'s sum of two products stays within an `i16` (2 x 255 x 63 = 32,130), so
/// it never saturates and the kernel is exact.
const WEIGHT_MAX: f32 = 63.0;
/// Names the quantisation scheme where its features are cached: a change to the codes (their
/// widths, rounding or scales) must change it.
pub(crate) const SCHEME: &str = "int8-v2";
/// Input channels per 32-bit word: four bytes.
pub(crate) const PER_WORD: usize = 4;

/// Quantises a folded convolution for the int8 kernel: weights to `round(w / s_o)` with
/// `s_o = max |w[o]| / 63` per output channel, four input channels to a word, with `s_o` as
/// the panel's scales. `None` when the input channels are not a multiple of 4 (the stem's 3),
/// or as [`PackedConv::new`].
pub(crate) fn pack<I: Int8>(conv: &FoldedConv) -> Option<PackedConv<I>> {
    let s = &conv.spec;
    let [cin, cout] = s.channels;
    let k = s.kernel;
    if !cin.is_multiple_of(PER_WORD) {
        return None;
    }
    let per_out = cin * k * k;
    let mut scales = Vec::with_capacity(cout);
    let mut words = vec![0f32; cout * per_out / PER_WORD];
    for (w, out) in conv
        .weight
        .chunks_exact(per_out)
        .zip(words.chunks_exact_mut(per_out / PER_WORD))
    {
        let max = w.iter().fold(0f32, |m, v| m.max(v.abs()));
        let s_o = if max > 0.0 { max / WEIGHT_MAX } else { 1.0 };
        scales.push(s_o);
        let code = |v: f32| (v / s_o).round().clamp(-WEIGHT_MAX, WEIGHT_MAX) as i8 as u8;
        // OIHW with the input channels in fours: word (o, c / 4, kh, kw) holds channels c..c + 4
        // of tap (kh, kw), channel c in its lowest byte.
        for cq in 0..cin / PER_WORD {
            for tap in 0..k * k {
                let bytes = std::array::from_fn(|i| code(w[(PER_WORD * cq + i) * k * k + tap]));
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
/// a first pass over `src` finds it.
///
/// # Panics
/// If the shapes differ, or `max` does not hold one value per image.
pub(crate) fn quantize(isa: Avx2Fma, src: &Act, dst: &mut Act, max: Option<&[f32]>) {
    assert!(
        src.c.is_multiple_of(PER_WORD)
            && dst.c * PER_WORD == src.c
            && (dst.n, dst.h, dst.w) == (src.n, src.h, src.w),
        "quantised activation shape"
    );
    assert!(
        max.is_none_or(|m| m.len() == src.n),
        "one maximum per image"
    );
    let from = src.layout();
    let (h, w, c, pad, cs) = (src.h, src.w, src.c, dst.pad, dst.cs);
    let largest = |n: usize| {
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
    };
    // NaN never wins `max`; an image of zeros quantises exactly under any scale.
    let scale = |max: f32| {
        if max > 0.0 && max.is_finite() {
            max / ACT_MAX
        } else {
            1.0
        }
    };
    let scales: Vec<f32> = match max {
        Some(max) => max.iter().map(|&m| scale(m)).collect(),
        None => (0..src.n)
            .into_par_iter()
            .map(|n| scale(largest(n)))
            .collect(),
    };
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
            let inv = 1.0 / scales[n];
            if src.cs == c && cs * PER_WORD == c {
                // Channels without gaps on both sides: the row's pixels are one run.
                let px = &src.data[from.offset(n, py - pad, 0)..][..w * c];
                isa.quantize_u8(px, inv, &mut line[pad * cs..][..w * cs]);
            } else {
                for x in 0..w {
                    let px = &src.data[from.offset(n, py - pad, x)..][..c];
                    isa.quantize_u8(px, inv, &mut line[(x + pad) * cs..][..c / PER_WORD]);
                }
            }
        });
    dst.image_scale = scales;
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

    #[test]
    fn words_hold_four_bytes_in_memory_order() {
        for bytes in [[0, 0, 0, 0], [1, 2, 3, 4], [255, 0, 193, 63]] {
            assert_eq!(unword(word(bytes)), bytes);
            // The kernel runs on x86-64, little-endian: the first byte is the first in memory.
            #[cfg(target_endian = "little")]
            assert_eq!(word(bytes).to_ne_bytes(), bytes);
        }
    }

    /// The int8 convolution against the same arithmetic in plain integers: quantised input
    /// codes times quantised weight codes, summed exactly, then scaled; and within the
    /// quantisation error of the float convolution.
    #[test]
    fn int8_convolution_equals_integer_arithmetic() {
        each_int8_kernel!(|kernel| int8_convolution_matches(kernel));
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

    fn int8_convolution_matches<I: Int8>(kernel: I) {
        let isa = kernel.avx2();
        // A padded 3x3 on a 7-wide map (packed and split tiles), a 1x1 with a reduction in
        // several blocks, a strided 1x1, and a 3x3 over two panels of the AVX-512 kernel (four
        // of the AVX2 one). Output widths are multiples of 32, every kernel's panel.
        for (n, cin, cout, h, w, k, stride) in [
            (2, 64, 32, 7, 7, 3, 1),
            (1, 2048, 32, 5, 6, 1, 1),
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
            let folded = FoldedConv {
                spec: ConvSpec {
                    conv: "test".into(),
                    bn: "test".into(),
                    channels: [cin, cout],
                    kernel: k,
                    stride,
                    padding: pad,
                },
                weight: weight.clone(),
                bias: bias.clone(),
            };
            let pc: PackedConv<I> = pack(&folded).unwrap();
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
                let s_o = wo.iter().fold(0f32, |m, v| m.max(v.abs())) / 63.0;
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
                                        let wq = (wv / s_o).round().clamp(-63.0, 63.0) as i64;
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
}
