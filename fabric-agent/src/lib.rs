//! `fabric-agent`: everything between a unit's replicated placement and its switch.
//!
//! Two halves live here, joined only by the switch API (`vnet.switch.v1`):
//!
//! - **The agent side**, used inside `vnetd`: [`FabricDriver`] is what a unit can do to its
//!   switch (read state, program or clear a host port, arm the watchdog); [`SimDriver`] drives
//!   the simulated switch over gRPC. [`plan()`] is the pure reconciler: given the desired and the
//!   presented [`PortMap`], it lists the [`Action`]s to take, clears before programs. The loop
//!   that calls it (in `node`) applies at most [`RECONCILE_ACTIONS_PER_TICK_MAX`] per tick.
//!   [`monotonic_now_ns`] is the clock both sides name lease deadlines on.
//! - **The switch side**, `vnet-switchd`: [`switch::Switch`] is the switch as a pure-ish model
//!   (host ports, adapter slots, watchdog; every method takes the time explicitly and returns
//!   journal events instead of writing them). [`server`] wraps it: the gRPC service, the
//!   watchdog thread, and the [`journal`] file every change is written to before it is
//!   acknowledged; [`metrics`] is what it exports for Prometheus. [`linux`] is the optional
//!   data plane (`--backend linux`): vNICs as real interfaces in the servers' namespaces. [`config`] is the binary's flags; the binary only parses them and calls
//!   [`server::run`].
//! - **The checker**, for tests and the chaos harness: [`journal::read`] and
//!   [`journal::presentations`] turn a switch's journal into intervals during which it presented
//!   each identity; [`check::no_double_presentation`] proves no identity was presented by two
//!   switches at once (invariant 2 in ARCHITECTURE.md).
//!
//! [`program`] holds the agent's domain types ([`Function`], [`PortProgram`], [`SwitchState`]);
//! [`convert`] is the one place they meet the wire.
//!
//! The safety argument, in one place: a unit may present identities only while it holds a
//! lease. The agent arms the switch watchdog with the lease's *absolute* expiry on the shared
//! monotonic clock; the switch refuses to program without a live lease and clears every port by
//! itself when the deadline passes, even if `vnetd` is dead or partitioned. The leader declares a
//! unit failed only after `lease_ttl + drift_margin` without a renewal, so by then that unit's
//! switch has fenced itself.
//!
//! **Architecture invariant:** knows `vnet-model` (identities, profiles), `vnet-proto` (the
//! switch API) and `vnet-metrics` (the generic metrics plumbing) and nothing else of the workspace: never Raft, sled, `raft-store` or `node`.
//! Leases and placement are decided in `node`, which drives this crate through [`FabricDriver`].

pub mod check;
pub mod clock;
pub mod config;
pub mod convert;
pub mod driver;
pub mod journal;
pub mod linux;
pub mod metrics;
pub mod plan;
pub mod program;
pub mod server;
pub mod sim;
pub mod switch;
pub mod transport;

pub use clock::monotonic_now_ns;
pub use driver::{DriverError, FabricDriver};
pub use plan::{plan, Action, RECONCILE_ACTIONS_PER_TICK_MAX};
pub use program::{Function, PortMap, PortProgram, SwitchState};
pub use sim::SimDriver;
