//! A Shorthorn replica's on-disk store: a volume kept as a chain of sparse layer files
//! (immutable snapshots under one writable head) in one directory, with an extent-based
//! location map, instant snapshots, purge, revert and expansion, all crash safe.
//!
//! The on-disk format is specified in `docs/store-format.md`.

mod consistency;
mod device;
mod error;
mod expand;
mod extent_map;
pub mod fail_points;
mod layer_file;
mod meta;
mod name;
mod purge;
mod range_lock;
mod snapshot;
mod store;
mod view;

pub use consistency::{CONSISTENCY_FILE, ConsistencyFile};
pub use device::StoreDevice;
pub use error::StoreError;
pub use extent_map::{ExtentMap, MAX_LAYERS, Owner, Segment};
pub use meta::{
    FORMAT_VERSION, LayerMeta, MAX_VOLUME_SIZE, METADATA_FILE, VolumeMeta, layer_file_name,
    replace_file,
};
pub use name::{MAX_NAME_LEN, validate_name};
pub use shorthorn_block::{ConsistencyRecord, LayerInfo, PurgeReport};
pub use snapshot::{MAX_LABEL_VALUE_LEN, SnapshotKind};
pub use store::Store;
pub use view::SnapshotView;
