//! Liveness, demanded only when it is owed (TigerBeetle's vortex habit): while a quorum of
//! healthy, mutually connected nodes could exist, and after the last heal.
//!
//! "Serving" means a definite answer through the leader: an applied write, a write the model
//! refused (it was committed to find out), or a linearizable read. Failed and indeterminate
//! answers prove nothing.

use crate::checks::Verdict;
use crate::history::{History, Operation, Outcome};

/// A span of time during which a quorum of healthy nodes could serve.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuorumWindow {
    pub start_ns: u64,
    pub end_ns: u64,
}

fn served(op: &Operation) -> bool {
    op.outcome.is_definite()
}

fn accepted_write(op: &Operation) -> bool {
    op.call.is_write() && op.outcome.is_definite()
}

/// While a quorum could serve, the cluster must: within every window, no stretch longer than
/// `budget_ns` (from the window's start, between answers, or up to the window's end) may pass
/// without a served operation.
pub fn check_quorum_windows(
    windows: &[QuorumWindow],
    history: &History,
    budget_ns: u64,
) -> Verdict {
    let mut completions: Vec<u64> = history
        .iter()
        .filter(|op| served(op))
        .map(|op| op.completed_ns)
        .collect();
    completions.sort_unstable();
    let mut violations = Vec::new();
    let mut owed = 0usize;
    let mut longest_gap_ns = 0u64;
    for w in windows {
        if w.end_ns.saturating_sub(w.start_ns) < budget_ns {
            continue;
        }
        owed += 1;
        let first = completions.partition_point(|&t| t < w.start_ns);
        let last = completions.partition_point(|&t| t <= w.end_ns);
        let mut previous = w.start_ns;
        for &t in completions[first..last].iter().chain([&w.end_ns]) {
            let gap = t - previous;
            longest_gap_ns = longest_gap_ns.max(gap);
            if gap > budget_ns {
                violations.push(format!(
                    "a quorum could serve from {} ns to {} ns, but nothing was served for {} ms \
                     from {previous} ns (budget {} ms)",
                    w.start_ns,
                    w.end_ns,
                    gap / 1_000_000,
                    budget_ns / 1_000_000
                ));
            }
            previous = t;
        }
    }
    Verdict::from_violations(
        violations,
        format!(
            "{owed} quorum windows owed progress; longest wait for an answer in them {} ms",
            longest_gap_ns / 1_000_000
        ),
    )
}

/// After the last heal (`healed_ns`), a write invoked after it must be accepted within
/// `budget_ns`. On a pass, the detail gives the time to the first accepted write.
pub fn check_after_heal(healed_ns: u64, history: &History, budget_ns: u64) -> Verdict {
    let first = history
        .iter()
        .filter(|op| accepted_write(op) && op.invoked_ns >= healed_ns)
        .map(|op| op.completed_ns)
        .min();
    match first {
        Some(t) if t - healed_ns <= budget_ns => Verdict::Pass {
            detail: format!(
                "first write accepted {} ms after the last heal (budget {} ms)",
                (t - healed_ns) / 1_000_000,
                budget_ns / 1_000_000
            ),
        },
        Some(t) => Verdict::Fail {
            violations: vec![format!(
                "the first write after the last heal was accepted after {} ms, over the budget \
                 of {} ms",
                (t - healed_ns) / 1_000_000,
                budget_ns / 1_000_000
            )],
        },
        None => {
            let attempts = history
                .iter()
                .filter(|op| op.call.is_write() && op.invoked_ns >= healed_ns)
                .count();
            let last = history
                .iter()
                .filter(|op| op.call.is_write() && op.invoked_ns >= healed_ns)
                .max_by_key(|op| op.completed_ns)
                .map(|op| format!("; the last answered {:?}", op.outcome))
                .unwrap_or_default();
            Verdict::Fail {
                violations: vec![format!(
                    "no write was accepted after the last heal ({attempts} attempted within the \
                     budget of {} ms{last})",
                    budget_ns / 1_000_000
                )],
            }
        }
    }
}

/// Longest stretch without any served operation, in ms, between `from_ns` and `to_ns`: a
/// number for the report (unavailability), never a verdict.
pub fn longest_gap_ms(history: &History, from_ns: u64, to_ns: u64) -> u64 {
    let mut times: Vec<u64> = history
        .iter()
        .filter(|op| served(op) && op.completed_ns >= from_ns && op.completed_ns <= to_ns)
        .map(|op| op.completed_ns)
        .collect();
    times.sort_unstable();
    let mut last = from_ns;
    let mut gap = 0;
    for t in times.into_iter().chain([to_ns]) {
        gap = gap.max(t.saturating_sub(last));
        last = t;
    }
    gap / 1_000_000
}

