//! `chaos-tests`: one seeded chaos run against real vnetd and vnet-switchd processes, printing
//! its report.
//! Exit codes: 0 every checker passed, 1 a checker found a violation (or could not decide),
//! 2 the harness could not run (not root, no `ip`/`nft`, the cluster never came up).

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Parser;

use chaos_tests::checks::linearizable;
use chaos_tests::cluster::node_infos;
use chaos_tests::history::History;
use chaos_tests::run::{self, RunConfig, Scenario, CLIENTS_DEFAULT, KEYS_DEFAULT};
use chaos_tests::schedule::{self, FaultKind, Named};

/// Length of a --soak run unless --duration says otherwise.
const SOAK_DURATION_S: u64 = 600;
/// Length of a run without --duration or --soak.
const DURATION_DEFAULT_S: u64 = 60;

#[derive(Debug, Parser)]
#[command(
    name = "chaos-tests",
    about = "Run vnet-ha's chaos tester: real vnetd and vnet-switchd processes on \
             network-namespace hosts, seeded faults, and checkers for linearizability, lost \
             writes, liveness and the switches' presentations. Needs \
             root, `ip` (iproute2) and `nft` (nftables)."
)]
struct Args {
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
    /// Instead of the seed's schedule, one forced fault: once a unit presents profiles, isolate
    /// its host from every other host until the peer has taken them over, then heal.
    #[arg(long)]
    isolate_presenting_unit: bool,
    /// UNSAFE, TEST ONLY: run vnetd with --unsafe-disable-fencing and the switches with
    /// --unsafe-disable-watchdog, so a cut-off unit keeps presenting. Exists only to prove the
    /// double-presentation checker fails when fencing is off; such a run is expected to FAIL.
    #[arg(long)]
    unsafe_disable_fencing: bool,
    /// Keep the run directory (data, logs, history) even when every checker passes.
    #[arg(long)]
    keep: bool,
    /// Print the fault schedule the seed draws for the duration, and run nothing (no root
    /// needed).
    #[arg(long)]
    schedule_only: bool,
    /// Check a recorded history (a kept run's history.jsonl) for linearizability and revision
    /// order, and run nothing else (no root needed).
    #[arg(long, value_name = "HISTORY_JSONL")]
    check_history: Option<std::path::PathBuf>,
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

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> ExitCode {
    let args = Args::parse();
    let duration = args.duration.unwrap_or(Duration::from_secs(if args.soak {
        SOAK_DURATION_S
    } else {
        DURATION_DEFAULT_S
    }));
    let config = RunConfig {
        seed: args.seed.unwrap_or_else(random_seed),
        duration,
        clients: args.clients,
        keys: args.keys,
        vnetd: args.vnetd.unwrap_or_else(run::default_vnetd_path),
        switchd: args.switchd.unwrap_or_else(run::default_switchd_path),
        keep: args.keep,
        unsafe_disable_fencing: args.unsafe_disable_fencing,
        scenario: if args.isolate_presenting_unit {
            Scenario::IsolatePresentingUnit
        } else {
            Scenario::Schedule
        },
    };
    let seed = config.seed;
    if let Some(path) = &args.check_history {
        return check_history(path);
    }
    if args.schedule_only {
        print_schedule(seed, duration);
        return ExitCode::SUCCESS;
    }
    // SIGINT and SIGTERM end the run through the same path as an error, so namespaces and
    // processes are cleaned up by their Drop impls.
    let mut terminate =
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("cannot handle SIGTERM: {e}");
                return ExitCode::from(2);
            }
        };
    let outcome = tokio::select! {
        outcome = run::run(config) => outcome,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted (SIGINT)")),
        _ = terminate.recv() => Err(anyhow::anyhow!("terminated (SIGTERM)")),
    };
    match outcome {
        Ok(report) => {
            println!("{report}");
            if report.passed() {
                ExitCode::SUCCESS
            } else {
                eprintln!("chaos run FAILED with seed {seed}");
                ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("chaos run could not complete (seed {seed}): {e:#}");
            ExitCode::from(2)
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
