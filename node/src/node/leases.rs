//! Leases on this node: the voter's side (grants and reports, rule 1 of `lease.rs`) and the
//! leader's placement controller loop (the pass without I/O is in `controller.rs`).

use super::*;
use crate::controller::Voters;
use crate::lease::{may_grant, Grant, GrantRefused, VoterReport, VoterSets};

/// How often the leader's placement controller looks at the state.
pub const PLACEMENT_TICK_MS: u64 = 20;
/// Most placement changes committed per controller pass.
pub const PLACEMENT_CHANGES_PER_PASS_MAX: usize = 4_096;
/// Most placement changes in one `Place` or `FailOver` command (why: the model's limits).
pub use vnet_model::limits::PLACEMENT_CHANGES_PER_COMMAND_MAX;
/// How long the leader waits for a voter's lease report before asking again. A voter that does
/// not answer counts against a unit's lapse, so a slow one delays a failover, never causes one.
pub const LEASE_REPORT_TIMEOUT_MS: u64 = 150;
/// The oldest report a pass decides on. An older report understates how long a voter has been
/// silent, which can only delay a lapse; a revocation it shows applied stays applied until the
/// failover, so attestations do not go stale.
pub const LEASE_REPORT_FRESH_MS: u64 = 500;

// These locks guard in-memory records with no awaits inside their critical sections; a panic
// while holding one would be a bug, and the records stay usable, so a poisoned lock is used as
// is.
pub(super) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The voter sets of a node's effective membership (two during a joint change).
pub fn voter_sets(metrics: &RaftMetrics<NodeId, PeerNode>) -> VoterSets {
    metrics
        .membership_config
        .membership()
        .get_joint_config()
        .clone()
}

/// A unit being failed over, as the leader follows it from the revocation of its lease.
struct FailoverInFlight {
    since: std::time::Instant,
    /// The failover's trace: its root span, open until the moved profiles are all reported
    /// presented. The revocation and failover writes are its children, and each unit that
    /// presents a moved profile continues it from the failover's Raft entry.
    span: tracing::Span,
    /// The profiles moved, with their new units, once the failover committed.
    moved: Option<Vec<(String, String)>>,
}

type FailoversTimed = BTreeMap<String, FailoverInFlight>;

/// The voters' latest lease reports as this node gathered them while leading.
#[derive(Debug, Default)]
pub struct Reports {
    latest: BTreeMap<u64, (std::time::Instant, VoterReport)>,
    /// Voters asked whose answer has not come back yet.
    asking: BTreeSet<u64>,
}

/// What the leader's controller last learned of the units, for status and operator moves.
#[derive(Debug, Clone, Default)]
pub struct LeaseView {
    /// The term this view was gathered in; a new term starts afresh.
    pub term: u64,
    pub sets: VoterSets,
    pub reports: BTreeMap<u64, VoterReport>,
    pub settled: bool,
    pub healthy_since: BTreeMap<String, std::time::Instant>,
}

impl LeaseView {
    /// Milliseconds since a majority of every voter set last granted `unit` anything: the k-th
    /// shortest silence of each set (k a majority), the longest over the sets.
    pub fn lapse_age_ms(&self, unit: &str) -> Option<u64> {
        self.sets
            .iter()
            .map(|set| {
                let mut silences: Vec<u64> = set
                    .iter()
                    .filter_map(|v| self.reports.get(v)?.units.get(unit))
                    .map(|seen| seen.silent_ms)
                    .collect();
                silences.sort_unstable();
                silences.get(set.len() / 2).copied()
            })
            .collect::<Option<Vec<u64>>>()?
            .into_iter()
            .max()
    }
}

