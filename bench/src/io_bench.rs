//! The I/O comparisons: 4 KiB random write and read, 1 MiB sequential write and read, each
//! run through the store and through `pwrite`/`pread` on a plain file of the same size in
//! the same directory, with the same threads, duration and offsets.
//!
//! Baseline and store runs alternate (B S, S B, B S, ...) so drifting background load hits
//! both sides alike; the median of each side's runs is reported. Every write run starts on
//! a new sparse file or a new store (both sides write the same offsets in the same round).
//! Writes go to the page cache; the target is synced after each write run and the
//! filesystem before every run, outside the timed window, so one run's writeback does not
//! land in the next. The read phases share one file and one store, each filled once by a
//! sequential write and synced.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Barrier;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use rand::rngs::SmallRng;
use rand::{Rng, RngCore, SeedableRng};
use shorthorn_store::Store;

use crate::machine::{CpuSample, CpuShare};
use crate::report::{self, MIB};
use crate::workdir::remove_in_parallel;

/// The four measured access patterns, in report order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// 4 KiB writes at uniformly random block offsets.
    RandomWrite,
    /// 4 KiB reads at uniformly random block offsets of a fully written volume.
    RandomRead,
    /// 1 MiB writes, each thread streaming through its own slice of the volume.
    SeqWrite,
    /// 1 MiB reads, each thread streaming through its own slice of a written volume.
    SeqRead,
}

impl Phase {
    /// Every phase, in report order.
    pub const ALL: [Phase; 4] = [
        Phase::RandomWrite,
        Phase::RandomRead,
        Phase::SeqWrite,
        Phase::SeqRead,
    ];

    /// The phase's name in the report.
    pub fn label(self) -> &'static str {
        match self {
            Phase::RandomWrite => "4 KiB random write",
            Phase::RandomRead => "4 KiB random read",
            Phase::SeqWrite => "1 MiB sequential write",
            Phase::SeqRead => "1 MiB sequential read",
        }
    }

    /// The unit of the phase's figures.
    pub fn unit(self) -> &'static str {
        if self.is_random() { "IOPS" } else { "MiB/s" }
    }

    fn slug(self) -> &'static str {
        match self {
            Phase::RandomWrite => "randwrite",
            Phase::RandomRead => "randread",
            Phase::SeqWrite => "seqwrite",
            Phase::SeqRead => "seqread",
        }
    }

    fn io_size(self) -> usize {
        if self.is_random() { 4096 } else { 1 << 20 }
    }

    fn is_random(self) -> bool {
        matches!(self, Phase::RandomWrite | Phase::RandomRead)
    }

    fn is_write(self) -> bool {
        matches!(self, Phase::RandomWrite | Phase::SeqWrite)
    }
}

/// What the I/O comparisons run on.
#[derive(Debug, Clone)]
pub struct IoConfig {
    /// Directory for the files; both sides use it.
    pub dir: PathBuf,
    /// Size of the plain file and of the store volume, in bytes.
    pub size: u64,
    /// Worker threads per run.
    pub threads: usize,
    /// Length of each timed run.
    pub duration: Duration,
    /// Runs per side and phase.
    pub rounds: usize,
}

impl IoConfig {
    /// Checks the sizes, so a run fails before it spends time.
    pub fn validate(&self) -> Result<()> {
        if self.size % MIB != 0 || self.size == 0 {
            bail!("the I/O file size must be a non-zero multiple of 1 MiB");
        }
        if self.threads == 0 || self.size / MIB < self.threads as u64 {
            bail!("the I/O file size must give each thread at least 1 MiB");
        }
        Ok(())
    }
}

/// One phase's figures: one rate per run and side, in the phase's unit.
#[derive(Debug, Clone)]
pub struct PhaseResult {
    /// The phase.
    pub phase: Phase,
    /// Plain-file runs.
    pub baseline: Vec<f64>,
    /// Store runs.
    pub store: Vec<f64>,
    /// CPU time (user + system, all threads of this process) per operation of each
    /// plain-file run, in microseconds; NaN when `/proc` could not tell.
    pub baseline_cpu: Vec<f64>,
    /// The same for the store runs.
    pub store_cpu: Vec<f64>,
    /// CPU time other processes (and the hypervisor) took during the phase's runs.
    pub background: Option<CpuShare>,
}

