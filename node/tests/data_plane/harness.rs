//! The harness of the data-plane tests: real `vnetd` processes, each unit's switch a
//! `vnet-switchd` server in this process, and the waits and checks the tests share.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::common::fabric::presents_exactly;
use crate::common::wait_for;
use fabric_agent::journal::{self, Event};
use fabric_agent::{FabricDriver, PortProgram, SimDriver};
use tonic::transport::{Channel, Endpoint};
use vnet_launch::{Launch, Process, Signal};
use vnet_proto::vnet::v1 as pb;
use vnet_proto::vnet::v1::cluster_service_client::ClusterServiceClient;
use vnet_proto::vnet::v1::profile_service_client::ProfileServiceClient;

pub const VNETD: &str = env!("CARGO_BIN_EXE_vnetd");
pub const NAMES: [&str; 3] = ["unit-a", "unit-b", "witness"];
pub const SERVERS: [&str; 4] = ["srv-1", "srv-2", "srv-3", "srv-4"];
/// The longest election timeout `vnetd` runs with by default.
pub const ELECTION_MAX: Duration = Duration::from_millis(600);
/// `vnetd`'s default lease plus drift margin: no lease held at an instant lasts longer past it.
pub const LEASE_AND_MARGIN_NS: u64 = (800 + 150) * 1_000_000;

pub static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

pub fn free_port() -> SocketAddr {
    crate::common::processes::free_ports(1)[0]
}

pub fn channel(addr: SocketAddr) -> Channel {
    Endpoint::from_shared(format!("http://{addr}"))
        .expect("endpoint")
        .connect_timeout(Duration::from_secs(1))
        .timeout(Duration::from_secs(5))
        .connect_lazy()
}

/// One `vnetd` process, restartable on the same ports and data directory.
pub struct Node {
    pub id: u64,
    pub name: &'static str,
    pub api: SocketAddr,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub log: PathBuf,
    pub child: Option<Process>,
    pub stopped: bool,
}

impl Node {
    pub fn start(&mut self) {
        assert!(self.child.is_none(), "{} is running", self.name);
        let launch = Launch::new(VNETD)
            .args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .log(&self.log);
        self.child = Some(launch.spawn().expect("spawn vnetd"));
        self.stopped = false;
    }

    pub fn signal(&mut self, signal: Signal) {
        let child = self.child.as_ref().expect("running");
        child.signal(signal).expect("signal vnetd");
    }

    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
        }
    }

    /// The running process's pid.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").pid()
    }

    pub fn stop(&mut self) {
        self.signal(Signal::SIGSTOP);
        self.stopped = true;
    }

    pub fn resume(&mut self) {
        self.signal(Signal::SIGCONT);
        self.stopped = false;
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if self.stopped {
            self.resume();
        }
        self.kill9();
    }
}

