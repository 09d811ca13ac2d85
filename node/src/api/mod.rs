//! The public gRPC API (`vnet.v1`), served by every node.
//!
//! Each service converts the request at the edge (see `convert`), hands it to the [`Node`]
//! (which forwards to the leader as needed), and converts the answer back. Errors become status
//! codes in one place, [`ApiError`]'s `From` impl.

pub mod access;
pub mod cluster;
pub mod pools;
pub mod profiles;
pub mod watch;

use vnet_proto::vnet::v1 as pb;

use vnet_model::limits::ACTOR_LEN_MAX;

use vnet_proto::code_name;

use crate::auth::audit::{self, AuditLog, AuditRecord};
use crate::auth::edge::CalledMethod;
use crate::auth::roles;
use crate::auth::Principal;
use crate::error::ApiError;
use crate::node::{Consistency, Node};

/// Largest request the public port decodes. A valid request is at most a few kilobytes (a
/// profile with every field at its limit); the rest is refused field by field at the edge with
/// `INVALID_ARGUMENT` naming the field. The bound stays at gRPC's usual 4 MiB so that an over-long
/// value (a name, a page token) meets that named refusal rather than a bare transport error, and
/// so a request cannot carry more than one log entry's worth (`ENTRY_BYTES_MAX`) anyway.
pub const PUBLIC_REQUEST_BYTES_MAX: usize = 4 * 1024 * 1024;

/// Largest response the public port encodes: 4 MiB, what gRPC clients accept by default (a larger
/// answer would reach them only as an error). The largest response, a `ListProfiles` page of
/// `LIST_PAGE_SIZE_MAX` profiles with every field at its limit, is 3,966,082 bytes
/// (`profiles.rs` tests it); a status of `PROFILES_MAX` placements is about half that.
pub const PUBLIC_RESPONSE_BYTES_MAX: usize = 4 * 1024 * 1024;

/// Metadata key a client may set to say whom it acts for: recorded beside the actor ("on behalf
/// of"), never instead of it; the actor is always the authenticated principal (ARCHITECTURE.md,
/// "Roles and audit"). At most `vnet_model::limits::ACTOR_LEN_MAX` characters.
pub const ACTOR_HEADER: &str = "x-vnet-actor";

/// The client's "on behalf of" note, if it sent one.
pub fn on_behalf_of<T>(request: &tonic::Request<T>) -> Result<Option<String>, ApiError> {
    let Some(value) = request.metadata().get(ACTOR_HEADER) else {
        return Ok(None);
    };
    let text = value
        .to_str()
        .map_err(|_| ApiError::invalid(ACTOR_HEADER, "<binary>", "must be printable ASCII"))?;
    if text.is_empty() || text.len() > ACTOR_LEN_MAX || text.chars().any(|c| c.is_control()) {
        return Err(ApiError::invalid(
            ACTOR_HEADER,
            text,
            format!("must be 1..={ACTOR_LEN_MAX} printable characters"),
        ));
    }
    Ok(Some(text.to_string()))
}

/// Who makes a call that may go ahead: whom to act as, and what to audit.
#[derive(Debug, Clone)]
pub struct Caller {
    pub principal: Principal,
    /// The role as the audit log names it (`auth::roles::role_label`).
    pub role: String,
    /// The actor recorded with any change the call makes: the principal, or for a node a system
    /// actor it named.
    pub actor: String,
    pub on_behalf_of: Option<String>,
}

impl Caller {
    /// Who a leader request made for this caller is made by.
    pub fn by(&self) -> crate::peer::By {
        crate::peer::By {
            actor: self.actor.clone(),
            on_behalf_of: self.on_behalf_of.clone(),
        }
    }
}

