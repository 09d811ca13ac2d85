//! The node: one Raft instance, its applied state, and the paths by which requests reach the
//! leader.
//!
//! Every change and every linearizable read goes through [`Node::execute`]: on the leader it runs
//! locally; on a follower it is forwarded to the leader over the peer API. The client never needs
//! to know who leads.
//!
//! Retrying is where a replicated system quietly breaks linearizability, so the rules are strict:
//! - A request is retried (toward a new leader) only when it certainly did not take effect:
//!   openraft answered `ForwardToLeader` (the entry was never appended, or was truncated and can
//!   never commit), or the connection to the leader could not be opened at all.
//! - A write whose request may have reached a leader but whose answer did not come back is
//!   reported as `Indeterminate`, never retried here: a blind retry could apply it twice.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{CheckIsLeaderError, ClientWriteError, RaftError};
use openraft::{ChangeMembers, RaftMetrics, ServerState};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;
use vnet_model::limits::MEMBERS_MAX;
use vnet_model::{Command, Member, Outcome, Request, Role};

use raft_store::{NodeId, PeerNode, Raft, Response, StateView};

use crate::config::Config;
use crate::controller::Controller;
use crate::error::ApiError;
use crate::lease::{GrantRefused, LeaseTable};
use crate::peer::client::{NetworkFactory, PeerCallError, PeerClients};
use crate::peer::{ElectionControl, LeaderReply, LeaderRequest, LeaderResult};
use crate::placement::{Health, Policy};

/// How long to wait for something to change (a leader to appear, metrics to move) before looking
/// again while retrying a request toward the leader.
pub const LEADER_RETRY_INTERVAL_MS: u64 = 50;
/// How long a probe of a peer may take during bootstrap.
pub const BOOTSTRAP_PROBE_TIMEOUT_MS: u64 = 1_000;
/// How long status waits for the leader's view before answering with this node's own.
pub const STATUS_FROM_LEADER_TIMEOUT_MS: u64 = 1_000;
/// How often a leader transfer re-checks that the target holds every entry.
pub const TRANSFER_POLL_MS: u64 = 5;
/// A learner within this many entries of the leader's log counts as caught up for promotion and
/// leader transfer.
pub const CAUGHT_UP_LAG_ENTRIES_MAX: u64 = 64;

/// How fresh a read must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Consistency {
    /// Reflects every write acknowledged before the read began (confirmed with a quorum).
    Linearizable,
    /// Whatever this node has applied; possibly stale, served without contacting anyone.
    Local,
}

#[derive(Clone)]
pub struct Node {
    inner: Arc<Inner>,
}

struct Inner {
    id: NodeId,
    config: Arc<Config>,
    raft: Raft,
    view: StateView,
    peers: PeerClients,
    pristine_at_start: bool,
    /// The leader's record of lease renewals; meaningful only while this node leads.
    leases: std::sync::Mutex<LeaseTable>,
    /// When this node last received an AppendEntries (or started): a new term of ours counts
    /// leases from no earlier than this (see `lease.rs`).
    last_append_at: std::sync::Mutex<std::time::Instant>,
    /// Set while this leader hands over: it appends nothing new, so the target can hold every
    /// entry when it campaigns.
    transferring: std::sync::atomic::AtomicBool,
    /// Client writes this leader has let through and not yet answered; a transfer waits for
    /// them, since each may still append an entry the target must hold.
    writes_in_flight: std::sync::atomic::AtomicUsize,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Store(#[from] raft_store::OpenError),
    #[error("cannot read the Raft log in {path}: {source}")]
    Log {
        path: String,
        source: openraft::StorageError<NodeId>,
    },
    #[error("invalid Raft timing: {0}")]
    RaftConfig(#[from] Box<openraft::ConfigError>),
    #[error("cannot start Raft: {0}")]
    Raft(#[from] openraft::error::Fatal<NodeId>),
    #[error(
        "the data directory {data_dir} is empty, but peer {peer_id} at {peer_addr} already belongs \
         to an initialized cluster. A node that lost its data must not rejoin under its old id \
         (it could vote twice and roll back committed entries): start it with a new --id and add \
         it with `vnetctl member add`"
    )]
    LostData {
        data_dir: String,
        peer_id: NodeId,
        peer_addr: String,
    },
    #[error("cannot initialize the cluster: {0}")]
    Initialize(String),
}

impl Node {
    /// Opens the store and starts Raft. Does not bootstrap: call [`Node::bootstrap_if_founder`]
    /// once the peer server is listening (peers probe each other during bootstrap).
    pub async fn start(config: Arc<Config>) -> Result<Self, StartError> {
        let (mut log, state_machine) = raft_store::open(&config.data_dir)?;
        let pristine_at_start = log.is_pristine().map_err(|source| StartError::Log {
            path: config.data_dir.display().to_string(),
            source,
        })?;
        // Keep the log handle's sled db alive only through openraft; `log` moves into Raft.
        let _ = &mut log;
        let view = state_machine.view();
        let peers = PeerClients::default();
        let raft_config = config.raft.to_openraft()?;
        let raft = Raft::new(
            config.id,
            Arc::new(raft_config),
            NetworkFactory {
                peers: peers.clone(),
            },
            log,
            state_machine,
        )
        .await?;
        Ok(Self {
            inner: Arc::new(Inner {
                id: config.id,
                config,
                raft,
                view,
                peers,
                pristine_at_start,
                leases: std::sync::Mutex::new(LeaseTable::new()),
                last_append_at: std::sync::Mutex::new(std::time::Instant::now()),
                transferring: std::sync::atomic::AtomicBool::new(false),
                writes_in_flight: std::sync::atomic::AtomicUsize::new(0),
            }),
        })
    }

    pub fn id(&self) -> NodeId {
        self.inner.id
    }

    pub fn raft(&self) -> &Raft {
        &self.inner.raft
    }

    pub fn view(&self) -> &StateView {
        &self.inner.view
    }

    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    pub fn peers(&self) -> &PeerClients {
        &self.inner.peers
    }

    fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.inner.config.request_timeout_ms)
    }

    /// Founds the cluster if this node is the founder (lowest id in the initial cluster) and its
    /// store has never held anything. `initialize` therefore runs at most once per cluster: a
    /// restarted node has a vote or log on disk and never gets here, and the other initial
    /// members wait for the founder's leader to reach them.
    pub async fn bootstrap_if_founder(&self) -> Result<(), StartError> {
        let config = &self.inner.config;
        let Some(founder) = config.initial_cluster.iter().map(|m| m.id).min() else {
            return Ok(());
        };
        if !self.inner.pristine_at_start || founder != self.id() {
            return Ok(());
        }
        // An empty disk on the founder is either a brand-new cluster or a founder that lost its
        // data. Ask the others: if any already belongs to an initialized cluster, refuse.
        for member in config.initial_cluster.iter().filter(|m| m.id != self.id()) {
            let probe = self
                .peers()
                .probe(
                    &member.peer_addr,
                    Duration::from_millis(BOOTSTRAP_PROBE_TIMEOUT_MS),
                )
                .await;
            match probe {
                Ok(reply) if reply.initialized => {
                    return Err(StartError::LostData {
                        data_dir: config.data_dir.display().to_string(),
                        peer_id: member.id,
                        peer_addr: member.peer_addr.clone(),
                    })
                }
                Ok(_) => {}
                // Not up yet: it has nothing, so it cannot contradict us.
                Err(e) => {
                    tracing::info!(peer = member.id, error = %e, "peer not reachable during bootstrap")
                }
            }
        }
        let members: BTreeMap<NodeId, PeerNode> = config
            .initial_cluster
            .iter()
            .map(|m| {
                (
                    m.id,
                    PeerNode {
                        name: m.name.clone(),
                        peer_addr: m.peer_addr.clone(),
                    },
                )
            })
            .collect();
        match self.raft().initialize(members).await {
            Ok(()) => {
                tracing::info!(
                    members = config.initial_cluster.len(),
                    "founded the cluster"
                );
                Ok(())
            }
            // Someone replicated to us between the probe and now: the cluster exists, which is
            // what we wanted.
            Err(RaftError::APIError(openraft::error::InitializeError::NotAllowed(_))) => Ok(()),
            Err(e) => Err(StartError::Initialize(e.to_string())),
        }
    }

    fn metrics(&self) -> RaftMetrics<NodeId, PeerNode> {
        self.raft().metrics().borrow().clone()
    }

    /// Proposes a model change and returns its outcome, and the revision it was applied at, once
    /// committed and applied.
    pub async fn write(&self, actor: &str, command: Command) -> Result<(Outcome, u64), ApiError> {
        let request = Request {
            actor: actor.to_string(),
            command,
        };
        match self.execute(LeaderRequest::Write(request)).await? {
            LeaderReply::Applied { outcome, revision } => Ok((outcome, revision)),
            other => Err(unexpected_reply("write", &other)),
        }
    }

    /// [`Node::write`] with its own time budget.
    pub async fn write_within(
        &self,
        actor: &str,
        command: Command,
        budget: Duration,
    ) -> Result<(Outcome, u64), ApiError> {
        let request = Request {
            actor: actor.to_string(),
            command,
        };
        match self
            .execute_within(LeaderRequest::Write(request), budget)
            .await?
        {
            LeaderReply::Applied { outcome, revision } => Ok((outcome, revision)),
            other => Err(unexpected_reply("write", &other)),
        }
    }

    /// Waits until this node's applied state reflects every write acknowledged before the call,
    /// for a linearizable read; returns at once for a local read.
    pub async fn read_barrier(&self, consistency: Consistency) -> Result<(), ApiError> {
        if consistency == Consistency::Local {
            return Ok(());
        }
        let deadline = Instant::now() + self.request_timeout();
        let index = match self.execute(LeaderRequest::ReadIndex).await? {
            LeaderReply::ReadIndex { index } => index,
            other => return Err(unexpected_reply("read index", &other)),
        };
        let mut progress = self.view().subscribe();
        loop {
            if progress.borrow_and_update().applied_index >= index {
                return Ok(());
            }
            match tokio::time::timeout_at(deadline, progress.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => {
                    return Err(ApiError::Unavailable {
                        reason: "this node is shutting down".to_string(),
                    })
                }
                Err(_) => {
                    return Err(ApiError::Unavailable {
                        reason: format!(
                            "this node has not applied up to index {index} in time; it is \
                             behind the leader"
                        ),
                    })
                }
            }
        }
    }

    /// Runs `request` on the leader, wherever it is, retrying only where that is safe (see the
    /// module doc).
    pub async fn execute(&self, request: LeaderRequest) -> Result<LeaderReply, ApiError> {
        self.execute_within(request, self.request_timeout()).await
    }

    /// [`Node::execute`] with its own time budget.
    pub async fn execute_within(
        &self,
        request: LeaderRequest,
        budget: Duration,
    ) -> Result<LeaderReply, ApiError> {
        let deadline = Instant::now() + budget;
        let mut metrics = self.raft().metrics();
        let mut last_reason = String::from("no leader is known yet");
        loop {
            let (leader, leader_addr) = {
                let m = metrics.borrow_and_update();
                let leader = m.current_leader;
                let addr = leader.and_then(|id| {
                    m.membership_config
                        .membership()
                        .get_node(&id)
                        .map(|n| n.peer_addr.clone())
                });
                (leader, addr)
            };
            let remaining = deadline.saturating_duration_since(Instant::now());
            let result = match (leader, leader_addr) {
                (Some(id), _) if id == self.id() => self.execute_as_leader(request.clone()).await,
                (Some(id), Some(addr)) => {
                    match self.peers().to_leader(&addr, &request, remaining).await {
                        Ok(result) => result,
                        Err(e @ PeerCallError::Unreachable { .. }) if never_sent(&e) => {
                            Err(ApiError::NotLeader { leader: Some(id) })
                                .inspect_err(|_| last_reason = e.to_string())
                        }
                        Err(e) if request.is_read_only() => {
                            last_reason = e.to_string();
                            Err(ApiError::NotLeader { leader: Some(id) })
                        }
                        Err(e) => {
                            return Err(ApiError::Indeterminate {
                                reason: e.to_string(),
                            })
                        }
                    }
                }
                (Some(id), None) => {
                    last_reason = format!("leader {id} is not in this node's membership view");
                    Err(ApiError::NotLeader { leader: Some(id) })
                }
                (None, _) => Err(ApiError::NotLeader { leader: None }),
            };
            match result {
                Err(ApiError::NotLeader { .. }) => {}
                other => return other,
            }
            if Instant::now() >= deadline {
                return Err(ApiError::Unavailable {
                    reason: format!("gave up after {} ms: {last_reason}", budget.as_millis()),
                });
            }
            // Wait for the leader to change, but look again soon anyway: a leader that is
            // unreachable may stay "current" in metrics until an election times out.
            let wait_until =
                (Instant::now() + Duration::from_millis(LEADER_RETRY_INTERVAL_MS)).min(deadline);
            let _ = tokio::time::timeout_at(wait_until, metrics.changed()).await;
        }
    }

    /// Runs `request` here, as the leader. Answers `NotLeader` if this node is not the leader,
    /// which callers treat as "certainly not done; retry toward the leader".
    pub async fn execute_as_leader(&self, request: LeaderRequest) -> LeaderResult {
        let timeout = self.request_timeout();
        let transferring = self
            .inner
            .transferring
            .load(std::sync::atomic::Ordering::SeqCst);
        match request {
            // Nothing was appended: the caller retries toward whoever leads next.
            LeaderRequest::Write(_) if transferring => Err(ApiError::NotLeader { leader: None }),
            LeaderRequest::Write(request) => {
                use std::sync::atomic::Ordering::SeqCst;
                // Count ourselves in before the second look at the flag: a transfer that sets it
                // either sees this write in flight and waits, or this write sees the flag.
                self.inner.writes_in_flight.fetch_add(1, SeqCst);
                if self.inner.transferring.load(SeqCst) {
                    self.inner.writes_in_flight.fetch_sub(1, SeqCst);
                    return Err(ApiError::NotLeader { leader: None });
                }
                let written =
                    tokio::time::timeout(timeout, self.raft().client_write(request)).await;
                self.inner.writes_in_flight.fetch_sub(1, SeqCst);
                match written {
                    Err(_) => Err(ApiError::Indeterminate {
                        reason: format!("not committed within {} ms", timeout.as_millis()),
                    }),
                    Ok(Ok(response)) => match response.data {
                        Response::Applied(Ok(outcome)) => Ok(LeaderReply::Applied {
                            outcome,
                            revision: response.log_id.index,
                        }),
                        Response::Applied(Err(rejection)) => Err(ApiError::Rejected(rejection)),
                        Response::Internal => Err(ApiError::Internal {
                            reason: "a client write produced no model outcome".to_string(),
                        }),
                    },
                    Ok(Err(e)) => Err(client_write_error(e)),
                }
            }
            LeaderRequest::ReadIndex => {
                // get_read_log_id confirms leadership with a quorum before answering, so a
                // deposed leader cannot hand out a stale read index.
                match tokio::time::timeout(timeout, self.raft().get_read_log_id()).await {
                    Err(_) => Err(ApiError::Unavailable {
                        reason: format!(
                            "could not confirm leadership with a quorum within {} ms",
                            timeout.as_millis()
                        ),
                    }),
                    Ok(Ok((read_log_id, _))) => {
                        // openraft's read log id is max(its commit index, its first entry of the
                        // term). A leader that restarts and resumes its term from a committed vote
                        // knows a commit index older than what it had committed (and acknowledged)
                        // before the crash, so that bound can be stale. Every acknowledged write
                        // is in this leader's log (leadership was just confirmed), so its last log
                        // index is a bound that cannot be: a reader waits for those entries too.
                        let last_log_index = self.metrics().last_log_index.unwrap_or(0);
                        Ok(LeaderReply::ReadIndex {
                            index: read_log_id.map_or(0, |id| id.index).max(last_log_index),
                        })
                    }
                    Ok(Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f)))) => {
                        Err(ApiError::NotLeader {
                            leader: f.leader_id,
                        })
                    }
                    Ok(Err(RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(e)))) => {
                        Err(ApiError::Unavailable {
                            reason: e.to_string(),
                        })
                    }
                    Ok(Err(RaftError::Fatal(e))) => Err(ApiError::Unavailable {
                        reason: e.to_string(),
                    }),
                }
            }
            LeaderRequest::AddLearner {
                id,
                node,
                api_addr,
                role,
            } => self.add_learner(id, node, api_addr, role).await,
            LeaderRequest::Promote { id } => self.promote(id).await,
            LeaderRequest::Remove { id } => self.remove(id).await,
            LeaderRequest::TransferLeader { to } => self.transfer_leader(to).await,
            LeaderRequest::Status => {
                self.require_leader()?;
                Ok(LeaderReply::Status(Box::new(self.local_status())))
            }
            LeaderRequest::RenewLease { unit } => Box::pin(self.renew_lease(&unit)).await,
            LeaderRequest::Failover { profile, from, to } => {
                Box::pin(self.planned_failover(profile, from, to)).await
            }
        }
    }

    fn require_leader(&self) -> Result<RaftMetrics<NodeId, PeerNode>, ApiError> {
        let metrics = self.metrics();
        if metrics.current_leader != Some(self.id()) || metrics.state != ServerState::Leader {
            return Err(ApiError::NotLeader {
                leader: metrics.current_leader,
            });
        }
        Ok(metrics)
    }

    async fn add_learner(
        &self,
        id: NodeId,
        node: PeerNode,
        api_addr: String,
        role: Role,
    ) -> LeaderResult {
        let metrics = self.require_leader()?;
        if let Some(existing) = metrics.membership_config.membership().get_node(&id) {
            return Err(ApiError::MemberExists {
                id,
                name: existing.name.clone(),
            });
        }
        // The model keeps at most MEMBERS_MAX member records; a learner past that would be in
        // the Raft membership with no record the model accepts.
        let members = metrics.membership_config.membership().nodes().count();
        if members >= MEMBERS_MAX {
            return Err(ApiError::Rejected(vnet_model::Rejection::LimitExceeded {
                what: "members".to_string(),
                limit: MEMBERS_MAX as u64,
            }));
        }
        let name = node.name.clone();
        let peer_addr = node.peer_addr.clone();
        // Not blocking: a learner that is not running yet is still a member; it catches up when
        // it starts, and status shows how far it has got.
        let added = tokio::time::timeout(
            self.request_timeout(),
            self.raft().add_learner(id, node, false),
        )
        .await
        .map_err(|_| ApiError::Indeterminate {
            reason: "adding the learner did not commit in time".to_string(),
        })?
        .map_err(client_write_error)?;
        // Record what the caller told us, so status shows the role at once; the member refreshes
        // its own record (cabling, capacity) when it starts.
        let member = Member {
            id,
            name,
            role,
            api_addr,
            peer_addr,
            cabling: BTreeMap::new(),
            capacity: 0,
        };
        let request = Request {
            actor: format!("vnetd/{}", self.config().name),
            command: Command::PutMember(member),
        };
        match Box::pin(self.execute_as_leader(LeaderRequest::Write(request))).await {
            Ok(_) => {}
            Err(e) => tracing::warn!(member = id, error = %e, "could not record the new member"),
        }
        Ok(LeaderReply::MembershipChanged {
            log_index: added.log_id.index,
        })
    }

    async fn promote(&self, id: NodeId) -> LeaderResult {
        let metrics = self.require_leader()?;
        let membership = metrics.membership_config.membership();
        if membership.get_node(&id).is_none() {
            return Err(ApiError::MemberNotFound { id });
        }
        if membership.voter_ids().any(|v| v == id) {
            return Err(ApiError::FailedPrecondition {
                reason: format!("member {id} is already a voter"),
            });
        }
        self.require_caught_up(&metrics, id)?;
        let changed = tokio::time::timeout(
            self.request_timeout(),
            self.raft()
                .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), false),
        )
        .await
        .map_err(|_| ApiError::Indeterminate {
            reason: "the membership change did not commit in time".to_string(),
        })?
        .map_err(client_write_error)?;
        Ok(LeaderReply::MembershipChanged {
            log_index: changed.log_id.index,
        })
    }

    fn require_caught_up(
        &self,
        metrics: &RaftMetrics<NodeId, PeerNode>,
        id: NodeId,
    ) -> Result<(), ApiError> {
        let last = metrics.last_log_index.unwrap_or(0);
        let matched = metrics
            .replication
            .as_ref()
            .and_then(|r| r.get(&id).cloned().flatten())
            .map_or(0, |log_id| log_id.index);
        if last.saturating_sub(matched) > CAUGHT_UP_LAG_ENTRIES_MAX {
            return Err(ApiError::FailedPrecondition {
                reason: format!(
                    "member {id} has not caught up: it has replicated up to index {matched} of \
                     {last}; wait and retry"
                ),
            });
        }
        Ok(())
    }

    async fn remove(&self, id: NodeId) -> LeaderResult {
        let metrics = self.require_leader()?;
        let membership = metrics.membership_config.membership();
        if membership.get_node(&id).is_none() {
            return Err(ApiError::MemberNotFound { id });
        }
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        let change = if voters.contains(&id) {
            if voters.len() == 1 {
                return Err(ApiError::FailedPrecondition {
                    reason: format!("member {id} is the only voter; add another voter first"),
                });
            }
            ChangeMembers::RemoveVoters(BTreeSet::from([id]))
        } else {
            ChangeMembers::RemoveNodes(BTreeSet::from([id]))
        };
        let changed = tokio::time::timeout(
            self.request_timeout(),
            self.raft().change_membership(change, false),
        )
        .await
        .map_err(|_| ApiError::Indeterminate {
            reason: "the membership change did not commit in time".to_string(),
        })?
        .map_err(client_write_error)?;
        if self.view().read(|a| a.state.member(id).is_some()) {
            let request = Request {
                actor: format!("vnetd/{}", self.config().name),
                command: Command::RemoveMember { id },
            };
            // Removing ourselves makes us step down; the record is then removed by a later
            // leader's view of the world only if someone asks. Log, don't fail: the membership
            // change itself is done.
            if let Err(e) = Box::pin(self.execute(LeaderRequest::Write(request))).await {
                tracing::warn!(member = id, error = %e, "could not remove the member record");
            }
        }
        Ok(LeaderReply::MembershipChanged {
            log_index: changed.log_id.index,
        })
    }

    /// Hands leadership to `to`. openraft 0.9 has no transfer call, and its voters refuse to vote
    /// while a leader's lease is fresh. So: every other voter holds off elections of its own, this
    /// leader stops sending heartbeats, and the caught-up target campaigns until it wins (its
    /// log is as long as anyone's, so it can). Holds expire by themselves, so a transfer that
    /// fails halfway leaves the cluster as it was.
    async fn transfer_leader(&self, to: NodeId) -> LeaderResult {
        let metrics = self.require_leader()?;
        if to == self.id() {
            return Ok(LeaderReply::Transferred {
                leader: to,
                term: metrics.current_term,
            });
        }
        let membership = metrics.membership_config.membership();
        let Some(target) = membership.get_node(&to) else {
            return Err(ApiError::MemberNotFound { id: to });
        };
        if !membership.voter_ids().any(|v| v == to) {
            return Err(ApiError::FailedPrecondition {
                reason: format!("member {to} is a learner; only a voter can lead"),
            });
        }
        self.require_caught_up(&metrics, to)?;
        self.inner
            .transferring
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let result = self.hand_over(to, &target.peer_addr).await;
        self.inner
            .transferring
            .store(false, std::sync::atomic::Ordering::SeqCst);
        result
    }

    async fn hand_over(&self, to: NodeId, target_addr: &str) -> LeaderResult {
        let metrics = self.metrics();
        let membership = metrics.membership_config.membership();
        let timing = &self.config().raft;
        // Peers refuse a hold or campaign past `PEER_DURATION_MS_MAX`; ask for no more than that.
        let hold_ms = timing
            .election_max_ms
            .saturating_mul(4)
            .min(crate::peer::PEER_DURATION_MS_MAX);
        let hold = Duration::from_millis(hold_ms);
        let rpc_timeout = Duration::from_millis(timing.election_max_ms);
        // The target must hold every entry this leader has, or the voters that do will refuse
        // it (Raft's election restriction) and nobody can lead until the holds expire.
        let caught_up = |m: &RaftMetrics<NodeId, PeerNode>| {
            let last = m.last_log_index.unwrap_or(0);
            let idle = self
                .inner
                .writes_in_flight
                .load(std::sync::atomic::Ordering::SeqCst)
                == 0;
            idle && m
                .replication
                .as_ref()
                .and_then(|r| r.get(&to).cloned().flatten())
                .is_some_and(|matched| matched.index >= last)
        };
        // Re-check on every metrics change and at least every few milliseconds: the in-flight
        // count can reach zero without metrics changing after it.
        let deadline = Instant::now() + hold;
        let mut watching = self.raft().metrics();
        let fully_replicated: Result<(), ()> = loop {
            if caught_up(&watching.borrow_and_update()) {
                break Ok(());
            }
            if Instant::now() >= deadline {
                break Err(());
            }
            let _ =
                tokio::time::timeout(Duration::from_millis(TRANSFER_POLL_MS), watching.changed())
                    .await;
        };
        if fully_replicated.is_err() {
            return Err(ApiError::FailedPrecondition {
                reason: format!("member {to} did not catch up with the leader's log in time"),
            });
        }
        for (id, node) in membership.nodes() {
            if *id == to || *id == self.id() {
                continue;
            }
            let control = ElectionControl::Hold {
                duration_ms: hold_ms,
            };
            if let Err(e) = self
                .peers()
                .election(&node.peer_addr, &control, rpc_timeout)
                .await
            {
                tracing::warn!(peer = id, error = %e, "could not ask a voter to hold elections");
            }
        }
        self.election_control(ElectionControl::Hold {
            duration_ms: hold_ms,
        });
        self.raft().runtime_config().heartbeat(false);
        let campaign = ElectionControl::Campaign {
            deadline_ms: hold_ms,
        };
        let asked = self
            .peers()
            .election(target_addr, &campaign, rpc_timeout)
            .await;
        let result = match asked {
            Err(e) => Err(ApiError::Unavailable {
                reason: format!("could not reach the transfer target: {e}"),
            }),
            Ok(()) => {
                let waited = self
                    .raft()
                    .wait(Some(hold))
                    .metrics(|m| m.current_leader == Some(to), "leader transfer")
                    .await;
                match waited {
                    Ok(m) => Ok(LeaderReply::Transferred {
                        leader: to,
                        term: m.current_term,
                    }),
                    Err(e) => Err(ApiError::Unavailable {
                        reason: format!("member {to} did not take over in time: {e}"),
                    }),
                }
            }
        };
        self.raft().runtime_config().heartbeat(true);
        result
    }

    /// Applies an election-control request from a leader running a transfer.
    pub fn election_control(&self, control: ElectionControl) {
        // The peer service refused anything longer already; this only keeps a caller that skipped
        // that check from arithmetic that could overflow.
        let duration = match control.duration() {
            Ok(duration) => duration,
            Err(refused) => {
                tracing::warn!(%refused, "ignoring an election control");
                return;
            }
        };
        let raft = self.raft().clone();
        let id = self.id();
        match control {
            ElectionControl::Hold { .. } => {
                raft.runtime_config().elect(false);
                let mut metrics = raft.metrics();
                let leader_at_hold = metrics.borrow().current_leader;
                tokio::spawn(async move {
                    // The hold ends as soon as a new leader is known (the transfer is done, and a
                    // crash of the new leader must be met by a prompt election), and in any case
                    // after `duration_ms`, even if the leader that asked for it is gone.
                    let new_leader = metrics.wait_for(|m| {
                        m.current_leader.is_some() && m.current_leader != leader_at_hold
                    });
                    let _ = tokio::time::timeout(duration, new_leader).await;
                    raft.runtime_config().elect(true);
                });
            }
            ElectionControl::Campaign { .. } => {
                // One election per election timeout: each attempt raises the term, so retrying
                // faster than an election can finish only churns terms.
                let attempt = Duration::from_millis(self.config().raft.election_max_ms);
                tokio::spawn(async move {
                    // `duration` is at most `PEER_DURATION_MS_MAX`, so this cannot overflow.
                    let deadline = Instant::now() + duration;
                    while Instant::now() < deadline {
                        if raft.trigger().elect().await.is_err() {
                            return;
                        }
                        let won = raft
                            .wait(Some(
                                attempt.min(deadline.saturating_duration_since(Instant::now())),
                            ))
                            .metrics(|m| m.current_leader == Some(id), "campaign")
                            .await;
                        if won.is_ok() {
                            return;
                        }
                    }
                });
            }
        }
    }

    /// Keeps this node's member record (role, addresses, cabling, capacity) in the replicated
    /// state, so that every node (and later the placement controller) knows it. Runs until the
    /// record is in place, retrying while there is no leader.
    pub async fn register_self(&self, api_addr: String) {
        let config = self.config();
        let desired = Member {
            id: self.id(),
            name: config.name.clone(),
            role: config.role,
            api_addr,
            peer_addr: config.peer_advertise.clone(),
            cabling: config.cabling.clone(),
            capacity: config.capacity,
        };
        let mut metrics = self.raft().metrics();
        loop {
            let in_membership = {
                let m = metrics.borrow_and_update();
                m.current_leader.is_some()
                    && m.membership_config
                        .membership()
                        .get_node(&self.id())
                        .is_some()
            };
            if in_membership {
                if self
                    .view()
                    .read(|a| a.state.member(self.id()) == Some(&desired))
                {
                    return;
                }
                let command = Command::PutMember(desired.clone());
                match self.write(&format!("vnetd/{}", config.name), command).await {
                    Ok(_) => {
                        tracing::info!("registered this node's member record");
                        return;
                    }
                    Err(ApiError::Rejected(rejection)) => {
                        tracing::error!(
                            error = %rejection,
                            "the cluster refused this node's member record; fix the config"
                        );
                        return;
                    }
                    Err(e) => tracing::debug!(error = %e, "member registration will be retried"),
                }
            }
            let retry = Instant::now() + Duration::from_millis(LEADER_RETRY_INTERVAL_MS * 4);
            if tokio::time::timeout_at(retry, metrics.changed())
                .await
                .is_ok_and(|changed| changed.is_err())
            {
                return;
            }
        }
    }

    /// The cluster as the leader sees it (forwarded there when possible), else as this node does.
    pub async fn status(&self, consistency: Consistency) -> ClusterStatus {
        if consistency == Consistency::Linearizable
            && self.metrics().current_leader != Some(self.id())
        {
            let leader = self.metrics().current_leader.and_then(|id| {
                self.metrics()
                    .membership_config
                    .membership()
                    .get_node(&id)
                    .map(|n| n.peer_addr.clone())
            });
            if let Some(addr) = leader {
                let timeout = Duration::from_millis(STATUS_FROM_LEADER_TIMEOUT_MS);
                if let Ok(Ok(LeaderReply::Status(status))) = self
                    .peers()
                    .to_leader(&addr, &LeaderRequest::Status, timeout)
                    .await
                {
                    return *status;
                }
            }
        }
        self.local_status()
    }

    /// This node's own view of the cluster.
    pub fn local_status(&self) -> ClusterStatus {
        let metrics = self.metrics();
        let membership = metrics.membership_config.membership().clone();
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        let is_leader = metrics.current_leader == Some(self.id());
        let stale_after_ms = self.config().raft.election_max_ms * 2;
        let records: BTreeMap<NodeId, Member> = self
            .view()
            .read(|a| a.state.members().map(|m| (m.id, m.clone())).collect());
        let members = membership
            .nodes()
            .map(|(id, node)| {
                let record = records.get(id);
                let voter = voters.contains(id);
                let last_contact_ms = if *id == self.id() {
                    Some(0)
                } else if is_leader {
                    self.peers().last_contact_ms(*id)
                } else {
                    None
                };
                let raft_state = if *id == self.id() {
                    RaftStateKind::from(metrics.state)
                } else if metrics.current_leader == Some(*id) {
                    RaftStateKind::Leader
                } else if is_leader && last_contact_ms.is_none_or(|ms| ms > stale_after_ms) {
                    RaftStateKind::Offline
                } else if !voter {
                    RaftStateKind::Learner
                } else if is_leader {
                    RaftStateKind::Follower
                } else {
                    RaftStateKind::Unknown
                };
                let matched_index = if *id == self.id() {
                    metrics.last_log_index
                } else {
                    metrics
                        .replication
                        .as_ref()
                        .and_then(|r| r.get(id).cloned().flatten())
                        .map(|log_id| log_id.index)
                };
                MemberStatus {
                    id: *id,
                    name: node.name.clone(),
                    peer_addr: node.peer_addr.clone(),
                    role: record.map(|m| m.role),
                    api_addr: record.map(|m| m.api_addr.clone()).unwrap_or_default(),
                    cabling: record.map(|m| m.cabling.clone()).unwrap_or_default(),
                    capacity: record.map_or(0, |m| m.capacity),
                    voter,
                    raft_state,
                    last_contact_ms,
                    matched_index,
                }
            })
            .collect();
        let progress = self.view().progress();
        let leader_name = metrics
            .current_leader
            .and_then(|id| membership.get_node(&id).map(|n| n.name.clone()));
        let health = self.unit_health();
        let (units, placements) = self.view().read(|a| {
            let units = a
                .state
                .members()
                .filter(|m| m.role == Role::Unit)
                .map(|m| UnitStatus {
                    id: m.id,
                    name: m.name.clone(),
                    lease_healthy: health
                        .as_ref()
                        .map(|(h, _)| h.healthy_for_ms.contains_key(&m.name)),
                    lease_age_ms: health
                        .as_ref()
                        .and_then(|(_, ages)| ages.get(&m.name).copied()),
                    draining: a.state.is_draining(&m.name),
                    presented: a
                        .state
                        .presented_by(&m.name)
                        .map(|p| p.keys().cloned().collect())
                        .unwrap_or_default(),
                    load: a.state.load_of(&m.name) as u32,
                    capacity: m.capacity,
                })
                .collect();
            (units, placement_status(&a.state))
        });
        ClusterStatus {
            units,
            placements,
            responder_id: self.id(),
            leader_id: metrics.current_leader,
            leader_name: leader_name.unwrap_or_default(),
            term: metrics.current_term,
            commit_index: self.committed_index_hint(&metrics),
            applied_index: progress.applied_index,
            revision: progress.revision,
            members,
        }
    }

    /// The commit index as far as this node can tell: on the leader, the highest index a quorum
    /// of voters has replicated; elsewhere, what it has applied (it cannot know more).
    fn committed_index_hint(&self, metrics: &RaftMetrics<NodeId, PeerNode>) -> u64 {
        let applied = metrics.last_applied.map_or(0, |id| id.index);
        let Some(replication) = metrics.replication.as_ref() else {
            return applied;
        };
        let voters: Vec<NodeId> = metrics.membership_config.membership().voter_ids().collect();
        let mut matched: Vec<u64> = voters
            .iter()
            .map(|id| {
                if *id == self.id() {
                    metrics.last_log_index.unwrap_or(0)
                } else {
                    replication
                        .get(id)
                        .cloned()
                        .flatten()
                        .map_or(0, |log_id| log_id.index)
                }
            })
            .collect();
        matched.sort_unstable_by(|a, b| b.cmp(a));
        let quorum = voters.len() / 2 + 1;
        matched
            .get(quorum - 1)
            .copied()
            .unwrap_or(applied)
            .max(applied)
    }

    pub async fn shutdown(&self) {
        if let Err(e) = self.raft().shutdown().await {
            tracing::warn!(error = %e, "raft did not shut down cleanly");
        }
    }
}