impl Node {
    /// The voter's side of a renewal: refused if this node is not a voter or its applied state
    /// revokes the unit; otherwise recorded, in one critical section with the applied state, so
    /// a revocation applied here is never outrun by a grant (rule 1 of `lease.rs`).
    pub fn grant_lease(&self, unit: &str) -> Result<Grant, GrantRefused> {
        let granted = self.try_grant_lease(unit);
        let metrics = self.metrics_handle();
        match &granted {
            Ok(_) => {
                metrics.lease_grants.inc();
            }
            Err(refused) => {
                let reason = match refused {
                    GrantRefused::NotAUnit { .. } => "not_a_unit",
                    GrantRefused::Revoked { .. } => "revoked",
                    GrantRefused::NotAVoter { .. } => "not_a_voter",
                };
                metrics
                    .lease_refusals
                    .get_or_create(&crate::metrics::RefusalLabels { reason })
                    .inc();
            }
        }
        granted
    }

    fn try_grant_lease(&self, unit: &str) -> Result<Grant, GrantRefused> {
        // One metrics snapshot gives both the membership granted under and the last log index:
        // a grant under a membership appended after a revocation names an index past it.
        let metrics = self.metrics();
        let sets = voter_sets(&metrics);
        if !sets.iter().any(|set| set.contains(&self.id())) {
            return Err(GrantRefused::NotAVoter { voter: self.id() });
        }
        let last_log = metrics.last_log_index.unwrap_or(0);
        self.view().read(|applied| {
            may_grant(&applied.state, unit)?;
            lock(&self.inner.grants).record(unit, std::time::Instant::now());
            let applied_index = applied.last_applied.map_or(0, |id| id.index);
            Ok(Grant {
                voter: self.id(),
                sets,
                min_applied_index: applied_index.max(last_log),
            })
        })
    }

    /// This voter's report of every unit, taken under the applied state's lock (`lease.rs`),
    /// with what its own agent holds if it is a unit.
    pub fn lease_report(&self) -> VoterReport {
        let mut report = self.view().read(|applied| {
            let grants = lock(&self.inner.grants);
            let report = VoterReport::of(
                self.id(),
                &applied.state,
                &grants,
                std::time::Instant::now(),
            );
            drop(grants);
            report
        });
        report.own = lock(&self.inner.unit_view).clone();
        report
    }

    /// Records what this node's agent holds and its switch presents.
    pub fn set_unit_view(&self, view: crate::lease::UnitView) {
        *lock(&self.inner.unit_view) = Some(view);
    }

    /// What this node's agent last recorded, if it is a unit.
    pub fn unit_view(&self) -> Option<crate::lease::UnitView> {
        lock(&self.inner.unit_view).clone()
    }

    /// The controller's latest view, if this node leads.
    pub fn lease_view(&self) -> Option<LeaseView> {
        let metrics = self.metrics();
        if metrics.current_leader != Some(self.id()) {
            return None;
        }
        let view = lock(&self.inner.lease_view);
        (view.term == metrics.current_term).then(|| view.clone())
    }

    pub fn failed_after(&self) -> Duration {
        let lease = &self.config().lease;
        Duration::from_millis(lease.ttl_ms + lease.drift_margin_ms)
    }

    pub(super) fn controller(&self) -> Controller {
        Controller {
            policy: Policy {
                failback_hold_down_ms: self.config().lease.failback_hold_down_ms,
                changes_per_pass_max: PLACEMENT_CHANGES_PER_PASS_MAX,
            },
            failed_after: self.failed_after(),
            changes_per_command: PLACEMENT_CHANGES_PER_COMMAND_MAX,
        }
    }

