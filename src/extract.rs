//! Feature extraction over a list of images, with progress reports and an on-disk cache.
//!
//! The cache holds one small file per image, addressed by the sha256 of the image's bytes and
//! filed under the weights' digest and the preprocessing:
//! `<cache>/<weights id>/<preprocessing>/<ab>/<sha256>.feat`. Renaming or moving an image keeps
//! its entry; editing it, or changing weights or preprocessing, misses. Each entry carries a
//! format version and a sha256 of its contents; an entry that fails either is recomputed and
//! rewritten, never trusted.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use image::DynamicImage;
use rayon::prelude::*;
use sha2::{Digest, Sha256};

use crate::arch::Block;
use crate::error::{FileError, ImageError, TapError};
use crate::knn::Rows;
use crate::preprocess::{DecodeLimits, decode_image};
use crate::recipe::Recipe;
use crate::tap::{BlockTap, Features, TapInfo};

/// What to do with an image that cannot be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnUnreadable {
    /// Stop with the error, which names the file (default).
    #[default]
    Fail,
    /// Leave it out, and list it in [`ExtractedFeatures::skipped`].
    Skip,
}

/// A progress report: called after each batch with the images done so far and the images in
/// all (`done == total` at the end).
///
/// ```
/// let progress = attrex::Progress::new(|done, total| eprintln!("{done}/{total}"));
/// let options = attrex::ExtractOptions { progress: Some(progress), ..Default::default() };
/// # let _ = options;
/// ```
#[derive(Clone)]
pub struct Progress(Arc<dyn Fn(usize, usize) + Send + Sync>);

impl Progress {
    /// A report that calls `f(done, total)`.
    pub fn new(f: impl Fn(usize, usize) + Send + Sync + 'static) -> Self {
        Self(Arc::new(f))
    }

    /// A progress bar on stderr (indicatif; hidden when stderr is not a terminal), labelled
    /// `message`, cleared when the work is done.
    #[cfg(feature = "progress")]
    #[cfg_attr(docsrs, doc(cfg(feature = "progress")))]
    pub fn bar(message: &str) -> Self {
        let message = message.to_owned();
        let bar: std::sync::OnceLock<indicatif::ProgressBar> = std::sync::OnceLock::new();
        Self::new(move |done, total| {
            let bar = bar.get_or_init(|| {
                let bar = indicatif::ProgressBar::new(total as u64);
                bar.set_style(
                    indicatif::ProgressStyle::with_template(
                        "{msg} [{elapsed_precise}] {wide_bar} {pos}/{len} ({per_sec}, eta {eta})",
                    )
                    .expect("static template"),
                );
                bar.set_message(message.clone());
                bar
            });
            bar.set_length(total as u64);
            bar.set_position(done as u64);
            if done >= total {
                bar.finish_and_clear();
            }
        })
    }

    pub(crate) fn report(&self, done: usize, total: usize) {
        (self.0)(done, total)
    }
}

impl fmt::Debug for Progress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Progress(..)")
    }
}

/// Options of [`extract_dataset`].
#[derive(Debug, Clone, Default)]
pub struct ExtractOptions {
    /// What to do with unreadable images.
    pub on_unreadable: OnUnreadable,
    /// The feature cache, if any.
    pub cache: Option<FeatureCache>,
    /// Where progress goes, if anywhere ([`Progress::bar`] draws a bar).
    pub progress: Option<Progress>,
}

/// The pooled features of a list of images, one matrix per tapped block, with a row per image
/// that could be read.
#[derive(Debug)]
pub struct ExtractedFeatures {
    /// The tapped blocks, in the order of [`blocks`](Self::blocks).
    pub taps: Vec<TapInfo>,
    /// `blocks[b]` is the row-major matrix of block `taps[b]`, one row per kept image.
    pub blocks: Vec<Vec<f32>>,
    /// The image of each row.
    pub paths: Vec<PathBuf>,
    /// The position in the input list of each row's image.
    pub inputs: Vec<usize>,
    /// The sha256 of each row's image file.
    pub sha256: Vec<[u8; 32]>,
    /// Images left out because they could not be decoded ([`OnUnreadable::Skip`]).
    pub skipped: Vec<ImageError>,
    /// Rows read from the cache.
    pub cache_hits: usize,
    /// Cache entries found damaged or of another version, recomputed and rewritten.
    pub cache_rebuilt: usize,
}

