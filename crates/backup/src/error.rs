//! The backupstore's errors, one type per concern, each naming what it concerns (target
//! URL, object path, volume, backup, block offset).
//!
//! A message holds its own context only and the cause is its `source()`, never both:
//! printed as a chain (`{:#}` of an `anyhow::Error`, as the CLI and the manager do) it
//! reads "context: cause: cause's cause", with nothing said twice.

use std::error::Error;
use std::fmt;
use std::io;
use std::path::PathBuf;
use std::time::Duration;

use object_store::path::Path as ObjectPath;
use shorthorn_block::NameError;
use shorthorn_store::StoreError;
use shorthorn_wire::{AddrParseError, ControlAddrError, ReplicaAddr};
use tokio::task::JoinError;

use crate::format::{FORMAT_VERSION, FormatError};

/// A cause a [`crate::SnapshotSource`] reported, whatever its type.
pub type SourceCause = Box<dyn Error + Send + Sync>;

/// A target URL that cannot be opened, or an object operation on a target that failed.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    /// The text does not parse as a URL.
    #[error("backup target {url:?}: not a URL")]
    NotAUrl {
        /// The text given.
        url: String,
        /// Why it does not parse.
        source: url::ParseError,
    },
    /// The URL parses but is not written as its scheme needs.
    #[error("backup target {url}: {problem}")]
    Malformed {
        /// The URL.
        url: String,
        /// What is missing or wrong, and how to write it.
        problem: &'static str,
    },
    /// No target kind has that scheme.
    #[error(
        "backup target {url}: unknown scheme {scheme:?}; use s3://bucket@region/path, \
         file:///path or nfs://host:/path"
    )]
    UnknownScheme {
        /// The URL.
        url: String,
        /// Its scheme.
        scheme: String,
    },
    /// The S3 endpoint does not parse (object_store would panic on some of them).
    #[error(
        "backup target {url}: S3 endpoint {endpoint:?} is not a URL ({error}); write \
         http://HOST:PORT or https://HOST"
    )]
    EndpointNotAUrl {
        /// The target URL.
        url: String,
        /// The endpoint.
        endpoint: String,
        /// Why it does not parse.
        error: url::ParseError,
    },
    /// The S3 endpoint is not http(s) or has no host.
    #[error(
        "backup target {url}: S3 endpoint {endpoint:?} must be http://HOST[:PORT] or \
         https://HOST[:PORT]"
    )]
    EndpointScheme {
        /// The target URL.
        url: String,
        /// The endpoint.
        endpoint: String,
    },
    /// A custom S3 endpoint has no credentials (there is no instance metadata off AWS).
    #[error(
        "backup target {url}: no S3 credentials; set AWS_ACCESS_KEY_ID and \
         AWS_SECRET_ACCESS_KEY (or --access-key-id and --secret-access-key)"
    )]
    NoCredentials {
        /// The target URL.
        url: String,
    },
    /// object_store refused the S3 configuration.
    #[error("backup target {url}")]
    S3 {
        /// The target URL.
        url: String,
        /// Why.
        source: Box<object_store::Error>,
    },
    /// The URL's path is no object store prefix.
    #[error("backup target {url}: bad path")]
    BadPath {
        /// The target URL.
        url: String,
        /// Why.
        source: Box<object_store::path::Error>,
    },
    /// A directory target (or an NFS mount point) could not be made.
    #[error("backup target {url}: creating {}", dir.display())]
    CreateDirectory {
        /// The target URL.
        url: String,
        /// The directory.
        dir: PathBuf,
        /// The operating system's error.
        source: io::Error,
    },
    /// A directory target is missing, and only a backup may create it.
    #[error(
        "backup target {url}: {} does not exist (a first `backup create` makes it)",
        dir.display()
    )]
    MissingDirectory {
        /// The target URL.
        url: String,
        /// The directory.
        dir: PathBuf,
    },
    /// A directory target could not be opened.
    #[error("backup target {url}: opening {}", dir.display())]
    OpenDirectory {
        /// The target URL.
        url: String,
        /// The directory.
        dir: PathBuf,
        /// Why.
        source: Box<object_store::Error>,
    },
    /// An NFS export could not be mounted.
    #[error(
        "backup target {url}: cannot mount {export} ({failure}); this host needs NFS \
         client support — or mount the export yourself and use file:///MOUNTPOINT"
    )]
    NfsMount {
        /// The target URL.
        url: String,
        /// `host:/path`.
        export: String,
        /// What `mount` said.
        failure: String,
    },
    /// Writing, reading, looking up, removing or listing objects failed.
    #[error("{url}: {op} {path}")]
    Object {
        /// The target URL.
        url: String,
        /// What was being done.
        op: &'static str,
        /// The object or prefix, in the store.
        path: ObjectPath,
        /// The store's error.
        source: Box<object_store::Error>,
    },
    /// A record could not be encoded.
    #[error("{url}: encoding {path} as JSON")]
    Encode {
        /// The target URL.
        url: String,
        /// The object it was for.
        path: ObjectPath,
        /// Why.
        source: serde_json::Error,
    },
    /// A JSON object is not what this version reads.
    #[error("{url}: {path} is corrupt (not the JSON this version expects)")]
    CorruptJson {
        /// The target URL.
        url: String,
        /// The object.
        path: ObjectPath,
        /// Why it does not decode.
        source: serde_json::Error,
    },
    /// An object just written is not there (the store's clock was to be read from it).
    #[error("{url}: {path} vanished right after it was written")]
    Vanished {
        /// The target URL.
        url: String,
        /// The object.
        path: ObjectPath,
    },
}

