//! Three nodes in one process: election, replication, forwarding, failure of the leader,
//! membership changes, restart, leader transfer.

mod common;

use common::*;
use vnet_proto::vnet::v1 as pb;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn elects_replicates_and_forwards() {
    let mut cluster = TestCluster::start(&["unit-a", "unit-b", "witness"]).await;
    let leader = cluster.leader().await;
    let follower = cluster.other_than(leader);

    // A write sent to a follower is forwarded to the leader and acknowledged.
    let created = create(cluster.node(follower), sample_profile("web-01", 1))
        .await
        .expect("create through a follower");
    assert_eq!(created.vnics[0].mac, "02:00:00:00:00:01");
    assert!(created.revision > 0);

    // A linearizable read on any node sees it at once.
    for node in &cluster.nodes {
        let read = get(node, "web-01", pb::ReadConsistency::Linearizable)
            .await
            .expect("linearizable read");
        assert_eq!(read, created, "node {} read", node.id);
    }
    // And every node's own copy converges (replication, not forwarding).
    for node in &cluster.nodes {
        wait_for("the local copy has the profile", || async {
            get(node, "web-01", pb::ReadConsistency::Local).await.ok()
        })
        .await;
    }

    // Status from a follower reports the leader's view: every member, and the indexes.
    let status = cluster
        .node(follower)
        .status(pb::ReadConsistency::Linearizable)
        .await
        .expect("status");
    assert_eq!(status.leader_id, Some(leader));
    assert_eq!(status.members.len(), 3);
    assert!(status.commit_index >= created.revision);
    assert!(status.applied_index >= created.revision);
    let roles: Vec<i32> = status.members.iter().map(|m| m.role).collect();
    wait_for("every member registered its role", || async {
        let status = cluster
            .node(leader)
            .status(pb::ReadConsistency::Linearizable)
            .await?;
        let witness = status.members.iter().find(|m| m.name == "witness")?;
        (witness.role == pb::MemberRole::Witness as i32
            && status
                .members
                .iter()
                .all(|m| m.role != 0 && !m.api_addr.is_empty()))
        .then_some(())
    })
    .await;
    assert_eq!(roles.len(), 3);
    cluster.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keeps_serving_when_the_leader_stops_and_a_restarted_node_finds_its_state() {
    let mut cluster = TestCluster::start(&["unit-a", "unit-b", "witness"]).await;
    let old_leader = cluster.leader().await;
    let survivor = cluster.other_than(old_leader);
    create(cluster.node(survivor), sample_profile("before", 1))
        .await
        .expect("create before failure");

    cluster.node_mut(old_leader).stop().await;
    let new_leader = cluster.leader().await;
    assert_ne!(new_leader, old_leader);
    create(cluster.node(survivor), sample_profile("during", 2))
        .await
        .expect("create with the old leader down");

    // The old leader comes back on its data dir: it keeps what it had and catches up.
    cluster.node_mut(old_leader).start().await;
    let restarted = cluster.node(old_leader);
    for name in ["before", "during"] {
        wait_for("the restarted node has caught up", || async {
            get(restarted, name, pb::ReadConsistency::Local).await.ok()
        })
        .await;
    }
    cluster.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adds_promotes_and_removes_a_member() {
    let mut cluster = TestCluster::start(&["unit-a", "unit-b", "witness"]).await;
    let leader = cluster.leader().await;
    create(cluster.node(leader), sample_profile("web-01", 1))
        .await
        .expect("create");

    // A fourth node starts empty, outside the initial cluster, and is added as a learner.
    let fourth = Joiner::start(4, "unit-c").await;
    let (api_addr, peer_addr) = (fourth.api_addr, fourth.peer_addr);

    let mut admin = cluster.node(leader).cluster().await;
    let added = admin
        .add_member(pb::AddMemberRequest {
            id: 4,
            name: "unit-c".into(),
            peer_addr: peer_addr.to_string(),
            api_addr: api_addr.to_string(),
            role: pb::MemberRole::Unit as i32,
        })
        .await
        .expect("add member")
        .into_inner();
    // The answer's revision is the new member's record, comparable with every other revision.
    let event = first_event_from(cluster.node(leader), added.revision).await;
    assert_eq!(event.revision, added.revision, "{event:?}");
    assert!(
        matches!(&event.change, Some(pb::watch_event::Change::MemberPut(m)) if m.id == 4),
        "{event:?}"
    );
    // The learner catches up: it can serve a local read of data written before it joined.
    let fourth_client = fourth.profiles();
    wait_for("the learner has replicated the profile", || {
        let mut client = fourth_client.clone();
        async move {
            client
                .get_profile(pb::GetProfileRequest {
                    name: "web-01".into(),
                    consistency: pb::ReadConsistency::Local as i32,
                })
                .await
                .ok()
        }
    })
    .await;
    let promoted = admin
        .promote_member(pb::PromoteMemberRequest { id: 4 })
        .await
        .expect("promote")
        .into_inner();
    assert!(
        promoted.revision >= added.revision,
        "{promoted:?} {added:?}"
    );
    assert_eq!(
        promoted.member.expect("member").membership,
        pb::RaftMembership::Voter as i32
    );
    let err = admin
        .promote_member(pb::PromoteMemberRequest { id: 4 })
        .await
        .expect_err("already a voter");
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");

    let removed = admin
        .remove_member(pb::RemoveMemberRequest { id: 4 })
        .await
        .expect("remove")
        .into_inner();
    assert!(
        removed.revision > promoted.revision,
        "{removed:?} after promotion at {}",
        promoted.revision
    );
    let event = first_event_from(cluster.node(leader), removed.revision).await;
    assert_eq!(event.revision, removed.revision, "{event:?}");
    assert_eq!(
        event.change,
        Some(pb::watch_event::Change::MemberRemoved(4)),
        "{event:?}"
    );
    let status = cluster
        .node(leader)
        .status(pb::ReadConsistency::Linearizable)
        .await
        .expect("status");
    assert!(status.members.iter().all(|m| m.id != 4), "{status:?}");
    assert_eq!(status.members.len(), 3);
    let err = admin
        .remove_member(pb::RemoveMemberRequest { id: 4 })
        .await
        .expect_err("already removed");
    assert_eq!(err.code(), tonic::Code::NotFound, "{err:?}");

    fourth.stop().await;
    cluster.stop_all().await;
}

/// The first change a watch from `revision` replays.
async fn first_event_from(node: &TestNode, revision: u64) -> pb::WatchEvent {
    let mut events = node
        .watch()
        .await
        .watch(pb::WatchRequest {
            from_revision: revision,
        })
        .await
        .expect("watch")
        .into_inner();
    tokio::time::timeout(WAIT_DEADLINE, events.message())
        .await
        .expect("an event in time")
        .expect("the stream")
        .expect("an event")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfers_leadership_to_a_chosen_voter() {
    let mut cluster = TestCluster::start(&["unit-a", "unit-b", "witness"]).await;
    let leader = cluster.leader().await;
    let target = cluster.other_than(leader);
    create(cluster.node(leader), sample_profile("web-01", 1))
        .await
        .expect("create");
    let mut admin = cluster.node(target).cluster().await;
    let reply = admin
        .transfer_leader(pb::TransferLeaderRequest { to_id: target })
        .await
        .expect("transfer")
        .into_inner();
    assert_eq!(reply.leader_id, target);
    assert_eq!(cluster.leader().await, target);
    // The cluster still takes writes under the new leader.
    create(cluster.node(leader), sample_profile("web-02", 2))
        .await
        .expect("create after transfer");
    cluster.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_learner_joining_after_the_log_was_purged_catches_up_through_a_snapshot() {
    // A snapshot every 100 entries; openraft keeps 1,000 entries behind the latest one, so once
    // the log is some 1,300 entries long its start is gone and a new member can only be brought
    // up to date by a snapshot sent over the peer API. Concurrent writes may share entries
    // (batched writes), so the writing goes on until the log, not the revision, is that long.
    let mut cluster =
        TestCluster::start_with_snapshots(&["unit-a", "unit-b", "witness"], Some(100)).await;
    let leader = cluster.leader().await;
    let created = create(cluster.node(leader), sample_profile("web-01", 1))
        .await
        .expect("create");
    loop {
        concurrent_updates(cluster.node(leader), &created, 16, 85).await;
        let status = cluster
            .node(leader)
            .status(pb::ReadConsistency::Local)
            .await
            .expect("status");
        if status.applied_index > 1_300 {
            break;
        }
    }
    let latest = get(
        cluster.node(leader),
        "web-01",
        pb::ReadConsistency::Linearizable,
    )
    .await
    .expect("read");

    let joiner = Joiner::start(4, "unit-c").await;
    let (api_addr, peer_addr) = (joiner.api_addr, joiner.peer_addr);
    cluster
        .node(leader)
        .cluster()
        .await
        .add_member(pb::AddMemberRequest {
            id: 4,
            name: "unit-c".into(),
            peer_addr: peer_addr.to_string(),
            api_addr: api_addr.to_string(),
            role: pb::MemberRole::Unit as i32,
        })
        .await
        .expect("add member");
    let client = joiner.profiles();
    wait_for("the learner has the latest profile", || {
        let mut client = client.clone();
        let latest = latest.clone();
        async move {
            let read = client
                .get_profile(pb::GetProfileRequest {
                    name: "web-01".into(),
                    consistency: pb::ReadConsistency::Local as i32,
                })
                .await
                .ok()?
                .into_inner()
                .profile?;
            (read == latest).then_some(())
        }
    })
    .await;
    assert!(
        joiner
            .dir
            .path()
            .join("snapshots")
            .join("snapshot.current")
            .exists(),
        "the learner holds a verified snapshot"
    );
    joiner.stop().await;
    cluster.stop_all().await;
}

/// A three-node cluster whose peer port the next tests feed hostile input, through a raw peer
/// client of one follower.
struct PeerTarget {
    cluster: TestCluster,
    leader: u64,
    follower: u64,
    /// The leader's term, for messages that must look like the current leader's.
    term: u64,
}

impl PeerTarget {
    async fn start() -> Self {
        let cluster = TestCluster::start(&["unit-a", "unit-b", "witness"]).await;
        let leader = cluster.leader().await;
        let follower = cluster.other_than(leader);
        let term = cluster
            .node(leader)
            .status(pb::ReadConsistency::Linearizable)
            .await
            .expect("status")
            .term;
        PeerTarget {
            cluster,
            leader,
            follower,
            term,
        }
    }

    async fn peer(&self, id: u64) -> PeerClient {
        self.cluster.node(id).peer().await
    }

    /// After the refusals node `id` still takes part: a write through it commits. Then stops
    /// the cluster.
    async fn assert_writes_go_on_through(mut self, id: u64) {
        let created = create(self.cluster.node(id), sample_profile("web-01", 1))
            .await
            .expect("a write after the refusals");
        assert_eq!(created.name, "web-01");
        self.cluster.stop_all().await;
    }
}

/// A peer asking for an election hold or campaign longer than `PEER_DURATION_MS_MAX` (here, so
/// long that `Instant` arithmetic on it would overflow) is refused with `INVALID_ARGUMENT`; the
/// node keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_out_of_range_election_control_is_refused() {
    use vnet_node::peer::{encode, ElectionControl, PEER_DURATION_MS_MAX};

    let target = PeerTarget::start().await;
    let follower = target.follower;
    let mut peer = target.peer(follower).await;
    for control in [
        ElectionControl::Campaign {
            deadline_ms: u64::MAX,
        },
        ElectionControl::Hold {
            duration_ms: u64::MAX,
        },
        ElectionControl::Hold {
            duration_ms: PEER_DURATION_MS_MAX + 1,
        },
    ] {
        let status = peer
            .trigger_election(encode(&control))
            .await
            .expect_err("refused");
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
        assert!(status.message().contains("_ms"), "{status:?}");
    }
    target.assert_writes_go_on_through(follower).await;
}

/// A hold as long as a peer may ask (`PEER_DURATION_MS_MAX`, ten minutes) on every voter but the
/// leader, and then the leader gone: the voters stand again after at most
/// `ELECTION_CONTROL_TIMEOUTS_MAX` election timeouts and elect a new leader, instead of staying
/// silent for the whole hold.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_election_hold_does_not_outlive_its_bound() {
    use vnet_node::peer::{encode, ElectionControl, PEER_DURATION_MS_MAX};

    let mut cluster = TestCluster::start(&["unit-a", "unit-b", "witness"]).await;
    let leader = cluster.leader().await;
    for node in cluster.nodes.iter().filter(|n| n.id != leader) {
        let mut peer = node.peer().await;
        peer.trigger_election(encode(&ElectionControl::Hold {
            duration_ms: PEER_DURATION_MS_MAX,
        }))
        .await
        .expect("a hold within PEER_DURATION_MS_MAX is accepted");
    }
    let stopped = std::time::Instant::now();
    cluster.node_mut(leader).stop().await;
    let new_leader = cluster.leader().await;
    assert_ne!(new_leader, leader);
    println!(
        "new leader {new_leader} {} ms after the old one stopped, under a {PEER_DURATION_MS_MAX} \
         ms hold",
        stopped.elapsed().as_millis()
    );
    cluster.stop_all().await;
}

/// A write forwarded over the peer port skips the public edge, so the leader checks its size
/// itself: a command whose log entry would pass `ENTRY_BYTES_MAX` is refused before it is
/// proposed, naming the size, and a peer message past `PEER_MESSAGE_BYTES_MAX` is refused by the
/// port. Writes go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_refuses_an_entry_past_the_size_limit() {
    use vnet_model::limits::ENTRY_BYTES_MAX;
    use vnet_model::{Command, Request};
    use vnet_node::error::ApiError;
    use vnet_node::peer::client::PEER_MESSAGE_BYTES_MAX;
    use vnet_node::peer::{decode, encode, encoded_len, LeaderRequest, LeaderResult};

    let target = PeerTarget::start().await;
    let leader = target.leader;
    let mut peer = target
        .peer(leader)
        .await
        .max_encoding_message_size(usize::MAX);
    // JSON writes U+0001 as six bytes: 750,000 of them make an entry of about 4.5 MB, past
    // ENTRY_BYTES_MAX but within the peer port's message limit.
    let oversize = |chars: usize| {
        LeaderRequest::Write(Request {
            actor: "peer".into(),
            command: Command::DeleteProfile {
                name: "\u{1}".repeat(chars),
                expected_revision: None,
            },
            trace: None,
            on_behalf_of: None,
        })
    };
    let request = oversize(750_000);
    let message = encode(&request);
    assert!(encoded_len(&request) > ENTRY_BYTES_MAX);
    assert!(message.payload.len() < PEER_MESSAGE_BYTES_MAX);
    let reply = peer.forward(message).await.expect("answered");
    let result: LeaderResult = decode(reply.get_ref(), "forward reply").expect("decodes");
    match result {
        Err(refused @ ApiError::Rejected(_)) => {
            assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{refused}");
            let text = refused.to_string();
            assert!(
                text.contains("request") && text.contains("for one log entry"),
                "{text}"
            );
        }
        other => panic!("expected the size refusal, got {other:?}"),
    }

    let status = peer
        .forward(encode(&oversize(1_000_000)))
        .await
        .expect_err("a message past PEER_MESSAGE_BYTES_MAX");
    assert_eq!(status.code(), tonic::Code::OutOfRange, "{status:?}");

    target.assert_writes_go_on_through(leader).await;
}

/// Only a leader forms batches: a peer that forwards a `Batch` as its own write is refused with
/// `INVALID_ARGUMENT` naming the command, nothing is proposed, and writes go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_refuses_a_batch_forwarded_by_a_peer() {
    use vnet_model::{Command, Request};
    use vnet_node::error::ApiError;
    use vnet_node::peer::{decode, encode, LeaderRequest, LeaderResult};

    let target = PeerTarget::start().await;
    let leader = target.leader;
    let mut peer = target.peer(leader).await;
    let delete = |name: &str| Request {
        actor: "peer".into(),
        command: Command::DeleteProfile {
            name: name.into(),
            expected_revision: None,
        },
        trace: None,
        on_behalf_of: None,
    };
    let batch = LeaderRequest::Write(Request {
        actor: "peer".into(),
        command: Command::Batch(vec![delete("a"), delete("b")]),
        trace: None,
        on_behalf_of: None,
    });
    let reply = peer.forward(encode(&batch)).await.expect("answered");
    let result: LeaderResult = decode(reply.get_ref(), "forward reply").expect("decodes");
    match result {
        Err(refused @ ApiError::Rejected(_)) => {
            assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{refused}");
            let text = refused.to_string();
            assert!(text.contains("command") && text.contains("batch"), "{text}");
        }
        other => panic!("expected the batch refusal, got {other:?}"),
    }
    target.assert_writes_go_on_through(leader).await;
}

