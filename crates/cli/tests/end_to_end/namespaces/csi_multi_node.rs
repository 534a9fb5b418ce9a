//! The CSI driver on the four-node etcd cluster of `manager_multi_node` (each node in
//! its own network namespace): `shorthorn csi` runs in the namespaces of nodes 1 and 2.
//! A 2-replica volume is published to node 2 and staged there as ext4, and files are
//! written. A `snap` snapshot of it becomes a new volume, published to node 1 and staged
//! there (its nbdfuse reaches node 1's engine over node 1's address), with the same
//! sha256 of every file; so does a volume restored from a `bak` snapshot (a backup in a
//! file target the nodes share). Everything is then unpublished, unstaged and deleted,
//! leaving no mounts, loop devices or nbdfuse processes. Needs root.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use shorthorn_csi::pb;
use shorthorn_csi::pb::volume_capability::access_mode::Mode;

use super::manager_multi_node::{Cluster, address};
use crate::common::{path_str, require, run, sha256};
use crate::csi::client::{Csi, MIB, connect, mount_capability, snapshot_source};
use crate::csi::{leftovers_under, undo_under};

/// Undoes what the drivers left under the test's directory, also after a failure
/// (before the cluster's namespaces go).
struct Cleanup(std::path::PathBuf);

impl Drop for Cleanup {
    fn drop(&mut self) {
        undo_under(&self.0);
    }
}

/// Starts `shorthorn csi --mode all` as node `node` in its namespace, under `dir`.
async fn driver(cluster: &mut Cluster, node: usize, dir: &Path) -> Csi {
    std::fs::create_dir_all(dir.join("root")).unwrap();
    std::fs::write(dir.join("token"), cluster.token()).unwrap();
    let socket = dir.join("csi.sock");
    let endpoint = format!("unix://{}", path_str(&socket));
    let manager = format!("http://{}:9600", address(node));
    let node_id = format!("n{node}");
    let (token, state, root) = (dir.join("token"), dir.join("state"), dir.join("root"));
    let args = [
        "csi",
        "--endpoint",
        &endpoint,
        "--node-id",
        &node_id,
        "--manager-url",
        &manager,
        "--token-file",
        path_str(&token),
        "--state-dir",
        path_str(&state),
        "--allowed-root",
        path_str(&root),
    ];
    cluster.spawn_on_node(node, crate::common::BIN, &args, &format!("csi{node}.log"));
    let deadline = Instant::now() + Duration::from_secs(30);
    while !socket.exists() {
        assert!(Instant::now() < deadline, "csi on n{node} did not listen");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    connect(socket).await
}

#[test]
fn a_volume_staged_on_one_node_is_cloned_and_staged_on_another() {
    require("nbdfuse", "libnbd-bin");
    let mut cluster = Cluster::start(&[]);
    cluster.cli_ok(1, &["setting", "set", "minimal_available_percentage", "0"]);
    let dir = cluster.dir().join("csi");
    let _cleanup = Cleanup(dir.clone());
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let (dir1, dir2) = (dir.join("n1"), dir.join("n2"));
        let mut on1 = driver(&mut cluster, 1, &dir1).await;
        let mut on2 = driver(&mut cluster, 2, &dir2).await;
        let ext4 = mount_capability("ext4", Mode::SingleNodeWriter);

        let volume = on2
            .create("pvc-multi", 64 * MIB, &ext4, None)
            .await
            .unwrap();
        assert!(
            volume.accessible_topology.is_empty(),
            "reached from any node: {volume:?}"
        );
        let (staging, target) = (dir2.join("root/staging"), dir2.join("root/pod/mount"));
        on2.attach_to("n2", &volume.volume_id, &ext4, &staging, &target)
            .await
            .unwrap();
        let mut sums = BTreeMap::new();
        for i in 0..3 {
            let file = target.join(format!("f{i}"));
            std::fs::write(&file, crate::common::pattern(i, (i as usize + 1) << 20)).unwrap();
            sums.insert(format!("f{i}"), sha256(&file));
        }
        let synced = run("sync", &["-f", path_str(&target)], Duration::from_secs(60));
        assert!(synced.success(), "{synced:?}");
        let snap = on2.snapshot(&volume.volume_id, "vs-multi", "snap").await;

        let copy = on1
            .create(
                "pvc-multi-copy",
                64 * MIB,
                &ext4,
                Some(snapshot_source(&snap)),
            )
            .await
            .unwrap();
        let (staging1, target1) = (dir1.join("root/staging"), dir1.join("root/pod/mount"));
        on1.attach_to("n1", &copy.volume_id, &ext4, &staging1, &target1)
            .await
            .unwrap();
        for (name, sum) in &sums {
            assert!(
                target1.join(name).exists(),
                "{name} is not on node 1's copy: {:?}\n--- csi on n1:\n{}\n--- csi on n2:\n{}",
                std::fs::read_dir(&target1).map(|d| d.count()),
                cluster.log("csi1.log"),
                cluster.log("csi2.log")
            );
            assert_eq!(&sha256(&target1.join(name)), sum, "{name} on node 1");
        }
        // Published to node 1: a second node is refused.
        let second = on2
            .controller
            .controller_publish_volume(pb::ControllerPublishVolumeRequest {
                volume_id: copy.volume_id.clone(),
                node_id: "n2".into(),
                volume_capability: Some(ext4.clone()),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(second.code(), tonic::Code::FailedPrecondition, "{second:?}");

        on1.detach_from("n1", &copy.volume_id, &staging1, &target1)
            .await;

        // A `bak` snapshot (a backup in a file target all nodes reach) taken through
        // node 2's driver, restored as a volume staged on node 1: the same files.
        let target_root = cluster.dir().join("backups/csi");
        cluster.cli_ok(
            1,
            &[
                "backup-target",
                "set",
                "default",
                &format!("file://{}", path_str(&target_root)),
            ],
        );
        let bak = on2.snapshot(&volume.volume_id, "vs-multi-bak", "bak").await;
        assert!(bak.starts_with("bak://"), "{bak}");
        let restored = on1
            .create(
                "pvc-multi-bak",
                64 * MIB,
                &ext4,
                Some(snapshot_source(&bak)),
            )
            .await
            .unwrap();
        on1.attach_to("n1", &restored.volume_id, &ext4, &staging1, &target1)
            .await
            .unwrap();
        for (name, sum) in &sums {
            assert_eq!(
                &sha256(&target1.join(name)),
                sum,
                "{name} restored on node 1"
            );
        }
        on1.detach_from("n1", &restored.volume_id, &staging1, &target1)
            .await;

        on2.detach_from("n2", &volume.volume_id, &staging, &target)
            .await;
        for snapshot_id in [snap, bak] {
            on2.controller
                .delete_snapshot(pb::DeleteSnapshotRequest {
                    snapshot_id,
                    ..Default::default()
                })
                .await
                .unwrap();
        }
        for id in [&restored.volume_id, &copy.volume_id, &volume.volume_id] {
            on2.controller
                .delete_volume(pb::DeleteVolumeRequest {
                    volume_id: id.clone(),
                    ..Default::default()
                })
                .await
                .unwrap();
        }
    });
    let left = leftovers_under(&dir);
    assert!(left.is_empty(), "left behind:\n{}", left.join("\n"));
    let volumes = cluster.cli_ok(1, &["volume", "ls"]);
    assert_eq!(volumes.lines().count(), 1, "volumes left:\n{volumes}");
}
