//! The leader's side: requests forwarded to it (lease grants in two halves around a read-index
//! round, writes, operator moves), the controller's passes, and the caller's side of forwarding.

use super::*;

/// Most placement changes per command in the simulated cluster (see `Leader::controller`).
const CHANGES_PER_COMMAND: usize = 2;

impl World {
    pub(super) fn read_done(&mut self, i: usize, read_id: u64, index: Option<u64>) {
        let Some(PendingRead::CatchUp) = self.nodes[i].reads.remove(&read_id) else {
            return;
        };
        self.nodes[i].ctl.stage = match index {
            Some(target) => Stage::WaitApply(target),
            None => Stage::Idle,
        };
        self.apply_committed(i);
    }

    pub(super) fn finish_write(&mut self, i: usize, write: PendingWrite, ok: bool) {
        for waiter in write.waiters {
            match waiter {
                Waiter::Caller { .. } => {
                    self.reply(i, waiter, if ok { Reply::Written } else { Reply::Failed })
                }
                Waiter::Controller => {
                    let _ = ok; // decided afresh next pass either way
                    self.nodes[i].ctl.writing = false;
                    self.pump_controller(i);
                }
            }
        }
    }

    // ---- the leader's side of requests ----

    pub(super) fn controller(&self) -> Controller {
        Controller {
            policy: Policy {
                failback_hold_down_ms: self.config.failback_hold_down_ms,
                changes_per_pass_max: vnet_node::node::PLACEMENT_CHANGES_PER_PASS_MAX,
            },
            failed_after: Duration::from_nanos(
                self.config.lease_ttl_ns + self.config.drift_margin_ns,
            ),
            // Far below vnetd's, so that failovers and placements of the few simulated
            // profiles are written in parts, as a large cluster's are.
            changes_per_command: CHANGES_PER_COMMAND,
        }
    }

    pub(super) fn leader_call(&mut self, i: usize, waiter: Waiter, hops: u8, call: Call) {
        if !self.nodes[i].raft.is_leader() {
            // `Node::execute` retries toward the leader it is told of (`NotLeader` carries a
            // hint); a relay stands for that retry.
            match (self.nodes[i].raft.leader, waiter) {
                (Some(leader), Waiter::Caller { node, call_id })
                    if hops < RELAY_HOPS_MAX && leader as usize - 1 != i =>
                {
                    let wire = Wire::Call {
                        call_id,
                        caller: node,
                        hops: hops + 1,
                        call,
                    };
                    self.send(i, leader as usize - 1, wire);
                }
                _ => self.reply(i, waiter, Reply::Failed),
            }
            return;
        }
        match call {
            Call::Write(request) => self.propose(i, request, waiter),
            Call::OperatorMove { profile, to } => {
                let now = self.instant(i);
                let controller = self.controller();
                let sets = voter_sets();
                let reports = self.fresh_reports(i);
                let node = &mut self.nodes[i];
                let voters = Voters {
                    sets: &sets,
                    reports: &reports,
                    settled: true,
                };
                let asked = OperatorMove {
                    profile: Some(&profile),
                    from: None,
                    to: Some(&to),
                };
                let moves = controller.operator_moves(
                    &voters,
                    &node.state,
                    &mut node.ctl.healthy_since,
                    now,
                    asked,
                );
                match moves {
                    Ok(changes) if !changes.is_empty() => {
                        let request = Request {
                            actor: "system/failover".into(),
                            command: Command::Place { changes },
                            trace: None,
                            on_behalf_of: None,
                        };
                        self.propose(i, request, waiter)
                    }
                    _ => self.reply(i, waiter, Reply::Refused),
                }
            }
        }
    }

    /// Proposes `request` now, or (as vnetd's leader does with writes that arrive while its
    /// proposals are outstanding, `node/write_batch.rs`) holds it for a moment to go with the
    /// writes that follow as one `Command::Batch` entry: half the time, so that revisions run
    /// ahead of log indexes in every run.
    pub(super) fn propose(&mut self, i: usize, request: Request, waiter: Waiter) {
        if self.rng.range(0, 2) == 0 {
            return self.propose_now(i, vec![(request, waiter)]);
        }
        let node = &mut self.nodes[i];
        node.batching.push((request, waiter));
        if node.batching.len() == 1 {
            let life = node.life;
            let gather = self.rng.range(0, 2 * MS);
            self.after_local(i, gather, Ev::ProposeBatch(i, life));
        }
    }

