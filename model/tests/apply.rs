//! `apply` through the public API: every way it refuses, how it allocates, and what it records.
//! Every command goes through `Cluster::run`, which also checks that the invariants hold after it
//! and that a refused command left the state exactly as it was.

use std::collections::BTreeMap;

use vnet_model::limits::{EVENT_HISTORY_MAX, MEMBERS_MAX, POOLS_MAX, PROFILES_MAX};
use vnet_model::{
    apply, Change, Command, Failback, IdentityKind, Mac, Member, Outcome, PoolRange, PoolSpec,
    Profile, ProfileSpec, Rejection, Request, Revision, Role, State, VHbaSpec, VNicSpec, Wwn,
};

struct Cluster {
    state: State,
    next_revision: Revision,
}

impl Cluster {
    fn new() -> Cluster {
        Cluster {
            state: State::default(),
            next_revision: 1,
        }
    }

    fn run_as(&mut self, actor: &str, command: Command) -> Result<Outcome, Rejection> {
        let before = self.state.clone();
        let revision = self.next_revision;
        // Leave gaps, as Raft does for entries that are not commands.
        self.next_revision += 2;
        let request = Request {
            actor: actor.to_owned(),
            command,
            trace: None,
        };
        let result = apply(&mut self.state, revision, &request);
        match &result {
            Ok(_) => assert_eq!(self.state.revision(), revision),
            Err(_) => assert_eq!(self.state, before, "a refused command changed the state"),
        }
        self.state
            .check_invariants()
            .unwrap_or_else(|broken| panic!("after {request:?}: {broken}"));
        result
    }

    fn run(&mut self, command: Command) -> Result<Outcome, Rejection> {
        self.run_as("tester", command)
    }

    fn ok(&mut self, command: Command) -> Outcome {
        let description = format!("{command:?}");
        self.run(command)
            .unwrap_or_else(|rejection| panic!("{description} refused: {rejection}"))
    }

    fn profile(&mut self, command: Command) -> Profile {
        match self.ok(command) {
            Outcome::Profile(profile) => profile,
            other => panic!("expected a profile, got {other:?}"),
        }
    }

    fn rejected(&mut self, command: Command) -> Rejection {
        let description = format!("{command:?}");
        match self.run(command) {
            Err(rejection) => rejection,
            Ok(outcome) => panic!("{description} accepted: {outcome:?}"),
        }
    }
}

fn mac(text: &str) -> Mac {
    text.parse().expect("valid MAC literal")
}

fn wwn(text: &str) -> Wwn {
    text.parse().expect("valid WWN literal")
}

/// `02:00:00:00:00:xx`
fn mac_n(n: u64) -> Mac {
    Mac::from_u64(0x0200_0000_0000 + n).expect("unicast")
}

/// `20:00:00:00:00:00:00:xx`
fn wwn_n(n: u64) -> Wwn {
    Wwn::from_u64(0x2000_0000_0000_0000 + n).expect("NAA 2")
}

fn mac_pool(name: &str, first: u64, last: u64) -> Command {
    Command::CreatePool(PoolSpec {
        name: name.into(),
        range: PoolRange::Mac {
            first: mac_n(first),
            last: mac_n(last),
        },
    })
}

fn wwn_pool(name: &str, first: u64, last: u64) -> Command {
    Command::CreatePool(PoolSpec {
        name: name.into(),
        range: PoolRange::Wwn {
            first: wwn_n(first),
            last: wwn_n(last),
        },
    })
}

fn vnic(name: &str) -> VNicSpec {
    VNicSpec {
        name: name.into(),
        mac: None,
        network: "lan".into(),
        vlan: Some(10),
        pool: None,
    }
}

fn vhba(name: &str) -> VHbaSpec {
    VHbaSpec {
        name: name.into(),
        wwpn: None,
        wwnn: None,
        fabric: "fab-a".into(),
        pool: None,
    }
}

fn spec(name: &str, vnics: Vec<VNicSpec>, vhbas: Vec<VHbaSpec>) -> ProfileSpec {
    ProfileSpec {
        name: name.into(),
        server: format!("srv-{name}"),
        vnics,
        vhbas,
        preferred_unit: None,
        failback: Failback::Manual,
    }
}

fn create(spec: ProfileSpec) -> Command {
    Command::CreateProfile(spec)
}

