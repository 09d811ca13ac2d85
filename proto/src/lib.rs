//! The wire contracts of vnet-ha, and nothing else.
//!
//! - [`vnet::v1`]: the public API served by every `vnetd` (profiles, pools, cluster, watch).
//! - [`vnet::raft::v1`]: the peer API that `vnetd` nodes speak among themselves.
//! - [`vnet::switch::v1`]: the switch API a unit's fabric agent uses to program its switch.
//!
//! - [`FILE_DESCRIPTOR_SET`]: every file above as an encoded `FileDescriptorSet`, for gRPC
//!   reflection and for naming served methods in metrics.
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
