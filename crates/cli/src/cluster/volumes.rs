//! `shorthorn volume …`: volumes of a cluster, through the manager's API.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Subcommand;
use shorthorn_manager::api::{
    AttachVolume, CreateVolume, ExpandVolume, SetDataLocality, SetReplicaCount, VolumeDetail,
    VolumeJobs,
};
use shorthorn_manager::model::{DataLocality, Volume};

use super::api_client::{ApiArgs, Client};
use crate::daemon;
use crate::output::{json_name, line};
use shorthorn_block::size::{format_size, parse_size};

/// How long `volume attach` waits for the engine to serve.
const ATTACH_TIMEOUT: Duration = Duration::from_secs(120);

/// Volumes of the cluster.
#[derive(Debug, Subcommand)]
pub enum VolumeCommand {
    /// Create a volume: its replicas are placed by the scheduler and started.
    Create {
        /// Name (also the NBD export name).
        name: String,
        /// Size, e.g. 10G [a clone: its source's size; otherwise required].
        #[arg(long, value_parser = parse_size)]
        size: Option<u64>,
        /// Replica count [default: the default_replica_count setting].
        #[arg(long)]
        replicas: Option<usize>,
        /// A tag every replica's node must have; repeat for more.
        #[arg(long = "node-selector")]
        node_selector: Vec<String>,
        /// A tag every replica's disk must have; repeat for more.
        #[arg(long = "disk-selector")]
        disk_selector: Vec<String>,
        /// A recurring job to run for it; repeat for more.
        #[arg(long = "recurring-job")]
        recurring_jobs: Vec<String>,
        /// A group of recurring jobs to run for it; repeat for more.
        #[arg(long = "recurring-job-group")]
        recurring_job_groups: Vec<String>,
        /// Restore it from this backup (a URL as `volume backups --json` or `backup ls`
        /// print it); --size must be the backup's volume size.
        #[arg(long, conflicts_with_all = ["from_snapshot", "from_volume"])]
        from_backup: Option<String>,
        /// A standby (disaster recovery) volume that keeps following the backups of
        /// --from-backup's volume (TARGET?volume=VOLUME, or a backup URL of it): the
        /// newest is restored now, each newer one as it appears (setting
        /// backup_poll_interval, or `volume sync`), fetching only changed blocks. It cannot
        /// be attached, snapshotted, backed up or expanded until `volume activate`.
        /// --size must be the newest backup's volume size.
        #[arg(long, requires = "from_backup")]
        standby: bool,
        /// A clone of a snapshot of another volume, VOLUME/SNAPSHOT: each replica is
        /// copied from a replica of that volume (no backup target needed), which keeps
        /// serving meanwhile. The volume is `creating` until the copies are done.
        #[arg(long, value_name = "VOLUME/SNAPSHOT", conflicts_with = "from_volume")]
        from_snapshot: Option<String>,
        /// A clone of another volume as it is now (a system snapshot of it is taken
        /// first, then copied as for --from-snapshot).
        #[arg(long, value_name = "VOLUME")]
        from_volume: Option<String>,
        /// best-effort: while attached, keep a replica on the engine's node (reached
        /// over its unix socket); disabled: replicas stay where they were placed
        /// [default: the default_data_locality setting].
        #[arg(long, value_name = "MODE", value_parser = parse_locality)]
        data_locality: Option<DataLocality>,
        /// A label KEY=VALUE to find it by (the web UI filters on labels); repeat for
        /// more.
        #[arg(long = "label", value_name = "KEY=VALUE")]
        labels: Vec<String>,
    },
    /// Set which recurring jobs run for a volume (replaces the lists; none: no jobs).
    Jobs {
        /// The volume.
        name: String,
        /// A job, by name; repeat for more.
        #[arg(long = "job")]
        jobs: Vec<String>,
        /// A job group; repeat for more.
        #[arg(long = "group")]
        groups: Vec<String>,
    },
    /// List volumes: state, robustness, size, replicas, endpoint.
    Ls {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show a volume and its replicas; when attached, its NBD URI.
    Get {
        /// The volume.
        name: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Attach a volume to a node (its engine starts there); waits until it serves and
    /// prints the NBD URI.
    Attach {
        /// The volume.
        name: String,
        /// The node [default: the node serving the API].
        #[arg(long)]
        node: Option<String>,
    },
    /// Detach a volume (its engine stops after a flush; replicas keep running).
    Detach {
        /// The volume.
        name: String,
    },
    /// Grow a volume to SIZE on every replica: attached, through its engine (new NBD
    /// connections see it); detached, directly (every replica must run).
    Expand {
        /// The volume.
        name: String,
        /// The new size, e.g. 20G.
        #[arg(value_parser = parse_size)]
        size: u64,
    },
    /// Change how many replicas a volume keeps (more are placed and rebuilt while it
    /// serves; with fewer, the least useful go first: not running, rebuilding, sharing a
    /// node; refused at once when the new replicas cannot be placed), or its data
    /// locality.
    #[command(group = clap::ArgGroup::new("change").required(true).multiple(true))]
    Update {
        /// The volume.
        name: String,
        /// The replica count (1 to 16).
        #[arg(long, group = "change")]
        replicas: Option<usize>,
        /// best-effort: while attached, keep a replica on the engine's node (built
        /// there, then one elsewhere removed); disabled: leave replicas where they are.
        #[arg(long, value_name = "MODE", value_parser = parse_locality, group = "change")]
        data_locality: Option<DataLocality>,
    },
    /// Remove one replica of a volume (it leaves the engine, then its process and data
    /// go); a new one is placed and rebuilt in its place. Not the last running one.
    ReplicaRm {
        /// The volume.
        name: String,
        /// The replica (see `volume get`).
        replica: String,
    },
    /// Bring back a faulted, attached volume from the replicas it has (the most recent
    /// ones): for when `auto_salvage` is off. Writes only the missing replicas
    /// acknowledged are lost; see docs/consistency.md.
    Salvage {
        /// The volume.
        name: String,
    },
    /// Have a standby volume read its backup target now (a newer backup is then
    /// restored at once).
    Sync {
        /// The volume.
        name: String,
        /// Wait until the newest backup that read found is restored.
        #[arg(long)]
        wait: bool,
        /// How long --wait waits, e.g. 10m.
        #[arg(long, default_value = "30m", value_parser = humantime::parse_duration)]
        timeout: Duration,
    },
    /// Turn a standby volume into an ordinary volume: waits until the newest backup in
    /// the target is restored, then it can be attached, snapshotted and backed up
    /// (recurring jobs stay off until set). Irreversible.
    Activate {
        /// The volume.
        name: String,
        /// Activate with the backup restored last, without reading the target for newer
        /// ones (a restore under way still finishes first).
        #[arg(long)]
        at_last_restored: bool,
        /// How long to wait, e.g. 10m (the activation stays asked for after that).
        #[arg(long, default_value = "30m", value_parser = humantime::parse_duration)]
        timeout: Duration,
    },
    /// Delete a detached volume and its replicas' data.
    Rm {
        /// The volume.
        name: String,
    },
    /// Snapshots of a volume: create, ls, rm, revert (detached only), purge.
    #[command(subcommand)]
    Snapshot(super::snapshots::SnapshotCommand),
    /// Back up an attached volume to a backup target (see `backup-target set`): a new
    /// snapshot, or --snapshot. Prints the backup's name; --wait waits for it and prints
    /// its URL (for `backup restore`).
    Backup {
        /// The volume.
        name: String,
        /// An existing snapshot to back up [default: a new one].
        #[arg(long)]
        snapshot: Option<String>,
        /// The backup target's name.
        #[arg(long, default_value = "default")]
        target: String,
        /// A label KEY=VALUE recorded with the backup; repeat for more.
        #[arg(long = "label")]
        labels: Vec<String>,
        /// Wait until the backup completes (or fails), printing progress.
        #[arg(long)]
        wait: bool,
    },
    /// List backups (of every volume, or one) in the cluster's backup targets.
    Backups {
        /// Only this volume's.
        name: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Delete a backup from its target (its record, then blocks no other backup uses).
    BackupRm {
        /// The backup's name (as `volume backups` lists it).
        backup: String,
        /// Wait until it is gone.
        #[arg(long)]
        wait: bool,
    },
}

/// `shorthorn volume …`.
pub fn volume(api: &ApiArgs, command: VolumeCommand) -> anyhow::Result<()> {
    let client = Client::new(api)?;
    daemon::runtime()?.block_on(async {
        use reqwest::Method;
        match command {
            VolumeCommand::Create {
                name,
                size,
                replicas,
                node_selector,
                disk_selector,
                recurring_jobs,
                recurring_job_groups,
                from_backup,
                standby,
                from_snapshot,
                from_volume,
                data_locality,
                labels,
            } => {
                let snapshot_source = match from_snapshot.as_deref() {
                    Some(text) => Some(
                        text.split_once('/')
                            .map(|(volume, _)| volume)
                            .with_context(|| {
                                format!("--from-snapshot {text:?}: write VOLUME/SNAPSHOT")
                            })?,
                    ),
                    None => None,
                };
                let source = from_volume.as_deref().or(snapshot_source);
                let size = match (size, source) {
                    (Some(size), _) => size,
                    (None, Some(source)) => {
                        let detail: VolumeDetail = client
                            .call(Method::GET, &format!("/v1/volumes/{source}"), None)
                            .await?;
                        detail.volume.spec.size
                    }
                    (None, None) => bail!("--size is required (except for a clone)"),
                };
                let body = serde_json::to_value(CreateVolume {
                    name,
                    size,
                    replicas,
                    node_selector,
                    disk_selector,
                    recurring_jobs,
                    recurring_job_groups,
                    from_backup,
                    from_snapshot,
                    from_volume,
                    data_locality,
                    labels: super::backups::parse_labels(&labels)?,
                    standby,
                })?;
                let volume: Volume = client.call(Method::POST, "/v1/volumes", Some(body)).await?;
                line(format_args!(
                    "created {} ({}, {} replicas)",
                    volume.name,
                    format_size(volume.spec.size),
                    volume.spec.replicas
                ))
            }
            VolumeCommand::Ls { json } => {
                let volumes: Vec<Volume> = client.call(Method::GET, "/v1/volumes", None).await?;
                if json {
                    return line(format_args!("{}", serde_json::to_string_pretty(&volumes)?));
                }
                line(format_args!(
                    "{:<24} {:<10} {:<10} {:>10} {:>8}  ENDPOINT",
                    "NAME", "STATE", "ROBUSTNESS", "SIZE", "REPLICAS"
                ))?;
                for v in volumes {
                    line(format_args!(
                        "{:<24} {:<10} {:<10} {:>10} {:>8}  {}",
                        v.name,
                        json_name(&v.status.state),
                        json_name(&v.status.robustness),
                        format_size(v.spec.size),
                        v.spec.replicas,
                        v.status.endpoint.as_deref().unwrap_or("-")
                    ))?;
                }
                Ok(())
            }
            VolumeCommand::Get { name, json } => {
                let detail: VolumeDetail = client
                    .call(Method::GET, &format!("/v1/volumes/{name}"), None)
                    .await?;
                if json {
                    return line(format_args!("{}", serde_json::to_string_pretty(&detail)?));
                }
                print_volume(&detail)
            }
            VolumeCommand::Attach { name, node } => {
                let body = serde_json::to_value(AttachVolume { node })?;
                let _: Volume = client
                    .call(
                        Method::POST,
                        &format!("/v1/volumes/{name}/attach"),
                        Some(body),
                    )
                    .await?;
                let started = Instant::now();
                let mut said = String::new();
                loop {
                    let detail: VolumeDetail = client
                        .call(Method::GET, &format!("/v1/volumes/{name}"), None)
                        .await?;
                    if let Some(endpoint) = &detail.volume.status.endpoint {
                        return line(format_args!("{endpoint}"));
                    }
                    // Progress on stderr, so stdout stays the URI alone.
                    let message = &detail.volume.status.message;
                    if !message.is_empty() && *message != said {
                        crate::output::note(format_args!(
                            "waiting for {name} ({:.0?}): {message}",
                            started.elapsed()
                        ));
                        said.clone_from(message);
                    }
                    if started.elapsed() > ATTACH_TIMEOUT {
                        bail!(
                            "volume {name} is not attached after {ATTACH_TIMEOUT:?}: {}",
                            detail.volume.status.message
                        );
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
            VolumeCommand::Expand { name, size } => {
                let body = serde_json::to_value(ExpandVolume { size })?;
                let volume: Volume = client
                    .call(
                        Method::POST,
                        &format!("/v1/volumes/{name}/expand"),
                        Some(body),
                    )
                    .await?;
                line(format_args!(
                    "expanded {name} to {}",
                    format_size(volume.spec.size)
                ))
            }
            VolumeCommand::Jobs { name, jobs, groups } => {
                let body = serde_json::to_value(VolumeJobs { jobs, groups })?;
                let volume: Volume = client
                    .call(
                        Method::PUT,
                        &format!("/v1/volumes/{name}/recurring-jobs"),
                        Some(body),
                    )
                    .await?;
                line(format_args!(
                    "{name}: jobs [{}], groups [{}]",
                    volume.spec.recurring_jobs.join(", "),
                    volume.spec.recurring_job_groups.join(", ")
                ))
            }
            VolumeCommand::Detach { name } => {
                let _: Volume = client
                    .call(Method::POST, &format!("/v1/volumes/{name}/detach"), None)
                    .await?;
                line(format_args!("detaching {name}"))
            }
            VolumeCommand::Backup {
                name,
                snapshot,
                target,
                labels,
                wait,
            } => super::backups::create(&client, name, snapshot, target, &labels, wait).await,
            VolumeCommand::Snapshot(command) => super::snapshots::run(&client, command).await,
            VolumeCommand::Backups { name, json } => {
                super::backups::list(&client, name.as_deref(), json).await
            }
            VolumeCommand::BackupRm { backup, wait } => {
                super::backups::remove(&client, &backup, wait).await
            }
            VolumeCommand::Update {
                name,
                replicas,
                data_locality,
            } => {
                if let Some(replicas) = replicas {
                    let body = serde_json::to_value(SetReplicaCount { replicas })?;
                    let volume: Volume = client
                        .call(
                            Method::POST,
                            &format!("/v1/volumes/{name}/replica-count"),
                            Some(body),
                        )
                        .await?;
                    line(format_args!("{name}: {} replicas", volume.spec.replicas))?;
                }
                if let Some(data_locality) = data_locality {
                    let body = serde_json::to_value(SetDataLocality { data_locality })?;
                    let volume: Volume = client
                        .call(
                            Method::POST,
                            &format!("/v1/volumes/{name}/data-locality"),
                            Some(body),
                        )
                        .await?;
                    line(format_args!(
                        "{name}: data locality {}",
                        json_name(&volume.spec.data_locality)
                    ))?;
                }
                Ok(())
            }
            VolumeCommand::ReplicaRm { name, replica } => {
                let _: serde_json::Value = client
                    .call(
                        Method::DELETE,
                        &format!("/v1/volumes/{name}/replicas/{replica}"),
                        None,
                    )
                    .await?;
                line(format_args!(
                    "{replica} retires; a new replica takes its place"
                ))
            }
            VolumeCommand::Salvage { name } => {
                let _: Volume = client
                    .call(Method::POST, &format!("/v1/volumes/{name}/salvage"), None)
                    .await?;
                line(format_args!(
                    "salvaging {name}; `volume get {name}` shows when it serves"
                ))
            }
            VolumeCommand::Sync {
                name,
                wait,
                timeout,
            } => super::standby::sync(&client, &name, wait, timeout).await,
            VolumeCommand::Activate {
                name,
                at_last_restored,
                timeout,
            } => super::standby::activate(&client, &name, at_last_restored, timeout).await,
            VolumeCommand::Rm { name } => {
                let _: serde_json::Value = client
                    .call(Method::DELETE, &format!("/v1/volumes/{name}"), None)
                    .await?;
                line(format_args!("removed {name}"))
            }
        }
    })
}

fn print_volume(detail: &VolumeDetail) -> anyhow::Result<()> {
    let v = &detail.volume;
    line(format_args!("volume:      {}", v.name))?;
    line(format_args!("size:        {}", format_size(v.spec.size)))?;
    line(format_args!("state:       {}", json_name(&v.status.state)))?;
    line(format_args!(
        "robustness:  {}",
        json_name(&v.status.robustness)
    ))?;
    line(format_args!(
        "attached:    {}",
        v.spec.attached_node.as_deref().unwrap_or("-")
    ))?;
    line(format_args!(
        "endpoint:    {}",
        v.status.endpoint.as_deref().unwrap_or("-")
    ))?;
    if let Some(engine) = detail.engine.as_ref().filter(|e| e.status.node.is_some()) {
        line(format_args!(
            "engine:      {} {} on {} (control {})",
            engine.name,
            json_name(&engine.status.state),
            engine.status.node.as_deref().unwrap_or("-"),
            engine.status.address.as_deref().unwrap_or("-"),
        ))?;
    }
    if !v.status.message.is_empty() {
        line(format_args!("message:     {}", v.status.message))?;
    }
    line(format_args!(
        "locality:    {}",
        json_name(&v.spec.data_locality)
    ))?;
    super::standby::print(v)?;
    line(format_args!("replicas:    {} wanted", v.spec.replicas))?;
    for r in &detail.replicas {
        let unix = r
            .status
            .data_path
            .as_deref()
            .is_some_and(|path| path.starts_with("unix://"));
        line(format_args!(
            "  {:<28} {:<8} {:<4} {}:{} port {}{}{}{}{}",
            r.name,
            json_name(&r.status.state),
            r.status.mode.as_deref().unwrap_or("-"),
            r.spec.node,
            r.spec.disk,
            r.spec.port,
            if unix { " (unix socket)" } else { "" },
            r.status
                .rebuild
                .as_deref()
                .map(|p| format!(" rebuild {p}"))
                .unwrap_or_default(),
            r.status
                .fill_progress
                .as_deref()
                .map(|p| format!(" filling {p}"))
                .unwrap_or_default(),
            if r.status.message.is_empty() {
                String::new()
            } else {
                format!(" ({})", r.status.message)
            }
        ))?;
    }
    Ok(())
}

/// A data locality mode as the API names it.
fn parse_locality(text: &str) -> Result<DataLocality, String> {
    serde_json::from_value(serde_json::Value::String(text.to_string()))
        .map_err(|_| format!("{text:?}: expected best-effort or disabled"))
}