/// A [`crate::TargetPolicy`] that cannot be built, or a target it does not allow.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// A `file://` root could not be created or resolved.
    #[error("{op} file target root {}", root.display())]
    Root {
        /// `creating` or `resolving`.
        op: &'static str,
        /// The root as given.
        root: PathBuf,
        /// The operating system's error.
        source: io::Error,
    },
    /// `/` as a root would allow every path.
    #[error("file target root {}: `/` would allow every path", root.display())]
    SlashRoot {
        /// The root as given.
        root: PathBuf,
    },
    /// The URL itself is wrong.
    #[error(transparent)]
    Url(#[from] TargetError),
    /// A `file://` URL whose path is no local path.
    #[error("backup target {url}: not a local path")]
    NotLocalPath {
        /// The URL.
        url: String,
    },
    /// No directory above a `file://` target's path exists.
    #[error(
        "backup target {url}: resolving {p}: no existing directory above {p}",
        p = path.display()
    )]
    NoExistingDirectory {
        /// The URL.
        url: String,
        /// Its path.
        path: PathBuf,
    },
    /// The existing part of a `file://` target's path could not be resolved.
    #[error("backup target {url}: resolving {}", path.display())]
    Resolve {
        /// The URL.
        url: String,
        /// Its path.
        path: PathBuf,
        /// The operating system's error.
        source: io::Error,
    },
    /// The missing part of a `file://` target's path has `..` (it cannot be resolved).
    #[error(
        "backup target {url}: resolving {p}: {p} climbs out of a directory that does not exist",
        p = path.display()
    )]
    ClimbsOut {
        /// The URL.
        url: String,
        /// Its path.
        path: PathBuf,
    },
    /// A `file://` target outside every allowed root.
    #[error(
        "backup target {url}: {} is not under a file target root of this node ({roots}); \
         start it with --file-target-root DIR to allow one",
        resolved.display()
    )]
    FileNotAllowed {
        /// The URL.
        url: String,
        /// Its path, symlinks resolved.
        resolved: PathBuf,
        /// The allowed roots, or `none`.
        roots: String,
    },
    /// An `nfs://` target on a host not allowed.
    #[error(
        "backup target {url}: NFS host {host} is not allowed on this node; start it with \
         --nfs-target-host {host} to allow it"
    )]
    NfsNotAllowed {
        /// The URL.
        url: String,
        /// The host, lowercase.
        host: String,
    },
}