fn update(spec: ProfileSpec, expected_revision: Option<Revision>) -> Command {
    Command::UpdateProfile {
        spec,
        expected_revision,
    }
}

fn delete(name: &str, expected_revision: Option<Revision>) -> Command {
    Command::DeleteProfile {
        name: name.into(),
        expected_revision,
    }
}

fn macs(profile: &Profile) -> Vec<Mac> {
    profile.vnics.iter().map(|vnic| vnic.mac).collect()
}

fn wwns(profile: &Profile) -> Vec<(Wwn, Wwn)> {
    profile
        .vhbas
        .iter()
        .map(|vhba| (vhba.wwpn, vhba.wwnn))
        .collect()
}

fn member(id: u64, name: &str) -> Member {
    Member {
        id,
        name: name.into(),
        role: Role::Unit,
        api_addr: format!("10.0.0.{id}:7000"),
        peer_addr: format!("10.0.0.{id}:7001"),
        cabling: BTreeMap::from([("srv-a".to_owned(), 1)]),
        capacity: 30,
    }
}

/// A cluster with MAC pool `macs` (02:..:00 to 02:..:0f) and WWN pool `wwns` (20:..:00 to ..:0f).
fn with_pools() -> Cluster {
    let mut cluster = Cluster::new();
    cluster.ok(mac_pool("macs", 0, 15));
    cluster.ok(wwn_pool("wwns", 0, 15));
    cluster
}

#[test]
fn create_allocates_lowest_free_identities_in_spec_order() {
    let mut cluster = with_pools();
    let profile = cluster.profile(create(spec(
        "web-1",
        vec![vnic("eth0"), vnic("eth1")],
        vec![vhba("hba0"), vhba("hba1")],
    )));
    assert_eq!(macs(&profile), [mac_n(0), mac_n(1)]);
    // WWPN before WWNN, vHBA by vHBA.
    assert_eq!(wwns(&profile), [(wwn_n(0), wwn_n(1)), (wwn_n(2), wwn_n(3))]);
    assert_eq!(profile.revision, cluster.state.revision());
    assert_eq!(profile.created_revision, profile.revision);
    assert_eq!(cluster.state.profile("web-1"), Some(&profile));
    assert_eq!(cluster.state.owner_of_mac(mac_n(1)), Some("web-1"));
    assert_eq!(cluster.state.owner_of_wwn(wwn_n(3)), Some("web-1"));
    assert_eq!(cluster.state.owner_of_wwn(wwn_n(4)), None);

    let next = cluster.profile(create(spec(
        "web-2",
        vec![vnic("eth0")],
        vec![vhba("hba0")],
    )));
    assert_eq!(macs(&next), [mac_n(2)]);
    assert_eq!(wwns(&next), [(wwn_n(4), wwn_n(5))]);
}

#[test]
fn freed_identities_are_reused_lowest_first() {
    let mut cluster = with_pools();
    for name in ["a", "b", "c"] {
        cluster.ok(create(spec(name, vec![vnic("eth0")], vec![])));
    }
    cluster.ok(delete("b", None));
    cluster.ok(delete("a", None));
    assert_eq!(cluster.state.owner_of_mac(mac_n(0)), None);
    let d = cluster.profile(create(spec(
        "d",
        vec![vnic("eth0"), vnic("eth1"), vnic("eth2")],
        vec![],
    )));
    assert_eq!(macs(&d), [mac_n(0), mac_n(1), mac_n(3)]);
}

#[test]
fn explicit_identities_are_skipped_by_allocation_and_count_as_used() {
    let mut cluster = with_pools();
    let explicit = cluster.profile(create(spec(
        "explicit",
        vec![VNicSpec {
            mac: Some(mac_n(0)),
            ..vnic("eth0")
        }],
        vec![VHbaSpec {
            wwnn: Some(wwn_n(0)),
            ..vhba("hba0")
        }],
    )));
    // The WWPN was allocated around the explicit WWNN of the same request.
    assert_eq!(wwns(&explicit), [(wwn_n(1), wwn_n(0))]);
    let usage = cluster.state.pool_usage("macs").expect("pool exists");
    assert_eq!((usage.size, usage.used), (16, 1));
    let allocated = cluster.profile(create(spec("allocated", vec![vnic("eth0")], vec![])));
    assert_eq!(macs(&allocated), [mac_n(1)]);

    // An explicit identity outside every pool is fine, and counts against no pool.
    let outside = mac("0a:00:00:00:00:01");
    cluster.ok(create(spec(
        "outside",
        vec![VNicSpec {
            mac: Some(outside),
            ..vnic("eth0")
        }],
        vec![],
    )));
    assert_eq!(cluster.state.owner_of_mac(outside), Some("outside"));
    assert_eq!(cluster.state.pool_usage("macs").map(|u| u.used), Some(2));
}

