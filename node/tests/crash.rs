//! Crash tests against real `vnetd` processes: SIGKILL gives a node no chance to flush or say
//! goodbye, so these check that what the cluster acknowledged is on disk (Raft log fsynced
//! before an entry counts as replicated) and survives a leader crash under load and a crash of
//! the whole cluster.
//!
//! Every process is killed by [`Cluster`]'s `Drop`, on success and on panic alike; on panic the
//! data directories (each holding its node's `vnetd.log`) are kept and their paths printed.

mod common;

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::wait_for;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tonic::transport::{Channel, Endpoint};
use vnet_proto::vnet::v1 as pb;
use vnet_proto::vnet::v1::cluster_service_client::ClusterServiceClient;
use vnet_proto::vnet::v1::profile_service_client::ProfileServiceClient;

const VNETD: &str = env!("CARGO_BIN_EXE_vnetd");
/// Client-side bound on any single RPC, so that a request to a dying node cannot hang a writer.
const RPC_TIMEOUT: Duration = Duration::from_secs(10);
const NAMES: [&str; 3] = ["unit-a", "unit-b", "witness"];

/// One `vnetd` process, restartable on the same ports and data directory.
struct Proc {
    id: u64,
    name: &'static str,
    api_addr: SocketAddr,
    peer_addr: SocketAddr,
    data_dir: PathBuf,
    log_path: PathBuf,
    initial_cluster: String,
    child: Option<Child>,
    /// Set when the process was found to have exited on its own (not killed by the test).
    exited_early: Option<ExitStatus>,
}

impl Proc {
    fn start(&mut self) {
        assert!(self.child.is_none(), "node {} is already running", self.id);
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .expect("open the node's log file");
        let log_err = log.try_clone().expect("clone the log file handle");
        let mut cmd = Command::new(VNETD);
        // Flags win over VNET_* variables, but a stray VNET_CONFIG etc. could still add keys.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("VNET_") {
                cmd.env_remove(key);
            }
        }
        cmd.arg("--id")
            .arg(self.id.to_string())
            .arg("--name")
            .arg(self.name)
            .arg("--role")
            .arg(if self.name == "witness" {
                "witness"
            } else {
                "unit"
            })
            .arg("--data-dir")
            .arg(&self.data_dir)
            .arg("--api-listen")
            .arg(self.api_addr.to_string())
            .arg("--peer-listen")
            .arg(self.peer_addr.to_string())
            .arg("--initial-cluster")
            .arg(&self.initial_cluster)
            .arg("--request-timeout-ms")
            .arg("3000")
            .arg("--log-level")
            .arg("info")
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log_err));
        self.child = Some(cmd.spawn().expect("spawn vnetd"));
    }

    fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// SIGKILLs the process and reaps it. Records whether it had already exited by itself.
    fn sigkill(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Ok(Some(status)) = child.try_wait() {
            self.exited_early = Some(status);
            return;
        }
        let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGKILL);
        let _ = child.wait();
    }

    /// Fails the test if the process exited without being told to.
    fn assert_alive(&mut self) {
        if let Some(child) = self.child.as_mut() {
            if let Ok(Some(status)) = child.try_wait() {
                self.exited_early = Some(status);
                self.child = None;
                panic!(
                    "vnetd {} ({}) exited by itself with {status}; log: {}",
                    self.id,
                    self.name,
                    self.log_path.display()
                );
            }
        }
    }

    fn channel(&self) -> Channel {
        Endpoint::from_shared(format!("http://{}", self.api_addr))
            .expect("endpoint")
            .connect_timeout(Duration::from_secs(1))
            .timeout(RPC_TIMEOUT)
            .connect_lazy()
    }
}

struct Cluster {
    procs: Vec<Proc>,
    /// `None` once kept for inspection after a failure.
    dir: Option<tempfile::TempDir>,
}

/// Picks a free loopback port: bind port 0, read it, release it. All ports of a cluster are
/// held at once while picking, so they are distinct.
fn free_ports(n: usize) -> Vec<SocketAddr> {
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind port 0"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().expect("local addr"))
        .collect()
}

