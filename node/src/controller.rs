//! The leader's placement controller, one pass at a time and without I/O: what to write, given
//! the voters' lease reports, the applied state and the time. `Node::run_placement` gathers the
//! reports and performs the writes; the failover simulator (`sim/`) drives the same functions
//! with simulated time.
//!
//! A pass judges every unit from the reports (`lease::judge`): a unit is failed when a majority
//! of every voter set has granted it nothing for `ttl + drift_margin` (it has fenced itself by
//! then), or when its lease is revoked. `policy::decide` then proposes changes; those that
//! rely on a unit's failure go through three steps, each its own write:
//! 1. `RevokeLease`: voters that apply it grant the unit nothing more;
//! 2. once a majority of every voter set attests that it applied the revocation and has been
//!    silent for `ttl + margin` (`lease::attested`), and the voter membership is settled,
//!    `FailOver` moves the profiles and ends the revocation;
//! 3. a revocation whose unit holds nothing any more is ended by an empty `FailOver`.
//!
//! A membership is settled once this leader has seen it committed and alone in effect for
//! `ttl + margin` (`SettleMembership`): grants made under earlier memberships have ended by then.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use vnet_model::{Command, PlacementChange, Role, State};

use crate::error::ApiError;
use crate::lease::{attested, judge, Judgement, VoterReport, VoterSets};
use crate::policy::{decide, planned_moves, Health, Policy};

/// The controller's tunables.
#[derive(Debug, Clone, Copy)]
pub struct Controller {
    pub policy: Policy,
    /// A unit no majority has granted anything for this long (lease TTL plus drift margin) is
    /// judged failed.
    pub failed_after: Duration,
    /// Most placement changes in one command: a pass with more writes several `Place`s, and a
    /// failover of more profiles several `FailOver`s (the last ends the revocation). Keeps each
    /// log entry small enough to replicate within a heartbeat on a slow link.
    pub changes_per_command: usize,
}

/// What the leader knows of the voters, for one pass.
#[derive(Debug, Clone)]
pub struct Voters<'a> {
    /// The voter sets of the effective membership.
    pub sets: &'a VoterSets,
    /// The latest report of each voter that answered.
    pub reports: &'a BTreeMap<u64, VoterReport>,
    /// Whether the effective membership is settled (recorded in the state), so a failover may
    /// be committed under it.
    pub settled: bool,
}

/// What an operator asked to move: one profile to `to`, or every profile off `from`.
#[derive(Debug, Clone, Copy, Default)]
pub struct OperatorMove<'a> {
    pub profile: Option<&'a str>,
    pub from: Option<&'a str>,
    pub to: Option<&'a str>,
}

/// The writes of one pass, in the order they should be made.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PassWrites {
    pub revocations: Vec<String>,
    /// Unit, revocation epoch, and changes off it: one entry per command, so a unit's failover
    /// may take several, in order.
    pub failovers: Vec<(String, u64, Vec<PlacementChange>)>,
    /// The other changes, one entry per `Place` command.
    pub places: Vec<Vec<PlacementChange>>,
}

impl PassWrites {
    pub fn is_empty(&self) -> bool {
        self.revocations.is_empty() && self.failovers.is_empty() && self.places.is_empty()
    }

    /// The units this pass fails over (each once, however many commands its failover takes).
    pub fn failed_over_units(&self) -> std::collections::BTreeSet<&str> {
        self.failovers.iter().map(|(u, _, _)| u.as_str()).collect()
    }

    /// Every write as a command, in order.
    pub fn into_commands(self) -> Vec<Command> {
        let revocations = self
            .revocations
            .into_iter()
            .map(|unit| Command::RevokeLease { unit });
        let failovers =
            self.failovers
                .into_iter()
                .map(|(unit, epoch, changes)| Command::FailOver {
                    unit,
                    epoch,
                    changes,
                });
        let places = self
            .places
            .into_iter()
            .map(|changes| Command::Place { changes });
        revocations.chain(failovers).chain(places).collect()
    }
}

/// The units of the state, by name (witnesses hold no lease).
fn units(state: &State) -> impl Iterator<Item = &str> {
    state
        .members()
        .filter(|m| m.role == Role::Unit)
        .map(|m| m.name.as_str())
}

