//! `role grant|revoke|list` and `audit`: the replicated role map and the nodes' audit logs.

use std::time::Duration;

use serde::Serialize;
use vnet_proto::vnet::v1 as pb;
use vnet_proto::vnet::v1::access_service_client::AccessServiceClient;

use crate::cli::{AccessRoleArg, AuditArgs, RoleCommand};
use crate::error::CliError;
use crate::output::Render;
use crate::retry::CallKind;
use crate::session::{self, rpc, unary, Session};
use crate::spec::Endpoints;
use crate::view::access_role_name;
use crate::{emit, Context};

/// `role list`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RoleListView {
    pub roles: Vec<RoleView>,
    pub revision: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RoleView {
    pub principal: String,
    pub role: String,
}

/// `role grant` and `role revoke`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RoleChangeView {
    pub principal: String,
    /// The role it holds now; `None` once revoked.
    pub role: Option<String>,
    /// The role it held before, if any.
    pub previous: Option<String>,
    pub revision: u64,
}

/// `audit`: records of every node asked, oldest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditView {
    pub records: Vec<AuditRecordView>,
    /// Endpoints that could not be read, with why.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unreachable: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditRecordView {
    pub time_unix_ms: u64,
    pub principal: String,
    pub role: String,
    pub node: String,
    pub method: String,
    pub target: String,
    pub outcome: String,
    pub message: String,
    pub on_behalf_of: String,
}

impl From<pb::AuditRecord> for AuditRecordView {
    fn from(r: pb::AuditRecord) -> Self {
        AuditRecordView {
            time_unix_ms: r.time_unix_ms,
            principal: r.principal,
            role: r.role,
            node: r.node,
            method: r.method,
            target: r.target,
            outcome: r.outcome,
            message: r.message,
            on_behalf_of: r.on_behalf_of,
        }
    }
}

impl Render for RoleListView {
    fn text(&self) -> String {
        if self.roles.is_empty() {
            return format!("no role granted (revision {})", self.revision);
        }
        let width = self
            .roles
            .iter()
            .map(|r| r.principal.chars().count())
            .max()
            .unwrap_or(0)
            .max("PRINCIPAL".len());
        let mut out = format!("{:<width$}  ROLE", "PRINCIPAL");
        for r in &self.roles {
            out.push_str(&format!("\n{:<width$}  {}", r.principal, r.role));
        }
        out.push_str(&format!("\n(revision {})", self.revision));
        out
    }
}

impl Render for RoleChangeView {
    fn text(&self) -> String {
        let was = self
            .previous
            .as_deref()
            .map_or(String::new(), |p| format!(" (was {p})"));
        match &self.role {
            Some(role) => format!(
                "{} is now {role}{was} at revision {}",
                self.principal, self.revision
            ),
            None => format!(
                "{} holds no role now{was} at revision {}",
                self.principal, self.revision
            ),
        }
    }
}

impl Render for AuditView {
    fn text(&self) -> String {
        let mut lines: Vec<String> = self
            .records
            .iter()
            .map(|r| {
                let method = r.method.rsplit('/').next().unwrap_or(&r.method);
                let mut line = format!(
                    "{}  {}  {} ({})  {method}",
                    crate::access::rfc3339(r.time_unix_ms),
                    r.node,
                    r.principal,
                    r.role
                );
                if !r.target.is_empty() {
                    line.push_str(&format!(" {}", r.target));
                }
                line.push_str(&format!("  {}", r.outcome));
                if !r.on_behalf_of.is_empty() {
                    line.push_str(&format!("  on behalf of {}", r.on_behalf_of));
                }
                if !r.message.is_empty() {
                    line.push_str(&format!(": {}", r.message));
                }
                line
            })
            .collect();
        if lines.is_empty() {
            lines.push("no audit record matches".to_string());
        }
        for endpoint in &self.unreachable {
            lines.push(format!("not read: {endpoint}"));
        }
        lines.join("\n")
    }
}

