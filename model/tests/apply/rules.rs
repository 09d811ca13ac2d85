//! Every way `apply` refuses: profiles, pools, members and the limits.

use crate::support::*;

#[test]
fn every_rejection_of_profiles() {
    let mut cluster = with_pools();
    cluster.ok(create(spec(
        "taken",
        vec![vnic("eth0")],
        vec![vhba("hba0")],
    )));
    let held_mac = mac_n(0);
    let held_wwn = wwn_n(1);

    type Check = fn(&Rejection) -> bool;
    let cases: Vec<(&str, Command, Check)> = vec![
        (
            "static validation runs inside apply",
            create(spec(
                "web",
                vec![VNicSpec {
                    vlan: Some(4095),
                    ..vnic("eth0")
                }],
                vec![],
            )),
            |r| matches!(r, Rejection::InvalidArgument { field, value, .. } if field == "vnics[0].vlan" && value == "4095"),
        ),
        (
            "create over an existing name",
            create(spec("taken", vec![], vec![])),
            |r| {
                *r == Rejection::AlreadyExists {
                    kind: "profile".into(),
                    name: "taken".into(),
                }
            },
        ),
        (
            "explicit MAC held elsewhere",
            create(spec(
                "web",
                vec![VNicSpec {
                    mac: Some(mac_n(0)),
                    ..vnic("eth0")
                }],
                vec![],
            )),
            |r| {
                *r == Rejection::IdentityInUse {
                    identity: "02:00:00:00:00:00".into(),
                    owner: "taken".into(),
                }
            },
        ),
        (
            "explicit WWN held elsewhere, as the other kind of name",
            create(spec(
                "web",
                vec![],
                vec![VHbaSpec {
                    wwpn: Some(wwn_n(1)),
                    ..vhba("hba0")
                }],
            )),
            |r| {
                *r == Rejection::IdentityInUse {
                    identity: "20:00:00:00:00:00:00:01".into(),
                    owner: "taken".into(),
                }
            },
        ),
        (
            "update of a missing profile",
            update(spec("ghost", vec![], vec![]), None),
            |r| {
                *r == Rejection::NotFound {
                    kind: "profile".into(),
                    name: "ghost".into(),
                }
            },
        ),
        (
            "delete of a missing profile",
            delete("ghost", Some(1)),
            |r| {
                *r == Rejection::NotFound {
                    kind: "profile".into(),
                    name: "ghost".into(),
                }
            },
        ),
        (
            "named pool missing",
            create(spec(
                "web",
                vec![VNicSpec {
                    pool: Some("nope".into()),
                    ..vnic("eth0")
                }],
                vec![],
            )),
            |r| {
                *r == Rejection::NotFound {
                    kind: "pool".into(),
                    name: "nope".into(),
                }
            },
        ),
        (
            "named pool of the other kind",
            create(spec(
                "web",
                vec![VNicSpec {
                    pool: Some("wwns".into()),
                    ..vnic("eth0")
                }],
                vec![],
            )),
            |r| {
                matches!(r, Rejection::InvalidArgument { field, value, reason }
                if field == "vnics[0].pool" && value == "wwns" && reason.contains("is a WWN pool, but vnics[0].mac needs a MAC"))
            },
        ),
        (
            "a failure late in the request undoes nothing because nothing was done",
            create(spec(
                "web",
                vec![vnic("eth0"), vnic("eth1")],
                vec![VHbaSpec {
                    pool: Some("macs".into()),
                    ..vhba("hba0")
                }],
            )),
            |r| matches!(r, Rejection::InvalidArgument { field, .. } if field == "vhbas[0].pool"),
        ),
    ];
    for (what, command, check) in cases {
        let rejection = cluster.rejected(command);
        assert!(check(&rejection), "{what}: {rejection:?}");
    }
    assert_eq!(cluster.state.owner_of_mac(held_mac), Some("taken"));
    assert_eq!(cluster.state.owner_of_wwn(held_wwn), Some("taken"));
    assert_eq!(cluster.state.pool_usage("macs").map(|u| u.used), Some(1));
}

