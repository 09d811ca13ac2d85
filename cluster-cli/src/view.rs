//! The JSON shapes `vnetctl -o json` prints, and the conversions from the wire types.
//!
//! These are the CLI's own types rather than serde on the generated code, so that the JSON stays
//! stable when the proto grows (a new field appears here only when added on purpose) and so
//! that enums print as words ("auto", "voter") instead of numbers. A profile's shape is also
//! what `profile create/update --file` reads, which is why [`ProfileView`] converts both ways.
//!
//! Conventions: field names are snake_case as in the proto; every field is always present;
//! absent optional values are `null`; maps are sorted by key; enums are lower-case words, with
//! "unspecified" for a value this CLI does not know.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use vnet_proto::vnet::v1 as pb;

/// A vNIC as printed and as read from `--file`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VnicView {
    pub name: String,
    /// Empty in a file means "allocate from `pool`".
    #[serde(default)]
    pub mac: String,
    pub network: String,
    /// 0 = untagged.
    #[serde(default)]
    pub vlan: u32,
    #[serde(default)]
    pub pool: Option<String>,
}

/// A vHBA as printed and as read from `--file`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VhbaView {
    pub name: String,
    #[serde(default)]
    pub wwpn: String,
    #[serde(default)]
    pub wwnn: String,
    pub fabric: String,
    #[serde(default)]
    pub pool: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FailbackView {
    #[default]
    Auto,
    Manual,
    Unspecified,
}

/// A profile: the output of `profile get -o json`, and the input of `--file`.
///
/// In a file, `revision` and `created_revision` may be left out; `profile update --file` uses a
/// non-zero `revision` as the expected revision unless `--expected-revision` says otherwise.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfileView {
    pub name: String,
    pub server: String,
    #[serde(default)]
    pub vnics: Vec<VnicView>,
    #[serde(default)]
    pub vhbas: Vec<VhbaView>,
    #[serde(default)]
    pub preferred_unit: Option<String>,
    #[serde(default)]
    pub failback: FailbackView,
    #[serde(default)]
    pub revision: u64,
    #[serde(default)]
    pub created_revision: u64,
}

impl From<&pb::Profile> for ProfileView {
    fn from(profile: &pb::Profile) -> Self {
        ProfileView {
            name: profile.name.clone(),
            server: profile.server.clone(),
            vnics: profile
                .vnics
                .iter()
                .map(|vnic| VnicView {
                    name: vnic.name.clone(),
                    mac: vnic.mac.clone(),
                    network: vnic.network.clone(),
                    vlan: vnic.vlan,
                    pool: vnic.pool.clone(),
                })
                .collect(),
            vhbas: profile
                .vhbas
                .iter()
                .map(|vhba| VhbaView {
                    name: vhba.name.clone(),
                    wwpn: vhba.wwpn.clone(),
                    wwnn: vhba.wwnn.clone(),
                    fabric: vhba.fabric.clone(),
                    pool: vhba.pool.clone(),
                })
                .collect(),
            preferred_unit: profile.preferred_unit.clone(),
            failback: match pb::FailbackPolicy::try_from(profile.failback) {
                Ok(pb::FailbackPolicy::Auto) => FailbackView::Auto,
                Ok(pb::FailbackPolicy::Manual) => FailbackView::Manual,
                _ => FailbackView::Unspecified,
            },
            revision: profile.revision,
            created_revision: profile.created_revision,
        }
    }
}

impl From<&ProfileView> for pb::Profile {
    fn from(view: &ProfileView) -> Self {
        pb::Profile {
            name: view.name.clone(),
            server: view.server.clone(),
            vnics: view
                .vnics
                .iter()
                .map(|vnic| pb::Vnic {
                    name: vnic.name.clone(),
                    mac: vnic.mac.clone(),
                    network: vnic.network.clone(),
                    vlan: vnic.vlan,
                    pool: vnic.pool.clone(),
                })
                .collect(),
            vhbas: view
                .vhbas
                .iter()
                .map(|vhba| pb::Vhba {
                    name: vhba.name.clone(),
                    wwpn: vhba.wwpn.clone(),
                    wwnn: vhba.wwnn.clone(),
                    fabric: vhba.fabric.clone(),
                    pool: vhba.pool.clone(),
                })
                .collect(),
            preferred_unit: view.preferred_unit.clone(),
            failback: failback_to_wire(view.failback) as i32,
            revision: view.revision,
            created_revision: view.created_revision,
        }
    }
}

