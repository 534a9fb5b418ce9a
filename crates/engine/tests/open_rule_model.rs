//! The membership/epoch protocol as a model checked exhaustively by `stateright`: an
//! engine, three replicas with their records and data, writes and acknowledgements,
//! replica and engine crashes, restarts and partitions (a replica the engine cannot
//! reach is, to it, a crashed one), rebuilds and promotions.
//!
//! The open rule is the engine's own [`shorthorn_engine::plan`]; the record writes follow
//! the custody order of `Replicator::persist` (modelled step by step, so an engine crash
//! can cut a record write short anywhere). The invariant: an engine opened without
//! salvage never serves a state older than the newest acknowledged write. The checker
//! finds the silent rollback under the rule the engine had before (trust the newest
//! record among the replicas that answer) and nothing under the current one.
//! docs/consistency.md gives the argument the checker confirms.

use shorthorn_engine::{ConsistencyRecord, plan};
use stateright::{Checker, Model, Property};

const REPLICAS: usize = 3;

/// One replica: alive and reachable or not, its record, the writes it holds.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
struct ReplicaState {
    up: bool,
    epoch: u8,
    /// Bit i: replica i is a member in its record.
    members: u8,
    /// Bit w: it holds write w.
    data: u8,
}

#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
enum Mode {
    Rw,
    Wo,
    Err,
}

/// Where the engine is in writing a record: to the custodians first, then the rest.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
enum RecordWrite {
    Idle,
    Writing {
        to_custodians: bool,
        epoch: u8,
        members: u8,
        pending: u8,
        took: u8,
        failed: u8,
    },
}

#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
struct EngineState {
    modes: [Mode; REPLICAS],
    /// The activity log: epoch and members (RW replicas).
    epoch: u8,
    members: u8,
    /// The epoch whose record reached every active replica.
    persisted_epoch: u8,
    custodians: u8,
    record_write: RecordWrite,
    /// Whether the open's first record is written (I/O is served from then on).
    serving: bool,
    /// A write applied to the replicas and not yet acknowledged.
    pending_write: Option<u8>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq)]
struct State {
    replicas: [ReplicaState; REPLICAS],
    engine: Option<EngineState>,
    acked: u8,
    next_write: u8,
    /// An engine opened after some write was acknowledged.
    reopened: bool,
}

#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
enum Action {
    Write,
    Ack,
    StartRecordWrite,
    /// The record reaches the replica; `reply_lost`: the engine sees an error anyway.
    WriteRecordTo {
        replica: usize,
        reply_lost: bool,
    },
    NoticeFailure(usize),
    CrashReplica(usize),
    RestartReplica(usize),
    CrashEngine,
    /// Start an engine; the mask is the replicas that answer it.
    Open(u8),
    Rebuild(usize),
    Promote(usize),
}

/// Which open rule the engine applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Rule {
    /// The rule before: the newest record among the replicas that answer names the
    /// replicas in sync.
    NewestAnswering,
    /// The engine's rule now ([`shorthorn_engine::plan`]).
    Engine,
}

struct Protocol {
    rule: Rule,
    /// Whether record writes follow the custody order (else to every replica at once).
    custody: bool,
    /// Writes issued in one run; each is one bit of a replica's data.
    writes: u8,
    /// States with an epoch above this are not expanded (the protocol is the same at
    /// any height; this keeps the state space finite).
    max_epoch: u8,
}

impl Protocol {
    /// The bounds CI checks, raised with OPEN_RULE_MODEL_WRITES and
    /// OPEN_RULE_MODEL_EPOCHS for a deeper run (epochs up to 5: 13 million distinct
    /// states, half a minute in a release build).
    fn bounded(rule: Rule) -> Self {
        let bound = |name: &str, default: u8| {
            std::env::var(name)
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(default)
        };
        Protocol {
            rule,
            custody: true,
            writes: bound("OPEN_RULE_MODEL_WRITES", 2),
            max_epoch: bound("OPEN_RULE_MODEL_EPOCHS", 4),
        }
    }
}

