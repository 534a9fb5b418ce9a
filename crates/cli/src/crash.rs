//! Crash points for tests (built only with the `failpoints` feature).
//!
//! When `SHORTHORN_CRASH_AT` names one of the fault-injection points, the process
//! prints `crash point reached: NAME` to stderr when it gets there and then hangs, so a
//! test can `kill -9` it at exactly that point and check what a crash leaves on disk.

use anyhow::{Context, bail};

/// The environment variable naming the fail point to stop at.
pub const CRASH_AT_VAR: &str = "SHORTHORN_CRASH_AT";

/// Every fail point the store and the backupstore define, from their own lists: a name
/// not among them is refused, so a typo in a test fails at once instead of never
/// reaching its crash point.
fn known_fail_points() -> impl Iterator<Item = &'static str> {
    shorthorn_store::fail_points::ALL
        .into_iter()
        .chain(shorthorn_backup::fail_points::ALL)
}

/// Installs the crash point named by `SHORTHORN_CRASH_AT`, if the variable is set.
pub fn install_from_env() -> anyhow::Result<()> {
    let Some(value) = std::env::var_os(CRASH_AT_VAR) else {
        return Ok(());
    };
    let Some(name) = value.to_str().map(str::to_owned) else {
        bail!("{CRASH_AT_VAR} is not valid UTF-8");
    };
    if !known_fail_points().any(|known| known == name) {
        let known: Vec<&str> = known_fail_points().collect();
        bail!(
            "{CRASH_AT_VAR}={name:?} names no known fail point; known points: {}",
            known.join(", ")
        );
    }
    let marker = name.clone();
    fail::cfg_callback(name.clone(), move || {
        eprintln!("crash point reached: {marker}");
        loop {
            std::thread::sleep(std::time::Duration::from_secs(3600));
        }
    })
    .map_err(anyhow::Error::msg)
    .with_context(|| format!("installing crash point {name}"))?;
    tracing::warn!(point = %name, "crash point armed: the process will hang when it gets there");
    Ok(())
}
