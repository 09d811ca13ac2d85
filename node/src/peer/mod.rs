//! Peer traffic: the Raft transport and the leader-directed requests between `vnetd` nodes.
//!
//! - [`client`]: outgoing calls — openraft's `RaftNetwork` over tonic, and forwarding to the
//!   leader.
//! - [`service`]: the `vnet.raft.v1.RaftPeer` server that answers them.
//! - [`chunks`]: the bounds an incoming snapshot chunk is checked against.
//! - [`indexes`]: the bounds every log index from a peer is checked against.
//!
//! Messages travel as JSON inside [`RaftMessage`]: openraft's own types derive serde, and a
//! self-describing encoding lets a receiver name exactly what it could not read. Every decode of
//! a peer message is checked, and a bad one is answered with `INVALID_ARGUMENT`, never a panic.

pub mod chunks;
pub mod client;
pub mod indexes;
pub mod service;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use vnet_model::{Outcome, Request, Role};
use vnet_proto::vnet::raft::v1::RaftMessage;

use raft_store::{NodeId, PeerNode};

use crate::error::ApiError;
use crate::node::ClusterStatus;

/// The only payload encoding this build reads and writes.
pub const FORMAT: &str = "json/1";

pub fn encode<T: Serialize>(value: &T) -> RaftMessage {
    RaftMessage {
        format: FORMAT.to_string(),
        // Serializing our own types to JSON cannot fail: they have string keys and no
        // non-serializable fields. Should that ever change, an empty payload is refused by the
        // receiver with a clear error rather than crashing this node.
        payload: serde_json::to_vec(value).unwrap_or_default(),
        data: Vec::new(),
    }
}

pub fn decode<T: DeserializeOwned>(message: &RaftMessage, what: &str) -> Result<T, tonic::Status> {
    if message.format != FORMAT {
        return Err(tonic::Status::invalid_argument(format!(
            "peer message {what}: format {:?} is not supported (expected {FORMAT:?})",
            crate::error::echoed(&message.format)
        )));
    }
    serde_json::from_slice(&message.payload).map_err(|e| {
        // serde's message may quote the offending value whole (a string where a number belongs).
        tonic::Status::invalid_argument(format!(
            "peer message {what}: payload is not valid: {}",
            crate::error::echoed(&e.to_string())
        ))
    })
}

/// Bytes `value` takes in JSON, the encoding of log entries and of peer payloads, counted without
/// building the encoding.
pub fn encoded_len<T: Serialize>(value: &T) -> usize {
    struct Counter(usize);
    impl std::io::Write for Counter {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0 = self.0.saturating_add(bytes.len());
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut counter = Counter(0);
    // As in `encode`: our types always serialize; a failure would count short and be caught by
    // the receiver's decode.
    let _ = serde_json::to_writer(&mut counter, value);
    counter.0
}

/// Refuses a command whose log entry would be larger than `ENTRY_BYTES_MAX`, naming its size.
/// Run on the leader before every proposal (local, forwarded or the system's own) and on a
/// follower before forwarding, so an oversize entry never reaches the log or the peer port.
/// Answers the request's encoded size.
pub fn check_entry_size(request: &Request) -> Result<usize, ApiError> {
    use vnet_model::limits::ENTRY_BYTES_MAX;
    let size = encoded_len(request);
    if size > ENTRY_BYTES_MAX {
        return Err(ApiError::invalid(
            "request",
            format!("<{size} bytes>"),
            format!(
                "encodes to {size} bytes, more than the limit of {ENTRY_BYTES_MAX} bytes for one \
                 log entry"
            ),
        ));
    }
    Ok(size)
}

/// Who a leader request is made by: the actor the edge authenticated (ARCHITECTURE.md, "Roles
/// and audit") and the client's "on behalf of" note. A leader trusts it because only an
/// authenticated member can forward; absent from requests of nodes older than roles, and then
/// the leader writes as the system, as they did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct By {
    pub actor: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_behalf_of: Option<String>,
}

/// What a follower asks of the leader.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum LeaderRequest {
    /// Propose a model change.
    Write(Request),
    /// Confirm leadership with a quorum and say up to which log index a reader must have applied
    /// to observe every write acknowledged before this request was sent.
    ReadIndex,
    /// Add a node as a learner, wait for it to catch up, and record it as a member.
    AddLearner {
        id: NodeId,
        node: PeerNode,
        api_addr: String,
        role: Role,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        by: Option<By>,
    },
    /// Make a caught-up learner a voter.
    Promote { id: NodeId },
    /// Remove a node from the Raft membership and from the member records.
    Remove {
        id: NodeId,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        by: Option<By>,
    },
    /// Hand leadership to `to`.
    TransferLeader { to: NodeId },
    /// The cluster as the leader sees it (replication progress, last contact).
    Status,
    /// A planned move: one profile to `to`, or every profile off `from` (to `to`, or wherever
    /// the controller would place each).
    Failover {
        profile: Option<String>,
        from: Option<String>,
        to: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        by: Option<By>,
    },
}

