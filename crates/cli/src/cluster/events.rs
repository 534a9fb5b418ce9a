//! `shorthorn events`: what the managers did and saw, oldest first.

use clap::Args;
use shorthorn_manager::model::Event;

use super::api_client::{ApiArgs, Client};
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
    let mut path = String::from("/v1/events");
    if let Some(volume) = &args.volume {
        // The name goes in the query string, encoded.
        let mut query = reqwest::Url::parse("http://query/")?;
        query.query_pairs_mut().append_pair("volume", volume);
        path.push('?');
        path.push_str(query.query().unwrap_or_default());
    }
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
