//! The fault schedule: a pure function from a seed to a timed list of faults and heals.
//!
//! Like TigerBeetle's vortex, each step draws from a weighted list of fault kinds, and the
//! schedule keeps a quorum possible most of the time: a fault that would leave no healthy,
//! mutually connected majority is drawn only with a small probability
//! ([`QUORUM_LOSS_PERCENT`]), so the cluster is owed progress most of the run and still meets
//! the states where it is not. Every schedule ends with every fault healed.
//!
//! The schedule knows nodes by index and whether each is a unit; the runner maps indexes to
//! hosts and processes. What it promises about timing is offsets from the start: the real
//! system's timing is not reproducible, so a seed reproduces the faults, not the interleaving.

use std::collections::BTreeSet;
use std::fmt;

use serde::Serialize;

use crate::checks::liveness::QuorumWindow;
use crate::rng::Rng;

/// Quiet time at the start, so the cluster elects and the clients get going before faults.
pub const CALM_START_MS: u64 = 2_000;
/// Gap between two ordinary steps, drawn uniformly.
pub const STEP_GAP_MS_MIN: u64 = 300;
pub const STEP_GAP_MS_MAX: u64 = 1_500;
/// Chance that a step is a calm one: every fault is healed, then nothing happens for a while.
/// Calm stretches are where the liveness checker demands progress.
pub const CALM_STEP_PERCENT: u64 = 8;
pub const CALM_MS_MIN: u64 = 4_000;
pub const CALM_MS_MAX: u64 = 9_000;
/// Chance that an ordinary step heals an active fault rather than injecting one.
pub const HEAL_PERCENT: u64 = 45;
/// Chance that a fault which would leave no possible quorum is allowed anyway.
pub const QUORUM_LOSS_PERCENT: u64 = 10;
/// Most faults active at once.
pub const FAULTS_ACTIVE_MAX: usize = 3;
/// Random packet loss, percent of packets dropped in each direction on the faulty host.
pub const LOSS_PERCENT_MIN: u64 = 5;
pub const LOSS_PERCENT_MAX: u64 = 30;
/// Delay added to every chunk of peer traffic into the delayed node, each direction.
pub const DELAY_MS_MIN: u64 = 20;
pub const DELAY_MS_MAX: u64 = 250;

/// A node of the cluster, as the schedule sees it.
#[derive(Debug, Clone)]
pub struct NodeInfo {
    pub name: String,
    /// A unit runs more than vnetd (its switch, later), so "kill the whole unit" applies.
    pub is_unit: bool,
}

/// The kinds a report counts. `Restart` is the heal of a kill.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum FaultKind {
    KillVnetd,
    KillUnit,
    Pause,
    Isolate,
    Split,
    OneWayLoss,
    RandomLoss,
    Delay,
    Restart,
}

impl FaultKind {
    pub const ALL: [FaultKind; 9] = [
        FaultKind::KillVnetd,
        FaultKind::KillUnit,
        FaultKind::Pause,
        FaultKind::Isolate,
        FaultKind::Split,
        FaultKind::OneWayLoss,
        FaultKind::RandomLoss,
        FaultKind::Delay,
        FaultKind::Restart,
    ];

    /// Weights of the injectable kinds (restart comes from healing a kill, not from a draw).
    pub fn weight(self) -> u64 {
        match self {
            FaultKind::KillVnetd => 10,
            FaultKind::KillUnit => 8,
            FaultKind::Pause => 10,
            FaultKind::Isolate => 10,
            FaultKind::Split => 8,
            FaultKind::OneWayLoss => 8,
            FaultKind::RandomLoss => 8,
            FaultKind::Delay => 8,
            FaultKind::Restart => 0,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            FaultKind::KillVnetd => "kill -9 vnetd",
            FaultKind::KillUnit => "kill -9 whole unit",
            FaultKind::Pause => "pause (SIGSTOP/SIGCONT)",
            FaultKind::Isolate => "isolate host",
            FaultKind::Split => "split cluster",
            FaultKind::OneWayLoss => "one-way loss",
            FaultKind::RandomLoss => "random packet loss",
            FaultKind::Delay => "added delay",
            FaultKind::Restart => "restart on data dir",
        }
    }
}

