//! The node plugin restarts (killed with SIGKILL) while a volume is staged and mounted:
//! the mount keeps working (nbdfuse does not die with the plugin), the new plugin finds
//! the stage again (a second NodeStage is a no-op, unpublish and unstage undo it all),
//! and nothing is left behind. While the manager is down, Probe says not ready.

use std::time::Duration;

use shorthorn_csi::pb;
use shorthorn_csi::pb::volume_capability::access_mode::Mode;

use super::CsiDriver;
use super::client::{MIB, connect, mount_capability};
use crate::common::{path_str, require, run, sha256};
use crate::upnode::Node;

#[test]
fn a_restarted_node_plugin_leaves_mounted_volumes_alone_and_finds_its_stages() {
    require("nbdfuse", "libnbd-bin");
    let mut node = Node::start();
    // Apart from the node's directory: the node is stopped while the driver runs.
    let dir = tempfile::Builder::new().prefix("shcsi").tempdir().unwrap();
    let mut driver = CsiDriver::start(&node, dir.path());
    let root = driver.root();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let ext4 = mount_capability("ext4", Mode::SingleNodeWriter);
    let (staging, target) = (root.join("staging/r"), root.join("pods/r/mount"));
    let before = runtime.block_on(async {
        let mut csi = connect(driver.socket()).await;
        let volume = csi
            .create("pvc-restart", 64 * MIB, &ext4, None)
            .await
            .unwrap();
        csi.attach(&volume.volume_id, &ext4, &staging, &target)
            .await
            .unwrap();
        let file = target.join("before");
        std::fs::write(&file, crate::common::pattern(7, 1 << 20)).unwrap();
        sha256(&file)
    });

    driver.restart(&node);
    // The mounted volume still takes writes and reads back what it held.
    let file = target.join("after");
    std::fs::write(&file, crate::common::pattern(8, 1 << 20)).unwrap();
    let synced = run("sync", &["-f", path_str(&file)], Duration::from_secs(60));
    assert!(
        synced.success(),
        "the mounted volume after the restart: {synced:?}"
    );
    assert_eq!(sha256(&target.join("before")), before);

    runtime.block_on(async {
        let mut csi = connect(driver.socket()).await;
        // The stage is known: staging it again is a no-op.
        csi.node
            .node_stage_volume(pb::NodeStageVolumeRequest {
                volume_id: "pvc-restart".into(),
                staging_target_path: path_str(&staging).into(),
                volume_capability: Some(ext4.clone()),
                ..Default::default()
            })
            .await
            .unwrap();
        csi.detach("pvc-restart", &staging, &target).await;
        csi.controller
            .delete_volume(pb::DeleteVolumeRequest {
                volume_id: "pvc-restart".into(),
                ..Default::default()
            })
            .await
            .unwrap();
        let ready = csi.identity.probe(pb::ProbeRequest {}).await.unwrap();
        assert_eq!(ready.into_inner().ready, Some(true));
    });
    let left = driver.leftovers();
    assert!(left.is_empty(), "left behind:\n{}", left.join("\n"));

    node.stop();
    runtime.block_on(async {
        let mut csi = connect(driver.socket()).await;
        let probe = csi.identity.probe(pb::ProbeRequest {}).await.unwrap();
        assert_eq!(probe.into_inner().ready, Some(false), "the manager is down");
    });
}
