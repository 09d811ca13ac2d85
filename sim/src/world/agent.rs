//! A unit's agent: renewals, reconcile passes one switch call at a time, reports; and the
//! switch calls through which every presentation is checked.

use super::*;

impl World {
    // ---- the unit's agent ----

    /// `agent::renew_loop`: a renewal to every voter whose last one is not still out, each
    /// answered on its own; the next round a quarter of the lease later.
    pub(super) fn renew(&mut self, i: usize) {
        let sent_local = self.local(i);
        let life = self.nodes[i].life;
        let unit = self.nodes[i].name.to_string();
        let timeout = self.config.lease_ttl_ns / 2;
        for voter in 0..3 {
            let out = self.nodes[i].agent.asks.values().any(|(v, _)| *v == voter);
            if out {
                continue;
            }
            let ask_id = self.id();
            self.nodes[i].agent.asks.insert(ask_id, (voter, sent_local));
            if voter == i {
                let grant = self.grant_here(i, &unit);
                self.granted(i, ask_id, grant);
            } else {
                let wire = Wire::GrantAsk {
                    unit: unit.clone(),
                    ask_id,
                };
                self.send(i, voter, wire);
                self.after_local(i, timeout, Ev::GrantTimeout(i, life, ask_id));
            }
        }
        let every = self.config.lease_ttl_ns / 4;
        self.after_local(i, every, Ev::RenewTick(i, life));
    }

    /// `agent::renew_with` after a voter answered: the grant counts from the send time, and the
    /// watchdog is armed with the lease's end whenever it moves.
    pub(super) fn granted(&mut self, i: usize, ask_id: u64, grant: Option<Grant>) {
        let Some((voter, sent_local)) = self.nodes[i].agent.asks.remove(&ask_id) else {
            return; // timed out already, or from an earlier life
        };
        let Some(grant) = grant.filter(|g| g.voter == voter as u64 + 1) else {
            return;
        };
        let ttl = Duration::from_nanos(self.config.lease_ttl_ns);
        let now = self.local(i);
        let agent = &mut self.nodes[i].agent;
        agent.held.add(&grant, sent_local, ttl);
        agent.held.prune(now);
        let Some(lease) = agent.held.lease() else {
            return;
        };
        let grew = agent
            .lease
            .is_none_or(|old| lease.expires_at_mono_ns > old.expires_at_mono_ns);
        agent.lease = Some(match agent.lease {
            Some(old) => UnitLease {
                expires_at_mono_ns: old.expires_at_mono_ns.max(lease.expires_at_mono_ns),
                min_applied_index: old.min_applied_index.max(lease.min_applied_index),
            },
            None => lease,
        });
        if !grew {
            return;
        }
        let armed = self.switch_call(i, |s| {
            s.arm_watchdog(now, lease.expires_at_mono_ns);
        });
        if armed {
            // The watchdog thread looks every 5 ms.
            let wait = lease.expires_at_mono_ns.saturating_sub(now) + self.rng.range(0, 5 * MS);
            let switch_life = self.nodes[i].switch_life;
            self.after_local(i, wait, Ev::Watchdog(i, switch_life));
        }
    }

    /// Calls the unit's switch (if its process is up) and checks what it did.
    pub(super) fn switch_call(&mut self, i: usize, f: impl FnOnce(&mut Switch)) -> bool {
        let Some(switch) = self.nodes[i].switch.as_mut() else {
            return false;
        };
        f(switch);
        let events = switch.take_events();
        if events.is_empty() {
            return true;
        }
        let unit = self.nodes[i].name;
        let mut needless_check = false;
        for event in &events {
            match event {
                fabric_agent::journal::Event::Programmed {
                    port,
                    profile,
                    revision,
                    ..
                } => {
                    self.stats.programs += 1;
                    self.note(|| {
                        format!("{unit} switch: programmed {profile}@{revision} on port {port}")
                    });
                }
                fabric_agent::journal::Event::Cleared { port, .. } => {
                    self.note(|| format!("{unit} switch: cleared port {port}"))
                }
                fabric_agent::journal::Event::Fenced { ports, .. } => {
                    self.stats.fences += 1;
                    // A fence that clears nothing takes nothing down.
                    needless_check |= !ports.is_empty();
                    self.note(|| format!("{unit} switch: fenced, cleared {ports:?}"))
                }
                _ => {}
            }
        }
        if needless_check {
            self.check_fence_needed(i, "was fenced by its watchdog");
        }
        if let Err(what) = self.presented.apply(unit, &events) {
            self.fail(what);
        }
        self.time_failovers();
        if let Err(what) = drain_means_empty(&self.oracle, &self.presented) {
            self.fail(what);
        }
        true
    }

