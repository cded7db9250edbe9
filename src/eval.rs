//! The paper's evaluation: stratified k-fold cross-validation of the kNN vote, per block.

use std::num::NonZeroUsize;

use crate::error::IndexError;
use crate::index::{AttributeIndex, TieBreak};

/// A small, seeded, portable random generator (SplitMix64): the same numbers on every platform
/// and version. attrex uses it for sampling (the retriever's pair sample) and its tests and
/// benches for synthetic data; the folds use scikit-learn's own generator instead.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A uniform integer in `0..n` (`n > 0`), without modulo bias.
    pub fn below(&mut self, n: u64) -> u64 {
        let zone = u64::MAX - u64::MAX % n;
        loop {
            let x = self.next_u64();
            if x < zone {
                return x % n;
            }
        }
    }

    /// Shuffles `items` in place (Fisher-Yates).
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            items.swap(i, j);
        }
    }
}

/// MT19937, the generator behind NumPy's legacy `RandomState`, seeded as `RandomState(seed)`
/// seeds it. Only what [`stratified_folds`] needs to reproduce scikit-learn's shuffles.
#[derive(Debug, Clone)]
struct Mt19937 {
    state: [u32; 624],
    pos: usize,
}

impl Mt19937 {
    fn new(seed: u32) -> Self {
        let mut state = [0u32; 624];
        state[0] = seed;
        for i in 1..624 {
            let prev = state[i - 1];
            state[i] = 1_812_433_253u32
                .wrapping_mul(prev ^ (prev >> 30))
                .wrapping_add(i as u32);
        }
        Self { state, pos: 624 }
    }

    fn next_u32(&mut self) -> u32 {
        if self.pos >= 624 {
            for i in 0..624 {
                let y = (self.state[i] & 0x8000_0000) | (self.state[(i + 1) % 624] & 0x7fff_ffff);
                let mut v = self.state[(i + 397) % 624] ^ (y >> 1);
                if y & 1 != 0 {
                    v ^= 0x9908_b0df;
                }
                self.state[i] = v;
            }
            self.pos = 0;
        }
        let mut y = self.state[self.pos];
        self.pos += 1;
        y ^= y >> 11;
        y ^= (y << 7) & 0x9d2c_5680;
        y ^= (y << 15) & 0xefc6_0000;
        y ^ (y >> 18)
    }

    /// Uniform in `0..=max` by masked rejection, as NumPy's legacy `random_interval`.
    fn interval(&mut self, max: u32) -> u32 {
        if max == 0 {
            return 0;
        }
        let mask = u32::MAX >> max.leading_zeros();
        loop {
            let v = self.next_u32() & mask;
            if v <= max {
                return v;
            }
        }
    }

    /// `RandomState.shuffle` of a 1-D array.
    fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.interval(i as u32) as usize;
            items.swap(i, j);
        }
    }
}

/// Stratified k-fold split, identical to scikit-learn's
/// `StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)`: each class is dealt into
/// the folds in proportion (fold sizes differ by at most one), then the fold numbers within
/// each class are shuffled with NumPy's `RandomState(seed)`. The same seed gives the same
/// folds as the Python reference, so accuracies can be compared split for split.
///
/// Returns the test fold (0..folds) of every sample.
///
/// # Errors
/// [`EvalError::Folds`] when `folds < 2` or a class has fewer samples than folds.
pub fn stratified_folds(
    labels: &[usize],
    folds: usize,
    seed: u32,
) -> Result<Vec<usize>, EvalError> {
    if folds < 2 {
        return Err(EvalError::Folds {
            folds,
            reason: "at least 2 folds are needed".into(),
        });
    }
    // Classes numbered by first appearance, as scikit-learn encodes them.
    let mut order: Vec<usize> = Vec::new();
    let encoded: Vec<usize> = labels
        .iter()
        .map(|l| match order.iter().position(|o| o == l) {
            Some(p) => p,
            None => {
                order.push(*l);
                order.len() - 1
            }
        })
        .collect();
    let classes = order.len();
    let mut counts = vec![0usize; classes];
    for &c in &encoded {
        counts[c] += 1;
    }
    if let Some((c, &n)) = counts.iter().enumerate().find(|(_, n)| **n < folds) {
        return Err(EvalError::Folds {
            folds,
            reason: format!("class {} has only {n} samples", order[c]),
        });
    }
    // Round robin over the samples sorted by class: allocation[f][c] samples of class c in f.
    let mut sorted = encoded.clone();
    sorted.sort_unstable();
    let mut allocation = vec![vec![0usize; classes]; folds];
    for (i, &c) in sorted.iter().enumerate() {
        allocation[i % folds][c] += 1;
    }
    let mut rng = Mt19937::new(seed);
    let mut fold_of = vec![0; labels.len()];
    for c in 0..classes {
        let mut fold_numbers: Vec<usize> = allocation
            .iter()
            .enumerate()
            .flat_map(|(f, per_class)| std::iter::repeat_n(f, per_class[c]))
            .collect();
        rng.shuffle(&mut fold_numbers);
        let members = encoded
            .iter()
            .enumerate()
            .filter(|(_, e)| **e == c)
            .map(|(i, _)| i);
        for (i, f) in members.zip(fold_numbers) {
            fold_of[i] = f;
        }
    }
    Ok(fold_of)
}

