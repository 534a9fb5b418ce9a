//! The `shorthorn` binary: every Shorthorn daemon and client command, as subcommands.
//!
//! This file only parses the command line, sets up logging and reports errors. The
//! commands are grouped by what they talk to: [`daemons`] (the long-running processes),
//! [`direct`] (a running engine or a backup target, no manager), [`cluster`] (the
//! manager's REST API) and [`offline_store`] (a replica directory, nothing running).

mod cluster;
#[cfg(feature = "failpoints")]
mod crash;
mod daemon;
mod daemons;
mod direct;
mod offline_store;
mod output;

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use shorthorn_manager::up::NodeRole;
use tracing_subscriber::EnvFilter;

/// Shorthorn: distributed block storage.
///
/// Logging goes to stderr; set RUST_LOG (e.g. RUST_LOG=debug) to see more than warnings.
/// Every command exits with status 0 on success and 1 on any error, including bad
/// command-line input.
#[derive(Debug, Parser)]
#[command(name = "shorthorn", version)]
struct Cli {
    /// Engine control address for the commands that talk to one engine directly: `ls`,
    /// `info`, `snapshot`, `expand`, `frontend`, `salvage`, `replica add|rm`, `backup
    /// create`. Give it before the command (`shorthorn --engine ADDR ls`); the cluster
    /// commands (`volume`, `node`, …) never use it.
    #[arg(long, env = "SHORTHORN_ENGINE", default_value = "127.0.0.1:9501")]
    engine: String,
    #[command(subcommand)]
    command: Command,
}

/// The command groups; each one's help text is on its arguments struct.
#[derive(Debug, Subcommand)]
enum Command {
    Store(offline_store::StoreArgs),
    Replica(daemons::replica::ReplicaArgs),
    Engine(daemons::engine::EngineArgs),
    LaunchSimple(daemons::launch_simple::LaunchArgs),
    /// List the engine's replicas: address, mode (RW, WO, ERR) and snapshot chain.
    Ls,
    /// Show the engine's volume: size, state, frontend endpoint, replicas.
    Info,
    /// Snapshots of the engine's volume: create, ls, rm, purge, revert.
    #[command(subcommand)]
    Snapshot(direct::engine_ops::SnapshotCommand),
    /// Grow the engine's volume to SIZE (e.g. 20G) on every replica.
    Expand {
        /// The new size.
        size: String,
    },
    /// Start or stop the engine's frontend (NBD server).
    #[command(subcommand)]
    Frontend(direct::engine_ops::FrontendCommand),
    /// Bring back a volume whose replicas all failed: the engine reconnects to every
    /// replica it had and resumes from the most up-to-date ones (highest epoch in their
    /// consistency records; see docs/consistency.md). Restart the replica processes first.
    Salvage,
    /// Backups to S3 or a filesystem: create (of the engine's volume), ls, inspect, rm,
    /// restore.
    #[command(subcommand)]
    Backup(direct::backup::BackupCommand),
    Clone(direct::clone::CloneArgs),
    Up(daemons::up::UpArgs),
    /// Start a node agent only (no manager): it joins the cluster in etcd (--etcd is
    /// required), reports this node and its disks, and starts, stops and watches the
    /// engines and replicas the cluster's managers ask for; it restarts nothing by
    /// itself. Same options as `up`.
    Agent(daemons::up::UpArgs),
    Instances(daemons::up::InstancesArgs),
    Csi(daemons::csi::CsiArgs),
    /// Volumes of a cluster run by `shorthorn up`: create (also from a backup, a snapshot
    /// or another volume), ls, get,
    /// attach, detach, expand, update (replica count), replica-rm, salvage, rm, snapshot,
    /// jobs, backup, backups, backup-rm.
    Volume {
        #[command(flatten)]
        api: cluster::api_client::ApiArgs,
        #[command(subcommand)]
        command: cluster::volumes::VolumeCommand,
    },
    /// Nodes of a cluster run by `shorthorn up`.
    Node {
        #[command(flatten)]
        api: cluster::api_client::ApiArgs,
        #[command(subcommand)]
        command: cluster::nodes::NodeCommand,
    },
    /// Recurring jobs of a cluster run by `shorthorn up`: snapshot, backup,
    /// snapshot-cleanup, snapshot-delete.
    Job {
        #[command(flatten)]
        api: cluster::api_client::ApiArgs,
        #[command(subcommand)]
        command: cluster::jobs::JobCommand,
    },
    /// Backup targets of a cluster run by `shorthorn up`: set, ls, rm. Back up with
    /// `volume backup`.
    BackupTarget {
        #[command(flatten)]
        api: cluster::api_client::ApiArgs,
        #[command(subcommand)]
        command: cluster::backups::BackupTargetCommand,
    },
    /// Events of a cluster run by `shorthorn up`, oldest first: volumes created, attached,
    /// detached, degraded or healthy again; replicas placed, failed, rebuilt; snapshots;
    /// backups completed or failed. The newest 1000 are kept.
    Events {
        #[command(flatten)]
        api: cluster::api_client::ApiArgs,
        #[command(flatten)]
        args: cluster::events::EventsArgs,
    },
    /// Changes of a cluster run by `shorthorn up`, as they happen: every object first,
    /// then a line per object that changed or went away, until interrupted.
    Watch {
        #[command(flatten)]
        api: cluster::api_client::ApiArgs,
        #[command(flatten)]
        args: cluster::watch::WatchArgs,
    },
    /// Settings of a cluster run by `shorthorn up`: ls, get, set.
    Setting {
        #[command(flatten)]
        api: cluster::api_client::ApiArgs,
        #[command(subcommand)]
        command: cluster::settings::SettingCommand,
    },
}

