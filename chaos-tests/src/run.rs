//! One chaos run, start to verdict: build the hosts, start the cluster, run the workload while
//! the schedule injects and heals faults, heal everything, demand liveness, read the final
//! state, and hand every recorded datum to the checkers.
//!
//! Control flow lives here; the checkers, the schedule and the history are pure and know
//! nothing of processes or namespaces.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use tokio::sync::watch;
use vnet_launch::Program;

use crate::checks::{data_plane, linearizable, liveness, lost_write, presentation, Verdict};
use crate::cluster::{cabling, node_infos, Cluster, ClusterConfig, NODES};
use crate::fabric::{self, UnitFault};
use crate::history::{monotonic_now_ns, History, ProfileValue};
use crate::netns;
use crate::report::Report;
use crate::schedule::{self, Action, Fault, Named, Step};
use crate::workload::{self, Recorder, WorkloadConfig};

/// Budget for the cluster to serve once a quorum could (vortex: liveness only while owed).
/// Generous against the election timeout (300–600 ms): a restarted node, a leader that must be
/// deposed first, and clients stuck in a timeout toward a node that just went away all fit.
pub const QUORUM_LIVENESS_BUDGET_MS: u64 = 8_000;
/// How long after a unit regains a majority (a heal, a restart) a fence is still not needless:
/// the lease plus its margin (a lease that lapsed before the heal is still lapsed) and half a
/// second for the renewals that follow, stated in the report.
pub const NEEDLESS_FENCE_GRACE_MS: u64 = 1_500;
/// Budget for a write to be accepted after the last heal: every killed node restarts then.
pub const AFTER_HEAL_LIVENESS_BUDGET_MS: u64 = 15_000;
/// Concurrent clients by default.
pub const CLIENTS_DEFAULT: u32 = 4;
/// Profiles the workload spreads over by default. Few enough that operations on one profile
/// overlap often (where linearizability bugs show), enough that the search stays small.
pub const KEYS_DEFAULT: u32 = 8;
/// At most this many profiles: each server needs a host port on both units (30 each).
pub const KEYS_MAX: u32 = 20;
/// How many log lines of each process a failed run prints.
pub const LOG_TAIL_LINES: usize = 25;
/// Budget, from the last heal, for every profile to be presented exactly once, with its
/// identities, on a switch cabled to its server (the switches are polled until then).
pub const PRESENTED_AFTER_HEAL_BUDGET_MS: u64 = 15_000;
/// How often the switches' state is read while waiting for it to settle.
pub const SWITCH_POLL_INTERVAL_MS: u64 = 250;
/// Isolation scenario: how long to wait for a unit to present profiles before isolating it.
pub const PRESENTING_UNIT_DEADLINE_MS: u64 = 20_000;
/// Isolation scenario: the longest the isolation is held while waiting for the peer to take
/// over every profile (and, with fencing, for the isolated switch to clear).
pub const ISOLATION_HOLD_MAX_MS: u64 = 12_000;

/// Isolation scenario: how many presented profiles to wait for before isolating (fewer after
/// half of [`PRESENTING_UNIT_DEADLINE_MS`]), so the takeover covers more than one.
pub const PRESENTED_PROFILES_WANTED: usize = 3;

/// What faults a run injects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    /// The seed's fault schedule for the run's duration.
    Schedule,
    /// One fault, forced: once a unit presents profiles, isolate its host from every other
    /// host until the peer presents all of them (bounded by [`ISOLATION_HOLD_MAX_MS`]), then
    /// heal. Adds verdicts on the isolated unit's fencing and the takeover.
    IsolatePresentingUnit,
}

/// How to run.
#[derive(Debug, Clone)]
pub struct RunConfig {
    pub seed: u64,
    /// How long faults are injected (the run takes longer: start, heal, final reads).
    pub duration: Duration,
    pub clients: u32,
    pub keys: u32,
    pub vnetd: PathBuf,
    pub switchd: PathBuf,
    /// Keep the run directory (data, logs, history) even when every checker passes.
    pub keep: bool,
    /// UNSAFE, TEST ONLY: vnetd without fencing and switches without a watchdog, so the
    /// double-presentation checker can be shown to catch what follows.
    pub unsafe_disable_fencing: bool,
    pub scenario: Scenario,
}

