//! The `shorthorn` binary: every Shorthorn daemon and client command, as subcommands.
//!
//! This file only parses the command line, sets up logging and reports errors; each
//! command group lives in its own module.

mod api_client;
mod backup_cmd;
mod client_cmd;
mod cluster_backup_cmd;
#[cfg(feature = "failpoints")]
mod crash;
mod daemon;
mod engine_cmd;
mod launch;
mod manager_cmd;
mod output;
mod replica_cmd;
mod store_cmd;
mod volume_cmd;

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
    /// Engine control address for `ls` and `info`.
    #[arg(
        long,
        global = true,
        env = "SHORTHORN_ENGINE",
        default_value = "127.0.0.1:9501"
    )]
    engine: String,
    #[command(subcommand)]
    command: Command,
}

/// The command groups; each one's help text is on its arguments struct.
#[derive(Debug, Subcommand)]
enum Command {
    Store(store_cmd::StoreArgs),
    Replica(replica_cmd::ReplicaArgs),
    Engine(engine_cmd::EngineArgs),
    LaunchSimple(launch::LaunchArgs),
    /// List the engine's replicas: address, mode (RW, WO, ERR) and snapshot chain.
    Ls,
    /// Show the engine's volume: size, state, frontend endpoint, replicas.
    Info,
    /// Snapshots of the engine's volume: create, ls, rm, purge, revert.
    #[command(subcommand)]
    Snapshot(volume_cmd::SnapshotCommand),
    /// Grow the engine's volume to SIZE (e.g. 20G) on every replica.
    Expand {
        /// The new size.
        size: String,
    },
    /// Start or stop the engine's frontend (NBD server).
    #[command(subcommand)]
    Frontend(volume_cmd::FrontendCommand),
    /// Bring back a volume whose replicas all failed: the engine reconnects to every
    /// replica it had and resumes from the most up-to-date ones (highest epoch in their
    /// consistency records; see docs/consistency.md). Restart the replica processes first.
    Salvage,
    /// Backups to S3 or a filesystem: create (of the engine's volume), ls, inspect, rm,
    /// restore.
    #[command(subcommand)]
    Backup(backup_cmd::BackupCommand),
    Up(manager_cmd::UpArgs),
    /// Start a node agent only (no manager): it joins the cluster in etcd (--etcd is
    /// required), reports this node and its disks, and starts, stops and watches the
    /// engines and replicas the cluster's managers ask for; it restarts nothing by
    /// itself. Same options as `up`.
    Agent(manager_cmd::UpArgs),
    /// Volumes of a cluster run by `shorthorn up`: create (also from a backup), ls, get,
    /// attach, detach, expand, rm, jobs, backup, backups, backup-rm.
    Volume {
        #[command(flatten)]
        api: api_client::ApiArgs,
        #[command(subcommand)]
        command: manager_cmd::VolumeCommand,
    },
    /// Nodes of a cluster run by `shorthorn up`.
    Node {
        #[command(flatten)]
        api: api_client::ApiArgs,
        #[command(subcommand)]
        command: manager_cmd::NodeCommand,
    },
    /// Recurring snapshot and backup jobs of a cluster run by `shorthorn up`.
    Job {
        #[command(flatten)]
        api: api_client::ApiArgs,
        #[command(subcommand)]
        command: manager_cmd::JobCommand,
    },
    /// Backup targets of a cluster run by `shorthorn up`: set, ls, rm. Back up with
    /// `volume backup`.
    BackupTarget {
        #[command(flatten)]
        api: api_client::ApiArgs,
        #[command(subcommand)]
        command: cluster_backup_cmd::BackupTargetCommand,
    },
    /// Settings of a cluster run by `shorthorn up`: get, set.
    Setting {
        #[command(flatten)]
        api: api_client::ApiArgs,
        #[command(subcommand)]
        command: manager_cmd::SettingCommand,
    },
}

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
    // Daemons report what they serve; one-shot commands only what went wrong.
    let daemon = matches!(
        cli.command,
        Command::Replica(_)
            | Command::Engine(_)
            | Command::LaunchSimple(_)
            | Command::Up(_)
            | Command::Agent(_)
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
        Command::Store(args) => store_cmd::run(args),
        Command::Replica(replica_cmd::ReplicaArgs {
            action: Some(action),
            ..
        }) => volume_cmd::replica(&cli.engine, action),
        Command::Replica(args) => replica_cmd::run(args),
        Command::Salvage => volume_cmd::salvage(&cli.engine),
        Command::Backup(command) => backup_cmd::run(&cli.engine, command),
        Command::Up(args) => manager_cmd::up(args, NodeRole::Full),
        Command::Agent(args) => manager_cmd::up(args, NodeRole::Agent),
        Command::Volume { api, command } => manager_cmd::volume(&api, command),
        Command::Node { api, command } => manager_cmd::node(&api, command),
        Command::Setting { api, command } => manager_cmd::setting(&api, command),
        Command::Job { api, command } => manager_cmd::job(&api, command),
        Command::BackupTarget { api, command } => cluster_backup_cmd::backup_target(&api, command),
        Command::Engine(args) => engine_cmd::run(args),
        Command::LaunchSimple(args) => launch::run(args),
        Command::Ls => client_cmd::ls(&cli.engine),
        Command::Info => client_cmd::info(&cli.engine),
        Command::Snapshot(command) => volume_cmd::snapshot(&cli.engine, command),
        Command::Expand { size } => volume_cmd::expand(&cli.engine, &size),
        Command::Frontend(command) => volume_cmd::frontend(&cli.engine, command),
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
