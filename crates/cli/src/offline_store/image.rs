//! `shorthorn store import|export|map`: raw images in and out of a volume, sparsely, and
//! the volume's block status.

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use shorthorn_block::{BLOCK_SIZE, Extent, ExtentKind, ZeroMode};
use shorthorn_store::{SnapshotView, Store, StoreError};

use super::{open, size_arg};
use crate::output::{self, outln};
use shorthorn_block::size::{format_size, format_size_exact};

/// Bytes read or written per step.
const CHUNK: usize = 1 << 20;
/// Granularity of hole detection: the store's block size.
const BLOCK: usize = 4096;
/// Files at least this large get progress lines on stderr.
const PROGRESS_THRESHOLD: u64 = 64 << 20;
/// Time between progress lines.
const PROGRESS_INTERVAL: Duration = Duration::from_secs(2);

const _: () = assert!(BLOCK as u64 == BLOCK_SIZE && CHUNK % BLOCK == 0);

/// Copy a raw image FILE into the volume, from offset 0.
///
/// FILE is read in 1 MiB chunks; 4 KiB blocks that are all zeros are not written (where
/// the volume holds data they are zeroed), so holes stay holes and the volume stays
/// thin. Bytes past the end of FILE are left as they are. A FILE larger than the volume
/// is refused before anything is written. Large files report progress on stderr; at the
/// end the data is flushed and a summary is printed.
#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The replica directory.
    dir: PathBuf,
    /// The raw image to read (a regular file, or a device or pipe).
    file: PathBuf,
}

/// What an import did.
#[derive(Debug, Default)]
struct ImportStats {
    read: u64,
    written: u64,
    zeros_skipped: u64,
}

pub fn import(args: &ImportArgs) -> anyhow::Result<()> {
    let store = open(&args.dir)?;
    let size = store.size();
    let mut file =
        File::open(&args.file).with_context(|| format!("opening {}", args.file.display()))?;
    let meta = file
        .metadata()
        .with_context(|| format!("stat {}", args.file.display()))?;
    let total = meta.is_file().then_some(meta.len());
    if let Some(len) = total {
        if len > size {
            bail!(
                "{} is {}, larger than the volume ({}); expand the volume first",
                args.file.display(),
                format_size_exact(len),
                format_size_exact(size)
            );
        }
    }
    let context = || {
        format!(
            "importing {} into the volume in {}",
            args.file.display(),
            args.dir.display()
        )
    };
    let mut progress = Progress::new("import", total.filter(|&t| t >= PROGRESS_THRESHOLD));
    let mut stats = ImportStats::default();
    let mut buf = vec![0; CHUNK];
    loop {
        let n = read_full(&mut file, &mut buf)
            .with_context(|| format!("reading {}", args.file.display()))?;
        if n == 0 {
            break;
        }
        let offset = stats.read;
        if offset + n as u64 > size {
            bail!(
                "{} holds more than the volume's {}; expand the volume first (the first {} \
                 were imported)",
                args.file.display(),
                format_size_exact(size),
                format_size(offset)
            );
        }
        import_chunk(&store, offset, &buf[..n], &mut stats).with_context(context)?;
        stats.read += n as u64;
        progress.update(stats.read);
        if n < buf.len() {
            break;
        }
    }
    store.flush().with_context(context)?;
    progress.finish(stats.read);
    outln!(
        "imported {} into volume {:?}: {} read, {} written, {} of zeros skipped",
        args.file.display(),
        store.name(),
        format_size_exact(stats.read),
        format_size(stats.written),
        format_size(stats.zeros_skipped)
    )?;
    Ok(())
}

