//! Data locality `best-effort` on the four-node etcd cluster of `manager_multi_node`
//! (each node in its own network namespace): a 2-replica volume attached on a node
//! that holds none of its replicas gets a replica built there; once it is in sync one of
//! the others retires, the engine reaches the local replica over its unix socket (and
//! the remote one over TCP), at no look does the engine hold fewer RW replicas than the
//! volume wants, and everything written before and during the move reads back. With
//! locality disabled, attaching on another node moves nothing. Needs root.

use std::time::{Duration, Instant};

use super::manager_multi_node::{Cluster, NODES, VOLUME, tail};
use crate::common::wanted_replicas;

fn nodes_of(replicas: &[serde_json::Value]) -> Vec<String> {
    let mut nodes: Vec<String> = replicas
        .iter()
        .map(|r| r["spec"]["node"].as_str().unwrap().to_string())
        .collect();
    nodes.sort();
    nodes
}

#[test]
fn a_best_effort_volume_moves_a_replica_to_the_node_it_is_attached_to() {
    let cluster = Cluster::start(&[]);
    cluster.cli_ok(1, &["setting", "set", "minimal_available_percentage", "0"]);
    cluster.cli_ok(
        1,
        &[
            "volume",
            "create",
            VOLUME,
            "--size",
            "32M",
            "--replicas",
            "2",
            "--data-locality",
            "best-effort",
        ],
    );
    let created = cluster.wait_for(1, "placed", Duration::from_secs(60), |v| {
        v["status"]["state"] == "detached" && wanted_replicas(v).len() == 2
    });
    assert_eq!(created["spec"]["data_locality"], "best-effort");
    let first = nodes_of(&wanted_replicas(&created));
    let free: Vec<usize> = (1..=NODES)
        .filter(|n| !first.contains(&format!("n{n}")))
        .collect();
    let (here, later) = (free[0], free[1]);
    let here_name = format!("n{here}");

    let uri = cluster
        .cli_ok(1, &["volume", "attach", VOLUME, "--node", &here_name])
        .trim()
        .to_string();
    cluster.qemu_io(&uri, &["write -P 0x51 0 16M"]);
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut looks = 0;
    let moved = loop {
        let volume = cluster.volume(1);
        let engine = &volume["engine"]["status"];
        if engine["state"] == "running" {
            let rw = engine["replicas"]
                .as_object()
                .map_or(0, |r| r.values().filter(|s| s["mode"] == "RW").count());
            assert!(
                rw >= 2,
                "the engine held {rw} RW replicas during the move: {volume:#}"
            );
            looks += 1;
        }
        let replicas = wanted_replicas(&volume);
        let done = replicas.len() == 2
            && volume["replicas"].as_array().unwrap().len() == 2
            && replicas.iter().all(|r| r["status"]["mode"] == "RW")
            && replicas
                .iter()
                .any(|r| r["spec"]["node"] == here_name.as_str());
        if done {
            break volume;
        }
        assert!(
            Instant::now() < deadline,
            "no replica moved to {here_name} within 120 s: {volume:#}\n{}",
            tail(&cluster.logs(), 60)
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    eprintln!("a replica moved to {here_name}; {looks} looks, never fewer than 2 RW");
    for replica in wanted_replicas(&moved) {
        let path = replica["status"]["data_path"].as_str().unwrap_or_default();
        if replica["spec"]["node"] == here_name.as_str() {
            let socket = format!(
                "unix://{}/data.sock",
                replica["spec"]["data_dir"].as_str().unwrap()
            );
            assert_eq!(
                path, socket,
                "the local replica over its unix socket: {moved:#}"
            );
        } else {
            assert!(
                path.starts_with("tcp://10.78."),
                "a remote one over TCP: {moved:#}"
            );
        }
    }
    let text = cluster.cli_ok(1, &["volume", "get", VOLUME]);
    assert!(text.contains("locality:    best-effort"), "{text}");
    assert!(text.contains("(unix socket)"), "{text}");
    cluster.qemu_io(&uri, &["read -P 0x51 0 16M", "write -P 0x52 16M 8M"]);

    // Locality off: attached on another node without a replica, nothing moves.
    cluster.cli_ok(1, &["volume", "detach", VOLUME]);
    cluster.wait_for(1, "detached", Duration::from_secs(60), |v| {
        v["status"]["state"] == "detached"
    });
    let set = cluster.cli_ok(
        1,
        &["volume", "update", VOLUME, "--data-locality", "disabled"],
    );
    assert!(set.contains("data locality disabled"), "{set}");
    let before = nodes_of(&wanted_replicas(&cluster.volume(1)));
    let uri = cluster
        .cli_ok(
            1,
            &["volume", "attach", VOLUME, "--node", &format!("n{later}")],
        )
        .trim()
        .to_string();
    cluster.qemu_io(&uri, &["read -P 0x51 0 16M", "read -P 0x52 16M 8M"]);
    std::thread::sleep(Duration::from_secs(3));
    let after = cluster.volume(1);
    assert_eq!(nodes_of(&wanted_replicas(&after)), before, "{after:#}");
    assert_eq!(after["replicas"].as_array().unwrap().len(), 2, "{after:#}");
}
