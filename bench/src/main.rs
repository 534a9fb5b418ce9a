//! `shorthorn-bench`: measures Shorthorn's store against plain file I/O on the same disk in
//! one invocation and prints the ratios, plus the open time and location-map memory of a
//! large fragmented volume. See `bench/README.md`.

mod alloc_counter;
mod io_bench;
mod machine;
mod open_bench;
mod report;
mod summary;
mod workdir;

use std::fs;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Parser, ValueEnum};

use crate::io_bench::IoConfig;
use crate::machine::Machine;
use crate::open_bench::OpenConfig;
use crate::report::{GIB, MIB, TIB};
use crate::workdir::WorkDir;

#[global_allocator]
static ALLOCATOR: alloc_counter::CountingAlloc = alloc_counter::CountingAlloc;

/// Shorthorn's store against plain file I/O on the same disk, in one run.
///
/// Runs 4 KiB random write/read and 1 MiB sequential write/read through the store and
/// through pwrite/pread on a plain file of the same size in the same directory, then
/// builds a large fragmented volume (many snapshots, many extents) and times its open and
/// measures its location map's memory. Prints every figure beside its target.
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    /// Directory to benchmark in; a fresh subdirectory is made inside and removed at the end
    /// [default: ./target/bench-tmp]
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
    /// Length of each timed I/O run in seconds [default: 3, or 0.5 with --quick]
    #[arg(long, value_name = "N")]
    seconds: Option<f64>,
    /// Threads issuing I/O (both sides use the same number) [default: CPUs, within 2..=4]
    #[arg(long, value_name = "N")]
    threads: Option<usize>,
    /// Small sizes and short runs, to finish in about half a minute
    #[arg(long)]
    quick: bool,
    /// Size of the plain file and of the store for the I/O phases (K/M/G/T suffixes)
    /// [default: 1G, or 256M with --quick]
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    size: Option<u64>,
    /// Timed runs per side and phase, baseline and store alternating [default: 5, or 3 with
    /// --quick]
    #[arg(long, value_name = "N")]
    rounds: Option<usize>,
    /// Extents (single 4 KiB blocks) in the open benchmark's volume [default: 1000000, or
    /// 32768 with --quick]
    #[arg(long, value_name = "N")]
    open_extents: Option<u64>,
    /// Layers (snapshots plus the head) in the open benchmark's volume [default: 64]
    #[arg(long, value_name = "N")]
    open_layers: Option<usize>,
    /// Size of the open benchmark's volume (K/M/G/T suffixes) [default: 1T, or 32G with
    /// --quick]
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    open_size: Option<u64>,
    /// Run only one part
    #[arg(long, value_enum, default_value_t = Only::All)]
    only: Only,
}

/// Which parts of the benchmark to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Only {
    /// The I/O comparisons and the open benchmark.
    All,
    /// The I/O comparisons.
    Io,
    /// The open benchmark.
    Open,
}

/// Defaults of one mode; flags override each field. Keep `Cli`'s help text in step.
struct Defaults {
    seconds: f64,
    rounds: usize,
    io_size: u64,
    open_size: u64,
    open_layers: usize,
    open_extents: u64,
}

/// The full run; its open volume is the one the open targets are stated for.
const FULL: Defaults = Defaults {
    seconds: 3.0,
    rounds: 5,
    io_size: GIB,
    open_size: TIB,
    open_layers: 64,
    open_extents: 1_000_000,
};

/// `--quick`: about half a minute on a small machine. The open volume is kept below the
/// point where ext4's block allocator makes building it slow (see docs/benchmarks.md).
const QUICK: Defaults = Defaults {
    seconds: 0.5,
    rounds: 3,
    io_size: 256 * MIB,
    open_size: 32 * GIB,
    open_layers: 64,
    open_extents: 32_768,
};

