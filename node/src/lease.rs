//! Leases: a unit's right to present identities, and the leader's view of which units hold one.
//!
//! ## Why no identity is presented by two switches at once
//!
//! Let a unit send a renewal at time `s` (its monotonic clock) and have it granted. Its lease
//! then expires at `E = s + lease_ttl`; the unit arms its switch watchdog with `E` (an absolute
//! CLOCK_MONOTONIC deadline), and the switch clears itself at `E` whether or not `vnetd` is
//! alive. The agent also clears at `E` and never programs after it.
//!
//! The leader records the *arrival* time `r >= s` of each granted renewal and declares the unit
//! failed only when `now - r > lease_ttl + drift_margin`, i.e. after `r + ttl + margin > E`. Only
//! then does it commit new placements for the unit's profiles, and a peer programs them only
//! after applying those — strictly after `E`, so after the failed unit's switch has cleared.
//! `drift_margin` absorbs clock-rate differences and scheduling delay between the two machines.
//!
//! A deposed leader cannot extend a lease: a renewal is granted only after a read-index round
//! confirms leadership with a quorum, and that round sends fresh heartbeats *after* the renewal
//! arrived. Any later leader was elected by a quorum that includes a node which acked that
//! heartbeat first, so the new leader's election time `t_e > r`. A new leader treats every unit
//! as renewed at `t_e` (it knows nothing older), and so waits `ttl + margin` past `t_e > r >= s`
//! before declaring anyone failed.
//!
//! It may count from earlier than `t_e`: from `max(h, t_e - election_timeout_max)`, where `h`
//! is when this node last received an AppendEntries (from any leader; or its own start, if none
//! since). Take the voter `V` shared by the old leader's confirming quorum and the new leader's
//! electing quorum; it acked the confirming heartbeat at some `a >= r`. If `V` is this node,
//! `h >= a >= r`. If `V` is another follower, it voted for us only after its leader lease
//! (openraft: the longest election timeout since it last heard a leader) ran out, so
//! `t_e > a + election_timeout_max >= r + election_timeout_max`. Either way the starting point
//! is at least `r`. (A node that restarted acked nothing since its start, which is then `h`.)
//!
//! One case has no follower to lean on: the shared voter is the old leader itself, re-elected.
//! It received no AppendEntries for the grants it made, so `h` says nothing about them, and its
//! other voter may have voted at once (a voter whose committed vote is for a candidate does not
//! wait out its leader lease for that same candidate). So the table keeps the renewals this
//! node granted across its terms, and a new term counts each unit from the later of the two.
//! (The interleaving: a leader grants at `r`; a candidate cut off from it asks for votes, and
//! the leader, whose own vote was last touched at its election, yields; that candidate, having
//! voted for itself, votes for the old leader's next campaign at once; the old leader leads
//! again less than `election_timeout_max` after `r`.) A restart forgets the table, but then `h`
//! is the start, which is after every grant the node made before it.
//!
//! A unit that was declared failed must not come back and program what its stale state still
//! places on it. So (1) while the moves off a failed unit are being committed its renewals are
//! refused, and a renewal that raced with a declaration (the unit's failure epoch changed while
//! it waited for the quorum) is refused too; (2) every grant carries the read index, and the
//! agent programs nothing until it has applied at least that index — which includes the moves.
//! A failover write that times out may still commit later, so a unit stays refused until the
//! leader has *seen* its moves committed (a successful write, or an applied state placing
//! nothing on it); only then can a grant's read index be sure to cover them.
//!
//! ## Every grant is ordered against every judgement of failure
//!
//! The argument above compares a grant's arrival `r` with the moment the leader *judges* the
//! unit failed. A grant is not atomic: it is checked on arrival, waits for a read-index round,
//! and is recorded only then. The leader must therefore never act on a judgement of failure
//! that a grant could slip past. Two rules, both kept under the one lock of this table:
//!
//! - A grant reads the unit's failure epoch when it begins ([`LeaseTable::begin_grant`]) and is
//!   recorded only if the epoch is unchanged when it ends ([`LeaseTable::finish_grant`]).
//! - Whoever acts on a unit's failure (the controller's failover, the completion of a move off
//!   a failed source, an operator's failover off a failed unit) judges health, decides and bumps
//!   the epoch in one critical section (`controller.rs`), never across an `await`.
//!
//! So each grant is either recorded before the judgement (and the judgement sees the unit
//! renewed, unless the grant arrived more than `ttl + margin` ago, when its lease has ended
//! anyway) or ends after the bump and is refused. Judging health, then awaiting a write, then
//! declaring on that old judgement let a grant finish in between: the unit programmed its old
//! placement under a fresh lease while a peer took the same profiles over.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::placement::Health;

