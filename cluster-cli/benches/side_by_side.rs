//! vnet-ha and etcd side by side on this machine, driven by the same closed loop.
//!
//! ```sh
//! apt-get install etcd-server          # optional: without `etcd` on the PATH only vnet-ha runs
//! cargo build --release -p vnet-node -p fabric-agent
//! cargo bench -p cluster-cli --bench side_by_side -- --clients 1,16,64 --duration 10s
//! ```
//!
//! `--no-etcd` runs vnet-ha alone (to profile it, say).
//!
//! Both clusters have three members on loopback: etcd's from the `etcd` on the PATH, vnet-ha's
//! the demo cluster (`vnetctl demo`: two units with their simulated switches and a witness). Each
//! client owns one key or one profile and has its own connection to endpoint `client mod 3`, so
//! the clients spread over every member as real clients do (a follower forwards to the leader). A
//! write is an etcd put of 256 bytes, or an `UpdateProfile` that changes one vNIC's VLAN; a read is
//! a linearizable etcd get, or a linearizable `GetProfile`. Each level runs for `--duration` after
//! a one-second warm-up, and prints ops/s and p50/p99 latency. Numbers are printed, never judged.
//!
//! The etcd client is written here against the wire format of `etcdserverpb.KV` (only the fields
//! used), so nothing beyond the workspace's own crates is needed.

mod common;

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::Processes;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::{Channel, Endpoint};
use vnet_proto::vnet::v1 as pb;
use vnet_proto::vnet::v1::profile_service_client::ProfileServiceClient;

const ETCD_BASE_PORT: u16 = 23_000;
const VNET_BASE_PORT: u16 = 24_000;
const MEMBERS: u16 = 3;
const WARM_UP: Duration = Duration::from_secs(1);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);

/// The subset of etcd's `etcdserverpb` messages this benchmark sends and reads.
mod etcd {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct PutRequest {
        #[prost(bytes = "vec", tag = "1")]
        pub key: Vec<u8>,
        #[prost(bytes = "vec", tag = "2")]
        pub value: Vec<u8>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct PutResponse {}

    /// `serializable` false (the default) is a linearizable read.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct RangeRequest {
        #[prost(bytes = "vec", tag = "1")]
        pub key: Vec<u8>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct RangeResponse {
        #[prost(message, repeated, tag = "2")]
        pub kvs: Vec<KeyValue>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct KeyValue {
        #[prost(bytes = "vec", tag = "1")]
        pub key: Vec<u8>,
        #[prost(bytes = "vec", tag = "5")]
        pub value: Vec<u8>,
    }
}

#[derive(Debug, Clone)]
struct Args {
    clients: Vec<usize>,
    duration: Duration,
    /// `--no-etcd`: vnet-ha alone, e.g. to profile it.
    etcd: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        clients: vec![1, 16, 64],
        duration: Duration::from_secs(10),
        etcd: true,
    };
    let mut given = std::env::args().skip(1);
    while let Some(arg) = given.next() {
        match arg.as_str() {
            "--clients" => {
                let value = given
                    .next()
                    .ok_or("--clients needs a value, e.g. 1,16,64")?;
                args.clients = value
                    .split(',')
                    .map(|c| match c.trim().parse::<usize>() {
                        Ok(n) if (1..=1024).contains(&n) => Ok(n),
                        _ => Err(format!("--clients {value}: each must be 1..=1024")),
                    })
                    .collect::<Result<_, _>>()?;
            }
            "--duration" => {
                let value = given.next().ok_or("--duration needs a value, e.g. 10s")?;
                let seconds = value
                    .strip_suffix('s')
                    .and_then(|s| s.parse::<u64>().ok())
                    .filter(|s| (1..=3600).contains(s))
                    .ok_or(format!("--duration {value}: give whole seconds, e.g. 10s"))?;
                args.duration = Duration::from_secs(seconds);
            }
            "--no-etcd" => args.etcd = false,
            // `cargo bench` passes --bench; a filter would be a bare word. Neither applies.
            "--bench" => {}
            other if !other.starts_with('-') => {}
            other => {
                return Err(format!(
                    "unknown flag {other}; flags: --clients, --duration"
                ))
            }
        }
    }
    Ok(args)
}

/// One client's connection to one member, of either system.
#[derive(Clone)]
enum Client {
    Etcd(tonic::client::Grpc<Channel>),
    Vnet(ProfileServiceClient<Channel>, pb::Profile),
}

impl Client {
    async fn write(&mut self, n: u64) -> Result<(), String> {
        match self {
            Client::Etcd(grpc) => {
                let key = format!("bench-{}", n >> 32).into_bytes();
                let request = etcd::PutRequest {
                    key,
                    value: vec![b'v'; 256],
                };
                etcd_call::<_, etcd::PutResponse>(grpc, "/etcdserverpb.KV/Put", request)
                    .await
                    .map(drop)
            }
            Client::Vnet(client, profile) => {
                profile.vnics[0].vlan = 100 + (n % 2) as u32;
                let request = pb::UpdateProfileRequest {
                    profile: Some(profile.clone()),
                    expected_revision: 0,
                };
                client
                    .update_profile(with_deadline(request))
                    .await
                    .map(drop)
                    .map_err(|s| format!("{:?}: {}", s.code(), s.message()))
            }
        }
    }