/// Errors of the evaluation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EvalError {
    /// The fold count does not fit the data.
    #[error("cannot split into {folds} folds: {reason}")]
    Folds {
        /// The folds asked for.
        folds: usize,
        /// Why not.
        reason: String,
    },
    /// The index refused the vectors.
    #[error(transparent)]
    Index(#[from] IndexError),
    /// The reducer failed.
    #[error("reducer: {0}")]
    Reduce(String),
}

/// The result of cross-validating one feature matrix.
#[derive(Debug, Clone, PartialEq)]
pub struct CvResult {
    /// Mean of the per-fold accuracies (as scikit-learn's `cross_val_score(...).mean()`).
    pub accuracy: f64,
    /// Accuracy of each fold.
    pub fold_accuracy: Vec<f64>,
    /// `confusion[true][predicted]`, summed over the folds.
    pub confusion: Vec<Vec<usize>>,
}

/// Stratified k-fold cross-validation of the kNN vote on `features` (`n x dim`, row-major)
/// with class `labels` (0..classes).
///
/// # Errors
/// [`EvalError::Folds`] (see [`stratified_folds`]), or the index's error for bad vectors.
pub fn cross_validate(
    features: &[f32],
    dim: usize,
    labels: &[usize],
    k: NonZeroUsize,
    folds: usize,
    seed: u32,
    tie_break: TieBreak,
) -> Result<CvResult, EvalError> {
    cross_validate_inductive(
        features,
        dim,
        labels,
        k,
        folds,
        seed,
        tie_break,
        |train, test| Ok((train.to_vec(), test.to_vec(), dim)),
    )
}

/// Stratified k-fold cross-validation where each fold's features are first mapped by `reduce`,
/// fitted on that fold's training rows only: `reduce(train, test)` returns the reduced training
/// and test rows and their dimension. This is how a deployed system would use a reducer such as
/// UMAP (fit on the examples it has, transform what comes later).
///
/// # Errors
/// As [`cross_validate`], and [`EvalError::Reduce`] with the reducer's message.
#[allow(clippy::too_many_arguments)]
pub fn cross_validate_inductive<F>(
    features: &[f32],
    dim: usize,
    labels: &[usize],
    k: NonZeroUsize,
    folds: usize,
    seed: u32,
    tie_break: TieBreak,
    mut reduce: F,
) -> Result<CvResult, EvalError>
where
    F: FnMut(&[f32], &[f32]) -> Result<(Vec<f32>, Vec<f32>, usize), String>,
{
    let n = labels.len();
    if features.len() != n * dim {
        return Err(IndexError::Dimension {
            expected: n * dim,
            got: features.len(),
        }
        .into());
    }
    let classes = labels.iter().max().map_or(0, |m| m + 1);
    let fold_of = stratified_folds(labels, folds, seed)?;
    let mut confusion = vec![vec![0; classes]; classes];
    let mut fold_accuracy = Vec::with_capacity(folds);
    for fold in 0..folds {
        let (mut train, mut test, mut train_y, mut test_y) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for i in 0..n {
            let row = &features[i * dim..(i + 1) * dim];
            if fold_of[i] == fold {
                test.extend_from_slice(row);
                test_y.push(labels[i]);
            } else {
                train.extend_from_slice(row);
                train_y.push(labels[i]);
            }
        }
        let (train_r, test_r, d) = reduce(&train, &test).map_err(EvalError::Reduce)?;
        if d == 0 || train_r.len() != train_y.len() * d || test_r.len() != test_y.len() * d {
            return Err(EvalError::Reduce(format!(
                "reducer returned {} and {} values for {} and {} rows of {d}",
                train_r.len(),
                test_r.len(),
                train_y.len(),
                test_y.len()
            )));
        }
        let mut index = AttributeIndex::new(d).with_k(k).with_tie_break(tie_break);
        for (row, y) in train_r.chunks_exact(d).zip(&train_y) {
            index.add(&format!("{y:010}"), row)?;
        }
        let predictions = index.classify_many(&test_r)?;
        let mut correct = 0;
        for (p, &t) in predictions.iter().zip(&test_y) {
            let predicted: usize = p
                .attribute
                .parse()
                .expect("labels were added as their numbers");
            confusion[t][predicted] += 1;
            correct += usize::from(predicted == t);
        }
        fold_accuracy.push(correct as f64 / test_y.len() as f64);
    }
    Ok(CvResult {
        accuracy: fold_accuracy.iter().sum::<f64>() / folds as f64,
        fold_accuracy,
        confusion,
    })
}

