//! Channels-last activations with a zero border, a buffer pool, and the pooling layers.

use std::sync::Mutex;

use rayon::prelude::*;

use super::buf::AlignedBuf;
use super::isa::Kernel;

/// A batch of feature maps `[n][h + 2 pad][w + 2 pad][cs]` of which the first `c` of each
/// pixel's `cs` floats are channels; the border of width `pad` is zero, so a convolution with
/// padding up to `pad` reads it without bounds checks.
///
/// The channel stride `cs` is `c` rounded so that 14 consecutive pixels never fall into the
/// same few L1 cache sets (see [`channel_stride`]); the kernel reads pixels of an input 14 at a
/// time.
#[derive(Debug)]
pub(crate) struct Act {
    pub data: AlignedBuf,
    pub n: usize,
    pub h: usize,
    pub w: usize,
    pub c: usize,
    /// Floats from one pixel to the next.
    pub cs: usize,
    pub pad: usize,
    /// For activations quantised for the int8 kernel: each image's scale (the value of code
    /// 1). Empty for floats and for activations quantised per pixel.
    pub image_scale: Vec<f32>,
    /// For activations quantised per pixel: each pixel's scale, at its offset / `cs` (one slot
    /// per pixel of the padded layout; the border's are unused). Empty otherwise.
    pub pixel_scale: Vec<f32>,
    /// For an input quantised with a zero point per channel (the int8 stem's,
    /// [`super::int8::quantize_input`]): each image's zero point of each channel
    /// (`[n][channels]`, in codes: a value `x` is coded `round(x / scale + zero)`), which a
    /// convolution with [`channel sums`](super::kernel::PackedConv::with_channel_sums) takes out
    /// of its sums. Empty otherwise.
    pub image_zero: Vec<f32>,
    /// With `image_zero`: each image's mean of each channel (`[n][channels]`).
    pub image_mean: Vec<f32>,
}

/// The channel stride for `c` channels: `c` when 14 pixels of it span few enough bytes to sit
/// in distinct L1 sets (up to 128 channels), else one cache line more, which spreads pixels
/// 1 KiB, 2 KiB... apart over different sets.
pub(crate) fn channel_stride(c: usize) -> usize {
    if c <= 128 || !c.is_multiple_of(16) {
        c
    } else {
        c + 16
    }
}

/// Offsets into an [`Act`] without borrowing it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Layout {
    img: usize,
    row: usize,
    cs: usize,
    pad: usize,
}

impl Layout {
    /// Floats from one pixel to the next.
    pub fn cs(&self) -> usize {
        self.cs
    }

    /// Floats from one row of pixels to the next.
    pub fn row(&self) -> usize {
        self.row
    }

    /// Offset of channel 0 of pixel `(y, x)` (unpadded coordinates) of image `n`.
    #[inline]
    pub fn offset(&self, n: usize, y: usize, x: usize) -> usize {
        n * self.img + (y + self.pad) * self.row + (x + self.pad) * self.cs
    }
}

impl Act {
    pub fn row_stride(&self) -> usize {
        (self.w + 2 * self.pad) * self.cs
    }

    fn img_stride(&self) -> usize {
        (self.h + 2 * self.pad) * self.row_stride()
    }

    pub fn layout(&self) -> Layout {
        Layout {
            img: self.img_stride(),
            row: self.row_stride(),
            cs: self.cs,
            pad: self.pad,
        }
    }

    /// Offset of channel 0 of padded pixel `(py, px)` of image `n`.
    #[inline]
    pub fn padded_offset(&self, n: usize, py: usize, px: usize) -> usize {
        n * self.img_stride() + py * self.row_stride() + px * self.cs
    }

    /// Floats of a buffer of this shape.
    ///
    /// # Panics
    /// If the size overflows `usize`.
    fn len_for(n: usize, h: usize, w: usize, cs: usize, pad: usize) -> usize {
        let side = |s: usize| pad.checked_mul(2).and_then(|p| s.checked_add(p));
        side(h)
            .zip(side(w))
            .and_then(|(h, w)| n.checked_mul(h)?.checked_mul(w)?.checked_mul(cs))
            .expect("activation size overflows usize")
    }

