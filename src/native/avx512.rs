//! The AVX-512F micro-kernel: a 14 x 32 output tile in 28 of the 32 512-bit registers, 28
//! fused multiply-adds per 2 weight loads and 14 broadcasts; and the int8 kernel for
//! AVX512-VNNI, the same tile of 32-bit integer sums with `vpdpbusd` (four byte products each)
//! in place of the fused multiply-add.
//!
//! Bias, the residual and ReLU are applied to the registers before the one store, and a pooled
//! tap's channel sums (and the int8 network's per-image maxima) are taken from the same
//! registers, so no separate pass reads the output again.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64;
#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::{
    __m512, _MM_HINT_T0, _mm_prefetch, _mm512_add_ps, _mm512_fmadd_ps, _mm512_loadu_ps,
    _mm512_mask_storeu_ps, _mm512_maskz_loadu_ps, _mm512_max_ps, _mm512_set1_ps, _mm512_setzero_ps,
    _mm512_storeu_ps,
};

use super::isa::{Avx2Fma, Avx512, Avx512Vnni, Epilogue, Isa, Kernel, MAX_MR, vectorize_with};

/// Output pixels per tile.
const MR: usize = 14;
/// Output channels per tile: two 16-float vectors.
const NR: usize = 32;

impl Kernel for Avx512 {
    const ISA: Isa = Isa::Avx512;
    const MR: usize = MR;
    const NR: usize = NR;

