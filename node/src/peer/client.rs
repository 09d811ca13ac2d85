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

/// How long after a follower last acknowledged an AppendEntries of this replication stream a
/// commit-only AppendEntries to it waits (ARCHITECTURE.md, "Commit notices"). openraft 0.9 sends
/// one after every commit; with a write or two in flight, the next write's AppendEntries carries
/// the commit anyway, within a millisecond. At most this long when the cluster goes quiet, a
/// heartbeat carries it instead.
pub const COMMIT_NOTICE_DEFER_MS: u64 = 5;

/// How many open AppendEntries streams to one peer may wait unused: the replication stream's,
/// and those of concurrent read-index rounds.
pub const IDLE_APPEND_STREAMS_MAX: usize = 4;
/// How long a peer that lacked `AppendEntriesStream` (an older `vnetd`) gets unary calls before
/// a stream is tried again.
pub const UNARY_APPEND_RETRY_MS: u64 = 60_000;

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
    /// Open AppendEntries streams not in use, by peer address.
    idle_streams: Arc<Mutex<HashMap<String, Vec<AppendStream>>>>,
    /// Peers that answered `AppendEntriesStream` with UNIMPLEMENTED, and until when they get
    /// unary calls.
    unary_until: Arc<Mutex<HashMap<String, Instant>>>,
}

/// One open `AppendEntriesStream`: AppendEntries go in through `sender`, answers come back in
/// order on `replies`. Used by one call at a time; a call that does not finish drops it, so an
/// answer is never read by the wrong call.
struct AppendStream {
    sender: tokio::sync::mpsc::Sender<RaftMessage>,
    replies: tonic::Streaming<RaftMessage>,
    /// The cluster id in the headers it was opened with.
    cluster_id: Option<String>,
}