impl LeaderRequest {
    fn is_read_only(&self) -> bool {
        // A lease renewal changes only the leader's memory; a lost or repeated one is harmless.
        matches!(
            self,
            LeaderRequest::ReadIndex | LeaderRequest::Status | LeaderRequest::RenewLease { .. }
        )
    }
}

// These locks guard in-memory tables with no awaits inside their critical sections; a panic
// while holding one would be a bug, and the tables stay usable (they are advisory state that a
// new term rebuilds), so a poisoned lock is used as is.
fn lock_leases(node: &Node) -> std::sync::MutexGuard<'_, LeaseTable> {
    node.inner
        .leases
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// How often the leader's placement controller looks at the state.
pub const PLACEMENT_TICK_MS: u64 = 20;
/// Most placement changes committed per controller pass.
pub const PLACEMENT_CHANGES_PER_PASS_MAX: usize = 4_096;

impl Node {
    /// Notes that an AppendEntries arrived, before it is handled.
    pub fn note_append_received(&self) {
        *self
            .inner
            .last_append_at
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = std::time::Instant::now();
    }

    /// From when a term of ours that starts now may count every unit as renewed (`lease.rs`).
    fn leases_counted_from(&self, now: std::time::Instant) -> std::time::Instant {
        let last_append = *self
            .inner
            .last_append_at
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let lease_of_others = now
            .checked_sub(Duration::from_millis(self.config().raft.election_max_ms))
            .unwrap_or(now);
        last_append.max(lease_of_others)
    }

