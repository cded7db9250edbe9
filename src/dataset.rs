//! A folder of class folders (the usual "ImageFolder" layout) as paths, labels and class names.
//!
//! ```text
//! root/
//!   red/    a.jpg b.png ...
//!   blue/   c.jpg ...
//! ```
//!
//! Classes are the sub-folders, sorted by name; images are the files with an image extension,
//! sorted by path. Other files are not silently dropped: they are listed in
//! [`Dataset::non_images`].

use std::path::{Path, PathBuf};

use crate::error::DatasetError;

/// File extensions read as images (lower-case).
pub const IMAGE_EXTENSIONS: &[&str] = &["jpg", "jpeg", "png", "gif", "bmp", "tif", "tiff", "webp"];

/// One labelled image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    /// The image file.
    pub path: PathBuf,
    /// Index into [`Dataset::classes`].
    pub label: usize,
}

/// An image-folder dataset.
#[derive(Debug, Clone)]
pub struct Dataset {
    /// The folder the dataset was read from.
    pub root: PathBuf,
    /// Class names (the sub-folder names), sorted by folder name. A name that is not UTF-8 is
    /// written with `\xNN` escapes for its other bytes, so that every class has its own name.
    pub classes: Vec<String>,
    /// The images, grouped by class, each group sorted by path.
    pub items: Vec<Item>,
    /// Files that were not taken as images (wrong extension), including files directly in the
    /// root folder.
    pub non_images: Vec<PathBuf>,
}

fn is_image(path: &Path) -> bool {
    path.extension()
        .map(|e| e.to_string_lossy().to_lowercase())
        .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.as_str()))
}

/// A folder name as a class name: the name itself when it is UTF-8; otherwise its UTF-8 parts
/// with each other byte written as `\xNN` (and `\` as `\\`), so that two folders whose names are
/// not UTF-8 keep distinct class names (a lossy conversion turned both into "\u{fffd}").
fn class_name(name: &std::ffi::OsStr) -> String {
    if let Some(s) = name.to_str() {
        return s.to_owned();
    }
    #[cfg(unix)]
    {
        use std::fmt::Write;
        use std::os::unix::ffi::OsStrExt;
        let mut out = String::new();
        for chunk in name.as_bytes().utf8_chunks() {
            out.push_str(&chunk.valid().replace('\\', "\\\\"));
            for b in chunk.invalid() {
                write!(out, "\\x{b:02x}").expect("writing to a String cannot fail");
            }
        }
        out
    }
    #[cfg(not(unix))]
    {
        name.to_string_lossy().into_owned()
    }
}

fn read_dir_sorted(dir: &Path) -> Result<Vec<PathBuf>, DatasetError> {
    let io = |source| DatasetError::Io {
        path: dir.to_owned(),
        source,
    };
    let mut entries = std::fs::read_dir(dir)
        .map_err(io)?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(io)?;
    entries.sort();
    Ok(entries)
}

impl Dataset {
    /// Reads the class folders under `root`. Hidden entries (names starting with `.`) are ignored;
    /// nested folders inside a class folder are listed as non-images.
    ///
    /// # Errors
    /// [`DatasetError::Io`] if a folder cannot be listed, [`DatasetError::NoClasses`] if `root`
    /// holds no class folder, [`DatasetError::EmptyClass`] naming a class folder without images.
    ///
    /// # Example
    /// ```no_run
    /// let data = attrex::Dataset::open("images/colour")?;
    /// println!("{} images in {} classes", data.items.len(), data.classes.len());
    /// # Ok::<(), attrex::DatasetError>(())
    /// ```
    pub fn open(root: impl AsRef<Path>) -> Result<Self, DatasetError> {
        let root = root.as_ref().to_owned();
        let mut classes = Vec::new();
        let mut items = Vec::new();
        let mut non_images = Vec::new();
        let hidden = |p: &Path| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with('.'))
        };
        for entry in read_dir_sorted(&root)? {
            if hidden(&entry) {
                continue;
            }
            if !entry.is_dir() {
                non_images.push(entry);
                continue;
            }
            let label = classes.len();
            let before = items.len();
            for file in read_dir_sorted(&entry)? {
                if hidden(&file) {
                    continue;
                }
                if file.is_file() && is_image(&file) {
                    items.push(Item { path: file, label });
                } else {
                    non_images.push(file);
                }
            }
            if items.len() == before {
                return Err(DatasetError::EmptyClass { folder: entry });
            }
            classes.push(class_name(entry.file_name().unwrap_or_default()));
        }
        if classes.is_empty() {
            return Err(DatasetError::NoClasses { root });
        }
        Ok(Self {
            root,
            classes,
            items,
            non_images,
        })
    }

    /// The path of every item, in item order: the input of
    /// [`extract_dataset`](crate::extract_dataset).
    pub fn paths(&self) -> impl Iterator<Item = &Path> {
        self.items.iter().map(|i| i.path.as_path())
    }

    /// The label of every item, in item order.
    pub fn labels(&self) -> Vec<usize> {
        self.items.iter().map(|i| i.label).collect()
    }

    /// Images per class, in class order.
    pub fn class_counts(&self) -> Vec<usize> {
        let mut counts = vec![0; self.classes.len()];
        for i in &self.items {
            counts[i.label] += 1;
        }
        counts
    }
}

#[cfg(all(test, unix))]
mod tests {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;

    use super::*;

    #[test]
    fn class_folders_whose_names_are_not_utf8_keep_distinct_names() {
        // Issue #12: both 0xfe and 0xff folders were named "\u{fffd}".
        let dir = tempfile::tempdir().unwrap();
        for name in [&b"caf\xe9"[..], b"\xff", b"\xfe", b"plain"] {
            let class = dir.path().join(OsStr::from_bytes(name));
            std::fs::create_dir(&class).unwrap();
            std::fs::write(class.join("a.png"), b"").unwrap();
        }
        let data = Dataset::open(dir.path()).unwrap();
        // Sorted by raw bytes: "caf\xe9" < "plain" < 0xfe < 0xff.
        assert_eq!(data.classes, [r"caf\xe9", "plain", r"\xfe", r"\xff"]);
        // A backslash in a name that is not UTF-8 is doubled, so it cannot pose as an escape.
        assert_eq!(class_name(OsStr::from_bytes(b"a\\\x80")), r"a\\\x80");
        assert_eq!(class_name(OsStr::new(r"a\b")), r"a\b");
    }
}
