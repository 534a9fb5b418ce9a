//! The CSI calls of a volume's life, made as the sidecars and the kubelet make them,
//! over `shorthorn csi` and a real `shorthorn up` (one node): CreateVolume (2 replicas)
//! → ControllerPublish → NodeStage (ext4) → NodePublish → files written, their sha256
//! → CreateSnapshot `snap` and `bak` → a volume from each, staged and published, the
//! same sha256 → ControllerExpand; NodeExpand refused while staged (nbdfuse keeps the
//! old size), and the filesystem grown after staging again → a block volume through
//! which fio writes and verifies → bad input → everything unpublished, unstaged and
//! deleted, with nothing left in the mount table, the loop devices, the process table or
//! the manager.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use shorthorn_csi::pb;
use shorthorn_csi::pb::volume_capability::access_mode::Mode;
use tonic::Code;

use super::CsiDriver;
use super::client::{MIB, block_capability, connect, mount_capability, snapshot_source};
use crate::common::{path_str, processes_mentioning, require, run, sha256};
use crate::upnode::Node;

/// Writes a few files of random bytes under `dir`, synced; their sha256 by name.
fn write_files(dir: &Path) -> BTreeMap<String, String> {
    let mut sums = BTreeMap::new();
    for (i, size) in [4096usize, 1 << 20, 3 << 20].into_iter().enumerate() {
        let path = dir.join(format!("file-{i}"));
        std::fs::write(
            &path,
            crate::common::pattern(crate::common::random_u64(), size),
        )
        .unwrap();
        sums.insert(format!("file-{i}"), sha256(&path));
    }
    let synced = run("sync", &["-f", path_str(dir)], Duration::from_secs(60));
    assert!(synced.success(), "{synced:?}");
    sums
}

fn sums_of(dir: &Path, names: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    names
        .keys()
        .map(|name| (name.clone(), sha256(&dir.join(name))))
        .collect()
}

fn filesystem_bytes(dir: &Path) -> u64 {
    let stats = rustix::fs::statvfs(dir).unwrap();
    stats.f_blocks * stats.f_frsize
}

