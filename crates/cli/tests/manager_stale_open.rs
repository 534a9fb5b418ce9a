//! The sequence that once rolled a volume back, through `shorthorn up`: a 3-replica
//! volume, each step a 4 KiB write at offset 0 plus a flush; write A1, `kill -9` replica
//! 0; write B2, `kill -9` replica 1 (only replica 2 records that); write C3; `kill -9` the
//! engine and replica 2 at once. The manager then starts the replicas again (one pass
//! at a time, restarting the engine on whichever replicas run, which it must refuse
//! until replica 2 is back) and the volume comes back healthy serving C3 — never A1 or
//! B2 — with every replica rebuilt to it.

#![allow(
    clippy::unwrap_used,
    clippy::cast_possible_truncation,
    reason = "test code"
)]

mod common;
mod upnode;

use std::time::Duration;

use common::{processes_mentioning, qemu_io};
use upnode::Node;

const VOLUME: &str = "rollback";

/// The pid of the replica process serving `replica`'s data.
fn replica_pid(volume: &serde_json::Value, index: usize) -> u32 {
    let dir = volume["replicas"][index]["spec"]["data_dir"]
        .as_str()
        .unwrap();
    let pids = processes_mentioning(dir);
    assert_eq!(pids.len(), 1, "replica {index} ({dir}): {pids:?}");
    pids[0].0
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

/// Waits until replica `index` is failed in the volume's status (it stays so: the
/// wait interval before restarts is long while the sequence runs).
fn wait_failed(node: &Node, index: usize) {
    node.wait_for(
        VOLUME,
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
    node.cli_ok(&["setting", "set", "minimal_available_percentage", "0"]);
    node.cli_ok(&[
        "setting",
        "set",
        "replica_replenishment_wait_interval",
        "600",
    ]);
    node.cli_ok(&[
        "volume",
        "create",
        VOLUME,
        "--size",
        "16M",
        "--replicas",
        "3",
    ]);
    let uri = node
        .cli_ok(&["volume", "attach", VOLUME])
        .trim()
        .to_string();
    node.wait_for(VOLUME, "healthy", Duration::from_secs(60), |v| {
        v["status"]["robustness"] == "healthy"
    });
    let volume = node.volume(VOLUME);

    // qemu-io flushes before it exits.
    qemu_io(&uri, &["write -P 0xa1 0 4k"]);
    common::signal(replica_pid(&volume, 0), "KILL");
    wait_failed(&node, 0);
    qemu_io(&uri, &["write -P 0xb2 0 4k"]);
    common::signal(replica_pid(&volume, 1), "KILL");
    wait_failed(&node, 1);
    qemu_io(&uri, &["write -P 0xc3 0 4k"]);
    let (engine, last) = (engine_pid(), replica_pid(&volume, 2));
    common::signal(engine, "KILL");
    common::signal(last, "KILL");

    node.cli_ok(&["setting", "set", "replica_replenishment_wait_interval", "1"]);
    node.wait_for(VOLUME, "healthy again", Duration::from_secs(120), |v| {
        v["status"]["robustness"] == "healthy"
            && v["replicas"]
                .as_array()
                .unwrap()
                .iter()
                .all(|r| r["status"]["mode"] == "RW")
    });
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
