//! The handlers of the commands about roles: grants, revocations and the bootstrap admin.

use super::State;
use crate::access::AccessRole;
use crate::command::Outcome;
use crate::error::Rejection;
use crate::limits::ROLES_MAX;

impl State {
    pub(super) fn grant_role(
        &mut self,
        principal: &str,
        role: AccessRole,
    ) -> Result<Outcome, Rejection> {
        crate::access::validate_principal("principal", principal)?;
        let previous = self.roles.get(principal).copied();
        if previous == Some(AccessRole::Admin) && role != AccessRole::Admin && self.admins() == 1 {
            return Err(last_admin(principal, &format!("given the role {role}")));
        }
        if previous.is_none() && self.roles.len() >= ROLES_MAX {
            return Err(Rejection::limit("principals with a role", ROLES_MAX));
        }
        self.roles.insert(principal.to_string(), role);
        Ok(Outcome::RoleGranted {
            principal: principal.to_string(),
            role,
            previous,
        })
    }

    pub(super) fn revoke_role(&mut self, principal: &str) -> Result<Outcome, Rejection> {
        crate::access::validate_principal("principal", principal)?;
        let Some(role) = self.roles.get(principal).copied() else {
            return Err(Rejection::not_found("role of principal", principal));
        };
        if role == AccessRole::Admin && self.admins() == 1 {
            return Err(last_admin(principal, "revoked"));
        }
        self.roles.remove(principal);
        Ok(Outcome::RoleRevoked {
            principal: principal.to_string(),
            role,
        })
    }

    pub(super) fn bootstrap_admin(&mut self, principal: &str) -> Result<Outcome, Rejection> {
        crate::access::validate_principal("principal", principal)?;
        if let Some((admin, _)) = self
            .roles
            .iter()
            .find(|(_, role)| **role == AccessRole::Admin)
        {
            return Err(Rejection::FailedPrecondition {
                reason: format!(
                    "the cluster already has an administrator ({admin:?}); a bootstrap admin \
                     is taken only while it has none"
                ),
            });
        }
        self.grant_role(principal, AccessRole::Admin)
    }
}

/// The refusal that keeps the cluster from losing its last administrator.
fn last_admin(principal: &str, what: &str) -> Rejection {
    Rejection::FailedPrecondition {
        reason: format!(
            "{principal:?} is the only admin and cannot be {what}: grant admin to another \
             principal first, so the cluster keeps one"
        ),
    }
}
