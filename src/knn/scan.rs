//! Exact brute-force k-nearest search over row-major vectors, for the 64-2048 dimensions of
//! raw block features, where a k-d tree no longer prunes anything.
//!
//! Distances are accumulated in eight independent lanes, which the compiler turns into SIMD
//! adds and multiplies; batches of queries are scanned block by block (a block of reference
//! rows stays in cache while every query of the batch passes over it) and in parallel.

use std::num::NonZeroUsize;

use rayon::prelude::*;

use super::Rows;

/// Squared Euclidean distance with eight accumulators (a fixed order of additions: the same
/// inputs give the same bits on every run).
///
/// # Panics
/// In debug builds, when the lengths differ; release builds compare the common prefix.
#[inline]
pub fn squared_l2(a: &[f32], b: &[f32]) -> f32 {
    debug_assert_eq!(a.len(), b.len());
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for l in 0..8 {
            let d = x[l] - y[l];
            acc[l] += d * d;
        }
    }
    let mut tail = 0f32;
    for (x, y) in ra.iter().zip(rb) {
        let d = x - y;
        tail += d * d;
    }
    (acc[0] + acc[4]) + (acc[1] + acc[5]) + (acc[2] + acc[6]) + (acc[3] + acc[7]) + tail
}

/// The `k` best `(distance, row)` pairs offered so far (smallest distance, then smallest row),
/// kept sorted.
///
/// ```
/// use std::num::NonZeroUsize;
/// use attrex::knn::TopK;
///
/// let mut top = TopK::new(NonZeroUsize::new(2).unwrap());
/// for (d, row) in [(3.0, 0), (1.0, 1), (1.0, 2), (0.5, 3)] {
///     top.offer(d, row);
/// }
/// assert_eq!(top.into_sorted(), [(0.5, 3), (1.0, 1)]);
/// ```
#[derive(Debug, Clone)]
pub struct TopK {
    k: usize,
    best: Vec<(f32, usize)>,
}

impl TopK {
    /// An empty list that keeps the `k` best.
    pub fn new(k: NonZeroUsize) -> Self {
        let k = k.get();
        Self {
            k,
            best: Vec::with_capacity(k.saturating_add(1).min(4096)),
        }
    }

    /// The distance a new entry must not exceed to enter: the `k`-th best so far, or infinity
    /// while fewer than `k` are held.
    #[inline]
    pub fn worst(&self) -> f32 {
        if self.best.len() < self.k {
            f32::INFINITY
        } else {
            self.best[self.k - 1].0
        }
    }

    /// Offers `row` at distance `dist`; it stays if it is among the `k` best.
    #[inline]
    pub fn offer(&mut self, dist: f32, row: usize) {
        if self.best.len() == self.k && !less(dist, row, self.best[self.k - 1]) {
            return;
        }
        let pos = self.best.partition_point(|&e| less(e.0, e.1, (dist, row)));
        self.best.insert(pos, (dist, row));
        self.best.truncate(self.k);
    }

    /// The `(distance, row)` pairs kept, best first.
    pub fn into_sorted(self) -> Vec<(f32, usize)> {
        self.best
    }
}

#[inline]
fn less(d: f32, row: usize, other: (f32, usize)) -> bool {
    d < other.0 || (d == other.0 && row < other.1)
}

/// Rows per block of the batched scan: about 256 KiB of reference data.
fn block_rows(dim: usize) -> usize {
    (65_536 / dim).clamp(16, 4096)
}

/// The `k` nearest rows of `data` to `query`: `(squared distance, row)`, nearest first, ties by
/// row. Fewer when `data` holds fewer.
///
/// `query` should have `data.dim()` values; a shorter or longer one is compared on the common
/// prefix (and is a bug of the caller).
pub fn nearest(data: Rows<'_>, query: &[f32], k: NonZeroUsize) -> Vec<(f32, usize)> {
    debug_assert_eq!(query.len(), data.dim());
    let mut top = TopK::new(k);
    for (row, x) in data.iter().enumerate() {
        let d = squared_l2(query, x);
        if d <= top.worst() {
            top.offer(d, row);
        }
    }
    top.into_sorted()
}

/// [`nearest`] for every row of `queries`, scanning the references block by block for cache
/// reuse, with query batches in parallel. The same answers as [`nearest`], bit for bit.
///
/// # Panics
/// When the two dimensions differ (a bug of the caller).
pub fn nearest_batch(data: Rows<'_>, queries: Rows<'_>, k: NonZeroUsize) -> Vec<Vec<(f32, usize)>> {
    const QUERIES_PER_TASK: usize = 16;
    assert_eq!(data.dim(), queries.dim(), "queries of another dimension");
    let dim = data.dim();
    let (data, queries) = (data.as_slice(), queries.as_slice());
    let rows = block_rows(dim);
    queries
        .par_chunks(QUERIES_PER_TASK * dim)
        .flat_map_iter(|qs| {
            let mut tops: Vec<TopK> = qs.chunks_exact(dim).map(|_| TopK::new(k)).collect();
            for (b, block) in data.chunks(rows * dim).enumerate() {
                let base = b * rows;
                for (q, top) in qs.chunks_exact(dim).zip(tops.iter_mut()) {
                    for (i, x) in block.chunks_exact(dim).enumerate() {
                        let d = squared_l2(q, x);
                        if d <= top.worst() {
                            top.offer(d, base + i);
                        }
                    }
                }
            }
            tops.into_iter().map(TopK::into_sorted)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn squared_l2_matches_the_plain_sum_for_every_tail_length() {
        for dim in [1, 7, 8, 9, 63, 256] {
            let a: Vec<f32> = (0..dim).map(|i| (i as f32 * 0.37).sin()).collect();
            let b: Vec<f32> = (0..dim).map(|i| (i as f32 * 0.11).cos()).collect();
            let plain: f32 = a.iter().zip(&b).map(|(x, y)| (x - y) * (x - y)).sum();
            assert!(
                (squared_l2(&a, &b) - plain).abs() <= 1e-5 * plain.max(1.0),
                "dim {dim}"
            );
        }
    }

    #[test]
    fn top_k_keeps_the_smallest_with_ties_by_row() {
        let mut t = TopK::new(NonZeroUsize::new(3).unwrap());
        for (d, r) in [(5.0, 0), (1.0, 1), (3.0, 2), (1.0, 3), (0.5, 4), (3.0, 5)] {
            t.offer(d, r);
        }
        assert_eq!(t.into_sorted(), vec![(0.5, 4), (1.0, 1), (1.0, 3)]);
    }
}
