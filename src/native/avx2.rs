//! The AVX2 + FMA micro-kernels, for x86-64 CPUs without AVX-512 (Intel client CPUs since Alder
//! Lake, AMD before Zen 4): a 14 x 16 output tile, in `f32` and in int8.
//!
//! AVX2 has 16 256-bit registers. The tile keeps the AVX-512 tile's 14 rows, and with them the
//! driver's pixel tiling and its direct path over 56-, 28-, 14- and 7-wide maps, but computes
//! them in three groups of 5, 5 and 4 rows by two vectors: a group's 10 accumulators, its two
//! weight vectors and the broadcast input value leave room for the int8 kernel's temporaries,
//! and each broadcast feeds two multiply-adds. A 14 x 8 tile (14 accumulators in registers)
//! needs a broadcast load per multiply-add; in an `rdtsc` loop on one Zen 3 core the groups ran
//! 17 % (`f32`) and 8 % (int8) faster, and the whole network 16 % (`f32`) and 8 % (int8) faster
//! (`benches/README.md`).
//! The groups take turns over [`WIDE_CHUNK`] reduction steps, so that the chunk of the weight
//! panel and of the rows they share stays in L1, and keep their sums in a 896-byte buffer
//! between turns. The multiply-add loops are written in assembly so that the register
//! allocation is the one described here. They take two reduction steps per turn (a last single
//! step for an odd count): with one, a turn was 20 instructions for 10 multiply-adds, as many
//! as an Intel core issues in the five cycles the multiply-adds take, and a copy of the `f32`
//! loop ran at 35 GMAC/s from L1 on one Cascade Lake core against 40.7 with two (the peak is
//! 41.5; `benches/README.md`).

#[cfg(target_arch = "x86_64")]
use std::arch::asm;
#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::{
    __m256, _MM_HINT_T0, _mm_prefetch, _mm256_add_ps, _mm256_castps_si256, _mm256_cmpgt_epi32,
    _mm256_cvtepi32_ps, _mm256_cvtps_epi32, _mm256_loadu_ps, _mm256_maskload_ps,
    _mm256_maskstore_ps, _mm256_max_ps, _mm256_min_ps, _mm256_mul_ps, _mm256_packs_epi32,
    _mm256_packus_epi16, _mm256_packus_epi32, _mm256_permute4x64_epi64,
    _mm256_permutevar8x32_epi32, _mm256_set1_epi32, _mm256_set1_ps, _mm256_setr_epi32,
    _mm256_setzero_ps, _mm256_storeu_ps, _mm256_storeu_si256,
};

use super::isa::{
    Avx2Fma, Avx2Int8, Avx2Pairs, Epilogue, Int8, Isa, Kernel, MAX_MR, VnniEncoding, vectorize_with,
};

/// Output pixels per tile.
const MR: usize = 14;
/// Output channels per tile: two vectors of eight `f32` or `i32` sums.
const NR: usize = 16;
/// Reduction steps per turn of the row groups: that much of the weight panel (4 KiB) and of
/// the 14 rows stays in L1 while the three groups pass over it.
const WIDE_CHUNK: usize = 64;

impl Kernel for Avx2Fma {
    const ISA: Isa = Isa::Avx2;
    const MR: usize = MR;
    const NR: usize = NR;
    const PREFETCH_NEXT_INPUT: bool = true;

    #[inline(always)]
    fn vectorize<R>(self, f: impl FnOnce() -> R) -> R {
        vectorize_with!("avx2,fma", f, self)
    }

    #[inline]
    unsafe fn tile<const STEP: usize, const SPLIT: bool>(
        self,
        a: *const f32,
        jump: usize,
        runs: &[(usize, usize)],
        b: *const f32,
        outs: &[*mut f32; MAX_MR],
        ep: &Epilogue<'_>,
    ) {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `self` proves AVX2 and FMA; the pointers are as the caller's contract says.
        unsafe {
            wide_tile::<STEP, SPLIT, false>(a, jump, runs, b, outs, ep, Words::Float);
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = (a, jump, runs, b, outs, ep);
            self.never()
        }
    }

    #[inline]
    fn copy(self, dst: &mut [f32], src: &[f32]) {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `self` proves AVX2.
        unsafe {
            copy(dst, src);
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = (dst, src);
            self.never()
        }
    }

    fn winograd(self) -> Option<Avx2Fma> {
        Some(self)
    }
}

