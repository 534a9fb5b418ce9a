//! A replica cut off by the network, then rebuilt with only what changed: three
//! replicas, each on its own "host" (network namespace). 128 MiB are written first; then
//! a verifying writer rewrites a 1 MiB region (partly unaligned, with flushes) while the
//! engine's link to replica 1 goes down. The replica's process keeps running, but the
//! engine must give up on it within its request timeout (2 s) plus a margin, and the
//! writer carries on without an error. The link comes back and `shorthorn replica add`
//! rebuilds the replica: it copies a small fraction of what was written before the cut
//! (the replica still has that), every replica ends RW, every acknowledged write reads
//! back, and the three replicas hold identical content once stopped.

use std::time::{Duration, Instant};

use crate::common::MIB;
use crate::netns::{Cluster, REQUEST_TIMEOUT};

#[test]
fn a_replica_behind_a_cut_link_is_rebuilt_with_what_changed() {
    const SIZE: u64 = 192 * MIB;
    const CUT: usize = 1;
    /// How much later than the request timeout the replica may go ERR.
    const MARGIN: Duration = Duration::from_secs(3);
    let mut cluster = Cluster::new(3, SIZE);
    cluster.start_replicas();
    cluster.start_engine(&[]);
    cluster.assert_all_rw(&[0, 1, 2]);

    // 128 MiB, all three replicas have it.
    let fill = cluster.run_writer(
        "fill",
        &[
            "--blocks",
            "32768",
            "--fill",
            "--fill-chunk",
            "256",
            "--seconds",
            "0",
        ],
        Duration::from_secs(180),
    );
    assert!(
        fill.error.is_none() && fill.bytes_acked == 128 * MIB,
        "the fill failed: {fill:?}\n{}",
        cluster.context()
    );
    let before_cut = fill.bytes_acked;

    // A small hot region (1 MiB at 160 MiB), rewritten from now on.
    let mut writer = cluster.start_writer(
        "hot",
        &[
            "--start-block",
            "40960",
            "--blocks",
            "256",
            "--seconds",
            "150",
            "--unaligned",
            "--flush-every",
            "32",
        ],
    );
    writer.wait_progress(300, Duration::from_secs(30));

    let cut_at = Instant::now();
    cluster.link_down(CUT);
    cluster.wait_mode(
        CUT,
        "ERR",
        REQUEST_TIMEOUT + MARGIN + Duration::from_secs(30),
    );
    let took = cut_at.elapsed();
    eprintln!("replica {CUT} ERR {took:?} after its link went down");
    assert!(
        took <= REQUEST_TIMEOUT + MARGIN,
        "replica {CUT} went ERR {took:?} after its link was cut; the request timeout is \
         {REQUEST_TIMEOUT:?}\n{}",
        cluster.context()
    );
    writer.wait_progress(300, Duration::from_secs(30));

    cluster.link_up(CUT);
    let report = cluster.replica_add(CUT, Duration::from_secs(180));
    eprintln!("{report:?}; {before_cut} bytes were written before the cut");
    assert!(
        !writer.is_finished(),
        "the writer stopped before the rebuild finished; the test proves less than it should"
    );
    assert!(
        report.copied.saturating_mul(8) <= before_cut,
        "the rebuild copied {} bytes although the replica missed only writes to a 1 MiB \
         region; {before_cut} bytes were written before the cut and it has them: {report:?}",
        report.copied
    );
    cluster.assert_all_rw(&[0, 1, 2]);

    writer.wait_progress(300, Duration::from_secs(30));
    let summary = writer.stop();
    eprintln!("writer: {summary:?}");
    assert!(
        summary.error.is_none() && summary.acked == summary.writes,
        "the writer saw an error: {summary:?}\n{}",
        cluster.context()
    );
    cluster.assert_all_rw(&[0, 1, 2]);
    cluster.assert_verified(&cluster.dir().join("fill.log"), "acked");
    cluster.assert_verified(&writer.log, "acked");

    let statuses = cluster.stop_all();
    assert!(
        statuses.iter().all(|s| s.is_some_and(|s| s.success())),
        "every replica should stop cleanly: {statuses:?}\n{}",
        cluster.context()
    );
    cluster.assert_replicas_identical(&[0, 1, 2]);
}