pub struct Switch {
    pub unit: &'static str,
    pub addr: SocketAddr,
    pub journal: PathBuf,
    pub stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for Switch {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Two units with their switches and a witness; four profiles, two preferring each unit.
pub struct DataPlane {
    pub nodes: Vec<Node>,
    pub switches: Vec<Switch>,
    pub profiles: Vec<pb::Profile>,
    pub dir: Option<tempfile::TempDir>,
}

impl DataPlane {
    pub async fn start() -> DataPlane {
        DataPlane::start_with(&[], &[]).await
    }

    /// As [`DataPlane::start`], giving every `vnetd` `extra_args` and `extra_env` as well.
    pub async fn start_with(extra_args: &[String], extra_env: &[(&str, &str)]) -> DataPlane {
        let dir = tempfile::tempdir().expect("tempdir");
        let ports: Vec<(SocketAddr, SocketAddr)> =
            NAMES.iter().map(|_| (free_port(), free_port())).collect();
        let initial_cluster = NAMES
            .iter()
            .zip(&ports)
            .enumerate()
            .map(|(i, (name, (_, peer)))| format!("{}={name}@{peer}", i + 1))
            .collect::<Vec<_>>()
            .join(",");
        let cabling = SERVERS
            .iter()
            .enumerate()
            .map(|(p, s)| format!("{s}={}", p + 1))
            .collect::<Vec<_>>()
            .join(",");
        let mut switches = Vec::new();
        for unit in &NAMES[..2] {
            switches.push(start_switch(dir.path(), unit).await);
        }
        let mut nodes = Vec::new();
        for (i, name) in NAMES.iter().enumerate() {
            let (api, peer) = ports[i];
            let data_dir = dir.path().join(name);
            let mut args: Vec<String> = [
                "--id",
                &(i + 1).to_string(),
                "--name",
                name,
                "--data-dir",
                &data_dir.display().to_string(),
                "--api-listen",
                &api.to_string(),
                "--peer-listen",
                &peer.to_string(),
                "--initial-cluster",
                &initial_cluster,
                "--request-timeout-ms",
                "3000",
                "--log-level",
                "info",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            if i < 2 {
                args.extend(
                    [
                        "--role",
                        "unit",
                        "--switch",
                        &switches[i].addr.to_string(),
                        "--cabling",
                        &cabling,
                    ]
                    .iter()
                    .map(|s| s.to_string()),
                );
            } else {
                args.extend(["--role".to_string(), "witness".to_string()]);
            }
            args.extend(extra_args.iter().cloned());
            let mut node = Node {
                id: i as u64 + 1,
                name,
                api,
                args,
                env: extra_env
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                log: dir.path().join(format!("{name}.log")),
                child: None,
                stopped: false,
            };
            node.start();
            nodes.push(node);
        }
        let mut plane = DataPlane {
            nodes,
            switches,
            profiles: Vec::new(),
            dir: Some(dir),
        };
        plane.profiles = plane.create_profiles().await;
        for unit in ["unit-a", "unit-b"] {
            plane.wait_presented(unit, &plane.placed_on(unit)).await;
        }
        plane
    }

    pub fn node(&mut self, name: &str) -> &mut Node {
        self.nodes
            .iter_mut()
            .find(|n| n.name == name)
            .expect("node")
    }

    /// An API endpoint of a node that is running and not stopped.
    pub fn api(&self) -> Channel {
        let node = self
            .nodes
            .iter()
            .find(|n| n.child.is_some() && !n.stopped)
            .expect("a running node");
        channel(node.api)
    }

    pub async fn create_profiles(&self) -> Vec<pb::Profile> {
        wait_for("pools created", || async {
            crate::common::create_pools(self.api(), "02:00:00:00:ff:ff", "20:00:00:25:b5:00:ff:ff")
                .await
                .ok()
        })
        .await;
        let mut created = Vec::new();
        for (i, server) in SERVERS.iter().enumerate() {
            let profile = pb::Profile {
                name: format!("prof-{}", i + 1),
                server: server.to_string(),
                vnics: vec![pb::Vnic {
                    name: "eth0".into(),
                    network: "prod".into(),
                    ..Default::default()
                }],
                vhbas: vec![pb::Vhba {
                    name: "fc0".into(),
                    fabric: "a".into(),
                    ..Default::default()
                }],
                preferred_unit: Some(NAMES[i % 2].into()),
                failback: pb::FailbackPolicy::Manual as i32,
                ..Default::default()
            };
            let stored = wait_for(&format!("profile {} created", profile.name), || {
                let request = pb::CreateProfileRequest {
                    profile: Some(profile.clone()),
                };
                let mut client = ProfileServiceClient::new(self.api());
                async move {
                    client
                        .create_profile(request)
                        .await
                        .ok()
                        .and_then(|r| r.into_inner().profile)
                }
            })
            .await;
            created.push(stored);
        }
        created
    }

    pub fn placed_on(&self, unit: &str) -> Vec<pb::Profile> {
        self.profiles
            .iter()
            .filter(|p| p.preferred_unit.as_deref() == Some(unit))
            .cloned()
            .collect()
    }

    pub fn switch(&self, unit: &str) -> &Switch {
        self.switches
            .iter()
            .find(|s| s.unit == unit)
            .expect("switch")
    }

    pub async fn ports(&self, unit: &str) -> BTreeMap<u8, PortProgram> {
        SimDriver::connect_lazy(&self.switch(unit).addr.to_string())
            .expect("driver")
            .state()
            .await
            .map(|s| s.ports)
            .unwrap_or_default()
    }

    /// Waits until `unit`'s switch presents each of `profiles`, with exactly its identities.
    pub async fn wait_presented(&self, unit: &str, profiles: &[pb::Profile]) {
        let servers: Vec<String> = SERVERS.iter().map(|s| s.to_string()).collect();
        wait_for(
            &format!("{unit} presents {} profiles", profiles.len()),
            || async {
                let ports = self.ports(unit).await;
                profiles
                    .iter()
                    .all(|p| presents_exactly(&ports, &servers, p))
                    .then_some(())
            },
        )
        .await;
    }

    /// Waits until each of `units` has armed its switch past every lease it could have held at
    /// `since_mono_ns`. From then on a lapse since that instant is in its journal: the switch
    /// fences when a deadline passes, and applies a passed deadline before any new one.
    pub async fn wait_leases_outlived(&self, units: &[&str], since_mono_ns: u64) {
        for unit in units {
            let addr = self.switch(unit).addr.to_string();
            wait_for(
                &format!("{unit} renews past its lease at the fault"),
                || async {
                    let state = SimDriver::connect_lazy(&addr).ok()?.state().await.ok()?;
                    let deadline = state.watchdog_deadline_mono_ns?;
                    (deadline > since_mono_ns + LEASE_AND_MARGIN_NS).then_some(())
                },
            )
            .await;
        }
    }

    /// Waits until `unit`'s switch presents nothing.
    pub async fn wait_until_fenced(&self, unit: &str) {
        wait_for(&format!("{unit}'s switch presents nothing"), || async {
            self.ports(unit).await.is_empty().then_some(())
        })
        .await;
    }

    /// How many records `unit`'s journal holds now: a mark to check from.
    pub fn journal_mark(&self, unit: &str) -> usize {
        journal::read(&self.switch(unit).journal)
            .expect("journal")
            .len()
    }

    /// Fails if `unit`'s switch fenced or cleared anything after `mark`.
    pub fn assert_no_fence_since(&self, unit: &str, mark: usize, during: &str) {
        let records = journal::read(&self.switch(unit).journal).expect("journal");
        let interruptions: Vec<_> = records[mark..]
            .iter()
            .filter(|r| matches!(r.event, Event::Fenced { .. } | Event::Cleared { .. }))
            .collect();
        assert!(
            interruptions.is_empty(),
            "{unit} is healthy but its switch was interrupted during {during}: {interruptions:#?}"
        );
    }

    /// The leader every running node agrees on.
    pub async fn leader(&self) -> u64 {
        wait_for("every running node agrees on a running leader", || async {
            let mut seen = None;
            for node in self
                .nodes
                .iter()
                .filter(|n| n.child.is_some() && !n.stopped)
            {
                let status = ClusterServiceClient::new(channel(node.api))
                    .get_cluster_status(pb::GetClusterStatusRequest {
                        consistency: pb::ReadConsistency::Local as i32,
                    })
                    .await
                    .ok()?
                    .into_inner();
                let leader = status.leader_id?;
                if seen.is_some_and(|s| s != leader) {
                    return None;
                }
                seen = Some(leader);
            }
            let leader = seen?;
            self.nodes
                .iter()
                .any(|n| n.id == leader && n.child.is_some() && !n.stopped)
                .then_some(leader)
        })
        .await
    }

    pub async fn transfer(&self, to: u64) {
        wait_for(&format!("leadership moves to node {to}"), || async {
            let mut client = ClusterServiceClient::new(self.api());
            client
                .transfer_leader(pb::TransferLeaderRequest { to_id: to })
                .await
                .ok()?;
            (self.leader().await == to).then_some(())
        })
        .await;
    }

    /// Keeps the logs of a failed run.
    pub fn keep_on_panic(&mut self) {
        if std::thread::panicking() {
            if let Some(dir) = self.dir.take() {
                eprintln!("logs and journals kept in {}", dir.keep().display());
            }
        }
    }
}

impl Drop for DataPlane {
    fn drop(&mut self) {
        self.keep_on_panic();
    }
}

pub fn name_of(id: u64) -> &'static str {
    NAMES[id as usize - 1]
}

/// A `vnet-switchd` server for `unit` in this process, cabled like the others.
pub async fn start_switch(dir: &std::path::Path, unit: &'static str) -> Switch {
    let host_ports = SERVERS
        .iter()
        .enumerate()
        .map(|(p, s)| format!("{}={s}", p + 1))
        .collect::<Vec<_>>()
        .join(",");
    let journal = dir.join(format!("{unit}.journal"));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind switch");
    let addr = listener.local_addr().expect("switch addr");
    let config = fabric_agent::config::Args {
        listen: addr,
        journal: journal.clone(),
        host_ports,
        eth_ports: 2,
        vfs_per_eth_port: 32,
        fc_ports: 2,
        npiv_per_fc_port: 32,
        log_level: "warn".into(),
        unsafe_disable_watchdog: false,
        metrics_listen: None,
        tls: Default::default(),
    }
    .resolve()
    .expect("switch config");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(fabric_agent::server::run(
        config,
        listener,
        None,
        async move {
            let _ = stopped.await;
        },
    ));
    Switch {
        unit,
        addr,
        journal,
        stop: Some(stop),
    }
}
