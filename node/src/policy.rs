//! The placement controller's decisions, as a pure function of the replicated state and the
//! leader's view of unit health.
//!
//! [`decide`] looks at every profile in name order and proposes at most one change for it:
//! 1. never placed, or unplaced → the preferred unit if eligible, else the least-loaded eligible
//!    unit, else unplaced with the reason;
//! 2. placed on a failed (or removed) unit → failover to an eligible peer. Such changes rely on
//!    the unit's failure, so they are kept apart per unit ([`Decisions::failovers`]) and are
//!    committed only as a `FailOver` after its lease is revoked and a majority of voters attest
//!    that it lapsed (`lease.rs`, `controller.rs`);
//! 3. in a planned move whose source has stopped presenting it → give it to the target (break
//!    before make); if the source has failed instead, the completion is a failover of the source;
//! 4. placed on a draining unit → start a planned move off it;
//! 5. failback `auto`, on another unit while its preferred unit has been healthy for the
//!    hold-down time and is eligible → start a planned move back.
//!
//! Eligible means: a unit (not a witness), healthy, not draining, cabled to the profile's server,
//! with room (counting the changes already decided in this pass). `apply` checks the same rules
//! again when the change commits, so a decision made on a view that has since moved on is
//! refused rather than obeyed.

use std::collections::{BTreeMap, BTreeSet};

use vnet_model::{Failback, Move, Placement, PlacementChange, Profile, Role, State};

/// The leader's view of the units, at one instant.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Health {
    /// Units whose lease is live, with how long (ms) each has been continuously healthy.
    pub healthy_for_ms: BTreeMap<String, u64>,
    /// Units whose lease has lapsed, with how long (ms) since their last renewal.
    pub failed_for_ms: BTreeMap<String, u64>,
}

impl Health {
    fn is_healthy(&self, unit: &str) -> bool {
        self.healthy_for_ms.contains_key(unit)
    }
}

/// What one pass decided. Changes that rely on a unit's failure are kept apart per failed unit:
/// they may commit only in that unit's `FailOver`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Decisions {
    pub failovers: BTreeMap<String, Vec<PlacementChange>>,
    pub others: Vec<PlacementChange>,
}

impl Decisions {
    pub fn is_empty(&self) -> bool {
        self.failovers.is_empty() && self.others.is_empty()
    }
}

/// Tunables of the controller's policy.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    /// A preferred unit must have been healthy this long before `auto` failback moves a profile
    /// back to it, so a flapping unit does not pull profiles back and forth.
    pub failback_hold_down_ms: u64,
    /// At most this many changes per pass; the rest wait for the next pass.
    pub changes_per_pass_max: usize,
}

struct Pass<'a> {
    state: &'a State,
    health: &'a Health,
    load: BTreeMap<String, usize>,
}

impl Pass<'_> {
    fn eligible(&self, unit: &str, profile: &Profile) -> bool {
        let Some(member) = self.state.member_by_name(unit) else {
            return false;
        };
        member.role == Role::Unit
            && self.health.is_healthy(unit)
            && !self.state.is_draining(unit)
            && member.cabling.contains_key(&profile.server)
            && self.load.get(unit).copied().unwrap_or(0) < member.capacity as usize
    }

    /// The preferred unit if eligible, else the least loaded eligible unit (ties by name).
    fn choose(&self, profile: &Profile, excluding: Option<&str>) -> Option<String> {
        if let Some(preferred) = profile.preferred_unit.as_deref() {
            if Some(preferred) != excluding && self.eligible(preferred, profile) {
                return Some(preferred.to_owned());
            }
        }
        self.state
            .members()
            .filter(|m| Some(m.name.as_str()) != excluding && self.eligible(&m.name, profile))
            .min_by_key(|m| (self.load.get(&m.name).copied().unwrap_or(0), m.name.clone()))
            .map(|m| m.name.clone())
    }

    fn claim(&mut self, unit: &str) {
        *self.load.entry(unit.to_owned()).or_default() += 1;
    }

    fn release(&mut self, unit: &str) {
        if let Some(load) = self.load.get_mut(unit) {
            *load = load.saturating_sub(1);
        }
    }
}