/// `vnetd` next to the running executable: `target/<profile>/vnetd` for the command, and one
/// level up from `target/<profile>/deps/` for an integration test (`vnet_launch`'s one rule).
pub fn default_vnetd_path() -> PathBuf {
    Program::Vnetd.default_path()
}

/// `vnet-switchd`, found the same way as `vnetd`.
pub fn default_switchd_path() -> PathBuf {
    Program::Switchd.default_path()
}

/// What the client host's thread hands back.
#[derive(Debug)]
struct ClientResults {
    final_state: lost_write::FinalState,
    replicas: BTreeMap<String, lost_write::FinalState>,
}

/// Everything a run checks before it starts anything: the flags, root, `ip` and `nft`, and
/// both binaries. An error names what is missing.
pub fn check_config(config: &RunConfig) -> anyhow::Result<()> {
    if config.keys == 0 || config.keys > KEYS_MAX {
        bail!("--keys must be 1..={KEYS_MAX}, not {}", config.keys);
    }
    if config.clients == 0 {
        bail!("--clients must be at least 1");
    }
    netns::preflight()?;
    if !config.vnetd.exists() {
        bail!(
            "vnetd not found at {}: build it with `cargo build --bins` (`cargo test --workspace` \
             builds it too) or pass --vnetd PATH",
            config.vnetd.display()
        );
    }
    if !config.switchd.exists() {
        bail!(
            "vnet-switchd not found at {}: build it with `cargo build --bins` (`cargo test \
             --workspace` builds it too) or pass --switchd PATH",
            config.switchd.display()
        );
    }
    Ok(())
}

/// Runs the whole thing and returns its report. An error means the harness could not run (no
/// root, no namespaces, the cluster never came up): never a pass.
pub async fn run(config: RunConfig) -> anyhow::Result<Report> {
    check_config(&config)?;
    let swept = netns::sweep_leftovers()?;
    if !swept.is_empty() {
        eprintln!("removed namespaces left by earlier runs: {swept:?}");
    }
    let run_dir = tempfile::Builder::new()
        .prefix("vnet-chaos-")
        .tempdir()
        .context("create the run directory")?;
    eprintln!(
        "chaos run: seed {} for {:?}; data and logs under {}",
        config.seed,
        config.duration,
        run_dir.path().display()
    );
    let mut cluster = Cluster::start(
        run_dir.path(),
        &ClusterConfig {
            vnetd: config.vnetd.clone(),
            switchd: config.switchd.clone(),
            keys: config.keys,
            unsafe_disable_fencing: config.unsafe_disable_fencing,
        },
    )?;
    let outcome = drive(&config, &mut cluster, run_dir.path()).await;
    let report = match outcome {
        Ok(report) => report,
        Err(e) => {
            cluster.poll_unexpected_exits();
            print_log_tails(&mut cluster);
            let kept = run_dir.keep();
            cluster.teardown();
            return Err(e.context(format!(
                "chaos run with seed {} failed to complete; data and logs kept in {}",
                config.seed,
                kept.display()
            )));
        }
    };
    if report.passed() && !config.keep {
        cluster.teardown();
        drop(run_dir);
        return Ok(report);
    }
    if !report.passed() {
        print_log_tails(&mut cluster);
    }
    cluster.teardown();
    let kept = run_dir.keep();
    Ok(Report {
        kept_dir: Some(kept),
        ..report
    })
}

fn print_log_tails(cluster: &mut Cluster) {
    for node in &mut cluster.nodes {
        for p in &node.processes {
            eprintln!(
                "--- {} on {}: {}",
                p.name,
                node.spec.name,
                p.log_path.display()
            );
            for line in p.log_tail(LOG_TAIL_LINES) {
                eprintln!("    {line}");
            }
        }
    }
}

