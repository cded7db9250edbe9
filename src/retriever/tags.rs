//! Attributes of catalogue items: predicted by an [`AttributeIndex`], as masks or stored for
//! [`Filter::Attribute`](super::Filter::Attribute).

use super::catalogue::CatalogueStore;
use super::item::Facet;
use super::{Retriever, RetrieverError};
use crate::index::{AttributeIndex, Label, Prediction};
use crate::knn::Rows;

impl<S: CatalogueStore> Retriever<S> {
    /// The attribute `index` predicts for every item, from the raw vectors of `facet`.
    ///
    /// # Errors
    /// [`RetrieverError::RecipeMismatch`] when the index records a recipe other than the
    /// facet's; [`RetrieverError::Index`] when the index's dimension is not the tap's, or it is
    /// empty.
    pub fn predict<L: Label>(
        &self,
        index: &AttributeIndex<L>,
        facet: Facet,
    ) -> Result<Vec<Prediction<L>>, RetrieverError> {
        let recipe = match facet {
            Facet::Colour => self.origin.config.colour,
            Facet::Texture => self.origin.config.texture,
        };
        if let Some(name) = index.recipe()
            && name != recipe.name()
        {
            return Err(RetrieverError::RecipeMismatch {
                facet: facet.name(),
                index: name.to_owned(),
                catalogue: recipe.name(),
            });
        }
        let dim = self.origin.dims[facet.index()];
        if index.dim() != dim {
            return Err(crate::error::IndexError::Dimension {
                expected: index.dim(),
                got: dim,
            }
            .into());
        }
        let raw = self.store.raw(facet)?;
        let rows = Rows::new(&raw, dim).expect("whole rows of the tap's dimension");
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        Ok(index.classify_many(rows)?)
    }

    /// One flag per item: whether `index` predicts, from `facet`, one of `wanted`. A mask for
    /// [`Query::filter`](super::Query::filter).
    ///
    /// # Errors
    /// As [`predict`](Self::predict).
    pub fn filter_by(
        &self,
        index: &AttributeIndex,
        facet: Facet,
        wanted: &[&str],
    ) -> Result<Vec<bool>, RetrieverError> {
        Ok(self
            .predict(index, facet)?
            .iter()
            .map(|p| wanted.contains(&p.attribute.as_str()))
            .collect())
    }

    /// Predicts every item's attribute of `facet` with `index` and stores it, for
    /// [`Filter::Attribute`](super::Filter::Attribute). Items added later have no attribute until the next `tag`.
    ///
    /// # Errors
    /// As [`predict`](Self::predict); the store's errors.
    pub fn tag(&mut self, facet: Facet, index: &AttributeIndex) -> Result<(), RetrieverError> {
        let attributes = self
            .predict(index, facet)?
            .into_iter()
            .map(|p| p.attribute)
            .collect();
        self.store.set_attributes(facet, attributes)
    }
}