/// Is `outcome` a committed refusal or an applied write (for counting, not for liveness)?
pub fn is_applied(outcome: &Outcome) -> bool {
    matches!(outcome, Outcome::Written { .. } | Outcome::Deleted { .. })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::Call;

    const MS: u64 = 1_000_000;

    fn op(call: Call, invoked_ms: u64, completed_ms: u64, outcome: Outcome) -> Operation {
        Operation {
            id: invoked_ms,
            client: 1,
            key: "p".into(),
            call,
            endpoint: "e".into(),
            invoked_ns: invoked_ms * MS,
            completed_ns: completed_ms * MS,
            outcome,
        }
    }

    fn failed() -> Outcome {
        Outcome::Failed {
            reason: "no leader".into(),
        }
    }

    #[test]
    fn window_with_progress_passes_and_without_fails() {
        let windows = [QuorumWindow {
            start_ns: 1_000 * MS,
            end_ns: 20_000 * MS,
        }];
        let progress_throughout = vec![
            op(Call::Get, 1_500, 2_000, Outcome::NotFound),
            op(Call::Get, 2_000, 6_000, Outcome::NotFound),
            op(Call::Get, 6_000, 10_000, Outcome::NotFound),
            op(Call::Get, 10_000, 14_000, Outcome::NotFound),
            op(Call::Get, 14_000, 18_000, Outcome::NotFound),
        ];
        assert!(check_quorum_windows(&windows, &progress_throughout, 5_000 * MS).is_pass());
        let stuck_at_start = vec![
            op(Call::Get, 1_500, 2_000, failed()),
            op(Call::Get, 2_000, 9_000, Outcome::NotFound),
        ];
        assert!(matches!(
            check_quorum_windows(&windows, &stuck_at_start, 5_000 * MS),
            Verdict::Fail { .. }
        ));
        // Served at first, then stalled in the middle of the window while a quorum could serve.
        let stalled_later = vec![
            op(Call::Get, 1_500, 2_000, Outcome::NotFound),
            op(Call::Get, 2_000, 4_000, Outcome::NotFound),
            op(Call::Get, 4_000, 12_000, failed()),
            op(Call::Get, 12_000, 12_500, Outcome::NotFound),
        ];
        assert!(matches!(
            check_quorum_windows(&windows, &stalled_later, 5_000 * MS),
            Verdict::Fail { .. }
        ));
    }

    #[test]
    fn short_windows_owe_nothing() {
        let windows = [QuorumWindow {
            start_ns: 0,
            end_ns: 1_000 * MS,
        }];
        assert!(check_quorum_windows(&windows, &vec![], 5_000 * MS).is_pass());
    }

    #[test]
    fn after_heal_needs_a_fresh_accepted_write_in_budget() {
        let heal = 10_000 * MS;
        let ok = vec![
            op(
                Call::Delete {
                    expected_revision: 0,
                },
                10_100,
                10_300,
                failed(),
            ),
            op(
                Call::Delete {
                    expected_revision: 0,
                },
                10_400,
                11_000,
                Outcome::NotFound,
            ),
        ];
        let verdict = check_after_heal(heal, &ok, 5_000 * MS);
        assert!(verdict.is_pass(), "{verdict}");
        // A write answered before the heal does not count, nor does a read.
        let stale = vec![
            op(
                Call::Delete {
                    expected_revision: 0,
                },
                9_000,
                10_500,
                Outcome::NotFound,
            ),
            op(Call::Get, 10_100, 10_200, Outcome::NotFound),
            op(
                Call::Delete {
                    expected_revision: 0,
                },
                10_400,
                11_000,
                failed(),
            ),
        ];
        assert!(matches!(
            check_after_heal(heal, &stale, 5_000 * MS),
            Verdict::Fail { .. }
        ));
        let late = vec![op(
            Call::Delete {
                expected_revision: 0,
            },
            10_100,
            16_000,
            Outcome::Deleted { revision: 3 },
        )];
        assert!(matches!(
            check_after_heal(heal, &late, 5_000 * MS),
            Verdict::Fail { .. }
        ));
    }

    #[test]
    fn gap_is_measured_between_answers() {
        let h = vec![
            op(Call::Get, 0, 100, Outcome::NotFound),
            op(Call::Get, 100, 900, Outcome::NotFound),
        ];
        assert_eq!(longest_gap_ms(&h, 0, 1_000 * MS), 800);
    }
}
