//! What a replica reports about its snapshot tree, its purges and its consistency
//! record. One copy for the store
//! that produces them, the engine that coordinates them across replicas and the CLI that
//! shows them; `shorthorn-proto` converts them to and from their gRPC messages.

use std::collections::BTreeMap;

/// One layer of a replica's snapshot tree: a snapshot, or the writable head.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LayerInfo {
    /// Snapshot name; `None` for the head.
    pub name: Option<String>,
    /// Name of the snapshot this layer sits on; `None` for a root.
    pub parent: Option<String>,
    /// Names of snapshots sitting on this one (the head is not named here).
    pub children: Vec<String>,
    /// When the snapshot was taken (the head: when it was created), RFC 3339.
    pub created: String,
    /// False for system snapshots.
    pub user_created: bool,
    /// Marked for removal by the next purge.
    pub removed: bool,
    /// Free-form labels.
    pub labels: BTreeMap<String, String>,
    /// Volume size when the layer was created.
    pub size: u64,
    /// Bytes the layer's file occupies on disk.
    pub allocated_bytes: u64,
    /// True for the writable head.
    pub is_head: bool,
    /// True when the layer is in the head's chain (what the volume shows).
    pub in_chain: bool,
}

impl LayerInfo {
    /// The snapshot's name; empty for the head (as the wire messages write it).
    pub fn snapshot_name(&self) -> &str {
        self.name.as_deref().unwrap_or_default()
    }
}

/// The snapshots of the head's chain in `layers`, oldest first.
pub fn snapshot_chain(layers: &[LayerInfo]) -> Vec<&LayerInfo> {
    let mut chain = Vec::new();
    let mut next = layers
        .iter()
        .find(|l| l.is_head)
        .and_then(|l| l.parent.as_deref());
    while let Some(name) = next {
        match layers
            .iter()
            .find(|l| !l.is_head && l.name.as_deref() == Some(name))
        {
            Some(layer) => {
                next = layer.parent.as_deref();
                chain.push(layer);
            }
            None => break,
        }
    }
    chain.reverse();
    chain
}

/// What a purge on one replica did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PurgeReport {
    /// Snapshots folded away.
    pub purged: Vec<String>,
    /// Removed snapshots kept because more than one layer sits on them.
    pub kept: Vec<String>,
    /// Bytes copied into children while folding.
    pub bytes_copied: u64,
}

/// A replica's consistency record: its identity and what the last engine persisted about
/// which replicas are in sync and which regions may differ (docs/consistency.md). The
/// store keeps it in `consistency.json`; the engine reads and rewrites it over gRPC.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ConsistencyRecord {
    /// Random identity given to the replica directory when the record was first written.
    pub replica_id: String,
    /// Raised by the engine at every open and every change of `members`; 0: never used.
    pub epoch: u64,
    /// Ids of the replicas that held every acknowledged write as of `epoch`.
    pub members: Vec<String>,
    /// Size of one dirty region in bytes (0 when none was ever recorded).
    pub region_size: u64,
    /// Indexes of regions that may differ between members.
    pub dirty_regions: Vec<u64>,
    /// True when the last engine closed the volume cleanly.
    pub clean: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(name: Option<&str>, parent: Option<&str>, is_head: bool) -> LayerInfo {
        LayerInfo {
            name: name.map(str::to_owned),
            parent: parent.map(str::to_owned),
            is_head,
            ..LayerInfo::default()
        }
    }

    #[test]
    fn the_chain_follows_parents_from_the_head_and_skips_other_branches() {
        let layers = [
            layer(Some("a"), None, false),
            layer(Some("b"), Some("a"), false),
            layer(Some("side"), Some("a"), false),
            layer(None, Some("b"), true),
        ];
        let names: Vec<_> = snapshot_chain(&layers)
            .iter()
            .map(|l| l.name.as_deref())
            .collect();
        assert_eq!(names, [Some("a"), Some("b")]);
    }

    #[test]
    fn a_head_on_no_snapshot_has_an_empty_chain() {
        assert!(snapshot_chain(&[layer(None, None, true)]).is_empty());
    }

    #[test]
    fn a_missing_parent_ends_the_chain() {
        let layers = [
            layer(Some("b"), Some("gone"), false),
            layer(None, Some("b"), true),
        ];
        let names: Vec<_> = snapshot_chain(&layers)
            .iter()
            .map(|l| l.name.as_deref())
            .collect();
        assert_eq!(names, [Some("b")]);
    }
}
