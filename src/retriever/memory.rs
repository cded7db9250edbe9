//! [`MemoryStore`]: the catalogue in memory, the default [`CatalogueStore`].

use std::borrow::Cow;
use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::path::PathBuf;

use rayon::prelude::*;

use super::catalogue::{CatalogueStore, NewItem, PreparedQuery, StoreSpec, Summary, check_rows};
use super::item::{Facet, Filter};
use super::item::{ItemId, ItemRecord, Scored};
use super::norm::FeatureNorm;
use super::rank::{Ranking, median_distance, scale_pairs};
use crate::error::RetrieverError;
use crate::knn::{Rows, TopK, squared_l2};

/// One facet's vectors: raw (as pooled), and transformed by the [`FeatureNorm`] for search.
#[derive(Debug, Clone, Default)]
pub(super) struct TapData {
    dim: usize,
    pub(super) raw: Vec<f32>,
    /// The catalogue mean; empty unless the norm is [`FeatureNorm::CenterL2`].
    mean: Vec<f32>,
    /// Empty under [`FeatureNorm::None`]: search uses `raw`.
    normalised: Vec<f32>,
    /// Median pairwise distance of the search vectors.
    scale: f32,
    /// Predicted attribute per item, once tagged.
    pub(super) attributes: Option<Vec<Option<String>>>,
}

impl TapData {
    fn search(&self) -> Rows<'_> {
        let v = if self.normalised.is_empty() {
            &self.raw
        } else {
            &self.normalised
        };
        Rows::new(v, self.dim).expect("whole rows of a non-zero dimension")
    }

    fn raw_rows(&self) -> Rows<'_> {
        Rows::new(&self.raw, self.dim).expect("whole rows of a non-zero dimension")
    }

    /// Stores `row` as row `i` (`i == len` appends), with its transformed copy made with the
    /// current mean (brought up to date by [`refresh`](Self::refresh)).
    fn put(&mut self, i: usize, row: &[f32], norm: FeatureNorm) {
        let d = self.dim;
        let mut v = row.to_vec();
        norm.apply(&mut v, &self.mean);
        if i * d == self.raw.len() {
            self.raw.extend_from_slice(row);
            if norm != FeatureNorm::None {
                self.normalised.extend_from_slice(&v);
            }
            if let Some(a) = &mut self.attributes {
                a.push(None);
            }
        } else {
            self.raw[i * d..(i + 1) * d].copy_from_slice(row);
            if norm != FeatureNorm::None {
                self.normalised[i * d..(i + 1) * d].copy_from_slice(&v);
            }
            // New content: the old prediction no longer holds.
            if let Some(a) = &mut self.attributes {
                a[i] = None;
            }
        }
    }

    /// Recomputes the mean, the transformed copy and the scale after a change.
    fn refresh(&mut self, norm: FeatureNorm, pairs: &[(usize, usize)]) {
        // Only centring uses the mean.
        self.mean.clear();
        if norm == FeatureNorm::CenterL2 {
            let n = self.raw_rows().len();
            self.mean = vec![0.0; self.dim];
            for row in self.raw.chunks_exact(self.dim) {
                self.mean.iter_mut().zip(row).for_each(|(m, x)| *m += x);
            }
            self.mean.iter_mut().for_each(|m| *m /= n.max(1) as f32);
        }
        self.normalised.clear();
        if norm != FeatureNorm::None {
            self.normalised = self.raw.clone();
            self.normalised
                .par_chunks_mut(self.dim)
                .for_each(|v| norm.apply(v, &self.mean));
        }
        self.scale = median_distance(self.search(), pairs);
    }
}

/// The catalogue in memory: raw vectors, their transformed copies, means and scales, item
/// records and predicted attributes. The default store of a [`Retriever`](crate::Retriever);
/// saved and loaded with it ([`Retriever::save`](crate::Retriever::save)).
///
/// A catalogue of `n` items holds `n x (colour dim + texture dim)` floats, twice under a
/// transform: 100,000 items of blocks 2 and 4 take 0.5 GB raw.
#[derive(Debug, Clone)]
pub struct MemoryStore {
    norm: FeatureNorm,
    pub(super) items: Vec<ItemRecord>,
    /// Each item's position by its path (the identity of an item).
    by_path: HashMap<PathBuf, usize>,
    pub(super) next_id: u64,
    pub(super) taps: [TapData; 2],
}

