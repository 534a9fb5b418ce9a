//! `/metrics`: Prometheus text of volumes and disks.

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use shorthorn_prometheus::{MetricKind, family_header, sample};

use super::{ApiError, AppState};
use crate::model::{Node, Volume};
use crate::state::{Kind, StateStoreExt};

/// Prometheus text: volumes by robustness and size, disk space per node.
pub(super) async fn metrics(State(state): State<AppState>) -> Result<Response, ApiError> {
    let store = state.manager.state();
    let volumes = store.list::<Volume>(Kind::Volume)?;
    let nodes = store.list::<Node>(Kind::Node)?;
    Ok((
        [(header::CONTENT_TYPE, shorthorn_prometheus::CONTENT_TYPE)],
        render(&volumes, &nodes),
    )
        .into_response())
}

/// The text for these volumes and nodes, one family after the other.
fn render(volumes: &[Volume], nodes: &[Node]) -> String {
    let mut out = String::new();
    // A family without samples is left out (a HELP and TYPE alone say nothing).
    if volumes.is_empty() {
        return render_disks(out, nodes);
    }
    let name = "shorthorn_volume_robustness";
    family_header(
        &mut out,
        name,
        "1 for the volume's robustness (healthy, degraded, faulted or unknown)",
        MetricKind::Gauge,
    );
    for volume in volumes {
        let robustness = crate::model::json_name(&volume.status.robustness);
        sample(
            &mut out,
            name,
            &[("volume", &volume.name), ("robustness", &robustness)],
            "1",
        );
    }
    let name = "shorthorn_volume_size_bytes";
    family_header(&mut out, name, "The volume's size", MetricKind::Gauge);
    for volume in volumes {
        sample(
            &mut out,
            name,
            &[("volume", &volume.name)],
            &volume.spec.size.to_string(),
        );
    }
    render_standby(&mut out, volumes);
    render_disks(out, nodes)
}

/// The standby volumes' lag and last restore.
fn render_standby(out: &mut String, volumes: &[Volume]) {
    type StandbyFigure = fn(&crate::model::StandbyStatus) -> u64;
    let families: [(&str, &str, StandbyFigure); 3] = [
        (
            "shorthorn_dr_lag_seconds",
            "Seconds between the completion of the backup a standby volume holds and of the newest one",
            |s| s.lag_seconds,
        ),
        (
            "shorthorn_dr_lag_backups",
            "Backups newer than the one a standby volume holds",
            |s| s.lag_backups,
        ),
        (
            "shorthorn_dr_last_restore_bytes",
            "Bytes a standby volume's last restore fetched from the target",
            |s| s.last_restore_bytes,
        ),
    ];
    let standbys: Vec<(&Volume, crate::model::StandbyStatus)> = volumes
        .iter()
        .filter(|v| v.spec.standby.is_some())
        .map(|v| (v, v.status.standby.clone().unwrap_or_default()))
        .collect();
    if standbys.is_empty() {
        return;
    }
    for (name, help, figure) in families {
        family_header(out, name, help, MetricKind::Gauge);
        for (volume, status) in &standbys {
            sample(
                out,
                name,
                &[("volume", &volume.name)],
                &figure(status).to_string(),
            );
        }
    }
}

