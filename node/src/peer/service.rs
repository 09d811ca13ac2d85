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
use super::client::{CLUSTER_ID_HEADER, NODE_ID_HEADER};
use super::{
    decode, encode, ElectionControl, LeaderRequest, LeaderResult, LeaseRenewal, ProbeReply,
};
use crate::data_file::validate_cluster_id;
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

    /// Lets in a call only from a member of this node's cluster. A caller naming another cluster
    /// is refused with `FAILED_PRECONDITION` naming both ids: it was pointed at the wrong peers,
    /// or belongs to the cluster a backup was restored from (a restore draws a new id), and its
    /// votes or entries must never mix with ours. A node with no cluster id yet (a fresh member
    /// waiting to be contacted) adopts the caller's, durably, before answering. A caller without
    /// the header (a fresh founder's probe, or a build without cluster ids during an upgrade) is
    /// let in.
    fn admit(&self, metadata: &tonic::metadata::MetadataMap) -> Result<(), Status> {
        // A node whose id a recovery removed is refused for good, whatever it says of itself:
        // its vote and log predate the recovery (ARCHITECTURE.md, "Operating through bad days").
        let caller_id = metadata
            .get(NODE_ID_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if let Some(id) = caller_id {
            if self.node.view().read(|a| a.state.is_removed_id(id)) {
                return Err(Status::failed_precondition(format!(
                    "node {id} was removed from this cluster by a recovery without a quorum; it \
                     may come back only with an empty data directory under a new id (`vnetctl \
                     member add`)"
                )));
            }
        }
        let Some(value) = metadata.get(CLUSTER_ID_HEADER) else {
            return Ok(());
        };
        let caller = value
            .to_str()
            .map_err(|_| Status::invalid_argument(format!("{CLUSTER_ID_HEADER} is not text")))?;
        validate_cluster_id(caller)
            .map_err(|e| Status::invalid_argument(format!("{CLUSTER_ID_HEADER}: {e}")))?;
        let caller_node = metadata
            .get(NODE_ID_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(|v| crate::error::echoed(v).to_string())
            .unwrap_or_else(|| "?".to_string());
        let ours = match self.node.cluster_id() {
            Some(ours) => ours,
            None => self.node.adopt_cluster_id(caller).map_err(|e| {
                Status::unavailable(format!("cannot record the cluster id {caller}: {e}"))
            })?,
        };
        if ours != caller {
            return Err(Status::failed_precondition(format!(
                "node {} belongs to cluster {ours}, but the caller (node {caller_node}) belongs \
                 to cluster {caller}: a node of another cluster is refused (check its \
                 --initial-cluster and peer addresses; a cluster restored from a backup has a new \
                 id, and members of the old one cannot join it)",
                self.node.id()
            )));
        }
        Ok(())
    }
}

#[tonic::async_trait]
impl RaftPeer for PeerService {
    async fn append_entries(
        &self,
        request: Request<RaftMessage>,
    ) -> Result<Response<RaftMessage>, Status> {
        self.admit(request.metadata())?;
        let rpc: AppendEntriesRequest<TypeConfig> = decode(request.get_ref(), "append-entries")?;
        // openraft asserts what this checks: a malformed batch would panic its core.
        super::indexes::check_terms(
            [("vote", rpc.vote.leader_id.term)]
                .into_iter()
                .chain(
                    rpc.prev_log_id
                        .iter()
                        .map(|id| ("prev_log_id", id.leader_id.term)),
                )
                .chain(
                    rpc.entries
                        .iter()
                        .map(|e| ("entries", e.log_id.leader_id.term)),
                )
                .chain(
                    rpc.leader_commit
                        .iter()
                        .map(|id| ("leader_commit", id.leader_id.term)),
                ),
        )
        .and_then(|()| {
            super::indexes::check_append(
                rpc.prev_log_id.map(|id| id.index),
                rpc.entries.iter().map(|entry| entry.log_id.index),
                rpc.leader_commit.map(|id| id.index),
            )
        })
        .map_err(|e| Status::invalid_argument(format!("peer message append-entries: {e}")))?;
        let result = self.node.raft().append_entries(rpc).await;
        Ok(Response::new(encode(&result)))
    }

    async fn vote(&self, request: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        self.admit(request.metadata())?;
        let rpc: VoteRequest<NodeId> = decode(request.get_ref(), "vote")?;
        super::indexes::check_terms(
            [("vote", rpc.vote.leader_id.term)].into_iter().chain(
                rpc.last_log_id
                    .iter()
                    .map(|id| ("last_log_id", id.leader_id.term)),
            ),
        )
        .and_then(|()| {
            super::indexes::check_index("last_log_id", rpc.last_log_id.map(|id| id.index))
        })
        .map_err(|e| Status::invalid_argument(format!("peer message vote: {e}")))?;
        let result = self.node.raft().vote(rpc).await;
        Ok(Response::new(encode(&result)))
    }

    async fn install_snapshot(
        &self,
        request: Request<RaftMessage>,
    ) -> Result<Response<RaftMessage>, Status> {
        self.admit(request.metadata())?;
        let message = request.into_inner();
        let mut rpc: InstallSnapshotRequest<TypeConfig> = decode(&message, "install-snapshot")?;
        super::indexes::check_terms(
            [("vote", rpc.vote.leader_id.term)].into_iter().chain(
                rpc.meta
                    .last_log_id
                    .iter()
                    .map(|id| ("meta.last_log_id", id.leader_id.term)),
            ),
        )
        .and_then(|()| {
            super::indexes::check_index("meta.last_log_id", rpc.meta.last_log_id.map(|id| id.index))
        })
        .map_err(|e| Status::invalid_argument(format!("peer message install-snapshot: {e}")))?;
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
        self.admit(request.metadata())?;
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
        self.admit(request.metadata())?;
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
        self.admit(request.metadata())?;
        let control: ElectionControl = decode(request.get_ref(), "trigger-election")?;
        control.duration().map_err(Status::invalid_argument)?;
        self.node.election_control(control);
        Ok(Response::new(encode(&())))
    }

    async fn grant_lease(
        &self,
        request: Request<RaftMessage>,
    ) -> Result<Response<RaftMessage>, Status> {
        self.admit(request.metadata())?;
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
        self.admit(request.metadata())?;
        let () = decode(request.get_ref(), "lease-report")?;
        Ok(Response::new(encode(&self.node.lease_report())))
    }
}
