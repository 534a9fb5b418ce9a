//! Crash tests driven by fail points (built with `--features failpoints`): a process
//! stopped at a chosen step of a store or backup operation, then checked on reopen.
//! Each behaviour is one module.

mod backup_locks;
mod store_crash_kill;
