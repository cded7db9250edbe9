//! Exact brute-force k-nearest search over row-major vectors, for the 64-2048 dimensions of
//! raw block features, where a k-d tree no longer prunes anything.
//!
//! Distances are accumulated in eight independent lanes, which the compiler turns into SIMD
//! adds and multiplies; batches of queries are scanned block by block (a block of reference
//! rows stays in cache while every query of the batch passes over it) and in parallel.

use rayon::prelude::*;

/// Squared Euclidean distance with eight accumulators.
#[inline]
pub(crate) fn squared_l2(a: &[f32], b: &[f32]) -> f32 {
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

/// The `k` best (smallest distance, then smallest row) seen so far, kept sorted.
#[derive(Debug, Clone)]
pub(crate) struct TopK {
    k: usize,
    best: Vec<(f32, usize)>,
}

impl TopK {
    pub fn new(k: usize) -> Self {
        Self {
            k,
            best: Vec::with_capacity(k + 1),
        }
    }

    #[inline]
    fn worst(&self) -> f32 {
        if self.best.len() < self.k {
            f32::INFINITY
        } else {
            self.best[self.k - 1].0
        }
    }

    #[inline]
    pub fn offer(&mut self, dist: f32, row: usize) {
        if self.best.len() == self.k && !less(dist, row, self.best[self.k - 1]) {
            return;
        }
        let pos = self.best.partition_point(|&e| less(e.0, e.1, (dist, row)));
        self.best.insert(pos, (dist, row));
        self.best.truncate(self.k);
    }

    /// `(squared distance, row)`, nearest first.
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
    (65_536 / dim.max(1)).clamp(16, 4096)
}

/// The `k` nearest rows of `data` (`n x dim`, row-major) to `query`: `(squared distance, row)`,
/// nearest first, ties by row.
pub(crate) fn nearest(data: &[f32], dim: usize, query: &[f32], k: usize) -> Vec<(f32, usize)> {
    let mut top = TopK::new(k);
    for (row, x) in data.chunks_exact(dim).enumerate() {
        let d = squared_l2(query, x);
        if d <= top.worst() {
            top.offer(d, row);
        }
    }
    top.into_sorted()
}

/// [`nearest`] for every query of `queries` (`m x dim`), scanning the references block by
/// block for cache reuse, with query batches in parallel.
pub(crate) fn nearest_batch(
    data: &[f32],
    dim: usize,
    queries: &[f32],
    k: usize,
) -> Vec<Vec<(f32, usize)>> {
    const QUERIES_PER_TASK: usize = 16;
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
        let mut t = TopK::new(3);
        for (d, r) in [(5.0, 0), (1.0, 1), (3.0, 2), (1.0, 3), (0.5, 4), (3.0, 5)] {
            t.offer(d, r);
        }
        assert_eq!(t.into_sorted(), vec![(0.5, 4), (1.0, 1), (1.0, 3)]);
    }
}
