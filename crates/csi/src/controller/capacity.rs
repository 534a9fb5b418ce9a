//! GetCapacity's arithmetic: what volumes of N replicas can get from the free disks.

use super::GRANULARITY;

/// What volumes of `replicas` replicas can get from these free bytes (per node, per
/// disk): the free space shared among each volume's replicas, and the largest volume
/// whose every replica finds a disk — each on another node, unless `share_nodes` (soft
/// anti-affinity lets replicas share a node, even a disk).
pub(super) fn capacity_for(
    free_by_node: &[Vec<u64>],
    replicas: usize,
    share_nodes: bool,
) -> (u64, u64) {
    let replicas = replicas.max(1);
    let copies = u64::try_from(replicas).unwrap_or(u64::MAX);
    let total: u64 = free_by_node.iter().flatten().sum();
    let largest = if share_nodes {
        // The largest size S with room for `replicas` copies of S across the disks.
        let disks: Vec<u64> = free_by_node.iter().flatten().copied().collect();
        disks
            .iter()
            .flat_map(|free| (1..=copies).map(move |k| free / k))
            .filter(|size| *size > 0 && disks.iter().map(|free| free / size).sum::<u64>() >= copies)
            .max()
            .unwrap_or(0)
    } else {
        let mut best_per_node: Vec<u64> = free_by_node
            .iter()
            .map(|disks| disks.iter().copied().max().unwrap_or(0))
            .collect();
        best_per_node.sort_unstable_by(|a, b| b.cmp(a));
        best_per_node.get(replicas - 1).copied().unwrap_or(0)
    };
    let largest = largest / GRANULARITY * GRANULARITY;
    (total / copies, largest)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1 << 30;

    #[test]
    fn capacity_counts_every_replica() {
        // Three nodes: 10, 6 (two disks: 6 and 2) and 4 GiB free.
        let nodes = vec![vec![10 * GIB], vec![6 * GIB, 2 * GIB], vec![4 * GIB]];
        // One replica: everything, and the largest disk.
        assert_eq!(capacity_for(&nodes, 1, false), (22 * GIB, 10 * GIB));
        // Three on distinct nodes: a third of it, and the third-best node bounds it.
        assert_eq!(capacity_for(&nodes, 3, false), (22 * GIB / 3, 4 * GIB));
        // Four cannot have four nodes.
        assert_eq!(capacity_for(&nodes, 4, false).1, 0);
        // Sharing nodes: four copies of 4 GiB fit (10 → 2, 6 → 1, 4 → 1).
        assert_eq!(capacity_for(&nodes, 4, true).1, 4 * GIB);
        assert_eq!(capacity_for(&[], 2, true), (0, 0));
    }
}
