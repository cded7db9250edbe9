//! Stratified k-fold cross-validation of the kNN vote, on raw rows or through a reducer fitted
//! per fold.

use std::error::Error;

use super::{CvParams, CvResult, EvalError, Outcome, stratified_folds};
use crate::index::AttributeIndex;
use crate::knn::Rows;

/// What a reducer returns for one fold: the reduced training and test rows, row-major, and
/// their dimension.
#[derive(Debug, Clone, PartialEq)]
pub struct Reduced {
    /// The training rows, reduced.
    pub train: Vec<f32>,
    /// The test rows, reduced.
    pub test: Vec<f32>,
    /// The reduced dimension.
    pub dim: usize,
}

/// Stratified k-fold cross-validation of the kNN vote on `features` with class `labels`
/// (0..classes, one per row).
///
/// # Errors
/// [`EvalError::LabelCount`], [`EvalError::TooFewClasses`] for fewer than two distinct labels,
/// the fold errors of [`stratified_folds`], or the index's error for a NaN.
pub fn cross_validate(
    features: Rows<'_>,
    labels: &[usize],
    params: &CvParams,
) -> Result<CvResult, EvalError> {
    cross_validate_inductive(features, labels, params, |train, test| {
        Ok(Reduced {
            train: train.as_slice().to_vec(),
            test: test.as_slice().to_vec(),
            dim: train.dim(),
        })
    })
}