    #[inline(always)]
    fn vectorize<R>(self, f: impl FnOnce() -> R) -> R {
        vectorize_with!("avx512f", f, self)
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
        // SAFETY: `self` proves AVX-512F; the pointers are as the caller's contract says.
        unsafe {
            tile_kernel::<STEP, SPLIT>(a, jump, runs, b, outs, ep);
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
        // SAFETY: `self` proves AVX-512F.
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

/// The int8 kernel for AVX512-VNNI: the AVX-512 tile on words of four bytes
/// ([`super::int8`]).
impl Kernel for Avx512Vnni {
    const ISA: Isa = Isa::Avx512;
    const MR: usize = MR;
    const NR: usize = NR;
    const VALUES_PER_WORD: usize = 4;

    #[inline(always)]
    fn vectorize<R>(self, f: impl FnOnce() -> R) -> R {
        vectorize_with!("avx512f,avx512vnni", f, self.fp32())
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
        ep.assert_int8(NR);
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `self` proves AVX-512F and AVX512-VNNI; the pointers are as the caller's
        // contract says, and the scales were checked above.
        unsafe {
            vnni_tile::<STEP, SPLIT>(a, jump, runs, b, outs, ep);
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

    #[inline]
    fn quantize_pixel(self, isa: Avx2Fma, values: &[f32], out: &mut [f32]) -> f32 {
        // Lengths the 512-bit loop does not take go to the AVX2 version, which also refuses
        // (panics on) an `out` of the wrong length.
        if !values.len().is_multiple_of(16) || out.len() * 4 != values.len() {
            return super::int8::quantize_pixel(isa, values, out);
        }
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `self` proves AVX-512F; the lengths were checked.
        unsafe {
            quantize_pixel(values, out)
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = (values, out);
            self.fp32().never()
        }
    }
}

/// [`Kernel::quantize_pixel`] for AVX512-VNNI: [`super::int8::quantize_pixel`] (the largest
/// value, at least 0 with NaN never winning, then `round(v * inv)` ties to even clamped to
/// 0..=255, NaN to 0) in 512-bit vectors, two maxima at a time, where the AVX2 version's
/// one 256-bit chain and scalar reduction weighed on the 1x1s of 16 and 32 words.
///
/// # Safety
/// AVX-512F must be available; `values.len()` a multiple of 16 and `out.len() * 4` equal to it.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn quantize_pixel(values: &[f32], out: &mut [f32]) -> f32 {
    use x86_64::{
        _mm_storeu_si128, _mm512_cvtepi32_epi8, _mm512_cvtps_epi32, _mm512_max_epi32,
        _mm512_min_ps, _mm512_mul_ps, _mm512_reduce_max_ps, _mm512_setzero_si512,
    };
    // SAFETY: every load reads 16 floats of a chunk of 16 or 32, every store 16 bytes of a
    // chunk of 4 words.
    unsafe {
        // `max_ps` returns its second operand when either is NaN: a NaN value leaves the
        // maximum as it was, so no NaN reaches the reduction.
        let (mut m0, mut m1) = (_mm512_setzero_ps(), _mm512_setzero_ps());
        let mut pairs = values.chunks_exact(32);
        for c in &mut pairs {
            m0 = _mm512_max_ps(_mm512_loadu_ps(c.as_ptr()), m0);
            m1 = _mm512_max_ps(_mm512_loadu_ps(c.as_ptr().add(16)), m1);
        }
        for c in pairs.remainder().chunks_exact(16) {
            m0 = _mm512_max_ps(_mm512_loadu_ps(c.as_ptr()), m0);
        }
        let s = super::int8::scale(_mm512_reduce_max_ps(_mm512_max_ps(m0, m1)));
        let (inv, top, zero) = (
            _mm512_set1_ps(1.0 / s),
            _mm512_set1_ps(255.0),
            _mm512_setzero_si512(),
        );
        for (c, o) in values.chunks_exact(16).zip(out.chunks_exact_mut(4)) {
            // At most 255 first (`min_ps` returns its second operand, a NaN, when either is
            // NaN), then round to nearest (the default MXCSR mode): NaN and values below i32's
            // range become i32::MIN; every negative then becomes 0, and the narrowing keeps
            // the low byte of values within 0..=255.
            let v = _mm512_min_ps(top, _mm512_mul_ps(_mm512_loadu_ps(c.as_ptr()), inv));
            let code = _mm512_max_epi32(_mm512_cvtps_epi32(v), zero);
            _mm_storeu_si128(o.as_mut_ptr().cast(), _mm512_cvtepi32_epi8(code));
        }
        s
    }
}

/// `$body` for each of the tile's 14 rows, `$r` a constant in each copy: a loop, even over a
/// constant range, may stay a loop, and its index would then put the accumulators in memory.
#[cfg(target_arch = "x86_64")]
macro_rules! each_row {
    ($r:ident, $body:block) => {{
        each_row!(@ $r, $body, 0 1 2 3 4 5 6 7 8 9 10 11 12 13);
    }};
    (@ $r:ident, $body:block, $($i:literal)*) => {
        $({
            let $r: usize = $i;
            $body
        })*
    };
}

/// The epilogue of a tile: for each of the first `rows` rows, take its two vectors of sums from
/// `$row(r)`, add the partial sums or residual held in the output, then (after the last
/// reduction block) the bias and ReLU, store them, and add them to their image's pooled sums
/// and maxima where the epilogue keeps those. A macro, not a function: the accumulators must
/// stay in registers, and a call would take their address.
///
/// Used inside `unsafe` AVX-512 functions whose contract makes `outs[..rows]` address `NR`
/// floats each.
#[cfg(target_arch = "x86_64")]
macro_rules! store_tile {
    ($row:expr, $outs:expr, $rows:expr, $ep:expr) => {{
        let (outs, rows, ep) = ($outs, $rows, $ep);
        let from_out = !ep.first || ep.accumulate;
        let zero = _mm512_setzero_ps();
        let (bias0, bias1) = if ep.last {
            (
                _mm512_loadu_ps(ep.bias.as_ptr()),
                _mm512_loadu_ps(ep.bias.as_ptr().add(16)),
            )
        } else {
            (zero, zero)
        };
        // With the last reduction block: the channel sums and lane maxima of each image's
        // rows (NaN never wins: `max_ps` returns its second operand when either is NaN), added
        // to that image's pooled sums and maxima when the image changes and at the end.
        let pooling = ep.last && !ep.pool.is_null();
        let maxing = ep.last && !ep.max.is_null();
        // Adds a block's channel sums to image `image`'s pooled sums; stores its lane maxima.
        let add_pooled = |image: usize, s0, s1| {
            let at = ep.pool.add(image * ep.pool_stride);
            _mm512_storeu_ps(at, _mm512_add_ps(_mm512_loadu_ps(at), s0));
            _mm512_storeu_ps(at.add(16), _mm512_add_ps(_mm512_loadu_ps(at.add(16)), s1));
        };
        let store_max = |image: usize, m0, m1| {
            let at = ep.max.add(image * NR);
            _mm512_storeu_ps(at, m0);
            _mm512_storeu_ps(at.add(16), m1);
        };
        let mut image = if pooling || maxing { ep.row_img[0] } else { 0 };
        let (mut s0, mut s1) = (zero, zero);
        let (mut m0, mut m1) = if maxing {
            let at = ep.max.add(image * NR);
            (_mm512_loadu_ps(at), _mm512_loadu_ps(at.add(16)))
        } else {
            (zero, zero)
        };
        // Every row at a constant index, the rows past `rows` skipped: loops to `rows` index
        // the accumulators at run time, and LLVM then kept them on the stack, stored and
        // loaded again between the steps (2,464 stack accesses of 512 bits in the 21 compiled
        // AVX512-VNNI tiles; 202 with constant rows).
        const { assert!(MR == 14) };
        each_row!(r, {
            if r < rows {
                let (mut v0, mut v1) = $row(r);
                if from_out {
                    v0 = _mm512_add_ps(v0, _mm512_loadu_ps(outs[r]));
                    v1 = _mm512_add_ps(v1, _mm512_loadu_ps(outs[r].add(16)));
                }
                if ep.last {
                    v0 = _mm512_add_ps(v0, bias0);
                    v1 = _mm512_add_ps(v1, bias1);
                    if ep.relu {
                        v0 = _mm512_max_ps(v0, zero);
                        v1 = _mm512_max_ps(v1, zero);
                    }
                }
                _mm512_storeu_ps(outs[r], v0);
                _mm512_storeu_ps(outs[r].add(16), v1);
                if pooling || maxing {
                    let row_image = ep.row_img[r];
                    if row_image != image {
                        if pooling {
                            add_pooled(image, s0, s1);
                            (s0, s1) = (zero, zero);
                        }
                        if maxing {
                            store_max(image, m0, m1);
                            let at = ep.max.add(row_image * NR);
                            (m0, m1) = (_mm512_loadu_ps(at), _mm512_loadu_ps(at.add(16)));
                        }
                        image = row_image;
                    }
                    if pooling {
                        s0 = _mm512_add_ps(s0, v0);
                        s1 = _mm512_add_ps(s1, v1);
                    }
                    if maxing {
                        m0 = _mm512_max_ps(v0, m0);
                        m1 = _mm512_max_ps(v1, m1);
                    }
                }
            }
        });
        if pooling {
            add_pooled(image, s0, s1);
        }
        if maxing {
            store_max(image, m0, m1);
        }
    }};
}

/// The reduction loop of a tile: `$step(&mut $acc, ci, $bp)` for each step `ci < $len`, four
/// at a time (two with `pairs:`), `$bp` advancing by one panel row (`NR` words) per step.
#[cfg(target_arch = "x86_64")]
macro_rules! steps {
    (pairs: $step:ident, $acc:ident, $len:expr, $bp:ident) => {{
        let len = $len;
        let mut ci = 0;
        while ci + 2 <= len {
            $step(&mut $acc, ci, $bp);
            $step(&mut $acc, ci + 1, $bp.add(NR));
            ci += 2;
            $bp = $bp.add(2 * NR);
        }
        if ci < len {
            $step(&mut $acc, ci, $bp);
            $bp = $bp.add(NR);
        }
    }};
    ($step:ident, $acc:ident, $len:expr, $bp:ident) => {{
        let len = $len;
        let mut ci = 0;
        while ci + 4 <= len {
            $step(&mut $acc, ci, $bp);
            $step(&mut $acc, ci + 1, $bp.add(NR));
            $step(&mut $acc, ci + 2, $bp.add(2 * NR));
            $step(&mut $acc, ci + 3, $bp.add(3 * NR));
            ci += 4;
            $bp = $bp.add(4 * NR);
        }
        while ci < len {
            $step(&mut $acc, ci, $bp);
            ci += 1;
            $bp = $bp.add(NR);
        }
    }};
}

/// [`Kernel::tile`] for AVX-512F.
///
/// # Safety
/// AVX-512F must be available, and the pointers as [`Kernel::tile`] says.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn tile_kernel<const STEP: usize, const SPLIT: bool>(
    a: *const f32,
    jump: usize,
    runs: &[(usize, usize)],
    b: *const f32,
    outs: &[*mut f32; MAX_MR],
    ep: &Epilogue<'_>,
) {
    const { assert!(MR <= MAX_MR) };
    let seg = if SPLIT { MR / 2 } else { MR };
    let rows = ep.row_img.len();
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
                    let at = if r < seg {
                        ap.add(r * STEP + ci)
                    } else {
                        ap2.add((r - seg) * STEP + ci)
                    };
                    let av: __m512 = _mm512_set1_ps(*at);
                    row[0] = _mm512_fmadd_ps(av, b0, row[0]);
                    row[1] = _mm512_fmadd_ps(av, b1, row[1]);
                }
            };
            steps!(step, acc, cin, bp);
        }
        store_tile!(|r: usize| (acc[r][0], acc[r][1]), outs, rows, ep);
    }
}

