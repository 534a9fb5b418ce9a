//! Open time and location-map memory of a large, fragmented volume.
//!
//! The volume is built through the store API: a sparse volume of `size` bytes gets
//! `extents` single 4 KiB blocks at distinct, pairwise non-adjacent random offsets (so
//! each is its own extent), spread evenly over `layers` layers: the blocks of one layer
//! are written, a snapshot is taken, and so on; the last layer is the head. Then the store
//! is dropped and [`Store::open`] is timed while the counting allocator measures the heap
//! it retains and its peak.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use rand::rngs::SmallRng;
use rand::seq::SliceRandom;
use rand::{Rng, RngCore, SeedableRng};
use shorthorn_block::BLOCK_SIZE;
use shorthorn_store::{SnapshotKind, Store, StoreError};

use crate::alloc_counter::{self, HeapUse};
use crate::machine::{CpuSample, CpuShare};
use crate::report;
use crate::workdir::remove_in_parallel;

/// Bytes per written block: the store's allocation unit.
const BLOCK: u64 = BLOCK_SIZE;

/// The volume to build and open.
#[derive(Debug, Clone)]
pub struct OpenConfig {
    /// Directory to build the volume in (a subdirectory is made and removed).
    pub dir: PathBuf,
    /// Volume size in bytes.
    pub size: u64,
    /// Layers in the chain: `layers - 1` snapshots plus the head.
    pub layers: usize,
    /// Extents (single written blocks) over all layers.
    pub extents: u64,
    /// Threads writing the blocks while building.
    pub threads: usize,
    /// Warm-cache opens to time.
    pub opens: usize,
}

impl OpenConfig {
    /// Checks that the volume can be built, so a run fails before it spends time.
    pub fn validate(&self) -> Result<()> {
        if self.layers == 0 || self.extents == 0 || self.opens == 0 || self.threads == 0 {
            bail!("the open benchmark needs at least one layer, extent, open and thread");
        }
        if self.stride() < 3 {
            let blocks = self.size / BLOCK;
            bail!(
                "a {} volume has room for at most {} non-adjacent single-block extents, not {}",
                report::bytes(self.size),
                report::count(blocks / 3),
                report::count(self.extents)
            );
        }
        Ok(())
    }

    /// Blocks per stratum: each extent is one block in its own stratum, never in the
    /// stratum's last block, so no two are adjacent.
    fn stride(&self) -> u64 {
        (self.size / BLOCK).checked_div(self.extents).unwrap_or(0)
    }
}

/// One timed open.
#[derive(Debug, Clone, Copy)]
pub struct OpenRun {
    /// Wall time of `Store::open`.
    pub time: Duration,
    /// Extents in the opened store's map.
    pub map_extents: usize,
    /// Heap the open store retains, and the peak while it opened.
    pub heap: HeapUse,
    /// CPU time (user + system) the open used, if `/proc` told.
    pub cpu: Option<Duration>,
    /// CPU time other processes took meanwhile, if `/proc` told.
    pub background: Option<CpuShare>,
}

/// What the open benchmark found.
#[derive(Debug, Clone)]
pub struct OpenResult {
    /// Time to write the blocks and take the snapshots.
    pub build_time: Duration,
    /// Bytes written while building.
    pub bytes_written: u64,
    /// Extents in the map of the store that built the volume.
    pub built_map_extents: usize,
    /// Syncs retried after a spurious ENOSPC while building (see [`retry_no_space`]).
    pub no_space_retries: u32,
    /// An open after dropping the page cache, or why there was none.
    pub cold: Result<OpenRun, String>,
    /// Opens with a warm page cache.
    pub warm: Vec<OpenRun>,
}

impl OpenResult {
    /// The warm open with the median wall time.
    pub fn median_warm(&self) -> Option<OpenRun> {
        let mut runs = self.warm.clone();
        runs.sort_by_key(|r| r.time);
        runs.get(runs.len() / 2).copied()
    }
}

