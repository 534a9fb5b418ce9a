//! `shorthorn launch-simple`: N local replicas and an engine, in one command.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;
use shorthorn_store::validate_name;

use shorthorn_agent::process::Daemon;

use crate::daemon;
use shorthorn_block::size::parse_size;

/// Start a replicated volume on this host: N replicas and an engine with an NBD
/// frontend, as separate processes. Prints the NBD URI; Ctrl-C stops the engine (after a
/// flush), then the replicas.
///
/// Replica i (1-based) keeps its data in DATA_DIR/VOLUME/replica-i and listens on
/// 127.0.0.1, port BASE+2(i-1) for data and the port after it for control. Running it
/// again with the same DATA_DIR reopens the same volume.
#[derive(Debug, Args)]
pub struct LaunchArgs {
    /// Volume name (also the NBD export name).
    volume: String,
    /// Volume size, e.g. 10G, 512M.
    #[arg(value_parser = parse_size)]
    size: u64,
    /// Number of replicas.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..=16))]
    replicas: u16,
    /// Where the replicas keep their data.
    #[arg(long, default_value = "shorthorn-data")]
    data_dir: PathBuf,
    /// NBD frontend address.
    #[arg(long, default_value = "127.0.0.1:10809")]
    nbd: SocketAddr,
    /// Engine control address.
    #[arg(long, default_value = "127.0.0.1:9501")]
    engine_listen: SocketAddr,
    /// First replica's data port.
    #[arg(long, default_value_t = 9502)]
    replica_base_port: u16,
    /// Serve the engine's Prometheus metrics on this address (e.g. 127.0.0.1:9500).
    #[arg(long)]
    metrics: Option<SocketAddr>,
}

fn localhost(port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, port))
}

fn replica_dir(data_dir: &Path, volume: &str, index: u16) -> PathBuf {
    data_dir.join(volume).join(format!("replica-{index}"))
}

/// Starts everything, waits for Ctrl-C (or a daemon dying), stops everything.
pub fn run(args: LaunchArgs) -> anyhow::Result<()> {
    validate_name(&args.volume)?;
    let runtime = daemon::runtime()?;
    runtime.block_on(async {
        let shutdown = daemon::shutdown_token(false)?;
        let mut replicas = Vec::new();
        let mut replica_addrs = Vec::new();
        let size = args.size.to_string();
        for index in 1..=args.replicas {
            let port = args
                .replica_base_port
                .checked_add(2 * (index - 1))
                .filter(|p| *p < u16::MAX)
                .context("--replica-base-port leaves no room for the replicas' ports")?;
            let dir = replica_dir(&args.data_dir, &args.volume, index);
            let listen = localhost(port);
            let mut replica = Daemon::spawn(
                format!("replica {index}"),
                &[
                    "replica".into(),
                    dir.display().to_string(),
                    "--size".into(),
                    size.clone(),
                    "--volume".into(),
                    args.volume.clone(),
                    "--listen".into(),
                    listen.to_string(),
                ],
            )?;
            replica.wait_ready("replica").await?;
            replicas.push(replica);
            replica_addrs.push(format!("tcp://{listen}"));
        }
        let mut engine_args = vec![
            "engine".into(),
            args.volume.clone(),
            "--size".into(),
            size.clone(),
            "--listen".into(),
            args.engine_listen.to_string(),
            "--frontend".into(),
            "nbd".into(),
            "--frontend-listen".into(),
            args.nbd.to_string(),
        ];
        for addr in &replica_addrs {
            engine_args.extend(["--replica".into(), addr.clone()]);
        }
        if let Some(metrics) = args.metrics {
            engine_args.extend(["--metrics-listen".into(), metrics.to_string()]);
        }
        let mut engine = Daemon::spawn("engine".into(), &engine_args)?;
        engine.wait_ready("engine").await?;
        let uri = format!("nbd://{}/{}", args.nbd, args.volume);
        println!(
            "volume {} ({} bytes, {} replicas) ready at {uri}",
            args.volume, args.size, args.replicas
        );
        println!("  inspect:  shorthorn --engine {} ls", args.engine_listen);
        println!("  try:      nbdinfo {uri}");
        println!("  stop:     Ctrl-C");
        tokio::select! {
            () = shutdown.cancelled() => {}
            status = engine.child.wait() => eprintln!("engine exited unexpectedly: {status:?}"),
        }
        engine.stop().await;
        for replica in replicas {
            replica.stop().await;
        }
        println!("volume {} stopped", args.volume);
        Ok(())
    })
}
