//! Rebuilding a replica live, and reconciling replicas after a crash.
//!
//! Both come down to one step: make region R of a target replica equal to region R of
//! a source, chunk by chunk, sending only chunks whose digests differ, writing zero
//! runs as write-zeroes (holes stay holes), and checking the target's digests after.
//! While the volume serves I/O the step holds the engine's write-order lock on the
//! region, so no write to it runs concurrently; a write that reached the target before
//! its region was copied (including a partial-block write merged with stale bytes, or
//! a trim) is overwritten by the copy, and every write after the copy reaches both.
//!
//! A rebuild (`replica add`): first the snapshot chain — every source snapshot the
//! target lacks is rebuilt into the target's head and frozen under the same name
//! (regions: the snapshot layer's own extents plus the target head's), while the target
//! takes no I/O; then the target joins as WO, and its head is reconciled with the
//! source's, region by region under the lock (regions: what the target missed when the
//! engine saw it fail, else every region either head holds). Then, with I/O drained, it
//! becomes RW and a member.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use shorthorn_block::{BLOCK_SIZE, BlockDevice, WriteFlags, ZeroMode, chunk_digest, zero_digest};

use crate::replica::{Replica, ReplicaOpError};
use crate::replicator::activity_log::{REGION_SIZE, regions_covering};
use crate::replicator::{Replicator, Slot};
use crate::status::{RebuildFigures, RebuildProgress, ReplicaMode};
use shorthorn_block::snapshot_chain;

/// Unit of comparison and copy inside a region.
pub const CHUNK_SIZE: u64 = 256 << 10;
/// Regions reconciled at once.
const PARALLEL_REGIONS: usize = 4;

/// Limits the bytes copied per second (0: no limit).
#[derive(Debug)]
struct Throttle {
    bytes_per_second: u64,
    started: Instant,
    sent: AtomicU64,
}

impl Throttle {
    fn new(bytes_per_second: u64) -> Self {
        Throttle {
            bytes_per_second,
            started: Instant::now(),
            sent: AtomicU64::new(0),
        }
    }

    async fn take(&self, bytes: u64) {
        if self.bytes_per_second == 0 {
            return;
        }
        let sent = self.sent.fetch_add(bytes, Ordering::Relaxed) + bytes;
        let due = Duration::from_secs_f64(sent as f64 / self.bytes_per_second as f64);
        let elapsed = self.started.elapsed();
        if due > elapsed {
            tokio::time::sleep(due - elapsed).await;
        }
    }
}

/// Where a reconciliation reads from.
enum Source<R> {
    /// The live volume, read from an RW replica.
    Head(Arc<R>),
    /// A snapshot of a replica.
    Snapshot(Arc<R>, String),
}

impl<R: Replica> Source<R> {
    async fn checksums(&self, offset: u64, len: u64) -> Result<Vec<Vec<u8>>, String> {
        let (replica, snapshot) = match self {
            Source::Head(r) => (r, None),
            Source::Snapshot(r, name) => (r, Some(name.as_str())),
        };
        replica
            .checksums(snapshot, offset, len, CHUNK_SIZE)
            .await
            .map_err(|e| format!("source checksums at offset {offset}: {e}"))
    }

    async fn read(&self, offset: u64, len: u64) -> Result<Bytes, String> {
        match self {
            Source::Head(r) => r
                .read(offset, len)
                .await
                .map_err(|e| format!("reading the source at offset {offset}: {e}")),
            Source::Snapshot(r, name) => r
                .read_snapshot(name, offset, len)
                .await
                .map_err(|e| format!("reading snapshot {name} at offset {offset}: {e}")),
        }
    }
}

