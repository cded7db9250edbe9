//! Clustering the block features with HDBSCAN, and scoring the clusters against the classes
//! (the paper's Figure 3: ARI and AMI per block).
//!
//! HDBSCAN itself comes from the `hdbscan` crate (pure Rust, MIT/Apache-2.0), checked against
//! the reference Python `hdbscan` 0.8 on `../shared/fixtures/hdbscan_blobs.csv` in the tests.

mod metrics;

pub use metrics::{adjusted_mutual_information, adjusted_rand_index};

/// HDBSCAN's parameters; the defaults are the paper's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HdbscanParams {
    /// Smallest group that counts as a cluster (paper: 50).
    pub min_cluster_size: usize,
    /// Neighbours that define a point's core distance (paper: 10).
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

/// Errors of the clustering.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClusterError {
    /// The feature matrix does not split into rows of `dim`.
    #[error("{len} values do not form rows of {dim}")]
    Shape {
        /// Values given.
        len: usize,
        /// The row length.
        dim: usize,
    },
    /// HDBSCAN refused the input.
    #[error("hdbscan: {0}")]
    Hdbscan(String),
}

/// HDBSCAN labels (Euclidean) for the rows of `features` (`n x dim`, row-major): a cluster
/// number per row, -1 for noise.
///
/// # Errors
/// [`ClusterError::Shape`], or [`ClusterError::Hdbscan`] (e.g. fewer rows than
/// `min_cluster_size`, or a NaN).
pub fn hdbscan(
    features: &[f32],
    dim: usize,
    params: HdbscanParams,
) -> Result<Vec<i64>, ClusterError> {
    if dim == 0 || !features.len().is_multiple_of(dim) {
        return Err(ClusterError::Shape {
            len: features.len(),
            dim,
        });
    }
    let rows: Vec<Vec<f32>> = features.chunks_exact(dim).map(<[f32]>::to_vec).collect();
    let hyper = hdbscan::HdbscanHyperParams::builder()
        .min_cluster_size(params.min_cluster_size)
        .min_samples(params.min_samples)
        .dist_metric(hdbscan::DistanceMetric::Euclidean)
        .build();
    let labels = hdbscan::Hdbscan::new(&rows, hyper)
        .cluster()
        .map_err(|e| ClusterError::Hdbscan(format!("{e:?}")))?;
    Ok(labels.into_iter().map(i64::from).collect())
}
