//! Small file-system helpers.

use std::io::Write;
use std::path::Path;

use crate::error::FileError;

/// Writes `bytes` to `path` atomically: into a temporary file in the same folder, flushed to
/// disk, then renamed over `path`. A crash leaves either the old file or the new one, never a
/// half-written one; the temporary file is removed on error.
///
/// - Through a symbolic link, the link's target is replaced and the link stays.
/// - An existing file keeps its permissions; a new one gets `0o666` minus the umask, as any
///   file a program creates.
/// - Temporary files that a killed writer left behind (`.attrex-<pid>-*.tmp` of a process that
///   no longer runs, or older than a day) are removed from the folder afterwards.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let target = resolve_links(path)?;
    let dir = match target.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => std::path::PathBuf::from("."),
    };
    let existing = std::fs::metadata(&target).ok().map(|m| m.permissions());
    let mut builder = tempfile::Builder::new();
    let prefix = format!("{TEMP_PREFIX}{}-", std::process::id());
    builder.prefix(&prefix).suffix(TEMP_SUFFIX);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        // The kernel applies the umask to the mode given at creation.
        builder.permissions(std::fs::Permissions::from_mode(0o666));
    }
    let mut tmp = builder.tempfile_in(&dir)?;
    if let Some(perms) = existing {
        tmp.as_file().set_permissions(perms)?;
    }
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(&target).map_err(|e| e.error)?;
    remove_stale_temps(&dir);
    Ok(())
}

const TEMP_PREFIX: &str = ".attrex-";
const TEMP_SUFFIX: &str = ".tmp";

/// `path` with every symbolic link along its last component followed (at most 40, as the
/// kernel allows); a dangling link gives the path it points to.
fn resolve_links(path: &Path) -> std::io::Result<std::path::PathBuf> {
    let mut p = path.to_owned();
    for _ in 0..40 {
        match std::fs::symlink_metadata(&p) {
            Ok(m) if m.file_type().is_symlink() => {
                let to = std::fs::read_link(&p)?;
                p = match p.parent() {
                    Some(parent) if to.is_relative() => parent.join(to),
                    _ => to,
                };
            }
            _ => return Ok(p),
        }
    }
    Err(std::io::Error::other(format!(
        "{}: too many levels of symbolic links",
        path.display()
    )))
}

