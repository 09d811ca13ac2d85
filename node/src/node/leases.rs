//! Lease grants and the placement controller loop on the leader (the argument is in
//! `lease.rs`, the pass without I/O in `controller.rs`).

use super::*;

// These locks guard in-memory tables with no awaits inside their critical sections; a panic
// while holding one would be a bug, and the tables stay usable (they are advisory state that a
// new term rebuilds), so a poisoned lock is used as is.
pub(super) fn lock_leases(node: &Node) -> std::sync::MutexGuard<'_, LeaseTable> {
    node.inner
        .leases
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// How often the leader's placement controller looks at the state.
pub const PLACEMENT_TICK_MS: u64 = 20;
/// Most placement changes committed per controller pass.
pub const PLACEMENT_CHANGES_PER_PASS_MAX: usize = 4_096;

impl Node {
    /// Notes that an AppendEntries arrived, before it is handled.
    pub fn note_append_received(&self) {
        *self
            .inner
            .last_append_at
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = std::time::Instant::now();
    }

    /// From when a term of ours that starts now may count every unit as renewed (`lease.rs`).
    pub(super) fn leases_counted_from(&self, now: std::time::Instant) -> std::time::Instant {
        let last_append = *self
            .inner
            .last_append_at
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let lease_of_others = now
            .checked_sub(Duration::from_millis(self.config().raft.election_max_ms))
            .unwrap_or(now);
        last_append.max(lease_of_others)
    }

    pub(super) fn failed_after(&self) -> Duration {
        let lease = &self.config().lease;
        Duration::from_millis(lease.ttl_ms + lease.drift_margin_ms)
    }

    /// Grants a lease renewal (see `lease.rs` for the safety argument).
    pub(super) async fn renew_lease(&self, unit: &str) -> LeaderResult {
        let arrived = std::time::Instant::now();
        let metrics = self.require_leader()?;
        let known_unit = self.view().read(|a| {
            a.state
                .member_by_name(unit)
                .is_some_and(|m| m.role == Role::Unit)
        });
        if !known_unit {
            return Err(ApiError::FailedPrecondition {
                reason: format!("{unit:?} is not a unit of this cluster"),
            });
        }
        let refused = |why: GrantRefused| ApiError::FailedPrecondition {
            reason: format!("unit {unit} {why}"),
        };
        let ticket = {
            let mut table = lock_leases(self);
            // `now`, not `arrived`: count from a moment at which this node leads.
            let now = std::time::Instant::now();
            table.sync_term(metrics.current_term, now, self.leases_counted_from(now));
            table.begin_grant(unit).map_err(refused)?
        };
        let read_index = match self.execute_as_leader(LeaderRequest::ReadIndex).await? {
            LeaderReply::ReadIndex { index } => index,
            other => return Err(unexpected_reply("read index", &other)),
        };
        let mut table = lock_leases(self);
        let now = std::time::Instant::now();
        table.sync_term(
            self.metrics().current_term,
            now,
            self.leases_counted_from(now),
        );
        // Acted on as failed while we confirmed leadership: the read index may predate the
        // moves off this unit, so this grant must not happen.
        table.finish_grant(unit, ticket, arrived).map_err(refused)?;
        Ok(LeaderReply::LeaseGranted { read_index })
    }

    pub(super) fn controller(&self) -> Controller {
        Controller {
            policy: Policy {
                failback_hold_down_ms: self.config().lease.failback_hold_down_ms,
                changes_per_pass_max: PLACEMENT_CHANGES_PER_PASS_MAX,
            },
            failed_after: self.failed_after(),
        }
    }

    /// Runs `f` on the applied state and this leader's lease table, synced to the current term,
    /// in one critical section: a renewal cannot be granted in the middle (`lease.rs`). The
    /// view's lock is taken before the table's, here and everywhere.
    pub(super) fn with_leases<R>(
        &self,
        f: impl FnOnce(&mut LeaseTable, &vnet_model::State, std::time::Instant) -> R,
    ) -> R {
        self.view().read(|a| {
            let mut table = lock_leases(self);
            let now = std::time::Instant::now();
            let term = self.metrics().current_term;
            table.sync_term(term, now, self.leases_counted_from(now));
            f(&mut table, &a.state, now)
        })
    }