impl ExtractedFeatures {
    /// The number of rows (images kept).
    pub fn len(&self) -> usize {
        self.paths.len()
    }

    /// Whether no image was kept.
    pub fn is_empty(&self) -> bool {
        self.paths.is_empty()
    }

    /// The rows of `block`'s global average (the paper's recipe), if tapped.
    pub fn block(&self, block: Block) -> Option<Rows<'_>> {
        self.recipe(Recipe::Paper(block))
    }

    /// The rows of `recipe`, if tapped.
    pub fn recipe(&self, recipe: Recipe) -> Option<Rows<'_>> {
        let i = self.taps.iter().position(|t| t.recipe == recipe)?;
        Some(Rows::new(&self.blocks[i], self.taps[i].dim).expect("whole rows of the output"))
    }

    /// The rows of every tapped block, with their tap, in block order.
    pub fn iter(&self) -> impl Iterator<Item = (&TapInfo, Rows<'_>)> {
        self.taps
            .iter()
            .zip(&self.blocks)
            .map(|(t, b)| (t, Rows::new(b, t.dim).expect("whole rows of the block")))
    }

    /// The entries of `per_input` (one per input image, e.g. a [`Dataset`](crate::Dataset)'s
    /// labels) for the rows kept, in row order.
    ///
    /// # Panics
    /// When `per_input` is shorter than the input list was.
    pub fn select<T: Clone>(&self, per_input: &[T]) -> Vec<T> {
        self.inputs.iter().map(|&i| per_input[i].clone()).collect()
    }
}

/// Extracts the features of the images at `paths` through `tap`, batch by batch, reading
/// and decoding each batch in parallel. For a [`Dataset`](crate::Dataset):
/// `extract_dataset(&tap, dataset.paths(), &options)`, then
/// [`select`](ExtractedFeatures::select) its labels.
///
/// # Errors
/// [`TapError::Image`] naming the first unreadable image under [`OnUnreadable::Fail`]. A cache
/// that cannot be written is not an error: extraction goes on without it.
pub fn extract_dataset(
    tap: &BlockTap,
    paths: impl IntoIterator<Item = impl AsRef<Path>>,
    options: &ExtractOptions,
) -> Result<ExtractedFeatures, TapError> {
    let paths: Vec<PathBuf> = paths.into_iter().map(|p| p.as_ref().to_owned()).collect();
    let taps = tap.taps();
    let recipes: Vec<Recipe> = taps.iter().map(|t| t.recipe).collect();
    let backbone = tap.backbone();
    let cache = options.cache.as_ref().map(|c| {
        let dir = c
            .dir
            .join(sanitise(
                &backbone.weights_id()[..backbone.weights_id().len().min(16)],
            ))
            .join(backbone.preprocessing().name());
        // int8 features differ from fp32 ones, between versions of the scheme, and between
        // kernels with different weight widths.
        match backbone.int8_kernel() {
            None => dir,
            Some(kernel) => dir.join(crate::native::int8_scheme(kernel)),
        }
    });
    let mut out = ExtractedFeatures {
        blocks: vec![Vec::new(); taps.len()],
        taps,
        paths: Vec::new(),
        inputs: Vec::new(),
        sha256: Vec::new(),
        skipped: Vec::new(),
        cache_hits: 0,
        cache_rebuilt: 0,
    };
    let total = paths.len();
    let batch = tap.batch_size();
    for (c, chunk) in paths.chunks(batch).enumerate() {
        // Read, hash, look up and decode in parallel.
        let loaded: Vec<Loaded> = chunk
            .par_iter()
            .map(|path| load(path, cache.as_deref(), &recipes))
            .collect();
        let mut misses: Vec<(usize, DynamicImage, Option<PathBuf>)> = Vec::new();
        let mut rows: Vec<Option<(Features, [u8; 32])>> = vec![None; chunk.len()];
        for (i, l) in loaded.into_iter().enumerate() {
            match l {
                Loaded::Hit(f, sha) => {
                    out.cache_hits += 1;
                    rows[i] = Some((f, sha));
                }
                Loaded::Miss {
                    image,
                    sha,
                    entry,
                    rebuilt,
                } => {
                    out.cache_rebuilt += usize::from(rebuilt);
                    rows[i] = Some((Features { blocks: Vec::new() }, sha));
                    misses.push((i, image, entry));
                }
                Loaded::Unreadable(e) => match options.on_unreadable {
                    OnUnreadable::Fail => return Err(e.into()),
                    OnUnreadable::Skip => out.skipped.push(e),
                },
            }
        }
        if !misses.is_empty() {
            let images: Vec<&DynamicImage> = misses.iter().map(|m| &m.1).collect();
            let features = tap.extract_refs(&images)?;
            for ((i, _, entry), f) in misses.into_iter().zip(features) {
                if let Some(entry) = entry {
                    // A cache that cannot be written only costs time later.
                    let _ = write_entry(&entry, &recipes, &f);
                }
                if let Some(row) = &mut rows[i] {
                    row.0 = f;
                }
            }
        }
        for (i, (path, row)) in chunk.iter().zip(rows).enumerate() {
            if let Some((f, sha)) = row {
                for (m, v) in out.blocks.iter_mut().zip(f.blocks) {
                    m.extend_from_slice(&v);
                }
                out.paths.push(path.clone());
                out.inputs.push(c * batch + i);
                out.sha256.push(sha);
            }
        }
        if let Some(p) = &options.progress {
            p.report((c * batch + chunk.len()).min(total), total);
        }
    }
    if total == 0
        && let Some(p) = &options.progress
    {
        p.report(0, 0);
    }
    Ok(out)
}

