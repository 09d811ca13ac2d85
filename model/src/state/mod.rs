//! The replicated state, the pure `apply` that changes it, and the bounded history of changes
//! that `Watch` and audit read.
//!
//! This file holds [`State`], its queries, its invariants and its snapshot encoding; `apply.rs`
//! holds [`apply`] and the handler of each command.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::access::AccessRole;
use crate::alarm::{Alarm, AlarmKind};
use crate::error::HistoryTruncated;
use crate::identity::{Identity, Mac, Wwn};
use crate::index::IdentityIndex;
use crate::limits::{EVENT_HISTORY_MAX, MEMBERS_MAX, POOLS_MAX, PROFILES_MAX, ROLES_MAX};
use crate::member::Member;
use crate::placement::Placement;
use crate::pool::{Pool, PoolUsage};
use crate::profile::Profile;
use crate::Revision;

mod alarms;
mod apply;
mod roles;

pub use apply::{apply, apply_entry, next_revision, Accepted};

/// One accepted change, as `Watch` streams it and audit records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub revision: Revision,
    pub actor: String,
    pub change: Change,
    /// The `traceparent` of the request that made the change, if it was traced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace: Option<String>,
    /// Whom the actor said it acted for, if it said (see `Request::on_behalf_of`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_behalf_of: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Change {
    PoolPut(Pool),
    PoolDeleted {
        name: String,
    },
    /// Shared with the state's map while the profile is current (`Arc`), so the history holds
    /// no second copy of every profile; encoded as the profile itself.
    ProfilePut(Arc<Profile>),
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
    /// Profiles were moved off a unit whose lease was revoked; the revocation ends with the
    /// move that leaves the unit holding nothing (a large failover comes in several parts).
    FailedOver {
        unit: String,
        placements: Vec<(String, Placement)>,
    },
    /// A recovery without a quorum made `survivor` the only voter; `lost` were confirmed gone
    /// by the operator (the event's actor) and their ids are refused from now on.
    Recovered {
        survivor: u64,
        lost: Vec<u64>,
    },
    /// An alarm was raised, or its member reported again.
    AlarmPut(Alarm),
    AlarmsDisarmed {
        alarms: Vec<Alarm>,
    },
    /// `principal` was given `role` (replacing any role it had).
    RoleGranted {
        principal: String,
        role: AccessRole,
    },
    /// `principal` lost its role.
    RoleRevoked {
        principal: String,
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
    profiles: BTreeMap<String, Arc<Profile>>,
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
    /// Member ids removed by a recovery without a quorum: refused on the peer API for good.
    removed_ids: BTreeSet<u64>,
    /// Raised alarms, by member and kind.
    alarms: BTreeMap<(String, AlarmKind), Alarm>,
    /// Each principal's access role (`access`): who may do what on the public API.
    roles: BTreeMap<String, AccessRole>,
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

    /// This state as the start of a new cluster restored from a backup: what concerned the old
    /// cluster's Raft members and leases is dropped. Removed ids go (the new cluster has its own
    /// id, which keeps the old members out, and its members may reuse those ids), and so do
    /// lease revocations (no voter of the new cluster has granted anything yet, so a revocation
    /// carried over would only move a healthy unit's profiles away at the first start).
    pub fn into_new_cluster(mut self) -> State {
        self.removed_ids.clear();
        self.revoked.clear();
        self
    }

    /// The role `principal` holds, if any.
    pub fn role_of(&self, principal: &str) -> Option<AccessRole> {
        self.roles.get(principal).copied()
    }

    /// Every principal with its role, in principal order.
    pub fn roles(&self) -> impl Iterator<Item = (&String, AccessRole)> {
        self.roles
            .iter()
            .map(|(principal, role)| (principal, *role))
    }

    /// How many principals hold the admin role.
    pub fn admins(&self) -> usize {
        self.roles
            .values()
            .filter(|role| **role == AccessRole::Admin)
            .count()
    }

    /// Raised alarms, by member then kind.
    pub fn alarms(&self) -> impl Iterator<Item = &Alarm> {
        self.alarms.values()
    }

    /// The alarm that refuses commands adding data, if one is raised.
    pub fn no_space_alarm(&self) -> Option<&Alarm> {
        self.alarms.values().find(|a| a.kind == AlarmKind::NoSpace)
    }

    pub fn profile(&self, name: &str) -> Option<&Profile> {
        self.profiles.get(name).map(Arc::as_ref)
    }

    /// In name order.
    pub fn profiles(&self) -> impl Iterator<Item = &Profile> {
        self.profiles.values().map(Arc::as_ref)
    }

    /// Whether `id` was removed by a recovery without a quorum (and so is refused for good).
    pub fn is_removed_id(&self, id: u64) -> bool {
        self.removed_ids.contains(&id)
    }

    /// In id order.
    pub fn removed_ids(&self) -> impl Iterator<Item = u64> + '_ {
        self.removed_ids.iter().copied()
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

    /// Whether no profile is placed on `unit` or moving off it: what a revoked unit must reach
    /// before its revocation ends.
    pub fn holds_nothing(&self, unit: &str) -> bool {
        self.placements.values().all(|p| {
            p.unit.as_deref() != Some(unit) && p.moving.as_ref().is_none_or(|m| m.from != unit)
        })
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

    /// The retained event at `revision`, if there is one.
    pub fn event_at(&self, revision: Revision) -> Option<&Event> {
        let at = self
            .events
            .partition_point(|event| event.revision < revision);
        self.events
            .get(at)
            .filter(|event| event.revision == revision)
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
        let rebuilt = IdentityIndex::build(self.profiles(), self.pools.values())?;
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
        over(
            "removed member ids",
            self.removed_ids.len(),
            crate::limits::REMOVED_IDS_MAX,
        )?;
        over("alarms", self.alarms.len(), MEMBERS_MAX)?;
        over("principals with a role", self.roles.len(), ROLES_MAX)?;
        for principal in self.roles.keys() {
            crate::access::validate_principal("principal", principal)
                .map_err(|rejection| format!("role map: {rejection}"))?;
        }
        for ((member, kind), alarm) in &self.alarms {
            if &alarm.member != member || alarm.kind != *kind {
                return Err(format!(
                    "alarm {} is filed under {member}/{kind}",
                    alarm.describe()
                ));
            }
        }

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
    #[serde(skip_serializing_if = "BTreeSet::is_empty")]
    removed_ids: &'a BTreeSet<u64>,
    alarms: Vec<&'a Alarm>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    roles: &'a BTreeMap<String, AccessRole>,
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
    #[serde(default)]
    removed_ids: BTreeSet<u64>,
    /// Absent in snapshots written before alarms existed: none raised.
    #[serde(default)]
    alarms: Vec<Alarm>,
    /// Absent in snapshots written before roles existed, or holding no role: none granted.
    #[serde(default)]
    roles: BTreeMap<String, AccessRole>,
    events: VecDeque<Event>,
}

impl Serialize for State {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        SnapshotRef {
            revision: self.revision,
            history_start: self.history_start,
            profiles: self.profiles().collect(),
            pools: self.pools.values().collect(),
            members: self.members.values().collect(),
            placements: &self.placements,
            presented: &self.presented,
            draining: &self.draining,
            presented_as_of: &self.presented_as_of,
            revoked: &self.revoked,
            settled_membership: self.settled_membership,
            removed_ids: &self.removed_ids,
            alarms: self.alarms.values().collect(),
            roles: &self.roles,
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
                snapshot.profiles.into_iter().map(Arc::new).collect(),
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
            removed_ids: snapshot.removed_ids,
            alarms: keyed(
                "alarm",
                snapshot.alarms,
                |a| (a.member.clone(), a.kind),
                |(member, kind)| format!("{kind} of {member:?}"),
            )?,
            roles: snapshot.roles,
            events: snapshot.events,
            index: IdentityIndex::default(),
        };
        // Pools are validated here before the index is built from them, which the allocator's
        // proof that pool ranges hold only valid identities depends on.
        state.check_primary()?;
        state.index = IdentityIndex::build(state.profiles(), state.pools.values())?;
        state.share_history_profiles();
        Ok(state)
    }

    /// Points each history event that holds a current profile at the map's copy: a snapshot
    /// encodes both, and decoding makes two, which would double a loaded state's memory.
    fn share_history_profiles(&mut self) {
        for event in &mut self.events {
            if let Change::ProfilePut(profile) = &mut event.change {
                if let Some(current) = self.profiles.get(&profile.name) {
                    if current == profile && !Arc::ptr_eq(current, profile) {
                        *profile = Arc::clone(current);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::{Command, Request};
    use crate::profile::{Failback, ProfileSpec, VNicSpec};

    fn create(state: &mut State, index: u64, name: &str, mac: &str) {
        let spec = ProfileSpec {
            name: name.into(),
            server: "srv".into(),
            vnics: vec![VNicSpec {
                name: "eth0".into(),
                mac: Some(mac.parse().expect("mac")),
                network: "n".into(),
                vlan: None,
                pool: None,
            }],
            vhbas: vec![],
            preferred_unit: None,
            failback: Failback::Manual,
        };
        let request = Request {
            actor: "t".into(),
            command: Command::CreateProfile(spec),
            trace: None,
            on_behalf_of: None,
        };
        crate::apply(state, index, &request).expect("created");
    }

    /// How many history events hold the very copy of `name` the map holds.
    fn shared(state: &State, name: &str) -> usize {
        let current = &state.profiles[name];
        state
            .events
            .iter()
            .filter(|e| matches!(&e.change, Change::ProfilePut(p) if Arc::ptr_eq(p, current)))
            .count()
    }

    #[test]
    fn the_history_shares_current_profiles_before_and_after_a_snapshot() {
        let mut state = State::default();
        create(&mut state, 1, "p1", "02:00:00:00:00:01");
        create(&mut state, 2, "p2", "02:00:00:00:00:02");
        assert_eq!((shared(&state, "p1"), shared(&state, "p2")), (1, 1));
        let encoded = serde_json::to_vec(&state).expect("encode");
        let loaded: State = serde_json::from_slice(&encoded).expect("decode");
        assert_eq!(loaded, state);
        assert_eq!((shared(&loaded, "p1"), shared(&loaded, "p2")), (1, 1));
    }
}