/// A snapshot stream started by a chunk announcing 100 bytes, then a chunk at offset 2^60 (where
/// openraft would grow its buffer until the allocation aborts the process) and one past the
/// announced length: both are refused with `INVALID_ARGUMENT` before openraft sees them, and the
/// node keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_chunk_past_its_bounds_is_refused() {
    use openraft::raft::InstallSnapshotRequest;
    use openraft::{SnapshotMeta, Vote};
    use raft_store::snapshot_file::HEADER_LEN;
    use raft_store::TypeConfig;
    use vnet_node::peer::encode;

    let target = PeerTarget::start().await;
    let (leader, follower, term) = (target.leader, target.follower, target.term);
    let mut peer = target.peer(follower).await;
    // Chunks as the current leader would send them, so openraft takes the first one.
    let chunk = |offset: u64, data: Vec<u8>| {
        let mut message = encode(&InstallSnapshotRequest::<TypeConfig> {
            vote: Vote::new_committed(term, leader),
            meta: SnapshotMeta {
                snapshot_id: "hostile".into(),
                ..Default::default()
            },
            offset,
            data: Vec::new(),
            done: false,
        });
        message.data = data;
        message
    };
    // A header (magic, version, body length, checksum) announcing a 100-byte body.
    let mut first = b"VNETSNAP".to_vec();
    first.extend_from_slice(&1u32.to_be_bytes());
    first.extend_from_slice(&100u64.to_be_bytes());
    first.extend_from_slice(&0u32.to_be_bytes());
    assert_eq!(first.len(), HEADER_LEN);
    peer.install_snapshot(chunk(0, first))
        .await
        .expect("the first chunk of a stream within its bounds is taken");
    for (offset, why) in [(1u64 << 60, "limit"), (HEADER_LEN as u64 + 100, "announce")] {
        let status = peer
            .install_snapshot(chunk(offset, vec![0; 16]))
            .await
            .expect_err("a chunk past its bounds");
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
        assert!(status.message().contains(why), "{status:?}");
    }
    target.assert_writes_go_on_through(follower).await;
}

