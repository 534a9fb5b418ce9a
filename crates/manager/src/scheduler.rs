//! Replica placement: decides on which node and disk each new replica of a volume goes.
//!
//! Pure logic with Longhorn's rules: a disk must be eligible (node ready and schedulable,
//! tags match, storage fits), the anti-affinity settings exclude or rank candidates by
//! how many replicas of the volume already share their zone, node and disk, and replicas
//! are placed greedily one at a time so each choice sees the ones before it.
//!
//! A node whose zone is the empty string is in no zone: the hard zone rule never
//! excludes it, and when ranking by zone it counts as a zone of its own (so its zone
//! count is the number of replicas on that node).

use std::cmp::Reverse;
use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use shorthorn_block::size::format_size;

/// Scheduling settings (Longhorn's names and defaults).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default)]
pub struct SchedulingSettings {
    /// false (default): at most one replica of a volume per node; true: prefer other
    /// nodes but allow sharing.
    pub replica_soft_anti_affinity: bool,
    /// true (default): prefer zones without a replica of the volume; false: never two
    /// replicas in one zone.
    pub replica_zone_soft_anti_affinity: bool,
    /// true (default): prefer disks without a replica of the volume; false: never two
    /// on one disk.
    pub replica_disk_soft_anti_affinity: bool,
    /// Percent of a disk's (capacity - reserved) that replicas may be scheduled for in
    /// total (default 100).
    pub over_provisioning_percentage: u64,
    /// A disk must keep this percent of its capacity available after placing the
    /// replica (default 25).
    pub minimal_available_percentage: u64,
}

impl Default for SchedulingSettings {
    fn default() -> Self {
        Self {
            replica_soft_anti_affinity: false,
            replica_zone_soft_anti_affinity: true,
            replica_disk_soft_anti_affinity: true,
            over_provisioning_percentage: 100,
            minimal_available_percentage: 25,
        }
    }
}

/// A node as the scheduler sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeCandidate {
    /// Unique node name.
    pub name: String,
    /// Failure domain; empty means no zone (see the module docs).
    pub zone: String,
    /// Tags matched against a volume's node selector.
    pub tags: Vec<String>,
    /// Whether the node is up; replicas never go to a node that is down.
    pub ready: bool,
    /// An operator's switch to keep new replicas off the node.
    pub allow_scheduling: bool,
    /// The node's disks.
    pub disks: Vec<DiskCandidate>,
}

/// A disk as the scheduler sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskCandidate {
    /// Disk name, unique within its node.
    pub name: String,
    /// Tags matched against a volume's disk selector.
    pub tags: Vec<String>,
    /// An operator's switch to keep new replicas off the disk.
    pub allow_scheduling: bool,
    /// Bytes the filesystem holds in all.
    pub capacity: u64,
    /// Bytes free now.
    pub available: u64,
    /// Bytes kept back from scheduling.
    pub reserved: u64,
    /// Sum of the sizes of replicas already scheduled here (any volume).
    pub scheduled: u64,
}

/// Where an existing replica of the volume is.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Placement {
    /// Node name.
    pub node: String,
    /// Disk name on that node.
    pub disk: String,
}

/// What to place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScheduleRequest<'a> {
    /// The volume's name, used in errors.
    pub volume: &'a str,
    /// Bytes each replica needs.
    pub size: u64,
    /// How many new replicas to place.
    pub count: usize,
    /// Tags every chosen node must have.
    pub node_selector: &'a [String],
    /// Tags every chosen disk must have.
    pub disk_selector: &'a [String],
    /// The volume's replicas that exist already (healthy or not): new ones avoid them
    /// per the anti-affinity rules.
    pub existing: &'a [Placement],
}

/// Why replicas could not be placed: how far it got, and why each node or disk was
/// excluded when it stopped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "cannot schedule replicas of volume {volume}: placed {placed} of {wanted}; \
     no schedulable disk: {}",
    .reasons.join("; ")
)]
pub struct ScheduleError {
    /// The volume's name.
    pub volume: String,
    /// Replicas that would have fit before the scheduler got stuck (none are returned).
    pub placed: usize,
    /// Replicas asked for.
    pub wanted: usize,
    /// One entry per excluded node (`node: why`) or disk (`node/disk: why`).
    pub reasons: Vec<String>,
}