/// The leader's in-memory record of lease renewals. Reset whenever this node starts a new term
/// as leader: a new leader knows nothing older than its own election.
#[derive(Debug)]
pub struct LeaseTable {
    term: u64,
    elected_at: Instant,
    last_renewal: BTreeMap<String, Instant>,
    /// Bumped each time a unit is declared failed; a renewal granted across a bump is refused.
    failure_epoch: BTreeMap<String, u64>,
    /// Units whose failover moves are being committed; their renewals are refused meanwhile.
    failover_pending: BTreeMap<String, ()>,
    /// When each unit last became healthy (for failback hold-down).
    healthy_since: BTreeMap<String, Instant>,
}

impl LeaseTable {
    pub fn new() -> Self {
        Self {
            term: 0,
            elected_at: Instant::now(),
            last_renewal: BTreeMap::new(),
            failure_epoch: BTreeMap::new(),
            failover_pending: BTreeMap::new(),
            healthy_since: BTreeMap::new(),
        }
    }

    /// Starts afresh when `term` is new: every unit counts as renewed at `counted_from` (never
    /// later than `now`; see the module doc for how early it may soundly be), or at the last
    /// renewal this node granted it in an earlier term, whichever is later.
    ///
    /// An older term than the table's changes nothing: callers may hold a stale view of the
    /// term, and going back would forget the newer term's renewals and failure epochs.
    pub fn sync_term(&mut self, term: u64, now: Instant, counted_from: Instant) {
        if term > self.term {
            // Renewals granted here while leading an earlier term are kept: this node may be
            // the only voter shared by that grant's confirming quorum and its own electing one,
            // and it received no AppendEntries for them (module doc).
            let granted_before = std::mem::take(&mut self.last_renewal);
            *self = Self::new();
            self.term = term;
            self.elected_at = counted_from.min(now);
            self.last_renewal = granted_before;
        }
    }

    fn last_seen(&self, unit: &str) -> Instant {
        self.last_renewal
            .get(unit)
            .copied()
            .map_or(self.elected_at, |r| r.max(self.elected_at))
    }

    pub fn epoch(&self, unit: &str) -> u64 {
        self.failure_epoch.get(unit).copied().unwrap_or(0)
    }

    pub fn is_failover_pending(&self, unit: &str) -> bool {
        self.failover_pending.contains_key(unit)
    }

    /// The first half of a grant, on the renewal's arrival: refused while the unit's failover
    /// is being committed; otherwise the ticket to present to [`LeaseTable::finish_grant`].
    pub fn begin_grant(&self, unit: &str) -> Result<GrantTicket, GrantRefused> {
        if self.is_failover_pending(unit) {
            return Err(GrantRefused::FailoverPending);
        }
        Ok(GrantTicket {
            term: self.term,
            epoch: self.epoch(unit),
        })
    }

