//! `vnetd` configuration: a TOML file, overridden by `VNET_*` environment variables, overridden
//! by command-line flags. Every key exists in all three forms; `vnetd --help` documents each.
//!
//! Parsing produces [`Args`] (everything optional); [`Args::resolve`] merges the file under it,
//! applies defaults, validates the whole, and yields a [`Config`] in which every value is known
//! good. Errors name the key and the value at fault.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use clap::{Parser, ValueEnum};
use serde::Deserialize;
use vnet_model::Role;

use raft_store::NodeId;

mod limits;
mod parse;

pub use limits::*;
use parse::check_host_port;
pub use parse::{parse_cabling, parse_initial_cluster};

// Defaults chosen for a failover budget under 2 s even when the failed unit led: an election
// takes about one to two longest election timeouts (openraft's voters refuse votes while their
// leader lease, the longest timeout, runs), then the new leader waits lease_ttl + drift_margin
// less the shortest election timeout (see lease.rs), then a placement commit and a reconcile.
pub const DEFAULT_HEARTBEAT_MS: u64 = 100;
pub const DEFAULT_ELECTION_MIN_MS: u64 = 300;
pub const DEFAULT_ELECTION_MAX_MS: u64 = 600;
pub const DEFAULT_SNAPSHOT_EVERY_ENTRIES: u64 = 5_000;
pub const DEFAULT_REQUEST_TIMEOUT_MS: u64 = 5_000;
/// One thread runs every task (see `Args::worker_threads`).
pub const DEFAULT_WORKER_THREADS: usize = 1;
const WORKER_THREADS_MAX: usize = 256;
pub const DEFAULT_CAPACITY: u32 = 30;
pub const DEFAULT_LEASE_TTL_MS: u64 = 800;
pub const DEFAULT_DRIFT_MARGIN_MS: u64 = 150;
pub const DEFAULT_FAILBACK_HOLD_DOWN_MS: u64 = 5_000;
/// Host ports on a unit's switch are numbered 1..=HOST_PORTS_MAX.
pub const HOST_PORTS_MAX: u8 = 30;
/// Entries kept in the log behind a snapshot, so that a briefly lagging follower catches up from
/// the log instead of needing the whole snapshot.
pub const LOG_KEPT_BEHIND_SNAPSHOT_ENTRIES: u64 = 1_000;
/// Snapshot bytes sent per install-snapshot message.
pub const SNAPSHOT_CHUNK_BYTES_MAX: u64 = 1024 * 1024;
/// How long one install-snapshot chunk may take to be sent and written by the follower.
/// openraft's default, 200 ms, is about what a 1 MiB chunk needs at 50 Mb/s with nothing left
/// for the disk, and a chunk that misses it is sent again from its start; a second carries a
/// chunk over a 10 Mb/s link. A longer timeout only delays noticing a follower that died
/// mid-snapshot, which the next chunk's connection error shows anyway.
pub const INSTALL_SNAPSHOT_TIMEOUT_MS: u64 = 1_000;
/// Entries per AppendEntries at most (openraft's default, made explicit); the byte budget,
/// `peer::client::APPEND_BATCH_BYTES_MAX`, usually binds first.
pub const APPEND_ENTRIES_MAX: u64 = 300;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RoleArg {
    /// A unit: owns a switch and presents profiles.
    Unit,
    /// A witness: votes in Raft so that two units keep a quorum, presents nothing.
    Witness,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// vnetd — a vnet-ha node: replicates profile state with Raft and serves the vnet.v1 API.
///
/// Every option can also be set in the TOML file given by --config (same name, with '-' written
/// as '_', e.g. `api_listen = "0.0.0.0:7001"`) or by the VNET_* environment variable shown.
/// Precedence: flag, then environment, then file, then default.
#[derive(Debug, Clone, Default, Parser, Deserialize)]
#[command(
    name = "vnetd",
    version,
    about,
    long_about,
    max_term_width = 100,
    after_help = "Offline operations on a data directory (vnetd must not be running on it):\n  vnetd restore --help   build a new member's data directory from a backup\n  vnetd recover --help   make a surviving voter the only voter after losing the quorum"
)]
#[serde(deny_unknown_fields)]
pub struct Args {
    /// TOML configuration file.
    #[arg(long, env = "VNET_CONFIG", value_name = "FILE")]
    #[serde(skip)]
    pub config: Option<PathBuf>,

    /// This node's Raft id: a positive integer, unique in the cluster, never reused.
    #[arg(long, env = "VNET_ID")]
    pub id: Option<u64>,

    /// This node's name, e.g. `unit-a` ([a-z0-9._-], at most 63 characters).
    #[arg(long, env = "VNET_NAME")]
    pub name: Option<String>,

    /// Role in the cluster. [default: unit]
    #[arg(long, env = "VNET_ROLE", value_enum)]
    pub role: Option<RoleArg>,

    /// Directory for the Raft log and snapshots. Created if missing.
    #[arg(long, env = "VNET_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    /// Address for the public gRPC API (vnet.v1). [default: 127.0.0.1:7001]
    #[arg(long, env = "VNET_API_LISTEN", value_name = "ADDR")]
    pub api_listen: Option<SocketAddr>,

    /// Address for peer traffic (Raft). [default: 127.0.0.1:7101]
    #[arg(long, env = "VNET_PEER_LISTEN", value_name = "ADDR")]
    pub peer_listen: Option<SocketAddr>,