async fn drive(
    config: &RunConfig,
    cluster: &mut Cluster,
    run_dir: &Path,
) -> anyhow::Result<Report> {
    let workload_config = Arc::new(WorkloadConfig {
        seed: config.seed,
        clients: config.clients,
        keys: config.keys,
        endpoints: cluster.api_endpoints(),
        node_names: cluster.node_names(),
    });
    let recorder = Arc::new(Recorder::default());
    let (stop_tx, stop_rx) = watch::channel(false);
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel::<anyhow::Result<()>>();
    // Sent only on the way to the verdicts: if the run is abandoned, the clients stop and skip
    // the final reads (which would otherwise retry against a torn-down cluster).
    let (proceed_tx, proceed_rx) = tokio::sync::oneshot::channel::<()>();
    let client_thread = {
        let workload_config = workload_config.clone();
        let recorder = recorder.clone();
        netns::spawn_in_netns(&cluster.client_ns(), "chaos-clients", move || async move {
            let ready = workload::wait_ready(&workload_config).await;
            let failed = ready.is_err();
            let _ = ready_tx.send(ready);
            if failed {
                return Ok(None);
            }
            workload::run_clients(workload_config.clone(), recorder.clone(), stop_rx).await?;
            if proceed_rx.await.is_err() {
                return Ok(None);
            }
            let final_state = workload::final_reads(&workload_config, &recorder).await?;
            let replicas = workload::replica_states(&workload_config, &final_state).await?;
            Ok(Some(ClientResults {
                final_state,
                replicas,
            }))
        })?
    };
    // Whatever happens below, the clients are told to stop so the thread can end.
    let stop_guard = StopOnDrop(stop_tx);

    match ready_rx.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(e.context("the cluster did not come up")),
        Err(_) => {
            let outcome = client_thread.join();
            bail!("the client host's thread ended before the cluster was ready: {outcome:?}");
        }
    }

    // Faults, on the schedule's own clock, or the forced isolation.
    let nodes = node_infos();
    let started = tokio::time::Instant::now();
    let start_ns = monotonic_now_ns();
    let mut executed: Vec<(u64, Action)> = Vec::new();
    let mut fault_log = String::new();
    let mut log_step = |at_ns: u64, action: &Action, executed: &mut Vec<(u64, Action)>| {
        executed.push((at_ns, *action));
        let line = format!(
            "{:>8} ms  {}",
            (at_ns - start_ns) / 1_000_000,
            Named(action, &nodes)
        );
        eprintln!("  {line}");
        fault_log.push_str(&line);
        fault_log.push('\n');
    };
    let steps = match config.scenario {
        Scenario::Schedule => {
            let steps = schedule::generate(config.seed, config.duration.as_millis() as u64, &nodes);
            for step in &steps {
                tokio::time::sleep_until(started + Duration::from_millis(step.at_ms)).await;
                cluster.poll_unexpected_exits();
                cluster
                    .apply(&step.action)
                    .with_context(|| format!("carry out {:?}", step.action))?;
                log_step(monotonic_now_ns(), &step.action, &mut executed);
            }
            steps
        }
        Scenario::IsolatePresentingUnit => {
            let (node, inject_ns, heal_ns) =
                isolate_presenting_unit(config, cluster, &recorder).await?;
            let action = Action::Inject(Fault::Isolate { node });
            log_step(inject_ns, &action, &mut executed);
            log_step(
                heal_ns,
                &Action::Heal(Fault::Isolate { node }),
                &mut executed,
            );
            executed
                .iter()
                .map(|(at, action)| Step {
                    at_ms: (at - start_ns) / 1_000_000,
                    action: *action,
                })
                .collect()
        }
    };
    // The schedule ends healed; this makes sure of it whatever happened to the processes (a
    // crashed vnetd is restarted here, and already recorded as an unexpected exit).
    cluster.poll_unexpected_exits();
    let forced = cluster.heal_everything()?;
    let healed_ns = monotonic_now_ns();
    if !forced.is_empty() {
        eprintln!("  final heal had to: {forced:?}");
    }

    // Liveness after the last heal: wait (bounded) for a write invoked after it to be
    // accepted, then stop the clients.
    let deadline =
        tokio::time::Instant::now() + Duration::from_millis(AFTER_HEAL_LIVENESS_BUDGET_MS);
    while !recorder.accepted_write_since(healed_ns) && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(workload::POLL_INTERVAL_MS)).await;
    }
    let workload_end_ns = monotonic_now_ns();
    drop(stop_guard);
    let _ = proceed_tx.send(());
    let results = tokio::task::spawn_blocking(move || client_thread.join())
        .await
        .context("join the client thread")?
        .map_err(|_| anyhow::anyhow!("the client host's thread panicked"))??
        .context("the clients ended without final reads")?;
    cluster.poll_unexpected_exits();
    let final_profiles: BTreeMap<String, ProfileValue> = results
        .final_state
        .iter()
        .filter_map(|(name, stored)| stored.as_ref().map(|s| (name.clone(), s.value.clone())))
        .collect();
    let (identities_verdict, once_verdict) =
        settled_presentation(cluster, &final_profiles, config.keys, healed_ns).await;
    cluster.poll_unexpected_exits();

    let history = recorder.snapshot();
    write_history(run_dir, &history, &fault_log)?;

    let windows = schedule::quorum_windows(nodes.len(), start_ns, &executed, healed_ns);
    let exits = cluster.unexpected_exits();
    let processes = Verdict::from_violations(
        exits,
        format!(
            "{} vnetd and {} vnet-switchd processes exited only when killed",
            NODES.len(),
            NODES.iter().filter(|n| n.is_unit).count()
        ),
    );
    let journals = cluster.collect_journals();
    let double_presentation = presentation::check_no_double_presentation(&journals);
    let presentations = presentation::read_presentations(&journals).unwrap_or_default();
    let unit_faults = unit_faults(&executed);
    let journal_records: Vec<(String, Vec<fabric_agent::journal::Record>)> = journals
        .iter()
        .map(|j| {
            let records = fabric_agent::journal::read(&j.path).unwrap_or_default();
            (j.switch.clone(), records)
        })
        .collect();
    let unit_records: Vec<data_plane::UnitRecords<'_>> = journal_records
        .iter()
        .filter_map(|(switch, records)| {
            let node = NODES.iter().position(|n| n.name == switch.as_str())?;
            Some(data_plane::UnitRecords {
                unit: switch,
                records,
                windows: data_plane::connected_windows(
                    nodes.len(),
                    node,
                    &executed,
                    start_ns,
                    healed_ns,
                ),
            })
        })
        .collect();
    let grace_ns = NEEDLESS_FENCE_GRACE_MS * 1_000_000;
    let needless_fence = data_plane::check_no_needless_fence(&unit_records, start_ns, grace_ns);
    let (presented_ns, lost_ns) = data_plane::availability(&unit_records, &presentations, grace_ns);
    let (failovers_ms, failovers_without_takeover) =
        fabric::failover_durations(&presentations, &unit_faults);
    let mut scenario_verdicts = Vec::new();
    if config.scenario == Scenario::IsolatePresentingUnit {
        if let Some((at_ns, Action::Inject(Fault::Isolate { node }))) = executed.first() {
            let isolated = NODES[*node].name;
            let peer = peer_of(*node);
            let journal = journals.iter().find(|j| j.switch == isolated);
            let fenced = match journal.map(|j| fabric_agent::journal::read(&j.path)) {
                Some(Ok(records)) => match fabric::fenced_since(&records, *at_ns) {
                    Some(t) => Verdict::Pass {
                        detail: format!(
                            "{isolated}'s switch fenced {} ms after the isolation",
                            (t - at_ns) / 1_000_000
                        ),
                    },
                    None => Verdict::Fail {
                        violations: vec![format!(
                            "{isolated}'s switch journal has no Fenced record after the isolation"
                        )],
                    },
                },
                Some(Err(e)) => Verdict::Fail {
                    violations: vec![e.to_string()],
                },
                None => Verdict::Fail {
                    violations: vec![format!("no switch journal for {isolated}")],
                },
            };
            scenario_verdicts.push(("isolated unit's switch fenced itself", fenced));
            scenario_verdicts.push((
                "isolated unit's profiles taken over",
                fabric::check_takeover(
                    &presentations,
                    isolated,
                    peer,
                    *at_ns,
                    healed_at(&executed),
                    &history,
                ),
            ));
        }
    }
    // Everything is recorded: stop the cluster before the (CPU-bound) checking, so nothing is
    // left running however the checking ends.
    cluster.teardown();
    let mut verdicts = vec![
        ("linearizable", linearizable::check(&history)),
        (
            "revisions follow real time",
            linearizable::check_revision_order(&history),
        ),
        (
            "no lost acknowledged write",
            lost_write::check(&history, &results.final_state),
        ),
        (
            "replicas agree after healing",
            lost_write::check_replicas_agree(&results.final_state, &results.replicas),
        ),
        (
            "liveness while a quorum could serve",
            liveness::check_quorum_windows(
                &windows,
                &history,
                QUORUM_LIVENESS_BUDGET_MS * 1_000_000,
            ),
        ),
        (
            "liveness after the last heal",
            liveness::check_after_heal(
                healed_ns,
                &history,
                AFTER_HEAL_LIVENESS_BUDGET_MS * 1_000_000,
            ),
        ),
        ("no process crashed", processes),
        ("identities preserved", identities_verdict),
        ("every profile presented exactly once", once_verdict),
        ("no double presentation", double_presentation),
        ("no needless fence", needless_fence),
    ];
    verdicts.extend(scenario_verdicts);
    let mut report = Report::new(
        config,
        &steps,
        &history,
        verdicts,
        liveness::longest_gap_ms(&history, start_ns, healed_ns),
        (workload_end_ns - start_ns) / 1_000_000,
    );
    report.failovers_ms = failovers_ms;
    report.data_plane = Some((presented_ns, lost_ns));
    report.failovers_without_takeover = failovers_without_takeover;
    Ok(report)
}