#[test]
fn a_new_pool_counts_identities_already_held_in_its_range() {
    let mut cluster = Cluster::new();
    cluster.ok(create(spec(
        "early",
        vec![VNicSpec {
            mac: Some(mac_n(1)),
            ..vnic("eth0")
        }],
        vec![],
    )));
    cluster.ok(mac_pool("macs", 0, 3));
    assert_eq!(cluster.state.pool_usage("macs").map(|u| u.used), Some(1));
    let late = cluster.profile(create(spec("late", vec![vnic("a"), vnic("b")], vec![])));
    assert_eq!(macs(&late), [mac_n(0), mac_n(2)]);
}

#[test]
fn pools_without_a_name_are_tried_in_name_order_and_named_pools_are_used_alone() {
    let mut cluster = Cluster::new();
    // Created out of name order, and with "a-pool" at the higher range, so neither creation order
    // nor range order can pass for name order.
    cluster.ok(mac_pool("b-pool", 0, 0));
    cluster.ok(mac_pool("a-pool", 8, 8));
    cluster.ok(mac_pool("c-pool", 4, 5));
    let first = cluster.profile(create(spec("first", vec![vnic("eth0")], vec![])));
    assert_eq!(macs(&first), [mac_n(8)]);
    let second = cluster.profile(create(spec("second", vec![vnic("eth0")], vec![])));
    assert_eq!(macs(&second), [mac_n(0)]);
    let named = cluster.profile(create(spec(
        "named",
        vec![
            VNicSpec {
                pool: Some("c-pool".into()),
                ..vnic("eth0")
            },
            vnic("eth1"),
        ],
        vec![],
    )));
    // eth1 names no pool; a-pool and b-pool are full, so it falls through to c-pool after eth0.
    assert_eq!(macs(&named), [mac_n(4), mac_n(5)]);

    let rejection = cluster.rejected(create(spec("none-left", vec![vnic("eth0")], vec![])));
    assert_eq!(
        rejection,
        Rejection::NoPool {
            kind: IdentityKind::Mac,
            field: "vnics[0].mac".into()
        }
    );
    let rejection = cluster.rejected(create(spec(
        "named-full",
        vec![VNicSpec {
            pool: Some("a-pool".into()),
            ..vnic("eth0")
        }],
        vec![],
    )));
    assert_eq!(
        rejection,
        Rejection::PoolExhausted {
            pool: "a-pool".into()
        }
    );
}

#[test]
fn vhba_pool_serves_both_wwpn_and_wwnn() {
    let mut cluster = with_pools();
    cluster.ok(wwn_pool("wwns-b", 100, 101));
    let profile = cluster.profile(create(spec(
        "san",
        vec![],
        vec![VHbaSpec {
            pool: Some("wwns-b".into()),
            ..vhba("hba0")
        }],
    )));
    assert_eq!(wwns(&profile), [(wwn_n(100), wwn_n(101))]);
    let rejection = cluster.rejected(create(spec(
        "san-2",
        vec![],
        vec![VHbaSpec {
            wwpn: Some(wwn_n(50)),
            pool: Some("wwns-b".into()),
            ..vhba("hba0")
        }],
    )));
    assert_eq!(
        rejection,
        Rejection::PoolExhausted {
            pool: "wwns-b".into()
        }
    );
}

