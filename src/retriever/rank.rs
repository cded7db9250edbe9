//! How the catalogue is ranked: per-tap distances, their scales, and how the two combine.

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::item::{ItemRecord, Scored};
use crate::knn::{Rows, squared_l2};
use crate::rng::SplitMix64;

/// How the two scale-normalised distances `c` and `t` (weighted `wc`, `wt`) combine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Fusion {
    /// `wc * c + wt * t`: the paper's sum.
    #[default]
    Sum,
    /// `max(wc * c, wt * t)`: an item is as far as its worse tap, so only items close in
    /// *both* colour and texture rank high (a fuzzy AND).
    Max,
    /// `c^wc * t^wt` (ranked as `wc ln c + wt ln t`): relative closeness counts in each tap.
    Product,
}

/// How to rank the catalogue.
///
/// Distances in different blocks live on different scales (block 4's are several times block
/// 2's), so a combined ranking divides each tap's distance by its **scale**: the median
/// distance between two catalogue items in that tap (all pairs up to 2,000 items, else 200,000
/// pairs drawn with a fixed seed). A normalised distance of 1 is then "as far apart as two
/// typical items" in either tap, and the weights say how much each tap counts:
///
/// ```text
/// c = d_colour / scale_colour,  t = d_texture / scale_texture
/// Fusion::Sum:     score = w_colour * c + w_texture * t          (the paper's)
/// Fusion::Max:     score = max(w_colour * c, w_texture * t)      (close in both)
/// Fusion::Product: score = w_colour * ln c + w_texture * ln t
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum Ranking {
    /// By colour-tap distance.
    Colour,
    /// By texture-tap distance.
    Texture,
    /// By the weighted, scale-normalised distances of both taps (see above).
    Combined {
        /// Weight of the colour tap.
        colour: f32,
        /// Weight of the texture tap.
        texture: f32,
        /// How the two combine.
        fusion: Fusion,
    },
}

impl Default for Ranking {
    /// [`Ranking::BOTH`].
    fn default() -> Self {
        Self::BOTH
    }
}

impl Ranking {
    /// Colour and texture with equal weight, summed: the paper's combined ranking.
    pub const BOTH: Ranking = Ranking::Combined {
        colour: 1.0,
        texture: 1.0,
        fusion: Fusion::Sum,
    };

    /// The weights `[colour, texture]`: a tap of weight 0 need not be measured.
    pub fn weights(self) -> [f32; 2] {
        match self {
            Ranking::Colour => [1.0, 0.0],
            Ranking::Texture => [0.0, 1.0],
            Ranking::Combined {
                colour, texture, ..
            } => [colour, texture],
        }
    }

    /// The score (lower is closer) of an item at Euclidean distances `[colour, texture]` from
    /// the query, under the catalogue's `scales`. A distance of a tap with weight 0 is not
    /// read (it may be NaN).
    pub fn score(self, [c, t]: [f32; 2], [sc, st]: [f32; 2]) -> f32 {
        let [wc, wt] = self.weights();
        // A term of weight 0 is 0, whatever its distance (which is not measured).
        let linear = |w: f32, d: f32, s: f32| if w == 0.0 { 0.0 } else { w * d / s };
        let log = |w: f32, d: f32, s: f32| {
            if w == 0.0 {
                0.0
            } else {
                w * (d / s).max(f32::MIN_POSITIVE).ln()
            }
        };
        match self {
            Ranking::Colour => c,
            Ranking::Texture => t,
            Ranking::Combined {
                fusion: Fusion::Sum,
                ..
            } => linear(wc, c, sc) + linear(wt, t, st),
            Ranking::Combined {
                fusion: Fusion::Max,
                ..
            } => linear(wc, c, sc).max(linear(wt, t, st)),
            Ranking::Combined {
                fusion: Fusion::Product,
                ..
            } => log(wc, c, sc) + log(wt, t, st),
        }
    }

    /// Checks the weights of a combined ranking: finite, not negative, not both 0.
    pub(crate) fn check(self) -> Result<(), crate::error::RetrieverError> {
        let [wc, wt] = self.weights();
        let ok = |w: f32| w.is_finite() && w >= 0.0;
        if ok(wc) && ok(wt) && (wc > 0.0 || wt > 0.0) {
            Ok(())
        } else {
            Err(crate::error::RetrieverError::Weights {
                colour: wc,
                texture: wt,
            })
        }
    }
}

/// Ranks candidates whose distances `[colour, texture]` are known by `ranking` under `scales`
/// and keeps the `k` best, best first, ties by id: how a store that gets candidates from
/// indexes ranks them, with the same [`Ranking::score`] as the memory store's full scan.
#[cfg_attr(not(feature = "postgres"), allow(dead_code))]
pub(crate) fn rank_candidates(
    candidates: Vec<(ItemRecord, [f32; 2])>,
    ranking: Ranking,
    scales: [f32; 2],
    k: usize,
) -> Vec<Scored> {
    let mut scored: Vec<Scored> = candidates
        .into_iter()
        .map(|(record, distances)| Scored {
            score: ranking.score(distances, scales),
            record,
            distances,
        })
        .collect();
    scored.sort_by(|a, b| {
        a.score
            .total_cmp(&b.score)
            .then(a.record.id.cmp(&b.record.id))
    });
    scored.dedup_by_key(|s| s.record.id);
    scored.truncate(k);
    scored
}

/// How many item pairs estimate a scale: every pair while a catalogue has at most this many
/// (up to 200 items), else this many pairs drawn with seed 0. A fixed budget keeps the cost of
/// settling a catalogue after a single added item bounded (issue #12: all pairs of the 276-item
/// dev catalogue cost 202 ms per added item); the estimate stays within about 1% of the
/// all-pairs median (see the tests).
pub(crate) const SCALE_PAIRS: usize = 20_000;

