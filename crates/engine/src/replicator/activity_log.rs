//! What the engine persists on its replicas so that, after a crash, it knows which
//! replicas hold every acknowledged write and where they may differ — without writing
//! anything per write. See docs/consistency.md for the design and its proof sketch.
//!
//! - **Epoch and members.** Each open of the volume and each change of the set of
//!   in-sync (RW) replicas raises the epoch and records the members' ids on every
//!   active replica. A replica that misses a write is dropped from the members before
//!   any write it missed is acknowledged, so a replica outside the newest members list
//!   is known stale.
//! - **Dirty regions** (an activity log, after DRBD's). Before a write reaches a region
//!   the record does not list as dirty, the region is added and the record persisted;
//!   writes to regions already listed cost nothing. After a flush that every replica
//!   acknowledged, regions with no write since are dropped from the record (lazily, at
//!   most once a second). After a crash only the listed regions can differ.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use shorthorn_block::ConsistencyRecord;

/// Size of one dirty region: writes to a region already marked dirty cost nothing
/// extra; recovery compares whole regions.
pub const REGION_SIZE: u64 = 4 << 20;

/// Shortest time between two shrinks of the persisted dirty set.
const SHRINK_INTERVAL: Duration = Duration::from_secs(1);

/// The regions `[offset, offset + len)` touches.
pub fn regions_of(offset: u64, len: u64) -> std::ops::Range<u64> {
    let first = offset / REGION_SIZE;
    let last = (offset + len.max(1)).div_ceil(REGION_SIZE);
    first..last
}

/// The regions covering the byte ranges `(offset, len)`.
pub fn regions_covering(ranges: impl IntoIterator<Item = (u64, u64)>) -> BTreeSet<u64> {
    let mut regions = BTreeSet::new();
    for (offset, len) in ranges {
        if len > 0 {
            regions.extend(regions_of(offset, len));
        }
    }
    regions
}

/// The record to write on every active replica.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordContent {
    /// Current epoch.
    pub epoch: u64,
    /// Ids of the RW replicas.
    pub members: Vec<String>,
    /// Dirty regions.
    pub dirty: Vec<u64>,
    /// Whether the volume was closed cleanly.
    pub clean: bool,
}

impl RecordContent {
    /// As a replica record (the replica keeps its own id). A clean record lists no
    /// dirty regions.
    pub fn record(self) -> ConsistencyRecord {
        ConsistencyRecord {
            replica_id: String::new(),
            epoch: self.epoch,
            members: self.members,
            region_size: REGION_SIZE,
            dirty_regions: if self.clean { Vec::new() } else { self.dirty },
            clean: self.clean,
        }
    }
}

/// In-memory state behind the persisted record. See the module documentation.
#[derive(Debug)]
struct LogState {
    epoch: u64,
    members: BTreeSet<String>,
    /// Regions that must be listed as dirty before the write that needs them proceeds.
    dirty: BTreeSet<u64>,
    /// Writes in flight per region (a region with writes in flight is never dropped).
    in_flight: BTreeMap<u64, u32>,
    /// Per region, the write sequence number at which its last write completed.
    last_completed: BTreeMap<u64, u64>,
    write_seq: u64,
    /// Raised at each change that must reach the replicas before a dependent write or
    /// acknowledgement.
    version: u64,
    persisted_version: u64,
    /// Version of the last membership change: acknowledgements wait until it is
    /// persisted.
    membership_version: u64,
    /// Regions each failed replica (by id) missed since it failed: what re-adding it
    /// must copy.
    missed: BTreeMap<String, BTreeSet<u64>>,
    last_shrink: Instant,
}

/// The engine's side of the consistency record. See the module documentation.
#[derive(Debug)]
pub struct ActivityLog {
    state: Mutex<LogState>,
    /// Serializes writes of the record (each writes the newest state).
    pub(crate) persist_lock: tokio::sync::Mutex<()>,
}

/// What a write must wait for before it is sent.
#[must_use]
pub struct WriteTicket {
    regions: std::ops::Range<u64>,
    /// The version that must be persisted first, if the write dirtied a new region.
    pub needs: Option<u64>,
}