impl Cluster {
    fn start() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let ports = free_ports(NAMES.len() * 2);
        let initial_cluster = NAMES
            .iter()
            .enumerate()
            .map(|(i, name)| format!("{}={}@{}", i + 1, name, ports[2 * i + 1]))
            .collect::<Vec<_>>()
            .join(",");
        let procs = NAMES
            .iter()
            .enumerate()
            .map(|(i, name)| {
                let data_dir = dir.path().join(name);
                std::fs::create_dir_all(&data_dir).expect("create data dir");
                Proc {
                    id: i as u64 + 1,
                    name,
                    api_addr: ports[2 * i],
                    peer_addr: ports[2 * i + 1],
                    log_path: data_dir.join("vnetd.log"),
                    data_dir,
                    initial_cluster: initial_cluster.clone(),
                    child: None,
                    exited_early: None,
                }
            })
            .collect();
        let mut cluster = Self {
            procs,
            dir: Some(dir),
        };
        for p in &mut cluster.procs {
            p.start();
        }
        cluster
    }

    fn proc(&self, id: u64) -> &Proc {
        self.procs.iter().find(|p| p.id == id).expect("node id")
    }

    fn proc_mut(&mut self, id: u64) -> &mut Proc {
        self.procs.iter_mut().find(|p| p.id == id).expect("node id")
    }

    fn assert_alive(&mut self) {
        for p in &mut self.procs {
            p.assert_alive();
        }
    }

    /// Waits until every running node reports the same leader, itself running, and returns it.
    async fn leader(&mut self) -> u64 {
        self.assert_alive();
        let running: Vec<(u64, Channel)> = self
            .procs
            .iter()
            .filter(|p| p.is_running())
            .map(|p| (p.id, p.channel()))
            .collect();
        let leader = wait_for("all running vnetd agree on a running leader", || {
            let running = running.clone();
            async move {
                let mut leader = None;
                for (_, channel) in &running {
                    let status = ClusterServiceClient::new(channel.clone())
                        .get_cluster_status(pb::GetClusterStatusRequest {
                            consistency: pb::ReadConsistency::Local as i32,
                        })
                        .await
                        .ok()?
                        .into_inner();
                    let this = status.leader_id?;
                    if leader.is_some_and(|l| l != this) {
                        return None;
                    }
                    leader = Some(this);
                }
                leader.filter(|l| running.iter().any(|(id, _)| id == l))
            }
        })
        .await;
        self.assert_alive();
        leader
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for p in &mut self.procs {
            p.sigkill();
        }
        if !std::thread::panicking() {
            return;
        }
        if let Some(dir) = self.dir.take() {
            let kept = dir.keep();
            eprintln!(
                "crash test failed; data dirs and logs kept under {}",
                kept.display()
            );
        }
        for p in &self.procs {
            eprintln!(
                "--- vnetd {} ({}) api {} peer {}{}: log {}",
                p.id,
                p.name,
                p.api_addr,
                p.peer_addr,
                p.exited_early
                    .map(|s| format!(", EXITED BY ITSELF with {s}"))
                    .unwrap_or_default(),
                p.log_path.display()
            );
            if let Ok(file) = File::open(&p.log_path) {
                let lines: Vec<String> =
                    BufReader::new(file).lines().map_while(Result::ok).collect();
                for line in &lines[lines.len().saturating_sub(30)..] {
                    eprintln!("    {line}");
                }
            }
        }
    }
}

/// A profile with one explicitly given MAC derived from `n`, so every profile's MAC is unique
/// and no pool is involved.
fn profile(name: &str, n: u64) -> pb::Profile {
    pb::Profile {
        name: name.to_string(),
        server: format!("srv-{name}"),
        vnics: vec![pb::Vnic {
            name: "eth0".into(),
            mac: format!(
                "02:00:00:{:02x}:{:02x}:{:02x}",
                (n >> 16) & 0xff,
                (n >> 8) & 0xff,
                n & 0xff
            ),
            network: "prod".into(),
            vlan: 100,
            pool: None,
        }],
        vhbas: vec![],
        preferred_unit: None,
        failback: pb::FailbackPolicy::Manual as i32,
        revision: 0,
        created_revision: 0,
    }
}

