//! `vnet-metrics`: what every vnet-ha process needs to be scraped by Prometheus, and nothing
//! specific to any of them.
//!
//! - [`exposition`]: an [`Exposition`] owns a `prometheus-client` registry and an optional
//!   refresh hook that sets scrape-time values (from Raft's metrics, the applied state, the
//!   switch) just before encoding. It renders OpenMetrics 1.0 for Prometheus and the classic text
//!   format 0.0.4 for everything else (`curl`, `promtool check metrics`).
//! - [`http`]: the plain-HTTP metrics listener: `/metrics`, `/health` (the process answers) and
//!   `/readyz` (the process says it can do its job, through a [`http::Readiness`] check).
//! - [`grpc`]: a tower layer for tonic servers that counts and times every call in the shape of
//!   go-grpc-prometheus (`grpc_server_started_total`, `grpc_server_handled_total`,
//!   `grpc_server_handling_seconds`), with service and method labels taken from the served
//!   protobuf descriptors, so a client cannot mint label values.
//! - [`process`]: the standard `process_*` metrics read from `/proc`, and the build info gauge.
//! - [`testing`]: an HTTP GET and `promtool check metrics`, for the tests of the crates above.
//!
//! Names follow Prometheus conventions: the `vnet_` prefix on every metric of our own, base
//! units (`_seconds`, `_bytes`), `_total` on counters, and labels whose values come from bounded
//! sets (members, pools, placement states, served methods), never from what a client sends.
//! `grpc_*` and `process_*` keep the names dashboards and alerts already know.
//!
//! **Invariant:** knows nothing of the workspace's other crates; each process registers its own
//! families and passes its own readiness check.

pub mod exposition;
pub mod grpc;
pub mod http;
pub mod process;
pub mod testing;

pub use exposition::Exposition;

/// The prefix of every metric vnet-ha defines itself.
pub const PREFIX: &str = "vnet";

/// Latency buckets in seconds for requests and disk syncs: Prometheus's default buckets with
/// finer steps below 5 ms, where a healthy fsync or a local call falls.
pub const LATENCY_BUCKETS_SECONDS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
