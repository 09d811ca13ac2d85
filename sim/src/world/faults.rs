//! Faults as they land, the operator's requests, and the liveness checks (bounded failover,
//! settled after healing).

use super::*;

impl World {
    // ---- faults ----

    pub(super) fn fault(&mut self, fault: Fault) {
        if !matches!(fault, Fault::FailoverDue { .. }) {
            let text = format!("fault: {fault:?}");
            self.note(|| text);
        }
        match fault {
            Fault::Kill { node, with_switch } => {
                if self
                    .leader_since
                    .is_some_and(|(leader, _, _)| leader == node)
                {
                    self.leader_since = None;
                }
                if self.nodes[node].up {
                    self.nodes[node].up = false;
                    self.nodes[node].life += 1;
                }
                self.up_since[node] = u64::MAX;
                if with_switch && self.nodes[node].switch.is_some() {
                    self.nodes[node].switch = None;
                    self.nodes[node].switch_life += 1;
                    let unit = self.nodes[node].name;
                    self.presented.switch_lost(unit);
                }
            }
            Fault::Restart { node } => self.restart(node),
            Fault::Pause { node, for_ns } => {
                self.nodes[node].paused_until = self.now + for_ns;
            }
            Fault::Cut { from, to, on } => {
                self.cut[from][to] = on;
                self.link_since[from][to] = if on { u64::MAX } else { self.now };
            }
            Fault::Loss { node, per_mille } => {
                self.loss_per_mille[node] = per_mille;
                self.quiet_since[node] = self.quiet_from(node);
            }
            Fault::Delay { node, extra_ns } => {
                self.delay_ns[node] = extra_ns;
                self.quiet_since[node] = self.quiet_from(node);
            }
            Fault::Calm => {
                if self.load != Load::Light {
                    self.load = Load::Light;
                    self.light_since = self.now;
                }
            }
            Fault::HealNetwork => {
                for from in 0..3 {
                    for to in 0..3 {
                        if self.cut[from][to] {
                            self.link_since[from][to] = self.now;
                        }
                    }
                    if self.loss_per_mille[from] > 0 || self.delay_ns[from] > 0 {
                        self.quiet_since[from] = self.now;
                    }
                }
                self.cut = [[false; 3]; 3];
                self.loss_per_mille = [0; 3];
                self.delay_ns = [0; 3];
            }
            Fault::Drain { unit, draining } => {
                let request = Request {
                    actor: "operator".into(),
                    command: Command::SetDrain {
                        unit: UNITS[unit].into(),
                        draining,
                    },
                    trace: None,
                    on_behalf_of: None,
                };
                self.operator(Call::Write(request));
            }
            Fault::Move { profile, to } => self.operator(Call::OperatorMove {
                profile: profile_name(profile),
                to: UNITS[to].into(),
            }),
            Fault::KillWatched { unit, due_after_ns } => {
                let profiles: Vec<String> = self
                    .presented
                    .profiles_on(UNITS[unit])
                    .into_iter()
                    .collect();
                let since = self.now;
                let draining = UNITS.iter().any(|u| self.oracle.is_draining(u));
                if !profiles.is_empty() && !draining {
                    self.watched.push((unit, profiles.clone(), since));
                }
                self.schedule(
                    self.now + due_after_ns,
                    Fault::FailoverDue {
                        unit,
                        profiles,
                        since,
                    },
                );
                self.fault(Fault::Kill {
                    node: unit,
                    with_switch: true,
                });
            }
            Fault::FailoverDue {
                unit,
                profiles,
                since,
            } => self.check_failover(unit, profiles, since),
        }
    }

    pub(super) fn operator(&mut self, call: Call) {
        let up: Vec<usize> = (0..3).filter(|i| self.nodes[*i].up).collect();
        if up.is_empty() {
            return;
        }
        let through = self.rng.pick(&up);
        let timeout = self.config.request_timeout_ns;
        self.call(through, call, Completion::Operator, timeout);
    }

    /// Invariant 4: what a killed unit presented is presented by its peer within the budget
    /// (unless the peer is draining, when the profiles may rightly stay unplaced). The budget
    /// is vnet-ha's own: it runs from the kill, or from the election when the survivors had no
    /// leader (openraft 0.9 draws one election timeout per process, so two candidates can split
    /// votes for a few rounds; that is Raft's liveness, counted in `Stats::slow_elections`).
    pub(super) fn check_failover(&mut self, unit: usize, profiles: Vec<String>, since: u64) {
        let peer = UNITS[1 - unit];
        // Drained units may rightly leave profiles unplaced; a unit back up may take its own.
        if self.oracle.is_draining(peer)
            || self.oracle.is_draining(UNITS[unit])
            || self.nodes[unit].up
        {
            return;
        }
        let budget = crate::schedule::FAILOVER_BUDGET_NS;
        let start = self.leader_since.map(|(_, _, at)| at.max(since));
        match start {
            Some(start) if self.now >= start + budget => {}
            Some(start) => {
                // Counted once per kill: an election later than the killed leader's lease plus
                // the longest election timeout and two ticks is a slow one.
                let first_look = self.now == since + budget;
                if first_look && start > since + SLOW_ELECTION_NS {
                    self.stats.slow_elections += 1;
                }
                let fault = Fault::FailoverDue {
                    unit,
                    profiles,
                    since,
                };
                return self.schedule(start + budget, fault);
            }
            None if self.now < since + NO_LEADER_NS_MAX => {
                let fault = Fault::FailoverDue {
                    unit,
                    profiles,
                    since,
                };
                return self.schedule(self.now + 100 * MS, fault);
            }
            None => {
                return self.fail(format!(
                    "no leader for {} s after killing {}",
                    NO_LEADER_NS_MAX / 1_000_000_000,
                    UNITS[unit]
                ))
            }
        }
        let on_peer = self.presented.profiles_on(peer);
        let missing: Vec<&String> = profiles.iter().filter(|p| !on_peer.contains(*p)).collect();
        if !missing.is_empty() {
            self.fail(format!(
                "bounded failover: {} after killing {} at {:.3}s, {peer} still does not present {missing:?}",
                Duration::from_nanos(self.now - since).as_millis(),
                UNITS[unit],
                since as f64 / 1e9
            ));
        }
    }