/// The integer kernels' [`Kernel::tile`]: [`wide_tile`] on `words`, after checking the scales
/// it reads.
///
/// # Safety
/// As [`Kernel::tile`] (with `NR` 16), and the CPU must run `words`' instructions (AVX2 and
/// FMA, which `isa` proves, and for [`Words::Vnni`] its encoding of `vpdpbusd`).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn int_tile<const STEP: usize, const SPLIT: bool>(
    isa: Avx2Fma,
    a: *const f32,
    jump: usize,
    runs: &[(usize, usize)],
    b: *const f32,
    outs: &[*mut f32; MAX_MR],
    ep: &Epilogue<'_>,
    words: Words,
) {
    ep.assert_int8(NR);
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `isa` proves AVX2 and FMA, the caller the rest of `words`' instructions; the
    // pointers are as the caller's contract says, and the scales were checked above.
    unsafe {
        let _ = isa;
        wide_tile::<STEP, SPLIT, true>(a, jump, runs, b, outs, ep, words);
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (a, jump, runs, b, outs, ep, words);
        isa.never()
    }
}

/// `impl Kernel` for an integer kernel on AVX2: `$token`'s tile is [`int_tile`] on the
/// [`Words`] that `$words` gives for the token, `$per_word` values to a word.
macro_rules! int_kernel {
    ($(#[$doc:meta])* $token:ty, $per_word:literal, $words:expr) => {
        $(#[$doc])*
        impl Kernel for $token {
            const ISA: Isa = Isa::Avx2;
            const MR: usize = MR;
            const NR: usize = NR;
            const VALUES_PER_WORD: usize = $per_word;

            #[inline(always)]
            fn vectorize<R>(self, f: impl FnOnce() -> R) -> R {
                self.avx2().vectorize(f)
            }

            #[inline]
            unsafe fn tile<const STEP: usize, const SPLIT: bool>(
                self,
                a: *const f32,
                jump: usize,
                runs: &[(usize, usize)],
                b: *const f32,
                outs: &[*mut f32; MAX_MR],
                ep: &Epilogue<'_>,
            ) {
                let words: fn(Self) -> Words = $words;
                // SAFETY: the token proves AVX2 and FMA, and the instructions of the words
                // it names (`vpdpbusd`'s encoding only where it proves it); the rest is the
                // caller's contract.
                unsafe {
                    int_tile::<STEP, SPLIT>(self.avx2(), a, jump, runs, b, outs, ep, words(self))
                }
            }

            #[inline]
            fn copy(self, dst: &mut [f32], src: &[f32]) {
                self.avx2().copy(dst, src);
            }
        }
    };
}

int_kernel!(
    /// The int8 kernel: the AVX2 tile on words of four bytes ([`super::int8`]), with
    /// `vpdpbusd` where the token proves AVX-VNNI.
    Avx2Int8,
    4,
    |isa| isa
        .vnni()
        .map_or(Words::Quads, |v| Words::Vnni(v.encoding()))
);

int_kernel!(
    /// The kernel on words of two `i16`: the matrix products of the int8 network's Winograd
    /// 3x3s ([`super::winograd`]).
    Avx2Pairs,
    2,
    |_| Words::Pairs
);

/// The int8 engine's passes over `f32` activations, vectorised with AVX2.
impl Avx2Fma {
    /// The largest of `acc` and `values` (NaN ignored).
    pub(crate) fn max(self, values: &[f32], acc: f32) -> f32 {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `self` proves AVX2.
        unsafe {
            max(values, acc)
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = (values, acc);
            self.never()
        }
    }

    /// `values` quantised to bytes, four to a word of `out` (the first in the lowest byte):
    /// `round(v * inv)` (ties to even) clamped to 0..=255, NaN to 0.
    ///
    /// # Panics
    /// If `out` does not hold `values.len() / 4` words, or that is not whole.
    pub(crate) fn quantize_u8(self, values: &[f32], inv: f32, out: &mut [f32]) {
        assert!(
            values.len().is_multiple_of(4) && out.len() * 4 == values.len(),
            "four values per word"
        );
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `self` proves AVX2; the lengths were checked.
        unsafe {
            quantize_u8(values, inv, out)
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = (values, inv, out);
            self.never()
        }
    }

    /// `values` as 16-bit codes, two to a word of `out` (the first in the low half):
    /// `round(v * inv)` (ties to even) clamped to `-limit..=limit`, NaN to `-limit`.
    ///
    /// # Panics
    /// If `values` is not a whole number of 16, `out` does not hold `values.len() / 2` words,
    /// or `limit` is not within `1..=32767`.
    pub(crate) fn code_pairs(self, values: &[f32], inv: f32, limit: i32, out: &mut [f32]) {
        assert!(
            values.len().is_multiple_of(16) && out.len() * 2 == values.len(),
            "two values per word, sixteen at a time"
        );
        assert!((1..=32_767).contains(&limit), "a 16-bit limit");
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `self` proves AVX2; the lengths were checked.
        unsafe {
            code_pairs(values, inv, limit as f32, out)
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = (values, inv, limit, out);
            self.never()
        }
    }
}

/// See [`Avx2Fma::code_pairs`].
///
/// # Safety
/// AVX2 must be available; `values` a multiple of 16 long, `out` half as long.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn code_pairs(values: &[f32], inv: f32, limit: f32, out: &mut [f32]) {
    let (k, hi, lo) = (
        _mm256_set1_ps(inv),
        _mm256_set1_ps(limit),
        _mm256_set1_ps(-limit),
    );
    for (v, o) in values.chunks_exact(16).zip(out.chunks_exact_mut(8)) {
        // SAFETY: `v` holds 16 floats and `o` 8 words (32 bytes). `max_ps` returns its second
        // operand when either is NaN: NaN becomes `-limit`; the clamp keeps every value
        // within `i16`, so the saturating pack changes none.
        unsafe {
            let code = |at: *const f32| {
                let x = _mm256_mul_ps(_mm256_loadu_ps(at), k);
                _mm256_cvtps_epi32(_mm256_min_ps(_mm256_max_ps(x, lo), hi))
            };
            // The pack interleaves the halves by 128-bit lane; the permutation puts them back
            // in order.
            let packed = _mm256_packs_epi32(code(v.as_ptr()), code(v.as_ptr().add(8)));
            let ordered = _mm256_permute4x64_epi64::<0b11_01_10_00>(packed);
            _mm256_storeu_si256(o.as_mut_ptr().cast(), ordered);
        }
    }
}

/// See [`Avx2Fma::max`].
///
/// # Safety
/// AVX2 must be available.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn max(values: &[f32], acc: f32) -> f32 {
    let mut chunks = values.chunks_exact(8);
    let mut m = _mm256_set1_ps(acc);
    for c in &mut chunks {
        // SAFETY: the chunk holds 8 floats. `max_ps` returns its second operand when either is
        // NaN, so a NaN value leaves the maximum as it was.
        m = _mm256_max_ps(unsafe { _mm256_loadu_ps(c.as_ptr()) }, m);
    }
    let mut lanes = [0f32; 8];
    // SAFETY: `lanes` holds 8 floats.
    unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), m) };
    lanes
        .into_iter()
        .chain(chunks.remainder().iter().copied())
        .fold(acc, f32::max)
}