#[test]
fn no_pool_of_the_kind() {
    let mut cluster = Cluster::new();
    cluster.ok(mac_pool("macs", 0, 3));
    assert_eq!(
        cluster.rejected(create(spec("web", vec![vnic("eth0")], vec![vhba("hba0")]))),
        Rejection::NoPool {
            kind: IdentityKind::Wwn,
            field: "vhbas[0].wwpn".into()
        }
    );
    // A vHBA with both names given needs no pool.
    cluster.ok(create(spec(
        "web",
        vec![vnic("eth0")],
        vec![VHbaSpec {
            wwpn: Some(wwn_n(0)),
            wwnn: Some(wwn_n(1)),
            ..vhba("hba0")
        }],
    )));
}

#[test]
fn pool_rules() {
    let mut cluster = with_pools();
    let rejection = cluster.rejected(mac_pool("overlap", 15, 20));
    match rejection {
        Rejection::RangeOverlaps { pool, .. } => assert_eq!(pool, "macs"),
        other => panic!("expected RangeOverlaps, got {other:?}"),
    }
    // The same numbers as the MAC pool, but WWNs of another NAA: no overlap with any pool.
    cluster.ok(Command::CreatePool(PoolSpec {
        name: "naa5".into(),
        range: PoolRange::Wwn {
            first: wwn("50:00:00:00:00:00:00:00"),
            last: wwn("50:00:00:00:00:00:00:0f"),
        },
    }));
    cluster.ok(mac_pool("adjacent", 16, 20));
    assert_eq!(
        cluster.rejected(mac_pool("macs", 100, 101)),
        Rejection::AlreadyExists {
            kind: "pool".into(),
            name: "macs".into()
        }
    );
    assert!(matches!(
        cluster.rejected(mac_pool("backwards", 30, 29)),
        Rejection::InvalidArgument { field, .. } if field == "range"
    ));
    assert_eq!(
        cluster.rejected(Command::DeletePool {
            name: "ghost".into()
        }),
        Rejection::NotFound {
            kind: "pool".into(),
            name: "ghost".into()
        }
    );

    // "adjacent" comes first by name, so name the pool to allocate from.
    let from_macs = VNicSpec {
        pool: Some("macs".into()),
        ..vnic("eth0")
    };
    cluster.ok(create(spec("web", vec![from_macs], vec![])));
    match cluster.rejected(Command::DeletePool {
        name: "macs".into(),
    }) {
        Rejection::FailedPrecondition { reason } => {
            assert!(
                reason.contains("hold 1 of its identities")
                    && reason.contains("MAC 02:00:00:00:00:00")
                    && reason.contains("\"web\""),
                "{reason}"
            );
        }
        other => panic!("expected FailedPrecondition, got {other:?}"),
    }
    cluster.ok(delete("web", None));
    assert_eq!(
        cluster.ok(Command::DeletePool {
            name: "macs".into()
        }),
        Outcome::PoolDeleted {
            name: "macs".into()
        }
    );
    assert_eq!(cluster.state.pool("macs"), None);
    // Its range is free for a new pool again.
    cluster.ok(mac_pool("macs-again", 0, 15));
}

#[test]
fn pool_usage_and_near_exhaustion_at_ninety_percent() {
    let mut cluster = Cluster::new();
    cluster.ok(mac_pool("ten", 0, 9));
    cluster.ok(wwn_pool("wwns", 0, 99));
    let mut profile = spec(
        "web",
        (0..8).map(|i| vnic(&format!("eth{i}"))).collect(),
        vec![],
    );
    cluster.ok(create(profile.clone()));
    let usage = cluster.state.pool_usage("ten").expect("pool exists");
    assert_eq!(
        (usage.kind, usage.size, usage.used),
        (IdentityKind::Mac, 10, 8)
    );
    assert!(!usage.near_exhaustion);
    profile.name = "db".into();
    profile.vnics.truncate(1);
    cluster.ok(create(profile));
    let usage = cluster.state.pool_usage("ten").expect("pool exists");
    assert_eq!(usage.used, 9);
    assert!(usage.near_exhaustion);
    let all = cluster.state.pools_usage();
    let names: Vec<&str> = all.iter().map(|u| u.name.as_str()).collect();
    assert_eq!(names, ["ten", "wwns"]);
    assert_eq!((all[1].used, all[1].near_exhaustion), (0, false));
    assert_eq!(cluster.state.pool_usage("ghost"), None);
}

