//! vnet-ha at its profile limit: what a full cluster costs and how long the slow paths take.
//!
//! ```sh
//! cargo build --release -p vnet-node -p fabric-agent
//! cargo bench -p cluster-cli --bench scale -- --profiles 4090
//! ```
//!
//! Starts the demo cluster (two units with their simulated switches and a witness, six profiles),
//! fills it with `--profiles` more (default 10,000; at most `PROFILES_MAX` less the demo's six;
//! each with one vNIC and one vHBA of explicit identities, for servers cabled nowhere, so they stay
//! unplaced and load the control plane only), then prints, each measured once:
//! - the time to create them (32 clients spread over the three endpoints);
//! - each `vnetd`'s resident memory (VmRSS and its peak VmHWM);
//! - the size of a backup (`SaveSnapshot`) and the time to take it;
//! - the time to list every profile through paging (1,000 a page);
//! - the size of the cluster status (it lists every placement) and the time to get it;
//! - the time for a watch to replay the history of the last 10,000 revisions;
//! - the time for a new member (a learner with an empty data directory) to catch up, through a
//!   snapshot once the log has been compacted: from `AddMember` to its applied index reaching the
//!   membership change;
//! - the time for a follower killed with SIGKILL to be serving again (`/readyz` 200 on its
//!   metrics port), restarted with the same command line and data directory.
//!
//! Numbers are printed, never judged.

mod common;

use std::time::{Duration, Instant};

use tonic::transport::{Channel, Endpoint};
use vnet_proto::vnet::v1 as pb;
use vnet_proto::vnet::v1::cluster_service_client::ClusterServiceClient;
use vnet_proto::vnet::v1::profile_service_client::ProfileServiceClient;
use vnet_proto::vnet::v1::watch_service_client::WatchServiceClient;

const BASE_PORT: u16 = 25_000;
const PROFILES_DEFAULT: usize = 10_000;
/// The cluster's limit (`vnet_model::limits::PROFILES_MAX`), less the demo's six.
const PROFILES_LIMIT: usize = 16_384 - 6;
/// Revisions a watch replays (the history keeps `EVENT_HISTORY_MAX`, 16,384, events).
const REPLAYED_REVISIONS: u64 = 10_000;
const CLIENTS: usize = 32;
const PAGE_SIZE: u32 = 1_000;
const RESTART_TIMEOUT: Duration = Duration::from_secs(120);

fn parse_args() -> Result<usize, String> {
    let mut profiles = PROFILES_DEFAULT;
    let mut given = std::env::args().skip(1);
    while let Some(arg) = given.next() {
        match arg.as_str() {
            "--profiles" => {
                let value = given.next().ok_or("--profiles needs a number")?;
                profiles = value
                    .parse()
                    .ok()
                    .filter(|n| (1..=PROFILES_LIMIT).contains(n))
                    .ok_or(format!("--profiles {value}: give 1..={PROFILES_LIMIT}"))?;
            }
            "--bench" => {}
            other if !other.starts_with('-') => {}
            other => return Err(format!("unknown flag {other}; flags: --profiles")),
        }
    }
    Ok(profiles)
}

async fn connect(addr: &str) -> Channel {
    Endpoint::from_shared(format!("http://{addr}"))
        .expect("endpoint")
        .tcp_nodelay(true)
        .connect()
        .await
        .unwrap_or_else(|e| panic!("connect {addr}: {e}"))
}

fn profile(i: usize) -> pb::Profile {
    let [_, _, _, _, _, b2, b1, b0] = (i as u64).to_be_bytes();
    pb::Profile {
        name: format!("scale-{i:05}"),
        server: format!("scale-srv-{i:05}"),
        vnics: vec![pb::Vnic {
            name: "eth0".into(),
            mac: format!("02:5c:00:{b2:02x}:{b1:02x}:{b0:02x}"),
            network: "prod".into(),
            vlan: 100,
            pool: None,
        }],
        vhbas: vec![pb::Vhba {
            name: "fc0".into(),
            wwpn: format!("20:00:02:5c:00:{b2:02x}:{b1:02x}:{b0:02x}"),
            wwnn: format!("20:01:02:5c:00:{b2:02x}:{b1:02x}:{b0:02x}"),
            fabric: "a".into(),
            pool: None,
        }],
        failback: pb::FailbackPolicy::Manual as i32,
        ..Default::default()
    }
}

