//! The final report: the I/O comparison tables and the open benchmark's table, each
//! figure beside its target.

use std::time::Duration;

use crate::io_bench::PhaseResult;
use crate::open_bench::{OpenConfig, OpenResult, OpenRun};
use crate::report::{self, Align, MIB, Table, verdict};

/// Store throughput (and CPU efficiency) must reach this fraction of the plain file's.
const RATIO_TARGET: f64 = 0.9;
/// A full-size volume must open within this time.
const OPEN_TARGET: Duration = Duration::from_secs(2);
/// A full-size volume's map must retain less heap than this.
const MAP_TARGET: u64 = 64 * MIB;
/// Above this share of CPU time taken elsewhere, the throughput ratios get a warning.
const BUSY_WARNING: f64 = 0.15;

/// Prints the I/O comparison tables: throughput, then CPU cost per operation.
pub fn print_io(results: &[PhaseResult], size: u64, threads: usize, duration: Duration) {
    println!(
        "\n  Store vs plain file, throughput: {} each, {threads} threads, {:.1} s runs, page \
         cache warm",
        report::bytes(size),
        duration.as_secs_f64()
    );
    let mut table = Table::new(&[
        ("phase", Align::Left),
        ("unit", Align::Left),
        ("plain file", Align::Right),
        ("store", Align::Right),
        ("store/plain", Align::Right),
        ("target", Align::Right),
        ("result", Align::Left),
        ("other load", Align::Right),
    ]);
    let mut busiest: f64 = 0.0;
    for r in results {
        let ratio = r.ratio();
        let load = r.background.map_or_else(
            || "n/a".to_owned(),
            |b| {
                busiest = busiest.max(b.others + b.steal);
                format!("{:.0}%", (b.others + b.steal) * 100.0)
            },
        );
        table.row(vec![
            r.phase.label().to_owned(),
            r.phase.unit().to_owned(),
            report::rate(report::median(&r.baseline)),
            report::rate(report::median(&r.store)),
            format!("{ratio:.2}x"),
            format!(">= {RATIO_TARGET:.2}x"),
            verdict(ratio >= RATIO_TARGET).to_owned(),
            load,
        ]);
    }
    print!("{}", table.render(2));
    println!(
        "  plain file, store: median of the runs; store/plain: median of the per-round ratios"
    );
    println!(
        "  other load: CPU time other processes, kernel threads (writeback included) and the \
         hypervisor took during the timed runs"
    );
    if busiest > BUSY_WARNING {
        println!(
            "  WARNING: the machine was busy (up to {:.0}% of its CPU time went elsewhere); \
             throughput ratios are rough, the CPU-cost ratios below hold better",
            busiest * 100.0
        );
    }

    println!(
        "\n  Store vs plain file, CPU cost: user + system time of the benchmark per operation"
    );
    let mut table = Table::new(&[
        ("phase", Align::Left),
        ("plain file µs/op", Align::Right),
        ("store µs/op", Align::Right),
        ("plain/store", Align::Right),
        ("target", Align::Right),
        ("result", Align::Left),
    ]);
    for r in results {
        let ratio = r.cpu_ratio();
        table.row(vec![
            r.phase.label().to_owned(),
            format!("{:.2}", report::median(&r.baseline_cpu)),
            format!("{:.2}", report::median(&r.store_cpu)),
            format!("{ratio:.2}x"),
            format!(">= {RATIO_TARGET:.2}x"),
            verdict(ratio >= RATIO_TARGET).to_owned(),
        ]);
    }
    print!("{}", table.render(2));
    println!(
        "  plain/store: median of the per-round ratios; 1.00x = the store costs no extra CPU \
         (kernel time included, so lock contention in either counts)"
    );
}

/// Prints the open benchmark's table. `full_scale`: the volume is the one the targets are
/// stated for.
pub fn print_open(result: &OpenResult, cfg: &OpenConfig, full_scale: bool) {
    println!(
        "\n  Open: {} volume, {} layers, {} extents (built in {:.1} s, {} written)",
        report::bytes(cfg.size),
        cfg.layers,
        report::count(cfg.extents),
        result.build_time.as_secs_f64(),
        report::bytes(result.bytes_written)
    );
    let mut table = Table::new(&[
        ("measure", Align::Left),
        ("value", Align::Right),
        ("target", Align::Right),
        ("result", Align::Left),
    ]);
    let open_target = format!("< {} s", OPEN_TARGET.as_secs());
    match &result.cold {
        Ok(run) => {
            table.row(vec![
                "open time, cold cache".to_owned(),
                report::seconds(run.time),
                open_target.clone(),
                verdict(run.time < OPEN_TARGET).to_owned(),
            ]);
            cpu_rows(&mut table, run);
        }
        Err(_) => table.row(vec![
            "open time, cold cache".to_owned(),
            "n/a".to_owned(),
            String::new(),
            "warm cache only".to_owned(),
        ]),
    }
    if let Some(run) = result.median_warm() {
        table.row(vec![
            format!("open time, warm cache (median of {})", result.warm.len()),
            report::seconds(run.time),
            open_target,
            verdict(run.time < OPEN_TARGET).to_owned(),
        ]);
        cpu_rows(&mut table, &run);
        let extents = run.map_extents as u64;
        table.row(vec![
            "extents in the map after open".to_owned(),
            report::count(extents),
            report::count(cfg.extents),
            verdict(extents == cfg.extents && result.built_map_extents == run.map_extents)
                .to_owned(),
        ]);
        let retained = u64::try_from(run.heap.retained).unwrap_or(0);
        let per_extent = if extents > 0 {
            format!(" ({:.1} B/extent)", retained as f64 / extents as f64)
        } else {
            String::new()
        };
        table.row(vec![
            "heap retained by the open store".to_owned(),
            format!("{}{per_extent}", report::signed_bytes(run.heap.retained)),
            format!("< {}", report::bytes(MAP_TARGET)),
            verdict(retained < MAP_TARGET).to_owned(),
        ]);
        table.row(vec![
            "peak heap during open".to_owned(),
            report::signed_bytes(run.heap.peak),
            String::new(),
            String::new(),
        ]);
    }
    print!("{}", table.render(2));
    if let Err(why) = &result.cold {
        println!("  cold cache: {why}");
    }
    if result.no_space_retries > 0 {
        println!(
            "  note: {} sync(s) during the build failed with ENOSPC although the disk had free \
             space, and succeeded when retried",
            result.no_space_retries
        );
    }
    if !full_scale {
        println!(
            "  note: the open targets are stated for a 1 TiB volume with 64 layers and \
             1,000,000 extents; this run is smaller"
        );
    }
}

/// The CPU time of an open and the load beside it, under its time row.
fn cpu_rows(table: &mut Table, run: &OpenRun) {
    if let Some(cpu) = run.cpu {
        table.row(vec![
            "  CPU time of that open".to_owned(),
            report::seconds(cpu),
        ]);
    }
    if let Some(bg) = run.background {
        table.row(vec![
            "  other load meanwhile".to_owned(),
            format!("{:.0}%", (bg.others + bg.steal) * 100.0),
        ]);
    }
}