/// When the forced isolation was healed (its second step).
fn healed_at(executed: &[(u64, Action)]) -> u64 {
    executed.get(1).map(|(at, _)| *at).unwrap_or(u64::MAX)
}

/// The other unit.
fn peer_of(node: usize) -> &'static str {
    NODES
        .iter()
        .enumerate()
        .find(|(i, n)| n.is_unit && *i != node)
        .map(|(_, n)| n.name)
        .expect("two units")
}

/// Whole-unit and vnetd kills of units, for the failover measure.
fn unit_faults(executed: &[(u64, Action)]) -> Vec<UnitFault> {
    executed
        .iter()
        .filter_map(|(at, action)| match *action {
            Action::Inject(Fault::KillUnit { node } | Fault::KillVnetd { node })
                if NODES[node].is_unit =>
            {
                Some(UnitFault {
                    at_ns: *at,
                    unit: NODES[node].name.to_string(),
                    peer: peer_of(node).to_string(),
                })
            }
            _ => None,
        })
        .collect()
}

/// Polls both switches until every final profile is presented exactly once with its
/// identities, or [`PRESENTED_AFTER_HEAL_BUDGET_MS`] after the heal (at least one read).
async fn settled_presentation(
    cluster: &Cluster,
    profiles: &BTreeMap<String, ProfileValue>,
    keys: u32,
    healed_ns: u64,
) -> (Verdict, Verdict) {
    let cabling = cabling(keys);
    let deadline_ns = healed_ns + PRESENTED_AFTER_HEAL_BUDGET_MS * 1_000_000;
    loop {
        let states = fabric::read_switch_states(cluster).await;
        let mut presented = Vec::new();
        let mut errors = Vec::new();
        for (unit, state) in &states {
            match state {
                Ok(state) => {
                    presented.extend(presentation::presented_ports(unit, state, &cabling[unit]))
                }
                Err(e) => errors.push(format!("cannot read {unit}'s switch: {e:#}")),
            }
        }
        let verdicts = if errors.is_empty() {
            (
                presentation::check_identities_preserved(profiles, &presented),
                presentation::check_presented_exactly_once(profiles, &presented, &cabling),
            )
        } else {
            (
                Verdict::Fail {
                    violations: errors.clone(),
                },
                Verdict::Fail { violations: errors },
            )
        };
        if (verdicts.0.is_pass() && verdicts.1.is_pass()) || monotonic_now_ns() >= deadline_ns {
            return verdicts;
        }
        tokio::time::sleep(Duration::from_millis(SWITCH_POLL_INTERVAL_MS)).await;
    }
}