/// Log indexes and terms from a peer near `u64::MAX` (where openraft's `index + 1` and
/// `term + 1` would overflow) are refused with `INVALID_ARGUMENT` before openraft sees them, and
/// so are entries that do not follow `prev_log_id` one by one (openraft asserts that, and the
/// panic stopped the node's Raft core); the node keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn append_entries_with_out_of_range_indexes_are_refused() {
    use openraft::raft::AppendEntriesRequest;
    use openraft::{CommittedLeaderId, EntryPayload, LogId, Vote};
    use raft_store::{Entry, TypeConfig};
    use vnet_node::peer::encode;

    let target = PeerTarget::start().await;
    let (leader, follower, term) = (target.leader, target.follower, target.term);
    let mut peer = target.peer(follower).await;
    let id = |index: u64| LogId::new(CommittedLeaderId::new(term, leader), index);
    let blank = |index: u64| Entry {
        log_id: id(index),
        payload: EntryPayload::Blank,
    };
    let append = |prev: Option<u64>, entries: Vec<u64>, commit: Option<u64>| {
        encode(&AppendEntriesRequest::<TypeConfig> {
            vote: Vote::new_committed(term, leader),
            prev_log_id: prev.map(id),
            entries: entries.into_iter().map(blank).collect(),
            leader_commit: commit.map(id),
        })
    };
    for (what, message) in [
        ("an entry at u64::MAX", append(None, vec![u64::MAX], None)),
        (
            "prev_log_id at u64::MAX",
            append(Some(u64::MAX), vec![], None),
        ),
        (
            "leader_commit at u64::MAX",
            append(None, vec![], Some(u64::MAX)),
        ),
        ("a gap after prev_log_id", append(Some(1), vec![5], None)),
        (
            "a vote at term u64::MAX",
            encode(&AppendEntriesRequest::<TypeConfig> {
                vote: Vote::new_committed(u64::MAX, leader),
                prev_log_id: None,
                entries: vec![],
                leader_commit: None,
            }),
        ),
    ] {
        let status = peer.append_entries(message).await.expect_err(what);
        assert_eq!(
            status.code(),
            tonic::Code::InvalidArgument,
            "{what}: {status:?}"
        );
    }
    target.assert_writes_go_on_through(follower).await;
}

