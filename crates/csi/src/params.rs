//! StorageClass parameters, with Longhorn's names so that its users' classes carry over;
//! an unknown or malformed one is refused (INVALID_ARGUMENT naming it).

use std::collections::HashMap;

use serde::Deserialize;
use shorthorn_manager::model::DataLocality;
use tonic::Status;

/// Filesystems NodeStage makes and mounts.
pub const FILESYSTEMS: [&str; 2] = ["ext4", "xfs"];

/// What a StorageClass asks of its volumes.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct VolumeParameters {
    /// `numberOfReplicas`.
    pub replicas: Option<usize>,
    /// `staleReplicaTimeout` (minutes), checked; Shorthorn's is the cluster setting.
    pub stale_replica_timeout: Option<u64>,
    /// `dataLocality`: `disabled` or `best-effort`.
    pub data_locality: Option<DataLocality>,
    /// `fromBackup`: a backup URL to restore new volumes from.
    pub from_backup: Option<String>,
    /// `backupTargetName`: where `bak` snapshots of its volumes go by default.
    pub backup_target: Option<String>,
    /// `diskSelector`: comma-separated tags.
    pub disk_selector: Vec<String>,
    /// `nodeSelector`: comma-separated tags.
    pub node_selector: Vec<String>,
    /// `recurringJobSelector` jobs (`isGroup: false`).
    pub recurring_jobs: Vec<String>,
    /// `recurringJobSelector` groups (`isGroup: true`).
    pub recurring_job_groups: Vec<String>,
    /// `fsType` (also the capability's): ext4 or xfs.
    pub fs_type: Option<String>,
    /// `mkfsParams`: extra arguments of mkfs, split on whitespace.
    pub mkfs_params: Option<String>,
}

/// Longhorn's `recurringJobSelector` entry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct JobSelector {
    name: String,
    #[serde(default)]
    is_group: bool,
}

/// Keys the external provisioner adds (`--extra-create-metadata`): not the class's.
const PROVISIONER_PREFIX: &str = "csi.storage.k8s.io/";

impl VolumeParameters {
    /// Parses a CreateVolume's parameters.
    pub fn parse(parameters: &HashMap<String, String>) -> Result<VolumeParameters, Status> {
        let mut out = VolumeParameters::default();
        let mut keys: Vec<&String> = parameters.keys().collect();
        keys.sort();
        for key in keys {
            let value = parameters[key].trim();
            let bad = |why: String| Status::invalid_argument(format!("parameter {key}: {why}"));
            match key.as_str() {
                "numberOfReplicas" => {
                    let n: usize = value
                        .parse()
                        .map_err(|_| bad(format!("{value:?} is not a number")))?;
                    if !(1..=16).contains(&n) {
                        return Err(bad(format!("{n} is not 1 to 16")));
                    }
                    out.replicas = Some(n);
                }
                "staleReplicaTimeout" => {
                    let minutes = value
                        .parse()
                        .map_err(|_| bad(format!("{value:?} is not a number of minutes")))?;
                    out.stale_replica_timeout = Some(minutes);
                }
                "dataLocality" => {
                    out.data_locality = Some(
                        serde_json::from_value(serde_json::Value::String(value.to_string()))
                            .map_err(|_| bad(format!("{value:?}: disabled or best-effort")))?,
                    );
                }
                "fromBackup" => out.from_backup = Some(value.to_string()).filter(|v| !v.is_empty()),
                "backupTargetName" => out.backup_target = Some(name(value).map_err(bad)?),
                "diskSelector" => out.disk_selector = tags(value).map_err(bad)?,
                "nodeSelector" => out.node_selector = tags(value).map_err(bad)?,
                "recurringJobSelector" => {
                    let selectors: Vec<JobSelector> = serde_json::from_str(value).map_err(|e| {
                        bad(format!(
                            "not a JSON list of {{\"name\": …, \"isGroup\": …}}: {e}"
                        ))
                    })?;
                    for selector in selectors {
                        let job = name(&selector.name).map_err(bad)?;
                        if selector.is_group {
                            out.recurring_job_groups.push(job);
                        } else {
                            out.recurring_jobs.push(job);
                        }
                    }
                }
                "fsType" => out.fs_type = Some(filesystem(value).map_err(bad)?),
                "mkfsParams" => out.mkfs_params = Some(value.to_string()),
                other if other.starts_with(PROVISIONER_PREFIX) => {}
                other => {
                    return Err(Status::invalid_argument(format!(
                        "unknown parameter {other:?}; docs/kubernetes.md lists those the driver takes"
                    )));
                }
            }
        }
        Ok(out)
    }
}

/// A filesystem NodeStage can make.
pub fn filesystem(value: &str) -> Result<String, String> {
    if FILESYSTEMS.contains(&value) {
        Ok(value.to_string())
    } else {
        Err(format!(
            "{value:?}: the driver makes {}",
            FILESYSTEMS.join(" or ")
        ))
    }
}

fn name(value: &str) -> Result<String, String> {
    shorthorn_block::validate_name(value)
        .map(|()| value.to_string())
        .map_err(|e| e.to_string())
}

fn tags(value: &str) -> Result<Vec<String>, String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(name)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(pairs: &[(&str, &str)]) -> Result<VolumeParameters, Status> {
        VolumeParameters::parse(
            &pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    #[test]
    fn longhorn_s_parameters_are_taken() {
        let p = parse(&[
            ("numberOfReplicas", "2"),
            ("staleReplicaTimeout", "30"),
            ("dataLocality", "best-effort"),
            ("diskSelector", "ssd, fast"),
            ("nodeSelector", "storage"),
            (
                "recurringJobSelector",
                r#"[{"name":"snap","isGroup":true},{"name":"backup-daily","isGroup":false}]"#,
            ),
            ("fsType", "xfs"),
            ("mkfsParams", "-m 0"),
            ("csi.storage.k8s.io/pv/name", "pvc-1"),
        ])
        .unwrap();
        assert_eq!(p.replicas, Some(2));
        assert_eq!(p.data_locality, Some(DataLocality::BestEffort));
        assert_eq!(p.disk_selector, ["ssd", "fast"]);
        assert_eq!(p.node_selector, ["storage"]);
        assert_eq!(p.recurring_job_groups, ["snap"]);
        assert_eq!(p.recurring_jobs, ["backup-daily"]);
        assert_eq!(p.fs_type.as_deref(), Some("xfs"));
    }

    #[test]
    fn unknown_and_malformed_parameters_are_refused_by_name() {
        for (key, value) in [
            ("numberOfReplica", "2"),
            ("numberOfReplicas", "two"),
            ("numberOfReplicas", "0"),
            ("dataLocality", "strict-local"),
            ("fsType", "btrfs"),
            ("diskSelector", "a/b"),
            ("recurringJobSelector", "snap"),
        ] {
            let error = parse(&[(key, value)]).unwrap_err();
            assert_eq!(error.code(), tonic::Code::InvalidArgument);
            assert!(error.message().contains(key), "{key}: {}", error.message());
        }
    }
}