fn unplaced_reason(profile: &Profile, why: &str) -> String {
    format!(
        "unplaced: {why}; no healthy, non-draining unit cabled to server {:?} has capacity",
        profile.server
    )
}

fn change(
    profile: &Profile,
    unit: Option<String>,
    moving: Option<Move>,
    reason: String,
) -> PlacementChange {
    PlacementChange {
        profile: profile.name.clone(),
        unit,
        moving,
        reason,
        failed_over_from: None,
    }
}

/// Decides the placement changes for one pass. Pure: same inputs, same decisions.
pub fn decide(state: &State, health: &Health, policy: &Policy) -> Decisions {
    let mut pass = Pass {
        state,
        health,
        load: state
            .members()
            .map(|m| (m.name.clone(), state.load_of(&m.name)))
            .collect(),
    };
    let mut decisions = Decisions::default();
    let mut count = 0usize;
    let unplaced_default = Placement::default();
    for profile in state.profiles() {
        if count >= policy.changes_per_pass_max {
            break;
        }
        let placement = state.placement(&profile.name).unwrap_or(&unplaced_default);
        let decided = match (&placement.unit, &placement.moving) {
            (None, None) => match pass.choose(profile, None) {
                Some(unit) => {
                    pass.claim(&unit);
                    let how = if profile.preferred_unit.as_deref() == Some(unit.as_str()) {
                        "its preferred unit"
                    } else {
                        "the least-loaded eligible unit"
                    };
                    Some((
                        None,
                        change(
                            profile,
                            Some(unit.clone()),
                            None,
                            format!("placed on {how} {unit}"),
                        ),
                    ))
                }
                None => {
                    // Say why once; an unplaced profile already saying why stays as it is, so
                    // the controller does not rewrite it every pass.
                    let explained =
                        placement.revision != 0 && placement.reason.starts_with("unplaced:");
                    (!explained).then(|| {
                        let reason = unplaced_reason(profile, "new or displaced profile");
                        (None, change(profile, None, None, reason))
                    })
                }
            },
            (Some(unit), _) if !health.is_healthy(unit) && is_failed(state, health, unit) => {
                pass.release(unit);
                let silent_ms = health.failed_for_ms.get(unit.as_str()).copied();
                let why = match silent_ms {
                    Some(ms) => format!("unit {unit} failed: no lease renewal for {ms} ms"),
                    None => format!("unit {unit} is no longer a member"),
                };
                let mut failover = match pass.choose(profile, Some(unit)) {
                    Some(target) => {
                        pass.claim(&target);
                        change(
                            profile,
                            Some(target.clone()),
                            None,
                            format!("failed over to {target}: {why}"),
                        )
                    }
                    None => change(profile, None, None, unplaced_reason(profile, &why)),
                };
                failover.failed_over_from = Some(unit.clone());
                Some((Some(unit.clone()), failover))
            }
            (None, Some(moving)) => {
                // The source is done when it has failed (it is fenced), or when it reports not
                // presenting the profile on a state that already includes this move: an older
                // "not presenting" (right after a fence, say) does not stop a source that has
                // not seen the move from programming the profile again.
                let source_failed = is_failed(state, health, &moving.from);
                let source_done = source_failed
                    || (state.presented_as_of(&moving.from) >= placement.revision
                        && !state
                            .presented_by(&moving.from)
                            .is_some_and(|p| p.contains_key(&profile.name)));
                if source_done {
                    // The move's target was counted in the load; it is released and reclaimed by
                    // whichever unit now takes the profile.
                    pass.release(&moving.to);
                    let target = if pass.eligible(&moving.to, profile) {
                        Some(moving.to.clone())
                    } else {
                        pass.choose(profile, Some(&moving.from))
                    };
                    // Completed because the source failed: that relies on its failure.
                    Some((
                        source_failed.then(|| moving.from.clone()),
                        match target {
                            Some(target) => {
                                pass.claim(&target);
                                let mut done = change(
                                    profile,
                                    Some(target.clone()),
                                    None,
                                    format!(
                                        "moved from {} to {target}: {}",
                                        moving.from, placement.reason
                                    ),
                                );
                                done.failed_over_from = placement.failed_over_from.clone();
                                done
                            }
                            None => change(
                                profile,
                                None,
                                None,
                                unplaced_reason(
                                    profile,
                                    &format!("move from {} found no target", moving.from),
                                ),
                            ),
                        },
                    ))
                } else {
                    None
                }
            }
            (Some(unit), None) if state.is_draining(unit) => {
                pass.choose(profile, Some(unit)).map(|target| {
                    pass.release(unit);
                    pass.claim(&target);
                    (
                        None,
                        change(
                            profile,
                            None,
                            Some(Move {
                                from: unit.clone(),
                                to: target,
                            }),
                            format!("drain of {unit}"),
                        ),
                    )
                })
            }
            (Some(unit), None) => failback(&mut pass, profile, unit, policy),
            (Some(_), Some(_)) => None,
        };
        if let Some((failed_unit, change)) = decided {
            count += 1;
            match failed_unit {
                Some(unit) => decisions.failovers.entry(unit).or_default().push(change),
                None => decisions.others.push(change),
            }
        }
    }
    decisions
}

