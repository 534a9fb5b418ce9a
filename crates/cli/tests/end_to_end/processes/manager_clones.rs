//! Clones through `shorthorn up`, without a backup target: `volume create --from-snapshot
//! SRC/SNAP` while fio writes (and verifies) the source, byte-equal (sha256 of the whole
//! device) to the source as it was at the snapshot; `--from-volume SRC` byte-equal to the
//! source at the moment of the create, not to what is written after; a clone of a
//! detached source; and the refusals (existing name, missing snapshot, malformed source,
//! a clone of itself, too small, two sources at once).

use std::time::Duration;

use serde_json::json;

use crate::backupstore::export_sha;
use crate::common::{assert_fio_verified, fio, fio_verify_job, qemu_io};
use crate::upnode::Node;

const SOURCE: &str = "src";
const WAIT: Duration = Duration::from_secs(120);
/// fio's share of the source: two jobs of 16 MiB.
const FIO_JOBS: u32 = 2;
const FIO_PER_JOB: u64 = 16 << 20;

/// Attaches `name` once its replicas are filled and returns its NBD URI.
fn attach_when_cloned(node: &Node, name: &str) -> String {
    node.wait_for(name, "cloned", WAIT, |v| {
        v["replicas"].as_array().is_some_and(|all| {
            !all.is_empty()
                && all
                    .iter()
                    .all(|r| r["spec"]["clone_from"].is_null() && r["status"]["state"] == "running")
        })
    });
    let uri = node.cli_ok(&["volume", "attach", name]).trim().to_string();
    node.wait_for(name, "healthy", WAIT, |v| {
        v["status"]["robustness"] == "healthy"
    });
    uri
}

#[test]
fn clones_copy_a_snapshot_from_a_replica_while_the_source_serves() {
    let node = Node::start();
    node.cli_ok(&["setting", "set", "minimal_available_percentage", "0"]);
    let uri = node.create_attached(SOURCE, "64M", 2);
    qemu_io(
        &uri,
        &[
            "write -P 0x21 0 8M",
            "write -P 0x42 40M 4M",
            "write -P 0x63 60M 4M",
        ],
    );
    let at_snapshot = export_sha(&uri, node.dir.path());
    node.cli_ok(&["volume", "snapshot", "create", SOURCE, "s1"]);

    // From a snapshot, while fio writes and verifies the source.
    let job = fio_verify_job(node.dir.path(), &uri, FIO_JOBS, FIO_PER_JOB);
    let writer = std::thread::spawn(move || fio(&job));
    let created = node.cli_ok(&[
        "volume",
        "create",
        "c1",
        "--from-snapshot",
        "src/s1",
        "--replicas",
        "2",
    ]);
    assert!(created.contains("64 MiB"), "the source's size: {created}");
    let creating = node.volume("c1");
    assert_eq!(
        creating["spec"]["from_snapshot"],
        json!({"volume": SOURCE, "snapshot": "s1"}),
        "{creating:#}"
    );
    let c1 = attach_when_cloned(&node, "c1");
    let fio_outcome = writer.join().unwrap();
    assert_fio_verified(
        &fio_outcome,
        u64::from(FIO_JOBS) * FIO_PER_JOB / 4096,
        &node.log_tail(40),
    );
    assert_eq!(
        export_sha(&c1, node.dir.path()),
        at_snapshot,
        "the clone holds the snapshot"
    );
    assert_ne!(
        export_sha(&uri, node.dir.path()),
        at_snapshot,
        "fio changed the source"
    );
    // The clone is a volume of its own: writes to it stay in it.
    qemu_io(&c1, &["write -P 0x77 0 1M"]);
    qemu_io(&uri, &["read -P 0x63 60M 4M"]);

    // From the volume as it is now: writes after the create are not in the clone.
    qemu_io(&uri, &["write -P 0x84 0 32M"]);
    let now = export_sha(&uri, node.dir.path());
    node.cli_ok(&["volume", "create", "c2", "--from-volume", SOURCE]);
    qemu_io(&uri, &["write -P 0x95 0 32M"]);
    let c2 = attach_when_cloned(&node, "c2");
    assert_eq!(export_sha(&c2, node.dir.path()), now);
    let taken = node.volume("c2")["spec"]["from_snapshot"]["snapshot"]
        .as_str()
        .unwrap()
        .to_string();
    let listed = node.cli_ok(&["volume", "snapshot", "ls", SOURCE]);
    assert!(
        listed.contains(&taken) && listed.contains("system"),
        "the source keeps the system snapshot {taken}: {listed}"
    );

    // A detached source: read from its replicas directly.
    node.cli_ok(&["volume", "detach", SOURCE]);
    node.wait_for(SOURCE, "detached", WAIT, |v| {
        v["status"]["state"] == "detached"
    });
    node.cli_ok(&["volume", "create", "c3", "--from-snapshot", "src/s1"]);
    let c3 = attach_when_cloned(&node, "c3");
    assert_eq!(export_sha(&c3, node.dir.path()), at_snapshot);

    // Refusals, each naming what is wrong; nothing is created.
    for (args, says) in [
        (vec!["c1", "--from-snapshot", "src/s1"], "exists"),
        (vec!["c4", "--from-snapshot", "src/nope"], "src/nope"),
        (vec!["c4", "--from-snapshot", "src"], "VOLUME/SNAPSHOT"),
        (vec!["c4", "--from-volume", "nosuch"], "nosuch"),
        (vec!["src", "--from-volume", "src"], "clone of itself"),
        (
            vec!["c4", "--from-snapshot", "c4/s1", "--size", "64M"],
            "clone of itself",
        ),
        (
            vec!["c4", "--from-snapshot", "src/s1", "--size", "32M"],
            "at least",
        ),
        (
            vec!["c4", "--from-snapshot", "src/s1", "--from-volume", "src"],
            "cannot be used with",
        ),
    ] {
        let outcome = node.cli(&[&["volume", "create"][..], &args].concat());
        assert!(
            !outcome.success() && outcome.stderr.contains(says),
            "{args:?} should be refused saying {says:?}: {outcome:?}"
        );
    }
    let volumes = node.cli_ok(&["volume", "ls"]);
    assert!(!volumes.contains("c4"), "{volumes}");
    for name in ["c1", "c2", "c3"] {
        node.cli_ok(&["volume", "detach", name]);
    }
}
