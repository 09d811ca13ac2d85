//! Placement through `apply`: where a profile may be given, all-or-none batches, drain, reports,
//! and invariant 5 ("a draining unit is given no profile") under random command sequences.

use std::collections::BTreeMap;

use proptest::prelude::*;
use vnet_model::{
    apply, Command, Failback, Member, Move, Outcome, PlacementChange, ProfileSpec, Rejection,
    Request, Revision, Role, State, VNicSpec,
};

fn member(id: u64, name: &str, role: Role, servers: &[&str], capacity: u32) -> Member {
    Member {
        id,
        name: name.into(),
        role,
        api_addr: format!("127.0.0.1:{}", 7000 + id),
        peer_addr: format!("127.0.0.1:{}", 7100 + id),
        cabling: servers
            .iter()
            .enumerate()
            .map(|(i, s)| (s.to_string(), i as u8 + 1))
            .collect(),
        capacity,
        protocol: 0,
    }
}

fn profile(name: &str, server: &str, mac_last: u8) -> ProfileSpec {
    ProfileSpec {
        name: name.into(),
        server: server.into(),
        vnics: vec![VNicSpec {
            name: "eth0".into(),
            mac: Some(
                format!("02:00:00:00:00:{mac_last:02x}")
                    .parse()
                    .expect("mac"),
            ),
            network: "prod".into(),
            vlan: None,
            pool: None,
        }],
        vhbas: vec![],
        preferred_unit: None,
        failback: Failback::Manual,
    }
}

fn place(profile: &str, unit: &str) -> PlacementChange {
    PlacementChange {
        profile: profile.into(),
        unit: Some(unit.into()),
        moving: None,
        reason: "test".into(),
        failed_over_from: None,
    }
}

struct Cluster {
    state: State,
    revision: Revision,
}

impl Cluster {
    fn new() -> Self {
        let mut cluster = Cluster {
            state: State::default(),
            revision: 0,
        };
        for m in [
            member(1, "unit-a", Role::Unit, &["s1", "s2", "s3"], 2),
            member(2, "unit-b", Role::Unit, &["s1", "s2"], 5),
            member(3, "witness", Role::Witness, &[], 0),
        ] {
            cluster.run(Command::PutMember(m)).expect("member");
        }
        for (i, (name, server)) in [("p1", "s1"), ("p2", "s2"), ("p3", "s3")]
            .iter()
            .enumerate()
        {
            cluster
                .run(Command::CreateProfile(profile(name, server, i as u8 + 1)))
                .expect("profile");
        }
        cluster
    }

    fn run(&mut self, command: Command) -> Result<Outcome, Rejection> {
        let before = self.state.clone();
        self.revision += 1;
        let result = apply(
            &mut self.state,
            self.revision,
            &Request {
                actor: "t".into(),
                command,
                trace: None,
                on_behalf_of: None,
            },
        );
        if result.is_err() {
            assert_eq!(self.state, before, "a refused command changed the state");
        }
        self.state.check_invariants().expect("invariants");
        result
    }
}

#[test]
fn a_profile_goes_only_to_a_cabled_unit_with_room_that_is_not_draining() {
    let mut c = Cluster::new();
    c.run(Command::Place {
        changes: vec![place("p1", "unit-a")],
    })
    .expect("place on a cabled unit");
    assert_eq!(
        c.state.placement("p1").and_then(|p| p.unit.as_deref()),
        Some("unit-a")
    );

    let cases = [
        (place("p3", "unit-b"), "not cabled"),
        (place("p1", "witness"), "witness"),
        (place("p1", "nope"), "does not exist"),
    ];
    for (change, needle) in cases {
        let err = c
            .run(Command::Place {
                changes: vec![change],
            })
            .expect_err(needle);
        assert!(err.to_string().contains(needle), "{err}");
    }

    c.run(Command::Place {
        changes: vec![place("p2", "unit-a")],
    })
    .expect("second profile fits capacity 2");
    let err = c
        .run(Command::Place {
            changes: vec![place("p3", "unit-a")],
        })
        .expect_err("over capacity");
    assert!(err.to_string().contains("capacity of 2"), "{err}");

    c.run(Command::SetDrain {
        unit: "unit-b".into(),
        draining: true,
    })
    .expect("drain");
    let err = c
        .run(Command::Place {
            changes: vec![place("p1", "unit-b")],
        })
        .expect_err("draining");
    assert!(err.to_string().contains("draining"), "{err}");
    // A planned move toward a draining unit is refused too.
    let err = c
        .run(Command::Place {
            changes: vec![PlacementChange {
                profile: "p1".into(),
                unit: None,
                moving: Some(Move {
                    from: "unit-a".into(),
                    to: "unit-b".into(),
                }),
                reason: "move".into(),
                failed_over_from: None,
            }],
        })
        .expect_err("moving to a draining unit");
    assert!(err.to_string().contains("draining"), "{err}");
    c.run(Command::SetDrain {
        unit: "unit-b".into(),
        draining: false,
    })
    .expect("undrain");
    c.run(Command::Place {
        changes: vec![place("p1", "unit-b")],
    })
    .expect("undrained unit takes profiles again");
}