    pub(super) fn propose_batch(&mut self, i: usize) {
        let batch = std::mem::take(&mut self.nodes[i].batching);
        if !batch.is_empty() {
            self.propose_now(i, batch);
        }
    }

    fn propose_now(&mut self, i: usize, batch: Vec<(Request, Waiter)>) {
        let (mut requests, waiters): (Vec<Request>, Vec<Waiter>) = batch.into_iter().unzip();
        let request = if requests.len() == 1 {
            requests.swap_remove(0)
        } else {
            Request {
                actor: "vnetd/batch".into(),
                command: Command::Batch(requests),
                trace: None,
                on_behalf_of: None,
            }
        };
        let now = self.local(i);
        let term = self.nodes[i].raft.term();
        match self.nodes[i].raft.propose(request, now) {
            Some(index) => {
                self.nodes[i]
                    .writes
                    .insert(index, PendingWrite { term, waiters });
                self.after_raft(i);
            }
            None => self.finish_write(i, PendingWrite { term, waiters }, false),
        }
    }

    pub(super) fn reply(&mut self, i: usize, waiter: Waiter, reply: Reply) {
        match waiter {
            Waiter::Caller { node, call_id } if node == i => self.complete(i, call_id, reply),
            Waiter::Caller { node, call_id } => self.send(i, node, Wire::Reply { call_id, reply }),
            Waiter::Controller => {}
        }
    }

    // ---- the caller's side: forwarding to the leader ----

    pub(super) fn call(&mut self, i: usize, call: Call, completion: Completion, timeout_ns: u64) {
        let call_id = self.id();
        self.nodes[i].outstanding.insert(call_id, completion);
        let life = self.nodes[i].life;
        self.after_local(i, timeout_ns, Ev::CallTimeout(i, life, call_id));
        self.route(i, call_id, call);
    }

    /// Runs a call here if this node leads, sends it to the leader it knows, or keeps it until
    /// it knows one (`Node::execute` waits for a leader until the request's deadline).
    fn route(&mut self, i: usize, call_id: u64, call: Call) {
        if self.nodes[i].raft.is_leader() {
            self.leader_call(i, Waiter::Caller { node: i, call_id }, 0, call);
        } else if let Some(leader) = self.nodes[i].raft.leader {
            let wire = Wire::Call {
                call_id,
                caller: i,
                hops: 0,
                call,
            };
            self.send(i, leader as usize - 1, wire);
        } else {
            self.nodes[i].waiting.push((call_id, call));
        }
    }

    /// Sends the requests that waited for a leader, once this node knows one.
    pub(super) fn send_waiting(&mut self, i: usize) {
        if self.nodes[i].raft.leader.is_none() || self.nodes[i].waiting.is_empty() {
            return;
        }
        for (call_id, call) in std::mem::take(&mut self.nodes[i].waiting) {
            // Under the same id and deadline, unless that deadline has passed.
            if self.nodes[i].outstanding.contains_key(&call_id) {
                self.route(i, call_id, call);
            }
        }
    }

    pub(super) fn complete(&mut self, i: usize, call_id: u64, reply: Reply) {
        let Some(completion) = self.nodes[i].outstanding.remove(&call_id) else {
            return; // timed out already, or from an earlier life
        };
        let life = self.nodes[i].life;
        match completion {
            Completion::Report { backlog } => {
                self.nodes[i].agent.stage = AgentStage::Idle;
                let pause = if backlog {
                    0
                } else {
                    self.config.reconcile_every_ns
                };
                self.after_local(i, pause, Ev::ReconcileTick(i, life));
            }
            Completion::Operator => {
                let name = self.nodes[i].name;
                self.note(|| format!("operator request through {name}: {reply:?}"));
            }
        }
    }

    // ---- the controller ----

