//! Outgoing peer calls: openraft's network over tonic, and calls to the leader.
//!
//! One lazily connected tonic channel per peer address is shared by every caller; tonic
//! reconnects it when the peer comes back. Each successful exchange records the peer's last
//! contact time, which status reports.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::de::DeserializeOwned;
use tonic::transport::{Channel, Endpoint};
use vnet_proto::vnet::raft::v1::raft_peer_client::RaftPeerClient;
use vnet_proto::vnet::raft::v1::RaftMessage;

use raft_store::{Durability, NodeId, PeerNode, TypeConfig};

use super::{
    decode, encode, ElectionControl, LeaderRequest, LeaderResult, LeaseRenewal, ProbeReply,
};
use crate::lease::{Grant, VoterReport};

/// How long to wait for a TCP connection to a peer.
pub const PEER_CONNECT_TIMEOUT_MS: u64 = 500;
/// How often an HTTP/2 PING checks a peer connection, idle or not.
pub const PEER_KEEPALIVE_INTERVAL_MS: u64 = 500;
/// A PING unanswered this long closes the connection; the next call opens a new one. Together
/// with the interval, a dead connection is noticed within about 1.5 s, well inside the lease,
/// where a partition's TCP retransmission back-off had stalled replication for ten seconds.
pub const PEER_KEEPALIVE_TIMEOUT_MS: u64 = 1_000;
/// Bytes of log entries one AppendEntries carries (always at least one entry, whatever its
/// size). openraft 0.9 gives every AppendEntries exactly one heartbeat interval (100 ms by
/// default) to be sent, decoded, appended and fsynced by the follower, and retries a batch that
/// misses it from the same place, so a batch too large for that never gets through and the
/// follower stops moving. 256 KiB is about 2 ms on a 1 Gb/s link and 21 ms at 100 Mb/s, leaving
/// most of the interval to the follower. A longer batch is cut here and reported to openraft as a
/// partial success, after which it sends the rest at once.
pub const APPEND_BATCH_BYTES_MAX: usize = vnet_model::limits::APPEND_BATCH_BYTES_MAX;

/// Largest peer message accepted or sent: one log entry at `ENTRY_BYTES_MAX` (an AppendEntries
/// holds more than one only within `APPEND_BATCH_BYTES_MAX`, a forwarded write holds one), or a
/// snapshot chunk of `SNAPSHOT_CHUNK_BYTES_MAX` (1 MiB), plus 1 MiB for the JSON around either.
pub const PEER_MESSAGE_BYTES_MAX: usize = vnet_model::limits::ENTRY_BYTES_MAX + 1024 * 1024;

/// How many leading entries, of the encoded `sizes`, one AppendEntries carries: as many as fit
/// in `budget` bytes together, and always the first.
pub fn batch_len(sizes: impl IntoIterator<Item = usize>, budget: usize) -> usize {
    let mut total = 0usize;
    let mut count = 0;
    for size in sizes {
        total = total.saturating_add(size);
        if count > 0 && total > budget {
            break;
        }
        count += 1;
    }
    count
}

/// Why a call to a peer failed, from the caller's point of view.
#[derive(Debug, thiserror::Error)]
pub enum PeerCallError {
    /// The request never reached the peer (no connection): nothing happened there.
    #[error("peer {addr} is unreachable: {status}")]
    Unreachable { addr: String, status: tonic::Status },
    /// The request may have reached the peer, but no answer came back.
    #[error("peer {addr} did not answer: {status}")]
    NoAnswer { addr: String, status: tonic::Status },
    /// The peer answered with an error status (it could not read the request, say).
    #[error("peer {addr} refused the request: {status}")]
    Refused { addr: String, status: tonic::Status },
}

impl PeerCallError {
    fn from_status(addr: &str, status: tonic::Status) -> Self {
        let addr = addr.to_string();
        match status.code() {
            // tonic reports a failed connect as UNAVAILABLE before anything is sent.
            tonic::Code::Unavailable => Self::Unreachable { addr, status },
            tonic::Code::DeadlineExceeded | tonic::Code::Cancelled | tonic::Code::Unknown => {
                Self::NoAnswer { addr, status }
            }
            _ => Self::Refused { addr, status },
        }
    }
}

