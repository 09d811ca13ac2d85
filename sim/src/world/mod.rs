//! The simulated cluster: two units (each a node with its switch) and a witness, a network, and
//! one queue of timed events. Everything vnet-ha decides is the real code — each voter's grants
//! and reports (`lease::may_grant`, `Grants`, `VoterReport`), the unit's `HeldGrants`,
//! `Controller::decide`/`operator_moves`, the agent's `reconcile`/`report`,
//! `vnet_model::apply`, and the switch model — called at the points where `vnetd` calls them;
//! what is simulated is the time between them: Raft (`raft.rs`), the network, clocks, crashes
//! and pauses.
//!
//! Each node has its own clock (an offset and a rate error); a unit's switch shares its node's
//! clock, as CLOCK_MONOTONIC is shared on one machine. Work inside a node takes no simulated
//! time except the switch calls (a millisecond or so each) and message delivery.
//!
//! `setup.rs` builds the world at time zero; `network.rs`, `agent.rs`, `leader.rs`, `faults.rs`
//! and `oracle.rs` hold what happens after.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use fabric_agent::switch::{Capacity, Switch, SwitchSpec, WatchdogMode};
use fabric_agent::{Action, PortMap};
use vnet_model::{
    apply_entry, Command, Failback, Member, ProfileSpec, Request, Role as MemberRole, State,
    VHbaSpec, VNicSpec,
};
use vnet_node::agent::{presented_of, reconcile, report, Reconcile};
use vnet_node::controller::{Controller, OperatorMove, Voters};
use vnet_node::lease::{may_grant, Grant, Grants, HeldGrants, UnitLease, VoterReport, VoterSets};
use vnet_node::policy::Policy;

use crate::check::{drain_means_empty, Presentations};
use crate::raft::{Durable, Entry, Happened, Msg, NodeId, Raft, Timing};
use crate::rng::Rng;

mod agent;
mod faults;
mod leader;
mod network;
mod oracle;
mod setup;

pub use setup::profile_name;

const MS: u64 = 1_000_000;

/// The timing `vnetd` runs with by default.
#[derive(Debug, Clone, Copy)]
pub struct Config {
    pub raft: Timing,
    pub lease_ttl_ns: u64,
    pub drift_margin_ns: u64,
    pub reconcile_every_ns: u64,
    pub controller_every_ns: u64,
    pub failback_hold_down_ms: u64,
    pub request_timeout_ns: u64,
    /// Largest clock rate error of a node, parts per million.
    pub drift_ppm_max: u64,
    /// UNSAFE, TEST ONLY: `false` turns off the switches' watchdogs and the agents' clearing on
    /// a lapsed lease, to show that the checks catch what fencing prevents.
    pub fencing: bool,
    /// TEST ONLY: only the leader grants, and its grant alone makes a lease (a lease that hangs
    /// on one leader), to show that the needless-fence check catches what quorum-held leases
    /// prevent.
    pub leader_held_leases: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            raft: Timing {
                heartbeat_ns: 100 * MS,
                election_min_ns: 300 * MS,
                election_max_ns: 600 * MS,
            },
            lease_ttl_ns: 800 * MS,
            drift_margin_ns: 150 * MS,
            reconcile_every_ns: vnet_node::agent::RECONCILE_TICK_MS * MS,
            controller_every_ns: vnet_node::node::PLACEMENT_TICK_MS * MS,
            failback_hold_down_ms: 2_000,
            request_timeout_ns: 5_000 * MS,
            drift_ppm_max: 2_000,
            fencing: true,
            leader_held_leases: false,
        }
    }
}

pub const UNITS: [&str; 2] = ["unit-a", "unit-b"];
const NAMES: [&str; 3] = ["unit-a", "unit-b", "witness"];
pub const PROFILES: usize = 6;

