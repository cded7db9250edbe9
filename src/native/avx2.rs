//! The AVX2 + FMA micro-kernel, for x86-64 CPUs without AVX-512 (Intel client CPUs since Alder
//! Lake, AMD before Zen 4): a 14 x 8 output tile.
//!
//! AVX2 has 16 256-bit registers: 14 accumulators (one 8-float vector per output pixel), the
//! weight vector and the broadcast input value fill them all, which is why the multiply-add
//! loop is written in assembly ([`multiply_add`]). Keeping the AVX-512 tile's 14 rows keeps
//! the driver's pixel tiling, and with it the direct path over 56-, 28-, 14- and 7-wide maps;
//! the price is one broadcast load per multiply-add (a 6 x 16 tile would need 0.5), which
//! cores with two or three load ports absorb: the loop runs at 85 % of the FMA peak of a Zen 3
//! core on data in L1.

#[cfg(target_arch = "x86_64")]
use std::arch::asm;
#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::{
    __m256, _MM_HINT_T0, _mm_prefetch, _mm256_add_ps, _mm256_castps_si256, _mm256_cmpgt_epi32,
    _mm256_cvtepi32_ps, _mm256_cvtps_epi32, _mm256_loadu_ps, _mm256_maskload_ps,
    _mm256_maskstore_ps, _mm256_max_ps, _mm256_min_ps, _mm256_mul_ps, _mm256_packus_epi16,
    _mm256_packus_epi32, _mm256_permutevar8x32_epi32, _mm256_set1_epi32, _mm256_set1_ps,
    _mm256_setr_epi32, _mm256_setzero_ps, _mm256_storeu_ps, _mm256_storeu_si256,
};

use super::isa::{Avx2Fma, Avx2Int8, Epilogue, Isa, Kernel, MAX_MR};

/// Output pixels per tile.
const MR: usize = 14;
/// Output channels per tile: one 8-float vector.
const NR: usize = 8;

impl Kernel for Avx2Fma {
    const ISA: Isa = Isa::Avx2;
    const MR: usize = MR;
    const NR: usize = NR;

    #[inline(always)]
    fn vectorize<R>(self, f: impl FnOnce() -> R) -> R {
        #[cfg(target_arch = "x86_64")]
        {
            #[target_feature(enable = "avx2,fma")]
            fn with_avx2<R>(f: impl FnOnce() -> R) -> R {
                f()
            }
            // SAFETY: `self` exists, so `Avx2Fma::detect` found AVX2 and FMA on this CPU.
            unsafe { with_avx2(f) }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = f;
            self.never()
        }
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
            tile_kernel::<STEP, SPLIT, false>(a, jump, runs, b, outs, ep);
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
}

/// The int8 kernel: the AVX2 tile on words of four bytes ([`super::int8`]).
impl Kernel for Avx2Int8 {
    const ISA: Isa = Isa::Avx2;
    const MR: usize = MR;
    const NR: usize = NR;
    const VALUES_PER_WORD: usize = 4;

    #[inline(always)]
    fn vectorize<R>(self, f: impl FnOnce() -> R) -> R {
        self.fp32().vectorize(f)
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
        assert_eq!(ep.scale.len(), NR, "an int8 tile needs its panel's scales");
        assert!(
            ep.row_img.iter().all(|&i| i < ep.image_scale.len()),
            "an int8 tile needs its images' scales"
        );
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `self` proves AVX2 and FMA; the pointers are as the caller's contract says,
        // and the scales were checked above.
        unsafe {
            tile_kernel::<STEP, SPLIT, true>(a, jump, runs, b, outs, ep);
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = (a, jump, runs, b, outs, ep);
            self.fp32().never()
        }
    }

