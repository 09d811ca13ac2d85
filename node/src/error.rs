//! The errors the node returns to API callers, and their one mapping onto gRPC status codes.
//!
//! Orchestration clients key their handling on the code, so the mapping is part of the public
//! contract (documented in `proto/vnet/v1`) and tested in `tests/api.rs`.

use serde::{Deserialize, Serialize};
use tonic::{Code, Status};
use vnet_model::limits::VALUE_SHOWN_LEN_MAX;
use vnet_model::Rejection;

/// `value` as an error message may echo it: whole if short, else its first
/// `VALUE_SHOWN_LEN_MAX` characters (the model's bound, so the model and the edge cut at the same
/// place), an ellipsis and its full length. A message names the value so an operator can find the
/// fault, but it travels in the `grpc-message` header: a megabyte value echoed whole would make the
/// header too large to send (the client would see a transport error instead of the code) and would
/// fill logs. The one place where the node cuts echoed values; [`ApiError`]'s conversion to a
/// [`Status`] applies it to every field that carries a client's value.
pub fn echoed(value: &str) -> String {
    let mut chars = value.char_indices();
    let Some((cut_at, _)) = chars.nth(VALUE_SHOWN_LEN_MAX) else {
        return value.to_owned();
    };
    let head = &value[..cut_at];
    let length = VALUE_SHOWN_LEN_MAX + 1 + chars.count();
    if length == VALUE_SHOWN_LEN_MAX + 1 && value.ends_with('…') {
        // The model already cut it to its own limit and appended the ellipsis; the full
        // length is no longer known.
        format!("{head}… (more than {VALUE_SHOWN_LEN_MAX} characters)")
    } else {
        format!("{head}… ({length} characters)")
    }
}

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

    /// The same error with every echoed client value cut by [`echoed`].
    pub fn bounded(self) -> Self {
        match self {
            Self::Rejected(rejection) => Self::Rejected(match rejection {
                Rejection::InvalidArgument {
                    field,
                    value,
                    reason,
                } => Rejection::InvalidArgument {
                    field: echoed(&field),
                    value: echoed(&value),
                    reason,
                },
                Rejection::AlreadyExists { kind, name } => Rejection::AlreadyExists {
                    kind,
                    name: echoed(&name),
                },
                Rejection::NotFound { kind, name } => Rejection::NotFound {
                    kind,
                    name: echoed(&name),
                },
                Rejection::IdentityInUse { identity, owner } => Rejection::IdentityInUse {
                    identity: echoed(&identity),
                    owner: echoed(&owner),
                },
                Rejection::RevisionMismatch {
                    name,
                    expected,
                    actual,
                } => Rejection::RevisionMismatch {
                    name: echoed(&name),
                    expected,
                    actual,
                },
                Rejection::PoolExhausted { pool } => Rejection::PoolExhausted {
                    pool: echoed(&pool),
                },
                Rejection::NoPool { kind, field } => Rejection::NoPool {
                    kind,
                    field: echoed(&field),
                },
                other => other,
            }),
            Self::MemberExists { id, name } => Self::MemberExists {
                id,
                name: echoed(&name),
            },
            other => other,
        }
    }

    pub fn code(&self) -> Code {
        match self {
            Self::Rejected(rejection) => match rejection {
                Rejection::InvalidArgument { .. } => Code::InvalidArgument,
                Rejection::AlreadyExists { .. }
                | Rejection::IdentityInUse { .. }
                | Rejection::RangeOverlaps { .. } => Code::AlreadyExists,
                Rejection::NotFound { .. } => Code::NotFound,
                Rejection::RevisionMismatch { .. } => Code::Aborted,
                Rejection::PoolExhausted { .. }
                | Rejection::NoPool { .. }
                | Rejection::LimitExceeded { .. } => Code::ResourceExhausted,
                Rejection::FailedPrecondition { .. } => Code::FailedPrecondition,
                Rejection::AlarmRaised { .. } => Code::ResourceExhausted,
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
        let error = error.bounded();
        Status::new(error.code(), error.to_string())
    }
}

impl From<Rejection> for ApiError {
    fn from(rejection: Rejection) -> Self {
        Self::Rejected(rejection)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_values_are_echoed_whole() {
        let longest = "a".repeat(VALUE_SHOWN_LEN_MAX);
        assert_eq!(echoed(""), "");
        assert_eq!(echoed("web-01"), "web-01");
        assert_eq!(echoed(&longest), longest);
    }

    #[test]
    fn long_values_are_cut_with_their_length() {
        let value = format!(
            "{}{}",
            "é".repeat(VALUE_SHOWN_LEN_MAX),
            "x".repeat(3_000_000)
        );
        let shown = echoed(&value);
        assert_eq!(
            shown,
            format!(
                "{}… ({} characters)",
                "é".repeat(VALUE_SHOWN_LEN_MAX),
                VALUE_SHOWN_LEN_MAX + 3_000_000
            )
        );
    }

    #[test]
    fn a_value_the_model_already_cut_says_so() {
        let cut = format!("{}…", "a".repeat(VALUE_SHOWN_LEN_MAX));
        assert_eq!(
            echoed(&cut),
            format!(
                "{}… (more than {VALUE_SHOWN_LEN_MAX} characters)",
                "a".repeat(VALUE_SHOWN_LEN_MAX)
            )
        );
    }

    /// Every code that echoes a client's value keeps `grpc-message` short.
    #[test]
    fn no_status_echoes_a_huge_value() {
        let huge = "n".repeat(3_000_000);
        let errors = [
            ApiError::invalid("page_token", &huge, "not a token this server issued"),
            ApiError::invalid(&huge, "v", "a field path built from a client's key"),
            Rejection::NotFound {
                kind: "profile".into(),
                name: huge.clone(),
            }
            .into(),
            Rejection::AlreadyExists {
                kind: "profile".into(),
                name: huge.clone(),
            }
            .into(),
            Rejection::RevisionMismatch {
                name: huge.clone(),
                expected: 1,
                actual: 2,
            }
            .into(),
            ApiError::MemberExists {
                id: 1,
                name: huge.clone(),
            },
        ];
        for error in errors {
            let code = error.code();
            let status = Status::from(error);
            assert_eq!(status.code(), code);
            assert!(
                status.message().len() < 400,
                "{code:?}: a {} byte message",
                status.message().len()
            );
            assert!(
                status.message().contains("(3000000 characters)"),
                "{code:?}: {}",
                status.message()
            );
        }
    }
}