/// A unit counts as failed when a majority of voters have seen its lease lapse (or revoked it),
/// or when it is no longer a member at all.
fn is_failed(state: &State, health: &Health, unit: &str) -> bool {
    health.failed_for_ms.contains_key(unit) || state.member_by_name(unit).is_none()
}

fn failback(
    pass: &mut Pass<'_>,
    profile: &Profile,
    unit: &str,
    policy: &Policy,
) -> Option<(Option<String>, PlacementChange)> {
    if profile.failback != Failback::Auto {
        return None;
    }
    let preferred = profile.preferred_unit.as_deref()?;
    if preferred == unit {
        return None;
    }
    let healthy_for = pass.health.healthy_for_ms.get(preferred).copied()?;
    if healthy_for < policy.failback_hold_down_ms || !pass.eligible(preferred, profile) {
        return None;
    }
    pass.release(unit);
    pass.claim(preferred);
    Some((
        None,
        change(
            profile,
            None,
            Some(Move {
                from: unit.to_owned(),
                to: preferred.to_owned(),
            }),
            format!("failback to preferred unit {preferred}"),
        ),
    ))
}

/// Why a unit cannot take a profile, for an operator's error message; `None` when it can.
fn ineligible_reason(pass: &Pass<'_>, unit: &str, profile: &Profile) -> Option<String> {
    let Some(member) = pass.state.member_by_name(unit) else {
        return Some(format!("unit {unit:?} does not exist"));
    };
    if member.role != Role::Unit {
        return Some(format!("{unit:?} is a witness and presents nothing"));
    }
    if !pass.health.is_healthy(unit) {
        return Some(format!("unit {unit} is not healthy (its lease has lapsed)"));
    }
    if pass.state.is_draining(unit) {
        return Some(format!("unit {unit} is draining"));
    }
    if !member.cabling.contains_key(&profile.server) {
        return Some(format!(
            "server {:?} of profile {:?} is not cabled to unit {unit}",
            profile.server, profile.name
        ));
    }
    if !pass.eligible(unit, profile) {
        return Some(format!(
            "unit {unit} is at its capacity of {} profiles",
            member.capacity
        ));
    }
    None
}

