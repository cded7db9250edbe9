//! [`AttributeIndex`]: training-free attributes by k-nearest-neighbour vote.
//!
//! Store a few labelled feature vectors per attribute ("red", "striped"...), then classify a
//! new vector by the majority of its `k` nearest examples (Euclidean). Attributes and examples
//! can be added and removed at any time; nothing is trained.
//!
//! Search is exact. Two engines answer the same queries:
//! - a k-d tree ([kiddo]) for low dimensions (up to [`KDTREE_MAX_DIM`], e.g. after UMAP), built
//!   lazily on the first query after a change;
//! - a SIMD-friendly blocked scan for the 64-2048 dimensions of raw block features, where a k-d
//!   tree prunes almost nothing and only adds overhead.
//!
//! [kiddo]: https://docs.rs/kiddo

mod kdtree;
mod persist;
pub(crate) mod scan;

use std::collections::BTreeMap;
use std::num::NonZeroUsize;
use std::path::Path;
use std::sync::OnceLock;

use crate::error::IndexError;
use crate::tap::BlockTap;

pub use kdtree::KDTREE_MAX_DIM;

/// The identity of one stored example, stable across removals and persistence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ExampleId(pub u64);

/// Which exact search engine answers queries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Search {
    /// The k-d tree up to [`KDTREE_MAX_DIM`] dimensions, the scan above.
    #[default]
    Auto,
    /// Always the k-d tree (falls back to the scan above [`KDTREE_MAX_DIM`]).
    KdTree,
    /// Always the blocked scan.
    Scan,
}

/// How a tie between attributes with the same number of votes is broken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum TieBreak {
    /// The attribute whose nearest example is nearest to the query wins (default).
    #[default]
    Nearest,
    /// The attribute whose name sorts first wins, as scikit-learn's `KNeighborsClassifier`
    /// (which takes the lowest class label) does; for reproducing its figures.
    FirstName,
}

/// One neighbour of a query.
#[derive(Debug, Clone, PartialEq)]
pub struct Neighbour {
    /// The stored example.
    pub id: ExampleId,
    /// Its attribute.
    pub attribute: String,
    /// Euclidean distance to the query.
    pub distance: f32,
}

/// The answer of [`AttributeIndex::classify`].
#[derive(Debug, Clone, PartialEq)]
pub struct Prediction {
    /// The winning attribute.
    pub attribute: String,
    /// Votes per attribute among the neighbours, most votes first (ties: nearer first).
    pub votes: Vec<(String, usize)>,
    /// The `k` nearest examples, nearest first: the evidence.
    pub neighbours: Vec<Neighbour>,
}

/// Labelled feature vectors and an exact k-nearest-neighbour vote over them.
///
/// ```
/// use attrex::AttributeIndex;
///
/// let mut index = AttributeIndex::new(3);
/// index.add("red", &[1.0, 0.0, 0.0])?;
/// index.add("red", &[0.9, 0.1, 0.0])?;
/// index.add("blue", &[0.0, 0.0, 1.0])?;
/// let p = index.with_k(std::num::NonZeroUsize::new(1).unwrap()).classify(&[0.8, 0.0, 0.1])?;
/// assert_eq!(p.attribute, "red");
/// # Ok::<(), attrex::IndexError>(())
/// ```
#[derive(Debug)]
pub struct AttributeIndex {
    dim: usize,
    k: NonZeroUsize,
    search: Search,
    tie_break: TieBreak,
    attributes: Vec<String>,
    ids: Vec<ExampleId>,
    labels: Vec<u32>,
    data: Vec<f32>,
    next_id: u64,
    tree: OnceLock<Option<kdtree::Tree>>,
}

impl Clone for AttributeIndex {
    fn clone(&self) -> Self {
        Self {
            dim: self.dim,
            k: self.k,
            search: self.search,
            tie_break: self.tie_break,
            attributes: self.attributes.clone(),
            ids: self.ids.clone(),
            labels: self.labels.clone(),
            data: self.data.clone(),
            next_id: self.next_id,
            tree: OnceLock::new(),
        }
    }
}