    /// The leader's view of unit health, for status and the controller.
    pub fn unit_health(&self) -> Option<(Health, BTreeMap<String, u64>)> {
        let metrics = self.metrics();
        if metrics.current_leader != Some(self.id()) {
            return None;
        }
        let now = std::time::Instant::now();
        let units: Vec<String> = self.view().read(|a| {
            a.state
                .members()
                .filter(|m| m.role == Role::Unit)
                .map(|m| m.name.clone())
                .collect()
        });
        let mut table = lock_leases(self);
        table.sync_term(metrics.current_term, now, self.leases_counted_from(now));
        let health = table.health(units.iter().map(String::as_str), now, self.failed_after());
        let ages = units
            .iter()
            .map(|u| (u.clone(), table.age_ms(u, now)))
            .collect();
        Some((health, ages))
    }

    /// The placement controller: on the leader, every tick, decide and commit placement changes.
    pub async fn run_placement(&self, mut stopping: tokio::sync::watch::Receiver<bool>) {
        let tick = Duration::from_millis(PLACEMENT_TICK_MS);
        let controller = self.controller();
        let actor = "system/placement";
        let mut caught_up_term = 0;
        loop {
            tokio::select! {
                () = tokio::time::sleep(tick) => {}
                _ = stopping.wait_for(|stop| *stop) => return,
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
            // Phase 1. A failed unit's switch has fenced itself by the time the leader judges
            // it failed (see lease.rs), so its last report is stale: record that it presents
            // nothing, so status does not show identities on a unit that cannot present them.
            let stale_reports =
                self.with_leases(|table, state, now| controller.stale_reports(table, state, now));
            for command in stale_reports {
                if let Err(e) = self.write_as_leader(actor, command).await {
                    tracing::debug!(error = %e, "could not clear a failed unit's report");
                }
            }
            // Phase 2: judged afresh, in one critical section with the declarations.
            let decisions =
                self.with_leases(|table, state, now| controller.decide(table, state, now));
            if decisions.is_empty() {
                continue;
            }
            for (unit, changes) in decisions.failovers {
                tracing::warn!(unit = %unit, profiles = changes.len(), "unit failed; failing over its profiles");
                let command = Command::Place { changes };
                match self.write_as_leader(actor, command).await {
                    // Committed and applied: a later grant's read index covers these moves.
                    Ok(_) => lock_leases(self).failover_done(&unit),
                    // Perhaps committed later, perhaps never: the unit stays refused until the
                    // moves are seen applied (`Controller::decide`) or a retry commits.
                    Err(e) => {
                        tracing::warn!(unit = %unit, error = %e, "failover placement not confirmed; will retry")
                    }
                }
            }
            if !decisions.others.is_empty() {
                let count = decisions.others.len();
                let command = Command::Place {
                    changes: decisions.others,
                };
                match self.write_as_leader(actor, command).await {
                    Ok(_) => tracing::info!(changes = count, "placement changes committed"),
                    Err(e) => {
                        tracing::debug!(error = %e, "placement changes not committed; will retry")
                    }
                }
            }
        }
    }

    pub(super) async fn write_as_leader(
        &self,
        actor: &str,
        command: Command,
    ) -> Result<u64, ApiError> {
        let request = Request {
            actor: actor.to_string(),
            command,
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
    /// source reports it no longer presents the profile).
    pub(super) async fn planned_failover(
        &self,
        profile: Option<String>,
        from: Option<String>,
        to: Option<String>,
    ) -> LeaderResult {
        self.require_leader()?;
        let controller = self.controller();
        let changes = self.with_leases(|table, state, now| {
            controller.operator_moves(
                table,
                state,
                now,
                profile.as_deref(),
                from.as_deref(),
                to.as_deref(),
            )
        })?;
        let profiles: Vec<String> = changes.iter().map(|c| c.profile.clone()).collect();
        if changes.is_empty() {
            return Ok(LeaderReply::FailoverStarted {
                revision: self.view().progress().revision,
                profiles,
            });
        }
        let revision = self
            .write_as_leader("system/failover", Command::Place { changes })
            .await?;
        Ok(LeaderReply::FailoverStarted { revision, profiles })
    }
}
