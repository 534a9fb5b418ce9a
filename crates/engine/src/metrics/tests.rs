#![allow(
    clippy::unwrap_used,
    clippy::cast_possible_truncation,
    reason = "test code"
)]

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use std::time::{Duration, Instant};

use super::histogram::{BUCKETS, Histogram, bucket_bounds, bucket_index, nearest_rank};
use super::*;

#[test]
fn buckets_cover_values_with_bounded_width() {
    let mut values: Vec<u64> = vec![0, 1, 999, 1023, 1024, 1025, 1 << 36, (1 << 37) - 1];
    values.extend((10..37).flat_map(|e| [(1u64 << e) - 1, 1 << e, (1 << e) + 1]));
    let mut rng = StdRng::seed_from_u64(7);
    values.extend((0..10_000).map(|_| rng.random_range(1024..1u64 << 37)));
    for v in values {
        let index = bucket_index(v);
        let (lo, hi) = bucket_bounds(index);
        assert!(lo <= v && v < hi, "{v} not in bucket {index} = {lo}..{hi}");
        if index != 0 {
            assert!((hi - lo) * 16 <= lo, "bucket {index} too wide: {lo}..{hi}");
        }
    }
    assert_eq!(bucket_index(1 << 37), BUCKETS - 1);
    assert_eq!(bucket_index(u64::MAX), BUCKETS - 1);
    // Indices are dense and increasing.
    for i in 1..BUCKETS - 1 {
        assert_eq!(bucket_bounds(i).1, bucket_bounds(i + 1).0);
    }
}

/// Nearest-rank quantile of sorted values.
fn reference(sorted: &[u64], q: f64) -> u64 {
    sorted[usize::try_from(nearest_rank(q, sorted.len() as u64)).unwrap() - 1]
}

#[test]
fn quantiles_match_sorted_reference_within_bound() {
    let mut rng = StdRng::seed_from_u64(42);
    for round in 0..20 {
        let n = rng.random_range(1..20_000);
        let mut values: Vec<u64> = (0..n)
            .map(|_| match round % 3 {
                // Log-uniform from 1 µs to 100 s.
                0 => 10f64.powf(rng.random_range(3.0..11.0)) as u64,
                // Narrow: 100–300 µs, the typical NBD case.
                1 => rng.random_range(100_000..300_000),
                // Bimodal: fast hits and slow misses.
                _ => {
                    if rng.random_bool(0.97) {
                        rng.random_range(20_000..40_000)
                    } else {
                        rng.random_range(5_000_000..50_000_000)
                    }
                }
            })
            .collect();
        let mut histogram = Histogram::new();
        for &v in &values {
            histogram.record(v);
        }
        values.sort_unstable();
        for q in [0.5, 0.9, 0.99, 0.999, 1.0] {
            let want = reference(&values, q) as f64;
            let got = histogram.quantile(q).as_nanos() as f64;
            let error = (got - want).abs() / want;
            assert!(
                error <= 1.0 / 32.0 + 1e-9,
                "round {round} n {n} q {q}: got {got} want {want} error {error}"
            );
        }
        let mean = values.iter().map(|&v| u128::from(v)).sum::<u128>() / n as u128;
        assert_eq!(histogram.mean().as_nanos(), mean);
    }
}

