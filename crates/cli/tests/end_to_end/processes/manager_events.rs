//! Events under `shorthorn up`: a create → attach → snapshot → detach → delete sequence
//! is recorded in that order (with the replica's placement and start on the way), `events
//! --volume` shows only that volume's, and an idle cluster records nothing new.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::upnode::Node;

const WAIT: Duration = Duration::from_secs(60);

fn events(node: &Node, volume: &str) -> Vec<Value> {
    let listed = node.cli_ok(&["events", "--volume", volume, "--json"]);
    serde_json::from_str::<Value>(&listed)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

fn reasons(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| e["reason"].as_str().unwrap().to_owned())
        .collect()
}

/// Waits until the volume's events include `reason`; returns them.
fn wait_for_event(node: &Node, volume: &str, reason: &str) -> Vec<Value> {
    let deadline = Instant::now() + WAIT;
    loop {
        let events = events(node, volume);
        if reasons(&events).iter().any(|r| r == reason) {
            return events;
        }
        assert!(
            Instant::now() < deadline,
            "no {reason} event for {volume} within {WAIT:?}: {:?}\n{}",
            reasons(&events),
            node.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Where `reason` first appears in `reasons`.
fn position(reasons: &[String], reason: &str) -> usize {
    reasons
        .iter()
        .position(|r| r == reason)
        .unwrap_or_else(|| panic!("no {reason} in {reasons:?}"))
}

#[test]
fn a_volume_lifecycle_is_recorded_in_order_and_idle_records_nothing() {
    let node = Node::start();
    node.create_attached("other", "32M", 1);
    node.create_attached("ev", "32M", 1);
    node.cli_ok(&["volume", "snapshot", "create", "ev", "s1"]);
    wait_for_event(&node, "ev", "SnapshotCreated");
    node.cli_ok(&["volume", "detach", "ev"]);
    let seen = wait_for_event(&node, "ev", "Detached");

    let order = reasons(&seen);
    // A volume may pass through `detached` before it attaches (its replicas ran first)
    // or not, as the passes fall: the order of the rest is fixed.
    let steps = [
        "Created",
        "Scheduled",
        "ReplicaStarted",
        "Attached",
        "SnapshotCreated",
    ];
    let at: Vec<usize> = steps.iter().map(|r| position(&order, r)).collect();
    assert!(
        at.windows(2).all(|w| w[0] < w[1]),
        "events out of order: {order:?}"
    );
    let detached = order.iter().rposition(|r| r == "Detached").unwrap();
    assert!(detached > at[4], "events out of order: {order:?}");
    assert!(position(&order, "Healthy") > at[1], "{order:?}");
    for event in &seen {
        assert_eq!(event["volume"], "ev", "{event:#}");
        assert!(!event["time"].as_str().unwrap().is_empty(), "{event:#}");
        assert!(!event["message"].as_str().unwrap().is_empty(), "{event:#}");
    }
    let snapshot = &seen[position(&order, "SnapshotCreated")];
    assert_eq!(snapshot["object"], "ev/s1", "{snapshot:#}");
    assert_eq!(snapshot["object_kind"], "snapshot", "{snapshot:#}");
    let plain = node.cli_ok(&["events"]);
    assert!(plain.contains("Attached volume/other"), "{plain}");

    // Nothing changes for a while: nothing is recorded.
    let before = node.cli_ok(&["events", "--json"]);
    std::thread::sleep(Duration::from_secs(5));
    let after = node.cli_ok(&["events", "--json"]);
    assert_eq!(before, after, "events recorded while nothing changed");

    node.cli_ok(&["volume", "rm", "ev"]);
    let gone = wait_for_event(&node, "ev", "Deleted");
    assert_eq!(reasons(&gone).last().map(String::as_str), Some("Deleted"));
}