    async fn read(&mut self, n: u64) -> Result<(), String> {
        match self {
            Client::Etcd(grpc) => {
                let request = etcd::RangeRequest {
                    key: format!("bench-{}", n >> 32).into_bytes(),
                };
                let response: etcd::RangeResponse =
                    etcd_call(grpc, "/etcdserverpb.KV/Range", request).await?;
                (response.kvs.len() == 1)
                    .then_some(())
                    .ok_or_else(|| format!("expected 1 key, got {}", response.kvs.len()))
            }
            Client::Vnet(client, profile) => {
                let request = pb::GetProfileRequest {
                    name: profile.name.clone(),
                    consistency: pb::ReadConsistency::Linearizable as i32,
                };
                client
                    .get_profile(with_deadline(request))
                    .await
                    .map(drop)
                    .map_err(|s| format!("{:?}: {}", s.code(), s.message()))
            }
        }
    }
}

fn with_deadline<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(REQUEST_TIMEOUT);
    request
}

async fn etcd_call<Req, Resp>(
    grpc: &mut tonic::client::Grpc<Channel>,
    path: &'static str,
    request: Req,
) -> Result<Resp, String>
where
    Req: prost::Message + Send + Sync + 'static,
    Resp: prost::Message + Default + Send + Sync + 'static,
{
    grpc.ready().await.map_err(|e| e.to_string())?;
    grpc.unary(
        with_deadline(request),
        PathAndQuery::from_static(path),
        tonic_prost::ProstCodec::default(),
    )
    .await
    .map(|response| response.into_inner())
    .map_err(|s| format!("{:?}: {}", s.code(), s.message()))
}

async fn connect(addr: &str) -> Result<Channel, String> {
    Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| e.to_string())?
        .tcp_nodelay(true)
        .connect_timeout(REQUEST_TIMEOUT)
        .connect()
        .await
        .map_err(|e| format!("{addr}: {e}"))
}

