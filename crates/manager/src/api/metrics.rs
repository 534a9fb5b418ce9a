//! `/metrics`: Prometheus text of volumes and disks.

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};

use super::{ApiError, AppState};
use crate::model::{Node, Volume};
use crate::state::{Kind, StateStoreExt};

/// Prometheus text: volumes by state and robustness, disk space per node.
pub(super) async fn metrics(State(state): State<AppState>) -> Result<Response, ApiError> {
    use std::fmt::Write as _;
    let store = state.manager.state();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# HELP shorthorn_volume_robustness 1 for the volume's robustness."
    );
    let _ = writeln!(out, "# TYPE shorthorn_volume_robustness gauge");
    for volume in store.list::<Volume>(Kind::Volume)? {
        let robustness = serde_json::to_value(volume.status.robustness)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "shorthorn_volume_robustness{{volume=\"{}\",robustness=\"{robustness}\"}} 1",
            volume.name
        );
        let _ = writeln!(
            out,
            "shorthorn_volume_size_bytes{{volume=\"{}\"}} {}",
            volume.name, volume.spec.size
        );
    }
    let _ = writeln!(out, "# TYPE shorthorn_disk_capacity_bytes gauge");
    for node in store.list::<Node>(Kind::Node)? {
        for disk in &node.status.disks {
            for (metric, value) in [
                ("capacity", disk.capacity),
                ("available", disk.available),
                ("scheduled", disk.scheduled),
            ] {
                let _ = writeln!(
                    out,
                    "shorthorn_disk_{metric}_bytes{{node=\"{}\",disk=\"{}\"}} {value}",
                    node.name, disk.name
                );
            }
        }
    }
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response())
}