fn sanitise(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

enum Loaded {
    Hit(Features, [u8; 32]),
    Miss {
        image: DynamicImage,
        sha: [u8; 32],
        entry: Option<PathBuf>,
        rebuilt: bool,
    },
    Unreadable(ImageError),
}

fn load(path: &Path, cache: Option<&Path>, recipes: &[Recipe]) -> Loaded {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(source) => {
            return Loaded::Unreadable(ImageError::Io {
                path: path.to_owned(),
                source,
            });
        }
    };
    let sha: [u8; 32] = Sha256::digest(&bytes).into();
    let mut entry = None;
    let mut rebuilt = false;
    if let Some(dir) = cache {
        let hex: String = sha.iter().map(|b| format!("{b:02x}")).collect();
        let p = dir.join(&hex[..2]).join(format!("{hex}.feat"));
        match read_entry(&p, recipes) {
            Entry::Valid(f) => return Loaded::Hit(f, sha),
            Entry::Absent => {}
            Entry::Invalid => rebuilt = true,
        }
        entry = Some(p);
    }
    match decode_image(bytes, path, DecodeLimits::default()) {
        Ok(image) => Loaded::Miss {
            image,
            sha,
            entry,
            rebuilt,
        },
        Err(e) => Loaded::Unreadable(e),
    }
}

/// The sha256 of a file's bytes, as [`ExtractedFeatures::sha256`] has it.
pub(crate) fn sha256_file(path: &Path) -> std::io::Result<[u8; 32]> {
    Ok(Sha256::digest(std::fs::read(path)?).into())
}

/// Where the feature cache lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeatureCache {
    /// The cache folder.
    pub dir: PathBuf,
}

impl FeatureCache {
    /// A cache in `dir` (created when first written).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// `$XDG_CACHE_HOME/attrex/features`, else `~/.cache/attrex/features`, else `./.attrex-cache`.
    ///
    /// The library reads no `ATTREX_CACHE` variable: a program that wants one reads it itself and
    /// calls [`FeatureCache::new`] (the examples do, through their `--cache-dir`/`ATTREX_CACHE`).
    pub fn default_location() -> Self {
        let dir = std::env::var_os("XDG_CACHE_HOME")
            .map(|d| PathBuf::from(d).join("attrex/features"))
            .or_else(|| {
                std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/attrex/features"))
            })
            .unwrap_or_else(|| PathBuf::from(".attrex-cache"));
        Self { dir }
    }
}

const ENTRY_MAGIC: &[u8; 8] = b"ATTREXFT";
/// Version of the cache entry format; bump it when the features of the same image could change.
pub const CACHE_VERSION: u32 = 3;

enum Entry {
    Valid(Features),
    Absent,
    Invalid,
}