/// Values per step of [`quantize_u8`]: four vectors, one vector of bytes.
const QUANT_STEP: usize = 32;

/// See [`Avx2Fma::quantize_u8`].
///
/// # Safety
/// AVX2 must be available; `out.len() * 4 == values.len()`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn quantize_u8(values: &[f32], inv: f32, out: &mut [f32]) {
    let scale = _mm256_set1_ps(inv);
    let top = _mm256_set1_ps(255.0);
    // After the two packs the bytes of 32 values lie as a0-3 b0-3 c0-3 d0-3 | a4-7 b4-7 c4-7
    // d4-7 (by 32-bit groups); this puts them back in order.
    let order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    let mut src = values.chunks_exact(QUANT_STEP);
    let mut dst = out.chunks_exact_mut(QUANT_STEP / 4);
    for (s, d) in (&mut src).zip(&mut dst) {
        // SAFETY: `s` holds 32 floats and `d` 8 words (32 bytes).
        unsafe {
            let q = |i: usize| {
                let v = _mm256_mul_ps(_mm256_loadu_ps(s.as_ptr().add(8 * i)), scale);
                // At most 255 first (`min_ps` returns its second operand, a NaN, when either is
                // NaN), then round to nearest (the default MXCSR mode): NaN and values below
                // i32's range become i32::MIN, which the unsigned saturating pack turns into
                // 0, as it does every negative.
                _mm256_cvtps_epi32(_mm256_min_ps(top, v))
            };
            let ab = _mm256_packus_epi32(q(0), q(1));
            let cd = _mm256_packus_epi32(q(2), q(3));
            let bytes = _mm256_permutevar8x32_epi32(_mm256_packus_epi16(ab, cd), order);
            _mm256_storeu_si256(d.as_mut_ptr().cast(), bytes);
        }
    }
    for (s, d) in src.remainder().chunks_exact(4).zip(dst.into_remainder()) {
        let code = |v: f32| (v * inv).round_ties_even().clamp(0.0, 255.0) as u8;
        *d = f32::from_bits(u32::from_le_bytes([
            code(s[0]),
            code(s[1]),
            code(s[2]),
            code(s[3]),
        ]));
    }
}

