//! [`apply`] and the handler of each command: every handler checks everything before its
//! first mutation, so a refused command leaves the state exactly as it was.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::{Change, Event, State};
use crate::command::{Command, Outcome, Request};
use crate::error::Rejection;
use crate::identity::Identity;
use crate::limits::{
    ACTOR_LEN_MAX, EVENT_HISTORY_MAX, MEMBERS_MAX, POOLS_MAX, PROFILES_MAX, REMOVED_IDS_MAX,
};
use crate::member::{Member, Role};
use crate::name::validate_name;
use crate::placement::{Placement, PlacementChange};
use crate::plan::plan_profile;
use crate::pool::{Pool, PoolSpec};
use crate::profile::{Profile, ProfileSpec};
use crate::Revision;

impl State {
    fn record(&mut self, event: Event) {
        self.events.push_back(event);
        while self.events.len() > EVENT_HISTORY_MAX {
            if let Some(dropped) = self.events.pop_front() {
                self.history_start = dropped.revision.saturating_add(1);
            }
        }
    }

    // The handlers below check everything before their first mutation, and the mutations cannot
    // fail: that is what makes a refused command leave the state unchanged.

    fn create_pool(&mut self, revision: Revision, spec: &PoolSpec) -> Result<Outcome, Rejection> {
        spec.validate()?;
        if self.pools.contains_key(&spec.name) {
            return Err(Rejection::already_exists("pool", &spec.name));
        }
        if self.pools.len() >= POOLS_MAX {
            return Err(Rejection::limit("pools", POOLS_MAX));
        }
        if let Some(other) = self
            .pools
            .values()
            .find(|other| other.range.overlaps(&spec.range))
        {
            return Err(Rejection::RangeOverlaps {
                range: spec.range.to_string(),
                pool: other.name.clone(),
                pool_range: other.range.to_string(),
            });
        }
        let pool = Pool {
            name: spec.name.clone(),
            range: spec.range,
            revision,
        };
        self.index.add_pool(&pool);
        self.pools.insert(pool.name.clone(), pool.clone());
        Ok(Outcome::Pool(pool))
    }

    fn delete_pool(&mut self, name: &str) -> Result<Outcome, Rejection> {
        let Some(pool) = self.pools.get(name) else {
            return Err(Rejection::not_found("pool", name));
        };
        if let Some(((kind, value), owner)) = self.index.first_held_in(pool) {
            let used = self.index.pool_free(name).map_or(0, |free| free.used());
            let example = Identity::from_kind_u64(kind, value).map_or_else(
                |_| format!("{kind} {value:#x}"),
                |identity| identity.to_string(),
            );
            return Err(Rejection::FailedPrecondition {
                reason: format!(
                    "pool {name:?} cannot be deleted while profiles hold {used} of its \
                     identities (such as {example}, held by profile {owner:?})"
                ),
            });
        }
        self.index.remove_pool(name);
        self.pools.remove(name);
        Ok(Outcome::PoolDeleted {
            name: name.to_owned(),
        })
    }

    fn create_profile(
        &mut self,
        revision: Revision,
        spec: &ProfileSpec,
    ) -> Result<Outcome, Rejection> {
        spec.validate()?;
        if self.profiles.contains_key(&spec.name) {
            return Err(Rejection::already_exists("profile", &spec.name));
        }
        if self.profiles.len() >= PROFILES_MAX {
            return Err(Rejection::limit("profiles", PROFILES_MAX));
        }
        let profile = Arc::new(plan_profile(
            &self.index,
            &self.pools,
            spec,
            None,
            revision,
        )?);
        for identity in profile.identities() {
            self.index.claim(identity, &profile.name);
        }
        self.profiles
            .insert(profile.name.clone(), Arc::clone(&profile));
        Ok(Outcome::Profile(profile))
    }

