//! UMAP (McInnes, Healy and Melville, 2018) in Rust: fit, transform of new points, and a
//! supervised mode, following umap-learn's algorithm and defaults.
//!
//! - exact k-nearest-neighbour graph (the blocked scan of [`crate::knn`]);
//! - fuzzy simplicial set: per-point `rho` (nearest non-zero distance) and `sigma` (binary
//!   search so that memberships sum to `log2(k)`), fuzzy union `A + A' - A.A'`;
//! - the `a`, `b` of `1 / (1 + a d^2b)` fitted to `min_dist` and `spread` by Gauss-Newton;
//! - spectral initialisation (the leading eigenvectors of the normalised adjacency, by subspace
//!   iteration), falling back to a seeded random layout when the basis degenerates;
//! - SGD with negative sampling, seeded and single-threaded, hence deterministic;
//! - transform: new points start at the membership-weighted mean of their training neighbours
//!   and are optimised against the fixed training embedding;
//! - supervised: edges between points of different labels are weakened as umap-learn's
//!   categorical intersection does (`target_weight`, default 0.5).

mod layout;

use std::num::NonZeroUsize;

use crate::knn::{Rows, RowsError, nearest_batch};
use crate::rng::SplitMix64;

/// UMAP's parameters; the defaults are umap-learn's. Checked by [`check`](Self::check) when a
/// fit starts, with umap-learn's rules.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct UmapParams {
    /// Neighbours in the graph, at least 2 (default 15).
    pub n_neighbors: usize,
    /// Dimension of the embedding, at least 1 (default 2).
    pub n_components: usize,
    /// Smallest distance between embedded points, from 0 to `spread` (default 0.1).
    pub min_dist: f32,
    /// Scale of the embedded distances, above 0 (default 1.0).
    pub spread: f32,
    /// Optimisation epochs (any count); `None`: 500 up to 10,000 points, else 200.
    pub n_epochs: Option<usize>,
    /// Initial learning rate, above 0 (default 1.0).
    pub learning_rate: f32,
    /// Negative samples per positive one (any count; default 5).
    pub negative_sample_rate: usize,
    /// Weight of the labels in supervised mode, from 0 to 1 (default 0.5).
    pub target_weight: f32,
    /// Seed of every random choice.
    pub seed: u64,
}

impl Default for UmapParams {
    fn default() -> Self {
        Self {
            n_neighbors: 15,
            n_components: 2,
            min_dist: 0.1,
            spread: 1.0,
            n_epochs: None,
            learning_rate: 1.0,
            negative_sample_rate: 5,
            target_weight: 0.5,
            seed: 0,
        }
    }
}

impl UmapParams {
    /// Checks every field against umap-learn's rules (see each field).
    ///
    /// # Errors
    /// [`UmapError::Param`] naming the first field out of range.
    pub fn check(&self) -> Result<(), UmapError> {
        let bad = |name, value: f64, expected| {
            Err(UmapError::Param {
                name,
                value,
                expected,
            })
        };
        let (min_dist, spread) = (f64::from(self.min_dist), f64::from(self.spread));
        if self.n_neighbors < 2 {
            return bad("n_neighbors", self.n_neighbors as f64, "at least 2");
        }
        if self.n_components == 0 {
            return bad("n_components", 0.0, "at least 1");
        }
        if !(spread.is_finite() && spread > 0.0) {
            return bad("spread", spread, "finite and above 0");
        }
        if !(min_dist.is_finite() && (0.0..=spread).contains(&min_dist)) {
            return bad("min_dist", min_dist, "from 0 to spread");
        }
        let rate = f64::from(self.learning_rate);
        if !(rate.is_finite() && rate > 0.0) {
            return bad("learning_rate", rate, "finite and above 0");
        }
        let tw = f64::from(self.target_weight);
        if !(0.0..=1.0).contains(&tw) {
            return bad("target_weight", tw, "from 0 to 1");
        }
        // n_epochs, negative_sample_rate and seed: every value is valid.
        Ok(())
    }
}

/// Errors of the reducer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UmapError {
    /// A parameter out of range.
    #[error("UMAP parameter {name} = {value}: must be {expected}")]
    Param {
        /// The field of [`UmapParams`].
        name: &'static str,
        /// Its value.
        value: f64,
        /// What it must be.
        expected: &'static str,
    },
    /// Too few points for the neighbourhood size.
    #[error("{points} points need more than n_neighbors = {n_neighbors}")]
    TooFewPoints {
        /// Points given.
        points: usize,
        /// The neighbourhood size.
        n_neighbors: usize,
    },
    /// Not one label per row.
    #[error("{labels} labels for {rows} rows")]
    Labels {
        /// Labels given.
        labels: usize,
        /// Rows given.
        rows: usize,
    },
    /// Rows to transform of another dimension than the fitted data.
    #[error("rows of {got} values, the UMAP was fitted on rows of {expected}")]
    Dimension {
        /// The fitted data's dimension.
        expected: usize,
        /// The rows'.
        got: usize,
    },
    /// The data holds a NaN or an infinity.
    #[error(transparent)]
    Rows(#[from] RowsError),
}

