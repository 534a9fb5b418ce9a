//! The scheduler's placement rules, each against hand-built nodes and replicas.

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
            evicting: false,
            disks: disks
                .iter()
                .map(
                    |(name, capacity, available, reserved, scheduled, tags)| DiskCandidate {
                        name: (*name).to_owned(),
                        tags: strings(tags),
                        allow_scheduling: true,
                        evicting: false,
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
        prop::bool::weighted(0.1),
    )
        .prop_map(
            |(allow, tags, capacity, free_pct, reserved_pct, scheduled_pct, evicting)| {
                DiskCandidate {
                    name: String::new(),
                    tags: strings(&tags),
                    allow_scheduling: allow,
                    evicting,
                    capacity,
                    available: capacity * free_pct / 100,
                    reserved: capacity * reserved_pct / 100,
                    scheduled: capacity * scheduled_pct / 100,
                }
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
        prop::bool::weighted(0.1),
        prop::collection::vec(arb_disk(), 0..=3),
    )
        .prop_map(|(zone, tags, ready, allow, evicting, mut disks)| {
            for (index, disk) in disks.iter_mut().enumerate() {
                disk.name = format!("disk-{index}");
            }
            NodeCandidate {
                name: String::new(),
                zone: zone.to_owned(),
                tags: strings(&tags),
                ready,
                allow_scheduling: allow,
                evicting,
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
            prop_assert!(!node.evicting && !disk.evicting);
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

#[test]
fn each_kind_of_reason_names_what_would_place_the_replicas() {
    let mut nodes = cluster(&[
        ("node-a", "", &[], ONE_DISK),
        ("node-b", "", &[], &[("disk-1", 100, 10, 0, 0, &[])]),
        ("node-c", "", &[], ONE_DISK),
    ]);
    nodes[2].ready = false;
    let settings = SchedulingSettings::default();
    let error = schedule(&request(20, 3), &nodes, &settings).unwrap_err();
    assert_eq!(
        error.causes,
        BTreeSet::from([Cause::NotReady, Cause::NodeAntiAffinity, Cause::Storage]),
        "{:?}",
        error.reasons
    );
    let remedies = error.remedies(&settings);
    assert_eq!(remedies.len(), 3, "{remedies:?}");
    assert!(
        remedies
            .iter()
            .any(|r| r.contains("replica_soft_anti_affinity true (now false)")),
        "{remedies:?}"
    );
    assert!(
        remedies
            .iter()
            .any(|r| r.contains("minimal_available_percentage (now 25)")),
        "{remedies:?}"
    );

    let tagged = ScheduleRequest {
        node_selector: &[String::new()],
        ..request(1, 1)
    };
    let error = schedule(
        &tagged,
        &cluster(&[("node-a", "", &[], ONE_DISK)]),
        &settings,
    )
    .unwrap_err();
    assert_eq!(error.causes, BTreeSet::from([Cause::MissingTags]));
    let error = schedule(&request(1, 1), &[], &settings).unwrap_err();
    assert_eq!(error.causes, BTreeSet::from([Cause::NoCapacity]));
}
