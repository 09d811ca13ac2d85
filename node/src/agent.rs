//! The fabric agent of a unit: keeps its lease, and makes its switch present exactly the profiles
//! placed on it — while, and only while, the lease is live.
//!
//! Two loops share the lease:
//! - renewal, every `lease_ttl / 4`: ask every voter, each on its own (a slow or dead voter
//!   delays no other); each grant counts until the renewal's *send time* + `lease_ttl` (never
//!   from the reply's arrival: the grant may have been delayed). The lease lasts while a
//!   majority of grants does (`lease::HeldGrants`), and the switch watchdog is armed with that
//!   absolute deadline whenever it moves;
//! - reconcile, every [`RECONCILE_TICK_MS`]: with a live lease and the applied state at least at
//!   the largest index a grant named, plan desired vs actual and apply a bounded number of
//!   actions; when the lease held has lapsed, or the applied state revokes it, clear the switch.
//!   Then report what the switch presents, if that changed.
//!
//! The safety argument (why a failed unit's identities are gone before a peer programs them) is
//! in `lease.rs`; this loop upholds its unit-side half: never program after `expires_at`, and
//! clear when it passes (the switch's watchdog does the same even if this process is gone).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fabric_agent::{
    plan, Action, FabricDriver, PortMap, PortProgram, RECONCILE_ACTIONS_PER_TICK_MAX,
};
use tracing::Instrument;
use vnet_model::{Command, State};

use crate::lease::{HeldGrants, UnitLease, UnitView};
use crate::node::Node;
use crate::peer::LeaseRenewal;
use crate::shutdown::ShutdownSignal;

/// How often the agent compares desired and actual.
pub const RECONCILE_TICK_MS: u64 = 20;

/// What the unit's switch should present, by host port: every profile placed on `unit`, on the
/// host port its server is cabled to (per the replicated member record).
pub fn desired_ports(state: &State, unit: &str) -> PortMap {
    let Some(member) = state.member_by_name(unit) else {
        return PortMap::new();
    };
    crate::policy::placed_on(state, unit)
        .into_iter()
        .filter_map(|name| {
            let profile = state.profile(name)?;
            let port = *member.cabling.get(&profile.server)?;
            Some((port, PortProgram::from_profile(profile)))
        })
        .collect()
}

/// What one reconcile pass should do, decided without I/O.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reconcile {
    /// The lease held has lapsed (or is revoked) and the switch presents something: clear it
    /// all. A peer may already have been given these identities (the watchdog clears at the
    /// same deadline).
    ClearAll,
    /// No live lease, and nothing to clear: the switch presents nothing, fencing is disabled
    /// for a test, or no lease has been held since this process started (whatever the switch
    /// presents then was armed by an earlier life, and its watchdog clears it at that lease's
    /// end unless a new lease arrives first).
    Lapsed,
    /// A live lease, but the grant covers changes not applied yet (perhaps moves off this
    /// unit): act on nothing older.
    WaitForApply,
    /// A live lease: these actions in order, each only while the lease is still live.
    /// `backlog` when there were more than one pass may take.
    Act { actions: Vec<Action>, backlog: bool },
}

/// Decides a reconcile pass for `unit` at `now_mono_ns`, from the lease held since this process
/// started (`None`: none yet), the index of the applied `state`, and what the switch presents
/// (`actual`).
pub fn reconcile(
    lease: Option<UnitLease>,
    now_mono_ns: u64,
    applied_index: u64,
    state: &State,
    unit: &str,
    actual: &PortMap,
    fencing: bool,
) -> Reconcile {
    // A revocation this unit has applied means its voters grant it nothing more and its
    // profiles are being moved: it stops at once rather than at its lease's end.
    let revoked = state.revoked_at(unit).is_some();
    match lease.filter(|l| l.is_live(now_mono_ns) && !revoked) {
        None if lease.is_some() && fencing && !actual.is_empty() => Reconcile::ClearAll,
        None if revoked && fencing && !actual.is_empty() => Reconcile::ClearAll,
        None => Reconcile::Lapsed,
        Some(lease) if applied_index < lease.min_applied_index => Reconcile::WaitForApply,
        Some(_) => {
            let mut actions = plan(&desired_ports(state, unit), actual);
            let backlog = actions.len() > RECONCILE_ACTIONS_PER_TICK_MAX;
            actions.truncate(RECONCILE_ACTIONS_PER_TICK_MAX);
            Reconcile::Act { actions, backlog }
        }
    }
}