/// One fault, by node index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum Fault {
    KillVnetd {
        node: usize,
    },
    /// Every process of the unit host (vnetd today; vnetd and its switch later).
    KillUnit {
        node: usize,
    },
    Pause {
        node: usize,
    },
    /// The host's every packet to or from any other host (nodes and client) is dropped.
    Isolate {
        node: usize,
    },
    /// The cluster split in two: `minority` cannot reach the other nodes, nor they it; the
    /// client still reaches both sides.
    Split {
        minority: usize,
    },
    /// Packets from `from` to `to` are dropped; the other direction flows.
    OneWayLoss {
        from: usize,
        to: usize,
    },
    RandomLoss {
        node: usize,
        percent: u64,
    },
    Delay {
        node: usize,
        ms: u64,
    },
}

impl Fault {
    pub fn kind(&self) -> FaultKind {
        match self {
            Fault::KillVnetd { .. } => FaultKind::KillVnetd,
            Fault::KillUnit { .. } => FaultKind::KillUnit,
            Fault::Pause { .. } => FaultKind::Pause,
            Fault::Isolate { .. } => FaultKind::Isolate,
            Fault::Split { .. } => FaultKind::Split,
            Fault::OneWayLoss { .. } => FaultKind::OneWayLoss,
            Fault::RandomLoss { .. } => FaultKind::RandomLoss,
            Fault::Delay { .. } => FaultKind::Delay,
        }
    }

    /// The nodes whose processes or host this fault is about.
    pub fn nodes(&self) -> Vec<usize> {
        match *self {
            Fault::KillVnetd { node }
            | Fault::KillUnit { node }
            | Fault::Pause { node }
            | Fault::Isolate { node }
            | Fault::RandomLoss { node, .. }
            | Fault::Delay { node, .. } => vec![node],
            Fault::Split { minority } => vec![minority],
            Fault::OneWayLoss { from, to } => vec![from, to],
        }
    }

    fn stops_process(&self) -> bool {
        matches!(
            self,
            Fault::KillVnetd { .. } | Fault::KillUnit { .. } | Fault::Pause { .. }
        )
    }
}

/// What a step does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Action {
    Inject(Fault),
    /// Undo one active fault; for a kill, restart the node on its data directory.
    Heal(Fault),
}

impl Action {
    /// The kind a report counts this action under, if any.
    pub fn counted_kind(&self) -> FaultKind {
        match self {
            Action::Inject(f) => f.kind(),
            Action::Heal(Fault::KillVnetd { .. } | Fault::KillUnit { .. }) => FaultKind::Restart,
            Action::Heal(f) => f.kind(),
        }
    }

    /// Heals of anything but a kill are not counted as faults.
    pub fn is_counted(&self) -> bool {
        matches!(
            self,
            Action::Inject(_) | Action::Heal(Fault::KillVnetd { .. } | Fault::KillUnit { .. })
        )
    }
}

/// Display with node names.
pub struct Named<'a>(pub &'a Action, pub &'a [NodeInfo]);

impl fmt::Display for Named<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = |i: usize| self.1[i].name.as_str();
        let (verb, fault) = match self.0 {
            Action::Inject(fault) => ("inject", fault),
            Action::Heal(fault) => ("heal", fault),
        };
        let what = match *fault {
            Fault::KillVnetd { node } => format!("kill -9 vnetd on {}", n(node)),
            Fault::KillUnit { node } => format!("kill -9 every process of {}", n(node)),
            Fault::Pause { node } => format!("SIGSTOP vnetd on {}", n(node)),
            Fault::Isolate { node } => format!("isolate {}", n(node)),
            Fault::Split { minority } => format!("split {} from the rest", n(minority)),
            Fault::OneWayLoss { from, to } => format!("drop {} -> {}", n(from), n(to)),
            Fault::RandomLoss { node, percent } => format!("{percent}% loss on {}", n(node)),
            Fault::Delay { node, ms } => format!("{ms} ms delay into {}", n(node)),
        };
        write!(f, "{verb} {what}")
    }
}

/// A step at an offset from the start of the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Step {
    pub at_ms: u64,
    pub action: Action,
}