pub fn failback_to_wire(failback: FailbackView) -> pb::FailbackPolicy {
    match failback {
        FailbackView::Auto => pb::FailbackPolicy::Auto,
        FailbackView::Manual => pb::FailbackPolicy::Manual,
        FailbackView::Unspecified => pb::FailbackPolicy::Unspecified,
    }
}

/// `profile list -o json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProfileListView {
    pub profiles: Vec<ProfileView>,
    /// Revision of the last page read.
    pub revision: u64,
    /// True when `--limit` stopped the listing before the last page.
    pub truncated: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PoolKindView {
    Mac,
    Wwn,
    Unspecified,
}

impl From<i32> for PoolKindView {
    fn from(kind: i32) -> Self {
        match pb::PoolKind::try_from(kind) {
            Ok(pb::PoolKind::Mac) => PoolKindView::Mac,
            Ok(pb::PoolKind::Wwn) => PoolKindView::Wwn,
            _ => PoolKindView::Unspecified,
        }
    }
}

/// One pool, in `pool list` and `pool create`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PoolView {
    pub name: String,
    pub kind: PoolKindView,
    pub first: String,
    pub last: String,
    pub revision: u64,
}

impl From<&pb::Pool> for PoolView {
    fn from(pool: &pb::Pool) -> Self {
        PoolView {
            name: pool.name.clone(),
            kind: pool.kind.into(),
            first: pool.first.clone(),
            last: pool.last.clone(),
            revision: pool.revision,
        }
    }
}

/// `pool list -o json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PoolListView {
    pub pools: Vec<PoolView>,
    pub revision: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PoolUsageView {
    pub name: String,
    pub kind: PoolKindView,
    pub size: u64,
    pub used: u64,
    pub near_exhaustion: bool,
}

/// `pool usage -o json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PoolUsageListView {
    pub usages: Vec<PoolUsageView>,
    pub revision: u64,
}

impl From<&pb::GetPoolUsageResponse> for PoolUsageListView {
    fn from(response: &pb::GetPoolUsageResponse) -> Self {
        PoolUsageListView {
            usages: response
                .usages
                .iter()
                .map(|usage| PoolUsageView {
                    name: usage.name.clone(),
                    kind: usage.kind.into(),
                    size: usage.size,
                    used: usage.used,
                    near_exhaustion: usage.near_exhaustion,
                })
                .collect(),
            revision: response.revision,
        }
    }
}

/// The result of a delete: `profile delete` and `pool delete`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeletedView {
    pub deleted: String,
    pub revision: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RoleView {
    Unit,
    Witness,
    Unspecified,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MembershipView {
    Voter,
    Learner,
    Unspecified,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RaftStateView {
    Leader,
    Follower,
    Candidate,
    Learner,
    Unknown,
    Offline,
    Unspecified,
}

/// One member, in `status` and `member ...`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MemberView {
    pub id: u64,
    pub name: String,
    pub role: RoleView,
    pub api_addr: String,
    pub peer_addr: String,
    pub membership: MembershipView,
    pub raft_state: RaftStateView,
    pub last_contact_ms: Option<u64>,
    pub matched_index: Option<u64>,
    pub cabling: BTreeMap<String, u32>,
    pub capacity: u32,
}

impl From<&pb::Member> for MemberView {
    fn from(member: &pb::Member) -> Self {
        MemberView {
            id: member.id,
            name: member.name.clone(),
            role: match pb::MemberRole::try_from(member.role) {
                Ok(pb::MemberRole::Unit) => RoleView::Unit,
                Ok(pb::MemberRole::Witness) => RoleView::Witness,
                _ => RoleView::Unspecified,
            },
            api_addr: member.api_addr.clone(),
            peer_addr: member.peer_addr.clone(),
            membership: match pb::RaftMembership::try_from(member.membership) {
                Ok(pb::RaftMembership::Voter) => MembershipView::Voter,
                Ok(pb::RaftMembership::Learner) => MembershipView::Learner,
                _ => MembershipView::Unspecified,
            },
            raft_state: match pb::RaftState::try_from(member.raft_state) {
                Ok(pb::RaftState::Leader) => RaftStateView::Leader,
                Ok(pb::RaftState::Follower) => RaftStateView::Follower,
                Ok(pb::RaftState::Candidate) => RaftStateView::Candidate,
                Ok(pb::RaftState::Learner) => RaftStateView::Learner,
                Ok(pb::RaftState::Unknown) => RaftStateView::Unknown,
                Ok(pb::RaftState::Offline) => RaftStateView::Offline,
                _ => RaftStateView::Unspecified,
            },
            last_contact_ms: member.last_contact_ms,
            matched_index: member.matched_index,
            cabling: member
                .cabling
                .iter()
                .map(|(server, port)| (server.clone(), *port))
                .collect(),
            capacity: member.capacity,
        }
    }
}

/// Health of a unit's lease, as the leader judges it from every voter's report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LeaseView {
    Healthy,
    Expired,
    /// Revoked: voters grant it nothing until its failover commits.
    Revoked,
    /// The answering node is not the leader and cannot tell.
    Unknown,
    Unspecified,
}

