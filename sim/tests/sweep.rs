//! The simulator as part of `cargo test`: a fixed batch of seeds must hold every invariant, a
//! seed replays exactly, and the checks do fail when fencing is off. `vnet-sim --seeds A..B`
//! runs any number more.

use vnet_sim::{run, sweep, Options};

/// Seeds run on every `cargo test`; about two minutes on two cores in a debug build.
const CI_SEEDS: u64 = 3_000;

#[test]
fn a_fixed_batch_of_seeds_holds_every_invariant() {
    let options = Options::default();
    let started = std::time::Instant::now();
    let results = sweep(0..CI_SEEDS, 2, &options);
    let failures: Vec<String> = results
        .iter()
        .filter_map(|(seed, outcome)| {
            outcome.violation.as_ref().map(|what| {
                format!(
                    "seed {seed}: {what}\n  {}\n  replay: cargo run --release -p vnet-sim -- --seed {seed}",
                    outcome.trace.iter().rev().take(15).rev().cloned().collect::<Vec<_>>().join("\n  ")
                )
            })
        })
        .collect();
    let failovers: u64 = results.iter().map(|(_, o)| o.stats.failovers).sum();
    let grants: u64 = results.iter().map(|(_, o)| o.stats.grants).sum();
    println!(
        "{CI_SEEDS} seeds in {:.1} s: {failovers} failovers, {grants} lease grants",
        started.elapsed().as_secs_f64()
    );
    assert!(failovers > CI_SEEDS, "the faults must make units fail over");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Seed 32 was the first seed of a sweep to catch the grant race of chaos seed 777 under
/// leader-held leases (a leader granted a restarted unit a renewal while awaiting a write, then
/// failed it over on an older judgement, and both switches presented p3). Kept as a fixed
/// regression seed: it must hold, and replay identically.
#[test]
fn the_seed_that_caught_the_grant_race_replays_exactly_and_holds() {
    let options = Options::default();
    let first = run(32, &options);
    let again = run(32, &options);
    assert_eq!(first, again, "a seed must replay exactly");
    assert_eq!(first.violation, None, "{:#?}", first.trace);
    assert!(first.stats.failovers > 0 && first.stats.programs > 0);
}

/// How many of seeds 0..40 run with `options` end on a violation that `is` recognises.
fn violations_in_40_seeds(options: &Options, is: impl Fn(&str) -> bool) -> usize {
    sweep(0..40, 2, options)
        .iter()
        .filter(|(_, o)| o.violation.as_deref().is_some_and(&is))
        .count()
}

#[test]
fn without_fencing_the_checks_catch_a_double_presentation() {
    let mut options = Options::default();
    options.config.fencing = false;
    let caught = violations_in_40_seeds(&options, |v| {
        v.contains("while") && v.contains("presents it")
    });
    assert!(
        caught > 0,
        "no seed of 40 broke invariant 2 with fencing off"
    );
}

/// The needless-fence check must catch a lease that hangs on one leader: with only the leader
/// granting, an election or the leader's loss fences healthy units.
#[test]
fn with_leader_held_leases_the_checks_catch_a_needless_fence() {
    let mut options = Options::default();
    options.config.leader_held_leases = true;
    let caught = violations_in_40_seeds(&options, |v| v.starts_with("needless fence"));
    println!("leader-held leases: {caught} of 40 seeds fenced a healthy unit");
    assert!(
        caught > 0,
        "no seed of 40 fenced a healthy unit with leader-held leases"
    );
}
