//! The leader's placement controller, one pass at a time and without I/O: what to write, given
//! the lease table, the applied state and the time. `Node::run_placement` performs the writes;
//! the failover simulator (`sim/`) drives the same functions with simulated time.
//!
//! A pass has two phases, with the writes of the first awaited before the second:
//! 1. [`Controller::stale_reports`]: a unit judged failed whose last report still lists
//!    profiles gets an empty report written for it (its switch has fenced by then);
//! 2. [`Controller::decide`]: release failed units whose moves are seen applied, judge health,
//!    decide with `placement::decide`, and act on every failure a decision relies on — all in
//!    one critical section with the lease table (see "Every grant is ordered against every
//!    judgement of failure" in `lease.rs`). Health judged in phase 1 must not be reused here:
//!    a renewal may have been granted while the phase-1 writes were awaited.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use vnet_model::{Command, PlacementChange, Role, State};

use crate::error::ApiError;
use crate::lease::LeaseTable;
use crate::placement::{decide, planned_moves, Decisions, Health, Policy};

/// The controller's tunables.
#[derive(Debug, Clone, Copy)]
pub struct Controller {
    pub policy: Policy,
    /// A unit silent this long (lease TTL plus drift margin) is judged failed.
    pub failed_after: Duration,
}

/// The units of the state, by name (witnesses hold no lease).
fn units(state: &State) -> impl Iterator<Item = &str> {
    state
        .members()
        .filter(|m| m.role == Role::Unit)
        .map(|m| m.name.as_str())
}

impl Controller {
    /// Health of every unit at `now`, as the table knows it.
    pub fn health(&self, table: &mut LeaseTable, state: &State, now: Instant) -> Health {
        table.health(units(state), now, self.failed_after)
    }

    /// Phase 1: empty reports for units judged failed that are still reported presenting.
    /// They vouch for nothing new (`as_of` 0): moves off a failed unit complete on its failure,
    /// not on this report.
    pub fn stale_reports(
        &self,
        table: &mut LeaseTable,
        state: &State,
        now: Instant,
    ) -> Vec<Command> {
        let health = self.health(table, state, now);
        health
            .failed_for_ms
            .keys()
            .filter(|unit| state.presented_by(unit).is_some_and(|p| !p.is_empty()))
            .map(|unit| Command::ReportPresented {
                unit: unit.clone(),
                profiles: BTreeMap::new(),
                as_of: 0,
            })
            .collect()
    }

    /// Phase 2: the placement changes of this pass. Every failure a change relies on is acted on
    /// in the table before this returns, so no renewal granted after the judgement is recorded.
    /// The caller reports each failover's write to [`LeaseTable::failover_done`] once committed.
    pub fn decide(&self, table: &mut LeaseTable, state: &State, now: Instant) -> Decisions {
        // A unit whose failover write was not confirmed is released once the applied state
        // (applied on this leader, so committed) places nothing on it.
        for unit in table.pending_units() {
            if state.load_of(&unit) == 0 {
                table.failover_done(&unit);
            }
        }
        let health = self.health(table, state, now);
        let decisions = decide(state, &health, &self.policy);
        for unit in decisions.failovers.keys() {
            table.declare_failed(unit);
        }
        for unit in &decisions.failed_sources {
            table.act_on_failure(unit);
        }
        decisions
    }

