//! Clustering the block features with HDBSCAN, and scoring the clusters against the classes
//! (the paper's Figure 3: ARI and AMI per block).
//!
//! HDBSCAN itself comes from the `hdbscan` crate (pure Rust, MIT/Apache-2.0), checked against
//! the reference Python `hdbscan` 0.8 on `../shared/fixtures/hdbscan_blobs.csv` in the tests.

mod metrics;

pub use metrics::{adjusted_mutual_information, adjusted_rand_index};

use crate::knn::{Rows, RowsError};

/// HDBSCAN's parameters; the defaults are the paper's. Checked by [`check`](Self::check) when
/// clustering starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HdbscanParams {
    /// Smallest group that counts as a cluster, at least 2 (paper: 50).
    pub min_cluster_size: usize,
    /// Neighbours that define a point's core distance, at least 1 (paper: 10).
    pub min_samples: usize,
}

impl Default for HdbscanParams {
    fn default() -> Self {
        Self {
            min_cluster_size: 50,
            min_samples: 10,
        }
    }
}

impl HdbscanParams {
    /// Checks every field (the `hdbscan` crate would otherwise raise a value that is too small
    /// to its minimum, with a warning on stdout).
    ///
    /// # Errors
    /// [`ClusterError::Param`] naming the first field out of range.
    pub fn check(&self) -> Result<(), ClusterError> {
        for (name, value, minimum) in [
            ("min_cluster_size", self.min_cluster_size, 2),
            ("min_samples", self.min_samples, 1),
        ] {
            if value < minimum {
                return Err(ClusterError::Param {
                    name,
                    value,
                    minimum,
                });
            }
        }
        Ok(())
    }
}

/// Errors of the clustering.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClusterError {
    /// A parameter below its minimum.
    #[error("HDBSCAN parameter {name} = {value}: must be at least {minimum}")]
    Param {
        /// The field of [`HdbscanParams`].
        name: &'static str,
        /// Its value.
        value: usize,
        /// The smallest value allowed.
        minimum: usize,
    },
    /// A NaN or an infinity (the `hdbscan` crate lets a NaN through).
    #[error(transparent)]
    Rows(#[from] RowsError),
    /// HDBSCAN refused the input (no rows).
    #[error("hdbscan refused the input")]
    Hdbscan(#[source] hdbscan::HdbscanError),
}

/// HDBSCAN labels (Euclidean) for the rows of `features`: a cluster number per row, -1 for
/// noise.
///
/// # Errors
/// [`ClusterError::Param`], [`ClusterError::Rows`] for a NaN or an infinity, or
/// [`ClusterError::Hdbscan`] (no rows).
pub fn hdbscan(features: Rows<'_>, params: HdbscanParams) -> Result<Vec<i64>, ClusterError> {
    params.check()?;
    features.check_finite()?;
    let rows: Vec<Vec<f32>> = features.iter().map(<[f32]>::to_vec).collect();
    let hyper = hdbscan::HdbscanHyperParams::builder()
        .min_cluster_size(params.min_cluster_size)
        .min_samples(params.min_samples)
        .dist_metric(hdbscan::DistanceMetric::Euclidean)
        .build();
    let labels = hdbscan::Hdbscan::new(&rows, hyper)
        .cluster()
        .map_err(ClusterError::Hdbscan)?;
    Ok(labels.into_iter().map(i64::from).collect())
}
