//! What a run records: every client operation with its invocation and completion, in the
//! harness's own terms (no wire types), so the checkers are pure functions over plain data and
//! their tests can write histories by hand.
//!
//! Times are CLOCK_MONOTONIC nanoseconds ([`monotonic_now_ns`]). Every network namespace of the
//! machine shares that clock, so client histories, the fault log and (later) switch journals can
//! be merged on one time line.

use serde::{Deserialize, Serialize};

/// CLOCK_MONOTONIC in nanoseconds: the time base of histories, fault logs and switch journals,
/// read as the switches read it.
pub use fabric_agent::monotonic_now_ns;

/// A virtual NIC as the checkers compare it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Nic {
    pub name: String,
    pub mac: String,
    pub network: String,
    pub vlan: u32,
}

/// A virtual HBA as the checkers compare it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Hba {
    pub name: String,
    pub wwpn: String,
    pub wwnn: String,
    pub fabric: String,
}

/// The content of a profile that a write sets and a read observes (everything but its name and
/// revisions).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ProfileValue {
    pub server: String,
    pub vnics: Vec<Nic>,
    pub vhbas: Vec<Hba>,
}

/// What a client asked for, on the profile named by [`Operation::key`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Call {
    Create {
        value: ProfileValue,
    },
    /// `expected_revision` 0 means unconditional, as in the API.
    Update {
        value: ProfileValue,
        expected_revision: u64,
    },
    Delete {
        expected_revision: u64,
    },
    /// A linearizable read.
    Get,
}

impl Call {
    pub fn is_write(&self) -> bool {
        !matches!(self, Call::Get)
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Call::Create { .. } => "create",
            Call::Update { .. } => "update",
            Call::Delete { .. } => "delete",
            Call::Get => "get",
        }
    }
}

/// How an operation ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// Create or update applied; the profile now has `revision`. A create's `created_revision`
    /// is the same revision.
    Written { revision: u64 },
    /// Delete applied at `revision`.
    Deleted { revision: u64 },
    /// Get found the profile. `read_revision` is the cluster revision the answer reflects.
    Found {
        value: ProfileValue,
        revision: u64,
        created_revision: u64,
        read_revision: u64,
    },
    /// The profile does not exist (get, update or delete).
    NotFound,
    /// Create of a name in use.
    AlreadyExists,
    /// `expected_revision` did not match.
    RevisionMismatch,
    /// Definitely not applied: no leader (UNAVAILABLE from vnetd), or the connection could not
    /// be opened, so the request never left the client.
    Failed { reason: String },
    /// May or may not have been applied: a timeout, a broken connection after sending, or any
    /// answer the client cannot interpret.
    Indeterminate { reason: String },
}

impl Outcome {
    /// An answer the model must explain (as opposed to "nothing happened" or "unknown").
    pub fn is_definite(&self) -> bool {
        !matches!(self, Outcome::Failed { .. } | Outcome::Indeterminate { .. })
    }

    pub fn class(&self) -> OutcomeClass {
        match self {
            Outcome::Failed { .. } => OutcomeClass::Failed,
            Outcome::Indeterminate { .. } => OutcomeClass::Indeterminate,
            _ => OutcomeClass::Ok,
        }
    }
}

/// The three ways a report counts operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum OutcomeClass {
    /// Answered (applied, or refused by the model: both are definite).
    Ok,
    /// Definitely not applied.
    Failed,
    /// Unknown.
    Indeterminate,
}

/// One client operation, from invocation to completion.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Operation {
    /// Unique in the run; also the order of invocation within a client.
    pub id: u64,
    /// Which client issued it (one client has at most one operation in flight).
    pub client: u32,
    /// The profile name.
    pub key: String,
    pub call: Call,
    /// Which vnetd API address it was sent to.
    pub endpoint: String,
    pub invoked_ns: u64,
    /// When the answer (or the timeout) came back. For an indeterminate operation the effect
    /// may happen at any later time, so checkers treat it as never completing.
    pub completed_ns: u64,
    pub outcome: Outcome,
}

/// The whole recorded history of a run, in no particular order.
pub type History = Vec<Operation>;