impl Api {
    /// Every public call goes through here: it finds the principal and the called method (set by
    /// `auth::edge::EdgeLayer`), refuses the call unless the principal's role (read from this
    /// node's applied role map) holds the permission `auth::roles::RPCS` names for it, runs
    /// `body` with the request, and audits the outcome as `Permission::audited_always` says (every refusal is
    /// audited). `target` names what the call acts on, for the audit log.
    pub async fn guarded<T, R, F, Fut>(
        &self,
        request: tonic::Request<T>,
        target: impl FnOnce(&T) -> String,
        body: F,
    ) -> Result<tonic::Response<R>, tonic::Status>
    where
        F: FnOnce(Caller, tonic::Request<T>) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<R>, tonic::Status>>,
    {
        let method = request
            .extensions()
            .get::<CalledMethod>()
            .map_or_else(|| "<unknown>".to_string(), |m| m.0.clone());
        let principal = request.extensions().get::<Principal>().cloned();
        // Cut like every echoed value: a refused call's target has not been validated, and a
        // megabyte name must not become a megabyte audit line.
        let target = crate::error::echoed(&target(request.get_ref()));
        let role = match &principal {
            Some(Principal::Client(name)) => self.node.view().read(|a| a.state.role_of(name)),
            _ => None,
        };
        let member = match &principal {
            Some(Principal::Node(id)) => self
                .node
                .view()
                .read(|a| !a.state.is_removed_id(*id) && a.state.members().any(|m| m.id == *id)),
            _ => true,
        };
        let label = principal
            .as_ref()
            .map_or_else(|| "none".to_string(), |p| roles::role_label(p, role));
        let note = on_behalf_of(&request);
        let audit = |outcome: &str, message: &str, note: Option<String>| {
            self.record(AuditRecord {
                time: String::new(),
                time_unix_ms: 0,
                principal: principal.as_ref().map_or_else(
                    || "<none>".to_string(),
                    |p| {
                        // A name that cannot be a principal (refused as such) is cut too.
                        let name = roles::principal_name(p);
                        if name.chars().count() > vnet_model::limits::PRINCIPAL_LEN_MAX {
                            crate::error::echoed(&name)
                        } else {
                            name
                        }
                    },
                ),
                role: label.clone(),
                node: self.node.config().name.clone(),
                method: method.clone(),
                target: target.clone(),
                outcome: outcome.to_string(),
                message: audit::cut_message(message),
                on_behalf_of: note,
            })
        };
        let permission = match roles::check(principal.as_ref(), role, member, &method) {
            Ok(permission) => permission,
            Err(refusal) => {
                let status = tonic::Status::from(refusal);
                audit(
                    code_name(status.code()),
                    status.message(),
                    note.ok().flatten(),
                );
                return Err(status);
            }
        };
        let note = match note {
            Ok(note) => note,
            Err(e) => {
                let status = tonic::Status::from(e);
                if permission.audited_always() {
                    audit(code_name(status.code()), status.message(), None);
                }
                return Err(status);
            }
        };
        let Some(principal_known) = principal.clone() else {
            // `check` refuses a call without a principal; this is that refusal again.
            return Err(tonic::Status::unauthenticated("no principal"));
        };
        let (actor, on_behalf_of) = roles::actor(&principal_known, note.as_deref());
        let caller = Caller {
            principal: principal_known,
            role: label.clone(),
            actor,
            on_behalf_of: on_behalf_of.clone(),
        };
        let result = body(caller, request).await;
        match &result {
            Ok(_) if permission.audited_always() => audit("OK", "", on_behalf_of),
            Err(status) if permission.audited_always() => {
                audit(code_name(status.code()), status.message(), on_behalf_of)
            }
            _ => {}
        }
        result
    }

    /// Appends `record` to this node's audit log, stamped now. A record that cannot be written
    /// is logged as an error: the call it describes has already been decided.
    fn record(&self, mut record: AuditRecord) {
        record.time_unix_ms = audit::now_unix_ms();
        record.time = audit::rfc3339(record.time_unix_ms);
        if let Err(e) = self.audit.append(&record) {
            tracing::error!(error = %e, method = %record.method, "could not write the audit log");
        }
    }
}

/// Checks a name the client sent (a profile, pool, unit or member) against the model's one naming
/// rule at the edge, before it is looked up or proposed. Without this, a name the model would
/// refuse anyway (say, megabytes of control characters) would first be appended to the Raft log,
/// replicated and fsynced on a quorum, stalling every other write behind it (invariant 8).
pub fn name(field: &str, value: &str) -> Result<(), ApiError> {
    vnet_model::name::validate_name(field, value).map_err(ApiError::Rejected)
}

/// Like [`name`], for a field where empty means "not given" (a filter, an optional target).
pub fn optional_name(field: &str, value: &str) -> Result<(), ApiError> {
    if value.is_empty() {
        Ok(())
    } else {
        name(field, value)
    }
}

pub fn consistency(field: &str, value: i32) -> Result<Consistency, ApiError> {
    match pb::ReadConsistency::try_from(value) {
        Ok(pb::ReadConsistency::Unspecified) | Ok(pb::ReadConsistency::Linearizable) => {
            Ok(Consistency::Linearizable)
        }
        Ok(pb::ReadConsistency::Local) => Ok(Consistency::Local),
        Err(_) => Err(ApiError::invalid(
            field,
            value,
            "not a ReadConsistency value",
        )),
    }
}

/// Shared by every service: the node they serve, a signal that the node is stopping (so
/// long-lived watch streams end and let the server shut down), the node's watcher slots
/// (`watchers_max`) and its audit log.
#[derive(Clone)]
pub struct Api {
    pub node: Node,
    pub stopping: crate::shutdown::ShutdownSignal,
    pub watchers: std::sync::Arc<tokio::sync::Semaphore>,
    /// This node's audit log (`auth::audit`).
    pub audit: std::sync::Arc<AuditLog>,
}