    /// Address for plain-HTTP metrics: /metrics (Prometheus), /health and /readyz. Off unless
    /// set; keep it on a management network, it has no authentication.
    #[arg(long, env = "VNET_METRICS_LISTEN", value_name = "ADDR")]
    pub metrics_listen: Option<SocketAddr>,

    /// API address other nodes and clients should use to reach this node, if it differs from
    /// --api-listen (e.g. when listening on 0.0.0.0).
    #[arg(long, env = "VNET_API_ADVERTISE", value_name = "HOST:PORT")]
    pub api_advertise: Option<String>,

    /// Peer address other nodes should use to reach this node. Defaults to this node's entry in
    /// --initial-cluster, else --peer-listen.
    #[arg(long, env = "VNET_PEER_ADVERTISE", value_name = "HOST:PORT")]
    pub peer_advertise: Option<String>,

    /// The founding members, as `id=name@peer-host:port,...`. The member with the lowest id
    /// founds the cluster on first start. Leave empty on a node that will join a running cluster
    /// through `vnetctl member add`.
    #[arg(long, env = "VNET_INITIAL_CLUSTER", value_name = "LIST")]
    pub initial_cluster: Option<String>,

    /// Which host port each server is cabled to on this unit, as `server=port,...` (ports
    /// 1..=30). Units only.
    #[arg(long, env = "VNET_CABLING", value_name = "LIST")]
    pub cabling: Option<String>,

    /// How many profiles this unit may present at once. Units only. [default: 30]
    #[arg(long, env = "VNET_CAPACITY")]
    pub capacity: Option<u32>,

    /// Address of this unit's switch (`vnet-switchd`), e.g. 127.0.0.1:7201. Units only; a unit
    /// without a switch takes part in Raft but presents nothing.
    #[arg(long, env = "VNET_SWITCH", value_name = "HOST:PORT")]
    pub switch: Option<String>,

    /// How long a granted lease lets a unit present identities, in milliseconds. Units renew every
    /// quarter of it. [default: 800]
    #[arg(long, env = "VNET_LEASE_TTL_MS", value_name = "MS")]
    pub lease_ttl_ms: Option<u64>,

    /// Extra time the leader waits past lease_ttl before declaring a silent unit failed, to
    /// absorb clock-rate differences and scheduling delay. [default: 150]
    #[arg(long, env = "VNET_DRIFT_MARGIN_MS", value_name = "MS")]
    pub drift_margin_ms: Option<u64>,

    /// How long a preferred unit must stay healthy before profiles with failback `auto` move back
    /// to it. [default: 5000]
    #[arg(long, env = "VNET_FAILBACK_HOLD_DOWN_MS", value_name = "MS")]
    pub failback_hold_down_ms: Option<u64>,

    /// TEST ONLY, UNSAFE: the agent does not clear its switch when its lease lapses. With the
    /// switch watchdog also disabled this allows two units to present the same identities; it
    /// exists so the chaos tests can prove their checker catches exactly that.
    #[arg(long, env = "VNET_UNSAFE_DISABLE_FENCING")]
    #[serde(default)]
    pub unsafe_disable_fencing: bool,

    /// Raft heartbeat interval in milliseconds. [default: 100]
    #[arg(long, env = "VNET_HEARTBEAT_MS", value_name = "MS")]
    pub heartbeat_ms: Option<u64>,

    /// Shortest Raft election timeout in milliseconds. [default: 300]
    #[arg(long, env = "VNET_ELECTION_MIN_MS", value_name = "MS")]
    pub election_min_ms: Option<u64>,

    /// Longest Raft election timeout in milliseconds. [default: 600]
    #[arg(long, env = "VNET_ELECTION_MAX_MS", value_name = "MS")]
    pub election_max_ms: Option<u64>,

    /// Build a snapshot (and purge the log behind it) after this many new log entries.
    /// [default: 5000]
    #[arg(long, env = "VNET_SNAPSHOT_EVERY", value_name = "ENTRIES")]
    pub snapshot_every: Option<u64>,

    /// How long a client request may wait for the leader, in milliseconds. [default: 5000]
    #[arg(long, env = "VNET_REQUEST_TIMEOUT_MS", value_name = "MS")]
    pub request_timeout_ms: Option<u64>,

    /// Threads that run this node's tasks, 1 to 256. With 1, every task runs on one thread, and
    /// a hand-off from one task to the next (of which a write makes about twenty) never has to
    /// wake another thread; that measured fastest on a small machine: on two cores shared by
    /// three nodes, 16 clients wrote about 20 % more per second than with a thread per core.
    /// More threads spread CPU-heavy work (TLS handshakes, large listings, watch catch-up) over
    /// cores. Log fsyncs and snapshot encoding run on threads of their own either way.
    /// [default: 1]
    #[arg(long, env = "VNET_WORKER_THREADS", value_name = "N")]
    pub worker_threads: Option<usize>,

    /// Export traces over OTLP/gRPC to this collector, e.g. `http://127.0.0.1:4317`. Off unless
    /// set.
    #[arg(long, env = "VNET_OTLP_ENDPOINT", value_name = "URL")]
    pub otlp_endpoint: Option<String>,

    /// Concurrent connections the public API port accepts; past it a new connection is closed at
    /// once and a line is logged. [default: 1024]
    #[arg(long, env = "VNET_API_CONNECTIONS_MAX", value_name = "N")]
    pub api_connections_max: Option<usize>,

