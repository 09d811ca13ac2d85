//! The public API's contract: every error case answers its documented gRPC code with a message
//! naming the field and value at fault; watch delivers every change in revision order and
//! resumes from a revision.

mod common;

use common::*;
use tokio_stream::StreamExt;
use tonic::Code;
use vnet_proto::vnet::v1 as pb;

fn assert_status(
    result: Result<impl std::fmt::Debug, tonic::Status>,
    code: Code,
    needles: &[&str],
) {
    let status = result.expect_err("the request must fail");
    assert_eq!(status.code(), code, "{status:?}");
    for needle in needles {
        assert!(
            status.message().contains(needle),
            "message {:?} does not name {needle:?}",
            status.message()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_error_maps_to_its_code_and_names_what_is_wrong() {
    let mut cluster = TestCluster::start(&["unit-a", "unit-b", "witness"]).await;
    let leader = cluster.leader().await;
    let node = cluster.node(leader);
    let mut profiles = node.profiles().await;
    let mut pools = node.pools().await;

    // INVALID_ARGUMENT names the field and the value.
    let mut bad = sample_profile("web-01", 1);
    bad.vnics[0].mac = "01:00:5e:00:00:01".into();
    assert_status(
        create(node, bad).await,
        Code::InvalidArgument,
        &["profile.vnics[0].mac", "01:00:5e:00:00:01"],
    );
    let mut bad = sample_profile("web-01", 1);
    bad.vnics[0].vlan = 5000;
    assert_status(
        create(node, bad).await,
        Code::InvalidArgument,
        &["profile.vnics[0].vlan", "5000"],
    );
    assert_status(
        profiles
            .create_profile(pb::CreateProfileRequest { profile: None })
            .await,
        Code::InvalidArgument,
        &["profile"],
    );
    assert_status(
        profiles
            .list_profiles(pb::ListProfilesRequest {
                page_token: "garbage".into(),
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
        &["page_token", "garbage"],
    );

    // ALREADY_EXISTS: the same name, and an identity another profile holds.
    let created = create(node, sample_profile("web-01", 1))
        .await
        .expect("create");
    assert_status(
        create(node, sample_profile("web-01", 2)).await,
        Code::AlreadyExists,
        &["web-01"],
    );
    assert_status(
        create(node, sample_profile("web-02", 1)).await,
        Code::AlreadyExists,
        &["02:00:00:00:00:01", "web-01"],
    );

    // NOT_FOUND names what is missing.
    assert_status(
        get(node, "nope", pb::ReadConsistency::Linearizable).await,
        Code::NotFound,
        &["nope"],
    );
    assert_status(
        profiles
            .delete_profile(pb::DeleteProfileRequest {
                name: "nope".into(),
                expected_revision: 0,
            })
            .await,
        Code::NotFound,
        &["nope"],
    );

    // ABORTED carries both revisions.
    let stale = created.revision + 1000;
    assert_status(
        profiles
            .update_profile(pb::UpdateProfileRequest {
                profile: Some(created.clone()),
                expected_revision: stale,
            })
            .await,
        Code::Aborted,
        &[&stale.to_string(), &created.revision.to_string()],
    );

    // RESOURCE_EXHAUSTED names the pool.
    pools
        .create_pool(pb::CreatePoolRequest {
            pool: Some(pb::Pool {
                name: "tiny".into(),
                kind: pb::PoolKind::Mac as i32,
                first: "02:aa:00:00:00:00".into(),
                last: "02:aa:00:00:00:01".into(),
                revision: 0,
            }),
        })
        .await
        .expect("create pool");
    let mut greedy = sample_profile("greedy", 0);
    greedy.vnics = (0..3)
        .map(|i| pb::Vnic {
            name: format!("eth{i}"),
            mac: String::new(),
            network: "prod".into(),
            vlan: 0,
            pool: Some("tiny".into()),
        })
        .collect();
    assert_status(
        create(node, greedy).await,
        Code::ResourceExhausted,
        &["tiny"],
    );
    let usage = pools
        .get_pool_usage(pb::GetPoolUsageRequest {
            name: "tiny".into(),
            consistency: 0,
        })
        .await
        .expect("usage")
        .into_inner();
    assert_eq!(
        usage.usages[0].used, 0,
        "a refused create allocates nothing"
    );

    // OUT_OF_RANGE for a watch that starts before the retained history. Push the history past
    // its bound with unconditional updates (concurrent, so they batch in the log).
    let events_needed = vnet_model::limits::EVENT_HISTORY_MAX + 10;
    concurrent_updates(node, &created, 16, events_needed.div_ceil(16)).await;
    let mut watch = node.watch().await;
    assert_status(
        watch.watch(pb::WatchRequest { from_revision: 1 }).await,
        Code::OutOfRange,
        &["oldest available"],
    );

    // UNAVAILABLE when no leader can be reached: stop two of three nodes and ask the third.
    let survivor = cluster.other_than(leader);
    let others: Vec<u64> = cluster
        .nodes
        .iter()
        .map(|n| n.id)
        .filter(|id| *id != survivor)
        .collect();
    for id in others {
        cluster.node_mut(id).stop().await;
    }
    assert_status(
        create(cluster.node(survivor), sample_profile("lonely", 9)).await,
        Code::Unavailable,
        &["no leader"],
    );
    cluster.stop_all().await;
}

async fn next_event(stream: &mut tonic::Streaming<pb::WatchEvent>) -> pb::WatchEvent {
    tokio::time::timeout(WAIT_DEADLINE, stream.next())
        .await
        .expect("an event arrives within the deadline")
        .expect("the stream stays open")
        .expect("no stream error")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_delivers_every_change_in_order_and_resumes() {
    let mut cluster = TestCluster::start(&["unit-a", "unit-b", "witness"]).await;
    let leader = cluster.leader().await;
    let follower = cluster.other_than(leader);

    // Watch from "now" on a follower: only changes made after it started.
    let mut live = cluster
        .node(follower)
        .watch()
        .await
        .watch(pb::WatchRequest { from_revision: 0 })
        .await
        .expect("watch")
        .into_inner();

    let node = cluster.node(leader);
    let first = create(node, sample_profile("web-01", 1))
        .await
        .expect("create 1");
    let second = create(node, sample_profile("web-02", 2))
        .await
        .expect("create 2");
    let mut changed = first.clone();
    changed.server = "srv-moved".into();
    let updated = node
        .profiles()
        .await
        .update_profile(pb::UpdateProfileRequest {
            profile: Some(changed),
            expected_revision: first.revision,
        })
        .await
        .expect("update")
        .into_inner()
        .profile
        .expect("profile");
    let deleted = node
        .profiles()
        .await
        .delete_profile(pb::DeleteProfileRequest {
            name: "web-02".into(),
            expected_revision: second.revision,
        })
        .await
        .expect("delete")
        .into_inner();

    use pb::watch_event::Change;
    let expected = [
        (first.revision, Change::ProfilePut(first.clone())),
        (second.revision, Change::ProfilePut(second.clone())),
        (updated.revision, Change::ProfilePut(updated.clone())),
        (deleted.revision, Change::ProfileDeleted("web-02".into())),
    ];
    // Member registrations may interleave; keep only profile changes, which must be exactly
    // these, in this order.
    let mut seen = Vec::new();
    let mut last_revision = 0;
    while seen.len() < expected.len() {
        let event = next_event(&mut live).await;
        assert!(event.revision > last_revision, "revisions go up: {event:?}");
        last_revision = event.revision;
        match event.change {
            Some(Change::ProfilePut(_)) | Some(Change::ProfileDeleted(_)) => {
                seen.push((event.revision, event.change.expect("change")))
            }
            _ => {}
        }
    }
    assert_eq!(seen, expected);

    // Resume from the middle, on another node: the rest, from exactly that revision.
    let mut resumed = cluster
        .node(leader)
        .watch()
        .await
        .watch(pb::WatchRequest {
            from_revision: updated.revision,
        })
        .await
        .expect("resume")
        .into_inner();
    let mut resumed_profile_events = Vec::new();
    while resumed_profile_events.len() < 2 {
        let event = next_event(&mut resumed).await;
        assert!(
            event.revision >= updated.revision,
            "nothing before the resume point: {event:?}"
        );
        if let Some(Change::ProfilePut(_)) | Some(Change::ProfileDeleted(_)) = event.change {
            resumed_profile_events.push((event.revision, event.change.expect("change")));
        }
    }
    assert_eq!(resumed_profile_events, expected[2..].to_vec());
    cluster.stop_all().await;
}

/// A name the model would refuse is refused at the edge, naming the field, by every RPC that
/// takes one; it never reaches the log, and the log keeps committing afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_name_is_checked_at_the_edge_before_the_log() {
    let mut cluster = TestCluster::start(&["unit-a", "unit-b", "witness"]).await;
    let leader = cluster.leader().await;
    let node = cluster.node(leader);
    let mut profiles = node.profiles().await;
    let mut pools = node.pools().await;
    let mut members = node.cluster().await;
    let bad = "Not A Name".to_string();
    let field_and_value = |field: &'static str| [field, "Not A Name"];

    assert_status(
        profiles
            .get_profile(pb::GetProfileRequest {
                name: bad.clone(),
                consistency: 0,
            })
            .await,
        Code::InvalidArgument,
        &field_and_value("name"),
    );
    assert_status(
        profiles
            .list_profiles(pb::ListProfilesRequest {
                server: bad.clone(),
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
        &field_and_value("server"),
    );
    assert_status(
        profiles
            .list_profiles(pb::ListProfilesRequest {
                unit: bad.clone(),
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
        &field_and_value("unit"),
    );
    let pool = |name: String| pb::CreatePoolRequest {
        pool: Some(pb::Pool {
            name,
            kind: pb::PoolKind::Mac as i32,
            first: "02:cc:00:00:00:00".into(),
            last: "02:cc:00:00:00:ff".into(),
            revision: 0,
        }),
    };
    assert_status(
        pools.create_pool(pool(bad.clone())).await,
        Code::InvalidArgument,
        &field_and_value("pool.name"),
    );
    assert_status(
        profiles
            .list_profiles(pb::ListProfilesRequest {
                page_token: format!("after:{bad}"),
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
        &["page_token"],
    );
    assert_status(
        profiles
            .update_profile(pb::UpdateProfileRequest {
                profile: Some(sample_profile(&bad, 1)),
                expected_revision: 0,
            })
            .await,
        Code::InvalidArgument,
        &field_and_value("profile.name"),
    );
    assert_status(
        profiles
            .delete_profile(pb::DeleteProfileRequest {
                name: bad.clone(),
                expected_revision: 0,
            })
            .await,
        Code::InvalidArgument,
        &field_and_value("name"),
    );
    assert_status(
        pools
            .get_pool_usage(pb::GetPoolUsageRequest {
                name: bad.clone(),
                consistency: 0,
            })
            .await,
        Code::InvalidArgument,
        &field_and_value("name"),
    );
    assert_status(
        pools
            .delete_pool(pb::DeletePoolRequest {
                name: bad.clone(),
                expected_revision: 0,
            })
            .await,
        Code::InvalidArgument,
        &field_and_value("name"),
    );
    assert_status(
        members.drain(pb::DrainRequest { unit: bad.clone() }).await,
        Code::InvalidArgument,
        &field_and_value("unit"),
    );
    assert_status(
        members
            .undrain(pb::UndrainRequest { unit: bad.clone() })
            .await,
        Code::InvalidArgument,
        &field_and_value("unit"),
    );
    for (field, request) in [
        (
            "profile",
            pb::FailoverRequest {
                profile: bad.clone(),
                ..Default::default()
            },
        ),
        (
            "from_unit",
            pb::FailoverRequest {
                from_unit: bad.clone(),
                ..Default::default()
            },
        ),
        (
            "to_unit",
            pb::FailoverRequest {
                profile: "web-01".into(),
                to_unit: bad.clone(),
                ..Default::default()
            },
        ),
    ] {
        assert_status(
            members.failover(request).await,
            Code::InvalidArgument,
            &field_and_value(field),
        );
    }

    // A delete whose name is four million control characters: refused as it arrives, without
    // appending anything. Wait for the members' own registrations first, so that nothing else
    // moves the commit index.
    let commit_index = || async {
        node.status(pb::ReadConsistency::Local)
            .await
            .map(|s| s.commit_index)
    };
    let quiet = wait_for("every member has registered", || async {
        let status = node.status(pb::ReadConsistency::Local).await?;
        (status
            .members
            .iter()
            .filter(|m| !m.api_addr.is_empty())
            .count()
            == 3)
            .then_some(status.commit_index)
    })
    .await;
    assert_status(
        profiles
            .delete_profile(pb::DeleteProfileRequest {
                name: "\u{1}".repeat(4_000_000),
                expected_revision: 0,
            })
            .await,
        Code::InvalidArgument,
        &["name", "4000000 characters"],
    );
    // A pool name of four million letters: 4 MB of JSON, within ENTRY_BYTES_MAX, so only the
    // name check keeps it out of the log.
    assert_status(
        pools.create_pool(pool("a".repeat(4_000_000))).await,
        Code::InvalidArgument,
        &["pool.name", "4000000 characters"],
    );
    assert_eq!(
        commit_index().await,
        Some(quiet),
        "the refused delete appended nothing"
    );
    // And the log still takes writes.
    let created = tokio::time::timeout(WAIT_DEADLINE, create(node, sample_profile("web-01", 1)))
        .await
        .expect("a write commits within the deadline")
        .expect("create");
    assert_eq!(created.name, "web-01");
    cluster.stop_all().await;
}

/// AddMember refuses an address longer than `ADDR_LEN_MAX`, a missing API address, an address no
/// peer could dial, a name in use, and a learner past `MEMBERS_MAX`, before anything reaches the
/// Raft membership.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_member_bounds_addresses_and_the_member_count() {
    use vnet_model::limits::MEMBERS_MAX;

    let mut cluster = TestCluster::start(&["unit-a", "unit-b", "witness"]).await;
    let leader = cluster.leader().await;
    let mut members = cluster.node(leader).cluster().await;
    let request = |id: u64, peer_addr: String, api_addr: String| pb::AddMemberRequest {
        id,
        name: format!("extra-{id}"),
        peer_addr,
        api_addr,
        role: pb::MemberRole::Witness as i32,
    };
    let huge = format!("{}:7000", "h".repeat(100_000));
    let fine = || "127.0.0.1:1".to_string();

    assert_status(
        members.add_member(request(10, huge.clone(), fine())).await,
        Code::InvalidArgument,
        &["peer_addr", "100005 characters"],
    );
    assert_status(
        members.add_member(request(10, fine(), huge)).await,
        Code::InvalidArgument,
        &["api_addr", "100005 characters"],
    );
    assert_status(
        members.add_member(request(10, fine(), String::new())).await,
        Code::InvalidArgument,
        &["api_addr", "required"],
    );
    // Addresses a peer could never dial are refused, naming the field.
    for (peer_addr, api_addr, field, reason) in [
        (
            "http://127.0.0.1:1",
            "127.0.0.1:1",
            "peer_addr",
            "without a scheme",
        ),
        ("unit_c:1", "127.0.0.1:1", "peer_addr", "DNS name"),
        ("127.0.0.1:1", "a%b:1", "api_addr", "DNS name"),
        ("127.0.0.1:0", "127.0.0.1:1", "peer_addr", "port"),
        ("127.0.0.1", "127.0.0.1:1", "peer_addr", "host:port"),
    ] {
        assert_status(
            members
                .add_member(request(10, peer_addr.into(), api_addr.into()))
                .await,
            Code::InvalidArgument,
            &[field, reason],
        );
    }
    // A name already held by another member is refused before the learner joins Raft.
    let node = cluster.node(leader);
    wait_for("every member has registered its record", || async move {
        let status = node.status(pb::ReadConsistency::Linearizable).await?;
        status
            .members
            .iter()
            .all(|m| !m.api_addr.is_empty())
            .then_some(())
    })
    .await;
    assert_status(
        members
            .add_member(pb::AddMemberRequest {
                name: "unit-b".into(),
                ..request(10, fine(), fine())
            })
            .await,
        Code::AlreadyExists,
        &["member name", "unit-b"],
    );
    let status = cluster
        .node(leader)
        .status(pb::ReadConsistency::Linearizable)
        .await
        .expect("status");
    assert_eq!(
        status.members.len(),
        cluster.nodes.len(),
        "a refused AddMember added nobody: {:?}",
        status.members
    );

    // Fill the cluster with learners that never run (a learner need not be up to be added).
    let first_extra = 10;
    let extras = (MEMBERS_MAX - cluster.nodes.len()) as u64;
    for id in first_extra..first_extra + extras {
        members
            .add_member(request(id, fine(), fine()))
            .await
            .unwrap_or_else(|e| panic!("add learner {id}: {e:?}"));
    }
    assert_status(
        members
            .add_member(request(first_extra + extras, fine(), fine()))
            .await,
        Code::ResourceExhausted,
        &["members", &MEMBERS_MAX.to_string()],
    );
    let status = cluster
        .node(leader)
        .status(pb::ReadConsistency::Linearizable)
        .await
        .expect("status");
    assert_eq!(status.members.len(), MEMBERS_MAX, "{:?}", status.members);
    cluster.stop_all().await;
}

/// A value of megabytes comes back in the error cut short, with its length, so the status still
/// fits its header and the client sees the documented code.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_value_is_echoed_cut_short() {
    let mut cluster = TestCluster::start(&["unit-a", "unit-b", "witness"]).await;
    let leader = cluster.leader().await;
    let mut profiles = cluster.node(leader).profiles().await;
    let status = profiles
        .list_profiles(pb::ListProfilesRequest {
            page_token: "x".repeat(3_000_000),
            ..Default::default()
        })
        .await
        .expect_err("refused");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(
        status.message().contains("page_token")
            && status.message().contains("(3000000 characters)"),
        "{status:?}"
    );
    assert!(
        status.message().len() < 400,
        "{} bytes",
        status.message().len()
    );
    cluster.stop_all().await;
}

/// Where the contract (`proto/vnet/v1`) says what the server does, the server does it: a
/// `page_size` above the maximum is lowered to it, `FAILBACK_POLICY_UNSPECIFIED` is auto, and a
/// pool overlapping another of its kind is `ALREADY_EXISTS` naming that pool.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_keeps_the_documented_contract() {
    let mut cluster = TestCluster::start(&["unit-a", "unit-b", "witness"]).await;
    let leader = cluster.leader().await;
    let node = cluster.node(leader);

    let mut unspecified = sample_profile("web-01", 1);
    unspecified.failback = pb::FailbackPolicy::Unspecified as i32;
    let created = create(node, unspecified).await.expect("create");
    assert_eq!(created.failback, pb::FailbackPolicy::Auto as i32);
    create(node, sample_profile("web-02", 2))
        .await
        .expect("create");

    let page = node
        .profiles()
        .await
        .list_profiles(pb::ListProfilesRequest {
            page_size: u32::MAX,
            ..Default::default()
        })
        .await
        .expect("a page size above the maximum is lowered, not refused")
        .into_inner();
    let names: Vec<&str> = page.profiles.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["web-01", "web-02"]);
    assert_eq!(page.next_page_token, "");

    let pool = |name: &str, first: &str, last: &str| pb::CreatePoolRequest {
        pool: Some(pb::Pool {
            name: name.into(),
            kind: pb::PoolKind::Mac as i32,
            first: first.into(),
            last: last.into(),
            revision: 0,
        }),
    };
    let mut pools = node.pools().await;
    pools
        .create_pool(pool("macs", "02:bb:00:00:00:00", "02:bb:00:00:00:ff"))
        .await
        .expect("create pool");
    assert_status(
        pools
            .create_pool(pool("other", "02:bb:00:00:00:80", "02:bb:00:00:01:00"))
            .await,
        Code::AlreadyExists,
        &["overlaps pool \"macs\"", "02:bb:00:00:00:80"],
    );
    cluster.stop_all().await;
}