fn bit(i: usize) -> u8 {
    1 << i
}

fn name(i: usize) -> String {
    format!("r{i}")
}

fn ids(mask: u8) -> Vec<String> {
    (0..REPLICAS)
        .filter(|&i| mask & bit(i) != 0)
        .map(name)
        .collect()
}

impl EngineState {
    fn mask(&self, wanted: impl Fn(Mode) -> bool) -> u8 {
        (0..REPLICAS)
            .filter(|&i| wanted(self.modes[i]))
            .fold(0, |m, i| m | bit(i))
    }

    /// Moves slot `i` to ERR; a member leaves the members at a new epoch.
    fn fail(&mut self, i: usize) {
        if self.modes[i] == Mode::Err {
            return;
        }
        self.modes[i] = Mode::Err;
        if self.members & bit(i) != 0 {
            self.members &= !bit(i);
            self.epoch += 1;
        }
    }
}

/// The rule the engine had before this model was written, kept here to show its flaw.
fn newest_answering(records: &[ConsistencyRecord]) -> Option<Vec<usize>> {
    let newest = records.iter().map(|r| r.epoch).max().unwrap_or(0);
    if newest == 0 {
        return Some((0..records.len()).collect());
    }
    let members: Vec<&String> = records
        .iter()
        .filter(|r| r.epoch == newest)
        .flat_map(|r| r.members.iter())
        .collect();
    let mut in_sync: Vec<usize> = (0..records.len())
        .filter(|&i| members.contains(&&records[i].replica_id))
        .collect();
    in_sync.sort_by_key(|&i| std::cmp::Reverse(records[i].epoch));
    (!in_sync.is_empty()).then_some(in_sync)
}

impl Protocol {
    /// The replicas (indexes into the whole set) an open on `reachable` puts in sync,
    /// source first, and the epoch it records; `None` if it refuses.
    fn open(&self, state: &State, reachable: u8) -> Option<(Vec<usize>, u8)> {
        let answering: Vec<usize> = (0..REPLICAS).filter(|&i| reachable & bit(i) != 0).collect();
        let records: Vec<ConsistencyRecord> = answering
            .iter()
            .map(|&i| ConsistencyRecord {
                replica_id: name(i),
                epoch: u64::from(state.replicas[i].epoch),
                members: ids(state.replicas[i].members),
                ..ConsistencyRecord::default()
            })
            .collect();
        let newest = answering
            .iter()
            .map(|&i| state.replicas[i].epoch)
            .max()
            .unwrap_or(0);
        let in_sync = match self.rule {
            Rule::NewestAnswering => newest_answering(&records)?,
            Rule::Engine => {
                let unreachable: Vec<String> = (0..REPLICAS)
                    .filter(|&i| reachable & bit(i) == 0)
                    .map(name)
                    .collect();
                let borrowed: Vec<&ConsistencyRecord> = records.iter().collect();
                plan("model", &borrowed, &unreachable, false).ok()?.in_sync
            }
        };
        Some((in_sync.iter().map(|&k| answering[k]).collect(), newest + 1))
    }
}

impl Model for Protocol {
    type State = State;
    type Action = Action;

    fn init_states(&self) -> Vec<State> {
        let replica = ReplicaState {
            up: true,
            epoch: 0,
            members: 0,
            data: 0,
        };
        vec![State {
            replicas: [replica; REPLICAS],
            engine: None,
            acked: 0,
            next_write: 0,
            reopened: false,
        }]
    }