    /// The second half, after the read-index round: records the renewal as arrived at `arrived`
    /// unless the unit's failure was acted on since the ticket was issued (or the term changed),
    /// in which case the read index may predate the moves off the unit and nothing is granted.
    pub fn finish_grant(
        &mut self,
        unit: &str,
        ticket: GrantTicket,
        arrived: Instant,
    ) -> Result<(), GrantRefused> {
        if ticket.term != self.term
            || ticket.epoch != self.epoch(unit)
            || self.is_failover_pending(unit)
        {
            return Err(GrantRefused::FailedDuringRenewal);
        }
        let entry = self.last_renewal.entry(unit.to_owned()).or_insert(arrived);
        *entry = (*entry).max(arrived);
        Ok(())
    }

    /// Records that a decision relied on `unit` having failed: a grant under way is refused.
    pub fn act_on_failure(&mut self, unit: &str) {
        *self.failure_epoch.entry(unit.to_owned()).or_default() += 1;
        self.healthy_since.remove(unit);
    }

    /// Marks `unit` failed and its profiles as moving: its renewals are refused until
    /// [`LeaseTable::failover_done`].
    pub fn declare_failed(&mut self, unit: &str) {
        self.act_on_failure(unit);
        self.failover_pending.insert(unit.to_owned(), ());
    }

    /// Units whose failover has not been seen to commit.
    pub fn pending_units(&self) -> Vec<String> {
        self.failover_pending.keys().cloned().collect()
    }

    pub fn failover_done(&mut self, unit: &str) {
        self.failover_pending.remove(unit);
    }

    /// Health of each unit at `now`: healthy while `now - last_seen <= ttl + margin`.
    pub fn health<'a>(
        &mut self,
        units: impl Iterator<Item = &'a str>,
        now: Instant,
        failed_after: Duration,
    ) -> Health {
        let mut health = Health::default();
        for unit in units {
            let silent = now.saturating_duration_since(self.last_seen(unit));
            if silent > failed_after || self.failover_pending.contains_key(unit) {
                self.healthy_since.remove(unit);
                health
                    .failed_for_ms
                    .insert(unit.to_owned(), silent.as_millis() as u64);
            } else {
                let last_seen = self.last_seen(unit).min(now);
                let since = *self
                    .healthy_since
                    .entry(unit.to_owned())
                    .or_insert(last_seen);
                health.healthy_for_ms.insert(
                    unit.to_owned(),
                    now.saturating_duration_since(since).as_millis() as u64,
                );
            }
        }
        health
    }

    /// Milliseconds since the last granted renewal of `unit` (or since this term began).
    pub fn age_ms(&self, unit: &str, now: Instant) -> u64 {
        now.saturating_duration_since(self.last_seen(unit))
            .as_millis() as u64
    }
}

impl Default for LeaseTable {
    fn default() -> Self {
        Self::new()
    }
}

/// Proof that a grant began at a given term and failure epoch of its unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GrantTicket {
    term: u64,
    epoch: u64,
}

/// Why a renewal was not granted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum GrantRefused {
    #[error("was declared failed and its profiles are being moved; retry shortly")]
    FailoverPending,
    #[error("was declared failed during the renewal")]
    FailedDuringRenewal,
}

/// A unit's own lease, as its agent holds it. Times are CLOCK_MONOTONIC nanoseconds, the clock
/// the unit's switch shares, so the watchdog is armed with the very instant the agent stops at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnitLease {
    /// When the lease lapses.
    pub expires_at_mono_ns: u64,
    /// The agent programs nothing until it has applied at least this log index.
    pub min_applied_index: u64,
}

impl UnitLease {
    /// The lease after a grant of a renewal *sent* at `sent_at_mono_ns` (never counted from the
    /// reply: the grant may have been delayed). A late grant never shortens a later lease, and
    /// the read index only grows: whatever lease is held, nothing is programmed on a state
    /// older than any grant seen.
    pub fn after_grant(
        held: Option<UnitLease>,
        sent_at_mono_ns: u64,
        ttl: std::time::Duration,
        read_index: u64,
    ) -> UnitLease {
        let granted = UnitLease {
            expires_at_mono_ns: sent_at_mono_ns.saturating_add(ttl.as_nanos() as u64),
            min_applied_index: read_index,
        };
        match held {
            None => granted,
            Some(old) => UnitLease {
                expires_at_mono_ns: old.expires_at_mono_ns.max(granted.expires_at_mono_ns),
                min_applied_index: old.min_applied_index.max(read_index),
            },
        }
    }

