//! Volume operations through a running engine: `shorthorn --engine ADDR snapshot …`,
//! `expand SIZE`, `frontend start|stop`, `replica add|rm`, `salvage`.

use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};
use shorthorn_proto::v1 as pb;
use shorthorn_store::LayerInfo;

use super::engine_info::connect;
use crate::daemon;
use crate::offline_store::snapshot::{parse_label, print_layers};
use crate::output::line;
use shorthorn_block::size::{format_size_exact, parse_size};

/// Snapshots of a running volume, coordinated by its engine across every replica.
#[derive(Debug, Subcommand)]
pub enum SnapshotCommand {
    /// Take a snapshot: in-flight I/O drains, every replica freezes the same content
    /// under the same name, I/O resumes. Prints the snapshot's name.
    Create(CreateArgs),
    /// Show the snapshot tree: name, parent, created, kind, size on disk, labels.
    Ls {
        /// Print JSON instead of the tree.
        #[arg(long)]
        json: bool,
    },
    /// Mark a snapshot removed; `snapshot purge` then reclaims its space.
    Rm {
        /// The snapshot.
        name: String,
    },
    /// Fold removed snapshots away on every replica, in the background while I/O goes
    /// on. Progress shows in `info`.
    Purge {
        /// Wait until the purge finishes and print what it did.
        #[arg(long)]
        wait: bool,
    },
    /// Revert the volume to a snapshot (the frontend must be stopped first:
    /// `frontend stop`, `snapshot revert NAME`, `frontend start`).
    Revert {
        /// The snapshot.
        name: String,
    },
}

/// Arguments of `snapshot create`.
#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Snapshot name [default: snap-<UTC time>].
    name: Option<String>,
    /// A label, KEY=VALUE; repeat for more.
    #[arg(long = "label", value_parser = parse_label)]
    labels: Vec<(String, String)>,
    /// Mark it a system snapshot (purged freely), not a user one.
    #[arg(long)]
    system: bool,
}

/// Starting and stopping a volume's frontend.
#[derive(Debug, Subcommand)]
pub enum FrontendCommand {
    /// Start serving the volume (NBD); prints the URI.
    Start,
    /// Stop serving: in-flight requests finish, clients are disconnected.
    Stop,
}

/// Runs a `snapshot` command against the engine at `engine`.
pub fn snapshot(engine: &str, command: SnapshotCommand) -> anyhow::Result<()> {
    daemon::runtime()?.block_on(async {
        let mut client = connect(engine).await?;
        match command {
            SnapshotCommand::Create(args) => {
                let request = pb::EngineCreateSnapshotRequest {
                    name: args.name.unwrap_or_default(),
                    system: args.system,
                    labels: args.labels.into_iter().collect(),
                };
                let name = client
                    .create_snapshot(request)
                    .await
                    .map_err(status_error)?
                    .into_inner()
                    .name;
                line(format_args!("{name}"))
            }
            SnapshotCommand::Ls { json } => {
                let layers = client
                    .list_snapshots(pb::ListSnapshotsRequest {})
                    .await
                    .map_err(status_error)?;
                let layers: Vec<LayerInfo> = layers
                    .into_inner()
                    .layers
                    .into_iter()
                    .map(LayerInfo::from)
                    .collect();
                print_layers(&layers, json)
            }
            SnapshotCommand::Rm { name } => {
                client
                    .remove_snapshot(pb::RemoveSnapshotRequest { name: name.clone() })
                    .await
                    .map_err(status_error)?;
                line(format_args!(
                    "marked snapshot {name:?} removed; `snapshot purge` reclaims its space"
                ))
            }
            SnapshotCommand::Purge { wait } => {
                let started = client
                    .purge_snapshots(pb::PurgeSnapshotsRequest {})
                    .await
                    .map_err(status_error)?;
                if !started.into_inner().started {
                    line(format_args!("a purge is already running"))?;
                }
                if !wait {
                    return line(format_args!("purge running; `info` shows its progress"));
                }
                loop {
                    let info = client
                        .info(pb::EngineInfoRequest {})
                        .await
                        .map_err(status_error)?
                        .into_inner();
                    let purge = info.purge.unwrap_or_default();
                    match purge.state.as_str() {
                        "running" => tokio::time::sleep(Duration::from_millis(200)).await,
                        "failed" => anyhow::bail!("purge failed: {}", purge.error),
                        _ => {
                            let purged = if purge.purged.is_empty() {
                                "none".into()
                            } else {
                                purge.purged.join(", ")
                            };
                            return line(format_args!("purged: {purged}"));
                        }
                    }
                }
            }
            SnapshotCommand::Revert { name } => {
                client
                    .revert_snapshot(pb::RevertSnapshotRequest { name: name.clone() })
                    .await
                    .map_err(status_error)?;
                line(format_args!(
                    "reverted to snapshot {name:?}; `frontend start` serves it again"
                ))
            }
        }
    })
}