    fn failed_after(&self) -> Duration {
        let lease = &self.config().lease;
        Duration::from_millis(lease.ttl_ms + lease.drift_margin_ms)
    }

    /// Grants a lease renewal (see `lease.rs` for the safety argument).
    async fn renew_lease(&self, unit: &str) -> LeaderResult {
        let arrived = std::time::Instant::now();
        let metrics = self.require_leader()?;
        let known_unit = self.view().read(|a| {
            a.state
                .member_by_name(unit)
                .is_some_and(|m| m.role == Role::Unit)
        });
        if !known_unit {
            return Err(ApiError::FailedPrecondition {
                reason: format!("{unit:?} is not a unit of this cluster"),
            });
        }
        let refused = |why: GrantRefused| ApiError::FailedPrecondition {
            reason: format!("unit {unit} {why}"),
        };
        let ticket = {
            let mut table = lock_leases(self);
            // `now`, not `arrived`: count from a moment at which this node leads.
            let now = std::time::Instant::now();
            table.sync_term(metrics.current_term, now, self.leases_counted_from(now));
            table.begin_grant(unit).map_err(refused)?
        };
        let read_index = match self.execute_as_leader(LeaderRequest::ReadIndex).await? {
            LeaderReply::ReadIndex { index } => index,
            other => return Err(unexpected_reply("read index", &other)),
        };
        let mut table = lock_leases(self);
        let now = std::time::Instant::now();
        table.sync_term(
            self.metrics().current_term,
            now,
            self.leases_counted_from(now),
        );
        // Acted on as failed while we confirmed leadership: the read index may predate the
        // moves off this unit, so this grant must not happen.
        table.finish_grant(unit, ticket, arrived).map_err(refused)?;
        Ok(LeaderReply::LeaseGranted { read_index })
    }

