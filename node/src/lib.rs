//! `vnetd`, a vnet-ha node, as a library: [`run`] serves one node until a shutdown future
//! completes. The binary (`main.rs`) only parses configuration, sets up logging and calls it;
//! tests and the chaos harness call it directly with listeners bound to port 0.
//!
//! How the modules fit:
//! - [`auth`]: who is calling: the [`auth::Principal`] the transport established, in each
//!   request's extensions.
//! - [`config`]: flags, `VNET_*` variables and the TOML file, merged and validated.
//! - [`connections`]: what each server port accepts: a connection cap and an idle timeout.
//! - [`data_file`]: `vnet-data.json`, the data directory's format version, node id and cluster
//!   id.
//! - [`node`]: the Raft instance and the request paths to the leader (forwarding, read
//!   barriers, membership, leader transfer, bootstrap).
//! - [`offline`]: `vnetd restore` and `vnetd recover`, run on a data directory while no node
//!   serves it.
//! - [`agent`]: a unit's fabric agent: lease renewal and switch reconciliation.
//! - [`lease`]: unit leases and the leader's lease table (with the no-double-presentation
//!   safety argument).
//! - [`policy`]: the placement controller's pure decisions (failover, drain, failback).
//! - [`controller`]: one controller pass without I/O: judging unit health, deciding and acting
//!   on failures under the lease table's lock; `node` performs its writes.
//! - [`peer`]: the peer API between nodes (Raft transport, forwarding) — client and server.
//! - [`api`]: the public `vnet.v1` services, each call checked and audited at the edge.
//! - [`auth`]: the caller's principal, the permission table of roles, and the audit log.
//! - [`convert`]: wire <-> model conversions, one file per type.
//! - [`error`]: [`error::ApiError`] and its gRPC status mapping.
//! - [`health`]: readiness, told through `/readyz` and the gRPC health service.
//! - [`metrics`]: every exported metric family, registered in one place, and the refresh that
//!   sets scrape-time values; served on the optional metrics listener.
//! - [`quota`]: the store's disk quota and its `NOSPACE` alarm.
//! - [`telemetry`]: logging setup.
//!
//! Storage is `raft-store`; the domain and its state machine are `vnet-model`. This crate is the
//! only one that knows all of them and the wire.

pub mod agent;
pub mod api;
pub mod auth;
pub mod config;
pub mod connections;
pub mod controller;
pub mod convert;
pub mod data_file;
pub mod error;
pub mod health;
pub mod lease;
pub mod metrics;
pub mod node;
pub mod offline;
pub mod peer;
pub mod policy;
pub mod quota;
pub mod shutdown;
pub mod telemetry;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tonic::transport::Server;
use vnet_proto::vnet::raft::v1::raft_peer_server::RaftPeerServer;
use vnet_proto::vnet::v1::access_service_server::AccessServiceServer;
use vnet_proto::vnet::v1::cluster_service_server::ClusterServiceServer;
use vnet_proto::vnet::v1::pool_service_server::PoolServiceServer;
use vnet_proto::vnet::v1::profile_service_server::ProfileServiceServer;
use vnet_proto::vnet::v1::watch_service_server::WatchServiceServer;

pub use config::{Args, Config};
pub use node::Node;

use crate::metrics::NodeMetrics;
use crate::shutdown::Shutdown;
use vnet_metrics::grpc::GrpcMetricsLayer;

use crate::peer::client::PEER_MESSAGE_BYTES_MAX;

/// How long in-flight requests may take to finish once shutdown begins.
pub const SHUTDOWN_GRACE_MS: u64 = 3_000;

/// The listeners a node serves on: the public API, peer traffic and, if configured, metrics.
pub struct Listeners {
    pub api: TcpListener,
    pub peer: TcpListener,
    pub metrics: Option<TcpListener>,
}

impl Listeners {
    pub async fn bind(config: &Config) -> std::io::Result<Self> {
        let api = TcpListener::bind(config.api_listen).await.map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!("cannot listen on api_listen {}: {e}", config.api_listen),
            )
        })?;
        let peer = TcpListener::bind(config.peer_listen).await.map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!("cannot listen on peer_listen {}: {e}", config.peer_listen),
            )
        })?;
        let metrics = match config.metrics_listen {
            Some(addr) => Some(TcpListener::bind(addr).await.map_err(|e| {
                std::io::Error::new(
                    e.kind(),
                    format!("cannot listen on metrics_listen {addr}: {e}"),
                )
            })?),
            None => None,
        };
        Ok(Self { api, peer, metrics })
    }
}

