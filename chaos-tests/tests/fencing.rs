//! The fabric's safety under a partition, with real vnetd and vnet-switchd processes: one
//! forced fault (isolate the host of the unit that presents profiles) instead of a schedule.
//!
//! - With fencing (the product as shipped): the isolated unit's switch fences itself, the peer
//!   takes over every profile with the same identities, no identity is ever presented twice,
//!   and after the heal the cluster serves and presents each profile exactly once.
//! - With fencing and the watchdog disabled (test-only flags): the double-presentation checker
//!   must FAIL. A checker that passes here proves nothing in the run above.
//!
//! Like the chaos test, these need root, `ip` and `nft`, and fail (never pass) without them.

use std::time::Duration;

use chaos_tests::checks::Verdict;
use chaos_tests::report::Report;
use chaos_tests::run::{self, RunConfig, Scenario, CLIENTS_DEFAULT, KEYS_DEFAULT};

const SEED: u64 = 11;

/// The two runs take turns: each is short, and one cluster at a time keeps their timings (the
/// lease, the takeover) away from CPU contention on small CI machines.
static ONE_CLUSTER_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn config(unsafe_disable_fencing: bool) -> RunConfig {
    RunConfig {
        seed: SEED,
        // Unused by the forced scenario, which ends when the takeover is complete (bounded).
        duration: Duration::from_secs(20),
        clients: CLIENTS_DEFAULT,
        keys: KEYS_DEFAULT,
        vnetd: run::default_vnetd_path(),
        switchd: run::default_switchd_path(),
        keep: false,
        unsafe_disable_fencing,
        scenario: Scenario::IsolatePresentingUnit,
    }
}

fn verdict<'a>(report: &'a Report, name: &str) -> &'a Verdict {
    report
        .verdicts
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v)
        .unwrap_or_else(|| panic!("no verdict {name:?} in\n{report}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn isolated_presenting_unit_fences_and_its_peer_takes_over() {
    let _turn = ONE_CLUSTER_AT_A_TIME.lock().await;
    let report = run::run(config(false))
        .await
        .unwrap_or_else(|e| panic!("the chaos harness could not run: {e:#}"));
    println!("{report}");
    for name in [
        "isolated unit's switch fenced itself",
        "isolated unit's profiles taken over",
        "no double presentation",
        "liveness after the last heal",
        "identities preserved",
        "every profile presented exactly once",
    ] {
        let v = verdict(&report, name);
        assert!(v.is_pass(), "{name}: {v}\n{report}");
    }
    assert!(report.passed(), "{report}");
    assert_eq!(
        report.fault_total(),
        1,
        "exactly the forced isolation\n{report}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_fencing_the_double_presentation_checker_fails() {
    let _turn = ONE_CLUSTER_AT_A_TIME.lock().await;
    let report = run::run(config(true))
        .await
        .unwrap_or_else(|e| panic!("the chaos harness could not run: {e:#}"));
    println!("{report}");
    let v = verdict(&report, "no double presentation");
    let Verdict::Fail { violations } = v else {
        panic!("with fencing and the watchdog disabled the checker must fail, got {v}\n{report}");
    };
    assert!(
        violations
            .iter()
            .any(|v| v.contains("unit-a") && v.contains("unit-b")),
        "{violations:?}"
    );
    assert!(!report.passed());
    assert!(
        report.kept_dir.is_some(),
        "a failed run keeps its data for the post-mortem"
    );
    if let Some(dir) = &report.kept_dir {
        let _ = std::fs::remove_dir_all(dir);
    }
}