    /// Takes this voter's own report, and asks each other voter for a fresh one unless a
    /// request to it is still out. Never waits: answers land in `reports` as they come.
    fn poll_reports(&self, metrics: &RaftMetrics<NodeId, PeerNode>, sets: &VoterSets) {
        let now = std::time::Instant::now();
        lock(&self.inner.reports)
            .latest
            .insert(self.id(), (now, self.lease_report()));
        let membership = metrics.membership_config.membership();
        let timeout = Duration::from_millis(LEASE_REPORT_TIMEOUT_MS);
        for voter in sets.iter().flatten().copied().collect::<BTreeSet<_>>() {
            if voter == self.id() || !lock(&self.inner.reports).asking.insert(voter) {
                continue;
            }
            let Some(addr) = membership.get_node(&voter).map(|n| n.peer_addr.clone()) else {
                lock(&self.inner.reports).asking.remove(&voter);
                continue;
            };
            let node = self.clone();
            tokio::spawn(async move {
                let report = node.peers().lease_report(&addr, timeout).await;
                let mut reports = lock(&node.inner.reports);
                reports.asking.remove(&voter);
                match report {
                    // A report must speak for the voter asked.
                    Ok(report) if report.voter == voter => {
                        reports
                            .latest
                            .insert(voter, (std::time::Instant::now(), report));
                    }
                    Ok(report) => {
                        tracing::warn!(
                            voter,
                            answered_as = report.voter,
                            "lease report from the wrong node"
                        )
                    }
                    Err(e) => tracing::debug!(voter, error = %e, "no lease report"),
                }
            });
        }
    }

    /// The latest report of each voter, if no older than [`LEASE_REPORT_FRESH_MS`].
    fn fresh_reports(&self) -> BTreeMap<u64, VoterReport> {
        let fresh = Duration::from_millis(LEASE_REPORT_FRESH_MS);
        lock(&self.inner.reports)
            .latest
            .iter()
            .filter(|(_, (at, _))| at.elapsed() <= fresh)
            .map(|(voter, (_, report))| (*voter, report.clone()))
            .collect()
    }

    /// Whether the effective membership is committed, alone in effect, and recorded as settled;
    /// else, when it has been committed and alone in effect for `ttl + margin` as this node has
    /// seen it, the command that records it as settled. `seen` is this node's memory of when it
    /// first saw the membership so.
    fn membership_settlement(
        &self,
        metrics: &RaftMetrics<NodeId, PeerNode>,
        applied: &raft_store::Applied,
        seen: &mut Option<(u64, std::time::Instant)>,
    ) -> (bool, Option<Command>) {
        let effective = metrics.membership_config.log_id().map_or(0, |id| id.index);
        let committed = applied.membership.log_id().map_or(0, |id| id.index);
        let uniform = metrics
            .membership_config
            .membership()
            .get_joint_config()
            .len()
            == 1;
        if !uniform || effective != committed {
            *seen = None;
            return (false, None);
        }
        if applied.state.settled_membership() >= effective {
            return (true, None);
        }
        match *seen {
            Some((index, since)) if index == effective => {
                let due = since.elapsed() > self.failed_after();
                let command = Command::SettleMembership {
                    log_index: effective,
                };
                (false, due.then_some(command))
            }
            _ => {
                *seen = Some((effective, std::time::Instant::now()));
                (false, None)
            }
        }
    }