/// Stratified k-fold cross-validation where each fold's features are first mapped by `reduce`,
/// fitted on that fold's training rows only: `reduce(train, test)` returns both reduced. This is
/// how a deployed system would use a reducer such as UMAP (fit on the examples it has,
/// transform what comes later).
///
/// # Errors
/// As [`cross_validate`]; [`EvalError::Reduce`] with the reducer's error as its source;
/// [`EvalError::ReducedShape`] when the reducer returns rows that do not fit.
pub fn cross_validate_inductive<F>(
    features: Rows<'_>,
    labels: &[usize],
    params: &CvParams,
    mut reduce: F,
) -> Result<CvResult, EvalError>
where
    F: FnMut(Rows<'_>, Rows<'_>) -> Result<Reduced, Box<dyn Error + Send + Sync>>,
{
    let n = labels.len();
    if features.len() != n {
        return Err(EvalError::LabelCount {
            labels: n,
            rows: features.len(),
        });
    }
    let distinct: std::collections::BTreeSet<usize> = labels.iter().copied().collect();
    if distinct.len() < 2 {
        return Err(EvalError::TooFewClasses {
            classes: distinct.len(),
        });
    }
    let dim = features.dim();
    let folds = params.folds;
    let classes = labels.iter().max().map_or(0, |m| m + 1);
    let fold_of = stratified_folds(labels, folds, params.seed)?;
    let mut confusion = vec![vec![0; classes]; classes];
    let mut fold_accuracy = Vec::with_capacity(folds);
    let mut outcomes = vec![None; n];
    for fold in 0..folds {
        let (mut train, mut test, mut train_y, mut test_y) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for (i, row) in features.iter().enumerate() {
            if fold_of[i] == fold {
                test.extend_from_slice(row);
                test_y.push(labels[i]);
            } else {
                train.extend_from_slice(row);
                train_y.push(labels[i]);
            }
        }
        let (train_rows, test_rows) = (
            Rows::new(&train, dim).expect("whole rows of the input"),
            Rows::new(&test, dim).expect("whole rows of the input"),
        );
        let r = reduce(train_rows, test_rows).map_err(EvalError::Reduce)?;
        let shape = || EvalError::ReducedShape {
            train_values: r.train.len(),
            test_values: r.test.len(),
            train_rows: train_y.len(),
            test_rows: test_y.len(),
            dim: r.dim,
        };
        let (train_r, test_r) = match (Rows::new(&r.train, r.dim), Rows::new(&r.test, r.dim)) {
            (Ok(a), Ok(b)) if a.len() == train_y.len() && b.len() == test_y.len() => (a, b),
            _ => return Err(shape()),
        };
        let mut index = AttributeIndex::<usize>::with_dim(r.dim)?
            .with_k(params.k)
            .with_tie_break(params.tie_break);
        for (row, &y) in train_r.iter().zip(&train_y) {
            index.add(y, row)?;
        }
        let predictions = index.classify_many(test_r)?;
        let mut correct = 0;
        let members = (0..n).filter(|&i| fold_of[i] == fold);
        for ((p, &t), i) in predictions.iter().zip(&test_y).zip(members) {
            confusion[t][p.attribute] += 1;
            correct += usize::from(p.attribute == t);
            outcomes[i] = Some(Outcome {
                truth: t,
                predicted: p.attribute,
                votes: p.winner_votes(),
                nearest: p.neighbours.first().map_or(f32::INFINITY, |nb| nb.distance),
            });
        }
        fold_accuracy.push(correct as f64 / test_y.len() as f64);
    }
    Ok(CvResult {
        accuracy: fold_accuracy.iter().sum::<f64>() / folds as f64,
        fold_accuracy,
        confusion,
        outcomes: outcomes
            .into_iter()
            .map(|o| o.expect("every sample is in one test fold"))
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::TieBreak;

    #[test]
    fn separable_classes_cross_validate_perfectly() {
        let mut features = Vec::new();
        let mut labels = Vec::new();
        for i in 0..60 {
            let class = i % 3;
            features.extend_from_slice(&[class as f32 * 10.0 + (i as f32 * 0.01), 1.0]);
            labels.push(class);
        }
        let params = CvParams {
            tie_break: TieBreak::Nearest,
            ..CvParams::default()
        };
        let r = cross_validate(Rows::new(&features, 2).unwrap(), &labels, &params).unwrap();
        assert_eq!(r.accuracy, 1.0);
        assert_eq!(r.confusion[1], vec![0, 20, 0]);
    }

    #[test]
    fn a_reducer_of_the_wrong_shape_is_an_error() {
        let features: Vec<f32> = (0..40).map(|i| i as f32).collect();
        let labels: Vec<usize> = (0..20).map(|i| i % 2).collect();
        let err = cross_validate_inductive(
            Rows::new(&features, 2).unwrap(),
            &labels,
            &CvParams::default(),
            |train, _| {
                Ok(Reduced {
                    train: train.as_slice().to_vec(),
                    test: Vec::new(),
                    dim: 2,
                })
            },
        )
        .unwrap_err();
        assert!(
            matches!(err, EvalError::ReducedShape { test_values: 0, .. }),
            "{err:?}"
        );
        let err = cross_validate_inductive(
            Rows::new(&features, 2).unwrap(),
            &labels,
            &CvParams::default(),
            |_, _| Err("no luck".into()),
        )
        .unwrap_err();
        assert_eq!(
            std::error::Error::source(&err).map(|s| s.to_string()),
            Some("no luck".to_string())
        );
    }

    #[test]
    fn one_class_is_an_error_not_a_perfect_score() {
        // Before: every vote among one class is right, and the accuracy came out 1.000.
        let features: Vec<f32> = (0..20).map(|i| i as f32).collect();
        let err = cross_validate(
            Rows::new(&features, 2).unwrap(),
            &[3; 10],
            &CvParams::default(),
        )
        .unwrap_err();
        assert!(
            matches!(err, EvalError::TooFewClasses { classes: 1 }),
            "{err:?}"
        );
        let err =
            cross_validate(Rows::new(&[], 2).unwrap(), &[], &CvParams::default()).unwrap_err();
        assert!(
            matches!(err, EvalError::TooFewClasses { classes: 0 }),
            "{err:?}"
        );
    }

    #[test]
    fn a_class_too_small_for_the_folds_is_named() {
        // Class 1 ("blue") has 3 samples for 5 folds.
        let labels = [0, 0, 0, 0, 0, 1, 1, 1];
        let features: Vec<f32> = (0..8).map(|i| i as f32).collect();
        let err = cross_validate(
            Rows::new(&features, 1).unwrap(),
            &labels,
            &CvParams::default(),
        )
        .unwrap_err()
        .with_class_names(&["red", "blue"]);
        assert!(
            matches!(&err, EvalError::SmallClass { class: 1, name: Some(n), samples: 3, folds: 5 } if n == "blue"),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            "cannot split into 5 folds: class \"blue\" (1) has only 3 samples"
        );
    }
}