/// One unit in `status`: lease, drain mark, what its switch presents, load.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UnitView {
    pub id: u64,
    pub name: String,
    pub lease: LeaseView,
    pub lease_age_ms: Option<u64>,
    pub draining: bool,
    /// Profiles the unit last reported presenting (replicated).
    pub presented: Vec<String>,
    /// Profiles placed on (or moving to) the unit.
    pub load: u32,
    pub capacity: u32,
    /// The unit's own view, when it answered: voters whose grants it holds,
    pub voters_granting: Option<u32>,
    /// how long its lease has left (null: none held),
    pub lease_left_ms: Option<u64>,
    /// and what its switch presents, read from the switch.
    pub switch_presenting: Vec<String>,
    pub switch_reachable: Option<bool>,
    /// What is wrong, in words; empty when nothing is.
    pub note: String,
}

impl From<&pb::UnitStatus> for UnitView {
    fn from(unit: &pb::UnitStatus) -> Self {
        UnitView {
            id: unit.id,
            name: unit.name.clone(),
            lease: match pb::LeaseHealth::try_from(unit.lease) {
                Ok(pb::LeaseHealth::Healthy) => LeaseView::Healthy,
                Ok(pb::LeaseHealth::Expired) => LeaseView::Expired,
                Ok(pb::LeaseHealth::Unknown) => LeaseView::Unknown,
                Ok(pb::LeaseHealth::Revoked) => LeaseView::Revoked,
                _ => LeaseView::Unspecified,
            },
            lease_age_ms: unit.lease_age_ms,
            draining: unit.draining,
            presented: unit.presented.clone(),
            load: unit.load,
            capacity: unit.capacity,
            voters_granting: unit.voters_granting,
            lease_left_ms: unit.lease_left_ms,
            switch_presenting: unit.switch_presenting.clone(),
            switch_reachable: unit.switch_reachable,
            note: unit.note.clone(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PlacementStateView {
    /// Presented by the unit it is placed on.
    Presented,
    /// Placed; the unit has not reported presenting it yet.
    Programming,
    /// A planned move, waiting for the source to clear.
    Moving,
    /// No unit can take it (see the reason).
    Unplaced,
    /// Presented by a unit it was failed over to.
    FailedOver,
    Unspecified,
}

/// One profile's placement, in `status` and in `watch` (`placements` events).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlacementView {
    pub profile: String,
    /// The unit that should present it now; null when unplaced or mid-move.
    pub desired_unit: Option<String>,
    /// The unit whose switch reports presenting it; null when none.
    pub presented_unit: Option<String>,
    pub state: PlacementStateView,
    pub reason: String,
    pub failed_over_from: Option<String>,
    /// Both set during a planned move, both null otherwise.
    pub moving_from: Option<String>,
    pub moving_to: Option<String>,
    pub revision: u64,
}

/// The wire's "" for "none" as an absent value.
fn non_empty(text: &str) -> Option<String> {
    (!text.is_empty()).then(|| text.to_string())
}

impl From<&pb::ProfilePlacement> for PlacementView {
    fn from(placement: &pb::ProfilePlacement) -> Self {
        PlacementView {
            profile: placement.profile.clone(),
            desired_unit: non_empty(&placement.desired_unit),
            presented_unit: non_empty(&placement.presented_unit),
            state: match pb::PlacementState::try_from(placement.state) {
                Ok(pb::PlacementState::Presented) => PlacementStateView::Presented,
                Ok(pb::PlacementState::Programming) => PlacementStateView::Programming,
                Ok(pb::PlacementState::Moving) => PlacementStateView::Moving,
                Ok(pb::PlacementState::Unplaced) => PlacementStateView::Unplaced,
                Ok(pb::PlacementState::FailedOver) => PlacementStateView::FailedOver,
                _ => PlacementStateView::Unspecified,
            },
            reason: placement.reason.clone(),
            failed_over_from: non_empty(&placement.failed_over_from),
            moving_from: non_empty(&placement.moving_from),
            moving_to: non_empty(&placement.moving_to),
            revision: placement.revision,
        }
    }
}

/// `status -o json`; `member list` prints the same `members`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StatusView {
    pub leader_id: Option<u64>,
    pub leader_name: String,
    pub term: u64,
    pub commit_index: u64,
    pub applied_index: u64,
    pub revision: u64,
    pub responder_id: u64,
    pub members: Vec<MemberView>,
    pub units: Vec<UnitView>,
    pub placements: Vec<PlacementView>,
    pub alarms: Vec<AlarmView>,
}

/// A raised alarm.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AlarmView {
    pub member: String,
    /// `NOSPACE`, or the number of a kind newer than this CLI.
    pub kind: String,
    pub raised_revision: u64,
    pub used_bytes: u64,
    pub quota_bytes: u64,
}

impl From<&pb::Alarm> for AlarmView {
    fn from(alarm: &pb::Alarm) -> Self {
        AlarmView {
            member: alarm.member.clone(),
            kind: match pb::AlarmKind::try_from(alarm.kind) {
                Ok(pb::AlarmKind::Nospace) => "NOSPACE".to_string(),
                _ => alarm.kind.to_string(),
            },
            raised_revision: alarm.raised_revision,
            used_bytes: alarm.used_bytes,
            quota_bytes: alarm.quota_bytes,
        }
    }
}

/// `alarm list` and `alarm disarm`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AlarmListView {
    pub alarms: Vec<AlarmView>,
    pub revision: u64,
    /// Whether these are the alarms just disarmed.
    pub disarmed: bool,
}

