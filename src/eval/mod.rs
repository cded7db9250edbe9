//! The paper's evaluation: stratified k-fold cross-validation of the kNN vote per block
//! (Table 1), with an optional reducer fitted per fold (Table 2), and the retriever's
//! precision@k (Figure 6).
//!
//! ```
//! use attrex::eval::{CvParams, cross_validate};
//! use attrex::knn::Rows;
//!
//! // Three well separated classes of 2-d points.
//! let (mut x, mut y) = (Vec::new(), Vec::new());
//! for i in 0..60 {
//!     x.extend([(i % 3) as f32 * 10.0 + i as f32 * 0.01, 1.0]);
//!     y.push(i % 3);
//! }
//! let r = cross_validate(Rows::new(&x, 2)?, &y, &CvParams::default())?;
//! assert_eq!(r.accuracy, 1.0);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod cv;
mod folds;
mod retrieval;

use std::num::NonZeroUsize;

use crate::error::IndexError;
use crate::index::TieBreak;

pub use cv::{Reduced, cross_validate, cross_validate_inductive};
pub use folds::stratified_folds;
pub use retrieval::retrieval_precision;

/// Errors of the evaluation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EvalError {
    /// Fewer than 2 folds.
    #[error("cannot split into {folds} folds: at least 2 are needed")]
    TooFewFolds {
        /// The folds asked for.
        folds: usize,
    },
    /// Fewer than two classes: cross-validating a vote among one class scores 1.0 whatever the
    /// features, which measures nothing.
    #[error("cross-validation needs at least 2 classes, the labels hold {classes}")]
    TooFewClasses {
        /// The distinct labels given.
        classes: usize,
    },
    /// A class with fewer samples than folds.
    #[error(
        "cannot split into {folds} folds: class {} has only {samples} samples",
        name.as_deref().map_or_else(|| class.to_string(), |n| format!("{n:?} ({class})"))
    )]
    SmallClass {
        /// The class label.
        class: usize,
        /// The class's name, once [`EvalError::with_class_names`] has given it.
        name: Option<String>,
        /// Its samples.
        samples: usize,
        /// The folds asked for.
        folds: usize,
    },
    /// Not one label per row.
    #[error("{labels} labels for {rows} rows")]
    LabelCount {
        /// Labels given.
        labels: usize,
        /// Rows given.
        rows: usize,
    },
    /// The index refused the vectors.
    #[error(transparent)]
    Index(#[from] IndexError),
    /// The reducer failed.
    #[error("the reducer failed")]
    Reduce(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The reducer returned values that do not form the rows it was given.
    #[error(
        "the reducer returned {train_values} and {test_values} values for {train_rows} and {test_rows} rows of {dim}"
    )]
    ReducedShape {
        /// Values returned for the training rows.
        train_values: usize,
        /// Values returned for the test rows.
        test_values: usize,
        /// Training rows given.
        train_rows: usize,
        /// Test rows given.
        test_rows: usize,
        /// The dimension the reducer named.
        dim: usize,
    },
}

impl EvalError {
    /// Names the class of a [`EvalError::SmallClass`] by `names[class]` (e.g.
    /// [`Dataset::classes`](crate::Dataset::classes)); other errors are returned as they are.
    ///
    /// ```
    /// use attrex::eval::stratified_folds;
    ///
    /// let err = stratified_folds(&[0, 0, 0, 1], 2, 0).unwrap_err();
    /// let named = err.with_class_names(&["red", "blue"]);
    /// assert!(named.to_string().contains("class \"blue\" (1) has only 1 samples"));
    /// ```
    pub fn with_class_names<S: AsRef<str>>(self, names: &[S]) -> Self {
        match self {
            EvalError::SmallClass {
                class,
                name: None,
                samples,
                folds,
            } => EvalError::SmallClass {
                class,
                name: names.get(class).map(|n| n.as_ref().to_owned()),
                samples,
                folds,
            },
            other => other,
        }
    }
}

/// The settings of a cross-validation. The default is the paper's reference: 5 neighbours,
/// scikit-learn's `StratifiedKFold(5, shuffle=True, random_state=0)` and its tie rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CvParams {
    /// Neighbours that vote (default 5).
    pub k: NonZeroUsize,
    /// Folds, at least 2 (default 5).
    pub folds: usize,
    /// Seed of the fold shuffle (default 0).
    pub seed: u32,
    /// How tied votes are broken (default [`TieBreak::SmallestLabel`], scikit-learn's rule).
    pub tie_break: TieBreak,
}

impl Default for CvParams {
    fn default() -> Self {
        Self {
            k: NonZeroUsize::new(5).expect("5 > 0"),
            folds: 5,
            seed: 0,
            tie_break: TieBreak::SmallestLabel,
        }
    }
}

/// One sample's test-fold prediction.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Outcome {
    /// The true class.
    pub truth: usize,
    /// The predicted class.
    pub predicted: usize,
    /// The winner's votes among the `k` neighbours.
    pub votes: usize,
    /// Distance to the nearest training example.
    pub nearest: f32,
}

impl Outcome {
    /// Whether the prediction was right.
    pub fn correct(&self) -> bool {
        self.truth == self.predicted
    }
}

/// Accuracy of the `coverage` share (0..=1) of `outcomes` a kNN is surest of: most votes
/// first, then nearest first. Returns `(share answered, accuracy of those)`.
pub fn accuracy_at_coverage(outcomes: &[Outcome], coverage: f64) -> (f64, f64) {
    let mut sorted: Vec<&Outcome> = outcomes.iter().collect();
    sorted.sort_by(|a, b| b.votes.cmp(&a.votes).then(a.nearest.total_cmp(&b.nearest)));
    let n = ((coverage.clamp(0.0, 1.0) * sorted.len() as f64).round() as usize).max(1);
    let answered = &sorted[..n.min(sorted.len())];
    let right = answered.iter().filter(|o| o.correct()).count();
    (
        answered.len() as f64 / outcomes.len().max(1) as f64,
        right as f64 / answered.len().max(1) as f64,
    )
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
    /// Every sample's prediction when it was in the test fold, in sample order: what an
    /// accuracy-coverage curve needs.
    pub outcomes: Vec<Outcome>,
}