/// `unix_ms` as RFC 3339 in UTC with milliseconds.
pub fn rfc3339(unix_ms: u64) -> String {
    let secs = unix_ms / 1000;
    let days = secs / 86_400;
    let rem = secs % 86_400;
    // Howard Hinnant's days-to-civil, for days since 1970-01-01.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60,
        unix_ms % 1000
    )
}

fn role_to_wire(role: AccessRoleArg) -> pb::AccessRole {
    match role {
        AccessRoleArg::Viewer => pb::AccessRole::Viewer,
        AccessRoleArg::Operator => pb::AccessRole::Operator,
        AccessRoleArg::Admin => pb::AccessRole::Admin,
    }
}

fn role_name(role: i32) -> Option<String> {
    match pb::AccessRole::try_from(role) {
        Ok(pb::AccessRole::Unspecified) => None,
        _ => Some(access_role_name(role).to_string()),
    }
}

pub async fn role(
    session: &mut Session,
    context: &Context,
    command: RoleCommand,
) -> Result<(), CliError> {
    match command {
        RoleCommand::List => {
            let response = unary(
                session,
                CallKind::Read,
                pb::ListRolesRequest {
                    consistency: context.consistency as i32,
                },
                rpc!(AccessServiceClient::list_roles),
            )
            .await?;
            emit(
                context,
                &RoleListView {
                    roles: response
                        .roles
                        .iter()
                        .map(|b| RoleView {
                            principal: b.principal.clone(),
                            role: access_role_name(b.role).to_string(),
                        })
                        .collect(),
                    revision: response.revision,
                },
            )
        }
        RoleCommand::Grant { principal, role } => {
            let response = unary(
                session,
                CallKind::Write,
                pb::GrantRoleRequest {
                    principal: principal.clone(),
                    role: role_to_wire(role) as i32,
                },
                rpc!(AccessServiceClient::grant_role),
            )
            .await?;
            emit(
                context,
                &RoleChangeView {
                    principal,
                    role: Some(access_role_name(role_to_wire(role) as i32).to_string()),
                    previous: role_name(response.previous),
                    revision: response.revision,
                },
            )
        }
        RoleCommand::Revoke { principal } => {
            let response = unary(
                session,
                CallKind::Write,
                pb::RevokeRoleRequest {
                    principal: principal.clone(),
                },
                rpc!(AccessServiceClient::revoke_role),
            )
            .await?;
            emit(
                context,
                &RoleChangeView {
                    principal,
                    role: None,
                    previous: role_name(response.role),
                    revision: response.revision,
                },
            )
        }
    }
}

/// The request `audit` sends each node: `since` is how far back from `now_unix_ms`.
pub fn audit_request(args: &AuditArgs, now_unix_ms: u64) -> pb::ReadAuditRequest {
    pb::ReadAuditRequest {
        since_unix_ms: args.since.map_or(0, |ago| {
            now_unix_ms.saturating_sub(u64::try_from(ago.as_millis()).unwrap_or(u64::MAX))
        }),
        principal: args.principal.clone().unwrap_or_default(),
        limit: args.limit,
    }
}

