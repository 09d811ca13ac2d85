//! A unit's agent: renewals, reconcile passes one switch call at a time, reports; and the
//! switch calls through which every presentation is checked.

use super::*;

impl World {
    // ---- the unit's agent ----

    pub(super) fn renew(&mut self, i: usize) {
        let sent_local = self.local(i);
        let unit = self.nodes[i].name.to_string();
        let timeout = self.config.lease_ttl_ns / 2;
        self.call(
            i,
            Call::Renew { unit },
            Completion::Renew { sent_local },
            timeout,
        );
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
                    self.note(|| format!("{unit} switch: fenced, cleared {ports:?}"))
                }
                _ => {}
            }
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
                self.switch_call(i, |s| {
                    s.clear_all(now);
                });
                let presented = self.switch_ports(i).unwrap_or_default();
                self.finish_pass(i, presented_of(&presented), acted_on, false);
            }
            Reconcile::Lapsed => self.finish_pass(i, presented_of(&actual), acted_on, false),
            Reconcile::Act { actions, backlog } => {
                self.nodes[i].agent.stage = AgentStage::Acting {
                    actions: actions.into(),
                    held,
                    acted_on,
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