impl PhaseResult {
    /// The median over rounds of store rate / baseline rate. Each round's two runs are
    /// adjacent in time, so this pairs runs that saw the same background load.
    pub fn ratio(&self) -> f64 {
        let ratios: Vec<f64> = self
            .store
            .iter()
            .zip(&self.baseline)
            .map(|(s, b)| s / b)
            .collect();
        report::median(&ratios)
    }

    /// The median over rounds of plain-file CPU time per operation / store CPU time per
    /// operation: the store's CPU efficiency relative to the plain file (1.0 = equal,
    /// lower = the store spends more CPU per operation). Unlike the throughput ratio it
    /// does not depend on how much of the machine other processes left to the benchmark.
    pub fn cpu_ratio(&self) -> f64 {
        let ratios: Vec<f64> = self
            .baseline_cpu
            .iter()
            .zip(&self.store_cpu)
            .map(|(b, s)| b / s)
            .filter(|r| r.is_finite())
            .collect();
        report::median(&ratios)
    }
}

/// Which implementation a run measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Baseline,
    Store,
}

/// Positioned I/O on whatever is measured.
trait Target: Sync {
    fn write_at(&self, offset: u64, data: &[u8]) -> Result<()>;
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()>;
    /// Makes written data durable (outside timed windows).
    fn sync(&self) -> Result<()>;
}

/// The baseline: a plain file driven with `pwrite`/`pread`.
struct PlainFile {
    file: File,
    path: PathBuf,
}

impl PlainFile {
    /// Creates a new sparse file of `size` bytes.
    fn create(path: &Path, size: u64) -> Result<Self> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(path)
            .with_context(|| format!("creating {}", path.display()))?;
        file.set_len(size)
            .with_context(|| format!("sizing {}", path.display()))?;
        file.sync_all()
            .with_context(|| format!("syncing {}", path.display()))?;
        Ok(PlainFile {
            file,
            path: path.to_owned(),
        })
    }
}

impl Target for PlainFile {
    fn write_at(&self, offset: u64, data: &[u8]) -> Result<()> {
        self.file
            .write_all_at(data, offset)
            .with_context(|| format!("writing {} at {offset}", self.path.display()))
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        self.file
            .read_exact_at(buf, offset)
            .with_context(|| format!("reading {} at {offset}", self.path.display()))
    }

    fn sync(&self) -> Result<()> {
        self.file
            .sync_data()
            .with_context(|| format!("syncing {}", self.path.display()))
    }
}

impl Target for Store {
    fn write_at(&self, offset: u64, data: &[u8]) -> Result<()> {
        self.write(offset, data)
            .with_context(|| format!("store write at {offset}"))
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        self.read(offset, buf)
            .with_context(|| format!("store read at {offset}"))
    }

    fn sync(&self) -> Result<()> {
        self.flush().context("store flush")
    }
}

/// Runs every phase and returns their figures in report order. Prints each phase's raw
/// runs as it finishes.
pub fn run(cfg: &IoConfig) -> Result<Vec<PhaseResult>> {
    cfg.validate()?;
    let mut results = Vec::new();
    for phase in [Phase::RandomWrite, Phase::SeqWrite] {
        // A new sparse file and a new store for every round; removed after the phase.
        let mut pairs = Vec::with_capacity(cfg.rounds);
        let mut paths = Vec::with_capacity(2 * cfg.rounds);
        for round in 0..cfg.rounds {
            let plain_path = cfg.dir.join(format!("plain-{}-{round}.img", phase.slug()));
            let store_dir = cfg.dir.join(format!("store-{}-{round}", phase.slug()));
            paths.push(plain_path.clone());
            paths.push(store_dir.clone());
            pairs.push((
                PlainFile::create(&plain_path, cfg.size)?,
                create_store(&store_dir, cfg.size)?,
            ));
        }
        results.push(run_rounds(cfg, phase, |round| {
            let (plain, store) = &pairs[round];
            (plain, store)
        })?);
        drop(pairs);
        let removing = Instant::now();
        remove_in_parallel(&paths)?;
        println!(
            "  {:<24} (files removed in {:.1} s)",
            "",
            removing.elapsed().as_secs_f64()
        );
    }
    let plain_path = cfg.dir.join("plain-read.img");
    let store_dir = cfg.dir.join("store-read");
    let plain = PlainFile::create(&plain_path, cfg.size)?;
    let store = create_store(&store_dir, cfg.size)?;
    println!(
        "  filling the {} file and the {} store for the read phases...",
        report::bytes(cfg.size),
        report::bytes(cfg.size)
    );
    fill(&plain, cfg.size)?;
    fill(&store, cfg.size)?;
    if store.map_extents() != 1 {
        println!(
            "  note: the filled store's map holds {} extents (expected 1)",
            store.map_extents()
        );
    }
    for phase in [Phase::RandomRead, Phase::SeqRead] {
        results.push(run_rounds(cfg, phase, |_| (&plain, &store))?);
    }
    drop((plain, store));
    remove_in_parallel(&[plain_path, store_dir])?;
    results.sort_by_key(|r| Phase::ALL.iter().position(|&p| p == r.phase));
    Ok(results)
}

