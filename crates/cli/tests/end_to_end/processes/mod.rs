//! End-to-end tests that drive the real `shorthorn` binary and real clients as plain
//! processes on loopback: volumes through `launch-simple`, the offline store commands,
//! backups, and managers (`shorthorn up`) on one host. Each behaviour is one module.

mod agent_route_auth;
mod backup_bad_input;
mod backup_delete_gc;
mod backup_restore;
mod cli_usage;
mod manager_api;
mod manager_backups;
mod manager_clones;
mod manager_events;
mod manager_eviction;
mod manager_recurring_jobs;
mod manager_replica_count;
mod manager_single_node;
mod manager_snapshot_prune_jobs;
mod manager_snapshots;
mod manager_stale_open;
mod manager_standby;
mod manager_target_credentials;
mod manager_unschedulable;
mod manager_watch;
mod store_cli;
mod up_restart_keeps_volumes;
mod volume_bad_input;
mod volume_expand_online;
mod volume_fio_verify;
mod volume_metrics;
mod volume_nbdcopy;
mod volume_nbdinfo_map;
mod volume_purge_under_load;
mod volume_qemu_io;
mod volume_replica_failure;
mod volume_slow_replica;
mod volume_snapshot_limits;
mod volume_snapshot_under_load;
