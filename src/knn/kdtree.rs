//! The k-d tree engine: kiddo's `ImmutableKdTree` over the *distinct* points, rebuilt after each
//! change.
//!
//! Distinct points only, because ReLU features and their reductions hold many exact duplicates
//! (all-zero vectors above all): kiddo puts every copy of a point in one leaf and scans it
//! linearly. Each distinct point keeps the rows that hold it, in ascending order, so results
//! come out in the same order as the scan's: by distance, then by row.

use std::collections::HashMap;
use std::num::{NonZero, NonZeroUsize};

use kiddo::ImmutableKdTree;
use kiddo::dist::SquaredEuclidean;

use super::Rows;

/// The highest dimension a [`KdTree`] is built for; above it the blocked scan is as fast or
/// faster (see `benches/index.rs`), because a k-d tree prunes almost nothing there.
pub const KDTREE_MAX_DIM: usize = 12;

/// An exact k-d tree ([kiddo]'s `ImmutableKdTree`) over rows of 1 to [`KDTREE_MAX_DIM`]
/// dimensions, with the same answers, in the same order, as [`nearest`](super::nearest).
///
/// Built once over a fixed set of rows; a change of the rows needs a new tree.
///
/// ```
/// use std::num::NonZeroUsize;
/// use attrex::knn::{KdTree, Rows};
///
/// let data = [0.0, 0.0, 5.0, 5.0, 0.0, 0.0];
/// let tree = KdTree::build(Rows::new(&data, 2)?).expect("2-d is served");
/// // Rows 0 and 2 are the same point: ties come out by row.
/// assert_eq!(tree.nearest(&[0.5, 0.0], NonZeroUsize::new(2).unwrap()), [(0.25, 0), (0.25, 2)]);
/// # Ok::<(), attrex::knn::RowsError>(())
/// ```
///
/// [kiddo]: https://docs.rs/kiddo
#[derive(Debug)]
pub struct KdTree {
    inner: Inner,
    /// `groups[i]`: the rows holding distinct point `i`, ascending.
    groups: Vec<Vec<usize>>,
}

macro_rules! inner {
    ($($k:literal => $v:ident),* $(,)?) => {
        #[derive(Debug)]
        enum Inner { $($v(ImmutableKdTree<f32, $k>),)* }

        impl Inner {
            fn build(points: &[f32], dim: usize) -> Option<Self> {
                match dim {
                    $($k => build::<$k>(points).map(Inner::$v),)*
                    _ => None,
                }
            }

            /// `(squared distance, distinct point)` of the `n` nearest, plus all those tied with
            /// the last when `all_ties` (then possibly more than `n`).
            fn nearest(&self, q: &[f32], n: usize) -> Vec<(f32, usize)> {
                match self {
                    $(Inner::$v(t) => query::<$k>(t, q, n),)*
                }
            }
        }
    };
}

inner!(1 => D1, 2 => D2, 3 => D3, 4 => D4, 5 => D5, 6 => D6, 7 => D7, 8 => D8, 9 => D9, 10 => D10,
       11 => D11, 12 => D12);

/// kiddo's tree, or `None` past its 2^32 points.
fn build<const K: usize>(points: &[f32]) -> Option<ImmutableKdTree<f32, K>> {
    let pts: Vec<[f32; K]> = points
        .chunks_exact(K)
        .map(|c| c.try_into().expect("chunks of K"))
        .collect();
    ImmutableKdTree::new_from_slice(&pts).ok()
}

/// The `n` nearest distinct points, then every further one at the same distance as the `n`-th,
/// so that ties can be ordered by row afterwards.
fn query<const K: usize>(tree: &ImmutableKdTree<f32, K>, q: &[f32], n: usize) -> Vec<(f32, usize)> {
    let q: &[f32; K] = q.try_into().expect("query of the tree's dimension");
    let size = tree.size();
    if size == 0 {
        return Vec::new();
    }
    // n may be usize::MAX (a k of "every example"): no overflow, at most every point.
    let want = n.saturating_add(1).min(size);
    let res = tree
        .query(q)
        .nearest_n::<SquaredEuclidean<f32>>(NonZero::new(want).expect("want >= 1"))
        .execute();
    let mut out: Vec<(f32, usize)> = res.iter().map(|r| (r.distance, r.item as usize)).collect();
    // A tie across the n-th place: fetch every point within that distance.
    if out.len() > n && out[n].0 <= out[n - 1].0 {
        let d = out[n - 1].0;
        out = tree
            .query(q)
            .within::<SquaredEuclidean<f32>>(d)
            .execute()
            .iter()
            .map(|r| (r.distance, r.item as usize))
            .collect();
    }
    out
}

impl KdTree {
    /// A tree over `data`, or `None` when its dimension is above [`KDTREE_MAX_DIM`] or it holds
    /// 2^32 distinct points or more (kiddo's limit).
    pub fn build(data: Rows<'_>) -> Option<Self> {
        let dim = data.dim();
        if dim > KDTREE_MAX_DIM {
            return None;
        }
        let mut seen: HashMap<Vec<u32>, usize> = HashMap::new();
        let mut points = Vec::new();
        let mut groups: Vec<Vec<usize>> = Vec::new();
        for (row, v) in data.iter().enumerate() {
            // +0.0 turns -0.0 into 0.0, which are the same point.
            let key: Vec<u32> = v.iter().map(|x| (x + 0.0).to_bits()).collect();
            let next = groups.len();
            let g = *seen.entry(key).or_insert(next);
            if g == next {
                points.extend_from_slice(v);
                groups.push(Vec::new());
            }
            groups[g].push(row);
        }
        Some(Self {
            inner: Inner::build(&points, dim)?,
            groups,
        })
    }

    /// The `k` nearest rows: `(squared distance, row)`, nearest first, ties by row.
    ///
    /// # Panics
    /// When `query` does not have the tree's dimension (a bug of the caller).
    pub fn nearest(&self, query: &[f32], k: NonZeroUsize) -> Vec<(f32, usize)> {
        let k = k.get();
        let mut rows: Vec<(f32, usize)> = self
            .inner
            .nearest(query, k)
            .into_iter()
            .flat_map(|(d, g)| self.groups[g].iter().map(move |&r| (d, r)))
            .collect();
        rows.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        rows.truncate(k);
        rows
    }
}
