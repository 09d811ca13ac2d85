//! Every metric `vnetd` exports, registered in one place: [`NodeMetrics::register`]. To add a
//! family, add a field, register it there, and either update it where its event happens (through
//! [`crate::Node::metrics_handle`]) or set it in [`NodeMetrics::refresh`], which runs before each
//! scrape.
//!
//! - Raft: leadership, term, indexes, proposals, log fsync and snapshot timing, and on the leader
//!   each peer's replication lag and time since it last answered.
//! - The domain, from this node's applied state (equal on every caught-up replica): profiles by
//!   placement state, per unit what it presents, has placed, can hold and whether it drains, per
//!   pool its size, used and free identities.
//! - Leases: grants and refusals by this voter, revocations and failovers committed by this
//!   leader, failover duration (from the revocation to the peer reporting every moved profile
//!   presented), each unit's health as the leader judges it and whether it is revoked, and on a
//!   unit its own lease (voters granting, time left).
//! - gRPC: both servers (public and peer) through `vnet_metrics::grpc`.
//! - The process and the build, through `vnet_metrics::process`.
//!
//! Label values are member names, pool names, placement states and served methods: bounded by
//! `MEMBERS_MAX`, `POOLS_MAX` and the protobuf files, never by what a client sends.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use openraft::ServerState;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};
use vnet_metrics::grpc::{GrpcMethods, GrpcServerMetrics};
use vnet_model::Role;

use crate::node::{placement_status, Node, PlacementStateKind};

/// The services of the public API, as the protobuf files name them.
pub const PUBLIC_SERVICES: [&str; 5] = [
    "vnet.v1.AccessService",
    "vnet.v1.ProfileService",
    "vnet.v1.PoolService",
    "vnet.v1.ClusterService",
    "vnet.v1.WatchService",
];
/// The standard services served beside them on the public port (see `health`).
pub const STANDARD_SERVICES: [&str; 3] = [
    "grpc.health.v1.Health",
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
];
/// The service of the peer API.
pub const PEER_SERVICES: [&str; 1] = ["vnet.raft.v1.RaftPeer"];

