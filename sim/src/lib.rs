//! `vnet-sim`: a deterministic simulator of vnet-ha's failover protocol, in the manner of
//! FoundationDB's simulation and TigerBeetle's VOPR. One seed decides everything — clock rates,
//! message delays and losses, elections, crashes, pauses, partitions and operator moves — so a
//! seed that breaks an invariant replays the same run exactly.
//!
//! What is real and what is modelled:
//! - real: the lease table and its grant halves (`vnet_node::lease`), the controller's pass
//!   (`vnet_node::controller`, with `policy::decide`), the agent's decisions
//!   (`vnet_node::agent::reconcile`, `report`, `UnitLease::after_grant`), the replicated state
//!   machine (`vnet_model::apply`), the reconciler (`fabric_agent::plan`) and the switch with its
//!   watchdog (`fabric_agent::switch`);
//! - modelled: Raft (`raft`: a model of openraft's behaviour, see its doc for what it leaves
//!   out), the network (`world`: per-message delay, loss, one-way and two-way cuts; no ordering),
//!   each node's clock (an offset and a rate error up to `Config::drift_ppm_max`), process
//!   crashes (the vote and log survive; a unit's switch may die with it and restarts clear) and
//!   pauses (the node stops; its switch goes on).
//!
//! Checked at every step: invariant 2 (no identity on two switches at once; `check`), invariant
//! 5 (no profile given to a draining unit at commit; a drained unit's switch presents nothing),
//! that every replica commits the same entries, and invariant 4 at the end of each clean unit
//! kill (the peer presents what the killed unit did within [`schedule::FAILOVER_BUDGET_NS`]) and
//! after the last heal (every profile presented exactly once, where the committed state
//! places it).

pub mod check;
pub mod raft;
pub mod rng;
pub mod schedule;
pub mod world;

use std::time::Duration;

use crate::rng::Rng;
use crate::world::{Config, Fault, Outcome, World};

const S: u64 = 1_000_000_000;

/// The shape of one run.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// How long faults are drawn for, after the cluster has settled once.
    pub faults: Duration,
    /// How long the healed cluster gets to settle before the final check.
    pub settle: Duration,
    /// Keep every trace line, not just the last [`world::TRACE_KEPT`].
    pub trace_all: bool,
    pub config: Config,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            faults: Duration::from_secs(20),
            settle: Duration::from_secs(8),
            trace_all: false,
            config: Config::default(),
        }
    }
}

/// Time given to the cluster to elect a leader and place every profile before faults start.
const WARM_UP_NS: u64 = 3 * S;

/// Runs one seed.
pub fn run(seed: u64, options: &Options) -> Outcome {
    let mut world = World::new(seed, options.config, options.trace_all);
    let mut faults = Rng::new(seed ^ 0xfa17_5eed);
    let end_of_faults = WARM_UP_NS + options.faults.as_nanos() as u64;
    let timeline = schedule::draw(&mut faults, WARM_UP_NS, end_of_faults);
    let last_fault = timeline.last().map_or(WARM_UP_NS, |(at, _)| *at);
    for (at, fault) in timeline {
        world.schedule(at, fault);
    }
    // The machines calm down and the operator ends any drain, so that settling can demand every
    // profile presented; the request is repeated in case it met no leader.
    world.schedule(last_fault, Fault::Calm);
    for attempt in 1..=3 {
        for unit in 0..2 {
            let fault = Fault::Drain {
                unit,
                draining: false,
            };
            world.schedule(last_fault + attempt * S / 2, fault);
        }
    }
    world.run_until(last_fault + options.settle.as_nanos() as u64);
    if world.violation.is_none() {
        world.check_settled();
    }
    Outcome {
        violation: world.violation.clone(),
        trace: world.trace(),
        stats: world.stats.clone(),
    }
}

/// Runs every seed of `seeds` on `threads` threads; results in seed order.
pub fn sweep(
    seeds: std::ops::Range<u64>,
    threads: usize,
    options: &Options,
) -> Vec<(u64, Outcome)> {
    let all: Vec<u64> = seeds.collect();
    let threads = threads.clamp(1, 64);
    let chunk = all.len().div_ceil(threads).max(1);
    let mut results: Vec<(u64, Outcome)> = std::thread::scope(|scope| {
        let handles: Vec<_> = all
            .chunks(chunk)
            .map(|part| {
                scope.spawn(move || {
                    part.iter()
                        .map(|s| (*s, run_caught(*s, options)))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("run_caught catches panics"))
            .collect()
    });
    results.sort_by_key(|(seed, _)| *seed);
    results
}

/// A run whose panic (a broken assertion in the code under test or in the model) is reported
/// as a violation of its seed rather than ending the sweep.
pub fn run_caught(seed: u64, options: &Options) -> Outcome {
    std::panic::catch_unwind(|| run(seed, options)).unwrap_or_else(|panic| {
        let what = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "a panic".into());
        Outcome {
            violation: Some(format!("panicked: {what}")),
            trace: Vec::new(),
            stats: Default::default(),
        }
    })
}
