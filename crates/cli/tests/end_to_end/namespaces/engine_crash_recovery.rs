//! An engine killed in the middle of writes: three replicas, each on its own "host"
//! (network namespace); a verifying writer rewrites 32 MiB at random (partly unaligned)
//! and flushes every 16 writes, while fio keeps 32 random writes in flight elsewhere.
//! The engine is killed with SIGKILL: the writer stops at an error, as it must. The
//! engine is started again with the same arguments: it comes back, every replica is RW,
//! every read of the whole volume returns the same bytes three times over (replicas that
//! may differ were reconciled before reads were served), every write up to the last
//! acknowledged flush reads back (later ones may or may not), the volume takes writes
//! again, and the three replicas hold identical content once stopped.

use std::time::Duration;

use crate::common::MIB;
use crate::netns::Cluster;

#[test]
fn a_killed_engine_restarts_with_flushed_data_and_stable_reads() {
    const SIZE: u64 = 128 * MIB;
    let (mut cluster, mut writer, mut load) = Cluster::with_flushing_writer(SIZE);
    cluster.kill_engine();
    let fio = load.wait(Duration::from_secs(60));
    assert!(
        !fio.success(),
        "fio should fail when the engine is killed: {fio:?}"
    );
    let summary = writer.wait(Duration::from_secs(60));
    eprintln!("writer: {summary:?}");
    assert!(
        summary.error.is_some(),
        "the writer saw no error although its engine was killed: {summary:?}"
    );
    assert!(
        summary.flushed_seq > 0,
        "no flush was acknowledged before the kill: {summary:?}"
    );

    cluster.start_engine(&[]);
    let took = cluster.wait_all_rw(&[0, 1, 2], Duration::from_secs(60));
    eprintln!("all replicas RW {took:?} after the restarted engine was ready");
    cluster.assert_stable_reads(0, SIZE);
    cluster.assert_verified(&writer.log, "flushed");

    cluster.write_again_then_check(&writer.log, "the restart");
}
