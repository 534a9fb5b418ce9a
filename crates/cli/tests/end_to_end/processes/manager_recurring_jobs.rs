//! Recurring jobs under `shorthorn up`: a snapshot job every 2 s (retain 2) selected by a
//! volume by name, and a backup job every 3 s (retain 2) to a `file://` target selected
//! through a group. After several runs the volume keeps exactly the newest 2 snapshots of
//! the snapshot job, the target holds exactly 2 backups of the backup job (each restoring
//! to a volume the job snapshotted), and a detached volume is skipped, not failed.

use std::time::{Duration, Instant};

use crate::common::{path_str, qemu_io, shorthorn_ok};
use crate::upnode::Node;

/// Snapshot names of the engine's volume carrying `recurring-job: JOB`, not removed.
fn job_snapshots(engine: &str, job: &str) -> Vec<String> {
    let out = shorthorn_ok(&["--engine", engine, "snapshot", "ls", "--json"]);
    let layers: serde_json::Value = serde_json::from_str(&out).unwrap();
    layers
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["labels"]["recurring-job"] == job && l["removed"] != true)
        .map(|l| l["name"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn recurring_snapshot_and_backup_jobs_run_and_prune() {
    let node = Node::start();
    let backups = node.data_dir().join("backups");
    let target = format!("file://{}", path_str(&backups));
    node.cli_ok(&["setting", "set", "minimal_available_percentage", "0"]);
    node.cli_ok(&[
        "job",
        "create",
        "snap2s",
        "--task",
        "snapshot",
        "--cron",
        "*/2 * * * * *",
        "--retain",
        "2",
    ]);
    node.cli_ok(&[
        "job",
        "create",
        "backup3s",
        "--task",
        "backup",
        "--cron",
        "*/3 * * * * *",
        "--retain",
        "2",
        "--group",
        "nightly",
        "--target",
        &target,
    ]);
    let bad = node.cli(&[
        "job",
        "create",
        "bad",
        "--task",
        "snapshot",
        "--cron",
        "every day",
    ]);
    assert!(!bad.success() && bad.stderr.contains("cron"), "{bad:?}");

    node.cli_ok(&[
        "volume",
        "create",
        "jobs",
        "--size",
        "32M",
        "--replicas",
        "1",
        "--recurring-job",
        "snap2s",
        "--recurring-job-group",
        "nightly",
    ]);
    node.cli_ok(&[
        "volume",
        "create",
        "idle",
        "--size",
        "32M",
        "--replicas",
        "1",
    ]);
    node.cli_ok(&["volume", "jobs", "idle", "--job", "snap2s"]);
    let uri = node
        .cli_ok(&["volume", "attach", "jobs"])
        .trim()
        .to_string();
    let engine = node.volume("jobs")["engine"]["status"]["address"]
        .as_str()
        .unwrap()
        .to_string();

    // Let both jobs run several times, writing between runs.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut writes = 0u8;
    loop {
        qemu_io(
            &uri,
            &[&format!("write -P {} {}M 1M", writes + 1, writes % 30)],
        );
        writes = writes.wrapping_add(1);
        std::thread::sleep(Duration::from_millis(700));
        let jobs: serde_json::Value =
            serde_json::from_str(&node.cli_ok(&["job", "ls", "--json"])).unwrap();
        let results: Vec<String> = jobs
            .as_array()
            .unwrap()
            .iter()
            .map(|j| {
                j["status"]["last_result"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string()
            })
            .collect();
        let pruned = results.iter().all(|r| r.contains("removed snapshot"));
        if pruned && results.iter().any(|r| r.contains("deleted backup")) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "jobs did not run and prune within 60 s: {jobs:#}\n{}",
            node.log()
        );
    }
    // Stop the jobs so what we count stays put.
    node.cli_ok(&["job", "rm", "snap2s"]);
    node.cli_ok(&["job", "rm", "backup3s"]);
    std::thread::sleep(Duration::from_secs(4));

    let snaps = job_snapshots(&engine, "snap2s");
    assert_eq!(snaps.len(), 2, "snapshot job keeps 2: {snaps:?}");
    let listed = node.cli_ok(&["job", "ls"]);
    assert!(listed.trim().is_empty(), "{listed}");

    let out = shorthorn_ok(&["backup", "ls", "--target", &target, "jobs", "--json"]);
    let records: serde_json::Value = serde_json::from_str(&out).unwrap();
    let records = records.as_array().unwrap();
    assert_eq!(records.len(), 2, "backup job keeps 2: {records:#?}");
    for record in records {
        assert_eq!(record["labels"]["recurring-job"], "backup3s");
        let dir = node.dir.path().join(record["name"].as_str().unwrap());
        shorthorn_ok(&[
            "backup",
            "restore",
            record["url"].as_str().unwrap(),
            "--to",
            path_str(&dir),
        ]);
    }
    // The detached volume was skipped each time, never failed.
    let log = node.log();
    assert!(log.contains("idle: skipped (not attached)"), "{log}");
    assert!(!log.contains("failed:"), "{log}");
}
