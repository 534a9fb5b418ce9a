//! One layer's sparse file: positioned I/O, hole punching and data-extent scanning.
//! Every error names the file.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use rustix::fs::{FallocateFlags, SeekFrom};
use shorthorn_block::{BLOCK_SIZE, align_down, align_up};

use crate::error::{StoreError, io_error};

/// An open layer file.
pub struct LayerFile {
    file: File,
    path: PathBuf,
}

impl LayerFile {
    /// Opens an existing layer file for reading and writing.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|e| io_error("opening layer", path, e))?;
        Ok(LayerFile {
            file,
            path: path.to_owned(),
        })
    }

    /// Creates a new, empty (all-hole) layer file of `size` bytes and makes it durable.
    /// Fails if the file exists.
    pub fn create(path: &Path, size: u64) -> Result<Self, StoreError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(path)
            .map_err(|e| io_error("creating layer", path, e))?;
        let layer = LayerFile {
            file,
            path: path.to_owned(),
        };
        layer.set_len(size)?;
        layer.sync_all()?;
        Ok(layer)
    }

    /// The file's length in bytes.
    pub fn len(&self) -> Result<u64, StoreError> {
        Ok(self.metadata()?.len())
    }

    /// Fills `buf` from `offset`.
    pub fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<(), StoreError> {
        self.file
            .read_exact_at(buf, offset)
            .map_err(|e| self.error("reading", offset, e))
    }

    /// Writes all of `buf` at `offset`.
    pub fn write_at(&self, buf: &[u8], offset: u64) -> Result<(), StoreError> {
        self.file
            .write_all_at(buf, offset)
            .map_err(|e| self.error("writing", offset, e))
    }

    /// Deallocates `len` bytes at `offset`; they read back as zeros.
    pub fn punch_hole(&self, offset: u64, len: u64) -> Result<(), StoreError> {
        let flags = FallocateFlags::PUNCH_HOLE | FallocateFlags::KEEP_SIZE;
        rustix::fs::fallocate(&self.file, flags, offset, len)
            .map_err(|e| self.error("punching a hole", offset, e.into()))
    }

    /// Makes written data (and the allocation it needs) durable.
    pub fn sync_data(&self) -> Result<(), StoreError> {
        self.file
            .sync_data()
            .map_err(|e| io_error("syncing layer", &self.path, e))
    }

    /// Makes data and all file metadata (length included) durable.
    pub fn sync_all(&self) -> Result<(), StoreError> {
        self.file
            .sync_all()
            .map_err(|e| io_error("syncing layer", &self.path, e))
    }

    /// Sets the file length (growing adds a hole).
    pub fn set_len(&self, size: u64) -> Result<(), StoreError> {
        self.file
            .set_len(size)
            .map_err(|e| io_error("resizing layer", &self.path, e))
    }

    /// The block ranges `(start, end)` that hold data, in order, found with
    /// SEEK_DATA/SEEK_HOLE. Ranges are widened to whole blocks.
    pub fn data_extents(&self) -> Result<Vec<(u64, u64)>, StoreError> {
        let len = self.len()?;
        let mut extents: Vec<(u64, u64)> = Vec::new();
        let mut position = 0;
        while position < len {
            let data = match rustix::fs::seek(&self.file, SeekFrom::Data(position)) {
                Ok(at) => at,
                Err(rustix::io::Errno::NXIO) => break,
                Err(e) => return Err(self.error("seeking data", position, e.into())),
            };
            let hole = rustix::fs::seek(&self.file, SeekFrom::Hole(data))
                .map_err(|e| self.error("seeking a hole", data, e.into()))?;
            let start = align_down(data, BLOCK_SIZE) / BLOCK_SIZE;
            let end = align_up(hole.min(len), BLOCK_SIZE) / BLOCK_SIZE;
            match extents.last_mut() {
                Some(last) if last.1 >= start => last.1 = last.1.max(end),
                _ => extents.push((start, end)),
            }
            position = hole.max(data + 1);
        }
        Ok(extents)
    }

    /// Checks that the filesystem under this file tracks holes at a granularity the store
    /// can use (blocks of at most 4 KiB that divide it).
    pub fn check_filesystem(&self) -> Result<(), StoreError> {
        let stat = rustix::fs::fstatvfs(&self.file)
            .map_err(|e| io_error("statfs", &self.path, e.into()))?;
        if stat.f_bsize == 0 || stat.f_bsize > BLOCK_SIZE || BLOCK_SIZE % stat.f_bsize != 0 {
            return Err(StoreError::UnsupportedFilesystem {
                path: self.path.clone(),
                reason: format!(
                    "filesystem block size {} does not divide the store's {} byte block",
                    stat.f_bsize, BLOCK_SIZE
                ),
            });
        }
        Ok(())
    }

    fn metadata(&self) -> Result<std::fs::Metadata, StoreError> {
        self.file
            .metadata()
            .map_err(|e| io_error("stat", &self.path, e))
    }

    fn error(&self, op: &'static str, offset: u64, source: io::Error) -> StoreError {
        StoreError::LayerIo {
            op,
            path: self.path.clone(),
            offset,
            source,
        }
    }
}
