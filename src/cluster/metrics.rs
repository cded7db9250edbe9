//! Agreement between two labellings: adjusted Rand index and adjusted mutual information,
//! with scikit-learn's definitions (`adjusted_rand_score`, `adjusted_mutual_info_score` with
//! the arithmetic mean). Labels are arbitrary integers; HDBSCAN's noise label (-1) is one more
//! label, as in scikit-learn.

use std::collections::HashMap;

/// The contingency table of two labellings: `(counts[i][j], row sums, column sums, n)`.
fn contingency(a: &[i64], b: &[i64]) -> (Vec<Vec<u64>>, Vec<u64>, Vec<u64>, u64) {
    assert_eq!(
        a.len(),
        b.len(),
        "both labellings must label the same samples"
    );
    let index = |labels: &[i64]| {
        let mut map = HashMap::new();
        let ids: Vec<usize> = labels
            .iter()
            .map(|l| {
                let next = map.len();
                *map.entry(*l).or_insert(next)
            })
            .collect();
        (ids, map.len())
    };
    let ((ia, na), (ib, nb)) = (index(a), index(b));
    let mut table = vec![vec![0u64; nb]; na];
    for (i, j) in ia.into_iter().zip(ib) {
        table[i][j] += 1;
    }
    let rows = table.iter().map(|r| r.iter().sum()).collect();
    let cols = (0..nb).map(|j| table.iter().map(|r| r[j]).sum()).collect();
    (table, rows, cols, a.len() as u64)
}

fn pairs(n: u64) -> f64 {
    n as f64 * (n as f64 - 1.0) / 2.0
}

/// Adjusted Rand index: 1 for identical partitions (up to renaming), about 0 for independent
/// ones.
///
/// # Panics
/// If the two labellings have different lengths.
pub fn adjusted_rand_index(a: &[i64], b: &[i64]) -> f64 {
    let (table, rows, cols, n) = contingency(a, b);
    let index: f64 = table.iter().flatten().map(|&c| pairs(c)).sum();
    let sa: f64 = rows.iter().map(|&c| pairs(c)).sum();
    let sb: f64 = cols.iter().map(|&c| pairs(c)).sum();
    let expected = if n < 2 { 0.0 } else { sa * sb / pairs(n) };
    let max = (sa + sb) / 2.0;
    if max == expected {
        return 1.0;
    }
    (index - expected) / (max - expected)
}

/// Adjusted mutual information (arithmetic normalisation): 1 for identical partitions, about
/// 0 for independent ones, corrected for chance with the exact expected mutual information.
///
/// # Panics
/// If the two labellings have different lengths.
pub fn adjusted_mutual_information(a: &[i64], b: &[i64]) -> f64 {
    let (table, rows, cols, n) = contingency(a, b);
    if (rows.len() == 1 && cols.len() == 1) || n == 0 {
        return 1.0;
    }
    let nf = n as f64;
    let mut mi = 0.0;
    for (i, row) in table.iter().enumerate() {
        for (j, &c) in row.iter().enumerate() {
            if c > 0 {
                let c = c as f64;
                mi += c / nf * (nf * c / (rows[i] as f64 * cols[j] as f64)).ln();
            }
        }
    }
    let entropy = |s: &[u64]| {
        -s.iter()
            .filter(|&&c| c > 0)
            .map(|&c| c as f64 / nf * (c as f64 / nf).ln())
            .sum::<f64>()
    };
    let (ha, hb) = (entropy(&rows), entropy(&cols));
    // ln k! for k = 0..=n: every argument of the hypergeometric terms is an integer.
    let mut ln_fact = vec![0.0f64; n as usize + 1];
    for k in 1..=n as usize {
        ln_fact[k] = ln_fact[k - 1] + (k as f64).ln();
    }
    let lf = |k: u64| ln_fact[k as usize];
    let mut emi = 0.0;
    for &ai in &rows {
        for &bj in &cols {
            let lo = (ai + bj).saturating_sub(n).max(1);
            for nij in lo..=ai.min(bj) {
                let x = nij as f64;
                let term = x / nf * (nf * x / (ai as f64 * bj as f64)).ln();
                let ln_p = lf(ai) + lf(bj) + lf(n - ai) + lf(n - bj)
                    - lf(n)
                    - lf(nij)
                    - lf(ai - nij)
                    - lf(bj - nij)
                    - lf(n + nij - ai - bj);
                emi += term * ln_p.exp();
            }
        }
    }
    let mut denominator = (ha + hb) / 2.0 - emi;
    denominator = if denominator < 0.0 {
        denominator.min(-f64::EPSILON)
    } else {
        denominator.max(f64::EPSILON)
    };
    (mi - emi) / denominator
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_values_from_the_scikit_learn_documentation() {
        // sklearn.metrics.adjusted_rand_score docstring examples.
        assert!((adjusted_rand_index(&[0, 0, 1, 1], &[1, 1, 0, 0]) - 1.0).abs() < 1e-12);
        assert!(
            (adjusted_rand_index(&[0, 0, 1, 2], &[0, 0, 1, 1]) - 0.571_428_571_428_571_4).abs()
                < 1e-12
        );
        assert!((adjusted_rand_index(&[0, 0, 1, 1], &[0, 1, 0, 1]) - -0.5).abs() < 1e-12);
        // sklearn.metrics.adjusted_mutual_info_score docstring examples.
        assert!((adjusted_mutual_information(&[0, 0, 1, 1], &[1, 1, 0, 0]) - 1.0).abs() < 1e-12);
        assert!(adjusted_mutual_information(&[0, 0, 0, 0], &[0, 1, 2, 3]).abs() < 1e-12);
    }
}