    /// The placement controller: on the leader, every tick, gather the voters' lease reports,
    /// decide, and commit the pass's writes in order (`controller.rs`).
    pub async fn run_placement(&self, mut stopping: crate::shutdown::ShutdownSignal) {
        let tick = Duration::from_millis(PLACEMENT_TICK_MS);
        let controller = self.controller();
        let actor = "system/placement";
        let mut caught_up_term = 0;
        let mut membership_seen = None;
        // Per unit being failed over: when its lease was revoked, and once the failover
        // committed, the profiles moved and where to.
        let mut failovers_timed: FailoversTimed = BTreeMap::new();
        loop {
            tokio::select! {
                () = tokio::time::sleep(tick) => {}
                () = stopping.recv() => return,
            }
            let metrics = self.metrics();
            if metrics.current_leader != Some(self.id())
                || self
                    .inner
                    .transferring
                    .load(std::sync::atomic::Ordering::SeqCst)
            {
                continue;
            }
            // Decide only on a state that includes everything committed before this term.
            if caught_up_term != metrics.current_term {
                if self.raft().ensure_linearizable().await.is_err() {
                    continue;
                }
                caught_up_term = metrics.current_term;
            }
            let sets = voter_sets(&metrics);
            self.poll_reports(&metrics, &sets);
            let reports = self.fresh_reports();
            let (settle, writes) = self.view().read(|applied| {
                let (settled, settle) =
                    self.membership_settlement(&metrics, applied, &mut membership_seen);
                let mut view = lock(&self.inner.lease_view);
                if view.term != metrics.current_term {
                    *view = LeaseView {
                        term: metrics.current_term,
                        ..LeaseView::default()
                    };
                }
                view.sets = sets;
                view.reports = reports;
                view.settled = settled;
                let LeaseView {
                    sets,
                    reports,
                    healthy_since,
                    ..
                } = &mut *view;
                let voters = Voters {
                    sets,
                    reports,
                    settled,
                };
                let now = std::time::Instant::now();
                let writes = controller.decide(&voters, &applied.state, healthy_since, now);
                (settle, writes)
            });
            if let Some(command) = settle {
                if let Err(e) = self.write_as_leader(actor, command).await {
                    tracing::debug!(error = %e, "could not record the membership as settled");
                }
            }
            for unit in &writes.revocations {
                tracing::warn!(unit = %unit, "a majority of voters saw the unit's lease lapse; revoking it");
            }
            for unit in writes.failed_over_units() {
                let profiles: usize = writes
                    .failovers
                    .iter()
                    .filter(|(u, _, _)| u == unit)
                    .map(|(_, _, changes)| changes.len())
                    .sum();
                tracing::warn!(unit = %unit, profiles, "a majority of voters attested the lapse; failing over");
            }
            for command in writes.into_commands() {
                let what = match &command {
                    Command::RevokeLease { unit } => Some((unit.clone(), None)),
                    Command::FailOver { unit, changes, .. } => Some((
                        unit.clone(),
                        Some(
                            changes
                                .iter()
                                .filter_map(|c| Some((c.profile.clone(), c.unit.clone()?)))
                                .collect::<Vec<_>>(),
                        ),
                    )),
                    _ => None,
                };
                // A failover is one trace, rooted at the revocation (or at the failover
                // itself when this leader did not see the revocation).
                let failover_span = what.as_ref().map(|(unit, _)| {
                    failovers_timed
                        .get(unit)
                        .map(|f| f.span.clone())
                        .filter(|_| matches!(command, Command::FailOver { .. }))
                        .unwrap_or_else(
                            || tracing::info_span!(parent: None, "failover", unit = %unit),
                        )
                });
                let step = match (&failover_span, &command) {
                    (Some(root), Command::RevokeLease { .. }) => {
                        tracing::info_span!(parent: root, "revoke_lease")
                    }
                    (Some(root), _) => tracing::info_span!(parent: root, "commit_failover"),
                    (None, _) => tracing::Span::none(),
                };
                match self.write_as_leader(actor, command).instrument(step).await {
                    Ok(_) => match (what, failover_span) {
                        (Some((unit, None)), Some(span)) => {
                            self.metrics_handle().lease_revocations.inc();
                            let since = std::time::Instant::now();
                            let moved = None;
                            failovers_timed.insert(unit, FailoverInFlight { since, span, moved });
                        }
                        (Some((unit, Some(moved))), _) => {
                            // A failover in parts counts once, and is timed until every part's
                            // profiles are presented.
                            match failovers_timed.get_mut(&unit) {
                                Some(FailoverInFlight {
                                    moved: Some(done), ..
                                }) => done.extend(moved),
                                Some(failover) => {
                                    self.metrics_handle().failovers.inc();
                                    failover.moved = Some(moved);
                                }
                                None => {
                                    self.metrics_handle().failovers.inc();
                                }
                            }
                        }
                        _ => {}
                    },
                    // Decided afresh next pass; a write that commits late is refused or
                    // harmless (a stale failover's epoch no longer matches).
                    Err(e) => {
                        tracing::debug!(error = %e, "placement write not committed; will retry")
                    }
                }
            }
            self.observe_failovers(&mut failovers_timed);
        }
    }