    /// Concurrent connections the peer port accepts. [default: 128]
    #[arg(long, env = "VNET_PEER_CONNECTIONS_MAX", value_name = "N")]
    pub peer_connections_max: Option<usize>,

    /// HTTP/2 streams (concurrent calls) per connection, on both ports. [default: 128]
    #[arg(long, env = "VNET_STREAMS_PER_CONNECTION_MAX", value_name = "N")]
    pub streams_per_connection_max: Option<u32>,

    /// How often the servers send an HTTP/2 PING on a connection. [default: 10000]
    #[arg(long, env = "VNET_KEEPALIVE_INTERVAL_MS", value_name = "MS")]
    pub keepalive_interval_ms: Option<u64>,

    /// How long a PING may go unanswered before the connection is closed. [default: 10000]
    #[arg(long, env = "VNET_KEEPALIVE_TIMEOUT_MS", value_name = "MS")]
    pub keepalive_timeout_ms: Option<u64>,

    /// A connection that sends nothing for this long (not even a PING answer) is closed. At
    /// least twice keepalive_interval_ms. [default: 30000]
    #[arg(long, env = "VNET_IDLE_TIMEOUT_MS", value_name = "MS")]
    pub idle_timeout_ms: Option<u64>,

    /// The cluster CA certificate (PEM): peers, clients and the switch must present a
    /// certificate it signed. With --cert and --key, every port (API, peer, the switch
    /// connection) speaks mutual TLS; the files are re-read when they change.
    #[arg(long, env = "VNET_CACERT", value_name = "FILE")]
    pub cacert: Option<PathBuf>,

    /// This node's certificate (PEM), signed by --cacert, with SAN URI vnet://node/<id> and
    /// the host names and addresses it is reached by (`vnetctl cert create-node`).
    #[arg(long, env = "VNET_CERT", value_name = "FILE")]
    pub cert: Option<PathBuf>,

    /// This node's private key (PEM).
    #[arg(long, env = "VNET_KEY", value_name = "FILE")]
    pub key: Option<PathBuf>,

    /// Serve plaintext (no TLS, no authentication) even on addresses other than loopback.
    /// Without it, vnetd refuses to start plaintext on a non-loopback address.
    #[arg(long, env = "VNET_INSECURE")]
    #[serde(default)]
    pub insecure: bool,

    /// Every call on either port ends with DEADLINE_EXCEEDED after this long, whatever deadline
    /// the client asked for. [default: the larger of request_timeout_ms + 1000 and ten
    /// election_max_ms + 1000]
    #[arg(long, env = "VNET_REQUEST_DEADLINE_MS", value_name = "MS")]
    pub request_deadline_ms: Option<u64>,

    /// Watch streams this node serves at once; past it Watch answers RESOURCE_EXHAUSTED.
    /// [default: 4096]
    #[arg(long, env = "VNET_WATCHERS_MAX", value_name = "N")]
    pub watchers_max: Option<usize>,

    /// Events buffered per watcher for a client that reads slower than changes come.
    /// [default: 64]
    #[arg(long, env = "VNET_WATCH_BUFFER_EVENTS", value_name = "N")]
    pub watch_buffer_events: Option<usize>,

    /// A watcher whose buffer stays full this long is cut off with OUT_OF_RANGE, naming the
    /// revision to resume from. [default: 5000]
    #[arg(long, env = "VNET_WATCH_STALL_TIMEOUT_MS", value_name = "MS")]
    pub watch_stall_timeout_ms: Option<u64>,

    /// Disk quota of the store (the Raft log and snapshots in --data-dir), in bytes, like etcd's
    /// --quota-backend-bytes. Past it the NOSPACE alarm is raised: writes that add data are
    /// refused with RESOURCE_EXHAUSTED until `vnetctl alarm disarm`. Keep it well below the
    /// disk's free space. [default: 2147483648]
    #[arg(long, env = "VNET_QUOTA_BYTES", value_name = "BYTES")]
    pub quota_bytes: Option<u64>,

    /// The principal (a client certificate's identity) made the cluster's first admin, once: while
    /// the replicated role map has no admin, this node proposes it (ARCHITECTURE.md, "Roles and
    /// audit"). Give it on the founding members; once any admin exists it is ignored.
    #[arg(long, env = "VNET_BOOTSTRAP_ADMIN", value_name = "PRINCIPAL")]
    pub bootstrap_admin: Option<String>,

    /// Bytes of one audit log file (under --data-dir/audit) before it is rotated.
    /// [default: 16777216]
    #[arg(long, env = "VNET_AUDIT_FILE_BYTES_MAX", value_name = "BYTES")]
    pub audit_file_bytes_max: Option<u64>,

    /// Audit log files kept, the current one included; the oldest is deleted at rotation.
    /// [default: 8]
    #[arg(long, env = "VNET_AUDIT_FILES_KEPT", value_name = "N")]
    pub audit_files_kept: Option<u32>,

    /// Log filter, e.g. `info` or `vnet_node=debug,openraft=warn`. [default: info]
    #[arg(long, env = "VNET_LOG_LEVEL", value_name = "FILTER")]
    pub log_level: Option<String>,

    /// Log line format. [default: text]
    #[arg(long, env = "VNET_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,
}

/// A founding member from `--initial-cluster`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitialMember {
    pub id: NodeId,
    pub name: String,
    pub peer_addr: String,
}

