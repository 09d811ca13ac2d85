//! vnet-ha at its profile limit: what a full cluster costs and how long the slow paths take.
//!
//! ```sh
//! cargo build --release -p vnet-node -p fabric-agent
//! cargo bench -p cluster-cli --bench scale -- --profiles 4090
//! ```
//!
//! Starts the demo cluster (two units with their simulated switches and a witness, six profiles),
//! fills it with `--profiles` more (default: up to `PROFILES_MAX`, 4,096 in all; each with one
//! vNIC and one vHBA of explicit identities, for servers cabled nowhere, so they stay unplaced and
//! load the control plane only), then prints, each measured once:
//! - the time to create them (32 clients spread over the three endpoints);
//! - each `vnetd`'s resident memory (VmRSS and its peak VmHWM);
//! - the size of a backup (`SaveSnapshot`) and the time to take it;
//! - the time to list every profile through paging (1,000 a page);
//! - the time for a watch to replay the history of the last 4,000 revisions;
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
/// The cluster's limit (`vnet_model::limits::PROFILES_MAX`), less the demo's six.
const PROFILES_DEFAULT: usize = 4_096 - 6;
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
                    .filter(|n| (1..=PROFILES_DEFAULT).contains(n))
                    .ok_or(format!("--profiles {value}: give 1..={PROFILES_DEFAULT}"))?;
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
    // At most one event per revision, so the last 4,000 revisions hold fewer events than the
    // history keeps (4,096): all of them are retained.
    let from_revision = newest.saturating_sub(4_000).max(1);
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

/// SIGKILLs `pid` and starts the same command line again; the time until it is ready.
fn restart(pid: u32, metrics_addr: &str) -> Duration {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).expect("read the cmdline");
    let mut args = cmdline
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned());
    let program = args.next().expect("a program");
    let args: Vec<String> = args.collect();
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    );
    while std::path::Path::new(&format!("/proc/{pid}/status")).exists()
        && std::fs::read_to_string(format!("/proc/{pid}/status"))
            .is_ok_and(|s| !s.contains("State:\tZ"))
    {
        std::thread::sleep(Duration::from_millis(5));
    }
    let started = Instant::now();
    let log_path = std::env::temp_dir().join(format!("scale-restart-{}.log", std::process::id()));
    let _ = std::fs::remove_file(&log_path);
    // Started as the demo starts it, with this process's environment.
    let mut child = vnet_launch::Launch::new(program)
        .args(&args)
        .inherit_vnet_env()
        .log(&log_path)
        .spawn()
        .expect("restart vnetd");
    // The restarted process is ours now: kill it when done, as the demo would have.
    let deadline = started + RESTART_TIMEOUT;
    while !ready(metrics_addr) {
        if Instant::now() >= deadline || child.try_wait().is_ok_and(|exited| exited.is_some()) {
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(15).collect();
            panic!(
                "the restarted vnetd is not ready within {RESTART_TIMEOUT:?} (or exited); the \
                 end of its log, newest first:\n{}",
                tail.join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let took = started.elapsed();
    let _ = child.terminate();
    let _ = child.wait();
    let _ = std::fs::remove_file(&log_path);
    took
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
    let (replayed, replay_took) = replay_history(channel).await;
    // unit-b: a follower unless it leads; either way a node of the cluster coming back.
    let restart_took = restart(
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
        "| watch replaying the retained history | {replayed} events in {} ms |",
        replay_took.as_millis()
    );
    println!(
        "| unit-b SIGKILLed, restarted to /readyz 200 | {} ms |",
        restart_took.as_millis()
    );
    drop(demo);
}
