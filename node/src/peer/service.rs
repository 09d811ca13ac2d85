//! The `vnet.raft.v1.RaftPeer` server: hands Raft messages to openraft and leader requests to the
//! node. A message it cannot read is refused with `INVALID_ARGUMENT` naming what was wrong.

use openraft::error::{InstallSnapshotError, RaftError};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, VoteRequest,
};
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
use crate::auth::Principal;
use crate::data_file::validate_cluster_id;
use crate::node::Node;
use crate::shutdown::ShutdownSignal;

pub struct PeerService {
    node: Node,
    chunks: ChunkCheck,
    /// Ends the open AppendEntries streams, which would otherwise hold the server's graceful
    /// shutdown open for as long as their callers keep them.
    stopping: ShutdownSignal,
}

impl PeerService {
    pub fn new(node: Node, stopping: ShutdownSignal) -> Self {
        Self {
            node,
            chunks: ChunkCheck::default(),
            stopping,
        }
    }

    /// Lets in a call only from a member of this node's cluster (see [`admission`]), and over
    /// TLS only from a member's own certificate (see [`peer_caller`]). A node whose id a
    /// recovery removed is refused for good, whatever it says of itself: its vote and log
    /// predate the recovery (ARCHITECTURE.md, "Operating through bad days"). Returns the node
    /// id the caller's certificate proves (`None` without TLS), for the message checks
    /// ([`speaks_as`]).
    fn admit_as<T>(
        &self,
        request: &Request<T>,
        headerless: Headerless,
    ) -> Result<Option<NodeId>, Status> {
        admit(&self.node, request, headerless)
    }
}

