//! `shorthorn backup …`: back up a running volume's snapshot, list, inspect, delete and
//! restore backups. The backup is read from one RW replica of the volume (found through
//! the engine), over the replica's control API.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use serde::Serialize;
use shorthorn_backup::{
    BackupOptions, BackupRecord, BackupUrl, Compression, LockOptions, Progress, ReplicaSource,
    RestoreOptions, Secret, Target, TargetOptions,
};

use crate::daemon;
use crate::offline_store::snapshot::parse_label;
use crate::output::{line, note};
use shorthorn_block::size::{format_size, parse_size};

/// Backups of volumes to S3 or a filesystem: create, ls, inspect, rm, restore.
///
/// Targets: s3://BUCKET@REGION/PATH (endpoint and credentials from AWS_ENDPOINT_URL
/// (or Longhorn's AWS_ENDPOINTS), AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, or the flags
/// below; plain http:// endpoints and path-style requests work for S3-compatible
/// servers), file:///PATH (a directory, or an NFS export you mounted), nfs://HOST:/PATH
/// (mounted here, if this host can mount NFS). A backup is named by its URL,
/// TARGET?backup=NAME&volume=VOLUME, as `backup create` and `backup ls` print it.
#[derive(Debug, Subcommand)]
pub enum BackupCommand {
    /// Back up a snapshot of the engine's volume (--engine). Incremental: only blocks
    /// changed since the volume's last backed-up ancestor snapshot are read, and blocks
    /// the target holds already are not uploaded. Prints the backup's URL.
    Create(CreateArgs),
    /// List volumes with backups, or the backups of VOLUME, oldest first.
    Ls(LsArgs),
    /// Show one backup's record (without its block map) as JSON.
    Inspect {
        /// The backup's URL.
        backup_url: String,
        #[command(flatten)]
        target: TargetArgs,
    },
    /// Delete a backup, then remove the blocks no other backup of the volume uses.
    /// Waits for running backups and restores of the volume (see --lock-wait).
    Rm {
        /// The backup's URL.
        backup_url: String,
        #[command(flatten)]
        target: TargetArgs,
        #[command(flatten)]
        lock: LockArgs,
    },
    /// Restore a backup into a replica directory that `shorthorn replica DIR` serves.
    /// A directory holding an earlier restore of the same volume is updated in place:
    /// only blocks that differ are fetched (a standby volume).
    Restore(RestoreArgs),
}

/// Flags for reaching an S3 target beyond the URL and environment.
#[derive(Debug, Args)]
pub struct TargetArgs {
    /// S3 endpoint, e.g. http://127.0.0.1:9000 [default: $AWS_ENDPOINT_URL, then
    /// $AWS_ENDPOINTS, then AWS].
    #[arg(long, value_name = "URL")]
    s3_endpoint: Option<String>,
    /// S3 access key [default: $AWS_ACCESS_KEY_ID].
    #[arg(long)]
    access_key_id: Option<String>,
    /// S3 secret key [default: $AWS_SECRET_ACCESS_KEY].
    #[arg(long)]
    secret_access_key: Option<String>,
}

impl TargetArgs {
    /// Opens `url` to read (and delete) what it holds; a missing directory is an error.
    fn open(&self, url: &str) -> anyhow::Result<Target> {
        Ok(Target::open(url, &self.options(false))?)
    }

    /// Opens `url` to write backups, creating a missing directory.
    fn open_for_backup(&self, url: &str) -> anyhow::Result<Target> {
        Ok(Target::open(url, &self.options(true))?)
    }

    fn options(&self, create_directory: bool) -> TargetOptions {
        TargetOptions {
            endpoint: self.s3_endpoint.clone(),
            access_key_id: self.access_key_id.clone(),
            secret_access_key: self.secret_access_key.clone().map(Secret::from),
            create_directory,
        }
    }
}

/// Lock timing flags.
#[derive(Debug, Args)]
pub struct LockArgs {
    /// Longest wait for a conflicting operation on the volume (a deletion waits for
    /// backups and restores, and they for it), e.g. 30s or 5m.
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
    lock_wait: Duration,
    /// How long a lock outlives a holder that stopped refreshing it (a killed process).
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    lock_ttl: Duration,
}

