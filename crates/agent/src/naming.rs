//! How engine and replica processes are named. The names reach the agent from other
//! nodes and become process keys and directory names, so the rules live beside the
//! checks that enforce them.

/// The engine's name for `volume`.
pub fn engine_name(volume: &str) -> String {
    format!("{volume}-e")
}

/// A new, unique replica name for `volume`: `<volume>-r-<8 hex digits>`.
pub fn new_replica_name(volume: &str) -> String {
    format!("{volume}-r-{:08x}", rand::random::<u32>())
}

/// The volume a replica name belongs to, if it is a replica name at all: `<volume>-r-`
/// and 8 lowercase hex digits, the volume following the name rule. Nothing looser
/// passes, since the name becomes a directory name.
pub fn replica_volume(name: &str) -> Option<&str> {
    let (volume, suffix) = name.rsplit_once("-r-")?;
    let hex = suffix.len() == 8
        && suffix
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    (hex && shorthorn_block::validate_name(volume).is_ok()).then_some(volume)
}