async fn create(channel: Channel, profile: pb::Profile) -> Result<pb::Profile, tonic::Status> {
    ProfileServiceClient::new(channel)
        .create_profile(pb::CreateProfileRequest {
            profile: Some(profile),
        })
        .await
        .map(|r| r.into_inner().profile.expect("created profile returned"))
}

async fn get(
    channel: Channel,
    name: &str,
    consistency: pb::ReadConsistency,
) -> Result<pb::Profile, tonic::Status> {
    ProfileServiceClient::new(channel)
        .get_profile(pb::GetProfileRequest {
            name: name.to_string(),
            consistency: consistency as i32,
        })
        .await
        .map(|r| r.into_inner().profile.expect("profile returned"))
}

/// Every profile, paging through ListProfiles.
async fn list_all(
    channel: Channel,
    consistency: pb::ReadConsistency,
) -> Result<BTreeMap<String, pb::Profile>, tonic::Status> {
    let mut client = ProfileServiceClient::new(channel);
    let mut all = BTreeMap::new();
    let mut page_token = String::new();
    loop {
        let page = client
            .list_profiles(pb::ListProfilesRequest {
                page_size: 500,
                page_token,
                consistency: consistency as i32,
                ..Default::default()
            })
            .await?
            .into_inner();
        for p in page.profiles {
            all.insert(p.name.clone(), p);
        }
        if page.next_page_token.is_empty() {
            return Ok(all);
        }
        page_token = page.next_page_token;
    }
}

/// Names of `expected` profiles missing from, or different in, `actual`.
fn discrepancies(
    expected: &BTreeMap<String, pb::Profile>,
    actual: &BTreeMap<String, pb::Profile>,
) -> Vec<String> {
    expected
        .iter()
        .filter_map(|(name, want)| match actual.get(name) {
            None => Some(format!("{name}: missing")),
            Some(got) if got != want => {
                Some(format!("{name}: stored {got:?}, acknowledged {want:?}"))
            }
            Some(_) => None,
        })
        .collect()
}

/// State shared by the writer tasks of the leader-crash test.
struct Writers {
    /// Endpoints writers may use; the killed node is taken out before it is killed.
    live: Mutex<Vec<(u64, Channel)>>,
    next: AtomicU64,
    stop: AtomicBool,
    /// True once the old leader is dead and reaped: a request sent after that can only be
    /// acknowledged by a new leader.
    leader_dead: AtomicBool,
    /// Every acknowledged profile, as the create returned it.
    acked: Mutex<BTreeMap<String, pb::Profile>>,
    acked_after_kill: AtomicU64,
    /// Requests sent and not yet answered.
    in_flight: AtomicU64,
    /// Failed (unacknowledged) writes by status code: how many, and the first message.
    failed: Mutex<BTreeMap<String, (u64, String)>>,
}

impl Writers {
    fn acked(&self) -> usize {
        self.acked.lock().expect("acked lock").len()
    }

