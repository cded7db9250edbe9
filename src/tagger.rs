//! [`Tagger`]: an [`AttributeIndex`] fed and queried with images, through a [`BlockTap`].
//!
//! The index itself only knows vectors; the tagger owns the tap that turns images into them,
//! and checks once, when it is made, that the tap gives one vector of the index's dimension.

use std::path::Path;

use crate::error::{IndexError, TapError};
use crate::index::{AttributeIndex, ExampleId, Label, Prediction};
use crate::tap::BlockTap;

/// Errors of a [`Tagger`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TaggerError {
    /// A tap that does not give one vector of the index's dimension.
    #[error(
        "the index holds {dim}-d vectors but the tap gives {taps:?}; use a tap on one block of that dimension"
    )]
    TapMismatch {
        /// The index's dimension.
        dim: usize,
        /// The tap's blocks, as `name (dim-d)`.
        taps: Vec<String>,
    },
    /// The index holds vectors of another recipe than the tap makes.
    #[error("the index holds vectors of recipe {index}, but the tap makes {tap}")]
    RecipeMismatch {
        /// The index's recipe.
        index: String,
        /// The tap's recipe.
        tap: String,
    },
    /// Reading images through the tap failed.
    #[error(transparent)]
    Tap(#[from] TapError),
    /// The index refused the vectors.
    #[error(transparent)]
    Index(#[from] IndexError),
}

/// An [`AttributeIndex`] with the [`BlockTap`] that makes its vectors: add examples and
/// classify products by their images.
///
/// ```no_run
/// use std::sync::Arc;
/// use attrex::{AttributeIndex, Backbone, Block, BlockTap, Tagger};
///
/// let backbone = Arc::new(Backbone::load(None, &attrex::default_device()?)?);
/// let colour = BlockTap::new(backbone, &[Block::B2])?; // 256-d
/// let mut tagger = Tagger::new(colour, AttributeIndex::new(256)?)?;
/// tagger.add_images("red", &["ex/red1.jpg", "ex/red2.jpg"])?;
/// tagger.add_images("navy", &["ex/navy1.jpg", "ex/navy2.jpg"])?;
/// println!("{}", tagger.classify_image("new_product.jpg")?.attribute);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct Tagger<L = String> {
    tap: BlockTap,
    index: AttributeIndex<L>,
}

impl<L: Label> Tagger<L> {
    /// Pairs `tap` with `index`. An index that records no recipe
    /// ([`AttributeIndex::recipe`]) takes the tap's.
    ///
    /// # Errors
    /// [`TaggerError::TapMismatch`] unless the tap has exactly one output, of the index's
    /// dimension; [`TaggerError::RecipeMismatch`] when the index records another recipe.
    pub fn new(tap: BlockTap, index: AttributeIndex<L>) -> Result<Self, TaggerError> {
        let taps = tap.taps();
        match taps.as_slice() {
            [one] if one.dim == index.dim() => {
                let name = one.recipe.name();
                match index.recipe() {
                    Some(r) if r != name => Err(TaggerError::RecipeMismatch {
                        index: r.to_owned(),
                        tap: name,
                    }),
                    Some(_) => Ok(Self { tap, index }),
                    None => Ok(Self {
                        tap,
                        index: index.with_recipe(name),
                    }),
                }
            }
            _ => Err(TaggerError::TapMismatch {
                dim: index.dim(),
                taps: taps
                    .iter()
                    .map(|t| format!("{} ({}-d)", t.name, t.dim))
                    .collect(),
            }),
        }
    }

    /// The tap.
    pub fn tap(&self) -> &BlockTap {
        &self.tap
    }

    /// The index.
    pub fn index(&self) -> &AttributeIndex<L> {
        &self.index
    }

    /// The index, to add vectors or remove examples and attributes (its dimension cannot
    /// change, so the tap still fits).
    pub fn index_mut(&mut self) -> &mut AttributeIndex<L> {
        &mut self.index
    }

    /// The tap and the index, apart again.
    pub fn into_parts(self) -> (BlockTap, AttributeIndex<L>) {
        (self.tap, self.index)
    }

    /// Adds the images at `paths` as examples of `attribute`.
    ///
    /// # Errors
    /// [`TaggerError::Tap`] naming an image that cannot be read; nothing is added then.
    pub fn add_images<P: AsRef<Path> + Sync>(
        &mut self,
        attribute: impl Into<L>,
        paths: &[P],
    ) -> Result<Vec<ExampleId>, TaggerError> {
        let features = self.tap.extract_paths(paths)?;
        let attribute = attribute.into();
        features
            .iter()
            .map(|f| Ok(self.index.add(attribute.clone(), &f.blocks[0])?))
            .collect()
    }

    /// Classifies the image at `path`.
    ///
    /// # Errors
    /// [`TaggerError::Tap`] when it cannot be read; [`TaggerError::Index`] for an empty index.
    pub fn classify_image(&self, path: impl AsRef<Path>) -> Result<Prediction<L>, TaggerError> {
        let f = self.tap.extract_paths(&[path.as_ref()])?;
        Ok(self.index.classify(&f[0].blocks[0])?)
    }

    /// Classifies the images at `paths`, in order.
    ///
    /// # Errors
    /// As [`classify_image`](Self::classify_image), for the first image that fails.
    pub fn classify_images<P: AsRef<Path> + Sync>(
        &self,
        paths: &[P],
    ) -> Result<Vec<Prediction<L>>, TaggerError> {
        let features = self.tap.extract_paths(paths)?;
        features
            .iter()
            .map(|f| Ok(self.index.classify(&f.blocks[0])?))
            .collect()
    }
}
