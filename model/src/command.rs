//! What a client asks the state machine to do, and what it answers when it does it. Requests are
//! the payload of Raft log entries, so their serde encoding is durable: change it compatibly.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::access::AccessRole;
use crate::alarm::{Alarm, AlarmKind};
use crate::member::Member;
use crate::placement::PlacementChange;
use crate::pool::{Pool, PoolSpec};
use crate::profile::{Profile, ProfileSpec};
use crate::Revision;

/// One command and who asked for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    /// The client identity, recorded with the resulting change for audit.
    pub actor: String,
    pub command: Command,
    /// The W3C `traceparent` of the span that proposed this request, if it was traced: every node
    /// applies the entry, so work a node does because of it (a unit presenting a profile failed
    /// over to it) joins the same trace. Observability only; never read by the state machine's
    /// decisions. Absent in entries written before it existed, and then `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace: Option<String>,
    /// Whom the actor says it acts for (a client's `x-vnet-actor` note), recorded beside the
    /// actor and never instead of it: the actor is always the authenticated principal or the
    /// system (ARCHITECTURE.md, "Roles and audit"). Absent in entries written before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_behalf_of: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    CreatePool(PoolSpec),
    /// Refused while any profile holds an identity from the pool's range.
    DeletePool {
        name: String,
    },
    CreateProfile(ProfileSpec),
    /// Replaces the profile named `spec.name`. Identities left out keep their value when a vNIC
    /// (or vHBA) of the same name had one, and are allocated otherwise.
    UpdateProfile {
        spec: ProfileSpec,
        expected_revision: Option<Revision>,
    },
    DeleteProfile {
        name: String,
        expected_revision: Option<Revision>,
    },
    /// Inserts or replaces the member with this id (a node registers or refreshes itself).
    PutMember(Member),
    RemoveMember {
        id: u64,
    },
    /// Placement decisions, applied all or none.
    Place {
        changes: Vec<PlacementChange>,
    },
    /// What a unit's switch presents now, profile name to profile revision. Replaces the unit's
    /// previous report.
    ReportPresented {
        unit: String,
        profiles: BTreeMap<String, Revision>,
        /// The revision of the state the agent acted on when it made this report (nodes older
        /// than batched entries sent its log index, which was then never below its revision).
        /// A planned move off the unit completes only on a report at or after the move's
        /// revision: an earlier "not presenting" (say, right after a fence) says nothing about
        /// whether the unit, not yet knowing of the move, will program the profile again.
        #[serde(default)]
        as_of: Revision,
    },
    /// Start (or stop) draining a unit: a draining unit is given no profile.
    SetDrain {
        unit: String,
        draining: bool,
    },
    /// Revoke a unit's lease: from the moment a voter applies this, it grants the unit nothing
    /// until the matching [`Command::FailOver`] (ARCHITECTURE.md, "Leases held by a quorum").
    /// The revocation's epoch is the revision it is applied at.
    RevokeLease {
        unit: String,
    },
    /// Records that the voter membership whose Raft log entry is at `log_index` has been
    /// committed, and the only one in effect, for longer than a lease: grants made under any
    /// earlier membership have all ended. A failover is committed only under a settled
    /// membership (ARCHITECTURE.md, "Leases held by a quorum").
    SettleMembership {
        log_index: u64,
    },
    /// Records a recovery without a quorum: `survivor` was made the only voter from its own
    /// data, and the operator confirmed each of `lost` powered off or cut off. Their member
    /// records go, and their ids are remembered as removed: a node under one of them is refused
    /// by every member ever after, so a lost member comes back only under a new id
    /// (ARCHITECTURE.md, "Operating through bad days").
    Recover {
        survivor: u64,
        lost: std::collections::BTreeSet<u64>,
    },
    /// Move profiles off a unit whose lease was revoked at `epoch`, once a majority of voters
    /// attested that their grants to it have lapsed. Ends the revocation once the unit holds
    /// nothing: a failover of many profiles is committed as several of these, each small enough
    /// to replicate promptly, and the last ends it. Refused unless the revocation in force for
    /// `unit` is the one at `epoch`, so a late duplicate changes nothing.
    FailOver {
        unit: String,
        epoch: Revision,
        changes: Vec<PlacementChange>,
    },
    /// How many bytes `member`'s data directory uses, against its quota. Sent by the member when
    /// it crosses the quota either way: past it raises (or updates) the member's `NOSPACE` alarm;
    /// within it updates the alarm's report, so that the alarm may be disarmed. Refused when
    /// within the quota and no alarm is raised (nothing to update).
    ReportSpace {
        member: String,
        used_bytes: u64,
        quota_bytes: u64,
    },
    /// Disarms the alarms of `member` (every member's if `None`) of `kind` (every kind if
    /// `None`). Refused, disarming nothing, while any of them is past its quota by its member's
    /// last report.
    DisarmAlarm {
        member: Option<String>,
        kind: Option<AlarmKind>,
    },
    /// Gives `principal` the role `role`, replacing any role it had. Refused when it would
    /// demote the last administrator.
    GrantRole {
        principal: String,
        role: AccessRole,
    },
    /// Takes away `principal`'s role. Refused for the last administrator.
    RevokeRole {
        principal: String,
    },
    /// Makes `principal` the first administrator, from a node's `--bootstrap-admin`. Refused
    /// once any administrator exists, so it takes effect at most once whoever proposes it.
    BootstrapAdmin {
        principal: String,
    },
    /// Several client requests committed as one log entry, each applied in order as if it were
    /// its own entry, each with its own revision and its own result (`apply_entry`). Only the
    /// leader forms batches, from requests it was asked to write; a batch inside a batch is
    /// refused. Written only once every member applies batches (`Member::protocol`).
    Batch(Vec<Request>),
}

impl Command {
    /// Whether this command adds data to the state, and so is refused while a `NOSPACE` alarm is
    /// raised. Deletions, and everything the system writes to keep presenting (leases,
    /// placement, failover, reports, membership), are not: a full disk must not stop a failover.
    pub fn adds_data(&self) -> bool {
        matches!(
            self,
            Command::CreatePool(_) | Command::CreateProfile(_) | Command::UpdateProfile { .. }
        )
    }
}

/// The result of an accepted command: the object as it now stands, or what was removed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    Pool(Pool),
    PoolDeleted {
        name: String,
    },
    Profile(std::sync::Arc<Profile>),
    ProfileDeleted {
        name: String,
    },
    Member(Member),
    MemberRemoved {
        id: u64,
    },
    Placed {
        profiles: Vec<String>,
    },
    Presented {
        unit: String,
    },
    Drain {
        unit: String,
        draining: bool,
    },
    LeaseRevoked {
        unit: String,
        epoch: Revision,
    },
    MembershipSettled {
        log_index: u64,
    },
    FailedOver {
        unit: String,
        profiles: Vec<String>,
    },
    Recovered {
        survivor: u64,
        lost: Vec<u64>,
    },
    /// The member's alarm as it now stands.
    AlarmReported {
        alarm: Alarm,
    },
    AlarmsDisarmed {
        alarms: Vec<Alarm>,
    },
    /// `principal` now holds `role`; `previous` is the role it held before, if any.
    RoleGranted {
        principal: String,
        role: AccessRole,
        previous: Option<AccessRole>,
    },
    /// `principal` no longer holds `role`.
    RoleRevoked {
        principal: String,
        role: AccessRole,
    },
}