/// Defines the AVX512-VNNI tile ([`vnni_tile`]) as function `$name`, with the intrinsics of
/// module `$ops` (named from this module): `std::arch`'s for the kernel, and, for a test on
/// CPUs without AVX512-VNNI, plain-Rust versions of the same intrinsics ([`emulated`]), so that
/// the tile's indexing, splitting and epilogue run everywhere.
macro_rules! define_vnni_tile {
    ($(#[$attr:meta])* $name:ident, $ops:ident) => {
        $(#[$attr])*
        unsafe fn $name<const STEP: usize, const SPLIT: bool>(
            a: *const f32,
            jump: usize,
            runs: &[(usize, usize)],
            b: *const f32,
            outs: &[*mut f32; MAX_MR],
            ep: &Epilogue<'_>,
        ) {
            use $ops::{
                __m512i, _MM_HINT_T0, _mm_prefetch, _mm512_add_ps, _mm512_cvtepi32_ps,
                _mm512_dpbusd_epi32, _mm512_loadu_ps, _mm512_loadu_si512, _mm512_max_ps,
                _mm512_mul_ps, _mm512_set1_epi32, _mm512_set1_ps, _mm512_setzero_ps,
                _mm512_setzero_si512, _mm512_storeu_ps,
            };
            const { assert!(MR <= MAX_MR) };
            let seg = if SPLIT { MR / 2 } else { MR };
            let rows = ep.row_img.len();
            // SAFETY: the caller's contract covers every access below.
            unsafe {
                // Every row's output is stored after the multiply-adds (and read first when it holds
                // partial sums or the residual): start fetching its lines (`prefetcht0`), as the
                // AVX2 int8 kernel does.
                for out in &outs[..rows] {
                    _mm_prefetch::<_MM_HINT_T0>(out.cast::<i8>());
                    _mm_prefetch::<_MM_HINT_T0>(out.add(16).cast::<i8>());
                }
                let mut acc = [[_mm512_setzero_si512(); 2]; MR];
                let mut bp = b;
                for &(off, len) in runs {
                    let ap = a.add(off);
                    let ap2 = a.wrapping_add(jump + off);
                    let step = |acc: &mut [[__m512i; 2]; MR], ci: usize, bp: *const f32| {
                        let b0 = _mm512_loadu_si512(bp.cast());
                        let b1 = _mm512_loadu_si512(bp.add(16).cast());
                        for (r, row) in acc.iter_mut().enumerate() {
                            let at = if r < seg {
                                ap.add(r * STEP + ci)
                            } else {
                                ap2.add((r - seg) * STEP + ci)
                            };
                            let av = _mm512_set1_epi32(at.cast::<i32>().read_unaligned());
                            row[0] = _mm512_dpbusd_epi32(row[0], av, b0);
                            row[1] = _mm512_dpbusd_epi32(row[1], av, b1);
                        }
                    };
                    if STEP < 4 {
                        // Rows fewer than four words apart (the int8 stem's, two): in four
                        // steps a row reads words its neighbours read two steps before, and
                        // LLVM kept those broadcasts for reuse, spilling them to the stack
                        // (76 of the stem tile's 84 stack accesses); two steps share none.
                        steps!(pairs: step, acc, len, bp);
                    } else {
                        steps!(step, acc, len, bp);
                    }
                }
                // To floats, dequantised by the weights' scale per channel and the input's per
                // row, and (the int8 stem, `int8::pack_stem`) plus the bias per image and
                // channel with the last reduction block. Computed row by row as the epilogue
                // stores it, so that the accumulators stay in registers.
                let scale0 = _mm512_loadu_ps(ep.scale.as_ptr());
                let scale1 = _mm512_loadu_ps(ep.scale.as_ptr().add(16));
                let image_bias = ep.last && !ep.image_bias.is_null();
                let row = |r: usize| {
                    let image = _mm512_set1_ps(ep.row_scale[r]);
                    let mut v0 =
                        _mm512_mul_ps(_mm512_cvtepi32_ps(acc[r][0]), _mm512_mul_ps(scale0, image));
                    let mut v1 =
                        _mm512_mul_ps(_mm512_cvtepi32_ps(acc[r][1]), _mm512_mul_ps(scale1, image));
                    if image_bias {
                        let at = ep.image_bias.add(ep.row_img[r] * ep.pool_stride);
                        v0 = _mm512_add_ps(v0, _mm512_loadu_ps(at));
                        v1 = _mm512_add_ps(v1, _mm512_loadu_ps(at.add(16)));
                    }
                    (v0, v1)
                };
                store_tile!(row, outs, rows, ep);
            }
        }
    };
}

#[cfg(target_arch = "x86_64")]
define_vnni_tile!(
    /// [`Kernel::tile`] for AVX512-VNNI: words of four bytes (four input channels, activations
    /// unsigned, weights signed within +-127) multiplied and summed exactly into 32-bit integers by
    /// `vpdpbusd`, then scaled by the panel's [`Epilogue::scale`] and each row's input scale
    /// ([`Epilogue::row_scale`]) into floats, in the same order of operations as the AVX2 int8
    /// kernel, and stored as the float tile is.
    ///
    /// # Safety
    /// AVX-512F and AVX512-VNNI must be available, `ep.scale` must hold `NR` floats and
    /// `ep.row_scale` every row's, and the pointers as [`Kernel::tile`] says.
    #[target_feature(enable = "avx512f,avx512vnni")]
    vnni_tile,
    x86_64
);

#[cfg(all(test, target_arch = "x86_64"))]
define_vnni_tile!(
    /// [`vnni_tile`] on [`emulated`] intrinsics.
    ///
    /// # Safety
    /// As [`vnni_tile`], without the instruction sets.
    vnni_tile_emulated,
    emulated
);

/// The intrinsics of [`vnni_tile`] in plain Rust, after Intel's definitions: the tile's code on
/// CPUs without AVX512-VNNI, for the tests ([`testing::EmulatedVnni`]).
#[cfg(all(test, target_arch = "x86_64"))]
#[allow(non_camel_case_types)]
mod emulated {
    #[derive(Clone, Copy)]
    pub struct __m512([f32; 16]);
    #[derive(Clone, Copy)]
    pub struct __m512i([i32; 16]);

    pub const _MM_HINT_T0: i32 = 3;

    pub fn _mm_prefetch<const HINT: i32>(_: *const i8) {}

    pub fn _mm512_setzero_si512() -> __m512i {
        __m512i([0; 16])
    }

    pub fn _mm512_setzero_ps() -> __m512 {
        __m512([0.0; 16])
    }

    pub fn _mm512_set1_epi32(v: i32) -> __m512i {
        __m512i([v; 16])
    }

    pub fn _mm512_set1_ps(v: f32) -> __m512 {
        __m512([v; 16])
    }

    /// # Safety
    /// `p` must address 64 readable bytes.
    pub unsafe fn _mm512_loadu_si512(p: *const __m512i) -> __m512i {
        // SAFETY: as the contract says.
        __m512i(unsafe { p.cast::<[i32; 16]>().read_unaligned() })
    }

    /// # Safety
    /// `p` must address 16 readable floats.
    pub unsafe fn _mm512_loadu_ps(p: *const f32) -> __m512 {
        // SAFETY: as the contract says.
        __m512(unsafe { p.cast::<[f32; 16]>().read_unaligned() })
    }

    /// # Safety
    /// `p` must address 16 writable floats.
    pub unsafe fn _mm512_storeu_ps(p: *mut f32, v: __m512) {
        // SAFETY: as the contract says.
        unsafe { p.cast::<[f32; 16]>().write_unaligned(v.0) }
    }

    /// Each lane of `src` plus the four products of `a`'s bytes (unsigned) by `b`'s (signed)
    /// in that lane, wrapping.
    pub fn _mm512_dpbusd_epi32(src: __m512i, a: __m512i, b: __m512i) -> __m512i {
        __m512i(std::array::from_fn(|i| {
            let (x, y) = (a.0[i].to_le_bytes(), b.0[i].to_le_bytes());
            (0..4).fold(src.0[i], |s, j| {
                s.wrapping_add(i32::from(x[j]) * i32::from(y[j].cast_signed()))
            })
        }))
    }

    /// Rounded to nearest, ties to even (`as` rounds as the default MXCSR mode does).
    pub fn _mm512_cvtepi32_ps(v: __m512i) -> __m512 {
        __m512(v.0.map(|x| x as f32))
    }

    pub fn _mm512_mul_ps(a: __m512, b: __m512) -> __m512 {
        __m512(std::array::from_fn(|i| a.0[i] * b.0[i]))
    }

    pub fn _mm512_add_ps(a: __m512, b: __m512) -> __m512 {
        __m512(std::array::from_fn(|i| a.0[i] + b.0[i]))
    }

    /// `a` where it is greater, else `b` (so `b` when either is NaN).
    pub fn _mm512_max_ps(a: __m512, b: __m512) -> __m512 {
        __m512(std::array::from_fn(|i| {
            if a.0[i] > b.0[i] { a.0[i] } else { b.0[i] }
        }))
    }
}

#[cfg(all(test, target_arch = "x86_64"))]
pub(crate) mod testing {
    use super::super::isa::{Avx2Fma, Epilogue, Int8, Int8Kernel, Isa, Kernel, MAX_MR};
    use super::{MR, NR};

    /// The AVX512-VNNI int8 kernel's tile with its intrinsics [`emulated`](super::emulated) in
    /// plain Rust: the same code as the kernel, run where the CPU lacks AVX512-VNNI. Holds the
    /// AVX2 token for the quantising pass.
    #[derive(Debug, Clone, Copy)]
    pub(crate) struct EmulatedVnni(pub Avx2Fma);

    impl Kernel for EmulatedVnni {
        const ISA: Isa = Isa::Avx512;
        const MR: usize = MR;
        const NR: usize = NR;
        const VALUES_PER_WORD: usize = 4;

        fn vectorize<R>(self, f: impl FnOnce() -> R) -> R {
            f()
        }

        unsafe fn tile<const STEP: usize, const SPLIT: bool>(
            self,
            a: *const f32,
            jump: usize,
            runs: &[(usize, usize)],
            b: *const f32,
            outs: &[*mut f32; MAX_MR],
            ep: &Epilogue<'_>,
        ) {
            ep.assert_int8(NR);
            // SAFETY: as the caller's contract says; no instruction set is needed.
            unsafe { super::vnni_tile_emulated::<STEP, SPLIT>(a, jump, runs, b, outs, ep) }
        }

        fn copy(self, dst: &mut [f32], src: &[f32]) {
            dst.copy_from_slice(src);
        }
    }

    impl Int8 for EmulatedVnni {
        fn name(self) -> Int8Kernel {
            Int8Kernel::Avx512Vnni
        }

        fn avx2(self) -> Avx2Fma {
            self.0
        }
    }
}

/// `dst.copy_from_slice(src)` in 64-byte vectors, the tail under a mask.
///
/// # Safety
/// AVX-512F must be available.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn copy(dst: &mut [f32], src: &[f32]) {
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
