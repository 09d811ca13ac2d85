//! The node: one Raft instance, its applied state, and the paths by which requests reach the
//! leader (`execute`: how a request reaches the leader and when it is retried).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use openraft::error::RaftError;
use openraft::{ChangeMembers, RaftMetrics, ServerState};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;
use tracing::Instrument;
use vnet_model::limits::MEMBERS_MAX;
use vnet_model::{Command, Member, Request, Role};

use raft_store::{NodeId, PeerNode, Raft, StateView};

use crate::config::Config;
use crate::controller::Controller;
use crate::error::ApiError;
use crate::lease::Grants;
use crate::metrics::NodeMetrics;
use crate::peer::client::{NetworkFactory, OwedCommits, PeerClients};
use crate::peer::{ElectionControl, LeaderReply, LeaderRequest, LeaderResult};
use crate::policy::Policy;

mod access;
mod commit_notices;
mod execute;
mod leases;
mod membership;
mod read_index;
mod status;
mod write_batch;

use execute::unexpected_reply;

use write_batch::client_write_error;
pub use write_batch::WriteBatcher;

pub use access::BOOTSTRAP_ACTOR;
pub use leases::{
    voter_sets, LeaseView, LEASE_REPORT_FRESH_MS, LEASE_REPORT_TIMEOUT_MS,
    PLACEMENT_CHANGES_PER_COMMAND_MAX, PLACEMENT_CHANGES_PER_PASS_MAX, PLACEMENT_TICK_MS,
};
pub use read_index::READ_INDEX_WAITERS_MAX;

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
    /// The lease renewals this node granted as a voter (`lease.rs`).
    grants: std::sync::Mutex<Grants>,
    /// What the placement controller last learned of the units, for status and operator moves;
    /// meaningful only while this node leads.
    lease_view: std::sync::Mutex<leases::LeaseView>,
    /// The voters' lease reports, gathered while this node leads.
    reports: std::sync::Mutex<leases::Reports>,
    /// What this node's own agent holds and its switch presents, if it is a unit.
    unit_view: std::sync::Mutex<Option<crate::lease::UnitView>>,
    /// Set while this leader hands over: it appends nothing new, so the target can hold every
    /// entry when it campaigns.
    transferring: std::sync::atomic::AtomicBool,
    /// Client writes this leader has let through and not yet answered; a transfer waits for
    /// them, since each may still append an entry the target must hold.
    writes_in_flight: std::sync::atomic::AtomicUsize,
    metrics: Arc<NodeMetrics>,
    /// Shares one leadership confirmation among concurrent linearizable reads.
    read_index: read_index::ReadIndexBatcher<u64>,
    /// This node's `vnet-data.json`; the lock also serializes its rewrites.
    data_file: std::sync::Mutex<crate::data_file::DataFile>,
    /// Where this node, leading, sends client writes to be proposed (`write_batch.rs`).
    batcher: WriteBatcher,
    /// How far this node's Raft log is on disk.
    durability: raft_store::Durability,
    /// Dropped with the node, which ends `commit_notices::send_owed_commits`.
    _stop_releasing: tokio::sync::oneshot::Sender<()>,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    DataDir(#[from] crate::data_file::DataFileError),
    #[error(
        "vnetd does not start on a store it cannot read whole (see \"Recovering a damaged data \
         directory\" in README.md)"
    )]
    Store(#[from] raft_store::OpenError),
    #[error(
        "cannot read the Raft log in {path}: {source}. See \"Recovering a damaged data \
         directory\" in README.md"
    )]
    Log {
        path: String,
        source: openraft::StorageError<NodeId>,
    },
    #[error("TLS: {0}")]
    Tls(String),
    #[error("invalid Raft timing: {0}")]
    RaftConfig(#[from] Box<openraft::ConfigError>),
    #[error(
        "cannot start Raft: {0}. If the store is damaged, see \"Recovering a damaged data \
         directory\" in README.md"
    )]
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
    /// Opens the store and starts Raft, recording into `metrics`. Does not bootstrap: call
    /// [`Node::bootstrap_if_founder`] once the peer server is listening (peers probe each other
    /// during bootstrap).
    pub async fn start(config: Arc<Config>, metrics: Arc<NodeMetrics>) -> Result<Self, StartError> {
        // Before the store is opened: a directory of a newer format or of another node is refused
        // untouched.
        let data_file = crate::data_file::open_for(&config.data_dir, config.id)?;
        let (log, state_machine) = raft_store::open_observed(&config.data_dir, metrics.clone())?;
        // The leader's fsync overlaps replication; the gates this needs are in the state machine
        // (opened with this log) and in `NetworkFactory` (given its durability below).
        let log = log.acknowledge_own_appends_early(config.id);
        let durability = log.durability();
        let releases_held_back_commits = durability.clone();
        let owed = OwedCommits::default();
        let pristine_at_start = log.is_pristine().map_err(|source| StartError::Log {
            path: config.data_dir.display().to_string(),
            source,
        })?;
        let view = state_machine.view();
        let tls = match &config.tls {
            Some(files) => Some(Arc::new(
                vnet_tls::ClientTls::from_files(files).map_err(StartError::Tls)?,
            )),
            None => None,
        };
        let peers = PeerClients::new(config.id, data_file.cluster_id.clone(), tls);
        let raft_config = config.raft.to_openraft()?;
        let raft = Raft::new(
            config.id,
            Arc::new(raft_config),
            NetworkFactory {
                peers: peers.clone(),
                durability: durability.clone(),
                owed: owed.clone(),
                commit_notice_defer: Duration::from_millis(
                    crate::peer::client::COMMIT_NOTICE_DEFER_MS,
                ),
            },
            log,
            state_machine,
        )
        .await?;
        let (stop_releasing, stopped) = tokio::sync::oneshot::channel();
        tokio::spawn(commit_notices::send_owed_commits(
            raft.clone(),
            releases_held_back_commits,
            owed,
            stopped,
        ));
        let batcher = WriteBatcher::start(
            raft.clone(),
            view.clone(),
            Duration::from_millis(config.request_timeout_ms),
            metrics.write_batch_size.clone(),
        );
        let read_index = {
            let raft = raft.clone();
            read_index::ReadIndexBatcher::spawn(
                move || read_index::confirm_leadership(raft.clone()),
                Duration::from_millis(config.request_timeout_ms),
                READ_INDEX_WAITERS_MAX,
                read_index::RoundCounters {
                    rounds: metrics.read_index_rounds.clone(),
                    reads: metrics.read_index_reads.clone(),
                },
            )
        };
        Ok(Self {
            inner: Arc::new(Inner {
                id: config.id,
                config,
                raft,
                view,
                peers,
                pristine_at_start,
                grants: std::sync::Mutex::new(Grants::new(std::time::Instant::now())),
                lease_view: std::sync::Mutex::new(leases::LeaseView::default()),
                reports: std::sync::Mutex::new(leases::Reports::default()),
                unit_view: std::sync::Mutex::new(None),
                transferring: std::sync::atomic::AtomicBool::new(false),
                writes_in_flight: std::sync::atomic::AtomicUsize::new(0),
                metrics,
                read_index,
                data_file: std::sync::Mutex::new(data_file),
                batcher,
                durability,
                _stop_releasing: stop_releasing,
            }),
        })
    }

    /// The id of the cluster this node belongs to, once it has founded or learnt one.
    pub fn cluster_id(&self) -> Option<String> {
        self.peers().cluster_id()
    }

    /// Adopts `cluster_id` if this node has none yet, persisting it before any call carries it;
    /// an id already held is never replaced. Returns the id this node now holds.
    pub fn adopt_cluster_id(
        &self,
        cluster_id: &str,
    ) -> Result<String, crate::data_file::DataFileError> {
        let mut data = self
            .inner
            .data_file
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(held) = &data.cluster_id {
            return Ok(held.clone());
        }
        let mut updated = data.clone();
        updated.cluster_id = Some(cluster_id.to_string());
        crate::data_file::store(&self.config().data_dir, &updated)?;
        *data = updated;
        self.peers().set_cluster_id(cluster_id.to_string());
        tracing::info!(cluster_id, "this node belongs to cluster {cluster_id}");
        Ok(cluster_id.to_string())
    }

    /// How far this node's Raft log is on disk (see raft-store's `log_store`).
    pub fn durability(&self) -> &raft_store::Durability {
        &self.inner.durability
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

    /// The handle on this node's exported metrics, for whatever records an event.
    pub fn metrics_handle(&self) -> &Arc<NodeMetrics> {
        &self.inner.metrics
    }

    /// Client writes this leader has let through and not yet answered.
    pub fn writes_in_flight(&self) -> usize {
        self.inner
            .writes_in_flight
            .load(std::sync::atomic::Ordering::SeqCst)
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
        // The founder draws the cluster's id; every other member learns it from the first call
        // this node's leader makes to it (`PeerService`), before it holds any of the log.
        if self.cluster_id().is_none() {
            let drawn = crate::data_file::new_cluster_id()
                .map_err(|e| StartError::Initialize(format!("cannot draw a cluster id: {e}")))?;
            self.adopt_cluster_id(&drawn)?;
        }
        let members = crate::config::peer_nodes(&config.initial_cluster);
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
            protocol: vnet_model::member::PROTOCOL,
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

    pub async fn shutdown(&self) {
        self.inner.read_index.shutdown().await;
        if let Err(e) = self.raft().shutdown().await {
            tracing::warn!(error = %e, "raft did not shut down cleanly");
        }
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
    /// The answering node's `vnetd` version.
    #[serde(default)]
    pub version: String,
    /// Bytes the answering node's data directory takes on disk.
    #[serde(default)]
    pub data_dir_bytes: u64,
    /// Raised alarms, as of the answering node's applied state. Absent from a leader that
    /// predates alarms: none.
    #[serde(default)]
    pub alarms: Vec<vnet_model::Alarm>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnitStatus {
    pub id: NodeId,
    pub name: String,
    /// `None` when the answering node is not the leader and cannot tell.
    pub lease_healthy: Option<bool>,
    /// Milliseconds since a majority of voters last granted the unit anything (leader only).
    pub lease_age_ms: Option<u64>,
    /// The epoch of the revocation of its lease in force, if any.
    pub lease_revoked_at: Option<u64>,
    /// The unit's own view of its lease and switch, if it answered.
    pub own: Option<crate::lease::UnitView>,
    /// What is wrong, in words; empty when nothing is.
    pub note: String,
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
