//! The index file: the shared container (`fsutil::write_container`), version 1, with
//!
//! ```text
//! header   JSON {"dim", "k", "next_id", "count", "attributes": [..], "recipe"?}   (labels as serde writes them)
//! payload  ids (count x u64) | labels (count x u32, index into attributes) | vectors (count x dim x f32)
//! ```
//!
//! Written to a temporary file in the target folder and renamed over the target, so a crash
//! never leaves a half-written index behind.

use std::num::NonZeroUsize;
use std::path::Path;
use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

use super::{AttributeIndex, ExampleId, Label, Search, TieBreak};
use crate::error::{FileError, IndexError};
use crate::fsutil::{bytes_f32, f32_bytes, read_container, write_container};

const MAGIC: &[u8; 8] = b"ATTREXIX";
/// The format version this build writes and reads.
pub const VERSION: u32 = 1;

#[derive(Serialize, Deserialize)]
struct Header<A> {
    dim: usize,
    k: usize,
    next_id: u64,
    count: usize,
    attributes: A,
    /// The recipe that made the vectors; absent in files written before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    recipe: Option<String>,
}

pub(super) fn save<L: Label + Serialize>(
    index: &AttributeIndex<L>,
    path: &Path,
) -> Result<(), IndexError> {
    let header = serde_json::to_vec(&Header {
        dim: index.dim(),
        k: index.k.get(),
        next_id: index.next_id,
        count: index.ids.len(),
        attributes: index.attributes.as_slice(),
        recipe: index.recipe.clone(),
    })
    .map_err(|e| FileError::Corrupt {
        path: path.to_owned(),
        reason: format!("a label does not serialise: {e}"),
    })?;
    let mut payload = Vec::with_capacity(index.ids.len() * 12 + index.data.len() * 4);
    for id in &index.ids {
        payload.extend_from_slice(&id.0.to_le_bytes());
    }
    for l in &index.labels {
        payload.extend_from_slice(&l.to_le_bytes());
    }
    f32_bytes(&index.data, &mut payload);
    Ok(write_container(path, MAGIC, VERSION, &header, &payload)?)
}

pub(super) fn load<L: Label + serde::de::DeserializeOwned>(
    path: &Path,
) -> Result<AttributeIndex<L>, IndexError> {
    let (header, payload) =
        read_container::<Header<Vec<L>>>(path, (MAGIC, "index"), VERSION, |h| {
            h.count.checked_mul(h.dim.checked_mul(4)?.checked_add(12)?)
        })?;
    let corrupt = |reason: &str| FileError::Corrupt {
        path: path.to_owned(),
        reason: reason.to_owned(),
    };
    let dim = NonZeroUsize::new(header.dim).ok_or_else(|| corrupt("dim is 0"))?;
    let k = NonZeroUsize::new(header.k).ok_or_else(|| corrupt("k is 0"))?;
    let n = header.count;
    let (ids, rest) = payload.split_at(8 * n);
    let (labels, vectors) = rest.split_at(4 * n);
    let ids: Vec<ExampleId> = ids
        .chunks_exact(8)
        .map(|c| ExampleId(u64::from_le_bytes(c.try_into().expect("8 bytes"))))
        .collect();
    let labels: Vec<u32> = labels
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes(c.try_into().expect("4 bytes")))
        .collect();
    let data = bytes_f32(vectors);
    if labels
        .iter()
        .any(|&l| l as usize >= header.attributes.len())
    {
        return Err(corrupt("a label points past the attribute list").into());
    }
    if ids.windows(2).any(|w| w[0] >= w[1]) || ids.last().is_some_and(|l| l.0 >= header.next_id) {
        return Err(corrupt("example ids are not increasing").into());
    }
    if data.iter().any(|v| !v.is_finite()) {
        return Err(corrupt("a vector value is not finite").into());
    }
    if data
        .iter()
        .any(|v| v.abs() > crate::knn::max_magnitude(dim.get()))
    {
        return Err(corrupt("a vector value is too large to search").into());
    }
    Ok(AttributeIndex {
        dim,
        k,
        search: Search::Auto,
        tie_break: TieBreak::Nearest,
        abstain: super::Abstain::NEVER,
        recipe: header.recipe,
        attributes: header.attributes,
        ids,
        labels,
        data,
        next_id: header.next_id,
        tree: OnceLock::new(),
    })
}