    /// Checks the invariant the kernels' raw reads and writes rely on: the buffer holds the
    /// whole layout, and each pixel's stride covers its channels.
    ///
    /// # Panics
    /// If it does not hold.
    pub fn assert_layout(&self) {
        assert!(
            self.cs >= self.c
                && self.data.len() == Self::len_for(self.n, self.h, self.w, self.cs, self.pad),
            "activation buffer does not match its layout"
        );
    }

    /// Zeroes the border (the interior is left as it is, to be overwritten).
    fn clear_border(&mut self) {
        if self.pad == 0 {
            return;
        }
        let (row, p, c) = (self.row_stride(), self.pad, self.cs);
        let img = self.img_stride();
        let (h, w) = (self.h, self.w);
        for image in self.data.chunks_exact_mut(img) {
            image[..p * row].fill(0.0);
            image[(h + p) * row..].fill(0.0);
            for y in p..h + p {
                let line = &mut image[y * row..(y + 1) * row];
                line[..p * c].fill(0.0);
                line[(w + p) * c..].fill(0.0);
            }
        }
    }

    /// Channel averages over the interior under per-pixel weights: `weights` holds `h * w`
    /// values per image (row-major), each image's are normalised to sum 1 (all zero: the
    /// average is zero). Returns `[n][c]`. Plain safe code: one pass over the map, the
    /// channel loop vectorised by the compiler.
    pub fn weighted_pool(&self, weights: &[f32]) -> Vec<f32> {
        let plane = self.h * self.w;
        assert_eq!(weights.len(), self.n * plane, "one weight per pixel");
        let layout = self.layout();
        let mut out = vec![0f32; self.n * self.c];
        out.par_chunks_exact_mut(self.c)
            .zip(weights.par_chunks_exact(plane.max(1)))
            .enumerate()
            .for_each(|(n, (sums, w))| {
                let total: f64 = w.iter().map(|&v| f64::from(v)).sum();
                if total <= 0.0 {
                    return;
                }
                let mut acc = vec![0f32; self.c];
                for y in 0..self.h {
                    for x in 0..self.w {
                        let wv = w[y * self.w + x];
                        if wv == 0.0 {
                            continue;
                        }
                        let px = &self.data[layout.offset(n, y, x)..][..self.c];
                        for (a, v) in acc.iter_mut().zip(px) {
                            *a += wv * v;
                        }
                    }
                }
                for (s, a) in sums.iter_mut().zip(&acc) {
                    *s = (f64::from(*a) / total) as f32;
                }
            });
        out
    }

    /// Channel means over the interior, `[n][c]`, summed in f64: the reference for the pooling
    /// that the convolution epilogue does.
    #[cfg(test)]
    pub fn global_avg_pool(&self) -> Vec<f32> {
        let layout = self.layout();
        let mut out = vec![0f32; self.n * self.c];
        for (n, means) in out.chunks_exact_mut(self.c).enumerate() {
            let mut sums = vec![0f64; self.c];
            for y in 0..self.h {
                for x in 0..self.w {
                    let px = &self.data[layout.offset(n, y, x)..][..self.c];
                    for (s, v) in sums.iter_mut().zip(px) {
                        *s += f64::from(*v);
                    }
                }
            }
            let count = (self.h * self.w) as f64;
            for (m, s) in means.iter_mut().zip(&sums) {
                *m = (s / count) as f32;
            }
        }
        out
    }

    /// Fills the interior from a batch in NCHW order (`[n][c][h][w]`).
    pub fn fill_from_nchw(&mut self, nchw: &[f32]) {
        let (c, cs, h, w, pad) = (self.c, self.cs, self.h, self.w, self.pad);
        let row = self.row_stride();
        let img = self.img_stride();
        self.data
            .par_chunks_exact_mut(img)
            .zip(nchw.par_chunks_exact(c * h * w))
            .for_each(|(image, planes)| {
                for y in 0..h {
                    let line = &mut image[(y + pad) * row + pad * cs..][..w * cs];
                    for (ch, plane) in planes.chunks_exact(h * w).enumerate() {
                        for (x, &v) in plane[y * w..(y + 1) * w].iter().enumerate() {
                            line[x * cs + ch] = v;
                        }
                    }
                }
            });
    }
}

