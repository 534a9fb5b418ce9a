//! `/v1/watch`: object changes as they happen, as Server-Sent Events.
//!
//! A watch starts with every object it covers (`put` each), then `synced`; after that one
//! `put` per object whose document changed and one `delete` per object removed, nothing
//! else. A node's heartbeat alone is not a change (its `ready` is). A watcher that falls
//! more than the store's backlog behind gets `reset` and the full list again, then
//! `synced`. Every message's data is JSON: `{"kind","name","object"}` (`object` absent on
//! `delete`).

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use futures::{Stream, StreamExt};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast::Receiver;
use tokio::sync::broadcast::error::RecvError;

use super::{ApiError, AppState, ErrorBody};
use crate::state::{Change, Kind, StateStore};

/// A comment line this often keeps proxies from closing an idle stream; it is not a
/// message (clients see no event).
const KEEP_ALIVE: Duration = Duration::from_secs(25);

/// Which objects to watch.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub(super) struct WatchFilter {
    /// Kinds to watch, comma-separated: `settings`, `node`, `volume`, `replica`,
    /// `engine`, `job`, `backup-target`, `backup`, `event`. All of them if absent.
    kinds: Option<String>,
    /// End the stream after this many seconds (1 to 86400), as Kubernetes' watch
    /// `timeoutSeconds` does; without it the stream lasts until the client leaves.
    timeout_seconds: Option<u64>,
}

/// The longest `timeout_seconds` of a stream.
const MAX_TIMEOUT_SECONDS: u64 = 86_400;

/// A stream's `timeout_seconds` (1 to [`MAX_TIMEOUT_SECONDS`]; none: no end).
pub(super) fn stream_timeout(seconds: Option<u64>) -> Result<Option<Duration>, ApiError> {
    match seconds {
        None => Ok(None),
        Some(seconds @ 1..=MAX_TIMEOUT_SECONDS) => Ok(Some(Duration::from_secs(seconds))),
        Some(seconds) => Err(ApiError::bad_request(format!(
            "timeout_seconds: {seconds} is not between 1 and {MAX_TIMEOUT_SECONDS}"
        ))),
    }
}

/// Resolves when a stream of this timeout is to end (never without one).
pub(super) async fn ends_after(timeout: Option<Duration>) {
    match timeout {
        Some(timeout) => tokio::time::sleep(timeout).await,
        None => std::future::pending().await,
    }
}

/// One message of the watch stream (the SSE event name says which: `put`, `delete`).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct WatchMessage {
    /// The object's kind (see the `kinds` parameter).
    pub kind: String,
    /// The object's name.
    pub name: String,
    /// The object as `GET` of its kind shows it; absent on `delete`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub object: Option<serde_json::Value>,
}

#[utoipa::path(get, path = "/v1/watch", params(WatchFilter), responses(
    (status = 200, description = "text/event-stream: `put`, `delete`, `synced`, `reset` events; \
        `put` and `delete` carry a WatchMessage", body = WatchMessage, content_type = "text/event-stream"),
    (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub(super) async fn watch(
    State(state): State<AppState>,
    Query(filter): Query<WatchFilter>,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, ApiError> {
    let kinds = match filter.kinds.as_deref() {
        None | Some("") => Kind::ALL.to_vec(),
        Some(list) => list
            .split(',')
            .map(|name| {
                Kind::from_name(name.trim()).ok_or_else(|| {
                    ApiError::bad_request(format!(
                        "kinds: unknown kind {name:?}; the kinds are {}",
                        Kind::ALL.map(Kind::name).join(", ")
                    ))
                })
            })
            .collect::<Result<_, _>>()?,
    };
    let timeout = stream_timeout(filter.timeout_seconds)?;
    let store = state.manager.state().clone();
    // Subscribed before the first list, so nothing falls between the two.
    let changes = store.subscribe();
    let mut watch = Watch {
        store,
        kinds,
        changes,
        sent: HashMap::new(),
        pending: VecDeque::new(),
    };
    watch.list_all(false)?;
    let stream = futures::stream::unfold(watch, |mut watch| async move {
        let event = watch.next().await?;
        Some((Ok(event), watch))
    });
    let stream = stream.take_until(ends_after(timeout));
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(KEEP_ALIVE)))
}

