//! Time in the objects' status: RFC 3339 timestamps and intervals since them.

use chrono::Utc;

/// Whether `interval` seconds passed since `since` (RFC 3339).
pub(crate) fn waited(since: &str, interval: u64) -> bool {
    chrono::DateTime::parse_from_rfc3339(since)
        .map(|at| {
            let interval = i64::try_from(interval).unwrap_or(i64::MAX);
            (Utc::now() - at.with_timezone(&Utc)).num_seconds() >= interval
        })
        .unwrap_or(true)
}