/// `AppendEntriesStream` admits and checks as `AppendEntries` does: a caller without the
/// cluster's id is refused when it opens a stream, a malformed AppendEntries on an open stream
/// ends it with `INVALID_ARGUMENT`, one past `PEER_MESSAGE_BYTES_MAX` with `OUT_OF_RANGE`, and
/// the node keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn append_entries_streams_are_admitted_and_checked_like_single_calls() {
    use openraft::raft::AppendEntriesRequest;
    use openraft::{CommittedLeaderId, EntryPayload, LogId, Vote};
    use raft_store::{Entry, TypeConfig};
    use vnet_node::peer::encode;
    use vnet_proto::vnet::raft::v1::raft_peer_client::RaftPeerClient;
    use vnet_proto::vnet::raft::v1::RaftMessage;

    let target = PeerTarget::start().await;
    let (leader, follower, term) = (target.leader, target.follower, target.term);
    let follower_addr = target.cluster.node(follower).peer_addr;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{follower_addr}"))
        .expect("endpoint")
        .connect()
        .await
        .expect("connect to the peer port");
    let status = RaftPeerClient::new(channel)
        .append_entries_stream(tokio_stream::iter(Vec::<RaftMessage>::new()))
        .await
        .expect_err("a stream without the cluster's id");
    assert_eq!(status.code(), tonic::Code::FailedPrecondition, "{status:?}");

    let id = |index: u64| LogId::new(CommittedLeaderId::new(term, leader), index);
    let gap = encode(&AppendEntriesRequest::<TypeConfig> {
        vote: Vote::new_committed(term, leader),
        prev_log_id: Some(id(1)),
        entries: vec![Entry {
            log_id: id(5),
            payload: EntryPayload::Blank,
        }],
        leader_commit: None,
    });
    let (sender, receiver) = tokio::sync::mpsc::channel(1);
    let mut replies = target
        .peer(follower)
        .await
        .append_entries_stream(tokio_stream::wrappers::ReceiverStream::new(receiver))
        .await
        .expect("a member opens a stream")
        .into_inner();
    sender.send(gap).await.expect("the stream takes a message");
    let status = replies
        .message()
        .await
        .expect_err("a gap after prev_log_id");
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    assert!(
        replies.message().await.ok().flatten().is_none(),
        "the stream went on after an error"
    );

    // A message past the peer port's limit ends its stream unread.
    let huge = RaftMessage {
        format: "json/1".into(),
        payload: vec![b' '; vnet_node::peer::client::PEER_MESSAGE_BYTES_MAX + 1],
        data: Vec::new(),
    };
    let (sender, receiver) = tokio::sync::mpsc::channel(1);
    let mut replies = target
        .peer(follower)
        .await
        .append_entries_stream(tokio_stream::wrappers::ReceiverStream::new(receiver))
        .await
        .expect("a member opens a stream")
        .into_inner();
    sender.send(huge).await.expect("the stream takes a message");
    let status = replies
        .message()
        .await
        .expect_err("a message past the limit");
    assert_eq!(status.code(), tonic::Code::OutOfRange, "{status:?}");
    target.assert_writes_go_on_through(follower).await;
}