    #[inline]
    fn copy(self, dst: &mut [f32], src: &[f32]) {
        self.fp32().copy(dst, src);
    }
}

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
    let mut src = values.chunks_exact(32);
    let mut dst = out.chunks_exact_mut(8);
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

/// [`Kernel::tile`] for AVX2 and FMA: `f32` values, or with `INT` the int8 kernel's words,
/// each four bytes (four consecutive input channels, and their four weights), multiplied and
/// summed exactly into 32-bit integers ([`multiply_add_quads`]), then scaled by the panel's
/// [`Epilogue::scale`] and each row's image's [`Epilogue::image_scale`] into floats.
///
/// # Safety
/// AVX2 and FMA must be available, and the pointers as [`Kernel::tile`] says; with `INT`,
/// `ep.scale` must hold `NR` floats.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn tile_kernel<const STEP: usize, const SPLIT: bool, const INT: bool>(
    a: *const f32,
    jump: usize,
    runs: &[(usize, usize)],
    b: *const f32,
    outs: &[*mut f32; MAX_MR],
    ep: &Epilogue<'_>,
) {
    const { assert!(MR == 14 && MR <= MAX_MR) };
    let rows = ep.row_img.len();
    // SAFETY: the caller's contract covers every access below.
    unsafe {
        // The partial sums or the residual in the output are added after the multiply-adds:
        // start fetching them now.
        let from_out = !ep.first || ep.accumulate;
        if from_out {
            for out in &outs[..rows] {
                _mm_prefetch::<_MM_HINT_T0>(out.cast::<i8>());
            }
        }
        // All bits zero: 0.0 in every lane, or the integer 0.
        let mut acc = [_mm256_setzero_ps(); MR];
        let mut bp = b;
        for &(off, cin) in runs {
            if cin == 0 {
                continue;
            }
            // Rows 0..7 are read from `a + off`, rows 7..14 from their own base, one STEP
            // apart: the next rows of the same evenly spaced tile, or the second segment.
            let a0 = a.add(off);
            let a1 = if SPLIT {
                a.add(jump + off)
            } else {
                a0.add(MR / 2 * STEP)
            };
            if INT {
                multiply_add_quads::<STEP>(&mut acc, a0, a1, bp, cin);
            } else {
                multiply_add::<STEP>(&mut acc, a0, a1, bp, cin);
            }
            bp = bp.add(cin * NR);
        }
        if INT {
            // The registers hold 32-bit integer sums: to floats, dequantised by the weights'
            // scale per channel and the input's per image.
            let scale = _mm256_loadu_ps(ep.scale.as_ptr());
            let image_scale =
                |image: usize| _mm256_mul_ps(scale, _mm256_set1_ps(ep.image_scale[image]));
            if ep.row_img[0] == ep.row_img[rows - 1] {
                // One image's rows (the common case): one scale for all.
                let s = image_scale(ep.row_img[0]);
                for v in &mut acc {
                    *v = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_castps_si256(*v)), s);
                }
            } else {
                for (v, &image) in acc.iter_mut().zip(ep.row_img) {
                    *v = _mm256_mul_ps(
                        _mm256_cvtepi32_ps(_mm256_castps_si256(*v)),
                        image_scale(image),
                    );
                }
            }
        }
        // The end of the tile (in this function: a call would pass the accumulators through
        // memory): the partial sums or residual in the output added, then (last reduction
        // block) bias and ReLU, one store per row, the pooled sums and the maxima.
        if from_out {
            for r in 0..rows {
                acc[r] = _mm256_add_ps(acc[r], _mm256_loadu_ps(outs[r]));
            }
        }
        if !ep.last {
            for r in 0..rows {
                _mm256_storeu_ps(outs[r], acc[r]);
            }
            return;
        }
        let bias = _mm256_loadu_ps(ep.bias.as_ptr());
        let zero = _mm256_setzero_ps();
        // Maxima tracked, of one image's rows (the common case): taken from the registers.
        let one_image = !ep.max.is_null() && ep.row_img[0] == ep.row_img[rows - 1];
        let mut m = zero;
        for r in 0..rows {
            let mut v = _mm256_add_ps(acc[r], bias);
            if ep.relu {
                v = _mm256_max_ps(v, zero);
            }
            _mm256_storeu_ps(outs[r], v);
            if one_image {
                // `max_ps` returns its second operand when either is NaN: NaN never wins.
                m = _mm256_max_ps(v, m);
            }
        }
        if one_image {
            let at = ep.max.add(ep.row_img[0] * NR);
            _mm256_storeu_ps(at, _mm256_max_ps(_mm256_loadu_ps(at), m));
        }
        if !ep.pool.is_null() {
            // Channel sums of each image's rows, read back from L1, added to that image's
            // pooled sums when the image changes and at the end.
            let (mut s, mut image) = (zero, ep.row_img[0]);
            for (&out, &row_img) in outs.iter().zip(ep.row_img) {
                if row_img != image {
                    let at = ep.pool.add(image * ep.pool_stride);
                    _mm256_storeu_ps(at, _mm256_add_ps(_mm256_loadu_ps(at), s));
                    (s, image) = (zero, row_img);
                }
                s = _mm256_add_ps(s, _mm256_loadu_ps(out));
            }
            let at = ep.pool.add(image * ep.pool_stride);
            _mm256_storeu_ps(at, _mm256_add_ps(_mm256_loadu_ps(at), s));
        }
        if !ep.max.is_null() && !one_image {
            // Rows of two images: each image's lane maxima, from the rows read back from L1.
            // `max_ps` returns its second operand when either is NaN, so NaN never wins.
            let mut image = ep.row_img[0];
            let mut m = _mm256_loadu_ps(ep.max.add(image * NR));
            for (&out, &row_img) in outs.iter().zip(ep.row_img) {
                if row_img != image {
                    _mm256_storeu_ps(ep.max.add(image * NR), m);
                    image = row_img;
                    m = _mm256_loadu_ps(ep.max.add(image * NR));
                }
                m = _mm256_max_ps(_mm256_loadu_ps(out), m);
            }
            _mm256_storeu_ps(ep.max.add(image * NR), m);
        }
    }
}