/// VmRSS and VmHWM of `pid`, in MiB.
fn memory_mib(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next()?.parse::<f64>().ok())
            .map_or(0.0, |kib| kib / 1024.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Whether `GET /readyz` on `addr` answers 200.
fn ready(addr: &str) -> bool {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect(addr) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
    let request = format!("GET /readyz HTTP/1.0\r\nHost: {addr}\r\n\r\n");
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer.starts_with("HTTP/1.1 200") || answer.starts_with("HTTP/1.0 200")
}

async fn fill(endpoints: &[String], count: usize) -> Duration {
    let started = Instant::now();
    let mut tasks = Vec::new();
    for client in 0..CLIENTS {
        let channel = connect(&endpoints[client % endpoints.len()]).await;
        tasks.push(tokio::spawn(async move {
            let mut profiles = ProfileServiceClient::new(channel);
            for i in (client..count).step_by(CLIENTS) {
                let request = pb::CreateProfileRequest {
                    profile: Some(profile(i)),
                };
                if let Err(status) = profiles.create_profile(request).await {
                    if status.code() != tonic::Code::AlreadyExists {
                        panic!("create scale-{i:05}: {status}");
                    }
                }
            }
        }));
    }
    for task in tasks {
        task.await.expect("a create client");
    }
    started.elapsed()
}

async fn list_all(channel: Channel) -> (usize, Duration) {
    let started = Instant::now();
    let mut profiles = ProfileServiceClient::new(channel);
    let mut token = String::new();
    let mut listed = 0;
    loop {
        let page = profiles
            .list_profiles(pb::ListProfilesRequest {
                page_size: PAGE_SIZE,
                page_token: token,
                ..Default::default()
            })
            .await
            .expect("list a page")
            .into_inner();
        listed += page.profiles.len();
        if page.next_page_token.is_empty() {
            return (listed, started.elapsed());
        }
        token = page.next_page_token;
    }
}

async fn backup(channel: Channel) -> (usize, Duration) {
    let started = Instant::now();
    let mut stream = ClusterServiceClient::new(channel)
        .save_snapshot(pb::SaveSnapshotRequest {})
        .await
        .expect("SaveSnapshot")
        .into_inner();
    let mut bytes = 0;
    while let Some(part) = stream.message().await.expect("a snapshot part") {
        if let Some(pb::save_snapshot_response::Part::Chunk(chunk)) = part.part {
            bytes += chunk.len();
        }
    }
    (bytes, started.elapsed())
}

async fn replay_history(channel: Channel) -> (usize, Duration) {
    let newest = ClusterServiceClient::new(channel.clone())
        .get_cluster_status(pb::GetClusterStatusRequest::default())
        .await
        .expect("status")
        .into_inner()
        .revision;
    // At most one event per revision, so the last 10,000 revisions hold fewer events than the
    // history keeps: all of them are retained.
    let from_revision = newest.saturating_sub(REPLAYED_REVISIONS).max(1);
    let started = Instant::now();
    let mut stream = WatchServiceClient::new(channel)
        .watch(pb::WatchRequest { from_revision })
        .await
        .expect("watch")
        .into_inner();
    let mut events = 0;
    while let Some(event) = stream.message().await.expect("an event") {
        events += 1;
        if event.revision >= newest {
            break;
        }
    }
    (events, started.elapsed())
}

/// The command line of a running process, program first.
fn cmdline(pid: u32) -> Vec<String> {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).expect("read the cmdline");
    cmdline
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect()
}

