//! [`Retriever`]: rank a catalogue by colour, texture, or both (the paper's Figure 6).
//!
//! Each catalogue item is stored as two pooled vectors: a colour tap (block 2 by default) and a
//! texture tap (block 4 by default), computed in one forward pass. A query ranks the items by
//! Euclidean distance in one tap, or by a weighted combination of both ([`Ranking`]).
//!
//! - `catalogue`: where items live ([`CatalogueStore`]), `memory`: in memory ([`MemoryStore`]);
//! - `rank`: [`Ranking`], [`Fusion`], the score and the scale estimate;
//! - `query`: the builder ([`By`], [`Filter`], [`Query`]) and what every query does the same
//!   for every store (checks, query vectors, hits);
//! - `tags`: attributes predicted per item, as masks or stored for filters;
//! - `persist`: the catalogue file of a [`MemoryStore`];
//! - `postgres` (feature `postgres`): `PgStore`, the catalogue in PostgreSQL + pgvector.
//!
//! This file holds the retriever itself: its tap, what it was made with, its store, and
//! ingestion.

mod catalogue;
mod item;
mod memory;
mod norm;
mod persist;
#[cfg(feature = "postgres")]
mod postgres;
mod query;
mod rank;
mod tags;

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::arch::Block;
use crate::backbone::Backbone;

use rayon::prelude::*;

use crate::error::{ImageError, RetrieverError, TapError};
use crate::extract::{ExtractOptions, Progress, extract_dataset, sha256_file};
use crate::knn::Rows;
use crate::recipe::Recipe;
use crate::tap::BlockTap;

pub use catalogue::{CatalogueStore, NewItem, PreparedQuery, StoreSpec, Summary};
pub use item::{Facet, Filter, ItemId, ItemRecord, Scored};
pub use memory::MemoryStore;
pub use norm::FeatureNorm;
pub use persist::CATALOGUE_VERSION;
#[cfg(feature = "postgres")]
pub use postgres::{PG_SCHEMA_VERSION, PgConfig, PgError, PgStore};
pub use query::{By, Query};
pub use rank::{Fusion, Ranking};

/// Which recipes a [`Retriever`] uses for its two vectors, and how they are normalised.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetrieverConfig {
    /// The colour recipe (default the paper's, block 2).
    pub colour: Recipe,
    /// The texture recipe (default the paper's, block 4).
    pub texture: Recipe,
    /// Transform of the vectors (default none).
    pub norm: FeatureNorm,
}

impl Default for RetrieverConfig {
    fn default() -> Self {
        Self {
            colour: Recipe::Paper(Block::B2),
            texture: Recipe::Paper(Block::B4),
            norm: FeatureNorm::None,
        }
    }
}

impl RetrieverConfig {
    /// The product preset: [`Recipe::Colour`] (640-d) and [`Recipe::Texture`] (1024-d),
    /// centred and L2-normalised ([`FeatureNorm::CenterL2`]).
    pub fn product() -> Self {
        Self {
            colour: Recipe::Colour,
            texture: Recipe::Texture,
            norm: FeatureNorm::CenterL2,
        }
    }
}

/// One result of a query.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hit {
    /// Position in the catalogue.
    pub item: usize,
    /// The item's stable id.
    pub id: ItemId,
    /// The item's image.
    pub path: PathBuf,
    /// The ranking score (lower is closer).
    pub score: f32,
    /// Euclidean distance in the colour tap.
    pub colour_distance: f32,
    /// Euclidean distance in the texture tap.
    pub texture_distance: f32,
    /// `colour_distance / colour scale`.
    pub colour_normalised: f32,
    /// `texture_distance / texture scale`.
    pub texture_normalised: f32,
}

/// What an ingestion added and left out.
#[derive(Debug)]
#[non_exhaustive]
pub struct Ingested {
    /// The ids of the items added or replaced (same path, new content), in input order.
    pub ids: Vec<ItemId>,
    /// Images left out because the catalogue holds them already: same path, same content.
    pub unchanged: usize,
    /// The images left out because they could not be read
    /// ([`OnUnreadable::Skip`](crate::OnUnreadable::Skip)).
    pub skipped: Vec<ImageError>,
}

/// What a catalogue was made with: checked when it is loaded onto a backbone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Origin {
    config: RetrieverConfig,
    weights_id: String,
    preprocessing: String,
    dims: [usize; 2],
}

impl Origin {
    /// What a store checks: dimensions, transform, weights and how vectors are made.
    fn spec(&self) -> StoreSpec {
        StoreSpec {
            dims: self.dims,
            norm: self.config.norm,
            weights_id: self.weights_id.clone(),
            recipe: format!(
                "colour {}, texture {}, preprocessing {}",
                self.config.colour.name(),
                self.config.texture.name(),
                self.preprocessing
            ),
        }
    }

    fn describe(&self) -> String {
        format!(
            "weights {} / {} / dims {:?}",
            self.weights_id, self.preprocessing, self.dims
        )
    }
}

