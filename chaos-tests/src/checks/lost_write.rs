//! No lost acknowledged write (invariant 3), and replicas that agree once healed.
//!
//! After every fault is healed the harness reads each profile with a linearizable read. Every
//! acknowledged write must still show: the final value is that write's, or the effect of a
//! write that may have come after it (acknowledged later, or indeterminate: its effect may
//! land at any time). A final value nobody wrote, a deleted profile that came back, or an
//! acknowledged profile that vanished are lost writes.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::checks::Verdict;
use crate::history::{Call, History, Operation, Outcome, ProfileValue};

/// A profile as a final read found it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stored {
    pub value: ProfileValue,
    pub revision: u64,
}

/// Every profile the workload touched, as the final read found it (`None`: absent).
pub type FinalState = BTreeMap<String, Option<Stored>>;

fn acknowledged(op: &Operation) -> bool {
    matches!(
        op.outcome,
        Outcome::Written { .. } | Outcome::Deleted { .. }
    )
}

/// Could `later` have taken effect after `earlier` did? Not if `later` was acknowledged before
/// `earlier` was even invoked. An indeterminate write's effect can land at any time.
fn may_follow(later: &Operation, earlier: &Operation) -> bool {
    match later.outcome {
        Outcome::Indeterminate { .. } => true,
        _ => later.completed_ns >= earlier.invoked_ns,
    }
}

/// Does the final read of every profile reflect every acknowledged write on it?
pub fn check(history: &History, final_state: &FinalState) -> Verdict {
    let mut violations = Vec::new();
    let mut by_key: BTreeMap<&str, Vec<&Operation>> = BTreeMap::new();
    for op in history.iter().filter(|op| op.call.is_write()) {
        if acknowledged(op) || matches!(op.outcome, Outcome::Indeterminate { .. }) {
            by_key.entry(op.key.as_str()).or_default().push(op);
        }
    }
    let mut acked_total = 0usize;
    for (key, writes) in &by_key {
        let acked: Vec<&Operation> = writes.iter().copied().filter(|w| acknowledged(w)).collect();
        acked_total += acked.len();
        if acked.is_empty() {
            continue;
        }
        let Some(final_read) = final_state.get(*key) else {
            violations.push(format!(
                "profile {key}: {} acknowledged write(s) but no final read",
                acked.len()
            ));
            continue;
        };
        // The writes that may have produced what the final read shows.
        let producers: Vec<&Operation> = match final_read {
            Some(stored) => {
                let producers: Vec<&Operation> = writes
                    .iter()
                    .copied()
                    .filter(|w| match (&w.call, &w.outcome) {
                        (
                            Call::Create { value } | Call::Update { value, .. },
                            Outcome::Written { revision },
                        ) => value == &stored.value && *revision == stored.revision,
                        (
                            Call::Create { value } | Call::Update { value, .. },
                            Outcome::Indeterminate { .. },
                        ) => value == &stored.value,
                        _ => false,
                    })
                    .collect();
                if producers.is_empty() {
                    violations.push(format!(
                        "profile {key}: the final read shows revision {} with a value no write \
                         produced at that revision: {:?}",
                        stored.revision, stored.value
                    ));
                    continue;
                }
                producers
            }
            None => writes
                .iter()
                .copied()
                .filter(|w| matches!(w.call, Call::Delete { .. }))
                .collect(),
        };
        for w in &acked {
            let superseded_or_kept = producers.iter().any(|p| p.id == w.id || may_follow(p, w));
            if !superseded_or_kept {
                let shows = match final_read {
                    Some(stored) => format!("revision {} with another value", stored.revision),
                    None => "no profile".to_string(),
                };
                violations.push(format!(
                    "profile {key}: acknowledged {} op #{} (client {}, via {}, {:?}) is lost: \
                     the final read shows {shows}, and no write that could come after it \
                     explains that",
                    w.call.kind(),
                    w.id,
                    w.client,
                    w.endpoint,
                    w.outcome
                ));
            }
            if let (Some(stored), Outcome::Written { revision }) = (final_read, &w.outcome) {
                if stored.revision < *revision {
                    violations.push(format!(
                        "profile {key}: the final read is at revision {}, below acknowledged \
                         op #{} at revision {revision}",
                        stored.revision, w.id
                    ));
                }
            }
        }
    }
    Verdict::from_violations(
        violations,
        format!(
            "{acked_total} acknowledged writes over {} profiles",
            by_key.len()
        ),
    )
}

