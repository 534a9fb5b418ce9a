//! `shorthorn --engine ADDR ls | info`: ask a running engine about its volume.

use anyhow::Context;
use shorthorn_proto::v1::engine_control_client::EngineControlClient;
use shorthorn_proto::v1::{
    EngineInfoRequest, ListReplicasRequest, RebuildProgress, ReplicaMode, ReplicaStatus,
};
use tonic::transport::Channel;

use crate::daemon;
use crate::output::line;
use shorthorn_block::size::{format_size, format_size_exact};

/// Connects to the engine control API at `engine` (host:port or a URI).
pub(crate) async fn connect(engine: &str) -> anyhow::Result<EngineControlClient<Channel>> {
    let uri = if engine.contains("://") {
        engine.to_owned()
    } else {
        format!("http://{engine}")
    };
    EngineControlClient::connect(uri).await.with_context(|| {
        format!("cannot reach the engine at {engine}; is `shorthorn engine` running there?")
    })
}

fn mode_name(status: &ReplicaStatus) -> &'static str {
    match status.mode() {
        ReplicaMode::Rw => "RW",
        ReplicaMode::Wo => "WO",
        ReplicaMode::Err => "ERR",
        ReplicaMode::Unspecified => "?",
    }
}

/// The chain the way Longhorn's `ls` prints it: newest first, head first.
fn chain_text(status: &ReplicaStatus) -> String {
    if status.chain.is_empty() && status.mode() == ReplicaMode::Err {
        return "-".into();
    }
    let mut chain = vec!["volume-head".to_owned()];
    chain.extend(status.chain.iter().rev().cloned());
    chain.join(" ")
}

/// Prints each replica's address, mode and chain.
pub fn ls(engine: &str) -> anyhow::Result<()> {
    let replicas = daemon::runtime()?.block_on(async {
        let mut client = connect(engine).await?;
        let response = client
            .list_replicas(ListReplicasRequest {})
            .await
            .context("listing replicas")?;
        anyhow::Ok(response.into_inner().replicas)
    })?;
    let width = replicas
        .iter()
        .map(|r| r.address.len())
        .max()
        .unwrap_or(0)
        .max("ADDRESS".len());
    line(format_args!("{:<width$}  {:<4}  CHAIN", "ADDRESS", "MODE"))?;
    for replica in &replicas {
        line(format_args!(
            "{:<width$}  {:<4}  {}",
            replica.address,
            mode_name(replica),
            chain_text(replica)
        ))?;
        if !replica.error.is_empty() {
            line(format_args!("{:<width$}  error: {}", "", replica.error))?;
        }
        if let Some(progress) = &replica.rebuild {
            line(format_args!(
                "{:<width$}  rebuild: {}",
                "",
                rebuild_text(progress)
            ))?;
        }
    }
    Ok(())
}

/// A rebuild's progress: phase, percent, bytes examined and copied.
pub(crate) fn rebuild_text(progress: &RebuildProgress) -> String {
    let percent = if progress.total_bytes == 0 {
        0.0
    } else {
        progress.done_bytes as f64 * 100.0 / progress.total_bytes as f64
    };
    format!(
        "{} {percent:.0}% ({} of {} checked, {} copied)",
        progress.phase,
        format_size(progress.done_bytes),
        format_size(progress.total_bytes),
        format_size(progress.copied_bytes)
    )
}

/// Prints the volume's size, state, frontend and replicas.
pub fn info(engine: &str) -> anyhow::Result<()> {
    let info = daemon::runtime()?.block_on(async {
        let mut client = connect(engine).await?;
        let response = client
            .info(EngineInfoRequest {})
            .await
            .context("asking the engine for info")?;
        anyhow::Ok(response.into_inner())
    })?;
    line(format_args!("volume:    {}", info.volume))?;
    line(format_args!("size:      {}", format_size_exact(info.size)))?;
    line(format_args!("state:     {}", info.state))?;
    let frontend = if info.frontend.is_empty() {
        "none"
    } else {
        info.frontend.as_str()
    };
    line(format_args!("frontend:  {frontend}"))?;
    if let Some(purge) = &info.purge {
        let detail = match purge.state.as_str() {
            "running" => format!(
                " ({}/{} replicas done)",
                purge.replicas_done, purge.replicas_total
            ),
            "done" if !purge.purged.is_empty() => format!(" (purged {})", purge.purged.join(", ")),
            "failed" => format!(" ({})", purge.error),
            _ => String::new(),
        };
        line(format_args!("purge:     {}{detail}", purge.state))?;
    }
    for (name, figures) in [("read", &info.read), ("write", &info.write)] {
        let Some(f) = figures else { continue };
        line(format_args!(
            "{name:<6}     {:.0} IOPS, {:.1} MiB/s, latency avg {:.3} ms, p99 {:.3} ms (last second)",
            f.iops_last_second,
            f.bytes_per_second_last_second / (1024.0 * 1024.0),
            f.latency_avg_seconds_last_second * 1e3,
            f.latency_p99_seconds_last_second * 1e3,
        ))?;
        line(format_args!(
            "           {} ops, {}, latency avg {:.3} ms, p99 {:.3} ms, {} errors (since start)",
            f.ops_total,
            format_size(f.bytes_total),
            f.latency_avg_seconds_since_start * 1e3,
            f.latency_p99_seconds_since_start * 1e3,
            f.errors_total,
        ))?;
    }
    if !info.metrics_endpoint.is_empty() {
        line(format_args!("metrics:   {}", info.metrics_endpoint))?;
    }
    line(format_args!("replicas:  {}", info.replicas.len()))?;
    for replica in &info.replicas {
        let error = if replica.error.is_empty() {
            String::new()
        } else {
            format!(" ({})", replica.error)
        };
        let latency = if replica.write_latency_us == 0 {
            String::new()
        } else {
            format!(
                ", writes {:.3} ms (recent average)",
                replica.write_latency_us as f64 / 1e3
            )
        };
        line(format_args!(
            "  {} {}{latency}{error}",
            replica.address,
            mode_name(replica)
        ))?;
        if let Some(progress) = &replica.rebuild {
            line(format_args!("    rebuild: {}", rebuild_text(progress)))?;
        }
    }
    Ok(())
}
