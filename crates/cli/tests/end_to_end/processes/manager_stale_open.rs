//! The sequence that once rolled a volume back, through `shorthorn up`: a 3-replica
//! volume, each step a 4 KiB write at offset 0 plus a flush; write A1, `kill -9` replica
//! 0; write B2, `kill -9` replica 1 (only replica 2 records that); write C3; `kill -9` the
//! engine and replica 2 at once. The manager then starts the replicas again (one pass
//! at a time, restarting the engine on whichever replicas run, which it must refuse
//! until replica 2 is back) and the volume comes back healthy serving C3 — never A1 or
//! B2 — with every replica rebuilt to it.
//!
//! And auto-salvage picks the most recent replica: a 2-replica volume, write A1, kill
//! replica 0 (dropped), write B2 (on replica 1 only), kill replica 1: every replica
//! failed. Once the manager starts both again, its salvage must bring the volume back
//! from replica 1 — serving B2, not A1 — and rebuild replica 0 from it.

use std::time::Duration;

use crate::common::{processes_mentioning, qemu_io};
use crate::upnode::{Node, healthy_all_rw};

const VOLUME: &str = "rollback";

/// The pid of the replica process serving `replica`'s data.
fn replica_pid(volume: &serde_json::Value, index: usize) -> u32 {
    let pids = replica_processes(volume, index);
    assert_eq!(pids.len(), 1, "replica {index}: {pids:?}");
    pids[0]
}

fn replica_processes(volume: &serde_json::Value, index: usize) -> Vec<u32> {
    let dir = volume["replicas"][index]["spec"]["data_dir"]
        .as_str()
        .unwrap();
    processes_mentioning(dir)
        .into_iter()
        .map(|(pid, _)| pid)
        .collect()
}

fn engine_pid() -> u32 {
    let engines: Vec<u32> = processes_mentioning(VOLUME)
        .into_iter()
        .filter(|(_, cmdline)| cmdline.get(1).is_some_and(|a| a == "engine"))
        .map(|(pid, _)| pid)
        .collect();
    assert_eq!(engines.len(), 1, "{engines:?}");
    engines[0]
}

/// Waits until replica `index` of `volume` is failed in the volume's status (it stays so: the
/// wait interval before restarts is long while the sequence runs).
fn wait_failed(node: &Node, volume: &str, index: usize) {
    node.wait_for(
        volume,
        "with the replica failed",
        Duration::from_secs(30),
        |v| {
            v["replicas"][index]["status"]["mode"] == "ERR"
                || v["replicas"][index]["status"]["state"] == "failed"
        },
    );
}

#[test]
fn the_manager_brings_back_the_newest_writes_after_the_rollback_sequence() {
    let node = Node::start();
    node.cli_ok(&[
        "setting",
        "set",
        "replica_replenishment_wait_interval",
        "600",
    ]);
    let uri = node.create_attached(VOLUME, "16M", 3);
    let volume = node.volume(VOLUME);

    // qemu-io flushes before it exits.
    qemu_io(&uri, &["write -P 0xa1 0 4k"]);
    crate::common::signal(replica_pid(&volume, 0), "KILL");
    wait_failed(&node, VOLUME, 0);
    qemu_io(&uri, &["write -P 0xb2 0 4k"]);
    crate::common::signal(replica_pid(&volume, 1), "KILL");
    wait_failed(&node, VOLUME, 1);
    qemu_io(&uri, &["write -P 0xc3 0 4k"]);
    let (engine, last) = (engine_pid(), replica_pid(&volume, 2));
    crate::common::signal(engine, "KILL");
    crate::common::signal(last, "KILL");

    node.cli_ok(&["setting", "set", "replica_replenishment_wait_interval", "1"]);
    node.wait_for(
        VOLUME,
        "healthy again",
        Duration::from_secs(120),
        healthy_all_rw,
    );
    let uri = node.volume(VOLUME)["status"]["endpoint"]
        .as_str()
        .unwrap()
        .to_string();
    for _ in 0..3 {
        qemu_io(&uri, &["read -P 0xc3 0 4k"]);
    }
    let log = node.log();
    assert!(
        !log.contains("salvaging"),
        "the volume came back by salvage, which may lose writes:\n{log}"
    );
    eprintln!(
        "engine refusals while replicas came back: {}",
        log.matches("refusing to open").count()
    );
}

#[test]
fn auto_salvage_brings_a_volume_back_from_its_most_recent_replica() {
    const SALVAGED: &str = "salvaged";
    let node = Node::start();
    node.cli_ok(&[
        "setting",
        "set",
        "replica_replenishment_wait_interval",
        "600",
    ]);
    let uri = node.create_attached(SALVAGED, "16M", 2);
    let volume = node.volume(SALVAGED);
    qemu_io(&uri, &["write -P 0xa1 0 4k"]);
    crate::common::signal(replica_pid(&volume, 0), "KILL");
    wait_failed(&node, SALVAGED, 0);
    qemu_io(&uri, &["write -P 0xb2 0 4k"]);
    let last = replica_pid(&volume, 1);
    crate::common::signal(last, "KILL");

    node.cli_ok(&["setting", "set", "replica_replenishment_wait_interval", "1"]);
    crate::common::wait_restarted(
        volume["replicas"][1]["spec"]["data_dir"].as_str().unwrap(),
        last,
        Duration::from_secs(30),
    );
    node.wait_for(
        SALVAGED,
        "salvaged and healthy",
        Duration::from_secs(90),
        healthy_all_rw,
    );
    assert!(node.log().contains("salvaging"), "{}", node.log());
    for _ in 0..3 {
        qemu_io(&uri, &["read -P 0xb2 0 4k"]);
    }
    assert_eq!(replica_processes(&volume, 0).len(), 1);
}