/// A fitted UMAP: the training data, its embedding, and what `transform` needs.
#[derive(Debug, Clone)]
pub struct Umap {
    params: UmapParams,
    a: f32,
    b: f32,
    dim: usize,
    train: Vec<f32>,
    embedding: Vec<f32>,
}

/// A sparse symmetric graph as edge lists.
#[derive(Debug, Clone, Default)]
pub(crate) struct Graph {
    pub head: Vec<usize>,
    pub tail: Vec<usize>,
    pub weight: Vec<f32>,
}

/// Per-point `(rho, sigma)` from sorted neighbour distances (self excluded), umap-learn's
/// `smooth_knn_dist` with `local_connectivity` 1 (or 0 when `connectivity` is false).
pub(crate) fn smooth_knn(dists: &[Vec<f32>], k: usize, connectivity: bool) -> Vec<(f32, f32)> {
    let target = (k as f32).log2();
    let mean_all = {
        let (s, c) = dists
            .iter()
            .flatten()
            .fold((0f64, 0usize), |(s, c), d| (s + f64::from(*d), c + 1));
        (s / c.max(1) as f64) as f32
    };
    dists
        .iter()
        .map(|d| {
            let rho = if connectivity {
                d.iter().copied().find(|&x| x > 0.0).unwrap_or(0.0)
            } else {
                0.0
            };
            let (mut lo, mut hi, mut mid) = (0f32, f32::INFINITY, 1f32);
            for _ in 0..64 {
                let psum: f32 = d.iter().map(|&x| membership(x, rho, mid)).sum();
                if (psum - target).abs() < 1e-5 {
                    break;
                }
                if psum > target {
                    hi = mid;
                    mid = (lo + hi) / 2.0;
                } else {
                    lo = mid;
                    mid = if hi.is_infinite() {
                        mid * 2.0
                    } else {
                        (lo + hi) / 2.0
                    };
                }
            }
            let mean = d.iter().sum::<f32>() / d.len().max(1) as f32;
            let floor = 1e-3 * if rho > 0.0 { mean } else { mean_all };
            (rho, mid.max(floor))
        })
        .collect()
}

/// The fuzzy membership of a neighbour at distance `d` of a point with `(rho, sigma)`.
#[inline]
pub(crate) fn membership(d: f32, rho: f32, sigma: f32) -> f32 {
    if d - rho <= 0.0 {
        1.0
    } else {
        (-(d - rho) / sigma).exp()
    }
}

/// `a`, `b` such that `1 / (1 + a x^2b)` best fits 1 below `min_dist` and
/// `exp(-(x - min_dist) / spread)` above, on 300 points of `[0, 3 spread]` (least squares,
/// Gauss-Newton with step halving).
pub(crate) fn fit_ab(spread: f32, min_dist: f32) -> (f32, f32) {
    let xs: Vec<f64> = (0..300)
        .map(|i| f64::from(spread) * 3.0 * i as f64 / 299.0)
        .collect();
    let ys: Vec<f64> = xs
        .iter()
        .map(|&x| {
            if x < f64::from(min_dist) {
                1.0
            } else {
                (-(x - f64::from(min_dist)) / f64::from(spread)).exp()
            }
        })
        .collect();
    let loss = |a: f64, b: f64| -> f64 {
        xs.iter()
            .zip(&ys)
            .map(|(&x, &y)| (1.0 / (1.0 + a * x.powf(2.0 * b)) - y).powi(2))
            .sum()
    };
    let (mut a, mut b) = (1.0f64, 1.0f64);
    for _ in 0..200 {
        // Jacobian of the residuals r = f(x) - y.
        let (mut jtj, mut jtr) = ([[0f64; 2]; 2], [0f64; 2]);
        for (&x, &y) in xs.iter().zip(&ys) {
            if x <= 0.0 {
                continue;
            }
            let p = x.powf(2.0 * b);
            let f = 1.0 / (1.0 + a * p);
            let r = f - y;
            let da = -p * f * f;
            let db = -a * p * 2.0 * x.ln() * f * f;
            jtj[0][0] += da * da;
            jtj[0][1] += da * db;
            jtj[1][1] += db * db;
            jtr[0] += da * r;
            jtr[1] += db * r;
        }
        jtj[1][0] = jtj[0][1];
        let det = jtj[0][0] * jtj[1][1] - jtj[0][1] * jtj[1][0];
        if det.abs() < 1e-300 {
            break;
        }
        let step = [
            (jtj[1][1] * jtr[0] - jtj[0][1] * jtr[1]) / det,
            (jtj[0][0] * jtr[1] - jtj[1][0] * jtr[0]) / det,
        ];
        let before = loss(a, b);
        let mut t = 1.0;
        while t > 1e-6
            && (a - t * step[0] <= 0.0
                || b - t * step[1] <= 0.0
                || loss(a - t * step[0], b - t * step[1]) > before)
        {
            t /= 2.0;
        }
        if t <= 1e-6 {
            break;
        }
        a -= t * step[0];
        b -= t * step[1];
        if (t * step[0]).abs() < 1e-10 && (t * step[1]).abs() < 1e-10 {
            break;
        }
    }
    (a as f32, b as f32)
}

