//! The query builder: what to look for ([`By`]), how to rank ([`Ranking`]), what to keep
//! ([`Filter`]), how many ([`Query::top`]).

use std::num::NonZeroUsize;
use std::path::Path;

use super::catalogue::{CatalogueStore, PreparedQuery, Summary};
use super::item::{Facet, Filter, ItemId};
use super::rank::Ranking;
use super::{Hit, Retriever};
use crate::error::RetrieverError;

/// What a query looks for.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum By<'a> {
    /// The image at this path (run through the catalogue's tap).
    Image(&'a Path),
    /// Vectors as the tap gives them (the catalogue's [`FeatureNorm`](crate::FeatureNorm) is
    /// applied to them).
    Features {
        /// The colour tap's vector.
        colour: &'a [f32],
        /// The texture tap's vector.
        texture: &'a [f32],
    },
    /// Catalogue item number `i` (left out of its own results).
    Item(usize),
}

/// A query being built: made by [`Retriever::query`], run by [`Query::top`].
#[derive(Debug, Clone)]
#[must_use = "a query does nothing until `top` runs it"]
pub struct Query<'r, 'a, S> {
    pub(super) retriever: &'r Retriever<S>,
    pub(super) by: By<'a>,
    pub(super) ranking: Ranking,
    pub(super) filters: Vec<Filter<'a>>,
    pub(super) exclude: Vec<usize>,
}

impl<'r, 'a, S: CatalogueStore> Query<'r, 'a, S> {
    /// Ranks by `ranking` (default [`Ranking::BOTH`]).
    pub fn rank(mut self, ranking: Ranking) -> Self {
        self.ranking = ranking;
        self
    }

    /// Keeps only the items that pass `filter` (a `&[bool]` mask, or a [`Filter`]); several
    /// calls keep the items that pass them all.
    pub fn filter(mut self, filter: impl Into<Filter<'a>>) -> Self {
        self.filters.push(filter.into());
        self
    }

    /// Leaves item `item` out of the results.
    pub fn exclude(mut self, item: usize) -> Self {
        self.exclude.push(item);
        self
    }

    /// Runs the query: the `k` best items, best first (equal scores: the earlier item first).
    /// Fewer when fewer items pass the filters.
    ///
    /// # Errors
    /// [`RetrieverError::Empty`]; [`RetrieverError::Dimension`] for vectors of the wrong
    /// lengths; [`RetrieverError::NoSuchItem`] for an item (queried or excluded) past the
    /// end; [`RetrieverError::FilterLength`] for a mask of the wrong length;
    /// [`RetrieverError::NotTagged`] for an attribute filter on an untagged facet;
    /// [`RetrieverError::Tap`] naming an image that cannot be read; the store's errors.
    pub fn top(self, k: NonZeroUsize) -> Result<Vec<Hit>, RetrieverError> {
        self.retriever.run(self, k)
    }
}

/// The part of every query that is the same for every store: checks, the query vectors, the
/// hits.
impl<S: CatalogueStore> Retriever<S> {
    /// The query vectors, transformed as the stored ones.
    fn prepare(&self, by: &By<'_>, summary: &Summary) -> Result<PreparedQuery, RetrieverError> {
        let extracted;
        let (colour, texture) = match *by {
            By::Item(i) => {
                let id = self.store.ids_at(&[i])?[0];
                let [c, t] = self.store.search_vectors(id)?;
                // Stored search vectors are transformed already.
                return Ok(PreparedQuery {
                    vectors: [c.into_owned(), t.into_owned()],
                });
            }
            By::Features { colour, texture } => (colour, texture),
            By::Image(path) => {
                extracted = self.tap.extract_paths(&[path])?;
                self.split(&extracted[0].blocks)
            }
        };
        let dims = self.origin.dims;
        if colour.len() != dims[0] || texture.len() != dims[1] {
            return Err(RetrieverError::Dimension {
                expected: dims,
                got: [colour.len(), texture.len()],
            });
        }
        let norm = self.origin.config.norm;
        let mut vectors = [colour.to_vec(), texture.to_vec()];
        for ((facet, v), mean) in Facet::BOTH
            .into_iter()
            .zip(&mut vectors)
            .zip(&summary.means)
        {
            if let Some(column) = v.iter().position(|x| !x.is_finite()) {
                return Err(RetrieverError::NotFinite {
                    facet: facet.name(),
                    row: 0,
                    column,
                });
            }
            let limit = crate::knn::max_magnitude(v.len());
            if let Some(column) = v.iter().position(|x| x.abs() > limit) {
                return Err(RetrieverError::TooLarge {
                    facet: facet.name(),
                    row: 0,
                    column,
                    limit,
                });
            }
            norm.apply(v, mean);
        }
        Ok(PreparedQuery { vectors })
    }

    /// Checks and runs a query: the common part of every store.
    fn run(&self, q: Query<'_, '_, S>, k: NonZeroUsize) -> Result<Vec<Hit>, RetrieverError> {
        q.ranking.check()?;
        let summary = self.store.summary()?;
        let len = summary.len;
        if len == 0 {
            return Err(RetrieverError::Empty);
        }
        let mut exclude = q.exclude;
        if let By::Item(i) = q.by {
            exclude.push(i);
        }
        if let Some(&item) = exclude.iter().find(|&&i| i >= len) {
            return Err(RetrieverError::NoSuchItem { item, len });
        }
        for f in &q.filters {
            match f {
                Filter::Mask(mask) if mask.len() != len => {
                    return Err(RetrieverError::FilterLength {
                        items: len,
                        flags: mask.len(),
                    });
                }
                Filter::Attribute { facet, .. } if !summary.tagged[facet.index()] => {
                    return Err(RetrieverError::NotTagged {
                        facet: facet.name(),
                    });
                }
                _ => {}
            }
        }
        let query = self.prepare(&q.by, &summary)?;
        let exclude = self.store.ids_at(&exclude)?;
        let [sc, st] = summary.scales;
        let scored = self
            .store
            .top_k(&query, q.ranking, &q.filters, &exclude, k)?;
        let ids: Vec<ItemId> = scored.iter().map(|s| s.record.id).collect();
        let positions = self.store.positions(&ids)?;
        scored
            .into_iter()
            .zip(positions)
            .map(|(s, item)| {
                let [c, t] = s.distances;
                Ok(Hit {
                    // Removed by another writer since the query ran.
                    item: item.ok_or(RetrieverError::NoSuchId { id: s.record.id })?,
                    id: s.record.id,
                    path: s.record.path,
                    score: s.score,
                    colour_distance: c,
                    texture_distance: t,
                    colour_normalised: c / sc,
                    texture_normalised: t / st,
                })
            })
            .collect()
    }
}
