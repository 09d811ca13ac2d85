//! How `apply` allocates identities from pools, keeps them across updates and frees them.

use crate::support::*;

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