    fn controller(&self) -> Controller {
        Controller {
            policy: Policy {
                failback_hold_down_ms: self.config().lease.failback_hold_down_ms,
                changes_per_pass_max: PLACEMENT_CHANGES_PER_PASS_MAX,
            },
            failed_after: self.failed_after(),
        }
    }

    /// Runs `f` on the applied state and this leader's lease table, synced to the current term,
    /// in one critical section: a renewal cannot be granted in the middle (`lease.rs`). The
    /// view's lock is taken before the table's, here and everywhere.
    fn with_leases<R>(
        &self,
        f: impl FnOnce(&mut LeaseTable, &vnet_model::State, std::time::Instant) -> R,
    ) -> R {
        self.view().read(|a| {
            let mut table = lock_leases(self);
            let now = std::time::Instant::now();
            let term = self.metrics().current_term;
            table.sync_term(term, now, self.leases_counted_from(now));
            f(&mut table, &a.state, now)
        })
    }

    /// The leader's view of unit health, for status and the controller.
    pub fn unit_health(&self) -> Option<(Health, BTreeMap<String, u64>)> {
        let metrics = self.metrics();
        if metrics.current_leader != Some(self.id()) {
            return None;
        }
        let now = std::time::Instant::now();
        let units: Vec<String> = self.view().read(|a| {
            a.state
                .members()
                .filter(|m| m.role == Role::Unit)
                .map(|m| m.name.clone())
                .collect()
        });
        let mut table = lock_leases(self);
        table.sync_term(metrics.current_term, now, self.leases_counted_from(now));
        let health = table.health(units.iter().map(String::as_str), now, self.failed_after());
        let ages = units
            .iter()
            .map(|u| (u.clone(), table.age_ms(u, now)))
            .collect();
        Some((health, ages))
    }

