//! An in-process cluster on loopback: every node is `vnet_node::run` on listeners bound to port
//! 0, stopped through its shutdown future. Helpers wait on conditions with deadlines; nothing
//! sleeps to synchronise.

#![allow(dead_code)]

pub mod fabric;
pub mod otlp;
pub mod processes;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::{Channel, Endpoint};
use vnet_node::config::Args;
use vnet_node::Listeners;
use vnet_proto::vnet::v1 as pb;
use vnet_proto::vnet::v1::cluster_service_client::ClusterServiceClient;
use vnet_proto::vnet::v1::pool_service_client::PoolServiceClient;
use vnet_proto::vnet::v1::profile_service_client::ProfileServiceClient;
use vnet_proto::vnet::v1::watch_service_client::WatchServiceClient;

/// How long any awaited condition may take before the test fails.
pub const WAIT_DEADLINE: Duration = Duration::from_secs(20);

pub struct TestNode {
    pub id: u64,
    pub name: String,
    pub api_addr: SocketAddr,
    pub peer_addr: SocketAddr,
    pub data_dir: PathBuf,
    pub initial_cluster: String,
    /// `--snapshot-every`, when a test wants snapshots sooner than the default.
    pub snapshot_every: Option<u64>,
    /// Where the public calls' principals come from (`vnet_node::auth::edge`).
    pub principals: vnet_node::auth::edge::PrincipalSource,
    /// `--bootstrap-admin`.
    pub bootstrap_admin: Option<String>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

/// Adds this cluster's id to every call, as a member's peer client does: the tests that speak
/// the peer API by hand play a valid but careless peer, not a stranger.
#[derive(Clone)]
pub struct AsMember(Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>);

impl tonic::service::Interceptor for AsMember {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(id) = &self.0 {
            request
                .metadata_mut()
                .insert(vnet_node::peer::client::CLUSTER_ID_HEADER, id.clone());
        }
        Ok(request)
    }
}

pub type PeerClient = vnet_proto::vnet::raft::v1::raft_peer_client::RaftPeerClient<
    tonic::codegen::InterceptedService<Channel, AsMember>,
>;

impl TestNode {
    /// A client of this node's peer API that speaks as a member of its cluster.
    pub async fn peer(&self) -> PeerClient {
        let channel = Endpoint::from_shared(format!("http://{}", self.peer_addr))
            .expect("endpoint")
            .connect()
            .await
            .expect("connect to the peer API");
        let cluster_id = vnet_node::data_file::load(&self.data_dir)
            .expect("read the node's data file")
            .and_then(|data| data.cluster_id)
            .map(|id| id.parse().expect("a cluster id is ASCII"));
        vnet_proto::vnet::raft::v1::raft_peer_client::RaftPeerClient::with_interceptor(
            channel,
            AsMember(cluster_id),
        )
    }
}

pub struct TestCluster {
    pub nodes: Vec<TestNode>,
    _dir: tempfile::TempDir,
}

async fn bind() -> (TcpListener, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind port 0");
    let addr = listener.local_addr().expect("local addr");
    (listener, addr)
}

fn args(node: &TestNode) -> Args {
    Args {
        snapshot_every: node.snapshot_every,
        bootstrap_admin: node.bootstrap_admin.clone(),
        id: Some(node.id),
        name: Some(node.name.clone()),
        role: Some(if node.name == "witness" {
            vnet_node::config::RoleArg::Witness
        } else {
            vnet_node::config::RoleArg::Unit
        }),
        data_dir: Some(node.data_dir.clone()),
        api_listen: Some(node.api_addr),
        peer_listen: Some(node.peer_addr),
        initial_cluster: Some(node.initial_cluster.clone()),
        request_timeout_ms: Some(3_000),
        ..Args::default()
    }
}

impl TestNode {
    fn spawn(&mut self, listeners: Listeners) {
        let config = args(self).resolve().expect("valid test config");
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let shutdown = async move {
            let _ = stop_rx.await;
        };
        self.stop = Some(stop_tx);
        self.task = Some(tokio::spawn(vnet_node::run_with(
            config,
            listeners,
            shutdown,
            self.principals.clone(),
        )));
    }

    pub fn is_running(&self) -> bool {
        self.task.is_some()
    }

