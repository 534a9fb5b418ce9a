//! `shorthorn up` on one node, end to end: a 3-replica volume is created (soft
//! anti-affinity lets its replicas share the node), attached, written with fio's verify
//! through NBD, snapshotted (its engine runs with the engine settings set before: replica
//! timeout, slow-replica window); a replica process is killed with `kill -9`: the manager
//! reports it failed, the volume goes degraded, writes go on, and after the wait interval
//! the manager starts the replica again on its data and the engine rebuilds it — the
//! volume returns to healthy with all three replicas RW. The node is then stopped (every
//! engine and replica with it) and the three replica directories hold identical content,
//! equal to what the volume held; `up` again brings the volume back attached with the
//! same content; it grows online (`volume expand`) and while detached; deleting it
//! removes its data. And a
//! volume whose replicas all died is salvaged by the manager once they run again.

use std::path::Path;
use std::time::Duration;

use crate::common::{
    MIB, assert_fio_verified, fio, fio_verify_job, path_str, processes_mentioning, qemu_io, run_ok,
    sha256,
};
use crate::upnode::{Node, attached_with_three_rw, healthy_all_rw};

const VOLUME: &str = "vol1";

fn export_sha(uri: &str, scratch: &Path) -> String {
    let file = scratch.join("export.img");
    run_ok(
        "qemu-img",
        &["convert", "-f", "raw", "-O", "raw", uri, path_str(&file)],
    );
    let sum = sha256(&file);
    std::fs::remove_file(&file).unwrap();
    sum
}