/// Writes `data` at `offset` of `target`: runs of zero blocks as write-zeroes (which
/// leave holes where no older layer holds data), the rest as writes.
async fn write_sparse<R: Replica>(target: &R, offset: u64, data: &Bytes) -> Result<(), String> {
    #[allow(clippy::cast_possible_truncation, reason = "a 4 KiB constant")]
    let block = BLOCK_SIZE as usize;
    let mut at = 0;
    while at < data.len() {
        let zero = is_zero(&data[at..(at + block).min(data.len())]);
        let mut end = at;
        while end < data.len() && is_zero(&data[end..(end + block).min(data.len())]) == zero {
            end = (end + block).min(data.len());
        }
        let run_offset = offset + at as u64;
        let run_len = (end - at) as u64;
        let result = if zero {
            target
                .write_zeroes(
                    run_offset,
                    run_len,
                    ZeroMode::MayUnmap,
                    WriteFlags::default(),
                )
                .await
        } else {
            target
                .write(run_offset, data.slice(at..end), WriteFlags::default())
                .await
        };
        result.map_err(|e| format!("writing the target at offset {run_offset}: {e}"))?;
        at = end;
    }
    Ok(())
}

/// A chunk to copy: offset, length, and its data when already read.
type ChunkCopy = (u64, u64, Option<Bytes>);

/// The chunks `(offset, len)` of `[start, start + len)`.
fn chunks(start: u64, len: u64) -> Vec<(u64, u64)> {
    (0..len.div_ceil(CHUNK_SIZE))
        .map(|i| {
            let offset = start + i * CHUNK_SIZE;
            (offset, CHUNK_SIZE.min(start + len - offset))
        })
        .collect()
}

/// [`zero_digest`] of `len` bytes, the full-chunk one computed once: it is compared
/// against for every chunk of every region.
fn hole_digest(len: u64) -> Vec<u8> {
    static FULL_CHUNK: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    if len == CHUNK_SIZE {
        FULL_CHUNK.get_or_init(|| zero_digest(CHUNK_SIZE)).clone()
    } else {
        zero_digest(len)
    }
}

/// Copies what differs in `[start, start + len)` from `source` to `target` and checks
/// the target's digests after; returns the bytes sent. Where the target holds nothing
/// (all its chunks are holes), the source is read once and hashed here instead of being
/// checksummed by the source first.
async fn copy_region<R: Replica>(
    source: &Source<R>,
    target: &R,
    start: u64,
    len: u64,
) -> Result<u64, String> {
    let pieces = chunks(start, len);
    let target_digests = target
        .checksums(None, start, len, CHUNK_SIZE)
        .await
        .map_err(|e| target_error(e, start))?;
    let target_empty = pieces
        .iter()
        .zip(&target_digests)
        .all(|((_, chunk), digest)| *digest == hole_digest(*chunk));
    let (expected, to_copy): (Vec<Vec<u8>>, Vec<ChunkCopy>) = if target_empty {
        let mut expected = Vec::new();
        let mut to_copy = Vec::new();
        for &(offset, chunk) in &pieces {
            let data = source.read(offset, chunk).await?;
            let digest = chunk_digest(&data);
            if digest != hole_digest(chunk) {
                to_copy.push((offset, chunk, Some(data)));
            }
            expected.push(digest);
        }
        (expected, to_copy)
    } else {
        let expected = source.checksums(start, len).await?;
        let to_copy = pieces
            .iter()
            .zip(expected.iter().zip(&target_digests))
            .filter(|(_, (want, have))| want != have)
            .map(|(&(offset, chunk), _)| (offset, chunk, None))
            .collect();
        (expected, to_copy)
    };
    if to_copy.is_empty() {
        return Ok(0);
    }
    // One chunk at a time per region: copying a region's chunks concurrently took the
    // disk and CPUs from foreground I/O without a faster rebuild (docs/benchmarks.md).
    let mut copied = 0;
    for (offset, chunk, data) in to_copy {
        let data = match data {
            Some(data) => data,
            None => source.read(offset, chunk).await?,
        };
        write_sparse(target, offset, &data).await?;
        copied += chunk;
    }
    let after = target
        .checksums(None, start, len, CHUNK_SIZE)
        .await
        .map_err(|e| target_error(e, start))?;
    if after != expected {
        return Err(format!(
            "verification failed: region at offset {start} differs from the source after the copy"
        ));
    }
    Ok(copied)
}