    fn update_profile(
        &mut self,
        revision: Revision,
        spec: &ProfileSpec,
        expected_revision: Option<Revision>,
    ) -> Result<Outcome, Rejection> {
        spec.validate()?;
        let Some(previous) = self.profiles.get(&spec.name) else {
            return Err(Rejection::not_found("profile", &spec.name));
        };
        check_expected_revision(previous, expected_revision)?;
        let profile = Arc::new(plan_profile(
            &self.index,
            &self.pools,
            spec,
            Some(previous),
            revision,
        )?);
        let released: Vec<Identity> = previous.identities().collect();
        for identity in released {
            self.index.release(identity);
        }
        for identity in profile.identities() {
            self.index.claim(identity, &profile.name);
        }
        self.profiles
            .insert(profile.name.clone(), Arc::clone(&profile));
        Ok(Outcome::Profile(profile))
    }

    fn delete_profile(
        &mut self,
        name: &str,
        expected_revision: Option<Revision>,
    ) -> Result<Outcome, Rejection> {
        let Some(previous) = self.profiles.get(name) else {
            return Err(Rejection::not_found("profile", name));
        };
        check_expected_revision(previous, expected_revision)?;
        if let Some(removed) = self.profiles.remove(name) {
            for identity in removed.identities() {
                self.index.release(identity);
            }
        }
        self.placements.remove(name);
        Ok(Outcome::ProfileDeleted {
            name: name.to_owned(),
        })
    }

    fn put_member(&mut self, member: &Member) -> Result<Outcome, Rejection> {
        member.validate()?;
        if self
            .members
            .values()
            .any(|other| other.id != member.id && other.name == member.name)
        {
            return Err(Rejection::already_exists("member", &member.name));
        }
        if !self.members.contains_key(&member.id) && self.members.len() >= MEMBERS_MAX {
            return Err(Rejection::limit("members", MEMBERS_MAX));
        }
        self.members.insert(member.id, member.clone());
        Ok(Outcome::Member(member.clone()))
    }

    fn remove_member(&mut self, id: u64) -> Result<Outcome, Rejection> {
        let Some(removed) = self.members.remove(&id) else {
            return Err(Rejection::not_found("member", id.to_string()));
        };
        // Its report and drain mark go with it; placements that name it stay until the placement
        // controller moves them, so status keeps saying where each profile was.
        self.presented.remove(&removed.name);
        self.presented_as_of.remove(&removed.name);
        self.draining.remove(&removed.name);
        Ok(Outcome::MemberRemoved { id })
    }

    fn recover(&mut self, survivor: u64, lost: &BTreeSet<u64>) -> Result<Outcome, Rejection> {
        if lost.is_empty() {
            return Err(Rejection::invalid(
                "lost",
                "",
                "names no member; a recovery confirms at least one lost member",
            ));
        }
        if lost.contains(&survivor) {
            return Err(Rejection::invalid(
                "lost",
                &survivor.to_string(),
                "is the survivor itself",
            ));
        }
        let removed = self.removed_ids.union(lost).count();
        if removed > REMOVED_IDS_MAX {
            return Err(Rejection::LimitExceeded {
                what: "removed member ids".to_string(),
                limit: REMOVED_IDS_MAX as u64,
            });
        }
        for id in lost {
            // Not every lost node has a record (a learner that never started); those that do
            // go the way of `remove_member`.
            if self.members.contains_key(id) {
                self.remove_member(*id)?;
            }
            self.removed_ids.insert(*id);
        }
        Ok(Outcome::Recovered {
            survivor,
            lost: lost.iter().copied().collect(),
        })
    }

    /// The unit named `unit`, if it is one (a member with the unit role).
    fn unit_member(&self, field: &str, unit: &str) -> Result<&Member, Rejection> {
        let member = self
            .member_by_name(unit)
            .ok_or_else(|| Rejection::not_found("unit", unit))?;
        if member.role != Role::Unit {
            return Err(Rejection::invalid(
                field,
                unit,
                "is a witness, which has no switch and is never given a profile",
            ));
        }
        Ok(member)
    }

    fn place(
        &mut self,
        revision: Revision,
        changes: &[PlacementChange],
    ) -> Result<Outcome, Rejection> {
        let profiles = self.place_profiles(revision, changes)?;
        Ok(Outcome::Placed { profiles })
    }