    async fn run(self: Arc<Self>, writer: u64) {
        while !self.stop.load(Ordering::SeqCst) {
            let n = self.next.fetch_add(1, Ordering::SeqCst);
            let channel = {
                let live = self.live.lock().expect("live lock");
                live[(n + writer) as usize % live.len()].1.clone()
            };
            let after_kill = self.leader_dead.load(Ordering::SeqCst);
            let name = format!("crash-{n:06}");
            self.in_flight.fetch_add(1, Ordering::SeqCst);
            let result = create(channel, profile(&name, n)).await;
            self.in_flight.fetch_sub(1, Ordering::SeqCst);
            match result {
                Ok(stored) => {
                    self.acked.lock().expect("acked lock").insert(name, stored);
                    if after_kill {
                        self.acked_after_kill.fetch_add(1, Ordering::SeqCst);
                    }
                }
                Err(status) => {
                    let mut failed = self.failed.lock().expect("failed lock");
                    let entry = failed
                        .entry(format!("{:?}", status.code()))
                        .or_insert_with(|| (0, status.message().to_string()));
                    entry.0 += 1;
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_of_the_leader_during_writes_loses_no_acknowledged_write() {
    let started = Instant::now();
    let mut cluster = Cluster::start();
    cluster.leader().await;

    let writers = Arc::new(Writers {
        live: Mutex::new(cluster.procs.iter().map(|p| (p.id, p.channel())).collect()),
        next: AtomicU64::new(1),
        stop: AtomicBool::new(false),
        leader_dead: AtomicBool::new(false),
        acked: Mutex::new(BTreeMap::new()),
        acked_after_kill: AtomicU64::new(0),
        in_flight: AtomicU64::new(0),
        failed: Mutex::new(BTreeMap::new()),
    });
    let tasks: Vec<_> = (0..4)
        .map(|w| tokio::spawn(writers.clone().run(w)))
        .collect();

    wait_for("30 writes are acknowledged before the crash", || {
        let writers = writers.clone();
        async move { (writers.acked() >= 30).then_some(()) }
    })
    .await;

    // Kill whoever leads now, mid-stream: writers have requests in flight to every node.
    let old_leader = cluster.leader().await;
    writers
        .live
        .lock()
        .expect("live lock")
        .retain(|(id, _)| *id != old_leader);
    let in_flight_at_kill = writers.in_flight.load(Ordering::SeqCst);
    cluster.proc_mut(old_leader).sigkill();
    writers.leader_dead.store(true, Ordering::SeqCst);
    let acked_at_kill = writers.acked();

    wait_for("a new leader acknowledges 30 writes", || {
        let writers = writers.clone();
        async move { (writers.acked_after_kill.load(Ordering::SeqCst) >= 30).then_some(()) }
    })
    .await;
    writers.stop.store(true, Ordering::SeqCst);
    for task in tasks {
        task.await.expect("writer task");
    }
    let new_leader = cluster.leader().await;
    assert_ne!(new_leader, old_leader, "the killed node cannot lead");
    let acked = writers.acked.lock().expect("acked lock").clone();
    eprintln!(
        "leader {old_leader} killed after {acked_at_kill} acknowledged writes, with \
         {in_flight_at_kill} in flight; new leader {new_leader}; {} acknowledged in all, {} \
         after the kill; failed: {:?}",
        acked.len(),
        writers.acked_after_kill.load(Ordering::SeqCst),
        writers.failed.lock().expect("failed lock")
    );

    // The killed node comes back on its data dir and ports.
    cluster.proc_mut(old_leader).start();

    // Linearizable: every acknowledged write is there, unchanged, whichever node is asked.
    for p in cluster.procs.iter().filter(|p| p.id != old_leader) {
        let stored = list_all(p.channel(), pb::ReadConsistency::Linearizable)
            .await
            .unwrap_or_else(|e| panic!("linearizable list through node {}: {e:?}", p.id));
        let wrong = discrepancies(&acked, &stored);
        assert!(
            wrong.is_empty(),
            "{} of {} acknowledged writes lost or altered (linearizable list via node {}): {:#?}",
            wrong.len(),
            acked.len(),
            p.id,
            wrong
        );
    }
    let survivor = cluster
        .procs
        .iter()
        .find(|p| p.id != old_leader)
        .expect("a survivor")
        .channel();
    for (name, want) in &acked {
        let got = get(survivor.clone(), name, pb::ReadConsistency::Linearizable)
            .await
            .unwrap_or_else(|e| panic!("linearizable get of acknowledged {name}: {e:?}"));
        assert_eq!(&got, want, "acknowledged {name}");
    }

    // The restarted node keeps what it had and catches up: a local read serves every
    // acknowledged write.
    let restarted = cluster.proc(old_leader).channel();
    let mut last_wrong = Vec::new();
    let caught_up = tokio::time::timeout(common::WAIT_DEADLINE, async {
        loop {
            if let Ok(stored) = list_all(restarted.clone(), pb::ReadConsistency::Local).await {
                last_wrong = discrepancies(&acked, &stored);
                if last_wrong.is_empty() {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    cluster.assert_alive();
    assert!(
        caught_up.is_ok(),
        "the restarted node {old_leader} does not serve every acknowledged write locally \
         within {:?}; last local read differs in {} profiles: {:#?}",
        common::WAIT_DEADLINE,
        last_wrong.len(),
        last_wrong.iter().take(20).collect::<Vec<_>>()
    );
    for (name, want) in acked.iter().take(5).chain(acked.iter().rev().take(5)) {
        let got = get(restarted.clone(), name, pb::ReadConsistency::Local)
            .await
            .unwrap_or_else(|e| panic!("local get of {name} on the restarted node: {e:?}"));
        assert_eq!(&got, want, "restarted node, local read of {name}");
    }
    // And it takes part again: a linearizable read through it sees everything too.
    let stored = list_all(restarted, pb::ReadConsistency::Linearizable)
        .await
        .expect("linearizable list through the restarted node");
    assert!(discrepancies(&acked, &stored).is_empty());
    eprintln!("test took {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_cluster_restart_keeps_everything() {
    let started = Instant::now();
    let mut cluster = Cluster::start();
    cluster.leader().await;

    // Spread the writes over every node (followers forward to the leader).
    let channels: Vec<Channel> = cluster.procs.iter().map(Proc::channel).collect();
    let mut created = BTreeMap::new();
    for n in 1..=50u64 {
        let name = format!("keep-{n:03}");
        let stored = create(
            channels[n as usize % channels.len()].clone(),
            profile(&name, n),
        )
        .await
        .unwrap_or_else(|e| panic!("create {name}: {e:?}"));
        created.insert(name, stored);
    }
    let last_revision = created
        .values()
        .map(|p| p.revision)
        .max()
        .expect("revisions");

    // No clean shutdown for anyone, right after the last acknowledgement.
    for p in &mut cluster.procs {
        p.sigkill();
    }
    for p in &mut cluster.procs {
        p.start();
    }
    cluster.leader().await;

    for (i, p) in cluster.procs.iter().enumerate() {
        let stored = list_all(p.channel(), pb::ReadConsistency::Linearizable)
            .await
            .unwrap_or_else(|e| panic!("linearizable list through node {}: {e:?}", p.id));
        let wrong = discrepancies(&created, &stored);
        assert!(
            wrong.is_empty(),
            "after a whole-cluster restart, {} of 50 profiles lost or altered (via node {}): \
             {:#?}",
            wrong.len(),
            p.id,
            wrong
        );
        assert_eq!(
            stored.len(),
            created.len(),
            "no profile appears that was never created: {:?}",
            stored
                .keys()
                .filter(|k| !created.contains_key(*k))
                .collect::<Vec<_>>()
        );
        // Spot-check single-profile reads too, a different slice through each node.
        for (name, want) in created.iter().skip(i).step_by(cluster.procs.len()) {
            let got = get(p.channel(), name, pb::ReadConsistency::Linearizable)
                .await
                .unwrap_or_else(|e| panic!("linearizable get of {name} via node {}: {e:?}", p.id));
            assert_eq!(&got, want, "{name} via node {}", p.id);
        }
    }

    // The revision counter carries on from where it was: it never goes back.
    let after = create(channels[0].clone(), profile("keep-after", 1000))
        .await
        .expect("create after the restart");
    assert!(
        after.revision > last_revision,
        "revision after restart {} is not above the last acknowledged revision {last_revision}",
        after.revision
    );
    eprintln!("test took {:?}", started.elapsed());
}