/// An operator's planned move: `profile` to `to`, or every profile placed on `from` (to `to`,
/// or wherever the controller would choose). Every move is break before make: the target is
/// given the profile once the source reports it cleared, or, if the source has failed, by the
/// source's failover.
pub fn planned_moves(
    state: &State,
    health: &Health,
    profile: Option<&str>,
    from: Option<&str>,
    to: Option<&str>,
) -> Result<Vec<PlacementChange>, crate::error::ApiError> {
    use crate::error::ApiError;
    let mut pass = Pass {
        state,
        health,
        load: state
            .members()
            .map(|m| (m.name.clone(), state.load_of(&m.name)))
            .collect(),
    };
    let refuse = |reason: String| ApiError::FailedPrecondition { reason };
    let selected: Vec<&Profile> = match (profile, from) {
        (Some(name), None) => {
            let Some(found) = state.profile(name) else {
                return Err(ApiError::Rejected(vnet_model::Rejection::NotFound {
                    kind: "profile".into(),
                    name: name.into(),
                }));
            };
            if to.is_none() {
                return Err(ApiError::invalid(
                    "to_unit",
                    "",
                    "is required when moving one profile",
                ));
            }
            vec![found]
        }
        (None, Some(unit)) => {
            if state.member_by_name(unit).is_none() {
                return Err(ApiError::Rejected(vnet_model::Rejection::NotFound {
                    kind: "unit".into(),
                    name: unit.into(),
                }));
            }
            state
                .profiles()
                .filter(|p| {
                    state
                        .placement(&p.name)
                        .is_some_and(|pl| pl.unit.as_deref() == Some(unit))
                })
                .collect()
        }
        _ => {
            return Err(ApiError::invalid(
                "profile",
                profile.unwrap_or_default(),
                "set exactly one of profile or from_unit",
            ))
        }
    };
    let mut changes = Vec::new();
    for profile in selected {
        let placement = state.placement(&profile.name).cloned().unwrap_or_default();
        if placement.moving.is_some() {
            return Err(refuse(format!(
                "profile {:?} is already moving ({})",
                profile.name, placement.reason
            )));
        }
        let source = placement.unit.clone();
        let target = match to {
            Some(target) => {
                if source.as_deref() == Some(target) {
                    return Err(refuse(format!(
                        "profile {:?} is already on unit {target}",
                        profile.name
                    )));
                }
                if let Some(why) = ineligible_reason(&pass, target, profile) {
                    return Err(refuse(why));
                }
                target.to_owned()
            }
            None => pass.choose(profile, source.as_deref()).ok_or_else(|| {
                refuse(format!(
                    "no other healthy, non-draining unit cabled to server {:?} has room for profile {:?}",
                    profile.server, profile.name
                ))
            })?,
        };
        pass.claim(&target);
        let reason = format!("operator moved it to {target}");
        let change = match source {
            Some(source) => {
                pass.release(&source);
                self::change(
                    profile,
                    None,
                    Some(Move {
                        from: source,
                        to: target,
                    }),
                    reason,
                )
            }
            None => self::change(profile, Some(target), None, reason),
        };
        changes.push(change);
    }
    Ok(changes)
}

