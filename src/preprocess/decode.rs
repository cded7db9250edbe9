//! Reading and decoding image files under limits that bound time and memory whatever the file.
//!
//! - Only regular files are read (a FIFO named `x.jpg` would block forever, `/dev/zero` never
//!   ends), and at most [`DecodeLimits::max_file_bytes`] of them.
//! - The decoder refuses sides over [`DecodeLimits::max_side`] and allocations over
//!   [`DecodeLimits::max_alloc`] before it allocates.
//! - Decoded pixels in flight are bounded for the whole process by the decode budget
//!   ([`set_decode_budget`], 1 GiB by default): each decode reserves twice its decoded size
//!   (the pixels and the decoder's own buffers) before it starts and waits while the budget is
//!   spent, so the peak does not grow with the number of threads decoding at once. A file read
//!   for decoding counts in the budget too, and a thread that must wait holds no file meanwhile.
//! - A JPEG whose data ends before its end-of-image marker is an error, not a picture with a
//!   grey lower part, unless [`DecodeLimits::allow_truncated`] says otherwise.

use std::io::Cursor;
use std::path::Path;
use std::sync::{Condvar, Mutex};

use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader, Limits};

use crate::error::ImageError;
use crate::fsutil::{ReadError, read_regular};

/// Limits on what decoding one image may read and allocate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeLimits {
    /// Largest width or height accepted.
    pub max_side: u32,
    /// Largest decoder allocation in bytes.
    pub max_alloc: u64,
    /// Largest file read, in bytes.
    pub max_file_bytes: u64,
    /// Accept a JPEG whose data stops before its end (the decoder fills the missing part).
    /// Off by default: a broken photo must not get tagged.
    pub allow_truncated: bool,
}

impl Default for DecodeLimits {
    /// 16384 pixels a side, 512 MiB of decoder allocations, 256 MiB files, truncated JPEGs
    /// refused.
    fn default() -> Self {
        Self {
            max_side: 16_384,
            max_alloc: 512 * 1024 * 1024,
            max_file_bytes: 256 * 1024 * 1024,
            allow_truncated: false,
        }
    }
}

/// The process-wide budget of decoded bytes in flight.
struct Budget {
    /// `(limit, in use)`.
    state: Mutex<(u64, u64)>,
    freed: Condvar,
}

static BUDGET: Budget = Budget {
    state: Mutex::new((DEFAULT_DECODE_BUDGET, 0)),
    freed: Condvar::new(),
};

/// The default decode budget: 1 GiB.
pub const DEFAULT_DECODE_BUDGET: u64 = 1024 * 1024 * 1024;

/// Sets the process-wide decode budget in bytes (default [`DEFAULT_DECODE_BUDGET`]): the
/// most memory that decoding images may hold at once, over all threads. Each decode reserves
/// twice the decoded size of its image; one that could never fit is an
/// [`ImageError::OverBudget`], the others wait their turn.
pub fn set_decode_budget(bytes: u64) {
    let mut s = BUDGET.state.lock().unwrap_or_else(|e| e.into_inner());
    s.0 = bytes;
    BUDGET.freed.notify_all();
}

/// The process-wide decode budget in bytes.
pub fn decode_budget() -> u64 {
    BUDGET.state.lock().unwrap_or_else(|e| e.into_inner()).0
}

/// A reservation from the decode budget, returned when dropped.
struct Reserved(u64);

impl Reserved {
    /// Waits until `bytes` fit, or `None` when they never can.
    fn take(bytes: u64) -> Option<Self> {
        let mut s = BUDGET.state.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if bytes > s.0 {
                return None;
            }
            if s.1 + bytes <= s.0 {
                s.1 += bytes;
                return Some(Self(bytes));
            }
            s = BUDGET.freed.wait(s).unwrap_or_else(|e| e.into_inner());
        }
    }
}

