//! The CSI Node service: a published volume becomes a block device on this node —
//! nbdfuse shows the engine's NBD export as a file, a loop device makes that file a disk
//! (no nbd kernel module needed) — which is formatted (only when blank) and mounted at
//! the staging path, then bind-mounted where the pod wants it. What the kubelet calls.
//!
//! Each stage is recorded in `STATE_DIR/stages/VOLUME.json`, and nbdfuse runs in a
//! session of its own: a plugin that restarts finds its stages again, and the mounted
//! volumes never notice.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use shorthorn_manager::api::VolumeDetail;
use tonic::{Request, Response, Status};

use crate::TOPOLOGY_KEY;
use crate::capability::{self, is_mount};
use crate::client::ManagerClient;
use crate::condition;
use crate::controller::PUBLISH_URI;
use crate::host::{self, Contents};
use crate::ids::{self, volume_id};
use crate::in_flight::InFlight;
use crate::params::filesystem;
use crate::pb;
use crate::pb::node_server::Node;
use crate::pb::node_service_capability::rpc::Type as Rpc;
use crate::pb::volume_capability::AccessType;
use crate::pb::volume_capability::access_mode::Mode;

/// What NodeStage did for one volume, kept until NodeUnstage undoes it.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Stage {
    volume: String,
    staging_path: PathBuf,
    uri: String,
    /// nbdfuse's mount point (the export is its file `dev`).
    fuse_dir: PathBuf,
    nbdfuse_pid: Option<u32>,
    loop_device: String,
    /// A filesystem mounted at the staging path (none: a block volume).
    filesystem: Option<String>,
    /// Where it is published (bind-mounted) now.
    #[serde(default)]
    targets: Vec<PathBuf>,
    /// The read-only loop device of each target where a block volume is published
    /// read-only.
    #[serde(default)]
    read_only_loops: std::collections::BTreeMap<PathBuf, String>,
}

/// Serves the Node service of node `node_id`.
#[derive(Debug, Clone)]
pub struct NodeService {
    node_id: String,
    manager: ManagerClient,
    state_dir: PathBuf,
    /// Paths a staging or target path must be under (the kubelet's directory).
    allowed_roots: Vec<PathBuf>,
    /// Volumes with a call under way (a retry meanwhile is ABORTED).
    in_flight: InFlight,
}

impl NodeService {
    /// The node service of `node_id`, recording stages under `state_dir`; paths must be
    /// under one of `allowed_roots`.
    pub fn new(
        node_id: String,
        manager: ManagerClient,
        state_dir: PathBuf,
        allowed_roots: Vec<PathBuf>,
    ) -> Self {
        NodeService {
            node_id,
            manager,
            state_dir,
            allowed_roots,
            in_flight: InFlight::default(),
        }
    }

    fn record_path(&self, volume: &str) -> PathBuf {
        self.state_dir.join("stages").join(format!("{volume}.json"))
    }

    fn stage_of(&self, volume: &str) -> Option<Stage> {
        let text = std::fs::read_to_string(self.record_path(volume)).ok()?;
        serde_json::from_str(&text).ok()
    }

    fn save(&self, stage: &Stage) -> Result<(), Status> {
        let path = self.record_path(&stage.volume);
        let write = || -> std::io::Result<()> {
            std::fs::create_dir_all(path.parent().unwrap_or(Path::new("/")))?;
            let tmp = path.with_extension("json.tmp");
            std::fs::write(&tmp, serde_json::to_vec_pretty(stage)?)?;
            std::fs::rename(&tmp, &path)
        };
        write().map_err(|e| Status::internal(format!("recording {}: {e}", path.display())))
    }

    /// A path from a request: required, absolute, without `..`, under an allowed root.
    fn path(&self, field: &str, path: &str) -> Result<PathBuf, Status> {
        ids::require(field, path)?;
        let path = PathBuf::from(path);
        let plain = path.is_absolute()
            && path
                .components()
                .all(|c| !matches!(c, std::path::Component::ParentDir));
        if !plain || !self.allowed_roots.iter().any(|root| path.starts_with(root)) {
            return Err(Status::invalid_argument(format!(
                "{field} {}: must be an absolute path under {}",
                path.display(),
                self.allowed_roots
                    .iter()
                    .map(|r| r.display().to_string())
                    .collect::<Vec<_>>()
                    .join(" or ")
            )));
        }
        Ok(path)
    }

