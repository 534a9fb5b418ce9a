//! The location map: for every block of the volume, which layer of the active chain holds
//! its newest data.
//!
//! It is a B-tree of non-overlapping extents keyed by first block, so its memory follows
//! the number of extents (fragmentation), not the volume size. Each entry packs the
//! extent's end, owning layer and a "something older lies beneath" bit into one `u64`
//! (16 bytes per extent plus B-tree overhead). Blocks covered by no extent are held by no
//! layer and read as zeros.

use std::collections::{BTreeMap, BTreeSet};

/// Largest block number the packed entry can hold: 2^40 blocks of 4 KiB is 4 PiB.
pub const MAX_BLOCKS: u64 = (1 << END_BITS) - 1;
/// Largest number of layers in one chain the packed entry can address.
pub const MAX_LAYERS: u32 = 1 << LAYER_BITS;

const END_BITS: u32 = 40;
const LAYER_BITS: u32 = 23;

/// Which layer holds a range, and whether an older layer of the chain also holds data
/// there (so a trim must write zeros rather than punch a hole).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner {
    /// Index of the layer in the active chain (0 is the oldest snapshot).
    pub layer: u32,
    /// True when some older layer may also hold data here. Never false when one does;
    /// may stay true after a purge removed the older data (that only costs trim space).
    pub has_lower: bool,
}

/// A gap-free piece of a lookup: blocks `start..end` and who holds them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    /// First block.
    pub start: u64,
    /// One past the last block.
    pub end: u64,
    /// The layer holding the blocks, or `None` when no layer does (zeros).
    pub owner: Option<Owner>,
}

/// Extent end (block), layer and has-lower bit in one word.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Packed(u64);

impl Packed {
    fn new(end: u64, owner: Owner) -> Self {
        debug_assert!(end <= MAX_BLOCKS && owner.layer < MAX_LAYERS);
        Packed(end | (u64::from(owner.layer) << END_BITS) | (u64::from(owner.has_lower) << 63))
    }

    fn end(self) -> u64 {
        self.0 & MAX_BLOCKS
    }

    #[allow(clippy::cast_possible_truncation, reason = "masked to LAYER_BITS < 32")]
    fn owner(self) -> Owner {
        let layer = (self.0 >> END_BITS) & u64::from(MAX_LAYERS - 1);
        Owner {
            layer: layer as u32,
            has_lower: self.0 >> 63 == 1,
        }
    }
}

/// The extent map of one chain. See the module documentation.
#[derive(Default, Clone)]
pub struct ExtentMap {
    tree: BTreeMap<u64, Packed>,
}

impl ExtentMap {
    /// Builds the map of a chain from each layer's data extents (in blocks, sorted,
    /// non-overlapping), oldest layer first. Newer layers win; runs in one sweep.
    pub fn build(layers: &[Vec<(u64, u64)>]) -> Self {
        let mut events: Vec<(u64, bool, u32)> = Vec::new();
        for (layer, extents) in layers.iter().enumerate() {
            let layer = u32::try_from(layer).unwrap_or(u32::MAX);
            for &(start, end) in extents {
                if start < end {
                    // `false` sorts first: at a shared boundary ends apply before starts.
                    events.push((start, true, layer));
                    events.push((end, false, layer));
                }
            }
        }
        events.sort_unstable();
        let mut active: BTreeSet<u32> = BTreeSet::new();
        let mut entries: Vec<(u64, u64, Owner)> = Vec::new();
        let mut position = 0;
        for (at, is_start, layer) in events {
            if at > position {
                if let Some(&top) = active.last() {
                    let owner = Owner {
                        layer: top,
                        has_lower: active.len() > 1,
                    };
                    push_merged(&mut entries, position, at, owner);
                }
                position = at;
            }
            if is_start {
                active.insert(layer);
            } else {
                active.remove(&layer);
            }
        }
        ExtentMap {
            tree: entries
                .into_iter()
                .map(|(s, e, o)| (s, Packed::new(e, o)))
                .collect(),
        }
    }

    /// Number of extents held (what the map's memory follows).
    pub fn len(&self) -> usize {
        self.tree.len()
    }