    /// The placement controller: on the leader, every tick, decide and commit placement changes.
    pub async fn run_placement(&self, mut stopping: tokio::sync::watch::Receiver<bool>) {
        let tick = Duration::from_millis(PLACEMENT_TICK_MS);
        let controller = self.controller();
        let actor = "system/placement";
        let mut caught_up_term = 0;
        loop {
            tokio::select! {
                () = tokio::time::sleep(tick) => {}
                _ = stopping.wait_for(|stop| *stop) => return,
            }
            let metrics = self.metrics();
            if metrics.current_leader != Some(self.id())
                || self
                    .inner
                    .transferring
                    .load(std::sync::atomic::Ordering::SeqCst)
            {
                continue;
            }
            // Decide only on a state that includes everything committed before this term.
            if caught_up_term != metrics.current_term {
                if self.raft().ensure_linearizable().await.is_err() {
                    continue;
                }
                caught_up_term = metrics.current_term;
            }
            // Phase 1. A failed unit's switch has fenced itself by the time the leader judges
            // it failed (see lease.rs), so its last report is stale: record that it presents
            // nothing, so status does not show identities on a unit that cannot present them.
            let stale_reports =
                self.with_leases(|table, state, now| controller.stale_reports(table, state, now));
            for command in stale_reports {
                if let Err(e) = self.write_as_leader(actor, command).await {
                    tracing::debug!(error = %e, "could not clear a failed unit's report");
                }
            }
            // Phase 2: judged afresh, in one critical section with the declarations.
            let decisions =
                self.with_leases(|table, state, now| controller.decide(table, state, now));
            if decisions.is_empty() {
                continue;
            }
            for (unit, changes) in decisions.failovers {
                tracing::warn!(unit = %unit, profiles = changes.len(), "unit failed; failing over its profiles");
                let command = Command::Place { changes };
                match self.write_as_leader(actor, command).await {
                    // Committed and applied: a later grant's read index covers these moves.
                    Ok(_) => lock_leases(self).failover_done(&unit),
                    // Perhaps committed later, perhaps never: the unit stays refused until the
                    // moves are seen applied (`Controller::decide`) or a retry commits.
                    Err(e) => {
                        tracing::warn!(unit = %unit, error = %e, "failover placement not confirmed; will retry")
                    }
                }
            }
            if !decisions.others.is_empty() {
                let count = decisions.others.len();
                let command = Command::Place {
                    changes: decisions.others,
                };
                match self.write_as_leader(actor, command).await {
                    Ok(_) => tracing::info!(changes = count, "placement changes committed"),
                    Err(e) => {
                        tracing::debug!(error = %e, "placement changes not committed; will retry")
                    }
                }
            }
        }
    }