/// The report to write after a pass, if any: when what the switch presents differs from the
/// unit's last report, or when a planned move off the unit waits for a report made on a state
/// that includes it (see `policy::decide`). `acted_on` is the revision of the state the pass
/// acted on (a revision, not a log index: a batched entry carries several revisions, and a
/// move's revision is compared with it): the applied state only moves forward, so no later
/// pass acts on anything older.
pub fn report(
    state: &State,
    unit: &str,
    presented: BTreeMap<String, u64>,
    acted_on: u64,
) -> Option<Command> {
    let move_waiting = state.placements().any(|(_, p)| {
        p.moving.as_ref().is_some_and(|m| m.from == unit)
            && p.revision > state.presented_as_of(unit)
            && p.revision <= acted_on
    });
    let reported = state.presented_by(unit);
    let changed = reported.map_or(!presented.is_empty(), |r| *r != presented);
    (changed || (move_waiting && acted_on > state.presented_as_of(unit))).then(|| {
        Command::ReportPresented {
            unit: unit.to_owned(),
            profiles: presented,
            as_of: acted_on,
        }
    })
}

/// Profile name to revision, for a report.
pub fn presented_of(ports: &PortMap) -> BTreeMap<String, u64> {
    ports
        .values()
        .map(|program| (program.profile.clone(), program.revision))
        .collect()
}

/// The unit's grants, and the latest lease they made (kept even when it lapses, so the
/// reconcile loop can tell "lapsed" from "never held").
#[derive(Debug, Default)]
struct Held {
    grants: HeldGrants,
    lease: Option<UnitLease>,
}

type SharedLease = Arc<Mutex<Held>>;

// The lease cell holds plain values with no invariant spanning calls.
fn lock_held(lease: &SharedLease) -> std::sync::MutexGuard<'_, Held> {
    lease
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn read_lease(lease: &SharedLease) -> Option<UnitLease> {
    lock_held(lease).lease
}

/// Runs the agent until `stopping` turns true.
pub async fn run<D: FabricDriver>(node: Node, driver: D, stopping: ShutdownSignal) {
    let lease: SharedLease = Arc::new(Mutex::new(Held::default()));
    let driver = Arc::new(driver);
    tokio::join!(
        renew_loop(
            node.clone(),
            driver.clone(),
            lease.clone(),
            stopping.clone()
        ),
        reconcile_loop(node, driver, lease, stopping),
    );
}

async fn tick_or_stop(every: Duration, stopping: &mut ShutdownSignal) -> bool {
    tokio::select! {
        () = tokio::time::sleep(every) => true,
        () = stopping.recv() => false,
    }
}

/// Every `ttl / 4`, a renewal to each voter of the membership this node knows, each on its own
/// task; a voter whose previous renewal is still out is skipped this round.
async fn renew_loop<D: FabricDriver>(
    node: Node,
    driver: Arc<D>,
    lease: SharedLease,
    mut stopping: ShutdownSignal,
) {
    let timing = node.config().lease;
    let every = Duration::from_millis(timing.renew_every_ms());
    let in_flight: Arc<Mutex<std::collections::BTreeSet<u64>>> = Arc::default();
    loop {
        let round_start = Instant::now();
        let metrics = node.raft().metrics().borrow().clone();
        let membership = metrics.membership_config.membership();
        let voters: std::collections::BTreeSet<u64> = membership
            .get_joint_config()
            .iter()
            .flatten()
            .copied()
            .collect();
        for voter in voters {
            let fresh = in_flight
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(voter);
            if !fresh {
                continue;
            }
            let addr = membership.get_node(&voter).map(|n| n.peer_addr.clone());
            let (node, driver, lease, in_flight) = (
                node.clone(),
                driver.clone(),
                lease.clone(),
                in_flight.clone(),
            );
            tokio::spawn(async move {
                renew_with(&node, &*driver, &lease, voter, addr).await;
                in_flight
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&voter);
            });
        }
        let next = every.saturating_sub(round_start.elapsed());
        if !tick_or_stop(next, &mut stopping).await {
            return;
        }
    }
}

