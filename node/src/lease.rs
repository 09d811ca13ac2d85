//! Leases held by a quorum: a unit's right to present identities, granted by every voter on its
//! own clock, so that no change of leadership touches it.
//!
//! The argument is written out in ARCHITECTURE.md ("Leases held by a quorum"); the rules the
//! code here and in `node/leases.rs`, `controller.rs` and `agent.rs` keeps are:
//!
//! 1. **Voters grant on their own clocks.** A unit sends a renewal to every voter. A voter
//!    grants unless its applied state revokes the unit (or it is not a unit), and records the
//!    renewal's arrival `r` ([`Grants`]); it checks the revocation and records the grant in one
//!    critical section with its applied state, so a grant is either recorded before a
//!    revocation is applied there or refused after. Its answer carries its voter sets (two
//!    during a joint membership change) and the index the unit must apply first: the larger of
//!    its applied index and its last log index, both durable facts across a restart.
//! 2. **A unit presents while a majority holds.** The unit counts each grant as valid until
//!    `s + ttl`, `s` the renewal's send time on its own clock, toward the voter sets the grant
//!    carried, and presents while, for some such sets, every set has a majority of valid grants
//!    ([`HeldGrants::expires_at`]). Its switch watchdog is armed with that instant, and it
//!    programs nothing before it has applied the largest index any grant named.
//! 3. **Failover takes a revocation and a majority's attestation.** The leader revokes a unit
//!    through the log only when a majority of voters report its grants lapsed (the unit has
//!    fenced itself by then, so no healthy unit is fenced by it). A voter attests for a
//!    revocation at epoch `e` when it has applied it and has granted nothing for
//!    `ttl + drift_margin` ([`VoterReport`]); from then on it grants nothing to the unit until the
//!    failover ends the revocation. The leader commits the moves ([`vnet_model::Command::FailOver`])
//!    only when a majority of every voter set of the membership has attested.
//!
//! Why no identity is on two switches: a peer programs a moved profile only after applying the
//! failover. Whenever the failed unit could present it, its applied state precedes the
//! revocation, so every grant it holds came from a voter that had not applied the revocation
//! when it granted (rule 1: the index a grant names is at least the voter's applied index).
//! Such a grant from an attesting voter arrived before that voter's attestation minus
//! `ttl + margin`, and has ended; so all grants it still holds come from voters that did not
//! attest, which cannot be a majority of a voter set that a majority attested in. Other voter
//! sets are membership configurations that cannot still be effective on a majority (see the
//! architecture document). A restarted voter forgets its grants but counts silence from its
//! start, and its log still holds the revocation, which the index it names then covers.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use vnet_model::{Role, State};

/// The voter sets of one membership configuration (one set, or two during a joint change).
pub type VoterSets = Vec<BTreeSet<u64>>;

/// Whether `holds` is true of a strict majority of every set in `sets` (false for no sets).
pub fn majority_of_each(sets: &VoterSets, holds: impl Fn(u64) -> bool) -> bool {
    !sets.is_empty()
        && sets.iter().all(|set| {
            let count = set.iter().filter(|voter| holds(**voter)).count();
            !set.is_empty() && count > set.len() / 2
        })
}

/// Why a voter refused a renewal.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GrantRefused {
    #[error("{unit:?} is not a unit of this cluster")]
    NotAUnit { unit: String },
    #[error(
        "the lease of unit {unit} is revoked (epoch {epoch}): its profiles are being failed \
         over; it is granted again once that is committed"
    )]
    Revoked { unit: String, epoch: u64 },
    #[error("node {voter} is not a voter, so it grants no lease")]
    NotAVoter { voter: u64 },
}

/// Whether a voter whose applied state is `state` may grant `unit` a lease.
pub fn may_grant(state: &State, unit: &str) -> Result<(), GrantRefused> {
    if !state
        .member_by_name(unit)
        .is_some_and(|m| m.role == Role::Unit)
    {
        return Err(GrantRefused::NotAUnit {
            unit: unit.to_owned(),
        });
    }
    match state.revoked_at(unit) {
        Some(epoch) => Err(GrantRefused::Revoked {
            unit: unit.to_owned(),
            epoch,
        }),
        None => Ok(()),
    }
}

/// A voter's record of the renewals it granted, on its own monotonic clock. Kept in memory: a
/// restarted voter counts every unit as granted at its start, which is after every grant it
/// made before.
#[derive(Debug)]
pub struct Grants {
    started: Instant,
    last: BTreeMap<String, Instant>,
}

impl Grants {
    pub fn new(started: Instant) -> Self {
        Self {
            started,
            last: BTreeMap::new(),
        }
    }

