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

use super::item::{Facet, Filter, ItemId, ItemRecord, Scored};
use super::norm::FeatureNorm;
use super::rank::Ranking;
use crate::error::RetrieverError;
use crate::knn::Rows;

/// An item to add: its image and the image's content hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewItem {
    /// The image it is made from.
    pub path: PathBuf,
    /// The sha256 of the image's bytes, when known.
    pub sha256: Option<[u8; 32]>,
}

/// What a catalogue was made with: checked when a [`Retriever`](crate::Retriever) takes a
/// store ([`CatalogueStore::attach`]). A database store records it when it creates the
/// catalogue and refuses another.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct StoreSpec {
    /// The dimensions `[colour, texture]` of the vectors.
    pub dims: [usize; 2],
    /// The transform of the search vectors.
    pub norm: FeatureNorm,
    /// The backbone's weights ([`Backbone::weights_id`](crate::Backbone::weights_id)).
    pub weights_id: String,
    /// How the two vectors are made from an image: the taps and the preprocessing, in words.
    pub recipe: String,
}

/// What a query needs to know of the catalogue besides its vectors, read once per query.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Summary {
    /// The number of items.
    pub len: usize,
    /// The scales `[colour, texture]`: median pairwise distances of the search vectors (1 for
    /// fewer than two items).
    pub scales: [f32; 2],
    /// The means `[colour, texture]` of the raw vectors that [`FeatureNorm::CenterL2`]
    /// subtracts; empty under other transforms.
    pub means: [Vec<f32>; 2],
    /// Whether each facet's attributes were stored ([`CatalogueStore::set_attributes`]).
    pub tagged: [bool; 2],
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

/// Where a [`Retriever`](crate::Retriever) keeps its items: in memory ([`MemoryStore`], the
/// default) or in a database (`PgStore`, feature `postgres`).
///
/// Items are known by their [`ItemId`]. They also have a *position*, `0..len`, their rank by
/// id: ids are given in increasing order, so positions follow the order in which items were
/// added, and removing an item moves the later ones down. Positions are what masks
/// ([`Filter::Mask`]) and [`By::Item`](crate::By::Item) speak of.
///
/// An item's path is its identity: adding an item whose path is stored replaces that item's
/// vectors and content hash (it keeps its id and position, and loses its stored attributes).
///
/// Vectors come in two facets, colour and texture, each of a fixed dimension; the store keeps
/// them raw (as the tap gave them) or recoverably, and transformed by its [`FeatureNorm`] for
/// search, and knows each facet's scale (the median pairwise distance between items).
/// Scales and means are brought up to date by [`settle`](Self::settle), which the retriever
/// calls after every run of [`append`](Self::append)s.
///
/// The retriever checks every query before a store sees it: vectors of the right dimensions,
/// masks of the right length, attribute filters on tagged facets, excluded items that exist.
/// Ranking is shared: a store computes distances and calls [`Ranking::score`]; the memory
/// store over every item, a database store over the candidates its indexes give.
///
/// [`MemoryStore`]: crate::MemoryStore
pub trait CatalogueStore {
    /// Checks that the store holds (or can hold) vectors made as `spec` says; a new database
    /// catalogue records it. Called once, when a retriever takes the store.
    ///
    /// # Errors
    /// [`RetrieverError::TapMismatch`] when the store was made otherwise; the store's own
    /// errors.
    fn attach(&mut self, spec: &StoreSpec) -> Result<(), RetrieverError>;

    /// The number of items, the scales, the means and which facets are tagged.
    ///
    /// # Errors
    /// The store's own errors.
    fn summary(&self) -> Result<Summary, RetrieverError>;

    /// The number of items.
    ///
    /// # Errors
    /// As [`summary`](Self::summary).
    fn len(&self) -> Result<usize, RetrieverError> {
        Ok(self.summary()?.len)
    }

    /// Whether there is no item.
    ///
    /// # Errors
    /// As [`summary`](Self::summary).
    fn is_empty(&self) -> Result<bool, RetrieverError> {
        Ok(self.len()? == 0)
    }

