//! The replicated state, the pure `apply` that changes it, and the bounded history of changes
//! that `Watch` and audit read.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::command::{Command, Outcome, Request};
use crate::error::{HistoryTruncated, Rejection};
use crate::identity::{Identity, Mac, Wwn};
use crate::index::IdentityIndex;
use crate::limits::{ACTOR_LEN_MAX, EVENT_HISTORY_MAX, MEMBERS_MAX, POOLS_MAX, PROFILES_MAX};
use crate::member::{Member, Role};
use crate::name::validate_name;
use crate::placement::{Placement, PlacementChange};
use crate::plan::plan_profile;
use crate::pool::{Pool, PoolSpec, PoolUsage};
use crate::profile::{Profile, ProfileSpec};
use crate::Revision;

/// One accepted change, as `Watch` streams it and audit records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub revision: Revision,
    pub actor: String,
    pub change: Change,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Change {
    PoolPut(Pool),
    PoolDeleted {
        name: String,
    },
    ProfilePut(Profile),
    ProfileDeleted {
        name: String,
    },
    MemberPut(Member),
    MemberRemoved {
        id: u64,
    },
    /// Placements changed in one decision (one event, since they share one revision).
    Placed {
        placements: Vec<(String, Placement)>,
    },
    PresentedPut {
        unit: String,
        profiles: BTreeMap<String, Revision>,
    },
    DrainSet {
        unit: String,
        draining: bool,
    },
    /// A unit's lease was revoked; voters grant it nothing until its failover.
    LeaseRevoked {
        unit: String,
    },
    /// The voter membership whose log entry is at `log_index` is settled.
    MembershipSettled {
        log_index: u64,
    },
    /// Profiles were moved off a unit whose lease was revoked, and the revocation ended.
    FailedOver {
        unit: String,
        placements: Vec<(String, Placement)>,
    },
}

/// Everything the cluster agrees on. Changed only by `apply`, so every replica that applies the
/// same log holds an equal `State`.
///
/// Serialized (for snapshots) as its primary data only; deserializing rebuilds the identity index
/// and refuses a state that breaks any invariant, so a corrupt snapshot cannot be installed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct State {
    revision: Revision,
    profiles: BTreeMap<String, Profile>,
    pools: BTreeMap<String, Pool>,
    members: BTreeMap<u64, Member>,
    /// Desired placement per profile; a profile without an entry has never been placed.
    placements: BTreeMap<String, Placement>,
    /// What each unit last reported its switch presents: profile name to profile revision.
    presented: BTreeMap<String, BTreeMap<String, Revision>>,
    /// Units being drained (by name): they are given no profile.
    draining: BTreeSet<String>,
    /// Per unit, the newest state (log index) its agent had acted on when it reported.
    presented_as_of: BTreeMap<String, Revision>,
    /// Units whose lease is revoked, with the revision of the revocation (its epoch).
    revoked: BTreeMap<String, Revision>,
    /// The log index of the newest voter membership recorded as settled (0 if none).
    settled_membership: u64,
    /// The newest changes, oldest first, at most `EVENT_HISTORY_MAX`.
    events: VecDeque<Event>,
    /// The lowest `from` that `events_since` can serve in full: one past the newest dropped event.
    history_start: Revision,
    /// Derived from `profiles` and `pools`.
    index: IdentityIndex,
}

impl State {
    /// Revision of the last applied change (0 before any).
    pub fn revision(&self) -> Revision {
        self.revision
    }

    pub fn profile(&self, name: &str) -> Option<&Profile> {
        self.profiles.get(name)
    }

    /// In name order.
    pub fn profiles(&self) -> impl Iterator<Item = &Profile> {
        self.profiles.values()
    }

    pub fn pool(&self, name: &str) -> Option<&Pool> {
        self.pools.get(name)
    }

    /// In name order.
    pub fn pools(&self) -> impl Iterator<Item = &Pool> {
        self.pools.values()
    }

    pub fn pool_usage(&self, name: &str) -> Option<PoolUsage> {
        let pool = self.pools.get(name)?;
        let free = self.index.pool_free(name)?;
        Some(PoolUsage::new(
            name,
            pool.range.kind(),
            free.size(),
            free.used(),
        ))
    }

    /// In pool name order.
    pub fn pools_usage(&self) -> Vec<PoolUsage> {
        self.pools
            .keys()
            .filter_map(|name| self.pool_usage(name))
            .collect()
    }

