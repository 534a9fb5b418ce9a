//! The contract between Shorthorn's frontends (NBD, …) and whatever serves blocks behind
//! them (an engine replicating to replicas, or a local store).
//!
//! Requests are byte-addressed: any offset and length inside the device are valid.
//! Implementations that work in larger units (the store's 4 KiB blocks) do
//! read-modify-write themselves, so frontends never have to.

mod digest;
mod extent;
mod layer;
mod name;
mod range;
pub mod size;
#[cfg(feature = "testing")]
pub mod testing;

use std::future::Future;

use bytes::Bytes;

pub use digest::{chunk_digest, zero_digest};
pub use extent::{Extent, ExtentKind};
pub use layer::{ConsistencyRecord, LayerInfo, PurgeReport, snapshot_chain};
pub use name::{MAX_NAME_LEN, NameError, validate_name};
pub use range::{BLOCK_SIZE, align_down, align_up, check_range};

/// Why a block request failed, in terms a frontend can map to a protocol error code.
#[derive(Debug, thiserror::Error)]
pub enum BlockError {
    /// The request reaches past the end of the device.
    #[error("request at offset {offset} length {len} is outside the device of {size} bytes")]
    OutOfRange {
        /// First byte of the request.
        offset: u64,
        /// Length of the request in bytes.
        len: u64,
        /// Size of the device in bytes.
        size: u64,
    },
    /// The request itself is malformed (for example a length that overflows).
    #[error("invalid request: {0}")]
    InvalidArgument(String),
    /// The device has no room left for new data.
    #[error("no space left: {0}")]
    NoSpace(String),
    /// The device cannot take writes (for example no replica is writable).
    #[error("device is read-only: {0}")]
    ReadOnly(String),
    /// Any other failure, with context naming what failed.
    #[error("I/O error: {0}")]
    Io(String),
}

/// Result of a block request.
pub type BlockResult<T> = Result<T, BlockError>;

/// Flags that change how a write is acknowledged.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriteFlags {
    /// Force unit access: the data is durable before the write is acknowledged.
    pub fua: bool,
}

/// How a zeroing request may be carried out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ZeroMode {
    /// Space may be freed (the range may become a hole) as long as it reads back as zeros.
    MayUnmap,
    /// The range must stay allocated (NBD's `NO_HOLE`): zeros are written.
    Allocate,
}

/// A byte-addressed block device. Futures are `Send` so a server can run requests from
/// many connections on a multi-threaded runtime.
pub trait BlockDevice: Send + Sync {
    /// Current size of the device in bytes.
    fn size(&self) -> u64;

    /// Reads `len` bytes at `offset`.
    fn read(&self, offset: u64, len: u64) -> impl Future<Output = BlockResult<Bytes>> + Send;

    /// Writes `data` at `offset`; acknowledged data survives a crash only after a flush
    /// (or when `flags.fua` is set).
    fn write(
        &self,
        offset: u64,
        data: Bytes,
        flags: WriteFlags,
    ) -> impl Future<Output = BlockResult<()>> + Send;

    /// Makes every acknowledged write durable.
    fn flush(&self) -> impl Future<Output = BlockResult<()>> + Send;

    /// Makes `len` bytes at `offset` read back as zeros.
    fn write_zeroes(
        &self,
        offset: u64,
        len: u64,
        mode: ZeroMode,
        flags: WriteFlags,
    ) -> impl Future<Output = BlockResult<()>> + Send;

    /// Discards `len` bytes at `offset`: space is freed where possible and the range reads
    /// back as zeros afterwards.
    fn trim(&self, offset: u64, len: u64) -> impl Future<Output = BlockResult<()>> + Send;

    /// Describes `len` bytes at `offset` as a sorted, gap-free list of data and zero extents.
    fn block_status(
        &self,
        offset: u64,
        len: u64,
    ) -> impl Future<Output = BlockResult<Vec<Extent>>> + Send;
}