#[test]
fn a_volume_on_one_node_is_created_attached_and_healed() {
    let mut node = Node::start();
    let scratch = node.dir.path().to_path_buf();
    // One node: `up` made replicas allowed to share it. This disk may be fuller than
    // the default minimal-available rule (25%) allows.
    let soft = node.cli_ok(&["setting", "get", "replica_soft_anti_affinity"]);
    assert_eq!(soft.trim(), "true");
    node.cli_ok(&["setting", "set", "minimal_available_percentage", "0"]);
    node.cli_ok(&["setting", "set", "replica_replenishment_wait_interval", "2"]);
    // Engines started from now on take these.
    node.cli_ok(&["setting", "set", "engine_replica_timeout", "3"]);
    node.cli_ok(&["setting", "set", "slow_replica_window", "7"]);

    node.cli_ok(&[
        "volume",
        "create",
        VOLUME,
        "--size",
        "96M",
        "--replicas",
        "3",
    ]);
    let uri = node
        .cli_ok(&["volume", "attach", VOLUME])
        .trim()
        .to_string();
    assert!(
        uri.starts_with("nbd://127.0.0.1:") && uri.ends_with("/vol1"),
        "{uri}"
    );
    node.wait_for(
        VOLUME,
        "healthy",
        Duration::from_secs(60),
        attached_with_three_rw,
    );
    let listed = node.cli_ok(&["volume", "ls"]);
    assert!(
        listed.contains("attached") && listed.contains("healthy"),
        "{listed}"
    );

    let job = fio_verify_job(&scratch, &uri, 2, 16 * MIB);
    assert_fio_verified(&fio(&job), 8192, "fio through the manager's volume");
    let engine = node.volume(VOLUME)["engine"]["status"]["address"]
        .as_str()
        .unwrap()
        .to_string();
    crate::common::shorthorn_ok(&["--engine", &engine, "snapshot", "create", "s1"]);
    // The engine settings reached the engine's command line.
    let (_, engine_args) = processes_mentioning(&engine)
        .into_iter()
        .find(|(_, args)| args.get(1).is_some_and(|a| a == "engine"))
        .unwrap_or_else(|| panic!("no engine process listens on {engine}"));
    for flag in [
        ["--request-timeout", "3s"],
        ["--slow-replica-ratio", "8"],
        ["--slow-replica-window", "7s"],
    ] {
        assert!(
            engine_args.windows(2).any(|w| w == flag),
            "the engine runs without {flag:?}: {engine_args:?}"
        );
    }

    // kill -9 one replica: noticed and started again (a new process on its data, what
    // lasts: "degraded" can pass before a poll sees it), writes go on, then healed on
    // the same data.
    let victim = node.volume(VOLUME)["replicas"][0].clone();
    let victim_dir = victim["spec"]["data_dir"].as_str().unwrap().to_string();
    let pids = processes_mentioning(&victim_dir);
    assert_eq!(pids.len(), 1, "{pids:?}");
    crate::common::signal(pids[0].0, "KILL");
    crate::common::wait_restarted(&victim_dir, pids[0].0, Duration::from_secs(30));
    qemu_io(&uri, &["write -P 0x5c 40M 8M", "write -P 0x5d 90M 1M"]);
    node.wait_for(
        VOLUME,
        "healed",
        Duration::from_secs(90),
        attached_with_three_rw,
    );
    let log = node.log();
    assert!(
        log.contains("replica process exited"),
        "the crash was reported:\n{log}"
    );
    assert!(log.contains("replica rebuilt"), "{log}");
    qemu_io(&uri, &["read -P 0x5c 40M 8M", "read -P 0x5d 90M 1M"]);
    let content = export_sha(&uri, &scratch);
    let snapshots = crate::common::shorthorn_ok(&["--engine", &engine, "snapshot", "ls"]);
    assert!(snapshots.contains("s1"), "{snapshots}");

    // Stopped: the three replicas hold the same content, the volume's.
    node.stop();
    let replicas = node.volume_dirs();
    assert_eq!(replicas.len(), 3);
    for dir in &replicas {
        let image = scratch.join("replica.img");
        crate::common::shorthorn_ok(&["store", "export", path_str(dir), path_str(&image)]);
        assert_eq!(sha256(&image), content, "replica {}", dir.display());
        std::fs::remove_file(&image).unwrap();
    }

    // Up again: the volume comes back attached, same content.
    node.restart();
    // Until the new up's first pass, the store still shows the status of before the
    // stop: back is when the engine serves again.
    node.wait_for(VOLUME, "back", Duration::from_secs(60), |v| {
        attached_with_three_rw(v)
            && v["status"]["endpoint"]
                .as_str()
                .and_then(|uri| uri.strip_prefix("nbd://"))
                .and_then(|rest| rest.split('/').next())
                .is_some_and(|addr| std::net::TcpStream::connect(addr).is_ok())
    });
    let uri = node.volume(VOLUME)["status"]["endpoint"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(export_sha(&uri, &scratch), content);

    // Grown while attached: a new connection sees the new size.
    let grown = node.cli_ok(&["volume", "expand", VOLUME, "128M"]);
    assert!(grown.contains("128 MiB"), "{grown}");
    qemu_io(&uri, &["write -P 0x6e 120M 1M", "read -P 0x6e 120M 1M"]);
    let detached = node.cli(&["volume", "expand", "nosuch", "256M"]);
    assert!(
        !detached.success() && detached.stderr.contains("404"),
        "{detached:?}"
    );

    node.cli_ok(&["volume", "detach", VOLUME]);
    node.wait_for(VOLUME, "detached", Duration::from_secs(60), |v| {
        v["status"]["state"] == "detached"
    });

    // More than the disk's filesystem holds in a file: refused as a bad request, and
    // nothing half done (the replicas grow and open normally below).
    let huge = node.cli(&["volume", "expand", VOLUME, "1P"]);
    assert!(
        !huge.success() && huge.stderr.contains("400") && huge.stderr.contains("cannot hold"),
        "{huge:?}"
    );

    // Grown while detached (every replica directly), then attached at the new size.
    let grown = node.cli_ok(&["volume", "expand", VOLUME, "192M"]);
    assert!(grown.contains("192 MiB"), "{grown}");
    let uri = node
        .cli_ok(&["volume", "attach", VOLUME])
        .trim()
        .to_string();
    qemu_io(
        &uri,
        &[
            "read -P 0x6e 120M 1M",
            "write -P 0x6f 191M 1M",
            "read -P 0x6f 191M 1M",
        ],
    );
    node.wait_for(VOLUME, "healthy at 192M", Duration::from_secs(60), |v| {
        attached_with_three_rw(v) && v["spec"]["size"] == 192 << 20
    });
    node.cli_ok(&["volume", "detach", VOLUME]);
    node.wait_for(VOLUME, "detached", Duration::from_secs(60), |v| {
        v["status"]["state"] == "detached"
    });
    node.cli_ok(&["volume", "rm", VOLUME]);
    for dir in &replicas {
        assert!(!dir.exists(), "{} survived the deletion", dir.display());
    }
    assert!(!node.cli_ok(&["volume", "ls"]).contains(VOLUME));
    node.stop();
}

/// Every replica of an attached volume killed at once: the volume is faulted; after the
/// wait interval the manager starts the replicas again on their data and the engine
/// salvages the volume by itself (`auto_salvage`): healthy again, nothing flushed lost.
#[test]
fn a_volume_whose_replicas_all_died_is_salvaged_by_itself() {
    let node = Node::start();
    node.cli_ok(&["setting", "set", "minimal_available_percentage", "0"]);
    node.cli_ok(&["setting", "set", "replica_replenishment_wait_interval", "2"]);
    let uri = node.create_attached(VOLUME, "32M", 2);
    // qemu-io flushes before it exits: these writes are durable on both replicas.
    qemu_io(&uri, &["write -P 0x7a 0 4M"]);
    // What lasts: each started again on its data ("faulted" passes within seconds).
    node.kill_replicas_and_wait_restarted(VOLUME);
    node.wait_for(VOLUME, "salvaged", Duration::from_secs(90), healthy_all_rw);
    assert!(node.log().contains("salvaging"), "{}", node.log());
    qemu_io(&uri, &["read -P 0x7a 0 4M"]);
}
