//! Invariant 2 (ARCHITECTURE.md), checked from evidence: no identity is presented by two switches at
//! once. The input is every switch's [`Presentation`]s, read from their journals with
//! [`crate::journal::presentations`]; all times are on the one CLOCK_MONOTONIC they share.

use std::collections::BTreeMap;
use std::fmt;

use crate::journal::Presentation;

/// Two switches presented the same identity over overlapping intervals.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Overlap {
    pub identity: String,
    /// The presentation that began first (on a tie, the one listed first).
    pub first: Presentation,
    pub second: Presentation,
}

impl fmt::Display for Overlap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let interval = |p: &Presentation| match p.to_ns {
            Some(to) => format!("[{}, {to}) ns", p.from_ns),
            None => format!("[{}, still presented)", p.from_ns),
        };
        write!(
            f,
            "{} presented by {} (profile {:?}) over {} and by {} (profile {:?}) over {}",
            self.identity,
            self.first.switch,
            self.first.profile,
            interval(&self.first),
            self.second.switch,
            self.second.profile,
            interval(&self.second)
        )
    }
}

/// Whether two presentations share an instant.
///
/// Intervals are half-open, `[from_ns, to_ns)`: at `to_ns` the port has already stopped
/// presenting (the journal records the time the state changed, and the switch changes state
/// before anything else can observe it), so one switch ending at `t` and another starting at
/// `t` is a clean handover, not an overlap. An open interval (`to_ns: None`) extends forever.
fn overlaps(a: &Presentation, b: &Presentation) -> bool {
    let starts_before_end = |p: &Presentation, q: &Presentation| match q.to_ns {
        Some(end) => p.from_ns < end,
        None => true,
    };
    starts_before_end(a, b) && starts_before_end(b, a)
}

/// Succeeds if no identity was presented by two different switches over overlapping intervals;
/// otherwise lists every overlapping pair, by identity, then start time.
///
/// Two presentations by the *same* switch are not compared: a switch refuses an identity
/// another of its ports presents, and its journal orders its own changes.
pub fn no_double_presentation(presentations: &[Presentation]) -> Result<(), Vec<Overlap>> {
    let mut by_identity: BTreeMap<&str, Vec<&Presentation>> = BTreeMap::new();
    for presentation in presentations {
        by_identity
            .entry(&presentation.identity)
            .or_default()
            .push(presentation);
    }
    let mut found = Vec::new();
    for (identity, mut list) in by_identity {
        // Stable sort: equal starts keep the caller's order, so the report is deterministic.
        list.sort_by_key(|p| p.from_ns);
        for (index, first) in list.iter().enumerate() {
            for second in &list[index + 1..] {
                if first.switch != second.switch && overlaps(first, second) {
                    found.push(Overlap {
                        identity: identity.to_owned(),
                        first: (*first).clone(),
                        second: (*second).clone(),
                    });
                }
            }
        }
    }
    if found.is_empty() {
        Ok(())
    } else {
        Err(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shown(switch: &str, identity: &str, from_ns: u64, to_ns: Option<u64>) -> Presentation {
        Presentation {
            switch: switch.into(),
            identity: identity.into(),
            profile: "web".into(),
            from_ns,
            to_ns,
        }
    }

    const MAC: &str = "02:00:00:00:00:01";
    const OTHER: &str = "02:00:00:00:00:02";

    #[test]
    fn accepts_handovers_and_distinct_identities() {
        let cases = [
            ("nothing", vec![]),
            ("one open", vec![shown("a", MAC, 0, None)]),
            (
                "back to back: end == start is a handover",
                vec![shown("a", MAC, 0, Some(100)), shown("b", MAC, 100, None)],
            ),
            (
                "gap",
                vec![shown("b", MAC, 200, None), shown("a", MAC, 0, Some(100))],
            ),
            (
                "different identities at once",
                vec![shown("a", MAC, 0, None), shown("b", OTHER, 0, None)],
            ),
            (
                "same switch twice (a port move) is not compared",
                vec![shown("a", MAC, 0, Some(100)), shown("a", MAC, 50, None)],
            ),
            (
                "empty interval at the boundary",
                vec![
                    shown("a", MAC, 0, Some(100)),
                    shown("b", MAC, 100, Some(100)),
                ],
            ),
        ];
        for (name, presentations) in cases {
            assert_eq!(no_double_presentation(&presentations), Ok(()), "{name}");
        }
    }

    #[test]
    fn reports_every_overlap_with_identity_switches_and_intervals() {
        let one_ms_ns = 1_000_000;
        let cases = [
            (
                "1 ms overlap",
                vec![
                    shown("a", MAC, 0, Some(10 * one_ms_ns)),
                    shown("b", MAC, 9 * one_ms_ns, None),
                ],
            ),
            (
                "open interval overlaps everything after it",
                vec![shown("b", MAC, 500, Some(600)), shown("a", MAC, 0, None)],
            ),
            (
                "contained",
                vec![
                    shown("a", MAC, 0, Some(1000)),
                    shown("b", MAC, 10, Some(20)),
                ],
            ),
            (
                "both open",
                vec![shown("a", MAC, 5, None), shown("b", MAC, 5, None)],
            ),
        ];
        for (name, presentations) in cases {
            let overlaps = no_double_presentation(&presentations).unwrap_err();
            assert_eq!(overlaps.len(), 1, "{name}");
            let overlap = &overlaps[0];
            assert_eq!(overlap.identity, MAC, "{name}");
            let mut switches = [
                overlap.first.switch.as_str(),
                overlap.second.switch.as_str(),
            ];
            switches.sort();
            assert_eq!(switches, ["a", "b"], "{name}");
            assert!(overlap.first.from_ns <= overlap.second.from_ns, "{name}");
        }

        let message = no_double_presentation(&[
            shown("unit-a", MAC, 0, Some(10 * one_ms_ns)),
            shown("unit-b", MAC, 9 * one_ms_ns, None),
        ])
        .unwrap_err()[0]
            .to_string();
        assert_eq!(
            message,
            "02:00:00:00:00:01 presented by unit-a (profile \"web\") over [0, 10000000) ns and \
             by unit-b (profile \"web\") over [9000000, still presented)"
        );
    }

    #[test]
    fn three_switches_at_once_give_three_pairs() {
        let presentations = [
            shown("a", MAC, 0, None),
            shown("b", MAC, 1, None),
            shown("c", MAC, 2, None),
            shown("c", OTHER, 2, None),
        ];
        let pairs: Vec<(String, String)> = no_double_presentation(&presentations)
            .unwrap_err()
            .into_iter()
            .map(|o| (o.first.switch, o.second.switch))
            .collect();
        assert_eq!(
            pairs,
            [
                ("a".into(), "b".into()),
                ("a".into(), "c".into()),
                ("b".into(), "c".into())
            ]
        );
    }
}
