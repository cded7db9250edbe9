//! The catalogue's value types: items, their identity, the two facets and the filters.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

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

/// One ranked item, as a store returns it.
#[derive(Debug, Clone, PartialEq)]
pub struct Scored {
    /// What the catalogue keeps of it.
    pub record: ItemRecord,
    /// Its score under the ranking (lower is closer).
    pub score: f32,
    /// Its Euclidean distances to the query `[colour, texture]`, between transformed vectors.
    pub distances: [f32; 2],
}

/// One of the two taps of a catalogue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Facet {
    /// The colour tap (block 2 by default).
    Colour,
    /// The texture tap (block 4 by default).
    Texture,
}

impl Facet {
    /// Both, colour first.
    pub const BOTH: [Facet; 2] = [Facet::Colour, Facet::Texture];

    /// `"colour"` or `"texture"`.
    pub fn name(self) -> &'static str {
        match self {
            Facet::Colour => "colour",
            Facet::Texture => "texture",
        }
    }

    /// 0 for colour, 1 for texture: the position in `[colour, texture]` pairs.
    pub fn index(self) -> usize {
        match self {
            Facet::Colour => 0,
            Facet::Texture => 1,
        }
    }
}

/// Which items a query may return. Several filters keep the items that pass all of them.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Filter<'a> {
    /// One flag per catalogue item: only the flagged ones.
    Mask(&'a [bool]),
    /// Only the items whose stored attribute of `facet` (see
    /// [`Retriever::tag`](crate::Retriever::tag)) is one of `any_of`. An item added after the
    /// last tagging has no attribute and does not pass.
    Attribute {
        /// The tap whose predicted attribute is compared.
        facet: Facet,
        /// The attributes kept.
        any_of: Vec<String>,
    },
}

impl Filter<'_> {
    /// [`Filter::Attribute`]: items whose attribute of `facet` is one of `any_of`.
    pub fn attribute(facet: Facet, any_of: impl IntoIterator<Item = impl Into<String>>) -> Self {
        Filter::Attribute {
            facet,
            any_of: any_of.into_iter().map(Into::into).collect(),
        }
    }
}

impl<'a> From<&'a [bool]> for Filter<'a> {
    fn from(mask: &'a [bool]) -> Self {
        Filter::Mask(mask)
    }
}

impl<'a> From<&'a Vec<bool>> for Filter<'a> {
    fn from(mask: &'a Vec<bool>) -> Self {
        Filter::Mask(mask)
    }
}

impl<'a, const N: usize> From<&'a [bool; N]> for Filter<'a> {
    fn from(mask: &'a [bool; N]) -> Self {
        Filter::Mask(mask)
    }
}