    /// Records how long each watched failover took: from the kill to the moment the peer
    /// presents everything the killed unit presented.
    pub(super) fn time_failovers(&mut self) {
        let now = self.now;
        let presented = &self.presented;
        let stats = &mut self.stats;
        self.watched.retain(|(unit, profiles, since)| {
            let on_peer = presented.profiles_on(UNITS[1 - unit]);
            let done = profiles.iter().all(|p| on_peer.contains(p));
            if done {
                stats.failover_ms.push((now - since) / MS);
            }
            !done
        });
    }

    fn quiet_from(&self, node: usize) -> u64 {
        let quiet = self.loss_per_mille[node] == 0 && self.delay_ns[node] == 0;
        match (quiet, self.quiet_since[node]) {
            (false, _) => u64::MAX,
            (true, u64::MAX) => self.now,
            (true, since) => since,
        }
    }

    /// The control plane must not take the data plane down: a fence (the watchdog's, or the
    /// agent clearing its switch) on unit `i` is needless when, for the whole grace window
    /// before it, the machines were lightly loaded and `i` and another voter were both up,
    /// unpaused and free of loss and extra delay, with the links between them uncut — so `i`
    /// could reach a majority (itself and that voter) all along. The window is the lease plus
    /// its margin plus half a second for the renewals after a heal.
    pub(super) fn check_fence_needed(&mut self, i: usize, how: &str) {
        let window = self.config.lease_ttl_ns + self.config.drift_margin_ns + 500 * MS;
        let Some(since) = self.now.checked_sub(window) else {
            return;
        };
        let steady = |n: usize| {
            self.up_since[n] <= since
                && self.nodes[n].paused_until <= since
                && self.quiet_since[n] <= since
        };
        let connected = steady(i)
            && self.light_since <= since
            && (0..3).any(|p| {
                p != i
                    && steady(p)
                    && self.link_since[i][p] <= since
                    && self.link_since[p][i] <= since
            });
        if connected {
            self.stats.needless_fences += 1;
            let unit = self.nodes[i].name;
            self.fail(format!(
                "needless fence: {unit} {how} although it and a peer voter were up and \
                 connected for the last {} ms",
                window / MS
            ));
        }
    }

    pub(super) fn restart(&mut self, i: usize) {
        self.up_since[i] = self.up_since[i].min(self.now);
        if !self.nodes[i].up {
            let now = self.local(i);
            let jitter = self.rng.range(0, 1_000);
            let node = &mut self.nodes[i];
            let durable = node.raft.durable.clone();
            node.raft = Raft::start(
                i as u64 + 1,
                node.raft_peers(),
                self.config.raft,
                durable,
                now,
                jitter,
            );
            node.up = true;
            node.paused_until = 0;
            node.state = State::default();
            node.applied = 0;
            node.grants = Grants::new(self.base + Duration::from_nanos(now));
            node.ctl = ControllerRun::default();
            node.reads.clear();
            node.writes.clear();
            node.batching.clear();
            node.outstanding.clear();
            node.waiting.clear();
            node.agent = Agent::new();
            // A restarted node re-applies what it knew committed.
            self.apply_committed(i);
            self.after_raft(i);
            self.start_timers(i);
        }
        if self.nodes[i].is_unit && self.nodes[i].switch.is_none() {
            let spec = self.spec_of[i].clone();
            self.nodes[i].switch = Some(Switch::new(spec));
            self.nodes[i].switch_life += 1;
        }
    }

    /// After the last heal: every profile presented exactly once, where the committed state
    /// places it.
    pub fn check_settled(&mut self) {
        let mut problems = Vec::new();
        for p in 0..PROFILES {
            let name = profile_name(p);
            let placed = self.oracle.placement(&name).and_then(|pl| pl.unit.clone());
            let on: Vec<&str> = UNITS
                .iter()
                .copied()
                .filter(|u| self.presented.profiles_on(u).contains(&name))
                .collect();
            match placed {
                Some(unit) if on == [unit.as_str()] => {}
                placed => {
                    problems.push(format!("{name}: placed on {placed:?}, presented by {on:?}"))
                }
            }
        }
        if !problems.is_empty() {
            self.fail(format!(
                "not settled after healing: {}",
                problems.join("; ")
            ));
        }
    }
}
