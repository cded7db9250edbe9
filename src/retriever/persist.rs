//! The catalogue file of a [`MemoryStore`] catalogue: the shared container
//! (`fsutil::write_container`), version 2, with
//!
//! ```text
//! header   JSON {"config", "weights_id", "preprocessing", "dims", "next_id",
//!                "items": [{"id", "path", "sha256"}], "attributes": [colour, texture]}
//! payload  colour vectors (n x dims[0] x f32) | texture vectors (n x dims[1] x f32), raw
//! ```
//!
//! Version 1 held only the paths; its files are refused ([`FileError::Version`]) and must be
//! rebuilt by ingesting again.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::{ItemId, ItemRecord, MemoryStore, Origin, Retriever};
use crate::backbone::Backbone;
use crate::error::{FileError, RetrieverError};
use crate::fsutil::{bytes_f32, f32_bytes, read_container, write_container};

const MAGIC: &[u8; 8] = b"ATTREXCT";
/// Version of the catalogue file format. 3: the colour and texture taps are recipes, stored by
/// name (`paper-block2`, `colour-v1`, ...); older files are refused with a typed version error.
pub const CATALOGUE_VERSION: u32 = 3;

#[derive(Serialize, Deserialize)]
struct StoredItem {
    id: u64,
    path: PathBuf,
    /// Lower-case hex.
    sha256: Option<String>,
}

#[derive(Serialize, Deserialize)]
struct Header {
    #[serde(flatten)]
    origin: Origin,
    next_id: u64,
    items: Vec<StoredItem>,
    attributes: [Option<Vec<Option<String>>>; 2],
}

fn hex(bytes: &[u8; 32]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 || !s.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (o, pair) in out.iter_mut().zip(s.as_bytes().chunks_exact(2)) {
        *o = u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok()?;
    }
    Some(out)
}

impl Retriever<MemoryStore> {
    /// Saves the catalogue atomically in a versioned, checksummed file: items, raw vectors and
    /// stored attributes (transformed vectors and scales are recomputed on load).
    ///
    /// # Errors
    /// [`RetrieverError::File`] naming the file ([`FileError::Io`], also for a path that is
    /// not UTF-8, which the file's JSON header cannot hold).
    pub fn save(&self, path: impl AsRef<Path>) -> Result<(), RetrieverError> {
        let path = path.as_ref();
        let store = &self.store;
        let [colour, texture] = [&store.taps[0].raw, &store.taps[1].raw];
        let header = Header {
            origin: self.origin.clone(),
            next_id: store.next_id,
            items: store
                .items
                .iter()
                .map(|r| StoredItem {
                    id: r.id.0,
                    path: r.path.clone(),
                    sha256: r.sha256.as_ref().map(hex),
                })
                .collect(),
            attributes: [
                store.taps[0].attributes.clone(),
                store.taps[1].attributes.clone(),
            ],
        };
        let header = serde_json::to_vec(&header).map_err(|e| FileError::Io {
            path: path.to_owned(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
        })?;
        let mut payload = Vec::with_capacity(4 * (colour.len() + texture.len()));
        f32_bytes(colour, &mut payload);
        f32_bytes(texture, &mut payload);
        Ok(write_container(
            path,
            MAGIC,
            CATALOGUE_VERSION,
            &header,
            &payload,
        )?)
    }

    /// Loads a catalogue saved by [`save`](Self::save) onto `backbone`, which must hold the
    /// same weights and preprocessing.
    ///
    /// # Errors
    /// [`RetrieverError::File`] for an unreadable, foreign, damaged, truncated or other-version
    /// file; [`RetrieverError::TapMismatch`] when the backbone's weights, preprocessing or
    /// dimensions are not those the catalogue was made with.
    pub fn load(path: impl AsRef<Path>, backbone: Arc<Backbone>) -> Result<Self, RetrieverError> {
        let path = path.as_ref();
        let corrupt = |reason: &str| FileError::Corrupt {
            path: path.to_owned(),
            reason: reason.to_owned(),
        };
        let (header, payload) =
            read_container::<Header>(path, (MAGIC, "catalogue"), CATALOGUE_VERSION, |h| {
                h.items.len().checked_mul(
                    h.origin.dims[0]
                        .checked_add(h.origin.dims[1])?
                        .checked_mul(4)?,
                )
            })?;
        let mut fresh = Self::new(backbone, header.origin.config)?;
        if fresh.origin != header.origin {
            return Err(RetrieverError::TapMismatch {
                catalogue: header.origin.describe(),
                backbone: fresh.origin.describe(),
            });
        }
        let n = header.items.len();
        let ids: Vec<u64> = header.items.iter().map(|i| i.id).collect();
        if ids.windows(2).any(|w| w[0] >= w[1]) || ids.last().is_some_and(|&l| l >= header.next_id)
        {
            return Err(corrupt("item ids are not increasing").into());
        }
        if header.attributes.iter().flatten().any(|a| a.len() != n) {
            return Err(corrupt("not one attribute per item").into());
        }
        let items = header
            .items
            .into_iter()
            .map(|i| {
                let sha256 = match i.sha256 {
                    None => None,
                    Some(h) => {
                        Some(unhex(&h).ok_or_else(|| corrupt("a sha256 is not 64 hex digits"))?)
                    }
                };
                Ok(ItemRecord {
                    id: ItemId(i.id),
                    path: i.path,
                    sha256,
                })
            })
            .collect::<Result<Vec<_>, FileError>>()?;
        let values = bytes_f32(&payload);
        if values.iter().any(|v| !v.is_finite()) {
            return Err(corrupt("a vector value is not finite").into());
        }
        let split = n * header.origin.dims[0];
        let (colour, texture) = values.split_at(split);
        let store = &mut fresh.store;
        store.items = items;
        store.next_id = header.next_id;
        let raw = [colour.to_vec(), texture.to_vec()];
        for ((tap, raw), attributes) in store.taps.iter_mut().zip(raw).zip(header.attributes) {
            tap.raw = raw;
            tap.attributes = attributes;
        }
        store.refresh();
        Ok(fresh)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trips_and_refuses_junk() {
        let b: [u8; 32] = std::array::from_fn(|i| (i * 37) as u8);
        assert_eq!(unhex(&hex(&b)), Some(b));
        assert_eq!(unhex("zz"), None);
        assert_eq!(unhex(&"g".repeat(64)), None);
    }
}