    /// Records a grant of a renewal that arrived at `arrived`.
    pub fn record(&mut self, unit: &str, arrived: Instant) {
        let entry = self.last.entry(unit.to_owned()).or_insert(arrived);
        *entry = (*entry).max(arrived);
    }

    /// How long this voter has granted `unit` nothing, counting from its start at most.
    pub fn silent_for(&self, unit: &str, now: Instant) -> Duration {
        let since = self
            .last
            .get(unit)
            .map_or(self.started, |r| (*r).max(self.started));
        now.saturating_duration_since(since)
    }

    /// Forgets units that are no longer members.
    pub fn retain(&mut self, keep: impl Fn(&str) -> bool) {
        self.last.retain(|unit, _| keep(unit));
    }
}

/// What one voter says of every unit, taken in one critical section with its applied state.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct VoterReport {
    pub voter: u64,
    pub units: BTreeMap<String, UnitSeen>,
    /// If the voter is itself a unit: its lease and switch as its agent last saw them. For
    /// status only; no decision reads it.
    #[serde(default)]
    pub own: Option<UnitView>,
}

/// A unit's lease and switch as its own agent sees them.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct UnitView {
    pub unit: String,
    /// Voters whose grants are valid now.
    pub voters_granting: u32,
    /// How long the lease has left; `None` when none is held.
    pub lease_left_ms: Option<u64>,
    /// Profiles the switch reported presenting at the agent's last look.
    pub switch_presenting: Vec<String>,
    /// Whether the agent could read the switch at its last look.
    pub switch_reachable: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct UnitSeen {
    /// Milliseconds since this voter last granted the unit a renewal (or since it started).
    pub silent_ms: u64,
    /// The revocation of the unit's lease this voter has applied, if any.
    pub revoked_at: Option<u64>,
}

impl VoterReport {
    /// The report of a voter whose applied state is `state` and whose grants are `grants`.
    /// Callers hold the applied state's lock across this call (see rule 1 in the module doc):
    /// a revocation seen here was applied before any grant this report misses.
    pub fn of(voter: u64, state: &State, grants: &Grants, now: Instant) -> Self {
        let units = state
            .members()
            .filter(|m| m.role == Role::Unit)
            .map(|m| m.name.as_str())
            .chain(state.revocations().map(|(unit, _)| unit.as_str()))
            .map(|unit| {
                let seen = UnitSeen {
                    silent_ms: grants.silent_for(unit, now).as_millis() as u64,
                    revoked_at: state.revoked_at(unit),
                };
                (unit.to_owned(), seen)
            })
            .collect();
        Self {
            voter,
            units,
            own: None,
        }
    }
}

/// How the leader judges a unit from the voters' reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Judgement {
    /// Not lapsed at a majority: the unit may still hold its lease. Nothing moves.
    Live,
    /// A majority of every voter set granted it nothing for `ttl + margin`: it has fenced itself.
    Lapsed { silent_ms: u64 },
}

/// Judges `unit` from `reports` (one per voter that answered; a voter that did not answer
/// counts against lapse), under the membership's `sets`.
pub fn judge(
    sets: &VoterSets,
    reports: &BTreeMap<u64, VoterReport>,
    unit: &str,
    failed_after: Duration,
) -> Judgement {
    let failed_after_ms = failed_after.as_millis() as u64;
    let silent = |voter: u64| {
        reports
            .get(&voter)
            .and_then(|r| r.units.get(unit))
            .map(|seen| seen.silent_ms)
    };
    if majority_of_each(sets, |v| silent(v).is_some_and(|ms| ms > failed_after_ms)) {
        // The shortest silence among the lapsed voters, for messages.
        let silent_ms = sets
            .iter()
            .flatten()
            .filter_map(|v| silent(*v))
            .filter(|ms| *ms > failed_after_ms)
            .min()
            .unwrap_or(failed_after_ms);
        Judgement::Lapsed { silent_ms }
    } else {
        Judgement::Live
    }
}

/// Whether a majority of every voter set has attested that its grants to `unit` lapsed under
/// the revocation at `epoch`: each applied that revocation and has granted nothing for
/// `failed_after` since. A voter that attested grants nothing more until the failover.
pub fn attested(
    sets: &VoterSets,
    reports: &BTreeMap<u64, VoterReport>,
    unit: &str,
    epoch: u64,
    failed_after: Duration,
) -> bool {
    let failed_after_ms = failed_after.as_millis() as u64;
    majority_of_each(sets, |voter| {
        reports
            .get(&voter)
            .and_then(|r| r.units.get(unit))
            .is_some_and(|seen| seen.revoked_at == Some(epoch) && seen.silent_ms > failed_after_ms)
    })
}