impl LockArgs {
    fn options(&self) -> anyhow::Result<LockOptions> {
        if self.lock_ttl < Duration::from_secs(3) {
            bail!("--lock-ttl must be at least 3s (stores keep times to the second)");
        }
        Ok(LockOptions {
            max_wait: self.lock_wait,
            ttl: self.lock_ttl,
        })
    }
}

/// Arguments of `backup create`.
#[derive(Debug, Args)]
pub struct CreateArgs {
    /// The snapshot to back up (take one with `snapshot create`).
    snapshot: String,
    /// Where to store it.
    #[arg(long, value_name = "URL")]
    target: String,
    /// A label, KEY=VALUE; repeat for more.
    #[arg(long = "label", value_parser = parse_label)]
    labels: Vec<(String, String)>,
    /// Read every block of the snapshot instead of only those changed since the last
    /// backup (blocks the target holds are still not uploaded again).
    #[arg(long)]
    full: bool,
    /// Compression of new blocks: lz4, zstd or none.
    #[arg(long, default_value = "lz4")]
    compression: Compression,
    /// Block size of the volume's first backup (later ones keep it), e.g. 2M.
    #[arg(long, value_parser = parse_size)]
    block_size: Option<u64>,
    /// Blocks read, compressed and uploaded at once.
    #[arg(long, default_value_t = 8)]
    parallel: usize,
    #[command(flatten)]
    target_args: TargetArgs,
    #[command(flatten)]
    lock: LockArgs,
    #[command(flatten)]
    progress: ProgressLines,
}

/// Arguments of `backup ls`.
#[derive(Debug, Args)]
pub struct LsArgs {
    /// The volume whose backups to list; without it, the volumes.
    volume: Option<String>,
    /// Where the backups are.
    #[arg(long, value_name = "URL")]
    target: String,
    /// Print JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    target_args: TargetArgs,
}

/// Arguments of `backup restore`.
#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// The backup's URL.
    backup_url: String,
    /// The replica directory to create or update.
    #[arg(long, value_name = "DIR")]
    to: PathBuf,
    /// Blocks fetched and written at once.
    #[arg(long, default_value_t = 8)]
    parallel: usize,
    /// Name of the restored volume [default: the backed-up volume's]; serve the
    /// directory with `replica --volume NAME`.
    #[arg(long, value_name = "NAME")]
    volume: Option<String>,
    /// DIR holds a complete earlier restore of this volume (its restore.json says which)
    /// and nothing has written it since: write only the blocks in which the two backups
    /// differ, without reading DIR's data (for a standby volume's replicas). If that
    /// backup is gone, DIR's data is compared as without this flag. Wrong — DIR ends up
    /// neither — if a replica served and changed DIR after that restore.
    #[arg(long)]
    since_last_restore: bool,
    #[command(flatten)]
    target_args: TargetArgs,
    #[command(flatten)]
    lock: LockArgs,
    #[command(flatten)]
    progress: ProgressLines,
}

/// Runs a `backup` command.
pub fn run(engine: &str, command: BackupCommand) -> anyhow::Result<()> {
    daemon::runtime()?.block_on(async {
        match command {
            BackupCommand::Create(args) => create(engine, args).await,
            BackupCommand::Ls(args) => ls(args).await,
            BackupCommand::Inspect { backup_url, target } => inspect(&backup_url, &target).await,
            BackupCommand::Rm {
                backup_url,
                target,
                lock,
            } => rm(&backup_url, &target, &lock).await,
            BackupCommand::Restore(args) => restore(args).await,
        }
    })
}