/// Reads until `buf` is full or the input ends; returns the bytes read.
fn read_full(file: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// Writes `data` at `offset` run by run: runs of non-zero blocks are written; runs of
/// zero blocks are skipped, or zeroed where the volume holds data.
fn import_chunk(
    store: &Store,
    offset: u64,
    data: &[u8],
    stats: &mut ImportStats,
) -> anyhow::Result<()> {
    for (start, end, zero) in runs(data) {
        let at = offset + start as u64;
        let part = &data[start..end];
        if !zero {
            store.write(at, part)?;
            stats.written += part.len() as u64;
            continue;
        }
        stats.zeros_skipped += part.len() as u64;
        let len = part.len() as u64;
        let holds_data = store
            .block_status(at, len)?
            .iter()
            .any(|e| e.kind == ExtentKind::Data);
        if holds_data {
            store.write_zeroes(at, len, ZeroMode::MayUnmap)?;
        }
    }
    Ok(())
}

/// Splits `data` into maximal runs of 4 KiB blocks (the last one may be shorter) that
/// are all zeros or not: `(start, end, all_zero)`.
fn runs(data: &[u8]) -> Vec<(usize, usize, bool)> {
    let mut out: Vec<(usize, usize, bool)> = Vec::new();
    for (i, block) in data.chunks(BLOCK).enumerate() {
        let start = i * BLOCK;
        let end = start + block.len();
        let zero = block.iter().all(|&b| b == 0);
        match out.last_mut() {
            Some(last) if last.2 == zero => last.1 = end,
            _ => out.push((start, end, zero)),
        }
    }
    out
}

/// Progress lines on stderr for long copies.
struct Progress {
    what: &'static str,
    total: Option<u64>,
    started: Instant,
    last: Instant,
}

impl Progress {
    /// Reports progress only when `total` is set.
    fn new(what: &'static str, total: Option<u64>) -> Self {
        let now = Instant::now();
        Progress {
            what,
            total,
            started: now,
            last: now,
        }
    }

    fn update(&mut self, done: u64) {
        let Some(total) = self.total else {
            return;
        };
        if self.last.elapsed() < PROGRESS_INTERVAL {
            return;
        }
        self.last = Instant::now();
        let percent = u128::from(done) * 100 / u128::from(total.max(1));
        output::note(format_args!(
            "{}: {} of {} ({percent}%)",
            self.what,
            format_size(done),
            format_size(total)
        ));
    }

    fn finish(&self, done: u64) {
        if self.total.is_some() {
            output::note(format_args!(
                "{}: {} done in {:.1?}",
                self.what,
                format_size(done),
                self.started.elapsed()
            ));
        }
    }
}

/// Write the volume out to FILE as a raw, sparse image.
///
/// FILE is created or overwritten and set to the volume's size; only the data extents
/// the volume's block status reports are read and written (all-zero blocks inside them
/// are skipped too), so holes stay holes. The file is synced at the end. Prints the
/// bytes of data written.
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// The replica directory.
    dir: PathBuf,
    /// The raw image to write.
    file: PathBuf,
    /// Export what this snapshot held instead of the volume's current content.
    #[arg(long)]
    snapshot: Option<String>,
}

/// What can be exported: the volume or one of its snapshots.
trait ImageSource {
    fn size(&self) -> u64;
    fn block_status(&self, offset: u64, len: u64) -> Result<Vec<Extent>, StoreError>;
    fn read(&self, offset: u64, buf: &mut [u8]) -> Result<(), StoreError>;
}

impl ImageSource for Store {
    fn size(&self) -> u64 {
        Store::size(self)
    }
    fn block_status(&self, offset: u64, len: u64) -> Result<Vec<Extent>, StoreError> {
        Store::block_status(self, offset, len)
    }
    fn read(&self, offset: u64, buf: &mut [u8]) -> Result<(), StoreError> {
        Store::read(self, offset, buf)
    }
}

impl ImageSource for SnapshotView {
    fn size(&self) -> u64 {
        SnapshotView::size(self)
    }
    fn block_status(&self, offset: u64, len: u64) -> Result<Vec<Extent>, StoreError> {
        SnapshotView::block_status(self, offset, len)
    }
    fn read(&self, offset: u64, buf: &mut [u8]) -> Result<(), StoreError> {
        SnapshotView::read(self, offset, buf)
    }
}

pub fn export(args: &ExportArgs) -> anyhow::Result<()> {
    let store = open(&args.dir)?;
    if is_inside(&args.file, &args.dir) {
        bail!(
            "refusing to export to {}: it is inside the replica directory {}",
            args.file.display(),
            args.dir.display()
        );
    }
    let result = match &args.snapshot {
        Some(name) => {
            let view = store
                .snapshot_view(name)
                .with_context(|| format!("opening snapshot {name:?}"))?;
            export_to(
                &view,
                &format!("snapshot {name:?} of volume {:?}", store.name()),
                &args.file,
            )
        }
        None => export_to(&store, &format!("volume {:?}", store.name()), &args.file),
    };
    result.with_context(|| {
        format!(
            "exporting the volume in {} to {}",
            args.dir.display(),
            args.file.display()
        )
    })
}

/// True when `file` would be created in directory `dir` (after resolving links).
fn is_inside(file: &Path, dir: &Path) -> bool {
    let parent = match file.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    match (fs::canonicalize(parent), fs::canonicalize(dir)) {
        (Ok(parent), Ok(dir)) => parent == dir,
        _ => false,
    }
}