/// `acc[r] += sum_i a_r[i] * b[i][0..8]` for `i < len`, where row `r`'s values are at
/// `a0 + r * STEP` (rows 0..7) and `a1 + (r - 7) * STEP` (rows 7..14).
///
/// Written in assembly: with the 14 accumulators, the weight vector and the broadcast value in
/// all 16 registers, LLVM keeps some accumulators on the stack and adds a store per
/// multiply-add (28 GMAC/s on one Zen 3 core, against 40 for this loop and 47 for bare FMAs).
///
/// # Safety
/// AVX2 and FMA must be available; `a0 + r * STEP + i`, `a1 + r * STEP + i` (`r < 7`) and
/// `b + 8 * i .. + 8` must be readable for `i < len`, and `len > 0`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn multiply_add<const STEP: usize>(
    acc: &mut [__m256; MR],
    a0: *const f32,
    a1: *const f32,
    b: *const f32,
    len: usize,
) {
    let [
        mut c0,
        mut c1,
        mut c2,
        mut c3,
        mut c4,
        mut c5,
        mut c6,
        mut c7,
        mut c8,
        mut c9,
        mut c10,
        mut c11,
        mut c12,
        mut c13,
    ] = *acc;
    // SAFETY: the loop reads `len` floats of each of the 14 rows (byte offsets `4 * j * STEP`
    // from the two bases, advancing 4 bytes a step) and `len` vectors of `b`, all readable by
    // the contract; it writes only the registers it names, and `len > 0` so that the count
    // does not wrap.
    unsafe {
        asm!(
            "2:",
            "vmovups ymm14, [{b}]",
            "vbroadcastss ymm15, [{a0}]",
            "vfmadd231ps ymm0, ymm15, ymm14",
            "vbroadcastss ymm15, [{a0} + {s1}]",
            "vfmadd231ps ymm1, ymm15, ymm14",
            "vbroadcastss ymm15, [{a0} + {s2}]",
            "vfmadd231ps ymm2, ymm15, ymm14",
            "vbroadcastss ymm15, [{a0} + {s3}]",
            "vfmadd231ps ymm3, ymm15, ymm14",
            "vbroadcastss ymm15, [{a0} + {s4}]",
            "vfmadd231ps ymm4, ymm15, ymm14",
            "vbroadcastss ymm15, [{a0} + {s5}]",
            "vfmadd231ps ymm5, ymm15, ymm14",
            "vbroadcastss ymm15, [{a0} + {s6}]",
            "vfmadd231ps ymm6, ymm15, ymm14",
            "vbroadcastss ymm15, [{a1}]",
            "vfmadd231ps ymm7, ymm15, ymm14",
            "vbroadcastss ymm15, [{a1} + {s1}]",
            "vfmadd231ps ymm8, ymm15, ymm14",
            "vbroadcastss ymm15, [{a1} + {s2}]",
            "vfmadd231ps ymm9, ymm15, ymm14",
            "vbroadcastss ymm15, [{a1} + {s3}]",
            "vfmadd231ps ymm10, ymm15, ymm14",
            "vbroadcastss ymm15, [{a1} + {s4}]",
            "vfmadd231ps ymm11, ymm15, ymm14",
            "vbroadcastss ymm15, [{a1} + {s5}]",
            "vfmadd231ps ymm12, ymm15, ymm14",
            "vbroadcastss ymm15, [{a1} + {s6}]",
            "vfmadd231ps ymm13, ymm15, ymm14",
            "add {a0}, 4",
            "add {a1}, 4",
            "add {b}, 32",
            "dec {n}",
            "jnz 2b",
            a0 = inout(reg) a0 => _,
            a1 = inout(reg) a1 => _,
            b = inout(reg) b => _,
            n = inout(reg) len => _,
            s1 = const 4 * STEP,
            s2 = const 8 * STEP,
            s3 = const 12 * STEP,
            s4 = const 16 * STEP,
            s5 = const 20 * STEP,
            s6 = const 24 * STEP,
            inout("ymm0") c0,
            inout("ymm1") c1,
            inout("ymm2") c2,
            inout("ymm3") c3,
            inout("ymm4") c4,
            inout("ymm5") c5,
            inout("ymm6") c6,
            inout("ymm7") c7,
            inout("ymm8") c8,
            inout("ymm9") c9,
            inout("ymm10") c10,
            inout("ymm11") c11,
            inout("ymm12") c12,
            inout("ymm13") c13,
            out("ymm14") _,
            out("ymm15") _,
            options(nostack, readonly),
        );
    }
    *acc = [c0, c1, c2, c3, c4, c5, c6, c7, c8, c9, c10, c11, c12, c13];
}

