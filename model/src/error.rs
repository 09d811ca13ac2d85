//! Why a command was refused. Each variant is a condition a caller may handle (the API edge maps
//! them to gRPC status codes), and each message is a sentence an operator can act on: it names
//! the field and the value at fault.

use serde::{Deserialize, Serialize};

use crate::identity::{shown, IdentityError, IdentityKind};
use crate::Revision;

/// A command the state machine refused. Refusing leaves the state exactly as it was.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum Rejection {
    /// `field` is a path into the request, like `vnics[1].vlan`.
    #[error("invalid {field} {value:?}: {reason}")]
    InvalidArgument {
        field: String,
        value: String,
        reason: String,
    },
    #[error("{kind} {name:?} already exists")]
    AlreadyExists { kind: String, name: String },
    /// An explicitly requested MAC or WWN (`identity`, in canonical form) is already held by
    /// profile `owner`.
    #[error("identity {identity} is already held by profile {owner:?}")]
    IdentityInUse { identity: String, owner: String },
    /// A new pool's `range` overlaps the range of `pool`, an existing pool of the same kind: the
    /// identities already exist in another pool (pool.proto: `ALREADY_EXISTS`).
    #[error("range {range} overlaps pool {pool:?} ({pool_range})")]
    RangeOverlaps {
        range: String,
        pool: String,
        pool_range: String,
    },
    #[error("{kind} {name:?} does not exist")]
    NotFound { kind: String, name: String },
    #[error(
        "profile {name:?} is at revision {actual}, not at the expected revision {expected}; \
         read it again and retry"
    )]
    RevisionMismatch {
        name: String,
        expected: Revision,
        actual: Revision,
    },
    /// The named pool has no free identity left.
    #[error("pool {pool:?} has no free identity left")]
    PoolExhausted { pool: String },
    /// An identity had to be allocated without a named pool, and no pool of that kind has room.
    #[error("no {kind} pool has a free identity to allocate for {field}")]
    NoPool { kind: IdentityKind, field: String },
    #[error("too many {what}: the limit is {limit}")]
    LimitExceeded { what: String, limit: u64 },
    #[error("{reason}")]
    FailedPrecondition { reason: String },
    /// A command that adds data, refused while the alarm named is raised.
    #[error(
        "alarm {alarm} is raised ({reason}): writes that add data are refused until it is \
         disarmed; free space on that member, then run `vnetctl alarm disarm`"
    )]
    AlarmRaised { alarm: String, reason: String },
}

impl Rejection {
    /// `value` is cut to `VALUE_SHOWN_LEN_MAX` characters.
    pub(crate) fn invalid(
        field: impl Into<String>,
        value: &str,
        reason: impl Into<String>,
    ) -> Rejection {
        Rejection::InvalidArgument {
            field: field.into(),
            value: shown(value),
            reason: reason.into(),
        }
    }

    pub(crate) fn limit(what: &str, limit: usize) -> Rejection {
        Rejection::LimitExceeded {
            what: what.to_owned(),
            // usize is at most 64 bits on every target Rust supports, so this never saturates.
            limit: u64::try_from(limit).unwrap_or(u64::MAX),
        }
    }

    /// `name` is cut to `VALUE_SHOWN_LEN_MAX` characters, like every echoed value.
    pub(crate) fn not_found(kind: &str, name: impl Into<String>) -> Rejection {
        Rejection::NotFound {
            kind: kind.to_owned(),
            name: shown(&name.into()),
        }
    }

    /// `name` is cut to `VALUE_SHOWN_LEN_MAX` characters, like every echoed value.
    pub(crate) fn already_exists(kind: &str, name: &str) -> Rejection {
        Rejection::AlreadyExists {
            kind: kind.to_owned(),
            name: shown(name),
        }
    }

    /// Places an identity parsing error at a field of a request.
    pub fn from_identity(field: impl Into<String>, error: IdentityError) -> Rejection {
        Rejection::InvalidArgument {
            field: field.into(),
            value: error.value,
            reason: error.reason,
        }
    }
}

/// `events_since` was asked for events the bounded history has already dropped; the caller must
/// resynchronise from a full read (or a snapshot) instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("events before revision {oldest_available} are no longer retained")]
pub struct HistoryTruncated {
    pub oldest_available: Revision,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_field_and_value() {
        let cases = [
            (
                Rejection::invalid("vnics[1].vlan", "5000", "must be between 1 and 4094"),
                "invalid vnics[1].vlan \"5000\": must be between 1 and 4094",
            ),
            (
                Rejection::already_exists("profile", "web-1"),
                "profile \"web-1\" already exists",
            ),
            (
                Rejection::IdentityInUse {
                    identity: "02:00:00:00:00:01".into(),
                    owner: "web-1".into(),
                },
                "identity 02:00:00:00:00:01 is already held by profile \"web-1\"",
            ),
            (
                Rejection::not_found("pool", "macs"),
                "pool \"macs\" does not exist",
            ),
            (
                Rejection::RevisionMismatch {
                    name: "web-1".into(),
                    expected: 3,
                    actual: 7,
                },
                "profile \"web-1\" is at revision 7, not at the expected revision 3; \
                 read it again and retry",
            ),
            (
                Rejection::PoolExhausted {
                    pool: "macs".into(),
                },
                "pool \"macs\" has no free identity left",
            ),
            (
                Rejection::NoPool {
                    kind: IdentityKind::Wwn,
                    field: "vhbas[0].wwpn".into(),
                },
                "no WWN pool has a free identity to allocate for vhbas[0].wwpn",
            ),
            (
                Rejection::limit("profiles", 4096),
                "too many profiles: the limit is 4096",
            ),
        ];
        for (rejection, message) in cases {
            assert_eq!(rejection.to_string(), message);
        }
    }

    #[test]
    fn identity_errors_keep_value_and_reason() {
        let error = "ff:ff:ff:ff:ff:ff"
            .parse::<crate::Mac>()
            .expect_err("broadcast");
        let rejection = Rejection::from_identity("vnics[0].mac", error);
        assert_eq!(
            rejection.to_string(),
            "invalid vnics[0].mac \"ff:ff:ff:ff:ff:ff\": is the broadcast address"
        );
    }

    /// Every variant built from a caller's value cuts it to `VALUE_SHOWN_LEN_MAX` characters, so
    /// a refused megabyte name never travels whole through an outcome, a log line or a status.
    #[test]
    fn echoed_names_are_cut() {
        use crate::limits::VALUE_SHOWN_LEN_MAX;
        let huge = "\u{1}".repeat(4_000_000);
        for rejection in [
            Rejection::not_found("profile", huge.clone()),
            Rejection::already_exists("pool", &huge),
            Rejection::invalid("name", &huge, "is too long"),
        ] {
            let value = match &rejection {
                Rejection::NotFound { name, .. } | Rejection::AlreadyExists { name, .. } => name,
                Rejection::InvalidArgument { value, .. } => value,
                other => panic!("unexpected {other:?}"),
            };
            assert_eq!(
                value.chars().count(),
                VALUE_SHOWN_LEN_MAX + 1,
                "{rejection:?}"
            );
            assert!(value.ends_with('…'));
        }
    }
}
