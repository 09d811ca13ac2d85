//! [`FabricDriver`]: what a unit can do to its switch, whatever the switch is (the simulated
//! `vnet-switchd` through [`crate::SimDriver`] today, a Linux PCIe switch later).

use std::future::Future;

use crate::program::{PortProgram, SwitchState};

/// Why a call to the switch failed. Messages say what was attempted and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DriverError {
    /// The switch could not be reached or did not answer in time. The call may or may not have
    /// taken effect: read the state again before acting on it.
    #[error("switch unreachable: {0}")]
    Unreachable(String),
    /// The switch answered and refused. `code` is the gRPC code name (e.g.
    /// `FAILED_PRECONDITION` when it holds no live lease, `ALREADY_EXISTS` when another host
    /// port presents an identity, `RESOURCE_EXHAUSTED` when adapters are full); `message` is the
    /// switch's, naming the field or identity at fault. A refused call changed nothing.
    #[error("switch refused: {code}: {message}")]
    Refused { code: String, message: String },
    /// The address given for the switch is not usable.
    #[error("invalid switch address {addr:?}: {reason}")]
    InvalidAddress { addr: String, reason: String },
    /// The switch answered with something this driver cannot read (a version mismatch or a bug).
    #[error("switch at {addr} sent an unreadable {what}: {reason}")]
    BadReply {
        addr: String,
        what: String,
        reason: String,
    },
}

impl DriverError {
    /// Whether the switch refused because it holds no live lease ("watchdog not armed" or "lease
    /// expired"): the agent must renew and re-arm before programming again.
    pub fn is_lease_refusal(&self) -> bool {
        matches!(self, DriverError::Refused { code, .. } if code == "FAILED_PRECONDITION")
    }
}

/// A unit's switch, as the reconcile loop and lease keeping use it.
///
/// Written with `fn … -> impl Future<Output = …> + Send` (return-position `impl Trait` in traits,
/// stable since Rust 1.75) rather than bare `async fn`, because a bare `async fn` in a public
/// trait cannot promise its future is `Send`, and the loop runs on a multi-threaded runtime.
/// Implementations may still write `async fn` (their futures must then be `Send`). The trait is
/// not object-safe: hold drivers as a generic parameter (`Agent<D: FabricDriver>`), not as
/// `dyn FabricDriver`.
pub trait FabricDriver: Send + Sync + 'static {
    /// Every host port that holds a program, the watchdog deadline, and whether it fenced.
    fn state(&self) -> impl Future<Output = Result<SwitchState, DriverError>> + Send;

    /// Presents `program` on host `port`, replacing what it holds, atomically. Refused when the
    /// switch holds no live lease, when another port presents one of the identities, or when
    /// the adapters have no room.
    fn program(
        &self,
        port: u8,
        program: &PortProgram,
    ) -> impl Future<Output = Result<(), DriverError>> + Send;

    /// Removes everything from host `port`. Always allowed: clearing is always safe.
    fn clear(&self, port: u8) -> impl Future<Output = Result<(), DriverError>> + Send;

    /// Removes everything from every host port.
    fn clear_all(&self) -> impl Future<Output = Result<(), DriverError>> + Send;

    /// Arms the switch watchdog with an absolute CLOCK_MONOTONIC deadline: the end of the lease
    /// the unit holds (send time of the last granted renewal + `lease_ttl`). The switch keeps the
    /// latest deadline it was given and fences by itself when it passes. Absolute, so a delayed
    /// or replayed arm can never stretch a lease past what was granted.
    fn arm_watchdog(
        &self,
        deadline_mono_ns: u64,
    ) -> impl Future<Output = Result<(), DriverError>> + Send;
}