/// What a 32-bit word of a tile's inputs and weights holds, and so how [`wide_tile`]
/// multiplies and adds them.
#[derive(Debug, Clone, Copy)]
enum Words {
    /// One `f32`.
    Float,
    /// Four bytes (activations `u8`, weights `i8`), by `vpmaddubsw` and `vpmaddwd`.
    Quads,
    /// Four bytes, by `vpdpbusd` in this encoding.
    Vnni(VnniEncoding),
    /// Two `i16`, by `vpmaddwd`.
    Pairs,
}

/// [`Kernel::tile`] for AVX2 and FMA: 14 rows by 16 channels (two vectors), in
/// three groups of 5, 5 and 4 rows (see the module documentation). With `INT`, the int8
/// kernel's words, each four bytes (four consecutive input channels, and their four weights),
/// multiplied and summed exactly into 32-bit integers ([`multiply_add_quads_5x16`]), then
/// scaled by the panel's [`Epilogue::scale`] and each row's input scale ([`Epilogue::row_scale`])
/// into floats; with `vnni` as well, multiplied and summed by AVX-VNNI's `vpdpbusd`
/// ([`multiply_add_vnni_5x16`]) instead, in its encoding.
///
/// # Safety
/// AVX2 and FMA must be available (and `vnni`'s encoding of `vpdpbusd`: AVX-VNNI for VEX,
/// AVX512-VNNI and AVX512VL for EVEX), and the pointers as [`Kernel::tile`] says (with `NR`
/// 16).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn wide_tile<const STEP: usize, const SPLIT: bool, const INT: bool>(
    a: *const f32,
    jump: usize,
    runs: &[(usize, usize)],
    b: *const f32,
    outs: &[*mut f32; MAX_MR],
    ep: &Epilogue<'_>,
    words: Words,
) {
    const { assert!(MR == 14 && MR <= MAX_MR) };
    let rows = ep.row_img.len();
    // Written whole by the first chunk's row groups, which start their sums from zero.
    let mut sums = std::mem::MaybeUninit::<Sums>::uninit();
    let mut fresh = true;
    // SAFETY: the caller's contract covers every access below.
    unsafe {
        // Each row's output is stored after the multiply-adds, and the partial sums or the
        // residual in it read first: start fetching its line now (`prefetcht0`). The int8
        // kernel fetches every row's line (its convolutions waited on them: 9 % less time per
        // pass); the `f32` kernel only those it reads (fetching all was 3 % slower there).
        // `prefetchw` (for writing; by `asm!`, as Rust's `_MM_HINT_ET0` compiles to
        // `prefetcht0` without the unstable `prfchw` feature) was no faster on Zen 3. See
        // `benches/README.md`.
        let from_out = !ep.first || ep.accumulate;
        if INT || from_out {
            for out in &outs[..rows] {
                _mm_prefetch::<_MM_HINT_T0>(out.cast::<i8>());
            }
        }
        // Row `r`'s patch: rows 0..7 from `a`, rows 7..14 from their own base.
        let a1 = if SPLIT {
            a.add(jump)
        } else {
            a.add(MR / 2 * STEP)
        };
        let row = |r: usize| {
            if r < MR / 2 {
                a.add(r * STEP)
            } else {
                a1.add((r - MR / 2) * STEP)
            }
        };
        let bases: [*const f32; MR] = std::array::from_fn(row);
        let acc = sums.as_mut_ptr().cast::<f32>();
        let mut bp = b;
        for &(off, len) in runs {
            let mut k = 0;
            while k < len {
                let n = WIDE_CHUNK.min(len - k);
                let p = |r: usize| bases[r].add(off + k);
                let w = bp.add(k * NR);
                let (g0, g1, g2) = (acc, acc.add(5 * NR), acc.add(10 * NR));
                // The three row groups, with the loops `$five` and `$four`.
                macro_rules! groups {
                    ($five:ident, $four:ident) => {{
                        $five([p(0), p(1), p(2), p(3), p(4)], w, n, g0, fresh);
                        $five([p(5), p(6), p(7), p(8), p(9)], w, n, g1, fresh);
                        $four([p(10), p(11), p(12), p(13)], w, n, g2, fresh);
                    }};
                }
                match (INT, words) {
                    (true, Words::Vnni(VnniEncoding::Vex)) => {
                        groups!(multiply_add_vnni_5x16, multiply_add_vnni_4x16)
                    }
                    #[cfg(test)]
                    (true, Words::Vnni(VnniEncoding::Evex)) => {
                        groups!(multiply_add_evex_5x16, multiply_add_evex_4x16)
                    }
                    (true, Words::Pairs) => {
                        groups!(multiply_add_pairs_5x16, multiply_add_pairs_4x16)
                    }
                    (true, _) => groups!(multiply_add_quads_5x16, multiply_add_quads_4x16),
                    (false, _) => groups!(multiply_add_5x16, multiply_add_4x16),
                }
                fresh = false;
                k += n;
            }
            bp = bp.add(len * NR);
        }
        if fresh {
            // No reduction step ran (an empty patch): every sum is zero.
            sums.write(Sums([[0.0; NR]; MR]));
        }
        // SAFETY: the first chunk's three row groups stored all 14 rows of sums, or the line
        // above did.
        let sums = sums.assume_init_ref();
        let zero = _mm256_setzero_ps();
        let bias = if ep.last {
            [
                _mm256_loadu_ps(ep.bias.as_ptr()),
                _mm256_loadu_ps(ep.bias.as_ptr().add(8)),
            ]
        } else {
            [zero; 2]
        };
        // Integer sums: to floats, dequantised by the weights' scale per channel and the
        // input's per row.
        let scale = if INT {
            [
                _mm256_loadu_ps(ep.scale.as_ptr()),
                _mm256_loadu_ps(ep.scale.as_ptr().add(8)),
            ]
        } else {
            [zero; 2]
        };
        // The last block's pooled sums and maxima, of one image's rows at a time: kept in
        // registers, added to the image's totals when the image changes and at the end.
        let pooling = ep.last && !ep.pool.is_null();
        let maxing = ep.last && !ep.max.is_null();
        let lanes = |image: usize| ep.max.add(image * NR);
        let mut image = ep.row_img[0];
        let mut pool = [zero; 2];
        let mut max = if maxing {
            [
                _mm256_loadu_ps(lanes(image)),
                _mm256_loadu_ps(lanes(image).add(8)),
            ]
        } else {
            [zero; 2]
        };
        for (r, ((&row_out, &row_img), row_sums)) in
            outs.iter().zip(ep.row_img).zip(&sums.0).enumerate()
        {
            // The row's dequantising scale: the weights' per channel times the input's.
            let dequantise = if INT {
                let s = _mm256_set1_ps(ep.row_scale[r]);
                [_mm256_mul_ps(scale[0], s), _mm256_mul_ps(scale[1], s)]
            } else {
                [zero; 2]
            };
            if row_img != image {
                if pooling {
                    flush_pool(ep, image, &mut pool);
                }
                if maxing {
                    flush_max(lanes(image), &mut max);
                }
                image = row_img;
                if maxing {
                    max = [
                        _mm256_loadu_ps(lanes(image)),
                        _mm256_loadu_ps(lanes(image).add(8)),
                    ];
                }
            }
            for h in 0..2 {
                let out = row_out.add(8 * h);
                let mut v = _mm256_loadu_ps(row_sums.as_ptr().add(8 * h));
                if INT {
                    v = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_castps_si256(v)), dequantise[h]);
                }
                if from_out {
                    v = _mm256_add_ps(v, _mm256_loadu_ps(out));
                }
                if ep.last {
                    v = _mm256_add_ps(v, bias[h]);
                    if INT && !ep.image_bias.is_null() {
                        let at = ep.image_bias.add(row_img * ep.pool_stride + 8 * h);
                        v = _mm256_add_ps(v, _mm256_loadu_ps(at));
                    }
                    if ep.relu {
                        v = _mm256_max_ps(v, zero);
                    }
                    pool[h] = _mm256_add_ps(pool[h], v);
                    // `max_ps` returns its second operand when either is NaN: NaN never wins.
                    max[h] = _mm256_max_ps(v, max[h]);
                }
                _mm256_storeu_ps(out, v);
            }
        }
        if pooling {
            flush_pool(ep, image, &mut pool);
        }
        if maxing {
            flush_max(lanes(image), &mut max);
        }
    }
}