/// One renewal with one voter (this node itself, or a peer at `addr`), and the lease after it.
async fn renew_with<D: FabricDriver>(
    node: &Node,
    driver: &D,
    lease: &SharedLease,
    voter: u64,
    addr: Option<String>,
) {
    let timing = node.config().lease;
    let ttl = Duration::from_millis(timing.ttl_ms);
    let unit = node.config().name.clone();
    let sent_at_mono_ns = fabric_agent::monotonic_now_ns();
    let answer = if voter == node.id() {
        node.grant_lease(&unit)
            .map_err(|refused| refused.to_string())
    } else {
        let Some(addr) = addr else {
            return;
        };
        // A renewal slower than half the lease is useless: a later one is already due.
        let renewal = LeaseRenewal { unit };
        match node.peers().grant_lease(&addr, &renewal, ttl / 2).await {
            Ok(answer) => answer,
            Err(e) => Err(e.to_string()),
        }
    };
    let grant = match answer {
        Ok(grant) if grant.voter == voter => grant,
        Ok(grant) => {
            tracing::warn!(
                voter,
                answered_as = grant.voter,
                "lease grant from the wrong node"
            );
            return;
        }
        Err(why) => {
            tracing::debug!(voter, %why, "lease renewal not granted");
            return;
        }
    };
    let armed = {
        let mut held = lock_held(lease);
        held.grants.add(&grant, sent_at_mono_ns, ttl);
        held.grants.prune(fabric_agent::monotonic_now_ns());
        let Some(now) = held.grants.lease() else {
            return;
        };
        let grew = held
            .lease
            .is_none_or(|old| now.expires_at_mono_ns > old.expires_at_mono_ns);
        // The lease made of the grants held only moves forward (ends and the index grow).
        held.lease = Some(match held.lease {
            Some(old) => UnitLease {
                expires_at_mono_ns: old.expires_at_mono_ns.max(now.expires_at_mono_ns),
                min_applied_index: old.min_applied_index.max(now.min_applied_index),
            },
            None => now,
        });
        grew.then_some(now.expires_at_mono_ns)
    };
    // The switch keeps the latest deadline it was given, so concurrent arms in any order leave
    // it at the lease's end.
    if let Some(deadline) = armed {
        if let Err(e) = driver.arm_watchdog(deadline).await {
            tracing::warn!(error = %e, "could not arm the switch watchdog");
        }
    }
}

/// The unit's lease and switch as this agent sees them now, for status.
fn unit_view(unit: &str, lease: &SharedLease, actual: Option<&PortMap>) -> UnitView {
    let now = fabric_agent::monotonic_now_ns();
    let held = lock_held(lease);
    UnitView {
        unit: unit.to_owned(),
        voters_granting: held.grants.voters_granting(now) as u32,
        lease_left_ms: held
            .lease
            .filter(|l| l.is_live(now))
            .map(|l| (l.expires_at_mono_ns - now) / 1_000_000),
        switch_presenting: actual
            .map(|ports| presented_of(ports).into_keys().collect())
            .unwrap_or_default(),
        switch_reachable: actual.is_some(),
    }
}

/// The span for presenting `profile` on `port`: the child of the trace of the Raft entry that
/// placed the profile here (a failover's, or a traced client request's), or no span when that
/// entry was not traced.
fn presenting_span(node: &Node, port: u8, profile: &str) -> tracing::Span {
    let trace = node.view().read(|applied| {
        let placement = applied.state.placement(profile)?;
        applied.state.event_at(placement.revision)?.trace.clone()
    });
    match trace {
        Some(trace) => crate::telemetry::span_continuing(
            Some(&trace),
            tracing::info_span!(parent: None, "present", profile = %profile, port),
        ),
        None => tracing::Span::none(),
    }
}

