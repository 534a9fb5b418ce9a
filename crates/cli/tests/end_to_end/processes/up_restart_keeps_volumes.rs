//! Engines and replicas outlive `shorthorn up`: a `kill -9` of `up` under a verified
//! fio job leaves the volume serving with no I/O error, the next `up` takes over the
//! very same processes (same pids), keeps healing (a replica killed after the restart
//! is rebuilt), and a plain SIGTERM of `up` leaves them serving too.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use crate::common::{MIB, assert_fio_verified, fio, fio_verify_job, signal};
use crate::upnode::{Node, attached_with_three_rw};

const VOLUME: &str = "keep";
const PER_JOB: u64 = 192 * MIB;
const JOBS: u32 = 2;

/// The recorded instances of the node: name → pid, each checked to be alive.
fn instances(data_dir: &Path) -> BTreeMap<String, u32> {
    let mut found = BTreeMap::new();
    for entry in std::fs::read_dir(data_dir.join("instances")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "json") {
            let record: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
            let pid = u32::try_from(record["pid"].as_u64().unwrap()).unwrap();
            found.insert(record["name"].as_str().unwrap().to_string(), pid);
        }
    }
    found
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit(')')
            .next()
            .is_some_and(|rest| !rest.trim_start().starts_with('Z'))
    })
}

#[test]
fn engines_and_replicas_serve_on_through_a_killed_and_a_stopped_up() {
    let mut node = Node::start();
    let scratch = node.dir.path().to_path_buf();
    node.cli_ok(&["setting", "set", "replica_replenishment_wait_interval", "2"]);
    node.cli_ok(&[
        "volume",
        "create",
        VOLUME,
        "--size",
        "384M",
        "--replicas",
        "3",
    ]);
    let uri = node
        .cli_ok(&["volume", "attach", VOLUME])
        .trim()
        .to_string();
    node.wait_for(
        VOLUME,
        "healthy",
        Duration::from_secs(60),
        attached_with_three_rw,
    );
    let before = instances(&node.data_dir());
    assert_eq!(before.len(), 4, "an engine and three replicas: {before:?}");
    assert!(before.contains_key("keep-e"), "{before:?}");

    // kill -9 of `up` while fio writes and verifies.
    let job = fio_verify_job(&scratch, &uri, JOBS, PER_JOB);
    let fio_run = std::thread::spawn(move || fio(&job));
    std::thread::sleep(Duration::from_secs(2));
    assert!(!fio_run.is_finished(), "fio ended before up was killed");
    node.crash();
    std::thread::sleep(Duration::from_secs(1));
    for (name, pid) in &before {
        assert!(alive(*pid), "{name} (pid {pid}) died with up");
    }
    node.set_stop_instances(false);
    node.restart();
    node.wait_for(
        VOLUME,
        "healthy after the restart",
        Duration::from_secs(60),
        attached_with_three_rw,
    );
    let after = instances(&node.data_dir());
    eprintln!("instances before the kill: {before:?}; after the new up: {after:?}");
    assert_eq!(after, before, "the new up started processes anew");
    let log = node.log();
    assert!(
        log.contains("took over a running instance"),
        "{}",
        node.log_tail(40)
    );
    let listed = node.cli_ok(&["instances"]);
    for (name, pid) in &before {
        assert!(
            listed.lines().any(|l| {
                let fields: Vec<&str> = l.split_whitespace().collect();
                fields.first() == Some(&name.as_str())
                    && fields.get(2) == Some(&pid.to_string().as_str())
                    && fields.get(3) == Some(&"running")
                    && fields.get(4) == Some(&"installed")
            }),
            "{name} is not listed running the installed binary:\n{listed}"
        );
    }
    let outcome = fio_run.join().unwrap();
    for line in outcome
        .all()
        .lines()
        .filter(|l| l.contains("bw=") || l.contains("err="))
    {
        eprintln!("fio: {}", line.trim());
    }
    assert_fio_verified(
        &outcome,
        u64::from(JOBS) * PER_JOB / 4096,
        &node.log_tail(40),
    );

    // Healing goes on: a replica killed now is noticed, started again and rebuilt.
    let (victim, victim_pid) = before
        .iter()
        .find(|(name, _)| name.contains("-r-"))
        .map(|(name, pid)| (name.clone(), *pid))
        .unwrap();
    signal(victim_pid, "KILL");
    node.wait_for(VOLUME, "rebuilt", Duration::from_secs(90), |v| {
        attached_with_three_rw(v)
            && instances(&node.data_dir())
                .get(&victim)
                .is_some_and(|pid| *pid != victim_pid)
    });
    assert!(
        node.log().contains("process exited"),
        "{}",
        node.log_tail(40)
    );

    // SIGTERM without --stop-instances: up exits 0, the volume serves on.
    let serving = instances(&node.data_dir());
    node.stop_up_only();
    for (name, pid) in &serving {
        assert!(alive(*pid), "{name} (pid {pid}) stopped with up");
    }
    crate::common::qemu_io(&uri, &["write -P 0x7a 0 1M", "read -P 0x7a 0 1M"]);

    // Taken over again; then up --stop-instances stops everything (checked by stop).
    node.set_stop_instances(true);
    node.restart();
    node.wait_for(
        VOLUME,
        "healthy again",
        Duration::from_secs(60),
        attached_with_three_rw,
    );
    assert_eq!(instances(&node.data_dir()), serving);
    crate::common::qemu_io(&uri, &["read -P 0x7a 0 1M"]);
    node.stop();
    assert!(instances(&node.data_dir()).is_empty());
}