/// Which profiles a unit should present now, by name: the ones placed on it (not mid-move).
pub fn placed_on<'a>(state: &'a State, unit: &str) -> BTreeSet<&'a str> {
    state
        .placements()
        .filter(|(_, p)| p.unit.as_deref() == Some(unit))
        .map(|(name, _)| name.as_str())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use vnet_model::{apply, Command, Member, ProfileSpec, Request, VNicSpec};

    const POLICY: Policy = Policy {
        failback_hold_down_ms: 5_000,
        changes_per_pass_max: 100,
    };

    struct World {
        state: State,
        revision: u64,
    }

    impl World {
        /// unit-a and unit-b cabled to s1 and s2 (unit-a also s3), capacity 2 each, a witness.
        fn new() -> Self {
            let mut world = World {
                state: State::default(),
                revision: 0,
            };
            let unit = |id: u64, name: &str, servers: &[&str], role: Role, capacity: u32| Member {
                id,
                name: name.into(),
                role,
                api_addr: format!("h:{id}"),
                peer_addr: format!("h:{}", id + 100),
                cabling: servers
                    .iter()
                    .enumerate()
                    .map(|(i, s)| (s.to_string(), i as u8 + 1))
                    .collect(),
                capacity,
                protocol: 0,
            };
            world.run(Command::PutMember(unit(
                1,
                "unit-a",
                &["s1", "s2", "s3"],
                Role::Unit,
                2,
            )));
            world.run(Command::PutMember(unit(
                2,
                "unit-b",
                &["s1", "s2"],
                Role::Unit,
                2,
            )));
            world.run(Command::PutMember(unit(
                3,
                "witness",
                &[],
                Role::Witness,
                0,
            )));
            world
        }

        fn run(&mut self, command: Command) {
            self.revision += 1;
            let request = Request {
                actor: "t".into(),
                command,
                trace: None,
                on_behalf_of: None,
            };
            apply(&mut self.state, self.revision, &request)
                .unwrap_or_else(|e| panic!("{request:?}: {e}"));
        }

        fn profile(
            &mut self,
            name: &str,
            server: &str,
            preferred: Option<&str>,
            failback: Failback,
        ) {
            let n = self.state.profiles().count() as u8 + 1;
            self.run(Command::CreateProfile(ProfileSpec {
                name: name.into(),
                server: server.into(),
                vnics: vec![VNicSpec {
                    name: "eth0".into(),
                    mac: Some(format!("02:00:00:00:00:{n:02x}").parse().expect("mac")),
                    network: "n".into(),
                    vlan: None,
                    pool: None,
                }],
                vhbas: vec![],
                preferred_unit: preferred.map(str::to_owned),
                failback,
            }));
        }

        /// Commits what `decide` proposes, as the controller would.
        fn settle(&mut self, health: &Health) -> Decisions {
            let decisions = decide(&self.state, health, &POLICY);
            for changes in decisions.failovers.values() {
                self.run(Command::Place {
                    changes: changes.clone(),
                });
            }
            if !decisions.others.is_empty() {
                self.run(Command::Place {
                    changes: decisions.others.clone(),
                });
            }
            decisions
        }

        fn unit_of(&self, profile: &str) -> Option<String> {
            self.state.placement(profile).and_then(|p| p.unit.clone())
        }

        fn report(&mut self, unit: &str) {
            let presented = placed_on(&self.state, unit)
                .into_iter()
                .map(|name| (name.to_owned(), 1))
                .collect();
            let as_of = self.revision;
            self.run(Command::ReportPresented {
                unit: unit.into(),
                profiles: presented,
                as_of,
            });
        }
    }

    fn healthy(units: &[(&str, u64)], failed: &[(&str, u64)]) -> Health {
        Health {
            healthy_for_ms: units.iter().map(|(u, ms)| (u.to_string(), *ms)).collect(),
            failed_for_ms: failed.iter().map(|(u, ms)| (u.to_string(), *ms)).collect(),
        }
    }

    #[test]
    fn new_profiles_go_to_the_preferred_unit_else_the_least_loaded() {
        let mut w = World::new();
        w.profile("p1", "s1", Some("unit-b"), Failback::Manual);
        w.profile("p2", "s1", None, Failback::Manual);
        w.profile("p3", "s2", None, Failback::Manual);
        let all = healthy(&[("unit-a", 0), ("unit-b", 0)], &[]);
        w.settle(&all);
        assert_eq!(w.unit_of("p1").as_deref(), Some("unit-b"));
        assert_eq!(w.unit_of("p2").as_deref(), Some("unit-a"));
        // unit-a and unit-b both hold one: ties go by name.
        assert_eq!(w.unit_of("p3").as_deref(), Some("unit-a"));
        assert!(
            decide(&w.state, &all, &POLICY).is_empty(),
            "a settled world stays put"
        );
    }

    #[test]
    fn a_failed_unit_is_emptied_at_once_and_an_uncabled_profile_is_unplaced_with_the_reason() {
        let mut w = World::new();
        w.profile("p1", "s1", Some("unit-a"), Failback::Manual);
        w.profile("p3", "s3", None, Failback::Manual);
        w.settle(&healthy(&[("unit-a", 0), ("unit-b", 0)], &[]));
        assert_eq!(w.unit_of("p3").as_deref(), Some("unit-a"));

        let decisions = w.settle(&healthy(&[("unit-b", 0)], &[("unit-a", 1300)]));
        assert_eq!(decisions.failovers["unit-a"].len(), 2);
        assert_eq!(w.unit_of("p1").as_deref(), Some("unit-b"));
        let p1 = w.state.placement("p1").expect("p1");
        assert_eq!(p1.failed_over_from.as_deref(), Some("unit-a"));
        assert!(p1.reason.contains("1300 ms"), "{}", p1.reason);
        // s3 is cabled only to unit-a: nobody can take p3.
        let p3 = w.state.placement("p3").expect("p3");
        assert_eq!(p3.unit, None);
        assert!(
            p3.reason.contains("unplaced") && p3.reason.contains("s3"),
            "{}",
            p3.reason
        );
        // And it is not re-decided every pass while nothing changes.
        assert!(decide(
            &w.state,
            &healthy(&[("unit-b", 0)], &[("unit-a", 2000)]),
            &POLICY
        )
        .is_empty());
    }

    #[test]
    fn drain_is_break_before_make_and_auto_failback_waits_for_the_hold_down() {
        let mut w = World::new();
        w.profile("p1", "s1", Some("unit-a"), Failback::Auto);
        let all = healthy(&[("unit-a", 60_000), ("unit-b", 60_000)], &[]);
        w.settle(&all);
        w.report("unit-a");
        w.run(Command::SetDrain {
            unit: "unit-a".into(),
            draining: true,
        });

        w.settle(&all);
        let p1 = w.state.placement("p1").expect("p1").clone();
        assert_eq!(
            p1.unit, None,
            "no unit may present it while the source still does"
        );
        assert_eq!(
            p1.moving,
            Some(Move {
                from: "unit-a".into(),
                to: "unit-b".into()
            })
        );
        // Still presented by the source: nothing changes.
        w.settle(&all);
        assert_eq!(w.unit_of("p1"), None);
        // "Not presenting" made on a state from before the move (a fence, say) does not count:
        // the source could still program the profile again.
        w.run(Command::ReportPresented {
            unit: "unit-a".into(),
            profiles: Default::default(),
            as_of: 1,
        });
        w.settle(&all);
        assert_eq!(w.unit_of("p1"), None, "a stale report completed the move");
        // The source clears and reports: now the target gets it.
        w.report("unit-a");
        w.settle(&all);
        assert_eq!(w.unit_of("p1").as_deref(), Some("unit-b"));

        // Undrain: failback waits until unit-a has been healthy for the hold-down.
        w.run(Command::SetDrain {
            unit: "unit-a".into(),
            draining: false,
        });
        w.report("unit-b");
        let fresh = healthy(&[("unit-a", 1_000), ("unit-b", 60_000)], &[]);
        assert!(decide(&w.state, &fresh, &POLICY).is_empty());
        w.settle(&all);
        assert_eq!(
            w.state.placement("p1").and_then(|p| p.moving.clone()),
            Some(Move {
                from: "unit-b".into(),
                to: "unit-a".into()
            })
        );
    }

    #[test]
    fn a_witness_is_never_chosen_and_capacity_is_respected_within_a_pass() {
        let mut w = World::new();
        for name in ["p1", "p2", "p3", "p4", "p5"] {
            w.profile(name, "s1", None, Failback::Manual);
        }
        w.settle(&healthy(
            &[("unit-a", 0), ("unit-b", 0), ("witness", 0)],
            &[],
        ));
        let placed: Vec<Option<String>> = ["p1", "p2", "p3", "p4", "p5"]
            .iter()
            .map(|p| w.unit_of(p))
            .collect();
        assert_eq!(
            placed
                .iter()
                .filter(|u| u.as_deref() == Some("unit-a"))
                .count(),
            2
        );
        assert_eq!(
            placed
                .iter()
                .filter(|u| u.as_deref() == Some("unit-b"))
                .count(),
            2
        );
        assert_eq!(placed.iter().filter(|u| u.is_none()).count(), 1);
        assert!(placed.iter().all(|u| u.as_deref() != Some("witness")));
    }
}