/// Builds the volume, times its opens, and removes it.
pub fn run(cfg: &OpenConfig) -> Result<OpenResult> {
    cfg.validate()?;
    let volume = cfg.dir.join("open-volume");
    let built = build(cfg, &volume)?;
    let cold = cold_open(&volume);
    match &cold {
        Ok(run) => println!(
            "  cold-cache open: {}{}",
            report::seconds(run.time),
            cpu_note(run)
        ),
        Err(why) => println!("  cold-cache open not possible ({why}): warm cache only"),
    }
    let mut warm = Vec::with_capacity(cfg.opens);
    for _ in 0..cfg.opens {
        let run = timed_open(&volume)?;
        println!(
            "  warm-cache open: {}{}",
            report::seconds(run.time),
            cpu_note(&run)
        );
        warm.push(run);
    }
    let removing = Instant::now();
    remove_volume(&volume)?;
    println!(
        "  removed the volume in {:.1} s",
        removing.elapsed().as_secs_f64()
    );
    Ok(OpenResult {
        build_time: built.time,
        bytes_written: cfg.extents * BLOCK,
        built_map_extents: built.map_extents,
        no_space_retries: built.no_space_retries,
        cold,
        warm,
    })
}

/// What building the volume took.
struct Built {
    time: Duration,
    map_extents: usize,
    no_space_retries: u32,
}

/// How often a syncing step is retried after a spurious "no space" error.
const NO_SPACE_RETRIES: u32 = 20;

/// Runs a store step that syncs data (snapshot, flush), retrying it when it fails with
/// ENOSPC. On ext4 mounted without a journal, writeback of delayed allocations can fail
/// with ENOSPC while the filesystem has plenty of free space (the kernel only retries that
/// case by committing the journal, and there is none); the pages stay dirty and a later
/// sync succeeds. Returns how many retries were needed.
fn retry_no_space(what: &str, mut step: impl FnMut() -> Result<(), StoreError>) -> Result<u32> {
    let mut retries = 0;
    loop {
        match step() {
            Ok(()) => return Ok(retries),
            Err(e) if e.is_no_space() && retries < NO_SPACE_RETRIES => {
                retries += 1;
                println!("    {what}: {e}; retrying ({retries}/{NO_SPACE_RETRIES})");
                std::thread::sleep(Duration::from_millis(200) * retries);
            }
            Err(e) => return Err(e).with_context(|| what.to_owned()),
        }
    }
}

/// `" (CPU 1.234 s, other load 5%)"`, or nothing when `/proc` was silent.
fn cpu_note(run: &OpenRun) -> String {
    match (run.cpu, run.background) {
        (Some(cpu), Some(bg)) => format!(
            " (CPU {}, other load {:.0}%)",
            report::seconds(cpu),
            (bg.others + bg.steal) * 100.0
        ),
        _ => String::new(),
    }
}

/// Writes the layers and snapshots.
fn build(cfg: &OpenConfig, volume: &Path) -> Result<Built> {
    let stride = cfg.stride();
    println!(
        "  building: {} volume, {} layers, {} single-block extents ({} to write)...",
        report::bytes(cfg.size),
        cfg.layers,
        report::count(cfg.extents),
        report::bytes(cfg.extents * BLOCK)
    );
    let start = Instant::now();
    let store = Store::create(volume, "open-bench", cfg.size)
        .with_context(|| format!("creating store {}", volume.display()))?;
    let mut rng = SmallRng::seed_from_u64(0x0be7_c4a1);
    let mut offsets: Vec<u64> = (0..cfg.extents)
        .map(|i| (i * stride + rng.random_range(0..stride - 1)) * BLOCK)
        .collect();
    offsets.shuffle(&mut rng);
    let layers = cfg.layers as u64;
    let total = cfg.extents;
    let progress_every = cfg.layers.div_ceil(8);
    let mut in_snapshots = Duration::ZERO;
    let mut retries = 0;
    for layer in 0..cfg.layers {
        let lo = to_index(total * layer as u64 / layers)?;
        let hi = to_index(total * (layer as u64 + 1) / layers)?;
        let mine = &mut offsets[lo..hi];
        mine.sort_unstable();
        write_blocks(&store, mine, cfg.threads, &mut rng)?;
        if layer + 1 < cfg.layers {
            let snapshot_start = Instant::now();
            store
                .snapshot(
                    &format!("layer-{layer:03}"),
                    SnapshotKind::User,
                    BTreeMap::new(),
                )
                .with_context(|| format!("snapshot after layer {layer}"))?;
            in_snapshots += snapshot_start.elapsed();
        }
        if (layer + 1) % progress_every == 0 || layer + 1 == cfg.layers {
            println!(
                "    layer {:>3}/{}: {} extents written, {:.1} s ({:.1} s of it in snapshots)",
                layer + 1,
                cfg.layers,
                report::count(hi as u64),
                start.elapsed().as_secs_f64(),
                in_snapshots.as_secs_f64()
            );
        }
    }
    retries += retry_no_space("flushing the built volume", || store.flush())?;
    let built = store.map_extents();
    drop(store);
    Ok(Built {
        time: start.elapsed(),
        map_extents: built,
        no_space_retries: retries,
    })
}