/// A voter's grant, as the unit received it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Grant {
    pub voter: u64,
    /// The voter sets of the membership the voter had when it granted.
    pub sets: VoterSets,
    /// The unit programs nothing before it has applied at least this index.
    pub min_applied_index: u64,
}

/// The grants a unit holds, each valid until its renewal's send time plus the ttl, counted
/// toward the voter sets it carried. Times are CLOCK_MONOTONIC nanoseconds, the clock the
/// unit's switch shares.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeldGrants {
    valid_until: BTreeMap<(VoterSets, u64), u64>,
    min_applied_index: u64,
}

impl HeldGrants {
    /// Adds a grant of a renewal *sent* at `sent_at_mono_ns` (never counted from the reply: the
    /// grant may have been delayed). A late grant never shortens what is held; the index to
    /// apply only grows.
    pub fn add(&mut self, grant: &Grant, sent_at_mono_ns: u64, ttl: Duration) {
        let until = sent_at_mono_ns.saturating_add(ttl.as_nanos() as u64);
        let entry = self
            .valid_until
            .entry((grant.sets.clone(), grant.voter))
            .or_insert(until);
        *entry = (*entry).max(until);
        self.min_applied_index = self.min_applied_index.max(grant.min_applied_index);
    }

    /// Drops grants that ended before `now_mono_ns`.
    pub fn prune(&mut self, now_mono_ns: u64) {
        self.valid_until.retain(|_, until| *until > now_mono_ns);
    }

    /// When the lease ends: the latest instant at which, for the voter sets of some membership,
    /// every set still has a majority of valid grants carrying those sets. `None` when no
    /// membership has a majority at all.
    pub fn expires_at(&self) -> Option<u64> {
        let mut by_sets: BTreeMap<&VoterSets, BTreeMap<u64, u64>> = BTreeMap::new();
        for ((sets, voter), until) in &self.valid_until {
            by_sets.entry(sets).or_default().insert(*voter, *until);
        }
        by_sets
            .into_iter()
            .filter_map(|(sets, grants)| {
                // For each set, the latest instant a majority still holds: the k-th latest end
                // among its voters, k a majority of the set.
                sets.iter()
                    .map(|set| {
                        let mut ends: Vec<u64> = set
                            .iter()
                            .filter_map(|voter| grants.get(voter).copied())
                            .collect();
                        let needed = set.len() / 2 + 1;
                        if set.is_empty() || ends.len() < needed {
                            return None;
                        }
                        ends.sort_unstable_by(|a, b| b.cmp(a));
                        Some(ends[needed - 1])
                    })
                    .collect::<Option<Vec<u64>>>()
                    .and_then(|ends| ends.into_iter().min())
            })
            .max()
    }

    /// The lease as the agent acts on it.
    pub fn lease(&self) -> Option<UnitLease> {
        self.expires_at().map(|expires_at_mono_ns| UnitLease {
            expires_at_mono_ns,
            min_applied_index: self.min_applied_index,
        })
    }

    /// How many voters' grants are valid at `now_mono_ns` (any membership), for status.
    pub fn voters_granting(&self, now_mono_ns: u64) -> usize {
        self.valid_until
            .iter()
            .filter(|(_, until)| **until > now_mono_ns)
            .map(|((_, voter), _)| *voter)
            .collect::<BTreeSet<_>>()
            .len()
    }
}

/// A unit's lease at one moment, as its agent acts on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnitLease {
    /// When the lease lapses.
    pub expires_at_mono_ns: u64,
    /// The agent programs nothing until it has applied at least this log index.
    pub min_applied_index: u64,
}