/// A backupstore lock that could not be taken or was lost.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// The lock could not be refreshed in time: another process may hold one now.
    #[error("{url}: lost {description} (it could not be refreshed before it expired)")]
    Lost {
        /// The target URL.
        url: String,
        /// Which lock (kind, id, volume).
        description: String,
    },
    /// A conflicting lock outlasted the wait.
    #[error(
        "volume {volume}: waited {:.1}s for {holder} to finish; giving up (raise \
         --lock-wait, or wait for it)",
        max_wait.as_secs_f64()
    )]
    Timeout {
        /// The volume.
        volume: String,
        /// How long we waited.
        max_wait: Duration,
        /// Who holds the conflicting lock.
        holder: String,
    },
    /// Writing, reading or removing a lock object failed.
    #[error(transparent)]
    Target(#[from] TargetError),
}

/// A backup that could not be taken, read, listed or deleted.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// A volume or backup name breaks the naming rules.
    #[error("{field}")]
    InvalidName {
        /// `volume` or `backup name`.
        field: &'static str,
        /// Which rule.
        source: NameError,
    },
    /// Zero blocks at once.
    #[error("parallelism must be at least 1")]
    NoParallelism,
    /// The backup name is taken.
    #[error("backup {backup} of volume {volume} exists already")]
    Exists {
        /// The volume.
        volume: String,
        /// The name.
        backup: String,
    },
    /// The source could not say which blocks changed.
    #[error("volume {volume}: finding the blocks to back up")]
    ChangedBlocks {
        /// The volume.
        volume: String,
        /// The source's error.
        source: SourceCause,
    },
    /// The source could not read a block.
    #[error("volume {volume}: reading offset {offset}")]
    Read {
        /// The volume.
        volume: String,
        /// The block's offset.
        offset: u64,
        /// The source's error.
        source: SourceCause,
    },
    /// The source returned less than a block.
    #[error("volume {volume}: short read at offset {offset}")]
    ShortRead {
        /// The volume.
        volume: String,
        /// The block's offset.
        offset: u64,
    },
    /// The volume record is of another version or another volume.
    #[error(
        "{url}: {path} is corrupt: it has format version {version} for volume {name:?}; this \
         build writes version {supported}",
        supported = FORMAT_VERSION
    )]
    VolumeRecordMismatch {
        /// The target URL.
        url: String,
        /// The record.
        path: ObjectPath,
        /// Its version.
        version: u32,
        /// The volume it names.
        name: String,
    },
    /// The volume record holds an invalid block size.
    #[error("{url}: {path} is corrupt")]
    CorruptVolumeRecord {
        /// The target URL.
        url: String,
        /// The record.
        path: ObjectPath,
        /// What is wrong.
        source: Box<FormatError>,
    },
    /// The volume has no backup by that name.
    #[error("{url}: volume {volume} has no backup {backup}")]
    NotFound {
        /// The target URL.
        url: String,
        /// The volume.
        volume: String,
        /// The backup.
        backup: String,
    },
    /// A backup record stored under another backup's or volume's name.
    #[error("{url}: {path} is corrupt: it names backup {named} of volume {named_volume}")]
    MisnamedRecord {
        /// The target URL.
        url: String,
        /// The record, relative to the target.
        path: String,
        /// The backup it names.
        named: String,
        /// The volume it names.
        named_volume: String,
    },
    /// A backup record that breaks the format.
    #[error("{url}: {path} is corrupt")]
    CorruptRecord {
        /// The target URL.
        url: String,
        /// The record, relative to the target.
        path: String,
        /// What is wrong.
        source: Box<FormatError>,
    },
    /// Hashing or compressing off the async threads failed.
    #[error("background task failed")]
    Task(#[from] JoinError),
    /// A block size, or a block that cannot be encoded.
    #[error(transparent)]
    Format(#[from] FormatError),
    /// The target failed.
    #[error(transparent)]
    Target(#[from] TargetError),
    /// The volume's lock.
    #[error(transparent)]
    Lock(#[from] LockError),
}

/// A restore that failed.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// Zero blocks at once.
    #[error("parallelism must be at least 1")]
    NoParallelism,
    /// The restored volume's name breaks the naming rules.
    #[error("restored volume name")]
    InvalidName(#[source] NameError),
    /// `restore.json` could not be read.
    #[error("reading {}", path.display())]
    ReadState {
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        source: io::Error,
    },
    /// `restore.json` is not JSON this version reads.
    #[error("{} is corrupt", path.display())]
    CorruptState {
        /// The file.
        path: PathBuf,
        /// Why it does not decode.
        source: serde_json::Error,
    },
    /// The restore state could not be encoded.
    #[error("encoding the restore state")]
    EncodeState(#[source] serde_json::Error),
    /// `restore.json` could not be written.
    #[error("writing {}", path.display())]
    WriteState {
        /// The file.
        path: PathBuf,
        /// Why.
        source: StoreError,
    },
    /// One block could not be restored.
    #[error("volume {volume}: restoring offset {offset}")]
    Block {
        /// The backed-up volume.
        volume: String,
        /// The block's offset.
        offset: u64,
        /// Why.
        source: Box<RestoreError>,
    },
    /// A block the backup lists is not in the store.
    #[error("{url}: block {hash} of backup {backup} is missing from the store")]
    MissingBlock {
        /// The target URL.
        url: String,
        /// The block's hash.
        hash: String,
        /// The backup.
        backup: String,
    },
    /// A fetched block object is corrupt.
    #[error("{url}: backup {backup}")]
    CorruptBlock {
        /// The target URL.
        url: String,
        /// The backup.
        backup: String,
        /// What is wrong with the block.
        source: Box<FormatError>,
    },
    /// A block's contents are not as long as the block at its offset.
    #[error("{url}: block {hash} holds {found} bytes, but the block at offset {offset} has {len}")]
    BlockLength {
        /// The target URL.
        url: String,
        /// The block's hash.
        hash: String,
        /// Bytes it holds.
        found: usize,
        /// Its offset in the volume.
        offset: u64,
        /// Bytes the block at that offset has.
        len: u64,
    },
    /// Work run off the async threads failed.
    #[error("{task}")]
    Task {
        /// Which work.
        task: &'static str,
        /// Why.
        source: JoinError,
    },
    /// A replica directory could not be created.
    #[error("creating a replica directory in {}", dir.display())]
    CreateReplica {
        /// The directory.
        dir: PathBuf,
        /// Why.
        source: StoreError,
    },
    /// A replica directory could not be opened.
    #[error("opening replica directory {}", dir.display())]
    OpenReplica {
        /// The directory.
        dir: PathBuf,
        /// Why.
        source: StoreError,
    },
    /// The directory holds another volume.
    #[error("{} holds volume {found}, not {volume}; restore into another directory", dir.display())]
    OtherVolume {
        /// The directory.
        dir: PathBuf,
        /// The volume it holds.
        found: String,
        /// The volume being restored.
        volume: String,
    },
    /// The directory's volume is larger than the backup's.
    #[error(
        "{} holds {found} bytes, more than the backup's {size}; restore into another directory",
        dir.display()
    )]
    Larger {
        /// The directory.
        dir: PathBuf,
        /// Its volume's size.
        found: u64,
        /// The backup's volume size.
        size: u64,
    },
    /// The directory's volume could not be grown to the backup's size.
    #[error("growing {} to {size} bytes", dir.display())]
    Grow {
        /// The directory.
        dir: PathBuf,
        /// The backup's volume size.
        size: u64,
        /// Why.
        source: StoreError,
    },
    /// Flushing the restored blocks failed.
    #[error("flushing {}", dir.display())]
    Flush {
        /// The directory.
        dir: PathBuf,
        /// Why.
        source: StoreError,
    },
    /// Reading or writing the replica directory failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The backup could not be read.
    #[error(transparent)]
    Backup(#[from] BackupError),
    /// The target failed.
    #[error(transparent)]
    Target(#[from] TargetError),
    /// The volume's lock.
    #[error(transparent)]
    Lock(#[from] LockError),
}

/// A running volume's snapshot that [`crate::ReplicaSource`] cannot find or read.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The engine address is no URI.
    #[error("bad engine address {engine:?}")]
    EngineAddress {
        /// The address.
        engine: String,
        /// Why.
        source: tonic::transport::Error,
    },
    /// The engine did not answer.
    #[error("cannot reach the engine at {engine}")]
    EngineUnreachable {
        /// The address.
        engine: String,
        /// Why.
        source: tonic::transport::Error,
    },
    /// The engine refused to describe its volume.
    #[error("asking the engine at {engine} about its volume")]
    EngineInfo {
        /// The address.
        engine: String,
        /// The engine's answer.
        source: Box<tonic::Status>,
    },
    /// Every replica is rebuilding or failed.
    #[error("volume {volume} has no RW replica to read from")]
    NoRwReplica {
        /// The volume.
        volume: String,
    },
    /// The engine reported a replica address that does not parse.
    #[error("replica address {address:?}")]
    ReplicaAddress {
        /// The address.
        address: String,
        /// Why.
        source: AddrParseError,
    },
    /// The replica's address names no control API.
    #[error(transparent)]
    ControlAddress(#[from] ControlAddrError),
    /// The replica's control address is no URI.
    #[error("replica {addr}: bad control address")]
    ControlUri {
        /// The replica.
        addr: ReplicaAddr,
        /// Why.
        source: tonic::transport::Error,
    },
    /// The replica's control API did not answer.
    #[error("replica {addr}: cannot reach its control API")]
    ReplicaUnreachable {
        /// The replica.
        addr: ReplicaAddr,
        /// Why.
        source: tonic::transport::Error,
    },
    /// The replica refused to list its snapshots.
    #[error("replica {addr}: listing snapshots")]
    ListSnapshots {
        /// The replica.
        addr: ReplicaAddr,
        /// Its answer.
        source: Box<tonic::Status>,
    },
    /// The replica could not say which volume it serves.
    #[error("replica {addr}: asking for its volume")]
    ReplicaInfo {
        /// The replica.
        addr: ReplicaAddr,
        /// Its answer.
        source: Box<tonic::Status>,
    },
    /// The replica serves another volume than the one asked for (its port was reused).
    #[error("replica {addr} serves volume {found}, not {volume}")]
    OtherVolume {
        /// The replica.
        addr: ReplicaAddr,
        /// What it serves.
        found: String,
        /// What was asked for.
        volume: String,
    },
    /// The volume has no snapshot by that name.
    #[error("volume {volume} has no snapshot {snapshot:?} (see `snapshot ls`)")]
    NoSnapshot {
        /// The volume.
        volume: String,
        /// The name asked for.
        snapshot: String,
    },
    /// The replica refused to list a layer's extents.
    #[error("reading the extents of snapshot {snapshot}")]
    Extents {
        /// The layer.
        snapshot: String,
        /// The replica's answer.
        source: Box<tonic::Status>,
    },
    /// The replica refused a read.
    #[error("reading snapshot {snapshot} at offset {offset}")]
    Read {
        /// The snapshot.
        snapshot: String,
        /// Where.
        offset: u64,
        /// The replica's answer.
        source: Box<tonic::Status>,
    },
}

/// An error and its causes as `context: cause: …`, for the crate's own log lines and
/// messages (where no `anyhow` prints the chain).
pub(crate) struct Chain<'a>(pub(crate) &'a (dyn Error + 'static));

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut cause = self.0.source();
        while let Some(e) = cause {
            write!(f, ": {e}")?;
            cause = e.source();
        }
        Ok(())
    }
}