#[test]
fn a_volume_lives_through_the_calls_kubernetes_makes() {
    require("nbdfuse", "libnbd-bin");
    require("mkfs.xfs", "xfsprogs");
    let node = Node::start();
    let target_root = node.data_dir().join("backups").join("csi");
    node.cli_ok(&[
        "backup-target",
        "set",
        "default",
        &format!("file://{}", path_str(&target_root)),
    ]);
    let driver = CsiDriver::start(&node, &node.dir.path().join("csi"));
    let root = driver.root();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let mut csi = connect(driver.socket()).await;
        let ext4 = mount_capability("ext4", Mode::SingleNodeWriter);

        // A volume, staged and published, with files.
        let volume = csi.create("pvc-life", 64 * MIB, &ext4, None).await.unwrap();
        assert_eq!(volume.capacity_bytes, 64 * MIB);
        let again = csi.create("pvc-life", 64 * MIB, &ext4, None).await.unwrap();
        assert_eq!(
            again.volume_id, volume.volume_id,
            "CreateVolume is idempotent"
        );
        let (staging, target) = (root.join("staging/life"), root.join("pods/a/mount"));
        csi.attach(&volume.volume_id, &ext4, &staging, &target)
            .await
            .unwrap();
        let sums = write_files(&target);

        // Snapshots of both kinds, and a volume from each: the same files.
        let snap = csi.snapshot(&volume.volume_id, "vs-snap", "snap").await;
        let bak = csi.snapshot(&volume.volume_id, "vs-bak", "bak").await;
        assert!(
            snap.starts_with("snap://") && bak.starts_with("bak://"),
            "{snap} {bak}"
        );
        for (name, id) in [("pvc-from-snap", &snap), ("pvc-from-bak", &bak)] {
            let copy = csi
                .create(name, 64 * MIB, &ext4, Some(snapshot_source(id)))
                .await
                .unwrap();
            let (staging, target) = (
                root.join(format!("staging/{name}")),
                root.join(format!("pods/{name}/mount")),
            );
            csi.attach(&copy.volume_id, &ext4, &staging, &target)
                .await
                .unwrap();
            assert_eq!(sums_of(&target, &sums), sums, "{name} holds the files");
            csi.detach(&copy.volume_id, &staging, &target).await;
        }

        // A device holding ext4 staged as xfs: refused, and the data is intact.
        let xfs = mount_capability("xfs", Mode::SingleNodeWriter);
        let published = csi
            .controller
            .controller_publish_volume(pb::ControllerPublishVolumeRequest {
                volume_id: "pvc-from-snap".into(),
                node_id: "node-1".into(),
                volume_capability: Some(xfs.clone()),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        let xfs_staging = root.join("staging/xfs");
        std::fs::create_dir_all(&xfs_staging).unwrap();
        let refused = csi
            .node
            .node_stage_volume(pb::NodeStageVolumeRequest {
                volume_id: "pvc-from-snap".into(),
                publish_context: published.publish_context,
                staging_target_path: path_str(&xfs_staging).into(),
                volume_capability: Some(xfs),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
        assert!(refused.message().contains("ext4"), "{refused:?}");
        let (staging2, target2) = (root.join("staging/again"), root.join("pods/again/mount"));

        // The kubelet calling NodeStage again while the first call still runs: the
        // second is ABORTED (or, had the first ended already, answers as it did); the
        // export is connected once either way.
        let published = csi
            .controller
            .controller_publish_volume(pb::ControllerPublishVolumeRequest {
                volume_id: "pvc-from-snap".into(),
                node_id: "node-1".into(),
                volume_capability: Some(ext4.clone()),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        std::fs::create_dir_all(&staging2).unwrap();
        let stage = pb::NodeStageVolumeRequest {
            volume_id: "pvc-from-snap".into(),
            publish_context: published.publish_context,
            staging_target_path: path_str(&staging2).into(),
            volume_capability: Some(ext4.clone()),
            ..Default::default()
        };
        let (mut first, mut second) = (csi.node.clone(), csi.node.clone());
        let (a, b) = tokio::join!(
            first.node_stage_volume(stage.clone()),
            second.node_stage_volume(stage)
        );
        let codes = [&a, &b].map(|r| r.as_ref().map_or_else(|e| e.code(), |_| Code::Ok));
        assert!(
            codes.contains(&Code::Ok)
                && codes.iter().all(|c| matches!(c, Code::Ok | Code::Aborted)),
            "two NodeStage calls at once: {a:?} {b:?}"
        );
        let connections: Vec<_> = processes_mentioning("fuse/pvc-from-snap/dev")
            .into_iter()
            .filter(|(_, args)| args.first().is_some_and(|a| a.ends_with("nbdfuse")))
            .collect();
        assert_eq!(connections.len(), 1, "{connections:?}");
        eprintln!("two NodeStage calls at once answered {codes:?}");
        csi.attach("pvc-from-snap", &ext4, &staging2, &target2)
            .await
            .unwrap();
        assert_eq!(
            sums_of(&target2, &sums),
            sums,
            "intact after the refused xfs stage"
        );
        csi.detach("pvc-from-snap", &staging2, &target2).await;

        // Growth: the engine grows at once; the staged filesystem after staging again.
        let grown = csi
            .controller
            .controller_expand_volume(pb::ControllerExpandVolumeRequest {
                volume_id: volume.volume_id.clone(),
                capacity_range: Some(pb::CapacityRange {
                    required_bytes: 128 * MIB,
                    limit_bytes: 0,
                }),
                volume_capability: Some(ext4.clone()),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert!(grown.node_expansion_required && grown.capacity_bytes == 128 * MIB);
        let expand = pb::NodeExpandVolumeRequest {
            volume_id: volume.volume_id.clone(),
            volume_path: path_str(&target).into(),
            capacity_range: Some(pb::CapacityRange {
                required_bytes: 128 * MIB,
                limit_bytes: 0,
            }),
            staging_target_path: path_str(&staging).into(),
            volume_capability: Some(ext4.clone()),
            ..Default::default()
        };
        let staged_size = csi
            .node
            .node_expand_volume(expand.clone())
            .await
            .unwrap_err();
        assert_eq!(
            staged_size.code(),
            Code::FailedPrecondition,
            "{staged_size:?}"
        );
        let before = filesystem_bytes(&target);
        csi.unstage(&volume.volume_id, &staging, &target).await;
        csi.attach(&volume.volume_id, &ext4, &staging, &target)
            .await
            .unwrap();
        let expanded = csi
            .node
            .node_expand_volume(expand)
            .await
            .unwrap()
            .into_inner();
        assert_eq!(expanded.capacity_bytes, 128 * MIB);
        let after = filesystem_bytes(&target);
        assert!(
            after > before + 48 * MIB as u64,
            "df: {before} → {after} bytes"
        );
        assert_eq!(
            sums_of(&target, &sums),
            sums,
            "the files survive the growth"
        );
        let stats = csi
            .node
            .node_get_volume_stats(pb::NodeGetVolumeStatsRequest {
                volume_id: volume.volume_id.clone(),
                volume_path: path_str(&target).into(),
                staging_target_path: String::new(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(stats.usage.len(), 2, "bytes and inodes: {stats:?}");
        assert!(stats.volume_condition.is_some_and(|c| !c.abnormal));

        // Block mode: fio writes and verifies through the published device.
        let block = block_capability();
        let raw = csi
            .create("pvc-block", 64 * MIB, &block, None)
            .await
            .unwrap();
        let (block_staging, device) = (root.join("staging/block"), root.join("pods/b/dev"));
        csi.attach(&raw.volume_id, &block, &block_staging, &device)
            .await
            .unwrap();
        let fio = require("fio", "fio");
        let verified = run(
            &fio,
            &[
                "--name=verify",
                &format!("--filename={}", path_str(&device)),
                "--rw=randwrite",
                "--bs=4k",
                "--size=16M",
                "--direct=1",
                "--ioengine=psync",
                "--verify=crc32c",
                "--do_verify=1",
            ],
            Duration::from_secs(180),
        );
        assert!(
            verified.success() && verified.stdout.contains("err= 0"),
            "fio through the block device: {verified:?}"
        );
        // Published read-only at a second target: its own read-only loop device, so a
        // write through it fails (a read-only bind of the writable device would not stop
        // one), while reads work; unpublishing it detaches that device.
        let read_only = root.join("pods/c/dev");
        csi.node
            .node_publish_volume(pb::NodePublishVolumeRequest {
                volume_id: raw.volume_id.clone(),
                staging_target_path: path_str(&block_staging).into(),
                target_path: path_str(&read_only).into(),
                volume_capability: Some(block.clone()),
                readonly: true,
                ..Default::default()
            })
            .await
            .unwrap();
        // The kernel opens a read-only device for writing, then refuses every write.
        let written = std::fs::OpenOptions::new()
            .write(true)
            .open(&read_only)
            .and_then(|mut device| std::io::Write::write_all(&mut device, &[0xee; 4096]));
        assert!(
            written.is_err(),
            "a write through the read-only block target went through"
        );
        let mut first = vec![0u8; 4096];
        std::io::Read::read_exact(&mut std::fs::File::open(&read_only).unwrap(), &mut first)
            .unwrap();
        csi.node
            .node_unpublish_volume(pb::NodeUnpublishVolumeRequest {
                volume_id: raw.volume_id.clone(),
                target_path: path_str(&read_only).into(),
            })
            .await
            .unwrap();
        assert!(!read_only.exists(), "the read-only target is left behind");
        csi.detach(&raw.volume_id, &block_staging, &device).await;

        // Bad input.
        let long = "n".repeat(129);
        let too_long = csi.create(&long, MIB, &ext4, None).await.unwrap_err();
        assert_eq!(too_long.code(), Code::InvalidArgument);
        let shared = mount_capability("ext4", Mode::MultiNodeMultiWriter);
        let multi = csi
            .create("pvc-multi", MIB, &shared, None)
            .await
            .unwrap_err();
        assert_eq!(multi.code(), Code::InvalidArgument, "{multi:?}");
        let file_staging = root.join("staging-file");
        std::fs::write(&file_staging, b"not a directory").unwrap();
        let not_dir = csi
            .node
            .node_stage_volume(pb::NodeStageVolumeRequest {
                volume_id: volume.volume_id.clone(),
                staging_target_path: path_str(&file_staging).into(),
                volume_capability: Some(ext4.clone()),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(not_dir.code(), Code::InvalidArgument, "{not_dir:?}");
        let outside = csi
            .node
            .node_publish_volume(pb::NodePublishVolumeRequest {
                volume_id: volume.volume_id.clone(),
                staging_target_path: path_str(&staging).into(),
                target_path: "/etc/shorthorn-not-here".into(),
                volume_capability: Some(ext4.clone()),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(outside.code(), Code::InvalidArgument, "{outside:?}");
        let unknown = csi
            .controller
            .controller_publish_volume(pb::ControllerPublishVolumeRequest {
                volume_id: "no-such-volume".into(),
                node_id: "node-1".into(),
                volume_capability: Some(ext4.clone()),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(unknown.code(), Code::NotFound, "{unknown:?}");

        // Everything goes.
        csi.detach(&volume.volume_id, &staging, &target).await;
        // A volume holding a `snap` snapshot is not deleted under it.
        let held = csi
            .controller
            .delete_volume(pb::DeleteVolumeRequest {
                volume_id: volume.volume_id.clone(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(held.code(), Code::FailedPrecondition, "{held:?}");
        assert!(held.message().contains("vs-snap"), "{held:?}");
        for id in [&snap, &bak] {
            csi.controller
                .delete_snapshot(pb::DeleteSnapshotRequest {
                    snapshot_id: id.to_string(),
                    ..Default::default()
                })
                .await
                .unwrap();
        }
        for name in ["pvc-life", "pvc-from-snap", "pvc-from-bak", "pvc-block"] {
            csi.controller
                .delete_volume(pb::DeleteVolumeRequest {
                    volume_id: name.into(),
                    ..Default::default()
                })
                .await
                .unwrap();
        }
    });
    driver.assert_nothing_left(&node);
}
