//! An attach that cannot be served is refused at once (within 2 s) with the scheduler's
//! reason, instead of waiting in silence: on the four-node etcd cluster of
//! `manager_multi_node`, a 1-replica volume whose node selector only one node matches
//! loses that node; once the node counts as down, its replica is given up on (after the
//! replenishment wait) and no other node can take one, `volume attach` says why and what would change it. Once
//! another node gets the tag, a new replica is placed there. Needs root.

use std::time::{Duration, Instant};

use super::manager_multi_node::{Cluster, VOLUME, tail};

/// Longest a refusal may take (the bound for "at once").
const AT_ONCE: Duration = Duration::from_secs(2);

#[test]
fn attaching_a_volume_none_of_whose_replicas_can_be_placed_is_refused_at_once() {
    let cluster = Cluster::start(&[]);
    cluster.cli_ok(1, &["setting", "set", "minimal_available_percentage", "0"]);
    cluster.cli_ok(
        1,
        &["setting", "set", "replica_replenishment_wait_interval", "2"],
    );
    cluster.cli_ok(1, &["node", "update", "n4", "--tag", "pinned"]);
    cluster.cli_ok(
        1,
        &[
            "volume",
            "create",
            VOLUME,
            "--size",
            "32M",
            "--replicas",
            "1",
            "--node-selector",
            "pinned",
        ],
    );
    cluster.wait_for(1, "placed on n4", Duration::from_secs(60), |v| {
        v["status"]["state"] == "detached" && v["replicas"][0]["spec"]["node"] == "n4"
    });
    cluster.kill_node(4);
    // Known to be down once its heartbeat is older than the node timeout.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !cluster
        .cli_ok(1, &["node", "ls"])
        .contains("n4 10.78.4.2 ready=false")
    {
        assert!(Instant::now() < deadline, "n4 still counts as ready");
        std::thread::sleep(Duration::from_millis(250));
    }
    // Given up on once its node stays unreachable past the wait; nowhere else to go.
    let given_up = cluster.wait_for(1, "given up on", Duration::from_secs(90), |v| {
        v["replicas"]
            .as_array()
            .is_some_and(|all| all.iter().all(|r| r["spec"]["desire_running"] == false))
    });
    let started = Instant::now();
    let refused = cluster.cli(1, &["volume", "attach", VOLUME, "--node", "n1"]);
    let took = started.elapsed();
    assert!(
        !refused.success(),
        "attach accepted: {refused:?}\n{given_up:#}"
    );
    assert!(took < AT_ONCE, "the refusal took {took:?}");
    for mention in [
        "cannot schedule replicas of volume",
        "missing node tags [pinned]",
        "--tag",
    ] {
        assert!(
            refused.stderr.contains(mention),
            "the refusal does not mention {mention:?}: {}",
            refused.stderr
        );
    }
    assert!(
        cluster.volume(1)["spec"]["attached_node"].is_null(),
        "a refused attach changed the volume"
    );
    // A node with the tag: a replica is placed there (its data is gone with n4: the
    // volume starts empty, as a salvage would not find anything either).
    cluster.cli_ok(1, &["node", "update", "n2", "--tag", "pinned"]);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let volume = cluster.volume(1);
        let placed = volume["replicas"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["spec"]["node"] == "n2" && r["spec"]["desire_running"] == true);
        if placed {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no replica placed on n2: {volume:#}\n{}",
            tail(&cluster.logs(), 40)
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}
