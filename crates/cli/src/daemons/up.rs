//! `shorthorn up` (an all-in-one node: manager, agent, default disk) and `shorthorn
//! agent` (the node agent alone, joining a cluster in etcd).

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use shorthorn_agent::instances::{InstanceRecords, runs_binary};
use shorthorn_manager::up::INSTANCES_DIR;

use anyhow::Context;
use clap::Args;
use shorthorn_manager::up::{NodeRole, UpConfig};

use crate::daemon;

/// Start an all-in-one Shorthorn node: the manager (REST API, embedded state store,
/// scheduler, reconcilers), this node's agent, and a default disk under DATA_DIR/disks.
/// Prints the API address and token. Engines and replicas outlive it: Ctrl-C, a crash or
/// `kill -9` of `up` leaves every volume serving its clients, and the next `up` with the
/// same DATA_DIR takes them over (so a new binary is installed without stopping I/O).
/// With --stop-instances, Ctrl-C stops them too.
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
    /// When this process is stopped (Ctrl-C, SIGTERM), stop this node's engines and
    /// replicas too (engines first, after their final flush); their clients lose the
    /// volumes. Without it they keep serving, recorded under DATA_DIR/instances, and
    /// the next `up` or `agent` on this DATA_DIR takes them over.
    #[arg(long)]
    stop_instances: bool,
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
        stop_instances: args.stop_instances,
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
                    println!("  stop:    Ctrl-C (engines and replicas keep running; --stop-instances stops them too)");
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
                println!("  web UI:  {}/ (log in with the token)", connection.url);
                println!("  create:  shorthorn volume create vol1 --size 10G");
                println!("  attach:  shorthorn volume attach vol1   # prints nbd://…");
                println!("  list:    shorthorn volume ls");
                println!(
                    "  stop:    Ctrl-C (volumes keep serving; the next up takes them over; --stop-instances stops them too)"
                );
            },
            shutdown.cancelled(),
        )
        .await
    })
}

/// List the engines and replicas this node's agent recorded (they outlive `up`, see
/// docs/upgrades.md): name, engine or replica, pid, whether it still runs, and whether it
/// runs the binary installed now or one replaced since it started (restart it to
/// upgrade it). Reads DATA_DIR/instances; changes nothing.
#[derive(Debug, Args)]
pub struct InstancesArgs {
    /// The node's data directory (that of `up` or `agent`).
    #[arg(long, default_value = "shorthorn-data")]
    data_dir: PathBuf,
}

/// `shorthorn instances`.
pub fn instances(args: InstancesArgs) -> anyhow::Result<()> {
    let dir = args.data_dir.join(INSTANCES_DIR);
    if !dir.is_dir() {
        anyhow::bail!(
            "{} holds no instance records: no up or agent ran with this --data-dir",
            dir.display()
        );
    }
    let binary = std::env::current_exe().context("finding the shorthorn binary")?;
    crate::output::line(format_args!(
        "{:<32} {:<8} {:>8} {:<8} BINARY",
        "NAME", "WHAT", "PID", "STATE"
    ))?;
    for (path, record) in InstanceRecords::open(&dir)?.all()? {
        let record = match record {
            Ok(record) => record,
            Err(e) => {
                crate::output::note(format_args!("{}: {e:#}", path.display()));
                continue;
            }
        };
        let running = record.is_running();
        let state = if running { "running" } else { "gone" };
        let runs = match runs_binary(record.pid, &binary).filter(|_| running) {
            Some(true) => "installed".to_string(),
            Some(false) => "replaced since it started (restart it to upgrade)".to_string(),
            None => "-".to_string(),
        };
        crate::output::line(format_args!(
            "{:<32} {:<8} {:>8} {:<8} {runs}",
            record.name, record.what, record.pid, state
        ))?;
    }
    Ok(())
}
