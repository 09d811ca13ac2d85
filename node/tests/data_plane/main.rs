//! The data plane outlives the control plane (invariant 7), against real `vnetd` processes:
//! each unit's switch is a `vnet-switchd` server (run in this test process, which no fault
//! touches), and each `vnetd` a process the tests kill with SIGKILL, stop with SIGSTOP and
//! restart. Whatever happens to leadership — the leading witness killed, leadership handed
//! between every pair, the leader stopped for twice the longest election timeout or restarted,
//! the witness gone for 30 s — the switch journals of the healthy units must show no fence and no
//! clear, and a unit killed while a majority remains is still failed over with the same
//! identities.
//!
//! The tests of this file run one at a time (`SERIAL`): two clusters at once on two cores would
//! starve each other, and starving a unit of CPU for longer than its lease rightly fences it.

#[path = "../common/mod.rs"]
mod common;
mod harness;

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use common::fabric::presents_exactly;
use common::wait_for;
use fabric_agent::journal::{self, Event};
use nix::sys::signal::Signal;
use tonic::transport::{Channel, Endpoint};
use vnet_proto::vnet::v1 as pb;
use vnet_proto::vnet::v1::cluster_service_client::ClusterServiceClient;
use vnet_proto::vnet::v1::profile_service_client::ProfileServiceClient;
use vnet_proto::vnet::v1::watch_service_client::WatchServiceClient;