/// Reuses activation buffers between forward passes: fresh large allocations cost a page fault
/// per 4 KiB on first touch, which is a visible share of a pass.
#[derive(Debug, Default)]
pub(crate) struct Pool {
    free: Mutex<Vec<AlignedBuf>>,
}

/// Most buffers the pool keeps between passes, per thread of rayon's pool (each thread may
/// run its own image through the network, see [`super::NativeNet::pooled`]).
const POOL_KEEP: usize = 8;

impl Pool {
    /// An activation of the given shape with a zero border; its interior is unspecified.
    pub fn take(&self, n: usize, h: usize, w: usize, c: usize, pad: usize) -> Act {
        let cs = channel_stride(c);
        let len = Act::len_for(n, h, w, cs, pad);
        let reused = {
            let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
            // The smallest buffer that fits.
            let best = free
                .iter()
                .enumerate()
                .filter(|(_, b)| b.capacity() >= len)
                .min_by_key(|(_, b)| b.capacity())
                .map(|(i, _)| i);
            best.map(|i| free.swap_remove(i))
        };
        let mut act = Act {
            data: match reused {
                Some(mut buf) => {
                    buf.set_len(len);
                    buf
                }
                None => AlignedBuf::zeroed(len),
            },
            n,
            h,
            w,
            c,
            cs,
            pad,
            image_scale: Vec::new(),
            pixel_scale: Vec::new(),
            image_zero: Vec::new(),
            image_mean: Vec::new(),
        };
        act.clear_border();
        act
    }

    /// Returns a buffer for later passes.
    pub fn give(&self, act: Act) {
        let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
        free.push(act.data);
        if free.len() > POOL_KEEP * rayon::current_num_threads() {
            // Drop the smallest: large buffers are the expensive ones to fault in again.
            if let Some(i) = free
                .iter()
                .enumerate()
                .min_by_key(|(_, b)| b.capacity())
                .map(|(i, _)| i)
            {
                free.swap_remove(i);
            }
        }
    }
}

/// Max-pool 3x3, stride 2, padding 1 of a non-negative (post-ReLU) activation whose border is
/// at least 1 wide, vectorised with the instruction set `isa` proves. The zero border stands in
/// for the usual `-inf` padding: every window holds at least one interior value, and those are
/// all `>= 0`, so the maximum is the same.
///
/// # Panics
/// If the shapes do not fit together.
pub(crate) fn max_pool_3x3_s2<K: Kernel>(isa: K, input: &Act, out: &mut Act) {
    const WIN: usize = 3;
    const S: usize = 2;
    input.assert_layout();
    out.assert_layout();
    assert!(input.pad >= 1 && out.c == input.c && out.n == input.n);
    assert!(out.h == (input.h + 2 - WIN) / S + 1 && out.w == (input.w + 2 - WIN) / S + 1);
    let out_layout = out.layout();
    let shift = input.pad - 1;
    let (oh, ow) = (out.h, out.w);
    let row = out_layout.row;
    let img = out.img_stride();
    let out_pad = out.pad;
    out.data
        .par_chunks_exact_mut(img)
        .enumerate()
        .for_each(|(n, image)| {
            isa.vectorize(|| max_pool_image(input, n, image, [oh, ow, row, out_pad, shift]));
        });
}

/// One image of [`max_pool_3x3_s2`]; inlined into [`Kernel::vectorize`]'s function, where the
/// channel loop is vectorised.
#[inline(always)]
fn max_pool_image(
    input: &Act,
    n: usize,
    image: &mut [f32],
    [oh, ow, row, out_pad, shift]: [usize; 5],
) {
    const WIN: usize = 3;
    const S: usize = 2;
    let (c, cs) = (input.c, input.cs);
    for y in 0..oh {
        let line = &mut image[(y + out_pad) * row..][..row];
        for x in 0..ow {
            let dst = &mut line[(x + out_pad) * cs..][..c];
            dst.fill(0.0);
            for ky in 0..WIN {
                for kx in 0..WIN {
                    let src = input.padded_offset(n, y * S + shift + ky, x * S + shift + kx);
                    for (d, &v) in dst.iter_mut().zip(&input.data[src..src + c]) {
                        *d = d.max(v);
                    }
                }
            }
        }
    }
}
