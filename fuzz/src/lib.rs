//! The bodies of the fuzz targets: every decoder that reads bytes from a network or a disk, and
//! the conversion of every public request. Each takes arbitrary bytes and must return (an error
//! is fine) without panicking, overflowing or allocating without bound.
//!
//! Shared by the coverage-guided targets in `fuzz_targets/` (libFuzzer, nightly) and by
//! `node/tests/fuzz_corpus.rs`, which replays the saved corpus on stable in CI.

use prost::Message;
use vnet_proto::vnet::raft::v1::RaftMessage;
use vnet_proto::vnet::v1 as pb;

/// The names of the targets, as directories under `fuzz/corpus/`.
pub const TARGETS: [&str; 8] = [
    "peer_message",
    "snapshot_file",
    "log_entry",
    "wal_segment",
    "journal_line",
    "config_file",
    "public_request",
    "access",
];

/// Runs the target called `name` on `data`.
pub fn run(name: &str, data: &[u8]) {
    match name {
        "peer_message" => peer_message(data),
        "snapshot_file" => snapshot_file(data),
        "log_entry" => log_entry(data),
        "wal_segment" => wal_segment(data),
        "journal_line" => journal_line(data),
        "config_file" => config_file(data),
        "public_request" => public_request(data),
        "access" => access(data),
        other => panic!("no fuzz target {other}"),
    }
}

/// A peer envelope as it arrives on the peer port, then each openraft payload (and vnetd's own
/// peer requests) decoded from it, with the checks the peer service applies.
pub fn peer_message(data: &[u8]) {
    use raft_store::{NodeId, TypeConfig};
    use vnet_node::peer::{decode, indexes, ElectionControl, LeaderRequest, LeaseRenewal};
    let Ok(message) = RaftMessage::decode(data) else {
        return;
    };
    if let Ok(rpc) =
        decode::<openraft::raft::AppendEntriesRequest<TypeConfig>>(&message, "append-entries")
    {
        let _ = indexes::check_append(
            rpc.prev_log_id.map(|id| id.index),
            rpc.entries.iter().map(|e| e.log_id.index),
            rpc.leader_commit.map(|id| id.index),
        );
    }
    let _ = decode::<openraft::raft::VoteRequest<NodeId>>(&message, "vote");
    if let Ok(rpc) =
        decode::<openraft::raft::InstallSnapshotRequest<TypeConfig>>(&message, "install-snapshot")
    {
        let _ = indexes::check_index("meta.last_log_id", rpc.meta.last_log_id.map(|id| id.index));
    }
    let _ = decode::<LeaderRequest>(&message, "forward");
    if let Ok(control) = decode::<ElectionControl>(&message, "trigger-election") {
        let _ = control.duration();
    }
    let _ = decode::<LeaseRenewal>(&message, "grant-lease");
}

/// A snapshot file as read from disk or assembled from a peer's chunks: the bytes as they are,
/// and the bytes as a body behind a valid header (magic, version 1, length, CRC-32), so the
/// fuzzer reaches the body's decoding and the model's invariant checks past the checksum.
pub fn snapshot_file(data: &[u8]) {
    let _ = raft_store::snapshot_file::announced_len(data);
    let _ = raft_store::snapshot_file::decode(data);
    let mut framed = Vec::with_capacity(raft_store::snapshot_file::HEADER_LEN + data.len());
    framed.extend_from_slice(b"VNETSNAP");
    framed.extend_from_slice(&1u32.to_be_bytes());
    framed.extend_from_slice(&(data.len() as u64).to_be_bytes());
    framed.extend_from_slice(&crc32fast::hash(data).to_be_bytes());
    framed.extend_from_slice(data);
    let _ = raft_store::snapshot_file::decode(&framed);
}

/// A Raft log entry as a segment record holds it, for index 7.
pub fn log_entry(data: &[u8]) {
    let _ = raft_store::log_store::decode_entry_bytes(7, data);
}

/// A Raft log segment file as read on open, its first index 7: header, records, torn tail.
pub fn wal_segment(data: &[u8]) {
    let _ = raft_store::wal::check_segment(7, data);
}

/// One line of a switch's journal: the bytes as they are, and as a record behind a valid CRC, so
/// the fuzzer reaches the record's decoding past the checksum.
pub fn journal_line(data: &[u8]) {
    let _ = fabric_agent::journal::parse_line(data);
    let mut line = format!("{:08x} ", crc32fast::hash(data)).into_bytes();
    line.extend_from_slice(data);
    let _ = fabric_agent::journal::parse_line(&line);
}