/// Starts a new witness (id 4) with an empty data directory beside the demo's, adds it as a
/// learner, and returns how long it took to apply the membership change that added it: with
/// the log compacted by then, that is the time to install a snapshot of the full state and
/// replay what followed it. The process is killed on return.
async fn join_new_member(witness_pid: u32, endpoint: &str, data_dir: &std::path::Path) -> Duration {
    let [api, peer, metrics] =
        [BASE_PORT + 900, BASE_PORT + 901, BASE_PORT + 902].map(|port| format!("127.0.0.1:{port}"));
    let mut args = cmdline(witness_pid);
    let program = args.remove(0);
    let replaced = |flag: &str| match flag {
        "--id" => Some("4".to_owned()),
        "--name" => Some("witness-2".to_owned()),
        "--data-dir" => Some(data_dir.display().to_string()),
        "--api-listen" => Some(api.clone()),
        "--peer-listen" => Some(peer.clone()),
        "--metrics-listen" => Some(metrics.clone()),
        "--initial-cluster" => Some(String::new()),
        _ => None,
    };
    for i in 1..args.len() {
        if let Some(value) = replaced(&args[i - 1]) {
            args[i] = value;
        }
    }
    let log_path = data_dir.with_extension("log");
    let mut child = vnet_launch::Launch::new(program)
        .args(&args)
        .inherit_vnet_env()
        .log(&log_path)
        .spawn()
        .expect("start the new member");
    let deadline = Instant::now() + RESTART_TIMEOUT;
    let mut new_node = loop {
        match Endpoint::from_shared(format!("http://{api}"))
            .expect("endpoint")
            .connect()
            .await
        {
            Ok(channel) => break ClusterServiceClient::new(channel),
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(10)).await
            }
            Err(e) => panic!("the new member's API never answered: {e}"),
        }
    };
    let started = Instant::now();
    let added = ClusterServiceClient::new(connect(endpoint).await)
        .add_member(pb::AddMemberRequest {
            id: 4,
            name: "witness-2".into(),
            peer_addr: peer.clone(),
            api_addr: api.clone(),
            role: pb::MemberRole::Witness as i32,
        })
        .await
        .expect("AddMember")
        .into_inner();
    loop {
        let local = pb::GetClusterStatusRequest {
            consistency: pb::ReadConsistency::Local as i32,
        };
        // `AddMember` answers the revision of the member record it wrote; the new member has
        // caught up once its own applied revision reaches it.
        let applied = new_node
            .get_cluster_status(local)
            .await
            .map(|s| s.into_inner().revision)
            .unwrap_or(0);
        if applied >= added.revision {
            break;
        }
        if Instant::now() >= deadline || child.try_wait().is_ok_and(|e| e.is_some()) {
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(15).collect();
            panic!(
                "the new member did not catch up in time; its log, newest first:\n{}",
                tail.join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let took = started.elapsed();
    let _ = child.kill();
    took
}

/// Whether every thread of `pid` has exited, so that its sockets are closed. A killed process's
/// first thread turns zombie while the others may still be closing its files: a zombie counts
/// only once it is the last thread left.
fn exited(pid: u32) -> bool {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return true;
    };
    let threads = std::fs::read_dir(format!("/proc/{pid}/task")).map_or(0, |d| d.count());
    status.contains("State:\tZ") && threads <= 1
}

/// SIGKILLs `pid` and starts the same command line again; the time until it is ready, and how
/// many starts that took. A start that exits at once is retried, as a service manager would, and
/// counted.
fn restart(pid: u32, metrics_addr: &str) -> (Duration, u32) {
    let mut args = cmdline(pid);
    let program = args.remove(0);
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    );
    while !exited(pid) {
        std::thread::sleep(Duration::from_millis(5));
    }
    let started = Instant::now();
    let log_path = std::env::temp_dir().join(format!("scale-restart-{}.log", std::process::id()));
    let deadline = started + RESTART_TIMEOUT;
    let mut starts = 0;
    let mut child = loop {
        starts += 1;
        let _ = std::fs::remove_file(&log_path);
        // Started as the demo starts it, with this process's environment.
        let mut child = vnet_launch::Launch::new(&program)
            .args(&args)
            .inherit_vnet_env()
            .log(&log_path)
            .spawn()
            .expect("restart vnetd");
        // The restarted process is ours now: kill it when done, as the demo would have.
        let exited = loop {
            if ready(metrics_addr) {
                break None;
            }
            if let Ok(Some(status)) = child.try_wait() {
                break Some(status);
            }
            if Instant::now() >= deadline {
                break Some(std::process::ExitStatus::default());
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        match exited {
            None => break child,
            Some(_) if Instant::now() < deadline => {
                let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                eprintln!(
                    "scale: the restarted vnetd exited; starting it again. Its log:\n{}",
                    log.trim_end()
                );
                std::thread::sleep(Duration::from_millis(100));
            }
            Some(_) => {
                let _ = child.kill();
                let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(15).collect();
                panic!(
                    "the restarted vnetd is not ready within {RESTART_TIMEOUT:?}; the end of \
                     its log, newest first:\n{}",
                    tail.join("\n")
                );
            }
        }
    };
    let took = started.elapsed();
    let _ = child.terminate();
    let _ = child.wait();
    let _ = std::fs::remove_file(&log_path);
    (took, starts)
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let count = match parse_args() {
        Ok(count) => count,
        Err(e) => {
            eprintln!("scale: {e}");
            std::process::exit(2);
        }
    };
    let demo = match common::start_demo(BASE_PORT) {
        Ok(demo) => demo,
        Err(e) => {
            eprintln!("scale: {e}");
            std::process::exit(1);
        }
    };
    let names = ["unit-a", "unit-b", "witness"];
    let idle: Vec<(f64, f64)> = demo.vnetd_pids.iter().map(|pid| memory_mib(*pid)).collect();
    eprintln!("scale: creating {count} profiles with {CLIENTS} clients...");
    let filled = fill(&demo.endpoints, count).await;
    let full: Vec<(f64, f64)> = demo.vnetd_pids.iter().map(|pid| memory_mib(*pid)).collect();
    let channel = connect(&demo.endpoints[0]).await;
    let (backup_bytes, backup_took) = backup(channel.clone()).await;
    let (listed, list_took) = list_all(channel.clone()).await;
    let status_started = Instant::now();
    let status = ClusterServiceClient::new(channel.clone())
        .get_cluster_status(pb::GetClusterStatusRequest::default())
        .await
        .expect("status of a full cluster")
        .into_inner();
    let status_took = status_started.elapsed();
    let status_bytes = prost::Message::encoded_len(&status);
    let (replayed, replay_took) = replay_history(channel).await;
    let joined_dir = tempfile::tempdir().expect("a directory for the new member");
    let join_took = join_new_member(
        demo.vnetd_pids[2],
        &demo.endpoints[0],
        &joined_dir.path().join("witness-2"),
    )
    .await;
    // unit-b: a follower unless it leads; either way a node of the cluster coming back.
    let (restart_took, starts) = restart(
        demo.vnetd_pids[1],
        &format!("127.0.0.1:{}", BASE_PORT + 302),
    );

    println!("\n| what | measured |\n|---|---|");
    println!(
        "| create {count} profiles, {CLIENTS} clients | {:.1} s ({:.0}/s) |",
        filled.as_secs_f64(),
        count as f64 / filled.as_secs_f64()
    );
    for ((name, (rss0, _)), (rss, peak)) in names.iter().zip(&idle).zip(&full) {
        println!("| {name} RSS idle / full (peak) | {rss0:.1} / {rss:.1} ({peak:.1}) MiB |");
    }
    println!(
        "| backup (SaveSnapshot) | {:.2} MB in {} ms |",
        backup_bytes as f64 / 1e6,
        backup_took.as_millis()
    );
    println!(
        "| list every profile, {PAGE_SIZE} a page | {listed} in {} ms |",
        list_took.as_millis()
    );
    println!(
        "| cluster status (every placement) | {:.2} MB in {} ms |",
        status_bytes as f64 / 1e6,
        status_took.as_millis()
    );
    println!(
        "| watch replaying the retained history | {replayed} events in {} ms |",
        replay_took.as_millis()
    );
    println!(
        "| new member added, caught up through a snapshot | {} ms |",
        join_took.as_millis()
    );
    println!(
        "| unit-b SIGKILLed, restarted to /readyz 200 | {} ms ({starts} start(s)) |",
        restart_took.as_millis()
    );
    drop(demo);
}
