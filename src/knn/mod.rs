//! The exact k-nearest-neighbour core that the index, the reducer, the clusterer, the retriever
//! and the evaluation share: a checked row-major view ([`Rows`]), the squared Euclidean
//! distance, a top-k list, a blocked scan and a k-d tree.
//!
//! Every search here is exact, and every result comes out in the same order: by distance, then
//! by row (the older row first), so that the scan and the tree give the same answers.
//!
//! ```
//! use std::num::NonZeroUsize;
//! use attrex::knn::{self, Rows};
//!
//! let data = [0.0, 0.0, 1.0, 1.0, 0.1, 0.0]; // three 2-d points
//! let rows = Rows::new(&data, 2)?;
//! let k = NonZeroUsize::new(2).unwrap();
//! let near: Vec<usize> = knn::nearest(rows, &[0.0, 0.1], k).into_iter().map(|(_, row)| row).collect();
//! assert_eq!(near, [0, 2]);
//! # Ok::<(), attrex::knn::RowsError>(())
//! ```
//!
//! Not for millions of high-dimensional vectors: there is no approximate search here.

mod kdtree;
mod scan;

use std::num::NonZeroUsize;

pub use kdtree::{KDTREE_MAX_DIM, KdTree};
pub use scan::{TopK, nearest, nearest_batch, squared_l2};

/// A row-major matrix of `f32` seen as rows of a fixed, non-zero dimension: the shape is checked
/// once, when the view is made.
///
/// ```
/// use attrex::knn::Rows;
///
/// let rows = Rows::new(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], 3)?;
/// assert_eq!((rows.len(), rows.dim()), (2, 3));
/// assert_eq!(rows.row(1), [4.0, 5.0, 6.0]);
/// assert!(Rows::new(&[1.0, 2.0], 3).is_err());
/// # Ok::<(), attrex::knn::RowsError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rows<'a> {
    data: &'a [f32],
    dim: NonZeroUsize,
}

/// Why values do not form [`Rows`], or hold a value a search cannot use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RowsError {
    /// Rows of dimension 0.
    #[error("rows need a dimension of at least 1")]
    ZeroDimension,
    /// The length is not a multiple of the dimension.
    #[error("{len} values do not form rows of {dim}")]
    Ragged {
        /// Values given.
        len: usize,
        /// The row length asked for.
        dim: usize,
    },
    /// A NaN or an infinity.
    #[error("row {row} holds a NaN or infinite value at position {column}")]
    NotFinite {
        /// The row.
        row: usize,
        /// The position in the row.
        column: usize,
    },
    /// A finite value so large that a squared distance between rows of this dimension could
    /// overflow to infinity (see [`max_magnitude`]).
    #[error(
        "row {row} holds a value at position {column} beyond the largest magnitude {limit:e} \
         that rows of {dim} values can be searched with",
        limit = max_magnitude(*dim)
    )]
    TooLarge {
        /// The row.
        row: usize,
        /// The position in the row.
        column: usize,
        /// The row length, which sets the limit.
        dim: usize,
    },
}

/// The largest magnitude a value may have in rows of `dim` values for every squared distance
/// between two such rows to stay finite in `f32`.
///
/// Two values of magnitude at most `m` differ by at most `2m`, so a squared distance is at most
/// `4 m² dim`; the limit keeps that at or below `f32::MAX / 2`, which leaves room for the
/// rounding of the sum. Beyond it, distances overflow to infinity, every such neighbour ties,
/// and the nearest can no longer be told apart (issue #12). The limit is about `6.5e18` for one
/// dimension and `1.4e17` for 2048, far beyond any feature a network or a reducer produces.
///
/// ```
/// use attrex::knn::max_magnitude;
///
/// let m = max_magnitude(2048);
/// // Two opposite corners at the limit still have a finite squared distance.
/// let d2: f32 = (0..2048).map(|_| (2.0 * m) * (2.0 * m)).sum();
/// assert!(d2.is_finite());
/// ```
pub fn max_magnitude(dim: usize) -> f32 {
    (f64::from(f32::MAX) / 8.0 / dim.max(1) as f64).sqrt() as f32
}

impl<'a> Rows<'a> {
    /// `data` as rows of `dim` values.
    ///
    /// # Errors
    /// [`RowsError::ZeroDimension`], or [`RowsError::Ragged`] when `data.len()` is not a multiple
    /// of `dim`.
    pub fn new(data: &'a [f32], dim: usize) -> Result<Self, RowsError> {
        let dim = NonZeroUsize::new(dim).ok_or(RowsError::ZeroDimension)?;
        if !data.len().is_multiple_of(dim.get()) {
            return Err(RowsError::Ragged {
                len: data.len(),
                dim: dim.get(),
            });
        }
        Ok(Self { data, dim })
    }