/// With `active` faults in force: the nodes that are not healthy (process stopped, host
/// isolated, lossy or delayed), and the pairs (low, high) a split or a one-way loss cuts apart.
pub fn unhealthy_and_cut(
    node_count: usize,
    active: &[Fault],
) -> (BTreeSet<usize>, BTreeSet<(usize, usize)>) {
    let mut unhealthy = BTreeSet::new();
    let mut cut: BTreeSet<(usize, usize)> = BTreeSet::new();
    for fault in active {
        match *fault {
            Fault::KillVnetd { node }
            | Fault::KillUnit { node }
            | Fault::Pause { node }
            | Fault::Isolate { node }
            | Fault::RandomLoss { node, .. }
            | Fault::Delay { node, .. } => {
                unhealthy.insert(node);
            }
            Fault::Split { minority } => {
                for other in (0..node_count).filter(|&o| o != minority) {
                    cut.insert((minority.min(other), minority.max(other)));
                }
            }
            Fault::OneWayLoss { from, to } => {
                cut.insert((from.min(to), from.max(to)));
            }
        }
    }
    (unhealthy, cut)
}

/// Can a healthy majority of the cluster talk with `active` faults in force? A node is
/// healthy when its process runs unpaused and its host is neither isolated, lossy nor delayed;
/// two healthy nodes form a quorum of three when no split or one-way loss cuts them apart.
pub fn quorum_possible(node_count: usize, active: &[Fault]) -> bool {
    let (unhealthy, cut) = unhealthy_and_cut(node_count, active);
    let healthy: Vec<usize> = (0..node_count).filter(|n| !unhealthy.contains(n)).collect();
    let majority = node_count / 2 + 1;
    // Small clusters only (3 today, MEMBERS_MAX 16 ever): try every healthy subset of
    // majority size that is pairwise connected.
    fn connected_subset(
        healthy: &[usize],
        cut: &BTreeSet<(usize, usize)>,
        chosen: &mut Vec<usize>,
        from: usize,
        want: usize,
    ) -> bool {
        if chosen.len() == want {
            return true;
        }
        for i in from..healthy.len() {
            let n = healthy[i];
            if chosen.iter().all(|&c| !cut.contains(&(c.min(n), c.max(n)))) {
                chosen.push(n);
                if connected_subset(healthy, cut, chosen, i + 1, want) {
                    return true;
                }
                chosen.pop();
            }
        }
        false
    }
    connected_subset(&healthy, &cut, &mut Vec::new(), 0, majority)
}

/// Every fault of `kind` that may be injected with `active` in force (ignoring quorum).
fn candidates(kind: FaultKind, nodes: &[NodeInfo], active: &[Fault], rng: &mut Rng) -> Vec<Fault> {
    let n = nodes.len();
    let stopped = |node: usize| {
        active
            .iter()
            .any(|f| f.stops_process() && f.nodes() == [node])
    };
    let has = |pred: &dyn Fn(&Fault) -> bool| active.iter().any(pred);
    let all = 0..n;
    match kind {
        FaultKind::KillVnetd => all
            .filter(|&node| !stopped(node))
            .map(|node| Fault::KillVnetd { node })
            .collect(),
        FaultKind::KillUnit => all
            .filter(|&node| nodes[node].is_unit && !stopped(node))
            .map(|node| Fault::KillUnit { node })
            .collect(),
        FaultKind::Pause => all
            .filter(|&node| !stopped(node))
            .map(|node| Fault::Pause { node })
            .collect(),
        FaultKind::Isolate => all
            .filter(|&node| !has(&|f| *f == Fault::Isolate { node }))
            .map(|node| Fault::Isolate { node })
            .collect(),
        FaultKind::Split => {
            if has(&|f| matches!(f, Fault::Split { .. })) {
                Vec::new()
            } else {
                all.map(|minority| Fault::Split { minority }).collect()
            }
        }
        FaultKind::OneWayLoss => {
            let mut pairs = Vec::new();
            for from in 0..n {
                for to in (0..n).filter(|&t| t != from) {
                    let fault = Fault::OneWayLoss { from, to };
                    if !has(&|f| *f == fault) {
                        pairs.push(fault);
                    }
                }
            }
            pairs
        }
        FaultKind::RandomLoss => {
            let percent = rng.between(LOSS_PERCENT_MIN, LOSS_PERCENT_MAX);
            all.filter(|&node| {
                !has(&|f| matches!(f, Fault::RandomLoss { node: x, .. } if *x == node))
            })
            .map(|node| Fault::RandomLoss { node, percent })
            .collect()
        }
        FaultKind::Delay => {
            let ms = rng.between(DELAY_MS_MIN, DELAY_MS_MAX);
            all.filter(|&node| !has(&|f| matches!(f, Fault::Delay { node: x, .. } if *x == node)))
                .map(|node| Fault::Delay { node, ms })
                .collect()
        }
        FaultKind::Restart => Vec::new(),
    }
}

