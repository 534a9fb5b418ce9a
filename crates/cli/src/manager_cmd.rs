//! `shorthorn up` (an all-in-one node) and the cluster commands: `volume …`, `node …`,
//! `setting …`, `job …`.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use shorthorn_manager::api::{
    AttachVolume, ClusterInfo, CreateJob, CreateVolume, ExpandVolume, SetSetting, UpdateNode,
    VolumeDetail, VolumeJobs,
};
use shorthorn_manager::model::{
    DiskSpec, JobTask, Node, RecurringJob, RecurringJobSpec, Settings, Volume,
};
use shorthorn_manager::up::{NodeRole, UpConfig};

use crate::api_client::{ApiArgs, Client};
use crate::daemon;
use crate::output::{json_name, line};
use shorthorn_block::size::{format_size, parse_size};

/// How long `volume attach` waits for the engine to serve.
const ATTACH_TIMEOUT: Duration = Duration::from_secs(120);

/// Start an all-in-one Shorthorn node: the manager (REST API, embedded state store,
/// scheduler, reconcilers), this node's agent, and a default disk under DATA_DIR/disks.
/// Prints the API address and token. Ctrl-C stops it and every engine and replica it
/// started; running it again with the same DATA_DIR brings the volumes back.
#[derive(Debug, Args)]
pub struct UpArgs {
    /// Where state, the API token and the default disk live.
    #[arg(long, default_value = "shorthorn-data")]
    data_dir: PathBuf,
    /// The REST API's address.
    #[arg(long, default_value = "127.0.0.1:9600")]
    listen: SocketAddr,
    /// This node's name [default: the host name].
    #[arg(long)]
    node: Option<String>,
    /// The address engines and replicas of this node listen on.
    #[arg(long, default_value = "127.0.0.1")]
    address: IpAddr,
    /// etcd endpoints (e.g. http://10.0.0.1:2379), comma-separated: this node joins the
    /// cluster whose state is there; managers on every node share the work. Without
    /// it: a single node with an embedded store.
    #[arg(long, value_delimiter = ',')]
    etcd: Vec<String>,
    /// A directory under which `file://` backup targets may live (repeatable). The
    /// daemon opens targets that API callers name, as root, so only these directories
    /// (after symlinks) are allowed [default: DATA_DIR/backups].
    #[arg(long = "file-target-root", value_name = "DIR")]
    file_target_roots: Vec<PathBuf>,
    /// A host whose NFS exports `nfs://` backup targets may mount (repeatable); none
    /// by default.
    #[arg(long = "nfs-target-host", value_name = "HOST")]
    nfs_target_hosts: Vec<String>,
}

