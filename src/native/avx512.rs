//! The AVX-512F micro-kernel: a 14 x 32 output tile in 28 of the 32 512-bit registers, 28
//! fused multiply-adds per 2 weight loads and 14 broadcasts.
//!
//! Bias, the residual and ReLU are applied to the registers before the one store, and a pooled
//! tap's channel sums are taken from the stored rows while they are in L1, so no separate pass
//! reads the output again.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::{
    __m512, _MM_HINT_T0, _mm_prefetch, _mm512_add_ps, _mm512_fmadd_ps, _mm512_loadu_ps,
    _mm512_mask_storeu_ps, _mm512_maskz_loadu_ps, _mm512_max_ps, _mm512_set1_ps, _mm512_setzero_ps,
    _mm512_storeu_ps,
};

use super::isa::{Avx512, Epilogue, Isa, Kernel, MAX_MR};

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
        #[cfg(target_arch = "x86_64")]
        {
            #[target_feature(enable = "avx512f")]
            fn with_avx512<R>(f: impl FnOnce() -> R) -> R {
                f()
            }
            // SAFETY: `self` exists, so `Avx512::detect` found AVX-512F on this CPU.
            unsafe { with_avx512(f) }
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

/// The epilogue of a tile: add the partial sums or residual held in the output, then (after
/// the last reduction block) the bias and ReLU, and store `rows` rows. A macro, not a function:
/// the accumulators must stay in registers, and a call would take their address.
///
/// Used inside `unsafe` AVX-512 functions whose contract makes `outs[..rows]` address `NR`
/// floats each.
#[cfg(target_arch = "x86_64")]
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
            if !ep.max.is_null() {
                // Each image's lane maxima, from the rows read back from L1; NaN never wins
                // (`max_ps` returns its second operand when either is NaN).
                let mut image = ep.row_img[0];
                let mut at = ep.max.add(image * NR);
                let (mut m0, mut m1) = (_mm512_loadu_ps(at), _mm512_loadu_ps(at.add(16)));
                for r in 0..rows {
                    if ep.row_img[r] != image {
                        _mm512_storeu_ps(at, m0);
                        _mm512_storeu_ps(at.add(16), m1);
                        image = ep.row_img[r];
                        at = ep.max.add(image * NR);
                        (m0, m1) = (_mm512_loadu_ps(at), _mm512_loadu_ps(at.add(16)));
                    }
                    m0 = _mm512_max_ps(_mm512_loadu_ps(outs[r]), m0);
                    m1 = _mm512_max_ps(_mm512_loadu_ps(outs[r].add(16)), m1);
                }
                _mm512_storeu_ps(at, m0);
                _mm512_storeu_ps(at.add(16), m1);
            }
        } else {
            for r in 0..rows {
                _mm512_storeu_ps(outs[r], $acc[r][0]);
                _mm512_storeu_ps(outs[r].add(16), $acc[r][1]);
            }
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