/// Stores an image's lane maxima of a tile (which started from the stored ones).
///
/// # Safety
/// AVX2 must be available; `at` must address 16 floats.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn flush_max(at: *mut f32, max: &mut [__m256; 2]) {
    // SAFETY: as the contract says.
    unsafe {
        _mm256_storeu_ps(at, max[0]);
        _mm256_storeu_ps(at.add(8), max[1]);
    }
}

/// Adds one image's channel sums of a tile to its pooled sums, and clears them.
///
/// # Safety
/// AVX2 must be available; `ep.pool + image * ep.pool_stride` must address 16 floats.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn flush_pool(ep: &Epilogue<'_>, image: usize, pool: &mut [__m256; 2]) {
    // SAFETY: as the contract says.
    unsafe {
        let at = ep.pool.add(image * ep.pool_stride);
        for (h, s) in pool.iter_mut().enumerate() {
            let p = at.add(8 * h);
            _mm256_storeu_ps(p, _mm256_add_ps(_mm256_loadu_ps(p), *s));
            *s = _mm256_setzero_ps();
        }
    }
}

/// A wide tile's running sums, 16 per row, aligned for whole-vector loads.
#[cfg(target_arch = "x86_64")]
#[repr(align(64))]
struct Sums([[f32; NR]; MR]);