    /// True when no block is held by any layer.
    pub fn is_empty(&self) -> bool {
        self.tree.is_empty()
    }

    /// Describes blocks `start..end` as gap-free segments in order.
    pub fn segments(&self, start: u64, end: u64) -> Vec<Segment> {
        let mut out = Vec::new();
        let mut position = start;
        for (s, e, owner) in self.overlapping(start, end) {
            let s = s.max(start);
            if s > position {
                out.push(Segment {
                    start: position,
                    end: s,
                    owner: None,
                });
            }
            let e = e.min(end);
            out.push(Segment {
                start: s,
                end: e,
                owner: Some(owner),
            });
            position = e;
        }
        if position < end {
            out.push(Segment {
                start: position,
                end,
                owner: None,
            });
        }
        out
    }

    /// True when every block of `start..end` is held by `layer`.
    pub fn all_owned_by(&self, start: u64, end: u64, layer: u32) -> bool {
        let mut position = start;
        for (s, e, owner) in self.overlapping(start, end) {
            if s > position || owner.layer != layer {
                return false;
            }
            position = e;
        }
        position >= end
    }

    /// Extents (start, end) held by `layer`, in order.
    pub fn extents_of(&self, layer: u32) -> Vec<(u64, u64)> {
        self.tree
            .iter()
            .filter(|(_, p)| p.owner().layer == layer)
            .map(|(&s, p)| (s, p.end()))
            .collect()
    }

    /// Makes `owner` hold blocks `start..end` (`None`: no layer holds them).
    pub fn set(&mut self, start: u64, end: u64, owner: Option<Owner>) {
        if start >= end {
            return;
        }
        // Cut the extent that starts before `start` and reaches into the range.
        if let Some((&s, &p)) = self.tree.range(..start).next_back() {
            if p.end() > start {
                self.tree.insert(s, Packed::new(start, p.owner()));
                if p.end() > end {
                    self.tree.insert(end, Packed::new(p.end(), p.owner()));
                }
            }
        }
        // Drop every extent starting inside the range, keeping the tail of the last one.
        let inside: Vec<u64> = self.tree.range(start..end).map(|(&s, _)| s).collect();
        for s in inside {
            if let Some(p) = self.tree.remove(&s) {
                if p.end() > end {
                    self.tree.insert(end, Packed::new(p.end(), p.owner()));
                }
            }
        }
        let Some(owner) = owner else { return };
        let mut start = start;
        let mut end = end;
        if let Some((&s, &p)) = self.tree.range(..start).next_back() {
            if p.end() == start && p.owner() == owner {
                start = s;
            }
        }
        if let Some(&p) = self.tree.get(&end) {
            if p.owner() == owner {
                self.tree.remove(&end);
                end = p.end();
            }
        }
        self.tree.insert(start, Packed::new(end, owner));
    }

    /// Renumbers after layer `removed` left the chain: every layer above it moves down one.
    /// Extents it held are taken over by the layer that replaced it at the same index.
    pub fn remove_layer(&mut self, removed: u32) {
        let mut entries: Vec<(u64, u64, Owner)> = Vec::with_capacity(self.tree.len());
        for (&s, p) in &self.tree {
            let mut owner = p.owner();
            if owner.layer > removed {
                owner.layer -= 1;
            }
            push_merged(&mut entries, s, p.end(), owner);
        }
        self.tree = entries
            .into_iter()
            .map(|(s, e, o)| (s, Packed::new(e, o)))
            .collect();
    }

    /// Extents overlapping `start..end`, unclipped, in order.
    fn overlapping(&self, start: u64, end: u64) -> impl Iterator<Item = (u64, u64, Owner)> + '_ {
        let before = self
            .tree
            .range(..start)
            .next_back()
            .filter(|(_, p)| p.end() > start)
            .map(|(&s, &p)| (s, p));
        let inside = self.tree.range(start..end).map(|(&s, &p)| (s, p));
        before
            .into_iter()
            .chain(inside)
            .map(|(s, p)| (s, p.end(), p.owner()))
    }
}