impl MemoryStore {
    /// An empty store of vectors of `dims` `[colour, texture]`, transformed by `norm` for
    /// search.
    ///
    /// # Errors
    /// [`RetrieverError::Dimension`] when a dimension is 0.
    pub fn new(dims: [usize; 2], norm: FeatureNorm) -> Result<Self, RetrieverError> {
        if dims.contains(&0) {
            return Err(RetrieverError::Dimension {
                expected: [1, 1],
                got: dims,
            });
        }
        let tap = |dim| TapData {
            dim,
            scale: 1.0,
            ..TapData::default()
        };
        Ok(Self {
            norm,
            items: Vec::new(),
            by_path: HashMap::new(),
            next_id: 0,
            taps: [tap(dims[0]), tap(dims[1])],
        })
    }

    /// Recomputes everything derived from the items: the path index, means, transformed
    /// copies, scales.
    pub(super) fn refresh(&mut self) {
        self.by_path = (self.items.iter().enumerate())
            .map(|(i, r)| (r.path.clone(), i))
            .collect();
        let pairs = scale_pairs(self.items.len());
        let norm = self.norm;
        for tap in &mut self.taps {
            tap.refresh(norm, &pairs);
        }
    }

    /// The position of the item with `id` (ids increase with position).
    fn position(&self, id: ItemId) -> Option<usize> {
        self.items.binary_search_by_key(&id, |r| r.id).ok()
    }

    /// Whether item `i` passes every filter and is not excluded.
    fn passes(&self, i: usize, filters: &[Filter<'_>], exclude: &[usize]) -> bool {
        !exclude.contains(&i)
            && filters.iter().all(|f| match f {
                Filter::Mask(mask) => mask[i],
                Filter::Attribute { facet, any_of } => self.taps[facet.index()]
                    .attributes
                    .as_ref()
                    .and_then(|a| a[i].as_deref())
                    .is_some_and(|a| any_of.iter().any(|w| w == a)),
            })
    }
}

impl CatalogueStore for MemoryStore {
    fn attach(&mut self, spec: &StoreSpec) -> Result<(), RetrieverError> {
        let dims = [self.taps[0].dim, self.taps[1].dim];
        if dims != spec.dims || self.norm != spec.norm {
            return Err(RetrieverError::TapMismatch {
                catalogue: format!("dims {dims:?} / {:?}", self.norm),
                backbone: format!("dims {:?} / {:?}", spec.dims, spec.norm),
            });
        }
        Ok(())
    }

    fn summary(&self) -> Result<Summary, RetrieverError> {
        Ok(Summary {
            len: self.items.len(),
            scales: [self.taps[0].scale, self.taps[1].scale],
            means: [self.taps[0].mean.clone(), self.taps[1].mean.clone()],
            tagged: [
                self.taps[0].attributes.is_some(),
                self.taps[1].attributes.is_some(),
            ],
        })
    }

    fn len(&self) -> Result<usize, RetrieverError> {
        Ok(self.items.len())
    }

    fn scales(&self) -> Result<[f32; 2], RetrieverError> {
        Ok([self.taps[0].scale, self.taps[1].scale])
    }

    fn lookup(&self, paths: &[PathBuf]) -> Result<Vec<Option<ItemRecord>>, RetrieverError> {
        Ok(paths
            .iter()
            .map(|p| self.by_path.get(p).map(|&i| self.items[i].clone()))
            .collect())
    }

    fn append(
        &mut self,
        items: Vec<NewItem>,
        colour: Rows<'_>,
        texture: Rows<'_>,
    ) -> Result<Vec<ItemId>, RetrieverError> {
        check_rows(
            [self.taps[0].dim, self.taps[1].dim],
            items.len(),
            colour,
            texture,
        )?;
        let mut ids = Vec::with_capacity(items.len());
        for (row, item) in items.into_iter().enumerate() {
            let i = match self.by_path.get(&item.path) {
                Some(&i) => {
                    self.items[i].sha256 = item.sha256;
                    i
                }
                None => {
                    let i = self.items.len();
                    self.by_path.insert(item.path.clone(), i);
                    self.items.push(ItemRecord {
                        id: ItemId(self.next_id),
                        path: item.path,
                        sha256: item.sha256,
                    });
                    self.next_id += 1;
                    i
                }
            };
            ids.push(self.items[i].id);
            let norm = self.norm;
            for (tap, rows) in self.taps.iter_mut().zip([colour, texture]) {
                tap.put(i, rows.row(row), norm);
            }
        }
        Ok(ids)
    }

    fn settle(&mut self) -> Result<(), RetrieverError> {
        self.refresh();
        Ok(())
    }

