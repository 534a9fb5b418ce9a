//! Volume and snapshot names follow the rules in `shorthorn_block::validate_name`; this
//! wraps them in the store's error type.

use crate::error::StoreError;

pub use shorthorn_block::MAX_NAME_LEN;

/// Checks a volume or snapshot name (see `shorthorn_block::validate_name`).
pub fn validate_name(name: &str) -> Result<(), StoreError> {
    shorthorn_block::validate_name(name).map_err(|e| StoreError::InvalidName {
        name: e.name,
        reason: e.reason,
    })
}