fn render_disks(mut out: String, nodes: &[Node]) -> String {
    type DiskFigure = fn(&crate::model::DiskStatus) -> u64;
    let disk_families: [(&str, &str, DiskFigure); 3] = [
        (
            "shorthorn_disk_capacity_bytes",
            "Size of the filesystem holding the disk",
            |d| d.capacity,
        ),
        (
            "shorthorn_disk_available_bytes",
            "Bytes free on the disk's filesystem",
            |d| d.available,
        ),
        (
            "shorthorn_disk_scheduled_bytes",
            "Sum of the sizes of the replicas placed on the disk",
            |d| d.scheduled,
        ),
    ];
    for (name, help, figure) in disk_families {
        let disks: Vec<_> = nodes
            .iter()
            .flat_map(|node| node.status.disks.iter().map(move |disk| (node, disk)))
            .collect();
        if disks.is_empty() {
            continue;
        }
        family_header(&mut out, name, help, MetricKind::Gauge);
        for (node, disk) in disks {
            sample(
                &mut out,
                name,
                &[("node", &node.name), ("disk", &disk.name)],
                &figure(disk).to_string(),
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code")]

    use shorthorn_prometheus::exposition;

    use super::*;
    use crate::model::{DiskStatus, NodeSpec, NodeStatus, VolumeSpec, VolumeStatus};

    fn volume(name: &str, size: u64) -> Volume {
        Volume {
            name: name.to_owned(),
            spec: VolumeSpec {
                size,
                replicas: 3,
                node_selector: Vec::new(),
                disk_selector: Vec::new(),
                attached_node: None,
                recurring_jobs: Vec::new(),
                recurring_job_groups: Vec::new(),
                from_backup: None,
                from_snapshot: None,
                salvage_requests: 0,
                data_locality: crate::model::DataLocality::Disabled,
                labels: Default::default(),
                standby: None,
            },
            status: VolumeStatus::default(),
        }
    }

    fn node(name: &str, disks: &[&str]) -> Node {
        Node {
            name: name.to_owned(),
            spec: NodeSpec {
                address: "127.0.0.1".into(),
                api_url: String::new(),
                zone: String::new(),
                tags: Vec::new(),
                allow_scheduling: true,
                evict: false,
                disks: Vec::new(),
            },
            status: NodeStatus {
                disks: disks
                    .iter()
                    .map(|d| DiskStatus {
                        name: (*d).to_owned(),
                        capacity: 100,
                        available: 60,
                        scheduled: 30,
                        replicas: 1,
                    })
                    .collect(),
                ..NodeStatus::default()
            },
        }
    }

    /// Names are validated on the way in, but a record written by an older version (or
    /// by hand in etcd) reaches the scrape as it is: it must not break the text.
    #[test]
    fn awkward_label_values_still_give_valid_text() {
        let awkward = "vol \"one\" \\ two\nthree";
        let volumes = [volume(awkward, 1 << 30), volume("plain", 4096)];
        let nodes = [node("n1", &["d1", "d2"]), node("n\"2", &["d\\3"])];
        let text = render(&volumes, &nodes);
        let samples = exposition::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        let size = exposition::find(
            &samples,
            "shorthorn_volume_size_bytes",
            &[("volume", awkward)],
        )
        .unwrap();
        assert_eq!(size.value, (1u64 << 30) as f64);
        for family in [
            "shorthorn_disk_capacity_bytes",
            "shorthorn_disk_available_bytes",
            "shorthorn_disk_scheduled_bytes",
        ] {
            assert_eq!(samples.iter().filter(|s| s.name == family).count(), 3);
        }
        let scheduled = exposition::find(
            &samples,
            "shorthorn_disk_scheduled_bytes",
            &[("node", "n\"2"), ("disk", "d\\3")],
        )
        .unwrap();
        assert_eq!(scheduled.value, 30.0);
    }

    #[test]
    fn standby_volumes_report_their_lag_and_last_restore() {
        let mut standby = volume("dr1", 4096);
        standby.spec.standby = Some(crate::model::StandbySpec {
            source: "s3://b@r/p?volume=src".into(),
            sync_requests: 0,
            activation: None,
        });
        standby.status.standby = Some(crate::model::StandbyStatus {
            lag_seconds: 40,
            lag_backups: 2,
            last_restore_bytes: 1 << 20,
            ..Default::default()
        });
        let text = render(&[standby, volume("plain", 4096)], &[]);
        let samples = exposition::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        for (family, value) in [
            ("shorthorn_dr_lag_seconds", 40.0),
            ("shorthorn_dr_lag_backups", 2.0),
            ("shorthorn_dr_last_restore_bytes", (1u64 << 20) as f64),
        ] {
            let found = exposition::find(&samples, family, &[("volume", "dr1")]).unwrap();
            assert_eq!(found.value, value, "{family}");
            assert!(exposition::find(&samples, family, &[("volume", "plain")]).is_none());
        }
    }

    #[test]
    fn families_without_samples_are_left_out() {
        assert_eq!(render(&[], &[]), "");
        let text = render(&[], &[node("n1", &["d1"])]);
        let samples = exposition::parse(&text).unwrap();
        assert_eq!(samples.len(), 3);
        assert!(!text.contains("shorthorn_volume_"));
    }
}