    fn actions(&self, state: &State, actions: &mut Vec<Action>) {
        for i in 0..REPLICAS {
            actions.push(if state.replicas[i].up {
                Action::CrashReplica(i)
            } else {
                Action::RestartReplica(i)
            });
        }
        let Some(engine) = &state.engine else {
            let up = (0..REPLICAS)
                .filter(|&i| state.replicas[i].up)
                .fold(0, |m, i| m | bit(i));
            for reachable in 1..=up {
                if reachable & !up == 0 {
                    actions.push(Action::Open(reachable));
                }
            }
            return;
        };
        actions.push(Action::CrashEngine);
        let rw = engine.mask(|m| m == Mode::Rw);
        match engine.record_write {
            RecordWrite::Idle if engine.persisted_epoch != engine.epoch && rw != 0 => {
                actions.push(Action::StartRecordWrite);
            }
            RecordWrite::Idle => {}
            RecordWrite::Writing { pending, .. } => {
                for replica in (0..REPLICAS).filter(|&i| pending & bit(i) != 0) {
                    for reply_lost in [false, true] {
                        actions.push(Action::WriteRecordTo {
                            replica,
                            reply_lost,
                        });
                    }
                }
            }
        }
        for i in 0..REPLICAS {
            if engine.modes[i] != Mode::Err && !state.replicas[i].up {
                actions.push(Action::NoticeFailure(i));
            }
        }
        if !engine.serving {
            return;
        }
        if engine.pending_write.is_none() && state.next_write < self.writes && rw != 0 {
            actions.push(Action::Write);
        }
        if engine.pending_write.is_some() && engine.persisted_epoch == engine.epoch && rw != 0 {
            actions.push(Action::Ack);
        }
        let rebuilding = engine.modes.contains(&Mode::Wo);
        for i in 0..REPLICAS {
            match engine.modes[i] {
                Mode::Err if !rebuilding && rw != 0 && state.replicas[i].up => {
                    actions.push(Action::Rebuild(i));
                }
                Mode::Wo => actions.push(Action::Promote(i)),
                _ => {}
            }
        }
    }

    fn next_state(&self, state: &State, action: Action) -> Option<State> {
        let mut next = state.clone();
        match action {
            Action::CrashReplica(i) => next.replicas[i].up = false,
            Action::RestartReplica(i) => next.replicas[i].up = true,
            Action::CrashEngine => next.engine = None,
            Action::Open(reachable) => {
                let (in_sync, epoch) = self.open(state, reachable)?;
                let source = state.replicas[in_sync[0]].data;
                let mut modes = [Mode::Err; REPLICAS];
                let mut members = 0;
                for &i in &in_sync {
                    // Reconciliation copies the source's regions that may differ.
                    next.replicas[i].data = source;
                    modes[i] = Mode::Rw;
                    members |= bit(i);
                }
                next.engine = Some(EngineState {
                    modes,
                    epoch,
                    members,
                    persisted_epoch: 0,
                    custodians: members,
                    record_write: RecordWrite::Idle,
                    serving: false,
                    pending_write: None,
                });
                next.reopened |= state.acked != 0;
            }
            Action::NoticeFailure(i) => next.engine.as_mut()?.fail(i),
            Action::Write => {
                let write = next.next_write;
                next.next_write += 1;
                let engine = next.engine.as_mut()?;
                for i in 0..REPLICAS {
                    if engine.modes[i] == Mode::Err {
                        continue;
                    }
                    if next.replicas[i].up {
                        next.replicas[i].data |= 1 << write;
                    } else {
                        engine.fail(i);
                    }
                }
                engine.pending_write = Some(write);
            }
            Action::Ack => {
                let engine = next.engine.as_mut()?;
                let write = engine.pending_write.take()?;
                next.acked |= 1 << write;
            }
            Action::StartRecordWrite => {
                let engine = next.engine.as_mut()?;
                let active = engine.mask(|m| m != Mode::Err);
                let first = if self.custody {
                    engine.custodians & engine.mask(|m| m == Mode::Rw)
                } else {
                    active
                };
                if first == 0 {
                    // No custodian left: no replica may take a newer record.
                    for i in 0..REPLICAS {
                        engine.fail(i);
                    }
                } else {
                    engine.record_write = RecordWrite::Writing {
                        to_custodians: self.custody,
                        epoch: engine.epoch,
                        members: engine.members,
                        pending: first,
                        took: 0,
                        failed: 0,
                    };
                }
            }
            Action::WriteRecordTo {
                replica: i,
                reply_lost,
            } => {
                let engine = next.engine.as_mut()?;
                let RecordWrite::Writing {
                    to_custodians,
                    epoch,
                    members,
                    mut pending,
                    mut took,
                    mut failed,
                } = engine.record_write
                else {
                    return None;
                };
                pending &= !bit(i);
                if next.replicas[i].up {
                    next.replicas[i].epoch = epoch;
                    next.replicas[i].members = members;
                }
                if next.replicas[i].up && !reply_lost {
                    took |= bit(i);
                } else {
                    failed |= bit(i);
                }
                engine.record_write = RecordWrite::Writing {
                    to_custodians,
                    epoch,
                    members,
                    pending,
                    took,
                    failed,
                };
                if pending == 0 {
                    finish_record_write(engine);
                }
            }
            Action::Rebuild(i) => {
                let engine = next.engine.as_mut()?;
                let source = (0..REPLICAS).find(|&k| engine.modes[k] == Mode::Rw)?;
                next.replicas[i].data = next.replicas[source].data;
                engine.modes[i] = Mode::Wo;
                engine.custodians &= !bit(i);
            }
            Action::Promote(i) => {
                let engine = next.engine.as_mut()?;
                engine.modes[i] = Mode::Rw;
                engine.members |= bit(i);
                engine.epoch += 1;
            }
        }
        Some(next)
    }

