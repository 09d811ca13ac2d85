//! A short chaos run with a fixed seed, as part of `cargo test --workspace` (so CI runs it):
//! three real vnetd processes and the units' vnet-switchd on namespace hosts, the seed's
//! faults, and every checker (the switches' presentation checkers included).
//!
//! It needs root, `ip` and `nft` (`.ci/run` installs them). Without them the harness stops
//! with the reason and this test fails: a chaos test that cannot run must never pass.

use std::time::Duration;

use chaos_tests::run::{self, RunConfig, Scenario, CLIENTS_DEFAULT, KEYS_DEFAULT};
use chaos_tests::schedule::FaultKind;

/// A seed whose first 25 s draw every fault kind, restarts included (checked below from the
/// report, so a change to the schedule that loses coverage fails here).
const SEED: u64 = 3;
/// Long enough for every kind of fault, short enough for CI on two cores.
const FAULT_DURATION_S: u64 = 25;
/// The least the run must have done for its verdicts to mean anything.
const FAULTS_MIN: u64 = 15;
const ACKNOWLEDGED_OPS_MIN: u64 = 200;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fixed_seed_chaos_run_passes_every_checker() {
    let config = RunConfig {
        seed: SEED,
        duration: Duration::from_secs(FAULT_DURATION_S),
        clients: CLIENTS_DEFAULT,
        keys: KEYS_DEFAULT,
        vnetd: run::default_vnetd_path(),
        switchd: run::default_switchd_path(),
        keep: false,
        unsafe_disable_fencing: false,
        scenario: Scenario::Schedule,
    };
    let report = run::run(config)
        .await
        .unwrap_or_else(|e| panic!("the chaos harness could not run: {e:#}"));
    println!("{report}");
    assert!(
        report.passed(),
        "chaos run with seed {SEED} failed:\n{report}"
    );

    // Not vacuous: faults of every kind happened, the clients got answers, and every checker
    // that has data gave a pass (not "inconclusive").
    assert!(
        report.fault_total() >= FAULTS_MIN,
        "only {} faults",
        report.fault_total()
    );
    for kind in FaultKind::ALL {
        assert!(
            report.faults[&kind] > 0,
            "seed {SEED} no longer draws {kind:?} in {FAULT_DURATION_S} s: pick another seed"
        );
    }
    let acknowledged: u64 = report.ops.values().map(|c| c.ok + c.refused).sum();
    assert!(
        acknowledged >= ACKNOWLEDGED_OPS_MIN,
        "only {acknowledged} operations answered"
    );
    assert!(report.final_reads > 0, "no final reads");
    for (name, verdict) in &report.verdicts {
        assert!(verdict.is_pass(), "{name}: {verdict}");
    }
    assert!(
        report.kept_dir.is_none(),
        "a passing run cleans up after itself"
    );
}
