//! The switches seen from the harness: their state read from inside each unit host, and what
//! their journals say about failovers and about a partitioned unit.
//!
//! The journal functions are pure (over [`Presentation`] intervals); only
//! [`read_switch_states`] does I/O.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::Context;
use fabric_agent::journal::{self, Event, Presentation};
use fabric_agent::{FabricDriver, SimDriver, SwitchState};

use crate::checks::Verdict;
use crate::cluster::{Cluster, SWITCH_PORT};
use crate::history::{History, Outcome, OutcomeClass};

/// A takeover counts for a fault only if the peer presents the profile within this long.
pub const FAILOVER_WINDOW_MS: u64 = 15_000;

/// What one switch presented at `at_ns`: profile -> identities (intervals open at that instant).
pub fn presented_at(
    presentations: &[Presentation],
    switch: &str,
    at_ns: u64,
) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for p in presentations {
        if p.switch == switch && p.from_ns <= at_ns && p.to_ns.is_none_or(|end| end > at_ns) {
            out.entry(p.profile.clone())
                .or_default()
                .insert(p.identity.clone());
        }
    }
    out
}

/// The first time, at or after `from_ns`, that `switch` started presenting `profile`, with
/// every identity it presented from that instant.
pub fn first_presented_after(
    presentations: &[Presentation],
    switch: &str,
    profile: &str,
    from_ns: u64,
) -> Option<(u64, BTreeSet<String>)> {
    let start = presentations
        .iter()
        .filter(|p| p.switch == switch && p.profile == profile && p.from_ns >= from_ns)
        .map(|p| p.from_ns)
        .min()?;
    let identities = presentations
        .iter()
        .filter(|p| p.switch == switch && p.profile == profile && p.from_ns == start)
        .map(|p| p.identity.clone())
        .collect();
    Some((start, identities))
}

/// A unit fault for the failover measure: at `at_ns`, `unit` lost its vnetd or everything;
/// `peer` is the other unit.
#[derive(Debug, Clone)]
pub struct UnitFault {
    pub at_ns: u64,
    pub unit: String,
    pub peer: String,
}

/// Failover durations, in ms: for each fault of a unit that presented profiles then, the time
/// from the fault to the last of those profiles' identities presented by the peer (within
/// [`FAILOVER_WINDOW_MS`]). Returns the durations and how many such faults saw no takeover
/// (the unit came back first, or the profiles were deleted).
pub fn failover_durations(
    presentations: &[Presentation],
    faults: &[UnitFault],
) -> (Vec<u64>, usize) {
    let mut durations = Vec::new();
    let mut no_takeover = 0;
    for fault in faults {
        let before = presented_at(presentations, &fault.unit, fault.at_ns);
        if before.is_empty() {
            continue;
        }
        let window_end = fault.at_ns + FAILOVER_WINDOW_MS * 1_000_000;
        let last = before
            .keys()
            .filter_map(|profile| {
                first_presented_after(presentations, &fault.peer, profile, fault.at_ns)
            })
            .map(|(from, _)| from)
            .filter(|&from| from <= window_end)
            .max();
        match last {
            Some(last) => durations.push((last - fault.at_ns) / 1_000_000),
            None => no_takeover += 1,
        }
    }
    durations.sort_unstable();
    (durations, no_takeover)
}

/// Did `switch`'s journal record a `Fenced` at or after `since_ns`?
pub fn fenced_since(records: &[journal::Record], since_ns: u64) -> Option<u64> {
    records
        .iter()
        .find(|r| r.mono_ns >= since_ns && matches!(r.event, Event::Fenced { .. }))
        .map(|r| r.mono_ns)
}

/// When `switch` started presenting (the current program of) `profile`, as of `at_ns`.
fn presented_since(
    presentations: &[Presentation],
    switch: &str,
    profile: &str,
    at_ns: u64,
) -> Option<u64> {
    presentations
        .iter()
        .filter(|p| {
            p.switch == switch
                && p.profile == profile
                && p.from_ns <= at_ns
                && p.to_ns.is_none_or(|end| end > at_ns)
        })
        .map(|p| p.from_ns)
        .max()
}