/// Precision@k of a [`Retriever`](crate::Retriever), each item queried against all the others
/// (leave-one-out): the share of the top `k` results that share the query's `colours` label,
/// its `patterns` label, and both. Labels are given per catalogue item.
///
/// # Errors
/// The retriever's error, e.g. for an empty catalogue; [`crate::RetrieverError::FilterLength`]
/// when the label lists do not have one entry per item.
pub fn retrieval_precision(
    retriever: &crate::Retriever,
    colours: &[&str],
    patterns: &[&str],
    ranking: crate::Ranking,
    k: usize,
) -> Result<[f64; 3], crate::RetrieverError> {
    let n = retriever.len();
    if colours.len() != n || patterns.len() != n {
        return Err(crate::RetrieverError::FilterLength {
            items: n,
            flags: colours.len().min(patterns.len()),
        });
    }
    let mut hits = [0usize; 3];
    for i in 0..n {
        for h in retriever.query_item(i, ranking, k, None)? {
            let (c, p) = (
                colours[h.item] == colours[i],
                patterns[h.item] == patterns[i],
            );
            hits[0] += usize::from(c);
            hits[1] += usize::from(p);
            hits[2] += usize::from(c && p);
        }
    }
    // Divided by n * k, as the reference does.
    Ok(hits.map(|h| h as f64 / (n * k) as f64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folds_are_stratified_and_balanced() {
        let labels: Vec<usize> = (0..103)
            .map(|i| {
                if i < 40 {
                    0
                } else if i < 80 {
                    1
                } else {
                    2
                }
            })
            .collect();
        let f = stratified_folds(&labels, 5, 7).unwrap();
        for fold in 0..5 {
            let size = f.iter().filter(|&&x| x == fold).count();
            assert!((20..=21).contains(&size), "fold {fold} has {size}");
            for class in 0..2 {
                let c = (0..103)
                    .filter(|&i| f[i] == fold && labels[i] == class)
                    .count();
                assert_eq!(c, 8, "class {class} in fold {fold}");
            }
        }
        assert_eq!(f, stratified_folds(&labels, 5, 7).unwrap(), "seeded");
        assert_ne!(
            f,
            stratified_folds(&labels, 5, 8).unwrap(),
            "another seed shuffles otherwise"
        );
    }

    #[test]
    fn mt19937_matches_the_reference_sequence() {
        // First outputs of init_genrand(5489), from Matsumoto and Nishimura's mt19937ar.c.
        let mut mt = Mt19937::new(5489);
        let first: Vec<u32> = (0..3).map(|_| mt.next_u32()).collect();
        assert_eq!(first, [3_499_211_612, 581_869_302, 3_890_346_734]);
        let mut mt = Mt19937::new(5489);
        assert_eq!(
            (0..10_000).map(|_| mt.next_u32()).last(),
            Some(4_123_659_995)
        );
    }

    #[test]
    fn too_few_samples_for_the_folds_is_an_error() {
        assert!(stratified_folds(&[0, 0, 1], 2, 0).is_err());
        assert!(stratified_folds(&[0, 0, 1, 1], 1, 0).is_err());
    }

    #[test]
    fn separable_classes_cross_validate_perfectly() {
        let mut features = Vec::new();
        let mut labels = Vec::new();
        for i in 0..60 {
            let class = i % 3;
            features.extend_from_slice(&[class as f32 * 10.0 + (i as f32 * 0.01), 1.0]);
            labels.push(class);
        }
        let r = cross_validate(
            &features,
            2,
            &labels,
            NonZeroUsize::new(5).unwrap(),
            5,
            0,
            TieBreak::Nearest,
        )
        .unwrap();
        assert_eq!(r.accuracy, 1.0);
        assert_eq!(r.confusion[1], vec![0, 20, 0]);
    }
}
