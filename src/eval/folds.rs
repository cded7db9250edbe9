//! Stratified folds exactly as scikit-learn's `StratifiedKFold(shuffle=True)` makes them, with
//! the generator they need (MT19937, NumPy's legacy `RandomState`) beside them.

use super::EvalError;

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
/// [`EvalError::TooFewFolds`] when `folds < 2`, [`EvalError::SmallClass`] when a class has
/// fewer samples than folds (numbered; [`EvalError::with_class_names`] names it).
pub fn stratified_folds(
    labels: &[usize],
    folds: usize,
    seed: u32,
) -> Result<Vec<usize>, EvalError> {
    if folds < 2 {
        return Err(EvalError::TooFewFolds { folds });
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
        return Err(EvalError::SmallClass {
            class: order[c],
            name: None,
            samples: n,
            folds,
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
}
