//! vnet-ha's multi-process fault tester: real `vnetd` processes on separate hosts (network
//! namespaces on one machine), faults drawn from a seeded schedule, a recorded history of
//! client operations, and checkers for the invariants in ARCHITECTURE.md.
//!
//! Layout, from the pure core outwards:
//!
//! - [`history`]: what a run records (operations with monotonic invocation and completion
//!   times, and outcomes: ok, failed = not applied, indeterminate).
//! - [`checks`]: pure functions from recorded data to verdicts: linearizability per profile
//!   (Wing–Gong with memoization), revisions in real-time order, no lost acknowledged write,
//!   replicas agree, liveness while a quorum could serve and after the last heal, identities
//!   preserved and presented exactly once (over an abstract "presented" snapshot), and no
//!   double presentation over the switch journals (with `fabric_agent::check`).
//! - [`schedule`]: the seeded, weighted fault schedule (vortex-style: a quorum stays possible
//!   most of the time; every schedule ends healed) and the quorum windows it implies.
//! - [`rng`]: the seeded generator, kept here so a seed means the same schedule forever.
//! - [`netns`]: hosts as namespaces behind a bridge namespace, nftables rules for partitions
//!   and loss, leftover cleanup, and threads that run inside a host's namespace.
//! - [`proxy`]: the delaying TCP proxy on each node's peer path (no `netem` on these kernels).
//! - [`process`]: a process started with `ip netns exec`, killed, paused, restarted.
//! - [`cluster`]: the cluster's hosts and flags, and how each fault is carried out.
//! - [`fabric`]: the switches from the harness: their state read inside each unit host, failover
//!   durations and takeovers from their journals.
//! - [`workload`]: the clients on the client host, and the final reads after healing.
//! - [`data_plane`]: the cluster on `vnet-switchd --backend linux`, with traffic, captures and
//!   the per-server outage (`tests/data_plane_linux.rs`).
//! - [`run`]: one run from setup to verdicts; [`report`]: what it prints.
//! - [`sweep`]: `chaos-tests sweep`, many seeds one after another: the seed range, the line
//!   per seed, the summary and its exit code.
//!
//! The binary (`cargo run -p chaos-tests -- --seed N --duration 60s`, or `-- sweep --seeds
//! A..B` for a range of seeds) is a thin parser over [`run::run`]. It must run as root;
//! without namespaces it stops with the reason.

pub mod checks;
pub mod cluster;
pub mod data_plane;
pub mod fabric;
pub mod history;
pub mod netns;
pub mod process;
pub mod proxy;
pub mod report;
pub mod rng;
pub mod run;
pub mod schedule;
pub mod sweep;
pub mod workload;
