//! Snapshots of managed volumes through `shorthorn up` (CLI and REST): taken, listed,
//! removed, reverted and purged on an attached volume (through its engine) and on a
//! detached one (on every replica), with byte checks — the reverted volume reads what
//! the snapshot held. A revert of an attached volume is refused with a 409 saying to
//! detach; bad snapshot names, a snapshot of another volume and unknown snapshots are
//! refused and change nothing.

use std::time::Duration;

use serde_json::{Value, json};

use crate::common::qemu_io;
use crate::upnode::Node;

const VOLUME: &str = "snapvol";
const WAIT: Duration = Duration::from_secs(60);

fn snapshots(node: &Node, volume: &str) -> Vec<Value> {
    let listed = node.cli_ok(&["volume", "snapshot", "ls", volume, "--json"]);
    serde_json::from_str::<Value>(&listed)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

fn names(snapshots: &[Value]) -> Vec<String> {
    snapshots
        .iter()
        .map(|s| s["name"].as_str().unwrap().to_owned())
        .collect()
}

fn detach(node: &Node, volume: &str) {
    node.cli_ok(&["volume", "detach", volume]);
    node.wait_for(volume, "detached", WAIT, |v| {
        v["status"]["state"] == "detached"
    });
}

fn attach(node: &Node, volume: &str) -> String {
    let uri = node.cli_ok(&["volume", "attach", volume]).trim().to_owned();
    node.wait_for(volume, "healthy", WAIT, |v| {
        v["status"]["robustness"] == "healthy"
    });
    uri
}

#[test]
fn snapshots_of_attached_and_detached_volumes_are_taken_listed_reverted_and_removed() {
    let node = Node::start();
    let uri = node.create_attached(VOLUME, "32M", 2);
    qemu_io(&uri, &["write -P 0xa1 0 1M", "flush"]);

    // Attached: through the engine.
    let taken = node.cli_ok(&[
        "volume", "snapshot", "create", VOLUME, "s1", "--label", "app=db",
    ]);
    assert_eq!(taken.trim(), "s1");
    qemu_io(&uri, &["write -P 0xb2 0 1M", "flush"]);
    let auto = node.cli_ok(&["volume", "snapshot", "create", VOLUME]);
    assert!(auto.trim().starts_with("snap-"), "{auto}");
    let listed = snapshots(&node, VOLUME);
    let s1 = listed.iter().find(|s| s["name"] == "s1").unwrap();
    assert_eq!(s1["id"], "snapvol/s1");
    assert_eq!(s1["volume"], VOLUME);
    assert_eq!(s1["user_created"], true);
    assert_eq!(s1["labels"], json!({"app": "db"}));
    assert!(s1["size"].as_u64().unwrap() >= 1 << 20, "{s1}");
    assert!(!s1["created"].as_str().unwrap().is_empty());
    assert_eq!(names(&listed), ["s1", auto.trim()]);
    let table = node.cli_ok(&["volume", "snapshot", "ls", VOLUME]);
    assert!(
        table.contains("app=db") && table.contains("user"),
        "{table}"
    );

    // Revert needs the frontend stopped: refused while attached, nothing changes.
    let refused = node.cli(&["volume", "snapshot", "revert", VOLUME, "s1"]);
    assert!(!refused.success(), "{refused:?}");
    assert!(
        refused.stderr.contains("409") && refused.stderr.contains("detach it first"),
        "{refused:?}"
    );
    qemu_io(&uri, &["read -P 0xb2 0 1M"]);

    // Detached: on every replica.
    detach(&node, VOLUME);
    let offline = node.cli_ok(&["volume", "snapshot", "create", VOLUME, "offline"]);
    assert_eq!(offline.trim(), "offline");
    assert!(names(&snapshots(&node, VOLUME)).contains(&"offline".to_owned()));
    node.cli_ok(&["volume", "snapshot", "revert", VOLUME, "s1"]);
    let uri = attach(&node, VOLUME);
    qemu_io(&uri, &["read -P 0xa1 0 1M", "read -P 0 1M 1M"]);

    // Removed attached, purged detached; the data stays what s1 held.
    node.cli_ok(&["volume", "snapshot", "rm", VOLUME, auto.trim()]);
    assert!(
        snapshots(&node, VOLUME)
            .iter()
            .all(|s| s["name"] != auto.trim() || s["removed"] == true),
        "{auto} is neither gone nor marked removed"
    );
    detach(&node, VOLUME);
    node.cli_ok(&["volume", "snapshot", "rm", VOLUME, "offline"]);
    node.cli_ok(&["volume", "snapshot", "purge", VOLUME]);
    let left = names(&snapshots(&node, VOLUME));
    assert!(left.contains(&"s1".to_owned()), "{left:?}");
    assert!(!left.contains(&"offline".to_owned()), "{left:?}");
    assert!(!left.contains(&auto.trim().to_owned()), "purged: {left:?}");
    let uri = attach(&node, VOLUME);
    qemu_io(&uri, &["read -P 0xa1 0 1M"]);
}

#[test]
fn bad_snapshot_requests_are_refused_and_change_nothing() {
    let node = Node::start();
    node.create_attached(VOLUME, "16M", 1);
    node.create_attached("other", "16M", 1);
    node.cli_ok(&["volume", "snapshot", "create", "other", "o1"]);
    node.cli_ok(&["volume", "snapshot", "create", VOLUME, "mine"]);
    let before = names(&snapshots(&node, VOLUME));

    for bad in ["a/b", "..", "bad\u{1}name", ""] {
        let answer = node.api.call(
            "POST",
            &format!("/v1/volumes/{VOLUME}/snapshots"),
            Some(&json!({ "name": bad })),
        );
        assert_eq!(answer.status, 400, "name {bad:?}: {answer}");
        assert!(answer.message().contains("name"), "{answer}");
    }
    let taken = node.api.call(
        "POST",
        &format!("/v1/volumes/{VOLUME}/snapshots"),
        Some(&json!({ "name": "mine" })),
    );
    assert_eq!(taken.status, 409, "a name taken: {taken}");
    for path in ["..", "a%2Fb", "bad%01name"] {
        let answer = node.api.call(
            "DELETE",
            &format!("/v1/volumes/{VOLUME}/snapshots/{path}"),
            None,
        );
        assert!(
            answer.status == 400 || answer.status == 404,
            "DELETE snapshot {path:?}: {answer}"
        );
    }
    // Another volume's snapshot is not this volume's.
    node.cli_ok(&["volume", "detach", VOLUME]);
    node.wait_for(VOLUME, "detached", WAIT, |v| {
        v["status"]["state"] == "detached"
    });
    let foreign = node.api.call(
        "POST",
        &format!("/v1/volumes/{VOLUME}/snapshots/o1/revert"),
        None,
    );
    assert_eq!(foreign.status, 404, "{foreign}");
    let unknown = node
        .api
        .call("GET", &format!("/v1/volumes/{VOLUME}/snapshots/nope"), None);
    assert_eq!(unknown.status, 404, "{unknown}");
    let no_volume = node.api.call("GET", "/v1/volumes/nosuch/snapshots", None);
    assert_eq!(no_volume.status, 404, "{no_volume}");

    assert_eq!(names(&snapshots(&node, VOLUME)), before);
    assert_eq!(names(&snapshots(&node, "other")), ["o1"]);
}