/// The lease RPCs of the peer port against hostile input: a renewal for half a million control
/// characters (3 MB of JSON, within the peer port's message limit), a malformed payload and a witness are refused with clear answers, and a lease
/// report speaks for the node asked. The node keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_lease_requests_are_refused_and_the_node_keeps_serving() {
    use vnet_node::lease::{Grant, VoterReport};
    use vnet_node::peer::{decode, encode, LeaseRenewal};
    use vnet_proto::vnet::raft::v1::RaftMessage;

    let target = PeerTarget::start().await;
    let follower = target.follower;
    let mut peer = target.peer(follower).await;
    let huge = LeaseRenewal {
        unit: "\u{1}".repeat(500_000),
    };
    let status = peer
        .grant_lease(encode(&huge))
        .await
        .expect_err("a huge name");
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    assert!(
        status.message().len() < 1_000,
        "the name is not echoed in full"
    );
    let garbage = RaftMessage {
        format: "json/1".into(),
        payload: b"{not json".to_vec(),
        data: Vec::new(),
    };
    let status = peer
        .grant_lease(garbage.clone())
        .await
        .expect_err("malformed");
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    let status = peer.lease_report(garbage).await.expect_err("malformed");
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    // A witness, or a name that is no member, is not granted anything.
    for unit in ["witness", "nobody"] {
        let renewal = LeaseRenewal { unit: unit.into() };
        let reply = peer.grant_lease(encode(&renewal)).await.expect("answered");
        let answer: Result<Grant, String> = decode(reply.get_ref(), "grant").expect("decodes");
        let refused = answer.expect_err("not a unit");
        assert!(refused.contains("not a unit"), "{refused}");
    }
    let reply = peer.lease_report(encode(&())).await.expect("answered");
    let report: VoterReport = decode(reply.get_ref(), "report").expect("decodes");
    assert_eq!(report.voter, follower, "a report speaks for the node asked");
    target.assert_writes_go_on_through(follower).await;
}