#[test]
fn a_batch_is_all_or_nothing_and_judged_as_a_whole() {
    let mut c = Cluster::new();
    c.run(Command::Place {
        changes: vec![place("p1", "unit-a"), place("p2", "unit-a")],
    })
    .expect("fill unit-a");
    // Moving p1 away and p3 in, in one batch, keeps unit-a within capacity.
    c.run(Command::Place {
        changes: vec![place("p1", "unit-b"), place("p3", "unit-a")],
    })
    .expect("swap within capacity");
    // One bad change refuses the whole batch.
    let before = c.state.clone();
    c.run(Command::Place {
        changes: vec![place("p1", "unit-a"), place("p3", "unit-b")],
    })
    .expect_err("p3 is not cabled to unit-b");
    assert_eq!(c.state, before);
}

#[test]
fn deleting_a_profile_or_a_member_forgets_its_placement_data() {
    let mut c = Cluster::new();
    c.run(Command::Place {
        changes: vec![place("p1", "unit-a")],
    })
    .expect("place");
    c.run(Command::ReportPresented {
        unit: "unit-a".into(),
        profiles: BTreeMap::from([("p1".to_string(), 4)]),
        as_of: 0,
    })
    .expect("report");
    assert_eq!(c.state.presented_by("unit-a").map(|p| p.len()), Some(1));
    c.run(Command::DeleteProfile {
        name: "p1".into(),
        expected_revision: None,
    })
    .expect("delete");
    assert!(c.state.placement("p1").is_none());
    c.run(Command::RemoveMember { id: 1 }).expect("remove");
    assert!(c.state.presented_by("unit-a").is_none());
    let err = c
        .run(Command::ReportPresented {
            unit: "witness".into(),
            profiles: BTreeMap::new(),
            as_of: 0,
        })
        .expect_err("a witness presents nothing");
    assert!(err.to_string().contains("witness"), "{err}");
}

#[test]
fn placement_state_survives_a_snapshot_round_trip() {
    let mut c = Cluster::new();
    c.run(Command::Place {
        changes: vec![place("p1", "unit-a")],
    })
    .expect("place");
    c.run(Command::SetDrain {
        unit: "unit-b".into(),
        draining: true,
    })
    .expect("drain");
    let json = serde_json::to_string(&c.state).expect("serialize");
    let restored: State = serde_json::from_str(&json).expect("deserialize");
    assert_eq!(restored, c.state);
    assert!(restored.is_draining("unit-b"));
}