/// A size as everywhere in Shorthorn (`4096`, `256M`, `64G`, `1TiB`), which the store
/// also needs to be a non-zero multiple of 4096 bytes.
fn parse_size(text: &str) -> Result<u64, String> {
    let size = shorthorn_block::size::parse_size(text)?;
    if size == 0 || size % 4096 != 0 {
        return Err(format!("{text:?} is not a non-zero multiple of 4096 bytes"));
    }
    Ok(size)
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let threads = cli.threads.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map_or(2, usize::from)
            .clamp(2, 4)
    });
    if threads == 0 {
        bail!("--threads must be at least 1");
    }
    let defaults = if cli.quick { &QUICK } else { &FULL };
    let seconds = cli.seconds.unwrap_or(defaults.seconds);
    let duration = Duration::try_from_secs_f64(seconds)
        .ok()
        .filter(|d| !d.is_zero())
        .context("--seconds must be a positive number")?;
    let rounds = cli.rounds.unwrap_or(defaults.rounds);
    if rounds == 0 {
        bail!("--rounds must be at least 1");
    }
    let io_size = cli.size.unwrap_or(defaults.io_size);
    let open_size = cli.open_size.unwrap_or(defaults.open_size);
    let open_layers = cli.open_layers.unwrap_or(defaults.open_layers);
    let open_extents = cli.open_extents.unwrap_or(defaults.open_extents);

    let base = cli
        .dir
        .clone()
        .unwrap_or_else(|| PathBuf::from("target").join("bench-tmp"));
    let work = WorkDir::create(&base)?;
    let machine = Machine::describe(&work.path);

    let command: Vec<String> = std::env::args().collect();
    println!("shorthorn-bench: Shorthorn store vs plain file, same disk, same process");
    println!("  command     {}", command.join(" "));
    println!("  mode        {}", if cli.quick { "quick" } else { "full" });
    println!(
        "  machine     {} CPUs ({}), {} RAM, Linux {}, load average {}",
        machine.cpus, machine.cpu_model, machine.memory, machine.kernel, machine.load_average
    );
    println!(
        "  directory   {} ({})",
        work.path.display(),
        machine.filesystem
    );
    println!(
        "  I/O         {} file / volume, {threads} threads, {seconds} s per run, {rounds} runs \
         per side, alternating B S / S B",
        report::bytes(io_size)
    );
    println!(
        "  page cache  warm: buffered I/O, writes synced outside the timed window; the ratios \
         measure the store's software overhead, not the device"
    );

    let io_cfg = IoConfig {
        dir: work.path.clone(),
        size: io_size,
        threads,
        duration,
        rounds,
    };
    let open_cfg = OpenConfig {
        dir: work.path.clone(),
        size: open_size,
        layers: open_layers,
        extents: open_extents,
        threads,
        opens: 3,
    };
    let (run_io, run_open) = (cli.only != Only::Open, cli.only != Only::Io);
    if run_io {
        io_cfg.validate()?;
    }
    if run_open {
        open_cfg.validate()?;
    }
    let io = if run_io {
        println!("\nI/O phases");
        Some(io_bench::run(&io_cfg)?)
    } else {
        None
    };
    let open = if run_open {
        println!("\nOpen benchmark");
        Some(open_bench::run(&open_cfg)?)
    } else {
        None
    };

    println!("\nResults");
    if let Some(io) = &io {
        summary::print_io(io, io_size, threads, duration);
    }
    if let Some(open) = &open {
        let full_scale = (open_size, open_layers, open_extents)
            == (FULL.open_size, FULL.open_layers, FULL.open_extents);
        summary::print_open(open, &open_cfg, full_scale);
    }
    drop(work);
    // Remove the default base directory too if this run left it empty.
    if cli.dir.is_none() {
        let _ = fs::remove_dir(&base);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_binary_suffixes() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("256M"), Ok(256 * MIB));
        assert_eq!(parse_size("64G"), Ok(64 * GIB));
        assert_eq!(parse_size("1T"), Ok(TIB));
        assert_eq!(parse_size("1TiB"), Ok(TIB));
        assert!(parse_size("100").is_err());
        assert!(parse_size("0").is_err());
        assert!(parse_size("x").is_err());
        assert!(parse_size("99999999T").is_err());
    }

    #[test]
    fn cli_parses() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
        let cli = Cli::parse_from(["shorthorn-bench", "--quick", "--open-size", "1G"]);
        assert!(cli.quick);
        assert_eq!(cli.open_size, Some(GIB));
    }
}