/// The `k` nearest training rows of each query row, self excluded when `skip_self`, as
/// (indices, distances), nearest first.
fn knn(
    train: Rows<'_>,
    queries: Rows<'_>,
    k: NonZeroUsize,
    skip_self: bool,
) -> (Vec<Vec<usize>>, Vec<Vec<f32>>) {
    let k = k.get();
    let extra = usize::from(skip_self);
    let all = nearest_batch(
        train,
        queries,
        NonZeroUsize::new(k + extra).expect("k >= 1"),
    );
    let mut idx = Vec::with_capacity(all.len());
    let mut dist = Vec::with_capacity(all.len());
    for (q, mut row) in all.into_iter().enumerate() {
        if skip_self {
            match row.iter().position(|&(_, r)| r == q) {
                Some(p) => {
                    row.remove(p);
                }
                None => {
                    row.pop();
                }
            }
        }
        row.truncate(k);
        idx.push(row.iter().map(|&(_, r)| r).collect());
        dist.push(row.iter().map(|&(d2, _)| d2.max(0.0).sqrt()).collect());
    }
    (idx, dist)
}

/// The fuzzy union of the directed membership graph.
fn fuzzy_union(n: usize, directed: &[(usize, usize, f32)]) -> Graph {
    let mut map: std::collections::HashMap<(usize, usize), (f32, f32)> =
        std::collections::HashMap::new();
    for &(i, j, w) in directed {
        if i == j || w <= 0.0 {
            continue;
        }
        map.entry((i.min(j), i.max(j))).or_insert((0.0, 0.0));
        let e = map.get_mut(&(i.min(j), i.max(j))).expect("inserted");
        if i < j { e.0 = w } else { e.1 = w }
    }
    let mut edges: Vec<((usize, usize), f32)> = map
        .into_iter()
        .map(|(k, (x, y))| (k, x + y - x * y))
        .collect();
    edges.sort_by_key(|e| e.0);
    let mut g = Graph::default();
    for ((i, j), w) in edges {
        for (h, t) in [(i, j), (j, i)] {
            g.head.push(h);
            g.tail.push(t);
            g.weight.push(w);
        }
    }
    let _ = n;
    g
}

impl Umap {
    fn check(data: Rows<'_>, params: &UmapParams) -> Result<usize, UmapError> {
        params.check()?;
        let n = data.len();
        if n <= params.n_neighbors {
            return Err(UmapError::TooFewPoints {
                points: n,
                n_neighbors: params.n_neighbors,
            });
        }
        data.check_finite()?;
        Ok(n)
    }

    /// Fits UMAP to `data`.
    ///
    /// # Errors
    /// [`UmapError::Param`], [`UmapError::TooFewPoints`], or [`UmapError::Rows`] for a NaN.
    pub fn fit(data: Rows<'_>, params: UmapParams) -> Result<Self, UmapError> {
        Self::fit_inner(data, None, params)
    }

    /// Fits UMAP using class `labels` (one per row) as well: edges between different classes are
    /// weakened by `params.target_weight`.
    ///
    /// # Errors
    /// As [`Umap::fit`], and [`UmapError::Labels`] when the labels do not match the rows.
    pub fn fit_supervised(
        data: Rows<'_>,
        labels: &[usize],
        params: UmapParams,
    ) -> Result<Self, UmapError> {
        if labels.len() != data.len() {
            return Err(UmapError::Labels {
                labels: labels.len(),
                rows: data.len(),
            });
        }
        Self::fit_inner(data, Some(labels), params)
    }