#[test]
fn a_failover_needs_the_revocation_in_force_and_ends_it() {
    let mut c = Cluster::new();
    c.run(Command::Place {
        changes: vec![place("p1", "unit-a")],
    })
    .expect("place");
    c.run(Command::ReportPresented {
        unit: "unit-a".into(),
        profiles: BTreeMap::from([("p1".to_owned(), 1)]),
        as_of: c.revision,
    })
    .expect("report");
    let mut moved = place("p1", "unit-b");
    moved.failed_over_from = Some("unit-a".into());
    let fail_over = |epoch| Command::FailOver {
        unit: "unit-a".into(),
        epoch,
        changes: vec![moved.clone()],
    };
    // No revocation, no failover.
    let err = c.run(fail_over(1)).expect_err("not revoked");
    assert!(err.to_string().contains("not revoked"), "{err}");
    // A witness holds no lease to revoke.
    let err = c
        .run(Command::RevokeLease {
            unit: "witness".into(),
        })
        .expect_err("a witness");
    assert!(err.to_string().contains("witness"), "{err}");
    let Ok(Outcome::LeaseRevoked { epoch, .. }) = c.run(Command::RevokeLease {
        unit: "unit-a".into(),
    }) else {
        panic!("revocation refused");
    };
    assert_eq!(c.state.revoked_at("unit-a"), Some(epoch));
    let err = c
        .run(Command::RevokeLease {
            unit: "unit-a".into(),
        })
        .expect_err("already revoked");
    assert!(err.to_string().contains("already revoked"), "{err}");
    // Another epoch's failover is stale; a change of a profile not on the unit is refused.
    let err = c.run(fail_over(epoch + 1)).expect_err("stale epoch");
    assert!(err.to_string().contains("in force"), "{err}");
    let err = c
        .run(Command::FailOver {
            unit: "unit-a".into(),
            epoch,
            changes: vec![place("p2", "unit-b")],
        })
        .expect_err("p2 is not on unit-a");
    assert!(err.to_string().contains("not placed on"), "{err}");
    // The snapshot keeps the revocation.
    let json = serde_json::to_string(&c.state).expect("serialize");
    let restored: State = serde_json::from_str(&json).expect("deserialize");
    assert_eq!(restored.revoked_at("unit-a"), Some(epoch));
    c.run(fail_over(epoch))
        .expect("the failover of the revocation in force");
    assert_eq!(c.state.revoked_at("unit-a"), None, "the revocation ended");
    assert_eq!(
        c.state.placement("p1").and_then(|p| p.unit.as_deref()),
        Some("unit-b")
    );
    assert!(
        c.state.presented_by("unit-a").is_some_and(|p| p.is_empty()),
        "the fenced unit's report is cleared"
    );
    // A late duplicate of the same failover changes nothing.
    let err = c.run(fail_over(epoch)).expect_err("a duplicate");
    assert!(err.to_string().contains("not revoked"), "{err}");
}

#[derive(Debug, Clone)]
enum Step {
    Drain(usize, bool),
    Place(usize, usize),
    Move(usize, usize, usize),
}

const UNITS: [&str; 3] = ["unit-a", "unit-b", "witness"];
const PROFILES: [&str; 3] = ["p1", "p2", "p3"];

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        (0..3usize, any::<bool>()).prop_map(|(u, d)| Step::Drain(u, d)),
        (0..3usize, 0..3usize).prop_map(|(p, u)| Step::Place(p, u)),
        (0..3usize, 0..3usize, 0..3usize).prop_map(|(p, f, t)| Step::Move(p, f, t)),
    ]
}

proptest! {
    /// Invariant 5: whatever the sequence, an accepted placement never gives a profile to a unit
    /// that was draining when it was accepted.
    #[test]
    fn a_draining_unit_is_never_given_a_profile(steps in proptest::collection::vec(step(), 1..40)) {
        let mut c = Cluster::new();
        for step in steps {
            let command = match &step {
                Step::Drain(u, d) => Command::SetDrain { unit: UNITS[*u].into(), draining: *d },
                Step::Place(p, u) => Command::Place { changes: vec![place(PROFILES[*p], UNITS[*u])] },
                Step::Move(p, f, t) => Command::Place { changes: vec![PlacementChange {
                    profile: PROFILES[*p].into(),
                    unit: None,
                    moving: Some(Move { from: UNITS[*f].into(), to: UNITS[*t].into() }),
                    reason: "move".into(),
                    failed_over_from: None,
                }] },
            };
            let draining_before: Vec<bool> = UNITS.iter().map(|u| c.state.is_draining(u)).collect();
            if let Ok(Outcome::Placed { profiles }) = c.run(command) {
                for name in profiles {
                    let target = c.state.placement(&name).and_then(|p| p.claimed_unit().map(str::to_owned));
                    if let Some(target) = target {
                        let index = UNITS.iter().position(|u| *u == target).expect("known unit");
                        prop_assert!(!draining_before[index], "{name} given to draining {target}");
                        prop_assert_ne!(target.as_str(), "witness");
                    }
                }
            }
        }
    }
}
