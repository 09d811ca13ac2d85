//! Invariant 7, "the data plane outlives the control plane", over the fault schedule and the
//! switch journals.
//!
//! - [`connected_windows`]: when a unit was up and could reach a majority of the voters (itself
//!   and enough healthy peers it was not cut off from), replayed from the executed faults.
//! - [`check_no_needless_fence`]: no fence (`Fenced` that cleared something, or a `ClearAll`)
//!   on a unit's switch inside such a window, past a grace period after the window opened (the
//!   renewals that follow a heal need a moment, and a lease that lapsed before it is still
//!   lapsed).
//! - [`availability`]: identity-seconds presented inside those windows, against the same plus
//!   the identity-seconds lost to interruptions there.

use fabric_agent::journal::{ClearReason, Event, Presentation, Record};

use crate::checks::Verdict;
use crate::schedule::{unhealthy_and_cut, Action, Fault};

/// Could `unit` reach a majority of `node_count` voters with `active` faults in force? It must
/// run unpaused on a host that is neither isolated, lossy nor delayed (a lossy or delayed host
/// may rightly miss renewals), and so must each peer it counts, with no split or one-way loss
/// between them.
pub fn unit_connected(node_count: usize, unit: usize, active: &[Fault]) -> bool {
    let (unhealthy, cut) = unhealthy_and_cut(node_count, active);
    if unhealthy.contains(&unit) {
        return false;
    }
    let reachable = (0..node_count)
        .filter(|&p| p != unit && !unhealthy.contains(&p))
        .filter(|&p| !cut.contains(&(unit.min(p), unit.max(p))))
        .count();
    1 + reachable > node_count / 2
}

/// The intervals `[from, to)` (CLOCK_MONOTONIC ns) within `[start_ns, end_ns)` during which
/// `unit` was connected, from the faults as executed (`(at_ns, action)`, in order).
pub fn connected_windows(
    node_count: usize,
    unit: usize,
    executed: &[(u64, Action)],
    start_ns: u64,
    end_ns: u64,
) -> Vec<(u64, u64)> {
    let mut active: Vec<Fault> = Vec::new();
    let mut windows = Vec::new();
    let mut open = unit_connected(node_count, unit, &active).then_some(start_ns);
    for (at, action) in executed.iter().filter(|(at, _)| *at < end_ns) {
        match action {
            Action::Inject(fault) => active.push(*fault),
            Action::Heal(fault) => {
                if let Some(i) = active.iter().position(|f| f == fault) {
                    active.remove(i);
                }
            }
        }
        let now = unit_connected(node_count, unit, &active);
        match (open, now) {
            (Some(from), false) => {
                if *at > from {
                    windows.push((from, *at));
                }
                open = None;
            }
            (None, true) => open = Some((*at).max(start_ns)),
            _ => {}
        }
    }
    if let Some(from) = open {
        if end_ns > from {
            windows.push((from, end_ns));
        }
    }
    windows
}

/// A record that took identities down: a fence that cleared something, or a `ClearAll` (the
/// agent clears everything only when its lease lapsed or was revoked).
fn interruption(record: &Record) -> Option<String> {
    match &record.event {
        Event::Fenced { ports, .. } if !ports.is_empty() => {
            Some(format!("fenced (ports {ports:?})"))
        }
        Event::Cleared {
            port,
            reason: ClearReason::ClearAll,
        } => Some(format!("cleared by ClearAll (port {port})")),
        _ => None,
    }
}

/// A unit's switch journal with the windows in which it was connected.
#[derive(Debug, Clone)]
pub struct UnitRecords<'a> {
    pub unit: &'a str,
    pub records: &'a [Record],
    pub windows: Vec<(u64, u64)>,
}