    /// The engine's NBD URI: from the publish context, else from the manager.
    async fn uri(&self, volume: &str, context: &HashMap<String, String>) -> Result<String, Status> {
        if let Some(uri) = context.get(PUBLISH_URI) {
            return Ok(uri.clone());
        }
        let detail: VolumeDetail = self
            .manager
            .get(&format!("/v1/volumes/{volume}"))
            .await
            .map_err(|e| match e.status() {
                Some(404) => Status::not_found(format!("no volume {volume:?}")),
                _ => e.to_status(),
            })?;
        match (
            &detail.volume.spec.attached_node,
            detail.volume.status.endpoint,
        ) {
            (Some(node), Some(uri)) if *node == self.node_id => Ok(uri),
            _ => Err(Status::failed_precondition(format!(
                "volume {volume} is not published to node {}",
                self.node_id
            ))),
        }
    }

    /// Connects the export and makes (only if blank) and mounts the filesystem; on any
    /// failure undoes what it did.
    async fn stage(
        &self,
        volume: &str,
        uri: &str,
        staging: &Path,
        mount: Option<MountRequest>,
    ) -> Result<Stage, Status> {
        let fuse_dir = self.state_dir.join("fuse").join(volume);
        let (file, pid) = host::start_nbdfuse(&fuse_dir, uri).await?;
        let mut stage = Stage {
            volume: volume.to_string(),
            staging_path: staging.to_path_buf(),
            uri: uri.to_string(),
            fuse_dir: fuse_dir.clone(),
            nbdfuse_pid: Some(pid),
            loop_device: String::new(),
            filesystem: None,
            targets: Vec::new(),
            read_only_loops: Default::default(),
        };
        let result = async {
            stage.loop_device = host::attach_loop(&file).await?;
            if let Some(MountRequest {
                fs,
                mkfs_params,
                flags,
            }) = &mount
            {
                format_if_blank(&stage.loop_device, fs, mkfs_params).await?;
                // A volume grown while it was not staged: its ext4 grows before the
                // mount (growing a mounted one needs CAP_SYS_RESOURCE).
                if fs == "ext4" {
                    grow_ext4_offline(&stage.loop_device).await?;
                }
                let mut args = vec!["-t", fs.as_str()];
                let options = flags.join(",");
                if !options.is_empty() {
                    args.extend(["-o", options.as_str()]);
                }
                let staging = staging.to_string_lossy();
                args.extend([stage.loop_device.as_str(), &staging]);
                host::run("mount", &args).await?;
                stage.filesystem = Some(fs.clone());
                if fs == "xfs" {
                    host::run("xfs_growfs", &[&staging]).await?;
                }
            }
            self.save(&stage)
        }
        .await;
        if let Err(error) = result {
            let _ = self.teardown(&stage).await;
            return Err(error);
        }
        Ok(stage)
    }

    /// Whether a recorded stage still stands: nbdfuse's file, the loop device backed by
    /// it, and (for a filesystem) the staging mount.
    fn is_live(&self, stage: &Stage) -> bool {
        let file = stage.fuse_dir.join("dev");
        host::is_mounted(&stage.fuse_dir)
            && stage.nbdfuse_pid.is_some_and(host::process_is_nbdfuse)
            && host::loop_backing_file(&stage.loop_device).is_some_and(|b| b == file)
            && (stage.filesystem.is_none() || host::is_mounted(&stage.staging_path))
    }

    /// Detaches the read-only loop device of `target`, if it has one, and records so.
    async fn release_read_only_loop(&self, stage: &mut Stage, target: &Path) {
        if let Some(device) = stage.read_only_loops.remove(target) {
            if let Err(e) = host::detach_loop(&device, &stage.fuse_dir.join("dev")).await {
                tracing::warn!(volume = %stage.volume, %device, error = %e, "detaching a read-only loop device");
            }
        }
        if let Err(e) = self.save(stage) {
            tracing::warn!(volume = %stage.volume, error = %e, "recording the stage");
        }
    }

