//! Salvaging a volume whose replicas all died: three replicas, each on its own "host"
//! (network namespace); a verifying writer rewrites 32 MiB at random (partly unaligned)
//! and flushes every 16 writes, while fio keeps 32 random writes in flight elsewhere.
//!
//! - Every replica is killed with SIGKILL while the engine runs: the writer stops at an
//!   error, `ls` shows no RW replica, and a read fails (an error, never stale or invented
//!   data). The replica processes are started again and `shorthorn salvage` brings the
//!   volume back from the replicas with the newest consistency records (RW; the others
//!   are stale, ERR): reads of the whole volume are stable and every write up to the
//!   last acknowledged flush reads back. `replica add` rebuilds the stale ones; the data
//!   still verifies, the volume takes writes, and the replicas are identical once
//!   stopped.
//! - Everything is killed, the engine too; the replicas are started again and the engine
//!   is started with `--salvage`: it comes up, and the same holds.

use std::time::{Duration, Instant};

use crate::common::MIB;
use crate::netns::{Cluster, Writer};

const SIZE: u64 = 128 * MIB;

/// The writer stopped at an error after flushing at least once.
fn assert_writer_failed(writer: &mut Writer) {
    let summary = writer.wait(Duration::from_secs(60));
    eprintln!("writer: {summary:?}");
    assert!(
        summary.error.is_some(),
        "the writer saw no error although every replica was killed: {summary:?}"
    );
    assert!(
        summary.flushed_seq > 0,
        "no flush was acknowledged before the kill: {summary:?}"
    );
}

/// After the salvage: some replica is RW (those with the newest consistency records;
/// the others are stale, ERR, until rebuilt), reads are stable and flushed data
/// verifies; `replica add` brings the stale ones back; the data still verifies, the
/// volume takes writes, and the stopped replicas are identical.
fn assert_salvaged(cluster: &mut Cluster, writer: &Writer) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let rw = loop {
        let rw: Vec<usize> = (0..3).filter(|&i| cluster.mode(i).0 == "RW").collect();
        if !rw.is_empty() {
            break rw;
        }
        assert!(
            Instant::now() < deadline,
            "no replica is RW 30 s after the salvage:\n{}\n{}",
            cluster.ls_text(),
            cluster.context()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    eprintln!("after the salvage:\n{}", cluster.ls_text());
    cluster.assert_stable_reads(0, SIZE);
    cluster.assert_verified(&writer.log, "flushed");
    for i in (0..3).filter(|i| !rw.contains(i)) {
        let report = cluster.replica_add(i, Duration::from_secs(180));
        eprintln!("stale replica {i} rebuilt: {report:?}");
    }
    cluster.assert_all_rw(&[0, 1, 2]);
    cluster.assert_stable_reads(0, SIZE);
    cluster.assert_verified(&writer.log, "flushed");
    cluster.write_again_then_check(&writer.log, "the salvage");
}

#[test]
fn salvage_brings_back_a_volume_whose_replicas_all_died() {
    let (mut cluster, mut writer, mut load) = Cluster::with_flushing_writer(SIZE);
    for i in 0..3 {
        cluster.kill_replica(i);
    }
    assert_writer_failed(&mut writer);
    let fio = load.wait(Duration::from_secs(60));
    assert!(
        !fio.success(),
        "fio should fail when every replica is gone: {fio:?}"
    );
    for i in 0..3 {
        cluster.wait_mode(i, "ERR", Duration::from_secs(15));
    }
    cluster.assert_none_rw();
    let read = cluster.read(0, 4096);
    assert!(
        read.is_err(),
        "a read succeeded although no replica can serve it: {read:?}\n{}",
        cluster.context()
    );
    eprintln!("read without replicas: {read:?}");

    cluster.start_replicas();
    let outcome = cluster.shorthorn_timeout(&["salvage"], Duration::from_secs(120));
    assert!(
        outcome.success(),
        "shorthorn salvage failed: {outcome:?}\n{}",
        cluster.context()
    );
    eprintln!("salvage: {}", outcome.all().trim());
    assert_salvaged(&mut cluster, &writer);
}

#[test]
fn an_engine_started_with_salvage_brings_back_a_volume_after_everything_died() {
    let (mut cluster, mut writer, mut load) = Cluster::with_flushing_writer(SIZE);
    cluster.kill_engine();
    for i in 0..3 {
        cluster.kill_replica(i);
    }
    let fio = load.wait(Duration::from_secs(60));
    assert!(!fio.success(), "fio should fail with its engine: {fio:?}");
    let summary = writer.wait(Duration::from_secs(60));
    eprintln!("writer: {summary:?}");
    assert!(
        summary.error.is_some() && summary.flushed_seq > 0,
        "the writer should have flushed, then failed with its engine: {summary:?}"
    );

    cluster.start_replicas();
    cluster.start_engine(&["--salvage"]);
    assert_salvaged(&mut cluster, &writer);
}