fn is_zero(bytes: &[u8]) -> bool {
    bytes.iter().all(|&b| b == 0)
}

fn target_error(e: ReplicaOpError, offset: u64) -> String {
    format!("target checksums at offset {offset}: {e}")
}

impl<R: Replica> Replicator<R> {
    /// Makes region `region` of `target`'s head equal to `source`: see the module
    /// documentation. With `live`, holds the I/O gate (shared) and the write-order lock
    /// of the region while it works. The bandwidth limit is applied after the lock is
    /// released, so a slow rebuild does not hold writes back longer.
    async fn reconcile_region(
        &self,
        source: &Source<R>,
        target: &R,
        region: u64,
        live: bool,
        progress: &RebuildProgress,
        throttle: &Throttle,
    ) -> Result<(), String> {
        let size = self.size();
        let start = region * REGION_SIZE;
        if start >= size {
            return Ok(());
        }
        let len = REGION_SIZE.min(size - start);
        let copied = {
            let _gate = if live {
                Some(self.io_gate.read().await)
            } else {
                None
            };
            let _order = if live {
                Some(self.write_order.lock(start, start + len).await)
            } else {
                None
            };
            copy_region(source, target, start, len).await?
        };
        progress.examined(len, copied);
        throttle.take(copied).await;
        Ok(())
    }