/// Places `request.count` new replicas; returns their placements in order, or an error
/// if not all fit (no partial result).
pub fn schedule(
    request: &ScheduleRequest<'_>,
    nodes: &[NodeCandidate],
    settings: &SchedulingSettings,
) -> Result<Vec<Placement>, ScheduleError> {
    let mut usage: Vec<Vec<DiskUsage>> = nodes
        .iter()
        .map(|node| node.disks.iter().map(DiskUsage::of).collect())
        .collect();
    let mut replicas = VolumeReplicas::new(nodes);
    for placement in request.existing {
        replicas.add(&placement.node, &placement.disk);
    }

    let mut placed = Vec::with_capacity(request.count);
    while placed.len() < request.count {
        let (node_index, disk_index) = choose_disk(request, nodes, &usage, &replicas, settings)
            .map_err(|reasons| ScheduleError {
                volume: request.volume.to_owned(),
                placed: placed.len(),
                wanted: request.count,
                reasons,
            })?;
        let node = &nodes[node_index];
        let disk = &node.disks[disk_index];
        usage[node_index][disk_index].take(request.size);
        replicas.add(&node.name, &disk.name);
        placed.push(Placement {
            node: node.name.clone(),
            disk: disk.name.clone(),
        });
    }
    Ok(placed)
}

/// A disk's storage as it changes during one call, so later replicas see earlier ones.
#[derive(Debug, Clone, Copy)]
struct DiskUsage {
    /// u128 so that repeated placements can never overflow.
    scheduled: u128,
    available: u64,
}

impl DiskUsage {
    fn of(disk: &DiskCandidate) -> Self {
        Self {
            scheduled: u128::from(disk.scheduled),
            available: disk.available,
        }
    }

    /// Only called after `storage_problem` said the replica fits, so `available >= size`.
    fn take(&mut self, size: u64) {
        self.scheduled = self.scheduled.saturating_add(u128::from(size));
        self.available = self.available.saturating_sub(size);
    }
}

/// Where the volume's replicas are, existing and newly placed, counted per zone, node
/// and disk.
struct VolumeReplicas<'n> {
    zone_of_node: HashMap<&'n str, &'n str>,
    per_zone: HashMap<String, usize>,
    per_node: HashMap<String, usize>,
    per_disk: HashMap<(String, String), usize>,
}

impl<'n> VolumeReplicas<'n> {
    fn new(nodes: &'n [NodeCandidate]) -> Self {
        Self {
            zone_of_node: nodes
                .iter()
                .map(|node| (node.name.as_str(), node.zone.as_str()))
                .collect(),
            per_zone: HashMap::new(),
            per_node: HashMap::new(),
            per_disk: HashMap::new(),
        }
    }

    /// A replica on a node the scheduler does not know still counts for its node and
    /// disk; its zone is unknown, so it counts for no zone.
    fn add(&mut self, node: &str, disk: &str) {
        if let Some(zone) = self.zone_of_node.get(node).filter(|zone| !zone.is_empty()) {
            *self.per_zone.entry((*zone).to_owned()).or_default() += 1;
        }
        *self.per_node.entry(node.to_owned()).or_default() += 1;
        *self
            .per_disk
            .entry((node.to_owned(), disk.to_owned()))
            .or_default() += 1;
    }

    /// Replicas in the node's zone; a zoneless node is a zone of its own.
    fn in_zone_of(&self, node: &NodeCandidate) -> usize {
        if node.zone.is_empty() {
            self.on_node(&node.name)
        } else {
            self.per_zone.get(&node.zone).copied().unwrap_or(0)
        }
    }

    fn on_node(&self, node: &str) -> usize {
        self.per_node.get(node).copied().unwrap_or(0)
    }

    fn on_disk(&self, node: &str, disk: &str) -> usize {
        self.per_disk
            .get(&(node.to_owned(), disk.to_owned()))
            .copied()
            .unwrap_or(0)
    }
}

