//! The data plane outlives the control plane (invariant 7), against real `vnetd` processes:
//! each unit's switch is a `vnet-switchd` server (run in this test process, which no fault
//! touches), and each `vnetd` a process the tests kill with SIGKILL, stop with SIGSTOP and
//! restart. Whatever happens to leadership — the leading witness killed, leadership handed
//! between every pair, the leader stopped for twice the longest election timeout or restarted,
//! the witness gone for 30 s — the switch journals of the healthy units must show no fence and no
//! clear, and a unit killed while a majority remains is still failed over with the same
//! identities.
//!
//! The tests of this directory run one at a time (`SERIAL`): two clusters at once on two cores would
//! starve each other, and starving a unit of CPU for longer than its lease rightly fences it.

#[path = "../common/mod.rs"]
mod common;
mod harness;
mod leadership;
mod operations;
mod traces;
mod watchers;