/// Volumes of the cluster.
#[derive(Debug, Subcommand)]
pub enum VolumeCommand {
    /// Create a volume: its replicas are placed by the scheduler and started.
    Create {
        /// Name (also the NBD export name).
        name: String,
        /// Size, e.g. 10G.
        #[arg(long, value_parser = parse_size)]
        size: u64,
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
        #[arg(long)]
        from_backup: Option<String>,
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
    /// Delete a detached volume and its replicas' data.
    Rm {
        /// The volume.
        name: String,
    },
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

/// Nodes of the cluster.
#[derive(Debug, Subcommand)]
pub enum NodeCommand {
    /// Change a node: zone, tags, scheduling, disks (what is not given stays).
    Update {
        /// The node.
        name: String,
        /// Its zone.
        #[arg(long)]
        zone: Option<String>,
        /// A tag (replaces its tags; repeat for more; `--tag ''` for none).
        #[arg(long = "tag")]
        tags: Option<Vec<String>>,
        /// Whether new replicas may be placed on it (true or false).
        #[arg(long)]
        scheduling: Option<bool>,
        /// A disk, NAME=/ABSOLUTE/PATH (replaces its disks; repeat for more).
        #[arg(long = "disk")]
        disks: Option<Vec<String>>,
    },
    /// List nodes: readiness, address, disks with capacity, available and scheduled.
    Ls {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Recurring snapshot and backup jobs.
#[derive(Debug, Subcommand)]
pub enum JobCommand {
    /// Create a job; volumes run it once they select it (`volume jobs`, or
    /// `volume create --recurring-job`), by name or through one of its groups.
    Create {
        /// Name; also the `recurring-job` label of what it creates.
        name: String,
        /// snapshot, or backup (a snapshot, then its backup to --target).
        #[arg(long)]
        task: String,
        /// When, as cron in UTC: "MIN HOUR DOM MON DOW" (e.g. "0 */6 * * *"), or six
        /// fields with seconds first.
        #[arg(long)]
        cron: String,
        /// How many of its snapshots (and backups) to keep per volume.
        #[arg(long, default_value_t = 5)]
        retain: u32,
        /// A group it belongs to; repeat for more.
        #[arg(long = "group")]
        groups: Vec<String>,
        /// Backup target (backup jobs): a backup target's name or a URL [default: the
        /// `default` backup target].
        #[arg(long)]
        target: Option<String>,
    },
    /// List jobs with their last and next run.
    Ls {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Delete a job (what it created stays).
    Rm {
        /// The job.
        name: String,
    },
}

/// Cluster settings.
#[derive(Debug, Subcommand)]
pub enum SettingCommand {
    /// Print every setting, or one.
    Get {
        /// The setting.
        name: Option<String>,
    },
    /// Change a setting; VALUE is JSON (true, 30, "text") or plain text.
    Set {
        /// The setting.
        name: String,
        /// The new value.
        value: String,
    },
}

/// `shorthorn up` (`role` full) and `shorthorn agent`.
pub fn up(args: UpArgs, role: NodeRole) -> anyhow::Result<()> {
    let node = match args.node {
        Some(node) => node,
        None => std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "node-1".into()),
    };
    shorthorn_block::validate_name(&node).context("node name")?;
    let config = UpConfig {
        data_dir: args.data_dir.clone(),
        listen: args.listen,
        node,
        address: args.address,
        etcd: args.etcd,
        role,
        file_target_roots: if args.file_target_roots.is_empty() {
            vec![args.data_dir.join("backups")]
        } else {
            args.file_target_roots
        },
        nfs_target_hosts: args.nfs_target_hosts,
    };
    daemon::runtime()?.block_on(async {
        let shutdown = daemon::shutdown_token(false)?;
        let data_dir = args.data_dir.display().to_string();
        shorthorn_manager::up::up(
            config,
            |connection, first_start| {
                if role == NodeRole::Agent {
                    println!("shorthorn agent is up: API {}", connection.url);
                    println!("  managers elsewhere in the cluster place replicas and engines here");
                    println!("  stop:    Ctrl-C");
                    return;
                }
                println!("shorthorn is up: API {}", connection.url);
                if first_start {
                    println!(
                        "  token:   {} (new; kept in {data_dir}/token)",
                        connection.token
                    );
                } else {
                    println!("  token:   in {data_dir}/token");
                }
                println!("  create:  shorthorn volume create vol1 --size 10G");
                println!("  attach:  shorthorn volume attach vol1   # prints nbd://…");
                println!("  list:    shorthorn volume ls");
                println!("  stop:    Ctrl-C");
            },
            shutdown.cancelled(),
        )
        .await
    })
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
            } => {
                let body = serde_json::to_value(CreateVolume {
                    name,
                    size,
                    replicas,
                    node_selector,
                    disk_selector,
                    recurring_jobs,
                    recurring_job_groups,
                    from_backup,
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
                loop {
                    let detail: VolumeDetail = client
                        .call(Method::GET, &format!("/v1/volumes/{name}"), None)
                        .await?;
                    if let Some(endpoint) = &detail.volume.status.endpoint {
                        return line(format_args!("{endpoint}"));
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
            } => {
                crate::cluster_backup_cmd::create(&client, name, snapshot, target, &labels, wait)
                    .await
            }
            VolumeCommand::Backups { name, json } => {
                crate::cluster_backup_cmd::list(&client, name.as_deref(), json).await
            }
            VolumeCommand::BackupRm { backup, wait } => {
                crate::cluster_backup_cmd::remove(&client, &backup, wait).await
            }
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
    line(format_args!("replicas:    {} wanted", v.spec.replicas))?;
    for r in &detail.replicas {
        line(format_args!(
            "  {:<28} {:<8} {:<4} {}:{} port {}{}{}",
            r.name,
            json_name(&r.status.state),
            r.status.mode.as_deref().unwrap_or("-"),
            r.spec.node,
            r.spec.disk,
            r.spec.port,
            r.status
                .rebuild
                .as_deref()
                .map(|p| format!(" rebuild {p}"))
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

/// `shorthorn node …`.
pub fn node(api: &ApiArgs, command: NodeCommand) -> anyhow::Result<()> {
    let client = Client::new(api)?;
    daemon::runtime()?.block_on(async {
        let json = match command {
            NodeCommand::Ls { json } => json,
            NodeCommand::Update {
                name,
                zone,
                tags,
                scheduling,
                disks,
            } => {
                let disks = disks
                    .map(|disks| {
                        disks
                            .iter()
                            .map(|d| {
                                let (name, path) = d
                                    .split_once('=')
                                    .with_context(|| format!("--disk {d:?}: write NAME=/PATH"))?;
                                Ok(DiskSpec {
                                    name: name.to_string(),
                                    path: path.to_string(),
                                    tags: Vec::new(),
                                    reserved: 0,
                                    allow_scheduling: true,
                                })
                            })
                            .collect::<anyhow::Result<Vec<_>>>()
                    })
                    .transpose()?;
                let body = serde_json::to_value(UpdateNode {
                    zone,
                    tags: tags.map(|t| t.into_iter().filter(|t| !t.is_empty()).collect()),
                    allow_scheduling: scheduling,
                    disks,
                })?;
                let node: Node = client
                    .call(
                        reqwest::Method::PUT,
                        &format!("/v1/nodes/{name}"),
                        Some(body),
                    )
                    .await?;
                return line(format_args!(
                    "{}: zone {:?}, tags [{}], scheduling {}, {} disks",
                    node.name,
                    node.spec.zone,
                    node.spec.tags.join(", "),
                    node.spec.allow_scheduling,
                    node.spec.disks.len()
                ));
            }
        };
        let nodes: Vec<Node> = client.call(reqwest::Method::GET, "/v1/nodes", None).await?;
        if json {
            return line(format_args!("{}", serde_json::to_string_pretty(&nodes)?));
        }
        let cluster: ClusterInfo = client
            .call(reqwest::Method::GET, "/v1/cluster", None)
            .await?;
        line(format_args!(
            "leader: {} ({} store; answered by {})",
            cluster.leader.as_deref().unwrap_or("none yet"),
            cluster.store,
            cluster.node
        ))?;
        for n in nodes {
            line(format_args!(
                "{} {} ready={} scheduling={}",
                n.name, n.spec.address, n.status.ready, n.spec.allow_scheduling
            ))?;
            for d in &n.status.disks {
                let path = n
                    .spec
                    .disks
                    .iter()
                    .find(|s| s.name == d.name)
                    .map(|s| s.path.as_str())
                    .unwrap_or("?");
                line(format_args!(
                    "  disk {} {path}: capacity {}, available {}, scheduled {}",
                    d.name,
                    format_size(d.capacity),
                    format_size(d.available),
                    format_size(d.scheduled)
                ))?;
            }
        }
        Ok(())
    })
}

/// `shorthorn setting …`.
pub fn setting(api: &ApiArgs, command: SettingCommand) -> anyhow::Result<()> {
    let client = Client::new(api)?;
    daemon::runtime()?.block_on(async {
        use reqwest::Method;
        let settings: Settings = match command {
            SettingCommand::Get { name } => {
                let settings: Settings = client.call(Method::GET, "/v1/settings", None).await?;
                if let Some(name) = name {
                    let map = settings.to_map();
                    let value = map.get(&name).with_context(|| {
                        format!("no setting {name:?}; `setting get` lists them")
                    })?;
                    return line(format_args!("{value}"));
                }
                settings
            }
            SettingCommand::Set { name, value } => {
                let value =
                    serde_json::from_str(&value).unwrap_or(serde_json::Value::String(value));
                let body = serde_json::to_value(SetSetting { value })?;
                client
                    .call(Method::PUT, &format!("/v1/settings/{name}"), Some(body))
                    .await?
            }
        };
        for (name, value) in settings.to_map() {
            line(format_args!("{name} = {value}"))?;
        }
        Ok(())
    })
}

/// `shorthorn job …`.
pub fn job(api: &ApiArgs, command: JobCommand) -> anyhow::Result<()> {
    let client = Client::new(api)?;
    daemon::runtime()?.block_on(async {
        use reqwest::Method;
        match command {
            JobCommand::Create {
                name,
                task,
                cron,
                retain,
                groups,
                target,
            } => {
                let task = match task.as_str() {
                    "snapshot" => JobTask::Snapshot,
                    "backup" => JobTask::Backup,
                    other => bail!("--task {other:?}: use snapshot or backup"),
                };
                let body = serde_json::to_value(CreateJob {
                    name,
                    spec: RecurringJobSpec {
                        task,
                        cron,
                        retain,
                        groups,
                        target,
                        labels: Default::default(),
                    },
                })?;
                let job: RecurringJob = client
                    .call(Method::POST, "/v1/recurring-jobs", Some(body))
                    .await?;
                line(format_args!("created job {}", job.name))
            }
            JobCommand::Ls { json } => {
                let jobs: Vec<RecurringJob> =
                    client.call(Method::GET, "/v1/recurring-jobs", None).await?;
                if json {
                    return line(format_args!("{}", serde_json::to_string_pretty(&jobs)?));
                }
                for j in jobs {
                    line(format_args!(
                        "{} {} cron={:?} retain={} groups=[{}] next={} last={} {}",
                        j.name,
                        json_name(&j.spec.task),
                        j.spec.cron,
                        j.spec.retain,
                        j.spec.groups.join(","),
                        j.status.next_run.as_deref().unwrap_or("-"),
                        j.status.last_run.as_deref().unwrap_or("-"),
                        j.status.last_result
                    ))?;
                }
                Ok(())
            }
            JobCommand::Rm { name } => {
                let _: serde_json::Value = client
                    .call(Method::DELETE, &format!("/v1/recurring-jobs/{name}"), None)
                    .await?;
                line(format_args!("removed job {name}"))
            }
        }
    })
}