impl ActivityLog {
    /// A log at `epoch` with `members` in sync and nothing dirty.
    pub fn new(epoch: u64, members: impl IntoIterator<Item = String>) -> Self {
        ActivityLog {
            state: Mutex::new(LogState {
                epoch,
                members: members.into_iter().collect(),
                dirty: BTreeSet::new(),
                in_flight: BTreeMap::new(),
                last_completed: BTreeMap::new(),
                write_seq: 0,
                version: 1,
                persisted_version: 0,
                membership_version: 1,
                missed: BTreeMap::new(),
                last_shrink: Instant::now(),
            }),
            persist_lock: tokio::sync::Mutex::new(()),
        }
    }

    /// Registers a write to `[offset, offset + len)` about to be sent. Every failed
    /// replica gets the regions added to what it missed.
    pub fn begin_write(&self, offset: u64, len: u64) -> WriteTicket {
        let regions = regions_of(offset, len);
        let mut state = self.state.lock();
        let mut added = false;
        for region in regions.clone() {
            *state.in_flight.entry(region).or_default() += 1;
            added |= state.dirty.insert(region);
        }
        for missed in state.missed.values_mut() {
            missed.extend(regions.clone());
        }
        let needs = if added {
            state.version += 1;
            Some(state.version)
        } else if state.persisted_version < state.version {
            // Another request added one of these regions and its record may not be on
            // disk yet.
            Some(state.version)
        } else {
            None
        };
        WriteTicket { regions, needs }
    }

    /// Records that the write of `ticket` completed (successfully or not).
    pub fn end_write(&self, ticket: WriteTicket) {
        let mut state = self.state.lock();
        state.write_seq += 1;
        let seq = state.write_seq;
        for region in ticket.regions {
            if let Some(count) = state.in_flight.get_mut(&region) {
                *count -= 1;
                if *count == 0 {
                    state.in_flight.remove(&region);
                }
            }
            state.last_completed.insert(region, seq);
        }
    }

    /// The write sequence number now; a flush issued now covers writes completed up to it.
    pub fn flush_mark(&self) -> u64 {
        self.state.lock().write_seq
    }

    /// After a flush issued at `mark` succeeded on every replica: drops from the dirty
    /// set the regions with no write since, if the last shrink is a while ago. Returns
    /// the version to persist when it dropped any.
    pub fn flushed(&self, mark: u64) -> Option<u64> {
        let mut state = self.state.lock();
        if state.last_shrink.elapsed() < SHRINK_INTERVAL {
            return None;
        }
        let clean: Vec<u64> = state
            .dirty
            .iter()
            .copied()
            .filter(|r| {
                !state.in_flight.contains_key(r)
                    && state.last_completed.get(r).is_none_or(|&seq| seq <= mark)
            })
            .collect();
        if clean.is_empty() {
            return None;
        }
        for region in &clean {
            state.dirty.remove(region);
            state.last_completed.remove(region);
        }
        state.last_shrink = Instant::now();
        state.version += 1;
        Some(state.version)
    }

    /// Drops replica `id` from the members (it missed or may miss a write) and starts
    /// tracking what it misses. Returns whether it was a member.
    pub fn member_failed(&self, id: &str) -> bool {
        let mut state = self.state.lock();
        let dirty = state.dirty.clone();
        state.missed.entry(id.to_owned()).or_default().extend(dirty);
        if !state.members.remove(id) {
            return false;
        }
        state.epoch += 1;
        state.version += 1;
        state.membership_version = state.version;
        true
    }

    /// Adds replica `id` to the members (a rebuild finished) and forgets what it missed.
    pub fn member_joined(&self, id: &str) -> u64 {
        let mut state = self.state.lock();
        state.missed.remove(id);
        state.members.insert(id.to_owned());
        state.epoch += 1;
        state.version += 1;
        state.membership_version = state.version;
        state.version
    }

    /// Forgets replica `id` entirely (removed from the volume).
    pub fn forget(&self, id: &str) -> u64 {
        let mut state = self.state.lock();
        state.missed.remove(id);
        if state.members.remove(id) {
            state.epoch += 1;
            state.version += 1;
            state.membership_version = state.version;
        }
        state.version
    }

