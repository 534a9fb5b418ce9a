//! Which volume capabilities the driver serves: block or a mount (ext4, xfs), on one
//! node at a time (Shorthorn attaches a volume to one node).

use tonic::Status;

use crate::params::FILESYSTEMS;
use crate::pb::VolumeCapability;
use crate::pb::volume_capability::AccessType;
use crate::pb::volume_capability::access_mode::Mode;

/// Why `capability` is not served, if it is not.
pub fn unsupported(capability: &VolumeCapability) -> Option<String> {
    let mode = capability
        .access_mode
        .as_ref()
        .map_or(Mode::Unknown, |m| m.mode());
    match mode {
        Mode::SingleNodeWriter
        | Mode::SingleNodeReaderOnly
        | Mode::SingleNodeSingleWriter
        | Mode::SingleNodeMultiWriter => {}
        Mode::Unknown => return Some("no access mode".into()),
        other => {
            return Some(format!(
                "access mode {}: a volume is attached to one node at a time",
                other.as_str_name()
            ));
        }
    }
    match &capability.access_type {
        Some(AccessType::Block(_)) => None,
        Some(AccessType::Mount(mount)) => {
            let fs = mount.fs_type.as_str();
            (!fs.is_empty() && !FILESYSTEMS.contains(&fs)).then(|| {
                format!(
                    "fsType {fs:?}: the driver makes {}",
                    FILESYSTEMS.join(" or ")
                )
            })
        }
        None => Some("no access type (block or mount)".into()),
    }
}

/// Checks a request's capabilities: at least one, each served (INVALID_ARGUMENT).
pub fn check_all(capabilities: &[VolumeCapability]) -> Result<(), Status> {
    if capabilities.is_empty() {
        return Err(Status::invalid_argument("volume_capabilities are required"));
    }
    for capability in capabilities {
        if let Some(why) = unsupported(capability) {
            return Err(Status::invalid_argument(why));
        }
    }
    Ok(())
}

/// A request's one capability: required (INVALID_ARGUMENT without it) and served.
pub fn required(capability: Option<&VolumeCapability>) -> Result<&VolumeCapability, Status> {
    let capability =
        capability.ok_or_else(|| Status::invalid_argument("volume_capability is required"))?;
    match unsupported(capability) {
        Some(why) => Err(Status::invalid_argument(why)),
        None => Ok(capability),
    }
}

/// Whether a capability is a mount (else block).
pub fn is_mount(capability: &VolumeCapability) -> bool {
    matches!(capability.access_type, Some(AccessType::Mount(_)))
}
