//! The store's errors. Each names the file, layer or snapshot it concerns.

use std::io;
use std::path::{Path, PathBuf};

use shorthorn_block::BlockError;

/// Everything that can go wrong in a store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A file-level operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The operating system's error.
        source: io::Error,
    },
    /// Reading or writing a layer at an offset failed.
    #[error("{op} {path} at offset {offset}: {source}")]
    LayerIo {
        /// What was being done.
        op: &'static str,
        /// The layer file.
        path: PathBuf,
        /// Byte offset in the layer.
        offset: u64,
        /// The operating system's error.
        source: io::Error,
    },
    /// The directory holds no volume metadata.
    #[error("{path} not found: the directory holds no Shorthorn volume")]
    MissingMetadata {
        /// The expected metadata file.
        path: PathBuf,
    },
    /// The metadata file exists but cannot be understood.
    #[error("corrupt metadata in {path}: {reason}")]
    CorruptMetadata {
        /// The metadata file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The metadata was written by a format this build does not know.
    #[error("{path} has format version {found}; this build reads version {supported} only")]
    UnsupportedVersion {
        /// The metadata file.
        path: PathBuf,
        /// The version found.
        found: u64,
        /// The version this build reads.
        supported: u32,
    },
    /// A layer named in the metadata has no file.
    #[error("layer file {path} is missing, but {metadata} refers to it")]
    MissingLayer {
        /// The missing layer file.
        path: PathBuf,
        /// The metadata file that refers to it.
        metadata: PathBuf,
    },
    /// A layer file's length disagrees with the metadata.
    #[error("layer file {path} is {found} bytes long, but the metadata records {expected}")]
    LayerSizeMismatch {
        /// The layer file.
        path: PathBuf,
        /// Length the metadata records.
        expected: u64,
        /// Length found on disk.
        found: u64,
    },
    /// A volume already exists where one was to be created.
    #[error("{path} already holds a volume or other files; choose an empty directory")]
    AlreadyExists {
        /// The directory.
        path: PathBuf,
    },
    /// The filesystem cannot hold a store.
    #[error("unsupported filesystem at {path}: {reason}")]
    UnsupportedFilesystem {
        /// A file on that filesystem.
        path: PathBuf,
        /// Why it cannot be used.
        reason: String,
    },
    /// A volume or snapshot name breaks the naming rules.
    #[error("invalid name {name:?}: {reason}")]
    InvalidName {
        /// The rejected name.
        name: String,
        /// Which rule it breaks.
        reason: &'static str,
    },
    /// A size is zero, unaligned, too large, or smaller than the current one.
    #[error("invalid size {size}: {reason}")]
    InvalidSize {
        /// The rejected size in bytes.
        size: u64,
        /// Why it is rejected.
        reason: String,
    },
    /// A request reaches outside the volume.
    #[error("request at offset {offset} length {len} is outside the volume of {size} bytes")]
    OutOfRange {
        /// First byte of the request.
        offset: u64,
        /// Length in bytes.
        len: u64,
        /// Size of the volume.
        size: u64,
    },
    /// No snapshot has that name.
    #[error("snapshot {0:?} not found")]
    SnapshotNotFound(String),
    /// A snapshot with that name exists already.
    #[error("snapshot {0:?} already exists")]
    SnapshotExists(String),
    /// The snapshot is marked removed and cannot be used.
    #[error("snapshot {0:?} is marked removed; it will be purged and cannot be reverted to")]
    SnapshotRemoved(String),
    /// The chain reached the most layers the location map can address.
    #[error("the chain already has {0} layers, the most a volume can hold")]
    TooManyLayers(usize),
    /// An earlier metadata commit failed half way; the store must be reopened.
    #[error("the store in {dir} failed to commit metadata and must be reopened")]
    Poisoned {
        /// The replica directory.
        dir: PathBuf,
    },
    /// A label key or value breaks the rules.
    #[error("invalid label {key:?}: {reason}")]
    InvalidLabel {
        /// The label key.
        key: String,
        /// Which rule it breaks.
        reason: &'static str,
    },
    /// A fault injected by a test (only with the `failpoints` feature).
    #[error("injected failure at {0}")]
    Injected(&'static str),
}

impl StoreError {
    /// True when the underlying cause is a full disk (ENOSPC or EDQUOT).
    pub fn is_no_space(&self) -> bool {
        let source = match self {
            StoreError::Io { source, .. } | StoreError::LayerIo { source, .. } => source,
            _ => return false,
        };
        use rustix::io::Errno;
        matches!(Errno::from_io_error(source), Some(e) if e == Errno::NOSPC || e == Errno::DQUOT)
    }
}

impl From<StoreError> for BlockError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::OutOfRange { offset, len, size } => {
                BlockError::OutOfRange { offset, len, size }
            }
            e if e.is_no_space() => BlockError::NoSpace(e.to_string()),
            e => BlockError::Io(e.to_string()),
        }
    }
}

/// Wraps an I/O error with what was being done to which path.
pub(crate) fn io_error(op: &'static str, path: &Path, source: io::Error) -> StoreError {
    StoreError::Io {
        op,
        path: path.to_owned(),
        source,
    }
}