use harness::*;
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_leading_witness_fences_no_unit_and_a_later_unit_death_still_fails_over() {
    let _serial = SERIAL.lock().await;
    let mut plane = DataPlane::start().await;
    plane.transfer(3).await;
    let marks = [plane.journal_mark("unit-a"), plane.journal_mark("unit-b")];
    plane.node("witness").kill9();
    let leader = plane.leader().await;
    assert_ne!(leader, 3, "a unit leads after the witness died");
    plane
        .wait_leases_outlived(&["unit-a", "unit-b"], fabric_agent::monotonic_now_ns())
        .await;
    plane.assert_no_fence_since("unit-a", marks[0], "the leading witness's death");
    plane.assert_no_fence_since("unit-b", marks[1], "the leading witness's death");
    // With the witness back, a majority remains when unit-b dies: unit-a takes its profiles.
    plane.node("witness").start();
    let mark_a = plane.journal_mark("unit-a");
    plane.node("unit-b").kill9();
    plane
        .wait_presented("unit-a", &plane.profiles.clone())
        .await;
    let records = journal::read(&plane.switch("unit-a").journal).expect("journal");
    assert!(
        !records[mark_a..]
            .iter()
            .any(|r| matches!(r.event, Event::Fenced { .. })),
        "the survivor was fenced while taking over"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leadership_handed_between_every_pair_fences_no_unit() {
    let _serial = SERIAL.lock().await;
    let plane = DataPlane::start().await;
    let marks = [plane.journal_mark("unit-a"), plane.journal_mark("unit-b")];
    let first = plane.leader().await;
    // Every ordered pair: from each node to each other node.
    let mut order = vec![first];
    for (from, to) in [(1, 2), (2, 3), (3, 1), (1, 3), (3, 2), (2, 1)] {
        if *order.last().expect("a leader") != from {
            plane.transfer(from).await;
            order.push(from);
        }
        plane.transfer(to).await;
        order.push(to);
    }
    plane
        .wait_leases_outlived(&["unit-a", "unit-b"], fabric_agent::monotonic_now_ns())
        .await;
    let hops: Vec<&str> = order.iter().map(|id| name_of(*id)).collect();
    plane.assert_no_fence_since("unit-a", marks[0], &format!("transfers {hops:?}"));
    plane.assert_no_fence_since("unit-b", marks[1], &format!("transfers {hops:?}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_stopped_for_two_election_timeouts_or_restarted_fences_no_healthy_unit() {
    let _serial = SERIAL.lock().await;
    let mut plane = DataPlane::start().await;
    for leader in [3, 1] {
        plane.transfer(leader).await;
        let name = name_of(leader);
        let healthy: Vec<&str> = ["unit-a", "unit-b"]
            .into_iter()
            .filter(|u| *u != name)
            .collect();
        let marks: Vec<usize> = healthy.iter().map(|u| plane.journal_mark(u)).collect();
        plane.node(name).stop();
        // The fault itself: stopped for twice the longest election timeout.
        tokio::time::sleep(2 * ELECTION_MAX).await;
        plane.node(name).resume();
        plane.leader().await;
        plane
            .wait_leases_outlived(&healthy, fabric_agent::monotonic_now_ns())
            .await;
        for (unit, mark) in healthy.iter().zip(&marks) {
            plane.assert_no_fence_since(unit, *mark, &format!("SIGSTOP of the leader {name}"));
        }
        // Restart of the leader: kill -9, start again on the same data.
        plane.transfer(leader).await;
        let marks: Vec<usize> = healthy.iter().map(|u| plane.journal_mark(u)).collect();
        plane.node(name).kill9();
        plane.node(name).start();
        plane.leader().await;
        plane
            .wait_leases_outlived(&healthy, fabric_agent::monotonic_now_ns())
            .await;
        for (unit, mark) in healthy.iter().zip(&marks) {
            plane.assert_no_fence_since(unit, *mark, &format!("restart of the leader {name}"));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leading_witness_down_for_thirty_seconds_fences_no_unit() {
    let _serial = SERIAL.lock().await;
    let mut plane = DataPlane::start().await;
    // Leading, so that its loss also costs the cluster its leader.
    plane.transfer(3).await;
    let marks = [plane.journal_mark("unit-a"), plane.journal_mark("unit-b")];
    plane.node("witness").kill9();
    // The fault itself: the witness stays down for 30 s.
    tokio::time::sleep(Duration::from_secs(30)).await;
    plane
        .wait_leases_outlived(&["unit-a", "unit-b"], fabric_agent::monotonic_now_ns())
        .await;
    plane.assert_no_fence_since("unit-a", marks[0], "30 s without the witness");
    plane.assert_no_fence_since("unit-b", marks[1], "30 s without the witness");
    // The units kept presenting their own profiles all along, and still do.
    plane
        .wait_presented("unit-a", &plane.placed_on("unit-a"))
        .await;
    plane
        .wait_presented("unit-b", &plane.placed_on("unit-b"))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_two_voters_of_three_gone_the_survivor_fences_and_its_status_says_why() {
    let _serial = SERIAL.lock().await;
    let mut plane = DataPlane::start().await;
    plane.node("witness").kill9();
    plane.node("unit-b").kill9();
    // No majority: nothing can fail over, and unit-a, holding one grant of three, fences.
    let survivor = channel(plane.node("unit-a").api);
    let status = wait_for("unit-a's status says it holds no lease", || async {
        let status = ClusterServiceClient::new(survivor.clone())
            .get_cluster_status(pb::GetClusterStatusRequest {
                consistency: pb::ReadConsistency::Local as i32,
            })
            .await
            .ok()?
            .into_inner();
        let unit = status.units.iter().find(|u| u.name == "unit-a")?;
        (unit.lease_left_ms.is_none() && unit.voters_granting.is_some()).then_some(status)
    })
    .await;
    // (unit-a may still call itself leader: an openraft leader does not step down for want of
    // a quorum, but it can commit nothing.)
    let unit = status
        .units
        .iter()
        .find(|u| u.name == "unit-a")
        .expect("unit-a");
    assert!(unit.voters_granting < Some(2), "{unit:?}");
    assert!(unit.note.contains("fewer than a majority"), "{}", unit.note);
    plane.wait_until_fenced("unit-a").await;
    // Nothing was failed over: the profiles stay placed where they were.
    let placements = status.placements;
    assert!(
        placements.iter().all(|p| p.failed_over_from.is_empty()),
        "{placements:?}"
    );
}

/// A failover is one trace: the leader's `failover` span (from the revocation of the dead unit's
/// lease) is the parent of the revocation and failover writes, and the surviving unit's
/// presentation of each moved profile, and its report of it, continue the same trace from the
/// failover's Raft entry — across processes, through the replicated log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failover_is_one_trace_from_the_revocation_to_the_peers_presentation() {
    let _serial = SERIAL.lock().await;
    let collector = common::otlp::Running::start().await;
    let mut plane = DataPlane::start_with(
        &["--otlp-endpoint".to_owned(), collector.endpoint.clone()],
        // Export within 100 ms rather than the default 5 s, so the test waits less.
        &[("OTEL_BSP_SCHEDULE_DELAY", "100")],
    )
    .await;
    // The witness leads, so the leader's spans and the survivor's come from different processes.
    plane.transfer(3).await;
    let moved = plane.placed_on("unit-a");
    assert!(!moved.is_empty(), "unit-a presents profiles to fail over");
    plane.node("unit-a").kill9();
    plane
        .wait_presented("unit-b", &plane.profiles.clone())
        .await;

    let (failover, steps, presented, report) = wait_for(
        "the failover's spans are exported by the leader and the survivor",
        || async {
            let spans = collector.spans();
            let failover = spans
                .iter()
                .find(|s| s.node == "witness" && s.name == "failover")?
                .clone();
            let in_trace: Vec<_> = spans
                .iter()
                .filter(|s| s.trace_id == failover.trace_id)
                .cloned()
                .collect();
            let steps: Vec<_> = ["revoke_lease", "commit_failover"]
                .iter()
                .map(|name| {
                    in_trace
                        .iter()
                        .find(|s| s.node == "witness" && s.name == *name)
                        .cloned()
                })
                .collect::<Option<_>>()?;
            let presented: Vec<_> = in_trace
                .iter()
                .filter(|s| s.node == "unit-b" && s.name == "present")
                .cloned()
                .collect();
            let report = in_trace
                .iter()
                .find(|s| s.node == "unit-b" && s.name == "report_presented")?
                .clone();
            (presented.len() >= moved.len()).then_some((failover, steps, presented, report))
        },
    )
    .await;
    for step in &steps {
        assert_eq!(
            step.parent_span_id, failover.span_id,
            "{} is a child of failover",
            step.name
        );
    }
    // The survivor continues from the failover's Raft entry, written inside commit_failover.
    let commit = &steps[1];
    let commit_children: Vec<String> = collector
        .spans()
        .iter()
        .filter(|s| s.trace_id == failover.trace_id && s.parent_span_id == commit.span_id)
        .map(|s| s.span_id.clone())
        .collect();
    for span in &presented {
        assert!(
            span.parent_span_id == commit.span_id || commit_children.contains(&span.parent_span_id),
            "present on unit-b continues the failover's commit: {span:?}, commit {commit:?}"
        );
    }
    assert!(
        presented.iter().any(|p| p.span_id == report.parent_span_id),
        "the report is a child of a presentation: {report:?}"
    );
}

/// A process's resident memory in KiB, and its peak so far, from `/proc/<pid>/status`.
fn rss_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read status");
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .unwrap_or_else(|| panic!("{name} in /proc/{pid}/status"))
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// A profile that adds an event to the history and to every watcher's feed; its server is cabled
/// nowhere, so it places nothing on a switch.
fn churn_profile(i: usize) -> pb::Profile {
    pb::Profile {
        name: format!("churn-{i}"),
        server: format!("uncabled-{i}"),
        vnics: (0..4)
            .map(|n| pb::Vnic {
                name: format!("eth{n}"),
                network: "prod".into(),
                ..Default::default()
            })
            .collect(),
        vhbas: (0..4)
            .map(|n| pb::Vhba {
                name: format!("fc{n}"),
                fabric: "a".into(),
                ..Default::default()
            })
            .collect(),
        failback: pb::FailbackPolicy::Manual as i32,
        ..Default::default()
    }
}

/// 6,000 watch streams that never read, all on the leader, while writes go on: the leader keeps
/// its leadership (same leader, same term), its memory stays bounded (each watcher buffers at
/// most `watch_buffer_events`, and is cut off when that stays full), no switch fences, and the
/// watchers past `watchers_max` are refused with RESOURCE_EXHAUSTED.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn six_thousand_watchers_that_never_read_cost_the_leader_neither_leadership_nor_memory() {
    const WATCHERS: usize = 6_000;
    const PAST_THE_LIMIT: usize = 100;
    const STREAMS_PER_CONNECTION: usize = 100;
    let _serial = SERIAL.lock().await;
    let mut plane = DataPlane::start_with(
        &[
            "--watchers-max".to_owned(),
            WATCHERS.to_string(),
            "--watch-stall-timeout-ms".to_owned(),
            "1000".to_owned(),
        ],
        &[],
    )
    .await;
    let leader = plane.leader().await;
    let api = plane.nodes[leader as usize - 1].api;
    let pid = plane
        .node(name_of(leader))
        .child
        .as_ref()
        .expect("running")
        .id();
    let leader_status = || async {
        ClusterServiceClient::new(channel(api))
            .get_cluster_status(pb::GetClusterStatusRequest {
                consistency: pb::ReadConsistency::Local as i32,
            })
            .await
            .expect("the leader answers status")
            .into_inner()
    };
    let term = leader_status().await.term;
    let marks = [plane.journal_mark("unit-a"), plane.journal_mark("unit-b")];
    // A history for the watchers to fall behind on: every watcher starts from revision 1.
    let mut profiles = ProfileServiceClient::new(channel(api));
    for i in 0..200 {
        profiles
            .create_profile(pb::CreateProfileRequest {
                profile: Some(churn_profile(i)),
            })
            .await
            .expect("create a churn profile");
    }
    let (rss_start, _) = rss_kib(pid);

    // Small HTTP/2 windows, so that the leader's side fills up rather than this process's.
    let connections: Vec<Channel> = (0..(WATCHERS + PAST_THE_LIMIT)
        .div_ceil(STREAMS_PER_CONNECTION))
        .map(|_| {
            Endpoint::from_shared(format!("http://{api}"))
                .expect("endpoint")
                .initial_stream_window_size(Some(16 * 1024))
                .initial_connection_window_size(Some(64 * 1024))
                .connect_timeout(Duration::from_secs(5))
                .connect_lazy()
        })
        .collect();
    let opened = std::time::Instant::now();
    let mut streams = Vec::with_capacity(WATCHERS);
    for connection in &connections[..WATCHERS / STREAMS_PER_CONNECTION] {
        let client = WatchServiceClient::new(connection.clone());
        let opening = (0..STREAMS_PER_CONNECTION).map(|_| {
            let mut client = client.clone();
            async move {
                client
                    .watch(pb::WatchRequest { from_revision: 1 })
                    .await
                    .map(|r| r.into_inner())
            }
        });
        for stream in futures::future::join_all(opening).await {
            streams.push(stream.expect("a watcher within watchers_max is served"));
        }
    }
    let opening_took = opened.elapsed();
    let mut refused = 0;
    let mut extra = WatchServiceClient::new(connections.last().expect("a connection").clone());
    for _ in 0..PAST_THE_LIMIT {
        match extra.watch(pb::WatchRequest { from_revision: 1 }).await {
            Err(status) if status.code() == tonic::Code::ResourceExhausted => {
                assert!(status.message().contains("watchers_max"), "{status:?}");
                refused += 1;
            }
            other => panic!("a watcher past watchers_max was not refused: {other:?}"),
        }
    }
    let (rss_open, _) = rss_kib(pid);

    // Writes go on while the watchers sit: each one is an event for every watcher.
    let written = std::time::Instant::now();
    let mut slowest = Duration::ZERO;
    for i in 0..200 {
        let started = std::time::Instant::now();
        profiles
            .delete_profile(pb::DeleteProfileRequest {
                name: format!("churn-{i}"),
                expected_revision: 0,
            })
            .await
            .expect("writes commit while the watchers sit");
        slowest = slowest.max(started.elapsed());
    }
    let writing_took = written.elapsed();
    // The watchers are cut off once their buffers stay full past the stall timeout; their slots
    // stay held until their clients read or leave.
    let log = plane.node(name_of(leader)).log.clone();
    wait_for(
        "the leader logs cut-off watchers and refused ones",
        || async {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            (text.contains("cut off a watcher whose buffer stayed full")
                && text.contains("refused a watch: watchers_max (6000) watchers are open"))
            .then_some(())
        },
    )
    .await;
    let (rss_end, rss_peak) = rss_kib(pid);
    let after = leader_status().await;
    plane
        .wait_leases_outlived(&["unit-a", "unit-b"], fabric_agent::monotonic_now_ns())
        .await;
    println!(
        "{WATCHERS} watchers opened in {opening_took:?}, {refused}/{PAST_THE_LIMIT} past \
         watchers_max refused; 200 deletes in {writing_took:?} (slowest {slowest:?}); leader \
         VmRSS {} MiB before the watchers, {} MiB with them open, {} MiB after the writes, peak \
         (VmHWM) {} MiB; term {term} -> {}",
        rss_start / 1024,
        rss_open / 1024,
        rss_end / 1024,
        rss_peak / 1024,
        after.term
    );
    assert_eq!(refused, PAST_THE_LIMIT);
    assert_eq!(
        after.leader_id,
        Some(leader),
        "the leader lost its leadership"
    );
    assert_eq!(after.term, term, "an election happened");
    assert!(
        rss_peak < 300 * 1024,
        "the leader's peak RSS is {} MiB",
        rss_peak / 1024
    );
    plane.assert_no_fence_since("unit-a", marks[0], "6,000 watchers that never read");
    plane.assert_no_fence_since("unit-b", marks[1], "6,000 watchers that never read");
    drop(streams);
}

// ---- Operating through bad days: recovery without a quorum, member replacement, rolling
// restart (README, "Operating through bad days").

/// Runs `vnetd recover` on `data_dir`: its exit code and what it printed.
fn recover(data_dir: &std::path::Path, confirm_lost: Option<&str>) -> (Option<i32>, String) {
    let mut command = Command::new(VNETD);
    command
        .arg("recover")
        .arg("--data-dir")
        .arg(data_dir)
        .args(["--operator", "alice"]);
    if let Some(lost) = confirm_lost {
        command.args(["--confirm-lost", lost]);
    }
    let out = command.output().expect("run vnetd recover");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), text)
}

async fn local_status(api: SocketAddr) -> Option<pb::GetClusterStatusResponse> {
    ClusterServiceClient::new(channel(api))
        .get_cluster_status(pb::GetClusterStatusRequest {
            consistency: pb::ReadConsistency::Local as i32,
        })
        .await
        .ok()
        .map(|r| r.into_inner())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovery_without_a_quorum_is_guarded_and_the_survivor_presents_again() {
    let _serial = SERIAL.lock().await;
    let mut plane = DataPlane::start().await;
    let data_dir = plane.dir.as_ref().expect("dir").path().join("unit-a");
    plane.node("witness").kill9();
    plane.node("unit-b").kill9();
    plane.wait_until_fenced("unit-a").await;
    plane.node("unit-a").kill9();

    // Refused while a member answers: with unit-b up, unit-a and unit-b are a quorum.
    plane.node("unit-b").start();
    let unit_b_api = plane.node("unit-b").api;
    wait_for("unit-b serves again", || async {
        local_status(unit_b_api).await.map(|_| ())
    })
    .await;
    let (code, text) = recover(&data_dir, Some("2,3"));
    println!("with unit-b up: {text}");
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("a quorum is reachable"), "{text}");
    plane.node("unit-b").kill9();

    // Refused without a confirmation for every lost member, naming the missing ones.
    let (code, text) = recover(&data_dir, None);
    assert_eq!(code, Some(2), "--confirm-lost is required: {text}");
    let (code, text) = recover(&data_dir, Some("2"));
    println!("only 2 confirmed: {text}");
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains("not confirmed: 3 (witness@"),
        "the refusal lists the missing member: {text}"
    );
    let (code, text) = recover(&data_dir, Some("2,3"));
    println!("recovered: {text}");
    assert_eq!(code, Some(0), "{text}");

    // The survivor leads alone and presents again.
    let mark = plane.journal_mark("unit-a");
    plane.node("unit-a").start();
    let unit_a_api = plane.node("unit-a").api;
    let status = wait_for("unit-a leads a cluster of one", || async {
        let status = local_status(unit_a_api).await?;
        (status.leader_id == Some(1)).then_some(status)
    })
    .await;
    assert_eq!(
        status.members.iter().map(|m| m.id).collect::<Vec<_>>(),
        vec![1],
        "{:?}",
        status.members
    );
    // Its own profiles and, failed over, the lost unit-b's, each with its identities.
    plane
        .wait_presented("unit-a", &plane.profiles.clone())
        .await;
    let presented_again = journal::read(&plane.switch("unit-a").journal).expect("journal");
    println!(
        "unit-a's switch: {} journal records since its restart",
        presented_again.len() - mark
    );

    // The confirmation is in the replicated history, with the operator as its actor.
    let mut events = WatchServiceClient::new(channel(unit_a_api))
        .watch(pb::WatchRequest { from_revision: 1 })
        .await
        .expect("watch")
        .into_inner();
    let recovered = loop {
        let event = tokio::time::timeout(Duration::from_secs(10), events.message())
            .await
            .expect("the recovery event within the history")
            .expect("watch stream")
            .expect("an event");
        if let Some(pb::watch_event::Change::Recovered(r)) = event.change {
            break (event.actor, r);
        }
    };
    assert_eq!(recovered.0, "alice");
    assert_eq!(recovered.1.survivor, 1);
    assert_eq!(recovered.1.lost, vec![2, 3]);

    // The lost member comes back with its old data: refused, it never gets a lease, and the
    // survivor stays the only voter.
    plane.node("unit-b").start();
    let old_term = local_status(unit_b_api).await.map(|s| s.term);
    wait_for("the old unit-b campaigns", || async {
        let now = local_status(unit_b_api).await?.term;
        (Some(now) > old_term.map(|t| t + 1)).then_some(())
    })
    .await;
    let status = local_status(unit_a_api).await.expect("status");
    assert_eq!(status.leader_id, Some(1));
    assert_eq!(status.members.len(), 1, "{:?}", status.members);
    assert!(
        plane.ports("unit-b").await.is_empty(),
        "the removed unit-b presents"
    );
    let add_again = ClusterServiceClient::new(channel(unit_a_api))
        .add_member(pb::AddMemberRequest {
            id: 2,
            name: "unit-b".into(),
            peer_addr: "127.0.0.1:1".into(),
            api_addr: "127.0.0.1:2".into(),
            role: pb::MemberRole::Unit as i32,
        })
        .await
        .expect_err("a removed id is never used again");
    assert_eq!(add_again.code(), tonic::Code::FailedPrecondition);
}

/// Clients creating profiles one after another through `apis` in turn (moving to the next
/// endpoint after any failure), recording what was acknowledged.
struct Load {
    acknowledged: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    errors: std::sync::Arc<std::sync::atomic::AtomicU64>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    tasks: tokio::task::JoinSet<()>,
}

impl Load {
    fn start(apis: Vec<SocketAddr>, writers: usize) -> Load {
        use std::sync::atomic::Ordering;
        let mut load = Load {
            acknowledged: Default::default(),
            errors: Default::default(),
            stop: Default::default(),
            tasks: tokio::task::JoinSet::new(),
        };
        for w in 0..writers {
            let apis = apis.clone();
            let acknowledged = load.acknowledged.clone();
            let errors = load.errors.clone();
            let stop = load.stop.clone();
            load.tasks.spawn(async move {
                let mut endpoint = w;
                let mut n = 0u64;
                while !stop.load(Ordering::SeqCst) {
                    let name = format!("load-{w}-{n}");
                    let profile = pb::Profile {
                        name: name.clone(),
                        server: format!("srv-load-{w}"),
                        vnics: vec![pb::Vnic {
                            name: "eth0".into(),
                            network: "prod".into(),
                            ..Default::default()
                        }],
                        failback: pb::FailbackPolicy::Manual as i32,
                        ..Default::default()
                    };
                    let created = ProfileServiceClient::new(channel(apis[endpoint % apis.len()]))
                        .create_profile(pb::CreateProfileRequest {
                            profile: Some(profile),
                        })
                        .await;
                    match created {
                        Ok(_) => {
                            acknowledged.lock().expect("lock").push(name);
                            n += 1;
                        }
                        Err(e) if e.code() == tonic::Code::AlreadyExists => n += 1,
                        Err(_) => {
                            errors.fetch_add(1, Ordering::SeqCst);
                            endpoint += 1;
                        }
                    }
                }
            });
        }
        load
    }

    /// Stops the writers; what they had acknowledged and how many calls failed.
    async fn stop(mut self) -> (Vec<String>, u64) {
        use std::sync::atomic::Ordering;
        self.stop.store(true, Ordering::SeqCst);
        while let Some(joined) = self.tasks.join_next().await {
            joined.expect("writer");
        }
        let acknowledged = self.acknowledged.lock().expect("lock").clone();
        (acknowledged, self.errors.load(Ordering::SeqCst))
    }
}

/// Fails unless every name in `acknowledged` is a profile, read linearizably through `api`.
async fn assert_all_present(api: SocketAddr, acknowledged: &[String]) {
    let mut names = std::collections::BTreeSet::new();
    let mut page_token = String::new();
    loop {
        let page = ProfileServiceClient::new(channel(api))
            .list_profiles(pb::ListProfilesRequest {
                page_size: 1000,
                page_token: page_token.clone(),
                ..Default::default()
            })
            .await
            .expect("list profiles")
            .into_inner();
        names.extend(page.profiles.into_iter().map(|p| p.name));
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    let lost: Vec<&String> = acknowledged
        .iter()
        .filter(|n| !names.contains(*n))
        .collect();
    assert!(lost.is_empty(), "acknowledged writes lost: {lost:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replacing_a_unit_under_load_with_a_new_id_that_catches_up_then_removing_the_old_id() {
    let _serial = SERIAL.lock().await;
    let mut plane = DataPlane::start().await;
    let apis = vec![plane.node("unit-a").api, plane.node("witness").api];
    let load = Load::start(apis.clone(), 2);
    // unit-b's hardware dies; unit-a takes its profiles.
    plane.node("unit-b").kill9();
    plane
        .wait_presented("unit-a", &plane.profiles.clone())
        .await;
    let mark_a = plane.journal_mark("unit-a");

    // The replacement: new hardware (its own switch), a new id and name, an empty data dir.
    let dir = plane.dir.as_ref().expect("dir").path().to_path_buf();
    let switch = start_switch(&dir, "unit-c").await;
    let (api, peer) = (free_port(), free_port());
    let cabling = SERVERS
        .iter()
        .enumerate()
        .map(|(p, s)| format!("{s}={}", p + 1))
        .collect::<Vec<_>>()
        .join(",");
    let args: Vec<String> = [
        "--id",
        "4",
        "--name",
        "unit-c",
        "--role",
        "unit",
        "--data-dir",
        &dir.join("unit-c").display().to_string(),
        "--api-listen",
        &api.to_string(),
        "--peer-listen",
        &peer.to_string(),
        "--initial-cluster",
        "",
        "--switch",
        &switch.addr.to_string(),
        "--cabling",
        &cabling,
        "--request-timeout-ms",
        "3000",
        "--log-level",
        "info",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    plane.switches.push(switch);
    plane.nodes.push(Node {
        id: 4,
        name: "unit-c",
        api,
        args,
        env: vec![],
        log: dir.join("unit-c.log"),
        child: None,
        stopped: false,
    });
    plane.node("unit-c").start();
    let started = std::time::Instant::now();
    let mut cluster = ClusterServiceClient::new(channel(apis[0]));
    cluster
        .add_member(pb::AddMemberRequest {
            id: 4,
            name: "unit-c".into(),
            peer_addr: peer.to_string(),
            api_addr: api.to_string(),
            role: pb::MemberRole::Unit as i32,
        })
        .await
        .expect("add unit-c as a learner");
    // Promotion is refused until the learner has caught up.
    let refusals = std::sync::atomic::AtomicU32::new(0);
    wait_for("unit-c catches up and is promoted", || {
        let mut cluster = cluster.clone();
        let refusals = &refusals;
        async move {
            match cluster
                .promote_member(pb::PromoteMemberRequest { id: 4 })
                .await
            {
                Ok(_) => Some(()),
                Err(_) => {
                    refusals.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    None
                }
            }
        }
    })
    .await;
    let refusals = refusals.into_inner();
    let caught_up = started.elapsed();
    cluster
        .remove_member(pb::RemoveMemberRequest { id: 2 })
        .await
        .expect("remove the old id");
    let status = wait_for("unit-c is a voter and unit-b is gone", || async {
        let status = local_status(apis[0]).await?;
        let voters: Vec<u64> = status
            .members
            .iter()
            .filter(|m| m.membership == pb::RaftMembership::Voter as i32)
            .map(|m| m.id)
            .collect();
        (voters == vec![1, 3, 4]).then_some(status)
    })
    .await;
    assert!(status.members.iter().all(|m| m.id != 2));
    plane
        .wait_leases_outlived(&["unit-a"], fabric_agent::monotonic_now_ns())
        .await;
    plane.assert_no_fence_since("unit-a", mark_a, "the replacement of unit-b");
    let (acknowledged, errors) = load.stop().await;
    assert_all_present(apis[1], &acknowledged).await;
    println!(
        "unit-c added, caught up and promoted in {caught_up:?} ({refusals} promotions refused \
         while catching up); {} writes acknowledged during the replacement, {errors} failed \
         calls",
        acknowledged.len()
    );

    // The new unit takes work: a profile moved to it keeps its identities.
    let moved = plane.profiles[1].clone();
    cluster
        .failover(pb::FailoverRequest {
            profile: moved.name.clone(),
            to_unit: "unit-c".into(),
            from_unit: String::new(),
        })
        .await
        .expect("move a profile to unit-c");
    plane.wait_presented("unit-c", &[moved]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_of_every_node_keeps_writes_and_fences_no_healthy_unit() {
    use std::time::Instant;
    let _serial = SERIAL.lock().await;
    let mut plane = DataPlane::start().await;
    let apis: Vec<SocketAddr> = plane.nodes.iter().map(|n| n.api).collect();
    let load = Load::start(apis.clone(), 2);
    for name in ["witness", "unit-b", "unit-a"] {
        let healthy: Vec<&str> = ["unit-a", "unit-b"]
            .into_iter()
            .filter(|u| *u != name)
            .collect();
        let marks: Vec<usize> = healthy.iter().map(|u| plane.journal_mark(u)).collect();
        let own_mark = (name != "witness").then(|| plane.journal_mark(name));
        let since = fabric_agent::monotonic_now_ns();
        let started = Instant::now();
        // The restart an upgrade does: SIGTERM, wait for the exit, start (the new binary).
        plane.node(name).signal(Signal::SIGTERM);
        let mut child = plane.node(name).child.take().expect("running");
        let status = wait_for(&format!("{name} exits on SIGTERM"), || {
            let exited = child.try_wait().expect("try_wait");
            async move { exited }
        })
        .await;
        assert!(status.success(), "{name} exited with {status}");
        plane.node(name).start();
        let api = plane.node(name).api;
        wait_for(&format!("{name} is back and caught up"), || async {
            let status = local_status(api).await?;
            status.leader_id?;
            (status.applied_index + 64 >= status.commit_index && status.applied_index > 0)
                .then_some(())
        })
        .await;
        let back = started.elapsed();
        plane.wait_leases_outlived(&healthy, since).await;
        for (unit, mark) in healthy.iter().zip(&marks) {
            plane.assert_no_fence_since(unit, *mark, &format!("the restart of {name}"));
        }
        let own_fences = own_mark.map(|mark| {
            journal::read(&plane.switch(name).journal).expect("journal")[mark..]
                .iter()
                .filter(|r| matches!(r.event, Event::Fenced { .. }))
                .count()
        });
        println!(
            "{name}: back and caught up {back:?} after SIGTERM; its own switch fenced {} times",
            own_fences.map_or("-".to_string(), |n| n.to_string())
        );
    }
    let (acknowledged, errors) = load.stop().await;
    assert_all_present(apis[2], &acknowledged).await;
    println!(
        "{} writes acknowledged during the rolling restart, {errors} failed calls",
        acknowledged.len()
    );
    // Every profile is presented once again, by one of the units.
    let servers: Vec<String> = SERVERS.iter().map(|s| s.to_string()).collect();
    wait_for("every profile is presented after the restarts", || async {
        let a = plane.ports("unit-a").await;
        let b = plane.ports("unit-b").await;
        plane
            .profiles
            .iter()
            .all(|p| presents_exactly(&a, &servers, p) ^ presents_exactly(&b, &servers, p))
            .then_some(())
    })
    .await;
}
