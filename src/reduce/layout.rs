//! UMAP's layout: spectral initialisation, the supervised intersection, and the SGD.

use super::Graph;
use crate::rng::SplitMix64;

/// Parameters of the SGD.
#[derive(Debug, Clone, Copy)]
pub(super) struct Sgd {
    pub a: f32,
    pub b: f32,
    pub alpha: f32,
    pub negative_sample_rate: usize,
}

fn uniform(rng: &mut SplitMix64) -> f32 {
    (rng.next_u64() >> 40) as f32 / (1u64 << 24) as f32
}

/// umap-learn's categorical intersection: an edge between different labels is multiplied by
/// `exp(-far)`, `far = 2.5 / (1 - target_weight)`; rows are then scaled to a maximum of 1 and
/// the graph is symmetrised again by fuzzy union.
pub(super) fn intersect_labels(
    n: usize,
    graph: Graph,
    labels: &[usize],
    target_weight: f32,
) -> Graph {
    let far = if target_weight < 1.0 {
        2.5 / (1.0 - target_weight)
    } else {
        1e12
    };
    let mut weight = graph.weight.clone();
    for (e, w) in weight.iter_mut().enumerate() {
        if labels[graph.head[e]] != labels[graph.tail[e]] {
            *w *= (-far).exp();
        }
    }
    let mut row_max = vec![0f32; n];
    for (e, &w) in weight.iter().enumerate() {
        row_max[graph.head[e]] = row_max[graph.head[e]].max(w);
    }
    let directed: Vec<(usize, usize, f32)> = (0..weight.len())
        .map(|e| {
            let m = row_max[graph.head[e]];
            (
                graph.head[e],
                graph.tail[e],
                if m > 0.0 { weight[e] / m } else { 0.0 },
            )
        })
        .collect();
    super::fuzzy_union(n, &directed)
}

/// The `c` leading non-trivial eigenvectors of `D^-1/2 W D^-1/2` (the smallest of the
/// normalised Laplacian), by subspace iteration on `(M + I) / 2` (at most 2000 steps), with a
/// little seeded noise, then each coordinate scaled to [0, 10] as umap-learn does. Falls back to
/// a seeded uniform layout when the basis degenerates (e.g. a graph without edges).
pub(super) fn spectral_init(n: usize, graph: &Graph, c: usize, rng: &mut SplitMix64) -> Vec<f32> {
    let mut degree = vec![0f64; n];
    for (e, &w) in graph.weight.iter().enumerate() {
        degree[graph.head[e]] += f64::from(w);
    }
    let inv_sqrt: Vec<f64> = degree
        .iter()
        .map(|&d| if d > 0.0 { 1.0 / d.sqrt() } else { 0.0 })
        .collect();
    let apply = |x: &[f64], y: &mut [f64]| {
        y.iter_mut().zip(x).for_each(|(y, x)| *y = 0.5 * x);
        for (e, &w) in graph.weight.iter().enumerate() {
            let (i, j) = (graph.head[e], graph.tail[e]);
            y[i] += 0.5 * f64::from(w) * inv_sqrt[i] * inv_sqrt[j] * x[j];
        }
    };
    // The trivial eigenvector sqrt(degree), and c more, kept orthonormal.
    let k = c + 1;
    let mut basis: Vec<Vec<f64>> = Vec::with_capacity(k);
    basis.push(degree.iter().map(|d| d.sqrt()).collect());
    for _ in 1..k {
        basis.push((0..n).map(|_| f64::from(uniform(rng)) - 0.5).collect());
    }
    let orthonormalise = |basis: &mut Vec<Vec<f64>>| -> bool {
        for i in 0..basis.len() {
            for j in 0..i {
                let dot: f64 = basis[i].iter().zip(&basis[j]).map(|(a, b)| a * b).sum();
                let bj = basis[j].clone();
                basis[i]
                    .iter_mut()
                    .zip(&bj)
                    .for_each(|(a, b)| *a -= dot * b);
            }
            let norm = basis[i].iter().map(|a| a * a).sum::<f64>().sqrt();
            if norm < 1e-12 {
                return false;
            }
            basis[i].iter_mut().for_each(|a| *a /= norm);
        }
        true
    };
    let mut ok = orthonormalise(&mut basis);
    let mut settled = false;
    let mut y = vec![0f64; n];
    for _ in 0..2000 {
        if !ok {
            break;
        }
        let before = basis.clone();
        for v in basis.iter_mut().skip(1) {
            apply(v, &mut y);
            v.copy_from_slice(&y);
        }
        ok = orthonormalise(&mut basis);
        let change: f64 = basis
            .iter()
            .zip(&before)
            .skip(1)
            .map(|(a, b)| 1.0 - a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>().abs())
            .fold(0.0, f64::max);
        if change < 1e-9 {
            settled = true;
            break;
        }
    }
    // Not settled after the iterations still leaves a smooth layout, good enough to start from.
    let _ = settled;
    let mut out = vec![0f32; n * c];
    if ok {
        let max = basis[1..]
            .iter()
            .flatten()
            .fold(0f64, |m, v| m.max(v.abs()))
            .max(1e-12);
        for i in 0..n {
            for d in 0..c {
                let noise = (f64::from(uniform(rng)) - 0.5) * 2e-4;
                out[i * c + d] = (basis[d + 1][i] * 10.0 / max + noise) as f32;
            }
        }
    } else {
        out.iter_mut().for_each(|v| *v = uniform(rng) * 20.0 - 10.0);
    }
    // Each coordinate to [0, 10], as umap-learn does before optimising.
    for d in 0..c {
        let (lo, hi) = (0..n).fold((f32::MAX, f32::MIN), |(lo, hi), i| {
            (lo.min(out[i * c + d]), hi.max(out[i * c + d]))
        });
        let span = (hi - lo).max(f32::MIN_POSITIVE);
        for i in 0..n {
            out[i * c + d] = 10.0 * (out[i * c + d] - lo) / span;
        }
    }
    out
}

