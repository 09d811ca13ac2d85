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

use crate::checks::{linearizable, liveness, lost_write, presentation, Verdict};
use crate::cluster::{node_infos, Cluster, NODES};
use crate::history::{monotonic_now_ns, History};
use crate::netns;
use crate::report::Report;
use crate::schedule::{self, Action, Named};
use crate::workload::{self, Recorder, WorkloadConfig};

/// Budget for the cluster to serve once a quorum could (vortex: liveness only while owed).
/// Generous against the election timeout (300–600 ms): a restarted node, a leader that must be
/// deposed first, and clients stuck in a timeout toward a node that just went away all fit.
pub const QUORUM_LIVENESS_BUDGET_MS: u64 = 8_000;
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

/// How to run.
#[derive(Debug, Clone)]
pub struct RunConfig {
    pub seed: u64,
    /// How long faults are injected (the run takes longer: start, heal, final reads).
    pub duration: Duration,
    pub clients: u32,
    pub keys: u32,
    pub vnetd: PathBuf,
    /// Keep the run directory (data, logs, history) even when every checker passes.
    pub keep: bool,
}

/// `vnetd` next to the running executable: `target/<profile>/vnetd` for the command, and one
/// level up from `target/<profile>/deps/` for an integration test.
pub fn default_vnetd_path() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    let dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
    let beside = dir.join("vnetd");
    if beside.exists() || !dir.ends_with("deps") {
        return beside;
    }
    dir.parent().map(|d| d.join("vnetd")).unwrap_or(beside)
}

/// What the client host's thread hands back.
#[derive(Debug)]
struct ClientResults {
    final_state: lost_write::FinalState,
    replicas: BTreeMap<String, lost_write::FinalState>,
}

/// Runs the whole thing and returns its report. An error means the harness could not run (no
/// root, no namespaces, the cluster never came up): never a pass.
pub async fn run(config: RunConfig) -> anyhow::Result<Report> {
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
    let mut cluster = Cluster::start(run_dir.path(), &config.vnetd, config.keys)?;
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

    // Faults, on the schedule's own clock.
    let nodes = node_infos();
    let steps = schedule::generate(config.seed, config.duration.as_millis() as u64, &nodes);
    let started = tokio::time::Instant::now();
    let start_ns = monotonic_now_ns();
    let mut executed: Vec<(u64, Action)> = Vec::with_capacity(steps.len());
    let mut fault_log = String::new();
    for step in &steps {
        tokio::time::sleep_until(started + Duration::from_millis(step.at_ms)).await;
        cluster.poll_unexpected_exits();
        cluster
            .apply(&step.action)
            .with_context(|| format!("carry out {:?}", step.action))?;
        let at_ns = monotonic_now_ns();
        executed.push((at_ns, step.action));
        let line = format!(
            "{:>8} ms  {}",
            (at_ns - start_ns) / 1_000_000,
            Named(&step.action, &nodes)
        );
        eprintln!("  {line}");
        fault_log.push_str(&line);
        fault_log.push('\n');
    }
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

    let history = recorder.snapshot();
    write_history(run_dir, &history, &fault_log)?;

    let windows = schedule::quorum_windows(nodes.len(), start_ns, &executed, healed_ns);
    let exits = cluster.unexpected_exits();
    let processes = Verdict::from_violations(
        exits,
        format!("{} vnetd processes exited only when killed", NODES.len()),
    );
    let journals = cluster.collect_journals();
    // Everything is recorded: stop the cluster before the (CPU-bound) checking, so nothing is
    // left running however the checking ends.
    cluster.teardown();
    let not_wired = |what: &str| Verdict::NotWired {
        reason: format!("{what} needs the switches' state; the hosts run no vnet-switchd yet"),
    };
    let verdicts = vec![
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
        ("no vnetd crashed", processes),
        // Wired once units run vnet-switchd: snapshot each switch's GetState into
        // PresentedPort values and pass them with the final profiles and the cabling.
        ("identities preserved", not_wired("identities preserved")),
        (
            "every profile presented exactly once",
            not_wired("presented exactly once"),
        ),
        (
            "no double presentation",
            presentation::check_no_double_presentation(&journals),
        ),
    ];
    Ok(Report::new(
        config,
        &steps,
        &history,
        verdicts,
        liveness::longest_gap_ms(&history, start_ns, healed_ns),
        (workload_end_ns - start_ns) / 1_000_000,
    ))
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