/// A request to the leader, as `vnetd` forwards it.
#[derive(Debug, Clone)]
pub enum Call {
    Write(Request),
    OperatorMove { profile: String, to: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    Refused,
    Written,
    Failed,
}

#[derive(Debug, Clone)]
enum Wire {
    Raft(Msg),
    /// A request on its way to the leader; `hops` counts relays by nodes that were not it.
    Call {
        call_id: u64,
        caller: usize,
        hops: u8,
        call: Call,
    },
    Reply {
        call_id: u64,
        reply: Reply,
    },
    /// A unit's renewal, to one voter, and the voter's answer.
    GrantAsk {
        unit: String,
        ask_id: u64,
    },
    GrantAnswer {
        ask_id: u64,
        grant: Option<Grant>,
    },
    /// The leader asks a voter for its lease report, and the answer.
    ReportAsk {
        round: u64,
    },
    ReportAnswer {
        round: u64,
        report: VoterReport,
    },
}

/// What the caller does with a reply.
#[derive(Debug, Clone, Copy)]
enum Completion {
    Report { backlog: bool },
    Operator,
}

/// Who waits for a leader-side result.
#[derive(Debug, Clone, Copy)]
enum Waiter {
    Caller { node: usize, call_id: u64 },
    Controller,
}

#[derive(Debug)]
enum PendingRead {
    CatchUp,
}

#[derive(Debug)]
struct PendingWrite {
    term: u64,
    /// Everyone whose write the entry carries (several for a batch).
    waiters: Vec<Waiter>,
}

#[derive(Debug, Default, PartialEq, Eq)]
enum Stage {
    #[default]
    Idle,
    CatchingUp,
    WaitApply(u64),
    Writing,
}

#[derive(Debug, Default)]
struct ControllerRun {
    stage: Stage,
    caught_up_term: u64,
    queue: VecDeque<Command>,
    writing: bool,
    /// The latest report of each voter, with when it arrived (this node's clock).
    reports: BTreeMap<u64, (u64, VoterReport)>,
    /// Report requests out: ask id to voter.
    report_asks: BTreeMap<u64, usize>,
    healthy_since: BTreeMap<String, Instant>,
}

#[derive(Debug)]
enum AgentStage {
    Idle,
    Acting {
        actions: VecDeque<Action>,
        held: Option<UnitLease>,
        acted_on: u64,
        actual: PortMap,
        changed: bool,
        backlog: bool,
    },
    Reporting,
}

#[derive(Debug)]
struct Agent {
    held: HeldGrants,
    /// The latest lease the grants made in this life (kept when it lapses).
    lease: Option<UnitLease>,
    stage: AgentStage,
    /// Renewals out: ask id to (voter, send time on this node's clock).
    asks: BTreeMap<u64, (usize, u64)>,
}

impl Agent {
    fn new() -> Agent {
        Agent {
            held: HeldGrants::default(),
            lease: None,
            stage: AgentStage::Idle,
            asks: BTreeMap::new(),
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Clock {
    offset: u64,
    rate_ppm: i64,
}

impl Clock {
    fn local(&self, global: u64) -> u64 {
        let skew = (global as i128 * self.rate_ppm as i128 / 1_000_000) as i64;
        (self.offset as i64 + global as i64 + skew) as u64
    }

    /// The global duration in which this clock advances `local_ns`.
    fn global_span(&self, local_ns: u64) -> u64 {
        (local_ns as u128 * 1_000_000 / (1_000_000 + self.rate_ppm) as u128) as u64 + 1
    }
}

struct Node {
    name: &'static str,
    is_unit: bool,
    clock: Clock,
    up: bool,
    /// Bumped at each crash: timers of an earlier life are ignored.
    life: u64,
    paused_until: u64,
    raft: Raft,
    state: State,
    applied: u64,
    /// The renewals this node granted as a voter.
    grants: Grants,
    ctl: ControllerRun,
    reads: BTreeMap<u64, PendingRead>,
    writes: BTreeMap<u64, PendingWrite>,
    /// Writes held to go together as one batch entry (`Leader::propose`).
    batching: Vec<(Request, Waiter)>,
    outstanding: BTreeMap<u64, Completion>,
    /// Requests waiting for this node to learn of a leader.
    waiting: Vec<(u64, Call)>,
    agent: Agent,
    switch: Option<Switch>,
    switch_life: u64,
}

/// How loaded the simulated machines are, for one run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Load {
    Light,
    Busy,
    Overloaded,
}

#[derive(Debug, Clone)]
pub enum Fault {
    Kill {
        node: usize,
        with_switch: bool,
    },
    Restart {
        node: usize,
    },
    Pause {
        node: usize,
        for_ns: u64,
    },
    Cut {
        from: usize,
        to: usize,
        on: bool,
    },
    Loss {
        node: usize,
        per_mille: u64,
    },
    Delay {
        node: usize,
        extra_ns: u64,
    },
    HealNetwork,
    /// The machines settle down: light load from here on.
    Calm,
    Drain {
        unit: usize,
        draining: bool,
    },
    Move {
        profile: usize,
        to: usize,
    },
    /// Check that what `unit` presented when killed is on the peer by now.
    FailoverDue {
        unit: usize,
        profiles: Vec<String>,
        since: u64,
    },
    /// Record what `unit` presents, for a later `FailoverDue`.
    KillWatched {
        unit: usize,
        due_after_ns: u64,
    },
}

#[derive(Debug)]
enum Ev {
    RaftTick(usize, u64),
    ControllerTick(usize, u64),
    RenewTick(usize, u64),
    ReconcileTick(usize, u64),
    AgentAction(usize, u64),
    CallTimeout(usize, u64, u64),
    /// A renewal's answer did not come in time (node, life, ask id).
    GrantTimeout(usize, u64, u64),
    /// A report request's answer did not come in time (node, life, ask id).
    ReportTimeout(usize, u64, u64),
    Watchdog(usize, u64),
    /// Propose the writes held for a batch (node, life).
    ProposeBatch(usize, u64),
    /// Boxed: a message is the largest event by far, and most events are ticks.
    Deliver {
        from: usize,
        to: usize,
        wire: Box<Wire>,
    },
    Fault(Fault),
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub violation: Option<String>,
    /// The last trace lines before the end (all of them when asked for).
    pub trace: Vec<String>,
    pub stats: Stats,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    pub events: u64,
    pub elections: u64,
    pub grants: u64,
    pub failovers: u64,
    pub fences: u64,
    pub programs: u64,
    /// Kill to the last profile presented by the peer, for each checked failover.
    pub failover_ms: Vec<u64>,
    /// Fences (watchdog or agent) on a unit that was up and connected to a majority.
    pub needless_fences: u64,
    /// Clean kills whose survivors took so long to elect a leader that the failover budget was
    /// counted from the election instead.
    pub slow_elections: u64,
}

pub const TRACE_KEPT: usize = 120;

/// An election this long after a kill took more than one round.
const SLOW_ELECTION_NS: u64 = 1_500 * MS;

/// A clean kill after which no leader appears for this long is a liveness failure.
const NO_LEADER_NS_MAX: u64 = 10_000 * MS;

/// Times a request is passed on by nodes that are not the leader before it fails.
const RELAY_HOPS_MAX: u8 = 2;

pub struct World {
    pub config: Config,
    now: u64,
    seq: u64,
    queue: BTreeMap<(u64, u64), Ev>,
    rng: Rng,
    nodes: Vec<Node>,
    cut: [[bool; 3]; 3],
    loss_per_mille: [u64; 3],
    delay_ns: [u64; 3],
    next_id: u64,
    base: Instant,
    oracle_log: Vec<Entry>,
    oracle: State,
    presented: Presentations,
    pub violation: Option<String>,
    trace: VecDeque<String>,
    trace_all: bool,
    pub stats: Stats,
    spec_of: [SwitchSpec; 2],
    /// Failovers being timed: the killed unit, what it presented, when it was killed.
    watched: Vec<(usize, Vec<String>, u64)>,
    load: Load,
    /// For the needless-fence check (`faults.rs`): since when each node has been up, each node
    /// free of loss and extra delay, each directed link uncut, and the machines lightly loaded
    /// (`u64::MAX`: not now).
    up_since: [u64; 3],
    quiet_since: [u64; 3],
    link_since: [[u64; 3]; 3],
    light_since: u64,
    /// The node leading the newest term, the term, and since when (global ns).
    leader_since: Option<(usize, u64, u64)>,
}

impl World {
    fn local(&self, i: usize) -> u64 {
        self.nodes[i].clock.local(self.now)
    }

    /// The node's monotonic clock as an `Instant`, for the lease table.
    fn instant(&self, i: usize) -> Instant {
        self.base + Duration::from_nanos(self.local(i))
    }

    fn id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    fn at(&mut self, global: u64, ev: Ev) {
        self.seq += 1;
        self.queue.insert((global, self.seq), ev);
    }

    /// Schedules `ev` after `local_ns` of node `i`'s clock.
    fn after_local(&mut self, i: usize, local_ns: u64, ev: Ev) {
        let when = self.now + self.nodes[i].clock.global_span(local_ns);
        self.at(when, ev);
    }

    pub fn schedule(&mut self, global: u64, fault: Fault) {
        self.at(global, Ev::Fault(fault));
    }

    pub fn now(&self) -> u64 {
        self.now
    }

    pub fn note(&mut self, text: impl FnOnce() -> String) {
        if !self.trace_all && self.trace.len() >= TRACE_KEPT {
            self.trace.pop_front();
        }
        let line = format!("{:>10.6}s {}", self.now as f64 / 1e9, text());
        self.trace.push_back(line);
    }

    pub fn trace(&self) -> Vec<String> {
        self.trace.iter().cloned().collect()
    }

    fn fail(&mut self, what: String) {
        if self.violation.is_none() {
            self.note(|| format!("VIOLATION: {what}"));
            self.violation = Some(what);
        }
    }

    fn start_timers(&mut self, i: usize) {
        let life = self.nodes[i].life;
        let jitter = self.rng.range(1, 10 * MS);
        self.after_local(i, jitter, Ev::RaftTick(i, life));
        let c = self.config.controller_every_ns;
        self.after_local(i, c, Ev::ControllerTick(i, life));
        if self.nodes[i].is_unit {
            // The renewal loop starts by renewing.
            let r = self.rng.range(1, MS);
            self.after_local(i, r, Ev::RenewTick(i, life));
            let t = self.config.reconcile_every_ns;
            self.after_local(i, t, Ev::ReconcileTick(i, life));
        }
    }

    /// Runs events until `until` (global ns) or a violation.
    pub fn run_until(&mut self, until: u64) {
        while self.violation.is_none() {
            let Some((&(when, seq), _)) = self.queue.first_key_value() else {
                break;
            };
            if when > until {
                break;
            }
            let ev = self.queue.remove(&(when, seq)).expect("just seen");
            self.now = when;
            self.stats.events += 1;
            self.dispatch(ev);
        }
        self.now = self.now.max(until);
    }

    fn paused(&self, i: usize) -> bool {
        self.now < self.nodes[i].paused_until
    }

    fn dispatch(&mut self, ev: Ev) {
        // A paused process does nothing until it resumes; its switch (another process) goes on.
        let target = match &ev {
            Ev::RaftTick(i, _)
            | Ev::ControllerTick(i, _)
            | Ev::RenewTick(i, _)
            | Ev::ReconcileTick(i, _)
            | Ev::AgentAction(i, _)
            | Ev::CallTimeout(i, _, _)
            | Ev::GrantTimeout(i, _, _)
            | Ev::ReportTimeout(i, _, _)
            | Ev::ProposeBatch(i, _) => Some(*i),
            Ev::Deliver { to, .. } => Some(*to),
            Ev::Watchdog(..) | Ev::Fault(_) => None,
        };
        if let Some(i) = target {
            if self.paused(i) {
                let resume = self.nodes[i].paused_until;
                self.at(resume, ev);
                return;
            }
        }
        match ev {
            Ev::RaftTick(i, life) if self.alive(i, life) => {
                let now = self.local(i);
                let tick_jitter = self.rng.range(0, 3 * MS);
                self.nodes[i].raft.tick(now, tick_jitter);
                self.after_raft(i);
                self.after_local(i, 10 * MS, Ev::RaftTick(i, life));
            }
            Ev::ControllerTick(i, life) if self.alive(i, life) => {
                self.controller_tick(i);
                let every = self.config.controller_every_ns;
                self.after_local(i, every, Ev::ControllerTick(i, life));
            }
            Ev::RenewTick(i, life) if self.alive(i, life) => self.renew(i),
            Ev::ReconcileTick(i, life) if self.alive(i, life) => self.reconcile_tick(i),
            Ev::AgentAction(i, life) if self.alive(i, life) => self.agent_action(i),
            Ev::ProposeBatch(i, life) if self.alive(i, life) => self.propose_batch(i),
            Ev::CallTimeout(i, life, call_id) if self.alive(i, life) => {
                self.complete(i, call_id, Reply::Failed)
            }
            Ev::GrantTimeout(i, life, ask_id) if self.alive(i, life) => {
                self.nodes[i].agent.asks.remove(&ask_id);
            }
            Ev::ReportTimeout(i, life, ask_id) if self.alive(i, life) => {
                self.nodes[i].ctl.report_asks.remove(&ask_id);
            }
            Ev::Watchdog(i, switch_life) if self.nodes[i].switch_life == switch_life => {
                let now = self.local(i);
                self.switch_call(i, |s| {
                    s.tick(now);
                });
            }
            Ev::Deliver { from, to, wire } if self.nodes[to].up => self.deliver(from, to, *wire),
            Ev::Fault(fault) => self.fault(fault),
            _ => {}
        }
    }

    fn alive(&self, i: usize, life: u64) -> bool {
        self.nodes[i].up && self.nodes[i].life == life
    }

    // ---- Raft and the applied state ----

    fn after_raft(&mut self, i: usize) {
        let out = std::mem::take(&mut self.nodes[i].raft.out);
        for (to, msg) in &out {
            if let Msg::VoteReply {
                term,
                granted: true,
                ..
            } = msg
            {
                let (name, to_name) = (self.nodes[i].name, NAMES[*to as usize - 1]);
                self.note(|| format!("{name}: votes for {to_name} in term {term}"));
            }
        }
        for (to, msg) in out {
            self.send(i, to as usize - 1, Wire::Raft(msg));
        }
        self.apply_committed(i);
        let happened = std::mem::take(&mut self.nodes[i].raft.happened);
        for event in happened {
            match event {
                Happened::BecameLeader { term } => {
                    self.stats.elections += 1;
                    // A restarted node resuming an old term does not displace a newer leader.
                    if self.leader_since.is_none_or(|(_, t, _)| term >= t) {
                        self.leader_since = Some((i, term, self.now));
                    }
                    let name = self.nodes[i].name;
                    self.note(|| format!("{name}: leader of term {term}"));
                }
                Happened::SteppedDown => {
                    let term = self.nodes[i].raft.term();
                    if self
                        .leader_since
                        .is_some_and(|(leader, t, _)| leader == i && t < term)
                    {
                        self.leader_since = None;
                    }
                    let name = self.nodes[i].name;
                    self.note(|| format!("{name}: stepped down"));
                    let writes = std::mem::take(&mut self.nodes[i].writes);
                    for (_, write) in writes {
                        self.finish_write(i, write, false);
                    }
                    self.nodes[i].ctl = ControllerRun {
                        caught_up_term: self.nodes[i].ctl.caught_up_term,
                        ..ControllerRun::default()
                    };
                }
                Happened::ReadDone { read_id, index } => self.read_done(i, read_id, index),
            }
        }
        self.send_waiting(i);
    }

    fn apply_committed(&mut self, i: usize) {
        while self.nodes[i].applied < self.nodes[i].raft.commit {
            let index = self.nodes[i].applied + 1;
            let entry = self.nodes[i].raft.entry(index).clone();
            self.commit_to_oracle(index, &entry);
            if let Some(request) = &entry.request {
                // A refused command changes nothing, on every replica alike.
                let _ = apply_entry(&mut self.nodes[i].state, index, request);
            }
            self.nodes[i].applied = index;
            if let Some(write) = self.nodes[i].writes.remove(&index) {
                let ok = write.term == entry.term;
                self.finish_write(i, write, ok);
            }
            if self.nodes[i].ctl.stage == Stage::WaitApply(index) {
                let term = self.nodes[i].raft.term();
                self.nodes[i].ctl.caught_up_term = term;
                self.nodes[i].ctl.stage = Stage::Idle;
            }
        }
        if let Stage::WaitApply(target) = self.nodes[i].ctl.stage {
            if self.nodes[i].applied >= target {
                self.nodes[i].ctl.caught_up_term = self.nodes[i].raft.term();
                self.nodes[i].ctl.stage = Stage::Idle;
            }
        }
    }
}

/// The voter sets of the simulated cluster: its membership never changes.
pub(super) fn voter_sets() -> VoterSets {
    vec![(1..=3).collect()]
}

impl Node {
    fn raft_peers(&self) -> Vec<NodeId> {
        let me = NAMES
            .iter()
            .position(|n| *n == self.name)
            .expect("a known node") as u64
            + 1;
        (1..=3).filter(|p| *p != me).collect()
    }
}