    /// Applies placement changes all or none; the names of the profiles changed.
    fn place_profiles(
        &mut self,
        revision: Revision,
        changes: &[PlacementChange],
    ) -> Result<Vec<String>, Rejection> {
        if changes.len() > PROFILES_MAX {
            return Err(Rejection::limit(
                "placement changes in one command",
                PROFILES_MAX,
            ));
        }
        // Capacity is checked against the load after every change in this command, so a batch
        // that swaps profiles between units is judged as a whole.
        let mut claimed: BTreeMap<&str, Option<&str>> = BTreeMap::new();
        for (position, change) in changes.iter().enumerate() {
            change.validate()?;
            let Some(profile) = self.profiles.get(&change.profile) else {
                return Err(Rejection::not_found("profile", &change.profile));
            };
            if claimed.contains_key(change.profile.as_str()) {
                return Err(Rejection::invalid(
                    format!("changes[{position}].profile"),
                    &change.profile,
                    "appears twice in one placement command",
                ));
            }
            let target = change
                .unit
                .as_deref()
                .or(change.moving.as_ref().map(|m| m.to.as_str()));
            if let Some(target) = target {
                let member = self.unit_member("unit", target)?;
                if self.draining.contains(target) {
                    return Err(Rejection::FailedPrecondition {
                        reason: format!("unit {target:?} is draining and is given no profile"),
                    });
                }
                if !member.cabling.contains_key(&profile.server) {
                    return Err(Rejection::FailedPrecondition {
                        reason: format!(
                            "server {:?} of profile {:?} is not cabled to unit {target:?}",
                            profile.server, profile.name
                        ),
                    });
                }
            }
            claimed.insert(change.profile.as_str(), target);
        }
        let mut load: BTreeMap<&str, usize> = BTreeMap::new();
        for (name, placement) in &self.placements {
            if claimed.contains_key(name.as_str()) {
                continue;
            }
            if let Some(unit) = placement.claimed_unit() {
                *load.entry(unit).or_default() += 1;
            }
        }
        for target in claimed.values().flatten() {
            *load.entry(target).or_default() += 1;
        }
        for (unit, count) in &load {
            if let Some(member) = self.member_by_name(unit) {
                let capacity = member.capacity as usize;
                let touched = claimed.values().any(|t| t == &Some(*unit));
                if touched && *count > capacity {
                    return Err(Rejection::FailedPrecondition {
                        reason: format!(
                            "unit {unit:?} would present {count} profiles, more than its \
                             capacity of {capacity}"
                        ),
                    });
                }
            }
        }
        let mut placed = Vec::with_capacity(changes.len());
        for change in changes {
            let placement = Placement {
                unit: change.unit.clone(),
                moving: change.moving.clone(),
                reason: change.reason.clone(),
                failed_over_from: change.failed_over_from.clone(),
                revision,
            };
            self.placements
                .insert(change.profile.clone(), placement.clone());
            placed.push((change.profile.clone(), placement));
        }
        Ok(placed.into_iter().map(|(name, _)| name).collect())
    }

    fn report_presented(
        &mut self,
        unit: &str,
        profiles: &BTreeMap<String, Revision>,
        as_of: Revision,
    ) -> Result<Outcome, Rejection> {
        self.unit_member("unit", unit)?;
        if profiles.len() > PROFILES_MAX {
            return Err(Rejection::limit("presented profiles", PROFILES_MAX));
        }
        for name in profiles.keys() {
            validate_name("profiles", name)?;
        }
        self.presented.insert(unit.to_owned(), profiles.clone());
        // Reports only move forward in what they vouch for (a delayed older one cannot lower it).
        let vouched = self.presented_as_of.entry(unit.to_owned()).or_default();
        *vouched = (*vouched).max(as_of);
        Ok(Outcome::Presented {
            unit: unit.to_owned(),
        })
    }

