//! The leader's side: requests forwarded to it (lease grants in two halves around a read-index
//! round, writes, operator moves), the controller's passes, and the caller's side of forwarding.

use super::*;

impl World {
    pub(super) fn read_done(&mut self, i: usize, read_id: u64, index: Option<u64>) {
        let Some(read) = self.nodes[i].reads.remove(&read_id) else {
            return;
        };
        match read {
            PendingRead::Grant {
                waiter,
                unit,
                ticket,
                arrived_local,
            } => {
                let reply = match index {
                    None => Reply::Failed,
                    Some(read_index) => {
                        self.sync_term(i);
                        let arrived = self.base + Duration::from_nanos(arrived_local);
                        match self.nodes[i].leases.finish_grant(&unit, ticket, arrived) {
                            Ok(()) => {
                                self.stats.grants += 1;
                                let name = self.nodes[i].name;
                                self.note(|| {
                                    format!(
                                        "{name}: granted {unit} a lease, read index {read_index}"
                                    )
                                });
                                Reply::Granted { read_index }
                            }
                            Err(why) => {
                                let name = self.nodes[i].name;
                                self.note(|| format!("{name}: refused {unit}: {why}"));
                                Reply::Refused
                            }
                        }
                    }
                };
                self.reply(i, waiter, reply);
            }
            PendingRead::CatchUp => {
                self.nodes[i].ctl.stage = match index {
                    Some(target) => Stage::WaitApply(target),
                    None => Stage::Idle,
                };
                self.apply_committed(i);
            }
        }
    }

    pub(super) fn finish_write(&mut self, i: usize, write: PendingWrite, ok: bool) {
        match write.waiter {
            Waiter::Caller { .. } => self.reply(
                i,
                write.waiter,
                if ok { Reply::Written } else { Reply::Failed },
            ),
            Waiter::Controller => {
                if ok {
                    if let Some(unit) = &write.failover_of {
                        self.nodes[i].leases.failover_done(unit);
                    }
                }
                self.nodes[i].ctl.writing = false;
                self.pump_controller(i);
            }
        }
    }

    // ---- the leader's side of requests ----

    /// `LeaseTable::sync_term` as `Node` calls it: a new term counts every unit as renewed at
    /// max(last AppendEntries received, now - longest election timeout).
    pub(super) fn sync_term(&mut self, i: usize) {
        let now = self.local(i);
        let counted_from = self.nodes[i]
            .last_append_local
            .max(now.saturating_sub(self.config.raft.election_max_ns));
        let term = self.nodes[i].raft.term();
        let (now, counted_from) = (
            self.base + Duration::from_nanos(now),
            self.base + Duration::from_nanos(counted_from),
        );
        self.nodes[i].leases.sync_term(term, now, counted_from);
    }

    pub(super) fn controller(&self) -> Controller {
        Controller {
            policy: Policy {
                failback_hold_down_ms: self.config.failback_hold_down_ms,
                changes_per_pass_max: vnet_node::node::PLACEMENT_CHANGES_PER_PASS_MAX,
            },
            failed_after: Duration::from_nanos(
                self.config.lease_ttl_ns + self.config.drift_margin_ns,
            ),
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
            Call::Renew { unit } => {
                let arrived_local = self.local(i);
                let known = self.nodes[i]
                    .state
                    .member_by_name(&unit)
                    .is_some_and(|m| m.role == MemberRole::Unit);
                self.sync_term(i);
                let ticket = match self.nodes[i].leases.begin_grant(&unit) {
                    Ok(ticket) if known => ticket,
                    _ => return self.reply(i, waiter, Reply::Refused),
                };
                let read_id = self.id();
                self.nodes[i].reads.insert(
                    read_id,
                    PendingRead::Grant {
                        waiter,
                        unit,
                        ticket,
                        arrived_local,
                    },
                );
                let now = self.local(i);
                self.nodes[i].raft.read_index(read_id, now);
                self.after_raft(i);
            }
            Call::Write(request) => self.propose(i, request, waiter, None),
            Call::OperatorMove { profile, to } => {
                self.sync_term(i);
                let now = self.instant(i);
                let controller = self.controller();
                let node = &mut self.nodes[i];
                let moves = controller.operator_moves(
                    &mut node.leases,
                    &node.state,
                    now,
                    Some(&profile),
                    None,
                    Some(&to),
                );
                match moves {
                    Ok(changes) if !changes.is_empty() => {
                        let request = Request {
                            actor: "system/failover".into(),
                            command: Command::Place { changes },
                        };
                        self.propose(i, request, waiter, None)
                    }
                    _ => self.reply(i, waiter, Reply::Refused),
                }
            }
        }
    }

