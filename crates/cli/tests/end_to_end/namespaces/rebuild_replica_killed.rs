//! Rebuilding a replica that was killed, while the volume is written: three replicas,
//! each on its own "host" (network namespace); a verifying writer fills 64 MiB and then
//! rewrites at random (partly unaligned, so read-modify-write runs during the rebuild,
//! with a flush now and then). Replica 2 is killed with SIGKILL: the writer sees no
//! error and `ls` shows the replica ERR. Its process is started again on the same
//! directory and `shorthorn replica add --bandwidth 24M` brings it back while the writes
//! go on (the limit makes the two overlap for seconds): it exits 0 with its `rebuilt …`
//! line, every replica is RW, every acknowledged write reads back, and the three
//! replicas hold identical content once stopped.

use std::time::Duration;

use crate::common::MIB;
use crate::netns::Cluster;

#[test]
fn a_killed_replica_is_rebuilt_under_writes() {
    const SIZE: u64 = 160 * MIB;
    const VICTIM: usize = 2;
    let mut cluster = Cluster::new(3, SIZE);
    cluster.start_replicas();
    cluster.start_engine(&[]);
    cluster.assert_all_rw(&[0, 1, 2]);

    // 16384 blocks (64 MiB) filled in 256 writes, then random rewrites.
    let mut writer = cluster.start_writer(
        "writer",
        &[
            "--blocks",
            "16384",
            "--fill",
            "--seconds",
            "150",
            "--unaligned",
            "--flush-every",
            "64",
        ],
    );
    writer.wait_progress(256 + 1000, Duration::from_secs(90));

    cluster.kill_replica(VICTIM);
    let took = cluster.wait_mode(VICTIM, "ERR", Duration::from_secs(15));
    eprintln!("replica {VICTIM} ERR {took:?} after the kill");
    writer.wait_progress(500, Duration::from_secs(30));

    cluster.start_replica(VICTIM);
    let before = writer.acked_so_far();
    // Bandwidth-limited, so the rebuild overlaps the writes for a few seconds.
    let report =
        cluster.replica_add_with(VICTIM, &["--bandwidth", "24M"], Duration::from_secs(180));
    let during = writer.acked_so_far() - before;
    eprintln!("{report:?}; {during} writes acknowledged while it ran");
    assert!(
        report.seconds >= 0.5 * report.copied as f64 / (24.0 * MIB as f64),
        "the rebuild copied {} bytes in {} s, faster than twice --bandwidth 24M",
        report.copied,
        report.seconds
    );
    assert!(
        !writer.is_finished(),
        "the writer stopped before the rebuild finished; the test proves less than it should"
    );
    assert!(
        report.copied + report.checked > 0,
        "the rebuild neither copied nor checked anything: {report:?}"
    );
    cluster.assert_all_rw(&[0, 1, 2]);

    // Writes go on with all three replicas, then stop.
    writer.wait_progress(500, Duration::from_secs(30));
    let summary = writer.stop();
    eprintln!("writer: {summary:?}");
    assert!(
        summary.error.is_none() && summary.acked == summary.writes,
        "the writer saw an error: {summary:?}\n{}",
        cluster.context()
    );
    cluster.assert_all_rw(&[0, 1, 2]);
    cluster.assert_verified(&writer.log, "acked");

    let statuses = cluster.stop_all();
    assert!(
        statuses.iter().all(|s| s.is_some_and(|s| s.success())),
        "every replica should stop cleanly: {statuses:?}\n{}",
        cluster.context()
    );
    cluster.assert_replicas_identical(&[0, 1, 2]);
}
