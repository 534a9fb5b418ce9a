//! Backups run by the manager, as objects: `backup-target set`, `volume backup --wait`
//! (full, then incremental), restores byte-equal to the volume at each backup, a new
//! volume created from a backup (`volume create --from-backup`) holding its bytes, a backup
//! made outside the manager (`shorthorn backup create`) appearing after the target's poll
//! interval and one deleted outside disappearing, `volume backup-rm` deleting from the
//! target while the other backups stay restorable, and the refusals (detached volume,
//! unknown target).

use std::time::{Duration, Instant};

use crate::backupstore::{backup_name, dir_sha, export_sha, listed};
use crate::common::{path_str, qemu_io, shorthorn_ok};
use crate::upnode::Node;

const VOLUME: &str = "vol";

/// The manager's backup objects of `VOLUME`, as JSON.
fn backups(node: &Node) -> Vec<serde_json::Value> {
    let out = node.cli_ok(&["volume", "backups", VOLUME, "--json"]);
    serde_json::from_str::<serde_json::Value>(&out)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

/// Waits (at most 30 s) until `check` holds for the backup objects.
fn wait_backups(node: &Node, what: &str, check: impl Fn(&[serde_json::Value]) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let listed = backups(node);
        if check(&listed) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "backups not {what} within 30 s: {listed:#?}\n{}",
            node.log()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn restore_sha(node: &Node, url: &str, label: &str) -> String {
    let dir = node.dir.path().join(format!("restored-{label}"));
    shorthorn_ok(&["backup", "restore", url, "--to", path_str(&dir)]);
    let sum = dir_sha(&dir, node.dir.path());
    std::fs::remove_dir_all(&dir).unwrap();
    sum
}

#[test]
fn the_manager_backs_up_lists_and_deletes_backups_in_its_targets() {
    let node = Node::start();
    let store = node.data_dir().join("backups");
    let target = format!("file://{}", path_str(&store));
    node.cli_ok(&["setting", "set", "minimal_available_percentage", "0"]);
    node.cli_ok(&[
        "backup-target",
        "set",
        "default",
        &target,
        "--poll-interval",
        "1",
    ]);
    node.cli_ok(&[
        "volume",
        "create",
        VOLUME,
        "--size",
        "64M",
        "--replicas",
        "2",
    ]);

    // Detached: refused with a reason, nothing created.
    let refused = node.cli(&["volume", "backup", VOLUME]);
    assert!(
        !refused.success() && refused.stderr.contains("not attached"),
        "{refused:?}"
    );
    let uri = node
        .cli_ok(&["volume", "attach", VOLUME])
        .trim()
        .to_string();
    let unknown = node.cli(&["volume", "backup", VOLUME, "--target", "elsewhere"]);
    assert!(
        !unknown.success() && unknown.stderr.contains("elsewhere"),
        "{unknown:?}"
    );
    assert!(backups(&node).is_empty());

    // Full backup of known content.
    qemu_io(&uri, &["write -P 0x11 0 8M", "write -P 0x22 40M 4M"]);
    let first_sha = export_sha(&uri, node.dir.path());
    let first_url = node
        .cli_ok(&[
            "volume",
            "backup",
            VOLUME,
            "--label",
            "kind=first",
            "--wait",
        ])
        .trim()
        .to_string();
    assert!(first_url.starts_with(&target), "{first_url}");
    assert_eq!(restore_sha(&node, &first_url, "first"), first_sha);

    // Incremental: only what changed is uploaded.
    qemu_io(&uri, &["write -P 0x33 2M 1M"]);
    let second_sha = export_sha(&uri, node.dir.path());
    let second_url = node
        .cli_ok(&["volume", "backup", VOLUME, "--wait"])
        .trim()
        .to_string();
    assert_eq!(restore_sha(&node, &second_url, "second"), second_sha);
    let objects = backups(&node);
    assert_eq!(objects.len(), 2, "{objects:#?}");
    let read = |url: &str| {
        objects
            .iter()
            .find(|b| b["status"]["url"] == url)
            .unwrap_or_else(|| panic!("no object for {url}: {objects:#?}"))["status"]["read_bytes"]
            .as_u64()
            .unwrap()
    };
    // 2 MiB blocks: the full backup read the 6 blocks written, the incremental one the
    // single block changed since.
    assert_eq!(read(&first_url), 12 << 20, "{objects:#?}");
    assert_eq!(read(&second_url), 2 << 20, "{objects:#?}");
    assert!(objects.iter().all(|b| b["status"]["state"] == "completed"));
    assert!(
        objects
            .iter()
            .any(|b| b["spec"]["labels"]["kind"] == "first")
    );

    // A new volume restored from the second backup, on two replicas: the same bytes.
    let wrong = node.cli(&[
        "volume",
        "create",
        "restored",
        "--size",
        "32M",
        "--from-backup",
        &second_url,
    ]);
    assert!(
        !wrong.success() && wrong.stderr.contains("67108864"),
        "{wrong:?}"
    );
    let restored_uri = node.restore_attached("restored", "64M", 2, &second_url);
    assert_eq!(export_sha(&restored_uri, node.dir.path()), second_sha);
    // Each replica directory records which backup it was restored from.
    for replica in node.volume("restored")["replicas"].as_array().unwrap() {
        let dir = std::path::Path::new(replica["spec"]["data_dir"].as_str().unwrap());
        let state: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join("restore.json")).unwrap()).unwrap();
        assert_eq!(
            state["backup"],
            backup_name(&second_url).as_str(),
            "{state}"
        );
        assert_eq!(state["volume"], VOLUME, "{state}");
        assert_eq!(state["state"], "complete", "{state}");
    }
    assert!(node.log().contains("restored from the backup"));
    node.cli_ok(&["volume", "detach", "restored"]);

    // A backup made outside the manager appears after the poll interval.
    let engine = node.volume(VOLUME)["engine"]["status"]["address"]
        .as_str()
        .unwrap()
        .to_string();
    shorthorn_ok(&["--engine", &engine, "snapshot", "create", "outside"]);
    let outside_url = shorthorn_ok(&[
        "--engine", &engine, "backup", "create", "outside", "--target", &target,
    ])
    .trim()
    .to_string();
    let outside = backup_name(&outside_url);
    wait_backups(&node, "listing the outside backup", |b| {
        b.iter()
            .any(|b| b["name"] == outside.as_str() && b["status"]["state"] == "completed")
    });
    let targets = node.cli_ok(&["backup-target", "ls"]);
    assert!(targets.contains("available, 3 backups"), "{targets}");

    // Deleting the first through the manager removes it from the target; the others
    // still restore.
    let first = backup_name(&first_url);
    node.cli_ok(&["volume", "backup-rm", &first, "--wait"]);
    let left = listed(&target, VOLUME, &[]);
    assert!(!left.contains(&first) && left.len() == 2, "{left:?}");
    assert_eq!(restore_sha(&node, &second_url, "second-again"), second_sha);

    // Deleted outside the manager: its object goes after the poll interval.
    shorthorn_ok(&["backup", "rm", &outside_url]);
    wait_backups(&node, "forgetting the outside backup", |b| {
        b.len() == 1 && b[0]["status"]["url"] == second_url.as_str()
    });

    // The target can be forgotten; its backups stay in it.
    node.cli_ok(&["backup-target", "rm", "default"]);
    assert!(backups(&node).is_empty());
    assert_eq!(listed(&target, VOLUME, &[]), vec![backup_name(&second_url)]);
    node.cli_ok(&["volume", "detach", VOLUME]);
}
