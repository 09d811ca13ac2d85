//! `chaos-tests`: one seeded chaos run against real vnetd and vnet-switchd processes, printing
//! its report; `chaos-tests sweep` runs a range of seeds one after another.
//! Exit codes: 0 every checker passed, 1 a checker found a violation (or could not decide),
//! 2 the harness could not run (not root, no `ip`/`nft`, the cluster never came up, a bad
//! flag). A sweep exits 1 if any seed failed a checker, else 2 if any seed could not run.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;

use chaos_tests::checks::linearizable;
use chaos_tests::cluster::node_infos;
use chaos_tests::history::History;
use chaos_tests::report::Report;
use chaos_tests::run::{self, RunConfig, Scenario, CLIENTS_DEFAULT, KEYS_DEFAULT};
use chaos_tests::schedule::{self, FaultKind, Named};
use chaos_tests::sweep::{self, parse_seed_range, Reproduce, SeedRange, Tally};

/// Length of a --soak run unless --duration says otherwise.
const SOAK_DURATION_S: u64 = 600;
/// Length of a run without --duration or --soak.
const DURATION_DEFAULT_S: u64 = 60;
/// A sweep stops after this many seeds in a row that the harness could not run: something
/// is wrong with the machine or the binaries, not with one seed.
const SWEEP_ERRORS_IN_A_ROW_MAX: u32 = 3;

#[derive(Debug, Parser)]
#[command(
    name = "chaos-tests",
    about = "Run vnet-ha's chaos tester: real vnetd and vnet-switchd processes on \
             network-namespace hosts, seeded faults, and checkers for linearizability, lost \
             writes, liveness and the switches' presentations. Needs \
             root, `ip` (iproute2) and `nft` (nftables).",
    args_conflicts_with_subcommands = true
)]
struct Args {
    #[command(subcommand)]
    command: Option<Command>,
    /// Seed of the fault schedule and the workload; random when not given. Printed in the
    /// report to reproduce a run.
    #[arg(long)]
    seed: Option<u64>,
    /// How long to inject faults, e.g. `60s`, `10m`, `1500ms`. Default 60s (600s with --soak).
    #[arg(long, value_parser = parse_duration)]
    duration: Option<Duration>,
    /// A long run (10 minutes unless --duration is given).
    #[arg(long)]
    soak: bool,
    #[command(flatten)]
    cluster: ClusterArgs,
    /// Instead of the seed's schedule, one forced fault: once a unit presents profiles, isolate
    /// its host from every other host until the peer has taken them over, then heal.
    #[arg(long)]
    isolate_presenting_unit: bool,
    /// UNSAFE, TEST ONLY: run vnetd with --unsafe-disable-fencing and the switches with
    /// --unsafe-disable-watchdog, so a cut-off unit keeps presenting. Exists only to prove the
    /// double-presentation checker fails when fencing is off; such a run is expected to FAIL.
    #[arg(long)]
    unsafe_disable_fencing: bool,
    /// Print the fault schedule the seed draws for the duration, and run nothing (no root
    /// needed).
    #[arg(long)]
    schedule_only: bool,
    /// Check a recorded history (a kept run's history.jsonl) for linearizability and revision
    /// order, and run nothing else (no root needed).
    #[arg(long, value_name = "HISTORY_JSONL")]
    check_history: Option<std::path::PathBuf>,
}

/// The flags of a run that a sweep passes to each of its seeds.
#[derive(Debug, clap::Args)]
struct ClusterArgs {
    /// Concurrent clients.
    #[arg(long, default_value_t = CLIENTS_DEFAULT)]
    clients: u32,
    /// Profiles the workload spreads over (1..=20).
    #[arg(long, default_value_t = KEYS_DEFAULT)]
    keys: u32,
    /// The vnetd binary. Default: next to this executable (target/debug/vnetd).
    #[arg(long)]
    vnetd: Option<std::path::PathBuf>,
    /// The vnet-switchd binary. Default: next to this executable (target/debug/vnet-switchd).
    #[arg(long)]
    switchd: Option<std::path::PathBuf>,
    /// Keep the run directory (data, logs, history) even when every checker passes.
    #[arg(long)]
    keep: bool,
}

