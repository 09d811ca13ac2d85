//! Watchers that never read cost the leader neither its leadership nor its memory.

use std::time::Duration;

use crate::common::wait_for;
use tonic::transport::{Channel, Endpoint};
use vnet_proto::vnet::v1 as pb;
use vnet_proto::vnet::v1::cluster_service_client::ClusterServiceClient;
use vnet_proto::vnet::v1::profile_service_client::ProfileServiceClient;
use vnet_proto::vnet::v1::watch_service_client::WatchServiceClient;

use crate::harness::*;

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
    let pid = plane.node(name_of(leader)).pid();
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