/// The forced isolation: waits for a unit to present profiles (several if they come within
/// half the deadline), isolates its host, and holds, bounded, until: with fencing, the peer
/// has taken over every one of them that no write changed and the isolated switch presents
/// nothing; without fencing, an identity is presented by both switches (what the checker must
/// then report). Heals, and returns the unit and the isolation and heal times.
async fn isolate_presenting_unit(
    config: &RunConfig,
    cluster: &mut Cluster,
    recorder: &Recorder,
) -> anyhow::Result<(usize, u64, u64)> {
    let units: Vec<usize> = (0..NODES.len()).filter(|&i| NODES[i].is_unit).collect();
    let begun = tokio::time::Instant::now();
    let deadline = begun + Duration::from_millis(PRESENTING_UNIT_DEADLINE_MS);
    let enough_after = begun + Duration::from_millis(PRESENTING_UNIT_DEADLINE_MS / 2);
    let node = loop {
        let presentations =
            presentation::read_presentations(&cluster.collect_journals()).unwrap_or_default();
        let now = monotonic_now_ns();
        let best = units
            .iter()
            .map(|&u| (u, fabric::presented_at(&presentations, NODES[u].name, now)))
            .max_by_key(|(_, p)| p.len());
        let wanted = if tokio::time::Instant::now() < enough_after {
            PRESENTED_PROFILES_WANTED.min(config.keys as usize)
        } else {
            1
        };
        if let Some((u, _)) = best.filter(|(_, p)| p.len() >= wanted) {
            break u;
        }
        if tokio::time::Instant::now() >= deadline {
            bail!("no unit presented any profile within {PRESENTING_UNIT_DEADLINE_MS} ms");
        }
        tokio::time::sleep(Duration::from_millis(SWITCH_POLL_INTERVAL_MS)).await;
    };
    let fault = Fault::Isolate { node };
    cluster.apply(&Action::Inject(fault))?;
    let inject_ns = monotonic_now_ns();
    let isolated = NODES[node].name;
    let peer = peer_of(node);
    let deadline = tokio::time::Instant::now() + Duration::from_millis(ISOLATION_HOLD_MAX_MS);
    loop {
        let presentations =
            presentation::read_presentations(&cluster.collect_journals()).unwrap_or_default();
        let now = monotonic_now_ns();
        let done = if config.unsafe_disable_fencing {
            fabric_agent::check::no_double_presentation(&presentations).is_err()
        } else {
            let (_, takeover) = fabric::takeover(
                &presentations,
                isolated,
                peer,
                inject_ns,
                now,
                &recorder.snapshot(),
            );
            takeover.violations.is_empty()
                && fabric::presented_at(&presentations, isolated, now).is_empty()
        };
        if done {
            break;
        }
        if tokio::time::Instant::now() >= deadline {
            eprintln!(
                "  isolation held {ISOLATION_HOLD_MAX_MS} ms without reaching its end condition; \
                 healing"
            );
            break;
        }
        tokio::time::sleep(Duration::from_millis(SWITCH_POLL_INTERVAL_MS)).await;
    }
    cluster.apply(&Action::Heal(fault))?;
    Ok((node, inject_ns, monotonic_now_ns()))
}

/// Sends the stop signal when dropped, so an early return cannot leave clients running.
struct StopOnDrop(watch::Sender<bool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        let _ = self.0.send(true);
    }
}

/// The history (one JSON operation per line) and the fault log, for post-mortems.
fn write_history(run_dir: &Path, history: &History, fault_log: &str) -> anyhow::Result<()> {
    let mut lines = String::new();
    let mut sorted: Vec<_> = history.iter().collect();
    sorted.sort_by_key(|op| op.invoked_ns);
    for op in sorted {
        lines.push_str(&serde_json::to_string(op)?);
        lines.push('\n');
    }
    std::fs::write(run_dir.join("history.jsonl"), lines)?;
    std::fs::write(run_dir.join("faults.log"), fault_log)?;
    Ok(())
}
