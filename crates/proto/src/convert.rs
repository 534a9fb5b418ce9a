//! The shared types a replica reports (`shorthorn_block`), to and from their messages.
//! Proto3 strings have no "absent": an empty name or parent is `None`.

use shorthorn_block::{ConsistencyRecord as Record, LayerInfo, PurgeReport};

use crate::v1::{ConsistencyRecord as RecordMessage, Layer, PurgeSnapshotsResponse};

fn absent_if_empty(text: String) -> Option<String> {
    Some(text).filter(|t| !t.is_empty())
}

impl From<Layer> for LayerInfo {
    fn from(layer: Layer) -> Self {
        LayerInfo {
            name: absent_if_empty(layer.name),
            parent: absent_if_empty(layer.parent),
            children: layer.children,
            created: layer.created,
            user_created: layer.user_created,
            removed: layer.removed,
            labels: layer.labels.into_iter().collect(),
            size: layer.size,
            allocated_bytes: layer.allocated_bytes,
            is_head: layer.is_head,
            in_chain: layer.in_chain,
        }
    }
}

impl From<LayerInfo> for Layer {
    fn from(info: LayerInfo) -> Self {
        Layer {
            name: info.name.unwrap_or_default(),
            parent: info.parent.unwrap_or_default(),
            children: info.children,
            created: info.created,
            user_created: info.user_created,
            removed: info.removed,
            labels: info.labels.into_iter().collect(),
            size: info.size,
            allocated_bytes: info.allocated_bytes,
            is_head: info.is_head,
            in_chain: info.in_chain,
        }
    }
}

impl From<PurgeSnapshotsResponse> for PurgeReport {
    fn from(response: PurgeSnapshotsResponse) -> Self {
        PurgeReport {
            purged: response.purged,
            kept: response.kept,
            bytes_copied: response.bytes_copied,
        }
    }
}

impl From<PurgeReport> for PurgeSnapshotsResponse {
    fn from(report: PurgeReport) -> Self {
        PurgeSnapshotsResponse {
            purged: report.purged,
            kept: report.kept,
            bytes_copied: report.bytes_copied,
        }
    }
}

impl From<RecordMessage> for Record {
    fn from(message: RecordMessage) -> Self {
        Record {
            replica_id: message.replica_id,
            epoch: message.epoch,
            members: message.members,
            region_size: message.region_size,
            dirty_regions: message.dirty_regions,
            clean: message.clean,
        }
    }
}

impl From<Record> for RecordMessage {
    fn from(record: Record) -> Self {
        RecordMessage {
            replica_id: record.replica_id,
            epoch: record.epoch,
            members: record.members,
            region_size: record.region_size,
            dirty_regions: record.dirty_regions,
            clean: record.clean,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    #[test]
    fn a_layer_survives_the_round_trip_and_the_head_has_no_name() {
        let snapshot = LayerInfo {
            name: Some("s1".into()),
            parent: Some("s0".into()),
            children: vec!["s2".into()],
            created: "2026-12-06T00:00:00Z".into(),
            user_created: true,
            removed: true,
            labels: BTreeMap::from([("app".into(), "db".into())]),
            size: 1 << 30,
            allocated_bytes: 4096,
            is_head: false,
            in_chain: true,
        };
        assert_eq!(LayerInfo::from(Layer::from(snapshot.clone())), snapshot);
        let head = LayerInfo {
            is_head: true,
            ..LayerInfo::default()
        };
        let message = Layer::from(head.clone());
        assert_eq!((message.name.as_str(), message.parent.as_str()), ("", ""));
        assert_eq!(LayerInfo::from(message), head);
    }

    #[test]
    fn a_purge_report_survives_the_round_trip() {
        let report = PurgeReport {
            purged: vec!["a".into()],
            kept: vec!["b".into()],
            bytes_copied: 8192,
        };
        assert_eq!(
            PurgeReport::from(PurgeSnapshotsResponse::from(report.clone())),
            report
        );
    }

    #[test]
    fn a_consistency_record_survives_the_round_trip() {
        let record = Record {
            replica_id: "r1".into(),
            epoch: 7,
            members: vec!["r1".into(), "r2".into()],
            region_size: 1 << 20,
            dirty_regions: vec![3, 9],
            clean: false,
        };
        assert_eq!(Record::from(RecordMessage::from(record.clone())), record);
    }
}
