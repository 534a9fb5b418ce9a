//! The recurring jobs that only prune, under `shorthorn up`: `snapshot-cleanup` removes
//! and purges the system snapshots and keeps every user one; `snapshot-delete` keeps the
//! newest `retain` user snapshots and purges the rest. Neither takes a snapshot, the
//! volume's data stays what was written, and a kept snapshot still reverts to what it
//! held.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::{qemu_io, shorthorn_ok};
use crate::upnode::Node;

const VOLUME: &str = "prune";
const WAIT: Duration = Duration::from_secs(60);

/// (name, user created) of the volume's snapshots that are not removed.
fn snapshots(node: &Node) -> Vec<(String, bool)> {
    let listed = node.cli_ok(&["volume", "snapshot", "ls", VOLUME, "--json"]);
    let listed: Value = serde_json::from_str(&listed).unwrap();
    listed
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["removed"] != true)
        .map(|s| {
            (
                s["name"].as_str().unwrap().to_owned(),
                s["user_created"].as_bool().unwrap(),
            )
        })
        .collect()
}

fn sorted_names(snapshots: &[(String, bool)]) -> Vec<String> {
    let mut names: Vec<String> = snapshots.iter().map(|(n, _)| n.clone()).collect();
    names.sort();
    names
}

/// Creates `job` (every 2 s), lets the volume select it alone, waits for a run that did
/// `expected`, and removes the job again.
fn run_job(node: &Node, job: &str, task: &str, retain: &str, expected: &str) -> String {
    node.cli_ok(&[
        "job",
        "create",
        job,
        "--task",
        task,
        "--cron",
        "*/2 * * * * *",
        "--retain",
        retain,
    ]);
    node.cli_ok(&["volume", "jobs", VOLUME, "--job", job]);
    let deadline = Instant::now() + WAIT;
    let result = loop {
        let jobs: Value = serde_json::from_str(&node.cli_ok(&["job", "ls", "--json"])).unwrap();
        let result = jobs
            .as_array()
            .unwrap()
            .iter()
            .find(|j| j["name"] == job)
            .and_then(|j| j["status"]["last_result"].as_str())
            .unwrap_or_default()
            .to_owned();
        if result.contains(expected) {
            break result;
        }
        assert!(
            Instant::now() < deadline,
            "job {job} did not report {expected:?} within {WAIT:?}: {jobs:#}\n{}",
            node.log()
        );
        std::thread::sleep(Duration::from_millis(300));
    };
    node.cli_ok(&["job", "rm", job]);
    // A run that started just before the removal finishes before we look.
    std::thread::sleep(Duration::from_secs(1));
    result
}

#[test]
fn snapshot_cleanup_and_snapshot_delete_jobs_prune_only_what_they_name() {
    let node = Node::start();
    let uri = node.create_attached(VOLUME, "32M", 1);
    let engine = node.volume(VOLUME)["engine"]["status"]["address"]
        .as_str()
        .unwrap()
        .to_owned();

    // u1 … u4 each hold one more written MiB; two system snapshots in between.
    for (i, pattern) in [0x11, 0x22, 0x33, 0x44].into_iter().enumerate() {
        qemu_io(&uri, &[&format!("write -P {pattern} {i}M 1M"), "flush"]);
        let name = format!("u{}", i + 1);
        node.cli_ok(&["volume", "snapshot", "create", VOLUME, &name]);
        if i % 2 == 1 {
            let system = format!("sys{}", i / 2 + 1);
            shorthorn_ok(&[
                "--engine", &engine, "snapshot", "create", &system, "--system",
            ]);
        }
    }
    qemu_io(&uri, &["write -P 0x55 4M 1M", "flush"]);
    let before = snapshots(&node);
    assert_eq!(
        sorted_names(&before),
        ["sys1", "sys2", "u1", "u2", "u3", "u4"],
        "{before:?}"
    );

    let result = run_job(
        &node,
        "cleanup",
        "snapshot-cleanup",
        "1",
        "removed and purged",
    );
    assert!(
        result.contains("sys1") && result.contains("sys2"),
        "{result}"
    );
    let after_cleanup = snapshots(&node);
    assert_eq!(
        sorted_names(&after_cleanup),
        ["u1", "u2", "u3", "u4"],
        "cleanup keeps every user snapshot: {after_cleanup:?}"
    );
    assert!(after_cleanup.iter().all(|(_, user)| *user));

    let result = run_job(&node, "keep2", "snapshot-delete", "2", "removed and purged");
    assert!(result.contains("u1") && result.contains("u2"), "{result}");
    let after_delete = snapshots(&node);
    assert_eq!(
        sorted_names(&after_delete),
        ["u3", "u4"],
        "delete keeps the newest two: {after_delete:?}"
    );
    let listed = node.cli_ok(&["job", "ls"]);
    assert!(listed.trim().is_empty(), "{listed}");

    // The head still reads everything written; u3 still holds what it held.
    qemu_io(
        &uri,
        &[
            "read -P 0x11 0 1M",
            "read -P 0x22 1M 1M",
            "read -P 0x33 2M 1M",
            "read -P 0x44 3M 1M",
            "read -P 0x55 4M 1M",
        ],
    );
    node.cli_ok(&["volume", "detach", VOLUME]);
    node.wait_for(VOLUME, "detached", WAIT, |v| {
        v["status"]["state"] == "detached"
    });
    node.cli_ok(&["volume", "snapshot", "revert", VOLUME, "u3"]);
    let uri = node.cli_ok(&["volume", "attach", VOLUME]).trim().to_owned();
    node.wait_for(VOLUME, "healthy", WAIT, |v| {
        v["status"]["robustness"] == "healthy"
    });
    qemu_io(
        &uri,
        &[
            "read -P 0x11 0 1M",
            "read -P 0x22 1M 1M",
            "read -P 0x33 2M 1M",
            "read -P 0 3M 2M",
        ],
    );
    let log = node.log();
    assert!(!log.contains("failed:"), "{log}");
}