    pub(super) fn propose(
        &mut self,
        i: usize,
        request: Request,
        waiter: Waiter,
        failover_of: Option<String>,
    ) {
        let now = self.local(i);
        let term = self.nodes[i].raft.term();
        match self.nodes[i].raft.propose(request, now) {
            Some(index) => {
                self.nodes[i].writes.insert(
                    index,
                    PendingWrite {
                        term,
                        waiter,
                        failover_of,
                    },
                );
                self.after_raft(i);
            }
            None => self.finish_write(
                i,
                PendingWrite {
                    term,
                    waiter,
                    failover_of,
                },
                false,
            ),
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
            Completion::Renew { sent_local } => {
                if let Reply::Granted { read_index } = reply {
                    let ttl = Duration::from_nanos(self.config.lease_ttl_ns);
                    let held = self.nodes[i].agent.lease;
                    let lease = UnitLease::after_grant(held, sent_local, ttl, read_index);
                    self.nodes[i].agent.lease = Some(lease);
                    let now = self.local(i);
                    let armed = self.switch_call(i, |s| {
                        s.arm_watchdog(now, lease.expires_at_mono_ns);
                    });
                    if armed {
                        // The watchdog thread looks every 5 ms.
                        let wait = lease.expires_at_mono_ns.saturating_sub(now)
                            + self.rng.range(0, 5 * MS);
                        let switch_life = self.nodes[i].switch_life;
                        self.after_local(i, wait, Ev::Watchdog(i, switch_life));
                    }
                }
                let next =
                    (sent_local + self.config.lease_ttl_ns / 4).saturating_sub(self.local(i));
                self.after_local(i, next, Ev::RenewTick(i, life));
            }
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
        self.sync_term(i);
        let now = self.instant(i);
        let controller = self.controller();
        let node = &mut self.nodes[i];
        let stale = controller.stale_reports(&mut node.leases, &node.state, now);
        node.ctl.queue = stale.into_iter().map(|c| (c, None)).collect();
        node.ctl.stage = Stage::Phase1;
        self.pump_controller(i);
    }

    pub(super) fn pump_controller(&mut self, i: usize) {
        if self.nodes[i].ctl.writing {
            return;
        }
        loop {
            if let Some((command, failover_of)) = self.nodes[i].ctl.queue.pop_front() {
                self.nodes[i].ctl.writing = true;
                let request = Request {
                    actor: "system/placement".into(),
                    command,
                };
                self.propose(i, request, Waiter::Controller, failover_of);
                return;
            }
            match self.nodes[i].ctl.stage {
                Stage::Phase1 => {
                    self.sync_term(i);
                    let now = self.instant(i);
                    let controller = self.controller();
                    let node = &mut self.nodes[i];
                    let decisions = controller.decide(&mut node.leases, &node.state, now);
                    for (unit, changes) in decisions.failovers {
                        self.stats.failovers += 1;
                        let name = self.nodes[i].name;
                        self.note(|| {
                            format!("{name}: {unit} failed; moving {} profiles", changes.len())
                        });
                        self.nodes[i]
                            .ctl
                            .queue
                            .push_back((Command::Place { changes }, Some(unit)));
                    }
                    if !decisions.others.is_empty() {
                        self.nodes[i].ctl.queue.push_back((
                            Command::Place {
                                changes: decisions.others,
                            },
                            None,
                        ));
                    }
                    self.nodes[i].ctl.stage = Stage::Phase2;
                }
                _ => {
                    self.nodes[i].ctl.stage = Stage::Idle;
                    return;
                }
            }
        }
    }
}
