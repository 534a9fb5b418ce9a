//! `shorthorn volume snapshot …`: snapshots of a cluster's volume, attached or
//! detached, through the manager's API.

use clap::Subcommand;
use reqwest::Method;
use shorthorn_block::size::format_size;
use shorthorn_manager::api::{CreateSnapshot, Snapshot};

use super::api_client::Client;
use crate::output::line;

/// Snapshots of a volume (attached: through its engine; detached: on every replica).
#[derive(Debug, Subcommand)]
pub enum SnapshotCommand {
    /// Take a snapshot; prints its name.
    Create {
        /// The volume.
        volume: String,
        /// Its name [default: `snap-` and the UTC time].
        name: Option<String>,
        /// A label KEY=VALUE kept with it; repeat for more.
        #[arg(long = "label")]
        labels: Vec<String>,
    },
    /// List the snapshots, oldest first: name, parent, created, size on disk, whether a
    /// user or the system took it, labels.
    Ls {
        /// The volume.
        volume: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Remove a snapshot (its data merges into what follows it).
    Rm {
        /// The volume.
        volume: String,
        /// The snapshot.
        name: String,
    },
    /// Bring a detached volume back to a snapshot: everything written after it is gone.
    /// Refused while the volume is attached (its clients would see their data change).
    Revert {
        /// The volume.
        volume: String,
        /// The snapshot.
        name: String,
    },
    /// Merge away system snapshots and removed ones, freeing their space.
    Purge {
        /// The volume.
        volume: String,
    },
}

/// `volume snapshot …`.
pub async fn run(client: &Client, command: SnapshotCommand) -> anyhow::Result<()> {
    match command {
        SnapshotCommand::Create {
            volume,
            name,
            labels,
        } => {
            let body = serde_json::to_value(CreateSnapshot {
                name,
                labels: super::backups::parse_labels(&labels)?,
            })?;
            let snapshot: Snapshot = client
                .call(
                    Method::POST,
                    &format!("/v1/volumes/{volume}/snapshots"),
                    Some(body),
                )
                .await?;
            line(format_args!("{}", snapshot.name))
        }
        SnapshotCommand::Ls { volume, json } => {
            let snapshots: Vec<Snapshot> = client
                .call(
                    Method::GET,
                    &format!("/v1/volumes/{volume}/snapshots"),
                    None,
                )
                .await?;
            if json {
                return line(format_args!(
                    "{}",
                    serde_json::to_string_pretty(&snapshots)?
                ));
            }
            line(format_args!(
                "{:<32} {:<32} {:<26} {:>10} {:<6} LABELS",
                "NAME", "PARENT", "CREATED", "SIZE", "BY"
            ))?;
            for s in &snapshots {
                let by = if s.user_created { "user" } else { "system" };
                let removed = if s.removed { " (removed)" } else { "" };
                let labels: Vec<String> =
                    s.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
                line(format_args!(
                    "{:<32} {:<32} {:<26} {:>10} {:<6} {}{removed}",
                    s.name,
                    if s.parent.is_empty() { "-" } else { &s.parent },
                    s.created,
                    format_size(s.size),
                    by,
                    labels.join(",")
                ))?;
            }
            Ok(())
        }
        SnapshotCommand::Rm { volume, name } => {
            let _: serde_json::Value = client
                .call(
                    Method::DELETE,
                    &format!("/v1/volumes/{volume}/snapshots/{name}"),
                    None,
                )
                .await?;
            line(format_args!("removed {name}"))
        }
        SnapshotCommand::Revert { volume, name } => {
            let _: serde_json::Value = client
                .call(
                    Method::POST,
                    &format!("/v1/volumes/{volume}/snapshots/{name}/revert"),
                    None,
                )
                .await?;
            line(format_args!("reverted {volume} to {name}"))
        }
        SnapshotCommand::Purge { volume } => {
            let _: serde_json::Value = client
                .call(
                    Method::POST,
                    &format!("/v1/volumes/{volume}/snapshot-purge"),
                    None,
                )
                .await?;
            line(format_args!("purged the snapshots of {volume}"))
        }
    }
}
