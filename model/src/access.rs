//! Who may do what: the replicated map from a principal (the name a client's certificate
//! carries) to its access role, like etcd's users and roles. Kept in the replicated state, so
//! every node answers a caller the same way whichever node it asks, and managed through the log
//! ([`Command::GrantRole`], [`Command::RevokeRole`]) by administrators.
//!
//! The rules `apply` keeps (ARCHITECTURE.md, "Roles and audit"):
//! - a principal has at most one role; granting replaces the role it had;
//! - once the cluster has an administrator it always keeps one: the last `admin` can be neither
//!   revoked nor demoted, so the cluster cannot lock its operators out;
//! - the first administrator comes from configuration ([`Command::BootstrapAdmin`]), which is
//!   refused once any administrator exists, so it can be proposed by any node, at any time, as
//!   often as it likes, and takes effect at most once;
//! - names under the system's prefixes (`system/`, `vnetd/`) are never principals: those actors
//!   are the nodes' own.
//!
//! [`Command::GrantRole`]: crate::Command::GrantRole
//! [`Command::RevokeRole`]: crate::Command::RevokeRole
//! [`Command::BootstrapAdmin`]: crate::Command::BootstrapAdmin

use serde::{Deserialize, Serialize};

use crate::error::Rejection;
use crate::limits::PRINCIPAL_LEN_MAX;

/// What a principal may do; each role may do everything the roles before it may.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AccessRole {
    /// Reads, watch and status.
    Viewer,
    /// A viewer that also changes profiles and moves them: drain, undrain, failover.
    Operator,
    /// An operator that also changes pools, membership, leadership, roles and alarms, and saves
    /// backups.
    Admin,
}

impl AccessRole {
    pub const ALL: [AccessRole; 3] = [AccessRole::Viewer, AccessRole::Operator, AccessRole::Admin];

    /// The name operators type and see.
    pub fn name(self) -> &'static str {
        match self {
            AccessRole::Viewer => "viewer",
            AccessRole::Operator => "operator",
            AccessRole::Admin => "admin",
        }
    }

    /// The role called `name`, if there is one.
    pub fn from_name(name: &str) -> Option<AccessRole> {
        AccessRole::ALL.into_iter().find(|role| role.name() == name)
    }
}

impl std::fmt::Display for AccessRole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Actor prefixes that belong to the nodes themselves (`vnetd/<name>` registering itself,
/// `system/placement`, `system/failover`, `node/<id>` for a node's own certificate): a principal
/// never carries one, so no client can be granted a role under, or write events as, a system
/// actor.
pub const SYSTEM_ACTOR_PREFIXES: [&str; 3] = ["system/", "vnetd/", "node/"];

/// Whether `actor` names the system rather than a person or a client program.
pub fn is_system_actor(actor: &str) -> bool {
    SYSTEM_ACTOR_PREFIXES
        .iter()
        .any(|prefix| actor.starts_with(prefix))
}

/// The rule for a principal's name: 1..=`PRINCIPAL_LEN_MAX` characters, no control characters,
/// no whitespace but single spaces inside (a certificate's Common Name may be a person's name),
/// and not a system actor.
pub fn validate_principal(field: &str, principal: &str) -> Result<(), Rejection> {
    let length = principal.chars().count();
    if length == 0 || length > PRINCIPAL_LEN_MAX {
        return Err(Rejection::invalid(
            field,
            principal,
            format!("must be 1..={PRINCIPAL_LEN_MAX} characters long, not {length}"),
        ));
    }
    if principal
        .chars()
        .any(|c| c.is_control() || (c.is_whitespace() && c != ' '))
        || principal.starts_with(' ')
        || principal.ends_with(' ')
        || principal.contains("  ")
    {
        return Err(Rejection::invalid(
            field,
            principal,
            "must not contain control characters or whitespace other than single spaces \
             between words",
        ));
    }
    if is_system_actor(principal) {
        return Err(Rejection::invalid(
            field,
            principal,
            format!(
                "starts with one of {SYSTEM_ACTOR_PREFIXES:?}, which name the nodes themselves, \
                 never a client"
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_are_ordered_by_what_they_may_do_and_named_both_ways() {
        assert!(AccessRole::Viewer < AccessRole::Operator);
        assert!(AccessRole::Operator < AccessRole::Admin);
        for role in AccessRole::ALL {
            assert_eq!(AccessRole::from_name(role.name()), Some(role));
            let json = serde_json::to_string(&role).expect("encode");
            assert_eq!(json, format!("\"{}\"", role.name()));
        }
        assert_eq!(AccessRole::from_name("root"), None);
    }

    #[test]
    fn principals_follow_one_rule() {
        validate_principal("principal", "alice@example.com").expect("an e-mail style name");
        validate_principal("principal", "CN=ops,O=acme").expect("a distinguished name");
        validate_principal("principal", "Jane Doe").expect("a person's name");
        for (bad, needle) in [
            ("", "1..="),
            (" lead", "whitespace"),
            ("trail ", "whitespace"),
            ("two  spaces", "whitespace"),
            ("tab\there", "whitespace"),
            ("new\nline", "control"),
            ("system/placement", "system/"),
            ("vnetd/unit-a", "vnetd/"),
        ] {
            let err = validate_principal("principal", bad).expect_err(bad);
            assert!(err.to_string().contains(needle), "{bad:?}: {err}");
            assert!(err.to_string().contains("principal"), "{err}");
        }
        let long = "a".repeat(PRINCIPAL_LEN_MAX + 1);
        assert!(validate_principal("principal", &long).is_err());
        validate_principal("principal", &"a".repeat(PRINCIPAL_LEN_MAX)).expect("at the limit");
    }
}