/// A `vnetd.toml`, parsed and validated as `vnetd --config` does.
pub fn config_file(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(args) = toml::from_str::<vnet_node::config::Args>(text) {
        let _ = args.resolve();
    }
}

/// Every public request message, decoded as the server decodes it, then converted and checked
/// at the edge as the API does before anything reaches Raft. The first byte picks the message.
pub fn public_request(data: &[u8]) {
    use vnet_node::api::{name, optional_name};
    use vnet_node::convert;
    let Some((&pick, body)) = data.split_first() else {
        return;
    };
    match pick % 14 {
        0 => {
            if let Ok(r) = pb::CreateProfileRequest::decode(body) {
                if let Some(p) = r.profile {
                    let _ = convert::profile::spec_from_wire(p);
                }
            }
        }
        1 => {
            if let Ok(r) = pb::UpdateProfileRequest::decode(body) {
                if let Some(p) = r.profile {
                    let _ = convert::profile::spec_from_wire(p);
                }
            }
        }
        2 => {
            if let Ok(r) = pb::DeleteProfileRequest::decode(body) {
                let _ = name("name", &r.name);
            }
        }
        3 => {
            if let Ok(r) = pb::GetProfileRequest::decode(body) {
                let _ = name("name", &r.name);
                let _ = vnet_node::api::consistency("consistency", r.consistency);
            }
        }
        4 => {
            if let Ok(r) = pb::ListProfilesRequest::decode(body) {
                let _ = vnet_node::api::consistency("consistency", r.consistency);
            }
        }
        5 => {
            if let Ok(r) = pb::CreatePoolRequest::decode(body) {
                if let Some(p) = r.pool {
                    let _ = convert::pool::spec_from_wire(p);
                }
            }
        }
        6 => {
            if let Ok(r) = pb::DeletePoolRequest::decode(body) {
                let _ = name("name", &r.name);
            }
        }
        7 => {
            if let Ok(r) = pb::AddMemberRequest::decode(body) {
                let _ = name("name", &r.name);
                let _ = vnet_node::api::cluster::new_member_addrs(&r.peer_addr, &r.api_addr);
                let _ = convert::member::role_from_wire("role", r.role);
            }
        }
        8 => {
            if let Ok(r) = pb::DrainRequest::decode(body) {
                let _ = name("unit", &r.unit);
            }
        }
        9 => {
            if let Ok(r) = pb::FailoverRequest::decode(body) {
                let _ = optional_name("profile", &r.profile);
                let _ = optional_name("from_unit", &r.from_unit);
                let _ = optional_name("to_unit", &r.to_unit);
            }
        }
        10 => {
            if let Ok(r) = pb::DisarmAlarmRequest::decode(body) {
                let _ = optional_name("member", &r.member);
                let _ = convert::alarm::kind_from_wire("kind", r.kind);
            }
        }
        11 => {
            let _ = pb::WatchRequest::decode(body);
        }
        12 => {
            if let Ok(r) = pb::GetClusterStatusRequest::decode(body) {
                let _ = vnet_node::api::consistency("consistency", r.consistency);
            }
        }
        _ => {
            if let Ok(r) = pb::UndrainRequest::decode(body) {
                let _ = name("unit", &r.unit);
            }
        }
    }
}

/// Roles and audit: a line of an audit file as `ReadAudit` reads it back from disk, and each
/// `AccessService` request converted and checked at the edge as the API does. The first byte
/// picks which.
pub fn access(data: &[u8]) {
    use vnet_node::api::access::principal;
    use vnet_node::convert::access::role_from_wire;
    let Some((&pick, body)) = data.split_first() else {
        return;
    };
    match pick % 4 {
        0 => {
            let _ = vnet_node::auth::audit::parse_line(body);
        }
        1 => {
            if let Ok(r) = pb::GrantRoleRequest::decode(body) {
                let _ = principal("principal", &r.principal);
                let _ = role_from_wire("role", r.role);
            }
        }
        2 => {
            if let Ok(r) = pb::RevokeRoleRequest::decode(body) {
                let _ = principal("principal", &r.principal);
            }
        }
        _ => {
            let _ = pb::ReadAuditRequest::decode(body);
        }
    }
}