    pub(super) fn switch_ports(&mut self, i: usize) -> Option<PortMap> {
        let now = self.local(i);
        let mut view = None;
        self.switch_call(i, |s| view = Some(s.state(now)));
        let view = view?;
        Some(
            view.ports
                .into_iter()
                .filter_map(|p| p.held.map(|h| (p.port, h.program)))
                .collect(),
        )
    }

    pub(super) fn reconcile_tick(&mut self, i: usize) {
        if !matches!(self.nodes[i].agent.stage, AgentStage::Idle) {
            return;
        }
        let life = self.nodes[i].life;
        let acted_on = self.nodes[i].applied;
        // What a report from this pass vouches for: the revision of the state it acts on.
        let vouched = self.nodes[i].state.revision();
        let Some(actual) = self.switch_ports(i) else {
            let every = self.config.reconcile_every_ns;
            return self.after_local(i, every, Ev::ReconcileTick(i, life));
        };
        let held = self.nodes[i].agent.lease;
        let now = self.local(i);
        let node = &self.nodes[i];
        let fencing = self.config.fencing;
        let decided = reconcile(
            held,
            now,
            acted_on,
            &node.state,
            node.name,
            &actual,
            fencing,
        );
        match decided {
            Reconcile::WaitForApply => {
                let every = self.config.reconcile_every_ns;
                self.after_local(i, every, Ev::ReconcileTick(i, life));
            }
            Reconcile::ClearAll => {
                self.check_fence_needed(i, "cleared its switch");
                self.switch_call(i, |s| {
                    s.clear_all(now);
                });
                let presented = self.switch_ports(i).unwrap_or_default();
                self.finish_pass(i, presented_of(&presented), vouched, false);
            }
            Reconcile::Lapsed => self.finish_pass(i, presented_of(&actual), vouched, false),
            Reconcile::Act { actions, backlog } => {
                self.nodes[i].agent.stage = AgentStage::Acting {
                    actions: actions.into(),
                    held,
                    acted_on: vouched,
                    actual,
                    changed: false,
                    backlog,
                };
                let step = self.rng.range(MS / 2, 2 * MS);
                self.after_local(i, step, Ev::AgentAction(i, life));
            }
        }
    }

    pub(super) fn agent_action(&mut self, i: usize) {
        let now = self.local(i);
        let life = self.nodes[i].life;
        let AgentStage::Acting {
            actions,
            held,
            changed,
            ..
        } = &mut self.nodes[i].agent.stage
        else {
            return;
        };
        let live = held.is_some_and(|l| l.is_live(now));
        let next = if live { actions.pop_front() } else { None };
        let Some(action) = next else {
            let stage = std::mem::replace(&mut self.nodes[i].agent.stage, AgentStage::Idle);
            if let AgentStage::Acting {
                acted_on,
                actual,
                changed,
                backlog,
                ..
            } = stage
            {
                let presented = if changed {
                    self.switch_ports(i).unwrap_or_default()
                } else {
                    actual
                };
                self.finish_pass(i, presented_of(&presented), acted_on, backlog);
            }
            return;
        };
        *changed = true;
        self.switch_call(i, |s| match action {
            Action::Clear { port } => {
                let _ = s.clear(now, port as u32);
            }
            Action::Program { port, program } => {
                let _ = s.program(now, port as u32, program);
            }
        });
        let step = self.rng.range(MS / 2, 2 * MS);
        self.after_local(i, step, Ev::AgentAction(i, life));
    }

    pub(super) fn finish_pass(
        &mut self,
        i: usize,
        presented: BTreeMap<String, u64>,
        acted_on: u64,
        backlog: bool,
    ) {
        let life = self.nodes[i].life;
        let node = &self.nodes[i];
        match report(&node.state, node.name, presented, acted_on) {
            Some(command) => {
                self.nodes[i].agent.stage = AgentStage::Reporting;
                let request = Request {
                    actor: format!("vnetd/{}", self.nodes[i].name),
                    command,
                    trace: None,
                    on_behalf_of: None,
                };
                let timeout = self.config.lease_ttl_ns;
                self.call(
                    i,
                    Call::Write(request),
                    Completion::Report { backlog },
                    timeout,
                );
            }
            None => {
                let pause = if backlog {
                    0
                } else {
                    self.config.reconcile_every_ns
                };
                self.after_local(i, pause, Ev::ReconcileTick(i, life));
            }
        }
    }
}