/// The metadata key naming the caller's cluster on every peer call (absent while the caller has
/// none yet: a fresh node before it founds or joins a cluster).
pub const CLUSTER_ID_HEADER: &str = "x-vnet-cluster-id";
/// The metadata key naming the calling node's id on every peer call.
pub const NODE_ID_HEADER: &str = "x-vnet-node-id";

/// Who this node is on the peer wire: its id and, once known, its cluster's id.
#[derive(Debug, Clone, Default)]
struct Identity {
    node_id: NodeId,
    cluster_id: Option<String>,
}

/// Shared connections to peers, and when each peer last answered.
#[derive(Debug, Clone)]
pub struct PeerClients {
    channels: Arc<Mutex<HashMap<String, Channel>>>,
    /// Mutual TLS to every peer (this node's certificate, peers verified against the cluster
    /// CA); `None`: plaintext.
    tls: Option<Arc<vnet_tls::ClientTls>>,
    last_contact: Arc<Mutex<HashMap<NodeId, Instant>>>,
    identity: Arc<Mutex<Identity>>,
}

// These locks guard plain maps with no invariants spanning calls; a panic while holding one
// cannot leave a map half-updated in a way that matters, so a poisoned lock is used as is.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl PeerClients {
    /// Clients for node `node_id`, which belongs to `cluster_id` if it knows it yet, over TLS
    /// if `tls` is given.
    pub fn new(
        node_id: NodeId,
        cluster_id: Option<String>,
        tls: Option<Arc<vnet_tls::ClientTls>>,
    ) -> Self {
        Self {
            channels: Arc::default(),
            tls,
            last_contact: Arc::default(),
            identity: Arc::new(Mutex::new(Identity {
                node_id,
                cluster_id,
            })),
        }
    }

    /// The cluster id every call carries, once this node has one.
    pub fn cluster_id(&self) -> Option<String> {
        lock(&self.identity).cluster_id.clone()
    }

    pub fn set_cluster_id(&self, cluster_id: String) {
        lock(&self.identity).cluster_id = Some(cluster_id);
    }

    /// A call carrying this node's identity (every peer call goes through here), with a deadline.
    pub fn request<T>(&self, message: T, timeout: Duration) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request.set_timeout(timeout);
        let identity = lock(&self.identity).clone();
        let metadata = request.metadata_mut();
        if let Ok(value) = identity.node_id.to_string().parse() {
            metadata.insert(NODE_ID_HEADER, value);
        }
        // A cluster id is validated ([0-9a-z-]) before it is kept, so it is always a valid
        // header value.
        if let Some(Ok(value)) = identity.cluster_id.map(|id| id.parse()) {
            metadata.insert(CLUSTER_ID_HEADER, value);
        }
        request
    }

    pub fn client(&self, addr: &str) -> Result<RaftPeerClient<Channel>, PeerCallError> {
        let mut channels = lock(&self.channels);
        let channel = match channels.get(addr) {
            Some(channel) => channel.clone(),
            None => {
                let endpoint = Endpoint::from_shared(format!("http://{addr}"))
                    .map_err(|e| PeerCallError::Refused {
                        addr: addr.to_string(),
                        status: tonic::Status::invalid_argument(format!(
                            "peer address {addr:?} is not valid: {e}"
                        )),
                    })?
                    .connect_timeout(Duration::from_millis(PEER_CONNECT_TIMEOUT_MS))
                    .tcp_nodelay(true)
                    // A connection that went silent (its peer restarted, or a partition left
                    // segments in retransmission back-off) is found dead by a missed PING and
                    // replaced, instead of timing out every call until the kernel gives up.
                    .http2_keep_alive_interval(Duration::from_millis(PEER_KEEPALIVE_INTERVAL_MS))
                    .keep_alive_timeout(Duration::from_millis(PEER_KEEPALIVE_TIMEOUT_MS))
                    .keep_alive_while_idle(true);
                let channel = match &self.tls {
                    Some(tls) => {
                        endpoint.connect_with_connector_lazy(vnet_tls::Connector::new(tls.clone()))
                    }
                    None => endpoint.connect_lazy(),
                };
                channels.insert(addr.to_string(), channel.clone());
                channel
            }
        };
        Ok(RaftPeerClient::new(channel)
            .max_decoding_message_size(PEER_MESSAGE_BYTES_MAX)
            .max_encoding_message_size(PEER_MESSAGE_BYTES_MAX))
    }

    pub fn record_contact(&self, id: NodeId) {
        lock(&self.last_contact).insert(id, Instant::now());
    }

    /// Milliseconds since `id` last answered a call from this node, if it ever did.
    pub fn last_contact_ms(&self, id: NodeId) -> Option<u64> {
        lock(&self.last_contact)
            .get(&id)
            .map(|at| at.elapsed().as_millis() as u64)
    }

    /// Sends a request to the leader at `addr` and returns its answer.
    pub async fn to_leader(
        &self,
        addr: &str,
        request: &LeaderRequest,
        timeout: Duration,
    ) -> Result<LeaderResult, PeerCallError> {
        let mut client = self.client(addr)?;
        let mut message = self.request(encode(request), timeout);
        crate::telemetry::inject(message.metadata_mut());
        let reply = client
            .forward(message)
            .await
            .map_err(|status| PeerCallError::from_status(addr, status))?;
        decode(reply.get_ref(), "forward reply").map_err(|status| PeerCallError::Refused {
            addr: addr.to_string(),
            status,
        })
    }

    pub async fn probe(&self, addr: &str, timeout: Duration) -> Result<ProbeReply, PeerCallError> {
        let mut client = self.client(addr)?;
        let message = self.request(encode(&()), timeout);
        let reply = client
            .probe(message)
            .await
            .map_err(|status| PeerCallError::from_status(addr, status))?;
        decode(reply.get_ref(), "probe reply").map_err(|status| PeerCallError::Refused {
            addr: addr.to_string(),
            status,
        })
    }

    /// Asks the voter at `addr` to renew `unit`'s lease.
    pub async fn grant_lease(
        &self,
        addr: &str,
        renewal: &LeaseRenewal,
        timeout: Duration,
    ) -> Result<Result<Grant, String>, PeerCallError> {
        let mut client = self.client(addr)?;
        let message = self.request(encode(renewal), timeout);
        let reply = client
            .grant_lease(message)
            .await
            .map_err(|status| PeerCallError::from_status(addr, status))?;
        decode(reply.get_ref(), "grant-lease reply").map_err(|status| PeerCallError::Refused {
            addr: addr.to_string(),
            status,
        })
    }

    /// Asks the voter at `addr` for its lease report.
    pub async fn lease_report(
        &self,
        addr: &str,
        timeout: Duration,
    ) -> Result<VoterReport, PeerCallError> {
        let mut client = self.client(addr)?;
        let message = self.request(encode(&()), timeout);
        let reply = client
            .lease_report(message)
            .await
            .map_err(|status| PeerCallError::from_status(addr, status))?;
        decode(reply.get_ref(), "lease-report reply").map_err(|status| PeerCallError::Refused {
            addr: addr.to_string(),
            status,
        })
    }

    pub async fn election(
        &self,
        addr: &str,
        control: &ElectionControl,
        timeout: Duration,
    ) -> Result<(), PeerCallError> {
        let mut client = self.client(addr)?;
        let message = self.request(encode(control), timeout);
        client
            .trigger_election(message)
            .await
            .map_err(|status| PeerCallError::from_status(addr, status))?;
        Ok(())
    }
}