/// A catalogue of items with their colour and texture vectors, the tap that made them, and a
/// store that keeps them ([`MemoryStore`] unless another is given).
///
/// ```no_run
/// use std::num::NonZeroUsize;
/// use std::path::Path;
/// use std::sync::Arc;
/// use attrex::{Backbone, By, ExtractOptions, Ranking, Retriever, RetrieverConfig};
///
/// let backbone = Arc::new(Backbone::load(None, &attrex::default_device()?)?);
/// let mut shop = Retriever::new(backbone, RetrieverConfig::default())?;
/// shop.ingest(["cat/a.jpg", "cat/b.jpg", "cat/c.jpg"], &ExtractOptions::default())?;
/// let top2 = NonZeroUsize::new(2).unwrap();
/// for hit in shop.query(By::Image(Path::new("query.jpg"))).rank(Ranking::BOTH).top(top2)? {
///     println!("{} colour {:.2} texture {:.2}", hit.path.display(), hit.colour_normalised, hit.texture_normalised);
/// }
/// shop.save("catalogue.atx")?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct Retriever<S = MemoryStore> {
    tap: BlockTap,
    origin: Origin,
    store: S,
}

impl Retriever<MemoryStore> {
    /// An empty in-memory catalogue over `backbone` with the taps of `config`.
    ///
    /// # Errors
    /// [`RetrieverError::Tap`] if the tap cannot be made.
    pub fn new(backbone: Arc<Backbone>, config: RetrieverConfig) -> Result<Self, RetrieverError> {
        let (tap, origin) = Self::tap_and_origin(backbone, config)?;
        let store = MemoryStore::new(origin.dims, config.norm)?;
        Ok(Self { tap, origin, store })
    }
}

impl<S: CatalogueStore> Retriever<S> {
    fn tap_and_origin(
        backbone: Arc<Backbone>,
        config: RetrieverConfig,
    ) -> Result<(BlockTap, Origin), RetrieverError> {
        let tap = BlockTap::with_recipes(backbone, &[config.colour, config.texture])?;
        let dim = |r: Recipe| {
            let taps = tap.taps();
            taps.iter().find(|t| t.recipe == r).expect("tapped").dim
        };
        let origin = Origin {
            config,
            weights_id: tap.backbone().weights_id().to_owned(),
            preprocessing: tap.backbone().preprocessing().name().to_owned(),
            dims: [dim(config.colour), dim(config.texture)],
        };
        Ok((tap, origin))
    }

    /// A catalogue over `backbone` with the taps of `config`, kept in `store`
    /// ([`CatalogueStore::attach`] checks that the store fits).
    ///
    /// # Errors
    /// [`RetrieverError::Tap`] if the tap cannot be made; [`RetrieverError::TapMismatch`] when
    /// the store holds vectors of other dimensions or another transform; the store's errors
    /// (a database store's: another schema version, other weights).
    pub fn with_store(
        backbone: Arc<Backbone>,
        config: RetrieverConfig,
        mut store: S,
    ) -> Result<Self, RetrieverError> {
        let (tap, origin) = Self::tap_and_origin(backbone, config)?;
        store.attach(&origin.spec())?;
        Ok(Self { tap, origin, store })
    }

    /// What the store checks this retriever's vectors against.
    pub fn spec(&self) -> StoreSpec {
        self.origin.spec()
    }

    /// The number of items.
    ///
    /// # Errors
    /// The store's errors.
    pub fn len(&self) -> Result<usize, RetrieverError> {
        self.store.len()
    }

    /// Whether the catalogue is empty.
    ///
    /// # Errors
    /// The store's errors.
    pub fn is_empty(&self) -> Result<bool, RetrieverError> {
        self.store.is_empty()
    }