fn create_store(dir: &Path, size: u64) -> Result<Store> {
    Store::create(dir, "bench", size).with_context(|| format!("creating store {}", dir.display()))
}

/// The run order of one round, ABBA style (B S, S B, B S, ...): neither side always goes
/// first, so drifting background load hits both alike.
fn order(round: usize) -> [Side; 2] {
    if round % 2 == 0 {
        [Side::Baseline, Side::Store]
    } else {
        [Side::Store, Side::Baseline]
    }
}

/// Both sides use the same seed in a round, so they see the same offsets (and their files
/// evolve alike through the rounds of a write phase).
fn seed(phase: Phase, round: usize) -> u64 {
    0x5348_4f52_5448_4f52 ^ ((phase as u64) << 32) ^ round as u64
}

/// Flushes the whole filesystem (untimed), so writeback and discards left by earlier work
/// do not land inside the next timed run.
fn settle() -> Result<()> {
    let status = Command::new("sync").status().context("running sync")?;
    if !status.success() {
        bail!("sync exited with {status}");
    }
    Ok(())
}

/// Runs `cfg.rounds` timed runs of `phase` on each side, alternating; `targets(round)` are
/// the file and store of a round. After a write run the target is synced, outside the
/// timed window.
fn run_rounds<'a>(
    cfg: &IoConfig,
    phase: Phase,
    targets: impl Fn(usize) -> (&'a PlainFile, &'a Store),
) -> Result<PhaseResult> {
    let mut result = PhaseResult {
        phase,
        baseline: Vec::new(),
        store: Vec::new(),
        baseline_cpu: Vec::new(),
        store_cpu: Vec::new(),
        background: None,
    };
    let mut background = Background::default();
    for round in 0..cfg.rounds {
        let (plain, store) = targets(round);
        for side in order(round) {
            settle()?;
            let seed = seed(phase, round);
            let before = CpuSample::now();
            let (rate, ops) = match side {
                Side::Baseline => timed_run(plain, phase, cfg, seed)?,
                Side::Store => timed_run(store, phase, cfg, seed)?,
            };
            let after = CpuSample::now();
            background.add(before, after);
            let cpu_per_op = match before.zip(after) {
                Some((b, a)) if ops > 0 => a.own_seconds_since(&b) * 1e6 / ops as f64,
                _ => f64::NAN,
            };
            if phase.is_write() {
                match side {
                    Side::Baseline => plain.sync()?,
                    Side::Store => store.sync()?,
                }
            }
            match side {
                Side::Baseline => {
                    result.baseline.push(rate);
                    result.baseline_cpu.push(cpu_per_op);
                }
                Side::Store => {
                    result.store.push(rate);
                    result.store_cpu.push(cpu_per_op);
                }
            }
        }
    }
    result.background = background.share();
    print_runs(&result);
    Ok(result)
}

/// Sums what other processes took over the timed runs only (not over the syncs between).
#[derive(Default)]
struct Background {
    others: f64,
    steal: f64,
    runs: u32,
}

