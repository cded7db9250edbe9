//! Where a catalogue's items live: the [`CatalogueStore`] seam, what it stores and answers.
//! The in-memory store is in `memory`.
//!
//! The [`Retriever`](crate::Retriever) does what is common to every store (reading images,
//! transforming query vectors, checking queries and filters, assembling hits); a store keeps
//! items and vectors and ranks them. Every store method returns a `Result`, because a store
//! backed by a database can fail where the memory store cannot.

use std::borrow::Cow;
use std::num::NonZeroUsize;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::norm::FeatureNorm;
use super::query::{Facet, Filter};
use super::rank::Ranking;
use crate::error::RetrieverError;
use crate::knn::Rows;

/// The stable identity of a catalogue item: given when it is added, never reused, kept by
/// save and load. (An item's *position*, the `usize` of [`Hit::item`](crate::Hit::item), moves
/// down when an earlier item is removed.)
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ItemId(pub u64);

/// What a catalogue keeps of an item besides its vectors.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ItemRecord {
    /// Its identity.
    pub id: ItemId,
    /// The image it was made from.
    pub path: PathBuf,
    /// The sha256 of the image's bytes, when it came from a file.
    pub sha256: Option<[u8; 32]>,
}

/// An item to add: its image and the image's content hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewItem {
    /// The image it is made from.
    pub path: PathBuf,
    /// The sha256 of the image's bytes, when known.
    pub sha256: Option<[u8; 32]>,
}

/// A query ready for a store: its colour and texture vectors, transformed by the catalogue's
/// [`FeatureNorm`] as the stored search vectors are.
#[derive(Debug, Clone, PartialEq)]
pub struct PreparedQuery {
    pub(super) vectors: [Vec<f32>; 2],
}

impl PreparedQuery {
    /// The transformed vector of `facet`.
    pub fn vector(&self, facet: Facet) -> &[f32] {
        &self.vectors[facet.index()]
    }
}

/// One ranked item, as a store returns it.
#[derive(Debug, Clone, PartialEq)]
pub struct Scored {
    /// The item's position.
    pub item: usize,
    /// What the catalogue keeps of it.
    pub record: ItemRecord,
    /// Its score under the ranking (lower is closer).
    pub score: f32,
    /// Its Euclidean distances to the query `[colour, texture]`, between transformed vectors.
    pub distances: [f32; 2],
}

/// Where a [`Retriever`](crate::Retriever) keeps its items: the seam for stores other than
/// memory (a database).
///
/// Items are numbered by position, `0..len`, in the order they were added; removing an item
/// moves the later ones down. Vectors come in two facets, colour and texture, each of a fixed
/// dimension; the store keeps them raw (as the tap gave them) and transformed by its
/// [`FeatureNorm`] for search, and knows each facet's scale (the median pairwise distance
/// between items, recomputed after every change).
///
/// The retriever checks every query before a store sees it: vectors of the right dimensions,
/// masks of the right length, attribute filters on tagged facets, excluded items that exist.
pub trait CatalogueStore {
    /// The dimensions `[colour, texture]` of the stored vectors.
    ///
    /// # Errors
    /// [`RetrieverError::Store`] when the store cannot answer.
    fn dims(&self) -> Result<[usize; 2], RetrieverError>;

    /// The transform applied to the search vectors.
    ///
    /// # Errors
    /// [`RetrieverError::Store`] when the store cannot answer.
    fn norm(&self) -> Result<FeatureNorm, RetrieverError>;

    /// The number of items.
    ///
    /// # Errors
    /// [`RetrieverError::Store`] when the store cannot answer.
    fn len(&self) -> Result<usize, RetrieverError>;

    /// Whether there is no item.
    ///
    /// # Errors
    /// As [`len`](Self::len).
    fn is_empty(&self) -> Result<bool, RetrieverError> {
        Ok(self.len()? == 0)
    }