    pub fn member(&self, id: u64) -> Option<&Member> {
        self.members.get(&id)
    }

    /// In id order.
    pub fn members(&self) -> impl Iterator<Item = &Member> {
        self.members.values()
    }

    pub fn placement(&self, profile: &str) -> Option<&Placement> {
        self.placements.get(profile)
    }

    /// Every profile's placement, in profile name order (never-placed profiles are absent).
    pub fn placements(&self) -> impl Iterator<Item = (&String, &Placement)> {
        self.placements.iter()
    }

    /// What `unit` last reported presenting.
    pub fn presented_by(&self, unit: &str) -> Option<&BTreeMap<String, Revision>> {
        self.presented.get(unit)
    }

    /// Every unit's last report, in unit name order.
    pub fn presented(&self) -> impl Iterator<Item = (&String, &BTreeMap<String, Revision>)> {
        self.presented.iter()
    }

    /// The newest state (log index) `unit`'s agent had acted on in a report (0 if none).
    pub fn presented_as_of(&self, unit: &str) -> Revision {
        self.presented_as_of.get(unit).copied().unwrap_or(0)
    }

    /// The epoch (revision) of the revocation of `unit`'s lease in force, if any.
    pub fn revoked_at(&self, unit: &str) -> Option<Revision> {
        self.revoked.get(unit).copied()
    }

    /// The log index of the newest voter membership recorded as settled (0 if none).
    pub fn settled_membership(&self) -> u64 {
        self.settled_membership
    }

    /// Every revocation in force, unit name to epoch.
    pub fn revocations(&self) -> impl Iterator<Item = (&String, &Revision)> {
        self.revoked.iter()
    }

    pub fn is_draining(&self, unit: &str) -> bool {
        self.draining.contains(unit)
    }

    pub fn member_by_name(&self, name: &str) -> Option<&Member> {
        self.members.values().find(|m| m.name == name)
    }

    /// Profiles that count against `unit`'s capacity: placed on it, or moving to it.
    pub fn load_of(&self, unit: &str) -> usize {
        self.placements
            .values()
            .filter(|p| p.claimed_unit() == Some(unit))
            .count()
    }

    /// The profile holding `mac`, if any.
    pub fn owner_of_mac(&self, mac: Mac) -> Option<&str> {
        self.index.owner(Identity::Mac(mac))
    }

    /// The profile holding `wwn` (as WWPN or WWNN), if any.
    pub fn owner_of_wwn(&self, wwn: Wwn) -> Option<&str> {
        self.index.owner(Identity::Wwn(wwn))
    }

    /// The retained events with revision `>= from`, oldest first; fails if events that would
    /// belong to that answer have been dropped from the bounded history.
    pub fn events_since(
        &self,
        from: Revision,
    ) -> Result<impl Iterator<Item = &Event>, HistoryTruncated> {
        if from < self.history_start {
            return Err(HistoryTruncated {
                oldest_available: self.history_start,
            });
        }
        let start = self.events.partition_point(|event| event.revision < from);
        Ok(self.events.range(start..))
    }

    /// The lowest `from` that `events_since` serves in full: 0 until the history first overflows,
    /// then one past the newest dropped event. (Revisions are log indices and not every entry is
    /// a change, so this may be lower than the revision of the oldest retained event.)
    pub fn oldest_retained_revision(&self) -> Revision {
        self.history_start
    }

    /// Checks every invariant, including that the identity index equals one rebuilt from scratch:
    /// names match their keys, limits hold, stored objects pass their static validation, pools of
    /// a kind do not overlap, member names are unique, no identity is held twice, and the history
    /// is ordered and within the current revision.
    pub fn check_invariants(&self) -> Result<(), String> {
        self.check_primary()?;
        let rebuilt = IdentityIndex::build(self.profiles.values(), self.pools.values())?;
        if rebuilt != self.index {
            return Err(
                "the identity index differs from one rebuilt from profiles and pools".into(),
            );
        }
        Ok(())
    }