impl Background {
    fn add(&mut self, before: Option<CpuSample>, after: Option<CpuSample>) {
        if let Some(share) = before.zip(after).and_then(|(b, a)| a.share_since(&b)) {
            self.others += share.others;
            self.steal += share.steal;
            self.runs += 1;
        }
    }

    fn share(&self) -> Option<CpuShare> {
        (self.runs > 0).then(|| CpuShare {
            others: self.others / f64::from(self.runs),
            steal: self.steal / f64::from(self.runs),
        })
    }
}

fn print_runs(result: &PhaseResult) {
    let list = |v: &[f64]| {
        v.iter()
            .map(|&r| report::rate(r))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let background = result.background.map_or_else(String::new, |b| {
        format!(
            " (other load {:.0}%, steal {:.0}%)",
            b.others * 100.0,
            b.steal * 100.0
        )
    });
    println!(
        "  {:<24} {} per run: baseline {} | store {}{background}",
        result.phase.label(),
        result.phase.unit(),
        list(&result.baseline),
        list(&result.store)
    );
    let cpu = |v: &[f64]| {
        v.iter()
            .map(|&c| format!("{c:.2}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    println!(
        "  {:<24} CPU µs per op: baseline {} | store {}",
        "",
        cpu(&result.baseline_cpu),
        cpu(&result.store_cpu)
    );
}

/// Writes the whole target sequentially in 1 MiB pieces, then syncs it.
fn fill<T: Target>(target: &T, size: u64) -> Result<()> {
    let mut buf = vec![0u8; 1 << 20];
    SmallRng::seed_from_u64(7).fill_bytes(&mut buf);
    let mut offset = 0;
    while offset < size {
        target.write_at(offset, &buf)?;
        offset += MIB;
    }
    target.sync()
}

/// Runs `phase` on `target` with `cfg.threads` workers for `cfg.duration`; returns the
/// rate in the phase's unit and the number of operations.
fn timed_run<T: Target>(target: &T, phase: Phase, cfg: &IoConfig, seed: u64) -> Result<(f64, u64)> {
    let stop = AtomicBool::new(false);
    let barrier = Barrier::new(cfg.threads + 1);
    let (ops, elapsed) = std::thread::scope(|scope| -> Result<(u64, Duration)> {
        let workers: Vec<_> = (0..cfg.threads)
            .map(|index| {
                let (stop, barrier) = (&stop, &barrier);
                scope.spawn(move || worker(target, phase, cfg, index, seed, stop, barrier))
            })
            .collect();
        barrier.wait();
        let start = Instant::now();
        std::thread::sleep(cfg.duration);
        stop.store(true, Ordering::Relaxed);
        let mut ops = 0;
        for w in workers {
            ops += w
                .join()
                .map_err(|_| anyhow!("a benchmark thread panicked"))??;
        }
        Ok((ops, start.elapsed()))
    })?;
    let per_second = ops as f64 / elapsed.as_secs_f64();
    let rate = if phase.is_random() {
        per_second
    } else {
        per_second * phase.io_size() as f64 / MIB as f64
    };
    Ok((rate, ops))
}

/// One benchmark thread: issues I/O until `stop`, returns how many it completed.
fn worker<T: Target>(
    target: &T,
    phase: Phase,
    cfg: &IoConfig,
    index: usize,
    seed: u64,
    stop: &AtomicBool,
    barrier: &Barrier,
) -> Result<u64> {
    let io = phase.io_size();
    let mut buf = vec![0u8; io];
    let mut rng =
        SmallRng::seed_from_u64(seed ^ (index as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
    rng.fill_bytes(&mut buf);
    let slots = cfg.size / io as u64;
    // Sequential phases: each thread streams through its own contiguous slice.
    let threads = cfg.threads as u64;
    let slice = slots / threads;
    let first = slice * index as u64;
    let mut next = 0;
    let mut ops = 0;
    barrier.wait();
    while !stop.load(Ordering::Relaxed) {
        let slot = if phase.is_random() {
            rng.random_range(0..slots)
        } else {
            let slot = first + next;
            next = (next + 1) % slice;
            slot
        };
        let offset = slot * io as u64;
        if phase.is_write() {
            target.write_at(offset, &buf)?;
        } else {
            target.read_at(offset, &mut buf)?;
        }
        ops += 1;
    }
    Ok(ops)
}
