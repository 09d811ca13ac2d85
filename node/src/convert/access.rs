//! Roles and audit records between the model and `auth` and the wire (`vnet.v1` in
//! `access.proto`).

use vnet_model::AccessRole;
use vnet_proto::vnet::v1 as pb;

use crate::auth::audit::AuditRecord;
use crate::error::ApiError;

pub fn role_to_wire(role: AccessRole) -> pb::AccessRole {
    match role {
        AccessRole::Viewer => pb::AccessRole::Viewer,
        AccessRole::Operator => pb::AccessRole::Operator,
        AccessRole::Admin => pb::AccessRole::Admin,
    }
}

/// A role the client must name: unspecified and unknown values are refused.
pub fn role_from_wire(field: &str, value: i32) -> Result<AccessRole, ApiError> {
    match pb::AccessRole::try_from(value) {
        Ok(pb::AccessRole::Viewer) => Ok(AccessRole::Viewer),
        Ok(pb::AccessRole::Operator) => Ok(AccessRole::Operator),
        Ok(pb::AccessRole::Admin) => Ok(AccessRole::Admin),
        Ok(pb::AccessRole::Unspecified) => Err(ApiError::invalid(
            field,
            value,
            "is required: viewer, operator or admin",
        )),
        Err(_) => Err(ApiError::invalid(field, value, "not an AccessRole value")),
    }
}

pub fn binding_to_wire(principal: &str, role: AccessRole) -> pb::RoleBinding {
    pb::RoleBinding {
        principal: principal.to_string(),
        role: role_to_wire(role) as i32,
    }
}

pub fn record_to_wire(record: AuditRecord) -> pb::AuditRecord {
    pb::AuditRecord {
        time_unix_ms: record.time_unix_ms,
        principal: record.principal,
        role: record.role,
        node: record.node,
        method: record.method,
        target: record.target,
        outcome: record.outcome,
        message: record.message,
        on_behalf_of: record.on_behalf_of.unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_round_trip_and_unspecified_or_unknown_values_are_refused() {
        for role in AccessRole::ALL {
            let wire = role_to_wire(role) as i32;
            assert_eq!(role_from_wire("role", wire).expect("known"), role);
        }
        for bad in [0, 99] {
            let err = role_from_wire("role", bad).expect_err("refused");
            assert!(err.to_string().contains("role"), "{err}");
            assert!(err.to_string().contains(&bad.to_string()), "{err}");
        }
    }

    #[test]
    fn a_record_keeps_every_field() {
        let record = AuditRecord {
            time: "1970-01-01T00:00:01.000Z".into(),
            time_unix_ms: 1000,
            principal: "bob".into(),
            role: "viewer".into(),
            node: "unit-a".into(),
            method: "/vnet.v1.PoolService/CreatePool".into(),
            target: "pool-a".into(),
            outcome: "PERMISSION_DENIED".into(),
            message: "no".into(),
            on_behalf_of: Some("ticket-1".into()),
        };
        let wire = record_to_wire(record);
        assert_eq!(
            (
                wire.time_unix_ms,
                wire.principal.as_str(),
                wire.role.as_str(),
                wire.node.as_str(),
                wire.method.as_str(),
                wire.target.as_str(),
                wire.outcome.as_str(),
                wire.message.as_str(),
                wire.on_behalf_of.as_str()
            ),
            (
                1000,
                "bob",
                "viewer",
                "unit-a",
                "/vnet.v1.PoolService/CreatePool",
                "pool-a",
                "PERMISSION_DENIED",
                "no",
                "ticket-1"
            )
        );
    }
}
