//! Eviction through `shorthorn up`, while a client writes: `node update --evict-disk
//! default=true` moves both replicas of a volume to the node's other disk (each rebuilt
//! there first); at every look during the move the volume has at least the two healthy
//! (RW) replicas it wants, and afterwards every acknowledged write reads back. A disk or
//! node that holds replicas cannot be removed (the error says to evict it); once empty
//! the disk can. A node eviction with nowhere to go is refused with the reason. `node
//! ls` shows the replicas left on each disk. A detached volume's replicas move too (an
//! engine without a frontend rebuilds them; the volume stays detached), and read back
//! once attached.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::{path_str, qemu_io, wanted_replicas};
use crate::upnode::Node;

const VOLUME: &str = "evol";
const NODE: &str = "node-1";
/// Megabytes the writer may write, one per write (the volume holds 64).
const WRITES: usize = 60;
const WAIT: Duration = Duration::from_secs(120);

/// The pattern byte of megabyte `i`.
fn pattern(i: usize) -> usize {
    i % 200 + 17
}

#[test]
fn an_evicted_disk_hands_its_replicas_over_without_ever_losing_a_healthy_copy() {
    let node = Node::start();
    node.cli_ok(&["setting", "set", "minimal_available_percentage", "0"]);
    let uri = node.create_attached(VOLUME, "64M", 2);
    qemu_io(&uri, &["write -P 0x0b 62M 2M"]);
    let listed: Value = serde_json::from_str(&node.cli_ok(&["node", "ls", "--json"])).unwrap();
    let default_path = listed[0]["spec"]["disks"][0]["path"]
        .as_str()
        .unwrap()
        .to_string();
    let second_path = node.dir.path().join("second");
    std::fs::create_dir(&second_path).unwrap();
    let default_disk = format!("default={default_path}");
    let second_disk = format!("second={}", path_str(&second_path));
    node.cli_ok(&[
        "node",
        "update",
        NODE,
        "--disk",
        &default_disk,
        "--disk",
        &second_disk,
    ]);

    // Holding replicas: neither the disk nor the node can go.
    let drop_disk = node.cli(&["node", "update", NODE, "--disk", &second_disk]);
    assert!(
        !drop_disk.success()
            && drop_disk.stderr.contains("holds replica")
            && drop_disk.stderr.contains("--evict-disk default=true"),
        "{drop_disk:?}"
    );
    let drop_node = node.cli(&["node", "rm", NODE]);
    assert!(
        !drop_node.success() && drop_node.stderr.contains("--evict true"),
        "{drop_node:?}"
    );
    let bad_disk = node.cli(&["node", "update", NODE, "--evict-disk", "nvme=true"]);
    assert!(
        !bad_disk.success() && bad_disk.stderr.contains("no disk \"nvme\""),
        "{bad_disk:?}"
    );

    // A client writes one megabyte after another while the disk is evicted.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (uri, stop) = (uri.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut acknowledged = 0;
            while acknowledged < WRITES && !stop.load(Ordering::Relaxed) {
                let i = acknowledged;
                qemu_io(&uri, &[&format!("write -P {} {i}M 1M", pattern(i))]);
                acknowledged += 1;
            }
            acknowledged
        })
    };
    let answer = node.cli_ok(&["node", "update", NODE, "--evict-disk", "default=true"]);
    assert!(answer.contains("evicting default"), "{answer}");
    let deadline = Instant::now() + WAIT;
    let mut looks = 0;
    let mut saw_waiting = false;
    loop {
        let volume = node.volume(VOLUME);
        let wanted = wanted_replicas(&volume);
        let healthy = wanted
            .iter()
            .filter(|r| r["status"]["mode"] == "RW")
            .count();
        assert!(
            healthy >= 2,
            "fewer than 2 healthy replicas during the eviction: {volume:#}"
        );
        saw_waiting |= volume["replicas"].as_array().unwrap().iter().any(|r| {
            r["status"]["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("evicting: disk default of node node-1"))
        });
        looks += 1;
        let moved = volume["replicas"].as_array().unwrap().len() == 2
            && wanted.len() == 2
            && wanted.iter().all(|r| r["spec"]["disk"] == "second")
            && healthy == 2;
        if moved {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not moved within {WAIT:?}: {volume:#}\n{}",
            node.log_tail(60)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(looks > 3, "the move was not watched ({looks} looks)");
    assert!(saw_waiting, "no replica said it was waiting to be evicted");
    stop.store(true, Ordering::Relaxed);
    let acknowledged = writer.join().unwrap();
    assert!(acknowledged > 0, "no write was acknowledged");
    for i in 0..acknowledged {
        qemu_io(&uri, &[&format!("read -P {} {i}M 1M", pattern(i))]);
    }
    qemu_io(&uri, &["read -P 0x0b 62M 2M"]);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let nodes = node.cli_ok(&["node", "ls"]);
        if nodes.contains("0 replicas, evicting (0 replicas left)") {
            assert!(nodes.contains("2 replicas"), "{nodes}");
            break;
        }
        assert!(Instant::now() < deadline, "node ls: {nodes}");
        std::thread::sleep(Duration::from_millis(250));
    }
    assert!(
        !std::fs::read_dir(format!("{default_path}/replicas"))
            .map(|mut d| d.next().is_some())
            .unwrap_or(false),
        "replica directories are left on the evicted disk"
    );

    let events = node.cli_ok(&["events", "--volume", VOLUME]);
    assert_eq!(
        events.matches("Evicted").count(),
        2,
        "one Evicted event per moved replica: {events}"
    );

    // Empty now: the disk can be removed.
    node.cli_ok(&["node", "update", NODE, "--disk", &second_disk]);

    // A node eviction with nowhere to go is refused, and says why; nothing moves.
    let nowhere = node.cli(&["node", "update", NODE, "--evict", "true"]);
    assert!(
        !nowhere.success()
            && nowhere.stderr.contains("nowhere to move replica")
            && nowhere.stderr.contains("being evicted"),
        "{nowhere:?}"
    );
    let nodes: Value = serde_json::from_str(&node.cli_ok(&["node", "ls", "--json"])).unwrap();
    assert_eq!(nodes[0]["spec"]["evict"], false, "{nodes:#}");
    let volume = node.volume(VOLUME);
    assert_eq!(
        wanted_replicas(&volume)
            .iter()
            .filter(|r| r["status"]["mode"] == "RW")
            .count(),
        2,
        "{volume:#}"
    );
    qemu_io(&uri, &["read -P 0x0b 62M 2M"]);
    node.cli_ok(&["volume", "detach", VOLUME]);
    node.wait_for(VOLUME, "detached", WAIT, |v| {
        v["status"]["state"] == "detached"
    });

    // Detached: the evicted disk's replicas are moved by an engine started for it
    // without a frontend; the volume stays detached (no endpoint) all along, and the
    // engine stops once they are moved.
    let third_path = node.dir.path().join("third");
    std::fs::create_dir(&third_path).unwrap();
    let third_disk = format!("third={}", path_str(&third_path));
    node.cli_ok(&[
        "node",
        "update",
        NODE,
        "--disk",
        &second_disk,
        "--disk",
        &third_disk,
    ]);
    // Once the node reports the new disk's space, the replicas have somewhere to go.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let nodes: Value = serde_json::from_str(&node.cli_ok(&["node", "ls", "--json"])).unwrap();
        let reported = nodes[0]["status"]["disks"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["name"] == "third" && d["capacity"].as_u64() > Some(0));
        if reported {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "disk third not reported: {nodes:#}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    node.cli_ok(&["node", "update", NODE, "--evict-disk", "second=true"]);
    let mut saw_maintenance = false;
    let deadline = Instant::now() + WAIT;
    loop {
        let volume = node.volume(VOLUME);
        assert!(
            volume["spec"]["attached_node"].is_null() && volume["status"]["endpoint"].is_null(),
            "the volume stays detached: {volume:#}"
        );
        saw_maintenance |= volume["engine"]["spec"]["maintenance"] == true
            && volume["engine"]["status"]["endpoint"].is_null();
        let wanted = wanted_replicas(&volume);
        let moved = volume["replicas"].as_array().unwrap().len() == 2
            && wanted.len() == 2
            && wanted.iter().all(|r| r["spec"]["disk"] == "third")
            && wanted.iter().all(|r| r["status"]["state"] == "running")
            && volume["engine"]["status"]["node"].is_null();
        if moved {
            assert_eq!(volume["status"]["state"], "detached", "{volume:#}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "a detached volume's replicas not moved within {WAIT:?}: {volume:#}\n{}",
            node.log_tail(60)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(saw_maintenance, "no engine without a frontend was seen");
    let uri = node
        .cli_ok(&["volume", "attach", VOLUME])
        .trim()
        .to_string();
    for i in 0..acknowledged {
        qemu_io(&uri, &[&format!("read -P {} {i}M 1M", pattern(i))]);
    }
    qemu_io(&uri, &["read -P 0x0b 62M 2M"]);
    node.cli_ok(&["volume", "detach", VOLUME]);
}