    fn revoke_lease(&mut self, revision: Revision, unit: &str) -> Result<Outcome, Rejection> {
        validate_name("unit", unit)?;
        // A removed unit may still hold profiles (and a lease until it lapses): it can be
        // revoked as long as a placement still names it.
        let named = self.placements.values().any(|p| {
            p.unit.as_deref() == Some(unit) || p.moving.as_ref().is_some_and(|m| m.from == unit)
        });
        if self.member_by_name(unit).is_some() || !named {
            self.unit_member("unit", unit)?;
        }
        if let Some(epoch) = self.revoked.get(unit) {
            return Err(Rejection::FailedPrecondition {
                reason: format!("the lease of unit {unit:?} is already revoked (epoch {epoch})"),
            });
        }
        self.revoked.insert(unit.to_owned(), revision);
        Ok(Outcome::LeaseRevoked {
            unit: unit.to_owned(),
            epoch: revision,
        })
    }

    fn fail_over(
        &mut self,
        revision: Revision,
        unit: &str,
        epoch: Revision,
        changes: &[PlacementChange],
    ) -> Result<Outcome, Rejection> {
        validate_name("unit", unit)?;
        match self.revoked.get(unit) {
            Some(in_force) if *in_force == epoch => {}
            Some(in_force) => {
                return Err(Rejection::FailedPrecondition {
                    reason: format!(
                        "failover of unit {unit:?} is for the revocation at epoch {epoch}, but \
                         the one in force is at epoch {in_force}"
                    ),
                })
            }
            None => {
                return Err(Rejection::FailedPrecondition {
                    reason: format!(
                        "the lease of unit {unit:?} is not revoked: a failover needs a \
                         revocation that a majority of voters attested"
                    ),
                })
            }
        }
        for (position, change) in changes.iter().enumerate() {
            let off_unit = self.placements.get(&change.profile).is_some_and(|p| {
                p.unit.as_deref() == Some(unit) || p.moving.as_ref().is_some_and(|m| m.from == unit)
            });
            if !off_unit {
                return Err(Rejection::invalid(
                    format!("changes[{position}].profile"),
                    &change.profile,
                    format!("is not placed on (or moving from) unit {unit:?}"),
                ));
            }
        }
        let profiles = self.place_profiles(revision, changes)?;
        // A large failover is committed in parts (each entry stays small enough to replicate
        // within a heartbeat): the revocation ends with the part that leaves the unit holding
        // nothing, so voters grant the unit nothing while any profile is still placed on it.
        // Judged on the state, not on a flag of the proposer's, so a part that commits late or
        // twice cannot end a revocation early.
        if self.holds_nothing(unit) {
            self.revoked.remove(unit);
            // Its switch has cleared by now (a majority attested that its lease lapsed), so its
            // last report no longer says anything true.
            if let Some(report) = self.presented.get_mut(unit) {
                report.clear();
            }
        }
        Ok(Outcome::FailedOver {
            unit: unit.to_owned(),
            profiles,
        })
    }

    fn set_drain(&mut self, unit: &str, draining: bool) -> Result<Outcome, Rejection> {
        self.unit_member("unit", unit)?;
        if draining {
            self.draining.insert(unit.to_owned());
        } else {
            self.draining.remove(unit);
        }
        Ok(Outcome::Drain {
            unit: unit.to_owned(),
            draining,
        })
    }
}

fn check_expected_revision(
    profile: &Profile,
    expected_revision: Option<Revision>,
) -> Result<(), Rejection> {
    match expected_revision {
        Some(expected) if expected != profile.revision => Err(Rejection::RevisionMismatch {
            name: profile.name.clone(),
            expected,
            actual: profile.revision,
        }),
        _ => Ok(()),
    }
}

fn validate_actor(actor: &str) -> Result<(), Rejection> {
    let length = actor.chars().count();
    if length > ACTOR_LEN_MAX {
        return Err(Rejection::invalid(
            "actor",
            actor,
            format!("is {length} characters long, more than the limit of {ACTOR_LEN_MAX}"),
        ));
    }
    if actor.chars().any(char::is_control) {
        return Err(Rejection::invalid(
            "actor",
            actor,
            "must not contain control characters",
        ));
    }
    Ok(())
}

/// The "on behalf of" note beside an actor: the same bound as an actor, but never empty.
fn validate_on_behalf_of(note: &str) -> Result<(), Rejection> {
    if note.is_empty() {
        return Err(Rejection::invalid(
            "on_behalf_of",
            note,
            "must not be empty; leave it out instead",
        ));
    }
    validate_actor(note).map_err(|rejection| match rejection {
        Rejection::InvalidArgument { value, reason, .. } => Rejection::InvalidArgument {
            field: "on_behalf_of".to_string(),
            value,
            reason,
        },
        other => other,
    })
}