impl From<&pb::GetClusterStatusResponse> for StatusView {
    fn from(status: &pb::GetClusterStatusResponse) -> Self {
        StatusView {
            leader_id: status.leader_id,
            leader_name: status.leader_name.clone(),
            term: status.term,
            commit_index: status.commit_index,
            applied_index: status.applied_index,
            revision: status.revision,
            responder_id: status.responder_id,
            members: status.members.iter().map(MemberView::from).collect(),
            units: status.units.iter().map(UnitView::from).collect(),
            placements: status.placements.iter().map(PlacementView::from).collect(),
            alarms: status.alarms.iter().map(AlarmView::from).collect(),
        }
    }
}

/// `member add` and `member promote`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MemberChangeView {
    pub member: Option<MemberView>,
    pub revision: u64,
}

/// `member remove`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MemberRemovedView {
    pub removed: u64,
    pub revision: u64,
}

/// `leader transfer`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LeaderView {
    pub leader_id: u64,
    pub term: u64,
}

/// `drain`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DrainView {
    pub unit: String,
    /// Revision at which the drain mark was committed.
    pub revision: u64,
    /// Profiles on the unit when the drain began.
    pub profiles: Vec<String>,
    /// True when `--wait` saw the unit empty; false without `--wait`.
    pub drained: bool,
    /// How long `--wait` waited; null without it.
    pub waited_ms: Option<u64>,
}

/// `undrain`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UndrainView {
    pub unit: String,
    pub revision: u64,
}

/// `failover`: what was asked (null where not given) and which moves began.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FailoverView {
    pub profile: Option<String>,
    pub from_unit: Option<String>,
    pub to_unit: Option<String>,
    pub revision: u64,
    pub profiles: Vec<String>,
}

/// One line of `watch -o json`: `change` names the kind, and the payload key depends on it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WatchEventView {
    pub revision: u64,
    pub actor: String,
    /// Whom the actor said it acted for (its `x-vnet-actor` header), if it said.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub on_behalf_of: Option<String>,
    #[serde(flatten)]
    pub change: ChangeView,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "change", rename_all = "snake_case")]