/// May a write to `profile` have taken effect between `lo_ns` and `hi_ns` (invoked before
/// `hi_ns`, not definitely done before `lo_ns`, not definitely refused or failed)?
pub fn written_between(history: &History, profile: &str, lo_ns: u64, hi_ns: u64) -> bool {
    history.iter().any(|op| {
        op.key == profile
            && op.call.is_write()
            && op.invoked_ns < hi_ns
            && match op.outcome.class() {
                OutcomeClass::Failed => false,
                OutcomeClass::Indeterminate => true,
                OutcomeClass::Ok => {
                    op.completed_ns > lo_ns
                        && matches!(
                            op.outcome,
                            Outcome::Written { .. } | Outcome::Deleted { .. }
                        )
                }
            }
    })
}

/// What happened to each profile `isolated` presented when it was cut off at `at_ns`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Takeover {
    /// Presented by the peer afterwards (before `until_ns`) with exactly the same identities.
    pub same: Vec<String>,
    /// Written (updated or deleted) meanwhile, so the peer may rightly present other
    /// identities or nothing; the checkers of the final state judge those.
    pub changed: Vec<String>,
    /// Neither: violations.
    pub violations: Vec<String>,
}

pub fn takeover(
    presentations: &[Presentation],
    isolated: &str,
    peer: &str,
    at_ns: u64,
    until_ns: u64,
    history: &History,
) -> (usize, Takeover) {
    let before = presented_at(presentations, isolated, at_ns);
    let mut out = Takeover::default();
    for (profile, identities) in &before {
        let since = presented_since(presentations, isolated, profile, at_ns).unwrap_or(at_ns);
        let taken = first_presented_after(presentations, peer, profile, at_ns)
            .filter(|(from, _)| *from <= until_ns);
        match taken {
            Some((_, ids)) if &ids == identities => out.same.push(profile.clone()),
            _ if written_between(history, profile, since, until_ns) => {
                out.changed.push(profile.clone())
            }
            Some((_, ids)) => out.violations.push(format!(
                "profile {profile}: {isolated} presented {identities:?}, {peer} took over with \
                 {ids:?}, and no write changed it"
            )),
            None => out.violations.push(format!(
                "profile {profile}, presented by {isolated} when it was isolated, was not \
                 presented by {peer} before the heal, and no write changed it"
            )),
        }
    }
    (before.len(), out)
}

/// The takeover as a verdict: every profile `isolated` presented when cut off is presented by
/// `peer` before the heal with the same identities, unless a write changed it meanwhile.
pub fn check_takeover(
    presentations: &[Presentation],
    isolated: &str,
    peer: &str,
    at_ns: u64,
    until_ns: u64,
    history: &History,
) -> Verdict {
    let (count, t) = takeover(presentations, isolated, peer, at_ns, until_ns, history);
    if count == 0 {
        return Verdict::Inconclusive {
            reason: format!("{isolated} presented nothing when it was isolated"),
        };
    }
    if t.violations.is_empty() && t.same.is_empty() {
        return Verdict::Inconclusive {
            reason: format!(
                "every profile {isolated} presented was written during the isolation: nothing \
                 shows a takeover"
            ),
        };
    }
    Verdict::from_violations(
        t.violations,
        format!(
            "{} profile(s) of {isolated} taken over by {peer} with the same identities, {} \
             changed by writes meanwhile",
            t.same.len(),
            t.changed.len()
        ),
    )
}