/// The default number of neighbours that vote.
pub const DEFAULT_K: NonZeroUsize = NonZeroUsize::new(5).unwrap();

impl AttributeIndex {
    /// An empty index of `dim`-dimensional vectors, voting with [`DEFAULT_K`] = 5 neighbours.
    pub fn new(dim: usize) -> Self {
        Self {
            dim,
            k: DEFAULT_K,
            search: Search::Auto,
            tie_break: TieBreak::Nearest,
            attributes: Vec::new(),
            ids: Vec::new(),
            labels: Vec::new(),
            data: Vec::new(),
            next_id: 0,
            tree: OnceLock::new(),
        }
    }

    /// Sets the number of neighbours that vote.
    pub fn with_k(mut self, k: NonZeroUsize) -> Self {
        self.k = k;
        self
    }

    /// Chooses the search engine (default [`Search::Auto`]).
    pub fn with_search(mut self, search: Search) -> Self {
        self.search = search;
        self.tree = OnceLock::new();
        self
    }

    /// Chooses how ties between attributes are broken (default [`TieBreak::Nearest`]).
    pub fn with_tie_break(mut self, tie_break: TieBreak) -> Self {
        self.tie_break = tie_break;
        self
    }

    /// The dimension of the vectors.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// The number of neighbours that vote.
    pub fn k(&self) -> NonZeroUsize {
        self.k
    }

    /// The number of stored examples.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether no example is stored.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// The attributes that have at least one example, in the order they were first added.
    pub fn attributes(&self) -> &[String] {
        &self.attributes
    }

    /// Examples per attribute.
    pub fn counts(&self) -> BTreeMap<&str, usize> {
        let mut out = BTreeMap::new();
        for &l in &self.labels {
            *out.entry(self.attributes[l as usize].as_str()).or_insert(0) += 1;
        }
        out
    }

    /// The engine that answers queries now.
    pub fn engine(&self) -> Search {
        match self.search {
            Search::Scan => Search::Scan,
            _ if self.dim <= KDTREE_MAX_DIM && self.dim > 0 => Search::KdTree,
            _ => Search::Scan,
        }
    }

    fn check(&self, vector: &[f32]) -> Result<(), IndexError> {
        if vector.len() != self.dim {
            return Err(IndexError::Dimension {
                expected: self.dim,
                got: vector.len(),
            });
        }
        if let Some(i) = vector.iter().position(|v| !v.is_finite()) {
            return Err(IndexError::NotFinite { position: i });
        }
        Ok(())
    }

    fn changed(&mut self) {
        self.tree = OnceLock::new();
    }

    /// Adds one example of `attribute` (created if new).
    ///
    /// # Errors
    /// [`IndexError::Dimension`] or [`IndexError::NotFinite`] (NaN or infinity).
    pub fn add(&mut self, attribute: &str, vector: &[f32]) -> Result<ExampleId, IndexError> {
        self.check(vector)?;
        let label = match self.attributes.iter().position(|a| a == attribute) {
            Some(l) => l,
            None => {
                self.attributes.push(attribute.to_owned());
                self.attributes.len() - 1
            }
        };
        let id = ExampleId(self.next_id);
        self.next_id += 1;
        self.ids.push(id);
        self.labels.push(label as u32);
        self.data.extend_from_slice(vector);
        self.changed();
        Ok(id)
    }

    /// Adds the images at `paths` as examples of `attribute`, through `tap`, which must tap
    /// exactly one block of this index's dimension.
    ///
    /// # Errors
    /// [`IndexError::Tap`] when the tap has several blocks, another dimension, or an image
    /// cannot be read (no example is added then).
    pub fn add_images<P: AsRef<Path> + Sync>(
        &mut self,
        attribute: &str,
        tap: &BlockTap,
        paths: &[P],
    ) -> Result<Vec<ExampleId>, IndexError> {
        self.check_tap(tap)?;
        let features = tap.extract_paths(paths)?;
        features
            .iter()
            .map(|f| self.add(attribute, &f.blocks[0]))
            .collect()
    }