impl Reserved {
    /// `bytes` if they fit now, without waiting.
    fn try_take(bytes: u64) -> Option<Self> {
        let mut s = BUDGET.state.lock().unwrap_or_else(|e| e.into_inner());
        (s.1.saturating_add(bytes) <= s.0).then(|| {
            s.1 += bytes;
            Self(bytes)
        })
    }
}

impl Drop for Reserved {
    fn drop(&mut self) {
        let mut s = BUDGET.state.lock().unwrap_or_else(|e| e.into_inner());
        s.1 = s.1.saturating_sub(self.0);
        BUDGET.freed.notify_all();
    }
}

/// Reads the file at `path`: a regular file of at most `limits.max_file_bytes`.
pub(crate) fn read_file(path: &Path, limits: &DecodeLimits) -> Result<Vec<u8>, ImageError> {
    read_regular(path, limits.max_file_bytes).map_err(|e| match e {
        ReadError::Io(source) => ImageError::Io {
            path: path.to_owned(),
            source,
        },
        ReadError::NotAFile => ImageError::NotAFile {
            path: path.to_owned(),
        },
        ReadError::TooLarge { len, max } => ImageError::FileTooLarge {
            path: path.to_owned(),
            len,
            max,
        },
    })
}

/// How a decode gets its reservation.
enum Hold {
    /// Waits for it.
    Wait,
    /// Takes it only if it fits now; otherwise gives `then` back with the bytes needed.
    Try,
    /// This many bytes are already held for it.
    Prepaid(u64),
}

/// Decodes `bytes` under `limits` and the decode budget, and hands the image to `then` while
/// its reservation is held; `path` names the image in errors.
pub(crate) fn decode_with<T, F: FnOnce(DynamicImage) -> T>(
    bytes: &[u8],
    path: &Path,
    limits: &DecodeLimits,
    then: F,
) -> Result<T, ImageError> {
    match decode_holding(bytes, path, limits, Hold::Wait, then)? {
        Ok(out) => Ok(out),
        Err(_) => unreachable!("a waiting decode always gets its reservation"),
    }
}

/// Reads the file at `path` and decodes it, with the file's bytes counted in the decode budget
/// too: a thread waiting for its turn to decode holds neither the file nor a reservation, so
/// the peak does not grow with the number of threads (issue #12: eight threads each holding a
/// 106 MiB PNG while they waited added 634 MiB over the budget). A thread never waits while it
/// holds a reservation, so reservations cannot deadlock.
pub(crate) fn read_and_decode<T, F: FnOnce(DynamicImage) -> T>(
    path: &Path,
    limits: &DecodeLimits,
    then: F,
) -> Result<T, ImageError> {
    let over = |needed| ImageError::OverBudget {
        path: path.to_owned(),
        needed,
        budget: decode_budget(),
    };
    let guess = std::fs::metadata(path)
        .map_or(0, |m| m.len())
        .min(limits.max_file_bytes);
    let file = Reserved::take(guess).ok_or_else(|| over(guess))?;
    let bytes = read_file(path, limits)?;
    let then = match decode_holding(&bytes, path, limits, Hold::Try, then)? {
        Ok(out) => return Ok(out),
        Err((needed, then)) => (needed, then),
    };
    // The decode did not fit beside what others hold: let go of everything, wait for the file
    // and the decode together, and read the file again.
    let (needed, then) = then;
    let len = bytes.len() as u64;
    drop(bytes);
    drop(file);
    let all = len.saturating_add(needed);
    let _held = Reserved::take(all).ok_or_else(|| over(all))?;
    let bytes = read_file(path, limits)?;
    match decode_holding(&bytes, path, limits, Hold::Prepaid(needed), then)? {
        Ok(out) => Ok(out),
        Err((needed, _)) => Err(over(needed)),
    }
}