/// Sixteen `i16` ones, for `vpmaddwd` to add pairs.
#[cfg(target_arch = "x86_64")]
#[repr(align(32))]
struct Ones([i16; 16]);
#[cfg(target_arch = "x86_64")]
static ONES: Ones = Ones([1; 16]);

/// [`multiply_add`] on words that each hold four bytes: the accumulators' lanes are 32-bit
/// integers, and each step adds `sum_q a_r[i].q * b[i][j].q` (`q < 4`, activations unsigned,
/// weights signed) to lane `j`: `vpmaddubsw` multiplies the bytes and adds them in pairs into
/// `i16` (exact: with activations at most 255 and weights within +-63 a pair is at most
/// 32,130), `vpmaddwd` by ones adds the pairs into `i32`, `vpaddd` accumulates. The broadcast
/// register takes the products and the ones are read from memory, so the loop needs no 17th
/// register. A sum of up to 33,000 words cannot overflow.
///
/// # Safety
/// As [`multiply_add`] (AVX2 for these instructions).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn multiply_add_quads<const STEP: usize>(
    acc: &mut [__m256; MR],
    a0: *const f32,
    a1: *const f32,
    b: *const f32,
    len: usize,
) {
    let [
        mut c0,
        mut c1,
        mut c2,
        mut c3,
        mut c4,
        mut c5,
        mut c6,
        mut c7,
        mut c8,
        mut c9,
        mut c10,
        mut c11,
        mut c12,
        mut c13,
    ] = *acc;
    // SAFETY: the loop reads `len` words of each of the 14 rows (byte offsets `4 * j * STEP`
    // from the two bases, advancing 4 bytes a step), `len` vectors of `b` and the 32 bytes of
    // `ONES`, all readable by the contract; it writes only the registers it names, and
    // `len > 0` so that the count does not wrap.
    unsafe {
        asm!(
            "2:",
            "vmovdqu ymm14, [{b}]",
            "vpbroadcastd ymm15, [{a0}]",
            "vpmaddubsw ymm15, ymm15, ymm14",
            "vpmaddwd ymm15, ymm15, ymmword ptr [{ones}]",
            "vpaddd ymm0, ymm0, ymm15",
            "vpbroadcastd ymm15, [{a0} + {s1}]",
            "vpmaddubsw ymm15, ymm15, ymm14",
            "vpmaddwd ymm15, ymm15, ymmword ptr [{ones}]",
            "vpaddd ymm1, ymm1, ymm15",
            "vpbroadcastd ymm15, [{a0} + {s2}]",
            "vpmaddubsw ymm15, ymm15, ymm14",
            "vpmaddwd ymm15, ymm15, ymmword ptr [{ones}]",
            "vpaddd ymm2, ymm2, ymm15",
            "vpbroadcastd ymm15, [{a0} + {s3}]",
            "vpmaddubsw ymm15, ymm15, ymm14",
            "vpmaddwd ymm15, ymm15, ymmword ptr [{ones}]",
            "vpaddd ymm3, ymm3, ymm15",
            "vpbroadcastd ymm15, [{a0} + {s4}]",
            "vpmaddubsw ymm15, ymm15, ymm14",
            "vpmaddwd ymm15, ymm15, ymmword ptr [{ones}]",
            "vpaddd ymm4, ymm4, ymm15",
            "vpbroadcastd ymm15, [{a0} + {s5}]",
            "vpmaddubsw ymm15, ymm15, ymm14",
            "vpmaddwd ymm15, ymm15, ymmword ptr [{ones}]",
            "vpaddd ymm5, ymm5, ymm15",
            "vpbroadcastd ymm15, [{a0} + {s6}]",
            "vpmaddubsw ymm15, ymm15, ymm14",
            "vpmaddwd ymm15, ymm15, ymmword ptr [{ones}]",
            "vpaddd ymm6, ymm6, ymm15",
            "vpbroadcastd ymm15, [{a1}]",
            "vpmaddubsw ymm15, ymm15, ymm14",
            "vpmaddwd ymm15, ymm15, ymmword ptr [{ones}]",
            "vpaddd ymm7, ymm7, ymm15",
            "vpbroadcastd ymm15, [{a1} + {s1}]",
            "vpmaddubsw ymm15, ymm15, ymm14",
            "vpmaddwd ymm15, ymm15, ymmword ptr [{ones}]",
            "vpaddd ymm8, ymm8, ymm15",
            "vpbroadcastd ymm15, [{a1} + {s2}]",
            "vpmaddubsw ymm15, ymm15, ymm14",
            "vpmaddwd ymm15, ymm15, ymmword ptr [{ones}]",
            "vpaddd ymm9, ymm9, ymm15",
            "vpbroadcastd ymm15, [{a1} + {s3}]",
            "vpmaddubsw ymm15, ymm15, ymm14",
            "vpmaddwd ymm15, ymm15, ymmword ptr [{ones}]",
            "vpaddd ymm10, ymm10, ymm15",
            "vpbroadcastd ymm15, [{a1} + {s4}]",
            "vpmaddubsw ymm15, ymm15, ymm14",
            "vpmaddwd ymm15, ymm15, ymmword ptr [{ones}]",
            "vpaddd ymm11, ymm11, ymm15",
            "vpbroadcastd ymm15, [{a1} + {s5}]",
            "vpmaddubsw ymm15, ymm15, ymm14",
            "vpmaddwd ymm15, ymm15, ymmword ptr [{ones}]",
            "vpaddd ymm12, ymm12, ymm15",
            "vpbroadcastd ymm15, [{a1} + {s6}]",
            "vpmaddubsw ymm15, ymm15, ymm14",
            "vpmaddwd ymm15, ymm15, ymmword ptr [{ones}]",
            "vpaddd ymm13, ymm13, ymm15",
            "add {a0}, 4",
            "add {a1}, 4",
            "add {b}, 32",
            "dec {n}",
            "jnz 2b",
            a0 = inout(reg) a0 => _,
            a1 = inout(reg) a1 => _,
            b = inout(reg) b => _,
            n = inout(reg) len => _,
            ones = in(reg) ONES.0.as_ptr(),
            s1 = const 4 * STEP,
            s2 = const 8 * STEP,
            s3 = const 12 * STEP,
            s4 = const 16 * STEP,
            s5 = const 20 * STEP,
            s6 = const 24 * STEP,
            inout("ymm0") c0,
            inout("ymm1") c1,
            inout("ymm2") c2,
            inout("ymm3") c3,
            inout("ymm4") c4,
            inout("ymm5") c5,
            inout("ymm6") c6,
            inout("ymm7") c7,
            inout("ymm8") c8,
            inout("ymm9") c9,
            inout("ymm10") c10,
            inout("ymm11") c11,
            inout("ymm12") c12,
            inout("ymm13") c13,
            out("ymm14") _,
            out("ymm15") _,
            options(nostack, readonly),
        );
    }
    *acc = [c0, c1, c2, c3, c4, c5, c6, c7, c8, c9, c10, c11, c12, c13];
}

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
