//! Real `vnetd` processes on loopback: a three-node cluster ([`Cluster`]) whose nodes can be
//! SIGKILLed and restarted on the same ports and data directories. Every process is killed by
//! [`Cluster`]'s `Drop`, on success and on panic alike; on panic the data directories (each
//! holding its node's `vnetd.log`) are kept and their paths printed.

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::Duration;

use tonic::transport::{Channel, Endpoint};
use vnet_launch::{Launch, Process};
use vnet_proto::vnet::v1 as pb;
use vnet_proto::vnet::v1::cluster_service_client::ClusterServiceClient;

use super::wait_for;

pub const VNETD: &str = env!("CARGO_BIN_EXE_vnetd");
/// Client-side bound on any single RPC, so that a request to a dying node cannot hang a writer.
pub const RPC_TIMEOUT: Duration = Duration::from_secs(10);
pub const NAMES: [&str; 3] = ["unit-a", "unit-b", "witness"];

/// One `vnetd` process, restartable on the same ports and data directory.
pub struct Proc {
    pub id: u64,
    pub name: &'static str,
    pub api_addr: SocketAddr,
    pub peer_addr: SocketAddr,
    /// Where the node serves /metrics, /health and /readyz.
    pub metrics_addr: SocketAddr,
    pub data_dir: PathBuf,
    pub log_path: PathBuf,
    pub initial_cluster: String,
    /// Flags and environment variables added to every start.
    pub extra_args: Vec<String>,
    pub extra_env: Vec<(String, String)>,
    pub child: Option<Process>,
    /// Set when the process was found to have exited on its own (not killed by the test).
    pub exited_early: Option<ExitStatus>,
    /// How [`Proc::channel`] reaches the API: plaintext, or TLS with a client certificate.
    pub client_tls: Option<std::sync::Arc<vnet_tls::ClientTls>>,
}

impl Proc {
    /// A node not started yet, listening on `ports` (api, peer, metrics).
    pub fn new(
        id: u64,
        name: &'static str,
        ports: [SocketAddr; 3],
        data_dir: PathBuf,
        log_path: PathBuf,
        initial_cluster: String,
    ) -> Self {
        let [api_addr, peer_addr, metrics_addr] = ports;
        Proc {
            id,
            name,
            api_addr,
            peer_addr,
            metrics_addr,
            data_dir,
            log_path,
            initial_cluster,
            extra_args: Vec::new(),
            extra_env: Vec::new(),
            child: None,
            exited_early: None,
            client_tls: None,
        }
    }

    pub fn start(&mut self) {
        assert!(self.child.is_none(), "node {} is already running", self.id);
        let launch = Launch::new(VNETD)
            .arg("--id")
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
            .arg("--metrics-listen")
            .arg(self.metrics_addr.to_string())
            .arg("--initial-cluster")
            .arg(&self.initial_cluster)
            .arg("--request-timeout-ms")
            .arg("3000")
            .args(
                (!self.extra_args.iter().any(|a| a == "--log-level"))
                    .then_some(["--log-level", "info"])
                    .into_iter()
                    .flatten(),
            )
            .args(&self.extra_args)
            .envs(self.extra_env.iter().map(|(k, v)| (k, v)))
            .log(&self.log_path);
        self.child = Some(launch.spawn().expect("spawn vnetd"));
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// SIGKILLs the process and reaps it. Records whether it had already exited by itself.
    pub fn sigkill(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Ok(Some(status)) = child.kill() {
            self.exited_early = Some(status);
        }
    }

    /// The running process's pid.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").pid()
    }