pub enum ChangeView {
    ProfilePut {
        profile: ProfileView,
    },
    ProfileDeleted {
        name: String,
    },
    PoolPut {
        pool: PoolView,
    },
    PoolDeleted {
        name: String,
    },
    MemberPut {
        member: MemberView,
    },
    MemberRemoved {
        id: u64,
    },
    /// Placements changed in one decision (a failover, a drain step, a new profile placed).
    /// `presented_unit` is always null here: what units present comes as `presented` events.
    Placements {
        placements: Vec<PlacementView>,
    },
    /// A unit reported what its switch presents now.
    Presented {
        unit: String,
        profiles: Vec<String>,
    },
    /// A unit started (`draining` true) or stopped draining.
    Drain {
        unit: String,
        draining: bool,
    },
    /// A unit's lease was revoked; its failover follows as `placements`.
    LeaseRevoked {
        unit: String,
    },
    /// The voter membership at this log index is settled: failovers may commit under it.
    MembershipSettled {
        log_index: u64,
    },
    Recovered {
        survivor: u64,
        lost: Vec<u64>,
    },
    /// An alarm was raised, or its member reported again.
    AlarmPut {
        alarm: AlarmView,
    },
    AlarmsDisarmed {
        alarms: Vec<AlarmView>,
    },
    /// A principal was given a role (replacing any it had).
    RoleGranted {
        principal: String,
        role: String,
    },
    RoleRevoked {
        principal: String,
    },
    /// An event kind newer than this CLI.
    Unknown,
}

impl From<&pb::WatchEvent> for WatchEventView {
    fn from(event: &pb::WatchEvent) -> Self {
        use pb::watch_event::Change;
        let change = match &event.change {
            Some(Change::ProfilePut(profile)) => ChangeView::ProfilePut {
                profile: profile.into(),
            },
            Some(Change::ProfileDeleted(name)) => ChangeView::ProfileDeleted { name: name.clone() },
            Some(Change::PoolPut(pool)) => ChangeView::PoolPut { pool: pool.into() },
            Some(Change::PoolDeleted(name)) => ChangeView::PoolDeleted { name: name.clone() },
            Some(Change::MemberPut(member)) => ChangeView::MemberPut {
                member: member.into(),
            },
            Some(Change::MemberRemoved(id)) => ChangeView::MemberRemoved { id: *id },
            Some(Change::Placements(changes)) => ChangeView::Placements {
                placements: changes.placements.iter().map(PlacementView::from).collect(),
            },
            Some(Change::Presented(presented)) => ChangeView::Presented {
                unit: presented.unit.clone(),
                profiles: presented.profiles.clone(),
            },
            Some(Change::Drain(drain)) => ChangeView::Drain {
                unit: drain.unit.clone(),
                draining: drain.draining,
            },
            Some(Change::LeaseRevoked(unit)) => ChangeView::LeaseRevoked { unit: unit.clone() },
            Some(Change::MembershipSettled(log_index)) => ChangeView::MembershipSettled {
                log_index: *log_index,
            },
            Some(Change::Recovered(recovered)) => ChangeView::Recovered {
                survivor: recovered.survivor,
                lost: recovered.lost.clone(),
            },
            Some(Change::AlarmPut(alarm)) => ChangeView::AlarmPut {
                alarm: alarm.into(),
            },
            Some(Change::AlarmsDisarmed(disarmed)) => ChangeView::AlarmsDisarmed {
                alarms: disarmed.alarms.iter().map(AlarmView::from).collect(),
            },
            Some(Change::RoleGranted(binding)) => ChangeView::RoleGranted {
                principal: binding.principal.clone(),
                role: access_role_name(binding.role).to_string(),
            },
            Some(Change::RoleRevoked(principal)) => ChangeView::RoleRevoked {
                principal: principal.clone(),
            },
            None => ChangeView::Unknown,
        };
        WatchEventView {
            revision: event.revision,
            actor: event.actor.clone(),
            on_behalf_of: (!event.on_behalf_of.is_empty()).then(|| event.on_behalf_of.clone()),
            change,
        }
    }
}

/// An access role as operators type it; `unspecified` for a value this CLI does not know.
pub fn access_role_name(role: i32) -> &'static str {
    match pb::AccessRole::try_from(role) {
        Ok(pb::AccessRole::Viewer) => "viewer",
        Ok(pb::AccessRole::Operator) => "operator",
        Ok(pb::AccessRole::Admin) => "admin",
        Ok(pb::AccessRole::Unspecified) | Err(_) => "unspecified",
    }
}

/// One concurrency level of `bench`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BenchLevelView {
    pub concurrency: usize,
    pub duration_ms: u64,
    pub ok: u64,
    pub errors: u64,
    pub ops_per_s: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// The first error seen at this level, to tell a slow cluster from a failing one.
    pub first_error: Option<String>,
}

/// `bench -o json`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BenchView {
    pub writes: Vec<BenchLevelView>,
    pub reads: Vec<BenchLevelView>,
}