    pub(super) fn controller_tick(&mut self, i: usize) {
        let node = &self.nodes[i];
        if !node.raft.is_leader() || node.ctl.stage != Stage::Idle {
            return;
        }
        if node.ctl.caught_up_term != node.raft.term() {
            // `ensure_linearizable`: decide only on a state with everything committed before.
            let read_id = self.id();
            self.nodes[i].reads.insert(read_id, PendingRead::CatchUp);
            self.nodes[i].ctl.stage = Stage::CatchingUp;
            let now = self.local(i);
            self.nodes[i].raft.read_index(read_id, now);
            self.after_raft(i);
            return;
        }
        // `Node::poll_reports`: this voter's own report now; each other voter asked unless a
        // request is still out; the pass decides on the reports fresh enough, without waiting.
        let own = self.report_here(i);
        let now_local = self.local(i);
        self.nodes[i]
            .ctl
            .reports
            .insert(i as u64 + 1, (now_local, own));
        let life = self.nodes[i].life;
        for voter in (0..3).filter(|v| *v != i) {
            if self.nodes[i].ctl.report_asks.values().any(|v| *v == voter) {
                continue;
            }
            let ask_id = self.id();
            self.nodes[i].ctl.report_asks.insert(ask_id, voter);
            self.send(i, voter, Wire::ReportAsk { round: ask_id });
            let wait = vnet_node::node::LEASE_REPORT_TIMEOUT_MS * MS;
            self.after_local(i, wait, Ev::ReportTimeout(i, life, ask_id));
        }
        let now = self.instant(i);
        let controller = self.controller();
        let sets = voter_sets();
        let reports = self.fresh_reports(i);
        let node = &mut self.nodes[i];
        let voters = Voters {
            sets: &sets,
            reports: &reports,
            settled: true,
        };
        let writes = controller.decide(&voters, &node.state, &mut node.ctl.healthy_since, now);
        for unit in &writes.revocations {
            let name = self.nodes[i].name;
            self.note(|| format!("{name}: a majority saw {unit} lapse; revoking its lease"));
        }
        self.stats.failovers += writes.failed_over_units().len() as u64;
        for (unit, epoch, changes) in &writes.failovers {
            let name = self.nodes[i].name;
            let count = changes.len();
            self.note(|| {
                format!("{name}: {unit} attested lapsed (epoch {epoch}); moving {count} profiles")
            });
        }
        self.nodes[i].ctl.queue = writes.into_commands().into();
        self.nodes[i].ctl.stage = Stage::Writing;
        self.pump_controller(i);
    }

    /// The reports no older than `Node::fresh_reports` allows.
    pub(super) fn fresh_reports(&self, i: usize) -> BTreeMap<u64, VoterReport> {
        let now = self.local(i);
        let fresh = vnet_node::node::LEASE_REPORT_FRESH_MS * MS;
        self.nodes[i]
            .ctl
            .reports
            .iter()
            .filter(|(_, (at, _))| now.saturating_sub(*at) <= fresh)
            .map(|(voter, (_, report))| (*voter, report.clone()))
            .collect()
    }

    /// A voter's report, as `Node::lease_report` takes it.
    pub(super) fn report_here(&mut self, v: usize) -> VoterReport {
        let now = self.instant(v);
        let node = &self.nodes[v];
        VoterReport::of(v as u64 + 1, &node.state, &node.grants, now)
    }

    pub(super) fn report_in(&mut self, i: usize, ask_id: u64, report: VoterReport) {
        let Some(voter) = self.nodes[i].ctl.report_asks.remove(&ask_id) else {
            return;
        };
        if report.voter != voter as u64 + 1 || !self.nodes[i].raft.is_leader() {
            return;
        }
        let now = self.local(i);
        self.nodes[i]
            .ctl
            .reports
            .insert(report.voter, (now, report));
    }

    pub(super) fn pump_controller(&mut self, i: usize) {
        if self.nodes[i].ctl.writing {
            return;
        }
        if let Some(command) = self.nodes[i].ctl.queue.pop_front() {
            self.nodes[i].ctl.writing = true;
            let request = Request {
                actor: "system/placement".into(),
                command,
                trace: None,
                on_behalf_of: None,
            };
            self.propose(i, request, Waiter::Controller);
            return;
        }
        if self.nodes[i].ctl.stage == Stage::Writing {
            self.nodes[i].ctl.stage = Stage::Idle;
        }
    }

    // ---- the voter's side of renewals ----

    /// `Node::grant_lease` on voter `v`.
    pub(super) fn grant_here(&mut self, v: usize, unit: &str) -> Option<Grant> {
        let now = self.instant(v);
        let leader_held = self.config.leader_held_leases;
        let node = &mut self.nodes[v];
        if leader_held && !node.raft.is_leader() {
            return None;
        }
        may_grant(&node.state, unit).ok()?;
        node.grants.record(unit, now);
        self.stats.grants += 1;
        let sets = if leader_held {
            vec![[v as u64 + 1].into_iter().collect()]
        } else {
            voter_sets()
        };
        Some(Grant {
            voter: v as u64 + 1,
            sets,
            min_applied_index: node.applied.max(node.raft.last_index()),
        })
    }
}
