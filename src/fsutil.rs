//! Small file-system helpers.

use std::io::Write;
use std::path::Path;

use crate::error::FileError;

/// Writes `bytes` to `path` atomically: into a temporary file in the same folder, flushed to
/// disk, then renamed over `path`. A crash leaves either the old file or the new one, never a
/// half-written one; the temporary file is removed on error.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(".attrex-")
        .suffix(".tmp")
        .tempfile_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

/// The versioned, checksummed file layout shared by the index, the catalogue and the feature
/// cache (little-endian):
///
/// ```text
/// magic 8 bytes | version u32 | header_len u32 | header (JSON) | payload | sha256 of all before
/// ```
///
/// `payload_len` computes the payload's length from the header, so that truncation is told
/// apart from corruption.
pub(crate) fn write_container(
    path: &Path,
    magic: &[u8; 8],
    version: u32,
    header: &[u8],
    payload: &[u8],
) -> Result<(), FileError> {
    use sha2::{Digest, Sha256};
    let mut buf = Vec::with_capacity(16 + header.len() + payload.len() + 32);
    buf.extend_from_slice(magic);
    buf.extend_from_slice(&version.to_le_bytes());
    buf.extend_from_slice(&(header.len() as u32).to_le_bytes());
    buf.extend_from_slice(header);
    buf.extend_from_slice(payload);
    let digest = Sha256::digest(&buf);
    buf.extend_from_slice(&digest);
    write_atomic(path, &buf).map_err(|source| FileError::Io {
        path: path.to_owned(),
        source,
    })
}

/// Reads a file written by [`write_container`]: checks magic, version, length and checksum, and
/// returns the parsed header and the payload. `kind` names what the magic stands for in the
/// error ("index", "catalogue").
pub(crate) fn read_container<H: serde::de::DeserializeOwned>(
    path: &Path,
    (magic, kind): (&[u8; 8], &'static str),
    version: u32,
    payload_len: impl Fn(&H) -> Option<usize>,
) -> Result<(H, Vec<u8>), FileError> {
    use sha2::{Digest, Sha256};
    let p = || path.to_owned();
    let corrupt = |reason: String| FileError::Corrupt { path: p(), reason };
    let bytes = std::fs::read(path).map_err(|source| FileError::Io { path: p(), source })?;
    if bytes.len() < 16 || &bytes[..8] != magic {
        return Err(FileError::NotOurs {
            path: p(),
            expected: kind,
        });
    }
    let found = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes"));
    if found != version {
        return Err(FileError::Version {
            path: p(),
            found,
            supported: version,
        });
    }
    let header_len = u32::from_le_bytes(bytes[12..16].try_into().expect("4 bytes")) as usize;
    let truncated = |expected: usize| FileError::Truncated {
        path: p(),
        len: bytes.len() as u64,
        expected: expected as u64,
    };
    let header_end = 16 + header_len;
    if bytes.len() < header_end + 32 {
        return Err(truncated(header_end + 32));
    }
    let header: H = serde_json::from_slice(&bytes[16..header_end])
        .map_err(|e| corrupt(format!("header is not valid: {e}")))?;
    let expected = payload_len(&header)
        .and_then(|p| p.checked_add(header_end + 32))
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
    Ok((header, bytes[header_end..expected - 32].to_vec()))
}

/// Little-endian f32 values to bytes.
pub(crate) fn f32_bytes(values: &[f32], out: &mut Vec<u8>) {
    for v in values {
        out.extend_from_slice(&v.to_le_bytes());
    }
}

/// Bytes to little-endian f32 values.
pub(crate) fn bytes_f32(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
        .collect()
}