    /// Reconciles `regions` of `target` with `source`, several regions at once.
    /// Returns the regions not done when it fails, with the error.
    async fn reconcile_regions(
        &self,
        source: &Source<R>,
        target: &R,
        regions: &BTreeSet<u64>,
        live: bool,
        progress: &RebuildProgress,
        throttle: &Throttle,
    ) -> Result<(), (BTreeSet<u64>, String)> {
        let mut remaining = regions.clone();
        let mut results = futures::stream::iter(regions.iter().copied())
            .map(|region| async move {
                let result = self
                    .reconcile_region(source, target, region, live, progress, throttle)
                    .await;
                (region, result)
            })
            .buffer_unordered(PARALLEL_REGIONS);
        let mut first_error = None;
        while let Some((region, result)) = results.next().await {
            match result {
                Ok(()) => {
                    remaining.remove(&region);
                }
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        match first_error {
            None => Ok(()),
            Some(e) => Err((remaining, e)),
        }
    }

    /// Makes every replica in `targets` equal to `source` in `regions`, before the
    /// volume serves I/O (crash recovery). A target that cannot be reconciled goes to
    /// ERR.
    pub(crate) async fn reconcile_offline(
        &self,
        source: &Arc<Slot<R>>,
        targets: &[Arc<Slot<R>>],
        regions: &BTreeSet<u64>,
    ) {
        let progress = RebuildProgress::default();
        let throttle = Throttle::new(0);
        let from = Source::Head(source.device.clone());
        for target in targets {
            let result = self
                .reconcile_regions(&from, &target.device, regions, false, &progress, &throttle)
                .await;
            if let Err((_, e)) = result {
                self.fail(target, format!("reconciling with {}: {e}", source.address));
            }
        }
        let figures = progress.snapshot();
        tracing::info!(
            volume = %self.volume(),
            source = %source.address,
            regions = regions.len(),
            copied_bytes = figures.copied_bytes,
            "replicas reconciled after an unclean stop"
        );
    }

    /// Rebuilds `target` (connected, identified by `id`) at `address` live and makes it
    /// RW. See the module documentation.
    pub async fn rebuild(
        self: &Arc<Self>,
        address: &str,
        id: &str,
        target: Arc<R>,
        bandwidth: u64,
    ) -> Result<RebuildFigures, String> {
        {
            let mut rebuilding = self.rebuilding.lock();
            if let Some(other) = rebuilding.as_ref() {
                return Err(format!(
                    "volume {}: replica {other} is being rebuilt; one rebuild at a time",
                    self.volume()
                ));
            }
            *rebuilding = Some(address.to_owned());
        }
        let result = self.run_rebuild(address, id, target, bandwidth).await;
        *self.rebuilding.lock() = None;
        result
    }

    async fn run_rebuild(
        self: &Arc<Self>,
        address: &str,
        id: &str,
        target: Arc<R>,
        bandwidth: u64,
    ) -> Result<RebuildFigures, String> {
        if let Some(existing) = self.slot(address) {
            if existing.mode() != ReplicaMode::ERR {
                return Err(format!(
                    "replica {address} is already in volume {} as {}",
                    self.volume(),
                    existing.mode()
                ));
            }
        }
        let started = Instant::now();
        let progress = Arc::new(RebuildProgress::default());
        let throttle = Throttle::new(bandwidth);
        let source = self
            .any_rw()
            .ok_or_else(|| format!("volume {}: no RW replica to rebuild from", self.volume()))?;
        let (chain_changed, chain) = self
            .rebuild_chain(&source, &target, &progress, &throttle)
            .await?;

        // Join as WO with I/O drained: every write from now on reaches the target.
        let slot = Arc::new(Slot::new(
            address.to_owned(),
            id.to_owned(),
            target.clone(),
            ReplicaMode::WO,
            None,
        ));
        *slot.rebuild.lock() = Some(progress.clone());
        let missed = {
            let _drained = self.io_gate.write().await;
            // A snapshot that began before this rebuild may have changed the chain.
            let now = source
                .device
                .list_snapshots()
                .await
                .map_err(|e| format!("listing the source's snapshots: {e}"))?;
            let now: Vec<String> = snapshot_chain(&now)
                .iter()
                .map(|l| l.snapshot_name().to_owned())
                .collect();
            if now != chain {
                return Err(format!(
                    "the volume's snapshot chain changed while replica {address} was being rebuilt; run `replica add` again"
                ));
            }
            self.insert_slot(slot.clone());
            self.log.missed(id)
        };
        self.watch_slot(slot.clone());
        let regions = match missed {
            Some(missed) if !chain_changed => missed,
            _ => match head_regions(source.device.as_ref(), target.as_ref()).await {
                Ok(regions) => regions,
                Err(e) => {
                    self.fail(&slot, format!("rebuild stopped: {e}"));
                    *slot.rebuild.lock() = None;
                    return Err(format!("rebuilding replica {address}: {e}"));
                }
            },
        };
        progress.start_phase("head".into(), regions.len() as u64 * REGION_SIZE);
        tracing::info!(volume = %self.volume(), replica = address, regions = regions.len(), "rebuilding the head");
        let from = Source::Head(source.device.clone());
        let result = self
            .reconcile_regions(&from, &target, &regions, true, &progress, &throttle)
            .await;
        if let Err((remaining, e)) = result {
            self.log.add_missed(id, remaining);
            self.fail(&slot, format!("rebuild stopped: {e}"));
            *slot.rebuild.lock() = None;
            return Err(format!("rebuilding replica {address}: {e}"));
        }
        if slot.mode() != ReplicaMode::WO {
            *slot.rebuild.lock() = None;
            return Err(format!(
                "replica {address} failed during its rebuild; run `replica add` again to resume"
            ));
        }

        // Flush the target, then make it RW and a member with I/O drained.
        {
            let _drained = self.io_gate.write().await;
            if let Err(e) = target.flush().await {
                self.fail(&slot, format!("flushing after the rebuild: {e}"));
                return Err(format!("replica {address}: flush after the rebuild: {e}"));
            }
            slot.set_mode(ReplicaMode::RW);
            let version = self.log.member_joined(id);
            self.persist(version)
                .await
                .map_err(|e| format!("recording replica {address} as in sync: {e}"))?;
        }
        let mut figures = progress.snapshot();
        figures.phase = format!("done in {:.1} s", started.elapsed().as_secs_f64());
        *slot.rebuild.lock() = None;
        tracing::info!(volume = %self.volume(), replica = address, copied_bytes = figures.copied_bytes, examined_bytes = figures.done_bytes, seconds = started.elapsed().as_secs_f64(), "replica rebuilt; now RW");
        Ok(figures)
    }

    /// Brings the target's snapshot chain to the source's: each source snapshot the
    /// target lacks is rebuilt into the target's head and frozen under its name. Returns
    /// whether the target's chain changed, and the chain's snapshot names.
    async fn rebuild_chain(
        &self,
        source: &Arc<Slot<R>>,
        target: &Arc<R>,
        progress: &RebuildProgress,
        throttle: &Throttle,
    ) -> Result<(bool, Vec<String>), String> {
        let (ours, theirs) = tokio::join!(source.device.list_snapshots(), target.list_snapshots());
        let ours = ours.map_err(|e| format!("listing the source's snapshots: {e}"))?;
        let theirs = theirs.map_err(|e| format!("listing the target's snapshots: {e}"))?;
        let (ours, theirs) = (snapshot_chain(&ours), snapshot_chain(&theirs));
        let common = ours
            .iter()
            .zip(&theirs)
            .take_while(|(a, b)| a.name == b.name)
            .count();
        if theirs.len() > common {
            let extra: Vec<&str> = theirs[common..].iter().map(|s| s.snapshot_name()).collect();
            return Err(format!(
                "the target holds snapshots the volume does not have ({}); start the replica on an empty directory",
                extra.join(", ")
            ));
        }
        for snapshot in &ours[common..] {
            let (layer, head) = tokio::join!(
                source.device.layer_extents(Some(snapshot.snapshot_name())),
                target.layer_extents(None)
            );
            let layer =
                layer.map_err(|e| format!("listing snapshot {}: {e}", snapshot.snapshot_name()))?;
            let head = head.map_err(|e| format!("listing the target head: {e}"))?;
            let regions = regions_covering(layer.into_iter().chain(head));
            progress.start_phase(
                format!("snapshot {}", snapshot.snapshot_name()),
                regions.len() as u64 * REGION_SIZE,
            );
            let from = Source::Snapshot(source.device.clone(), snapshot.snapshot_name().to_owned());
            self.reconcile_regions(&from, target, &regions, false, progress, throttle)
                .await
                .map_err(|(_, e)| format!("snapshot {}: {e}", snapshot.snapshot_name()))?;
            target
                .create_snapshot(
                    snapshot.snapshot_name(),
                    !snapshot.user_created,
                    &snapshot.labels,
                )
                .await
                .map_err(|e| {
                    format!(
                        "creating snapshot {} on the target: {e}",
                        snapshot.snapshot_name()
                    )
                })?;
            if snapshot.removed {
                target
                    .remove_snapshot(snapshot.snapshot_name())
                    .await
                    .map_err(|e| {
                        format!("marking snapshot {} removed: {e}", snapshot.snapshot_name())
                    })?;
            }
        }
        let names = ours.iter().map(|l| l.snapshot_name().to_owned()).collect();
        Ok((common < ours.len(), names))
    }
}

/// Every region either head holds: what a rebuild compares when it does not know what
/// the target missed.
async fn head_regions<R: Replica>(source: &R, target: &R) -> Result<BTreeSet<u64>, String> {
    let (ours, theirs) = tokio::join!(source.layer_extents(None), target.layer_extents(None));
    let ours = ours.map_err(|e| format!("listing the source head: {e}"))?;
    let theirs = theirs.map_err(|e| format!("listing the target head: {e}"))?;
    Ok(regions_covering(ours.into_iter().chain(theirs)))
}