#[test]
fn update_keeps_identities_by_name_and_frees_before_allocating() {
    let mut cluster = Cluster::new();
    cluster.ok(mac_pool("macs", 0, 2));
    cluster.ok(wwn_pool("wwns", 0, 3));
    let created = cluster.profile(create(spec(
        "web",
        vec![vnic("eth0"), vnic("eth1"), vnic("eth2")],
        vec![vhba("hba0"), vhba("hba1")],
    )));
    assert_eq!(macs(&created), [mac_n(0), mac_n(1), mac_n(2)]);

    // The pool is full, so eth3 can only get a MAC because dropping eth1 frees one first. eth2 is
    // listed first now and keeps its MAC; order in the spec does not matter, names do.
    let mut changed = spec(
        "web",
        vec![vnic("eth2"), vnic("eth0"), vnic("eth3")],
        vec![],
    );
    changed.server = "srv-moved".into();
    changed.failback = Failback::Auto;
    changed.vhbas = vec![VHbaSpec {
        wwnn: Some(wwn_n(0)),
        ..vhba("hba1")
    }];
    let updated = cluster.profile(update(changed, Some(created.revision)));
    assert_eq!(macs(&updated), [mac_n(2), mac_n(0), mac_n(1)]);
    // hba1 keeps its WWPN (2) and takes hba0's old WWPN as its explicit WWNN; its old WWNN (3)
    // and hba0's WWNN (1) are freed.
    assert_eq!(wwns(&updated), [(wwn_n(2), wwn_n(0))]);
    assert_eq!(updated.server, "srv-moved");
    assert_eq!(updated.failback, Failback::Auto);
    assert_eq!(updated.created_revision, created.created_revision);
    assert!(updated.revision > created.revision);
    assert_eq!(updated.revision, cluster.state.revision());
    assert_eq!(cluster.state.owner_of_wwn(wwn_n(1)), None);
    assert_eq!(cluster.state.owner_of_wwn(wwn_n(3)), None);
    assert_eq!(cluster.state.pool_usage("wwns").map(|u| u.used), Some(2));
}

#[test]
fn update_moves_an_explicit_identity_within_the_profile() {
    let mut cluster = with_pools();
    let created = cluster.profile(create(spec("web", vec![vnic("eth0")], vec![])));
    let moved = cluster.profile(update(
        spec(
            "web",
            vec![VNicSpec {
                mac: Some(created.vnics[0].mac),
                ..vnic("eth9")
            }],
            vec![],
        ),
        None,
    ));
    assert_eq!(macs(&moved), macs(&created));
    assert_eq!(moved.vnics[0].name, "eth9");

    // But a MAC another vNIC keeps by name cannot be handed out explicitly.
    let rejection = cluster.rejected(update(
        spec(
            "web",
            vec![
                vnic("eth9"),
                VNicSpec {
                    mac: Some(created.vnics[0].mac),
                    ..vnic("eth1")
                },
            ],
            vec![],
        ),
        None,
    ));
    match rejection {
        Rejection::InvalidArgument { field, reason, .. } => {
            assert_eq!(field, "vnics[1].mac");
            assert!(
                reason.contains("kept by \"eth9\" (vnics[0].mac)"),
                "{reason}"
            );
        }
        other => panic!("expected InvalidArgument, got {other:?}"),
    }
}

#[test]
fn optimistic_concurrency_on_update_and_delete() {
    let mut cluster = with_pools();
    let created = cluster.profile(create(spec("web", vec![vnic("eth0")], vec![])));
    let stale = created.revision;
    let updated = cluster.profile(update(spec("web", vec![vnic("eth0")], vec![]), Some(stale)));
    let mismatch = Rejection::RevisionMismatch {
        name: "web".into(),
        expected: stale,
        actual: updated.revision,
    };
    assert_eq!(
        cluster.rejected(update(spec("web", vec![], vec![]), Some(stale))),
        mismatch
    );
    assert_eq!(cluster.rejected(delete("web", Some(stale))), mismatch);
    // Without an expected revision the last writer wins.
    cluster.ok(update(spec("web", vec![vnic("eth0")], vec![]), None));
    let current = cluster.state.profile("web").map(|p| p.revision);
    assert_eq!(
        cluster.ok(delete("web", current)),
        Outcome::ProfileDeleted { name: "web".into() }
    );
    assert_eq!(cluster.state.profile("web"), None);
    assert_eq!(cluster.state.owner_of_mac(mac_n(0)), None);
}

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