async fn reconcile_loop<D: FabricDriver>(
    node: Node,
    driver: Arc<D>,
    lease: SharedLease,
    mut stopping: ShutdownSignal,
) {
    let unit = node.config().name.clone();
    let fencing = !node.config().unsafe_disable_fencing;
    let actor = format!("vnetd/{unit}");
    let report_timeout = Duration::from_millis(node.config().lease.ttl_ms);
    let mut lapsed_logged = false;
    // When a pass had more actions than it may take, the next pass starts at once.
    let mut backlog = false;
    loop {
        let pause = if backlog {
            Duration::ZERO
        } else {
            Duration::from_millis(RECONCILE_TICK_MS)
        };
        backlog = false;
        if !tick_or_stop(pause, &mut stopping).await {
            return;
        }
        // The state this pass acts on is at least this far along; a report vouches for it.
        let progress = node.view().progress();
        let acted_on = progress.applied_index;
        // What a report from this pass vouches for: the revision of that state.
        let vouched = progress.revision;
        let actual = match driver.state().await {
            Ok(state) => state.ports,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the switch state");
                node.set_unit_view(unit_view(&unit, &lease, None));
                continue;
            }
        };
        node.set_unit_view(unit_view(&unit, &lease, Some(&actual)));
        let held = read_lease(&lease);
        let decided = node.view().read(|a| {
            reconcile(
                held,
                fabric_agent::monotonic_now_ns(),
                acted_on,
                &a.state,
                &unit,
                &actual,
                fencing,
            )
        });
        if !matches!(decided, Reconcile::ClearAll | Reconcile::Lapsed) {
            lapsed_logged = false;
        }
        // The span of the first traced presentation of this pass, which the report joins.
        let mut report_span: Option<tracing::Span> = None;
        let presented = match decided {
            Reconcile::WaitForApply => continue,
            Reconcile::ClearAll => {
                match driver.clear_all().await {
                    Ok(()) => {
                        tracing::warn!(profiles = actual.len(), "lease lapsed: cleared the switch")
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "lease lapsed and the switch could not be cleared")
                    }
                }
                lapsed_logged = true;
                match driver.state().await {
                    Ok(state) => presented_of(&state.ports),
                    Err(_) => continue,
                }
            }
            Reconcile::Lapsed => {
                if !lapsed_logged && held.is_some() {
                    tracing::warn!("lease lapsed");
                }
                lapsed_logged = true;
                presented_of(&actual)
            }
            Reconcile::Act {
                actions,
                backlog: more,
            } => {
                backlog = more;
                let mut changed = false;
                for action in actions {
                    if !held.is_some_and(|l| l.is_live(fabric_agent::monotonic_now_ns())) {
                        break;
                    }
                    changed = true;
                    let result = match &action {
                        Action::Clear { port } => driver.clear(*port).await,
                        Action::Program { port, program } => {
                            let span = presenting_span(&node, *port, &program.profile);
                            if report_span.is_none() && !span.is_none() {
                                report_span = Some(span.clone());
                            }
                            driver.program(*port, program).instrument(span).await
                        }
                    };
                    if let Err(e) = result {
                        tracing::warn!(?action, error = %e, "switch refused an action");
                    }
                }
                if changed {
                    match driver.state().await {
                        Ok(state) => presented_of(&state.ports),
                        Err(_) => continue,
                    }
                } else {
                    presented_of(&actual)
                }
            }
        };
        // Report a change, or vouch anew when a planned move off this unit waits for a report
        // made on a state that includes it.
        let command = node
            .view()
            .read(|a| report(&a.state, &unit, presented, vouched));
        if let Some(command) = command {
            let span = report_span.map_or_else(
                tracing::Span::none,
                |presenting| tracing::info_span!(parent: &presenting, "report_presented"),
            );
            let reported = node
                .write_within(&actor, command, report_timeout)
                .instrument(span)
                .await;
            if let Err(e) = reported {
                tracing::debug!(error = %e, "could not report what the switch presents; will retry");
            }
        }
    }
}
