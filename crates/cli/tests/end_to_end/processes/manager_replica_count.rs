//! A volume's replicas changed through `shorthorn up` while it serves, with data
//! checks at each step: 2 → 3 (a replica placed and rebuilt live) → 2 (the extra one
//! leaves the engine, then its process and directory go); `volume replica-rm` removes
//! one replica and a new one is rebuilt in its place; the last running replica and
//! replicas of other volumes are refused; counts outside 1–16 are refused. With
//! `auto_salvage` off a volume whose replicas all died stays faulted until `volume
//! salvage` brings it back with its acknowledged data; salvage of a healthy volume is
//! refused.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::Value;

use crate::common::{processes_mentioning, qemu_io};
use crate::upnode::{Node, healthy_all_rw};

const VOLUME: &str = "rcvol";
const WAIT: Duration = Duration::from_secs(90);

/// Names of the replicas the volume wants.
fn wanted(volume: &Value) -> BTreeSet<String> {
    volume["replicas"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["spec"]["desire_running"] == true)
        .map(|r| r["name"].as_str().unwrap().to_owned())
        .collect()
}

/// Waits until the volume is healthy with exactly `count` replica objects, all wanted
/// and RW.
fn settled(node: &Node, count: usize) -> Value {
    node.wait_for(
        VOLUME,
        &format!("healthy with {count} replicas"),
        WAIT,
        |v| {
            let all = v["replicas"].as_array().unwrap();
            v["status"]["robustness"] == "healthy"
                && all.len() == count
                && all
                    .iter()
                    .all(|r| r["spec"]["desire_running"] == true && r["status"]["mode"] == "RW")
        },
    );
    node.volume(VOLUME)
}

#[test]
fn replicas_are_added_and_removed_live_and_one_is_replaced_on_request() {
    let node = Node::start();
    let uri = node.create_attached(VOLUME, "32M", 2);
    qemu_io(&uri, &["write -P 0x11 0 1M"]);

    let grown = node.cli_ok(&["volume", "update", VOLUME, "--replicas", "3"]);
    assert!(grown.contains("3 replicas"), "{grown}");
    let three = settled(&node, 3);
    assert_eq!(wanted(&three).len(), 3);
    assert_eq!(node.volume_dirs().len(), 3);
    qemu_io(&uri, &["read -P 0x11 0 1M", "write -P 0x22 1M 1M"]);

    node.cli_ok(&["volume", "update", VOLUME, "--replicas", "2"]);
    let two = settled(&node, 2);
    assert!(wanted(&two).is_subset(&wanted(&three)), "{two:#}");
    assert_eq!(
        node.volume_dirs().len(),
        2,
        "the retired replica's directory is gone"
    );
    qemu_io(&uri, &["read -P 0x11 0 1M", "read -P 0x22 1M 1M"]);

    let victim = wanted(&two).into_iter().next().unwrap();
    let answer = node.cli_ok(&["volume", "replica-rm", VOLUME, &victim]);
    assert!(answer.contains("retires"), "{answer}");
    node.wait_for(VOLUME, "the victim replaced", WAIT, |v| {
        let all = v["replicas"].as_array().unwrap();
        all.len() == 2
            && all
                .iter()
                .all(|r| r["name"] != victim.as_str() && r["status"]["mode"] == "RW")
            && v["status"]["robustness"] == "healthy"
    });
    assert!(
        node.volume_dirs().iter().all(|d| !d.ends_with(&victim)),
        "{:?}",
        node.volume_dirs()
    );
    assert!(processes_mentioning(&victim).is_empty());
    qemu_io(&uri, &["read -P 0x11 0 1M", "read -P 0x22 1M 1M"]);

    // Refusals, which change nothing.
    node.create_attached("solo", "16M", 1);
    let solo = wanted(&node.volume("solo")).into_iter().next().unwrap();
    let last = node.cli(&["volume", "replica-rm", "solo", &solo]);
    assert!(
        !last.success() && last.stderr.contains("409") && last.stderr.contains("last running"),
        "{last:?}"
    );
    let foreign = node.cli(&["volume", "replica-rm", VOLUME, &solo]);
    assert!(
        !foreign.success() && foreign.stderr.contains("404"),
        "{foreign:?}"
    );
    for bad in ["0", "17"] {
        let refused = node.cli(&["volume", "update", VOLUME, "--replicas", bad]);
        assert!(
            !refused.success() && refused.stderr.contains("400"),
            "--replicas {bad}: {refused:?}"
        );
    }
    assert_eq!(node.volume(VOLUME)["spec"]["replicas"], 2);
    assert_eq!(wanted(&node.volume("solo")), BTreeSet::from([solo]));
}

#[test]
fn a_faulted_volume_waits_for_volume_salvage_when_auto_salvage_is_off() {
    let node = Node::start();
    node.cli_ok(&["setting", "set", "auto_salvage", "false"]);
    node.cli_ok(&["setting", "set", "replica_replenishment_wait_interval", "2"]);
    let uri = node.create_attached(VOLUME, "32M", 2);
    qemu_io(&uri, &["write -P 0x7b 0 4M"]);
    let healthy = node.cli(&["volume", "salvage", VOLUME]);
    assert!(
        !healthy.success() && healthy.stderr.contains("not faulted"),
        "{healthy:?}"
    );

    node.kill_replicas_and_wait_restarted(VOLUME);
    // Every replica runs again, but nothing salvages by itself.
    node.wait_for(VOLUME, "faulted", WAIT, |v| {
        v["status"]["robustness"] == "faulted"
    });
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(node.volume(VOLUME)["status"]["robustness"], "faulted");
    assert!(!node.log().contains("salvaging"), "{}", node.log());

    let asked = node.cli_ok(&["volume", "salvage", VOLUME]);
    assert!(asked.contains("salvaging"), "{asked}");
    node.wait_for(VOLUME, "salvaged", WAIT, healthy_all_rw);
    qemu_io(&uri, &["read -P 0x7b 0 4M"]);
}
