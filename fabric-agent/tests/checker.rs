//! The double-presentation checker on real journals: planted overlaps are caught, clean
//! handovers pass, and a switch started with `--unsafe-disable-watchdog` is caught presenting
//! alongside its successor while an enforcing one is not.

mod common;

use std::path::Path;

use common::{wait_for, web, RunningSwitch, MS_NS};
use fabric_agent::check::no_double_presentation;
use fabric_agent::journal::{self, ClearReason, Event, JournalWriter, Presentation};
use fabric_agent::switch::WatchdogMode;
use fabric_agent::{monotonic_now_ns, FabricDriver, SimDriver};

/// Attempts at arming a short lease and programming within it, for a loaded machine.
const SHORT_LEASE_ATTEMPTS_MAX: usize = 20;

fn programmed_web() -> Event {
    let program = web();
    Event::Programmed {
        port: 1,
        profile: program.profile,
        revision: program.revision,
        functions: program.functions,
    }
}

/// Writes a journal of `(mono_ns, event)` and reads its presentations back from the file.
fn presentations_of(dir: &Path, switch: &str, events: Vec<(u64, Event)>) -> Vec<Presentation> {
    let path = dir.join(format!("{switch}.journal"));
    let (mut writer, _) = JournalWriter::open(&path).unwrap();
    for (mono_ns, event) in events {
        writer.append(mono_ns, 0, event).unwrap();
    }
    writer.sync().unwrap();
    journal::presentations(&journal::read(&path).unwrap(), switch, None)
}

fn started() -> Event {
    Event::Started {
        instance: "test".into(),
        data_plane: None,
    }
}

#[test]
fn a_planted_one_millisecond_overlap_is_caught_and_back_to_back_passes() {
    let dir = tempfile::tempdir().unwrap();
    // Unit A presents web from 10 ms and is fenced at 20 ms.
    let unit_a = presentations_of(
        dir.path(),
        "unit-a",
        vec![
            (0, started()),
            (10 * MS_NS, programmed_web()),
            (
                20 * MS_NS,
                Event::Fenced {
                    ports: vec![1],
                    deadline_mono_ns: 20 * MS_NS,
                },
            ),
        ],
    );
    // Unit B takes over 1 ms too early.
    let unit_b_early = presentations_of(
        dir.path(),
        "unit-b-early",
        vec![(0, started()), (19 * MS_NS, programmed_web())],
    );
    // Unit C takes over exactly when A stopped, and hands back with a clear at 30 ms.
    let unit_c_on_time = presentations_of(
        dir.path(),
        "unit-c",
        vec![
            (0, started()),
            (20 * MS_NS, programmed_web()),
            (
                30 * MS_NS,
                Event::Cleared {
                    port: 1,
                    reason: ClearReason::Clear,
                },
            ),
        ],
    );

    let early: Vec<Presentation> = unit_a.iter().chain(&unit_b_early).cloned().collect();
    let overlaps = no_double_presentation(&early).unwrap_err();
    let identities: Vec<&str> = overlaps.iter().map(|o| o.identity.as_str()).collect();
    assert_eq!(
        identities,
        [
            "02:00:00:00:00:01",
            "20:00:00:25:b5:00:00:01",
            "20:00:00:25:b5:00:01:01"
        ]
    );
    for overlap in &overlaps {
        assert_eq!(overlap.first.switch, "unit-a");
        assert_eq!(
            (overlap.first.from_ns, overlap.first.to_ns),
            (10 * MS_NS, Some(20 * MS_NS))
        );
        assert_eq!(overlap.second.switch, "unit-b-early");
        assert_eq!(
            (overlap.second.from_ns, overlap.second.to_ns),
            (19 * MS_NS, None)
        );
    }

    let on_time: Vec<Presentation> = unit_a.iter().chain(&unit_c_on_time).cloned().collect();
    assert_eq!(no_double_presentation(&on_time), Ok(()));
    // A third unit after C's clear is fine too; the early B still overlaps C.
    let all: Vec<Presentation> = on_time.iter().chain(&unit_b_early).cloned().collect();
    let overlaps = no_double_presentation(&all).unwrap_err();
    assert_eq!(overlaps.len(), 6, "B overlaps both A and C on 3 identities");
}

/// Arms a 100 ms lease on `driver` and programs `web` on port 1 inside it; returns the
/// deadline. Retries with a fresh lease if a loaded machine let it lapse first.
async fn program_on_short_lease(driver: &SimDriver) -> u64 {
    for _ in 0..SHORT_LEASE_ATTEMPTS_MAX {
        let deadline = monotonic_now_ns() + 100 * MS_NS;
        driver.arm_watchdog(deadline).await.unwrap();
        match driver.program(1, &web()).await {
            Ok(()) => return deadline,
            Err(e) if e.is_lease_refusal() => continue,
            Err(e) => panic!("program within a fresh lease failed: {e}"),
        }
    }
    panic!("no program succeeded within a fresh 100 ms lease in {SHORT_LEASE_ATTEMPTS_MAX} tries");
}

/// Unit A presents `web` on a short lease that then lapses; unit B takes `web` over once A's
/// lease has passed (and, if A fences, once A reports it has). Returns both units'
/// presentations, read from their journals.
async fn fail_over(watchdog_of_a: WatchdogMode) -> Vec<Presentation> {
    let dir = tempfile::tempdir().unwrap();
    let unit_a = RunningSwitch::start(&dir.path().join("a.journal"), watchdog_of_a).await;
    let unit_b = RunningSwitch::start(&dir.path().join("b.journal"), WatchdogMode::Enforced).await;

    let lease_of_a = program_on_short_lease(&unit_a.driver).await;
    wait_for("A's lease to pass", || async {
        (monotonic_now_ns() > lease_of_a).then_some(())
    })
    .await;
    if watchdog_of_a == WatchdogMode::Enforced {
        wait_for("A to fence", || async {
            unit_a.driver.state().await.unwrap().fenced.then_some(())
        })
        .await;
    } else {
        let state = unit_a.driver.state().await.unwrap();
        assert!(!state.fenced && state.ports.contains_key(&1), "{state:?}");
    }
    unit_b
        .driver
        .arm_watchdog(monotonic_now_ns() + 60_000 * MS_NS)
        .await
        .unwrap();
    unit_b.driver.program(1, &web()).await.unwrap();

    let mut presented = Vec::new();
    for (name, unit) in [("unit-a", unit_a), ("unit-b", unit_b)] {
        let records = unit.driver.read_journal_all(1).await.unwrap();
        presented.extend(journal::presentations(&records, name, None));
        unit.stop().await.unwrap();
    }
    presented
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_enforcing_watchdog_hands_over_cleanly() {
    let presented = fail_over(WatchdogMode::Enforced).await;
    assert_eq!(presented.len(), 6);
    assert_eq!(no_double_presentation(&presented), Ok(()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disabled_watchdog_is_caught_presenting_twice() {
    let presented = fail_over(WatchdogMode::UnsafeDisabled).await;
    let overlaps = no_double_presentation(&presented).unwrap_err();
    assert_eq!(overlaps.len(), 3, "{overlaps:?}");
    for overlap in overlaps {
        assert_eq!(
            (overlap.first.switch.as_str(), overlap.first.to_ns),
            ("unit-a", None)
        );
        assert_eq!(overlap.second.switch, "unit-b");
    }
}
