//! `vnet.v1.AccessService`: the replicated role map and this node's audit log.

use tonic::{Request, Response, Status};
use vnet_model::{Command, Outcome};
use vnet_proto::vnet::v1 as pb;
use vnet_proto::vnet::v1::access_service_server::AccessService;

use super::{consistency, Api, Caller};
use crate::auth::audit::{AuditQuery, READ_RECORDS_MAX};
use crate::convert::access::{binding_to_wire, record_to_wire, role_from_wire, role_to_wire};
use crate::error::ApiError;

/// Checks a principal the client named, by the model's one rule, before it is proposed.
pub fn principal(field: &str, value: &str) -> Result<(), ApiError> {
    vnet_model::access::validate_principal(field, value).map_err(ApiError::Rejected)
}

fn unexpected(what: &str, outcome: &Outcome) -> Status {
    ApiError::Internal {
        reason: format!("{what} produced {outcome:?}"),
    }
    .into()
}

impl Api {
    async fn list_roles_as(
        &self,
        _caller: Caller,
        request: Request<pb::ListRolesRequest>,
    ) -> Result<Response<pb::ListRolesResponse>, Status> {
        let consistency = consistency("consistency", request.get_ref().consistency)?;
        self.node.read_barrier(consistency).await?;
        let (roles, revision) = self.node.view().read(|a| {
            (
                a.state
                    .roles()
                    .map(|(principal, role)| binding_to_wire(principal, role))
                    .collect(),
                a.state.revision(),
            )
        });
        Ok(Response::new(pb::ListRolesResponse { roles, revision }))
    }

    async fn grant_role_as(
        &self,
        caller: Caller,
        request: Request<pb::GrantRoleRequest>,
    ) -> Result<Response<pb::GrantRoleResponse>, Status> {
        let request = request.into_inner();
        principal("principal", &request.principal)?;
        let role = role_from_wire("role", request.role)?;
        let command = Command::GrantRole {
            principal: request.principal,
            role,
        };
        match self.node.write_by(caller.by(), command).await? {
            (Outcome::RoleGranted { previous, .. }, revision) => {
                Ok(Response::new(pb::GrantRoleResponse {
                    previous: previous.map_or(pb::AccessRole::Unspecified, role_to_wire) as i32,
                    revision,
                }))
            }
            (other, _) => Err(unexpected("granting a role", &other)),
        }
    }

    async fn revoke_role_as(
        &self,
        caller: Caller,
        request: Request<pb::RevokeRoleRequest>,
    ) -> Result<Response<pb::RevokeRoleResponse>, Status> {
        let request = request.into_inner();
        principal("principal", &request.principal)?;
        let command = Command::RevokeRole {
            principal: request.principal,
        };
        match self.node.write_by(caller.by(), command).await? {
            (Outcome::RoleRevoked { role, .. }, revision) => {
                Ok(Response::new(pb::RevokeRoleResponse {
                    role: role_to_wire(role) as i32,
                    revision,
                }))
            }
            (other, _) => Err(unexpected("revoking a role", &other)),
        }
    }

    async fn read_audit_as(
        &self,
        _caller: Caller,
        request: Request<pb::ReadAuditRequest>,
    ) -> Result<Response<pb::ReadAuditResponse>, Status> {
        let request = request.into_inner();
        if !request.principal.is_empty() {
            // Any name a record can hold: a principal, "node/<id>" or "insecure".
            if request.principal.len() > vnet_model::limits::ACTOR_LEN_MAX
                || request.principal.chars().any(char::is_control)
            {
                return Err(ApiError::invalid(
                    "principal",
                    &request.principal,
                    format!(
                        "must be at most {} printable characters",
                        vnet_model::limits::ACTOR_LEN_MAX
                    ),
                )
                .into());
            }
        }
        let query = AuditQuery {
            since_unix_ms: request.since_unix_ms,
            principal: (!request.principal.is_empty()).then_some(request.principal),
            limit: match request.limit {
                0 => READ_RECORDS_MAX,
                n => (n as usize).min(READ_RECORDS_MAX),
            },
        };
        let audit = self.audit.clone();
        let records = tokio::task::spawn_blocking(move || audit.read(&query))
            .await
            .map_err(|e| ApiError::Internal {
                reason: format!("reading the audit log failed: {e}"),
            })?
            .map_err(|e| ApiError::Internal {
                reason: e.to_string(),
            })?;
        Ok(Response::new(pb::ReadAuditResponse {
            records: records.into_iter().map(record_to_wire).collect(),
            node: self.node.config().name.clone(),
        }))
    }
}

#[tonic::async_trait]
impl AccessService for Api {
    async fn list_roles(
        &self,
        request: Request<pb::ListRolesRequest>,
    ) -> Result<Response<pb::ListRolesResponse>, Status> {
        self.guarded(
            request,
            |_| String::new(),
            |caller, request| self.list_roles_as(caller, request),
        )
        .await
    }

    async fn grant_role(
        &self,
        request: Request<pb::GrantRoleRequest>,
    ) -> Result<Response<pb::GrantRoleResponse>, Status> {
        self.guarded(
            request,
            |r| r.principal.clone(),
            |caller, request| self.grant_role_as(caller, request),
        )
        .await
    }

    async fn revoke_role(
        &self,
        request: Request<pb::RevokeRoleRequest>,
    ) -> Result<Response<pb::RevokeRoleResponse>, Status> {
        self.guarded(
            request,
            |r| r.principal.clone(),
            |caller, request| self.revoke_role_as(caller, request),
        )
        .await
    }

    async fn read_audit(
        &self,
        request: Request<pb::ReadAuditRequest>,
    ) -> Result<Response<pb::ReadAuditResponse>, Status> {
        self.guarded(
            request,
            |r| r.principal.clone(),
            |caller, request| self.read_audit_as(caller, request),
        )
        .await
    }
}
