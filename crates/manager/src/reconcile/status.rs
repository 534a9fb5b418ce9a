//! A volume's status, derived from its engine and replicas.

use crate::model::{
    Engine, EngineState, Replica, ReplicaState, Robustness, Volume, VolumeState, VolumeStatus,
};

/// A volume's status from its placement `message`, its engine's and its replicas'.
pub(super) fn volume_status(
    volume: &Volume,
    engine: &Engine,
    replicas: &[Replica],
    message: String,
) -> VolumeStatus {
    let message = if message.is_empty() {
        engine.status.message.clone()
    } else {
        message
    };
    let mut status = VolumeStatus {
        message,
        endpoint: None,
        ..volume.status.clone()
    };
    if volume.spec.attached_node.is_some() {
        status.endpoint = engine.status.endpoint.clone();
        status.state = match engine.status.state {
            EngineState::Running => VolumeState::Attached,
            EngineState::Error if status.state == VolumeState::Attached => VolumeState::Attached,
            _ => VolumeState::Attaching,
        };
        status.robustness = match engine.status.health.as_str() {
            _ if engine.status.state != EngineState::Running => Robustness::Faulted,
            "healthy" if engine.status.replicas.len() >= volume.spec.replicas => {
                Robustness::Healthy
            }
            "healthy" | "degraded" => Robustness::Degraded,
            _ => Robustness::Faulted,
        };
        return status;
    }
    let running = replicas
        .iter()
        .filter(|r| r.status.state == ReplicaState::Running)
        .count();
    let maintenance = engine
        .spec
        .maintenance
        .then_some(engine.status.node.as_ref());
    if let Some(node) = maintenance.flatten()
        && status.message.is_empty()
    {
        status.message = format!(
            "moving replicas off an evicted node or disk: an engine without a frontend runs on {node} until they are rebuilt"
        );
    }
    status.state = if engine.status.node.is_some() && maintenance.is_none() {
        VolumeState::Detaching
    } else if running == 0 && replicas.is_empty() && !status.message.is_empty() {
        VolumeState::Failed
    } else if running == 0 && status.state == VolumeState::Creating {
        VolumeState::Creating
    } else {
        VolumeState::Detached
    };
    status.robustness = match running {
        0 => Robustness::Faulted,
        n if n >= volume.spec.replicas => Robustness::Healthy,
        _ => Robustness::Degraded,
    };
    status
}