    /// An operator's move (see `placement::planned_moves`), judged and acted on in one critical
    /// section like [`Controller::decide`]: a move off a failed unit places the profile at once,
    /// so that unit's renewals under way must be refused.
    pub fn operator_moves(
        &self,
        table: &mut LeaseTable,
        state: &State,
        now: Instant,
        profile: Option<&str>,
        from: Option<&str>,
        to: Option<&str>,
    ) -> Result<Vec<PlacementChange>, ApiError> {
        let health = self.health(table, state, now);
        let changes = planned_moves(state, &health, profile, from, to)?;
        for change in &changes {
            if let Some(source) = &change.failed_over_from {
                table.act_on_failure(source);
            }
        }
        Ok(changes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lease::GrantRefused;
    use vnet_model::{apply, Failback, Member, ProfileSpec, Request, VNicSpec};

    const CONTROLLER: Controller = Controller {
        policy: Policy {
            failback_hold_down_ms: 5_000,
            changes_per_pass_max: 100,
        },
        failed_after: Duration::from_millis(950),
    };

    /// unit-a and unit-b, both cabled to s1; profile p1 placed on unit-a.
    fn state() -> State {
        let mut state = State::default();
        let mut index = 0;
        let mut run = |state: &mut State, command: Command| {
            index += 1;
            let request = Request {
                actor: "t".into(),
                command,
            };
            apply(state, index, &request).unwrap_or_else(|e| panic!("{request:?}: {e}"));
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
                }),
            );
        }
        run(
            &mut state,
            Command::CreateProfile(ProfileSpec {
                name: "p1".into(),
                server: "s1".into(),
                vnics: vec![VNicSpec {
                    name: "eth0".into(),
                    mac: Some("02:00:00:00:00:01".parse().expect("mac")),
                    network: "n".into(),
                    vlan: None,
                    pool: None,
                }],
                vhbas: vec![],
                preferred_unit: Some("unit-a".into()),
                failback: Failback::Manual,
            }),
        );
        run(
            &mut state,
            Command::Place {
                changes: vec![PlacementChange {
                    profile: "p1".into(),
                    unit: Some("unit-a".into()),
                    moving: None,
                    reason: "t".into(),
                    failed_over_from: None,
                }],
            },
        );
        state
    }

    #[test]
    fn a_grant_under_way_when_the_unit_is_failed_over_is_refused() {
        let start = Instant::now();
        let state = state();
        let mut table = LeaseTable::new();
        table.sync_term(1, start, start);
        // unit-a's renewal arrives just before its silence reaches the failure threshold.
        let arrived = start + Duration::from_millis(940);
        let ticket = table.begin_grant("unit-a").expect("nothing pending");
        // unit-b renews in time; the read-index round of unit-a's renewal is still under way
        // when the controller judges unit-a (silent since the term began) failed.
        let ticket_b = table.begin_grant("unit-b").expect("nothing pending");
        table
            .finish_grant("unit-b", ticket_b, start + Duration::from_millis(900))
            .expect("granted");
        let decisions = CONTROLLER.decide(&mut table, &state, start + Duration::from_millis(960));
        assert_eq!(
            decisions.failovers.keys().collect::<Vec<_>>(),
            ["unit-a"],
            "{decisions:?}"
        );
        assert_eq!(
            table.finish_grant("unit-a", ticket, arrived),
            Err(GrantRefused::FailedDuringRenewal),
            "a grant that began before the failover must not be recorded after it"
        );
    }

    #[test]
    fn a_grant_recorded_before_the_judgement_prevents_the_failover() {
        let start = Instant::now();
        let state = state();
        let mut table = LeaseTable::new();
        table.sync_term(1, start, start);
        // Phase 1 of a pass judges unit-a failed (silent for the whole term so far)...
        let phase_one = start + Duration::from_millis(1_000);
        assert_eq!(
            CONTROLLER.stale_reports(&mut table, &state, phase_one),
            vec![]
        );
        assert!(CONTROLLER
            .health(&mut table, &state, phase_one)
            .failed_for_ms
            .contains_key("unit-a"));
        // ...a renewal is granted while its writes are awaited...
        let ticket = table.begin_grant("unit-a").expect("nothing pending");
        table
            .finish_grant("unit-a", ticket, start + Duration::from_millis(1_010))
            .expect("granted");
        // ...so phase 2 judges afresh and moves nothing: unit-a may program under that grant.
        let decisions = CONTROLLER.decide(&mut table, &state, start + Duration::from_millis(1_050));
        assert!(decisions.failovers.is_empty(), "{decisions:?}");
        assert!(decisions.others.is_empty(), "{decisions:?}");
    }

    #[test]
    fn an_operator_move_off_a_failed_unit_refuses_its_grant_under_way() {
        let start = Instant::now();
        let state = state();
        let mut table = LeaseTable::new();
        table.sync_term(1, start, start);
        let ticket_b = table.begin_grant("unit-b").expect("nothing pending");
        table
            .finish_grant("unit-b", ticket_b, start + Duration::from_millis(900))
            .expect("granted");
        let ticket = table.begin_grant("unit-a").expect("nothing pending");
        let changes = CONTROLLER
            .operator_moves(
                &mut table,
                &state,
                start + Duration::from_millis(1_000),
                Some("p1"),
                None,
                Some("unit-b"),
            )
            .expect("unit-b is eligible");
        assert_eq!(changes[0].unit.as_deref(), Some("unit-b"), "placed at once");
        assert_eq!(
            table.finish_grant("unit-a", ticket, start + Duration::from_millis(940)),
            Err(GrantRefused::FailedDuringRenewal)
        );
    }
}