/// The Raft membership `members` make: each id with its name and peer address.
pub fn peer_nodes(members: &[InitialMember]) -> BTreeMap<NodeId, raft_store::PeerNode> {
    members
        .iter()
        .map(|m| {
            let node = raft_store::PeerNode {
                name: m.name.clone(),
                peer_addr: m.peer_addr.clone(),
            };
            (m.id, node)
        })
        .collect()
}

/// Raft timing and snapshot policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RaftTiming {
    pub heartbeat_ms: u64,
    pub election_min_ms: u64,
    pub election_max_ms: u64,
    pub snapshot_every_entries: u64,
}

impl RaftTiming {
    pub fn to_openraft(&self) -> Result<openraft::Config, Box<openraft::ConfigError>> {
        openraft::Config {
            cluster_name: "vnet-ha".to_string(),
            heartbeat_interval: self.heartbeat_ms,
            election_timeout_min: self.election_min_ms,
            election_timeout_max: self.election_max_ms,
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(self.snapshot_every_entries),
            max_in_snapshot_log_to_keep: LOG_KEPT_BEHIND_SNAPSHOT_ENTRIES,
            snapshot_max_chunk_size: SNAPSHOT_CHUNK_BYTES_MAX,
            install_snapshot_timeout: INSTALL_SNAPSHOT_TIMEOUT_MS,
            max_payload_entries: APPEND_ENTRIES_MAX,
            ..Default::default()
        }
        .validate()
        .map_err(Box::new)
    }
}

/// Lease timing (see `lease.rs` for the safety argument these feed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseTiming {
    pub ttl_ms: u64,
    pub drift_margin_ms: u64,
    pub failback_hold_down_ms: u64,
}

impl LeaseTiming {
    /// How often a unit renews: a quarter of the lease, so three renewals may be lost in a row
    /// before the lease lapses.
    pub fn renew_every_ms(&self) -> u64 {
        (self.ttl_ms / 4).max(1)
    }
}

/// A complete, validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub id: NodeId,
    pub name: String,
    pub role: Role,
    pub data_dir: PathBuf,
    pub api_listen: SocketAddr,
    pub peer_listen: SocketAddr,
    /// Where to serve /metrics, /health and /readyz; `None`: nowhere.
    pub metrics_listen: Option<SocketAddr>,
    /// `None`: advertise the address the API listener actually bound (port 0 in tests).
    pub api_advertise: Option<String>,
    pub peer_advertise: String,
    pub initial_cluster: Vec<InitialMember>,
    pub cabling: BTreeMap<String, u8>,
    pub capacity: u32,
    pub raft: RaftTiming,
    pub lease: LeaseTiming,
    /// The unit's switch, if it has one.
    pub switch: Option<String>,
    pub unsafe_disable_fencing: bool,
    pub request_timeout_ms: u64,
    /// Threads of the async runtime (see `Args::worker_threads`); 1 runs it on one thread.
    pub worker_threads: usize,
    pub limits: ServerLimits,
    /// The store's disk quota (see `quota`).
    pub quota_bytes: u64,
    /// The principal this node makes the first admin while the cluster has none.
    pub bootstrap_admin: Option<String>,
    /// Where the audit log goes and how much of it is kept (`auth::audit`).
    pub audit: crate::auth::audit::AuditConfig,
    pub log_level: String,
    pub log_format: LogFormat,
    /// The OTLP/gRPC collector to export traces to; `None`: no traces.
    pub otlp_endpoint: Option<String>,
    /// Mutual TLS on every port; `None`: plaintext (loopback only, unless `insecure`).
    pub tls: Option<vnet_tls::TlsFiles>,
    /// Plaintext allowed on non-loopback addresses (`--insecure`).
    pub insecure: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} is not valid: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{key} is required (flag --{flag}, variable {env}, or `{key}` in the config file)")]
    Missing {
        key: &'static str,
        flag: &'static str,
        env: &'static str,
    },
    #[error("invalid {key} {value:?}: {reason}")]
    Invalid {
        key: &'static str,
        value: String,
        reason: String,
    },
}

fn invalid(key: &'static str, value: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key,
        value: value.into(),
        reason: reason.into(),
    }
}

impl Args {
    /// Reads the config file (if any), layers these arguments over it, and validates.
    pub fn resolve(self) -> Result<Config, ConfigError> {
        let file = match &self.config {
            Some(path) => Self::from_file(path)?,
            None => Args::default(),
        };
        self.over(file).validate()
    }

