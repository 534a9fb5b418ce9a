//! Disaster recovery across two clusters (two `shorthorn up`, each its own data
//! directory and API port) sharing one real S3 server (`s3s-fs`):
//!
//! - site A's volume is written by fio while a recurring job backs it up every 20 s;
//! - site B's standby volume (2 replicas) follows: at 5 points, after `volume sync
//!   --wait`, both replicas hold exactly the backup B reports as restored (sha256 of the
//!   replica directories against a restore of that backup), and the bytes each
//!   incremental restore fetched are within 10 % of what that backup uploaded;
//! - refusals: a standby from a volume without backups or of the wrong size, attach,
//!   snapshot, expand, backup and recurring jobs of a standby (409 naming why);
//! - the last restored backup deleted at A: the next restore is a full one (an event
//!   says so) and the content is still equal;
//! - `kill -9` of B's `up` in the middle of a restore: the restore task stops by itself
//!   (its stdin closes), a new `up` resumes it and it ends equal;
//! - activation: the time from `volume activate` to attached, the content equal to the
//!   newest backup, writes work; a second activate is a clear error.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::backupstore::{S3Server, SECRET_KEY, backup_name, backup_restore, dir_sha, export_sha};
use crate::common::{path_str, processes_mentioning, qemu_io, require};
use crate::upnode::Node;

const SOURCE: &str = "src";
const STANDBY: &str = "dr1";
const SIZE: &str = "128M";

/// Sets backup target `default` at `url` with the S3 server's endpoint and credentials.
fn set_target(node: &Node, s3: &S3Server, url: &str) {
    let secret = node.dir.path().join("s3-secret");
    std::fs::write(&secret, SECRET_KEY).unwrap();
    node.cli_ok(&[
        "backup-target",
        "set",
        "default",
        url,
        "--poll-interval",
        "1",
        "--endpoint",
        &s3.endpoint,
        "--access-key-id",
        "shorthorn-test",
        "--secret-access-key-file",
        path_str(&secret),
    ]);
}

/// Site A's completed backups of the source, oldest first.
fn completed_backups(site: &Node) -> Vec<Value> {
    let backups: Value = site.api.call("GET", "/v1/backups", None).json();
    let mut done: Vec<Value> = backups
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| b["spec"]["volume"] == SOURCE && b["status"]["state"] == "completed")
        .cloned()
        .collect();
    done.sort_by_key(|b| {
        b["status"]["completed"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    });
    done
}