fn to_index(n: u64) -> Result<usize> {
    usize::try_from(n).context("extent count does not fit in memory")
}

/// Writes one 4 KiB block at each offset, splitting the offsets over `threads` threads.
fn write_blocks(store: &Store, offsets: &[u64], threads: usize, rng: &mut SmallRng) -> Result<()> {
    let mut block = vec![0u8; 4096];
    rng.fill_bytes(&mut block);
    let block = &block;
    let per_thread = offsets.len().div_ceil(threads.max(1)).max(1);
    std::thread::scope(|scope| {
        let workers: Vec<_> = offsets
            .chunks(per_thread)
            .map(|chunk| {
                scope.spawn(move || -> Result<()> {
                    for &offset in chunk {
                        store
                            .write(offset, block)
                            .with_context(|| format!("writing the block at {offset}"))?;
                    }
                    Ok(())
                })
            })
            .collect();
        for w in workers {
            w.join()
                .map_err(|_| anyhow!("a writer thread panicked"))??;
        }
        Ok(())
    })
}

/// Removes the volume directory, unlinking its layer files in parallel.
fn remove_volume(volume: &Path) -> Result<()> {
    let files = fs::read_dir(volume)
        .with_context(|| format!("listing {}", volume.display()))?
        .map(|entry| entry.map(|e| e.path()))
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("listing {}", volume.display()))?;
    remove_in_parallel(&files)?;
    fs::remove_dir(volume).with_context(|| format!("removing {}", volume.display()))
}

/// Opens the volume, timing it and measuring its heap use.
fn timed_open(volume: &Path) -> Result<OpenRun> {
    let before = CpuSample::now();
    let ((opened, time), heap) = alloc_counter::track(|| {
        let start = Instant::now();
        let opened = Store::open(volume);
        (opened, start.elapsed())
    });
    let after = CpuSample::now();
    let store = opened.with_context(|| format!("opening {}", volume.display()))?;
    let map_extents = store.map_extents();
    drop(store);
    let samples = before.zip(after);
    Ok(OpenRun {
        time,
        map_extents,
        heap,
        cpu: samples.map(|(b, a)| Duration::from_secs_f64(a.own_seconds_since(&b))),
        background: samples.and_then(|(b, a)| a.share_since(&b)),
    })
}

/// Syncs, drops the page cache and opens; says why not if the cache cannot be dropped.
fn cold_open(volume: &Path) -> Result<OpenRun, String> {
    let synced = Command::new("sync")
        .status()
        .map_err(|e| format!("running sync: {e}"))?;
    if !synced.success() {
        return Err(format!("sync exited with {synced}"));
    }
    fs::write("/proc/sys/vm/drop_caches", "3")
        .map_err(|e| format!("writing 3 to /proc/sys/vm/drop_caches: {e}"))?;
    timed_open(volume).map_err(|e| format!("{e:#}"))
}