fn decode_holding<T, F: FnOnce(DynamicImage) -> T>(
    bytes: &[u8],
    path: &Path,
    limits: &DecodeLimits,
    hold: Hold,
    then: F,
) -> Result<Result<T, (u64, F)>, ImageError> {
    let io = |source| ImageError::Io {
        path: path.to_owned(),
        source,
    };
    if bytes.is_empty() {
        return Err(ImageError::Empty {
            path: path.to_owned(),
        });
    }
    let mut reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(io)?;
    let format = reader.format();
    let mut l = Limits::default();
    l.max_image_width = Some(limits.max_side);
    l.max_image_height = Some(limits.max_side);
    l.max_alloc = Some(limits.max_alloc);
    reader.limits(l);
    let decoder = reader
        .into_decoder()
        .map_err(|source| classify(path, source))?;
    let (width, height) = decoder.dimensions();
    if width == 0 || height == 0 {
        return Err(ImageError::NoPixels {
            path: path.to_owned(),
            width,
            height,
        });
    }
    if format == Some(ImageFormat::Jpeg) && !limits.allow_truncated && !jpeg_complete(bytes) {
        return Err(ImageError::Truncated {
            path: path.to_owned(),
        });
    }
    let needed = decoder.total_bytes().saturating_mul(2);
    if needed > decode_budget() {
        return Err(ImageError::OverBudget {
            path: path.to_owned(),
            needed,
            budget: decode_budget(),
        });
    }
    let reserved = match hold {
        Hold::Wait => Some(
            Reserved::take(needed).ok_or_else(|| ImageError::OverBudget {
                path: path.to_owned(),
                needed,
                budget: decode_budget(),
            })?,
        ),
        Hold::Try => match Reserved::try_take(needed) {
            Some(r) => Some(r),
            None => return Ok(Err((needed, then))),
        },
        Hold::Prepaid(paid) if paid >= needed => None,
        Hold::Prepaid(_) => return Ok(Err((needed, then))),
    };
    let image = DynamicImage::from_decoder(decoder).map_err(|source| classify(path, source))?;
    let out = then(image);
    drop(reserved);
    Ok(Ok(out))
}

fn classify(path: &Path, source: image::ImageError) -> ImageError {
    use std::io::ErrorKind;
    let path = path.to_owned();
    match source {
        image::ImageError::Unsupported(_) => ImageError::Unsupported { path, source },
        image::ImageError::Limits(_) => ImageError::Limits { path, source },
        image::ImageError::IoError(ref e) if e.kind() != ErrorKind::UnexpectedEof => {
            ImageError::Io {
                path,
                source: std::io::Error::new(e.kind(), e.to_string()),
            }
        }
        _ => ImageError::Decode { path, source },
    }
}

