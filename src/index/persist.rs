//! The index file format, version 1 (little-endian):
//!
//! ```text
//! magic      8 bytes  "ATTREXIX"
//! version    u32      1
//! header_len u32      length of the JSON header
//! header     JSON     {"dim", "k", "next_id", "count", "attributes": [..]}
//! ids        count x u64
//! labels     count x u32 (index into attributes)
//! vectors    count x dim x f32
//! sha256     32 bytes over everything above
//! ```
//!
//! Written to a temporary file in the target folder and renamed over the target, so a crash
//! never leaves a half-written index behind.

use std::num::NonZeroUsize;
use std::path::Path;
use std::sync::OnceLock;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{AttributeIndex, ExampleId, Search, TieBreak};
use crate::error::IndexError;

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
    let io = |source| IndexError::Io {
        path: path.to_owned(),
        source,
    };
    let header = serde_json::to_vec(&Header {
        dim: index.dim,
        k: index.k.get(),
        next_id: index.next_id,
        count: index.ids.len(),
        attributes: index.attributes.clone(),
    })
    .expect("the header serialises");
    let mut buf =
        Vec::with_capacity(48 + header.len() + index.ids.len() * 12 + index.data.len() * 4);
    buf.extend_from_slice(MAGIC);
    buf.extend_from_slice(&VERSION.to_le_bytes());
    buf.extend_from_slice(&(header.len() as u32).to_le_bytes());
    buf.extend_from_slice(&header);
    for id in &index.ids {
        buf.extend_from_slice(&id.0.to_le_bytes());
    }
    for l in &index.labels {
        buf.extend_from_slice(&l.to_le_bytes());
    }
    for v in &index.data {
        buf.extend_from_slice(&v.to_le_bytes());
    }
    let digest = Sha256::digest(&buf);
    buf.extend_from_slice(&digest);
    crate::fsutil::write_atomic(path, &buf).map_err(io)
}

pub(super) fn load(path: &Path) -> Result<AttributeIndex, IndexError> {
    let bytes = std::fs::read(path).map_err(|source| IndexError::Io {
        path: path.to_owned(),
        source,
    })?;
    let p = || path.to_owned();
    let corrupt = |reason: String| IndexError::Corrupt { path: p(), reason };
    if bytes.len() < 16 || &bytes[..8] != MAGIC {
        return Err(IndexError::NotAnIndex { path: p() });
    }
    let version = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes"));
    if version != VERSION {
        return Err(IndexError::Version {
            path: p(),
            found: version,
            supported: VERSION,
        });
    }
    let header_len = u32::from_le_bytes(bytes[12..16].try_into().expect("4 bytes")) as usize;
    let truncated = |expected: usize| IndexError::Truncated {
        path: p(),
        len: bytes.len() as u64,
        expected: expected as u64,
    };
    let header_end = 16usize
        .checked_add(header_len)
        .ok_or_else(|| corrupt("header length overflows".into()))?;
    if bytes.len() < header_end + 32 {
        return Err(truncated(header_end + 32));
    }
    let header: Header = serde_json::from_slice(&bytes[16..header_end])
        .map_err(|e| corrupt(format!("header is not valid JSON: {e}")))?;
    let expected = header
        .count
        .checked_mul(12 + 4 * header.dim)
        .and_then(|b| b.checked_add(header_end + 32))
        .ok_or_else(|| corrupt("header sizes overflow".into()))?;
    if bytes.len() < expected {
        return Err(truncated(expected));
    }
    if bytes.len() > expected {
        return Err(corrupt(format!(
            "{} trailing bytes",
            bytes.len() - expected
        )));
    }
    let body = &bytes[..expected - 32];
    if Sha256::digest(body).as_slice() != &bytes[expected - 32..] {
        return Err(corrupt("sha256 checksum mismatch".into()));
    }
    let k = NonZeroUsize::new(header.k).ok_or_else(|| corrupt("k is 0".into()))?;
    let n = header.count;
    let mut at = header_end;
    let mut take = |len: usize| {
        let s = &body[at..at + len];
        at += len;
        s
    };
    let ids: Vec<ExampleId> = take(8 * n)
        .chunks_exact(8)
        .map(|c| ExampleId(u64::from_le_bytes(c.try_into().expect("8 bytes"))))
        .collect();
    let labels: Vec<u32> = take(4 * n)
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes(c.try_into().expect("4 bytes")))
        .collect();
    let data: Vec<f32> = take(4 * n * header.dim)
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
        .collect();
    if labels
        .iter()
        .any(|&l| l as usize >= header.attributes.len())
    {
        return Err(corrupt("a label points past the attribute list".into()));
    }
    if ids.windows(2).any(|w| w[0] >= w[1]) || ids.last().is_some_and(|l| l.0 >= header.next_id) {
        return Err(corrupt("example ids are not increasing".into()));
    }
    if let Some(i) = data.iter().position(|v| !v.is_finite()) {
        return Err(corrupt(format!("vector value {i} is not finite")));
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
