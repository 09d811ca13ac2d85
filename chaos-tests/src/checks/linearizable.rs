//! Linearizability of the profile API (invariant 6).
//!
//! Each profile is an independent register (P-compositionality: a history is linearizable iff
//! each key's sub-history is), so the search runs per profile name. The model of one profile:
//! absent, or present with a value, a revision and a created revision; create, update and
//! delete take the API's `expected_revision` (0 = unconditional); get observes the whole value
//! and both revisions.
//!
//! The search is Wing & Gong's, with Lowe's memoization of (linearized set, model state) as in
//! porcupine: walk the entries in time order, try to linearize each pending call, backtrack when
//! a return is reached whose call could not be placed.
//!
//! Uncertainty:
//! - A failed operation (definitely not applied) is left out.
//! - An indeterminate write may take effect at any time after its invocation, or never: it has a
//!   call entry and no return, it may be linearized anywhere after its call, and the search
//!   succeeds once every *completed* operation is placed. An indeterminate write that took
//!   effect leaves its revision unknown (above every revision known before it) until a later
//!   read pins it.
//! - An indeterminate get constrains nothing and is left out.
//! - Indeterminate writes whose value no read returned are interchangeable within their kind
//!   and expected revision, and are placed in invocation order only: without this, tens of
//!   timed-out blind writes (each placeable almost anywhere) make the search exponential.
//! - Revisions are log indexes, unique cluster-wide: an unknown revision never turns out to be
//!   one another operation was answered with.
//!
//! Revisions are cluster-wide log indexes, so across profiles they must follow real time too:
//! [`check_revision_order`] checks that an operation invoked after a write was acknowledged
//! never reports a lower revision than that write.

use std::collections::{BTreeMap, HashMap, HashSet};

use crate::checks::Verdict;
use crate::history::{Call, History, Operation, Outcome};
use crate::rng::Rng;

/// Search steps allowed per profile before the verdict is "inconclusive". Each step visits one
/// entry; a soak's 13,000 operations on one profile with 60 indeterminate writes take well
/// under a million.
pub const SEARCH_STEPS_PER_KEY_MAX: u64 = 200_000_000;
/// Seed of the per-operation hash keys of the memo (any fixed value).
const ZOBRIST_SEED: u64 = 0x5eed_0f11_ea7a_b100;

/// A revision the model knows, or only bounds from below (the effect of an indeterminate
/// write whose answer never came).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Rev {
    Known(u64),
    Unknown { above: u64 },
}

impl Rev {
    /// The revision after observing `observed`, or `None` if it cannot be `observed`. An
    /// unknown revision cannot turn out to be one that another operation was answered with:
    /// revisions are log indexes, each produced by one entry.
    fn observe(self, observed: u64, taken: &HashSet<u64>) -> Option<Rev> {
        match self {
            Rev::Known(r) => (r == observed).then_some(self),
            Rev::Unknown { above } => {
                (observed > above && !taken.contains(&observed)).then_some(Rev::Known(observed))
            }
        }
    }

    /// Can a conditional change with this expected revision apply? 0 = unconditional.
    fn accept_expected(self, expected: u64, taken: &HashSet<u64>) -> Option<Rev> {
        if expected == 0 {
            Some(self)
        } else {
            self.observe(expected, taken)
        }
    }