    /// The items' records (id, path, content hash), in catalogue order.
    ///
    /// # Errors
    /// The store's errors.
    pub fn items(&self) -> Result<Cow<'_, [ItemRecord]>, RetrieverError> {
        self.store.items()
    }

    /// The configuration.
    pub fn config(&self) -> RetrieverConfig {
        self.origin.config
    }

    /// The per-tap scales `[colour, texture]` (median pairwise distances).
    ///
    /// # Errors
    /// The store's errors.
    pub fn scales(&self) -> Result<[f32; 2], RetrieverError> {
        self.store.scales()
    }

    /// The tap that computes both vectors.
    pub fn tap(&self) -> &BlockTap {
        &self.tap
    }

    /// The store.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// Adds the images at `paths` (decoded in parallel, features cached and progress reported
    /// as `options` say), a batch at a time ([`CatalogueStore::ingest_batch`]; one
    /// transaction each in a database). An image whose path the catalogue holds with the same
    /// content (sha256) is left out before it is decoded, so ingesting a folder again adds only
    /// new and changed images, and an ingestion that was stopped resumes where it was. An
    /// image that cannot be read is an error under [`OnUnreadable::Fail`](crate::OnUnreadable::Fail)
    /// (the batches before it stay added) and skipped otherwise.
    ///
    /// # Errors
    /// [`RetrieverError::Tap`] naming the unreadable file; the store's errors.
    pub fn ingest(
        &mut self,
        paths: impl IntoIterator<Item = impl AsRef<Path>>,
        options: &ExtractOptions,
    ) -> Result<Ingested, RetrieverError> {
        let paths: Vec<PathBuf> = paths.into_iter().map(|p| p.as_ref().to_owned()).collect();
        let mut out = Ingested {
            ids: Vec::new(),
            unchanged: 0,
            skipped: Vec::new(),
        };
        let result = self.ingest_batches(&paths, options, &mut out);
        // What was added stays added: settle it even after an error.
        let settled = self.store.settle();
        result?;
        settled?;
        if paths.is_empty()
            && let Some(p) = &options.progress
        {
            p.report(0, 0);
        }
        Ok(out)
    }

    fn ingest_batches(
        &mut self,
        paths: &[PathBuf],
        options: &ExtractOptions,
        out: &mut Ingested,
    ) -> Result<(), RetrieverError> {
        let total = paths.len();
        let batch = self.store.ingest_batch().get();
        for (b, part) in paths.chunks(batch).enumerate() {
            // Same path, same content: nothing to do, and no image to decode.
            let stored = self.store.lookup(part)?;
            let todo: Vec<&PathBuf> = part
                .par_iter()
                .zip(stored.par_iter())
                .filter(|(path, record)| {
                    let known = record.as_ref().and_then(|r| r.sha256);
                    known.is_none() || sha256_file(path).ok() != known
                })
                .map(|(path, _)| path)
                .collect();
            out.unchanged += part.len() - todo.len();
            let done = b * batch + part.len() - todo.len();
            let inner = ExtractOptions {
                progress: options
                    .progress
                    .clone()
                    .map(|p| Progress::new(move |d, _| p.report((done + d).min(total), total))),
                ..options.clone()
            };
            let mut f = extract_dataset(&self.tap, todo, &inner)?;
            out.skipped.append(&mut f.skipped);
            if !f.is_empty() {
                let rows = |r: Recipe| f.recipe(r).expect("tapped");
                let items = f
                    .paths
                    .iter()
                    .cloned()
                    .zip(&f.sha256)
                    .map(|(path, sha)| NewItem {
                        path,
                        sha256: Some(*sha),
                    })
                    .collect();
                let ids = self.store.append(
                    items,
                    rows(self.origin.config.colour),
                    rows(self.origin.config.texture),
                )?;
                out.ids.extend(ids);
            }
            if let Some(p) = &options.progress {
                p.report(b * batch + part.len(), total);
            }
        }
        Ok(())
    }

    /// The colour and texture vectors among a tap's `blocks`.
    fn split<'a>(&self, blocks: &'a [Vec<f32>]) -> (&'a [f32], &'a [f32]) {
        let taps = self.tap.taps();
        let pos = |r: Recipe| taps.iter().position(|t| t.recipe == r).expect("tapped");
        (
            &blocks[pos(self.origin.config.colour)],
            &blocks[pos(self.origin.config.texture)],
        )
    }

    /// Adds items whose vectors are already computed, raw (as the tap gives them): row `i` of
    /// `colour` and `texture` for `paths[i]` (a stored path is replaced). One
    /// [`CatalogueStore::append`], so all or nothing.
    ///
    /// # Errors
    /// [`RetrieverError::Dimension`] or [`RetrieverError::RowCount`] when the rows do not fit;
    /// [`RetrieverError::NotFinite`] for a NaN or infinity. Nothing is added then. The store's
    /// errors.
    pub fn extend_vectors(
        &mut self,
        paths: Vec<PathBuf>,
        colour: Rows<'_>,
        texture: Rows<'_>,
    ) -> Result<Vec<ItemId>, RetrieverError> {
        let items = paths
            .into_iter()
            .map(|path| NewItem { path, sha256: None })
            .collect();
        let ids = self.store.append(items, colour, texture);
        let settled = self.store.settle();
        let ids = ids?;
        settled?;
        Ok(ids)
    }

    /// Removes the items with these ids; later items move down. Returns how many were
    /// removed.
    ///
    /// # Errors
    /// The store's errors.
    pub fn remove(&mut self, ids: &[ItemId]) -> Result<usize, RetrieverError> {
        self.store.remove(ids)
    }

    /// Starts a query: `shop.query(By::Item(3)).rank(Ranking::Colour).top(k)`.
    pub fn query<'a>(&self, by: By<'a>) -> Query<'_, 'a, S> {
        Query {
            retriever: self,
            by,
            ranking: Ranking::BOTH,
            filters: Vec::new(),
            exclude: Vec::new(),
        }
    }
}

impl From<TapError> for RetrieverError {
    fn from(e: TapError) -> Self {
        RetrieverError::Tap(Box::new(e))
    }
}
