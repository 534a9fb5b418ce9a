//! `/v1/volumes/{name}/io`: a volume's I/O rates as they happen, one sample a second, as
//! Server-Sent Events — what the web UI charts on a volume's page.
//!
//! Rates are not objects of the store (they change every second; writing them there
//! would make every watcher's stream busy), so they have a stream of their own that
//! asks the volume's engine only while someone listens. A sample is the engine's last
//! completed one-second window (`volume info` shows the same figures).

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use futures::{Stream, StreamExt};
use serde::{Deserialize, Serialize};
use shorthorn_proto::v1 as pb;

use super::{ApiError, AppState, ErrorBody};
use crate::engine_client::{ENGINE_TIMEOUT, EngineClient, connect_engine};
use crate::model::{Engine, EngineState, Volume};
use crate::state::{Kind, StateStoreExt};

/// How often a sample is sent.
const SAMPLE_INTERVAL: Duration = Duration::from_secs(1);

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub(super) struct IoFilter {
    /// End the stream after this many seconds (1 to 86400); without it the stream lasts
    /// until the client leaves.
    timeout_seconds: Option<u64>,
}

/// One direction's figures over the last completed second.
#[derive(Debug, Clone, Default, PartialEq, Serialize, utoipa::ToSchema)]
pub struct IoRates {
    /// Operations per second.
    pub iops: f64,
    /// Bytes per second.
    pub bytes_per_second: f64,
    /// Mean latency, seconds.
    pub latency_avg_seconds: f64,
    /// 99th percentile latency, seconds.
    pub latency_p99_seconds: f64,
    /// Failed operations since the engine started.
    pub errors_total: u64,
}

/// A sample of the stream (`sample` events); `idle` events carry `{"message"}` instead
/// while the volume has no running engine.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct IoSample {
    /// When it was taken (RFC 3339).
    pub time: String,
    /// Reads.
    pub read: IoRates,
    /// Writes.
    pub write: IoRates,
}

impl From<Option<pb::IoFigures>> for IoRates {
    fn from(figures: Option<pb::IoFigures>) -> IoRates {
        let figures = figures.unwrap_or_default();
        IoRates {
            iops: figures.iops_last_second,
            bytes_per_second: figures.bytes_per_second_last_second,
            latency_avg_seconds: figures.latency_avg_seconds_last_second,
            latency_p99_seconds: figures.latency_p99_seconds_last_second,
            errors_total: figures.errors_total,
        }
    }
}

#[utoipa::path(get, path = "/v1/volumes/{name}/io", params(("name" = String, Path), IoFilter),
    responses(
    (status = 200, description = "text/event-stream: a `sample` (an IoSample) every second while \
        the volume's engine runs, else `idle` with a message", body = IoSample,
        content_type = "text/event-stream"),
    (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
    (status = 404, body = ErrorBody)))]
pub(super) async fn volume_io(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(filter): Query<IoFilter>,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, ApiError> {
    let timeout = super::watch::stream_timeout(filter.timeout_seconds)?;
    if state
        .manager
        .state()
        .get::<Volume>(Kind::Volume, &name)?
        .is_none()
    {
        return Err(ApiError::not_found("volume", &name));
    }
    let sampler = Sampler {
        state,
        volume: name,
        client: None,
        first: true,
    };
    let stream = futures::stream::unfold(sampler, |mut sampler| async move {
        let event = sampler.next().await?;
        Some((Ok(event), sampler))
    });
    Ok(
        Sse::new(stream.take_until(super::watch::ends_after(timeout)))
            .keep_alive(KeepAlive::default()),
    )
}

/// One listener's sampling of a volume's engine.
struct Sampler {
    state: AppState,
    volume: String,
    /// The engine connection and the address it goes to.
    client: Option<(String, EngineClient)>,
    first: bool,
}

impl Sampler {
    /// The next event, a second after the last; `None` (the stream ends) once the volume
    /// is deleted.
    async fn next(&mut self) -> Option<SseEvent> {
        if !std::mem::take(&mut self.first) {
            tokio::time::sleep(SAMPLE_INTERVAL).await;
        }
        let store = self.state.manager.state();
        match store.get::<Volume>(Kind::Volume, &self.volume) {
            Ok(Some(_)) => {}
            Ok(None) => return None,
            Err(e) => return Some(idle(&format!("reading the volume: {e:#}"))),
        }
        let engine = match store.get::<Engine>(Kind::Engine, &Engine::name_for(&self.volume)) {
            Ok(engine) => engine,
            Err(e) => return Some(idle(&format!("reading the engine: {e:#}"))),
        };
        let address = engine
            .filter(|engine| engine.status.state == EngineState::Running)
            .and_then(|engine| engine.status.address);
        let Some(address) = address else {
            self.client = None;
            return Some(idle("the volume is not attached: no engine runs"));
        };
        match self.sample(&address).await {
            Ok(sample) => SseEvent::default()
                .event("sample")
                .json_data(&sample)
                .map_err(|e| tracing::warn!(error = %e, "io stream: encoding a sample"))
                .ok(),
            Err(e) => {
                self.client = None;
                Some(idle(&format!(
                    "engine of volume {} at {address}: {e:#}",
                    self.volume
                )))
            }
        }
    }

    async fn sample(&mut self, address: &str) -> anyhow::Result<IoSample> {
        let mut client = match self.client.take() {
            Some((at, client)) if at == address => client,
            _ => connect_engine(address).await?,
        };
        let info = tokio::time::timeout(ENGINE_TIMEOUT, client.info(pb::EngineInfoRequest {}))
            .await
            .map_err(|_| anyhow::anyhow!("engine info timed out"))??
            .into_inner();
        self.client = Some((address.to_string(), client));
        Ok(IoSample {
            time: chrono::Utc::now().to_rfc3339(),
            read: info.read.into(),
            write: info.write.into(),
        })
    }
}

fn idle(message: &str) -> SseEvent {
    SseEvent::default()
        .event("idle")
        .data(serde_json::json!({ "message": message }).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_are_the_engines_last_second() {
        let figures = pb::IoFigures {
            iops_last_second: 120.0,
            bytes_per_second_last_second: 491_520.0,
            latency_avg_seconds_last_second: 0.000_5,
            latency_p99_seconds_last_second: 0.002,
            latency_avg_seconds_since_start: 9.0,
            latency_p99_seconds_since_start: 9.0,
            ops_total: 5000,
            bytes_total: 1 << 30,
            errors_total: 2,
        };
        assert_eq!(
            IoRates::from(Some(figures)),
            IoRates {
                iops: 120.0,
                bytes_per_second: 491_520.0,
                latency_avg_seconds: 0.000_5,
                latency_p99_seconds: 0.002,
                errors_total: 2,
            }
        );
        assert_eq!(IoRates::from(None), IoRates::default());
    }
}
