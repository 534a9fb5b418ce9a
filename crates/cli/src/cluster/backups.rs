//! Backups run by the manager: `backup-target set|ls|rm`, `volume backup`, `volume
//! backups`, `volume backup-rm`. (`shorthorn backup …` works on a target directly,
//! without a manager.)

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Subcommand;
use reqwest::Method;
use shorthorn_backup::Secret;
use shorthorn_manager::api::{CreateBackup, SetBackupTarget};
use shorthorn_manager::model::{Backup, BackupState, BackupTarget};

use super::api_client::{ApiArgs, Client};
use crate::daemon;
use crate::output::{json_name, line};
use shorthorn_block::size::format_size;

/// How long `--wait` waits for a backup or its deletion.
const WAIT_TIMEOUT: Duration = Duration::from_secs(6 * 3600);
/// How often `--wait` asks.
const POLL: Duration = Duration::from_millis(500);

/// Backup targets: where `volume backup` and backup jobs put backups.
#[derive(Debug, Subcommand)]
pub enum BackupTargetCommand {
    /// Create or change a backup target. An S3 target may have its own endpoint and
    /// credentials (each target its own); what it lacks comes from the managers'
    /// environment (AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY), as
    /// for `shorthorn backup`. The secret is kept apart and never shown again.
    Set {
        /// Its name; `default` is used when a backup names none.
        name: String,
        /// `s3://bucket@region/path`, `file:///path` or `nfs://host:/path`.
        url: String,
        /// Seconds between two reads of its backup list (backups made elsewhere appear,
        /// deleted ones disappear).
        #[arg(long, default_value_t = 300)]
        poll_interval: u64,
        /// The S3 endpoint, e.g. http://10.0.0.5:9000.
        #[arg(long)]
        endpoint: Option<String>,
        /// The S3 access key id (with --secret-access-key-file). Without both, the
        /// target keeps the credentials it has.
        #[arg(long, requires = "secret_access_key_file")]
        access_key_id: Option<String>,
        /// A file holding the S3 secret access key (`-`: standard input); never on the
        /// command line, where every user of the host could read it.
        #[arg(long, requires = "access_key_id")]
        secret_access_key_file: Option<PathBuf>,
        /// Forget the target's own credentials (the managers' environment is used
        /// again).
        #[arg(long, conflicts_with = "access_key_id")]
        forget_credentials: bool,
    },
    /// List backup targets: URL, whether the last read worked, backups held.
    Ls {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Forget a backup target (its backups stay in it).
    Rm {
        /// The target.
        name: String,
    },
}

/// `shorthorn backup-target …`.
pub fn backup_target(api: &ApiArgs, command: BackupTargetCommand) -> anyhow::Result<()> {
    let client = Client::new(api)?;
    daemon::runtime()?.block_on(async {
        match command {
            BackupTargetCommand::Set {
                name,
                url,
                poll_interval,
                endpoint,
                access_key_id,
                secret_access_key_file,
                forget_credentials,
            } => {
                let secret_access_key = secret_access_key_file
                    .as_deref()
                    .map(read_secret)
                    .transpose()?;
                let body = serde_json::to_value(SetBackupTarget {
                    url,
                    poll_interval: Some(poll_interval),
                    endpoint,
                    access_key_id,
                    secret_access_key,
                    forget_credentials,
                })?;
                let target: BackupTarget = client
                    .call(
                        Method::PUT,
                        &format!("/v1/backup-targets/{name}"),
                        Some(body),
                    )
                    .await?;
                line(format_args!(
                    "backup target {}: {}",
                    target.name, target.spec.url
                ))
            }
            BackupTargetCommand::Ls { json } => {
                let targets: Vec<BackupTarget> =
                    client.call(Method::GET, "/v1/backup-targets", None).await?;
                if json {
                    return line(format_args!("{}", serde_json::to_string_pretty(&targets)?));
                }
                for t in targets {
                    let state = match (&t.status.last_synced, t.status.available) {
                        (None, _) => "not read yet".to_string(),
                        (Some(_), true) => format!("available, {} backups", t.status.backups),
                        (Some(_), false) => format!("unavailable: {}", t.status.message),
                    };
                    let endpoint = t
                        .spec
                        .endpoint
                        .as_ref()
                        .map(|e| format!(" at {e}"))
                        .unwrap_or_default();
                    let credentials = if t.spec.has_credentials {
                        ", own credentials"
                    } else {
                        ""
                    };
                    line(format_args!(
                        "{} {}{endpoint} ({state}{credentials})",
                        t.name, t.spec.url
                    ))?;
                }
                Ok(())
            }
            BackupTargetCommand::Rm { name } => {
                let _: serde_json::Value = client
                    .call(Method::DELETE, &format!("/v1/backup-targets/{name}"), None)
                    .await?;
                line(format_args!("removed backup target {name}"))
            }
        }
    })
}

/// The secret in `path` (`-`: standard input), without the line end a file has.
fn read_secret(path: &Path) -> anyhow::Result<Secret> {
    let text = if path == Path::new("-") {
        std::io::read_to_string(std::io::stdin()).context("reading the secret from stdin")?
    } else {
        std::fs::read_to_string(path)
            .with_context(|| format!("reading the secret from {}", path.display()))?
    };
    let secret = text.trim_end_matches(['\r', '\n']);
    if secret.is_empty() {
        bail!("{}: the secret is empty", path.display());
    }
    Ok(Secret::from(secret))
}

/// `--label KEY=VALUE` arguments as a map.
pub fn parse_labels(labels: &[String]) -> anyhow::Result<BTreeMap<String, String>> {
    labels
        .iter()
        .map(|l| {
            l.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .with_context(|| format!("--label {l:?}: write KEY=VALUE"))
        })
        .collect()
}

/// `volume backup`.
pub async fn create(
    client: &Client,
    volume: String,
    snapshot: Option<String>,
    target: String,
    labels: &[String],
    wait: bool,
) -> anyhow::Result<()> {
    let labels = parse_labels(labels)?;
    let body = serde_json::to_value(CreateBackup {
        volume,
        snapshot,
        target: Some(target),
        labels,
    })?;
    let backup: Backup = client.call(Method::POST, "/v1/backups", Some(body)).await?;
    if !wait {
        return line(format_args!("{}", backup.name));
    }
    let started = Instant::now();
    let mut last_progress = String::new();
    loop {
        let backup: Backup = client
            .call(Method::GET, &format!("/v1/backups/{}", backup.name), None)
            .await?;
        match backup.status.state {
            BackupState::Completed => {
                eprintln!(
                    "backup {} of {} complete: {} uploaded",
                    backup.name,
                    backup.spec.volume,
                    format_size(backup.status.uploaded_bytes)
                );
                return line(format_args!(
                    "{}",
                    backup.status.url.as_deref().unwrap_or_default()
                ));
            }
            BackupState::Error => {
                bail!("backup {} failed: {}", backup.name, backup.status.message)
            }
            BackupState::Pending | BackupState::InProgress => {}
        }
        if backup.status.progress != last_progress && !backup.status.progress.is_empty() {
            eprintln!("backup {}: {}", backup.name, backup.status.progress);
            last_progress = backup.status.progress.clone();
        }
        if started.elapsed() > WAIT_TIMEOUT {
            bail!(
                "backup {} is not complete after {WAIT_TIMEOUT:?}",
                backup.name
            );
        }
        tokio::time::sleep(POLL).await;
    }
}

/// `volume backups`.
pub async fn list(client: &Client, volume: Option<&str>, json: bool) -> anyhow::Result<()> {
    let path = match volume {
        Some(volume) => format!("/v1/backups?volume={volume}"),
        None => "/v1/backups".to_string(),
    };
    let mut backups: Vec<Backup> = client.call(Method::GET, &path, None).await?;
    backups.sort_by(|a, b| {
        (&a.spec.volume, &a.status.completed).cmp(&(&b.spec.volume, &b.status.completed))
    });
    if json {
        return line(format_args!("{}", serde_json::to_string_pretty(&backups)?));
    }
    line(format_args!(
        "{:<44} {:<16} {:<10} {:<10} {:>10}  COMPLETED",
        "NAME", "VOLUME", "STATE", "TARGET", "UPLOADED"
    ))?;
    for b in backups {
        let state = if b.spec.delete_requested {
            "deleting".to_string()
        } else {
            json_name(&b.status.state)
        };
        line(format_args!(
            "{:<44} {:<16} {:<10} {:<10} {:>10}  {}",
            b.name,
            b.spec.volume,
            state,
            b.spec.target,
            format_size(b.status.uploaded_bytes),
            b.status.completed.as_deref().unwrap_or("-")
        ))?;
    }
    Ok(())
}

/// `volume backup-rm`.
pub async fn remove(client: &Client, backup: &str, wait: bool) -> anyhow::Result<()> {
    let _: Backup = client
        .call(Method::DELETE, &format!("/v1/backups/{backup}"), None)
        .await?;
    if !wait {
        return line(format_args!("deleting backup {backup}"));
    }
    let started = Instant::now();
    loop {
        let backups: Vec<Backup> = client.call(Method::GET, "/v1/backups", None).await?;
        let Some(pending) = backups.iter().find(|b| b.name == backup) else {
            return line(format_args!("deleted backup {backup}"));
        };
        if started.elapsed() > WAIT_TIMEOUT {
            bail!(
                "backup {backup} is not deleted after {WAIT_TIMEOUT:?}: {}",
                pending.status.message
            );
        }
        tokio::time::sleep(POLL).await;
    }
}