    fn fit_inner(
        data: Rows<'_>,
        labels: Option<&[usize]>,
        params: UmapParams,
    ) -> Result<Self, UmapError> {
        let n = Self::check(data, &params)?;
        let k = params.n_neighbors;
        let (a, b) = fit_ab(params.spread, params.min_dist);
        // k - 1 neighbours besides the point itself, as umap-learn counts the point in k.
        let (idx, dist) = knn(
            data,
            data,
            NonZeroUsize::new(k - 1).expect("n_neighbors >= 2"),
            true,
        );
        let rs = smooth_knn(&dist, k, true);
        let mut directed = Vec::with_capacity(n * k);
        for i in 0..n {
            let (rho, sigma) = rs[i];
            for (&j, &d) in idx[i].iter().zip(&dist[i]) {
                let w = membership(d, rho, sigma);
                directed.push((i, j, w));
            }
        }
        let mut graph = fuzzy_union(n, &directed);
        if let Some(labels) = labels {
            graph = layout::intersect_labels(n, graph, labels, params.target_weight);
        }
        let n_epochs = params
            .n_epochs
            .unwrap_or(if n <= 10_000 { 500 } else { 200 });
        let mut rng = SplitMix64::new(params.seed);
        let mut embedding = layout::spectral_init(n, &graph, params.n_components, &mut rng);
        layout::optimize(
            &mut embedding,
            None,
            params.n_components,
            &graph,
            n_epochs,
            layout::Sgd {
                a,
                b,
                alpha: params.learning_rate,
                negative_sample_rate: params.negative_sample_rate,
            },
            &mut rng,
        );
        Ok(Self {
            params,
            a,
            b,
            dim: data.dim(),
            train: data.as_slice().to_vec(),
            embedding,
        })
    }

    /// The embedding of the training rows (`n x n_components`).
    pub fn embedding(&self) -> Rows<'_> {
        Rows::new(&self.embedding, self.params.n_components)
            .expect("n_components >= 1 and whole rows")
    }

    /// The fitted curve parameters `(a, b)`.
    pub fn ab(&self) -> (f32, f32) {
        (self.a, self.b)
    }

    /// The dimension of the embedding.
    pub fn n_components(&self) -> usize {
        self.params.n_components
    }

    /// Embeds new rows into the fitted space, leaving the training embedding as it is:
    /// `m x n_components` values, row-major.
    ///
    /// # Errors
    /// [`UmapError::Dimension`] for rows of another dimension, [`UmapError::Rows`] for a NaN.
    pub fn transform(&self, data: Rows<'_>) -> Result<Vec<f32>, UmapError> {
        if data.dim() != self.dim {
            return Err(UmapError::Dimension {
                expected: self.dim,
                got: data.dim(),
            });
        }
        data.check_finite()?;
        let m = data.len();
        if m == 0 {
            return Ok(Vec::new());
        }
        let k = self.params.n_neighbors;
        let c = self.params.n_components;
        let train = Rows::new(&self.train, self.dim).expect("the fitted rows");
        let (idx, dist) = knn(
            train,
            data,
            NonZeroUsize::new(k).expect("n_neighbors >= 2"),
            false,
        );
        let rs = smooth_knn(&dist, k, false);
        let mut graph = Graph::default();
        let mut out = vec![0f32; m * c];
        for i in 0..m {
            let (rho, sigma) = rs[i];
            let w: Vec<f32> = dist[i].iter().map(|&d| membership(d, rho, sigma)).collect();
            let total: f32 = w.iter().sum::<f32>().max(f32::MIN_POSITIVE);
            for (&j, &wj) in idx[i].iter().zip(&w) {
                for d in 0..c {
                    out[i * c + d] += wj / total * self.embedding[j * c + d];
                }
                graph.head.push(i);
                graph.tail.push(j);
                graph.weight.push(wj);
            }
        }
        let n_epochs = match self.params.n_epochs {
            Some(e) => (e / 3).max(1),
            None if self.train.len() / self.dim <= 10_000 => 100,
            None => 30,
        };
        let mut rng = SplitMix64::new(self.params.seed ^ 0x5eed);
        layout::optimize(
            &mut out,
            Some(&self.embedding),
            c,
            &graph,
            n_epochs,
            layout::Sgd {
                a: self.a,
                b: self.b,
                alpha: self.params.learning_rate / 4.0,
                negative_sample_rate: self.params.negative_sample_rate,
            },
            &mut rng,
        );
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ab_matches_umap_learn_for_the_defaults() {
        // umap.umap_.find_ab_params(1.0, 0.1) = (1.5769434, 0.8950609) (scipy curve_fit).
        let (a, b) = fit_ab(1.0, 0.1);
        assert!(
            (a - 1.577).abs() < 0.01 && (b - 0.895).abs() < 0.01,
            "a={a} b={b}"
        );
    }

    #[test]
    fn memberships_sum_to_log2_k() {
        let dists = vec![vec![0.5, 0.7, 1.0, 1.3, 2.0, 2.2, 3.0]];
        let (rho, sigma) = smooth_knn(&dists, 8, true)[0];
        assert_eq!(rho, 0.5);
        let sum: f32 = dists[0].iter().map(|&d| membership(d, rho, sigma)).sum();
        assert!((sum - 3.0).abs() < 1e-3, "sum {sum}");
    }
}
