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
use std::collections::{BTreeSet, HashMap};

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
    /// Its replicas are being moved elsewhere, so it takes no new ones.
    #[serde(default)]
    pub evicting: bool,
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
    /// Its replicas are being moved elsewhere, so it takes no new ones.
    #[serde(default)]
    pub evicting: bool,
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
    /// The kinds of those reasons, for [`ScheduleError::remedies`].
    pub causes: BTreeSet<Cause>,
}

/// A kind of reason a node or disk was excluded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Cause {
    /// The cluster has no nodes, or a node no disks.
    NoCapacity,
    /// A node is down.
    NotReady,
    /// A node or disk has scheduling turned off.
    SchedulingDisabled,
    /// A node or disk is being evicted.
    Evicting,
    /// The volume's node or disk selector names tags it lacks.
    MissingTags,
    /// Hard node anti-affinity: the node holds a replica of the volume.
    NodeAntiAffinity,
    /// Hard zone anti-affinity.
    ZoneAntiAffinity,
    /// Hard disk anti-affinity.
    DiskAntiAffinity,
    /// Too little space would be left, or scheduled bytes would pass the
    /// over-provisioning limit.
    Storage,
}

impl ScheduleError {
    /// What would let the replicas be placed, one line per kind of reason: the setting
    /// (with its value now) or the command that changes it.
    pub fn remedies(&self, settings: &SchedulingSettings) -> Vec<String> {
        self.causes
            .iter()
            .map(|cause| match cause {
                Cause::NoCapacity => "register a node with a disk (`node update NODE --disk NAME=PATH`)".to_owned(),
                Cause::NotReady => "wait for the nodes that are down, or use fewer replicas".to_owned(),
                Cause::SchedulingDisabled => {
                    "allow scheduling on a node (`node update NODE --scheduling true`)".to_owned()
                }
                Cause::Evicting => {
                    "add a node or disk for the replicas to move to, or stop an eviction (`node update NODE --evict false` or `--evict-disk DISK=false`)".to_owned()
                }
                Cause::MissingTags => {
                    "give nodes or disks the selected tags (`node update NODE --tag T`), or select fewer".to_owned()
                }
                Cause::NodeAntiAffinity => format!(
                    "fewer replicas, more nodes, or setting replica_soft_anti_affinity true (now {}) to let replicas share a node",
                    settings.replica_soft_anti_affinity
                ),
                Cause::ZoneAntiAffinity => format!(
                    "setting replica_zone_soft_anti_affinity true (now {})",
                    settings.replica_zone_soft_anti_affinity
                ),
                Cause::DiskAntiAffinity => format!(
                    "setting replica_disk_soft_anti_affinity true (now {})",
                    settings.replica_disk_soft_anti_affinity
                ),
                Cause::Storage => format!(
                    "a smaller size, more disk space, or settings minimal_available_percentage (now {}) and over_provisioning_percentage (now {})",
                    settings.minimal_available_percentage, settings.over_provisioning_percentage
                ),
            })
            .collect()
    }
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
            .map_err(|problems| ScheduleError {
                volume: request.volume.to_owned(),
                placed: placed.len(),
                wanted: request.count,
                reasons: problems.reasons,
                causes: problems.causes,
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
) -> Result<(usize, usize), Problems> {
    // Smallest wins: fewest replicas in zone, node, disk; most bytes left; then names.
    type Rank<'a> = (usize, usize, usize, Reverse<u64>, &'a str, &'a str);
    let mut best: Option<(Rank<'_>, usize, usize)> = None;
    let mut excluded = Problems::default();

    if nodes.is_empty() {
        excluded.add("no nodes", [Cause::NoCapacity]);
    }
    for (node_index, node) in nodes.iter().enumerate() {
        let problems = node_problems(request, node, replicas, settings);
        if !problems.is_empty() {
            excluded.add_all(&node.name, &problems);
            continue;
        }
        if node.disks.is_empty() {
            excluded.add(format!("{}: no disks", node.name), [Cause::NoCapacity]);
            continue;
        }
        for (disk_index, disk) in node.disks.iter().enumerate() {
            let disk_usage = usage[node_index][disk_index];
            let problems = disk_problems(request, node, disk, disk_usage, replicas, settings);
            if !problems.is_empty() {
                excluded.add_all(&format!("{}/{}", node.name, disk.name), &problems);
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
        .ok_or(excluded)
}

/// Why every node and disk was excluded: a line each, and the kinds of reason.
#[derive(Default)]
struct Problems {
    reasons: Vec<String>,
    causes: BTreeSet<Cause>,
}

impl Problems {
    fn add(&mut self, reason: impl Into<String>, causes: impl IntoIterator<Item = Cause>) {
        self.reasons.push(reason.into());
        self.causes.extend(causes);
    }

    /// `subject: why, why` for the problems of one node or disk.
    fn add_all(&mut self, subject: &str, problems: &[(Cause, String)]) {
        let whys: Vec<&str> = problems.iter().map(|(_, why)| why.as_str()).collect();
        self.add(
            format!("{subject}: {}", whys.join(", ")),
            problems.iter().map(|(cause, _)| *cause),
        );
    }
}

/// Why no disk of this node may take the replica; empty if the node is fine.
fn node_problems(
    request: &ScheduleRequest<'_>,
    node: &NodeCandidate,
    replicas: &VolumeReplicas<'_>,
    settings: &SchedulingSettings,
) -> Vec<(Cause, String)> {
    let mut problems = Vec::new();
    if !node.ready {
        problems.push((Cause::NotReady, "not ready".to_owned()));
    }
    if !node.allow_scheduling {
        problems.push((Cause::SchedulingDisabled, "scheduling disabled".to_owned()));
    }
    if node.evicting {
        problems.push((Cause::Evicting, "being evicted".to_owned()));
    }
    let missing = missing_tags(request.node_selector, &node.tags);
    if !missing.is_empty() {
        problems.push((
            Cause::MissingTags,
            format!("missing node tags [{}]", missing.join(", ")),
        ));
    }
    if !settings.replica_soft_anti_affinity && replicas.on_node(&node.name) > 0 {
        problems.push((
            Cause::NodeAntiAffinity,
            "already holds a replica (hard node anti-affinity)".to_owned(),
        ));
    }
    if !settings.replica_zone_soft_anti_affinity
        && !node.zone.is_empty()
        && replicas.in_zone_of(node) > 0
    {
        problems.push((
            Cause::ZoneAntiAffinity,
            format!(
                "zone {} already holds a replica (hard zone anti-affinity)",
                node.zone
            ),
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
) -> Vec<(Cause, String)> {
    let mut problems = Vec::new();
    if !disk.allow_scheduling {
        problems.push((Cause::SchedulingDisabled, "scheduling disabled".to_owned()));
    }
    if disk.evicting {
        problems.push((Cause::Evicting, "being evicted".to_owned()));
    }
    let missing = missing_tags(request.disk_selector, &disk.tags);
    if !missing.is_empty() {
        problems.push((
            Cause::MissingTags,
            format!("missing disk tags [{}]", missing.join(", ")),
        ));
    }
    if !settings.replica_disk_soft_anti_affinity && replicas.on_disk(&node.name, &disk.name) > 0 {
        problems.push((
            Cause::DiskAntiAffinity,
            "already holds a replica (hard disk anti-affinity)".to_owned(),
        ));
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
) -> Option<(Cause, String)> {
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
        Some((
            Cause::Storage,
            format!(
                "insufficient storage (needs {}: {})",
                format_size(size_wide),
                details.join("; ")
            ),
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
mod tests;