/// Set (to anything) to have `shorthorn ARGS` only parse ARGS: exit 0 with "arguments
/// accepted" if they parse, else the usage error, without doing anything.
const CHECK_ARGS_ENV: &str = "SHORTHORN_CHECK_ARGS";

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // Help and version go to stdout with success; every usage error exits with 1.
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    // The deployment's check (scripts/check-deploy.sh): its command lines parse.
    if std::env::var_os(CHECK_ARGS_ENV).is_some() {
        println!("arguments accepted");
        return ExitCode::SUCCESS;
    }
    // Daemons report what they serve; one-shot commands only what went wrong.
    let daemon = matches!(
        cli.command,
        Command::Replica(_)
            | Command::Engine(_)
            | Command::LaunchSimple(_)
            | Command::Up(_)
            | Command::Agent(_)
            | Command::Csi(_)
    );
    init_logging(if daemon { "info" } else { "warn" });
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        // The reader of our output went away (`| head`): nothing more to say.
        Err(e) if e.is::<output::StdoutClosed>() => ExitCode::SUCCESS,
        Err(e) => {
            output::note(format_args!("error: {}", error_chain(&e)));
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    #[cfg(feature = "failpoints")]
    crash::install_from_env()?;
    match cli.command {
        Command::Store(args) => offline_store::run(args),
        Command::Replica(daemons::replica::ReplicaArgs {
            action: Some(action),
            ..
        }) => direct::engine_ops::replica(&cli.engine, action),
        Command::Replica(args) => daemons::replica::run(args),
        Command::Salvage => direct::engine_ops::salvage(&cli.engine),
        Command::Backup(command) => direct::backup::run(&cli.engine, command),
        Command::Clone(args) => direct::clone::run(args),
        Command::Up(args) => daemons::up::up(args, NodeRole::Full),
        Command::Agent(args) => daemons::up::up(args, NodeRole::Agent),
        Command::Instances(args) => daemons::up::instances(args),
        Command::Csi(args) => daemons::csi::run(args),
        Command::Volume { api, command } => cluster::volumes::volume(&api, command),
        Command::Node { api, command } => cluster::nodes::node(&api, command),
        Command::Setting { api, command } => cluster::settings::setting(&api, command),
        Command::Job { api, command } => cluster::jobs::job(&api, command),
        Command::Events { api, args } => cluster::events::events(&api, args),
        Command::Watch { api, args } => cluster::watch::watch(&api, args),
        Command::BackupTarget { api, command } => cluster::backups::backup_target(&api, command),
        Command::Engine(args) => daemons::engine::run(args),
        Command::LaunchSimple(args) => daemons::launch_simple::run(args),
        Command::Ls => direct::engine_info::ls(&cli.engine),
        Command::Info => direct::engine_info::info(&cli.engine),
        Command::Snapshot(command) => direct::engine_ops::snapshot(&cli.engine, command),
        Command::Expand { size } => direct::engine_ops::expand(&cli.engine, &size),
        Command::Frontend(command) => direct::engine_ops::frontend(&cli.engine, command),
    }
}

/// An error and its causes joined by ": ", skipping a cause whose text the previous one
/// already contains (some libraries repeat their source in their own message).
fn error_chain(error: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in error.chain() {
        let text = cause.to_string();
        if parts
            .last()
            .is_some_and(|previous| previous.contains(&text))
        {
            continue;
        }
        parts.push(text);
    }
    parts.join(": ")
}

/// Logs to stderr, filtered by `RUST_LOG` (default: `default_level`).
fn init_logging(default_level: &str) {
    let filter = match EnvFilter::try_from_default_env() {
        Ok(filter) => filter,
        Err(e) => {
            if std::env::var_os(EnvFilter::DEFAULT_ENV).is_some() {
                eprintln!("warning: ignoring RUST_LOG: {e}");
            }
            EnvFilter::new(default_level)
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}
