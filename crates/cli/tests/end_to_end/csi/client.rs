//! A CSI client for the tests: the Controller and Node services over the driver's unix
//! socket, and the calls the sidecars and the kubelet make in sequence.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use shorthorn_csi::pb;
use shorthorn_csi::pb::controller_client::ControllerClient;
use shorthorn_csi::pb::identity_client::IdentityClient;
use shorthorn_csi::pb::node_client::NodeClient;
use shorthorn_csi::pb::volume_capability::access_mode::Mode;
use tonic::transport::Channel;

use crate::common::path_str;

pub const MIB: i64 = 1 << 20;

/// gRPC clients of one driver socket.
pub struct Csi {
    pub identity: IdentityClient<Channel>,
    pub controller: ControllerClient<Channel>,
    pub node: NodeClient<Channel>,
}

pub async fn connect(socket: PathBuf) -> Csi {
    let channel = tonic::transport::Endpoint::try_from("http://csi.invalid")
        .unwrap()
        .connect_with_connector(tower::service_fn(move |_| {
            let socket = socket.clone();
            async move {
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                    tokio::net::UnixStream::connect(socket).await?,
                ))
            }
        }))
        .await
        .unwrap();
    Csi {
        identity: IdentityClient::new(channel.clone()),
        controller: ControllerClient::new(channel.clone()),
        node: NodeClient::new(channel),
    }
}

pub fn mount_capability(fs: &str, mode: Mode) -> pb::VolumeCapability {
    pb::VolumeCapability {
        access_mode: Some(pb::volume_capability::AccessMode { mode: mode.into() }),
        access_type: Some(pb::volume_capability::AccessType::Mount(
            pb::volume_capability::MountVolume {
                fs_type: fs.into(),
                ..Default::default()
            },
        )),
    }
}

pub fn block_capability() -> pb::VolumeCapability {
    pb::VolumeCapability {
        access_mode: Some(pb::volume_capability::AccessMode {
            mode: Mode::SingleNodeWriter.into(),
        }),
        access_type: Some(pb::volume_capability::AccessType::Block(
            pb::volume_capability::BlockVolume {},
        )),
    }
}

pub fn snapshot_source(id: &str) -> pb::VolumeContentSource {
    pb::VolumeContentSource {
        r#type: Some(pb::volume_content_source::Type::Snapshot(
            pb::volume_content_source::SnapshotSource {
                snapshot_id: id.into(),
            },
        )),
    }
}

impl Csi {
    pub async fn create(
        &mut self,
        name: &str,
        size: i64,
        capability: &pb::VolumeCapability,
        source: Option<pb::VolumeContentSource>,
    ) -> Result<pb::Volume, tonic::Status> {
        let request = pb::CreateVolumeRequest {
            name: name.into(),
            capacity_range: Some(pb::CapacityRange {
                required_bytes: size,
                limit_bytes: 0,
            }),
            volume_capabilities: vec![capability.clone()],
            parameters: [("numberOfReplicas".to_string(), "2".to_string())].into(),
            volume_content_source: source,
            ..Default::default()
        };
        let answer = self.controller.create_volume(request).await?;
        Ok(answer.into_inner().volume.unwrap())
    }

    /// ControllerPublish to node-1, NodeStage at `staging`, NodePublish at `target`.
    pub async fn attach(
        &mut self,
        volume: &str,
        capability: &pb::VolumeCapability,
        staging: &Path,
        target: &Path,
    ) -> Result<(), tonic::Status> {
        self.attach_to("node-1", volume, capability, staging, target)
            .await
    }

    /// [`Csi::attach`] to node `node`.
    pub async fn attach_to(
        &mut self,
        node: &str,
        volume: &str,
        capability: &pb::VolumeCapability,
        staging: &Path,
        target: &Path,
    ) -> Result<(), tonic::Status> {
        let published = self
            .controller
            .controller_publish_volume(pb::ControllerPublishVolumeRequest {
                volume_id: volume.into(),
                node_id: node.into(),
                volume_capability: Some(capability.clone()),
                ..Default::default()
            })
            .await?
            .into_inner();
        std::fs::create_dir_all(staging).unwrap();
        self.node
            .node_stage_volume(pb::NodeStageVolumeRequest {
                volume_id: volume.into(),
                publish_context: published.publish_context.clone(),
                staging_target_path: path_str(staging).into(),
                volume_capability: Some(capability.clone()),
                ..Default::default()
            })
            .await?;
        self.node
            .node_publish_volume(pb::NodePublishVolumeRequest {
                volume_id: volume.into(),
                publish_context: published.publish_context,
                staging_target_path: path_str(staging).into(),
                target_path: path_str(target).into(),
                volume_capability: Some(capability.clone()),
                ..Default::default()
            })
            .await?;
        Ok(())
    }

    /// NodeUnpublish, NodeUnstage, ControllerUnpublish from node-1.
    pub async fn detach(&mut self, volume: &str, staging: &Path, target: &Path) {
        self.detach_from("node-1", volume, staging, target).await;
    }

    /// [`Csi::detach`] from node `node`.
    pub async fn detach_from(&mut self, node: &str, volume: &str, staging: &Path, target: &Path) {
        self.unstage(volume, staging, target).await;
        self.controller
            .controller_unpublish_volume(pb::ControllerUnpublishVolumeRequest {
                volume_id: volume.into(),
                node_id: node.into(),
                ..Default::default()
            })
            .await
            .unwrap();
    }

    pub async fn unstage(&mut self, volume: &str, staging: &Path, target: &Path) {
        self.node
            .node_unpublish_volume(pb::NodeUnpublishVolumeRequest {
                volume_id: volume.into(),
                target_path: path_str(target).into(),
            })
            .await
            .unwrap();
        assert!(!target.exists(), "the target path is left behind");
        self.node
            .node_unstage_volume(pb::NodeUnstageVolumeRequest {
                volume_id: volume.into(),
                staging_target_path: path_str(staging).into(),
            })
            .await
            .unwrap();
    }

    pub async fn snapshot(&mut self, volume: &str, name: &str, kind: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let snapshot = self
                .controller
                .create_snapshot(pb::CreateSnapshotRequest {
                    source_volume_id: volume.into(),
                    name: name.into(),
                    parameters: [("type".to_string(), kind.to_string())].into(),
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner()
                .snapshot
                .unwrap();
            if snapshot.ready_to_use {
                return snapshot.snapshot_id;
            }
            assert!(Instant::now() < deadline, "{kind} snapshot not ready");
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}