/// Grows the volume behind `engine` to `size`.
pub fn expand(engine: &str, size: &str) -> anyhow::Result<()> {
    let size = parse_size(size)
        .map_err(anyhow::Error::msg)
        .context("reading the new size")?;
    daemon::runtime()?.block_on(async {
        let mut client = connect(engine).await?;
        client
            .expand(pb::ExpandRequest { size })
            .await
            .map_err(status_error)?;
        line(format_args!(
            "expanded to {}; NBD clients see the new size when they reconnect",
            format_size_exact(size)
        ))
    })
}

/// Starts or stops the frontend of the volume behind `engine`.
pub fn frontend(engine: &str, command: FrontendCommand) -> anyhow::Result<()> {
    daemon::runtime()?.block_on(async {
        let mut client = connect(engine).await?;
        match command {
            FrontendCommand::Start => {
                let uri = client
                    .start_frontend(pb::StartFrontendRequest {})
                    .await
                    .map_err(status_error)?;
                line(format_args!(
                    "frontend serving at {}",
                    uri.into_inner().frontend
                ))
            }
            FrontendCommand::Stop => {
                client
                    .stop_frontend(pb::StopFrontendRequest {})
                    .await
                    .map_err(status_error)?;
                line(format_args!("frontend stopped"))
            }
        }
    })
}

/// The engine's own message, without gRPC's framing.
fn status_error(status: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{}", status.message())
}

/// `replica add|rm`: changes the replicas of the volume; `add` waits for the rebuild and
/// reports its progress on stderr every second.
pub fn replica(engine: &str, action: crate::daemons::replica::ReplicaAction) -> anyhow::Result<()> {
    use crate::daemons::replica::ReplicaAction;
    daemon::runtime()?.block_on(async {
        let mut client = connect(engine).await?;
        match action {
            ReplicaAction::Add { address, bandwidth } => {
                let request = pb::AddReplicaRequest {
                    address: address.clone(),
                    bandwidth,
                };
                let mut adding = client.clone();
                let add = adding.add_replica(request);
                tokio::pin!(add);
                let mut ticker = tokio::time::interval(Duration::from_secs(1));
                ticker.tick().await;
                let response = loop {
                    tokio::select! {
                        result = &mut add => break result,
                        _ = ticker.tick() => {
                            let listed = client.list_replicas(pb::ListReplicasRequest {}).await;
                            let progress = listed.ok().and_then(|replicas| {
                                replicas
                                    .into_inner()
                                    .replicas
                                    .into_iter()
                                    .find(|r| r.address == address)
                                    .and_then(|r| r.rebuild)
                            });
                            if let Some(progress) = progress {
                                eprintln!(
                                    "rebuild {address}: {}",
                                    super::engine_info::rebuild_text(&progress)
                                );
                            }
                        }
                    }
                }
                .with_context(|| format!("adding replica {address}"))?
                .into_inner();
                line(format_args!(
                    "rebuilt {address} copied={} checked={} seconds={:.1}",
                    response.copied_bytes, response.checked_bytes, response.seconds
                ))?;
            }
            ReplicaAction::Rm { address } => {
                client
                    .remove_replica(pb::RemoveReplicaRequest {
                        address: address.clone(),
                    })
                    .await
                    .with_context(|| format!("removing replica {address}"))?;
                line(format_args!("removed {address}"))?;
            }
        }
        anyhow::Ok(())
    })
}

/// `salvage`: brings a volume whose replicas all failed back.
pub fn salvage(engine: &str) -> anyhow::Result<()> {
    let in_sync = daemon::runtime()?.block_on(async {
        let mut client = connect(engine).await?;
        let response = client
            .salvage(pb::SalvageRequest {})
            .await
            .context("salvaging the volume")?;
        anyhow::Ok(response.into_inner().in_sync)
    })?;
    line(format_args!("salvaged; RW replicas: {}", in_sync.join(" ")))?;
    Ok(())
}