async fn create(engine: &str, args: CreateArgs) -> anyhow::Result<()> {
    let target = args.target_args.open_for_backup(&args.target)?;
    let mut labels = BTreeMap::new();
    for (key, value) in args.labels {
        if labels.insert(key.clone(), value).is_some() {
            bail!("label {key:?} is given twice");
        }
    }
    let options = BackupOptions {
        name: None,
        compression: args.compression,
        block_size: args.block_size,
        labels,
        full: args.full,
        parallel: args.parallel,
        lock: args.lock.options()?,
    };
    let (source, info) = ReplicaSource::open(engine, &args.snapshot).await?;
    let started = Instant::now();
    let progress = Arc::new(Progress::default());
    let work = shorthorn_backup::create_backup(
        &target,
        Arc::new(source),
        &info,
        &options,
        progress.clone(),
    );
    let record = with_progress("backup", &progress, args.progress, work).await?;
    let url = BackupUrl {
        target: args.target.clone(),
        volume: record.volume.clone(),
        backup: record.name.clone(),
    };
    note(format_args!(
        "backed up snapshot {} of {}: read {}, uploaded {} in {} new blocks, {} in {:.1}s",
        record.snapshot,
        record.volume,
        format_size(record.stats.read_bytes),
        format_size(record.stats.uploaded_bytes),
        record.stats.uploaded_blocks,
        record
            .base
            .as_deref()
            .map_or("full".to_string(), |b| format!("incremental on {b}")),
        started.elapsed().as_secs_f64()
    ));
    line(format_args!("{url}"))
}

/// Runs `work`, printing its progress to stderr every second; with progress lines, a
/// last one when it succeeds (the node agent reads the bytes transferred from it).
pub(crate) async fn with_progress<T, E: Into<anyhow::Error>>(
    what: &str,
    progress: &Progress,
    lines: ProgressLines,
    work: impl Future<Output = Result<T, E>>,
) -> anyhow::Result<T> {
    tokio::pin!(work);
    let lifeline = crate::daemon::shutdown_token(lines.exit_on_stdin_eof)?;
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    ticker.tick().await;
    loop {
        tokio::select! {
            result = &mut work => {
                if result.is_ok() && lines.progress_lines {
                    line(format_args!("{PROGRESS_PREFIX}{}", progress.summary()))?;
                }
                return result.map_err(Into::into);
            }
            () = lifeline.cancelled() => {
                anyhow::bail!("{what} stopped: interrupted, or the process that started it went away (run it again to resume)");
            }
            _ = ticker.tick() => {
                let summary = progress.summary();
                if lines.progress_lines {
                    line(format_args!("{PROGRESS_PREFIX}{summary}"))?;
                }
                note(format_args!("{what}: {summary}"));
            }
        }
    }
}

/// What starts each progress line on stdout (see [`ProgressLines`]); the node agent
/// looks for it.
pub(crate) const PROGRESS_PREFIX: &str = shorthorn_agent::protocol::PROGRESS_PREFIX;

/// Where a long copy's progress goes besides stderr.
#[derive(Debug, Clone, Copy, Args)]
pub struct ProgressLines {
    /// Also print progress on stdout, a `progress: …` line a second (the node agent
    /// reads them into the replica's status).
    #[arg(long)]
    progress_lines: bool,
    /// Stop when stdin closes: the node agent that started it holds stdin open, so the
    /// work never outlives the agent (a new one runs it again).
    #[arg(long)]
    exit_on_stdin_eof: bool,
}

/// A backup record as `ls --json` and `inspect` show it: everything but the block map.
#[derive(Debug, Serialize)]
struct Summary<'a> {
    url: String,
    #[serde(flatten)]
    record: RecordWithoutBlocks<'a>,
    blocks: usize,
}

#[derive(Debug, Serialize)]
struct RecordWithoutBlocks<'a> {
    name: &'a str,
    volume: &'a str,
    volume_size: u64,
    block_size: u64,
    snapshot: &'a str,
    snapshot_created: &'a str,
    created: &'a str,
    completed: &'a str,
    labels: &'a BTreeMap<String, String>,
    compression: Compression,
    base: Option<&'a str>,
    stats: &'a shorthorn_backup::format::BackupStats,
}