    /// The invariants of the primary data; the index is not consulted.
    fn check_primary(&self) -> Result<(), String> {
        let over = |what: &str, count: usize, limit: usize| {
            if count > limit {
                Err(format!("{count} {what}, more than the limit of {limit}"))
            } else {
                Ok(())
            }
        };
        over("profiles", self.profiles.len(), PROFILES_MAX)?;
        over("pools", self.pools.len(), POOLS_MAX)?;
        over("members", self.members.len(), MEMBERS_MAX)?;
        over("events", self.events.len(), EVENT_HISTORY_MAX)?;

        for (name, profile) in &self.profiles {
            if *name != profile.name {
                return Err(format!("profile {:?} is stored as {name:?}", profile.name));
            }
            profile
                .spec()
                .validate()
                .map_err(|rejection| format!("profile {name:?}: {rejection}"))?;
            if !(profile.created_revision <= profile.revision && profile.revision <= self.revision)
            {
                return Err(format!(
                    "profile {name:?} was created at revision {} and changed at {}, which is out \
                     of order with the state revision {}",
                    profile.created_revision, profile.revision, self.revision
                ));
            }
        }

        for (name, pool) in &self.pools {
            if *name != pool.name {
                return Err(format!("pool {:?} is stored as {name:?}", pool.name));
            }
            pool.spec()
                .validate()
                .map_err(|rejection| format!("pool {name:?}: {rejection}"))?;
            if pool.revision > self.revision {
                return Err(format!(
                    "pool {name:?} has revision {}, after the state revision {}",
                    pool.revision, self.revision
                ));
            }
        }
        let pools: Vec<&Pool> = self.pools.values().collect();
        for (position, pool) in pools.iter().enumerate() {
            if let Some(other) = pools[position + 1..]
                .iter()
                .find(|other| pool.range.overlaps(&other.range))
            {
                return Err(format!(
                    "pools {:?} ({}) and {:?} ({}) overlap",
                    pool.name, pool.range, other.name, other.range
                ));
            }
        }

        let mut member_names = BTreeMap::new();
        for (&id, member) in &self.members {
            if id != member.id {
                return Err(format!("member {} is stored as {id}", member.id));
            }
            member
                .validate()
                .map_err(|rejection| format!("member {id}: {rejection}"))?;
            if let Some(other) = member_names.insert(member.name.as_str(), id) {
                return Err(format!(
                    "members {other} and {id} are both named {:?}",
                    member.name
                ));
            }
        }

        for (name, placement) in &self.placements {
            if !self.profiles.contains_key(name) {
                return Err(format!("placement for {name:?}, which is not a profile"));
            }
            if placement.revision > self.revision {
                return Err(format!(
                    "placement of {name:?} has revision {}, after the state revision {}",
                    placement.revision, self.revision
                ));
            }
        }

        let mut previous: Option<Revision> = None;
        for event in &self.events {
            if previous.is_some_and(|previous| event.revision <= previous) {
                return Err(format!(
                    "event at revision {} follows one at revision {previous:?}",
                    event.revision
                ));
            }
            if event.revision < self.history_start || event.revision > self.revision {
                return Err(format!(
                    "event at revision {} lies outside the history {}..={}",
                    event.revision, self.history_start, self.revision
                ));
            }
            previous = Some(event.revision);
        }
        Ok(())
    }

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
            return Err(Rejection::invalid(
                "range",
                &spec.range.to_string(),
                format!("overlaps pool {:?} ({})", other.name, other.range),
            ));
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
        let profile = plan_profile(&self.index, &self.pools, spec, None, revision)?;
        for identity in profile.identities() {
            self.index.claim(identity, &profile.name);
        }
        self.profiles.insert(profile.name.clone(), profile.clone());
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
        let profile = plan_profile(&self.index, &self.pools, spec, Some(previous), revision)?;
        let released: Vec<Identity> = previous.identities().collect();
        for identity in released {
            self.index.release(identity);
        }
        for identity in profile.identities() {
            self.index.claim(identity, &profile.name);
        }
        self.profiles.insert(profile.name.clone(), profile.clone());
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
        self.revoked.remove(unit);
        // Its switch has cleared by now (a majority attested that its lease lapsed), so its last
        // report no longer says anything true.
        if let Some(report) = self.presented.get_mut(unit) {
            report.clear();
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

/// Applies one committed request at `revision` (its Raft log index, strictly increasing across
/// calls).
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
    };
    let change = match &outcome {
        Outcome::Pool(pool) => Change::PoolPut(pool.clone()),
        Outcome::PoolDeleted { name } => Change::PoolDeleted { name: name.clone() },
        Outcome::Profile(profile) => Change::ProfilePut(profile.clone()),
        Outcome::ProfileDeleted { name } => Change::ProfileDeleted { name: name.clone() },
        Outcome::Member(member) => Change::MemberPut(member.clone()),
        Outcome::MemberRemoved { id } => Change::MemberRemoved { id: *id },
        Outcome::Placed { profiles } => Change::Placed {
            placements: profiles
                .iter()
                .filter_map(|name| {
                    state
                        .placements
                        .get(name)
                        .map(|placement| (name.clone(), placement.clone()))
                })
                .collect(),
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
            placements: profiles
                .iter()
                .filter_map(|name| {
                    state
                        .placements
                        .get(name)
                        .map(|placement| (name.clone(), placement.clone()))
                })
                .collect(),
        },
    };
    state.revision = revision;
    state.record(Event {
        revision,
        actor: request.actor.clone(),
        change,
    });
    Ok(outcome)
}

