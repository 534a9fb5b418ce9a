//! Events: what the reconcilers and the API changed, as objects (time, object kind and
//! name, volume, reason, message) in the state store, so every manager of a cluster sees
//! them. Names sort by time; [`prune`] keeps the newest [`MAX_EVENTS`].

use std::sync::atomic::{AtomicU64, Ordering};

use chrono::Utc;

use crate::model::Event;
use crate::state::{Kind, StateStore, StateStoreExt};

/// Events kept; older ones are deleted by [`prune`].
pub const MAX_EVENTS: usize = 1000;

/// Tells apart events one manager records in the same nanosecond; counts them.
static SEQUENCE: AtomicU64 = AtomicU64::new(0);

/// [`SEQUENCE`] when this process last pruned.
static PRUNED_AT: AtomicU64 = AtomicU64::new(0);

/// Events this process records between two prunes: listing every event on each pass
/// would cost more than the events.
const PRUNE_EVERY: u64 = 50;

/// What changed: the object it happened to and why, in words.
pub struct Happened<'a> {
    /// `volume`, `replica`, `engine`, `backup`, `snapshot`, …
    pub object_kind: &'a str,
    /// The object's name (for a snapshot: `VOLUME/NAME`).
    pub object: &'a str,
    /// The volume it concerns, if any (for `events --volume`).
    pub volume: Option<&'a str>,
    /// A short CamelCase reason, such as `Attached` or `ReplicaFailed`.
    pub reason: &'a str,
    /// What happened, for a person.
    pub message: String,
}

/// Records `what` as an event by manager `node`. A failure to record is logged, never
/// passed on: an event is a report, not part of the change it reports.
pub fn record(state: &dyn StateStore, node: &str, what: Happened<'_>) {
    let now = Utc::now();
    let nanos = now.timestamp_nanos_opt().unwrap_or_default();
    let sequence = SEQUENCE.fetch_add(1, Ordering::Relaxed);
    let event = Event {
        name: format!("{nanos:020}-{node}-{sequence}"),
        time: now.to_rfc3339(),
        object_kind: what.object_kind.to_owned(),
        object: what.object.to_owned(),
        volume: what.volume.map(str::to_owned),
        reason: what.reason.to_owned(),
        message: what.message,
        reporter: node.to_owned(),
    };
    tracing::info!(
        kind = %event.object_kind,
        object = %event.object,
        reason = %event.reason,
        message = %event.message,
        "event"
    );
    if let Err(e) = state.put(Kind::Event, &event.name, &event) {
        tracing::warn!(error = %format!("{e:#}"), reason = %event.reason, "recording an event");
    }
}

/// Every event, oldest first; only those of `volume` when given.
pub fn list(state: &dyn StateStore, volume: Option<&str>) -> anyhow::Result<Vec<Event>> {
    let mut events: Vec<Event> = state.list(Kind::Event)?;
    events.sort_by(|a, b| a.name.cmp(&b.name));
    if let Some(volume) = volume {
        events.retain(|e| e.volume.as_deref() == Some(volume));
    }
    Ok(events)
}

/// [`prune`], once this process has recorded [`PRUNE_EVERY`] events since it last did.
/// Each manager prunes after its own events, so the store holds at most
/// `MAX_EVENTS + PRUNE_EVERY` per manager between prunes.
pub fn prune_if_due(state: &dyn StateStore) -> anyhow::Result<usize> {
    let recorded = SEQUENCE.load(Ordering::Relaxed);
    let last = PRUNED_AT.load(Ordering::Relaxed);
    if recorded.saturating_sub(last) < PRUNE_EVERY {
        return Ok(0);
    }
    PRUNED_AT.store(recorded, Ordering::Relaxed);
    prune(state)
}

/// Deletes the oldest events beyond [`MAX_EVENTS`]; returns how many.
pub fn prune(state: &dyn StateStore) -> anyhow::Result<usize> {
    let mut names: Vec<String> = state
        .list_raw(Kind::Event)?
        .into_iter()
        .map(|(name, _)| name)
        .collect();
    if names.len() <= MAX_EVENTS {
        return Ok(0);
    }
    names.sort();
    let excess = names.len() - MAX_EVENTS;
    for name in &names[..excess] {
        state.delete(Kind::Event, name)?;
    }
    Ok(excess)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::EmbeddedStore;

    fn happened<'a>(volume: &'a str, reason: &'a str) -> Happened<'a> {
        Happened {
            object_kind: "volume",
            object: "x",
            volume: Some(volume),
            reason,
            message: format!("{reason} happened"),
        }
    }

    #[test]
    fn events_list_in_order_filter_by_volume_and_are_pruned_to_the_newest() {
        let dir = tempfile::tempdir().unwrap();
        let state = EmbeddedStore::open(&dir.path().join("state.redb")).unwrap();
        for i in 0..MAX_EVENTS + 5 {
            let volume = if i % 2 == 0 { "a" } else { "b" };
            record(
                &state,
                "n1",
                happened(volume, if i == 3 { "Third" } else { "Other" }),
            );
        }
        let all = list(&state, None).unwrap();
        assert_eq!(all.len(), MAX_EVENTS + 5);
        assert_eq!(all[3].reason, "Third");
        assert!(all.windows(2).all(|w| w[0].time <= w[1].time));
        assert!(
            list(&state, Some("a"))
                .unwrap()
                .iter()
                .all(|e| e.volume.as_deref() == Some("a"))
        );
        assert_eq!(prune(&state).unwrap(), 5);
        let kept = list(&state, None).unwrap();
        assert_eq!(kept.len(), MAX_EVENTS);
        assert_eq!(kept[0].name, all[5].name, "the oldest go first");
        assert_eq!(prune(&state).unwrap(), 0);
    }
}
