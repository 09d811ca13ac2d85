//! The public gRPC API (`vnet.v1`), served by every node.
//!
//! Each service converts the request at the edge (see `convert`), hands it to the [`Node`]
//! (which forwards to the leader as needed), and converts the answer back. Errors become status
//! codes in one place, [`ApiError`]'s `From` impl.

pub mod cluster;
pub mod pools;
pub mod profiles;
pub mod watch;

use vnet_proto::vnet::v1 as pb;

use vnet_model::limits::ACTOR_LEN_MAX;

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

/// Metadata key a client may set to say who it is; recorded with each change it makes. At most
/// `vnet_model::limits::ACTOR_LEN_MAX` characters, the bound the model applies to every actor.
pub const ACTOR_HEADER: &str = "x-vnet-actor";

/// Who is asking: the client's own name if it gave one, else its address.
pub fn actor<T>(request: &tonic::Request<T>) -> Result<String, ApiError> {
    if let Some(value) = request.metadata().get(ACTOR_HEADER) {
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
        return Ok(text.to_string());
    }
    Ok(match request.remote_addr() {
        Some(addr) => format!("grpc:{addr}"),
        None => "grpc:unknown".to_string(),
    })
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
/// long-lived watch streams end and let the server shut down), and the node's watcher slots
/// (`watchers_max`).
#[derive(Clone)]
pub struct Api {
    pub node: Node,
    pub stopping: crate::shutdown::ShutdownSignal,
    pub watchers: std::sync::Arc<tokio::sync::Semaphore>,
}