    async fn write_as_leader(&self, actor: &str, command: Command) -> Result<u64, ApiError> {
        let request = Request {
            actor: actor.to_string(),
            command,
        };
        match self
            .execute_as_leader(LeaderRequest::Write(request))
            .await?
        {
            LeaderReply::Applied { revision, .. } => Ok(revision),
            other => Err(unexpected_reply("write", &other)),
        }
    }

    /// An operator's planned move (break before make: the controller completes it once the
    /// source reports it no longer presents the profile).
    async fn planned_failover(
        &self,
        profile: Option<String>,
        from: Option<String>,
        to: Option<String>,
    ) -> LeaderResult {
        self.require_leader()?;
        let controller = self.controller();
        let changes = self.with_leases(|table, state, now| {
            controller.operator_moves(
                table,
                state,
                now,
                profile.as_deref(),
                from.as_deref(),
                to.as_deref(),
            )
        })?;
        let profiles: Vec<String> = changes.iter().map(|c| c.profile.clone()).collect();
        if changes.is_empty() {
            return Ok(LeaderReply::FailoverStarted {
                revision: self.view().progress().revision,
                profiles,
            });
        }
        let revision = self
            .write_as_leader("system/failover", Command::Place { changes })
            .await?;
        Ok(LeaderReply::FailoverStarted { revision, profiles })
    }
}