    fn within_boundary(&self, state: &State) -> bool {
        state.replicas.iter().all(|r| r.epoch <= self.max_epoch)
            && state.engine.is_none_or(|e| e.epoch <= self.max_epoch)
    }

    fn properties(&self) -> Vec<Property<Self>> {
        vec![
            Property::always(SERVES_ACKED, |_, state: &State| serves_acked(state)),
            Property::always(NO_EPOCH_COLLISION, |_, state: &State| {
                no_epoch_collision(state)
            }),
            Property::sometimes(REOPENS_WITH_DATA, |model: &Protocol, state: &State| {
                state.reopened
                    && state.acked == (1 << model.writes) - 1
                    && state.engine.is_some_and(|e| e.serving)
            }),
        ]
    }
}

/// Every RW replica of a serving engine holds every acknowledged write (reads go to any
/// of them).
fn serves_acked(state: &State) -> bool {
    let Some(engine) = &state.engine else {
        return true;
    };
    !engine.serving
        || (0..REPLICAS).all(|i| {
            engine.modes[i] != Mode::Rw || state.replicas[i].data & state.acked == state.acked
        })
}

fn no_epoch_collision(state: &State) -> bool {
    state.replicas.iter().all(|a| {
        state
            .replicas
            .iter()
            .all(|b| a.epoch != b.epoch || a.epoch == 0 || a.members == b.members)
    })
}

/// A round of record writes ended: failures leave the members; after the custodians,
/// the rest; after the rest, the record is persisted if nothing changed meanwhile.
fn finish_record_write(engine: &mut EngineState) {
    let RecordWrite::Writing {
        to_custodians,
        epoch,
        members,
        took,
        failed,
        ..
    } = engine.record_write
    else {
        return;
    };
    engine.record_write = RecordWrite::Idle;
    for i in (0..REPLICAS).filter(|&i| failed & bit(i) != 0) {
        engine.fail(i);
    }
    // Custodians: those that took the record and are members in it.
    if to_custodians {
        engine.custodians = took & members;
        if failed != 0 {
            return;
        }
        let rest = engine.mask(|m| m != Mode::Err) & !took;
        if rest != 0 {
            engine.record_write = RecordWrite::Writing {
                to_custodians: false,
                epoch,
                members,
                pending: rest,
                took: 0,
                failed: 0,
            };
            return;
        }
    } else {
        engine.custodians |= took & members;
    }
    if failed == 0 && epoch == engine.epoch {
        engine.persisted_epoch = epoch;
        engine.serving = true;
    }
}