/// Defines a row group's multiply-add loop: `acc[j][0..16] += sum_i rows[j][i] * b[i][0..16]`
/// for `i < len` and each row `j` of the group, with the sums (16 per row) loaded into
/// registers at the start (with `fresh`, set to zero instead: a tile's first chunk, whose sums
/// would be zeros stored only to be loaded) and stored back at the end. Each row names its
/// pointer operand and its two accumulator registers; the loop body is the `f32` one (a
/// broadcast and two FMAs per row) or the int8 one ([`multiply_add_quads_5x16`]).
macro_rules! row_group {
    // The five-row and four-row loops of one kind.
    (
        $kind:ident,
        $(#[$doc5:meta])* $five:ident,
        $(#[$doc4:meta])* $four:ident $(,)?
    ) => {
        row_group!(
            $(#[$doc5])* $five, $kind, 5,
            [(r0, 0, 0, 1), (r1, 1, 2, 3), (r2, 2, 4, 5), (r3, 3, 6, 7), (r4, 4, 8, 9)]
        );
        row_group!(
            $(#[$doc4])* $four, $kind, 4,
            [(r0, 0, 0, 1), (r1, 1, 2, 3), (r2, 2, 4, 5), (r3, 3, 6, 7)]
        );
    };
    (
        $(#[$doc:meta])*
        $name:ident, $kind:ident, $n:literal,
        [$(($row:ident, $i:literal, $lo:literal, $hi:literal)),*]
    ) => {
        $(#[$doc])*
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "avx2,fma")]
        #[inline]
        unsafe fn $name(
            rows: [*const f32; $n],
            b: *const f32,
            len: usize,
            acc: *mut f32,
            fresh: bool,
        ) {
            // SAFETY: the loop reads `len` values of each row, `len` 16-value rows of `b` (and
            // the ones), and reads (unless `fresh`) and writes the group's sums in `acc`, all
            // valid by the contract: the paired steps stop at the even count `len & !1` (none
            // for a count below 2), and one more step runs for an odd `len`.
            unsafe {
                asm!(
                    "vmovdqu ymm12, [{ones}]",
                    "test {fresh}, {fresh}",
                    "jnz 5f",
                    $(
                        concat!("vmovdqu ymm", $lo, ", [{acc} + 64 * ", $i, "]"),
                        concat!("vmovdqu ymm", $hi, ", [{acc} + 64 * ", $i, " + 32]"),
                    )*
                    "jmp 6f",
                    "5:",
                    $(
                        concat!("vpxor ymm", $lo, ", ymm", $lo, ", ymm", $lo),
                        concat!("vpxor ymm", $hi, ", ymm", $hi, ", ymm", $hi),
                    )*
                    "6:",
                    "xor {i}, {i}",
                    "test {pairs}, {pairs}",
                    "jz 3f",
                    "2:",
                    "vmovdqu ymm10, [{b}]",
                    "vmovdqu ymm11, [{b} + 32]",
                    $(row_group!(@step $kind, $row, $lo, $hi, "0"),)*
                    "vmovdqu ymm10, [{b} + 64]",
                    "vmovdqu ymm11, [{b} + 96]",
                    $(row_group!(@step $kind, $row, $lo, $hi, "4"),)*
                    "add {b}, 128",
                    "add {i}, 2",
                    "cmp {i}, {pairs}",
                    "jne 2b",
                    "3:",
                    "cmp {i}, {n}",
                    "je 4f",
                    "vmovdqu ymm10, [{b}]",
                    "vmovdqu ymm11, [{b} + 32]",
                    $(row_group!(@step $kind, $row, $lo, $hi, "0"),)*
                    "4:",
                    $(
                        concat!("vmovdqu [{acc} + 64 * ", $i, "], ymm", $lo),
                        concat!("vmovdqu [{acc} + 64 * ", $i, " + 32], ymm", $hi),
                    )*
                    $($row = in(reg) rows[$i],)*
                    b = inout(reg) b => _,
                    n = in(reg) len,
                    pairs = in(reg) len & !1,
                    i = out(reg) _,
                    acc = in(reg) acc,
                    fresh = in(reg) usize::from(fresh),
                    ones = in(reg) ONES.0.as_ptr(),
                    out("ymm0") _, out("ymm1") _, out("ymm2") _, out("ymm3") _,
                    out("ymm4") _, out("ymm5") _, out("ymm6") _, out("ymm7") _,
                    out("ymm8") _, out("ymm9") _, out("ymm10") _, out("ymm11") _,
                    out("ymm12") _, out("ymm13") _, out("ymm14") _, out("ymm15") _,
                    options(nostack),
                );
            }
        }
    };
    // One row's step in `f32`: the broadcast value times the two weight vectors.
    (@step f32, $row:ident, $lo:literal, $hi:literal, $off:literal) => {
        concat!(
            "vbroadcastss ymm13, [{", stringify!($row), "} + 4 * {i} + ", $off, "]\n",
            "vfmadd231ps ymm", $lo, ", ymm13, ymm10\n",
            "vfmadd231ps ymm", $hi, ", ymm13, ymm11",
        )
    };
    // One row's step on words of four bytes: `vpmaddubsw` multiplies the bytes and adds them
    // in pairs into `i16`, `vpmaddwd` by the ones (ymm12) adds the pairs into `i32`, `vpaddd`
    // accumulates; the broadcast register takes the second product.
    (@step quads, $row:ident, $lo:literal, $hi:literal, $off:literal) => {
        concat!(
            "vpbroadcastd ymm13, [{", stringify!($row), "} + 4 * {i} + ", $off, "]\n",
            "vpmaddubsw ymm14, ymm13, ymm10\n",
            "vpmaddwd ymm14, ymm14, ymm12\n",
            "vpaddd ymm", $lo, ", ymm", $lo, ", ymm14\n",
            "vpmaddubsw ymm13, ymm13, ymm11\n",
            "vpmaddwd ymm13, ymm13, ymm12\n",
            "vpaddd ymm", $hi, ", ymm", $hi, ", ymm13",
        )
    };
    // One row's step on words of two `i16`: `vpmaddwd` multiplies them and adds each word's
    // two products into `i32`, `vpaddd` accumulates.
    (@step pairs, $row:ident, $lo:literal, $hi:literal, $off:literal) => {
        concat!(
            "vpbroadcastd ymm13, [{", stringify!($row), "} + 4 * {i} + ", $off, "]\n",
            "vpmaddwd ymm14, ymm13, ymm10\n",
            "vpaddd ymm", $lo, ", ymm", $lo, ", ymm14\n",
            "vpmaddwd ymm13, ymm13, ymm11\n",
            "vpaddd ymm", $hi, ", ymm", $hi, ", ymm13",
        )
    };
    // One row's step with AVX-VNNI: `vpdpbusd` multiplies the bytes, adds each word's four
    // products and accumulates, in one instruction per vector (VEX-encoded, 256 bits).
    (@step vnni, $row:ident, $lo:literal, $hi:literal, $off:literal) => {
        concat!(
            "vpbroadcastd ymm13, [{", stringify!($row), "} + 4 * {i} + ", $off, "]\n",
            "{{vex}} vpdpbusd ymm", $lo, ", ymm13, ymm10\n",
            "{{vex}} vpdpbusd ymm", $hi, ", ymm13, ymm11",
        )
    };
    // The same step EVEX-encoded (AVX512-VNNI with AVX512VL), the tests' stand-in for it.
    (@step evex, $row:ident, $lo:literal, $hi:literal, $off:literal) => {
        concat!(
            "vpbroadcastd ymm13, [{", stringify!($row), "} + 4 * {i} + ", $off, "]\n",
            "{{evex}} vpdpbusd ymm", $lo, ", ymm13, ymm10\n",
            "{{evex}} vpdpbusd ymm", $hi, ", ymm13, ymm11",
        )
    };
}

row_group!(
    f32,
    /// `acc[j][0..16] += sum_i rows[j][i] * b[i][0..16]` for `i < len` and the five rows `j`
    /// (80 sums of `acc`); with `fresh`, `acc[j][0..16] = sum_i ...` (`acc` is only written).
    ///
    /// # Safety
    /// AVX2 and FMA must be available; `rows[j] + i` and `b + 16 * i .. + 16` readable for
    /// `i < len`, and `acc` 80 floats (`len` may be 0: the sums are then stored as they were
    /// loaded, or as zeros with `fresh`).
    multiply_add_5x16,
    /// [`multiply_add_5x16`] for four rows (64 sums of `acc`).
    ///
    /// # Safety
    /// As [`multiply_add_5x16`], for four rows.
    multiply_add_4x16,
);

row_group!(
    quads,
    /// [`multiply_add_5x16`] on words that each hold four bytes: the sums are 32-bit integers,
    /// and each step adds `sum_q rows[j][i].q * b[i][c].q` (`q < 4`, activations unsigned,
    /// weights signed) to lane `c`, exactly: with activations at most 255, weights within
    /// +-127, and two weights of the same sign in a pair at most 128 in magnitude together
    /// ([`Int8::pair_limit`](super::isa::Int8::pair_limit)), a pair of products is at most
    /// 32,640, so `vpmaddubsw` never saturates; a sum of up to
    /// [`MAX_WORDS`](super::int8::MAX_WORDS) words cannot overflow.
    ///
    /// # Safety
    /// As [`multiply_add_5x16`] (AVX2 for these instructions).
    multiply_add_quads_5x16,
    /// [`multiply_add_quads_5x16`] for four rows (64 sums of `acc`).
    ///
    /// # Safety
    /// As [`multiply_add_5x16`], for four rows.
    multiply_add_quads_4x16,
);

row_group!(
    vnni,
    /// [`multiply_add_quads_5x16`] with AVX-VNNI: the same exact sums (`vpdpbusd` adds a
    /// word's four products in 32 bits, where they cannot overflow either).
    ///
    /// # Safety
    /// As [`multiply_add_5x16`], and AVX-VNNI must be available.
    multiply_add_vnni_5x16,
    /// [`multiply_add_vnni_5x16`] for four rows (64 sums of `acc`).
    ///
    /// # Safety
    /// As [`multiply_add_vnni_5x16`], for four rows.
    multiply_add_vnni_4x16,
);

row_group!(
    pairs,
    /// [`multiply_add_5x16`] on words that each hold two `i16`: the sums are 32-bit integers,
    /// and each step adds `sum_q rows[j][i].q * b[i][c].q` (`q < 2`) to lane `c`, exactly as
    /// long as no sum leaves the `i32` range (`vpmaddwd` overflows only for two products of
    /// -32,768 by -32,768; [`super::winograd`] bounds its values well inside).
    ///
    /// # Safety
    /// As [`multiply_add_5x16`] (AVX2 for these instructions).
    multiply_add_pairs_5x16,
    /// [`multiply_add_pairs_5x16`] for four rows (64 sums of `acc`).
    ///
    /// # Safety
    /// As [`multiply_add_5x16`], for four rows.
    multiply_add_pairs_4x16,
);

row_group!(
    evex,
    /// [`multiply_add_vnni_5x16`] with EVEX-encoded `vpdpbusd`: the tests' stand-in for it
    /// on CPUs with AVX512-VNNI and AVX512VL but not AVX-VNNI
    /// ([`Avx2Int8::evex_stand_in`](super::isa::Avx2Int8::evex_stand_in)).
    ///
    /// # Safety
    /// As [`multiply_add_5x16`], and AVX512-VNNI and AVX512VL must be available.
    #[cfg(test)]
    multiply_add_evex_5x16,
    /// [`multiply_add_evex_5x16`] for four rows (64 sums of `acc`).
    ///
    /// # Safety
    /// As [`multiply_add_evex_5x16`], for four rows.
    #[cfg(test)]
    multiply_add_evex_4x16,
);

/// Sixteen `i16` ones, for `vpmaddwd` to add pairs.
#[cfg(target_arch = "x86_64")]
#[repr(align(32))]
struct Ones([i16; 16]);
#[cfg(target_arch = "x86_64")]
static ONES: Ones = Ones([1; 16]);

/// `dst.copy_from_slice(src)` in 32-byte vectors, the tail under a mask.
///
/// # Safety
/// AVX2 must be available.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn copy(dst: &mut [f32], src: &[f32]) {
    assert_eq!(dst.len(), src.len());
    let mut d = dst.chunks_exact_mut(8);
    let mut s = src.chunks_exact(8);
    for (d, s) in (&mut d).zip(&mut s) {
        // SAFETY: both chunks hold 8 floats.
        unsafe { _mm256_storeu_ps(d.as_mut_ptr(), _mm256_loadu_ps(s.as_ptr())) };
    }
    let (d, s) = (d.into_remainder(), s.remainder());
    if !d.is_empty() {
        // Lanes below the tail's length.
        let mask = _mm256_cmpgt_epi32(
            _mm256_set1_epi32(d.len() as i32),
            _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
        );
        // SAFETY: the mask covers exactly the `d.len() < 8` floats both slices hold.
        unsafe {
            _mm256_maskstore_ps(d.as_mut_ptr(), mask, _mm256_maskload_ps(s.as_ptr(), mask));
        }
    }
}