/// Runs a node until `shutdown` completes, then stops it cleanly: servers first (with a grace
/// period for in-flight requests), then Raft.
pub async fn run(
    config: Config,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    run_with(
        config,
        listeners,
        shutdown,
        auth::edge::PrincipalSource::Transport,
    )
    .await
}

/// [`run`], with the public calls' principals from `principals`. `vnetd` always runs with
/// `Transport`; in-process tests pass a `Test` source to act as any principal without
/// certificates (`auth::edge`).
pub async fn run_with(
    config: Config,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send + 'static,
    principals: auth::edge::PrincipalSource,
) -> anyhow::Result<()> {
    let api_addr = match &config.api_advertise {
        Some(addr) => addr.clone(),
        None => listeners.api.local_addr()?.to_string(),
    };
    let limits = config.limits.clone();
    let open_files = connections::raise_open_file_limit(
        limits.api_connections_max,
        limits.peer_connections_max,
    )?;
    tracing::debug!(open_files, "open-file limit");
    let port_limits =
        |port: &'static str, max_key: &'static str, max: usize| connections::PortLimits {
            port,
            max_key,
            max,
            idle_timeout: Duration::from_millis(limits.idle_timeout_ms),
        };
    let server_tls = match &config.tls {
        Some(files) => Some(Arc::new(
            vnet_tls::ServerTls::new(files.clone()).map_err(|e| anyhow::anyhow!("TLS: {e}"))?,
        )),
        None => {
            let exposed = [listeners.api.local_addr()?, listeners.peer.local_addr()?]
                .into_iter()
                .filter(|addr| !addr.ip().is_loopback())
                .map(|addr| addr.to_string())
                .collect::<Vec<_>>();
            if !exposed.is_empty() {
                tracing::warn!(
                    addresses = %exposed.join(", "),
                    "serving PLAINTEXT on non-loopback addresses (--insecure): anyone who can \
                     reach them can read and change the cluster"
                );
            }
            None
        }
    };
    let api_incoming = vnet_tls::secure_incoming(
        connections::limited_incoming(
            listeners.api,
            port_limits("api", "api_connections_max", limits.api_connections_max),
        ),
        server_tls.clone(),
        "api",
    );
    let peer_incoming = vnet_tls::secure_incoming(
        connections::limited_incoming(
            listeners.peer,
            port_limits("peer", "peer_connections_max", limits.peer_connections_max),
        ),
        server_tls,
        "peer",
    );
    // Both servers: a bounded number of calls per connection, PINGs that keep live connections
    // busy (see `connections`), and a deadline on every call whatever the client asked for.
    let server = || {
        Server::builder()
            .timeout(Duration::from_millis(limits.request_deadline_ms))
            .max_concurrent_streams(limits.streams_per_connection_max)
            .http2_keepalive_interval(Some(Duration::from_millis(limits.keepalive_interval_ms)))
            .http2_keepalive_timeout(Some(Duration::from_millis(limits.keepalive_timeout_ms)))
    };
    let mut registry = prometheus_client::registry::Registry::default();
    let node_metrics = NodeMetrics::register(&mut registry);
    let node = Node::start(Arc::new(config), node_metrics.clone()).await?;
    let stop = Shutdown::new();

    let peer_server = server()
        .layer(auth::PrincipalLayer)
        .layer(GrpcMetricsLayer::new(
            node_metrics.grpc.clone(),
            NodeMetrics::peer_methods(),
        ))
        .add_service(
            RaftPeerServer::new(peer::service::PeerService::new(node.clone(), stop.signal()))
                .max_decoding_message_size(PEER_MESSAGE_BYTES_MAX)
                .max_encoding_message_size(PEER_MESSAGE_BYTES_MAX),
        )
        .serve_with_incoming_shutdown(peer_incoming, stop.signal().triggered());
    let audit_log = auth::audit::AuditLog::open(node.config().audit.clone())
        .map_err(|e| anyhow::anyhow!("cannot open the audit log: {e}"))?;
    let api = api::Api {
        node: node.clone(),
        stopping: stop.signal(),
        watchers: Arc::new(tokio::sync::Semaphore::new(limits.watchers_max)),
        audit: Arc::new(audit_log),
    };
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    // The reporter starts out SERVING; nothing is known yet.
    health::set_all(&health_reporter, tonic_health::ServingStatus::NotServing).await;
    let api_server = server()
        .trace_fn(|request| {
            let span = tracing::info_span!(
                "grpc",
                rpc = %request.uri().path(),
                trace_id = tracing::field::Empty
            );
            // A client that sent a trace context gets this call as a child of its span.
            let metadata = if request.headers().contains_key("traceparent") {
                tonic::metadata::MetadataMap::from_headers(request.headers().clone())
            } else {
                tonic::metadata::MetadataMap::new()
            };
            telemetry::continue_trace(&span, &metadata);
            span
        })
        .layer(auth::PrincipalLayer)
        .layer(GrpcMetricsLayer::new(
            node_metrics.grpc.clone(),
            NodeMetrics::public_methods(),
        ))
        .layer(auth::edge::EdgeLayer::new(principals))
        .add_service(
            AccessServiceServer::new(api.clone())
                .max_decoding_message_size(api::PUBLIC_REQUEST_BYTES_MAX)
                .max_encoding_message_size(api::PUBLIC_RESPONSE_BYTES_MAX),
        )
        .add_service(
            ProfileServiceServer::new(api.clone())
                .max_decoding_message_size(api::PUBLIC_REQUEST_BYTES_MAX)
                .max_encoding_message_size(api::PUBLIC_RESPONSE_BYTES_MAX),
        )
        .add_service(
            PoolServiceServer::new(api.clone())
                .max_decoding_message_size(api::PUBLIC_REQUEST_BYTES_MAX)
                .max_encoding_message_size(api::PUBLIC_RESPONSE_BYTES_MAX),
        )
        .add_service(
            ClusterServiceServer::new(api.clone())
                .max_decoding_message_size(api::PUBLIC_REQUEST_BYTES_MAX)
                .max_encoding_message_size(api::PUBLIC_RESPONSE_BYTES_MAX),
        )
        .add_service(
            WatchServiceServer::new(api)
                .max_decoding_message_size(api::PUBLIC_REQUEST_BYTES_MAX)
                .max_encoding_message_size(api::PUBLIC_RESPONSE_BYTES_MAX),
        )
        .add_service(health_service)
        .add_service(reflection().build_v1()?)
        .add_service(reflection().build_v1alpha()?)
        .serve_with_incoming_shutdown(api_incoming, stop.signal().triggered());
    let peer_task = tokio::spawn(peer_server);
    let api_task = tokio::spawn(api_server);
    let leader_changes = tokio::spawn(count_leader_changes(node.clone()));
    let health_task = tokio::spawn(health::report(node.clone(), health_reporter, stop.signal()));
    let metrics_task = listeners.metrics.map(|listener| {
        let refreshed = node.clone();
        let exposition = Arc::new(vnet_metrics::Exposition::new(
            registry,
            Some(Box::new(move || {
                refreshed.metrics_handle().refresh(&refreshed)
            })),
        ));
        let checked = node.clone();
        let ready: vnet_metrics::http::Readiness = Arc::new(move || health::readiness(&checked));
        tokio::spawn(vnet_metrics::http::serve(
            listener,
            exposition,
            ready,
            stop.signal().triggered(),
        ))
    });

    let result = match node.bootstrap_if_founder().await {
        Ok(()) => {
            let registering = tokio::spawn({
                let node = node.clone();
                async move { node.register_self(api_addr).await }
            });
            let bootstrapping_admin = node.config().bootstrap_admin.clone().map(|principal| {
                let node = node.clone();
                tokio::spawn(async move { node.bootstrap_admin(principal).await })
            });
            let agent = match (&node.config().switch, node.config().role) {
                (Some(addr), vnet_model::Role::Unit) => {
                    // The switch accepts this unit's node certificate only (ARCHITECTURE.md,
                    // "Security").
                    let tls = match &node.config().tls {
                        Some(files) => Some(Arc::new(
                            vnet_tls::ClientTls::from_files(files)
                                .map_err(|e| anyhow::anyhow!("TLS to switch {addr}: {e}"))?,
                        )),
                        None => None,
                    };
                    let driver = fabric_agent::SimDriver::connect_lazy_with(addr, tls)
                        .map_err(|e| anyhow::anyhow!("cannot use switch {addr}: {e}"))?;
                    let node = node.clone();
                    let stopping = stop.signal();
                    Some(tokio::spawn(async move {
                        agent::run(node, driver, stopping).await
                    }))
                }
                _ => None,
            };
            let placing = tokio::spawn({
                let node = node.clone();
                let stopping = stop.signal();
                async move { node.run_placement(stopping).await }
            });
            let measuring = tokio::spawn(quota::run(node.clone(), stop.signal()));
            tracing::info!(id = node.id(), name = %node.config().name, "node is serving");
            // A Raft core that stops (a disk that is full or fails, a damaged store) leaves a node
            // that can neither commit nor serve: stop the process, loudly, rather than answer
            // DEADLINE_EXCEEDED forever.
            let fatal = tokio::select! {
                () = shutdown => None,
                reason = raft_stopped(node.clone()) => Some(reason),
            };
            registering.abort();
            if let Some(task) = bootstrapping_admin {
                task.abort();
            }
            stop.trigger();
            let grace = Duration::from_millis(SHUTDOWN_GRACE_MS);
            stop_within("the placement controller", placing, grace).await;
            stop_within("the disk quota monitor", measuring, grace).await;
            if let Some(agent) = agent {
                stop_within("the fabric agent", agent, grace).await;
            }
            match fatal {
                None => {
                    tracing::info!("shut down on request");
                    Ok(())
                }
                Some(reason) => {
                    tracing::error!("{reason}");
                    Err(anyhow::anyhow!(reason))
                }
            }
        }
        Err(e) => Err(anyhow::Error::new(e)),
    };

    stop.trigger();
    leader_changes.abort();
    let grace = Duration::from_millis(SHUTDOWN_GRACE_MS);
    stop_within("the health reporter", health_task, grace).await;
    if let Some(task) = metrics_task {
        // Scrapes are short; one still running past the grace period is cut off.
        match tokio::time::timeout(grace, task).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => tracing::warn!(error = %e, "metrics server stopped with an error"),
            Ok(Err(e)) => tracing::warn!(error = %e, "metrics server task failed"),
            Err(_) => tracing::warn!("metrics server did not stop within the grace period"),
        }
    }
    for (name, task) in [("api", api_task), ("peer", peer_task)] {
        let abort = task.abort_handle();
        match tokio::time::timeout(grace, task).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => {
                tracing::warn!(server = name, error = %e, "server stopped with an error")
            }
            Ok(Err(e)) => tracing::warn!(server = name, error = %e, "server task failed"),
            Err(_) => {
                tracing::warn!(server = name, "server did not stop within the grace period");
                abort.abort();
            }
        }
    }
    // A Raft core stuck on a dead disk may never answer; the process ends anyway.
    if tokio::time::timeout(grace, node.shutdown()).await.is_err() {
        tracing::warn!("Raft did not stop within the grace period");
    }
    result
}

