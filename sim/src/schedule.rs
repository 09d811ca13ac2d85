//! The faults of one run, drawn from its seed: stretches of overlapping faults (kills of a node
//! or a whole unit, pauses, isolation, one-way cuts, loss, delay, operator drains and moves),
//! and now and then a clean kill of a unit with nothing else going on, whose failover is held to
//! the budget. Every stretch ends healed, with every node running again.

use crate::rng::Rng;
use crate::world::{Fault, PROFILES};

const MS: u64 = 1_000_000;
const S: u64 = 1_000 * MS;

/// How long after a clean kill the peer must present what the killed unit presented.
pub const FAILOVER_BUDGET_NS: u64 = 3 * S;

/// One fault at a time (global ns).
pub type Timeline = Vec<(u64, Fault)>;

/// Draws the faults for `start..end`.
pub fn draw(rng: &mut Rng, start: u64, end: u64) -> Timeline {
    let mut timeline = Vec::new();
    let mut t = start;
    while t < end {
        if rng.chance(250) {
            t = clean_kill(rng, t, &mut timeline);
        } else {
            t = burst(rng, t, &mut timeline);
        }
        t += rng.range(200 * MS, 1_500 * MS);
    }
    timeline.sort_by_key(|(at, _)| *at);
    timeline
}

fn clean_kill(rng: &mut Rng, t: u64, timeline: &mut Timeline) -> u64 {
    let unit = rng.range(0, 2) as usize;
    timeline.push((
        t,
        Fault::KillWatched {
            unit,
            due_after_ns: FAILOVER_BUDGET_NS,
        },
    ));
    // Back after the check, with room for the check to wait out a slow election.
    let restart = t + 2 * FAILOVER_BUDGET_NS + rng.range(100 * MS, 500 * MS);
    timeline.push((restart, Fault::Restart { node: unit }));
    restart + 2 * S
}

/// A few faults that overlap within one stretch, then a heal.
fn burst(rng: &mut Rng, t: u64, timeline: &mut Timeline) -> u64 {
    let length = rng.range(500 * MS, 4 * S);
    let mut end = t + length;
    let first = timeline.len();
    for _ in 0..rng.range(1, 5) {
        let at = rng.range(t, end);
        let left = end - at;
        let node = rng.range(0, 3) as usize;
        let unit = rng.range(0, 2) as usize;
        match rng.weighted(&[3, 3, 2, 3, 2, 2, 2, 2, 1, 3]) {
            9 => {
                // A whole unit back about when the leader would judge it failed (lease TTL plus
                // drift margin after its last renewal): its renewals race the failover.
                timeline.push((
                    at,
                    Fault::Kill {
                        node: unit,
                        with_switch: true,
                    },
                ));
                let back = at + rng.range(600 * MS, 1_400 * MS);
                timeline.push((back, Fault::Restart { node: unit }));
            }
            0 => {
                timeline.push((
                    at,
                    Fault::Kill {
                        node: unit,
                        with_switch: true,
                    },
                ));
                let back = at + rng.range(100 * MS, left.max(200 * MS));
                timeline.push((back, Fault::Restart { node: unit }));
            }
            1 => {
                timeline.push((
                    at,
                    Fault::Kill {
                        node,
                        with_switch: false,
                    },
                ));
                let back = at + rng.range(100 * MS, left.max(200 * MS));
                timeline.push((back, Fault::Restart { node }));
            }
            2 => {
                // Over by the end of the stretch (give or take a tick), like every other fault.
                let for_ns = rng.range(50 * MS, left.clamp(60 * MS, 1_500 * MS));
                timeline.push((at, Fault::Pause { node, for_ns }));
            }
            3 => {
                // Isolate one host from both others.
                for other in (0..3).filter(|o| *o != node) {
                    timeline.push((at, cut(node, other, true)));
                    timeline.push((at, cut(other, node, true)));
                }
            }
            4 => {
                let other = (node + rng.range(1, 3) as usize) % 3;
                timeline.push((at, cut(node, other, true)));
            }
            5 => timeline.push((
                at,
                Fault::Loss {
                    node,
                    per_mille: rng.range(100, 600),
                },
            )),
            6 => timeline.push((
                at,
                Fault::Delay {
                    node,
                    extra_ns: rng.range(5 * MS, 300 * MS),
                },
            )),
            7 => {
                let draining = rng.chance(600);
                timeline.push((at, Fault::Drain { unit, draining }));
            }
            _ => timeline.push((
                at,
                Fault::Move {
                    profile: rng.range(0, PROFILES as u64) as usize,
                    to: unit,
                },
            )),
        }
    }
    // A restart drawn past the stretch's end stretches it: nothing may leak into the next.
    end = timeline[first..]
        .iter()
        .map(|(at, _)| *at)
        .fold(end, u64::max);
    timeline.push((end, Fault::HealNetwork));
    for node in 0..3 {
        timeline.push((end, Fault::Restart { node }));
    }
    end
}

fn cut(from: usize, to: usize, on: bool) -> Fault {
    Fault::Cut { from, to, on }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_draws_the_same_timeline_and_every_stretch_ends_healed() {
        let a = draw(&mut Rng::new(3), S, 30 * S);
        let b = draw(&mut Rng::new(3), S, 30 * S);
        assert_eq!(format!("{a:?}"), format!("{b:?}"));
        assert!(a.windows(2).all(|w| w[0].0 <= w[1].0), "in time order");
        // Every kill is followed by a restart of that node, every cut by a heal.
        for (i, (at, fault)) in a.iter().enumerate() {
            let later = &a[i..];
            match fault {
                Fault::Kill { node, .. } | Fault::KillWatched { unit: node, .. } => {
                    assert!(
                        later.iter().any(|(t, f)| t >= at
                            && matches!(f, Fault::Restart { node: n } if n == node)),
                        "kill of {node} at {at} never healed"
                    )
                }
                Fault::Cut { .. } | Fault::Loss { .. } | Fault::Delay { .. } => assert!(
                    later.iter().any(|(_, f)| matches!(f, Fault::HealNetwork)),
                    "{fault:?} at {at} never healed"
                ),
                _ => {}
            }
        }
        let kinds: std::collections::BTreeSet<String> = (0..20)
            .flat_map(|seed| draw(&mut Rng::new(seed), S, 30 * S))
            .map(|(_, f)| {
                format!("{f:?}")
                    .split([' ', '{'])
                    .next()
                    .unwrap_or("")
                    .to_string()
            })
            .collect();
        for kind in [
            "Kill",
            "KillWatched",
            "Pause",
            "Cut",
            "Loss",
            "Delay",
            "Drain",
            "Move",
        ] {
            assert!(kinds.contains(kind), "{kind} never drawn: {kinds:?}");
        }
    }
}