    /// Observes the duration of each failover whose moved profiles are all reported presented
    /// by their new units; forgets those older than a minute (a unit that came back first).
    fn observe_failovers(&self, timed: &mut FailoversTimed) {
        self.view().read(|applied| {
            timed.retain(|_, FailoverInFlight { since, moved, .. }| {
                let Some(moved) = moved else {
                    return since.elapsed() < Duration::from_secs(60);
                };
                let done = moved.iter().all(|(profile, unit)| {
                    applied
                        .state
                        .presented_by(unit)
                        .is_some_and(|p| p.contains_key(profile))
                });
                if done {
                    self.metrics_handle()
                        .failover_duration
                        .observe(since.elapsed().as_secs_f64());
                }
                !done && since.elapsed() < Duration::from_secs(60)
            });
        });
    }

    pub(super) async fn write_as_leader(
        &self,
        actor: &str,
        command: Command,
    ) -> Result<u64, ApiError> {
        self.write_as_leader_by(
            crate::peer::By {
                actor: actor.to_string(),
                on_behalf_of: None,
            },
            command,
        )
        .await
    }

    /// [`Node::write_as_leader`] for a request made by `by`.
    pub(super) async fn write_as_leader_by(
        &self,
        by: crate::peer::By,
        command: Command,
    ) -> Result<u64, ApiError> {
        let request = Request {
            actor: by.actor,
            command,
            trace: None,
            on_behalf_of: by.on_behalf_of,
        };
        match self
            .execute_as_leader(LeaderRequest::Write(request))
            .await?
        {
            LeaderReply::Applied { revision, .. } => Ok(revision),
            other => Err(unexpected_reply("write", &other)),
        }
    }

    /// An operator's planned move (break before make: the controller completes it once the
    /// source reports it no longer presents the profile, or by the source's failover).
    pub(super) async fn planned_failover(
        &self,
        profile: Option<String>,
        from: Option<String>,
        to: Option<String>,
        by: Option<crate::peer::By>,
    ) -> LeaderResult {
        self.require_leader()?;
        let controller = self.controller();
        let Some(mut view) = self.lease_view() else {
            return Err(ApiError::Unavailable {
                reason: "this leader has not yet heard from the voters about the units' leases; retry shortly".into(),
            });
        };
        let changes = self.view().read(|applied| {
            let voters = Voters {
                sets: &view.sets,
                reports: &view.reports,
                settled: view.settled,
            };
            let mut healthy_since = std::mem::take(&mut view.healthy_since);
            controller.operator_moves(
                &voters,
                &applied.state,
                &mut healthy_since,
                std::time::Instant::now(),
                crate::controller::OperatorMove {
                    profile: profile.as_deref(),
                    from: from.as_deref(),
                    to: to.as_deref(),
                },
            )
        })?;
        let profiles: Vec<String> = changes.iter().map(|c| c.profile.clone()).collect();
        if changes.is_empty() {
            return Ok(LeaderReply::FailoverStarted {
                revision: self.view().progress().revision,
                profiles,
            });
        }
        // The move is the operator's: its event names them (a request from a node older than
        // roles names no one, and is written as the system's, as it was).
        let by = by.unwrap_or_else(|| crate::peer::By {
            actor: "system/failover".to_string(),
            on_behalf_of: None,
        });
        // In parts, as the controller writes them: each part is a valid move on its own, so
        // a part that fails leaves the earlier ones started and the operator may ask again
        // (profiles already moving are not moved twice).
        let mut revision = 0;
        for part in changes.chunks(controller.changes_per_command.max(1)) {
            let changes = part.to_vec();
            revision = self
                .write_as_leader_by(by.clone(), Command::Place { changes })
                .await?;
        }
        Ok(LeaderReply::FailoverStarted { revision, profiles })
    }
}