/// A request the state accepted, and the revision it took.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Accepted {
    pub revision: Revision,
    pub outcome: Outcome,
}

/// The revision the next change applied from the log entry at `index` takes: the entry's index,
/// unless an earlier batched entry already carried the revisions past it.
///
/// Each accepted change takes a revision of its own, strictly increasing, so a batch of `k`
/// changes at index `i` takes `i, i + 1, ..., i + k - 1` and the entry after it continues from
/// `i + k`. Until the first batch every revision is its entry's index, exactly as a node that
/// predates batches computes it, so replicas of both kinds agree on every revision; batches are
/// written only once every member applies them (`Member::protocol`). A revision is therefore
/// never below its entry's index, and a state at revision `r` includes every change numbered
/// up to `r` (ARCHITECTURE.md, "Batched writes").
pub fn next_revision(state: &State, index: u64) -> Revision {
    index.max(state.revision.saturating_add(1))
}

/// Applies the request of the committed log entry at `index`: one request, or each request of a
/// `Batch` in order, each at [`next_revision`]. One result per request, in order; a refused
/// request changes nothing and takes no revision, exactly as if it had been its own entry.
/// Deterministic like [`apply`]. A batch nested in a batch is refused (only a leader forms
/// batches, and never nests them).
pub fn apply_entry(
    state: &mut State,
    index: u64,
    request: &Request,
) -> Vec<Result<Accepted, Rejection>> {
    let one = |state: &mut State, request: &Request| {
        let revision = next_revision(state, index);
        apply(state, revision, request).map(|outcome| Accepted { revision, outcome })
    };
    match &request.command {
        Command::Batch(requests) => requests
            .iter()
            .map(|request| match request.command {
                Command::Batch(_) => Err(Rejection::InvalidArgument {
                    field: "command".to_string(),
                    value: "Batch".to_string(),
                    reason: "a batch cannot contain a batch".to_string(),
                }),
                _ => one(state, request),
            })
            .collect(),
        _ => vec![one(state, request)],
    }
}