/// Did the request certainly never leave this node? True only for a failed connection attempt:
/// tonic reports it as UNAVAILABLE with a connect error underneath. Any other failure may have
/// happened after the request was sent.
fn never_sent(error: &PeerCallError) -> bool {
    let PeerCallError::Unreachable { status, .. } = error else {
        return false;
    };
    // A refused connection is the clearest case; otherwise look for the connector's own wording
    // for a connection that could not be established ("error trying to connect", "tcp connect
    // error"). Words like "connection closed" or "reset" mean a connection existed and the
    // request may have been sent.
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(status);
    let mut text = status.message().to_lowercase();
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::ConnectionRefused {
                return true;
            }
        }
        text.push(' ');
        text.push_str(&e.to_string().to_lowercase());
        source = e.source();
    }
    text.contains("error trying to connect") || text.contains("tcp connect error")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unreachable(message: &str) -> PeerCallError {
        PeerCallError::Unreachable {
            addr: "10.0.0.1:7101".into(),
            status: tonic::Status::unavailable(message),
        }
    }

    #[test]
    fn only_a_connection_that_never_opened_counts_as_never_sent() {
        assert!(never_sent(&unreachable(
            "error trying to connect: tcp connect error: Connection refused (os error 111)"
        )));
        for maybe_sent in [
            "connection closed before message completed",
            "connection reset by peer",
            "transport error",
            "h2 protocol error: connection closed",
        ] {
            assert!(!never_sent(&unreachable(maybe_sent)), "{maybe_sent}");
        }
        let refused_elsewhere = PeerCallError::NoAnswer {
            addr: "x".into(),
            status: tonic::Status::deadline_exceeded("error trying to connect"),
        };
        assert!(
            !never_sent(&refused_elsewhere),
            "only UNAVAILABLE can be never-sent"
        );
    }
}

fn client_write_error(e: RaftError<NodeId, ClientWriteError<NodeId, PeerNode>>) -> ApiError {
    match e {
        // ForwardToLeader means the entry was never appended here, or was truncated and can never
        // commit (openraft answers pending writes this way only on truncation): safe to retry.
        RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => ApiError::NotLeader {
            leader: f.leader_id,
        },
        RaftError::APIError(ClientWriteError::ChangeMembershipError(e)) => {
            ApiError::FailedPrecondition {
                reason: e.to_string(),
            }
        }
        RaftError::Fatal(e) => ApiError::Unavailable {
            reason: e.to_string(),
        },
    }
}

fn unexpected_reply(what: &str, reply: &LeaderReply) -> ApiError {
    ApiError::Internal {
        reason: format!("the leader answered a {what} with {reply:?}"),
    }
}

/// What status reports; the API converts it to the wire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterStatus {
    pub responder_id: NodeId,
    pub leader_id: Option<NodeId>,
    pub leader_name: String,
    pub term: u64,
    pub commit_index: u64,
    pub applied_index: u64,
    pub revision: u64,
    pub members: Vec<MemberStatus>,
    pub units: Vec<UnitStatus>,
    pub placements: Vec<PlacementStatus>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnitStatus {
    pub id: NodeId,
    pub name: String,
    /// `None` when the answering node is not the leader and cannot tell.
    pub lease_healthy: Option<bool>,
    pub lease_age_ms: Option<u64>,
    pub draining: bool,
    pub presented: Vec<String>,
    pub load: u32,
    pub capacity: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PlacementStateKind {
    Presented,
    Programming,
    Moving,
    Unplaced,
    FailedOver,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlacementStatus {
    pub profile: String,
    pub desired_unit: Option<String>,
    pub presented_unit: Option<String>,
    pub state: PlacementStateKind,
    pub reason: String,
    pub failed_over_from: Option<String>,
    pub moving: Option<vnet_model::Move>,
    pub revision: u64,
}

/// Status of every profile's placement, from the replicated state alone.
pub fn placement_status(state: &vnet_model::State) -> Vec<PlacementStatus> {
    let unplaced = vnet_model::Placement::default();
    state
        .profiles()
        .map(|profile| {
            let placement = state.placement(&profile.name).unwrap_or(&unplaced);
            let presenting: Vec<&String> = state
                .presented()
                .filter(|(_, profiles)| profiles.contains_key(&profile.name))
                .map(|(unit, _)| unit)
                .collect();
            let presented_unit = placement
                .unit
                .as_ref()
                .filter(|u| presenting.contains(u))
                .or(presenting.first().copied())
                .cloned();
            let state_kind = match (&placement.unit, &placement.moving) {
                (_, Some(_)) => PlacementStateKind::Moving,
                (None, None) => PlacementStateKind::Unplaced,
                (Some(unit), None) if presented_unit.as_ref() == Some(unit) => {
                    if placement.failed_over_from.is_some() {
                        PlacementStateKind::FailedOver
                    } else {
                        PlacementStateKind::Presented
                    }
                }
                (Some(_), None) => PlacementStateKind::Programming,
            };
            PlacementStatus {
                profile: profile.name.clone(),
                desired_unit: placement.unit.clone(),
                presented_unit,
                state: state_kind,
                reason: if placement.revision == 0 {
                    "not placed yet".to_string()
                } else {
                    placement.reason.clone()
                },
                failed_over_from: placement.failed_over_from.clone(),
                moving: placement.moving.clone(),
                revision: placement.revision,
            }
        })
        .collect()
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberStatus {
    pub id: NodeId,
    pub name: String,
    pub peer_addr: String,
    pub role: Option<Role>,
    pub api_addr: String,
    pub cabling: BTreeMap<String, u8>,
    pub capacity: u32,
    pub voter: bool,
    pub raft_state: RaftStateKind,
    pub last_contact_ms: Option<u64>,
    pub matched_index: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RaftStateKind {
    Leader,
    Follower,
    Candidate,
    Learner,
    Unknown,
    Offline,
}

impl From<ServerState> for RaftStateKind {
    fn from(state: ServerState) -> Self {
        match state {
            ServerState::Leader => Self::Leader,
            ServerState::Follower => Self::Follower,
            ServerState::Candidate => Self::Candidate,
            ServerState::Learner => Self::Learner,
            ServerState::Shutdown => Self::Offline,
        }
    }
}