impl ClusterArgs {
    fn config(&self, seed: u64, duration: Duration) -> RunConfig {
        RunConfig {
            seed,
            duration,
            clients: self.clients,
            keys: self.keys,
            vnetd: self.vnetd.clone().unwrap_or_else(run::default_vnetd_path),
            switchd: self
                .switchd
                .clone()
                .unwrap_or_else(run::default_switchd_path),
            keep: self.keep,
            unsafe_disable_fencing: false,
            scenario: Scenario::Schedule,
        }
    }
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Run every seed of a range, one after another, each as `--seed N` would: one line per
    /// seed as it finishes, then a summary per checker. Failing seeds keep their run
    /// directory (with report.txt) and print the command that reproduces them.
    Sweep(SweepArgs),
}

#[derive(Debug, clap::Args)]
struct SweepArgs {
    /// The seeds: `A..B` (B excluded) or `A..=B` (B included), at most 10,000.
    #[arg(long, value_name = "A..B", value_parser = parse_seed_range)]
    seeds: SeedRange,
    /// How long to inject faults in each seed's run, e.g. `60s`, `5m`. Default 60s.
    #[arg(long, value_parser = parse_duration)]
    duration: Option<Duration>,
    #[command(flatten)]
    cluster: ClusterArgs,
}

fn parse_duration(text: &str) -> anyhow::Result<Duration> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .with_context(|| format!("{text:?} has no unit: write e.g. 60s, 10m or 1500ms"))?;
    let (number, unit) = text.split_at(split);
    let n: u64 = number
        .parse()
        .with_context(|| format!("{text:?} does not start with a number"))?;
    Ok(match unit {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n * 60),
        "h" => Duration::from_secs(n * 3600),
        other => bail!("unknown unit {other:?} in {text:?}: use ms, s, m or h"),
    })
}

fn random_seed() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    nanos ^ ((std::process::id() as u64) << 32)
}

fn print_schedule(seed: u64, duration: Duration) {
    let nodes = node_infos();
    let steps = schedule::generate(seed, duration.as_millis() as u64, &nodes);
    println!("schedule for seed {seed} over {duration:?}:");
    let mut counts = std::collections::BTreeMap::new();
    for step in &steps {
        println!("{:>8} ms  {}", step.at_ms, Named(&step.action, &nodes));
        if step.action.is_counted() {
            *counts.entry(step.action.counted_kind()).or_insert(0u64) += 1;
        }
    }
    println!("faults: {}", counts.values().sum::<u64>());
    for kind in FaultKind::ALL {
        println!(
            "  {:<28} {:>5}",
            kind.label(),
            counts.get(&kind).copied().unwrap_or(0)
        );
    }
}