    /// The scales `[colour, texture]` (see [`Summary::scales`]).
    ///
    /// # Errors
    /// As [`summary`](Self::summary).
    fn scales(&self) -> Result<[f32; 2], RetrieverError> {
        Ok(self.summary()?.scales)
    }

    /// How many images [`Retriever::ingest`](crate::Retriever::ingest) reads, checks and adds
    /// at a time: one [`append`](Self::append) (one transaction in a database) per batch.
    fn ingest_batch(&self) -> NonZeroUsize {
        NonZeroUsize::new(256).expect("256 > 0")
    }

    /// The stored record under each of `paths`, if any: what ingestion compares content
    /// hashes with before it reads an image.
    ///
    /// # Errors
    /// The store's own errors.
    fn lookup(&self, paths: &[PathBuf]) -> Result<Vec<Option<ItemRecord>>, RetrieverError>;

    /// Adds `items` with their raw vectors (row `i` of `colour` and `texture` for `items[i]`);
    /// an item whose path is stored replaces it. Returns the items' ids, in input order.
    /// All or nothing: nothing is added on error. Scales and means may be stale until
    /// [`settle`](Self::settle).
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

    /// Brings what depends on the whole catalogue up to date after appends: means, transformed
    /// vectors, scales (and a database's indexes).
    ///
    /// # Errors
    /// The store's own errors.
    fn settle(&mut self) -> Result<(), RetrieverError>;

    /// Removes the items with these ids (unknown ids are ignored) and settles. Returns how many
    /// were removed.
    ///
    /// # Errors
    /// The store's own errors.
    fn remove(&mut self, ids: &[ItemId]) -> Result<usize, RetrieverError>;

    /// Every item's record, in position order.
    ///
    /// # Errors
    /// The store's own errors.
    fn items(&self) -> Result<Cow<'_, [ItemRecord]>, RetrieverError>;

    /// The ids of the items at `positions`.
    ///
    /// # Errors
    /// [`RetrieverError::NoSuchItem`] for a position past the end; the store's own errors.
    fn ids_at(&self, positions: &[usize]) -> Result<Vec<ItemId>, RetrieverError>;

    /// The positions of the items with `ids` (`None` for an id not stored).
    ///
    /// # Errors
    /// The store's own errors.
    fn positions(&self, ids: &[ItemId]) -> Result<Vec<Option<usize>>, RetrieverError>;

    /// Item `id`'s search vectors `[colour, texture]` (transformed).
    ///
    /// # Errors
    /// [`RetrieverError::NoSuchId`]; the store's own errors.
    fn search_vectors(&self, id: ItemId) -> Result<[Cow<'_, [f32]>; 2], RetrieverError>;

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

    /// The stored attributes of `facet` per item in position order (`None` for an item added
    /// since), or `None` when the facet was never tagged.
    ///
    /// # Errors
    /// The store's own errors.
    fn attributes(&self, facet: Facet)
    -> Result<Option<Cow<'_, [Option<String>]>>, RetrieverError>;

    /// The `k` best items for `query` under `ranking` and the catalogue's scales, among those
    /// that pass every filter and are not in `exclude`, best first, ties by id; with both
    /// distances of each. A database store may answer from approximate indexes.
    ///
    /// # Errors
    /// The store's own errors.
    fn top_k(
        &self,
        query: &PreparedQuery,
        ranking: Ranking,
        filters: &[Filter<'_>],
        exclude: &[ItemId],
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
        match rows.check_searchable() {
            Err(crate::knn::RowsError::NotFinite { row, column }) => {
                return Err(RetrieverError::NotFinite {
                    facet: facet.name(),
                    row,
                    column,
                });
            }
            Err(crate::knn::RowsError::TooLarge { row, column, dim }) => {
                return Err(RetrieverError::TooLarge {
                    facet: facet.name(),
                    row,
                    column,
                    limit: crate::knn::max_magnitude(dim),
                });
            }
            _ => {}
        }
    }
    Ok(())
}