#[test]
fn empty_and_extreme_histograms() {
    let h = Histogram::new();
    assert_eq!(h.quantile(0.99), Duration::ZERO);
    assert_eq!(h.mean(), Duration::ZERO);
    let mut h = Histogram::new();
    h.record(300); // below 1 µs: clamped to the observed value
    assert_eq!(h.quantile(0.99), Duration::from_nanos(300));
    let mut h = Histogram::new();
    h.record(500_000_000_000); // 500 s: overflow bucket reports the max
    assert_eq!(h.quantile(0.99), Duration::from_secs(500));
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

#[test]
fn last_second_window_rotates_with_time() {
    let t0 = Instant::now();
    let m = Metrics::starting_at(t0);
    m.record_at(t0 + ms(100), OpKind::Read, 4096, ms(1), true);
    m.record_at(t0 + ms(500), OpKind::Read, 4096, ms(3), true);
    m.record_at(t0 + ms(600), OpKind::Write, 512, ms(2), true);

    // Window 0 is not complete yet.
    let s = m.snapshot_at(t0 + ms(900));
    assert_eq!(s.read.iops_last_second, 0.0);
    assert_eq!(s.read.ops_total, 2);
    assert_eq!(s.uptime, ms(900));

    // Window 0 completed: it is "last second".
    let s = m.snapshot_at(t0 + ms(1200));
    assert_eq!(s.read.iops_last_second, 2.0);
    assert_eq!(s.read.bytes_per_second_last_second, 8192.0);
    assert_eq!(s.read.latency_avg_last_second, ms(2));
    assert_eq!(s.write.iops_last_second, 1.0);
    assert_eq!(s.write.bytes_per_second_last_second, 512.0);

    m.record_at(t0 + ms(1500), OpKind::Read, 1024, ms(5), true);
    m.record_at(t0 + ms(1600), OpKind::Read, 1024, ms(5), false);
    let s = m.snapshot_at(t0 + ms(2100));
    assert_eq!(s.read.iops_last_second, 1.0);
    assert_eq!(s.read.bytes_per_second_last_second, 1024.0);
    assert_eq!(s.read.errors_last_second, 1);
    assert_eq!(s.write.iops_last_second, 0.0);
    assert_eq!(s.write.latency_p99_last_second, Duration::ZERO);
    assert_eq!(s.read.ops_total, 3);
    assert_eq!(s.read.bytes_total, 9216);
    assert_eq!(s.read.errors_total, 1);
    assert_eq!(s.read.latency_total, ms(9));
    assert_eq!(s.read.latency_avg_since_start, ms(3));
    assert!((s.read.iops_since_start - 3.0 / 2.1).abs() < 1e-9);

    // An idle gap: the window before 3.5 s (2..3 s) saw nothing.
    let s = m.snapshot_at(t0 + ms(3500));
    assert_eq!(s.read.iops_last_second, 0.0);
    assert_eq!(s.read.errors_last_second, 0);
    assert_eq!(s.read.ops_total, 3);

    // Recording after a gap of several windows starts afresh.
    m.record_at(t0 + ms(7300), OpKind::Read, 1, ms(1), true);
    assert_eq!(m.snapshot_at(t0 + ms(7900)).read.iops_last_second, 0.0);
    assert_eq!(m.snapshot_at(t0 + ms(8000)).read.iops_last_second, 1.0);
    assert_eq!(m.snapshot_at(t0 + ms(9000)).read.iops_last_second, 0.0);
}

#[test]
fn late_records_count_in_the_current_window() {
    let t0 = Instant::now();
    let m = Metrics::starting_at(t0);
    m.record_at(t0 + ms(1100), OpKind::Read, 1, ms(1), true);
    // Completed "before" the window seen already (another thread's clock read).
    m.record_at(t0 + ms(990), OpKind::Read, 1, ms(1), true);
    let s = m.snapshot_at(t0 + ms(2000));
    assert_eq!(s.read.iops_last_second, 2.0);
    assert_eq!(s.read.ops_total, 2);
}

#[test]
fn directions_aggregate_kinds() {
    let t0 = Instant::now();
    let m = Metrics::starting_at(t0);
    m.record_at(t0, OpKind::Write, 4096, ms(1), true);
    m.record_at(t0, OpKind::WriteZeroes, 65536, ms(2), true);
    m.record_at(t0, OpKind::Trim, 1 << 20, ms(3), true);
    m.record_at(t0, OpKind::Trim, 1 << 20, ms(3), false);
    m.record_at(t0, OpKind::Flush, 0, ms(10), true);
    m.record_at(t0, OpKind::Read, 512, ms(1), true);
    let s = m.snapshot_at(t0 + ms(1000));
    assert_eq!(s.write.ops_total, 3);
    assert_eq!(s.write.bytes_total, 4096 + 65536 + (1 << 20));
    assert_eq!(s.write.errors_total, 1);
    assert_eq!(s.write.iops_last_second, 3.0);
    assert_eq!(s.write.latency_avg_last_second, ms(2));
    assert_eq!(s.read.ops_total, 1);
    assert_eq!(s.op(OpKind::Flush).ops_total, 1);
    assert_eq!(s.op(OpKind::Flush).latency_avg_since_start, ms(10));
    assert_eq!(s.op(OpKind::Trim).errors_total, 1);
    assert_eq!(s.op(OpKind::WriteZeroes).bytes_total, 65536);
    // The p99 of merged kinds is the slowest of these few.
    let p99 = s.write.latency_p99_since_start.as_secs_f64();
    assert!((p99 - 0.003).abs() / 0.003 < 1.0 / 32.0, "{p99}");
    // info shows it.
    let info = s.to_string();
    assert!(info.contains("write        last second: 3 IOPS"), "{info}");
    assert!(
        info.contains("  flush        1 ops, latency avg 10.00 ms"),
        "{info}"
    );
}

#[test]
fn io_figures_for_info() {
    let t0 = Instant::now();
    let m = Metrics::starting_at(t0);
    m.record_at(t0, OpKind::Read, 4096, ms(2), true);
    let s = m.snapshot_at(t0 + ms(1000));
    let figures = shorthorn_proto::v1::IoFigures::from(&s.read);
    assert_eq!(figures.iops_last_second, 1.0);
    assert_eq!(figures.bytes_per_second_last_second, 4096.0);
    assert_eq!(figures.latency_avg_seconds_last_second, 0.002);
    assert_eq!(figures.latency_avg_seconds_since_start, 0.002);
    assert_eq!((figures.ops_total, figures.bytes_total), (1, 4096));
    assert_eq!(figures.errors_total, 0);
}