/// No interruption of a connected unit's switch more than `grace_ns` into a window.
pub fn check_no_needless_fence(units: &[UnitRecords<'_>], start_ns: u64, grace_ns: u64) -> Verdict {
    let mut violations = Vec::new();
    let mut checked_ns = 0;
    for unit in units {
        for (from, to) in &unit.windows {
            checked_ns += to.saturating_sub(from + grace_ns);
        }
        for record in unit.records {
            let Some(what) = interruption(record) else {
                continue;
            };
            let window = unit
                .windows
                .iter()
                .find(|(from, to)| from + grace_ns <= record.mono_ns && record.mono_ns < *to);
            if let Some((from, _)) = window {
                violations.push(format!(
                    "{}: {what} at +{} ms, although it could reach a majority since +{} ms",
                    unit.unit,
                    record.mono_ns.saturating_sub(start_ns) / 1_000_000,
                    from.saturating_sub(start_ns) / 1_000_000
                ));
            }
        }
    }
    Verdict::from_violations(
        violations,
        format!(
            "{} units, {} s connected (past a grace of {} ms after each heal) without a fence",
            units.len(),
            checked_ns / 1_000_000_000,
            grace_ns / 1_000_000
        ),
    )
}

/// Data-plane availability inside the connected windows (past the grace): identity-time
/// presented, and identity-time lost to interruptions (from the interruption until the switch
/// presents that identity again, or the window ends). `presentations` are every switch's.
pub fn availability(
    units: &[UnitRecords<'_>],
    presentations: &[Presentation],
    grace_ns: u64,
) -> (u64, u64) {
    let mut presented_ns = 0u64;
    let mut lost_ns = 0u64;
    for unit in units {
        let mine: Vec<&Presentation> = presentations
            .iter()
            .filter(|p| p.switch == unit.unit)
            .collect();
        for (from, to) in &unit.windows {
            let (from, to) = (from + grace_ns, *to);
            if from >= to {
                continue;
            }
            for p in &mine {
                let end = p.to_ns.unwrap_or(to).min(to);
                let start = p.from_ns.max(from);
                presented_ns += end.saturating_sub(start);
                // Ended inside the window by an interruption: lost until presented again.
                let Some(ended) = p.to_ns.filter(|t| (from..to).contains(t)) else {
                    continue;
                };
                let interrupted = unit
                    .records
                    .iter()
                    .any(|r| r.mono_ns == ended && interruption(r).is_some());
                if interrupted {
                    let back = mine
                        .iter()
                        .filter(|q| q.identity == p.identity && q.from_ns >= ended)
                        .map(|q| q.from_ns)
                        .min()
                        .unwrap_or(to)
                        .min(to);
                    lost_ns += back - ended;
                }
            }
        }
    }
    (presented_ns, lost_ns)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    fn record(mono_ns: u64, event: Event) -> Record {
        Record {
            seq: 0,
            mono_ns,
            wall_ms: 0,
            event,
        }
    }

    fn fenced(ports: Vec<u8>) -> Event {
        Event::Fenced {
            ports,
            deadline_mono_ns: 0,
        }
    }

    #[test]
    fn a_unit_is_connected_while_it_and_one_peer_of_three_are_healthy_and_not_cut_apart() {
        assert!(unit_connected(3, 0, &[]));
        assert!(
            unit_connected(3, 0, &[Fault::KillVnetd { node: 2 }]),
            "witness down"
        );
        assert!(!unit_connected(3, 0, &[Fault::Pause { node: 0 }]));
        assert!(!unit_connected(
            3,
            0,
            &[Fault::KillVnetd { node: 2 }, Fault::Isolate { node: 1 }]
        ));
        assert!(!unit_connected(3, 0, &[Fault::Split { minority: 0 }]));
        assert!(unit_connected(3, 1, &[Fault::Split { minority: 0 }]));
        assert!(!unit_connected(
            3,
            0,
            &[
                Fault::OneWayLoss { from: 1, to: 0 },
                Fault::KillVnetd { node: 2 }
            ]
        ));
    }

    #[test]
    fn windows_follow_the_faults_and_a_planted_needless_fence_is_caught() {
        let s = 1_000 * MS;
        let executed = vec![
            (s + 1_000 * MS, Action::Inject(Fault::Isolate { node: 0 })),
            (s + 3_000 * MS, Action::Heal(Fault::Isolate { node: 0 })),
            (s + 5_000 * MS, Action::Inject(Fault::KillVnetd { node: 2 })),
        ];
        let windows = connected_windows(3, 0, &executed, s, s + 10_000 * MS);
        assert_eq!(
            windows,
            vec![(s, s + 1_000 * MS), (s + 3_000 * MS, s + 10_000 * MS)],
            "the witness's death leaves unit 0 connected"
        );
        let grace = 1_500 * MS;
        let records = vec![
            // While isolated: a needed fence.
            record(s + 1_800 * MS, fenced(vec![1])),
            // Within the grace after the heal: allowed.
            record(s + 3_500 * MS, fenced(vec![2])),
            // A fence that cleared nothing takes nothing down.
            record(s + 6_000 * MS, fenced(vec![])),
        ];
        let unit = UnitRecords {
            unit: "unit-a",
            records: &records,
            windows: windows.clone(),
        };
        assert!(check_no_needless_fence(&[unit], s, grace).is_pass());
        // Planted: the witness dies and unit-a fences anyway.
        let mut planted = records.clone();
        planted.push(record(s + 6_500 * MS, fenced(vec![3])));
        planted.push(record(
            s + 7_000 * MS,
            Event::Cleared {
                port: 4,
                reason: ClearReason::ClearAll,
            },
        ));
        let unit = UnitRecords {
            unit: "unit-a",
            records: &planted,
            windows,
        };
        match check_no_needless_fence(&[unit], s, grace) {
            Verdict::Fail { violations } => {
                assert_eq!(violations.len(), 2, "{violations:?}");
                assert!(violations[0].contains("+6500 ms"), "{violations:?}");
            }
            other => panic!("a needless fence passed: {other}"),
        }
    }

    #[test]
    fn availability_counts_identity_time_lost_to_an_interruption_until_presented_again() {
        let s = 0;
        let records = vec![record(4_000 * MS, fenced(vec![1]))];
        let presentation = |from_ns, to_ns| Presentation {
            switch: "unit-a".into(),
            identity: "02:00:00:00:00:01".into(),
            profile: "p".into(),
            from_ns,
            to_ns,
        };
        let presentations = vec![
            presentation(0, Some(4_000 * MS)),
            presentation(5_000 * MS, None),
        ];
        let unit = UnitRecords {
            unit: "unit-a",
            records: &records,
            windows: vec![(s, 10_000 * MS)],
        };
        let (presented, lost) = availability(&[unit], &presentations, 1_000 * MS);
        // Inside [1 s, 10 s): presented 1..4 and 5..10 = 8 s; lost 4..5 = 1 s.
        assert_eq!((presented, lost), (8_000 * MS, 1_000 * MS));
    }
}
