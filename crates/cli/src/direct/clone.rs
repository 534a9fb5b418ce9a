//! `shorthorn clone`: a snapshot of a running replica copied into a new replica
//! directory, what the manager runs on each first replica of a cloned volume.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use clap::Args;
use shorthorn_backup::{Progress, clone_snapshot};
use shorthorn_block::size::parse_size;

use super::backup::{ProgressLines, with_progress};
use crate::daemon;
use crate::output::line;

/// Copy snapshot SNAPSHOT of a running replica into a new replica directory that
/// `shorthorn replica DIR` serves (`volume create --from-snapshot` runs this on each new
/// replica's node). Only the data the snapshot holds is read; the source volume keeps
/// serving meanwhile. A directory left by an interrupted clone is written over.
#[derive(Debug, Args)]
pub struct CloneArgs {
    /// The source replica, tcp://HOST:PORT (its control API is the next port).
    #[arg(long, value_name = "REPLICA")]
    from: String,
    /// The volume the source replica serves (checked, so a reused port is not read).
    #[arg(long, value_name = "VOLUME")]
    from_volume: String,
    /// The snapshot to copy.
    #[arg(long)]
    snapshot: String,
    /// The new replica directory.
    #[arg(long, value_name = "DIR")]
    to: PathBuf,
    /// The new volume's name.
    #[arg(long, value_name = "NAME")]
    volume: String,
    /// The new volume's size, at least the snapshot's [default: the snapshot's].
    #[arg(long, value_parser = parse_size)]
    size: Option<u64>,
    #[command(flatten)]
    progress: ProgressLines,
}

/// Runs `shorthorn clone`.
pub fn run(args: CloneArgs) -> anyhow::Result<()> {
    shorthorn_block::validate_name(&args.volume)?;
    daemon::runtime()?.block_on(async {
        let started = Instant::now();
        let progress = Arc::new(Progress::default());
        let work = clone_snapshot(
            &args.from,
            &args.from_volume,
            &args.snapshot,
            &args.to,
            &args.volume,
            args.size,
            progress.clone(),
        );
        let summary = with_progress("clone", &progress, args.progress, work).await?;
        line(format_args!(
            "cloned snapshot {} of {} to {} size={} copied_bytes={} seconds={:.1}",
            args.snapshot,
            args.from_volume,
            args.to.display(),
            summary.size,
            summary.copied_bytes,
            started.elapsed().as_secs_f64()
        ))
    })
}