impl UnitLease {
    /// Whether the lease still lets the agent act at `now_mono_ns`.
    pub fn is_live(&self, now_mono_ns: u64) -> bool {
        now_mono_ns < self.expires_at_mono_ns
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: Duration = Duration::from_millis(800);
    const MS: u64 = 1_000_000;

    fn sets(voters: &[&[u64]]) -> VoterSets {
        voters.iter().map(|s| s.iter().copied().collect()).collect()
    }

    fn grant(voter: u64, sets: &VoterSets, index: u64) -> Grant {
        Grant {
            voter,
            sets: sets.clone(),
            min_applied_index: index,
        }
    }

    #[test]
    fn a_lease_lasts_while_a_majority_of_grants_is_valid() {
        let three = sets(&[&[1, 2, 3]]);
        let mut held = HeldGrants::default();
        assert_eq!(held.expires_at(), None, "no grant, no lease");
        held.add(&grant(1, &three, 4), 1_000 * MS, TTL);
        assert_eq!(held.expires_at(), None, "one voter of three is no majority");
        held.add(&grant(3, &three, 9), 1_100 * MS, TTL);
        // Two of three: the lease ends when the earlier of the two does.
        assert_eq!(held.expires_at(), Some(1_800 * MS));
        held.add(&grant(2, &three, 2), 1_200 * MS, TTL);
        // Three of three: the second latest end.
        assert_eq!(held.expires_at(), Some(1_900 * MS));
        let lease = held.lease().expect("a lease");
        assert_eq!(lease.min_applied_index, 9, "the largest index named");
        assert!(lease.is_live(1_900 * MS - 1) && !lease.is_live(1_900 * MS));
        // A late grant of an older renewal never shortens it.
        held.add(&grant(3, &three, 1), 900 * MS, TTL);
        assert_eq!(held.expires_at(), Some(1_900 * MS));
        held.prune(1_850 * MS);
        assert_eq!(held.voters_granting(1_850 * MS), 2);
        assert_eq!(held.expires_at(), Some(1_900 * MS));
    }

    #[test]
    fn grants_count_only_toward_the_membership_they_were_given_under() {
        let old = sets(&[&[1, 2, 3]]);
        let joint = sets(&[&[1, 2, 3], &[1, 2, 3, 4, 5]]);
        let mut held = HeldGrants::default();
        // A majority of the old set but under two different memberships: not a lease.
        held.add(&grant(1, &old, 0), 0, TTL);
        held.add(&grant(2, &joint, 0), 0, TTL);
        assert_eq!(held.expires_at(), None);
        // Under the joint membership every set needs a majority: 2 of 3 is not 2 of 5.
        held.add(&grant(3, &joint, 0), 0, TTL);
        assert_eq!(held.expires_at(), None);
        held.add(&grant(4, &joint, 0), 10 * MS, TTL);
        assert_eq!(held.expires_at(), Some(800 * MS));
    }

    fn report(voter: u64, unit: &str, silent_ms: u64, revoked_at: Option<u64>) -> VoterReport {
        VoterReport {
            voter,
            own: None,
            units: BTreeMap::from([(
                unit.to_owned(),
                UnitSeen {
                    silent_ms,
                    revoked_at,
                },
            )]),
        }
    }

    #[test]
    fn lapse_and_attestation_need_a_majority_of_every_set() {
        let three = sets(&[&[1, 2, 3]]);
        let after = Duration::from_millis(950);
        let mut reports = BTreeMap::new();
        reports.insert(1, report(1, "unit-a", 2_000, None));
        assert_eq!(judge(&three, &reports, "unit-a", after), Judgement::Live);
        // A voter that does not answer counts against lapse.
        reports.insert(2, report(2, "unit-a", 100, None));
        assert_eq!(judge(&three, &reports, "unit-a", after), Judgement::Live);
        reports.insert(3, report(3, "unit-a", 1_000, None));
        assert_eq!(
            judge(&three, &reports, "unit-a", after),
            Judgement::Lapsed { silent_ms: 1_000 }
        );
        // Attestation: the revocation of this epoch applied, and silent since.
        assert!(!attested(&three, &reports, "unit-a", 7, after));
        reports.insert(1, report(1, "unit-a", 2_000, Some(7)));
        reports.insert(3, report(3, "unit-a", 1_000, Some(6)));
        assert!(
            !attested(&three, &reports, "unit-a", 7, after),
            "wrong epoch"
        );
        reports.insert(3, report(3, "unit-a", 900, Some(7)));
        assert!(
            !attested(&three, &reports, "unit-a", 7, after),
            "not silent long enough"
        );
        reports.insert(3, report(3, "unit-a", 960, Some(7)));
        assert!(attested(&three, &reports, "unit-a", 7, after));
        let joint = sets(&[&[1, 2, 3], &[3, 4, 5]]);
        assert!(
            !attested(&joint, &reports, "unit-a", 7, after),
            "the second set has one attester of three"
        );
    }

    #[test]
    fn a_voter_counts_silence_from_its_start_and_refuses_a_revoked_unit() {
        let start = Instant::now();
        let mut grants = Grants::new(start);
        assert_eq!(
            grants.silent_for("unit-a", start + Duration::from_millis(300)),
            Duration::from_millis(300)
        );
        grants.record("unit-a", start + Duration::from_millis(500));
        grants.record("unit-a", start + Duration::from_millis(400));
        assert_eq!(
            grants.silent_for("unit-a", start + Duration::from_millis(700)),
            Duration::from_millis(200),
            "a late record never moves the last grant back"
        );
        let state = State::default();
        assert!(matches!(
            may_grant(&state, "unit-a"),
            Err(GrantRefused::NotAUnit { .. })
        ));
    }
}