    /// Undoes a stage: unmounts the staging path, detaches the loop devices, stops nbdfuse.
    async fn teardown(&self, stage: &Stage) -> Result<(), Status> {
        host::unmount(&stage.staging_path).await?;
        for device in stage.read_only_loops.values() {
            host::detach_loop(device, &stage.fuse_dir.join("dev")).await?;
        }
        if !stage.loop_device.is_empty() {
            host::detach_loop(&stage.loop_device, &stage.fuse_dir.join("dev")).await?;
        }
        host::stop_nbdfuse(&stage.fuse_dir, stage.nbdfuse_pid).await?;
        let _ = std::fs::remove_file(self.record_path(&stage.volume));
        Ok(())
    }
}

/// Formats `device` with `fs` only when it holds nothing; a device holding another
/// filesystem or a partition table is FAILED_PRECONDITION and left as it is.
async fn format_if_blank(device: &str, fs: &str, mkfs_params: &[String]) -> Result<(), Status> {
    match host::contents(device).await? {
        Contents::Blank => {
            let program = format!("mkfs.{fs}");
            let mut args: Vec<&str> = mkfs_params.iter().map(String::as_str).collect();
            args.push(device);
            host::run(&program, &args).await?;
            tracing::info!(device, fs, "formatted a blank volume");
            Ok(())
        }
        Contents::Filesystem(found) if found == fs => Ok(()),
        Contents::Filesystem(found) => Err(Status::failed_precondition(format!(
            "the volume holds a {found} filesystem, not {fs}; it is left as it is"
        ))),
        Contents::Partitions(table) => Err(Status::failed_precondition(format!(
            "the volume holds a {table} partition table; it is not formatted"
        ))),
        Contents::Other(kind) => Err(Status::failed_precondition(format!(
            "the volume holds {kind} data; it is not formatted"
        ))),
    }
}

/// What a mount capability asks for.
#[derive(Debug, Clone)]
struct MountRequest {
    /// ext4 or xfs.
    fs: String,
    /// Extra arguments of mkfs (`mkfsParams`).
    mkfs_params: Vec<String>,
    /// Mount flags.
    flags: Vec<String>,
}

/// Grows the (unmounted) ext4 filesystem on `device` to the device's size when the
/// device is larger: `e2fsck -f -p`, then `resize2fs`.
async fn grow_ext4_offline(device: &str) -> Result<(), Status> {
    let header = host::run("dumpe2fs", &["-h", device]).await?;
    let field = |name: &str| -> Option<u64> {
        header
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse().ok())
    };
    let (Some(blocks), Some(block_size)) = (field("Block count:"), field("Block size:")) else {
        return Err(Status::internal(format!(
            "dumpe2fs -h {device}: no block count or size"
        )));
    };
    if host::device_size(device).await? <= blocks.saturating_mul(block_size) {
        return Ok(());
    }
    // Exit 1 means errors were corrected; anything above is a failure.
    let (code, _, stderr) = host::run_code("e2fsck", &["-f", "-p", device]).await?;
    if !matches!(code, Some(0 | 1)) {
        return Err(Status::internal(format!(
            "e2fsck {device} before growing it (exit {code:?}): {}",
            stderr.trim()
        )));
    }
    host::run("resize2fs", &[device]).await?;
    tracing::info!(device, "grew the ext4 filesystem to the volume's new size");
    Ok(())
}

/// The filesystem, mkfs arguments and mount flags a mount capability asks for.
fn mount_request(
    capability: &pb::VolumeCapability,
    context: &HashMap<String, String>,
) -> Result<Option<MountRequest>, Status> {
    let Some(AccessType::Mount(mount)) = &capability.access_type else {
        return Ok(None);
    };
    let fs = [
        mount.fs_type.as_str(),
        context.get("fsType").map_or("", String::as_str),
    ]
    .into_iter()
    .find(|f| !f.is_empty())
    .unwrap_or("ext4");
    let fs = filesystem(fs).map_err(Status::invalid_argument)?;
    let mkfs = context
        .get("mkfsParams")
        .map(|p| p.split_whitespace().map(str::to_string).collect())
        .unwrap_or_default();
    Ok(Some(MountRequest {
        fs,
        mkfs_params: mkfs,
        flags: mount.mount_flags.clone(),
    }))
}