/// Picks the best eligible disk for the next replica, or returns why none is eligible.
fn choose_disk(
    request: &ScheduleRequest<'_>,
    nodes: &[NodeCandidate],
    usage: &[Vec<DiskUsage>],
    replicas: &VolumeReplicas<'_>,
    settings: &SchedulingSettings,
) -> Result<(usize, usize), Vec<String>> {
    // Smallest wins: fewest replicas in zone, node, disk; most bytes left; then names.
    type Rank<'a> = (usize, usize, usize, Reverse<u64>, &'a str, &'a str);
    let mut best: Option<(Rank<'_>, usize, usize)> = None;
    let mut reasons = Vec::new();

    if nodes.is_empty() {
        reasons.push("no nodes".to_owned());
    }
    for (node_index, node) in nodes.iter().enumerate() {
        let problems = node_problems(request, node, replicas, settings);
        if !problems.is_empty() {
            reasons.push(format!("{}: {}", node.name, problems.join(", ")));
            continue;
        }
        if node.disks.is_empty() {
            reasons.push(format!("{}: no disks", node.name));
            continue;
        }
        for (disk_index, disk) in node.disks.iter().enumerate() {
            let disk_usage = usage[node_index][disk_index];
            let problems = disk_problems(request, node, disk, disk_usage, replicas, settings);
            if !problems.is_empty() {
                reasons.push(format!(
                    "{}/{}: {}",
                    node.name,
                    disk.name,
                    problems.join(", ")
                ));
                continue;
            }
            let rank = (
                replicas.in_zone_of(node),
                replicas.on_node(&node.name),
                replicas.on_disk(&node.name, &disk.name),
                Reverse(disk_usage.available.saturating_sub(request.size)),
                node.name.as_str(),
                disk.name.as_str(),
            );
            if best
                .as_ref()
                .is_none_or(|(best_rank, _, _)| rank < *best_rank)
            {
                best = Some((rank, node_index, disk_index));
            }
        }
    }
    best.map(|(_, node_index, disk_index)| (node_index, disk_index))
        .ok_or(reasons)
}

/// Why no disk of this node may take the replica; empty if the node is fine.
fn node_problems(
    request: &ScheduleRequest<'_>,
    node: &NodeCandidate,
    replicas: &VolumeReplicas<'_>,
    settings: &SchedulingSettings,
) -> Vec<String> {
    let mut problems = Vec::new();
    if !node.ready {
        problems.push("not ready".to_owned());
    }
    if !node.allow_scheduling {
        problems.push("scheduling disabled".to_owned());
    }
    let missing = missing_tags(request.node_selector, &node.tags);
    if !missing.is_empty() {
        problems.push(format!("missing node tags [{}]", missing.join(", ")));
    }
    if !settings.replica_soft_anti_affinity && replicas.on_node(&node.name) > 0 {
        problems.push("already holds a replica (hard node anti-affinity)".to_owned());
    }
    if !settings.replica_zone_soft_anti_affinity
        && !node.zone.is_empty()
        && replicas.in_zone_of(node) > 0
    {
        problems.push(format!(
            "zone {} already holds a replica (hard zone anti-affinity)",
            node.zone
        ));
    }
    problems
}

/// Why this disk may not take the replica; empty if it may.
fn disk_problems(
    request: &ScheduleRequest<'_>,
    node: &NodeCandidate,
    disk: &DiskCandidate,
    usage: DiskUsage,
    replicas: &VolumeReplicas<'_>,
    settings: &SchedulingSettings,
) -> Vec<String> {
    let mut problems = Vec::new();
    if !disk.allow_scheduling {
        problems.push("scheduling disabled".to_owned());
    }
    let missing = missing_tags(request.disk_selector, &disk.tags);
    if !missing.is_empty() {
        problems.push(format!("missing disk tags [{}]", missing.join(", ")));
    }
    if !settings.replica_disk_soft_anti_affinity && replicas.on_disk(&node.name, &disk.name) > 0 {
        problems.push("already holds a replica (hard disk anti-affinity)".to_owned());
    }
    if let Some(problem) = storage_problem(request.size, disk, usage, settings) {
        problems.push(problem);
    }
    problems
}

/// Checks Longhorn's two storage limits: the over-provisioning cap on scheduled bytes,
/// and the share of capacity that must stay free. All in u128 so no input can overflow.
fn storage_problem(
    size: u64,
    disk: &DiskCandidate,
    usage: DiskUsage,
    settings: &SchedulingSettings,
) -> Option<String> {
    let size_wide = u128::from(size);
    let schedulable = u128::from(disk.capacity.saturating_sub(disk.reserved));
    let limit = schedulable * u128::from(settings.over_provisioning_percentage) / 100;
    let must_keep =
        u128::from(disk.capacity) * u128::from(settings.minimal_available_percentage) / 100;

    let mut details = Vec::new();
    if usage.scheduled.saturating_add(size_wide) > limit {
        details.push(format!(
            "{} of {} over-provisioning limit already scheduled",
            format_size(usage.scheduled),
            format_size(limit)
        ));
    }
    match usage.available.checked_sub(size) {
        None => details.push(format!("only {} available", format_size(usage.available))),
        Some(left) if u128::from(left) < must_keep => details.push(format!(
            "{} available, must keep {}",
            format_size(usage.available),
            format_size(must_keep)
        )),
        Some(_) => {}
    }
    if details.is_empty() {
        None
    } else {
        Some(format!(
            "insufficient storage (needs {}: {})",
            format_size(size_wide),
            details.join("; ")
        ))
    }
}

/// The selector tags that `tags` lacks, in selector order.
fn missing_tags<'s>(selector: &'s [String], tags: &[String]) -> Vec<&'s str> {
    selector
        .iter()
        .filter(|wanted| !tags.contains(wanted))
        .map(String::as_str)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const GIB: u64 = 1 << 30;

    /// (name, capacity GiB, available GiB, reserved GiB, scheduled GiB, tags)
    type DiskRow<'a> = (&'a str, u64, u64, u64, u64, &'a [&'a str]);
    /// (name, zone, tags, disks)
    type NodeRow<'a> = (&'a str, &'a str, &'a [&'a str], &'a [DiskRow<'a>]);

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|item| (*item).to_owned()).collect()
    }

    /// Builds ready, schedulable nodes and disks from a table; sizes in GiB.
    fn cluster(rows: &[NodeRow<'_>]) -> Vec<NodeCandidate> {
        rows.iter()
            .map(|(name, zone, tags, disks)| NodeCandidate {
                name: (*name).to_owned(),
                zone: (*zone).to_owned(),
                tags: strings(tags),
                ready: true,
                allow_scheduling: true,
                disks: disks
                    .iter()
                    .map(
                        |(name, capacity, available, reserved, scheduled, tags)| DiskCandidate {
                            name: (*name).to_owned(),
                            tags: strings(tags),
                            allow_scheduling: true,
                            capacity: capacity * GIB,
                            available: available * GIB,
                            reserved: reserved * GIB,
                            scheduled: scheduled * GIB,
                        },
                    )
                    .collect(),
            })
            .collect()
    }

    /// A request without selectors or existing replicas; size in GiB.
    fn request(size_gib: u64, count: usize) -> ScheduleRequest<'static> {
        ScheduleRequest {
            volume: "vol-1",
            size: size_gib * GIB,
            count,
            node_selector: &[],
            disk_selector: &[],
            existing: &[],
        }
    }

    fn at(node: &str, disk: &str) -> Placement {
        Placement {
            node: node.to_owned(),
            disk: disk.to_owned(),
        }
    }

    /// Placements as "node/disk" for compact assertions.
    fn places(result: &[Placement]) -> Vec<String> {
        result
            .iter()
            .map(|placement| format!("{}/{}", placement.node, placement.disk))
            .collect()
    }

    fn soft_nodes() -> SchedulingSettings {
        SchedulingSettings {
            replica_soft_anti_affinity: true,
            ..SchedulingSettings::default()
        }
    }

    /// Asserts that some reason starts with `subject` and mentions `why`.
    fn assert_reason(error: &ScheduleError, subject: &str, why: &str) {
        assert!(
            error
                .reasons
                .iter()
                .any(|reason| reason.starts_with(&format!("{subject}: ")) && reason.contains(why)),
            "no reason for {subject} mentioning {why:?} in {:?}",
            error.reasons
        );
    }

    const ONE_DISK: &[DiskRow<'static>] = &[("disk-1", 100, 100, 0, 0, &[])];

    #[test]
    fn hard_node_anti_affinity_puts_three_replicas_on_three_nodes() {
        let nodes = cluster(&[
            ("node-a", "zone-1", &[], ONE_DISK),
            ("node-b", "zone-1", &[], ONE_DISK),
            ("node-c", "zone-1", &[], ONE_DISK),
        ]);
        let result = schedule(&request(10, 3), &nodes, &SchedulingSettings::default()).unwrap();
        assert_eq!(
            places(&result),
            ["node-a/disk-1", "node-b/disk-1", "node-c/disk-1"]
        );
    }

    #[test]
    fn hard_node_anti_affinity_with_two_nodes_fails_for_three_replicas() {
        let nodes = cluster(&[
            ("node-a", "zone-1", &[], ONE_DISK),
            ("node-b", "zone-2", &[], ONE_DISK),
        ]);
        let error = schedule(&request(10, 3), &nodes, &SchedulingSettings::default()).unwrap_err();
        assert_eq!((error.placed, error.wanted), (2, 3));
        let message = error.to_string();
        assert!(message.contains("vol-1"), "{message}");
        assert!(message.contains("2 of 3"), "{message}");
        assert_reason(&error, "node-a", "hard node anti-affinity");
        assert_reason(&error, "node-b", "hard node anti-affinity");
    }

    #[test]
    fn soft_node_anti_affinity_spreads_over_disks_before_sharing_one() {
        let three_disks: &[DiskRow<'_>] = &[
            ("disk-1", 100, 100, 0, 0, &[]),
            ("disk-2", 100, 90, 0, 0, &[]),
            ("disk-3", 100, 80, 0, 0, &[]),
        ];
        let nodes = cluster(&[("node-a", "", &[], three_disks)]);
        let result = schedule(&request(10, 3), &nodes, &soft_nodes()).unwrap();
        assert_eq!(
            places(&result),
            ["node-a/disk-1", "node-a/disk-2", "node-a/disk-3"]
        );

        let nodes = cluster(&[("node-a", "", &[], ONE_DISK)]);
        let result = schedule(&request(10, 3), &nodes, &soft_nodes()).unwrap();
        assert_eq!(places(&result), ["node-a/disk-1"; 3]);
    }

    #[test]
    fn soft_node_anti_affinity_still_prefers_empty_nodes() {
        let nodes = cluster(&[
            ("node-a", "", &[], &[("disk-1", 1000, 1000, 0, 0, &[])]),
            ("node-b", "", &[], ONE_DISK),
        ]);
        let result = schedule(&request(10, 3), &nodes, &soft_nodes()).unwrap();
        assert_eq!(
            places(&result),
            ["node-a/disk-1", "node-b/disk-1", "node-a/disk-1"]
        );
    }

    #[test]
    fn hard_disk_anti_affinity_excludes_a_disk_holding_a_replica() {
        let two_disks: &[DiskRow<'_>] = &[
            ("disk-1", 100, 100, 0, 0, &[]),
            ("disk-2", 100, 100, 0, 0, &[]),
        ];
        let nodes = cluster(&[("node-a", "", &[], two_disks)]);
        let settings = SchedulingSettings {
            replica_disk_soft_anti_affinity: false,
            ..soft_nodes()
        };
        let error = schedule(&request(10, 3), &nodes, &settings).unwrap_err();
        assert_eq!((error.placed, error.wanted), (2, 3));
        assert_reason(&error, "node-a/disk-1", "hard disk anti-affinity");
        assert_reason(&error, "node-a/disk-2", "hard disk anti-affinity");
    }

    #[test]
    fn zone_spread_beats_a_bigger_disk_in_a_used_zone() {
        let nodes = cluster(&[
            ("node-a", "zone-1", &[], ONE_DISK),
            (
                "node-b",
                "zone-1",
                &[],
                &[("disk-1", 1000, 1000, 0, 0, &[])],
            ),
            ("node-c", "zone-2", &[], &[("disk-1", 50, 50, 0, 0, &[])]),
        ]);
        let existing = [at("node-a", "disk-1")];
        let request = ScheduleRequest {
            existing: &existing,
            ..request(10, 1)
        };
        let result = schedule(&request, &nodes, &SchedulingSettings::default()).unwrap();
        assert_eq!(places(&result), ["node-c/disk-1"]);
    }

    #[test]
    fn soft_zone_anti_affinity_shares_a_zone_when_it_must() {
        let nodes = cluster(&[
            ("node-a", "zone-1", &[], ONE_DISK),
            ("node-b", "zone-1", &[], ONE_DISK),
            ("node-c", "zone-2", &[], ONE_DISK),
        ]);
        let result = schedule(&request(10, 3), &nodes, &SchedulingSettings::default()).unwrap();
        assert_eq!(
            places(&result),
            ["node-a/disk-1", "node-c/disk-1", "node-b/disk-1"]
        );
    }

    #[test]
    fn hard_zone_anti_affinity_excludes_a_used_zone_but_never_a_zoneless_node() {
        let nodes = cluster(&[
            ("node-a", "zone-1", &[], ONE_DISK),
            ("node-b", "zone-1", &[], ONE_DISK),
            ("node-c", "zone-2", &[], ONE_DISK),
        ]);
        let settings = SchedulingSettings {
            replica_zone_soft_anti_affinity: false,
            ..SchedulingSettings::default()
        };
        let error = schedule(&request(10, 3), &nodes, &settings).unwrap_err();
        assert_eq!(error.placed, 2);
        assert_reason(&error, "node-b", "zone zone-1 already holds a replica");

        let nodes = cluster(&[
            ("node-a", "", &[], ONE_DISK),
            ("node-b", "", &[], ONE_DISK),
            ("node-c", "zone-2", &[], ONE_DISK),
        ]);
        let result = schedule(&request(10, 3), &nodes, &settings).unwrap();
        assert_eq!(
            places(&result),
            ["node-a/disk-1", "node-b/disk-1", "node-c/disk-1"]
        );
    }

    #[test]
    fn node_and_disk_selectors_filter_candidates() {
        let nodes = cluster(&[
            (
                "node-a",
                "",
                &["ssd"],
                &[("disk-1", 100, 100, 0, 0, &["slow"])],
            ),
            (
                "node-b",
                "",
                &["ssd"],
                &[("disk-1", 100, 100, 0, 0, &["fast", "nvme"])],
            ),
            ("node-c", "", &[], &[("disk-1", 100, 100, 0, 0, &["fast"])]),
        ]);
        let node_selector = strings(&["ssd"]);
        let disk_selector = strings(&["fast"]);
        let request = ScheduleRequest {
            node_selector: &node_selector,
            disk_selector: &disk_selector,
            ..request(10, 2)
        };
        let error = schedule(&request, &nodes, &SchedulingSettings::default()).unwrap_err();
        assert_eq!(error.placed, 1);
        assert_reason(&error, "node-a/disk-1", "missing disk tags [fast]");
        assert_reason(&error, "node-c", "missing node tags [ssd]");

        let request = ScheduleRequest {
            count: 1,
            ..request
        };
        let result = schedule(&request, &nodes, &SchedulingSettings::default()).unwrap();
        assert_eq!(places(&result), ["node-b/disk-1"]);
    }

    #[test]
    fn unready_and_disabled_nodes_and_disks_are_excluded_with_reasons() {
        let mut nodes = cluster(&[
            ("node-a", "", &[], ONE_DISK),
            ("node-b", "", &[], ONE_DISK),
            ("node-c", "", &[], ONE_DISK),
            ("node-d", "", &[], &[]),
            ("node-e", "", &[], ONE_DISK),
        ]);
        nodes[0].ready = false;
        nodes[1].allow_scheduling = false;
        nodes[2].disks[0].allow_scheduling = false;
        let error = schedule(&request(10, 2), &nodes, &SchedulingSettings::default()).unwrap_err();
        assert_eq!(error.placed, 1);
        assert_reason(&error, "node-a", "not ready");
        assert_reason(&error, "node-b", "scheduling disabled");
        assert_reason(&error, "node-c/disk-1", "scheduling disabled");
        assert_reason(&error, "node-d", "no disks");
        assert_reason(&error, "node-e", "hard node anti-affinity");
    }

    #[test]
    fn over_provisioning_percentage_caps_scheduled_bytes() {
        // 80 GiB already promised on a 100 GiB disk that is still mostly empty.
        let nodes = cluster(&[("node-a", "", &[], &[("disk-1", 100, 100, 0, 80, &[])])]);
        let error = schedule(&request(30, 1), &nodes, &SchedulingSettings::default()).unwrap_err();
        assert_reason(&error, "node-a/disk-1", "over-provisioning limit");
        assert!(
            error.reasons[0].contains("needs 30 GiB"),
            "{:?}",
            error.reasons
        );

        let settings = SchedulingSettings {
            over_provisioning_percentage: 200,
            ..SchedulingSettings::default()
        };
        let result = schedule(&request(30, 1), &nodes, &settings).unwrap();
        assert_eq!(places(&result), ["node-a/disk-1"]);
    }

    #[test]
    fn minimal_available_percentage_blocks_a_disk_that_would_drop_below() {
        // 40 GiB free of 100: a 20 GiB replica leaves 20 GiB, below the 25 GiB floor.
        let nodes = cluster(&[("node-a", "", &[], &[("disk-1", 100, 40, 0, 0, &[])])]);
        let error = schedule(&request(20, 1), &nodes, &SchedulingSettings::default()).unwrap_err();
        assert_reason(&error, "node-a/disk-1", "must keep 25 GiB");
        assert!(schedule(&request(15, 1), &nodes, &SchedulingSettings::default()).is_ok());
    }

    #[test]
    fn reserved_space_shrinks_the_over_provisioning_limit() {
        let nodes = cluster(&[("node-a", "", &[], &[("disk-1", 100, 100, 30, 0, &[])])]);
        assert!(schedule(&request(70, 1), &nodes, &SchedulingSettings::default()).is_ok());
        let error = schedule(&request(71, 1), &nodes, &SchedulingSettings::default()).unwrap_err();
        assert_reason(&error, "node-a/disk-1", "of 70 GiB over-provisioning limit");
    }

    #[test]
    fn replacement_replica_avoids_nodes_of_surviving_replicas() {
        let nodes = cluster(&[
            (
                "node-a",
                "zone-1",
                &[],
                &[("disk-1", 1000, 1000, 0, 0, &[])],
            ),
            (
                "node-b",
                "zone-2",
                &[],
                &[("disk-1", 1000, 1000, 0, 0, &[])],
            ),
            ("node-c", "zone-1", &[], ONE_DISK),
        ]);
        let existing = [at("node-a", "disk-1"), at("node-b", "disk-1")];
        let request = ScheduleRequest {
            existing: &existing,
            ..request(10, 1)
        };
        let result = schedule(&request, &nodes, &SchedulingSettings::default()).unwrap();
        assert_eq!(places(&result), ["node-c/disk-1"]);
    }

    #[test]
    fn replicas_placed_earlier_in_the_call_use_up_storage() {
        // Over-provisioning: 60 GiB fits once in a 100 GiB limit, not twice.
        let nodes = cluster(&[("node-a", "", &[], &[("disk-1", 100, 100, 0, 0, &[])])]);
        let error = schedule(&request(60, 2), &nodes, &soft_nodes()).unwrap_err();
        assert_eq!((error.placed, error.wanted), (1, 2));
        assert_reason(
            &error,
            "node-a/disk-1",
            "60 GiB of 100 GiB over-provisioning limit",
        );

        // Minimal available: 80 GiB free, 30 GiB each, must keep 25 GiB.
        let nodes = cluster(&[("node-a", "", &[], &[("disk-1", 100, 80, 0, 0, &[])])]);
        let error = schedule(&request(30, 2), &nodes, &soft_nodes()).unwrap_err();
        assert_eq!(error.placed, 1);
        assert_reason(
            &error,
            "node-a/disk-1",
            "50 GiB available, must keep 25 GiB",
        );
    }

    #[test]
    fn ties_go_to_more_free_bytes_then_to_names() {
        let nodes = cluster(&[
            ("node-b", "", &[], ONE_DISK),
            ("node-a", "", &[], ONE_DISK),
            (
                "node-c",
                "",
                &[],
                &[
                    ("disk-1", 100, 100, 0, 0, &[]),
                    ("disk-0", 100, 99, 0, 0, &[]),
                ],
            ),
        ]);
        let result = schedule(&request(10, 3), &nodes, &SchedulingSettings::default()).unwrap();
        assert_eq!(
            places(&result),
            ["node-a/disk-1", "node-b/disk-1", "node-c/disk-1"]
        );
    }

    #[test]
    fn zero_replicas_need_no_nodes() {
        assert_eq!(
            schedule(&request(10, 0), &[], &SchedulingSettings::default()),
            Ok(vec![])
        );
        let error = schedule(&request(10, 1), &[], &SchedulingSettings::default()).unwrap_err();
        assert_eq!(error.reasons, ["no nodes"]);
    }

    #[test]
    fn huge_sizes_do_not_panic() {
        let mut nodes = cluster(&[("node-a", "", &[], ONE_DISK)]);
        nodes[0].disks[0] = DiskCandidate {
            capacity: u64::MAX,
            available: u64::MAX,
            reserved: 0,
            scheduled: u64::MAX,
            ..nodes[0].disks[0].clone()
        };
        let settings = SchedulingSettings {
            over_provisioning_percentage: u64::MAX,
            minimal_available_percentage: u64::MAX,
            ..soft_nodes()
        };
        let huge = ScheduleRequest {
            size: u64::MAX,
            count: 3,
            ..request(0, 0)
        };
        assert!(schedule(&huge, &nodes, &settings).is_err());

        let generous = SchedulingSettings {
            minimal_available_percentage: 0,
            ..settings
        };
        let result = schedule(&ScheduleRequest { count: 1, ..huge }, &nodes, &generous).unwrap();
        assert_eq!(places(&result), ["node-a/disk-1"]);
        let error = schedule(&huge, &nodes, &generous).unwrap_err();
        assert_eq!(error.placed, 1);
        assert_reason(&error, "node-a/disk-1", "only 0 B available");
    }

    #[test]
    fn settings_default_to_longhorn_values_and_fill_missing_fields() {
        let settings = SchedulingSettings::default();
        assert!(!settings.replica_soft_anti_affinity);
        assert!(settings.replica_zone_soft_anti_affinity);
        assert!(settings.replica_disk_soft_anti_affinity);
        assert_eq!(settings.over_provisioning_percentage, 100);
        assert_eq!(settings.minimal_available_percentage, 25);
        let stored: SchedulingSettings =
            serde_json::from_str(r#"{"over_provisioning_percentage": 200}"#).unwrap();
        assert_eq!(
            stored,
            SchedulingSettings {
                over_provisioning_percentage: 200,
                ..settings
            }
        );
    }

    /// A mostly healthy, roomy disk, so that many cases succeed and get checked; the
    /// name is set by its node.
    fn arb_disk() -> impl Strategy<Value = DiskCandidate> {
        (
            prop::bool::weighted(0.9),
            prop::sample::subsequence(vec!["fast", "slow"], 0..=2),
            20u64..=100,
            30u64..=100,
            0u64..=20,
            0u64..=60,
        )
            .prop_map(
                |(allow, tags, capacity, free_pct, reserved_pct, scheduled_pct)| DiskCandidate {
                    name: String::new(),
                    tags: strings(&tags),
                    allow_scheduling: allow,
                    capacity,
                    available: capacity * free_pct / 100,
                    reserved: capacity * reserved_pct / 100,
                    scheduled: capacity * scheduled_pct / 100,
                },
            )
    }

    /// A node with up to three disks named `disk-0`, `disk-1`, ...; the name is set by
    /// its cluster.
    fn arb_node() -> impl Strategy<Value = NodeCandidate> {
        (
            prop::sample::select(vec!["", "zone-1", "zone-2"]),
            prop::sample::subsequence(vec!["ssd", "hdd"], 0..=2),
            prop::bool::weighted(0.9),
            prop::bool::weighted(0.9),
            prop::collection::vec(arb_disk(), 0..=3),
        )
            .prop_map(|(zone, tags, ready, allow, mut disks)| {
                for (index, disk) in disks.iter_mut().enumerate() {
                    disk.name = format!("disk-{index}");
                }
                NodeCandidate {
                    name: String::new(),
                    zone: zone.to_owned(),
                    tags: strings(&tags),
                    ready,
                    allow_scheduling: allow,
                    disks,
                }
            })
    }

    /// Up to six nodes named `node-0`, `node-1`, ..., so existing placements can refer
    /// to them (or to nodes that are missing).
    fn arb_cluster() -> impl Strategy<Value = Vec<NodeCandidate>> {
        prop::collection::vec(arb_node(), 1..=6).prop_map(|mut nodes| {
            for (index, node) in nodes.iter_mut().enumerate() {
                node.name = format!("node-{index}");
            }
            nodes
        })
    }

    fn arb_settings() -> impl Strategy<Value = SchedulingSettings> {
        (
            any::<bool>(),
            any::<bool>(),
            any::<bool>(),
            50u64..=300,
            0u64..=30,
        )
            .prop_map(|(node, zone, disk, over, minimal)| SchedulingSettings {
                replica_soft_anti_affinity: node,
                replica_zone_soft_anti_affinity: zone,
                replica_disk_soft_anti_affinity: disk,
                over_provisioning_percentage: over,
                minimal_available_percentage: minimal,
            })
    }

    proptest! {
        #[test]
        fn successful_schedules_keep_every_rule(
            nodes in arb_cluster(),
            settings in arb_settings(),
            size in 1u64..=30,
            count in 1usize..=4,
            existing in prop::collection::vec((0usize..7, 0usize..3), 0..=2),
            node_selector in prop::option::weighted(0.3, prop::sample::select(vec!["ssd"])),
            disk_selector in prop::option::weighted(0.3, prop::sample::select(vec!["fast"])),
        ) {
            let existing: Vec<Placement> = existing
                .into_iter()
                .map(|(node, disk)| at(&format!("node-{node}"), &format!("disk-{disk}")))
                .collect();
            let node_selector = strings(node_selector.as_slice());
            let disk_selector = strings(disk_selector.as_slice());
            let request = ScheduleRequest {
                volume: "vol-p",
                size,
                count,
                node_selector: &node_selector,
                disk_selector: &disk_selector,
                existing: &existing,
            };
            let result = match schedule(&request, &nodes, &settings) {
                Ok(result) => result,
                Err(error) => {
                    prop_assert!(error.placed < count);
                    prop_assert_eq!(error.wanted, count);
                    prop_assert!(!error.reasons.is_empty());
                    return Ok(());
                }
            };
            prop_assert_eq!(result.len(), count);

            // Greedy placement: asking for one fewer gives the same prefix.
            let fewer = ScheduleRequest { count: count - 1, ..request };
            let prefix = schedule(&fewer, &nodes, &settings).unwrap();
            prop_assert_eq!(&prefix[..], &result[..count - 1]);

            // Replay the placements, checking each against the state before it.
            let mut scheduled: HashMap<(String, String), u64> = HashMap::new();
            let mut available: HashMap<(String, String), u64> = HashMap::new();
            let mut taken = existing.clone();
            let zone_of = |name: &str| {
                nodes.iter().find(|node| node.name == name).map(|node| node.zone.clone())
            };
            for placement in &result {
                let node = nodes.iter().find(|node| node.name == placement.node).unwrap();
                let disk = node.disks.iter().find(|disk| disk.name == placement.disk).unwrap();
                prop_assert!(node.ready && node.allow_scheduling && disk.allow_scheduling);
                prop_assert!(node_selector.iter().all(|tag| node.tags.contains(tag)));
                prop_assert!(disk_selector.iter().all(|tag| disk.tags.contains(tag)));

                let key = (node.name.clone(), disk.name.clone());
                let now_scheduled = scheduled.entry(key.clone()).or_insert(disk.scheduled);
                let now_available = available.entry(key).or_insert(disk.available);
                *now_scheduled += size;
                let limit = (disk.capacity - disk.reserved)
                    * settings.over_provisioning_percentage / 100;
                prop_assert!(*now_scheduled <= limit, "{} > limit {}", now_scheduled, limit);
                prop_assert!(*now_available >= size);
                *now_available -= size;
                let must_keep = disk.capacity * settings.minimal_available_percentage / 100;
                prop_assert!(*now_available >= must_keep);

                if !settings.replica_soft_anti_affinity {
                    prop_assert!(taken.iter().all(|other| other.node != placement.node));
                }
                if !settings.replica_disk_soft_anti_affinity {
                    prop_assert!(!taken.contains(placement));
                }
                if !settings.replica_zone_soft_anti_affinity && !node.zone.is_empty() {
                    let same_zone = Some(node.zone.clone());
                    prop_assert!(taken.iter().all(|other| zone_of(&other.node) != same_zone));
                }
                taken.push(placement.clone());
            }
        }
    }
}