/// The schedule for `seed` over `duration_ms`, ending with every fault healed at
/// `duration_ms` (or, if an earlier step ran past it, at that step's time).
pub fn generate(seed: u64, duration_ms: u64, nodes: &[NodeInfo]) -> Vec<Step> {
    let mut rng = Rng::new(seed).fork(1);
    let mut steps = Vec::new();
    let mut active: Vec<Fault> = Vec::new();
    let mut at_ms = CALM_START_MS;
    let heal = |active: &mut Vec<Fault>, steps: &mut Vec<Step>, i: usize, at_ms: u64| {
        let fault = active.remove(i);
        steps.push(Step {
            at_ms,
            action: Action::Heal(fault),
        });
    };
    while at_ms < duration_ms {
        if rng.chance(CALM_STEP_PERCENT) {
            while !active.is_empty() {
                heal(&mut active, &mut steps, 0, at_ms);
            }
            at_ms += rng.between(CALM_MS_MIN, CALM_MS_MAX);
            continue;
        }
        let heal_now =
            !active.is_empty() && (active.len() >= FAULTS_ACTIVE_MAX || rng.chance(HEAL_PERCENT));
        let mut injected = false;
        if !heal_now {
            let allow_quorum_loss = rng.chance(QUORUM_LOSS_PERCENT);
            let options: Vec<(FaultKind, Vec<Fault>)> = FaultKind::ALL
                .iter()
                .map(|&kind| {
                    let allowed = candidates(kind, nodes, &active, &mut rng)
                        .into_iter()
                        .filter(|f| {
                            let mut after = active.clone();
                            after.push(*f);
                            allow_quorum_loss || quorum_possible(nodes.len(), &after)
                        })
                        .collect();
                    (kind, allowed)
                })
                .collect();
            let weights: Vec<u64> = options
                .iter()
                .map(|(kind, c)| if c.is_empty() { 0 } else { kind.weight() })
                .collect();
            if let Some(i) = rng.weighted(&weights) {
                let fault = *rng.pick(&options[i].1);
                active.push(fault);
                steps.push(Step {
                    at_ms,
                    action: Action::Inject(fault),
                });
                injected = true;
            }
        }
        if !injected && !active.is_empty() {
            let i = rng.below(active.len() as u64) as usize;
            heal(&mut active, &mut steps, i, at_ms);
        }
        at_ms += rng.between(STEP_GAP_MS_MIN, STEP_GAP_MS_MAX);
    }
    let end = at_ms
        .min(duration_ms)
        .max(steps.last().map_or(0, |s| s.at_ms));
    while !active.is_empty() {
        heal(&mut active, &mut steps, 0, end);
    }
    steps
}

/// Applies one action to the faults in force.
pub fn apply(active: &mut Vec<Fault>, action: &Action) {
    match action {
        Action::Inject(f) => active.push(*f),
        Action::Heal(f) => {
            if let Some(i) = active.iter().position(|a| a == f) {
                active.remove(i);
            }
        }
    }
}

/// The faults in force after replaying `actions` in order.
pub fn active_after<'a>(actions: impl IntoIterator<Item = &'a Action>) -> Vec<Fault> {
    let mut active = Vec::new();
    for action in actions {
        apply(&mut active, action);
    }
    active
}