/// The serialized form of `State`: primary data only, in key order.
#[derive(Serialize)]
#[serde(rename = "State")]
struct SnapshotRef<'a> {
    revision: Revision,
    history_start: Revision,
    profiles: Vec<&'a Profile>,
    pools: Vec<&'a Pool>,
    members: Vec<&'a Member>,
    placements: &'a BTreeMap<String, Placement>,
    presented: &'a BTreeMap<String, BTreeMap<String, Revision>>,
    draining: &'a BTreeSet<String>,
    presented_as_of: &'a BTreeMap<String, Revision>,
    revoked: &'a BTreeMap<String, Revision>,
    settled_membership: u64,
    events: &'a VecDeque<Event>,
}

#[derive(Deserialize)]
#[serde(rename = "State")]
struct Snapshot {
    revision: Revision,
    history_start: Revision,
    profiles: Vec<Profile>,
    pools: Vec<Pool>,
    members: Vec<Member>,
    #[serde(default)]
    placements: BTreeMap<String, Placement>,
    #[serde(default)]
    presented: BTreeMap<String, BTreeMap<String, Revision>>,
    #[serde(default)]
    draining: BTreeSet<String>,
    #[serde(default)]
    presented_as_of: BTreeMap<String, Revision>,
    #[serde(default)]
    revoked: BTreeMap<String, Revision>,
    #[serde(default)]
    settled_membership: u64,
    events: VecDeque<Event>,
}

impl Serialize for State {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        SnapshotRef {
            revision: self.revision,
            history_start: self.history_start,
            profiles: self.profiles.values().collect(),
            pools: self.pools.values().collect(),
            members: self.members.values().collect(),
            placements: &self.placements,
            presented: &self.presented,
            draining: &self.draining,
            presented_as_of: &self.presented_as_of,
            revoked: &self.revoked,
            settled_membership: self.settled_membership,
            events: &self.events,
        }
        .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for State {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<State, D::Error> {
        let snapshot = Snapshot::deserialize(deserializer)?;
        State::from_snapshot(snapshot).map_err(serde::de::Error::custom)
    }
}

impl State {
    fn from_snapshot(snapshot: Snapshot) -> Result<State, String> {
        fn keyed<K: Ord, V>(
            what: &str,
            values: Vec<V>,
            key: impl Fn(&V) -> K,
            show: impl Fn(&K) -> String,
        ) -> Result<BTreeMap<K, V>, String> {
            let mut map = BTreeMap::new();
            for value in values {
                let k = key(&value);
                if map.contains_key(&k) {
                    return Err(format!("{what} {} appears twice", show(&k)));
                }
                map.insert(k, value);
            }
            Ok(map)
        }
        let mut state = State {
            revision: snapshot.revision,
            history_start: snapshot.history_start,
            profiles: keyed(
                "profile",
                snapshot.profiles,
                |p| p.name.clone(),
                |k| format!("{k:?}"),
            )?,
            pools: keyed(
                "pool",
                snapshot.pools,
                |p| p.name.clone(),
                |k| format!("{k:?}"),
            )?,
            members: keyed("member", snapshot.members, |m| m.id, u64::to_string)?,
            placements: snapshot.placements,
            presented: snapshot.presented,
            draining: snapshot.draining,
            presented_as_of: snapshot.presented_as_of,
            revoked: snapshot.revoked,
            settled_membership: snapshot.settled_membership,
            events: snapshot.events,
            index: IdentityIndex::default(),
        };
        // Pools are validated here before the index is built from them, which the allocator's
        // proof that pool ranges hold only valid identities depends on.
        state.check_primary()?;
        state.index = IdentityIndex::build(state.profiles.values(), state.pools.values())?;
        Ok(state)
    }
}