    /// Fails the test if the process exited without being told to.
    pub fn assert_alive(&mut self) {
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

    pub fn channel(&self) -> Channel {
        let endpoint = Endpoint::from_shared(format!("http://{}", self.api_addr))
            .expect("endpoint")
            .connect_timeout(Duration::from_secs(1))
            .timeout(RPC_TIMEOUT);
        match &self.client_tls {
            Some(tls) => {
                endpoint.connect_with_connector_lazy(vnet_tls::Connector::new(tls.clone()))
            }
            None => endpoint.connect_lazy(),
        }
    }
}

/// The cluster id in a data directory's `vnet-data.json`, once there is one.
pub fn cluster_id_of(data_dir: &std::path::Path) -> Option<String> {
    let text = std::fs::read_to_string(data_dir.join("vnet-data.json")).ok()?;
    let json: serde_json::Value = serde_json::from_str(&text).ok()?;
    json.get("cluster_id")?.as_str().map(str::to_string)
}

/// A `Probe` on the peer port carrying `cluster_id` (and `node_id`, when given), as a member of
/// that cluster would send it.
pub async fn probe_as(
    peer_addr: SocketAddr,
    cluster_id: &str,
    node_id: Option<u64>,
) -> Result<(), tonic::Status> {
    use vnet_proto::vnet::raft::v1::raft_peer_client::RaftPeerClient;
    use vnet_proto::vnet::raft::v1::RaftMessage;

    let channel = Endpoint::from_shared(format!("http://{peer_addr}"))
        .expect("endpoint")
        .connect()
        .await
        .expect("connect to the peer port");
    let mut request = tonic::Request::new(RaftMessage {
        format: "json/1".into(),
        payload: b"null".to_vec(),
        data: vec![],
    });
    request
        .metadata_mut()
        .insert("x-vnet-cluster-id", cluster_id.parse().expect("header"));
    if let Some(node_id) = node_id {
        request.metadata_mut().insert(
            "x-vnet-node-id",
            node_id.to_string().parse().expect("header"),
        );
    }
    RaftPeerClient::new(channel)
        .probe(request)
        .await
        .map(|_| ())
}

pub struct Cluster {
    pub procs: Vec<Proc>,
    /// `None` once kept for inspection after a failure.
    pub dir: Option<tempfile::TempDir>,
}

/// Picks `n` distinct free loopback ports for processes this test will start.
///
/// The ports come from below the kernel's ephemeral range (32768 and up by default), walking from
/// a per-process start: a port released here and bound by a child a moment later cannot be taken
/// in between by another test's `bind(0)` or outgoing connection, which the kernel serves only from
/// the ephemeral range. Each candidate is bound once to check nothing holds it, and the walk never
/// hands out the same port twice in one test binary.
pub fn free_ports(n: usize) -> Vec<SocketAddr> {
    use std::sync::atomic::{AtomicU32, Ordering};
    const LOW: u32 = 10_000;
    const HIGH: u32 = 32_000;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let start = LOW + (std::process::id() * 97) % (HIGH - LOW);
    let mut ports = Vec::with_capacity(n);
    for _ in 0..(HIGH - LOW) {
        if ports.len() == n {
            break;
        }
        let step = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = LOW + (start - LOW + step) % (HIGH - LOW);
        let addr = SocketAddr::from(([127, 0, 0, 1], port as u16));
        if TcpListener::bind(addr).is_ok() {
            ports.push(addr);
        }
    }
    assert_eq!(ports.len(), n, "no {n} free loopback ports below 32000");
    ports
}

impl Cluster {
    pub fn start() -> Self {
        Self::start_with(&[], &[])
    }

    /// As [`Cluster::start`], giving every node `extra_args` and `extra_env` as well.
    pub fn start_with(extra_args: &[String], extra_env: &[(&str, &str)]) -> Self {
        Self::start_configured(extra_args, extra_env, |_| Vec::new(), None)
    }

    /// A cluster speaking mutual TLS on every port: node N serves `node-N.crt`/`node-N.key` of
    /// `certs_dir` (made with `vnet_tls::certs`), and [`Proc::channel`] connects with `client`.
    pub fn start_tls(
        certs_dir: &std::path::Path,
        client: std::sync::Arc<vnet_tls::ClientTls>,
    ) -> Self {
        let ca = certs_dir.join(vnet_tls::certs::CA_CERT);
        Self::start_configured(
            &[],
            &[],
            |id| {
                let (cert, key) = vnet_tls::certs::node_files(id);
                vec![
                    "--cacert".into(),
                    ca.display().to_string(),
                    "--cert".into(),
                    certs_dir.join(cert).display().to_string(),
                    "--key".into(),
                    certs_dir.join(key).display().to_string(),
                ]
            },
            Some(client),
        )
    }

    /// Every node gets `extra_args` and then `per_node(id)`.
    pub fn start_configured(
        extra_args: &[String],
        extra_env: &[(&str, &str)],
        per_node: impl Fn(u64) -> Vec<String>,
        client_tls: Option<std::sync::Arc<vnet_tls::ClientTls>>,
    ) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let ports = free_ports(NAMES.len() * 3);
        let initial_cluster = NAMES
            .iter()
            .enumerate()
            .map(|(i, name)| format!("{}={}@{}", i + 1, name, ports[3 * i + 1]))
            .collect::<Vec<_>>()
            .join(",");
        let procs = NAMES
            .iter()
            .enumerate()
            .map(|(i, name)| {
                let data_dir = dir.path().join(name);
                std::fs::create_dir_all(&data_dir).expect("create data dir");
                let mut proc = Proc::new(
                    i as u64 + 1,
                    name,
                    [ports[3 * i], ports[3 * i + 1], ports[3 * i + 2]],
                    data_dir.clone(),
                    data_dir.join("vnetd.log"),
                    initial_cluster.clone(),
                );
                proc.extra_args = extra_args.to_vec();
                proc.extra_args.extend(per_node(i as u64 + 1));
                proc.client_tls = client_tls.clone();
                proc.extra_env = extra_env
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect();
                proc
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

    pub fn proc(&self, id: u64) -> &Proc {
        self.procs.iter().find(|p| p.id == id).expect("node id")
    }

    pub fn proc_mut(&mut self, id: u64) -> &mut Proc {
        self.procs.iter_mut().find(|p| p.id == id).expect("node id")
    }

    pub fn assert_alive(&mut self) {
        for p in &mut self.procs {
            p.assert_alive();
        }
    }

    /// Waits until every running node reports the same leader, itself running, and returns it.
    pub async fn leader(&mut self) -> u64 {
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
            for line in vnet_launch::log_tail(&p.log_path, 30) {
                eprintln!("    {line}");
            }
        }
    }
}
