//! What `apply` records: revisions, actors, events, the bounded history, snapshots and
//! recoveries.

use crate::support::*;

#[test]
fn revisions_must_increase_and_actors_are_bounded() {
    let mut state = State::default();
    let request = Request {
        actor: "alice".into(),
        command: mac_pool("macs", 0, 3),
        trace: None,
        on_behalf_of: None,
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
        on_behalf_of: None,
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
            on_behalf_of: None,
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
        protocol: 0,
    };
    let request = |command| Request {
        actor: "alice".to_string(),
        command,
        trace: None,
        on_behalf_of: None,
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