/// One client's watch: what it was sent last of each object, and what is still to send.
struct Watch {
    store: Arc<dyn StateStore>,
    kinds: Vec<Kind>,
    changes: Receiver<Arc<Change>>,
    /// The comparable form of each object as last sent.
    sent: HashMap<(Kind, String), Vec<u8>>,
    pending: VecDeque<SseEvent>,
}

impl Watch {
    /// Queues every watched object, then `synced` (after `reset` when `reset`).
    fn list_all(&mut self, reset: bool) -> anyhow::Result<()> {
        self.sent.clear();
        if reset {
            self.pending
                .push_back(SseEvent::default().event("reset").data("{}"));
        }
        for kind in self.kinds.clone() {
            for (name, value) in self.store.list_raw(kind)? {
                self.offer(kind, &name, Some(&value));
            }
        }
        self.pending
            .push_back(SseEvent::default().event("synced").data("{}"));
        Ok(())
    }

    /// The next message; `None` ends the stream (the store went away or failed).
    async fn next(&mut self) -> Option<SseEvent> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Some(event);
            }
            match self.changes.recv().await {
                Ok(change) => {
                    if self.kinds.contains(&change.kind) {
                        self.offer(change.kind, &change.name, change.value.as_deref());
                    }
                }
                Err(RecvError::Lagged(missed)) => {
                    tracing::info!(missed, "a watch fell behind; sending the full list again");
                    if let Err(e) = self.list_all(true) {
                        tracing::warn!(error = %format!("{e:#}"), "watch: listing the objects");
                        return None;
                    }
                }
                Err(RecvError::Closed) => return None,
            }
        }
    }

    /// Queues a message for this change of an object, unless the client has it already.
    fn offer(&mut self, kind: Kind, name: &str, value: Option<&[u8]>) {
        let key = (kind, name.to_string());
        let Some(value) = value else {
            if self.sent.remove(&key).is_some() {
                self.push("delete", kind, name, None);
            }
            return;
        };
        let Ok(object) = serde_json::from_slice::<serde_json::Value>(value) else {
            tracing::warn!(
                kind = kind.name(),
                name,
                "watch: a stored object is not JSON"
            );
            return;
        };
        let comparable = comparable(kind, &object);
        if self.sent.get(&key) == Some(&comparable) {
            return;
        }
        self.sent.insert(key, comparable);
        self.push("put", kind, name, Some(object));
    }

    fn push(&mut self, event: &str, kind: Kind, name: &str, object: Option<serde_json::Value>) {
        let message = WatchMessage {
            kind: kind.name().to_string(),
            name: name.to_string(),
            object,
        };
        match SseEvent::default().event(event).json_data(&message) {
            Ok(event) => self.pending.push_back(event),
            Err(e) => tracing::warn!(error = %e, "watch: encoding a message"),
        }
    }
}

/// What must differ between two versions of an object for the second to be sent: all of
/// it, but a node's heartbeat time (which moves every few seconds on an idle node).
fn comparable(kind: Kind, object: &serde_json::Value) -> Vec<u8> {
    let mut object = object.clone();
    if kind == Kind::Node
        && let Some(status) = object.get_mut("status").and_then(|s| s.as_object_mut())
    {
        status.remove("heartbeat");
    }
    serde_json::to_vec(&object).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_heartbeat_alone_does_not_make_a_node_differ() {
        let before = serde_json::json!({"name": "n1", "status": {"ready": true, "heartbeat": "a"}});
        let beat = serde_json::json!({"name": "n1", "status": {"ready": true, "heartbeat": "b"}});
        let down = serde_json::json!({"name": "n1", "status": {"ready": false, "heartbeat": "b"}});
        assert_eq!(
            comparable(Kind::Node, &before),
            comparable(Kind::Node, &beat)
        );
        assert_ne!(
            comparable(Kind::Node, &before),
            comparable(Kind::Node, &down)
        );
        assert_ne!(
            comparable(Kind::Volume, &before),
            comparable(Kind::Volume, &beat)
        );
    }
}
