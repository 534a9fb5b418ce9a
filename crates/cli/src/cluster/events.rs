//! `shorthorn events`: what the managers did and saw, oldest first.

use clap::Args;
use shorthorn_manager::model::Event;

use super::api_client::{ApiArgs, Client, with_query};
use crate::daemon;
use crate::output::line;

/// Which events to show.
#[derive(Debug, Args)]
pub struct EventsArgs {
    /// Only those about this volume (its replicas, snapshots and backups included).
    #[arg(long)]
    volume: Option<String>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// `shorthorn events …`.
pub fn events(api: &ApiArgs, args: EventsArgs) -> anyhow::Result<()> {
    let client = Client::new(api)?;
    let path = match &args.volume {
        Some(volume) => with_query("/v1/events", "volume", volume)?,
        None => String::from("/v1/events"),
    };
    let events: Vec<Event> = daemon::runtime()?
        .block_on(async { client.call(reqwest::Method::GET, &path, None).await })?;
    if args.json {
        return line(format_args!("{}", serde_json::to_string_pretty(&events)?));
    }
    for event in events {
        line(format_args!(
            "{} {} {}/{} {}",
            event.time, event.reason, event.object_kind, event.object, event.message
        ))?;
    }
    Ok(())
}