impl LeaderRequest {
    /// What kind of request this is, for span and log fields (never its content).
    pub fn kind(&self) -> &'static str {
        match self {
            LeaderRequest::Write(_) => "write",
            LeaderRequest::ReadIndex => "read_index",
            LeaderRequest::AddLearner { .. } => "add_learner",
            LeaderRequest::Promote { .. } => "promote",
            LeaderRequest::Remove { .. } => "remove",
            LeaderRequest::TransferLeader { .. } => "transfer_leader",
            LeaderRequest::Status => "status",
            LeaderRequest::Failover { .. } => "failover",
        }
    }
}

/// The leader's answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum LeaderReply {
    /// The model's outcome and the revision (log index) it was applied at.
    Applied {
        outcome: Outcome,
        revision: u64,
    },
    ReadIndex {
        index: u64,
    },
    MembershipChanged {
        log_index: u64,
        /// The cluster revision once the change took effect (see `AddMemberResponse` in
        /// cluster.proto); absent from leaders older than it, whose callers fall back to
        /// `log_index`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        revision: Option<u64>,
    },
    Transferred {
        leader: NodeId,
        term: u64,
    },
    Status(Box<ClusterStatus>),
    FailoverStarted {
        revision: u64,
        profiles: Vec<String>,
    },
}

pub type LeaderResult = Result<LeaderReply, ApiError>;

/// What a node says of itself when probed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProbeReply {
    pub id: NodeId,
    pub initialized: bool,
    pub last_log_index: Option<u64>,
}

/// A unit's renewal, as sent to a voter.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LeaseRenewal {
    pub unit: String,
}

/// Longest hold or campaign a peer may ask of this node. A leader transfer asks for four maximum
/// election timeouts (2.4 s by default); ten minutes leaves room for any sane Raft timing while
/// keeping a confused or hostile peer from silencing a voter's elections indefinitely, and keeps
/// `Instant` arithmetic on the value far from overflow (which would panic).
pub const PEER_DURATION_MS_MAX: u64 = 600_000;

/// Longest this node holds back its elections, or campaigns, for one election control, in its
/// own longest election timeouts (6 s by default). A transfer asks for four; the bound keeps a
/// peer that asked for a long hold and then died (or a confused one) from leaving the voters
/// unable to elect anyone for up to `PEER_DURATION_MS_MAX`, which is only the limit past which
/// the request is refused as malformed.
pub const ELECTION_CONTROL_TIMEOUTS_MAX: u64 = 10;

/// Election control, for leader transfer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ElectionControl {
    /// Start an election now and keep trying until `deadline_ms` passes or this node leads.
    Campaign { deadline_ms: u64 },
    /// Do not start elections of your own for `duration_ms` (voting is unaffected), so that the
    /// transfer target is the only candidate.
    Hold { duration_ms: u64 },
}

impl ElectionControl {
    /// How long the hold or campaign lasts, refused past [`PEER_DURATION_MS_MAX`] with a message
    /// naming the field. Every duration from a peer goes through here before any arithmetic.
    pub fn duration(&self) -> Result<std::time::Duration, String> {
        let (field, ms) = match *self {
            Self::Campaign { deadline_ms } => ("deadline_ms", deadline_ms),
            Self::Hold { duration_ms } => ("duration_ms", duration_ms),
        };
        if ms > PEER_DURATION_MS_MAX {
            return Err(format!(
                "election control {field} {ms} is more than the limit of {PEER_DURATION_MS_MAX} ms"
            ));
        }
        Ok(std::time::Duration::from_millis(ms))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_payload_error_does_not_quote_the_payload_whole() {
        let payload = format!(
            r#"{{"Hold":{{"duration_ms":"{}"}}}}"#,
            "x".repeat(1_000_000)
        );
        let message = RaftMessage {
            format: FORMAT.to_string(),
            payload: payload.into_bytes(),
            data: Vec::new(),
        };
        let refused = decode::<ElectionControl>(&message, "trigger-election").expect_err("refused");
        assert_eq!(refused.code(), tonic::Code::InvalidArgument);
        assert!(
            refused.message().len() < 400,
            "a {} byte message",
            refused.message().len()
        );
    }

    #[test]
    fn election_control_durations_are_capped() {
        for control in [
            ElectionControl::Campaign {
                deadline_ms: PEER_DURATION_MS_MAX,
            },
            ElectionControl::Hold {
                duration_ms: PEER_DURATION_MS_MAX,
            },
        ] {
            assert_eq!(
                control.duration(),
                Ok(std::time::Duration::from_millis(PEER_DURATION_MS_MAX))
            );
        }
        for (control, field) in [
            (
                ElectionControl::Campaign {
                    deadline_ms: u64::MAX,
                },
                "deadline_ms",
            ),
            (
                ElectionControl::Hold {
                    duration_ms: PEER_DURATION_MS_MAX + 1,
                },
                "duration_ms",
            ),
        ] {
            let refused = control.duration().expect_err("refused");
            assert!(refused.contains(field), "{refused}");
        }
    }
}