impl Controller {
    /// Health of every unit at `now`. `healthy_since` is this leader's memory of when each unit
    /// was last seen turning healthy (for failback hold-down); it is updated here.
    pub fn health(
        &self,
        voters: &Voters<'_>,
        state: &State,
        healthy_since: &mut BTreeMap<String, Instant>,
        now: Instant,
    ) -> Health {
        let mut health = Health::default();
        for unit in units(state) {
            let judged = judge(voters.sets, voters.reports, unit, self.failed_after);
            match (state.revoked_at(unit), judged) {
                (None, Judgement::Live) => {
                    let since = *healthy_since.entry(unit.to_owned()).or_insert(now);
                    health.healthy_for_ms.insert(
                        unit.to_owned(),
                        now.saturating_duration_since(since).as_millis() as u64,
                    );
                }
                (_, Judgement::Lapsed { silent_ms }) => {
                    healthy_since.remove(unit);
                    health.failed_for_ms.insert(unit.to_owned(), silent_ms);
                }
                (Some(_), Judgement::Live) => {
                    healthy_since.remove(unit);
                    let silent_ms = self.failed_after.as_millis() as u64;
                    health.failed_for_ms.insert(unit.to_owned(), silent_ms);
                }
            }
        }
        health
    }

    /// One pass: the writes to make, in order.
    pub fn decide(
        &self,
        voters: &Voters<'_>,
        state: &State,
        healthy_since: &mut BTreeMap<String, Instant>,
        now: Instant,
    ) -> PassWrites {
        let health = self.health(voters, state, healthy_since, now);
        let decisions = decide(state, &health, &self.policy);
        let per_command = self.changes_per_command.max(1);
        let mut writes = PassWrites {
            places: decisions
                .others
                .chunks(per_command)
                .map(<[PlacementChange]>::to_vec)
                .collect(),
            ..PassWrites::default()
        };
        let may_fail_over = |unit: &str, epoch: u64| {
            voters.settled && attested(voters.sets, voters.reports, unit, epoch, self.failed_after)
        };
        for (unit, changes) in decisions.failovers {
            match state.revoked_at(&unit) {
                None => writes.revocations.push(unit),
                Some(epoch) if may_fail_over(&unit, epoch) => {
                    // In parts: the state machine keeps the revocation until the part that
                    // leaves the unit holding nothing.
                    for part in changes.chunks(per_command) {
                        writes.failovers.push((unit.clone(), epoch, part.to_vec()));
                    }
                }
                Some(_) => {}
            }
        }
        // A revocation whose unit holds nothing any more (its profiles were moved or deleted)
        // still ends only once attested: until then the unit may hold grants.
        for (unit, epoch) in state.revocations() {
            let handled = writes.failovers.iter().any(|(u, _, _)| u == unit);
            if !handled && state.holds_nothing(unit) && may_fail_over(unit, *epoch) {
                writes.failovers.push((unit.clone(), *epoch, Vec::new()));
            }
        }
        writes
    }