    fn check_tap(&self, tap: &BlockTap) -> Result<(), IndexError> {
        let taps = tap.taps();
        match taps.as_slice() {
            [one] if one.dim == self.dim => Ok(()),
            _ => Err(IndexError::TapMismatch {
                dim: self.dim,
                taps: taps
                    .iter()
                    .map(|t| format!("{} ({}-d)", t.name, t.dim))
                    .collect(),
            }),
        }
    }

    /// Removes one example. Returns whether it was there. An attribute left without examples
    /// disappears.
    pub fn remove(&mut self, id: ExampleId) -> bool {
        let Ok(row) = self.ids.binary_search(&id) else {
            return false;
        };
        self.ids.remove(row);
        let label = self.labels.remove(row);
        self.data.drain(row * self.dim..(row + 1) * self.dim);
        if !self.labels.contains(&label) {
            self.drop_label(label);
        }
        self.changed();
        true
    }

    /// Removes every example of `attribute`. Returns how many were removed.
    pub fn remove_attribute(&mut self, attribute: &str) -> usize {
        let Some(label) = self.attributes.iter().position(|a| a == attribute) else {
            return 0;
        };
        let label = label as u32;
        let keep: Vec<bool> = self.labels.iter().map(|&l| l != label).collect();
        let removed = keep.iter().filter(|k| !**k).count();
        let mut row = 0;
        self.ids.retain(|_| {
            row += 1;
            keep[row - 1]
        });
        let dim = self.dim;
        let mut data = Vec::with_capacity(self.data.len() - removed * dim);
        for (r, chunk) in self.data.chunks_exact(dim.max(1)).enumerate() {
            if keep[r] {
                data.extend_from_slice(chunk);
            }
        }
        self.data = data;
        self.labels.retain(|&l| l != label);
        self.drop_label(label);
        self.changed();
        removed
    }

    fn drop_label(&mut self, label: u32) {
        self.attributes.remove(label as usize);
        for l in &mut self.labels {
            if *l > label {
                *l -= 1;
            }
        }
    }

    fn tree(&self) -> Option<&kdtree::Tree> {
        if self.engine() != Search::KdTree {
            return None;
        }
        self.tree
            .get_or_init(|| kdtree::Tree::build(&self.data, self.dim))
            .as_ref()
    }

    /// `(squared distance, row)` of the `k` nearest rows, nearest first, ties by row.
    fn nearest_rows(&self, query: &[f32], k: usize) -> Vec<(f32, usize)> {
        match self.tree() {
            Some(tree) => tree.nearest(query, k),
            None => scan::nearest(&self.data, self.dim, query, k),
        }
    }

    fn neighbours(&self, rows: Vec<(f32, usize)>) -> Vec<Neighbour> {
        rows.into_iter()
            .map(|(d2, row)| Neighbour {
                id: self.ids[row],
                attribute: self.attributes[self.labels[row] as usize].clone(),
                distance: d2.sqrt(),
            })
            .collect()
    }

    /// The `k` nearest examples to `query`, nearest first (equal distances: older example
    /// first). Fewer when the index holds fewer.
    ///
    /// # Errors
    /// [`IndexError::Dimension`] or [`IndexError::NotFinite`].
    pub fn nearest(&self, query: &[f32], k: NonZeroUsize) -> Result<Vec<Neighbour>, IndexError> {
        self.check(query)?;
        Ok(self.neighbours(self.nearest_rows(query, k.get())))
    }