impl std::fmt::Debug for AppendStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppendStream")
            .field("cluster_id", &self.cluster_id)
            .finish_non_exhaustive()
    }
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
            idle_streams: Arc::default(),
            unary_until: Arc::default(),
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
        let mut request = self.identified(message);
        request.set_timeout(timeout);
        request
    }

    /// A call carrying this node's identity, without a deadline (a stream that stays open).
    fn identified<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
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

    /// Sends one AppendEntries to the peer at `addr` and returns its answer: over an open
    /// `AppendEntriesStream` (reused, or opened now), or as a unary call to a peer without them.
    pub async fn append_entries(
        &self,
        addr: &str,
        message: RaftMessage,
        timeout: Duration,
    ) -> Result<RaftMessage, PeerCallError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut stream = match self.idle_stream(addr) {
            Some(stream) => stream,
            None if self.unary_only(addr) => {
                return self.append_entries_unary(addr, message, timeout).await
            }
            None => match self.open_append_stream(addr, deadline).await {
                Err(status) if status.code() == tonic::Code::Unimplemented => {
                    lock(&self.unary_until).insert(
                        addr.to_string(),
                        Instant::now() + Duration::from_millis(UNARY_APPEND_RETRY_MS),
                    );
                    return self.append_entries_unary(addr, message, timeout).await;
                }
                Err(status) => return Err(PeerCallError::from_status(addr, status)),
                Ok(stream) => stream,
            },
        };
        let no_answer = |status| PeerCallError::NoAnswer {
            addr: addr.to_string(),
            status,
        };
        if let Err(unsent) = stream.sender.send(message).await {
            // The stream ended while it was idle (its connection died, say): nothing was sent.
            // Once more on a stream opened now.
            stream = self
                .open_append_stream(addr, deadline)
                .await
                .map_err(|status| PeerCallError::from_status(addr, status))?;
            if stream.sender.send(unsent.0).await.is_err() {
                return Err(PeerCallError::Unreachable {
                    addr: addr.to_string(),
                    status: tonic::Status::unavailable("the AppendEntries stream has closed"),
                });
            }
        }
        match tokio::time::timeout_at(deadline, stream.replies.message()).await {
            Ok(Ok(Some(reply))) => {
                self.put_idle_stream(addr, stream);
                Ok(reply)
            }
            Ok(Ok(None)) => Err(no_answer(tonic::Status::unavailable(
                "the AppendEntries stream ended without an answer",
            ))),
            Ok(Err(status)) => Err(match status.code() {
                tonic::Code::Unavailable
                | tonic::Code::DeadlineExceeded
                | tonic::Code::Cancelled
                | tonic::Code::Unknown => no_answer(status),
                _ => PeerCallError::Refused {
                    addr: addr.to_string(),
                    status,
                },
            }),
            Err(_) => Err(no_answer(tonic::Status::deadline_exceeded(
                "no AppendEntries answer in time",
            ))),
        }
    }

    async fn append_entries_unary(
        &self,
        addr: &str,
        message: RaftMessage,
        timeout: Duration,
    ) -> Result<RaftMessage, PeerCallError> {
        let mut client = self.client(addr)?;
        client
            .append_entries(self.request(message, timeout))
            .await
            .map(tonic::Response::into_inner)
            .map_err(|status| PeerCallError::from_status(addr, status))
    }

    /// Opens a stream to `addr` by `deadline`. A stream not open in time fails as UNAVAILABLE:
    /// no AppendEntries was sent on it.
    async fn open_append_stream(
        &self,
        addr: &str,
        deadline: tokio::time::Instant,
    ) -> Result<AppendStream, tonic::Status> {
        let mut client = self.client(addr).map_err(|e| match e {
            PeerCallError::Unreachable { status, .. }
            | PeerCallError::NoAnswer { status, .. }
            | PeerCallError::Refused { status, .. } => status,
        })?;
        let (sender, receiver) = tokio::sync::mpsc::channel(1);
        let cluster_id = self.cluster_id();
        let request = self.identified(tokio_stream::wrappers::ReceiverStream::new(receiver));
        let opened = tokio::time::timeout_at(deadline, client.append_entries_stream(request))
            .await
            .map_err(|_| tonic::Status::unavailable("no AppendEntries stream opened in time"))?;
        let replies = opened?.into_inner();
        Ok(AppendStream {
            sender,
            replies,
            cluster_id,
        })
    }

    /// An open stream to `addr` nobody is using, opened under this node's current cluster id.
    fn idle_stream(&self, addr: &str) -> Option<AppendStream> {
        let cluster_id = self.cluster_id();
        let mut idle = lock(&self.idle_streams);
        let streams = idle.get_mut(addr)?;
        while let Some(stream) = streams.pop() {
            if !stream.sender.is_closed() && stream.cluster_id == cluster_id {
                return Some(stream);
            }
        }
        None
    }

    fn put_idle_stream(&self, addr: &str, stream: AppendStream) {
        let mut idle = lock(&self.idle_streams);
        let streams = idle.entry(addr.to_string()).or_default();
        if streams.len() < IDLE_APPEND_STREAMS_MAX {
            streams.push(stream);
        }
    }

    fn unary_only(&self, addr: &str) -> bool {
        let mut unary = lock(&self.unary_until);
        match unary.get(addr) {
            Some(until) if Instant::now() < *until => true,
            Some(_) => {
                unary.remove(addr);
                false
            }
            None => false,
        }
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

/// Commit indexes owed to followers whose commit-only AppendEntries were deferred, and when the
/// heartbeat that pays them is due (ARCHITECTURE.md, "Commit notices").
#[derive(Debug, Clone, Default)]
pub struct OwedCommits {
    inner: Arc<OwedInner>,
}

#[derive(Debug, Default)]
struct OwedInner {
    due: Mutex<Option<tokio::time::Instant>>,
    notify: tokio::sync::Notify,
}

impl OwedCommits {
    /// Some follower must hear of the current commit index by `at`.
    fn owe_by(&self, at: tokio::time::Instant) {
        let mut due = lock(&self.inner.due);
        if due.is_none_or(|due| at < due) {
            *due = Some(at);
            self.inner.notify.notify_one();
        }
    }

    /// Waits until a heartbeat is due to pay what is owed, and takes the debt: a heartbeat sent
    /// now reaches every replication stream, and one that still defers owes again.
    pub async fn due(&self) {
        loop {
            let due = *lock(&self.inner.due);
            match due {
                Some(at) if at <= tokio::time::Instant::now() => {
                    *lock(&self.inner.due) = None;
                    return;
                }
                Some(at) => {
                    tokio::select! {
                        _ = tokio::time::sleep_until(at) => {}
                        _ = self.inner.notify.notified() => {}
                    }
                }
                None => self.inner.notify.notified().await,
            }
        }
    }
}

/// openraft's network factory: one [`PeerConnection`] per replication target.
#[derive(Debug, Clone)]
pub struct NetworkFactory {
    pub peers: PeerClients,
    /// How far this node's log is on disk: the most it tells a follower is committed.
    pub durability: Durability,
    /// Where a connection that defers a commit notice records when it is due.
    pub owed: OwedCommits,
    /// How long a commit notice may wait: `COMMIT_NOTICE_DEFER_MS`.
    pub commit_notice_defer: Duration,
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = PeerConnection;

    async fn new_client(&mut self, target: NodeId, node: &PeerNode) -> Self::Network {
        PeerConnection {
            target,
            addr: node.peer_addr.clone(),
            peers: self.peers.clone(),
            durability: self.durability.clone(),
            owed: self.owed.clone(),
            commit_notice_defer: self.commit_notice_defer,
            acked: None,
        }
    }
}

pub struct PeerConnection {
    target: NodeId,
    addr: String,
    peers: PeerClients,
    durability: Durability,
    owed: OwedCommits,
    commit_notice_defer: Duration,
    /// The last AppendEntries through this connection that the follower answered with a match.
    acked: Option<Acked>,
}

/// An AppendEntries the follower acknowledged: under which vote, up to which entry, and when it
/// was sent.
#[derive(Debug)]
struct Acked {
    vote: openraft::Vote<NodeId>,
    matching: Option<openraft::LogId<NodeId>>,
    sent_at: tokio::time::Instant,
}

impl Acked {
    /// Whether `rpc` only tells the follower a newer commit index, within `defer` of this
    /// acknowledgement, so that it may wait; if so, by when it must be sent.
    ///
    /// Safety (ARCHITECTURE.md, "Commit notices"): the answer given instead of the follower's is
    /// the one it already gave, under the same vote, for the same prefix of the log: a delayed
    /// duplicate of a real reply, which Raft tolerates from any network. It matches no entry the
    /// follower had not already matched, so no commit ever counts on it. A follower that has
    /// since moved to a newer vote says so in the next exchange, at most `defer` later.
    fn defers(
        &self,
        rpc: &AppendEntriesRequest<TypeConfig>,
        now: tokio::time::Instant,
        defer: Duration,
    ) -> Option<tokio::time::Instant> {
        let due = self.sent_at + defer;
        (rpc.entries.is_empty()
            && rpc.vote == self.vote
            && rpc.prev_log_id == self.matching
            && now < due)
            .then_some(due)
    }
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
        let timeout = option.hard_ttl();
        let reply = match rpc {
            RpcKind::AppendEntries => {
                self.peers
                    .append_entries(&self.addr, message, timeout)
                    .await
            }
            RpcKind::Vote | RpcKind::InstallSnapshot => {
                let mut client = self
                    .peers
                    .client(&self.addr)
                    .map_err(|e| RPCError::Unreachable(Unreachable::new(&e)))?;
                let request = self.peers.request(message, timeout);
                let reply = match rpc {
                    RpcKind::Vote => client.vote(request).await,
                    _ => client.install_snapshot(request).await,
                };
                reply
                    .map(tonic::Response::into_inner)
                    .map_err(|status| PeerCallError::from_status(&self.addr, status))
            }
        };
        let reply = reply.map_err(|e| match e {
            PeerCallError::Unreachable { .. } => RPCError::Unreachable(Unreachable::new(&e)),
            _ => RPCError::Network(NetworkError::new(&e)),
        })?;
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
        let now = tokio::time::Instant::now();
        let deferred = self
            .acked
            .as_ref()
            .and_then(|acked| acked.defers(&rpc, now, self.commit_notice_defer));
        if let Some(due) = deferred {
            self.owed.owe_by(due);
            return Ok(AppendEntriesResponse::Success);
        }
        let sent = self
            .call(encode(&rpc), &option, RpcKind::AppendEntries)
            .await;
        let reply: AppendEntriesResponse<NodeId> = match sent {
            Ok(reply) => reply,
            Err(e) => {
                self.acked = None;
                return Err(e);
            }
        };
        let matching = rpc
            .entries
            .last()
            .map(|entry| entry.log_id)
            .or(rpc.prev_log_id);
        self.acked = matches!(reply, AppendEntriesResponse::Success).then(|| Acked {
            vote: rpc.vote,
            matching,
            sent_at: now,
        });
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

    use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId, Vote};
    use tokio::time::Instant;
    use vnet_proto::vnet::raft::v1::raft_peer_server::{RaftPeer, RaftPeerServer};

    fn log_id(term: u64, index: u64) -> LogId<NodeId> {
        LogId::new(CommittedLeaderId::new(term, 1), index)
    }

    fn append(
        term: u64,
        prev: Option<LogId<NodeId>>,
        entries: &[LogId<NodeId>],
        commit: Option<LogId<NodeId>>,
    ) -> AppendEntriesRequest<TypeConfig> {
        AppendEntriesRequest {
            vote: Vote::new_committed(term, 1),
            prev_log_id: prev,
            entries: entries
                .iter()
                .map(|&log_id| Entry {
                    log_id,
                    payload: EntryPayload::Blank,
                })
                .collect(),
            leader_commit: commit,
        }
    }

    #[test]
    fn only_a_commit_notice_for_an_acknowledged_prefix_of_the_same_vote_waits() {
        let now = Instant::now();
        let defer = Duration::from_millis(COMMIT_NOTICE_DEFER_MS);
        let acked = Acked {
            vote: Vote::new_committed(2, 1),
            matching: Some(log_id(2, 7)),
            sent_at: now,
        };
        let due = now + defer;
        let notice = append(2, Some(log_id(2, 7)), &[], Some(log_id(2, 7)));
        assert_eq!(acked.defers(&notice, now, defer), Some(due));
        assert_eq!(
            acked.defers(&notice, due - Duration::from_micros(1), defer),
            Some(due)
        );
        // Past the window it goes.
        assert_eq!(acked.defers(&notice, due, defer), None);
        // Entries always go.
        let entries = append(2, Some(log_id(2, 7)), &[log_id(2, 8)], Some(log_id(2, 7)));
        assert_eq!(acked.defers(&entries, now, defer), None);
        // A prefix the follower has not acknowledged (openraft probing back), or another vote,
        // is a question only the follower can answer.
        let other_prefix = append(2, Some(log_id(2, 6)), &[], Some(log_id(2, 7)));
        assert_eq!(acked.defers(&other_prefix, now, defer), None);
        let other_vote = append(3, Some(log_id(2, 7)), &[], Some(log_id(2, 7)));
        assert_eq!(acked.defers(&other_vote, now, defer), None);
        assert_eq!(acked.defers(&notice, now, Duration::ZERO), None);
    }

    #[tokio::test(start_paused = true)]
    async fn owed_commits_fall_due_at_the_earliest_deadline_and_are_taken_once() {
        let owed = OwedCommits::default();
        let start = Instant::now();
        owed.owe_by(start + Duration::from_millis(5));
        owed.owe_by(start + Duration::from_millis(3));
        owed.owe_by(start + Duration::from_millis(9));
        owed.due().await;
        assert_eq!(start.elapsed(), Duration::from_millis(3));
        // Taken: nothing is due until something is owed again.
        let waiting = tokio::time::timeout(Duration::from_secs(60), owed.due()).await;
        assert!(waiting.is_err(), "a debt was paid twice");
        let again = Instant::now();
        let later = owed.clone();
        let due = tokio::spawn(async move { later.due().await });
        tokio::task::yield_now().await;
        owed.owe_by(again + Duration::from_millis(4));
        due.await.expect("due");
        assert_eq!(again.elapsed(), Duration::from_millis(4));
    }

    /// A follower that answers every AppendEntries with the next scripted reply and counts what
    /// it was sent.
    #[derive(Clone)]
    struct ScriptedFollower {
        replies: Arc<Mutex<Vec<AppendEntriesResponse<NodeId>>>>,
        received: Arc<Mutex<Vec<AppendEntriesRequest<TypeConfig>>>>,
        /// Whether it has `AppendEntriesStream` (an older `vnetd` has not).
        streams: bool,
        /// Streams opened to it.
        opened: Arc<std::sync::atomic::AtomicUsize>,
        /// Ends each stream after this many answers, as a follower that restarts would.
        answers_per_stream: usize,
    }

    type Answer = Result<tonic::Response<RaftMessage>, tonic::Status>;

    fn unused() -> Answer {
        Err(tonic::Status::unimplemented("not used by this test"))
    }

    #[tonic::async_trait]
    impl RaftPeer for ScriptedFollower {
        async fn append_entries(&self, request: tonic::Request<RaftMessage>) -> Answer {
            let rpc: AppendEntriesRequest<TypeConfig> =
                super::decode(request.get_ref(), "append-entries")?;
            lock(&self.received).push(rpc);
            let reply = lock(&self.replies).remove(0);
            Ok(tonic::Response::new(encode(&Ok::<
                _,
                RaftError<NodeId, openraft::error::Infallible>,
            >(reply))))
        }
        type AppendEntriesStreamStream = crate::peer::service::AppendReplies;

        async fn append_entries_stream(
            &self,
            request: tonic::Request<tonic::Streaming<RaftMessage>>,
        ) -> Result<tonic::Response<Self::AppendEntriesStreamStream>, tonic::Status> {
            if !self.streams {
                return Err(tonic::Status::unimplemented("an older follower"));
            }
            self.opened
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let follower = self.clone();
            let left = self.answers_per_stream;
            let replies = futures::stream::unfold(
                (follower, request.into_inner(), left),
                |(follower, mut incoming, left)| async move {
                    if left == 0 {
                        return None;
                    }
                    let message = incoming.message().await.ok().flatten()?;
                    let reply = follower
                        .append_entries(tonic::Request::new(message))
                        .await
                        .map(tonic::Response::into_inner);
                    Some((reply, (follower, incoming, left - 1)))
                },
            );
            Ok(tonic::Response::new(Box::pin(replies)))
        }
        async fn vote(&self, _: tonic::Request<RaftMessage>) -> Answer {
            unused()
        }
        async fn install_snapshot(&self, _: tonic::Request<RaftMessage>) -> Answer {
            unused()
        }
        async fn forward(&self, _: tonic::Request<RaftMessage>) -> Answer {
            unused()
        }
        async fn probe(&self, _: tonic::Request<RaftMessage>) -> Answer {
            unused()
        }
        async fn trigger_election(&self, _: tonic::Request<RaftMessage>) -> Answer {
            unused()
        }
        async fn grant_lease(&self, _: tonic::Request<RaftMessage>) -> Answer {
            unused()
        }
        async fn lease_report(&self, _: tonic::Request<RaftMessage>) -> Answer {
            unused()
        }
    }

    /// A connection to a [`ScriptedFollower`] that answers `replies` in turn, deferring commit
    /// notices for `defer`.
    type Scripted = (
        PeerConnection,
        ScriptedFollower,
        OwedCommits,
        tempfile::TempDir,
    );

    fn follower(replies: Vec<AppendEntriesResponse<NodeId>>) -> ScriptedFollower {
        ScriptedFollower {
            replies: Arc::new(Mutex::new(replies)),
            received: Arc::default(),
            streams: true,
            opened: Arc::default(),
            answers_per_stream: usize::MAX,
        }
    }

    async fn scripted(replies: Vec<AppendEntriesResponse<NodeId>>, defer: Duration) -> Scripted {
        serve(follower(replies), defer).await
    }

    /// A connection, deferring commit notices for `defer`, to `follower` serving on loopback.
    async fn serve(follower: ScriptedFollower, defer: Duration) -> Scripted {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let server = tonic::transport::Server::builder()
            .add_service(RaftPeerServer::new(follower.clone()))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener));
        tokio::spawn(server);
        let dir = tempfile::tempdir().expect("tempdir");
        let (log, _state_machine) = raft_store::open(dir.path()).expect("open store");
        let owed = OwedCommits::default();
        let mut factory = NetworkFactory {
            peers: PeerClients::new(1, Some("test-cluster".to_string()), None),
            durability: log.durability(),
            owed: owed.clone(),
            commit_notice_defer: defer,
        };
        let node = PeerNode {
            name: "follower".to_string(),
            peer_addr: addr.to_string(),
        };
        let connection = factory.new_client(2, &node).await;
        (connection, follower, owed, dir)
    }

    fn option() -> RPCOption {
        RPCOption::new(Duration::from_secs(20))
    }

    #[tokio::test]
    async fn a_commit_notice_after_a_match_waits_and_is_owed() {
        use AppendEntriesResponse::Success;
        let hour = Duration::from_secs(3600);
        let (mut connection, follower, owed, _dir) = scripted(vec![Success, Success], hour).await;
        let entries = append(2, None, &[log_id(2, 1), log_id(2, 2)], None);
        let reply = connection
            .append_entries(entries, option())
            .await
            .expect("sent");
        assert_eq!(reply, Success);
        // The commit notice for what the follower just matched waits, answered with the match
        // it gave, and a heartbeat is owed.
        let notice = append(2, Some(log_id(2, 2)), &[], Some(log_id(2, 2)));
        let reply = connection
            .append_entries(notice, option())
            .await
            .expect("deferred");
        assert_eq!(reply, Success);
        assert_eq!(lock(&follower.received).len(), 1, "the notice was sent");
        assert!(lock(&owed.inner.due).is_some(), "nothing is owed");
        // A question about another prefix goes to the follower.
        let probe = append(2, Some(log_id(2, 1)), &[], Some(log_id(2, 2)));
        connection
            .append_entries(probe, option())
            .await
            .expect("sent");
        let received = lock(&follower.received);
        assert_eq!(received.len(), 2);
        assert_eq!(received[1].prev_log_id, Some(log_id(2, 1)));
    }

    #[tokio::test]
    async fn after_anything_but_a_match_every_append_entries_goes() {
        use AppendEntriesResponse::{Conflict, HigherVote, Success};
        let hour = Duration::from_secs(3600);
        let higher = || HigherVote(Vote::new_committed(3, 2));
        let (mut connection, follower, owed, _dir) =
            scripted(vec![Success, higher(), Conflict, Success], hour).await;
        let entries = append(2, None, &[log_id(2, 1)], None);
        connection
            .append_entries(entries.clone(), option())
            .await
            .expect("sent");
        let more = append(2, Some(log_id(2, 1)), &[log_id(2, 2)], Some(log_id(2, 1)));
        let reply = connection
            .append_entries(more, option())
            .await
            .expect("sent");
        assert_eq!(reply, higher());
        // The follower moved on: its earlier match proves nothing now.
        let notice = append(2, Some(log_id(2, 1)), &[], Some(log_id(2, 1)));
        let reply = connection
            .append_entries(notice.clone(), option())
            .await
            .expect("sent");
        assert_eq!(reply, Conflict);
        let reply = connection
            .append_entries(notice, option())
            .await
            .expect("sent");
        assert_eq!(reply, Success);
        assert_eq!(lock(&follower.received).len(), 4);
        assert!(lock(&owed.inner.due).is_none());
    }

    #[tokio::test]
    async fn without_a_window_every_commit_notice_goes() {
        use AppendEntriesResponse::Success;
        let (mut connection, follower, owed, _dir) =
            scripted(vec![Success, Success], Duration::ZERO).await;
        let entries = append(2, None, &[log_id(2, 1)], None);
        connection
            .append_entries(entries, option())
            .await
            .expect("sent");
        let notice = append(2, Some(log_id(2, 1)), &[], Some(log_id(2, 1)));
        connection
            .append_entries(notice, option())
            .await
            .expect("sent");
        assert_eq!(lock(&follower.received).len(), 2);
        assert!(lock(&owed.inner.due).is_none());
    }

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

    #[tokio::test]
    async fn append_entries_share_one_stream_and_an_older_follower_gets_single_calls() {
        use std::sync::atomic::Ordering::Relaxed;
        use AppendEntriesResponse::Success;
        for streams in [true, false] {
            let scripted = ScriptedFollower {
                streams,
                ..follower(vec![Success, Success, Success])
            };
            let (mut connection, follower, _owed, _dir) = serve(scripted, Duration::ZERO).await;
            for index in 1..=3 {
                let prev = (index > 1).then(|| log_id(2, index - 1));
                let entries = append(2, prev, &[log_id(2, index)], prev);
                let reply = connection.append_entries(entries, option()).await;
                assert_eq!(reply.expect("answered"), Success, "streams: {streams}");
            }
            assert_eq!(lock(&follower.received).len(), 3, "streams: {streams}");
            let opened = follower.opened.load(Relaxed);
            assert_eq!(opened, usize::from(streams), "streams: {streams}");
            let unary = lock(&connection.peers.unary_until).contains_key(&connection.addr);
            assert_eq!(unary, !streams, "streams: {streams}");
        }
    }

    #[tokio::test]
    async fn a_stream_the_follower_ended_is_not_reused() {
        use std::sync::atomic::Ordering::Relaxed;
        use AppendEntriesResponse::Success;
        let scripted = ScriptedFollower {
            answers_per_stream: 1,
            ..follower(vec![Success, Success])
        };
        let (mut connection, follower, _owed, _dir) = serve(scripted, Duration::ZERO).await;
        let first = append(2, None, &[log_id(2, 1)], None);
        connection
            .append_entries(first, option())
            .await
            .expect("answered");
        assert_eq!(follower.opened.load(Relaxed), 1);
        // The follower's end of the stream reaches this side as the stream closing.
        let senders: Vec<_> = lock(&connection.peers.idle_streams)
            .values()
            .flatten()
            .map(|stream| stream.sender.clone())
            .collect();
        assert_eq!(senders.len(), 1, "the answered stream waits in the pool");
        let closed = futures::future::join_all(senders.iter().map(|sender| sender.closed()));
        tokio::time::timeout(Duration::from_secs(20), closed)
            .await
            .expect("the ended stream closes");
        let second = append(2, Some(log_id(2, 1)), &[log_id(2, 2)], None);
        let reply = connection.append_entries(second, option()).await;
        assert_eq!(reply.expect("answered on a new stream"), Success);
        assert_eq!(follower.opened.load(Relaxed), 2, "no second stream");
        assert_eq!(lock(&follower.received).len(), 2);
    }
}