#[test]
fn revisions_must_increase_and_actors_are_bounded() {
    let mut state = State::default();
    let request = Request {
        actor: "alice".into(),
        command: mac_pool("macs", 0, 3),
        trace: None,
    };
    apply(&mut state, 5, &request).expect("fresh pool");
    let before = state.clone();
    for revision in [0, 4, 5] {
        match apply(&mut state, revision, &request) {
            Err(Rejection::FailedPrecondition { reason }) => {
                assert!(
                    reason.contains(&format!("revision {revision} is not after")),
                    "{reason}"
                );
            }
            other => panic!("revision {revision}: {other:?}"),
        }
        assert_eq!(state, before);
    }
    let long_actor = Request {
        actor: "x".repeat(1000),
        command: mac_pool("other", 10, 11),
        trace: None,
    };
    assert!(matches!(
        apply(&mut state, 6, &long_actor),
        Err(Rejection::InvalidArgument { field, value, .. }) if field == "actor" && value.chars().count() < 100
    ));
    assert_eq!(state, before);
}

#[test]
fn events_record_revision_actor_and_change() {
    let mut cluster = with_pools();
    let profile = match cluster.run_as("alice", create(spec("web", vec![vnic("eth0")], vec![]))) {
        Ok(Outcome::Profile(profile)) => profile,
        other => panic!("{other:?}"),
    };
    // A refused command records nothing.
    let _ = cluster.rejected(delete("ghost", None));
    cluster.run_as("bob", delete("web", None)).expect("delete");
    let events: Vec<_> = cluster
        .state
        .events_since(profile.revision)
        .expect("nothing dropped yet")
        .cloned()
        .collect();
    assert_eq!(events.len(), 2);
    assert_eq!(events[0].revision, profile.revision);
    assert_eq!(events[0].actor, "alice");
    assert_eq!(events[0].change, Change::ProfilePut(profile.clone()));
    assert_eq!(events[1].actor, "bob");
    assert_eq!(events[1].revision, cluster.state.revision());
    assert_eq!(
        events[1].change,
        Change::ProfileDeleted { name: "web".into() }
    );
    let everything: Vec<_> = cluster.state.events_since(0).expect("complete").collect();
    assert_eq!(everything.len(), 4);
    assert!(matches!(&everything[0].change, Change::PoolPut(pool) if pool.name == "macs"));
    // `from` between two events starts at the next one.
    let from_gap: Vec<_> = cluster
        .state
        .events_since(profile.revision + 1)
        .expect("complete")
        .collect();
    assert_eq!(from_gap.len(), 1);
    assert_eq!(
        cluster
            .state
            .events_since(cluster.state.revision() + 1)
            .map(|e| e.count()),
        Ok(0)
    );
}

#[test]
fn history_is_bounded_and_says_when_it_is_truncated() {
    let mut state = State::default();
    let extra = 10;
    let total = EVENT_HISTORY_MAX + extra;
    for i in 0..total {
        // Revisions 2, 4, 6, …: gaps like log entries that are not commands.
        let revision = 2 * (i as Revision + 1);
        let request = Request {
            actor: "tester".into(),
            command: Command::PutMember(member(1, &format!("unit-{i}"))),
            trace: None,
        };
        apply(&mut state, revision, &request).expect("member refresh");
    }
    assert_eq!(state.check_invariants(), Ok(()));
    // The first `extra` events (revisions 2..=20) are gone.
    let newest_dropped = 2 * extra as Revision;
    assert_eq!(state.oldest_retained_revision(), newest_dropped + 1);
    assert_eq!(
        state.events_since(0).err().map(|e| e.oldest_available),
        Some(newest_dropped + 1)
    );
    assert!(state.events_since(newest_dropped).is_err());
    let retained: Vec<Revision> = state
        .events_since(newest_dropped + 1)
        .expect("complete from here")
        .map(|event| event.revision)
        .collect();
    assert_eq!(retained.len(), EVENT_HISTORY_MAX);
    assert_eq!(retained.first(), Some(&(newest_dropped + 2)));
    assert_eq!(retained.last(), Some(&state.revision()));
    assert_eq!(
        state
            .events_since(state.revision())
            .map(|events| events.count()),
        Ok(1)
    );
}