/// Each unit's switch state, read through its API on the unit host's loopback from a thread
/// inside that host's namespace (the only place it is reachable). Unit name -> state or error.
pub async fn read_switch_states(
    cluster: &Cluster,
) -> BTreeMap<String, anyhow::Result<SwitchState>> {
    let mut threads = Vec::new();
    for node in cluster.nodes.iter().filter(|n| n.spec.is_unit) {
        let ns = cluster.network.host(node.spec.name).ns.clone();
        let name = node.spec.name.to_string();
        let thread = crate::netns::spawn_in_netns(&ns, "switch-state", move || async move {
            let driver = SimDriver::connect_lazy(&format!("127.0.0.1:{SWITCH_PORT}"))
                .context("switch address")?;
            driver.state().await.context("GetState")
        });
        threads.push((name, thread));
    }
    let mut out = BTreeMap::new();
    for (name, thread) in threads {
        let state = match thread {
            Ok(handle) => tokio::task::spawn_blocking(move || handle.join())
                .await
                .map_err(anyhow::Error::from)
                .and_then(|joined| {
                    joined.map_err(|_| anyhow::anyhow!("the switch-state thread panicked"))?
                }),
            Err(e) => Err(e),
        };
        out.insert(name, state);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shown(switch: &str, profile: &str, id: &str, from: u64, to: Option<u64>) -> Presentation {
        Presentation {
            switch: switch.into(),
            identity: id.into(),
            profile: profile.into(),
            from_ns: from,
            to_ns: to,
        }
    }

    const MS: u64 = 1_000_000;

    #[test]
    fn failover_is_the_last_profile_presented_by_the_peer() {
        let p = [
            shown("unit-a", "p1", "m1", 0, Some(100 * MS)),
            shown("unit-a", "p2", "m2", 0, Some(100 * MS)),
            shown("unit-b", "p1", "m1", 1_200 * MS, None),
            shown("unit-b", "p2", "m2", 1_500 * MS, None),
        ];
        let fault = |unit: &str, peer: &str, at| UnitFault {
            at_ns: at,
            unit: unit.into(),
            peer: peer.into(),
        };
        let (d, none) = failover_durations(
            &p,
            &[
                fault("unit-a", "unit-b", 50 * MS),
                // unit-b presented nothing then: not a failover.
                fault("unit-b", "unit-a", 50 * MS),
            ],
        );
        assert_eq!(d, vec![1_450]);
        assert_eq!(none, 0);
        let (d, none) = failover_durations(&p, &[fault("unit-b", "unit-a", 2_000 * MS)]);
        assert!(d.is_empty());
        assert_eq!(none, 1);
    }

    #[test]
    fn takeover_must_keep_identities() {
        let good = [
            shown("unit-a", "p1", "m1", 0, Some(900 * MS)),
            shown("unit-b", "p1", "m1", 1_000 * MS, None),
        ];
        let end = 5_000 * MS;
        assert!(check_takeover(&good, "unit-a", "unit-b", 10 * MS, end, &Vec::new()).is_pass());
        let changed = [
            shown("unit-a", "p1", "m1", 0, Some(900 * MS)),
            shown("unit-b", "p1", "m9", 1_000 * MS, None),
        ];
        assert!(matches!(
            check_takeover(&changed, "unit-a", "unit-b", 10 * MS, end, &Vec::new()),
            Verdict::Fail { .. }
        ));
        let never = [shown("unit-a", "p1", "m1", 0, None)];
        assert!(matches!(
            check_takeover(&never, "unit-a", "unit-b", 10 * MS, end, &Vec::new()),
            Verdict::Fail { .. }
        ));
        // A profile deleted during the isolation is not owed a takeover.
        let deleted = vec![crate::history::Operation {
            id: 1,
            client: 0,
            key: "p1".into(),
            call: crate::history::Call::Delete {
                expected_revision: 0,
            },
            endpoint: "x".into(),
            invoked_ns: 500 * MS,
            completed_ns: 600 * MS,
            outcome: Outcome::Deleted { revision: 9 },
        }];
        assert!(matches!(
            check_takeover(&never, "unit-a", "unit-b", 10 * MS, end, &deleted),
            Verdict::Inconclusive { .. }
        ));
        let both = [
            shown("unit-a", "p1", "m1", 0, None),
            shown("unit-a", "p2", "m2", 0, None),
            shown("unit-b", "p2", "m2", 1_000 * MS, None),
        ];
        assert!(check_takeover(&both, "unit-a", "unit-b", 10 * MS, end, &deleted).is_pass());
    }
}