/// Once healed and caught up, does every node's own (local) state show what the linearizable
/// final read showed? `local` holds each node's last local read.
pub fn check_replicas_agree(
    final_state: &FinalState,
    local: &BTreeMap<String, FinalState>,
) -> Verdict {
    let mut violations = Vec::new();
    for (node, state) in local {
        for (key, want) in final_state {
            let got = state.get(key).cloned().flatten();
            if &got != want {
                violations.push(format!(
                    "{node} holds {key} as {got:?}, the cluster's linearizable read as {want:?}"
                ));
            }
        }
    }
    Verdict::from_violations(
        violations,
        format!(
            "{} nodes agree on {} profiles",
            local.len(),
            final_state.len()
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::Nic;

    fn value(tag: u32) -> ProfileValue {
        ProfileValue {
            server: "srv".into(),
            vnics: vec![Nic {
                name: "eth0".into(),
                mac: format!("02:00:00:00:00:{tag:02x}"),
                network: "n".into(),
                vlan: 1,
            }],
            vhbas: vec![],
        }
    }

    fn op(id: u64, call: Call, invoked: u64, completed: u64, outcome: Outcome) -> Operation {
        Operation {
            id,
            client: 1,
            key: "p1".into(),
            call,
            endpoint: "e".into(),
            invoked_ns: invoked,
            completed_ns: completed,
            outcome,
        }
    }

    fn final_value(tag: u32, revision: u64) -> FinalState {
        BTreeMap::from([(
            "p1".to_string(),
            Some(Stored {
                value: value(tag),
                revision,
            }),
        )])
    }

    fn final_absent() -> FinalState {
        BTreeMap::from([("p1".to_string(), None)])
    }

    #[test]
    fn kept_and_superseded_writes_pass() {
        let h = vec![
            op(
                1,
                Call::Create { value: value(1) },
                0,
                10,
                Outcome::Written { revision: 3 },
            ),
            op(
                2,
                Call::Update {
                    value: value(2),
                    expected_revision: 3,
                },
                20,
                30,
                Outcome::Written { revision: 5 },
            ),
        ];
        assert!(check(&h, &final_value(2, 5)).is_pass());
    }

    #[test]
    fn lost_update_fails() {
        let h = vec![
            op(
                1,
                Call::Create { value: value(1) },
                0,
                10,
                Outcome::Written { revision: 3 },
            ),
            op(
                2,
                Call::Update {
                    value: value(2),
                    expected_revision: 3,
                },
                20,
                30,
                Outcome::Written { revision: 5 },
            ),
        ];
        // The final read still shows the create's value: the acknowledged update is gone.
        let verdict = check(&h, &final_value(1, 3));
        let Verdict::Fail { violations } = &verdict else {
            panic!("a lost write must fail, got {verdict}");
        };
        assert!(
            violations.iter().any(|v| v.contains("op #2")),
            "{violations:?}"
        );
    }

    #[test]
    fn vanished_profile_fails() {
        let h = vec![op(
            1,
            Call::Create { value: value(1) },
            0,
            10,
            Outcome::Written { revision: 3 },
        )];
        assert!(matches!(check(&h, &final_absent()), Verdict::Fail { .. }));
    }

    #[test]
    fn resurrected_profile_fails() {
        let h = vec![
            op(
                1,
                Call::Create { value: value(1) },
                0,
                10,
                Outcome::Written { revision: 3 },
            ),
            op(
                2,
                Call::Delete {
                    expected_revision: 3,
                },
                20,
                30,
                Outcome::Deleted { revision: 4 },
            ),
        ];
        assert!(matches!(
            check(&h, &final_value(1, 3)),
            Verdict::Fail { .. }
        ));
    }

    #[test]
    fn indeterminate_write_may_supersede() {
        let h = vec![
            op(
                1,
                Call::Create { value: value(1) },
                0,
                10,
                Outcome::Written { revision: 3 },
            ),
            op(
                2,
                Call::Update {
                    value: value(2),
                    expected_revision: 0,
                },
                5,
                8,
                Outcome::Indeterminate {
                    reason: "timeout".into(),
                },
            ),
            op(
                3,
                Call::Delete {
                    expected_revision: 0,
                },
                1,
                2,
                Outcome::Indeterminate {
                    reason: "timeout".into(),
                },
            ),
        ];
        assert!(check(&h, &final_value(2, 9)).is_pass());
        assert!(check(&h, &final_absent()).is_pass());
        assert!(check(&h, &final_value(1, 3)).is_pass());
    }

    #[test]
    fn phantom_value_fails() {
        let h = vec![op(
            1,
            Call::Create { value: value(1) },
            0,
            10,
            Outcome::Written { revision: 3 },
        )];
        assert!(matches!(
            check(&h, &final_value(9, 4)),
            Verdict::Fail { .. }
        ));
    }

    #[test]
    fn replicas_must_agree() {
        let want = final_value(1, 3);
        let agree = BTreeMap::from([("unit-a".to_string(), want.clone())]);
        assert!(check_replicas_agree(&want, &agree).is_pass());
        let behind = BTreeMap::from([
            ("unit-a".to_string(), want.clone()),
            ("witness".to_string(), final_absent()),
        ]);
        let verdict = check_replicas_agree(&want, &behind);
        let Verdict::Fail { violations } = &verdict else {
            panic!("a diverged replica must fail, got {verdict}");
        };
        assert!(violations[0].contains("witness"), "{violations:?}");
    }
}