    /// Adds `items` with their raw vectors (row `i` of `colour` and `texture` for `items[i]`),
    /// and recomputes what depends on the whole catalogue (mean, transformed vectors, scales).
    /// Returns the new items' ids. Nothing is added on error.
    ///
    /// # Errors
    /// [`RetrieverError::RowCount`] and [`RetrieverError::Dimension`] when the rows do not fit,
    /// [`RetrieverError::NotFinite`] for a NaN or infinity; the store's own errors.
    fn append(
        &mut self,
        items: Vec<NewItem>,
        colour: Rows<'_>,
        texture: Rows<'_>,
    ) -> Result<Vec<ItemId>, RetrieverError>;

    /// Removes the items with these ids (unknown ids are ignored). Returns how many were
    /// removed.
    ///
    /// # Errors
    /// The store's own errors.
    fn remove(&mut self, ids: &[ItemId]) -> Result<usize, RetrieverError>;

    /// Every item's record, in position order.
    ///
    /// # Errors
    /// The store's own errors.
    fn items(&self) -> Result<Cow<'_, [ItemRecord]>, RetrieverError>;

    /// The scales `[colour, texture]`: median pairwise distances of the search vectors (1 for
    /// fewer than two items).
    ///
    /// # Errors
    /// The store's own errors.
    fn scales(&self) -> Result<[f32; 2], RetrieverError>;

    /// The catalogue means `[colour, texture]` of the raw vectors, which
    /// [`FeatureNorm::CenterL2`] subtracts; empty under other transforms.
    ///
    /// # Errors
    /// The store's own errors.
    fn means(&self) -> Result<[Cow<'_, [f32]>; 2], RetrieverError>;

    /// Item `item`'s search vectors `[colour, texture]` (transformed).
    ///
    /// # Errors
    /// [`RetrieverError::NoSuchItem`]; the store's own errors.
    fn search_vectors(&self, item: usize) -> Result<[Cow<'_, [f32]>; 2], RetrieverError>;

    /// All raw vectors of `facet`, row-major in position order.
    ///
    /// # Errors
    /// The store's own errors.
    fn raw(&self, facet: Facet) -> Result<Cow<'_, [f32]>, RetrieverError>;

    /// Stores one predicted attribute of `facet` per item, in position order, replacing those
    /// stored before.
    ///
    /// # Errors
    /// [`RetrieverError::FilterLength`] when there is not one per item; the store's own
    /// errors.
    fn set_attributes(
        &mut self,
        facet: Facet,
        attributes: Vec<String>,
    ) -> Result<(), RetrieverError>;

    /// The stored attributes of `facet` per item (`None` for an item added since), or `None`
    /// when the facet was never tagged.
    ///
    /// # Errors
    /// The store's own errors.
    fn attributes(&self, facet: Facet)
    -> Result<Option<Cow<'_, [Option<String>]>>, RetrieverError>;

    /// The `k` best items for `query` under `ranking` and the catalogue's scales, among those
    /// that pass every filter and are not in `exclude`, best first, ties by position; with
    /// both distances of each.
    ///
    /// # Errors
    /// The store's own errors.
    fn top_k(
        &self,
        query: &PreparedQuery,
        ranking: Ranking,
        filters: &[Filter<'_>],
        exclude: &[usize],
        k: NonZeroUsize,
    ) -> Result<Vec<Scored>, RetrieverError>;
}

/// Checks rows to be added against the catalogue's dimensions: the shared check of
/// [`CatalogueStore::append`].
pub(crate) fn check_rows(
    dims: [usize; 2],
    items: usize,
    colour: Rows<'_>,
    texture: Rows<'_>,
) -> Result<(), RetrieverError> {
    if colour.dim() != dims[0] || texture.dim() != dims[1] {
        return Err(RetrieverError::Dimension {
            expected: dims,
            got: [colour.dim(), texture.dim()],
        });
    }
    if colour.len() != items || texture.len() != items {
        return Err(RetrieverError::RowCount {
            paths: items,
            colour: colour.len(),
            texture: texture.len(),
        });
    }
    for (facet, rows) in Facet::BOTH.into_iter().zip([colour, texture]) {
        if let Err(crate::knn::RowsError::NotFinite { row, column }) = rows.check_finite() {
            return Err(RetrieverError::NotFinite {
                facet: facet.name(),
                row,
                column,
            });
        }
    }
    Ok(())
}
