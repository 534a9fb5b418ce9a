//! A replica whose disk fills up: replica 0 keeps its data on a 24 MiB filesystem while
//! the volume is 160 MiB, and a verifying writer (through the engine, from another
//! network namespace) writes 64 MiB and then rewrites at random, partly unaligned. The
//! full replica goes ERR with an error that says why (space), its process survives, the
//! writer never sees an error, every acknowledged write reads back, and the two other
//! replicas hold identical content. Its filesystem is then grown (online, as an operator
//! would once the disk has room) and `replica add` rebuilds it on the same process and
//! directory, verified: all three RW, the data still reads back, and all three replicas
//! hold identical content.

use std::time::Duration;

use crate::common::MIB;
use crate::netns::{Cluster, replica_addr};

#[test]
fn a_full_replica_goes_err_and_the_volume_carries_on() {
    const SIZE: u64 = 160 * MIB;
    const FS_MIB: u64 = 24;
    /// Written on replica 0's filesystem before it starts, deleted to free space.
    const BALLAST_MIB: u64 = 128;
    /// 64 MiB written sequentially first: far more than fits on replica 0's disk.
    const BLOCKS: &str = "16384";
    let mut cluster = Cluster::new(3, SIZE);
    let dir = cluster.small_fs(0, FS_MIB + BALLAST_MIB);
    let ballast = dir.parent().unwrap().join("ballast");
    std::fs::write(&ballast, vec![0x5a; (BALLAST_MIB * MIB) as usize]).unwrap();
    cluster.start_replicas();
    cluster.start_engine(&[]);
    cluster.assert_all_rw(&[0, 1, 2]);

    let mut writer = cluster.start_writer(
        "writer",
        &[
            "--blocks",
            BLOCKS,
            "--fill",
            "--seconds",
            "5",
            "--unaligned",
        ],
    );
    let summary = writer.wait(Duration::from_secs(180));
    eprintln!("writer: {summary:?}");
    assert!(
        summary.error.is_none() && summary.acked == summary.writes,
        "the writer saw an error although two replicas were fine: {summary:?}\n{}",
        cluster.context()
    );
    assert!(
        summary.bytes_acked > 2 * FS_MIB * MIB,
        "the writer wrote only {} bytes, not more than replica 0's disk holds",
        summary.bytes_acked
    );

    // Replica 0 is ERR, says why, and still runs; the others are RW.
    let ls = cluster.ls_text();
    eprintln!("ls after the writer:\n{ls}");
    let (mode, error) = cluster.mode(0);
    assert_eq!(
        mode,
        "ERR",
        "the full replica should be ERR:\n{ls}\n{}",
        cluster.context()
    );
    let error = error.unwrap_or_default().to_lowercase();
    assert!(
        ["space", "enospc", "disk full", "full"]
            .iter()
            .any(|w| error.contains(w)),
        "the full replica's error should say it ran out of space:\n{ls}\n{}",
        cluster.context()
    );
    for i in [1, 2] {
        let (mode, error) = cluster.mode(i);
        assert!(
            mode == "RW" && error.is_none(),
            "replica {i} ({}) should be RW:\n{ls}",
            replica_addr(i)
        );
    }
    assert!(
        cluster.replica_running(0),
        "replica 0's process died of a full disk; it should report the error and live on\n{}",
        cluster.context()
    );

    cluster.assert_verified(&writer.log, "acked");

    // Space again: the same replica comes back by a rebuild (which verifies what it
    // copied) and serves like the others.
    std::fs::remove_file(&ballast).unwrap();
    let report = cluster.replica_add(0, Duration::from_secs(180));
    eprintln!("the once-full replica rebuilt: {report:?}");
    cluster.assert_all_rw(&[0, 1, 2]);
    cluster.assert_stable_reads(0, SIZE);
    cluster.assert_verified(&writer.log, "acked");

    let statuses = cluster.stop_all();
    eprintln!("replica exit statuses: {statuses:?}");
    assert!(
        statuses.iter().all(|s| s.is_some_and(|s| s.success())),
        "every replica should stop cleanly: {statuses:?}\n{}",
        cluster.context()
    );
    let context = cluster.context();
    assert!(
        !context.contains("panicked"),
        "a process panicked:\n{context}"
    );
    cluster.assert_replicas_identical(&[0, 1, 2]);
}