    /// An operator's move (see `policy::planned_moves`): always break before make.
    pub fn operator_moves(
        &self,
        voters: &Voters<'_>,
        state: &State,
        healthy_since: &mut BTreeMap<String, Instant>,
        now: Instant,
        asked: OperatorMove<'_>,
    ) -> Result<Vec<PlacementChange>, ApiError> {
        let health = self.health(voters, state, healthy_since, now);
        planned_moves(state, &health, asked.profile, asked.from, asked.to)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vnet_model::{apply, Failback, Member, ProfileSpec, Request, VNicSpec};

    const CONTROLLER: Controller = Controller {
        policy: Policy {
            failback_hold_down_ms: 5_000,
            changes_per_pass_max: 100,
        },
        failed_after: Duration::from_millis(950),
        changes_per_command: 2,
    };

    /// unit-a and unit-b, both cabled to s1; profile p1 placed on unit-a.
    fn state() -> State {
        state_with(1)
    }

    /// unit-a and unit-b (capacity 4), `profiles` profiles all on unit-a.
    fn state_with(profiles: usize) -> State {
        let mut state = State::default();
        let mut index = 0;
        let mut run = |state: &mut State, command: Command| {
            index += 1;
            write(state, index, command);
        };
        for (id, name) in [(1, "unit-a"), (2, "unit-b")] {
            run(
                &mut state,
                Command::PutMember(Member {
                    id,
                    name: name.into(),
                    role: Role::Unit,
                    api_addr: format!("h:{id}"),
                    peer_addr: format!("h:{}", id + 100),
                    cabling: [("s1".to_string(), 1)].into_iter().collect(),
                    capacity: 4,
                    protocol: 0,
                }),
            );
        }
        for i in 1..=profiles {
            run(
                &mut state,
                Command::CreateProfile(ProfileSpec {
                    name: format!("p{i}"),
                    server: "s1".into(),
                    vnics: vec![VNicSpec {
                        name: "eth0".into(),
                        mac: Some(format!("02:00:00:00:00:{i:02x}").parse().expect("mac")),
                        network: "n".into(),
                        vlan: None,
                        pool: None,
                    }],
                    vhbas: vec![],
                    preferred_unit: Some("unit-a".into()),
                    failback: Failback::Manual,
                }),
            );
        }
        run(
            &mut state,
            Command::Place {
                changes: (1..=profiles)
                    .map(|i| PlacementChange {
                        profile: format!("p{i}"),
                        unit: Some("unit-a".into()),
                        moving: None,
                        reason: "t".into(),
                        failed_over_from: None,
                    })
                    .collect(),
            },
        );
        state
    }

    fn reports(silent: &[(u64, u64, Option<u64>)]) -> BTreeMap<u64, VoterReport> {
        silent
            .iter()
            .map(|(voter, silent_ms, revoked_at)| {
                let seen = crate::lease::UnitSeen {
                    silent_ms: *silent_ms,
                    revoked_at: *revoked_at,
                };
                let mut units = BTreeMap::from([("unit-a".to_owned(), seen)]);
                units.insert(
                    "unit-b".to_owned(),
                    crate::lease::UnitSeen {
                        silent_ms: 10,
                        revoked_at: None,
                    },
                );
                let report = VoterReport {
                    voter: *voter,
                    units,
                    own: None,
                };
                (*voter, report)
            })
            .collect()
    }

    fn pass(state: &State, sets: &VoterSets, reports: &BTreeMap<u64, VoterReport>) -> PassWrites {
        let voters = Voters {
            sets,
            reports,
            settled: true,
        };
        CONTROLLER.decide(&voters, state, &mut BTreeMap::new(), Instant::now())
    }

    fn three() -> VoterSets {
        vec![[1, 2, 3].into_iter().collect()]
    }

    #[test]
    fn a_unit_lapsed_at_one_voter_only_is_not_failed_over() {
        // The leader (voter 3) lost unit-a, but unit-a and unit-b still grant it: a majority.
        let state = state();
        let writes = pass(
            &state,
            &three(),
            &reports(&[(1, 10, None), (2, 20, None), (3, 5_000, None)]),
        );
        assert!(writes.is_empty(), "{writes:?}");
        // A voter that does not answer does not count toward the lapse either.
        let writes = pass(&state, &three(), &reports(&[(3, 5_000, None)]));
        assert!(writes.is_empty(), "{writes:?}");
    }

    #[test]
    fn a_lapse_at_a_majority_revokes_then_fails_over_once_attested() {
        let mut state = state();
        let lapsed = reports(&[(1, 1_000, None), (2, 2_000, None), (3, 10, None)]);
        let writes = pass(&state, &three(), &lapsed);
        assert_eq!(writes.revocations, ["unit-a"], "{writes:?}");
        assert!(writes.failovers.is_empty() && writes.places.is_empty());
        let request = Request {
            actor: "t".into(),
            command: Command::RevokeLease {
                unit: "unit-a".into(),
            },
            trace: None,
            on_behalf_of: None,
        };
        apply(&mut state, 100, &request).expect("revoke");
        // Revoked, but the voters have not yet reported applying it: nothing moves.
        let writes = pass(&state, &three(), &lapsed);
        assert!(writes.is_empty(), "{writes:?}");
        // One voter attests: not a majority.
        let writes = pass(
            &state,
            &three(),
            &reports(&[(1, 1_000, Some(100)), (2, 2_000, None), (3, 10, None)]),
        );
        assert!(writes.is_empty(), "{writes:?}");
        // A majority attests: the failover, for that epoch, moving p1 to unit-b.
        let attested = reports(&[(1, 1_000, Some(100)), (2, 2_000, Some(100)), (3, 10, None)]);
        let writes = pass(&state, &three(), &attested);
        assert_eq!(writes.failovers.len(), 1, "{writes:?}");
        let (unit, epoch, changes) = &writes.failovers[0];
        assert_eq!((unit.as_str(), *epoch), ("unit-a", 100));
        assert_eq!(changes[0].unit.as_deref(), Some("unit-b"));
        // Not under a membership that is not settled.
        let voters = Voters {
            sets: &three(),
            reports: &attested,
            settled: false,
        };
        let writes = CONTROLLER.decide(&voters, &state, &mut BTreeMap::new(), Instant::now());
        assert!(writes.is_empty(), "{writes:?}");
    }

    #[test]
    fn a_revocation_of_a_unit_holding_nothing_ends_once_attested() {
        let mut state = state();
        for (index, command) in [Command::RevokeLease {
            unit: "unit-b".into(),
        }]
        .into_iter()
        .enumerate()
        {
            let request = Request {
                actor: "t".into(),
                command,
                trace: None,
                on_behalf_of: None,
            };
            apply(&mut state, 100 + index as u64, &request).expect("applied");
        }
        let mut attested = reports(&[(1, 10, None), (2, 10, None), (3, 10, None)]);
        for report in attested.values_mut().take(2) {
            report.units.insert(
                "unit-b".into(),
                crate::lease::UnitSeen {
                    silent_ms: 5_000,
                    revoked_at: Some(100),
                },
            );
        }
        let writes = pass(&state, &three(), &attested);
        assert_eq!(
            writes.failovers,
            vec![("unit-b".to_owned(), 100, Vec::new())],
            "{writes:?}"
        );
    }

    fn write(state: &mut State, index: u64, command: Command) {
        let request = Request {
            actor: "t".into(),
            command,
            trace: None,
            on_behalf_of: None,
        };
        apply(state, index, &request).unwrap_or_else(|e| panic!("{request:?}: {e}"));
    }

    #[test]
    fn a_large_failover_is_written_in_parts_and_the_last_ends_the_revocation() {
        let mut state = state_with(3);
        write(
            &mut state,
            100,
            Command::RevokeLease {
                unit: "unit-a".into(),
            },
        );
        let attested = reports(&[(1, 1_000, Some(100)), (2, 2_000, Some(100)), (3, 10, None)]);
        let writes = pass(&state, &three(), &attested);
        let parts: Vec<_> = writes
            .failovers
            .iter()
            .map(|(u, e, c)| (u.as_str(), *e, c.len()))
            .collect();
        assert_eq!(
            parts,
            [("unit-a", 100, 2), ("unit-a", 100, 1)],
            "{writes:?}"
        );
        assert_eq!(writes.failed_over_units().len(), 1);
        let mut commands = writes.into_commands().into_iter();
        // The first part moves two profiles; one is still on unit-a, so the revocation holds
        // and voters keep granting unit-a nothing.
        write(&mut state, 101, commands.next().expect("first part"));
        assert_eq!(state.revoked_at("unit-a"), Some(100));
        assert!(!state.holds_nothing("unit-a"));
        // Should the second part be lost, the next pass decides the rest under the same epoch.
        let again = pass(&state, &three(), &attested);
        let parts: Vec<_> = again
            .failovers
            .iter()
            .map(|(u, e, c)| (u.as_str(), *e, c.len()))
            .collect();
        assert_eq!(parts, [("unit-a", 100, 1)], "{again:?}");
        write(&mut state, 102, commands.next().expect("second part"));
        assert_eq!(
            state.revoked_at("unit-a"),
            None,
            "the last part ends the revocation"
        );
        assert!(state.holds_nothing("unit-a"));
        let moved = state
            .placements()
            .filter(|(_, p)| p.unit.as_deref() == Some("unit-b"))
            .count();
        assert_eq!(moved, 3);
    }

    #[test]
    fn placements_of_a_pass_are_written_in_parts() {
        let mut state = state_with(0);
        for i in 1..=3 {
            write(
                &mut state,
                10 + i,
                Command::CreateProfile(ProfileSpec {
                    name: format!("q{i}"),
                    server: "s1".into(),
                    vnics: vec![],
                    vhbas: vec![],
                    preferred_unit: None,
                    failback: Failback::Manual,
                }),
            );
        }
        let live = reports(&[(1, 10, None), (2, 10, None), (3, 10, None)]);
        let writes = pass(&state, &three(), &live);
        let sizes: Vec<_> = writes.places.iter().map(Vec::len).collect();
        assert_eq!(sizes, [2, 1], "{writes:?}");
        assert_eq!(writes.into_commands().len(), 2);
    }
}
