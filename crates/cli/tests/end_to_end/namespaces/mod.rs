//! End-to-end tests that need root: hosts in network namespaces (links cut, engines and
//! replicas on their own addresses) and real block devices (nbdfuse, loop devices,
//! mkfs, mount). Each behaviour is one module.

mod csi_multi_node;
mod engine_crash_recovery;
mod engine_stale_open;
mod manager_data_locality;
mod manager_multi_node;
mod manager_unschedulable_attach;
mod rebuild_link_cut;
mod rebuild_replica_killed;
mod replica_disk_full;
mod salvage_all_replicas;
mod volume_filesystem;
mod volume_snapshot_revert_ext4;
