//! Opening and creating a store, and the I/O path: read, write, zeroing, trim, flush and
//! block status at any byte offset.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::{Mutex, RwLock};
use shorthorn_block::{BLOCK_SIZE, Extent, ExtentKind, ZeroMode, align_down, align_up};

use crate::error::{StoreError, io_error};
use crate::extent_map::{ExtentMap, MAX_LAYERS, Owner, Segment};
use crate::layer_file::LayerFile;
use crate::meta::{
    METADATA_FILE, METADATA_TEMP_FILE, VolumeMeta, check_size, layer_id_from_file_name, layer_path,
};
use crate::name::validate_name;
use crate::range_lock::RangeLock;

/// Zeros to write from, so zeroing never allocates.
static ZEROS: [u8; 1 << 20] = [0; 1 << 20];

/// A replica's volume: a chain of sparse layer files under one directory.
///
/// All methods take `&self` and may be called from many threads. I/O runs in parallel;
/// structural operations (snapshot, revert, expand, purge's commit) wait for in-flight
/// I/O to drain and hold new I/O back while they commit.
pub struct Store {
    pub(crate) dir: PathBuf,
    /// The metadata and the open files of the active chain. I/O holds it shared;
    /// structural commits hold it exclusively.
    pub(crate) state: RwLock<State>,
    /// Which layer holds each block. Lock order: `state` before `map`.
    pub(crate) map: RwLock<ExtentMap>,
    /// Serialises writers of overlapping blocks (see [`RangeLock`]).
    pub(crate) write_locks: RangeLock,
    /// Serialises structural operations with each other.
    pub(crate) ops: Mutex<()>,
    /// Set when a metadata commit failed half way: memory may no longer match the disk,
    /// so the store refuses everything until it is reopened.
    poisoned: AtomicBool,
}

/// The part of a store that structural operations replace.
pub(crate) struct State {
    pub(crate) meta: VolumeMeta,
    /// The active chain, oldest first; the last entry is the head. A layer's position
    /// here is its index in the extent map.
    pub(crate) chain: Vec<ChainLayer>,
}

/// An open layer of the active chain.
#[derive(Clone)]
pub(crate) struct ChainLayer {
    pub(crate) id: u64,
    pub(crate) file: Arc<LayerFile>,
}

impl State {
    /// Grows the head file to `target` and commits the new size, clearing the intent
    /// (the second half of [`Store::expand`], and what an open does with an intent it finds).
    pub(crate) fn finish_expand(&mut self, dir: &Path, target: u64) -> Result<(), StoreError> {
        fail::fail_point!(crate::fail_points::EXPAND_AFTER_INTENT, |_| Err(
            StoreError::Injected(crate::fail_points::EXPAND_AFTER_INTENT)
        ));
        let head = self.head().clone();
        head.file.set_len(target)?;
        head.file.sync_all()?;
        fail::fail_point!(crate::fail_points::EXPAND_AFTER_RESIZE, |_| Err(
            StoreError::Injected(crate::fail_points::EXPAND_AFTER_RESIZE)
        ));
        let mut meta = self.meta.clone();
        meta.size = target;
        meta.pending_expand = None;
        if let Some(layer) = meta.layer_mut(head.id) {
            layer.size = target;
        }
        meta.save(dir)?;
        self.meta = meta;
        Ok(())
    }

    pub(crate) fn head(&self) -> &ChainLayer {
        // The chain always ends with the head: `open` and every commit guarantee it.
        &self.chain[self.chain.len() - 1]
    }

    pub(crate) fn head_index(&self) -> u32 {
        chain_index(self.chain.len() - 1)
    }

    /// The chain position of layer `id`, if it is in the active chain.
    pub(crate) fn chain_position(&self, id: u64) -> Option<usize> {
        self.chain.iter().position(|l| l.id == id)
    }
}

/// Converts a chain position to a map layer index; chains never exceed `MAX_LAYERS`.
pub(crate) fn chain_index(position: usize) -> u32 {
    u32::try_from(position).unwrap_or(MAX_LAYERS)
}

