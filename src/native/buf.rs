//! A zero-initialised `f32` buffer aligned to a cache line.
//!
//! The kernel reads and writes whole 64-byte vectors; with `Vec<f32>`'s 16-byte alignment every
//! one of them would straddle two cache lines.

use std::alloc::{self, Layout};
use std::ops::{Deref, DerefMut};
use std::ptr::NonNull;

/// Alignment of every buffer, in bytes: one cache line, one AVX-512 vector.
const ALIGN: usize = 64;

/// A fixed-capacity, 64-byte aligned `[f32]` whose every element is initialised.
pub(crate) struct AlignedBuf {
    ptr: NonNull<f32>,
    len: usize,
    cap: usize,
}

// SAFETY: `AlignedBuf` owns its allocation exclusively, like `Vec<f32>`: moving it to another
// thread moves that ownership, and no other handle to the memory exists.
unsafe impl Send for AlignedBuf {}
// SAFETY: `&AlignedBuf` only hands out `&[f32]` (mutation needs `&mut`), like `Vec<f32>`.
unsafe impl Sync for AlignedBuf {}

impl AlignedBuf {
    /// `len` zeros.
    ///
    /// # Panics
    /// If `len` floats exceed `isize::MAX` bytes.
    pub fn zeroed(len: usize) -> Self {
        if len == 0 {
            return Self {
                ptr: NonNull::dangling(),
                len: 0,
                cap: 0,
            };
        }
        let layout = Self::layout(len);
        // SAFETY: the layout has a non-zero size.
        let raw = unsafe { alloc::alloc_zeroed(layout) }.cast::<f32>();
        let Some(ptr) = NonNull::new(raw) else {
            alloc::handle_alloc_error(layout)
        };
        Self { ptr, len, cap: len }
    }

    /// A copy of `values`.
    pub fn from_slice(values: &[f32]) -> Self {
        let mut buf = Self::zeroed(values.len());
        buf.copy_from_slice(values);
        buf
    }

    /// # Panics
    /// If `cap` floats exceed `isize::MAX` bytes.
    fn layout(cap: usize) -> Layout {
        cap.checked_mul(size_of::<f32>())
            .and_then(|bytes| Layout::from_size_align(bytes, ALIGN).ok())
            .expect("an aligned buffer of more than isize::MAX bytes")
    }

    /// Elements the buffer can hold.
    pub fn capacity(&self) -> usize {
        self.cap
    }

    /// Sets the length to `len <= capacity()`; the elements keep whatever values they held.
    pub fn set_len(&mut self, len: usize) {
        assert!(len <= self.cap, "AlignedBuf::set_len past the capacity");
        self.len = len;
    }
}

impl Deref for AlignedBuf {
    type Target = [f32];

    fn deref(&self) -> &[f32] {
        // SAFETY: `ptr` holds `cap >= len` initialised floats (or is dangling with len 0).
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl DerefMut for AlignedBuf {
    fn deref_mut(&mut self) -> &mut [f32] {
        // SAFETY: as in `deref`, and `&mut self` is exclusive.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        if self.cap > 0 {
            // SAFETY: allocated in `zeroed` with this layout.
            unsafe { alloc::dealloc(self.ptr.as_ptr().cast(), Self::layout(self.cap)) };
        }
    }
}

impl std::fmt::Debug for AlignedBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AlignedBuf({} of {} f32)", self.len, self.cap)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligned_zeroed_and_resizable() {
        let mut b = AlignedBuf::zeroed(1000);
        assert_eq!(b.as_ptr() as usize % ALIGN, 0);
        assert!(b.iter().all(|&v| v == 0.0));
        b[999] = 3.0;
        b.set_len(10);
        assert_eq!(b.len(), 10);
        b.set_len(1000);
        assert_eq!(b[999], 3.0);
        assert_eq!(AlignedBuf::from_slice(&[1.0, 2.0])[..], [1.0, 2.0]);
        assert!(AlignedBuf::zeroed(0).is_empty());
    }
}