fn push_merged(entries: &mut Vec<(u64, u64, Owner)>, start: u64, end: u64, owner: Owner) {
    if let Some(last) = entries.last_mut() {
        if last.1 == start && last.2 == owner {
            last.1 = end;
            return;
        }
    }
    entries.push((start, end, owner));
}

#[cfg(test)]
#[allow(clippy::cast_possible_truncation, reason = "small test values")]
mod tests {
    use super::*;

    fn owner(layer: u32) -> Option<Owner> {
        Some(Owner {
            layer,
            has_lower: false,
        })
    }

    /// A block-per-entry reference model of the map.
    fn model_of(map: &ExtentMap, blocks: u64) -> Vec<Option<Owner>> {
        let mut out = Vec::new();
        for seg in map.segments(0, blocks) {
            for _ in seg.start..seg.end {
                out.push(seg.owner);
            }
        }
        out
    }

    #[test]
    fn set_splits_overwrites_and_merges() {
        let mut map = ExtentMap::default();
        map.set(0, 100, owner(0));
        map.set(10, 20, owner(1));
        map.set(20, 30, owner(1));
        assert_eq!(map.len(), 3, "the two layer-1 writes merge into one extent");
        map.set(5, 95, None);
        assert_eq!(
            map.segments(0, 100),
            vec![
                Segment {
                    start: 0,
                    end: 5,
                    owner: owner(0)
                },
                Segment {
                    start: 5,
                    end: 95,
                    owner: None
                },
                Segment {
                    start: 95,
                    end: 100,
                    owner: owner(0)
                },
            ]
        );
        map.set(5, 95, owner(0));
        assert_eq!(map.len(), 1);
        assert!(map.all_owned_by(0, 100, 0));
        assert!(!map.all_owned_by(0, 101, 0));
    }

    #[test]
    fn random_sets_match_a_per_block_model() {
        let blocks = 64;
        let mut model = vec![None; 64];
        let mut map = ExtentMap::default();
        let mut seed = 12345u64;
        for _ in 0..5000 {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let start = (seed >> 33) % blocks;
            let end = (start + (seed >> 20) % 9).min(blocks);
            let value = match (seed >> 8) % 4 {
                0 => None,
                n => Some(Owner {
                    layer: n as u32,
                    has_lower: n == 2,
                }),
            };
            map.set(start, end, value);
            for b in start..end {
                model[b as usize] = value;
            }
            assert_eq!(model_of(&map, blocks), model);
        }
    }

    #[test]
    fn build_lets_newer_layers_win_and_marks_lower_data() {
        let map = ExtentMap::build(&[vec![(0, 10)], vec![(5, 15)], vec![]]);
        assert_eq!(
            map.segments(0, 20),
            vec![
                Segment {
                    start: 0,
                    end: 5,
                    owner: Some(Owner {
                        layer: 0,
                        has_lower: false
                    })
                },
                Segment {
                    start: 5,
                    end: 10,
                    owner: Some(Owner {
                        layer: 1,
                        has_lower: true
                    })
                },
                Segment {
                    start: 10,
                    end: 15,
                    owner: Some(Owner {
                        layer: 1,
                        has_lower: false
                    })
                },
                Segment {
                    start: 15,
                    end: 20,
                    owner: None
                },
            ]
        );
    }

    #[test]
    fn remove_layer_renumbers_and_merges() {
        let mut map = ExtentMap::build(&[vec![(0, 4)], vec![(4, 8)], vec![(8, 9)]]);
        map.remove_layer(0);
        assert_eq!(map.len(), 2);
        assert!(map.all_owned_by(0, 8, 0));
        assert_eq!(map.extents_of(1), vec![(8, 9)]);
    }

    #[test]
    fn packed_entries_round_trip_at_the_limits() {
        let owner = Owner {
            layer: MAX_LAYERS - 1,
            has_lower: true,
        };
        let packed = Packed::new(MAX_BLOCKS, owner);
        assert_eq!(packed.end(), MAX_BLOCKS);
        assert_eq!(packed.owner(), owner);
    }
}