/// Removes attrex's temporary files in `dir` whose writer is gone: the process named in the
/// file name no longer runs (where `/proc` tells), or the file is older than a day. Errors are
/// ignored: this only frees space.
fn remove_stale_temps(dir: &Path) {
    const DAY: std::time::Duration = std::time::Duration::from_secs(24 * 3600);
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let proc_known = Path::new("/proc/self").exists();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(rest) = name
            .strip_prefix(TEMP_PREFIX)
            .and_then(|r| r.strip_suffix(TEMP_SUFFIX))
        else {
            continue;
        };
        let pid: Option<u32> = rest.split('-').next().and_then(|p| p.parse().ok());
        let Ok(meta) = entry.metadata() else { continue };
        if !meta.is_file() {
            continue;
        }
        let old = meta
            .modified()
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > DAY);
        let dead = match pid {
            Some(pid) if proc_known => {
                pid != std::process::id() && !Path::new("/proc").join(pid.to_string()).exists()
            }
            _ => false,
        };
        if dead || old {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// Why a file could not be read by [`read_regular`].
#[derive(Debug)]
pub(crate) enum ReadError {
    Io(std::io::Error),
    /// A folder, FIFO, device or socket.
    NotAFile,
    TooLarge {
        len: u64,
        max: u64,
    },
}

/// Reads the regular file at `path`, of at most `max` bytes. Anything else (a FIFO that would
/// block, `/dev/zero` that never ends, a folder) is refused before it is opened for reading.
pub(crate) fn read_regular(path: &Path, max: u64) -> Result<Vec<u8>, ReadError> {
    use std::io::Read;
    let meta = std::fs::metadata(path).map_err(ReadError::Io)?;
    if !meta.is_file() {
        return Err(ReadError::NotAFile);
    }
    if meta.len() > max {
        return Err(ReadError::TooLarge {
            len: meta.len(),
            max,
        });
    }
    let file = std::fs::File::open(path).map_err(ReadError::Io)?;
    // The path may have been swapped between the two looks.
    if !file.metadata().map_err(ReadError::Io)?.is_file() {
        return Err(ReadError::NotAFile);
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(max.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(ReadError::Io)?;
    if bytes.len() as u64 > max {
        return Err(ReadError::TooLarge {
            len: bytes.len() as u64,
            max,
        });
    }
    Ok(bytes)
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
    let bytes = read_regular(path, u64::MAX).map_err(|e| match e {
        ReadError::Io(source) => FileError::Io { path: p(), source },
        ReadError::NotAFile => FileError::NotAFile { path: p() },
        ReadError::TooLarge { .. } => unreachable!("no file is larger than u64::MAX bytes"),
    })?;
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

#[cfg(all(test, unix))]
mod tests {
    use std::os::unix::fs::{PermissionsExt, symlink};

    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    /// This process's umask, as Linux reports it in `/proc/self/status` (read, not set: setting
    /// it would race with the other tests that create files).
    fn umask() -> Option<u32> {
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let line = status.lines().find(|l| l.starts_with("Umask:"))?;
        u32::from_str_radix(line.split_whitespace().nth(1)?, 8).ok()
    }

    #[test]
    fn an_existing_file_keeps_its_mode() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("kept");
        for m in [0o644, 0o600, 0o640] {
            std::fs::write(&p, b"old").unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(m)).unwrap();
            write_atomic(&p, b"new").unwrap();
            assert_eq!(std::fs::read(&p).unwrap(), b"new");
            assert_eq!(mode(&p), m, "{m:o}");
        }
    }

    #[test]
    fn a_new_file_follows_the_umask() {
        let Some(mask) = umask() else {
            panic!("no Umask line in /proc/self/status: this test needs Linux 4.7 or later");
        };
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("new");
        write_atomic(&p, b"x").unwrap();
        // open(2) with 0o666: with the usual umask 022 that is 0o644, not tempfile's 0o600.
        assert_eq!(mode(&p), 0o666 & !mask, "umask {mask:o}");
    }

    #[test]
    fn a_symlink_stays_a_symlink_and_its_target_gets_the_content() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("target");
        std::fs::write(&target, b"old").unwrap();
        let link = dir.path().join("link");
        symlink("target", &link).unwrap(); // relative, as most links are
        let chain = dir.path().join("chain");
        symlink(&link, &chain).unwrap();
        write_atomic(&chain, b"through two links").unwrap();
        assert!(
            std::fs::symlink_metadata(&link)
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert!(
            std::fs::symlink_metadata(&chain)
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert_eq!(std::fs::read(&target).unwrap(), b"through two links");
        // A dangling link gets its target created.
        let dangling = dir.path().join("dangling");
        symlink("made", &dangling).unwrap();
        write_atomic(&dangling, b"made").unwrap();
        assert_eq!(std::fs::read(dir.path().join("made")).unwrap(), b"made");
        // A loop is an error, not a hang.
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        symlink("b", &a).unwrap();
        symlink("a", &b).unwrap();
        assert!(write_atomic(&a, b"x").is_err());
    }

    #[test]
    fn stale_temps_of_dead_writers_are_removed_and_live_ones_kept() {
        assert!(Path::new("/proc/self").exists(), "needs /proc");
        let dir = tempfile::tempdir().unwrap();
        // No process has pid 4294967294: Linux pids stop at 2^22.
        let dead = dir.path().join(".attrex-4294967294-abc.tmp");
        // pid 1 always runs; so does this test.
        let init = dir.path().join(".attrex-1-abc.tmp");
        let own = dir
            .path()
            .join(format!(".attrex-{}-abc.tmp", std::process::id()));
        let other = dir.path().join(".other-4294967294-abc.tmp");
        for p in [&dead, &init, &own, &other] {
            std::fs::write(p, b"partial").unwrap();
        }
        write_atomic(&dir.path().join("file"), b"x").unwrap();
        assert!(!dead.exists());
        assert!(init.exists() && own.exists() && other.exists());
        let mut left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        left.sort();
        assert_eq!(left.len(), 4, "{left:?}"); // no temp of this write is left either
    }
}