/// Applies one committed request at `revision` (strictly increasing across calls; see
/// [`next_revision`]).
///
/// On `Ok`, `state.revision() == revision` and the change is appended to the bounded history,
/// attributed to `request.actor`. On `Err`, the state is exactly unchanged (its revision too), so
/// a refused entry still leaves every replica equal. Deterministic: the same state and request
/// give the same result on every replica.
pub fn apply(
    state: &mut State,
    revision: Revision,
    request: &Request,
) -> Result<Outcome, Rejection> {
    // Re-applying an entry would allocate twice, so a caller that loses track of what it applied
    // gets a refusal rather than a silently diverging replica.
    if revision <= state.revision {
        return Err(Rejection::FailedPrecondition {
            reason: format!(
                "revision {revision} is not after the current revision {}; each log entry must \
                 be applied once, in order",
                state.revision
            ),
        });
    }
    validate_actor(&request.actor)?;
    if let Some(note) = &request.on_behalf_of {
        validate_on_behalf_of(note)?;
    }
    if request.command.adds_data() {
        if let Some(alarm) = state.no_space_alarm() {
            return Err(Rejection::AlarmRaised {
                alarm: alarm.kind.to_string(),
                reason: alarm.describe(),
            });
        }
    }
    let outcome = match &request.command {
        Command::CreatePool(spec) => state.create_pool(revision, spec)?,
        Command::DeletePool { name } => state.delete_pool(name)?,
        Command::CreateProfile(spec) => state.create_profile(revision, spec)?,
        Command::UpdateProfile {
            spec,
            expected_revision,
        } => state.update_profile(revision, spec, *expected_revision)?,
        Command::DeleteProfile {
            name,
            expected_revision,
        } => state.delete_profile(name, *expected_revision)?,
        Command::PutMember(member) => state.put_member(member)?,
        Command::RemoveMember { id } => state.remove_member(*id)?,
        Command::Place { changes } => state.place(revision, changes)?,
        Command::ReportPresented {
            unit,
            profiles,
            as_of,
        } => state.report_presented(unit, profiles, *as_of)?,
        Command::SetDrain { unit, draining } => state.set_drain(unit, *draining)?,
        Command::RevokeLease { unit } => state.revoke_lease(revision, unit)?,
        Command::SettleMembership { log_index } => {
            // Memberships only move forward; an older one is settled by the newer.
            state.settled_membership = state.settled_membership.max(*log_index);
            Outcome::MembershipSettled {
                log_index: *log_index,
            }
        }
        Command::FailOver {
            unit,
            epoch,
            changes,
        } => state.fail_over(revision, unit, *epoch, changes)?,
        Command::Recover { survivor, lost } => state.recover(*survivor, lost)?,
        Command::ReportSpace {
            member,
            used_bytes,
            quota_bytes,
        } => state.report_space(revision, member, *used_bytes, *quota_bytes)?,
        Command::DisarmAlarm { member, kind } => state.disarm_alarms(member.as_deref(), *kind)?,
        Command::GrantRole { principal, role } => state.grant_role(principal, *role)?,
        Command::RevokeRole { principal } => state.revoke_role(principal)?,
        Command::BootstrapAdmin { principal } => state.bootstrap_admin(principal)?,
        Command::Batch(_) => {
            return Err(Rejection::FailedPrecondition {
                reason: "a batch is applied request by request (apply_entry), not as one change"
                    .to_string(),
            })
        }
    };
    let change = match &outcome {
        Outcome::Pool(pool) => Change::PoolPut(pool.clone()),
        Outcome::PoolDeleted { name } => Change::PoolDeleted { name: name.clone() },
        Outcome::Profile(profile) => Change::ProfilePut(profile.clone()),
        Outcome::ProfileDeleted { name } => Change::ProfileDeleted { name: name.clone() },
        Outcome::Member(member) => Change::MemberPut(member.clone()),
        Outcome::MemberRemoved { id } => Change::MemberRemoved { id: *id },
        Outcome::Placed { profiles } => Change::Placed {
            placements: placements_of(state, profiles),
        },
        Outcome::Presented { unit } => Change::PresentedPut {
            unit: unit.clone(),
            profiles: state.presented.get(unit).cloned().unwrap_or_default(),
        },
        Outcome::Drain { unit, draining } => Change::DrainSet {
            unit: unit.clone(),
            draining: *draining,
        },
        Outcome::LeaseRevoked { unit, .. } => Change::LeaseRevoked { unit: unit.clone() },
        Outcome::MembershipSettled { log_index } => Change::MembershipSettled {
            log_index: *log_index,
        },
        Outcome::FailedOver { unit, profiles } => Change::FailedOver {
            unit: unit.clone(),
            placements: placements_of(state, profiles),
        },
        Outcome::Recovered { survivor, lost } => Change::Recovered {
            survivor: *survivor,
            lost: lost.clone(),
        },
        Outcome::AlarmReported { alarm } => Change::AlarmPut(alarm.clone()),
        Outcome::AlarmsDisarmed { alarms } => Change::AlarmsDisarmed {
            alarms: alarms.clone(),
        },
        Outcome::RoleGranted {
            principal, role, ..
        } => Change::RoleGranted {
            principal: principal.clone(),
            role: *role,
        },
        Outcome::RoleRevoked { principal, .. } => Change::RoleRevoked {
            principal: principal.clone(),
        },
    };
    state.revision = revision;
    state.record(Event {
        revision,
        actor: request.actor.clone(),
        change,
        trace: request.trace.clone(),
        on_behalf_of: request.on_behalf_of.clone(),
    });
    Ok(outcome)
}

/// The placements of `profiles` as they now stand, for an event.
fn placements_of(state: &State, profiles: &[String]) -> Vec<(String, Placement)> {
    profiles
        .iter()
        .filter_map(|name| {
            state
                .placements
                .get(name)
                .map(|placement| (name.clone(), placement.clone()))
        })
        .collect()
}