impl Store {
    /// Creates a new volume of `size` bytes named `name` in `dir` (created if missing) and
    /// opens it. Fails if `dir` already holds a volume.
    pub fn create(dir: &Path, name: &str, size: u64) -> Result<Store, StoreError> {
        validate_name(name)?;
        check_size(size)?;
        fs::create_dir_all(dir).map_err(|e| io_error("creating directory", dir, e))?;
        let entries = fs::read_dir(dir).map_err(|e| io_error("listing", dir, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| io_error("listing", dir, e))?;
            let file_name = entry.file_name();
            let file_name = file_name.to_string_lossy();
            if file_name == METADATA_FILE || layer_id_from_file_name(&file_name).is_some() {
                return Err(StoreError::AlreadyExists {
                    path: dir.to_owned(),
                });
            }
        }
        let meta = VolumeMeta::new(name, size);
        let head_path = layer_path(dir, meta.head);
        let head = LayerFile::create(&head_path, size)?;
        if let Err(e) = head.check_filesystem() {
            let _ = fs::remove_file(&head_path);
            return Err(e);
        }
        meta.save(dir)?;
        tracing::info!(dir = %dir.display(), name, size, "created volume");
        Store::open(dir)
    }

    /// Opens the volume in `dir`: validates the metadata and every layer file, finishes an
    /// interrupted expansion, removes files left by interrupted operations that never
    /// committed, and builds the location map from the layers' data extents.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        let mut meta = VolumeMeta::load(dir)?;
        remove_debris(dir, &meta)?;
        let metadata_path = dir.join(METADATA_FILE);
        for layer in &meta.layers {
            let path = layer_path(dir, layer.id);
            let found = match fs::metadata(&path) {
                Ok(m) => m.len(),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    return Err(StoreError::MissingLayer {
                        path,
                        metadata: metadata_path,
                    });
                }
                Err(e) => return Err(io_error("stat", &path, e)),
            };
            let expanding_head = layer.id == meta.head && meta.pending_expand == Some(found);
            if found != layer.size && !expanding_head {
                return Err(StoreError::LayerSizeMismatch {
                    path,
                    expected: layer.size,
                    found,
                });
            }
        }
        let ids = meta.chain();
        if ids.len() > MAX_LAYERS as usize {
            return Err(StoreError::TooManyLayers(ids.len()));
        }
        let chain = ids
            .into_iter()
            .map(|id| {
                Ok(ChainLayer {
                    id,
                    file: Arc::new(LayerFile::open(&layer_path(dir, id))?),
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        let mut state = State {
            meta: meta.clone(),
            chain,
        };
        state.head().file.check_filesystem()?;
        if let Some(target) = meta.pending_expand.take() {
            tracing::warn!(dir = %dir.display(), target, "finishing an interrupted expansion");
            state.finish_expand(dir, target)?;
        }
        let map = build_map(&state.chain)?;
        tracing::debug!(dir = %dir.display(), layers = state.chain.len(), extents = map.len(), "opened volume");
        Ok(Store {
            dir: dir.to_owned(),
            state: RwLock::new(state),
            map: RwLock::new(map),
            write_locks: RangeLock::default(),
            ops: Mutex::new(()),
            poisoned: AtomicBool::new(false),
        })
    }

    /// The directory holding the volume.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The volume's name.
    pub fn name(&self) -> String {
        self.state.read().meta.name.clone()
    }

    /// The volume's size in bytes.
    pub fn size(&self) -> u64 {
        self.state.read().meta.size
    }

    /// Number of extents in the location map (what its memory follows).
    pub fn map_extents(&self) -> usize {
        self.map.read().len()
    }

    /// Fills `buf` with the volume's bytes at `offset`.
    pub fn read(&self, offset: u64, buf: &mut [u8]) -> Result<(), StoreError> {
        let state = self.state.read();
        self.check(&state, offset, buf.len() as u64)?;
        self.read_locked(&state, offset, buf)
    }

    /// Writes `data` at `offset`. Durable after the next [`Store::flush`].
    pub fn write(&self, offset: u64, data: &[u8]) -> Result<(), StoreError> {
        let state = self.state.read();
        self.check(&state, offset, data.len() as u64)?;
        if data.is_empty() {
            return Ok(());
        }
        let (first, last) = block_span(offset, data.len() as u64);
        let _guard = self.write_locks.lock(first, last);
        self.write_locked(&state, offset, data)
    }

    /// Makes `len` bytes at `offset` read as zeros. With [`ZeroMode::MayUnmap`], whole
    /// blocks that no older layer holds become holes in the head; everywhere else zeros
    /// are written into the head (so older snapshots keep their data).
    pub fn write_zeroes(&self, offset: u64, len: u64, mode: ZeroMode) -> Result<(), StoreError> {
        let state = self.state.read();
        self.check(&state, offset, len)?;
        if len == 0 {
            return Ok(());
        }
        let end = offset + len;
        let (first, last) = block_span(offset, len);
        let _guard = self.write_locks.lock(first, last);
        let inner_start = align_up(offset, BLOCK_SIZE);
        let inner_end = align_down(end, BLOCK_SIZE);
        if inner_start >= inner_end {
            return self.write_locked(&state, offset, &zeros(len));
        }
        if offset < inner_start {
            self.write_locked(&state, offset, &zeros(inner_start - offset))?;
        }
        if inner_end < end {
            self.write_locked(&state, inner_end, &zeros(end - inner_end))?;
        }
        let head = state.head_index();
        let file = &state.head().file;
        let segments = self
            .map
            .read()
            .segments(inner_start / BLOCK_SIZE, inner_end / BLOCK_SIZE);
        for seg in segments {
            let (start, seg_len) = (seg.start * BLOCK_SIZE, (seg.end - seg.start) * BLOCK_SIZE);
            let new_owner = match (seg.owner, mode) {
                (None, ZeroMode::MayUnmap) => continue,
                (Some(o), ZeroMode::MayUnmap) if o.layer == head && !o.has_lower => {
                    file.punch_hole(start, seg_len)?;
                    None
                }
                (owner, _) => {
                    write_zeros_at(file, start, seg_len)?;
                    let has_lower = owner.is_some_and(|o| o.layer != head || o.has_lower);
                    Some(Owner {
                        layer: head,
                        has_lower,
                    })
                }
            };
            self.map.write().set(seg.start, seg.end, new_owner);
        }
        Ok(())
    }

    /// Discards `len` bytes at `offset`: the same as [`Store::write_zeroes`] with
    /// [`ZeroMode::MayUnmap`]. The range reads as zeros afterwards.
    pub fn trim(&self, offset: u64, len: u64) -> Result<(), StoreError> {
        self.write_zeroes(offset, len, ZeroMode::MayUnmap)
    }

    /// Makes every completed write durable (fdatasync of the head).
    pub fn flush(&self) -> Result<(), StoreError> {
        let state = self.state.read();
        self.check_healthy()?;
        state.head().file.sync_data()
    }

    /// Describes `len` bytes at `offset` as data and zero extents, from the location map
    /// (no data is read). Data extents may still contain zeros that were written.
    pub fn block_status(&self, offset: u64, len: u64) -> Result<Vec<Extent>, StoreError> {
        let state = self.state.read();
        self.check(&state, offset, len)?;
        let (first, last) = block_span(offset, len);
        Ok(status_through(
            &self.map.read().segments(first, last),
            offset,
            len,
        ))
    }

    /// Reads through the map; the caller holds `state`.
    pub(crate) fn read_locked(
        &self,
        state: &State,
        offset: u64,
        buf: &mut [u8],
    ) -> Result<(), StoreError> {
        // The segments are copied out so the map lock is not held during disk reads.
        let (first, last) = block_span(offset, buf.len() as u64);
        let segments = self.map.read().segments(first, last);
        read_through(&segments, &state.chain, offset, buf)
    }

    /// Writes into the head; the caller holds `state` and the range lock of the blocks.
    /// A partial block that the head does not hold yet is first filled from the layers
    /// below (read-modify-write), because a block in the head must be whole.
    fn write_locked(&self, state: &State, offset: u64, data: &[u8]) -> Result<(), StoreError> {
        let head = state.head_index();
        let file = &state.head().file;
        let end = offset + data.len() as u64;
        let (first, last) = block_span(offset, data.len() as u64);
        let aligned = offset % BLOCK_SIZE == 0 && end % BLOCK_SIZE == 0;
        let resident = self.map.read().all_owned_by(first, last, head);
        if aligned || resident {
            file.write_at(data, offset)?;
        } else {
            let (start, stop) = (first * BLOCK_SIZE, last * BLOCK_SIZE);
            let mut block = vec![0; to_usize(stop - start)];
            let edge = to_usize(BLOCK_SIZE);
            let tail = block.len() - edge;
            if offset > start {
                self.read_locked(state, start, &mut block[..edge])?;
            }
            if end < stop {
                self.read_locked(state, stop - BLOCK_SIZE, &mut block[tail..])?;
            }
            block[to_usize(offset - start)..to_usize(end - start)].copy_from_slice(data);
            file.write_at(&block, start)?;
        }
        if !resident {
            let mut map = self.map.write();
            for seg in map.segments(first, last) {
                let has_lower = seg.owner.is_some_and(|o| o.layer != head || o.has_lower);
                map.set(
                    seg.start,
                    seg.end,
                    Some(Owner {
                        layer: head,
                        has_lower,
                    }),
                );
            }
        }
        Ok(())
    }

    fn check(&self, state: &State, offset: u64, len: u64) -> Result<(), StoreError> {
        self.check_healthy()?;
        let size = state.meta.size;
        match offset.checked_add(len) {
            Some(end) if end <= size => Ok(()),
            _ => Err(StoreError::OutOfRange { offset, len, size }),
        }
    }

    pub(crate) fn check_healthy(&self) -> Result<(), StoreError> {
        if self.poisoned.load(Ordering::Acquire) {
            return Err(StoreError::Poisoned {
                dir: self.dir.clone(),
            });
        }
        Ok(())
    }

    /// Commits new metadata. If the commit fails, the disk may hold either version, so the
    /// store is poisoned: it refuses all work until reopened from disk.
    pub(crate) fn commit(&self, state: &mut State, meta: VolumeMeta) -> Result<(), StoreError> {
        if let Err(e) = meta.save(&self.dir) {
            self.poison(&e);
            return Err(e);
        }
        state.meta = meta;
        Ok(())
    }

    /// Refuses all further work until the store is reopened from disk.
    pub(crate) fn poison(&self, cause: &StoreError) {
        self.poisoned.store(true, Ordering::Release);
        tracing::error!(dir = %self.dir.display(), error = %cause, "store state uncertain; it must be reopened");
    }
}

/// Reads `buf.len()` bytes at `offset` of `chain`, whose map covers those blocks with
/// `segments`.
pub(crate) fn read_through(
    segments: &[Segment],
    chain: &[ChainLayer],
    offset: u64,
    buf: &mut [u8],
) -> Result<(), StoreError> {
    let end = offset + buf.len() as u64;
    for seg in segments {
        let start = (seg.start * BLOCK_SIZE).max(offset);
        let seg_end = (seg.end * BLOCK_SIZE).min(end);
        let part = &mut buf[to_usize(start - offset)..to_usize(seg_end - offset)];
        match seg.owner {
            None => part.fill(0),
            Some(owner) => chain[owner.layer as usize].file.read_at(part, start)?,
        }
    }
    Ok(())
}

/// Data and zero extents of `len` bytes at `offset`, from the map's `segments` alone.
pub(crate) fn status_through(segments: &[Segment], offset: u64, len: u64) -> Vec<Extent> {
    let end = offset + len;
    let mut out = Vec::new();
    for seg in segments {
        let start = (seg.start * BLOCK_SIZE).max(offset);
        let seg_end = (seg.end * BLOCK_SIZE).min(end);
        let kind = if seg.owner.is_some() {
            ExtentKind::Data
        } else {
            ExtentKind::Zero
        };
        Extent::push_merged(
            &mut out,
            Extent {
                offset: start,
                len: seg_end - start,
                kind,
            },
        );
    }
    out
}

/// Builds the location map of a chain from its files' data extents.
pub(crate) fn build_map(chain: &[ChainLayer]) -> Result<ExtentMap, StoreError> {
    let extents = chain
        .iter()
        .map(|l| l.file.data_extents())
        .collect::<Result<Vec<_>, StoreError>>()?;
    Ok(ExtentMap::build(&extents))
}

/// Removes what interrupted operations leave behind before they commit (a temp metadata
/// file, layer files the metadata does not name) or after (files of dropped layers).
/// None of it holds committed data. Other files are left alone.
fn remove_debris(dir: &Path, meta: &VolumeMeta) -> Result<(), StoreError> {
    let entries = fs::read_dir(dir).map_err(|e| io_error("listing", dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| io_error("listing", dir, e))?;
        let file_name = entry.file_name();
        let file_name = file_name.to_string_lossy();
        let orphan = match layer_id_from_file_name(&file_name) {
            Some(id) => meta.layer(id).is_none(),
            None => file_name == METADATA_TEMP_FILE,
        };
        if orphan {
            tracing::warn!(path = %entry.path().display(), "removing file left by an interrupted operation");
            fs::remove_file(entry.path()).map_err(|e| io_error("removing", &entry.path(), e))?;
        }
    }
    Ok(())
}

/// Blocks `first..last` touched by `len` bytes at `offset`.
pub(crate) fn block_span(offset: u64, len: u64) -> (u64, u64) {
    (
        offset / BLOCK_SIZE,
        align_up(offset + len, BLOCK_SIZE) / BLOCK_SIZE,
    )
}

/// Writes `len` zero bytes at `offset` of `file`.
pub(crate) fn write_zeros_at(file: &LayerFile, offset: u64, len: u64) -> Result<(), StoreError> {
    let mut done = 0;
    while done < len {
        let n = (len - done).min(ZEROS.len() as u64);
        file.write_at(&ZEROS[..to_usize(n)], offset + done)?;
        done += n;
    }
    Ok(())
}

fn zeros(len: u64) -> Vec<u8> {
    vec![0; to_usize(len)]
}

/// Converts an in-memory length to `usize`; callers pass lengths of buffers that exist.
pub(crate) fn to_usize(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}