const SERVES_ACKED: &str = "an engine opened without salvage serves every acknowledged write";
const NO_EPOCH_COLLISION: &str = "no two replicas hold one epoch with different members";
const REOPENS_WITH_DATA: &str =
    "a volume reopens after an outage with every write acknowledged (the model is not vacuous)";

fn check(protocol: Protocol) -> impl Checker<Protocol> {
    let checker = protocol.checker().threads(2).spawn_bfs().join();
    eprintln!(
        "{:?} rule, {} writes, epochs up to {}: {} states ({} unique), depth {}",
        checker.model().rule,
        checker.model().writes,
        checker.model().max_epoch,
        checker.state_count(),
        checker.unique_state_count(),
        checker.max_depth()
    );
    checker
}

/// Applies `actions` from the initial state, each one the model allows; the state
/// reached, or the index of the first action refused.
fn replay(protocol: &Protocol, actions: &[Action]) -> Result<State, usize> {
    let mut state = protocol.init_states().remove(0);
    for (index, action) in actions.iter().enumerate() {
        let mut allowed = Vec::new();
        protocol.actions(&state, &mut allowed);
        if !allowed.contains(action) {
            return Err(index);
        }
        state = protocol.next_state(&state, *action).ok_or(index)?;
    }
    Ok(state)
}

fn to(replica: usize) -> Action {
    Action::WriteRecordTo {
        replica,
        reply_lost: false,
    }
}

/// The sequence of the issue that found the rollback: A1, drop r0, B2, drop r1, C3,
/// the engine and r2 die, r0 and r1 come back, an engine opens on them.
fn rollback_sequence() -> Vec<Action> {
    use Action::*;
    vec![
        Open(0b111),
        StartRecordWrite,
        to(0),
        to(1),
        to(2),
        Write,
        Ack,
        CrashReplica(0),
        NoticeFailure(0),
        StartRecordWrite,
        to(1),
        to(2),
        Write,
        Ack,
        CrashReplica(1),
        NoticeFailure(1),
        StartRecordWrite,
        to(2),
        Write,
        Ack,
        CrashEngine,
        CrashReplica(2),
        RestartReplica(0),
        RestartReplica(1),
        Open(0b011),
    ]
}

#[test]
fn the_open_rule_never_serves_a_state_older_than_an_acknowledged_write() {
    let checker = check(Protocol::bounded(Rule::Engine));
    checker.assert_properties();
    assert!(checker.unique_state_count() > 1_000_000);
}

#[test]
fn the_former_rule_rolls_back_acknowledged_writes() {
    let checker = check(Protocol::bounded(Rule::NewestAnswering));
    let rollback = checker.assert_any_discovery(SERVES_ACKED);
    eprintln!("counterexample: {:?}", rollback.clone().into_actions());
    let last = rollback.last_state();
    assert!(last.reopened, "the rollback comes with a reopen: {last:?}");
    checker.assert_any_discovery(NO_EPOCH_COLLISION);
}

#[test]
fn the_issues_sequence_rolls_back_under_the_former_rule_and_is_refused_now() {
    let mut sequence = rollback_sequence();
    let engine = Protocol {
        writes: 3,
        max_epoch: 8,
        ..Protocol::bounded(Rule::Engine)
    };
    let open = sequence.len() - 1;
    assert_eq!(
        replay(&engine, &sequence),
        Err(open),
        "the open must be refused"
    );
    let before_open = replay(&engine, &sequence[..open]).expect("the sequence up to the open");
    assert_eq!(before_open.acked, 0b111);

    let former = Protocol {
        rule: Rule::NewestAnswering,
        ..engine
    };
    sequence.extend([Action::StartRecordWrite, to(1)]);
    let served = replay(&former, &sequence).expect("the former rule opens");
    assert!(!serves_acked(&served), "C3 is gone: {served:?}");
    assert_eq!(served.replicas[1].data, 0b011);
    assert!(
        !no_epoch_collision(&served),
        "r1 and r2 both at epoch 3: {served:?}"
    );
}