fn wait_listening(addr: &str, what: &str) -> Result<(), String> {
    let deadline = Instant::now() + STARTUP_TIMEOUT;
    while Instant::now() < deadline {
        if TcpStream::connect(addr).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err(format!(
        "{what} did not listen on {addr} within {STARTUP_TIMEOUT:?}"
    ))
}

fn start_etcd(etcd: &Path) -> Result<(Processes, Vec<String>), String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let client = |i: u16| format!("127.0.0.1:{}", ETCD_BASE_PORT + i);
    let peer = |i: u16| format!("http://127.0.0.1:{}", ETCD_BASE_PORT + 100 + i);
    let initial = (1..=MEMBERS)
        .map(|i| format!("e{i}={}", peer(i)))
        .collect::<Vec<_>>()
        .join(",");
    let mut children = Vec::new();
    for i in 1..=MEMBERS {
        let log = std::fs::File::create(dir.path().join(format!("e{i}.log")))
            .map_err(|e| e.to_string())?;
        let child = Command::new(etcd)
            .args(["--name", &format!("e{i}")])
            .arg("--data-dir")
            .arg(dir.path().join(format!("e{i}")))
            .args(["--listen-client-urls", &format!("http://{}", client(i))])
            .args(["--advertise-client-urls", &format!("http://{}", client(i))])
            .args(["--listen-peer-urls", &peer(i)])
            .args(["--initial-advertise-peer-urls", &peer(i)])
            .args(["--initial-cluster", &initial])
            .args(["--initial-cluster-state", "new"])
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .map_err(|e| format!("start {}: {e}", etcd.display()))?;
        children.push(child);
    }
    let processes = Processes {
        children,
        _dir: dir,
    };
    let endpoints: Vec<String> = (1..=MEMBERS).map(client).collect();
    for endpoint in &endpoints {
        wait_listening(endpoint, "etcd")?;
    }
    Ok((processes, endpoints))
}

fn start_vnet() -> Result<(Processes, Vec<String>), String> {
    let demo = common::start_demo(VNET_BASE_PORT)?;
    Ok((demo.processes, demo.endpoints))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Write,
    Read,
}

#[derive(Debug, Clone)]
struct Level {
    ops_per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
    errors: u64,
    first_error: Option<String>,
}

async fn clients(system: &str, endpoints: &[String], count: usize) -> Result<Vec<Client>, String> {
    let mut made = Vec::with_capacity(count);
    for i in 0..count {
        let channel = connect(&endpoints[i % endpoints.len()]).await?;
        let mut client = match system {
            "etcd" => Client::Etcd(tonic::client::Grpc::new(channel)),
            _ => {
                let profile = pb::Profile {
                    name: format!("sbs-{i}"),
                    server: format!("sbs-srv-{i}"),
                    vnics: vec![pb::Vnic {
                        name: "eth0".into(),
                        mac: format!("02:5b:00:00:{:02x}:{:02x}", i >> 8, i & 0xff),
                        network: "bench".into(),
                        vlan: 100,
                        pool: None,
                    }],
                    failback: pb::FailbackPolicy::Manual as i32,
                    ..Default::default()
                };
                let mut grpc = ProfileServiceClient::new(channel);
                let created = grpc
                    .create_profile(with_deadline(pb::CreateProfileRequest {
                        profile: Some(profile.clone()),
                    }))
                    .await;
                match created {
                    Ok(_) => {}
                    Err(s) if s.code() == tonic::Code::AlreadyExists => {}
                    Err(s) => return Err(format!("create {}: {}", profile.name, s.message())),
                }
                Client::Vnet(grpc, profile)
            }
        };
        // Each client's key exists before anything is timed, so every read finds it.
        client.write((i as u64) << 32).await?;
        made.push(client);
    }
    Ok(made)
}