/// Reads the audit log of every endpoint (each node keeps the calls made to it) and prints the
/// records merged by time; an endpoint that cannot be read is named, and makes the exit status
/// 1 once the rest is printed.
pub async fn audit(
    endpoints: &Endpoints,
    timeout: Duration,
    tls: session::Tls,
    context: &Context,
    args: AuditArgs,
) -> Result<(), CliError> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    let message = audit_request(&args, now);
    let asked = endpoints.0.iter().map(|endpoint| {
        let message = message.clone();
        let tls = tls.clone();
        async move {
            let mut session = session::open(&Endpoints(vec![endpoint.clone()]), timeout, tls);
            let answer = unary(
                &mut session,
                CallKind::Read,
                message,
                rpc!(AccessServiceClient::read_audit),
            )
            .await;
            (endpoint.clone(), answer)
        }
    });
    let mut view = AuditView {
        records: Vec::new(),
        unreachable: Vec::new(),
    };
    let mut first_error = None;
    for (endpoint, answer) in futures::future::join_all(asked).await {
        match answer {
            Ok(response) => view
                .records
                .extend(response.records.into_iter().map(AuditRecordView::from)),
            Err(e) => {
                view.unreachable.push(format!("{endpoint}: {e}"));
                first_error.get_or_insert(e);
            }
        }
    }
    view.records
        .sort_by(|a, b| (a.time_unix_ms, &a.node).cmp(&(b.time_unix_ms, &b.node)));
    emit(context, &view)?;
    match first_error {
        Some(e) if view.records.is_empty() => Err(e),
        Some(_) => Err(CliError::Unhealthy(format!(
            "{} of {} endpoint(s) could not be read",
            view.unreachable.len(),
            endpoints.0.len()
        ))),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::{json_line, render, Format};

    #[test]
    fn since_counts_back_from_now_and_defaults_to_everything() {
        let args = AuditArgs {
            since: Some(Duration::from_secs(600)),
            principal: Some("bob".into()),
            limit: 5,
        };
        let request = audit_request(&args, 1_000_000);
        assert_eq!(request.since_unix_ms, 400_000);
        assert_eq!(request.principal, "bob");
        assert_eq!(request.limit, 5);
        let all = audit_request(
            &AuditArgs {
                since: None,
                principal: None,
                limit: 0,
            },
            1_000_000,
        );
        assert_eq!((all.since_unix_ms, all.principal.as_str()), (0, ""));
        let long_ago = audit_request(
            &AuditArgs {
                since: Some(Duration::from_secs(10_000)),
                principal: None,
                limit: 0,
            },
            1_000,
        );
        assert_eq!(long_ago.since_unix_ms, 0);
    }

    #[test]
    fn audit_records_print_one_line_each_and_as_json() {
        let view = AuditView {
            records: vec![AuditRecordView {
                time_unix_ms: 1_796_562_300_123,
                principal: "viewer".into(),
                role: "viewer".into(),
                node: "unit-a".into(),
                method: "/vnet.v1.ProfileService/CreateProfile".into(),
                target: "web-01".into(),
                outcome: "PERMISSION_DENIED".into(),
                message: "no".into(),
                on_behalf_of: String::new(),
            }],
            unreachable: vec![],
        };
        assert_eq!(
            view.text(),
            "2026-12-06T13:05:00.123Z  unit-a  viewer (viewer)  CreateProfile web-01  \
             PERMISSION_DENIED: no"
        );
        let json = json_line(&view);
        assert!(
            json.starts_with(r#"{"records":[{"time_unix_ms":1796562300123,"principal":"viewer""#),
            "{json}"
        );
        assert!(!json.contains("unreachable"), "{json}");
        let empty = AuditView {
            records: vec![],
            unreachable: vec!["127.0.0.1:1: refused".into()],
        };
        assert_eq!(
            render(Format::Table, &empty),
            "no audit record matches\nnot read: 127.0.0.1:1: refused\n"
        );
    }

    #[test]
    fn roles_print_as_a_table_and_changes_as_a_sentence() {
        let list = RoleListView {
            roles: vec![
                RoleView {
                    principal: "admin".into(),
                    role: "admin".into(),
                },
                RoleView {
                    principal: "operator".into(),
                    role: "operator".into(),
                },
            ],
            revision: 7,
        };
        assert_eq!(
            list.text(),
            "PRINCIPAL  ROLE\nadmin      admin\noperator   operator\n(revision 7)"
        );
        let granted = RoleChangeView {
            principal: "ops".into(),
            role: Some("admin".into()),
            previous: Some("operator".into()),
            revision: 9,
        };
        assert_eq!(
            granted.text(),
            "ops is now admin (was operator) at revision 9"
        );
        let revoked = RoleChangeView {
            principal: "ops".into(),
            role: None,
            previous: Some("admin".into()),
            revision: 10,
        };
        assert_eq!(
            revoked.text(),
            "ops holds no role now (was admin) at revision 10"
        );
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
    }
}