/// Waits for `task` to end for at most `grace`, then aborts it: every wait of a shutdown is
/// bounded, so a signal always stops the process.
async fn stop_within<T>(what: &str, task: tokio::task::JoinHandle<T>, grace: Duration) {
    let abort = task.abort_handle();
    if tokio::time::timeout(grace, task).await.is_err() {
        tracing::warn!("{what} did not stop within the grace period");
        abort.abort();
    }
}

/// Resolves when this node's Raft core has stopped by itself, with a message for the operator.
async fn raft_stopped(node: Node) -> String {
    let data_dir = node.config().data_dir.display().to_string();
    let mut metrics = node.raft().metrics();
    let fatal = match metrics.wait_for(|m| m.running_state.is_err()).await {
        Ok(m) => match &m.running_state {
            Err(fatal) => fatal.to_string(),
            Ok(()) => "it stopped".to_string(),
        },
        Err(_) => "its metrics channel closed".to_string(),
    };
    format!(
        "the Raft core stopped ({fatal}); vnetd exits, as it can no longer commit or serve. If the \
         disk holding {data_dir} is full, free space there (or move the directory to a larger \
         disk) and start vnetd again; if the store is damaged, see \"Recovering a damaged data \
         directory\" in README.md"
    )
}

/// Counts each change of the leader this node sees (to a known leader other than the last one
/// known), until Raft stops. Runs as its own task so no change between scrapes goes uncounted.
async fn count_leader_changes(node: Node) {
    let mut raft_metrics = node.raft().metrics();
    let mut last_leader = None;
    loop {
        let leader = raft_metrics.borrow_and_update().current_leader;
        if leader.is_some() && leader != last_leader {
            node.metrics_handle().leader_changes.inc();
            last_leader = leader;
        }
        if raft_metrics.changed().await.is_err() {
            return;
        }
    }
}

/// gRPC reflection over the public API and the health service, so `grpcurl` needs no `.proto`
/// files. Only the services served on the public port are advertised.
fn reflection() -> tonic_reflection::server::Builder<'static> {
    let mut builder = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(vnet_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET);
    for service in metrics::PUBLIC_SERVICES
        .iter()
        .chain(&["grpc.health.v1.Health"])
    {
        builder = builder.with_service_name(*service);
    }
    builder
}