async fn run_level(mut made: Vec<Client>, op: Op, duration: Duration) -> Level {
    let warm_until = Instant::now() + WARM_UP;
    let until = warm_until + duration;
    let tasks: Vec<_> = made
        .drain(..)
        .enumerate()
        .map(|(i, mut client)| {
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut errors = 0u64;
                let mut first_error = None;
                let mut n = 0u64;
                while Instant::now() < until {
                    let began = Instant::now();
                    let key = ((i as u64) << 32) | (n & 0xffff_ffff);
                    n += 1;
                    let result = match op {
                        Op::Write => client.write(key).await,
                        Op::Read => client.read(key).await,
                    };
                    if began < warm_until {
                        continue;
                    }
                    match result {
                        Ok(()) => latencies.push(began.elapsed()),
                        Err(e) => {
                            errors += 1;
                            first_error.get_or_insert(e);
                        }
                    }
                }
                (latencies, errors, first_error)
            })
        })
        .collect();
    let mut latencies = Vec::new();
    let mut errors = 0;
    let mut first_error = None;
    for task in futures::future::join_all(tasks).await {
        let (l, e, f) = task.expect("client task");
        latencies.extend(l);
        errors += e;
        first_error = first_error.or(f);
    }
    latencies.sort_unstable();
    let percentile = |p: usize| {
        if latencies.is_empty() {
            return 0.0;
        }
        let rank = (latencies.len() * p).div_ceil(100).max(1);
        latencies[rank - 1].as_secs_f64() * 1000.0
    };
    Level {
        ops_per_s: latencies.len() as f64 / duration.as_secs_f64(),
        p50_ms: percentile(50),
        p99_ms: percentile(99),
        errors,
        first_error,
    }
}

fn find_on_path(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(program))
            .find(|path| path.is_file())
    })
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let args = match parse_args() {
        Ok(args) => args,
        Err(e) => {
            eprintln!("side_by_side: {e}");
            std::process::exit(2);
        }
    };
    let mut systems: Vec<(&str, Processes, Vec<String>)> = Vec::new();
    match find_on_path("etcd").filter(|_| args.etcd) {
        Some(etcd) => match start_etcd(&etcd) {
            Ok((processes, endpoints)) => systems.push(("etcd", processes, endpoints)),
            Err(e) => eprintln!("side_by_side: etcd left out: {e}"),
        },
        None if args.etcd => eprintln!(
            "side_by_side: no etcd on the PATH (apt-get install etcd-server); vnet-ha only"
        ),
        None => {}
    }
    match start_vnet() {
        Ok((processes, endpoints)) => systems.push(("vnet", processes, endpoints)),
        Err(e) => {
            eprintln!("side_by_side: {e}");
            std::process::exit(1);
        }
    }
    let mut rows: Vec<(Op, usize, Vec<Option<Level>>)> = Vec::new();
    for op in [Op::Write, Op::Read] {
        for &count in &args.clients {
            let mut levels = Vec::new();
            for (name, _, endpoints) in &systems {
                let level = match clients(name, endpoints, count).await {
                    Ok(made) => Some(run_level(made, op, args.duration).await),
                    Err(e) => {
                        eprintln!("side_by_side: {name} {op:?} x{count}: {e}");
                        None
                    }
                };
                if let Some(level) = &level {
                    eprintln!(
                        "side_by_side: {name} {op:?} x{count}: {:.0} ops/s, p99 {:.1} ms, {} errors{}",
                        level.ops_per_s,
                        level.p99_ms,
                        level.errors,
                        level
                            .first_error
                            .as_ref()
                            .map(|e| format!(" (first: {e})"))
                            .unwrap_or_default()
                    );
                }
                levels.push(level);
            }
            rows.push((op, count, levels));
        }
    }
    print!("\n| | clients");
    for (name, _, _) in &systems {
        print!(" | {name} ops/s | {name} p50 ms | {name} p99 ms");
    }
    println!(" |");
    print!("|---|---");
    for _ in &systems {
        print!("|---|---|---");
    }
    println!("|");
    for (op, count, levels) in &rows {
        let op = match op {
            Op::Write => "write",
            Op::Read => "read",
        };
        print!("| {op} | {count}");
        for level in levels {
            match level {
                Some(l) => print!(" | {:.0} | {:.1} | {:.1}", l.ops_per_s, l.p50_ms, l.p99_ms),
                None => print!(" | - | - | -"),
            }
        }
        println!(" |");
    }
    drop(systems);
}
