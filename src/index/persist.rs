//! The index file: the shared container (`fsutil::write_container`), version 1, with
//!
//! ```text
//! header   JSON {"dim", "k", "next_id", "count", "attributes": [..]}
//! payload  ids (count x u64) | labels (count x u32, index into attributes) | vectors (count x dim x f32)
//! ```
//!
//! Written to a temporary file in the target folder and renamed over the target, so a crash
//! never leaves a half-written index behind.

use std::num::NonZeroUsize;
use std::path::Path;
use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

use super::{AttributeIndex, ExampleId, Search, TieBreak};
use crate::error::IndexError;
use crate::fsutil::{ContainerError, bytes_f32, f32_bytes, read_container, write_container};

const MAGIC: &[u8; 8] = b"ATTREXIX";
/// The format version this build writes and reads.
pub const VERSION: u32 = 1;

#[derive(Serialize, Deserialize)]
struct Header {
    dim: usize,
    k: usize,
    next_id: u64,
    count: usize,
    attributes: Vec<String>,
}

pub(super) fn save(index: &AttributeIndex, path: &Path) -> Result<(), IndexError> {
    let header = serde_json::to_vec(&Header {
        dim: index.dim,
        k: index.k.get(),
        next_id: index.next_id,
        count: index.ids.len(),
        attributes: index.attributes.clone(),
    })
    .expect("the header serialises");
    let mut payload = Vec::with_capacity(index.ids.len() * 12 + index.data.len() * 4);
    for id in &index.ids {
        payload.extend_from_slice(&id.0.to_le_bytes());
    }
    for l in &index.labels {
        payload.extend_from_slice(&l.to_le_bytes());
    }
    f32_bytes(&index.data, &mut payload);
    write_container(path, MAGIC, VERSION, &header, &payload).map_err(|source| IndexError::Io {
        path: path.to_owned(),
        source,
    })
}

pub(super) fn load(path: &Path) -> Result<AttributeIndex, IndexError> {
    let p = || path.to_owned();
    let (header, payload) = read_container::<Header>(path, MAGIC, VERSION, |h| {
        h.count.checked_mul(h.dim.checked_mul(4)?.checked_add(12)?)
    })
    .map_err(|e| match e {
        ContainerError::Io(source) => IndexError::Io { path: p(), source },
        ContainerError::WrongKind => IndexError::NotAnIndex { path: p() },
        ContainerError::Version(found) => IndexError::Version {
            path: p(),
            found,
            supported: VERSION,
        },
        ContainerError::Truncated { len, expected } => IndexError::Truncated {
            path: p(),
            len,
            expected,
        },
        ContainerError::Corrupt(reason) => IndexError::Corrupt { path: p(), reason },
    })?;
    let corrupt = |reason: &str| IndexError::Corrupt {
        path: p(),
        reason: reason.to_owned(),
    };
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
        return Err(corrupt("a label points past the attribute list"));
    }
    if ids.windows(2).any(|w| w[0] >= w[1]) || ids.last().is_some_and(|l| l.0 >= header.next_id) {
        return Err(corrupt("example ids are not increasing"));
    }
    if data.iter().any(|v| !v.is_finite()) {
        return Err(corrupt("a vector value is not finite"));
    }
    Ok(AttributeIndex {
        dim: header.dim,
        k,
        search: Search::Auto,
        tie_break: TieBreak::Nearest,
        attributes: header.attributes,
        ids,
        labels,
        data,
        next_id: header.next_id,
        tree: OnceLock::new(),
    })
}