fn clip(v: f32) -> f32 {
    v.clamp(-4.0, 4.0)
}

/// umap-learn's `optimize_layout_euclidean`. With `tail = None` the embedding moves both ends
/// of each edge (fit); with `Some(train)` edges point into the fixed `train` embedding
/// (transform).
pub(super) fn optimize(
    embedding: &mut [f32],
    tail: Option<&[f32]>,
    c: usize,
    graph: &Graph,
    n_epochs: usize,
    sgd: Sgd,
    rng: &mut SplitMix64,
) {
    let max_w = graph.weight.iter().copied().fold(0f32, f32::max);
    if max_w <= 0.0 || n_epochs == 0 {
        return;
    }
    // Edges below max / n_epochs would never be sampled.
    let edges: Vec<usize> = (0..graph.weight.len())
        .filter(|&e| graph.weight[e] >= max_w / n_epochs as f32)
        .collect();
    let eps: Vec<f32> = edges
        .iter()
        .map(|&e| n_epochs as f32 / (n_epochs as f32 * graph.weight[e] / max_w))
        .collect();
    let epns: Vec<f32> = eps
        .iter()
        .map(|e| e / sgd.negative_sample_rate as f32)
        .collect();
    let mut next = eps.clone();
    let mut next_neg = epns.clone();
    let n_tail = tail.map_or(embedding.len() / c, |t| t.len() / c);
    let (a, b) = (sgd.a, sgd.b);
    let mut current = vec![0f32; c];
    let mut other = vec![0f32; c];
    for epoch in 0..n_epochs {
        let alpha = sgd.alpha * (1.0 - epoch as f32 / n_epochs as f32);
        let n = epoch as f32;
        for (s, &e) in edges.iter().enumerate() {
            if next[s] > n {
                continue;
            }
            let (j, k) = (graph.head[e], graph.tail[e]);
            current.copy_from_slice(&embedding[j * c..(j + 1) * c]);
            match tail {
                Some(t) => other.copy_from_slice(&t[k * c..(k + 1) * c]),
                None => other.copy_from_slice(&embedding[k * c..(k + 1) * c]),
            }
            let d2: f32 = current
                .iter()
                .zip(&other)
                .map(|(x, y)| (x - y) * (x - y))
                .sum();
            let coeff = if d2 > 0.0 {
                -2.0 * a * b * d2.powf(b - 1.0) / (a * d2.powf(b) + 1.0)
            } else {
                0.0
            };
            for d in 0..c {
                let g = clip(coeff * (current[d] - other[d]));
                current[d] += g * alpha;
                if tail.is_none() {
                    embedding[k * c + d] -= g * alpha;
                }
            }
            next[s] += eps[s];
            let n_neg = ((n - next_neg[s]) / epns[s]).max(0.0) as usize;
            for _ in 0..n_neg {
                let r = rng.below(n_tail as u64) as usize;
                if tail.is_none() && r == j {
                    continue;
                }
                let o = match tail {
                    Some(t) => &t[r * c..(r + 1) * c],
                    None => &embedding[r * c..(r + 1) * c],
                };
                let d2: f32 = current.iter().zip(o).map(|(x, y)| (x - y) * (x - y)).sum();
                let coeff = if d2 > 0.0 {
                    2.0 * b / ((0.001 + d2) * (a * d2.powf(b) + 1.0))
                } else {
                    0.0
                };
                for d in 0..c {
                    let g = if coeff > 0.0 {
                        clip(coeff * (current[d] - o[d]))
                    } else {
                        0.0
                    };
                    current[d] += g * alpha;
                }
            }
            next_neg[s] += n_neg as f32 * epns[s];
            embedding[j * c..(j + 1) * c].copy_from_slice(&current);
        }
    }
}