fn check_history(path: &std::path::Path) -> ExitCode {
    let history = match load_history(path) {
        Ok(h) => h,
        Err(e) => {
            eprintln!("cannot read {}: {e:#}", path.display());
            return ExitCode::from(2);
        }
    };
    let verdicts = [
        ("linearizable", linearizable::check(&history)),
        (
            "revisions follow real time",
            linearizable::check_revision_order(&history),
        ),
    ];
    for (name, verdict) in &verdicts {
        println!("{name:<28} {verdict}");
    }
    if verdicts.iter().any(|(_, v)| v.fails_run()) {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

fn load_history(path: &std::path::Path) -> anyhow::Result<History> {
    let text = std::fs::read_to_string(path)?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| serde_json::from_str(l).with_context(|| format!("line {}", i + 1)))
        .collect()
}

/// How a run ended: with a report, with an error of the harness, or cut short by a signal.
enum Ended {
    Report(Box<Report>),
    HarnessError(anyhow::Error),
    Signal(&'static str),
}

/// SIGINT and SIGTERM end the run through the same path as an error, so namespaces and
/// processes are cleaned up by their Drop impls.
async fn run_until_signal(config: RunConfig, terminate: &mut tokio::signal::unix::Signal) -> Ended {
    tokio::select! {
        outcome = run::run(config) => match outcome {
            Ok(report) => Ended::Report(Box::new(report)),
            Err(e) => Ended::HarnessError(e),
        },
        _ = tokio::signal::ctrl_c() => Ended::Signal("interrupted (SIGINT)"),
        _ = terminate.recv() => Ended::Signal("terminated (SIGTERM)"),
    }
}

fn sigterm() -> Result<tokio::signal::unix::Signal, ExitCode> {
    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).map_err(|e| {
        eprintln!("cannot handle SIGTERM: {e}");
        ExitCode::from(2)
    })
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(Command::Sweep(sweep_args)) = args.command {
        return run_sweep(sweep_args).await;
    }
    let duration = args.duration.unwrap_or(Duration::from_secs(if args.soak {
        SOAK_DURATION_S
    } else {
        DURATION_DEFAULT_S
    }));
    let config = RunConfig {
        unsafe_disable_fencing: args.unsafe_disable_fencing,
        scenario: if args.isolate_presenting_unit {
            Scenario::IsolatePresentingUnit
        } else {
            Scenario::Schedule
        },
        ..args
            .cluster
            .config(args.seed.unwrap_or_else(random_seed), duration)
    };
    let seed = config.seed;
    if let Some(path) = &args.check_history {
        return check_history(path);
    }
    if args.schedule_only {
        print_schedule(seed, duration);
        return ExitCode::SUCCESS;
    }
    let mut terminate = match sigterm() {
        Ok(s) => s,
        Err(code) => return code,
    };
    match run_until_signal(config, &mut terminate).await {
        Ended::Report(report) => {
            println!("{report}");
            if report.passed() {
                ExitCode::SUCCESS
            } else {
                eprintln!("chaos run FAILED with seed {seed}");
                ExitCode::from(1)
            }
        }
        Ended::HarnessError(e) => {
            eprintln!("chaos run could not complete (seed {seed}): {e:#}");
            ExitCode::from(2)
        }
        Ended::Signal(why) => {
            eprintln!("chaos run could not complete (seed {seed}): {why}");
            ExitCode::from(2)
        }
    }
}

/// `chaos-tests sweep`: every seed of the range in turn, a line as each finishes, then the
/// summary. Checks root, the tools and the binaries once before the first seed.
async fn run_sweep(args: SweepArgs) -> ExitCode {
    let duration = args
        .duration
        .unwrap_or(Duration::from_secs(DURATION_DEFAULT_S));
    let first = args.cluster.config(args.seeds.first, duration);
    if let Err(e) = run::check_config(&first) {
        eprintln!("chaos-tests sweep cannot run: {e:#}");
        return ExitCode::from(2);
    }
    let mut terminate = match sigterm() {
        Ok(s) => s,
        Err(code) => return code,
    };
    let reproduce = Reproduce {
        exe: std::env::current_exe().unwrap_or_else(|_| "chaos-tests".into()),
        duration,
        clients: args.cluster.clients,
        keys: args.cluster.keys,
        vnetd: args.cluster.vnetd.clone(),
        switchd: args.cluster.switchd.clone(),
    };
    println!(
        "sweep {}: {} seed(s), {} of faults each, vnetd {}, vnet-switchd {}",
        args.seeds,
        args.seeds.len(),
        sweep::format_duration(duration),
        first.vnetd.display(),
        first.switchd.display()
    );
    let mut tally = Tally::new(args.seeds);
    let mut errors_in_a_row = 0;
    for seed in args.seeds.seeds() {
        let started = Instant::now();
        let config = args.cluster.config(seed, duration);
        match run_until_signal(config, &mut terminate).await {
            Ended::Report(report) => {
                errors_in_a_row = 0;
                keep_report(&report);
                println!(
                    "{}",
                    sweep::seed_line(&report, started.elapsed(), &reproduce)
                );
                tally.record_report(&report, &reproduce);
            }
            Ended::HarnessError(e) => {
                errors_in_a_row += 1;
                let error = format!("{e:#}");
                println!("{}", sweep::error_line(seed, &error, started.elapsed()));
                tally.record_error(seed, &reproduce);
                if errors_in_a_row >= SWEEP_ERRORS_IN_A_ROW_MAX {
                    tally.stopped = Some(format!(
                        "the harness could not run {errors_in_a_row} seeds in a row"
                    ));
                    break;
                }
            }
            Ended::Signal(why) => {
                println!("seed {seed} not finished: {why}");
                tally.stopped = Some(why.to_string());
                break;
            }
        }
    }
    println!("{tally}");
    ExitCode::from(tally.exit_code())
}

/// Writes the full report beside the data of a kept run, as report.txt.
fn keep_report(report: &Report) {
    if let Some(dir) = &report.kept_dir {
        let path = dir.join("report.txt");
        if let Err(e) = std::fs::write(&path, format!("{report}\n")) {
            eprintln!("cannot write {}: {e}", path.display());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("60s").unwrap(), Duration::from_secs(60));
        assert_eq!(parse_duration("10m").unwrap(), Duration::from_secs(600));
        assert_eq!(
            parse_duration("1500ms").unwrap(),
            Duration::from_millis(1500)
        );
        assert!(parse_duration("60").is_err());
        assert!(parse_duration("s").is_err());
        assert!(parse_duration("5d").is_err());
    }
}
