//! Server limits against real `vnetd` processes (ARCHITECTURE.md, "Server limits"): a watcher
//! that stops reading is cut off with the revision to resume from, and a flood of idle
//! connections neither exhausts descriptors nor keeps a new client out for longer than the idle
//! timeout. Each refusal is logged.
//!
//! The tests of this file run one at a time (`SERIAL`): each loads two cores by itself.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::processes::Cluster;
use common::wait_for;
use tonic::transport::{Channel, Endpoint};
use vnet_proto::vnet::v1 as pb;
use vnet_proto::vnet::v1::cluster_service_client::ClusterServiceClient;
use vnet_proto::vnet::v1::profile_service_client::ProfileServiceClient;
use vnet_proto::vnet::v1::watch_service_client::WatchServiceClient;

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn args(flags: &[&str]) -> Vec<String> {
    flags.iter().map(|s| s.to_string()).collect()
}

fn log_of(cluster: &Cluster, id: u64) -> String {
    std::fs::read_to_string(&cluster.proc(id).log_path).unwrap_or_default()
}

fn profile(i: usize) -> pb::Profile {
    pb::Profile {
        name: format!("p-{i}"),
        server: format!("s-{i}"),
        failback: pb::FailbackPolicy::Manual as i32,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_that_stops_reading_is_cut_off_and_resumes_where_it_stopped() {
    const WRITES: usize = 200;
    let _serial = SERIAL.lock().await;
    let mut cluster = Cluster::start_with(
        &args(&[
            "--watch-buffer-events",
            "4",
            "--watch-stall-timeout-ms",
            "300",
        ]),
        &[],
    );
    let leader = cluster.leader().await;
    let api = cluster.proc(leader).api_addr;
    // A stream window of 1 KiB: the client takes a handful of events before the server's side
    // (four buffered revisions) fills up.
    let slow = Endpoint::from_shared(format!("http://{api}"))
        .expect("endpoint")
        .initial_stream_window_size(Some(1024))
        .connect()
        .await
        .expect("connect");
    let mut stream = WatchServiceClient::new(slow)
        .watch(pb::WatchRequest { from_revision: 0 })
        .await
        .expect("watch")
        .into_inner();
    let mut profiles = ProfileServiceClient::new(cluster.proc(leader).channel());
    let mut written = Vec::new();
    for i in 0..WRITES {
        let created = profiles
            .create_profile(pb::CreateProfileRequest {
                profile: Some(profile(i)),
            })
            .await
            .expect("create")
            .into_inner()
            .profile
            .expect("profile");
        written.push(created.revision);
    }
    wait_for(
        "the leader logs that it cut off the slow watcher",
        || async {
            log_of(&cluster, leader)
                .contains("cut off a watcher whose buffer stayed full")
                .then_some(())
        },
    )
    .await;
    // Now read: the buffered events, then OUT_OF_RANGE naming where to resume.
    let mut seen = Vec::new();
    let status = loop {
        match stream.message().await {
            Ok(Some(event)) => {
                if matches!(event.change, Some(pb::watch_event::Change::ProfilePut(_))) {
                    seen.push(event.revision);
                }
            }
            Ok(None) => panic!("the stream ended without a status after {seen:?}"),
            Err(status) => break status,
        }
    };
    assert_eq!(status.code(), tonic::Code::OutOfRange, "{status:?}");
    let resume: u64 = status
        .message()
        .split("from_revision ")
        .nth(1)
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no revision to resume from in {:?}", status.message()));
    assert!(
        seen.len() < WRITES,
        "the watcher was cut off before the end"
    );
    assert!(
        seen.last().is_none_or(|last| resume > *last),
        "{resume} after {seen:?}"
    );
    // Resuming there misses nothing and repeats nothing.
    let mut resumed = WatchServiceClient::new(cluster.proc(leader).channel())
        .watch(pb::WatchRequest {
            from_revision: resume,
        })
        .await
        .expect("resume")
        .into_inner();
    while seen.len() < WRITES {
        let event = tokio::time::timeout(Duration::from_secs(10), resumed.message())
            .await
            .expect("the resumed watch delivers")
            .expect("no error")
            .expect("open");
        if matches!(event.change, Some(pb::watch_event::Change::ProfilePut(_))) {
            seen.push(event.revision);
        }
    }
    assert_eq!(seen, written, "every write seen once, in order");
    println!(
        "cut off after {} of {WRITES} events; resumed from revision {resume}",
        written.iter().position(|r| *r >= resume).unwrap_or(WRITES)
    );
    cluster.assert_alive();
}

/// Opens `count` TCP connections to `addr` that send nothing, keeping those the server keeps
/// open (a connection the server refused reads end-of-file at once). Returns them and how many
/// were refused or closed by the server.
async fn open_idle(
    addr: SocketAddr,
    count: usize,
    server_pid: u32,
) -> (Vec<tokio::net::TcpStream>, usize, usize) {
    let mut kept = Vec::new();
    let mut refused = 0;
    let mut most_fds = 0;
    for _ in 0..count {
        let Ok(stream) = tokio::net::TcpStream::connect(addr).await else {
            refused += 1;
            continue;
        };
        kept.push(stream);
        // Drop the connections the server has closed since, so that this process's own
        // descriptors do not run out.
        if kept.len() % 500 == 0 {
            most_fds = most_fds.max(open_fds(server_pid));
            let mut open = Vec::with_capacity(kept.len());
            for stream in kept {
                // The server greets an accepted connection with its HTTP/2 SETTINGS; a refused
                // or timed-out one reads end-of-file.
                let mut greeting = [0u8; 256];
                match stream.try_read(&mut greeting) {
                    Ok(0) => refused += 1,
                    Ok(_) => open.push(stream),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => open.push(stream),
                    Err(_) => refused += 1,
                }
            }
            kept = open;
        }
    }
    (kept, refused, most_fds.max(open_fds(server_pid)))
}

/// How many descriptors process `pid` has open.
fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|entries| entries.count())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_thousand_idle_connections_keep_no_new_client_out_for_long() {
    const IDLE: usize = 20_000;
    const CAP: usize = 500;
    const IDLE_TIMEOUT_MS: u64 = 2_000;
    let _serial = SERIAL.lock().await;
    let mut cluster = Cluster::start_with(
        &args(&[
            "--api-connections-max",
            &CAP.to_string(),
            "--idle-timeout-ms",
            &IDLE_TIMEOUT_MS.to_string(),
            "--keepalive-interval-ms",
            "1000",
        ]),
        &[],
    );
    let leader = cluster.leader().await;
    let target = cluster
        .procs
        .iter()
        .find(|p| p.id != leader)
        .expect("a follower")
        .id;
    let addr = cluster.proc(target).api_addr;
    let pid = cluster.proc(target).pid();
    let fds_before = open_fds(pid);
    let started = Instant::now();
    let (kept, refused, most_fds) = open_idle(addr, IDLE, pid).await;
    let flooded = started.elapsed();
    // A new client, while the idle connections hold every slot: served once they time out.
    let client: Channel = Endpoint::from_shared(format!("http://{addr}"))
        .expect("endpoint")
        .connect_timeout(Duration::from_millis(500))
        .timeout(Duration::from_secs(2))
        .connect_lazy();
    let asked = Instant::now();
    let status = wait_for("a new client is served beside the idle connections", || {
        let client = client.clone();
        async move {
            ClusterServiceClient::new(client)
                .get_cluster_status(pb::GetClusterStatusRequest {
                    consistency: pb::ReadConsistency::Local as i32,
                })
                .await
                .ok()
        }
    })
    .await;
    let served_after = asked.elapsed();
    println!(
        "{IDLE} idle connections opened in {flooded:?}: {} still open, {refused} seen refused or \
         closed idle; the server's descriptors: {fds_before} before, at most {most_fds} during; a \
         new client was served {served_after:?} later (idle timeout {IDLE_TIMEOUT_MS} ms)",
        kept.len()
    );
    assert!(status.into_inner().leader_id.is_some());
    // Beside the connections, the node opens files of its own for moments at a time (the Raft
    // log's next segment while a thread fills it, a directory to fsync, the committed mark), so
    // the count may sit a few above its level before the flood; without the cap it would be
    // thousands above.
    const OWN_FILES: usize = 8;
    assert!(
        most_fds <= fds_before + CAP + OWN_FILES,
        "the server held {most_fds} descriptors, {fds_before} before the flood, cap {CAP}"
    );
    let log = log_of(&cluster, target);
    assert!(
        log.contains("refused a connection: api_connections_max (500) connections are open"),
        "no refusal logged"
    );
    assert!(
        log.contains("closed a connection idle for idle_timeout_ms"),
        "no idle close logged"
    );
    drop(kept);
    cluster.assert_alive();
}