    pub async fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let result = tokio::time::timeout(WAIT_DEADLINE, task)
                .await
                .expect("node stops within the deadline")
                .expect("node task did not panic");
            result.expect("node stopped cleanly");
        }
    }

    pub async fn start(&mut self) {
        let api = TcpListener::bind(self.api_addr)
            .await
            .expect("rebind api port");
        let peer = TcpListener::bind(self.peer_addr)
            .await
            .expect("rebind peer port");
        self.spawn(Listeners {
            api,
            peer,
            metrics: None,
        });
    }

    pub async fn channel(&self) -> Channel {
        tonic::transport::Endpoint::from_shared(format!("http://{}", self.api_addr))
            .expect("endpoint")
            .connect_lazy()
    }

    pub async fn profiles(&self) -> ProfileServiceClient<Channel> {
        ProfileServiceClient::new(self.channel().await)
    }
    pub async fn pools(&self) -> PoolServiceClient<Channel> {
        PoolServiceClient::new(self.channel().await)
    }
    pub async fn cluster(&self) -> ClusterServiceClient<Channel> {
        ClusterServiceClient::new(self.channel().await)
    }
    pub async fn watch(&self) -> WatchServiceClient<Channel> {
        WatchServiceClient::new(self.channel().await)
    }

    pub async fn status(
        &self,
        consistency: pb::ReadConsistency,
    ) -> Option<pb::GetClusterStatusResponse> {
        let mut client = self.cluster().await;
        client
            .get_cluster_status(pb::GetClusterStatusRequest {
                consistency: consistency as i32,
            })
            .await
            .ok()
            .map(|r| r.into_inner())
    }
}

/// Logs to stderr when `VNET_TEST_LOG` holds a filter (e.g. `info,openraft=debug`): the nodes
/// of an in-process cluster share this process's subscriber.
pub fn init_test_logging() {
    if let Ok(filter) = std::env::var("VNET_TEST_LOG") {
        // Logs only: there is no trace pipeline to flush.
        let _ = vnet_node::telemetry::init(&filter, vnet_node::config::LogFormat::Text, None);
    }
}

impl TestCluster {
    /// Starts `names.len()` nodes with ids 1.. as one initial cluster. A node named "witness"
    /// gets the witness role.
    pub async fn start(names: &[&str]) -> Self {
        Self::start_with_snapshots(names, None).await
    }

    /// As [`TestCluster::start`], building a snapshot every `snapshot_every` log entries.
    pub async fn start_with_snapshots(names: &[&str], snapshot_every: Option<u64>) -> Self {
        Self::start_with_options(
            names,
            snapshot_every,
            vnet_node::auth::edge::PrincipalSource::Transport,
            None,
        )
        .await
    }

    /// As [`TestCluster::start`], with the public calls' principals from `principals` and
    /// `bootstrap_admin` given to every node.
    pub async fn start_with_principals(
        names: &[&str],
        principals: vnet_node::auth::edge::PrincipalSource,
        bootstrap_admin: Option<&str>,
    ) -> Self {
        Self::start_with_options(names, None, principals, bootstrap_admin).await
    }

    async fn start_with_options(
        names: &[&str],
        snapshot_every: Option<u64>,
        principals: vnet_node::auth::edge::PrincipalSource,
        bootstrap_admin: Option<&str>,
    ) -> Self {
        init_test_logging();
        let dir = tempfile::tempdir().expect("tempdir");
        let mut bound = Vec::new();
        for _ in names {
            let (api, api_addr) = bind().await;
            let (peer, peer_addr) = bind().await;
            bound.push((api, api_addr, peer, peer_addr));
        }
        let initial_cluster = names
            .iter()
            .zip(&bound)
            .enumerate()
            .map(|(i, (name, b))| format!("{}={}@{}", i + 1, name, b.3))
            .collect::<Vec<_>>()
            .join(",");
        let mut nodes = Vec::new();
        for (i, (name, (api, api_addr, peer, peer_addr))) in names.iter().zip(bound).enumerate() {
            let mut node = TestNode {
                id: i as u64 + 1,
                name: name.to_string(),
                api_addr,
                peer_addr,
                data_dir: dir.path().join(name),
                initial_cluster: initial_cluster.clone(),
                snapshot_every,
                principals: principals.clone(),
                bootstrap_admin: bootstrap_admin.map(str::to_string),
                stop: None,
                task: None,
            };
            node.spawn(Listeners {
                api,
                peer,
                metrics: None,
            });
            nodes.push(node);
        }
        Self { nodes, _dir: dir }
    }

    pub fn node(&self, id: u64) -> &TestNode {
        self.nodes
            .iter()
            .find(|n| n.id == id)
            .expect("node id in cluster")
    }

    /// The id of some node other than `id`.
    pub fn other_than(&self, id: u64) -> u64 {
        self.nodes.iter().find(|n| n.id != id).expect("a peer").id
    }

    pub fn node_mut(&mut self, id: u64) -> &mut TestNode {
        self.nodes
            .iter_mut()
            .find(|n| n.id == id)
            .expect("node id in cluster")
    }

    /// Waits until every running node agrees on one leader that is itself running, and returns
    /// it.
    pub async fn leader(&self) -> u64 {
        wait_for("all running nodes agree on a running leader", || async {
            let mut leader = None;
            for node in self.nodes.iter().filter(|n| n.is_running()) {
                let status = node.status(pb::ReadConsistency::Local).await?;
                let this = status.leader_id?;
                if leader.is_some_and(|l| l != this) {
                    return None;
                }
                leader = Some(this);
            }
            leader.filter(|l| self.nodes.iter().any(|n| n.id == *l && n.is_running()))
        })
        .await
    }

    pub async fn stop_all(&mut self) {
        for node in &mut self.nodes {
            node.stop().await;
        }
    }
}