/// The pairs of items whose distances estimate the scales of a catalogue of `n` items: all
/// pairs while there are at most [`SCALE_PAIRS`], else [`SCALE_PAIRS`] pairs of distinct items
/// drawn with seed 0.
pub(crate) fn scale_pairs(n: usize) -> Vec<(usize, usize)> {
    if n < 2 {
        return Vec::new();
    }
    if n * (n - 1) / 2 <= SCALE_PAIRS {
        (0..n)
            .flat_map(|i| (i + 1..n).map(move |j| (i, j)))
            .collect()
    } else {
        let mut rng = SplitMix64::new(0);
        (0..SCALE_PAIRS)
            .map(|_| {
                let i = rng.below(n as u64) as usize;
                let j = (i + 1 + rng.below(n as u64 - 1) as usize) % n;
                (i, j)
            })
            .collect()
    }
}

/// The median Euclidean distance over `pairs` of `rows`; 1 when there is no pair or the median
/// is 0 (so that dividing by it is safe).
pub(crate) fn median_distance(rows: Rows<'_>, pairs: &[(usize, usize)]) -> f32 {
    if pairs.is_empty() {
        return 1.0;
    }
    let mut d: Vec<f32> = pairs
        .par_iter()
        .map(|&(i, j)| squared_l2(rows.row(i), rows.row(j)).sqrt())
        .collect();
    let mid = d.len() / 2;
    let (_, m, _) = d.select_nth_unstable_by(mid, f32::total_cmp);
    if *m > 0.0 { *m } else { 1.0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scores_follow_the_formulas() {
        let (d, s) = ([2.0, 6.0], [2.0, 3.0]);
        assert_eq!(Ranking::Colour.score(d, s), 2.0);
        assert_eq!(Ranking::Texture.score([f32::NAN, 6.0], s), 6.0);
        assert_eq!(Ranking::BOTH.score(d, s), 3.0);
        let max = Ranking::Combined {
            colour: 1.0,
            texture: 1.0,
            fusion: Fusion::Max,
        };
        assert_eq!(max.score(d, s), 2.0);
    }

    /// The all-pairs median, computed directly: the reference for the sampled estimate.
    fn exact_median(rows: &[Vec<f32>]) -> f32 {
        let mut d = Vec::new();
        for i in 0..rows.len() {
            for j in i + 1..rows.len() {
                let s: f32 = rows[i]
                    .iter()
                    .zip(&rows[j])
                    .map(|(a, b)| (a - b) * (a - b))
                    .sum();
                d.push(s.sqrt());
            }
        }
        d.sort_by(f32::total_cmp);
        d[d.len() / 2]
    }

    #[test]
    fn sampled_scales_stay_close_to_the_all_pairs_median() {
        // Clustered, skewed non-negative vectors like pooled features: 40 centres, each item
        // a centre times log-normal-ish noise (an independent generator, seed 7).
        let mut rng = SplitMix64::new(7);
        let mut unit = move || (rng.next_u64() >> 11) as f32 / (1u64 << 53) as f32;
        let dim = 32;
        let centres: Vec<Vec<f32>> = (0..40)
            .map(|_| (0..dim).map(|_| (3.0 * unit()).exp() - 1.0).collect())
            .collect();
        for n in [150usize, 201, 600, 1500] {
            let rows: Vec<Vec<f32>> = (0..n)
                .map(|i| {
                    let c = &centres[i % 40];
                    c.iter().map(|x| x * (0.6 + 0.8 * unit())).collect()
                })
                .collect();
            let flat: Vec<f32> = rows.concat();
            let pairs = scale_pairs(n);
            assert_eq!(pairs.len(), (n * (n - 1) / 2).min(SCALE_PAIRS));
            assert!(pairs.iter().all(|&(i, j)| i != j && i < n && j < n));
            let got = median_distance(Rows::new(&flat, dim).unwrap(), &pairs);
            let want = exact_median(&rows);
            let rel = (got - want).abs() / want;
            assert!(
                rel < 0.02,
                "n {n}: sampled {got} vs exact {want} ({rel:.4})"
            );
            if n * (n - 1) / 2 <= SCALE_PAIRS {
                // Every pair: the same median, up to the summation order of the distances.
                assert!(rel < 1e-5, "n {n}: every pair, so the exact median");
            }
        }
    }

    #[test]
    fn a_tap_of_weight_zero_does_not_count() {
        // Regression: the unmeasured distance (NaN) used to make the whole sum NaN.
        let colour_only = Ranking::Combined {
            colour: 2.0,
            texture: 0.0,
            fusion: Fusion::Sum,
        };
        assert_eq!(colour_only.score([3.0, f32::NAN], [2.0, 1.0]), 3.0);
        assert!(colour_only.check().is_ok());
        let none = Ranking::Combined {
            colour: 0.0,
            texture: -1.0,
            fusion: Fusion::Sum,
        };
        assert!(none.check().is_err());
    }

    #[test]
    fn scale_is_the_median_pair_distance() {
        let data = [0.0, 1.0, 3.0, 7.0];
        let rows = Rows::new(&data, 1).unwrap();
        // Distances 1 3 7 2 6 4: the upper median is 4.
        assert_eq!(median_distance(rows, &scale_pairs(4)), 4.0);
        assert_eq!(median_distance(rows, &[]), 1.0);
        // Above the sample budget, a fixed sample of that many pairs.
        assert_eq!(scale_pairs(3000).len(), SCALE_PAIRS);
    }
}