/// Waits (at most 60 s) for a completed backup of the source not in `seen`.
fn next_backup(site: &Node, seen: &BTreeSet<String>) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(new) = completed_backups(site)
            .into_iter()
            .rev()
            .find(|b| !seen.contains(b["name"].as_str().unwrap()))
        {
            return new;
        }
        assert!(
            Instant::now() < deadline,
            "no new backup of {SOURCE} within 60 s\n{}",
            site.log_tail(40)
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// The standby's replica directories.
fn replica_dirs(site: &Node) -> Vec<PathBuf> {
    let volume = site.volume(STANDBY);
    volume["replicas"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| PathBuf::from(r["spec"]["data_dir"].as_str().unwrap()))
        .collect()
}

/// sha256 of the backup at `url` (restored into a scratch directory).
fn backup_sha(s3: &S3Server, url: &str, scratch: &Path) -> String {
    let dir = scratch.join(format!("check-{}", backup_name(url)));
    backup_restore(url, &dir, &s3.env());
    let sum = dir_sha(&dir, scratch);
    std::fs::remove_dir_all(&dir).unwrap();
    sum
}

/// `volume sync --wait` at B, then what B's standby status says.
fn sync(site: &Node) -> Value {
    site.cli_ok(&["volume", "sync", STANDBY, "--wait", "--timeout", "2m"]);
    site.volume(STANDBY)["status"]["standby"].clone()
}

/// Both replicas of the standby hold `sha` (and so are identical).
fn assert_replicas_hold(site: &Node, sha: &str, what: &str) {
    let dirs = replica_dirs(site);
    assert_eq!(dirs.len(), 2, "{what}: {dirs:?}");
    for dir in dirs {
        assert_eq!(
            dir_sha(&dir, site.dir.path()),
            sha,
            "{what}: {}",
            dir.display()
        );
    }
}

/// fio writing 120 MiB of the source sequentially, random data in every write (so
/// backups cannot deduplicate it away): with `paced`, at 512 KiB/s for at most that many
/// seconds; otherwise once, at full speed.
fn start_writer(uri: &str, paced: Option<u32>) -> Child {
    let fio = require("fio", "fio");
    let mut command = Command::new(fio);
    command.args([
        "--name=writer",
        "--ioengine=nbd",
        &format!("--uri={uri}"),
        "--rw=write",
        "--bs=64k",
        "--size=120M",
        "--refill_buffers",
        "--randrepeat=0",
        // A thread, not a forked process: killing fio stops the writes.
        "--thread",
    ]);
    if let Some(seconds) = paced {
        command.args([
            "--rate=512k",
            "--time_based",
            &format!("--runtime={seconds}"),
        ]);
    }
    command
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// POST `path` at B, which must answer 409 naming the standby.
fn refused(site: &Node, path: &str, body: Value) {
    let answer = site.api.call("POST", path, Some(&body));
    assert_eq!(answer.status, 409, "{path}: {answer:?}");
    assert!(
        answer.text().contains("standby volume"),
        "{path}: {answer:?}"
    );
}

#[test]
fn a_standby_volume_follows_the_backups_of_another_cluster_and_activates() {
    let s3 = S3Server::start();
    let target = s3.target("dr");
    let site_a = Node::start_with("site-a", |_| Vec::new());
    let mut site_b = Node::start_with("site-b", |_| Vec::new());
    set_target(&site_a, &s3, &target);
    set_target(&site_b, &s3, &target);
    // B follows only when told (`volume sync`), so nothing restores while a check reads.
    site_b.cli_ok(&["setting", "set", "backup_poll_interval", "3600"]);
    let source_url = format!("{target}?volume={SOURCE}");

    // Site A: the source with some data and a first backup.
    let uri = site_a.create_attached(SOURCE, SIZE, 1);
    qemu_io(&uri, &["write -P 0x11 0 8M", "write -P 0x22 100M 4M"]);
    let first = site_a
        .cli_ok(&["volume", "backup", SOURCE, "--wait"])
        .trim()
        .to_string();

    // Refused at create: no backups, the wrong size, no source at all.
    let none = site_b.cli(&[
        "volume",
        "create",
        "dr0",
        "--size",
        SIZE,
        "--standby",
        "--from-backup",
        &format!("{target}?volume=nothing"),
    ]);
    assert!(
        !none.success() && none.stderr.contains("has no backups"),
        "{none:?}"
    );
    let wrong_size = site_b.cli(&[
        "volume",
        "create",
        "dr0",
        "--size",
        "64M",
        "--standby",
        "--from-backup",
        &source_url,
    ]);
    assert!(
        !wrong_size.success()
            && wrong_size
                .stderr
                .contains("create the volume with that size"),
        "{wrong_size:?}"
    );
    let no_source = site_b.cli(&["volume", "create", "dr0", "--size", SIZE, "--standby"]);
    assert!(
        !no_source.success() && no_source.stderr.contains("--from-backup"),
        "{no_source:?}"
    );

    // Site B: the standby restores the newest backup in full.
    site_b.cli_ok(&[
        "volume",
        "create",
        STANDBY,
        "--size",
        SIZE,
        "--replicas",
        "2",
        "--standby",
        "--from-backup",
        &source_url,
    ]);
    let status = sync(&site_b);
    assert_eq!(
        status["last_restored"],
        backup_name(&first).as_str(),
        "{status:#}"
    );
    assert_replicas_hold(
        &site_b,
        &export_sha(&uri, site_a.dir.path()),
        "the first restore",
    );
    let volume = site_b.volume(STANDBY);
    assert_eq!(volume["status"]["state"], "standby", "{volume:#}");
    assert_eq!(volume["status"]["robustness"], "healthy", "{volume:#}");
    let shown = site_b.cli_ok(&["volume", "get", STANDBY]);
    assert!(
        shown.contains("standby:     follows") && shown.contains(&backup_name(&first)),
        "{shown}"
    );

    // What a standby refuses, and says why.
    refused(&site_b, &format!("/v1/volumes/{STANDBY}/attach"), json!({}));
    refused(
        &site_b,
        &format!("/v1/volumes/{STANDBY}/snapshots"),
        json!({}),
    );
    refused(
        &site_b,
        &format!("/v1/volumes/{STANDBY}/expand"),
        json!({"size": 256u64 << 20}),
    );
    refused(
        &site_b,
        "/v1/backups",
        json!({"volume": STANDBY, "target": "default"}),
    );
    let jobs = site_b.api.call(
        "PUT",
        &format!("/v1/volumes/{STANDBY}/recurring-jobs"),
        Some(&json!({"groups": ["default"]})),
    );
    assert_eq!(jobs.status, 409, "{jobs:?}");
    let attach = site_b.cli(&["volume", "attach", STANDBY]);
    assert!(
        !attach.success() && attach.stderr.contains("volume activate"),
        "{attach:?}"
    );

    // Site A writes while a recurring job backs up every 20 s; B follows, 5 times.
    let mut writer = start_writer(&uri, Some(150));
    site_a.cli_ok(&[
        "job",
        "create",
        "dr20s",
        "--task",
        "backup",
        "--cron",
        "*/20 * * * * *",
        "--retain",
        "20",
        "--target",
        "default",
    ]);
    site_a.cli_ok(&["volume", "jobs", SOURCE, "--job", "dr20s"]);
    let mut seen: BTreeSet<String> = [backup_name(&first)].into();
    let mut figures = Vec::new();
    for point in 1..=5 {
        let backup = next_backup(&site_a, &seen);
        let name = backup["name"].as_str().unwrap().to_string();
        let status = sync(&site_b);
        let restored = status["last_restored"].as_str().unwrap().to_string();
        // Normally the backup just seen; a newer one if it came during the sync.
        let newer: Vec<Value> = completed_backups(&site_a)
            .into_iter()
            .filter(|b| !seen.contains(b["name"].as_str().unwrap()))
            .collect();
        let position = newer
            .iter()
            .position(|b| b["name"] == restored.as_str())
            .unwrap_or_else(|| panic!("point {point}: restored {restored}, not one of {newer:#?}"));
        let uploaded: u64 = newer[..=position]
            .iter()
            .map(|b| b["status"]["uploaded_bytes"].as_u64().unwrap())
            .sum();
        let fetched = status["last_restore_bytes"].as_u64().unwrap();
        assert!(
            uploaded > 0,
            "point {point}: backup {name} uploaded nothing: {backup:#}"
        );
        let ratio = fetched as f64 / uploaded as f64;
        assert!(
            (0.9..=1.1).contains(&ratio),
            "point {point}: the restore fetched {fetched} bytes, the backups since the last restore uploaded {uploaded}"
        );
        let url = newer[position]["status"]["url"]
            .as_str()
            .unwrap()
            .to_string();
        let sha = backup_sha(&s3, &url, site_a.dir.path());
        assert_replicas_hold(&site_b, &sha, &format!("point {point} ({restored})"));
        assert_eq!(status["lag_backups"], 0, "point {point}: {status:#}");
        figures.push(format!(
            "{restored}: fetched {fetched} of {uploaded} uploaded"
        ));
        for b in &newer[..=position] {
            seen.insert(b["name"].as_str().unwrap().to_string());
        }
    }
    eprintln!("incremental restores: {figures:#?}");
    let metrics = site_b.api.call("GET", "/metrics", None).text();
    assert!(
        metrics.contains(&format!(
            "shorthorn_dr_lag_seconds{{volume=\"{STANDBY}\"}} 0"
        )),
        "{metrics}"
    );
    assert!(
        metrics.contains("shorthorn_dr_last_restore_bytes"),
        "{metrics}"
    );
    site_a.cli_ok(&["volume", "jobs", SOURCE]);
    let _ = writer.kill();
    let _ = writer.wait();

    // The backup B holds is deleted at A: B restores the newest in full, still equal.
    let last = site_b.volume(STANDBY)["status"]["standby"]["last_restored"]
        .as_str()
        .unwrap()
        .to_string();
    qemu_io(&uri, &["write -P 0x33 40M 6M"]);
    let after_delete = site_a
        .cli_ok(&["volume", "backup", SOURCE, "--wait"])
        .trim()
        .to_string();
    site_a.cli_ok(&["volume", "backup-rm", &last, "--wait"]);
    let status = sync(&site_b);
    assert_eq!(
        status["last_restored"],
        backup_name(&after_delete).as_str(),
        "{status:#}"
    );
    let sha = backup_sha(&s3, &after_delete, site_a.dir.path());
    assert_eq!(
        export_sha(&uri, site_a.dir.path()),
        sha,
        "the source is its backup"
    );
    assert_replicas_hold(&site_b, &sha, "after the last restored backup was deleted");
    let events = site_b.cli_ok(&["events", "--volume", STANDBY]);
    assert!(
        events.contains("StandbyFullRestore") && events.contains(&last),
        "{events}"
    );

    // kill -9 of B's `up` during a restore of much new data; a new `up` resumes it.
    let mut bulk = start_writer(&uri, None);
    assert!(bulk.wait().unwrap().success(), "fio failed");
    let bulk_url = site_a
        .cli_ok(&["volume", "backup", SOURCE, "--wait"])
        .trim()
        .to_string();
    let bulk_sha = export_sha(&uri, site_a.dir.path());
    site_b.cli_ok(&["volume", "sync", STANDBY]);
    let needle = format!("{}", site_b.data_dir().display());
    // Once a replica's restore.json says it is restoring this backup, blocks are being
    // compared and written.
    let bulk_backup = backup_name(&bulk_url);
    let restoring = |site: &Node| {
        site.volume_dirs().iter().any(|dir| {
            std::fs::read_to_string(dir.join("restore.json")).is_ok_and(|s| {
                s.contains(&format!("\"backup\": \"{bulk_backup}\"")) && s.contains("\"restoring\"")
            })
        })
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while !restoring(&site_b) {
        assert!(
            Instant::now() < deadline,
            "no restore of {bulk_backup} under way at B\n{}",
            site_b.log_tail(40)
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    site_b.crash();
    assert!(restoring(&site_b), "the restore completed before the kill");
    let deadline = Instant::now() + Duration::from_secs(20);
    while processes_mentioning(&needle)
        .iter()
        .any(|(_, args)| args.iter().any(|a| a == "restore"))
    {
        assert!(
            Instant::now() < deadline,
            "a restore task outlived the killed up: {:?}",
            processes_mentioning(&needle)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    site_b.restart();
    let status = sync(&site_b);
    assert_eq!(
        status["last_restored"],
        backup_name(&bulk_url).as_str(),
        "{status:#}"
    );
    assert_replicas_hold(
        &site_b,
        &bulk_sha,
        "after a restore interrupted by kill -9 of up",
    );

    // Without `volume sync`: with a short poll interval it follows by itself.
    site_b.cli_ok(&["setting", "set", "backup_poll_interval", "1"]);
    qemu_io(&uri, &["write -P 0x55 64M 3M"]);
    let polled_url = site_a
        .cli_ok(&["volume", "backup", SOURCE, "--wait"])
        .trim()
        .to_string();
    let polled = backup_name(&polled_url);
    site_b.wait_for(
        STANDBY,
        "following by itself",
        Duration::from_secs(60),
        |v| {
            v["status"]["standby"]["last_restored"] == polled.as_str()
                && v["status"]["standby"]["restoring"].is_null()
        },
    );
    let bulk_sha = export_sha(&uri, site_a.dir.path());
    assert_replicas_hold(&site_b, &bulk_sha, "following by itself");

    // Activation: caught up, so attached within seconds; the data is the newest backup.
    let started = Instant::now();
    let activated = site_b.cli_ok(&["volume", "activate", STANDBY, "--timeout", "2m"]);
    assert!(activated.contains("activated"), "{activated}");
    let standby_uri = site_b
        .cli_ok(&["volume", "attach", STANDBY])
        .trim()
        .to_string();
    let to_attached = started.elapsed();
    eprintln!("activate → attached: {to_attached:.1?}");
    assert_eq!(export_sha(&standby_uri, site_b.dir.path()), bulk_sha);
    qemu_io(&standby_uri, &["write -P 0x44 0 1M"]);
    qemu_io(&standby_uri, &["read -P 0x44 0 1M"]);
    let volume = site_b.volume(STANDBY);
    assert!(volume["spec"]["standby"].is_null(), "{volume:#}");
    let again = site_b.cli(&["volume", "activate", STANDBY]);
    assert!(
        !again.success() && again.stderr.contains("not a standby volume"),
        "{again:?}"
    );
    // Now an ordinary volume: snapshots work.
    site_b.cli_ok(&["volume", "snapshot", "create", STANDBY, "after-activation"]);
    site_b.cli_ok(&["volume", "detach", STANDBY]);
    site_a.cli_ok(&["volume", "detach", SOURCE]);
}
