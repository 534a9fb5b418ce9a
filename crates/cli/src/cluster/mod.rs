//! Commands for a cluster run by `shorthorn up`: everything here goes through the
//! manager's REST API ([`api_client`]), never to an engine or replica directly.

pub mod api_client;
pub mod backups;
pub mod events;
pub mod jobs;
pub mod nodes;
pub mod settings;
pub mod snapshots;
pub mod standby;
pub mod volumes;
pub mod watch;
