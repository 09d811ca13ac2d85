//! The errors the node returns to API callers, and their one mapping onto gRPC status codes.
//!
//! Orchestration clients key their handling on the code, so the mapping is part of the public
//! contract (documented in `proto/vnet/v1`) and tested in `tests/api.rs`.

use serde::{Deserialize, Serialize};
use tonic::{Code, Status};
use vnet_model::Rejection;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum ApiError {
    /// The model refused the change (bad field, duplicate, missing, revision mismatch, ...).
    #[error(transparent)]
    Rejected(Rejection),
    /// No leader could be reached, so nothing was done. Safe to retry.
    #[error("no leader is reachable: {reason}")]
    Unavailable { reason: String },
    /// The request was sent toward the leader but no outcome came back in time: it may or may
    /// not have been applied. Read back before retrying a non-idempotent change.
    #[error("outcome unknown: {reason}; the change may or may not have been applied")]
    Indeterminate { reason: String },
    /// The request makes no sense in the cluster's current shape (promote a voter, transfer to a
    /// learner, ...).
    #[error("{reason}")]
    FailedPrecondition { reason: String },
    /// A member id that the cluster does not know.
    #[error("member {id} is not in the cluster")]
    MemberNotFound { id: u64 },
    /// A member id already in use.
    #[error("member id {id} is already in the cluster (as {name:?})")]
    MemberExists { id: u64, name: String },
    /// The asked node is the leader no longer; the caller retries toward the new one.
    #[error("this node is not the leader (leader hint: {leader:?})")]
    NotLeader { leader: Option<u64> },
    /// A bug or a broken invariant on the server.
    #[error("internal error: {reason}")]
    Internal { reason: String },
}

impl ApiError {
    pub fn invalid(field: &str, value: impl std::fmt::Display, reason: impl Into<String>) -> Self {
        Self::Rejected(Rejection::InvalidArgument {
            field: field.to_string(),
            value: value.to_string(),
            reason: reason.into(),
        })
    }

    pub fn code(&self) -> Code {
        match self {
            Self::Rejected(rejection) => match rejection {
                Rejection::InvalidArgument { .. } => Code::InvalidArgument,
                Rejection::AlreadyExists { .. } | Rejection::IdentityInUse { .. } => {
                    Code::AlreadyExists
                }
                Rejection::NotFound { .. } => Code::NotFound,
                Rejection::RevisionMismatch { .. } => Code::Aborted,
                Rejection::PoolExhausted { .. }
                | Rejection::NoPool { .. }
                | Rejection::LimitExceeded { .. } => Code::ResourceExhausted,
                Rejection::FailedPrecondition { .. } => Code::FailedPrecondition,
            },
            Self::Unavailable { .. } | Self::NotLeader { .. } => Code::Unavailable,
            Self::Indeterminate { .. } => Code::DeadlineExceeded,
            Self::FailedPrecondition { .. } => Code::FailedPrecondition,
            Self::MemberNotFound { .. } => Code::NotFound,
            Self::MemberExists { .. } => Code::AlreadyExists,
            Self::Internal { .. } => Code::Internal,
        }
    }
}

impl From<ApiError> for Status {
    fn from(error: ApiError) -> Self {
        Status::new(error.code(), error.to_string())
    }
}

impl From<Rejection> for ApiError {
    fn from(rejection: Rejection) -> Self {
        Self::Rejected(rejection)
    }
}