    /// The majority attribute among the `k` nearest examples; a tie between attributes is
    /// broken by the [`TieBreak`] rule (default: the attribute with the nearest example wins).
    ///
    /// # Errors
    /// [`IndexError::Empty`], [`IndexError::Dimension`] or [`IndexError::NotFinite`].
    pub fn classify(&self, query: &[f32]) -> Result<Prediction, IndexError> {
        self.check(query)?;
        if self.is_empty() {
            return Err(IndexError::Empty);
        }
        Ok(self.vote(self.nearest_rows(query, self.k.get())))
    }

    /// [`classify`](Self::classify) for each row of `queries` (`m x dim`, row-major), in
    /// parallel.
    ///
    /// # Errors
    /// As [`classify`](Self::classify); [`IndexError::Dimension`] when the length is not a
    /// multiple of the dimension.
    pub fn classify_many(&self, queries: &[f32]) -> Result<Vec<Prediction>, IndexError> {
        use rayon::prelude::*;
        if self.dim == 0 || !queries.len().is_multiple_of(self.dim) {
            return Err(IndexError::Dimension {
                expected: self.dim,
                got: queries.len(),
            });
        }
        if let Some(i) = queries.iter().position(|v| !v.is_finite()) {
            return Err(IndexError::NotFinite {
                position: i % self.dim,
            });
        }
        if self.is_empty() {
            return Err(IndexError::Empty);
        }
        let k = self.k.get();
        let rows = match self.tree() {
            Some(tree) => queries
                .par_chunks(self.dim)
                .map(|q| tree.nearest(q, k))
                .collect(),
            None => scan::nearest_batch(&self.data, self.dim, queries, k),
        };
        Ok(rows.into_iter().map(|r| self.vote(r)).collect())
    }

    /// Classifies the image at `path` through `tap` (one block of this index's dimension).
    ///
    /// # Errors
    /// [`IndexError::Tap`] or [`IndexError::TapMismatch`], and as [`classify`](Self::classify).
    pub fn classify_image(
        &self,
        tap: &BlockTap,
        path: impl AsRef<Path>,
    ) -> Result<Prediction, IndexError> {
        self.check_tap(tap)?;
        let f = tap.extract_paths(&[path.as_ref()])?;
        self.classify(&f[0].blocks[0])
    }

    fn vote(&self, rows: Vec<(f32, usize)>) -> Prediction {
        // (votes, nearest distance, label); rows are nearest first, so the first time a label
        // is seen is its nearest distance.
        let mut tally: Vec<(usize, f32, u32)> = Vec::new();
        for &(d, row) in &rows {
            let label = self.labels[row];
            match tally.iter_mut().find(|t| t.2 == label) {
                Some(t) => t.0 += 1,
                None => tally.push((1, d, label)),
            }
        }
        let name = |l: u32| self.attributes[l as usize].clone();
        match self.tie_break {
            TieBreak::Nearest => tally.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.total_cmp(&b.1))),
            TieBreak::FirstName => tally.sort_by(|a, b| {
                b.0.cmp(&a.0)
                    .then_with(|| self.attributes[a.2 as usize].cmp(&self.attributes[b.2 as usize]))
            }),
        }
        Prediction {
            attribute: name(tally[0].2),
            votes: tally.iter().map(|t| (name(t.2), t.0)).collect(),
            neighbours: self.neighbours(rows),
        }
    }

    /// Saves the index to `path` atomically (a temporary file in the same folder, then a
    /// rename), in a versioned format with a sha256 checksum.
    ///
    /// # Errors
    /// [`IndexError::Io`] naming the file.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<(), IndexError> {
        persist::save(self, path.as_ref())
    }

    /// Loads an index saved by [`save`](Self::save).
    ///
    /// # Errors
    /// [`IndexError::Io`], [`IndexError::NotAnIndex`], [`IndexError::Version`],
    /// [`IndexError::Truncated`] or [`IndexError::Corrupt`], each naming the file.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, IndexError> {
        persist::load(path.as_ref())
    }
}