    fn remove(&mut self, ids: &[ItemId]) -> Result<usize, RetrieverError> {
        let keep: Vec<bool> = self.items.iter().map(|r| !ids.contains(&r.id)).collect();
        let removed = keep.iter().filter(|k| !**k).count();
        if removed == 0 {
            return Ok(0);
        }
        let mut i = 0;
        self.items.retain(|_| {
            i += 1;
            keep[i - 1]
        });
        for tap in &mut self.taps {
            let dim = tap.dim;
            let mut raw = Vec::with_capacity(tap.raw.len() - removed * dim);
            for (row, kept) in tap.raw.chunks_exact(dim).zip(&keep) {
                if *kept {
                    raw.extend_from_slice(row);
                }
            }
            tap.raw = raw;
            if let Some(a) = &mut tap.attributes {
                let mut i = 0;
                a.retain(|_| {
                    i += 1;
                    keep[i - 1]
                });
            }
        }
        self.refresh();
        Ok(removed)
    }

    fn items(&self) -> Result<Cow<'_, [ItemRecord]>, RetrieverError> {
        Ok(Cow::Borrowed(&self.items))
    }

    fn ids_at(&self, positions: &[usize]) -> Result<Vec<ItemId>, RetrieverError> {
        positions
            .iter()
            .map(|&item| {
                self.items
                    .get(item)
                    .map(|r| r.id)
                    .ok_or(RetrieverError::NoSuchItem {
                        item,
                        len: self.items.len(),
                    })
            })
            .collect()
    }

    fn positions(&self, ids: &[ItemId]) -> Result<Vec<Option<usize>>, RetrieverError> {
        Ok(ids.iter().map(|&id| self.position(id)).collect())
    }

    fn search_vectors(&self, id: ItemId) -> Result<[Cow<'_, [f32]>; 2], RetrieverError> {
        let i = self.position(id).ok_or(RetrieverError::NoSuchId { id })?;
        let colour = self.taps[0].search().row(i);
        let texture = self.taps[1].search().row(i);
        Ok([Cow::Borrowed(colour), Cow::Borrowed(texture)])
    }

    fn raw(&self, facet: Facet) -> Result<Cow<'_, [f32]>, RetrieverError> {
        Ok(Cow::Borrowed(&self.taps[facet.index()].raw))
    }

    fn set_attributes(
        &mut self,
        facet: Facet,
        attributes: Vec<String>,
    ) -> Result<(), RetrieverError> {
        if attributes.len() != self.items.len() {
            return Err(RetrieverError::FilterLength {
                items: self.items.len(),
                flags: attributes.len(),
            });
        }
        self.taps[facet.index()].attributes = Some(attributes.into_iter().map(Some).collect());
        Ok(())
    }

    fn attributes(
        &self,
        facet: Facet,
    ) -> Result<Option<Cow<'_, [Option<String>]>>, RetrieverError> {
        Ok(self.taps[facet.index()]
            .attributes
            .as_deref()
            .map(Cow::Borrowed))
    }

    fn top_k(
        &self,
        query: &PreparedQuery,
        ranking: Ranking,
        filters: &[Filter<'_>],
        exclude: &[ItemId],
        k: NonZeroUsize,
    ) -> Result<Vec<Scored>, RetrieverError> {
        let exclude: Vec<usize> = exclude.iter().filter_map(|&id| self.position(id)).collect();
        let exclude = exclude.as_slice();
        let scales = self.scales()?;
        let [wc, wt] = ranking.weights();
        let (qc, qt) = (query.vector(Facet::Colour), query.vector(Facet::Texture));
        let (colour, texture) = (self.taps[0].search(), self.taps[1].search());
        // A tap of weight 0 is not measured.
        let distances = |i: usize| {
            let c = if wc != 0.0 {
                squared_l2(qc, colour.row(i)).sqrt()
            } else {
                f32::NAN
            };
            let t = if wt != 0.0 {
                squared_l2(qt, texture.row(i)).sqrt()
            } else {
                f32::NAN
            };
            [c, t]
        };
        const CHUNK: usize = 1024;
        let n = self.items.len();
        let tops: Vec<TopK> = (0..n.div_ceil(CHUNK))
            .into_par_iter()
            .map(|c| {
                let mut top = TopK::new(k);
                for i in c * CHUNK..((c + 1) * CHUNK).min(n) {
                    if self.passes(i, filters, exclude) {
                        top.offer(ranking.score(distances(i), scales), i);
                    }
                }
                top
            })
            .collect();
        let mut all = TopK::new(k);
        for t in tops {
            for (s, i) in t.into_sorted() {
                all.offer(s, i);
            }
        }
        Ok(all
            .into_sorted()
            .into_iter()
            .map(|(score, i)| Scored {
                record: self.items[i].clone(),
                score,
                distances: [
                    squared_l2(qc, colour.row(i)).sqrt(),
                    squared_l2(qt, texture.row(i)).sqrt(),
                ],
            })
            .collect())
    }
}
