//! Precision@k of a retriever, every item queried against all the others (the paper's
//! Figure 6 figures).

use std::num::NonZeroUsize;

use crate::error::RetrieverError;
use crate::retriever::{By, CatalogueStore, Ranking, Retriever};

/// Precision@k of a [`Retriever`], each item queried against all the others
/// (leave-one-out): the share of the top `k` results that share the query's `colours` label,
/// its `patterns` label, and both. Labels are given per catalogue item.
///
/// # Errors
/// The retriever's error, e.g. [`RetrieverError::Empty`];
/// [`RetrieverError::FilterLength`] when the label lists do not have one entry per item.
pub fn retrieval_precision<S: CatalogueStore>(
    retriever: &Retriever<S>,
    colours: &[&str],
    patterns: &[&str],
    ranking: Ranking,
    k: NonZeroUsize,
) -> Result<[f64; 3], RetrieverError> {
    let n = retriever.len()?;
    if colours.len() != n || patterns.len() != n {
        return Err(RetrieverError::FilterLength {
            items: n,
            flags: colours.len().min(patterns.len()),
        });
    }
    let mut hits = [0usize; 3];
    for i in 0..n {
        for h in retriever.query(By::Item(i)).rank(ranking).top(k)? {
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
    Ok(hits.map(|h| h as f64 / (n * k.get()) as f64))
}
