//! The `vnet.raft.v1.RaftPeer` server: hands Raft messages to openraft and leader requests to the
//! node. A message it cannot read is refused with `INVALID_ARGUMENT` naming what was wrong.

use openraft::error::{InstallSnapshotError, RaftError};
use openraft::raft::{AppendEntriesRequest, InstallSnapshotRequest, VoteRequest};
use tonic::{Request, Response, Status};
use tracing::Instrument;
use vnet_proto::vnet::raft::v1::raft_peer_server::RaftPeer;
use vnet_proto::vnet::raft::v1::RaftMessage;

use raft_store::{NodeId, TypeConfig};

use super::chunks::ChunkCheck;
use super::{
    decode, encode, ElectionControl, LeaderRequest, LeaderResult, LeaseRenewal, ProbeReply,
};
use crate::node::Node;

pub struct PeerService {
    node: Node,
    chunks: ChunkCheck,
}

impl PeerService {
    pub fn new(node: Node) -> Self {
        Self {
            node,
            chunks: ChunkCheck::default(),
        }
    }
}

#[tonic::async_trait]
impl RaftPeer for PeerService {
    async fn append_entries(
        &self,
        request: Request<RaftMessage>,
    ) -> Result<Response<RaftMessage>, Status> {
        let rpc: AppendEntriesRequest<TypeConfig> = decode(request.get_ref(), "append-entries")?;
        let result = self.node.raft().append_entries(rpc).await;
        Ok(Response::new(encode(&result)))
    }

    async fn vote(&self, request: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        let rpc: VoteRequest<NodeId> = decode(request.get_ref(), "vote")?;
        let result = self.node.raft().vote(rpc).await;
        Ok(Response::new(encode(&result)))
    }

    async fn install_snapshot(
        &self,
        request: Request<RaftMessage>,
    ) -> Result<Response<RaftMessage>, Status> {
        let message = request.into_inner();
        let mut rpc: InstallSnapshotRequest<TypeConfig> = decode(&message, "install-snapshot")?;
        // Bounded before openraft sees it: it would grow its buffer to any offset it is given.
        self.chunks
            .check(&rpc.meta.snapshot_id, rpc.offset, &message.data)
            .map_err(Status::invalid_argument)?;
        rpc.data = message.data;
        let result: Result<_, RaftError<NodeId, InstallSnapshotError>> =
            self.node.raft().install_snapshot(rpc).await;
        Ok(Response::new(encode(&result)))
    }

    async fn forward(
        &self,
        request: Request<RaftMessage>,
    ) -> Result<Response<RaftMessage>, Status> {
        let leader_request: LeaderRequest = decode(request.get_ref(), "forward")?;
        // The forwarding node's span is the parent: one trace across both nodes.
        let span = tracing::info_span!(
            "leader",
            request = leader_request.kind(),
            trace_id = tracing::field::Empty
        );
        crate::telemetry::continue_trace(&span, request.metadata());
        let result: LeaderResult = async {
            let result = self.node.execute_as_leader(leader_request).await;
            match &result {
                Ok(_) => tracing::debug!("forwarded request done"),
                Err(e) => tracing::debug!(error = %e, "forwarded request not done"),
            }
            result
        }
        .instrument(span)
        .await;
        Ok(Response::new(encode(&result)))
    }

    async fn probe(&self, request: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        let () = decode(request.get_ref(), "probe")?;
        let raft = self.node.raft();
        let initialized = raft
            .is_initialized()
            .await
            .map_err(|e| Status::unavailable(format!("raft is not running: {e}")))?;
        let reply = ProbeReply {
            id: self.node.id(),
            initialized,
            last_log_index: raft.metrics().borrow().last_log_index,
        };
        Ok(Response::new(encode(&reply)))
    }

    async fn trigger_election(
        &self,
        request: Request<RaftMessage>,
    ) -> Result<Response<RaftMessage>, Status> {
        let control: ElectionControl = decode(request.get_ref(), "trigger-election")?;
        control.duration().map_err(Status::invalid_argument)?;
        self.node.election_control(control);
        Ok(Response::new(encode(&())))
    }

    async fn grant_lease(
        &self,
        request: Request<RaftMessage>,
    ) -> Result<Response<RaftMessage>, Status> {
        let renewal: LeaseRenewal = decode(request.get_ref(), "grant-lease")?;
        vnet_model::name::validate_name("unit", &renewal.unit)
            .map_err(|e| Status::invalid_argument(format!("peer message grant-lease: {e}")))?;
        let result = self
            .node
            .grant_lease(&renewal.unit)
            .map_err(|refused| refused.to_string());
        Ok(Response::new(encode(&result)))
    }

    async fn lease_report(
        &self,
        request: Request<RaftMessage>,
    ) -> Result<Response<RaftMessage>, Status> {
        let () = decode(request.get_ref(), "lease-report")?;
        Ok(Response::new(encode(&self.node.lease_report())))
    }
}