    /// Can a conditional change with this expected revision be refused as a mismatch?
    fn may_mismatch(self, expected: u64) -> bool {
        expected != 0 && self != Rev::Known(expected)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Present {
    /// Index (in the key's operation list) of the write whose value the profile holds.
    writer: usize,
    revision: Rev,
    created: Rev,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct KeyState {
    present: Option<Present>,
    /// Highest revision known to belong to this profile's past: any later change of it gets a
    /// higher one (revisions are log indexes).
    floor: u64,
}

/// One profile's operations, ready for the search.
struct KeyHistory<'a> {
    ops: Vec<&'a Operation>,
    /// Every revision an applied write (of any profile) was answered with.
    taken: &'a HashSet<u64>,
    /// Per operation: an indeterminate create or update whose value no read ever returned.
    /// Its value can never match a read, so the model forgets which write it was
    /// ([`UNOBSERVED`]), and states that differ only in that collapse into one.
    unobserved: Vec<bool>,
    /// Per operation: the previous interchangeable indeterminate operation (same kind, same
    /// expected revision, value never read), by invocation time.
    token_prev: Vec<Option<usize>>,
}

/// The writer of a value no read observed.
const UNOBSERVED: usize = usize::MAX;

impl KeyHistory<'_> {
    fn value_of(&self, writer: usize) -> Option<&crate::history::ProfileValue> {
        if writer == UNOBSERVED {
            return None;
        }
        match &self.ops[writer].call {
            Call::Create { value } | Call::Update { value, .. } => Some(value),
            // Only creates and updates become writers (see `step`).
            Call::Delete { .. } | Call::Get => unreachable!("writer is a create or update"),
        }
    }

    /// Who the model records as the writer when indeterminate operation `i` takes effect.
    fn indeterminate_writer(&self, i: usize) -> usize {
        if self.unobserved[i] {
            UNOBSERVED
        } else {
            i
        }
    }

    /// The model's transition for operation `i` in `state`: `Some(next)` if the operation can
    /// take effect here with its recorded outcome (or, indeterminate, with an effect).
    fn step(&self, state: KeyState, i: usize) -> Option<KeyState> {
        let op = self.ops[i];
        let advance =
            |revision: u64| -> Option<u64> { (revision > state.floor).then_some(revision) };
        match (&op.call, &op.outcome) {
            (Call::Create { .. }, Outcome::Written { revision }) => {
                state.present.is_none().then_some(())?;
                let revision = advance(*revision)?;
                Some(KeyState {
                    present: Some(Present {
                        writer: i,
                        revision: Rev::Known(revision),
                        created: Rev::Known(revision),
                    }),
                    floor: revision,
                })
            }
            (Call::Create { .. }, Outcome::AlreadyExists) => state.present.map(|_| state),
            (Call::Create { .. }, Outcome::Indeterminate { .. }) => {
                state.present.is_none().then_some(())?;
                let unknown = Rev::Unknown { above: state.floor };
                Some(KeyState {
                    present: Some(Present {
                        writer: self.indeterminate_writer(i),
                        revision: unknown,
                        created: unknown,
                    }),
                    floor: state.floor,
                })
            }
            (
                Call::Update {
                    expected_revision, ..
                },
                Outcome::Written { revision },
            ) => {
                let present = state.present?;
                present
                    .revision
                    .accept_expected(*expected_revision, self.taken)?;
                let revision = advance(*revision)?;
                (revision > *expected_revision).then_some(())?;
                Some(KeyState {
                    present: Some(Present {
                        writer: i,
                        revision: Rev::Known(revision),
                        created: present.created,
                    }),
                    floor: revision,
                })
            }
            (
                Call::Update {
                    expected_revision, ..
                },
                Outcome::Indeterminate { .. },
            ) => {
                let present = state.present?;
                present
                    .revision
                    .accept_expected(*expected_revision, self.taken)?;
                let above = state.floor.max(*expected_revision);
                Some(KeyState {
                    present: Some(Present {
                        writer: self.indeterminate_writer(i),
                        revision: Rev::Unknown { above },
                        created: present.created,
                    }),
                    floor: state.floor,
                })
            }
            (Call::Delete { expected_revision }, Outcome::Deleted { revision }) => {
                let present = state.present?;
                present
                    .revision
                    .accept_expected(*expected_revision, self.taken)?;
                let revision = advance(*revision)?;
                Some(KeyState {
                    present: None,
                    floor: revision,
                })
            }
            (Call::Delete { expected_revision }, Outcome::Indeterminate { .. }) => {
                let present = state.present?;
                present
                    .revision
                    .accept_expected(*expected_revision, self.taken)?;
                Some(KeyState {
                    present: None,
                    floor: state.floor.max(*expected_revision),
                })
            }
            (
                Call::Update {
                    expected_revision, ..
                }
                | Call::Delete { expected_revision },
                Outcome::RevisionMismatch,
            ) => {
                let present = state.present?;
                present
                    .revision
                    .may_mismatch(*expected_revision)
                    .then_some(state)
            }
            (Call::Update { .. } | Call::Delete { .. } | Call::Get, Outcome::NotFound) => {
                state.present.is_none().then_some(state)
            }
            (
                Call::Get,
                Outcome::Found {
                    value,
                    revision,
                    created_revision,
                    ..
                },
            ) => {
                let present = state.present?;
                (self.value_of(present.writer) == Some(value)).then_some(())?;
                let pinned = Present {
                    writer: present.writer,
                    revision: present.revision.observe(*revision, self.taken)?,
                    created: present.created.observe(*created_revision, self.taken)?,
                };
                Some(KeyState {
                    present: Some(pinned),
                    floor: state.floor.max(*revision),
                })
            }
            // Any other pairing (a get answered "already exists", a create answered "deleted",
            // ...) cannot be explained by any state.
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    op: usize,
    is_call: bool,
    /// For a call: the index of its return entry, if it completed definitely.
    matching: Option<usize>,
}

/// The outcome of searching one profile's history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyVerdict {
    Linearizable,
    /// No order explains the history; the message names the operation the deepest attempt
    /// could not place.
    Violation(String),
    Inconclusive,
}

/// Which calls a search node is trying: definite ones first, then indeterminate ones. Trying
/// the optional (indeterminate) operations last keeps the search near the histories where
/// they did not happen, which is where most of them belong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Definite,
    Indeterminate,
}

/// A set of operations as a bitset over the key's operation indexes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct OpSet(Vec<u64>);

impl OpSet {
    fn new(n: usize) -> Self {
        Self(vec![0; n.div_ceil(64).max(1)])
    }
    fn insert(&mut self, i: usize) {
        self.0[i / 64] |= 1 << (i % 64);
    }
    fn remove(&mut self, i: usize) {
        self.0[i / 64] &= !(1 << (i % 64));
    }
    fn contains(&self, i: usize) -> bool {
        self.0[i / 64] & (1 << (i % 64)) != 0
    }
    fn is_subset_of(&self, other: &OpSet) -> bool {
        self.0.iter().zip(&other.0).all(|(a, b)| a & !b == 0)
    }
}

/// The doubly linked list of entries the search lifts operations out of (dancing links:
/// lifted entries are restored in reverse order on backtrack). Index `len` is the head.
struct EntryList {
    next: Vec<usize>,
    prev: Vec<usize>,
    head: usize,
}

const END: usize = usize::MAX;

impl EntryList {
    fn new(len: usize) -> Self {
        let head = len;
        // Entries 0..len in order, then the head, which points at entry 0.
        let mut next: Vec<usize> = (0..=len)
            .map(|i| if i + 1 < len { i + 1 } else { END })
            .collect();
        let prev: Vec<usize> = (0..=len)
            .map(|i| match i {
                0 => head,
                i if i < len => i - 1,
                _ => END,
            })
            .collect();
        next[head] = if len > 0 { 0 } else { END };
        Self { next, prev, head }
    }
    fn first(&self) -> usize {
        self.next[self.head]
    }
    fn remove(&mut self, i: usize) {
        let (p, n) = (self.prev[i], self.next[i]);
        self.next[p] = n;
        if n != END {
            self.prev[n] = p;
        }
    }
    fn restore(&mut self, i: usize) {
        self.next[self.prev[i]] = i;
        if self.next[i] != END {
            let n = self.next[i];
            self.prev[n] = i;
        }
    }
}

/// Wing–Gong search over one profile's operations.
fn check_key(key: &str, ops: Vec<&Operation>, taken: &HashSet<u64>) -> KeyVerdict {
    // Indeterminate writes that no read observed are interchangeable within their kind and
    // expected revision: each has the same effect (an unreadable value, a fresh revision), and
    // an earlier-invoked one can stand in wherever a later one could go. Using them only in
    // invocation order removes the permutations of identical choices from the search.
    let observed: HashSet<&crate::history::ProfileValue> = ops
        .iter()
        .filter_map(|op| match &op.outcome {
            Outcome::Found { value, .. } => Some(value),
            _ => None,
        })
        .collect();
    let mut unobserved = vec![false; ops.len()];
    let mut classes: BTreeMap<(u8, u64), Vec<(u64, usize)>> = BTreeMap::new();
    for (i, op) in ops.iter().enumerate() {
        if op.outcome.is_definite() {
            continue;
        }
        let class = match &op.call {
            Call::Create { value } => (!observed.contains(value)).then_some((0, 0)),
            Call::Update {
                value,
                expected_revision,
            } => (!observed.contains(value)).then_some((1, *expected_revision)),
            Call::Delete { expected_revision } => Some((2, *expected_revision)),
            Call::Get => None,
        };
        if let Some(class) = class {
            unobserved[i] = class.0 != 2;
            classes.entry(class).or_default().push((op.invoked_ns, i));
        }
    }
    let mut token_prev = vec![None; ops.len()];
    for members in classes.values_mut() {
        members.sort();
        for pair in members.windows(2) {
            token_prev[pair[1].1] = Some(pair[0].1);
        }
    }
    let history = KeyHistory {
        ops,
        taken,
        unobserved,
        token_prev,
    };
    let n = history.ops.len();
    // Entries: calls at invocation, returns at completion; at equal times a call sorts first,
    // which treats the two as overlapping (the more permissive reading).
    let mut timed: Vec<(u64, u8, usize)> = Vec::with_capacity(2 * n);
    for (i, op) in history.ops.iter().enumerate() {
        timed.push((op.invoked_ns, 0, i));
        if op.outcome.is_definite() {
            timed.push((op.completed_ns, 1, i));
        }
    }
    timed.sort();
    let mut entries: Vec<Entry> = timed
        .iter()
        .map(|&(_, kind, op)| Entry {
            op,
            is_call: kind == 0,
            matching: None,
        })
        .collect();
    let mut return_of = vec![None; n];
    for (idx, e) in entries.iter().enumerate() {
        if !e.is_call {
            return_of[e.op] = Some(idx);
        }
    }
    for e in entries.iter_mut() {
        if e.is_call {
            e.matching = return_of[e.op];
        }
    }

    let mut list = EntryList::new(entries.len());
    let mut returns_left = return_of.iter().filter(|r| r.is_some()).count();
    // The operations placed so far: definite ones and optional (indeterminate) ones apart,
    // with a Zobrist hash of the definite set kept up to date, so a memo lookup costs a hash
    // probe rather than hashing a bitset of the whole history.
    let mut definite = OpSet::new(n);
    let mut optional = OpSet::new(n);
    let mut zobrist_rng = Rng::new(ZOBRIST_SEED);
    let zobrist: Vec<u64> = (0..n).map(|_| zobrist_rng.next_u64()).collect();
    let mut definite_hash = 0u64;
    let mut state = KeyState {
        present: None,
        floor: 0,
    };
    // Memo with subsumption: for each (definite operations placed, model state), the sets of
    // indeterminate operations placed on the way there. Reaching the same point having used
    // a superset of optional operations cannot succeed where the smaller set failed, because
    // every operation still open to it is open to the other too.
    type Seen = Vec<(OpSet, OpSet)>;
    let mut seen: HashMap<(u64, KeyState), Seen> = HashMap::new();
    let mut stack: Vec<(usize, KeyState, Phase)> = Vec::new();
    let mut deepest = 0usize;
    let mut stuck_at: Option<(usize, KeyState)> = None;
    let mut steps = 0u64;
    let mut phase = Phase::Definite;
    let mut cursor = list.first();

    loop {
        if returns_left == 0 {
            return KeyVerdict::Linearizable;
        }
        steps += 1;
        if steps > SEARCH_STEPS_PER_KEY_MAX {
            return KeyVerdict::Inconclusive;
        }
        // With returns left, walking forward from the head always meets one before the end.
        assert!(cursor != END, "a return entry remains in the list");
        let entry = entries[cursor];
        if entry.is_call {
            let optional_op = entry.matching.is_none();
            if optional_op == (phase == Phase::Indeterminate) {
                let token_ready = history.token_prev[entry.op].is_none_or(|p| optional.contains(p));
                if let Some(next_state) =
                    token_ready.then(|| history.step(state, entry.op)).flatten()
                {
                    let hash = if optional_op {
                        definite_hash
                    } else {
                        definite_hash ^ zobrist[entry.op]
                    };
                    let placed = if optional_op {
                        &mut optional
                    } else {
                        &mut definite
                    };
                    placed.insert(entry.op);
                    let sets = seen.entry((hash, next_state)).or_default();
                    let dominated = sets
                        .iter()
                        .any(|(d, o)| *d == definite && o.is_subset_of(&optional));
                    if !dominated {
                        sets.push((definite.clone(), optional.clone()));
                        definite_hash = hash;
                        stack.push((cursor, state, phase));
                        state = next_state;
                        list.remove(cursor);
                        if let Some(ret) = entry.matching {
                            list.remove(ret);
                            returns_left -= 1;
                        }
                        phase = Phase::Definite;
                        cursor = list.first();
                        continue;
                    }
                    if optional_op {
                        optional.remove(entry.op);
                    } else {
                        definite.remove(entry.op);
                    }
                }
            }
            cursor = list.next[cursor];
        } else if phase == Phase::Definite {
            // No definite call fits before this return: try the optional ones.
            phase = Phase::Indeterminate;
            cursor = list.first();
        } else {
            // The return of an operation not yet placed: what is placed so far cannot be
            // extended past it. Remember the deepest such point for the report.
            if stack.len() >= deepest {
                deepest = stack.len();
                stuck_at = Some((entry.op, state));
            }
            let Some((call_entry, previous, previous_phase)) = stack.pop() else {
                let (op, at) = stuck_at.expect("recorded just above");
                return KeyVerdict::Violation(describe_violation(key, &history, op, at, deepest));
            };
            let call = entries[call_entry];
            if let Some(ret) = call.matching {
                list.restore(ret);
                returns_left += 1;
            }
            list.restore(call_entry);
            if call.matching.is_some() {
                definite.remove(call.op);
                definite_hash ^= zobrist[call.op];
            } else {
                optional.remove(call.op);
            }
            state = previous;
            phase = previous_phase;
            cursor = list.next[call_entry];
        }
    }
}

fn describe_violation(
    key: &str,
    history: &KeyHistory<'_>,
    op: usize,
    state: KeyState,
    placed: usize,
) -> String {
    let o = history.ops[op];
    let model = match state.present {
        None => format!("absent (last revision {})", state.floor),
        Some(p) if p.writer == UNOBSERVED => format!(
            "present with a value no read returned (an indeterminate write) at revision {:?}",
            p.revision
        ),
        Some(p) => format!(
            "present with the value written by op #{} at revision {:?}",
            history.ops[p.writer].id, p.revision
        ),
    };
    format!(
        "profile {key}: no linearization of its {} operations; the deepest attempt placed {placed} \
         and could not place op #{} (client {}, {} via {}, invoked {} completed {} ns) answered \
         {:?}; the model there: {model}",
        history.ops.len(),
        o.id,
        o.client,
        o.call.kind(),
        o.endpoint,
        o.invoked_ns,
        o.completed_ns,
        o.outcome
    )
}

/// Operations that constrain linearizability, grouped by profile: failed operations and
/// indeterminate reads are left out (they did nothing, or tell nothing).
fn by_key(history: &History) -> BTreeMap<&str, Vec<&Operation>> {
    let mut keys: BTreeMap<&str, Vec<&Operation>> = BTreeMap::new();
    for op in history {
        let relevant = match op.outcome {
            Outcome::Failed { .. } => false,
            Outcome::Indeterminate { .. } => op.call.is_write(),
            _ => true,
        };
        if relevant {
            keys.entry(op.key.as_str()).or_default().push(op);
        }
    }
    keys
}

/// Is every profile's sub-history linearizable?
pub fn check(history: &History) -> Verdict {
    let keys = by_key(history);
    let taken: HashSet<u64> = history
        .iter()
        .filter_map(|op| match op.outcome {
            Outcome::Written { revision } | Outcome::Deleted { revision } => Some(revision),
            _ => None,
        })
        .collect();
    let mut violations = Vec::new();
    let mut inconclusive = Vec::new();
    let mut ops = 0usize;
    for (key, key_ops) in &keys {
        ops += key_ops.len();
        match check_key(key, key_ops.clone(), &taken) {
            KeyVerdict::Linearizable => {}
            KeyVerdict::Violation(message) => violations.push(message),
            KeyVerdict::Inconclusive => inconclusive.push(*key),
        }
    }
    if !violations.is_empty() {
        return Verdict::Fail { violations };
    }
    if !inconclusive.is_empty() {
        return Verdict::Inconclusive {
            reason: format!(
                "search exceeded {SEARCH_STEPS_PER_KEY_MAX} steps for profiles {inconclusive:?}"
            ),
        };
    }
    Verdict::Pass {
        detail: format!("{ops} operations over {} profiles", keys.len()),
    }
}

/// The revision an acknowledged operation reports, if any: the write's revision, or for a read
/// the cluster revision its answer reflects.
fn reported_revision(op: &Operation) -> Option<u64> {
    match op.outcome {
        Outcome::Written { revision } | Outcome::Deleted { revision } => Some(revision),
        Outcome::Found { read_revision, .. } => Some(read_revision),
        _ => None,
    }
}

/// Revisions are log indexes of one cluster, so they follow real time across profiles: an
/// operation invoked after a write was acknowledged reports a revision at least that write's
/// (strictly above it for another write), and a read reflects at least the profile revision it
/// returns.
pub fn check_revision_order(history: &History) -> Verdict {
    let mut violations = Vec::new();
    let mut writes: Vec<(u64, u64, u64)> = history
        .iter()
        .filter(|op| op.call.is_write())
        .filter_map(|op| reported_revision(op).map(|r| (op.completed_ns, r, op.id)))
        .collect();
    writes.sort();
    // Highest revision among writes completed by each point, for a binary search by time.
    let mut prefix_max: Vec<(u64, u64)> = Vec::with_capacity(writes.len());
    let mut best: (u64, u64) = (0, 0);
    for &(_, revision, id) in &writes {
        if revision > best.0 {
            best = (revision, id);
        }
        prefix_max.push(best);
    }
    let mut checked = 0usize;
    for op in history {
        let Some(revision) = reported_revision(op) else {
            continue;
        };
        checked += 1;
        if let Outcome::Found {
            revision: profile_revision,
            read_revision,
            ..
        } = op.outcome
        {
            if read_revision < profile_revision {
                violations.push(format!(
                    "op #{} (get {}) read revision {read_revision} is below the revision \
                     {profile_revision} of the profile it returned",
                    op.id, op.key
                ));
            }
        }
        let before = writes.partition_point(|&(completed, _, _)| completed < op.invoked_ns);
        if before == 0 {
            continue;
        }
        let (max_before, writer) = prefix_max[before - 1];
        let ok = if op.call.is_write() {
            revision > max_before
        } else {
            revision >= max_before
        };
        if !ok {
            violations.push(format!(
                "op #{} ({} {} via {}) reports revision {revision}, but op #{writer} had already \
                 been acknowledged at revision {max_before} before it was invoked",
                op.id,
                op.call.kind(),
                op.key,
                op.endpoint
            ));
        }
    }
    Verdict::from_violations(
        violations,
        format!("{checked} acknowledged operations with revisions"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::{Nic, ProfileValue};

    fn value(tag: u32) -> ProfileValue {
        ProfileValue {
            server: "srv-1".into(),
            vnics: vec![Nic {
                name: "eth0".into(),
                mac: format!("02:00:00:00:00:{tag:02x}"),
                network: "net".into(),
                vlan: tag,
            }],
            vhbas: vec![],
        }
    }

    /// Builds histories tersely: times in ms, one key unless told.
    struct H {
        ops: History,
    }

    impl H {
        fn new() -> Self {
            Self { ops: Vec::new() }
        }
        fn op(
            mut self,
            client: u32,
            call: Call,
            invoked: u64,
            completed: u64,
            outcome: Outcome,
        ) -> Self {
            self.ops.push(Operation {
                id: self.ops.len() as u64 + 1,
                client,
                key: "p1".into(),
                call,
                endpoint: "198.18.0.1:7001".into(),
                invoked_ns: invoked * 1_000_000,
                completed_ns: completed * 1_000_000,
                outcome,
            });
            self
        }
        fn key(mut self, key: &str) -> Self {
            self.ops.last_mut().expect("an op").key = key.into();
            self
        }
    }

    fn create(tag: u32) -> Call {
        Call::Create { value: value(tag) }
    }
    fn update(tag: u32, expected_revision: u64) -> Call {
        Call::Update {
            value: value(tag),
            expected_revision,
        }
    }
    fn found(tag: u32, revision: u64, created_revision: u64) -> Outcome {
        Outcome::Found {
            value: value(tag),
            revision,
            created_revision,
            read_revision: revision,
        }
    }
    fn written(revision: u64) -> Outcome {
        Outcome::Written { revision }
    }
    fn indeterminate() -> Outcome {
        Outcome::Indeterminate {
            reason: "timeout".into(),
        }
    }

    #[test]
    fn sequential_history_passes() {
        let h = H::new()
            .op(1, create(1), 0, 10, written(5))
            .op(1, Call::Get, 20, 30, found(1, 5, 5))
            .op(1, update(2, 5), 40, 50, written(9))
            .op(1, Call::Get, 60, 70, found(2, 9, 5))
            .op(
                1,
                Call::Delete {
                    expected_revision: 9,
                },
                80,
                90,
                Outcome::Deleted { revision: 12 },
            )
            .op(1, Call::Get, 100, 110, Outcome::NotFound)
            .op(1, create(3), 120, 130, written(15))
            .op(1, create(4), 140, 150, Outcome::AlreadyExists)
            .op(1, update(5, 9), 160, 170, Outcome::RevisionMismatch);
        assert!(check(&h.ops).is_pass(), "{}", check(&h.ops));
        assert!(check_revision_order(&h.ops).is_pass());
    }

    #[test]
    fn stale_read_fails() {
        // The update is acknowledged before the get starts, yet the get returns the old value.
        let h = H::new()
            .op(1, create(1), 0, 10, written(5))
            .op(1, update(2, 5), 20, 30, written(9))
            .op(2, Call::Get, 40, 50, found(1, 5, 5));
        let verdict = check(&h.ops);
        let Verdict::Fail { violations } = &verdict else {
            panic!("a stale read must fail, got {verdict}");
        };
        assert!(violations[0].contains("profile p1"), "{violations:?}");
        assert!(violations[0].contains("op #3"), "{violations:?}");
    }

    #[test]
    fn concurrent_read_may_see_either_value() {
        let old = H::new()
            .op(1, create(1), 0, 10, written(5))
            .op(1, update(2, 5), 20, 60, written(9))
            .op(2, Call::Get, 30, 50, found(1, 5, 5));
        assert!(check(&old.ops).is_pass());
        let new = H::new()
            .op(1, create(1), 0, 10, written(5))
            .op(1, update(2, 5), 20, 60, written(9))
            .op(2, Call::Get, 30, 50, found(2, 9, 5));
        assert!(check(&new.ops).is_pass());
    }

    #[test]
    fn read_of_a_value_never_written_fails() {
        let h =
            H::new()
                .op(1, create(1), 0, 10, written(5))
                .op(2, Call::Get, 20, 30, found(7, 5, 5));
        assert!(matches!(check(&h.ops), Verdict::Fail { .. }));
    }

    #[test]
    fn wrong_revision_on_read_fails() {
        let h =
            H::new()
                .op(1, create(1), 0, 10, written(5))
                .op(2, Call::Get, 20, 30, found(1, 6, 5));
        assert!(matches!(check(&h.ops), Verdict::Fail { .. }));
    }

    #[test]
    fn indeterminate_write_may_have_happened() {
        // The create timed out, yet a later read sees its value: it took effect.
        let h = H::new()
            .op(1, create(1), 0, 10, indeterminate())
            .op(2, Call::Get, 20, 30, found(1, 4, 4))
            .op(2, update(2, 4), 40, 50, written(8));
        assert!(check(&h.ops).is_pass(), "{}", check(&h.ops));
    }

    #[test]
    fn indeterminate_write_may_not_have_happened() {
        let h = H::new()
            .op(1, create(1), 0, 10, indeterminate())
            .op(2, Call::Get, 20, 30, Outcome::NotFound)
            .op(2, Call::Get, 40, 50, Outcome::NotFound);
        assert!(check(&h.ops).is_pass(), "{}", check(&h.ops));
    }

    #[test]
    fn indeterminate_write_may_take_effect_late() {
        // Not found at first, then the timed-out create shows up: it was applied after the
        // first read (its effect can land any time after its invocation).
        let h = H::new()
            .op(1, create(1), 0, 10, indeterminate())
            .op(2, Call::Get, 20, 30, Outcome::NotFound)
            .op(2, Call::Get, 40, 50, found(1, 6, 6));
        assert!(check(&h.ops).is_pass(), "{}", check(&h.ops));
    }

    #[test]
    fn effect_cannot_disappear_again() {
        // Seen, then not found with no delete anywhere: a lost write.
        let h = H::new()
            .op(1, create(1), 0, 10, indeterminate())
            .op(2, Call::Get, 20, 30, found(1, 6, 6))
            .op(2, Call::Get, 40, 50, Outcome::NotFound);
        assert!(matches!(check(&h.ops), Verdict::Fail { .. }));
    }

    #[test]
    fn acknowledged_create_then_not_found_fails() {
        let h = H::new().op(1, create(1), 0, 10, written(5)).op(
            2,
            Call::Get,
            20,
            30,
            Outcome::NotFound,
        );
        assert!(matches!(check(&h.ops), Verdict::Fail { .. }));
    }

    #[test]
    fn failed_write_must_not_show_up() {
        let h = H::new()
            .op(
                1,
                create(1),
                0,
                10,
                Outcome::Failed {
                    reason: "no leader".into(),
                },
            )
            .op(2, Call::Get, 20, 30, found(1, 5, 5));
        assert!(matches!(check(&h.ops), Verdict::Fail { .. }));
    }

    #[test]
    fn conditional_update_on_the_wrong_revision_cannot_succeed() {
        let h =
            H::new()
                .op(1, create(1), 0, 10, written(5))
                .op(1, update(2, 4), 20, 30, written(9));
        assert!(matches!(check(&h.ops), Verdict::Fail { .. }));
    }

    #[test]
    fn mismatch_on_the_current_revision_fails() {
        let h = H::new().op(1, create(1), 0, 10, written(5)).op(
            1,
            update(2, 5),
            20,
            30,
            Outcome::RevisionMismatch,
        );
        assert!(matches!(check(&h.ops), Verdict::Fail { .. }));
    }

    #[test]
    fn double_create_acknowledged_fails() {
        let h = H::new()
            .op(1, create(1), 0, 10, written(5))
            .op(2, create(2), 20, 30, written(7));
        assert!(matches!(check(&h.ops), Verdict::Fail { .. }));
    }

    #[test]
    fn concurrent_creates_one_wins() {
        let h = H::new()
            .op(1, create(1), 0, 30, Outcome::AlreadyExists)
            .op(2, create(2), 5, 20, written(7))
            .op(1, Call::Get, 40, 50, found(2, 7, 7));
        assert!(check(&h.ops).is_pass(), "{}", check(&h.ops));
    }

    #[test]
    fn keys_are_independent() {
        let h = H::new()
            .op(1, create(1), 0, 10, written(5))
            .op(2, Call::Get, 20, 30, Outcome::NotFound)
            .key("p2");
        assert!(check(&h.ops).is_pass());
    }

    #[test]
    fn many_concurrent_indeterminate_writes_stay_decidable() {
        // Forty timed-out updates, all concurrent with everything after them, then reads that
        // pin one of them: the memoized search must still decide quickly.
        let mut h = H::new().op(1, create(0), 0, 10, written(1));
        for i in 1..=40u32 {
            h = h.op(
                i + 1,
                update(i, 0),
                20 + i as u64,
                25 + i as u64,
                indeterminate(),
            );
        }
        h = h.op(99, Call::Get, 200, 210, found(17, 500, 1));
        h = h.op(99, update(100, 500), 220, 230, written(600));
        h = h.op(99, Call::Get, 240, 250, found(100, 600, 1));
        assert!(check(&h.ops).is_pass(), "{}", check(&h.ops));
    }

    #[test]
    fn an_unobserved_indeterminate_write_may_explain_a_mismatch() {
        let h = H::new()
            .op(1, create(1), 0, 10, written(5))
            .op(2, update(50, 0), 20, 25, indeterminate())
            .op(1, Call::Get, 30, 40, found(1, 5, 5))
            .op(1, update(2, 5), 50, 60, written(9))
            .op(1, Call::Get, 70, 80, found(2, 9, 5))
            .op(3, update(51, 0), 95, 96, indeterminate())
            // Only a write after revision 9 explains this refusal: the first timed-out update.
            .op(1, update(3, 9), 100, 110, Outcome::RevisionMismatch);
        assert!(check(&h.ops).is_pass(), "{}", check(&h.ops));
    }

    #[test]
    fn many_timed_out_blind_writes_do_not_hide_a_stale_read() {
        // Sixty unconditional updates time out, none ever read. They may explain changes of
        // revision, but not a read of a value overwritten before it began; and the search must
        // say so rather than give up.
        let mut h =
            H::new()
                .op(1, create(1), 0, 10, written(5))
                .op(1, update(2, 5), 20, 30, written(9));
        for i in 0..60u32 {
            h = h.op(
                10 + i,
                update(100 + i, 0),
                40 + i as u64,
                41 + i as u64,
                indeterminate(),
            );
        }
        h = h.op(99, Call::Get, 200, 210, found(1, 5, 5));
        let verdict = check(&h.ops);
        assert!(matches!(verdict, Verdict::Fail { .. }), "{verdict}");
    }

    #[test]
    fn an_unknown_revision_cannot_be_one_another_write_was_answered_with() {
        // The timed-out create shows up at revision 7, but revision 7 belongs to the write on
        // p2: log indexes are unique.
        let h = H::new()
            .op(1, create(1), 0, 10, indeterminate())
            .op(2, create(2), 0, 10, written(7))
            .key("p2")
            .op(3, Call::Get, 20, 30, found(1, 7, 7));
        assert!(matches!(check(&h.ops), Verdict::Fail { .. }));
        let fine = H::new()
            .op(1, create(1), 0, 10, indeterminate())
            .op(2, create(2), 0, 10, written(7))
            .key("p2")
            .op(3, Call::Get, 20, 30, found(1, 8, 8));
        assert!(check(&fine.ops).is_pass(), "{}", check(&fine.ops));
    }

    #[test]
    fn revision_going_back_in_real_time_fails() {
        // Another profile's write, acknowledged later in real time, reports a lower revision.
        let h = H::new()
            .op(1, create(1), 0, 10, written(9))
            .op(2, create(2), 20, 30, written(5))
            .key("p2");
        assert!(check(&h.ops).is_pass(), "per key each is fine");
        assert!(matches!(check_revision_order(&h.ops), Verdict::Fail { .. }));
    }

    #[test]
    fn read_behind_an_acknowledged_write_on_another_profile_fails() {
        let h = H::new()
            .op(1, create(1), 0, 10, written(9))
            .op(
                2,
                Call::Get,
                20,
                30,
                Outcome::Found {
                    value: value(2),
                    revision: 3,
                    created_revision: 3,
                    read_revision: 4,
                },
            )
            .key("p2");
        assert!(matches!(check_revision_order(&h.ops), Verdict::Fail { .. }));
    }
}
