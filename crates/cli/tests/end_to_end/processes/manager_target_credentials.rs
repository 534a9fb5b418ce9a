//! Backup targets with their own S3 endpoint and credentials, against a real S3 server
//! (`s3s-fs`), with a `shorthorn up` that has no AWS environment at all: a backup, the
//! target's read of its list and a restore into a new volume all use the target's own
//! credentials; a second target with a wrong secret is unavailable while the first keeps
//! working; the secret never appears in the API, the live watch, the CLI or the log; the
//! refusals (a key without its secret, credentials for a non-S3 target) name the field.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::backupstore::{S3Server, SECRET_KEY, backup_name, export_sha};
use crate::common::{path_str, qemu_io};
use crate::upnode::Node;

const VOLUME: &str = "vol";

/// The backup target `name` as the API shows it.
fn target(node: &Node, name: &str) -> Value {
    let listed: Value = node.api.call("GET", "/v1/backup-targets", None).json();
    listed
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == name)
        .unwrap_or_else(|| panic!("no backup target {name}: {listed:#}"))
        .clone()
}

/// Waits (at most 30 s) until the target's last read went `available`.
fn wait_read(node: &Node, name: &str, available: bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let target = target(node, name);
        if !target["status"]["last_synced"].is_null() && target["status"]["available"] == available
        {
            return target;
        }
        assert!(
            Instant::now() < deadline,
            "target {name} not read as available={available} within 30 s: {target:#}\n{}",
            node.log_tail(40)
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn each_backup_target_uses_its_own_s3_credentials_and_never_shows_the_secret() {
    let s3 = S3Server::start();
    let node = Node::start();
    node.cli_ok(&["setting", "set", "minimal_available_percentage", "0"]);
    let url = s3.target("own");
    let secret_file = node.dir.path().join("secret");
    std::fs::write(&secret_file, format!("{SECRET_KEY}\n")).unwrap();
    let wrong_file = node.dir.path().join("wrong");
    std::fs::write(&wrong_file, "not-the-secret").unwrap();

    // Refusals name the field and change nothing.
    let key_alone = node.api.call(
        "PUT",
        "/v1/backup-targets/default",
        Some(&json!({"url": url, "access_key_id": "shorthorn-test"})),
    );
    assert_eq!(key_alone.status, 400, "{key_alone:?}");
    assert!(
        key_alone.text().contains("secret_access_key"),
        "{key_alone:?}"
    );
    let not_s3 = node.api.call(
        "PUT",
        "/v1/backup-targets/default",
        Some(&json!({"url": "file:///tmp/x", "endpoint": s3.endpoint})),
    );
    assert_eq!(not_s3.status, 400, "{not_s3:?}");
    assert!(not_s3.text().contains("endpoint"), "{not_s3:?}");
    let cli_key_alone = node.cli(&[
        "backup-target",
        "set",
        "default",
        &url,
        "--access-key-id",
        "shorthorn-test",
    ]);
    assert!(
        !cli_key_alone.success() && cli_key_alone.stderr.contains("--secret-access-key-file"),
        "{cli_key_alone:?}"
    );
    assert_eq!(
        node.api.call("GET", "/v1/backup-targets", None).json(),
        json!([])
    );

    for (name, target_url, file) in [
        ("default", url.as_str(), &secret_file),
        ("wrong", &s3.target("other"), &wrong_file),
    ] {
        node.cli_ok(&[
            "backup-target",
            "set",
            name,
            target_url,
            "--poll-interval",
            "1",
            "--endpoint",
            &s3.endpoint,
            "--access-key-id",
            "shorthorn-test",
            "--secret-access-key-file",
            path_str(file),
        ]);
    }
    let own = wait_read(&node, "default", true);
    assert_eq!(own["spec"]["has_credentials"], true, "{own:#}");
    assert_eq!(own["spec"]["endpoint"], s3.endpoint.as_str(), "{own:#}");
    let wrong = wait_read(&node, "wrong", false);
    assert!(
        !wrong["status"]["message"].as_str().unwrap().is_empty(),
        "{wrong:#}"
    );

    // A backup and a restore into a new volume, with no AWS environment anywhere.
    let uri = node.create_attached(VOLUME, "64M", 1);
    qemu_io(&uri, &["write -P 0x5a 0 4M", "write -P 0xa5 30M 2M"]);
    let written = export_sha(&uri, node.dir.path());
    let backup_url = node
        .cli_ok(&["volume", "backup", VOLUME, "--wait"])
        .trim()
        .to_string();
    assert!(backup_url.starts_with(&url), "{backup_url}");
    assert!(
        s3.objects("own").exists(),
        "nothing stored under the target's prefix"
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while wait_read(&node, "default", true)["status"]["backups"] != 1 {
        assert!(
            Instant::now() < deadline,
            "the target's read never listed the backup"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    let restored_uri = node.restore_attached("restored", "64M", 1, &backup_url);
    assert_eq!(export_sha(&restored_uri, node.dir.path()), written);
    assert!(
        node.cli_ok(&["volume", "backups", VOLUME])
            .contains(&backup_name(&backup_url))
    );

    // The secret is nowhere a user or a log reader can see.
    let listing = node.cli_ok(&["backup-target", "ls"]);
    assert!(listing.contains("own credentials"), "{listing}");
    let watched = node
        .api
        .call("GET", "/v1/watch?timeout_seconds=1", None)
        .text();
    assert!(watched.contains("backup-target"), "{watched}");
    for (what, text) in [
        (
            "the API's targets",
            node.api.call("GET", "/v1/backup-targets", None).text(),
        ),
        ("the watch", watched),
        ("backup-target ls", listing),
        (
            "backup-target ls --json",
            node.cli_ok(&["backup-target", "ls", "--json"]),
        ),
        ("the log", node.log()),
    ] {
        assert!(
            !text.contains(SECRET_KEY),
            "{what} shows the secret: {text}"
        );
    }

    // Forgotten credentials: the target says so; removing a target removes its own.
    node.cli_ok(&[
        "backup-target",
        "set",
        "wrong",
        &s3.target("other"),
        "--forget-credentials",
    ]);
    assert_eq!(target(&node, "wrong")["spec"]["has_credentials"], false);
    node.cli_ok(&["backup-target", "rm", "wrong"]);
    node.cli_ok(&["volume", "detach", "restored"]);
    node.cli_ok(&["volume", "detach", VOLUME]);
}