#[test]
fn state_survives_serde_and_refuses_corrupt_snapshots() {
    let mut cluster = with_pools();
    cluster.ok(create(spec("web", vec![vnic("eth0")], vec![vhba("hba0")])));
    cluster.ok(create(spec("db", vec![vnic("eth0")], vec![])));
    cluster.ok(Command::PutMember(member(1, "unit-a")));
    cluster.ok(delete("web", None));
    let json = serde_json::to_string(&cluster.state).expect("serialize");
    let restored: State = serde_json::from_str(&json).expect("deserialize");
    assert_eq!(restored, cluster.state);
    // The index is rebuilt, not trusted: allocation continues identically after a restore.
    let mut restored_cluster = Cluster {
        state: restored,
        next_revision: cluster.next_revision,
    };
    let next = create(spec("next", vec![vnic("eth0")], vec![]));
    assert_eq!(restored_cluster.ok(next.clone()), cluster.ok(next));

    // Two profiles holding the same MAC.
    let mut value: serde_json::Value = serde_json::from_str(&json).expect("parse");
    let profiles = value["profiles"].as_array_mut().expect("profiles array");
    let mut twin = profiles[0].clone();
    twin["name"] = "twin".into();
    profiles.push(twin);
    let err = serde_json::from_value::<State>(value).expect_err("duplicate identity");
    assert!(err.to_string().contains("held by both"), "{err}");

    // A pool overlapping another.
    let mut value: serde_json::Value = serde_json::from_str(&json).expect("parse");
    let pools = value["pools"].as_array_mut().expect("pools array");
    let mut twin = pools[0].clone();
    twin["name"] = "twin".into();
    pools.push(twin);
    let err = serde_json::from_value::<State>(value).expect_err("overlap");
    assert!(err.to_string().contains("overlap"), "{err}");

    // An invalid MAC never gets as far as the state.
    let corrupt = json.replacen("02:00:00:00:00:01", "ff:ff:ff:ff:ff:ff", 1);
    assert_ne!(corrupt, json);
    assert!(serde_json::from_str::<State>(&corrupt).is_err());
}

#[test]
fn a_recovery_removes_the_lost_members_for_good_and_is_recorded_with_its_actor() {
    use std::collections::BTreeSet;
    use vnet_model::{Change, Command, Outcome, Request, State};
    let mut state = State::default();
    let member = |id: u64, name: &str| vnet_model::Member {
        id,
        name: name.to_string(),
        role: vnet_model::Role::Unit,
        api_addr: format!("10.0.0.{id}:7001"),
        peer_addr: format!("10.0.0.{id}:7101"),
        cabling: Default::default(),
        capacity: 30,
    };
    let request = |command| Request {
        actor: "alice".to_string(),
        command,
        trace: None,
    };
    for (revision, (id, name)) in [(1, "unit-a"), (2, "unit-b"), (3, "witness")]
        .into_iter()
        .enumerate()
    {
        vnet_model::apply(
            &mut state,
            revision as u64 + 1,
            &request(Command::PutMember(member(id, name))),
        )
        .expect("member");
    }
    let before = state.clone();
    for (lost, field) in [(BTreeSet::new(), "lost"), (BTreeSet::from([1, 2]), "lost")] {
        let refused = vnet_model::apply(
            &mut state,
            4,
            &request(Command::Recover { survivor: 1, lost }),
        )
        .expect_err("refused");
        assert!(refused.to_string().contains(field), "{refused}");
        assert_eq!(state, before, "a refusal changes nothing");
    }
    let outcome = vnet_model::apply(
        &mut state,
        4,
        &request(Command::Recover {
            survivor: 1,
            lost: BTreeSet::from([2, 3]),
        }),
    )
    .expect("recovered");
    assert_eq!(
        outcome,
        Outcome::Recovered {
            survivor: 1,
            lost: vec![2, 3]
        }
    );
    assert_eq!(state.members().map(|m| m.id).collect::<Vec<_>>(), vec![1]);
    assert!(state.is_removed_id(2) && state.is_removed_id(3) && !state.is_removed_id(1));
    let event = state
        .events_since(4)
        .expect("history")
        .next()
        .expect("event");
    assert_eq!(event.actor, "alice");
    assert_eq!(
        event.change,
        Change::Recovered {
            survivor: 1,
            lost: vec![2, 3]
        }
    );
    // The removed ids survive a snapshot round trip.
    let json = serde_json::to_string(&state).expect("encode");
    let back: State = serde_json::from_str(&json).expect("decode");
    assert_eq!(back, state);
    // ... but not a restore into a new cluster, whose members may reuse the ids.
    let restored = state.clone().into_new_cluster();
    assert!(!restored.is_removed_id(2) && !restored.is_removed_id(3));
    assert_eq!(restored.revision(), state.revision());
    restored
        .check_invariants()
        .expect("a restored state is consistent");
}
