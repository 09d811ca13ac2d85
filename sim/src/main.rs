//! `vnet-sim`: run the failover simulator over a range of seeds, or replay one with its trace.
//! Exit codes: 0 every seed held every invariant, 1 some seed broke one, 2 usage error.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;
use vnet_sim::{run, sweep, Options};

/// Seeds one invocation may run at most.
const SEEDS_MAX: u64 = 10_000_000;

#[derive(Debug, Parser)]
#[command(
    name = "vnet-sim",
    about = "Deterministic simulator of vnet-ha's failover protocol: the real lease, controller, \
             agent and switch code on simulated time, network and Raft. Each seed is one run \
             with its own faults; a failing seed prints its violation and the command that \
             replays it."
)]
struct Args {
    /// Seeds to run: A..B (B excluded) or A..=B.
    #[arg(long, default_value = "0..1000", value_parser = parse_seeds)]
    seeds: std::ops::Range<u64>,
    /// Replay one seed and print its whole trace (overrides --seeds).
    #[arg(long)]
    seed: Option<u64>,
    /// Simulated seconds of faults per run.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..=3600))]
    faults_s: u64,
    /// Threads to run seeds on.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..=64))]
    threads: u64,
    /// TEST ONLY: run with leases that hang on the leader alone (only the leader grants), to
    /// see the needless fences that quorum-held leases prevent.
    #[arg(long)]
    unsafe_leader_held_leases: bool,
}

fn parse_seeds(text: &str) -> Result<std::ops::Range<u64>, String> {
    let bad = || format!("{text:?} is not a seed range: write A..B or A..=B, e.g. 0..1000");
    let (low, high, inclusive) = if let Some((a, b)) = text.split_once("..=") {
        (a, b, true)
    } else if let Some((a, b)) = text.split_once("..") {
        (a, b, false)
    } else {
        return Err(bad());
    };
    let low: u64 = low.trim().parse().map_err(|_| bad())?;
    let high: u64 = high.trim().parse().map_err(|_| bad())?;
    let high = if inclusive {
        high.checked_add(1).ok_or_else(bad)?
    } else {
        high
    };
    if high <= low {
        return Err(format!("{text:?} holds no seed"));
    }
    if high - low > SEEDS_MAX {
        return Err(format!(
            "{text:?} holds {} seeds; at most {SEEDS_MAX} per invocation",
            high - low
        ));
    }
    Ok(low..high)
}

fn percentile(sorted: &[u64], p: usize) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() - 1) * p).div_ceil(100)]
}

fn main() -> ExitCode {
    let args = Args::parse();
    let mut options = Options {
        faults: Duration::from_secs(args.faults_s),
        ..Options::default()
    };
    options.config.leader_held_leases = args.unsafe_leader_held_leases;
    if let Some(seed) = args.seed {
        let outcome = run(
            seed,
            &Options {
                trace_all: true,
                ..options
            },
        );
        for line in &outcome.trace {
            println!("{line}");
        }
        println!("stats: {:?}", outcome.stats);
        return match outcome.violation {
            Some(what) => {
                println!("seed {seed}: FAIL: {what}");
                ExitCode::from(1)
            }
            None => {
                println!("seed {seed}: PASS");
                ExitCode::SUCCESS
            }
        };
    }
    let started = Instant::now();
    let seeds = args.seeds.clone();
    let results = sweep(seeds.clone(), args.threads as usize, &options);
    let elapsed = started.elapsed();
    let mut failed = 0;
    let mut failover_ms = Vec::new();
    let (mut grants, mut failovers, mut fences, mut events, mut slow) = (0, 0, 0, 0, 0);
    for (seed, outcome) in &results {
        failover_ms.extend(&outcome.stats.failover_ms);
        grants += outcome.stats.grants;
        failovers += outcome.stats.failovers;
        fences += outcome.stats.fences;
        events += outcome.stats.events;
        slow += outcome.stats.slow_elections;
        if let Some(what) = &outcome.violation {
            failed += 1;
            println!("seed {seed}: FAIL: {what}");
            for line in outcome.trace.iter().rev().take(25).rev() {
                println!("    {line}");
            }
            println!(
                "    replay: cargo run --release -p vnet-sim -- --seed {seed} --faults-s {}",
                args.faults_s
            );
        }
    }
    failover_ms.sort_unstable();
    let per_minute = results.len() as f64 / elapsed.as_secs_f64().max(1e-9) * 60.0;
    println!(
        "{} seeds ({}..{}), {} simulated s of faults each: {} passed, {} failed, in {:.1} s \
         ({:.0} seeds/min on {} threads, {} events)",
        results.len(),
        seeds.start,
        seeds.end,
        args.faults_s,
        results.len() - failed,
        failed,
        elapsed.as_secs_f64(),
        per_minute,
        args.threads,
        events
    );
    println!(
        "lease grants {grants}, failovers {failovers}, switch fences {fences}; clean-kill \
         failovers {}: p50 {} ms, p99 {} ms, max {} ms ({slow} counted from a slow election)",
        failover_ms.len(),
        percentile(&failover_ms, 50),
        percentile(&failover_ms, 99),
        failover_ms.last().copied().unwrap_or(0)
    );
    if failed > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_ranges_parse_and_bad_ones_say_why() {
        assert_eq!(parse_seeds("3..7"), Ok(3..7));
        assert_eq!(parse_seeds("3..=7"), Ok(3..8));
        assert!(parse_seeds("7..3").is_err_and(|e| e.contains("no seed")));
        assert!(parse_seeds("x..3").is_err_and(|e| e.contains("not a seed range")));
        assert!(parse_seeds("5").is_err());
        assert!(parse_seeds("0..=18446744073709551615").is_err());
        assert!(parse_seeds("0..20000000").is_err_and(|e| e.contains("at most")));
        assert_eq!(percentile(&[1, 2, 3, 4], 50), 3);
        assert_eq!(percentile(&[], 99), 0);
    }
}
