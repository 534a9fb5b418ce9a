//! A volume's condition as CSI reports it: abnormal while degraded or faulted.

use shorthorn_manager::model::{Robustness, Volume};

use crate::pb::VolumeCondition;

/// The condition of `volume` from its robustness.
pub fn of(volume: &Volume) -> VolumeCondition {
    let (abnormal, message) = match volume.status.robustness {
        Robustness::Healthy => (false, "healthy".to_string()),
        Robustness::Unknown => (false, "being created".to_string()),
        Robustness::Degraded => (
            true,
            format!(
                "degraded: fewer healthy replicas than {} wanted",
                volume.spec.replicas
            ),
        ),
        Robustness::Faulted => (true, "faulted: no replica is in sync".to_string()),
    };
    let message = if volume.status.message.is_empty() {
        message
    } else {
        format!("{message} ({})", volume.status.message)
    };
    VolumeCondition { abnormal, message }
}