    fn from_file(path: &Path) -> Result<Args, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })
    }

    /// `self` wins wherever it has a value.
    fn over(self, file: Args) -> Args {
        Args {
            config: self.config,
            id: self.id.or(file.id),
            name: self.name.or(file.name),
            role: self.role.or(file.role),
            data_dir: self.data_dir.or(file.data_dir),
            api_listen: self.api_listen.or(file.api_listen),
            peer_listen: self.peer_listen.or(file.peer_listen),
            metrics_listen: self.metrics_listen.or(file.metrics_listen),
            api_advertise: self.api_advertise.or(file.api_advertise),
            peer_advertise: self.peer_advertise.or(file.peer_advertise),
            initial_cluster: self.initial_cluster.or(file.initial_cluster),
            cabling: self.cabling.or(file.cabling),
            capacity: self.capacity.or(file.capacity),
            heartbeat_ms: self.heartbeat_ms.or(file.heartbeat_ms),
            election_min_ms: self.election_min_ms.or(file.election_min_ms),
            election_max_ms: self.election_max_ms.or(file.election_max_ms),
            snapshot_every: self.snapshot_every.or(file.snapshot_every),
            request_timeout_ms: self.request_timeout_ms.or(file.request_timeout_ms),
            worker_threads: self.worker_threads.or(file.worker_threads),
            switch: self.switch.or(file.switch),
            lease_ttl_ms: self.lease_ttl_ms.or(file.lease_ttl_ms),
            drift_margin_ms: self.drift_margin_ms.or(file.drift_margin_ms),
            failback_hold_down_ms: self.failback_hold_down_ms.or(file.failback_hold_down_ms),
            unsafe_disable_fencing: self.unsafe_disable_fencing || file.unsafe_disable_fencing,
            otlp_endpoint: self.otlp_endpoint.or(file.otlp_endpoint),
            api_connections_max: self.api_connections_max.or(file.api_connections_max),
            peer_connections_max: self.peer_connections_max.or(file.peer_connections_max),
            streams_per_connection_max: self
                .streams_per_connection_max
                .or(file.streams_per_connection_max),
            keepalive_interval_ms: self.keepalive_interval_ms.or(file.keepalive_interval_ms),
            keepalive_timeout_ms: self.keepalive_timeout_ms.or(file.keepalive_timeout_ms),
            idle_timeout_ms: self.idle_timeout_ms.or(file.idle_timeout_ms),
            request_deadline_ms: self.request_deadline_ms.or(file.request_deadline_ms),
            cacert: self.cacert.or(file.cacert),
            cert: self.cert.or(file.cert),
            key: self.key.or(file.key),
            insecure: self.insecure || file.insecure,
            watchers_max: self.watchers_max.or(file.watchers_max),
            watch_buffer_events: self.watch_buffer_events.or(file.watch_buffer_events),
            watch_stall_timeout_ms: self.watch_stall_timeout_ms.or(file.watch_stall_timeout_ms),
            quota_bytes: self.quota_bytes.or(file.quota_bytes),
            bootstrap_admin: self.bootstrap_admin.or(file.bootstrap_admin),
            audit_file_bytes_max: self.audit_file_bytes_max.or(file.audit_file_bytes_max),
            audit_files_kept: self.audit_files_kept.or(file.audit_files_kept),
            log_level: self.log_level.or(file.log_level),
            log_format: self.log_format.or(file.log_format),
        }
    }

    fn validate(self) -> Result<Config, ConfigError> {
        let limits = self.server_limits(
            self.request_timeout_ms
                .unwrap_or(DEFAULT_REQUEST_TIMEOUT_MS),
            self.election_max_ms.unwrap_or(DEFAULT_ELECTION_MAX_MS),
        )?;
        let id = self.id.ok_or(ConfigError::Missing {
            key: "id",
            flag: "id",
            env: "VNET_ID",
        })?;
        if id == 0 {
            return Err(invalid("id", "0", "node ids start at 1"));
        }
        let name = self.name.ok_or(ConfigError::Missing {
            key: "name",
            flag: "name",
            env: "VNET_NAME",
        })?;
        vnet_model::name::validate_name("name", &name)
            .map_err(|e| invalid("name", name.clone(), e.to_string()))?;
        let data_dir = self.data_dir.ok_or(ConfigError::Missing {
            key: "data_dir",
            flag: "data-dir",
            env: "VNET_DATA_DIR",
        })?;
        let role = match self.role.unwrap_or(RoleArg::Unit) {
            RoleArg::Unit => Role::Unit,
            RoleArg::Witness => Role::Witness,
        };
        let api_listen = self
            .api_listen
            .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 7001)));
        let peer_listen = self
            .peer_listen
            .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 7101)));
        let initial_cluster = match self.initial_cluster.as_deref() {
            None | Some("") => Vec::new(),
            Some(list) => parse_initial_cluster(list)?,
        };
        if let Some(me) = initial_cluster.iter().find(|m| m.id == id) {
            if me.name != name {
                return Err(invalid(
                    "initial_cluster",
                    self.initial_cluster.clone().unwrap_or_default(),
                    format!(
                        "it names node {id} {:?}, but this node's name is {name:?}",
                        me.name
                    ),
                ));
            }
        }
        let peer_advertise = match self.peer_advertise {
            Some(addr) => {
                check_host_port("peer_advertise", &addr)?;
                addr
            }
            None => initial_cluster
                .iter()
                .find(|m| m.id == id)
                .map(|m| m.peer_addr.clone())
                .unwrap_or_else(|| peer_listen.to_string()),
        };
        if let Some(addr) = &self.api_advertise {
            check_host_port("api_advertise", addr)?;
        }
        let cabling = match self.cabling.as_deref() {
            None | Some("") => BTreeMap::new(),
            Some(list) => parse_cabling(list)?,
        };
        let capacity = match role {
            Role::Unit => self.capacity.unwrap_or(DEFAULT_CAPACITY),
            Role::Witness => {
                if !cabling.is_empty() {
                    return Err(invalid(
                        "cabling",
                        self.cabling.unwrap_or_default(),
                        "a witness has no switch, so no server is cabled to it",
                    ));
                }
                if let Some(capacity) = self.capacity.filter(|c| *c != 0) {
                    return Err(invalid(
                        "capacity",
                        capacity.to_string(),
                        "a witness presents no profiles; leave capacity unset or 0",
                    ));
                }
                0
            }
        };
        let raft = RaftTiming {
            heartbeat_ms: self.heartbeat_ms.unwrap_or(DEFAULT_HEARTBEAT_MS),
            election_min_ms: self.election_min_ms.unwrap_or(DEFAULT_ELECTION_MIN_MS),
            election_max_ms: self.election_max_ms.unwrap_or(DEFAULT_ELECTION_MAX_MS),
            snapshot_every_entries: self
                .snapshot_every
                .unwrap_or(DEFAULT_SNAPSHOT_EVERY_ENTRIES),
        };
        if raft.heartbeat_ms == 0 {
            return Err(invalid("heartbeat_ms", "0", "must be at least 1"));
        }
        if raft.election_min_ms <= raft.heartbeat_ms * 2 {
            return Err(invalid(
                "election_min_ms",
                raft.election_min_ms.to_string(),
                format!(
                    "must exceed twice heartbeat_ms ({}), or followers time out between \
                     heartbeats",
                    raft.heartbeat_ms
                ),
            ));
        }
        if raft.election_max_ms <= raft.election_min_ms {
            return Err(invalid(
                "election_max_ms",
                raft.election_max_ms.to_string(),
                format!("must exceed election_min_ms ({})", raft.election_min_ms),
            ));
        }
        if raft.snapshot_every_entries == 0 {
            return Err(invalid("snapshot_every", "0", "must be at least 1"));
        }
        let lease = LeaseTiming {
            ttl_ms: self.lease_ttl_ms.unwrap_or(DEFAULT_LEASE_TTL_MS),
            drift_margin_ms: self.drift_margin_ms.unwrap_or(DEFAULT_DRIFT_MARGIN_MS),
            failback_hold_down_ms: self
                .failback_hold_down_ms
                .unwrap_or(DEFAULT_FAILBACK_HOLD_DOWN_MS),
        };
        if lease.ttl_ms < 4 * raft.heartbeat_ms {
            return Err(invalid(
                "lease_ttl_ms",
                lease.ttl_ms.to_string(),
                format!(
                    "must be at least four heartbeats ({} ms): each renewal needs a quorum round",
                    4 * raft.heartbeat_ms
                ),
            ));
        }
        if let Some(endpoint) = &self.otlp_endpoint {
            if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
                return Err(invalid(
                    "otlp_endpoint",
                    endpoint.clone(),
                    "expected a URL such as http://127.0.0.1:4317",
                ));
            }
        }
        if let Some(switch) = &self.switch {
            if role == Role::Witness {
                return Err(invalid("switch", switch.clone(), "a witness has no switch"));
            }
            check_host_port("switch", switch)?;
        }
        let request_timeout_ms = self
            .request_timeout_ms
            .unwrap_or(DEFAULT_REQUEST_TIMEOUT_MS);
        if request_timeout_ms < raft.election_max_ms {
            return Err(invalid(
                "request_timeout_ms",
                request_timeout_ms.to_string(),
                format!(
                    "must be at least election_max_ms ({}), or requests fail during every \
                     election",
                    raft.election_max_ms
                ),
            ));
        }
        let worker_threads = self.worker_threads.unwrap_or(DEFAULT_WORKER_THREADS);
        if !(1..=WORKER_THREADS_MAX).contains(&worker_threads) {
            return Err(invalid(
                "worker_threads",
                worker_threads.to_string(),
                format!("must be in 1..={WORKER_THREADS_MAX}"),
            ));
        }
        let tls = match (self.cacert, self.cert, self.key) {
            (Some(ca), Some(cert), Some(key)) => Some(vnet_tls::TlsFiles { ca, cert, key }),
            (None, None, None) => None,
            (ca, cert, key) => {
                let missing: Vec<&str> = [
                    ("cacert", ca.is_none()),
                    ("cert", cert.is_none()),
                    ("key", key.is_none()),
                ]
                .into_iter()
                .filter(|(_, absent)| *absent)
                .map(|(name, _)| name)
                .collect();
                return Err(invalid(
                    "cacert",
                    missing.join(", "),
                    "cacert, cert and key go together: give all three for TLS, or none",
                ));
            }
        };
        // Secure by default: plaintext is unauthenticated, so it is served only where nothing
        // but this machine can reach it, unless the operator says otherwise (ARCHITECTURE.md,
        // "Security").
        if tls.is_none() && !self.insecure {
            for (key, addr) in [("api_listen", api_listen), ("peer_listen", peer_listen)] {
                if !addr.ip().is_loopback() {
                    return Err(invalid(
                        key,
                        addr.to_string(),
                        "a non-loopback address needs TLS: give cacert, cert and key \
                         (`vnetctl cert`), or --insecure to serve plaintext without \
                         authentication anyway",
                    ));
                }
            }
        }
        let quota_bytes = self.quota_bytes.unwrap_or(DEFAULT_QUOTA_BYTES);
        if quota_bytes < QUOTA_BYTES_MIN {
            return Err(invalid(
                "quota_bytes",
                quota_bytes.to_string(),
                format!("must be at least {QUOTA_BYTES_MIN}: a fresh store takes about that much"),
            ));
        }
        if let Some(principal) = &self.bootstrap_admin {
            vnet_model::access::validate_principal("bootstrap_admin", principal).map_err(
                |rejection| invalid("bootstrap_admin", principal.clone(), rejection.to_string()),
            )?;
        }
        let audit = crate::auth::audit::AuditConfig {
            dir: data_dir.join(crate::auth::audit::AUDIT_DIR),
            file_bytes_max: self
                .audit_file_bytes_max
                .unwrap_or(crate::auth::audit::DEFAULT_FILE_BYTES_MAX),
            files_kept: self
                .audit_files_kept
                .unwrap_or(crate::auth::audit::DEFAULT_FILES_KEPT),
        };
        audit
            .validate()
            .map_err(|(key, value, reason)| invalid(key, value, reason))?;
        Ok(Config {
            id,
            name,
            role,
            data_dir,
            api_listen,
            peer_listen,
            metrics_listen: self.metrics_listen,
            api_advertise: self.api_advertise,
            peer_advertise,
            initial_cluster,
            cabling,
            capacity,
            raft,
            lease,
            switch: self.switch,
            unsafe_disable_fencing: self.unsafe_disable_fencing,
            request_timeout_ms,
            worker_threads,
            limits,
            quota_bytes,
            bootstrap_admin: self.bootstrap_admin,
            audit,
            log_level: self.log_level.unwrap_or_else(|| "info".to_string()),
            log_format: self.log_format.unwrap_or(LogFormat::Text),
            otlp_endpoint: self.otlp_endpoint,
            tls,
            insecure: self.insecure,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Args {
        Args {
            id: Some(1),
            name: Some("unit-a".into()),
            data_dir: Some("/tmp/x".into()),
            ..Args::default()
        }
    }

    #[test]
    fn defaults_fill_in() {
        let config = base().resolve().expect("valid");
        assert_eq!(config.role, Role::Unit);
        assert_eq!(config.raft.heartbeat_ms, DEFAULT_HEARTBEAT_MS);
        assert_eq!(config.capacity, DEFAULT_CAPACITY);
        assert_eq!(config.peer_advertise, "127.0.0.1:7101");
    }

    #[test]
    fn worker_threads_default_to_one_and_must_be_in_range() {
        assert_eq!(base().resolve().expect("valid").worker_threads, 1);
        let mut args = base();
        args.worker_threads = Some(4);
        assert_eq!(args.clone().resolve().expect("valid").worker_threads, 4);
        for bad in [0, WORKER_THREADS_MAX + 1] {
            args.worker_threads = Some(bad);
            let err = args
                .clone()
                .resolve()
                .expect_err("out of range")
                .to_string();
            assert!(
                err.contains("worker_threads") && err.contains("1..=256"),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn missing_keys_are_named_with_all_three_spellings() {
        let err = Args::default().resolve().expect_err("no id");
        let text = err.to_string();
        assert!(text.contains("--id") && text.contains("VNET_ID"), "{text}");
    }

    #[test]
    fn initial_cluster_parses_and_rejects() {
        let members =
            parse_initial_cluster("1=unit-a@127.0.0.1:7101, 2=unit-b@h:7102").expect("ok");
        assert_eq!(members.len(), 2);
        assert_eq!(members[1].peer_addr, "h:7102");
        for (bad, needle) in [
            ("1=unit-a", "expected id=name@host:port"),
            ("x=unit-a@h:1", "not a positive integer"),
            ("0=unit-a@h:1", "start at 1"),
            ("1=unit-a@h:99999", "port"),
            ("1=a@h:1,1=b@h:2", "repeats"),
            ("1=Bad Name@h:1", "name"),
        ] {
            let err = parse_initial_cluster(bad).expect_err(bad).to_string();
            assert!(err.contains(needle), "{bad}: {err}");
        }
    }

    #[test]
    fn own_entry_must_match_name_and_sets_peer_advertise() {
        let mut args = base();
        args.initial_cluster = Some("1=unit-a@10.0.0.1:7101,2=unit-b@10.0.0.2:7101".into());
        assert_eq!(
            args.clone().resolve().expect("ok").peer_advertise,
            "10.0.0.1:7101"
        );
        args.name = Some("unit-z".into());
        let err = args.resolve().expect_err("name mismatch").to_string();
        assert!(err.contains("unit-z"), "{err}");
    }

    #[test]
    fn cabling_parses_and_rejects() {
        let cabling = parse_cabling("srv-1=1,srv-2=30").expect("ok");
        assert_eq!(cabling.get("srv-2"), Some(&30));
        for bad in ["srv-1=0", "srv-1=31", "srv-1", "a=1,b=1", "a=1,a=2"] {
            assert!(parse_cabling(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn witness_rules() {
        let mut args = base();
        args.role = Some(RoleArg::Witness);
        assert_eq!(args.clone().resolve().expect("ok").capacity, 0);
        args.cabling = Some("srv=1".into());
        assert!(args
            .resolve()
            .expect_err("cabled witness")
            .to_string()
            .contains("witness"));
    }

    #[test]
    fn timing_is_checked() {
        let mut args = base();
        args.election_min_ms = Some(DEFAULT_HEARTBEAT_MS * 2);
        let err = args
            .clone()
            .resolve()
            .expect_err("elections faster than two heartbeats");
        assert!(err.to_string().contains("election_min_ms"), "{err}");
        args.election_min_ms = Some(500);
        args.election_max_ms = Some(400);
        let err = args.clone().resolve().expect_err("max below min");
        assert!(err.to_string().contains("election_max_ms"), "{err}");
        args.election_max_ms = None;
        args.election_min_ms = None;
        args.lease_ttl_ms = Some(DEFAULT_HEARTBEAT_MS * 3);
        let err = args
            .resolve()
            .expect_err("a lease shorter than four heartbeats");
        assert!(err.to_string().contains("lease_ttl_ms"), "{err}");
    }

    #[test]
    fn server_limits_have_defaults_and_are_checked() {
        let limits = base().resolve().expect("valid").limits;
        assert_eq!(limits.api_connections_max, DEFAULT_API_CONNECTIONS_MAX);
        assert_eq!(limits.watchers_max, DEFAULT_WATCHERS_MAX);
        assert_eq!(
            limits.request_deadline_ms,
            DEFAULT_REQUEST_TIMEOUT_MS.max(10 * DEFAULT_ELECTION_MAX_MS) + 1_000
        );
        let cases: Vec<(Args, &str)> = vec![
            (
                Args {
                    api_connections_max: Some(0),
                    ..base()
                },
                "api_connections_max",
            ),
            (
                Args {
                    peer_connections_max: Some(CONNECTIONS_MAX_LIMIT + 1),
                    ..base()
                },
                "peer_connections_max",
            ),
            (
                Args {
                    streams_per_connection_max: Some(0),
                    ..base()
                },
                "streams_per_connection_max",
            ),
            (
                Args {
                    keepalive_interval_ms: Some(20_000),
                    ..base()
                },
                "idle_timeout_ms",
            ),
            (
                Args {
                    keepalive_timeout_ms: Some(5),
                    ..base()
                },
                "keepalive_timeout_ms",
            ),
            (
                Args {
                    watch_buffer_events: Some(0),
                    ..base()
                },
                "watch_buffer_events",
            ),
            (
                Args {
                    watch_buffer_events: Some(vnet_model::limits::EVENT_HISTORY_MAX + 1),
                    ..base()
                },
                "watch_buffer_events",
            ),
            (
                Args {
                    request_deadline_ms: Some(DEFAULT_REQUEST_TIMEOUT_MS),
                    ..base()
                },
                "request_deadline_ms",
            ),
            (
                Args {
                    quota_bytes: Some(QUOTA_BYTES_MIN - 1),
                    ..base()
                },
                "quota_bytes",
            ),
            (
                Args {
                    bootstrap_admin: Some("system/root".into()),
                    ..base()
                },
                "bootstrap_admin",
            ),
            (
                Args {
                    audit_file_bytes_max: Some(1),
                    ..base()
                },
                "audit_file_bytes_max",
            ),
            (
                Args {
                    audit_files_kept: Some(0),
                    ..base()
                },
                "audit_files_kept",
            ),
        ];
        for (args, key) in cases {
            let err = args.resolve().expect_err(key).to_string();
            assert!(err.contains(key), "{key}: {err}");
        }
    }

    #[test]
    fn plaintext_is_served_on_loopback_only_unless_insecure_and_tls_files_go_together() {
        let exposed = Args {
            api_listen: Some("0.0.0.0:7001".parse().unwrap()),
            ..base()
        };
        let err = exposed
            .clone()
            .resolve()
            .expect_err("plaintext on 0.0.0.0")
            .to_string();
        assert!(
            err.contains("api_listen") && err.contains("--insecure"),
            "{err}"
        );
        let config = Args {
            insecure: true,
            ..exposed.clone()
        }
        .resolve()
        .expect("--insecure");
        assert!(config.tls.is_none() && config.insecure);
        let config = Args {
            cacert: Some("ca.crt".into()),
            cert: Some("n.crt".into()),
            key: Some("n.key".into()),
            ..exposed.clone()
        }
        .resolve()
        .expect("TLS on 0.0.0.0");
        assert!(config.tls.is_some());
        let err = Args {
            cacert: Some("ca.crt".into()),
            ..exposed
        }
        .resolve()
        .expect_err("cacert alone")
        .to_string();
        assert!(
            err.contains("cert, key") && err.contains("go together"),
            "{err}"
        );
    }

    #[test]
    fn the_shipped_example_config_is_valid() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/vnetd.toml");
        let config = Args {
            config: Some(path),
            ..Args::default()
        }
        .resolve()
        .expect("deploy/vnetd.toml resolves");
        assert_eq!(config.name, "unit-a");
        assert_eq!(config.switch.as_deref(), Some("127.0.0.1:7201"));
        assert_eq!(config.metrics_listen, Some("0.0.0.0:7301".parse().unwrap()));
        assert_eq!(config.initial_cluster.len(), 3);
        assert_eq!(config.lease.ttl_ms, DEFAULT_LEASE_TTL_MS);
        assert!(config.tls.is_some(), "the example serves TLS");
        assert_eq!(config.raft.election_max_ms, DEFAULT_ELECTION_MAX_MS);
    }

    #[test]
    fn file_then_flags() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("vnetd.toml");
        std::fs::write(
            &path,
            "id = 2\nname = \"unit-b\"\ndata_dir = \"/d\"\nheartbeat_ms = 50\nelection_min_ms = 200\nelection_max_ms = 400\n",
        )
        .expect("write");
        let args = Args {
            config: Some(path.clone()),
            heartbeat_ms: Some(60),
            ..Args::default()
        };
        let config = args.resolve().expect("ok");
        assert_eq!(config.id, 2);
        assert_eq!(config.raft.heartbeat_ms, 60);
        assert_eq!(config.raft.election_min_ms, 200);
        std::fs::write(&path, "id = 2\nbogus = 1\n").expect("write");
        let err = Args {
            config: Some(path),
            ..Args::default()
        }
        .resolve()
        .expect_err("unknown key");
        assert!(err.to_string().contains("bogus"), "{err}");
    }
}