    /// One row: `data` as a single row of its own length.
    ///
    /// # Errors
    /// [`RowsError::ZeroDimension`] for an empty slice.
    pub fn single(data: &'a [f32]) -> Result<Self, RowsError> {
        Self::new(data, data.len())
    }

    /// The row length.
    pub fn dim(&self) -> usize {
        self.dim.get()
    }

    /// The row length, as the non-zero count it is.
    pub fn dim_nonzero(&self) -> NonZeroUsize {
        self.dim
    }

    /// The number of rows.
    pub fn len(&self) -> usize {
        self.data.len() / self.dim.get()
    }

    /// Whether there is no row.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Row `i`.
    ///
    /// # Panics
    /// When `i >= self.len()`; [`get`](Self::get) is the fallible twin.
    pub fn row(&self, i: usize) -> &'a [f32] {
        let d = self.dim.get();
        &self.data[i * d..(i + 1) * d]
    }

    /// Row `i`, or `None` past the end.
    pub fn get(&self, i: usize) -> Option<&'a [f32]> {
        (i < self.len()).then(|| self.row(i))
    }

    /// The rows in order.
    pub fn iter(&self) -> std::slice::ChunksExact<'a, f32> {
        self.data.chunks_exact(self.dim.get())
    }

    /// All values, row after row.
    pub fn as_slice(&self) -> &'a [f32] {
        self.data
    }

    /// The first NaN or infinity, as an error naming its row and position.
    ///
    /// # Errors
    /// [`RowsError::NotFinite`].
    pub fn check_finite(&self) -> Result<(), RowsError> {
        match self.data.iter().position(|v| !v.is_finite()) {
            None => Ok(()),
            Some(i) => Err(RowsError::NotFinite {
                row: i / self.dim.get(),
                column: i % self.dim.get(),
            }),
        }
    }
}

impl Rows<'_> {
    /// The first value a search cannot use: a NaN or an infinity ([`RowsError::NotFinite`]),
    /// or a value beyond [`max_magnitude`] ([`RowsError::TooLarge`]), naming its row and
    /// position.
    ///
    /// # Errors
    /// [`RowsError::NotFinite`] or [`RowsError::TooLarge`].
    pub fn check_searchable(&self) -> Result<(), RowsError> {
        self.check_finite()?;
        let limit = max_magnitude(self.dim());
        match self.data.iter().position(|v| v.abs() > limit) {
            None => Ok(()),
            Some(i) => Err(RowsError::TooLarge {
                row: i / self.dim.get(),
                column: i % self.dim.get(),
                dim: self.dim.get(),
            }),
        }
    }
}

impl<'a> IntoIterator for Rows<'a> {
    type Item = &'a [f32];
    type IntoIter = std::slice::ChunksExact<'a, f32>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_check_their_shape_once() {
        assert_eq!(Rows::new(&[], 0), Err(RowsError::ZeroDimension));
        assert_eq!(
            Rows::new(&[1.0; 5], 2),
            Err(RowsError::Ragged { len: 5, dim: 2 })
        );
        let r = Rows::new(&[1.0, 2.0, 3.0, 4.0], 2).unwrap();
        assert_eq!(r.iter().collect::<Vec<_>>(), [[1.0, 2.0], [3.0, 4.0]]);
        assert_eq!(r.get(2), None);
        assert!(Rows::new(&[], 3).unwrap().is_empty());
        assert_eq!(
            Rows::new(&[0.0, 1.0, f32::NAN, 0.0], 2)
                .unwrap()
                .check_finite(),
            Err(RowsError::NotFinite { row: 1, column: 0 })
        );
    }

    #[test]
    fn values_whose_squared_distances_overflow_are_refused() {
        // 3e38 is finite, but (3e38 - 0)^2 is not: f32::MAX is about 3.4e38.
        let rows = Rows::new(&[0.0, 1.0, 2.0, 3e38], 2).unwrap();
        assert_eq!(rows.check_finite(), Ok(()));
        assert_eq!(
            rows.check_searchable(),
            Err(RowsError::TooLarge {
                row: 1,
                column: 1,
                dim: 2
            })
        );
        // At the limit, opposite corners are still at a finite distance.
        for dim in [1, 2, 12, 13, 2048] {
            let m = max_magnitude(dim);
            let (a, b) = (vec![m; dim], vec![-m; dim]);
            assert!(scan::squared_l2(&a, &b).is_finite(), "dim {dim}");
            let both = [a, b].concat();
            assert_eq!(Rows::new(&both, dim).unwrap().check_searchable(), Ok(()));
        }
    }
}