/// openraft's network factory: one [`PeerConnection`] per replication target.
#[derive(Debug, Clone)]
pub struct NetworkFactory {
    pub peers: PeerClients,
    /// How far this node's log is on disk: the most it tells a follower is committed.
    pub durability: Durability,
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = PeerConnection;

    async fn new_client(&mut self, target: NodeId, node: &PeerNode) -> Self::Network {
        PeerConnection {
            target,
            addr: node.peer_addr.clone(),
            peers: self.peers.clone(),
            durability: self.durability.clone(),
        }
    }
}

pub struct PeerConnection {
    target: NodeId,
    addr: String,
    peers: PeerClients,
    durability: Durability,
}

type RpcResult<T, E = openraft::error::Infallible> =
    Result<T, RPCError<NodeId, PeerNode, RaftError<NodeId, E>>>;

impl PeerConnection {
    async fn call<T, E>(
        &self,
        message: RaftMessage,
        option: &RPCOption,
        rpc: RpcKind,
    ) -> RpcResult<T, E>
    where
        T: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let mut client = self
            .peers
            .client(&self.addr)
            .map_err(|e| RPCError::Unreachable(Unreachable::new(&e)))?;
        let request = self.peers.request(message, option.hard_ttl());
        let reply = match rpc {
            RpcKind::AppendEntries => client.append_entries(request).await,
            RpcKind::Vote => client.vote(request).await,
            RpcKind::InstallSnapshot => client.install_snapshot(request).await,
        };
        let reply = match reply {
            Ok(reply) => reply.into_inner(),
            Err(status) => {
                let e = PeerCallError::from_status(&self.addr, status);
                return Err(match e {
                    PeerCallError::Unreachable { .. } => {
                        RPCError::Unreachable(Unreachable::new(&e))
                    }
                    _ => RPCError::Network(NetworkError::new(&e)),
                });
            }
        };
        let result: Result<T, RaftError<NodeId, E>> = decode(&reply, rpc.name())
            .map_err(|status| RPCError::Network(NetworkError::new(&status)))?;
        self.peers.record_contact(self.target);
        result.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

#[derive(Clone, Copy)]
enum RpcKind {
    AppendEntries,
    Vote,
    InstallSnapshot,
}

impl RpcKind {
    fn name(self) -> &'static str {
        match self {
            RpcKind::AppendEntries => "append-entries reply",
            RpcKind::Vote => "vote reply",
            RpcKind::InstallSnapshot => "install-snapshot reply",
        }
    }
}