    /// Starts over at `epoch` with `members` (salvage), keeping nothing dirty.
    pub fn reset(&self, epoch: u64, members: impl IntoIterator<Item = String>) {
        let mut state = self.state.lock();
        state.epoch = epoch;
        state.members = members.into_iter().collect();
        state.dirty.clear();
        state.missed.clear();
        state.version += 1;
        state.membership_version = state.version;
    }

    /// Regions replica `id` missed since it failed, if this engine saw it fail.
    pub fn missed(&self, id: &str) -> Option<BTreeSet<u64>> {
        self.state.lock().missed.get(id).cloned()
    }

    /// Adds regions to what replica `id` missed (a rebuild that stopped before
    /// reaching them).
    pub fn add_missed(&self, id: &str, regions: impl IntoIterator<Item = u64>) {
        let mut state = self.state.lock();
        let dirty = state.dirty.clone();
        let missed = state.missed.entry(id.to_owned()).or_default();
        missed.extend(regions);
        missed.extend(dirty);
    }

    /// The version acknowledgements must see persisted (the last membership change).
    pub fn membership_version(&self) -> u64 {
        self.state.lock().membership_version
    }

    /// Whether `version` is already on the replicas.
    pub fn is_persisted(&self, version: u64) -> bool {
        self.state.lock().persisted_version >= version
    }

    /// The newest state to write, with its version.
    pub fn content(&self, clean: bool) -> (u64, RecordContent) {
        let state = self.state.lock();
        (
            state.version,
            RecordContent {
                epoch: state.epoch,
                members: state.members.iter().cloned().collect(),
                dirty: state.dirty.iter().copied().collect(),
                clean,
            },
        )
    }

    /// Records that `version` reached every active replica.
    pub fn persisted(&self, version: u64) {
        let mut state = self.state.lock();
        state.persisted_version = state.persisted_version.max(version);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_first_write_to_a_region_waits_for_the_record() {
        let log = ActivityLog::new(1, ["a".to_owned()]);
        let (version, _) = log.content(false);
        log.persisted(version);
        let first = log.begin_write(0, 4096);
        let needs = first.needs.unwrap();
        log.persisted(needs);
        let second = log.begin_write(8192, 4096);
        assert_eq!(second.needs, None);
        let other_region = log.begin_write(REGION_SIZE, 1);
        assert!(other_region.needs.is_some());
        log.end_write(first);
        log.end_write(second);
        log.end_write(other_region);
        let (_, content) = log.content(false);
        assert_eq!(content.dirty, vec![0, 1]);
    }

    #[test]
    fn a_flush_drops_only_regions_idle_since_it_was_issued() {
        let log = ActivityLog::new(1, ["a".to_owned()]);
        let done = log.begin_write(0, 10);
        log.end_write(done);
        let busy = log.begin_write(REGION_SIZE, 10);
        let mark = log.flush_mark();
        let late = log.begin_write(2 * REGION_SIZE, 10);
        log.end_write(late);
        log.state.lock().last_shrink = Instant::now() - SHRINK_INTERVAL;
        assert!(log.flushed(mark).is_some());
        let (_, content) = log.content(false);
        // Region 0 completed before the flush; 1 is in flight; 2 completed after it.
        assert_eq!(content.dirty, vec![1, 2]);
        log.end_write(busy);
    }

    #[test]
    fn a_failed_member_leaves_the_members_and_collects_what_it_misses() {
        let log = ActivityLog::new(4, ["a".to_owned(), "b".to_owned()]);
        let before = log.membership_version();
        let in_flight = log.begin_write(0, 10);
        assert!(log.member_failed("b"));
        assert!(log.membership_version() > before);
        let after = log.begin_write(3 * REGION_SIZE, 10);
        let (_, content) = log.content(false);
        assert_eq!(content.epoch, 5);
        assert_eq!(content.members, vec!["a".to_owned()]);
        assert_eq!(log.missed("b").unwrap(), BTreeSet::from([0, 3]));
        log.end_write(in_flight);
        log.end_write(after);
        log.member_joined("b");
        assert_eq!(log.missed("b"), None);
        assert_eq!(log.content(false).1.epoch, 6);
    }
}