/// [`PeerService::admit_as`] for `node`.
fn admit<T>(
    node: &Node,
    request: &Request<T>,
    headerless: Headerless,
) -> Result<Option<NodeId>, Status> {
    let metadata = request.metadata();
    let principal = crate::auth::principal(request)?;
    let header_id = metadata
        .get(NODE_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let members = members(node);
    let proven = peer_caller(&principal, header_id, members.as_ref())
        .map_err(|why| Status::permission_denied(format!("node {}: {why}", node.id())))?;
    let caller_id = metadata
        .get(NODE_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(id) = caller_id {
        if node.view().read(|a| a.state.is_removed_id(id)) {
            return Err(Status::failed_precondition(format!(
                "node {id} was removed from this cluster by a recovery without a quorum; it \
                 may come back only with an empty data directory under a new id (`vnetctl \
                 member add`)"
            )));
        }
    }
    let caller = match metadata.get(CLUSTER_ID_HEADER) {
        None => None,
        Some(value) => {
            let caller = value.to_str().map_err(|_| {
                Status::invalid_argument(format!("{CLUSTER_ID_HEADER} is not text"))
            })?;
            validate_cluster_id(caller)
                .map_err(|e| Status::invalid_argument(format!("{CLUSTER_ID_HEADER}: {e}")))?;
            Some(caller)
        }
    };
    let caller_node = metadata
        .get(NODE_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(|v| crate::error::echoed(v).to_string())
        .unwrap_or_else(|| "?".to_string());
    let fresh = {
        let metrics = node.raft().metrics().borrow().clone();
        metrics.current_term == 0 && metrics.last_log_index.is_none()
    };
    let ours = node.cluster_id();
    match admission(ours.as_deref(), caller, fresh, headerless) {
        Admission::Admit => Ok(proven),
        Admission::Adopt(caller) => {
            node.adopt_cluster_id(caller).map_err(|e| {
                Status::unavailable(format!("cannot record the cluster id {caller}: {e}"))
            })?;
            Ok(proven)
        }
        Admission::Refuse(why) => Err(Status::failed_precondition(format!(
            "node {} refuses the caller (node {caller_node}): {why}",
            node.id()
        ))),
    }
}

/// The node ids that may speak on `node`'s peer port: the Raft membership (voters and learners)
/// and the founding members of --initial-cluster. `None` while it knows of neither (a node
/// started empty to be added with `vnetctl member add`, which learns the membership from the
/// leader's first messages): then any node certificate of the cluster CA is admitted, and the
/// cluster-id admission still applies.
fn members(node: &Node) -> Option<std::collections::BTreeSet<NodeId>> {
    let metrics = node.raft().metrics().borrow().clone();
    let mut members: std::collections::BTreeSet<NodeId> = metrics
        .membership_config
        .membership()
        .nodes()
        .map(|(id, _)| *id)
        .collect();
    members.extend(node.config().initial_cluster.iter().map(|m| m.id));
    (!members.is_empty()).then_some(members)
}

/// Which node a peer call comes from, as the transport proves it. Without TLS
/// ([`Principal::Insecure`]) nothing is proven: `Ok(None)`. Over TLS only a node certificate
/// may speak, the node it names must be the one the call's `x-vnet-node-id` claims, and a member
/// (when `members` is known): a client certificate, a certificate of node 2 claiming node 3, or
/// a non-member's certificate is refused.
pub fn peer_caller(
    principal: &Principal,
    header_id: Option<NodeId>,
    members: Option<&std::collections::BTreeSet<NodeId>>,
) -> Result<Option<NodeId>, String> {
    let id = match principal {
        Principal::Insecure => return Ok(None),
        Principal::Client(name) => {
            return Err(format!(
                "client certificate {name:?} cannot speak on the peer port: only a member's \
                 node certificate (SAN URI vnet://node/<id>) can"
            ))
        }
        Principal::Node(id) => *id,
    };
    if let Some(claimed) = header_id.filter(|claimed| *claimed != id) {
        return Err(format!(
            "the caller's certificate names node {id}, but the call claims to come from node \
             {claimed}"
        ));
    }
    if let Some(members) = members {
        if !members.contains(&id) {
            return Err(format!(
                "node {id}'s certificate is valid, but node {id} is not a member of this \
                 cluster"
            ));
        }
    }
    Ok(Some(id))
}

/// Checks that a message's member id (a vote's candidate, an append's or a snapshot's leader, a
/// lease's unit) is the node the caller's certificate names: a member cannot speak for another.
pub fn speaks_as(proven: Option<NodeId>, claimed: NodeId, field: &str) -> Result<(), Status> {
    match proven {
        Some(id) if id != claimed => Err(Status::permission_denied(format!(
            "the caller's certificate names node {id}, but {field} names node {claimed}: a \
             node speaks only for itself"
        ))),
        _ => Ok(()),
    }
}

/// Whether a call without a cluster id may come in: only a probe, which a fresh founder sends
/// before it has drawn the cluster's id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Headerless {
    Admit,
    Refuse,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Admission<'a> {
    Admit,
    /// A fresh node takes the caller's cluster id, durably, before answering.
    Adopt(&'a str),
    Refuse(String),
}

/// Who may speak to a node on the peer port, by cluster id. `ours` is this node's id (none for a
/// fresh node, or one from a build before cluster ids), `caller` the id the call carries, and
/// `fresh` whether this node holds no vote and no log.
///
/// - Same id: admitted. Another id: refused, naming both (it was pointed at the wrong peers, or
///   belongs to the cluster a backup was restored from; its votes or entries must never mix with
///   ours).
/// - A node without an id adopts the caller's only while fresh: one that already holds a vote or
///   a log belongs to a cluster founded before ids, and a caller with an id is from another one
///   (else a restored cluster's call could make an old member adopt its id and join it).
/// - A call without an id reaches a node with one only as a probe (a fresh founder probing its
///   peers before it draws the id); votes, entries and leases without an id are refused (a
///   member of a pre-id cluster must not vote in a restored one). A node without an id admits
///   them: a pre-id cluster during a rolling upgrade.
pub fn admission<'a>(
    ours: Option<&str>,
    caller: Option<&'a str>,
    fresh: bool,
    headerless: Headerless,
) -> Admission<'a> {
    match (ours, caller) {
        (Some(ours), Some(caller)) if ours == caller => Admission::Admit,
        (Some(ours), Some(caller)) => Admission::Refuse(format!(
            "it belongs to cluster {ours}, the caller to cluster {caller}: a node of another \
             cluster is refused (check its --initial-cluster and peer addresses; a cluster \
             restored from a backup has a new id, and members of the old one cannot join it)"
        )),
        (None, Some(caller)) if fresh => Admission::Adopt(caller),
        (None, Some(caller)) => Admission::Refuse(format!(
            "it holds a log of a cluster founded without a cluster id, and the caller belongs to \
             cluster {caller}: a node of another cluster is refused"
        )),
        (Some(_), None) if headerless == Headerless::Admit => Admission::Admit,
        (Some(ours), None) => Admission::Refuse(format!(
            "it belongs to cluster {ours}, and the caller names no cluster (a member of a \
             cluster founded without ids, or of another cluster)"
        )),
        (None, None) => Admission::Admit,
    }
}

/// Returns once what `result`, an answer to an AppendEntries whose entries (or, with none, its
/// `prev_log_id`) end at `sent_upto`, tells the leader is on this node's disk.
///
/// A success tells the leader this node's log matches up to there, and the leader counts that
/// toward its commit quorum: it must be on this disk. Entries received are fsynced before
/// openraft hears of them, but a match can also cover entries this node wrote as leader and
/// acknowledged before their fsync (raft-store's `log_store`), whose sync may still be queued if
/// it stepped down just now. A refusal claims nothing and goes at once.
async fn once_on_disk(
    durability: &raft_store::Durability,
    sent_upto: Option<u64>,
    result: &Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>>,
) -> Result<(), Status> {
    let matched = match result {
        Ok(AppendEntriesResponse::Success) => sent_upto,
        Ok(AppendEntriesResponse::PartialSuccess(upto)) => upto.map(|id| id.index),
        _ => None,
    };
    match matched {
        Some(index) => durability.wait_for(index).await.map_err(|e| {
            Status::unavailable(format!("this node's Raft log cannot be synced: {e}"))
        }),
        None => Ok(()),
    }
}

/// One AppendEntries from a caller admitted as `proven`: checked, appended, and answered once the
/// answer is true on disk.
async fn append_one(
    node: &Node,
    proven: Option<NodeId>,
    message: &RaftMessage,
) -> Result<RaftMessage, Status> {
    let rpc: AppendEntriesRequest<TypeConfig> = decode(message, "append-entries")?;
    speaks_as(
        proven,
        rpc.vote.leader_id.node_id,
        "append-entries vote.leader_id",
    )?;
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
    let sent_upto = rpc
        .entries
        .last()
        .map(|entry| entry.log_id.index)
        .or(rpc.prev_log_id.map(|id| id.index));
    node.metrics_handle().append_entries_received.inc();
    let result = node.raft().append_entries(rpc).await;
    once_on_disk(node.durability(), sent_upto, &result).await?;
    Ok(encode(&result))
}

/// The answers of an `AppendEntriesStream`, one per AppendEntries, in order.
pub type AppendReplies =
    std::pin::Pin<Box<dyn futures::Stream<Item = Result<RaftMessage, Status>> + Send>>;

#[tonic::async_trait]
impl RaftPeer for PeerService {
    async fn append_entries(
        &self,
        request: Request<RaftMessage>,
    ) -> Result<Response<RaftMessage>, Status> {
        let proven = self.admit_as(&request, Headerless::Refuse)?;
        append_one(&self.node, proven, request.get_ref())
            .await
            .map(Response::new)
    }

    type AppendEntriesStreamStream = AppendReplies;

    async fn append_entries_stream(
        &self,
        request: Request<tonic::Streaming<RaftMessage>>,
    ) -> Result<Response<AppendReplies>, Status> {
        self.admit_as(&request, Headerless::Refuse)?;
        // Every message is admitted again, under the headers and certificate the stream was
        // opened with: what admission depends on (the membership, a recovery's removals) can
        // change while a stream stays open.
        let (metadata, extensions, incoming) = request.into_parts();
        let opened = Request::from_parts(metadata, extensions, ());
        // One shutdown future for the stream's life, not one per message.
        let stopped: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> =
            Box::pin(self.stopping.triggered());
        let state = Some((self.node.clone(), opened, incoming, stopped));
        let replies = futures::stream::unfold(state, |state| async move {
            let (node, opened, mut incoming, mut stopping) = state?;
            let next = tokio::select! {
                next = incoming.message() => next,
                () = &mut stopping => {
                    let stopped = Status::unavailable("this node is shutting down");
                    return Some((Err(stopped), None));
                }
            };
            let message = match next {
                Ok(Some(message)) => message,
                Ok(None) => return None,
                Err(status) => return Some((Err(status), None)),
            };
            let reply = match admit(&node, &opened, Headerless::Refuse) {
                Ok(proven) => append_one(&node, proven, &message).await,
                Err(status) => Err(status),
            };
            match reply {
                Ok(reply) => Some((Ok(reply), Some((node, opened, incoming, stopping)))),
                // An error ends the stream with its status, as it ends a unary call.
                Err(status) => Some((Err(status), None)),
            }
        });
        Ok(Response::new(Box::pin(replies)))
    }

    async fn vote(&self, request: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        let proven = self.admit_as(&request, Headerless::Refuse)?;
        let rpc: VoteRequest<NodeId> = decode(request.get_ref(), "vote")?;
        speaks_as(proven, rpc.vote.leader_id.node_id, "vote's candidate")?;
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
        let proven = self.admit_as(&request, Headerless::Refuse)?;
        let message = request.into_inner();
        let mut rpc: InstallSnapshotRequest<TypeConfig> = decode(&message, "install-snapshot")?;
        speaks_as(
            proven,
            rpc.vote.leader_id.node_id,
            "install-snapshot vote.leader_id",
        )?;
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
        self.admit_as(&request, Headerless::Refuse)?;
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
        self.admit_as(&request, Headerless::Admit)?;
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
        self.admit_as(&request, Headerless::Refuse)?;
        let control: ElectionControl = decode(request.get_ref(), "trigger-election")?;
        control.duration().map_err(Status::invalid_argument)?;
        self.node.election_control(control);
        Ok(Response::new(encode(&())))
    }

    async fn grant_lease(
        &self,
        request: Request<RaftMessage>,
    ) -> Result<Response<RaftMessage>, Status> {
        let proven = self.admit_as(&request, Headerless::Refuse)?;
        let renewal: LeaseRenewal = decode(request.get_ref(), "grant-lease")?;
        vnet_model::name::validate_name("unit", &renewal.unit)
            .map_err(|e| Status::invalid_argument(format!("peer message grant-lease: {e}")))?;
        if let Some(id) = proven {
            // A unit renews its own lease only: a lease lets a unit present identities.
            let unit_id = self
                .node
                .view()
                .read(|a| a.state.member_by_name(&renewal.unit).map(|m| m.id));
            if unit_id != Some(id) {
                return Err(Status::permission_denied(format!(
                    "the caller's certificate names node {id}, but grant-lease asks for unit \
                     {:?}: a unit renews only its own lease",
                    crate::error::echoed(&renewal.unit)
                )));
            }
        }
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
        self.admit_as(&request, Headerless::Refuse)?;
        let () = decode(request.get_ref(), "lease-report")?;
        Ok(Response::new(encode(&self.node.lease_report())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    /// Holds the store's first fsync until told.
    #[derive(Debug)]
    struct HeldSync(std::sync::Mutex<Option<std::sync::mpsc::Receiver<()>>>);

    impl raft_store::StoreObserver for HeldSync {
        fn log_synced(&self, _took: Duration) {
            if let Some(gate) = self.0.lock().unwrap().take() {
                let _ = gate.recv_timeout(Duration::from_secs(20));
            }
        }
        fn snapshot_built(&self, _took: Duration, _bytes: u64) {}
    }

    /// A node that, leading term 1, wrote entries 1..=3 and acknowledged them before their
    /// fsync, which is still held, then stepped down: the next leader's AppendEntries that
    /// matches them is answered only once they are on disk; a conflict is answered at once.
    #[tokio::test]
    async fn a_match_is_answered_only_once_on_this_disk() {
        use openraft::storage::RaftLogStorage;
        use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId, Vote};
        let dir = tempfile::tempdir().expect("tempdir");
        let (open, gate) = std::sync::mpsc::channel();
        let observer = Arc::new(HeldSync(std::sync::Mutex::new(Some(gate))));
        let (log, _state_machine) =
            raft_store::open_observed(dir.path(), observer).expect("open the store");
        let mut log = log.acknowledge_own_appends_early(1);
        log.save_vote(&Vote::new_committed(1, 1))
            .await
            .expect("vote");
        let durability = log.durability();
        let entries: Vec<Entry<TypeConfig>> = (1..=3)
            .map(|index| Entry {
                log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
                payload: EntryPayload::Blank,
            })
            .collect();
        log.append_for_test(&entries).expect("append");

        let success = Ok(AppendEntriesResponse::Success);
        let conflict = Ok(AppendEntriesResponse::Conflict);
        tokio::time::timeout(
            Duration::from_secs(20),
            once_on_disk(&durability, Some(3), &conflict),
        )
        .await
        .expect("a conflict claims nothing and goes at once")
        .expect("no error");
        let answering = once_on_disk(&durability, Some(3), &success);
        tokio::pin!(answering);
        assert!(
            tokio::time::timeout(Duration::from_millis(50), &mut answering)
                .await
                .is_err(),
            "a match answered before the entries were on disk"
        );
        open.send(()).expect("release the fsync");
        tokio::time::timeout(Duration::from_secs(20), answering)
            .await
            .expect("answered once on disk")
            .expect("no error");
    }

    const OURS: &str = "c0ffee00c0ffee00";
    const OTHER: &str = "deadbeefdeadbeef";

    #[test]
    fn only_members_of_this_cluster_speak_and_only_a_fresh_node_adopts_an_id() {
        use Headerless::{Admit, Refuse};
        assert_eq!(
            admission(Some(OURS), Some(OURS), false, Refuse),
            Admission::Admit
        );
        let other = admission(Some(OURS), Some(OTHER), false, Refuse);
        assert!(
            matches!(&other, Admission::Refuse(why) if why.contains(OURS) && why.contains(OTHER)),
            "{other:?}"
        );
        // A fresh node takes the caller's id; one holding a log of a pre-id cluster does not.
        assert_eq!(
            admission(None, Some(OTHER), true, Refuse),
            Admission::Adopt(OTHER)
        );
        assert!(matches!(
            admission(None, Some(OTHER), false, Refuse),
            Admission::Refuse(_)
        ));
        // Without an id, only a probe reaches a node that has one.
        assert_eq!(admission(Some(OURS), None, false, Admit), Admission::Admit);
        assert!(matches!(
            admission(Some(OURS), None, false, Refuse),
            Admission::Refuse(_)
        ));
        // A pre-id cluster during an upgrade: nobody has an id, everything is admitted.
        assert_eq!(admission(None, None, false, Refuse), Admission::Admit);
    }
}