impl RaftNetwork<TypeConfig> for PeerConnection {
    async fn append_entries(
        &mut self,
        mut rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<NodeId>> {
        // Send only what fits `APPEND_BATCH_BYTES_MAX`. The follower commits at most up to the
        // last entry it accepted (min of the leader's commit and its own log), so a shorter
        // batch is an ordinary AppendEntries; its success means exactly that prefix matches.
        let keep = batch_len(
            rpc.entries.iter().map(super::encoded_len),
            APPEND_BATCH_BYTES_MAX,
        );
        let cut_after = if keep < rpc.entries.len() {
            rpc.entries.truncate(keep);
            rpc.entries.last().map(|entry| entry.log_id)
        } else {
            None
        };
        // The leader's commit index may count its own copy before that copy is on disk; a
        // follower must not apply what a crash of the leader could still take from the quorum
        // (see raft-store's `log_store` module doc), so it learns the commit only up to this
        // node's disk. The leader's fsync is usually done before a follower's answer arrives, so
        // this rarely lowers anything; when it does, the next AppendEntries carries the rest.
        rpc.leader_commit = self.durability.cap_commit(rpc.leader_commit);
        let reply: AppendEntriesResponse<NodeId> = self
            .call(encode(&rpc), &option, RpcKind::AppendEntries)
            .await?;
        Ok(match (reply, cut_after) {
            (AppendEntriesResponse::Success, Some(last)) => {
                AppendEntriesResponse::PartialSuccess(Some(last))
            }
            (reply, _) => reply,
        })
    }

    async fn install_snapshot(
        &mut self,
        mut rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<NodeId>, InstallSnapshotError> {
        // The chunk's bytes ride beside the JSON payload, not inside it (JSON would write each
        // byte as a decimal number).
        let data = std::mem::take(&mut rpc.data);
        let mut message = encode(&rpc);
        message.data = data;
        self.call(message, &option, RpcKind::InstallSnapshot).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> RpcResult<VoteResponse<NodeId>> {
        self.call(encode(&rpc), &option, RpcKind::Vote).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_holds_what_fits_the_budget_and_at_least_one_entry() {
        assert_eq!(batch_len([], 100), 0);
        assert_eq!(batch_len([40, 40, 40], 100), 2);
        assert_eq!(batch_len([40, 60, 1], 100), 2);
        assert_eq!(batch_len([100], 100), 1);
        // One entry larger than the budget still goes, alone.
        assert_eq!(batch_len([1_000, 1], 100), 1);
        assert_eq!(batch_len([usize::MAX, usize::MAX], 100), 1);
        // 300 entries of 5 KB, openraft's default batch, go as 52 at a time.
        assert_eq!(
            batch_len(std::iter::repeat_n(5_000, 300), APPEND_BATCH_BYTES_MAX),
            52
        );
    }
}