    /// Whether the lease still lets the agent act at `now_mono_ns`.
    pub fn is_live(&self, now_mono_ns: u64) -> bool {
        now_mono_ns < self.expires_at_mono_ns
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL_PLUS_MARGIN: Duration = Duration::from_millis(1_200);

    #[test]
    fn a_new_term_treats_everyone_as_renewed_at_election() {
        let start = Instant::now();
        let mut table = LeaseTable::new();
        table.sync_term(2, start, start);
        let units = ["unit-a", "unit-b"];
        let health = table.health(
            units.into_iter(),
            start + Duration::from_millis(1_000),
            TTL_PLUS_MARGIN,
        );
        assert_eq!(health.healthy_for_ms.len(), 2);
        let later = start + Duration::from_millis(1_300);
        let ticket = table.begin_grant("unit-a").expect("nothing pending");
        table
            .finish_grant("unit-a", ticket, start + Duration::from_millis(900))
            .expect("no failure acted on");
        let health = table.health(units.into_iter(), later, TTL_PLUS_MARGIN);
        assert!(health.healthy_for_ms.contains_key("unit-a"));
        assert_eq!(health.failed_for_ms.get("unit-b"), Some(&1_300));
        // A new term counts from its start, or from a later renewal this node granted.
        table.sync_term(3, later, later - Duration::from_millis(500));
        assert_eq!(
            table.age_ms("unit-a", later),
            400,
            "granted at 900 ms, before the start"
        );
        assert_eq!(table.age_ms("unit-b", later), 500);
        // A new term may count everyone as renewed earlier than its first look.
        table.sync_term(4, later, later - Duration::from_millis(300));
        assert_eq!(table.age_ms("unit-b", later), 300);
    }

    #[test]
    fn a_late_grant_never_shortens_the_lease_and_the_read_index_only_grows() {
        let ttl = Duration::from_millis(800);
        let first = UnitLease::after_grant(None, 1_000, ttl, 7);
        assert_eq!(first.expires_at_mono_ns, 1_000 + 800_000_000);
        // A grant of an older renewal arriving late keeps the later end, takes the larger index.
        let late = UnitLease::after_grant(Some(first), 500, ttl, 9);
        assert_eq!(late.expires_at_mono_ns, first.expires_at_mono_ns);
        assert_eq!(late.min_applied_index, 9);
        let newer = UnitLease::after_grant(Some(late), 2_000, ttl, 3);
        assert_eq!(newer.expires_at_mono_ns, 2_000 + 800_000_000);
        assert_eq!(newer.min_applied_index, 9);
        assert!(newer.is_live(2_000 + 799_999_999) && !newer.is_live(2_000 + 800_000_000));
    }

    #[test]
    fn a_declared_failure_refuses_renewals_until_done_and_bumps_the_epoch() {
        let now = Instant::now();
        let mut table = LeaseTable::new();
        table.sync_term(1, now, now);
        let before = table.epoch("unit-a");
        table.declare_failed("unit-a");
        assert!(table.is_failover_pending("unit-a"));
        assert_eq!(table.epoch("unit-a"), before + 1);
        let health = table.health(["unit-a"].into_iter(), now, TTL_PLUS_MARGIN);
        assert!(
            health.failed_for_ms.contains_key("unit-a"),
            "pending counts as failed"
        );
        table.failover_done("unit-a");
        assert!(!table.is_failover_pending("unit-a"));
    }
}