/// An entry is the shared container (`fsutil::write_container`): a JSON header listing
/// `(recipe name, dim)` pairs, then the f32 values output after output.
#[derive(serde::Serialize, serde::Deserialize)]
struct EntryHeader {
    recipes: Vec<(String, usize)>,
}

fn read_entry(path: &Path, want: &[Recipe]) -> Entry {
    use crate::fsutil::{bytes_f32, read_container};
    let payload_len = |h: &EntryHeader| {
        h.recipes
            .iter()
            .try_fold(0usize, |acc, (_, d)| acc.checked_add(d.checked_mul(4)?))
    };
    match read_container::<EntryHeader>(path, (ENTRY_MAGIC, "cache"), CACHE_VERSION, payload_len) {
        Err(FileError::Io { .. }) => Entry::Absent,
        Err(_) => Entry::Invalid,
        Ok((header, payload)) => {
            let values = bytes_f32(&payload);
            let mut at = 0;
            let stored: Vec<(&str, &[f32])> = header
                .recipes
                .iter()
                .map(|(name, d)| {
                    at += d;
                    (name.as_str(), &values[at - d..at])
                })
                .collect();
            want.iter()
                .map(|r| {
                    let name = r.name();
                    stored
                        .iter()
                        .find(|(n, _)| *n == name)
                        .map(|(_, v)| v.to_vec())
                })
                .collect::<Option<Vec<_>>>()
                .map_or(Entry::Invalid, |blocks| Entry::Valid(Features { blocks }))
        }
    }
}

fn write_entry(path: &Path, recipes: &[Recipe], f: &Features) -> Result<(), FileError> {
    let header = EntryHeader {
        recipes: recipes
            .iter()
            .zip(&f.blocks)
            .map(|(r, v)| (r.name(), v.len()))
            .collect(),
    };
    let mut payload = Vec::new();
    for v in &f.blocks {
        crate::fsutil::f32_bytes(v, &mut payload);
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|source| FileError::Io {
            path: dir.to_owned(),
            source,
        })?;
    }
    let header = serde_json::to_vec(&header).expect("the header serialises");
    crate::fsutil::write_container(path, ENTRY_MAGIC, CACHE_VERSION, &header, &payload)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_and_damage_is_detected() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("ab/x.feat");
        let blocks = [Recipe::Paper(Block::B2), Recipe::Paper(Block::B4)];
        let f = Features {
            blocks: vec![vec![1.0, 2.0], vec![3.0, 4.0, 5.0]],
        };
        write_entry(&p, &blocks, &f).unwrap();
        assert!(matches!(read_entry(&p, &blocks), Entry::Valid(g) if g == f));
        assert!(
            matches!(read_entry(&p, &[Recipe::Paper(Block::B4)]), Entry::Valid(g) if g.blocks == [vec![3.0, 4.0, 5.0]])
        );
        assert!(
            matches!(read_entry(&p, &[Recipe::Paper(Block::B1)]), Entry::Invalid),
            "a block not stored is a miss"
        );
        let mut bytes = std::fs::read(&p).unwrap();
        let n = bytes.len();
        bytes[n - 40] ^= 1;
        std::fs::write(&p, &bytes).unwrap();
        assert!(
            matches!(read_entry(&p, &blocks), Entry::Invalid),
            "flipped bit"
        );
        std::fs::write(&p, &bytes[..10]).unwrap();
        assert!(
            matches!(read_entry(&p, &blocks), Entry::Invalid),
            "truncated"
        );
        assert!(matches!(
            read_entry(&dir.path().join("none"), &blocks),
            Entry::Absent
        ));
    }

    #[test]
    fn another_version_is_not_trusted() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("v.feat");
        let f = Features {
            blocks: vec![vec![1.0]],
        };
        write_entry(&p, &[Recipe::Paper(Block::B1)], &f).unwrap();
        let mut bytes = std::fs::read(&p).unwrap();
        bytes[8..12].copy_from_slice(&(CACHE_VERSION + 1).to_le_bytes());
        let n = bytes.len() - 32;
        let digest = sha2::Sha256::digest(&bytes[..n]);
        bytes[n..].copy_from_slice(&digest);
        std::fs::write(&p, &bytes).unwrap();
        assert!(matches!(
            read_entry(&p, &[Recipe::Paper(Block::B1)]),
            Entry::Invalid
        ));
    }
}
