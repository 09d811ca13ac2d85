//! The wire contracts of vnet-ha, and nothing else.
//!
//! - [`vnet::v1`]: the public API served by every `vnetd` (profiles, pools, cluster, watch).
//! - [`vnet::raft::v1`]: the peer API that `vnetd` nodes speak among themselves.
//! - [`vnet::switch::v1`]: the switch API a unit's fabric agent uses to program its switch.
//!
//! - [`FILE_DESCRIPTOR_SET`]: every file above as an encoded `FileDescriptorSet`, for gRPC
//!   reflection and for naming served methods in metrics.
//! - [`code_name`]: a gRPC status code as the error contracts and other gRPC tooling spell it.
//!
//! Code here is generated from the `.proto` files beside this crate; domain types live in
//! `vnet-model`, and the conversions between the two live at the edge, in `vnet-node`.

pub mod vnet {
    pub mod v1 {
        tonic::include_proto!("vnet.v1");
    }
    pub mod raft {
        pub mod v1 {
            tonic::include_proto!("vnet.raft.v1");
        }
    }
    pub mod switch {
        pub mod v1 {
            tonic::include_proto!("vnet.switch.v1");
        }
    }
}

/// Every `.proto` file of this crate, compiled, as an encoded `google.protobuf.FileDescriptorSet`.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/vnet_descriptor.bin"));

/// The canonical upper-case name of a gRPC status code (`INVALID_ARGUMENT`), as the error
/// contracts of the `.proto` files and other gRPC tooling print it.
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code;
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}