fn export_to(store: &impl ImageSource, what: &str, path: &Path) -> anyhow::Result<()> {
    let size = store.size();
    let out = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    out.set_len(size)
        .with_context(|| format!("setting the length of {}", path.display()))?;
    let extents = store.block_status(0, size)?;
    let data_total = extents
        .iter()
        .filter(|e| e.kind == ExtentKind::Data)
        .map(|e| e.len)
        .sum();
    let mut progress = Progress::new(
        "export",
        (data_total >= PROGRESS_THRESHOLD).then_some(data_total),
    );
    let (mut done, mut written) = (0, 0);
    let mut buf = vec![0; CHUNK];
    for extent in extents.iter().filter(|e| e.kind == ExtentKind::Data) {
        let mut at = extent.offset;
        while at < extent.end() {
            let n = (extent.end() - at).min(CHUNK as u64);
            let part = &mut buf[..usize::try_from(n)?];
            store.read(at, part)?;
            for (start, end, zero) in runs(part) {
                if !zero {
                    out.write_all_at(&part[start..end], at + start as u64)
                        .with_context(|| format!("writing {}", path.display()))?;
                    written += (end - start) as u64;
                }
            }
            at += n;
            done += n;
            progress.update(done);
        }
    }
    out.sync_all()
        .with_context(|| format!("syncing {}", path.display()))?;
    progress.finish(done);
    outln!(
        "exported {what} to {}: {} image, {} of data written",
        path.display(),
        format_size_exact(size),
        format_size(written)
    )?;
    Ok(())
}

/// Show which ranges of the volume hold data and which are holes (block status).
///
/// Prints one line per extent: its offset and length in bytes and "data" or "zero".
/// "zero" ranges are unallocated and read as zeros; "data" ranges are allocated in some
/// layer of the chain (and may still hold zeros that were written). The status comes
/// from the location map; no data is read.
#[derive(Debug, Args)]
pub struct MapArgs {
    /// The replica directory.
    dir: PathBuf,
    /// Where to start, in bytes or with a unit (e.g. 1M).
    #[arg(long, default_value = "0", value_parser = size_arg)]
    offset: u64,
    /// How much to describe, in bytes or with a unit; defaults to the rest of the volume.
    #[arg(long, value_parser = size_arg)]
    length: Option<u64>,
}

pub fn map(args: &MapArgs) -> anyhow::Result<()> {
    let store = open(&args.dir)?;
    let size = store.size();
    if args.offset > size {
        bail!(
            "offset {} is past the end of the volume ({})",
            args.offset,
            format_size_exact(size)
        );
    }
    let length = args.length.unwrap_or(size - args.offset);
    if args.offset.checked_add(length).is_none_or(|end| end > size) {
        bail!(
            "offset {} plus length {length} reaches past the end of the volume ({})",
            args.offset,
            format_size_exact(size)
        );
    }
    let extents = store.block_status(args.offset, length).with_context(|| {
        format!(
            "reading the block status of the volume in {}",
            args.dir.display()
        )
    })?;
    let width = size.to_string().len().max("LENGTH".len());
    outln!("{:<width$}  {:<width$}  KIND", "OFFSET", "LENGTH")?;
    for extent in &extents {
        let kind = match extent.kind {
            ExtentKind::Data => "data",
            ExtentKind::Zero => "zero",
        };
        outln!("{:<width$}  {:<width$}  {kind}", extent.offset, extent.len)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_split_zero_and_data_blocks() {
        let mut data = vec![0u8; 5 * BLOCK + 100];
        data[BLOCK + 7] = 1;
        data[2 * BLOCK] = 2;
        data[5 * BLOCK + 99] = 3;
        assert_eq!(
            runs(&data),
            vec![
                (0, BLOCK, true),
                (BLOCK, 3 * BLOCK, false),
                (3 * BLOCK, 5 * BLOCK, true),
                (5 * BLOCK, 5 * BLOCK + 100, false),
            ]
        );
        assert_eq!(runs(&[]), vec![]);
        assert_eq!(runs(&[0; 10]), vec![(0, 10, true)]);
    }

    #[test]
    fn read_full_fills_across_short_reads() {
        let input = [7u8; 10];
        let mut reader = std::io::Read::chain(&input[..4], &input[4..]);
        let mut buf = [0u8; 8];
        assert_eq!(read_full(&mut reader, &mut buf).unwrap(), 8);
        assert_eq!(read_full(&mut reader, &mut buf).unwrap(), 2);
        assert_eq!(read_full(&mut reader, &mut buf).unwrap(), 0);
    }
}