/// The spans of a run, as executed (`(time, action)` in time order, from `start_ns` to
/// `end_ns`), during which a quorum could serve.
pub fn quorum_windows(
    node_count: usize,
    start_ns: u64,
    executed: &[(u64, Action)],
    end_ns: u64,
) -> Vec<QuorumWindow> {
    let mut windows = Vec::new();
    let mut active: Vec<Fault> = Vec::new();
    let mut open: Option<u64> = Some(start_ns);
    for (at_ns, action) in executed {
        apply(&mut active, action);
        let possible = quorum_possible(node_count, &active);
        match (open, possible) {
            (Some(start), false) => {
                windows.push(QuorumWindow {
                    start_ns: start,
                    end_ns: *at_ns,
                });
                open = None;
            }
            (None, true) => open = Some(*at_ns),
            _ => {}
        }
    }
    if let Some(start) = open {
        windows.push(QuorumWindow {
            start_ns: start,
            end_ns,
        });
    }
    windows
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topology() -> Vec<NodeInfo> {
        ["unit-a", "unit-b", "witness"]
            .iter()
            .map(|name| NodeInfo {
                name: name.to_string(),
                is_unit: *name != "witness",
            })
            .collect()
    }

    #[test]
    fn same_seed_same_schedule_other_seed_other_schedule() {
        let nodes = topology();
        assert_eq!(generate(42, 60_000, &nodes), generate(42, 60_000, &nodes));
        assert_ne!(generate(42, 60_000, &nodes), generate(43, 60_000, &nodes));
    }

    #[test]
    fn every_schedule_ends_healed_and_in_time_order() {
        let nodes = topology();
        for seed in 0..200 {
            let steps = generate(seed, 60_000, &nodes);
            assert!(
                active_after(steps.iter().map(|s| &s.action)).is_empty(),
                "seed {seed} leaves faults active"
            );
            assert!(
                steps.windows(2).all(|w| w[0].at_ms <= w[1].at_ms),
                "seed {seed}"
            );
            // Every heal heals something active; kills are healed by a restart.
            let mut active = Vec::new();
            for s in &steps {
                match s.action {
                    Action::Inject(f) => active.push(f),
                    Action::Heal(f) => {
                        let i = active.iter().position(|a| *a == f);
                        assert!(i.is_some(), "seed {seed}: heal of inactive {f:?}");
                        active.remove(i.expect("checked"));
                    }
                }
                assert!(active.len() <= FAULTS_ACTIVE_MAX, "seed {seed}");
            }
        }
    }

    #[test]
    fn quorum_is_possible_most_of_the_time() {
        let nodes = topology();
        let (mut with, mut without) = (0u64, 0u64);
        for seed in 0..100 {
            let steps = generate(seed, 120_000, &nodes);
            let mut active = Vec::new();
            let mut last = 0;
            for s in &steps {
                let span = s.at_ms - last;
                if quorum_possible(3, &active) {
                    with += span;
                } else {
                    without += span;
                }
                last = s.at_ms;
                apply(&mut active, &s.action);
            }
        }
        assert!(without > 0, "quorum loss must happen sometimes");
        assert!(
            with > 4 * without,
            "quorum possible {with} ms vs impossible {without} ms"
        );
    }

    #[test]
    fn a_ten_minute_soak_draws_every_kind_often() {
        let nodes = topology();
        let steps = generate(7, 600_000, &nodes);
        let counted: Vec<FaultKind> = steps
            .iter()
            .filter(|s| s.action.is_counted())
            .map(|s| s.action.counted_kind())
            .collect();
        assert!(counted.len() >= 200, "{} faults", counted.len());
        for kind in FaultKind::ALL {
            let n = counted.iter().filter(|&&k| k == kind).count();
            assert!(n >= 10, "{kind:?} drawn {n} times");
        }
    }

    #[test]
    fn quorum_rules() {
        assert!(quorum_possible(3, &[]));
        assert!(quorum_possible(3, &[Fault::KillVnetd { node: 0 }]));
        assert!(!quorum_possible(
            3,
            &[Fault::KillVnetd { node: 0 }, Fault::Pause { node: 1 }]
        ));
        assert!(quorum_possible(3, &[Fault::OneWayLoss { from: 0, to: 1 }]));
        assert!(!quorum_possible(
            3,
            &[
                Fault::OneWayLoss { from: 0, to: 1 },
                Fault::Isolate { node: 2 }
            ]
        ));
        assert!(quorum_possible(3, &[Fault::Split { minority: 2 }]));
        assert!(!quorum_possible(
            3,
            &[
                Fault::Split { minority: 2 },
                Fault::Delay { node: 0, ms: 50 }
            ]
        ));
    }

    #[test]
    fn windows_follow_the_executed_faults() {
        let kill0 = Fault::KillVnetd { node: 0 };
        let kill1 = Fault::KillVnetd { node: 1 };
        let executed = vec![
            (10, Action::Inject(kill0)),
            (20, Action::Inject(kill1)),
            (30, Action::Heal(kill1)),
            (40, Action::Heal(kill0)),
        ];
        let windows = quorum_windows(3, 0, &executed, 100);
        assert_eq!(
            windows,
            vec![
                QuorumWindow {
                    start_ns: 0,
                    end_ns: 20
                },
                QuorumWindow {
                    start_ns: 30,
                    end_ns: 100
                }
            ]
        );
    }
}