/// Snapshot builds take from milliseconds (a small state) to seconds (thousands of profiles).
const SNAPSHOT_BUCKETS_SECONDS: [f64; 10] =
    [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0];

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PeerLabels {
    pub peer: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UnitLabels {
    pub unit: String,
}

/// A raised alarm: the member whose condition raised it and its kind (both bounded: members by
/// `MEMBERS_MAX`, kinds by the model's `AlarmKind`).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AlarmLabels {
    pub member: String,
    pub alarm: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefusalLabels {
    pub reason: &'static str,
}

/// Failovers take about a second; a slow one several.
const FAILOVER_BUCKETS_SECONDS: [f64; 10] = [0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 3.0, 5.0, 10.0];

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PlacementLabels {
    pub state: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PoolLabels {
    pub pool: String,
    pub kind: &'static str,
}

type SecondsGauge = Gauge<f64, AtomicU64>;

/// Buckets of `vnet_raft_write_batch_size`: powers of two up to the most a batch holds.
const WRITE_BATCH_SIZE_BUCKETS: [f64; 8] = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0];

/// The handle on `vnetd`'s metrics; cheap to clone into whatever records an event.
#[derive(Debug)]
pub struct NodeMetrics {
    // Raft, counted as it happens.
    pub leader_changes: Counter,
    pub proposals_committed: Counter,
    pub proposals_failed: Counter,
    /// Client writes per log entry this node proposed as leader (`node/write_batch.rs`).
    pub write_batch_size: Histogram,
    /// Leadership confirmations for linearizable reads, and the reads they answered
    /// (`node/read_index.rs`).
    pub read_index_rounds: Counter,
    pub read_index_reads: Counter,
    /// AppendEntries this node handled from a leader, streamed or unary (`peer/service.rs`).
    pub append_entries_received: Counter,
    pub log_sync: Histogram,
    pub snapshots_built: Counter,
    pub snapshot_build: Histogram,
    pub snapshot_size: Gauge,
    // Raft, set at scrape time.
    has_leader: Gauge,
    is_leader: Gauge,
    term: Gauge,
    voters: Gauge,
    commit_index: Gauge,
    applied_index: Gauge,
    last_log_index: Gauge,
    snapshot_index: Gauge,
    proposals_pending: Gauge,
    peer_lag: Family<PeerLabels, Gauge>,
    peer_last_contact: Family<PeerLabels, SecondsGauge>,
    // The domain, set at scrape time.
    profiles: Family<PlacementLabels, Gauge>,
    unit_presented: Family<UnitLabels, Gauge>,
    unit_placed: Family<UnitLabels, Gauge>,
    unit_capacity: Family<UnitLabels, Gauge>,
    unit_draining: Family<UnitLabels, Gauge>,
    drains_in_progress: Gauge,
    pool_size: Family<PoolLabels, Gauge>,
    pool_used: Family<PoolLabels, Gauge>,
    pool_free: Family<PoolLabels, Gauge>,
    // Leases, counted as they happen.
    pub lease_grants: Counter,
    pub lease_refusals: Family<RefusalLabels, Counter>,
    pub lease_revocations: Counter,
    pub failovers: Counter,
    pub failover_duration: Histogram,
    // Leases, set at scrape time.
    unit_lease_healthy: Family<UnitLabels, Gauge>,
    unit_lease_revoked: Family<UnitLabels, Gauge>,
    lease_voters_granting: Family<UnitLabels, Gauge>,
    lease_remaining: Family<UnitLabels, SecondsGauge>,
    // Alarms, set at scrape time.
    alarm_active: Family<AlarmLabels, Gauge>,
    // The servers.
    pub grpc: GrpcServerMetrics,
}

impl NodeMetrics {
    /// Registers every family `vnetd` exports in `registry` (the root registry) and returns the
    /// handle that updates them.
    pub fn register(registry: &mut Registry) -> Arc<NodeMetrics> {
        let grpc = GrpcServerMetrics::register(registry);
        vnet_metrics::process::register(registry);
        let m = NodeMetrics {
            leader_changes: Counter::default(),
            proposals_committed: Counter::default(),
            proposals_failed: Counter::default(),
            read_index_rounds: Counter::default(),
            append_entries_received: Counter::default(),
            read_index_reads: Counter::default(),
            log_sync: Histogram::new(vnet_metrics::LATENCY_BUCKETS_SECONDS),
            snapshots_built: Counter::default(),
            snapshot_build: Histogram::new(SNAPSHOT_BUCKETS_SECONDS),
            snapshot_size: Gauge::default(),
            has_leader: Gauge::default(),
            is_leader: Gauge::default(),
            term: Gauge::default(),
            voters: Gauge::default(),
            commit_index: Gauge::default(),
            applied_index: Gauge::default(),
            last_log_index: Gauge::default(),
            snapshot_index: Gauge::default(),
            proposals_pending: Gauge::default(),
            write_batch_size: Histogram::new(WRITE_BATCH_SIZE_BUCKETS),
            peer_lag: Family::default(),
            peer_last_contact: Family::default(),
            profiles: Family::default(),
            unit_presented: Family::default(),
            unit_placed: Family::default(),
            unit_capacity: Family::default(),
            unit_draining: Family::default(),
            drains_in_progress: Gauge::default(),
            pool_size: Family::default(),
            pool_used: Family::default(),
            pool_free: Family::default(),
            lease_grants: Counter::default(),
            lease_refusals: Family::default(),
            lease_revocations: Counter::default(),
            failovers: Counter::default(),
            failover_duration: Histogram::new(FAILOVER_BUCKETS_SECONDS),
            unit_lease_healthy: Family::default(),
            unit_lease_revoked: Family::default(),
            alarm_active: Family::default(),
            lease_voters_granting: Family::default(),
            lease_remaining: Family::default(),
            grpc,
        };
        let r = registry.sub_registry_with_prefix(vnet_metrics::PREFIX);
        vnet_metrics::process::register_build_info(r, "vnetd", env!("CARGO_PKG_VERSION"));

        let raft = r.sub_registry_with_prefix("raft");
        raft.register(
            "has_leader",
            "1 if this node knows a current leader, else 0",
            m.has_leader.clone(),
        );
        raft.register(
            "is_leader",
            "1 if this node is the leader, else 0",
            m.is_leader.clone(),
        );
        raft.register("term", "The current Raft term", m.term.clone());
        raft.register(
            "voters",
            "Voters in the membership this node knows",
            m.voters.clone(),
        );
        raft.register(
            "leader_changes",
            "Times this node saw the leader change (including from none to one)",
            m.leader_changes.clone(),
        );
        raft.register(
            "commit_index",
            "Highest log index known committed: on the leader the quorum's match index, elsewhere the applied index",
            m.commit_index.clone(),
        );
        raft.register(
            "applied_index",
            "Highest log index applied to this node's state",
            m.applied_index.clone(),
        );
        raft.register(
            "last_log_index",
            "Highest log index in this node's log",
            m.last_log_index.clone(),
        );
        raft.register(
            "snapshot_index",
            "Log index of this node's last snapshot",
            m.snapshot_index.clone(),
        );
        raft.register(
            "proposals_committed",
            "Client writes this node proposed as leader that were committed",
            m.proposals_committed.clone(),
        );
        raft.register(
            "proposals_failed",
            "Client writes this node proposed as leader that failed or timed out",
            m.proposals_failed.clone(),
        );
        raft.register(
            "read_index_rounds",
            "Leadership confirmations this node ran as leader for linearizable reads",
            m.read_index_rounds.clone(),
        );
        raft.register(
            "append_entries_received",
            "AppendEntries (heartbeats included) this node handled from a leader, each message of \
             an AppendEntries stream counted",
            m.append_entries_received.clone(),
        );
        raft.register(
            "read_index_reads",
            "Linearizable reads answered by those confirmations (reads / rounds is the batch size)",
            m.read_index_reads.clone(),
        );
        raft.register(
            "proposals_pending",
            "Client writes this node proposed as leader and not yet answered",
            m.proposals_pending.clone(),
        );
        raft.register(
            "write_batch_size",
            "Client writes carried by each log entry this node proposed as leader (concurrent \
             writes share an entry)",
            m.write_batch_size.clone(),
        );
        raft.register_with_unit(
            "log_sync_duration",
            "Time to fsync the Raft log (every append, vote, truncate and purge)",
            Unit::Seconds,
            m.log_sync.clone(),
        );
        raft.register(
            "snapshots_built",
            "Snapshots this node built",
            m.snapshots_built.clone(),
        );
        raft.register_with_unit(
            "snapshot_build_duration",
            "Time to build, write and fsync a snapshot",
            Unit::Seconds,
            m.snapshot_build.clone(),
        );
        raft.register_with_unit(
            "snapshot_size",
            "Size of the last snapshot this node built",
            Unit::Bytes,
            m.snapshot_size.clone(),
        );
        raft.register(
            "peer_replication_lag_entries",
            "On the leader: log entries a peer lacks (last log index minus its match index)",
            m.peer_lag.clone(),
        );
        raft.register_with_unit(
            "peer_last_contact",
            "On the leader: time since a peer last answered this node",
            Unit::Seconds,
            m.peer_last_contact.clone(),
        );

        r.register(
            "profiles",
            "Profiles by placement state (presented, programming, moving, unplaced, failed_over)",
            m.profiles.clone(),
        );
        let unit = r.sub_registry_with_prefix("unit");
        unit.register(
            "presented_profiles",
            "Profiles a unit reports presenting",
            m.unit_presented.clone(),
        );
        unit.register(
            "placed_profiles",
            "Profiles placed on a unit (its load)",
            m.unit_placed.clone(),
        );
        unit.register(
            "capacity_profiles",
            "Profiles a unit may present at once",
            m.unit_capacity.clone(),
        );
        unit.register(
            "draining",
            "1 if a unit is marked draining, else 0",
            m.unit_draining.clone(),
        );
        r.register(
            "drains_in_progress",
            "Draining units that still have profiles placed or presented",
            m.drains_in_progress.clone(),
        );
        let unit = r.sub_registry_with_prefix("unit");
        unit.register(
            "lease_healthy",
            "On the leader: 1 if a unit's lease has not lapsed at a majority of voters and is not \
             revoked, else 0",
            m.unit_lease_healthy.clone(),
        );
        unit.register(
            "lease_revoked",
            "1 while a unit's lease is revoked (its failover is under way), else 0",
            m.unit_lease_revoked.clone(),
        );
        r.register(
            "alarm_active",
            "1 while an alarm of this kind is raised by this member, else 0 (NOSPACE: writes that \
             add data are refused until an operator disarms it)",
            m.alarm_active.clone(),
        );
        let lease = r.sub_registry_with_prefix("lease");
        lease.register(
            "grants",
            "Lease renewals this node granted as a voter",
            m.lease_grants.clone(),
        );
        lease.register(
            "refusals",
            "Lease renewals this node refused as a voter, by reason",
            m.lease_refusals.clone(),
        );
        lease.register(
            "revocations",
            "Unit leases this node revoked as leader",
            m.lease_revocations.clone(),
        );
        lease.register(
            "voters_granting",
            "On a unit: voters whose grants it holds now",
            m.lease_voters_granting.clone(),
        );
        lease.register_with_unit(
            "remaining",
            "On a unit: time its lease has left (0 when none is held)",
            Unit::Seconds,
            m.lease_remaining.clone(),
        );
        r.register(
            "failovers",
            "Failovers this node committed as leader (profiles moved off a unit whose lease lapsed)",
            m.failovers.clone(),
        );
        r.register_with_unit(
            "failover_duration",
            "From a unit's lease revocation to its peers reporting every moved profile presented",
            Unit::Seconds,
            m.failover_duration.clone(),
        );
        let pool = r.sub_registry_with_prefix("pool");
        pool.register(
            "size_identities",
            "Identities in a pool's range",
            m.pool_size.clone(),
        );
        pool.register(
            "used_identities",
            "Identities in a pool's range held by a profile",
            m.pool_used.clone(),
        );
        pool.register(
            "free_identities",
            "Identities in a pool's range free to allocate",
            m.pool_free.clone(),
        );
        Arc::new(m)
    }

    /// The gRPC method table for the public port: the public API, health and reflection.
    pub fn public_methods() -> GrpcMethods {
        let services: Vec<&str> = PUBLIC_SERVICES
            .iter()
            .chain(&STANDARD_SERVICES)
            .copied()
            .collect();
        methods(&services)
    }

    /// The gRPC method table for the peer API.
    pub fn peer_methods() -> GrpcMethods {
        methods(&PEER_SERVICES)
    }

    /// Sets every scrape-time value from `node`'s Raft metrics and applied state.
    pub fn refresh(&self, node: &Node) {
        let raft = node.raft().metrics().borrow().clone();
        let is_leader = raft.current_leader == Some(node.id()) && raft.state == ServerState::Leader;
        self.has_leader
            .set(i64::from(raft.current_leader.is_some()));
        self.is_leader.set(i64::from(is_leader));
        self.term.set(to_i64(raft.current_term));
        let membership = raft.membership_config.membership();
        self.voters.set(membership.voter_ids().count() as i64);
        self.commit_index
            .set(to_i64(node.committed_index_hint(&raft)));
        self.applied_index
            .set(to_i64(raft.last_applied.map_or(0, |id| id.index)));
        let last_log_index = raft.last_log_index.unwrap_or(0);
        self.last_log_index.set(to_i64(last_log_index));
        self.snapshot_index
            .set(to_i64(raft.snapshot.map_or(0, |id| id.index)));
        self.proposals_pending.set(node.writes_in_flight() as i64);

        self.peer_lag.clear();
        self.peer_last_contact.clear();
        if let (true, Some(replication)) = (is_leader, raft.replication.as_ref()) {
            // openraft lists the leader itself too; it lags nothing behind itself.
            for (id, matched) in replication.iter().filter(|(id, _)| **id != node.id()) {
                let Some(peer) = membership.get_node(id) else {
                    continue;
                };
                let labels = PeerLabels {
                    peer: peer.name.clone(),
                };
                let matched = matched.map_or(0, |log_id| log_id.index);
                self.peer_lag
                    .get_or_create(&labels)
                    .set(to_i64(last_log_index.saturating_sub(matched)));
                if let Some(ms) = node.peers().last_contact_ms(*id) {
                    self.peer_last_contact
                        .get_or_create(&labels)
                        .set(Duration::from_millis(ms).as_secs_f64());
                }
            }
        }

        self.refresh_domain(node);
    }

    fn refresh_alarms(&self, node: &Node) {
        self.alarm_active.clear();
        node.view().read(|applied| {
            // Every member and kind, 0 when not raised: a family with no series would not be
            // exported at all, and an alert on it could not be told from a renamed metric.
            for member in applied.state.members() {
                for kind in vnet_model::AlarmKind::ALL {
                    let raised = applied
                        .state
                        .alarms()
                        .any(|a| a.member == member.name && a.kind == kind);
                    let labels = AlarmLabels {
                        member: member.name.clone(),
                        alarm: kind.name().to_owned(),
                    };
                    self.alarm_active
                        .get_or_create(&labels)
                        .set(i64::from(raised));
                }
            }
        });
    }

    fn refresh_leases(&self, node: &Node) {
        self.unit_lease_healthy.clear();
        self.unit_lease_revoked.clear();
        let view = node.lease_view();
        let failed_after = node.failed_after();
        node.view().read(|applied| {
            for member in applied.state.members().filter(|m| m.role == Role::Unit) {
                let labels = UnitLabels {
                    unit: member.name.clone(),
                };
                let revoked = applied.state.revoked_at(&member.name).is_some();
                self.unit_lease_revoked
                    .get_or_create(&labels)
                    .set(i64::from(revoked));
                if let Some(view) = &view {
                    let live =
                        crate::lease::judge(&view.sets, &view.reports, &member.name, failed_after)
                            == crate::lease::Judgement::Live;
                    self.unit_lease_healthy
                        .get_or_create(&labels)
                        .set(i64::from(live && !revoked));
                }
            }
        });
        // Only a unit exports its own lease, labelled with its name.
        if let Some(own) = node.unit_view() {
            let labels = UnitLabels {
                unit: own.unit.clone(),
            };
            self.lease_voters_granting
                .get_or_create(&labels)
                .set(i64::from(own.voters_granting));
            self.lease_remaining
                .get_or_create(&labels)
                .set(own.lease_left_ms.unwrap_or(0) as f64 / 1e3);
        }
    }

    fn refresh_domain(&self, node: &Node) {
        self.refresh_leases(node);
        self.refresh_alarms(node);
        self.unit_presented.clear();
        self.unit_placed.clear();
        self.unit_capacity.clear();
        self.unit_draining.clear();
        self.pool_size.clear();
        self.pool_used.clear();
        self.pool_free.clear();
        node.view().read(|applied| {
            let state = &applied.state;
            let mut by_state = [
                (PlacementStateKind::Presented, 0i64),
                (PlacementStateKind::Programming, 0),
                (PlacementStateKind::Moving, 0),
                (PlacementStateKind::Unplaced, 0),
                (PlacementStateKind::FailedOver, 0),
            ];
            for placement in placement_status(state) {
                if let Some((_, count)) = by_state.iter_mut().find(|(s, _)| *s == placement.state) {
                    *count += 1;
                }
            }
            for (kind, count) in by_state {
                self.profiles
                    .get_or_create(&PlacementLabels {
                        state: placement_state_label(kind),
                    })
                    .set(count);
            }

            let mut drains_in_progress = 0;
            for member in state.members().filter(|m| m.role == Role::Unit) {
                let labels = UnitLabels {
                    unit: member.name.clone(),
                };
                let presented = state.presented_by(&member.name).map_or(0, |p| p.len());
                let placed = state.load_of(&member.name);
                let draining = state.is_draining(&member.name);
                if draining && (presented > 0 || placed > 0) {
                    drains_in_progress += 1;
                }
                self.unit_presented
                    .get_or_create(&labels)
                    .set(presented as i64);
                self.unit_placed.get_or_create(&labels).set(placed as i64);
                self.unit_capacity
                    .get_or_create(&labels)
                    .set(i64::from(member.capacity));
                self.unit_draining
                    .get_or_create(&labels)
                    .set(i64::from(draining));
            }
            self.drains_in_progress.set(drains_in_progress);

            for usage in state.pools_usage() {
                let labels = PoolLabels {
                    pool: usage.name.clone(),
                    kind: pool_kind_label(usage.kind),
                };
                self.pool_size
                    .get_or_create(&labels)
                    .set(to_i64(usage.size));
                self.pool_used
                    .get_or_create(&labels)
                    .set(to_i64(usage.used));
                self.pool_free
                    .get_or_create(&labels)
                    .set(to_i64(usage.size.saturating_sub(usage.used)));
            }
        });
    }
}

impl raft_store::StoreObserver for NodeMetrics {
    fn log_synced(&self, took: Duration) {
        self.log_sync.observe(took.as_secs_f64());
    }

    fn snapshot_built(&self, took: Duration, bytes: u64) {
        self.snapshots_built.inc();
        self.snapshot_build.observe(took.as_secs_f64());
        self.snapshot_size.set(to_i64(bytes));
    }
}

/// Every descriptor set served on this node's ports.
const DESCRIPTOR_SETS: [&[u8]; 4] = [
    vnet_proto::FILE_DESCRIPTOR_SET,
    tonic_health::pb::FILE_DESCRIPTOR_SET,
    tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
    tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
];

fn methods(services: &[&str]) -> GrpcMethods {
    // The descriptor sets are generated from the same files as the services, so every name is in
    // them; a test below checks it.
    GrpcMethods::from_descriptor_sets(&DESCRIPTOR_SETS, services).unwrap_or_default()
}

fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn placement_state_label(kind: PlacementStateKind) -> &'static str {
    match kind {
        PlacementStateKind::Presented => "presented",
        PlacementStateKind::Programming => "programming",
        PlacementStateKind::Moving => "moving",
        PlacementStateKind::Unplaced => "unplaced",
        PlacementStateKind::FailedOver => "failed_over",
    }
}

fn pool_kind_label(kind: vnet_model::PoolKind) -> &'static str {
    match kind {
        vnet_model::PoolKind::Mac => "mac",
        vnet_model::PoolKind::Wwn => "wwn",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_served_service_is_in_the_descriptor_set() {
        for services in [&PUBLIC_SERVICES[..], &STANDARD_SERVICES, &PEER_SERVICES] {
            GrpcMethods::from_descriptor_sets(&DESCRIPTOR_SETS, services)
                .expect("every served service is described");
        }
        let public = NodeMetrics::public_methods();
        assert_eq!(
            public.labels("/vnet.v1.WatchService/Watch").grpc_type,
            "server_stream"
        );
        let check = public.labels("/grpc.health.v1.Health/Check");
        assert_eq!(check.grpc_method, "Check");
        assert_eq!(
            public
                .labels("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo")
                .grpc_type,
            "bidi_stream"
        );
    }
}