#[tonic::async_trait]
impl Node for NodeService {
    async fn node_stage_volume(
        &self,
        request: Request<pb::NodeStageVolumeRequest>,
    ) -> Result<Response<pb::NodeStageVolumeResponse>, Status> {
        let request = request.into_inner();
        ids::require("volume_id", &request.volume_id)?;
        let _busy = self.in_flight.start(&request.volume_id)?;
        let staging = self.path("staging_target_path", &request.staging_target_path)?;
        let capability = capability::required(request.volume_capability.as_ref())?;
        let volume = volume_id(&request.volume_id)?;
        match std::fs::metadata(&staging) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(Status::invalid_argument(format!(
                    "staging_target_path {} is not a directory",
                    staging.display()
                )));
            }
            Err(e) => {
                return Err(Status::invalid_argument(format!(
                    "staging_target_path {}: {e}",
                    staging.display()
                )));
            }
        }
        let fs = mount_request(capability, &request.volume_context)?;
        if let Some(stage) = self.stage_of(volume).filter(|s| !self.is_live(s)) {
            // Recorded, but gone (the node rebooted, or nbdfuse died): what is left is
            // undone and the volume staged afresh.
            tracing::warn!(%volume, "recorded stage is not live; staging again");
            self.teardown(&stage).await?;
        }
        if let Some(stage) = self.stage_of(volume) {
            if stage.staging_path != staging {
                return Err(Status::already_exists(format!(
                    "volume {volume} is staged at {}",
                    stage.staging_path.display()
                )));
            }
            let wanted = fs.as_ref().map(|m| m.fs.clone());
            if stage.filesystem != wanted {
                return Err(Status::already_exists(format!(
                    "volume {volume} is staged as {:?}",
                    stage.filesystem
                )));
            }
            return Ok(Response::new(pb::NodeStageVolumeResponse {}));
        }
        let uri = self.uri(volume, &request.publish_context).await?;
        let stage = self.stage(volume, &uri, &staging, fs).await?;
        tracing::info!(%volume, staging = %staging.display(), device = %stage.loop_device, filesystem = ?stage.filesystem, "CSI volume staged");
        Ok(Response::new(pb::NodeStageVolumeResponse {}))
    }

    async fn node_unstage_volume(
        &self,
        request: Request<pb::NodeUnstageVolumeRequest>,
    ) -> Result<Response<pb::NodeUnstageVolumeResponse>, Status> {
        let request = request.into_inner();
        ids::require("volume_id", &request.volume_id)?;
        let _busy = self.in_flight.start(&request.volume_id)?;
        let staging = self.path("staging_target_path", &request.staging_target_path)?;
        let done = Response::new(pb::NodeUnstageVolumeResponse {});
        let Ok(volume) = volume_id(&request.volume_id) else {
            return Ok(done);
        };
        match self.stage_of(volume) {
            Some(stage) => {
                self.teardown(&stage).await?;
                tracing::info!(%volume, staging = %staging.display(), "CSI volume unstaged");
            }
            None => host::unmount(&staging).await?,
        }
        Ok(done)
    }

    async fn node_publish_volume(
        &self,
        request: Request<pb::NodePublishVolumeRequest>,
    ) -> Result<Response<pb::NodePublishVolumeResponse>, Status> {
        let request = request.into_inner();
        ids::require("volume_id", &request.volume_id)?;
        let _busy = self.in_flight.start(&request.volume_id)?;
        let target = self.path("target_path", &request.target_path)?;
        let staging = self.path("staging_target_path", &request.staging_target_path)?;
        let capability = capability::required(request.volume_capability.as_ref())?;
        let volume = volume_id(&request.volume_id)?;
        let mut stage = self
            .stage_of(volume)
            .filter(|s| self.is_live(s))
            .ok_or_else(|| {
                Status::failed_precondition(format!("volume {volume} is not staged on this node"))
            })?;
        if stage.staging_path != staging {
            return Err(Status::invalid_argument(format!(
                "volume {volume} is staged at {}, not {}",
                stage.staging_path.display(),
                staging.display()
            )));
        }
        if host::is_mounted(&target) {
            return Ok(Response::new(pb::NodePublishVolumeResponse {}));
        }
        let single_writer = capability
            .access_mode
            .as_ref()
            .is_some_and(|m| m.mode() == Mode::SingleNodeSingleWriter);
        stage.targets.retain(|t| host::is_mounted(t));
        if single_writer && let Some(other) = stage.targets.first() {
            return Err(Status::failed_precondition(format!(
                "volume {volume} is single-writer and published at {} already",
                other.display()
            )));
        }
        let io = |e: std::io::Error| Status::internal(format!("{}: {e}", target.display()));
        let source = if is_mount(capability) {
            std::fs::create_dir_all(&target).map_err(io)?;
            stage.staging_path.to_string_lossy().into_owned()
        } else {
            if let Some(parent) = target.parent() {
                std::fs::create_dir_all(parent).map_err(io)?;
            }
            if !target.exists() {
                std::fs::File::create(&target).map_err(io)?;
            }
            if request.readonly {
                let device = host::attach_loop_read_only(&stage.fuse_dir.join("dev")).await?;
                stage.read_only_loops.insert(target.clone(), device.clone());
                self.save(&stage)?;
                device
            } else {
                stage.loop_device.clone()
            }
        };
        let target_text = target.to_string_lossy().into_owned();
        if let Err(e) = host::run("mount", &["--bind", &source, &target_text]).await {
            self.release_read_only_loop(&mut stage, &target).await;
            return Err(e);
        }
        let mut remount = vec!["remount", "bind"];
        if request.readonly {
            remount.push("ro");
        }
        if let Some(AccessType::Mount(mount)) = &capability.access_type {
            remount.extend(mount.mount_flags.iter().map(String::as_str));
        }
        if remount.len() > 2 {
            let options = remount.join(",");
            if let Err(e) = host::run("mount", &["-o", &options, &target_text]).await {
                let _ = host::unmount(&target).await;
                self.release_read_only_loop(&mut stage, &target).await;
                return Err(e);
            }
        }
        stage.targets.push(target.clone());
        self.save(&stage)?;
        tracing::info!(%volume, target = %target.display(), readonly = request.readonly, "CSI volume published on the node");
        Ok(Response::new(pb::NodePublishVolumeResponse {}))
    }

    async fn node_unpublish_volume(
        &self,
        request: Request<pb::NodeUnpublishVolumeRequest>,
    ) -> Result<Response<pb::NodeUnpublishVolumeResponse>, Status> {
        let request = request.into_inner();
        ids::require("volume_id", &request.volume_id)?;
        let _busy = self.in_flight.start(&request.volume_id)?;
        let target = self.path("target_path", &request.target_path)?;
        host::unmount(&target).await?;
        if let Some(mut stage) = volume_id(&request.volume_id)
            .ok()
            .and_then(|v| self.stage_of(v))
        {
            stage.targets.retain(|t| *t != target);
            self.release_read_only_loop(&mut stage, &target).await;
        }
        match std::fs::metadata(&target) {
            Ok(m) if m.is_dir() => {
                let _ = std::fs::remove_dir(&target);
            }
            Ok(_) => {
                let _ = std::fs::remove_file(&target);
            }
            Err(_) => {}
        }
        Ok(Response::new(pb::NodeUnpublishVolumeResponse {}))
    }

    async fn node_get_volume_stats(
        &self,
        request: Request<pb::NodeGetVolumeStatsRequest>,
    ) -> Result<Response<pb::NodeGetVolumeStatsResponse>, Status> {
        let request = request.into_inner();
        ids::require("volume_id", &request.volume_id)?;
        ids::require("volume_path", &request.volume_path)?;
        let path = PathBuf::from(&request.volume_path);
        let stage = volume_id(&request.volume_id)
            .ok()
            .and_then(|v| self.stage_of(v))
            .ok_or_else(|| {
                Status::not_found(format!("volume {} is not staged here", request.volume_id))
            })?;
        let metadata = std::fs::metadata(&path)
            .map_err(|_| Status::not_found(format!("no {}", path.display())))?;
        let usage = if metadata.is_dir() {
            let stats = rustix::fs::statvfs(&path)
                .map_err(|e| Status::internal(format!("statvfs {}: {e}", path.display())))?;
            let block = i64::try_from(stats.f_frsize).unwrap_or(i64::MAX);
            let count = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
            vec![
                pb::VolumeUsage {
                    available: count(stats.f_bavail).saturating_mul(block),
                    total: count(stats.f_blocks).saturating_mul(block),
                    used: count(stats.f_blocks.saturating_sub(stats.f_bfree)).saturating_mul(block),
                    unit: pb::volume_usage::Unit::Bytes.into(),
                },
                pb::VolumeUsage {
                    available: count(stats.f_favail),
                    total: count(stats.f_files),
                    used: count(stats.f_files.saturating_sub(stats.f_ffree)),
                    unit: pb::volume_usage::Unit::Inodes.into(),
                },
            ]
        } else {
            let size = host::device_size(&stage.loop_device).await?;
            vec![pb::VolumeUsage {
                total: i64::try_from(size).unwrap_or(i64::MAX),
                unit: pb::volume_usage::Unit::Bytes.into(),
                ..pb::VolumeUsage::default()
            }]
        };
        let volume_condition = match self
            .manager
            .get::<VolumeDetail>(&format!("/v1/volumes/{}", stage.volume))
            .await
        {
            Ok(detail) => condition::of(&detail.volume),
            Err(e) => pb::VolumeCondition {
                abnormal: true,
                message: format!("cannot ask the manager: {e}"),
            },
        };
        Ok(Response::new(pb::NodeGetVolumeStatsResponse {
            usage,
            volume_condition: Some(volume_condition),
        }))
    }

    async fn node_expand_volume(
        &self,
        request: Request<pb::NodeExpandVolumeRequest>,
    ) -> Result<Response<pb::NodeExpandVolumeResponse>, Status> {
        let request = request.into_inner();
        ids::require("volume_id", &request.volume_id)?;
        let _busy = self.in_flight.start(&request.volume_id)?;
        ids::require("volume_path", &request.volume_path)?;
        let stage = volume_id(&request.volume_id)
            .ok()
            .and_then(|v| self.stage_of(v))
            .ok_or_else(|| {
                Status::not_found(format!("volume {} is not staged here", request.volume_id))
            })?;
        // The loop device takes what its file shows now.
        host::run("losetup", &["-c", &stage.loop_device]).await?;
        let size = host::device_size(&stage.loop_device).await?;
        let required = request
            .capacity_range
            .as_ref()
            .map_or(0, |r| r.required_bytes.max(0).unsigned_abs());
        if size < required {
            return Err(Status::failed_precondition(format!(
                "volume {} shows {size} bytes on this node, not {required}: nbdfuse keeps the size \
                 the export had when it connected; unstage and stage the volume again to grow its filesystem",
                stage.volume
            )));
        }
        match stage.filesystem.as_deref() {
            Some("ext4") => {
                let (grown, stdout, stderr) =
                    host::run_status("resize2fs", &[&stage.loop_device]).await?;
                if !grown {
                    // Online growth needs CAP_SYS_RESOURCE; without it the filesystem
                    // grows at the next stage, before the mount.
                    return Err(Status::failed_precondition(format!(
                        "resize2fs {} while mounted: {} {}; the filesystem grows when the volume is staged again",
                        stage.loop_device,
                        stdout.trim(),
                        stderr.trim()
                    )));
                }
            }
            Some("xfs") => {
                host::run("xfs_growfs", &[&stage.staging_path.to_string_lossy()]).await?;
            }
            _ => {}
        }
        Ok(Response::new(pb::NodeExpandVolumeResponse {
            capacity_bytes: i64::try_from(size).unwrap_or(i64::MAX),
        }))
    }

    async fn node_get_capabilities(
        &self,
        _: Request<pb::NodeGetCapabilitiesRequest>,
    ) -> Result<Response<pb::NodeGetCapabilitiesResponse>, Status> {
        let capabilities = [
            Rpc::StageUnstageVolume,
            Rpc::GetVolumeStats,
            Rpc::ExpandVolume,
            Rpc::VolumeCondition,
            Rpc::SingleNodeMultiWriter,
        ]
        .into_iter()
        .map(|rpc| pb::NodeServiceCapability {
            r#type: Some(pb::node_service_capability::Type::Rpc(
                pb::node_service_capability::Rpc { r#type: rpc.into() },
            )),
        })
        .collect();
        Ok(Response::new(pb::NodeGetCapabilitiesResponse {
            capabilities,
        }))
    }

    async fn node_get_info(
        &self,
        _: Request<pb::NodeGetInfoRequest>,
    ) -> Result<Response<pb::NodeGetInfoResponse>, Status> {
        Ok(Response::new(pb::NodeGetInfoResponse {
            node_id: self.node_id.clone(),
            max_volumes_per_node: 0,
            accessible_topology: Some(pb::Topology {
                segments: [(TOPOLOGY_KEY.to_string(), self.node_id.clone())].into(),
            }),
        }))
    }
}