/// Whether a JPEG stream reaches its end-of-image marker: walks the marker segments (skipping
/// each by its length, so a thumbnail's markers inside APP1 do not count) and the
/// entropy-coded data after each start-of-scan (where `FF` is stuffed as `FF 00` and `FF D0`..
/// `FF D7` are restarts), until `FF D9`.
pub(crate) fn jpeg_complete(b: &[u8]) -> bool {
    if b.len() < 4 || b[0] != 0xFF || b[1] != 0xD8 {
        return false;
    }
    let mut i = 2;
    loop {
        // A marker: one or more 0xFF, then its code.
        if i >= b.len() || b[i] != 0xFF {
            return false;
        }
        while i < b.len() && b[i] == 0xFF {
            i += 1;
        }
        let Some(&code) = b.get(i) else {
            return false;
        };
        i += 1;
        match code {
            0xD9 => return true,
            // Markers without a length.
            0x01 | 0xD0..=0xD7 => continue,
            _ => {}
        }
        let (Some(&hi), Some(&lo)) = (b.get(i), b.get(i + 1)) else {
            return false;
        };
        let len = usize::from(u16::from_be_bytes([hi, lo]));
        if len < 2 {
            return false;
        }
        i += len;
        if i > b.len() {
            return false;
        }
        if code == 0xDA {
            // Entropy-coded data runs to the next marker that is not stuffing or a restart.
            loop {
                match b.get(i..i + 2) {
                    None => return false,
                    Some([0xFF, next]) if *next == 0x00 || (0xD0..=0xD7).contains(next) => i += 2,
                    Some([0xFF, 0xFF]) => i += 1,
                    Some([0xFF, _]) => break,
                    Some(_) => i += 1,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jpeg(w: u32, h: u32) -> Vec<u8> {
        let img = image::RgbImage::from_fn(w, h, |x, y| image::Rgb([x as u8, y as u8, 7]));
        let mut out = Cursor::new(Vec::new());
        DynamicImage::ImageRgb8(img)
            .write_to(&mut out, ImageFormat::Jpeg)
            .unwrap();
        out.into_inner()
    }

    #[test]
    fn a_whole_jpeg_is_complete_and_every_cut_is_not() {
        let b = jpeg(64, 48);
        assert!(jpeg_complete(&b));
        for cut in 1..b.len() {
            assert!(!jpeg_complete(&b[..cut]), "cut at {cut} of {}", b.len());
        }
        let mut trailing = b.clone();
        trailing.extend_from_slice(b"trailing bytes after EOI are allowed");
        assert!(jpeg_complete(&trailing));
    }

    #[test]
    fn a_thumbnail_end_marker_inside_app1_does_not_count() {
        let main = jpeg(32, 32);
        let thumb = jpeg(8, 8);
        // FF D8, then an APP1 segment holding the thumbnail, then the rest of the main image.
        let mut b = vec![0xFF, 0xD8, 0xFF, 0xE1];
        b.extend_from_slice(&((thumb.len() + 2) as u16).to_be_bytes());
        b.extend_from_slice(&thumb);
        b.extend_from_slice(&main[2..]);
        assert!(jpeg_complete(&b));
        let cut = b.len() - main.len() / 2;
        assert!(!jpeg_complete(&b[..cut]));
    }

    #[test]
    fn the_budget_refuses_what_can_never_fit() {
        assert!(Reserved::take(decode_budget() + 1).is_none());
        assert!(Reserved::take(1).is_some());
    }

    #[test]
    fn concurrent_decodes_wait_rather_than_exceed_the_budget() {
        use std::sync::mpsc;
        use std::time::Duration;
        // Two reservations of just over half the budget cannot be held at once: the second
        // waits until the first is returned (other tests' decodes only make it wait longer).
        let half = decode_budget() / 2 + 1;
        let first = Reserved::take(half).expect("fits an idle budget");
        let (tx, rx) = mpsc::channel();
        let waiter = std::thread::spawn(move || {
            let r = Reserved::take(half);
            tx.send(r.is_some()).unwrap();
        });
        assert!(
            rx.recv_timeout(Duration::from_millis(300)).is_err(),
            "the second reservation did not wait"
        );
        drop(first);
        assert_eq!(rx.recv_timeout(Duration::from_secs(10)), Ok(true));
        waiter.join().unwrap();
    }

    #[test]
    fn a_file_waiting_to_be_decoded_counts_in_the_budget() {
        use std::sync::mpsc;
        use std::time::Duration;
        // Issue #12: threads waiting for their turn held their files' bytes outside the budget
        // (eight 106 MiB PNGs on eight threads: 1371 MiB, not 737). Leave room for this
        // image's decode (2 x 64 x 64 bytes) but not for its file beside it: before, the file
        // was read and the decode went ahead; now the reader waits for both together.
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("grey.png");
        image::GrayImage::new(64, 64).save(&p).unwrap();
        let decode = 2 * 64 * 64;
        let others = Reserved::take(decode_budget() - decode).expect("fits an idle budget");
        let (tx, rx) = mpsc::channel();
        let reader = std::thread::spawn(move || {
            let r = read_and_decode(&p, &DecodeLimits::default(), |i| i.width());
            tx.send(r.map_err(|e| e.to_string())).unwrap();
        });
        assert!(
            rx.recv_timeout(Duration::from_millis(300)).is_err(),
            "decoded without counting its file"
        );
        drop(others);
        assert_eq!(rx.recv_timeout(Duration::from_secs(10)), Ok(Ok(64)));
        reader.join().unwrap();
    }
}