/// A node started empty, outside the initial cluster, waiting to be added with `AddMember`.
pub struct Joiner {
    pub api_addr: SocketAddr,
    pub peer_addr: SocketAddr,
    pub dir: tempfile::TempDir,
    stop: oneshot::Sender<()>,
    task: JoinHandle<anyhow::Result<()>>,
}

impl Joiner {
    pub async fn start(id: u64, name: &str) -> Self {
        let (api, api_addr) = bind().await;
        let (peer, peer_addr) = bind().await;
        let dir = tempfile::tempdir().expect("tempdir");
        let config = Args {
            id: Some(id),
            name: Some(name.to_string()),
            data_dir: Some(dir.path().to_path_buf()),
            api_listen: Some(api_addr),
            peer_listen: Some(peer_addr),
            ..Args::default()
        }
        .resolve()
        .expect("joiner config");
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(vnet_node::run(
            config,
            Listeners {
                api,
                peer,
                metrics: None,
            },
            async move {
                let _ = stopped.await;
            },
        ));
        Joiner {
            api_addr,
            peer_addr,
            dir,
            stop,
            task,
        }
    }

    pub fn profiles(&self) -> ProfileServiceClient<Channel> {
        ProfileServiceClient::new(
            tonic::transport::Endpoint::from_shared(format!("http://{}", self.api_addr))
                .expect("endpoint")
                .connect_lazy(),
        )
    }

    pub async fn stop(self) {
        let _ = self.stop.send(());
        self.task
            .await
            .expect("joiner task did not panic")
            .expect("joiner stopped cleanly");
    }
}

/// Sends `writers` concurrent streams of `per_writer` unconditional updates of `profile` to
/// `node` (concurrent, so they batch in the log) and waits for all of them.
pub async fn concurrent_updates(
    node: &TestNode,
    profile: &pb::Profile,
    writers: usize,
    per_writer: usize,
) {
    let mut running = tokio::task::JoinSet::new();
    for _ in 0..writers {
        let mut client = node.profiles().await;
        let profile = profile.clone();
        running.spawn(async move {
            for _ in 0..per_writer {
                client
                    .update_profile(pb::UpdateProfileRequest {
                        profile: Some(profile.clone()),
                        expected_revision: 0,
                    })
                    .await
                    .expect("update");
            }
        });
    }
    while let Some(joined) = running.join_next().await {
        joined.expect("writer");
    }
}

/// Creates the MAC pool `macs` (02:00:00:00:00:00 up to `last_mac`) and the WWN pool `wwns`
/// (20:00:00:25:b5:00:00:00 up to `last_wwn`) through `channel`; a pool that already exists counts
/// as created.
pub async fn create_pools(
    channel: Channel,
    last_mac: &str,
    last_wwn: &str,
) -> Result<(), tonic::Status> {
    let mut pools = PoolServiceClient::new(channel);
    for (name, kind, first, last) in [
        ("macs", pb::PoolKind::Mac, "02:00:00:00:00:00", last_mac),
        (
            "wwns",
            pb::PoolKind::Wwn,
            "20:00:00:25:b5:00:00:00",
            last_wwn,
        ),
    ] {
        let pool = pb::Pool {
            name: name.into(),
            kind: kind as i32,
            first: first.into(),
            last: last.into(),
            revision: 0,
        };
        match pools
            .create_pool(pb::CreatePoolRequest { pool: Some(pool) })
            .await
        {
            Ok(_) => {}
            Err(e) if e.code() == tonic::Code::AlreadyExists => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Polls `probe` until it yields `Some`, failing the test after [`WAIT_DEADLINE`]. Each poll is
/// a real query of the system under test; the short pause between polls only paces them.
pub async fn wait_for<T, F, Fut>(what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + WAIT_DEADLINE;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {WAIT_DEADLINE:?} waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub fn sample_profile(name: &str, mac_suffix: u8) -> pb::Profile {
    profile_with_mac(name, mac_suffix.into())
}

/// A profile on server `srv-NAME` with one vNIC `eth0` whose MAC is given explicitly, derived
/// from `n` (`02:00:00:` and the low three bytes of `n`), so distinct `n` give distinct MACs and
/// no pool is involved.
pub fn profile_with_mac(name: &str, n: u64) -> pb::Profile {
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

pub async fn create(node: &TestNode, profile: pb::Profile) -> Result<pb::Profile, tonic::Status> {
    node.profiles()
        .await
        .create_profile(pb::CreateProfileRequest {
            profile: Some(profile),
        })
        .await
        .map(|r| r.into_inner().profile.expect("created profile returned"))
}

pub async fn get(
    node: &TestNode,
    name: &str,
    consistency: pb::ReadConsistency,
) -> Result<pb::Profile, tonic::Status> {
    node.profiles()
        .await
        .get_profile(pb::GetProfileRequest {
            name: name.to_string(),
            consistency: consistency as i32,
        })
        .await
        .map(|r| r.into_inner().profile.expect("profile returned"))
}