fn summary<'a>(target: &str, record: &'a BackupRecord) -> Summary<'a> {
    Summary {
        url: BackupUrl {
            target: target.to_string(),
            volume: record.volume.clone(),
            backup: record.name.clone(),
        }
        .to_string(),
        record: RecordWithoutBlocks {
            name: &record.name,
            volume: &record.volume,
            volume_size: record.volume_size,
            block_size: record.block_size,
            snapshot: &record.snapshot,
            snapshot_created: &record.snapshot_created,
            created: &record.created,
            completed: &record.completed,
            labels: &record.labels,
            compression: record.compression,
            base: record.base.as_deref(),
            stats: &record.stats,
        },
        blocks: record.blocks.len(),
    }
}

async fn ls(args: LsArgs) -> anyhow::Result<()> {
    let target = args.target_args.open(&args.target)?;
    let Some(volume) = args.volume else {
        let volumes = shorthorn_backup::list_volumes(&target).await?;
        if args.json {
            return line(format_args!("{}", serde_json::to_string_pretty(&volumes)?));
        }
        for volume in volumes {
            line(format_args!("{volume}"))?;
        }
        return Ok(());
    };
    shorthorn_block::validate_name(&volume).context("volume")?;
    let records = shorthorn_backup::list_backups(&target, &volume).await?;
    let summaries: Vec<Summary<'_>> = records.iter().map(|r| summary(&args.target, r)).collect();
    if args.json {
        return line(format_args!(
            "{}",
            serde_json::to_string_pretty(&summaries)?
        ));
    }
    line(format_args!(
        "{:<36} {:<24} {:<25} {:>9} {:>9}  URL",
        "BACKUP", "SNAPSHOT", "CREATED", "DATA", "UPLOADED"
    ))?;
    for s in &summaries {
        line(format_args!(
            "{:<36} {:<24} {:<25} {:>9} {:>9}  {}",
            s.record.name,
            s.record.snapshot,
            s.record.created,
            format_size(s.record.stats.logical_bytes),
            format_size(s.record.stats.uploaded_bytes),
            s.url
        ))?;
    }
    Ok(())
}

async fn inspect(backup_url: &str, target_args: &TargetArgs) -> anyhow::Result<()> {
    let url = BackupUrl::parse(backup_url)?;
    let target = target_args.open(&url.target)?;
    let record = shorthorn_backup::get_backup(&target, &url.volume, &url.backup).await?;
    let summary = summary(&url.target, &record);
    line(format_args!("{}", serde_json::to_string_pretty(&summary)?))
}

async fn rm(backup_url: &str, target_args: &TargetArgs, lock: &LockArgs) -> anyhow::Result<()> {
    let url = BackupUrl::parse(backup_url)?;
    let target = target_args.open(&url.target)?;
    let summary =
        shorthorn_backup::delete_backup(&target, &url.volume, &url.backup, lock.options()?).await?;
    line(format_args!(
        "removed {} freed_blocks={} freed_bytes={} remaining_backups={}",
        url.backup, summary.freed_blocks, summary.freed_bytes, summary.remaining_backups
    ))
}

async fn restore(args: RestoreArgs) -> anyhow::Result<()> {
    let url = BackupUrl::parse(&args.backup_url)?;
    let target = args.target_args.open(&url.target)?;
    let options = RestoreOptions {
        volume_name: args.volume,
        parallel: args.parallel,
        lock: args.lock.options()?,
        since_last_restore: args.since_last_restore,
    };
    let started = Instant::now();
    let progress = Arc::new(Progress::default());
    let work = shorthorn_backup::restore_backup(
        &target,
        &url.volume,
        &url.backup,
        &args.to,
        options,
        progress.clone(),
    );
    let summary = with_progress("restore", &progress, args.progress, work).await?;
    line(format_args!(
        "restored {} to {} incremental={} since={} fetched_blocks={} fetched_bytes={} \
         zeroed_blocks={} unchanged_blocks={} seconds={:.1}",
        url.backup,
        args.to.display(),
        summary.incremental,
        summary.since.as_deref().unwrap_or("-"),
        summary.fetched_blocks,
        summary.fetched_bytes,
        summary.zeroed_blocks,
        summary.unchanged_blocks,
        started.elapsed().as_secs_f64()
    ))
}