#[test]
fn members() {
    let mut cluster = Cluster::new();
    assert_eq!(
        cluster.ok(Command::PutMember(member(1, "unit-a"))),
        Outcome::Member(member(1, "unit-a"))
    );
    cluster.ok(Command::PutMember(member(2, "unit-b")));
    // Upsert by id: a node refreshing itself may change anything, its name included.
    let mut refreshed = member(1, "unit-a2");
    refreshed.capacity = 12;
    cluster.ok(Command::PutMember(refreshed.clone()));
    assert_eq!(cluster.state.member(1), Some(&refreshed));
    assert_eq!(
        cluster.rejected(Command::PutMember(member(3, "unit-b"))),
        Rejection::AlreadyExists {
            kind: "member".into(),
            name: "unit-b".into()
        }
    );
    let mut witness = member(3, "witness");
    witness.role = Role::Witness;
    assert!(matches!(
        cluster.rejected(Command::PutMember(witness.clone())),
        Rejection::InvalidArgument { field, .. } if field == "capacity"
    ));
    witness.capacity = 0;
    witness.cabling.clear();
    cluster.ok(Command::PutMember(witness));
    let ids: Vec<u64> = cluster.state.members().map(|m| m.id).collect();
    assert_eq!(ids, [1, 2, 3]);
    assert_eq!(
        cluster.ok(Command::RemoveMember { id: 2 }),
        Outcome::MemberRemoved { id: 2 }
    );
    assert_eq!(
        cluster.rejected(Command::RemoveMember { id: 2 }),
        Rejection::NotFound {
            kind: "member".into(),
            name: "2".into()
        }
    );
}

#[test]
fn limits_on_pools_members_and_profiles() {
    let mut cluster = Cluster::new();
    for i in 0..POOLS_MAX as u64 {
        cluster.ok(mac_pool(&format!("pool-{i:02}"), i * 2, i * 2 + 1));
    }
    assert_eq!(
        cluster.rejected(mac_pool("one-more", 1000, 1001)),
        Rejection::LimitExceeded {
            what: "pools".into(),
            limit: POOLS_MAX as u64
        }
    );

    for id in 0..MEMBERS_MAX as u64 {
        cluster.ok(Command::PutMember(member(id, &format!("unit-{id}"))));
    }
    assert_eq!(
        cluster.rejected(Command::PutMember(member(99, "unit-99"))),
        Rejection::LimitExceeded {
            what: "members".into(),
            limit: MEMBERS_MAX as u64
        }
    );
    // Refreshing an existing member is not growth.
    cluster.ok(Command::PutMember(member(0, "unit-0")));
}

#[test]
fn profile_limit() {
    // Applied directly: checking invariants after each of 4096 creates would be quadratic.
    let mut state = State::default();
    let request = |name: String| Request {
        actor: "tester".into(),
        command: create(spec(&name, vec![], vec![])),
        trace: None,
        on_behalf_of: None,
    };
    for i in 0..PROFILES_MAX {
        let revision = i as Revision + 1;
        apply(&mut state, revision, &request(format!("p{i}"))).expect("below the limit");
    }
    let before = state.clone();
    assert_eq!(
        apply(
            &mut state,
            PROFILES_MAX as Revision + 1,
            &request("over".into())
        ),
        Err(Rejection::LimitExceeded {
            what: "profiles".into(),
            limit: PROFILES_MAX as u64
        })
    );
    assert_eq!(state, before);
    assert_eq!(state.check_invariants(), Ok(()));
}
