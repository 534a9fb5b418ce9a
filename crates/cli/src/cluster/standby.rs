//! `volume sync` and `volume activate`: standby (disaster recovery) volumes, and how
//! `volume get` shows one.

use std::time::{Duration, Instant};

use anyhow::bail;
use reqwest::Method;
use shorthorn_manager::api::{ActivateVolume, VolumeDetail};
use shorthorn_manager::model::{StandbyStatus, Volume};

use super::api_client::Client;
use crate::output::{line, note};
use shorthorn_block::size::format_size;

/// How often the commands that wait look at the volume.
const POLL: Duration = Duration::from_millis(250);

/// The volume `name`.
async fn volume(client: &Client, name: &str) -> anyhow::Result<Volume> {
    let detail: VolumeDetail = client
        .call(Method::GET, &format!("/v1/volumes/{name}"), None)
        .await?;
    Ok(detail.volume)
}

/// `volume sync NAME [--wait]`: a read of the target now; with `wait`, until the
/// newest backup that read found is restored.
pub async fn sync(
    client: &Client,
    name: &str,
    wait: bool,
    timeout: Duration,
) -> anyhow::Result<()> {
    let asked: Volume = client
        .call(Method::POST, &format!("/v1/volumes/{name}/sync"), None)
        .await?;
    let wanted = asked
        .spec
        .standby
        .map(|s| s.sync_requests)
        .unwrap_or_default();
    if !wait {
        return line(format_args!("{name}: reading its backup target"));
    }
    let started = Instant::now();
    let mut said = String::new();
    loop {
        let volume = volume(client, name).await?;
        if volume.spec.standby.is_none() {
            bail!("volume {name} is no longer a standby volume");
        }
        // Before its first pass it has no status yet.
        let status = volume.status.standby.clone().unwrap_or_default();
        if status.syncs >= wanted
            && status.restoring.is_none()
            && status.newest == status.last_restored
        {
            return line(format_args!(
                "{name}: holds backup {} ({} bytes fetched by its last restore)",
                status.last_restored.as_deref().unwrap_or("-"),
                status.last_restore_bytes
            ));
        }
        report_progress(name, &volume, &status, started, &mut said);
        if started.elapsed() > timeout {
            bail!(
                "volume {name} did not catch up within {timeout:?}: {}",
                describe(&status)
            );
        }
        tokio::time::sleep(POLL).await;
    }
}

/// `volume activate NAME`: asks for the activation and waits until it is done.
pub async fn activate(
    client: &Client,
    name: &str,
    at_last_restored: bool,
    timeout: Duration,
) -> anyhow::Result<()> {
    let body = serde_json::to_value(ActivateVolume { at_last_restored })?;
    let _: Volume = client
        .call(
            Method::POST,
            &format!("/v1/volumes/{name}/activate"),
            Some(body),
        )
        .await?;
    let started = Instant::now();
    let mut said = String::new();
    let mut last = StandbyStatus::default();
    loop {
        let volume = volume(client, name).await?;
        if volume.spec.standby.is_none() {
            return line(format_args!(
                "activated {name} in {:.1}s with backup {}; attach it: shorthorn volume attach {name}",
                started.elapsed().as_secs_f64(),
                last.last_restored.as_deref().unwrap_or("-")
            ));
        }
        // Before its first pass it has no status yet.
        let status = volume.status.standby.clone().unwrap_or_default();
        report_progress(name, &volume, &status, started, &mut said);
        if started.elapsed() > timeout {
            bail!(
                "volume {name} is not activated after {timeout:?} (the activation stays asked for): {}",
                describe(&status)
            );
        }
        last = status;
        tokio::time::sleep(POLL).await;
    }
}

/// Says on stderr what the standby waits for, when that changed.
fn report_progress(
    name: &str,
    volume: &Volume,
    status: &StandbyStatus,
    started: Instant,
    said: &mut String,
) {
    let mut now = describe(status);
    if !volume.status.message.is_empty() {
        now.push_str(&format!("; {}", volume.status.message));
    }
    if now != *said {
        note(format_args!("{name} ({:.0?}): {now}", started.elapsed()));
        said.clone_from(&now);
    }
}

/// One line on where a standby is.
fn describe(status: &StandbyStatus) -> String {
    match (&status.restoring, &status.progress) {
        (Some(backup), Some(progress)) => format!("restoring backup {backup}: {progress}"),
        (Some(backup), None) => format!("restoring backup {backup}"),
        (None, _) => format!(
            "holds backup {}, newest {} ({} behind)",
            status.last_restored.as_deref().unwrap_or("none yet"),
            status.newest.as_deref().unwrap_or("not read yet"),
            status.lag_backups
        ),
    }
}

/// The standby lines of `volume get`.
pub fn print(volume: &Volume) -> anyhow::Result<()> {
    let Some(spec) = &volume.spec.standby else {
        return Ok(());
    };
    let status = volume.status.standby.clone().unwrap_or_default();
    line(format_args!("standby:     follows {}", spec.source))?;
    line(format_args!(
        "  restored:  {} (completed {}; restored here {}; {} fetched)",
        status.last_restored.as_deref().unwrap_or("none yet"),
        status.last_restored_completed.as_deref().unwrap_or("-"),
        status.restored_at.as_deref().unwrap_or("-"),
        format_size(status.last_restore_bytes)
    ))?;
    line(format_args!(
        "  newest:    {} (completed {}; read {})",
        status.newest.as_deref().unwrap_or("-"),
        status.newest_completed.as_deref().unwrap_or("-"),
        status.last_read.as_deref().unwrap_or("never")
    ))?;
    line(format_args!(
        "  lag:       {} backups, {} s",
        status.lag_backups, status.lag_seconds
    ))?;
    if let Some(backup) = &status.restoring {
        line(format_args!(
            "  restoring: {backup} {}",
            status.progress.as_deref().unwrap_or("")
        ))?;
    }
    if let Some(activation) = &spec.activation {
        line(format_args!(
            "  activate:  asked ({})",
            if activation.at_last_restored {
                "with the backup restored last"
            } else {
                "once the newest backup is restored"
            }
        ))?;
    }
    Ok(())
}
