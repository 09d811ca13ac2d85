//! Two units, each a vnetd with its own simulated switch (vnet-switchd run in-process), and a
//! witness. Shared by the failover tests and the failover benchmark.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use fabric_agent::journal;
use fabric_agent::{FabricDriver, PortProgram, SimDriver};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::Channel;
use vnet_proto::vnet::v1 as pb;
use vnet_proto::vnet::v1::cluster_service_client::ClusterServiceClient;
use vnet_proto::vnet::v1::pool_service_client::PoolServiceClient;
use vnet_proto::vnet::v1::profile_service_client::ProfileServiceClient;

use super::{wait_for, WAIT_DEADLINE};

/// Profiles created at once by [`Fabric::create_profiles_named`].
pub const CREATE_CONCURRENCY: usize = 16;

pub const SERVERS: [&str; 4] = ["srv-1", "srv-2", "srv-3", "srv-4"];

pub struct Task {
    stop: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<anyhow::Result<()>>>,
}

impl Task {
    pub async fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(handle) = self.handle.take() {
            tokio::time::timeout(WAIT_DEADLINE, handle)
                .await
                .expect("stops within the deadline")
                .expect("task did not panic")
                .expect("stopped cleanly");
        }
    }
}

fn spawn<F>(
    run: impl FnOnce(std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>) -> F,
) -> Task
where
    F: std::future::Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let (stop, stopped) = oneshot::channel::<()>();
    let shutdown = Box::pin(async move {
        let _ = stopped.await;
    });
    Task {
        stop: Some(stop),
        handle: Some(tokio::spawn(run(shutdown))),
    }
}

pub struct Unit {
    pub name: String,
    pub api: SocketAddr,
    pub switch_addr: SocketAddr,
    /// Where this unit's vnetd and its switch serve /metrics, /health and /readyz.
    pub metrics: SocketAddr,
    pub switch_metrics: SocketAddr,
    pub journal: PathBuf,
    /// The servers cabled to this unit, host port 1 first.
    pub servers: Vec<String>,
    node: Task,
    switch: Task,
    /// CLOCK_MONOTONIC time at which the switch was stopped, if it was.
    pub switch_stopped_at_ns: Option<u64>,
}

pub struct Fabric {
    pub units: Vec<Unit>,
    witness: Task,
    witness_api: SocketAddr,
    pub witness_metrics: SocketAddr,
    _dir: tempfile::TempDir,
}

async fn listener() -> (TcpListener, SocketAddr) {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let a = l.local_addr().expect("addr");
    (l, a)
}

impl Fabric {
    /// unit-a is cabled to every server of [`SERVERS`]; unit-b to all but `srv-4`.
    pub async fn start(failback_hold_down_ms: u64) -> Self {
        let all: Vec<String> = SERVERS.iter().map(|s| s.to_string()).collect();
        Self::start_with(all.clone(), all[..3].to_vec(), failback_hold_down_ms).await
    }

    pub async fn start_with(
        servers_a: Vec<String>,
        servers_b: Vec<String>,
        failback_hold_down_ms: u64,
    ) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let names = ["unit-a", "unit-b", "witness"];
        let mut bound = Vec::new();
        for _ in names {
            let (api, api_addr) = listener().await;
            let (peer, peer_addr) = listener().await;
            bound.push((api, api_addr, peer, peer_addr));
        }
        let initial_cluster = names
            .iter()
            .zip(&bound)
            .enumerate()
            .map(|(i, (n, b))| format!("{}={n}@{}", i + 1, b.3))
            .collect::<Vec<_>>()
            .join(",");
        let mut units = Vec::new();
        let mut witness = None;
        let mut witness_api = None;
        let mut witness_metrics = None;
        for (i, (name, (api, api_addr, peer, _))) in names.iter().zip(bound).enumerate() {
            let data_dir = dir.path().join(name);
            std::fs::create_dir_all(&data_dir).expect("data dir");
            let (metrics, metrics_addr) = listener().await;
            let mut args = vnet_node::config::Args {
                id: Some(i as u64 + 1),
                name: Some(name.to_string()),
                data_dir: Some(data_dir.clone()),
                api_listen: Some(api_addr),
                peer_listen: Some(peer.local_addr().expect("addr")),
                initial_cluster: Some(initial_cluster.clone()),
                request_timeout_ms: Some(3_000),
                failback_hold_down_ms: Some(failback_hold_down_ms),
                ..Default::default()
            };
            if *name == "witness" {
                args.role = Some(vnet_node::config::RoleArg::Witness);
                let config = args.resolve().expect("config");
                witness = Some(spawn(|shutdown| {
                    let listeners = vnet_node::Listeners {
                        api,
                        peer,
                        metrics: Some(metrics),
                    };
                    vnet_node::run(config, listeners, shutdown)
                }));
                witness_api = Some(api_addr);
                witness_metrics = Some(metrics_addr);
                continue;
            }
            let servers = if *name == "unit-a" {
                servers_a.clone()
            } else {
                servers_b.clone()
            };
            let journal_path = data_dir.join("switch.journal");
            let (switch_listener, switch_addr) = listener().await;
            let (switch_metrics_listener, switch_metrics) = listener().await;
            let switch_config = fabric_agent::config::Args {
                listen: switch_addr,
                metrics_listen: Some(switch_metrics),
                journal: journal_path.clone(),
                host_ports: servers
                    .iter()
                    .enumerate()
                    .map(|(p, s)| format!("{}={s}", p + 1))
                    .collect::<Vec<_>>()
                    .join(","),
                eth_ports: 2,
                vfs_per_eth_port: 32,
                fc_ports: 2,
                npiv_per_fc_port: 32,
                log_level: "info".into(),
                unsafe_disable_watchdog: false,
                tls: Default::default(),
            }
            .resolve()
            .expect("switch config");
            let switch = spawn(|shutdown| {
                fabric_agent::server::run(
                    switch_config,
                    switch_listener,
                    Some(switch_metrics_listener),
                    shutdown,
                )
            });
            args.switch = Some(switch_addr.to_string());
            args.cabling = Some(
                servers
                    .iter()
                    .enumerate()
                    .map(|(p, s)| format!("{s}={}", p + 1))
                    .collect::<Vec<_>>()
                    .join(","),
            );
            let config = args.resolve().expect("config");
            let node = spawn(|shutdown| {
                let listeners = vnet_node::Listeners {
                    api,
                    peer,
                    metrics: Some(metrics),
                };
                vnet_node::run(config, listeners, shutdown)
            });
            units.push(Unit {
                name: name.to_string(),
                api: api_addr,
                switch_addr,
                metrics: metrics_addr,
                switch_metrics,
                journal: journal_path,
                node,
                switch,
                servers,
                switch_stopped_at_ns: None,
            });
        }
        Fabric {
            units,
            witness: witness.expect("witness"),
            witness_api: witness_api.expect("witness api"),
            witness_metrics: witness_metrics.expect("witness metrics"),
            _dir: dir,
        }
    }

    pub fn unit(&mut self, name: &str) -> &mut Unit {
        self.units
            .iter_mut()
            .find(|u| u.name == name)
            .expect("unit")
    }

    pub fn channel(addr: SocketAddr) -> Channel {
        tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .expect("endpoint")
            .connect_lazy()
    }

    /// A live API endpoint: the witness's (never killed in these tests).
    pub fn api(&self) -> Channel {
        Self::channel(self.witness_api)
    }

    pub async fn status(&self) -> Option<pb::GetClusterStatusResponse> {
        ClusterServiceClient::new(self.api())
            .get_cluster_status(pb::GetClusterStatusRequest { consistency: 0 })
            .await
            .ok()
            .map(|r| r.into_inner())
    }

    pub async fn switch_ports(addr: SocketAddr) -> BTreeMap<u8, PortProgram> {
        SimDriver::connect_lazy(&addr.to_string())
            .expect("driver")
            .state()
            .await
            .map(|s| s.ports)
            .unwrap_or_default()
    }

    /// Creates pools and one profile per server, preferring `preferred`, and waits until every
    /// profile is presented. Returns the profiles as stored.
    pub async fn profiles(
        &self,
        preferred: &str,
        failback: pb::FailbackPolicy,
    ) -> Vec<pb::Profile> {
        let servers: Vec<String> = SERVERS.iter().map(|s| s.to_string()).collect();
        let created = self.create_profiles(&servers, preferred, failback).await;
        self.wait_presented(&created, preferred, &[]).await;
        created
    }

    /// Creates the pools (if missing) and one profile per server, named `prof-N`.
    pub async fn create_profiles(
        &self,
        servers: &[String],
        preferred: &str,
        failback: pb::FailbackPolicy,
    ) -> Vec<pb::Profile> {
        self.create_profiles_named(servers, preferred, failback, 0)
            .await
    }

    /// As [`Fabric::create_profiles`], numbering names from `first_index + 1`; creates up to
    /// [`CREATE_CONCURRENCY`] at a time.
    pub async fn create_profiles_named(
        &self,
        servers: &[String],
        preferred: &str,
        failback: pb::FailbackPolicy,
        first_index: usize,
    ) -> Vec<pb::Profile> {
        super::create_pools(self.api(), "02:00:00:00:ff:ff", "20:00:00:25:b5:00:ff:ff")
            .await
            .expect("pool");
        let mut created = Vec::new();
        for (chunk_index, chunk) in servers.chunks(CREATE_CONCURRENCY).enumerate() {
            let mut creating = tokio::task::JoinSet::new();
            for (i, server) in chunk.iter().enumerate() {
                let index = first_index + chunk_index * CREATE_CONCURRENCY + i + 1;
                let profile = pb::Profile {
                    name: format!("prof-{index}"),
                    server: server.to_string(),
                    vnics: ["eth0", "eth1"]
                        .iter()
                        .map(|n| pb::Vnic {
                            name: n.to_string(),
                            network: "prod".into(),
                            ..Default::default()
                        })
                        .collect(),
                    vhbas: ["fc0", "fc1"]
                        .iter()
                        .map(|n| pb::Vhba {
                            name: n.to_string(),
                            fabric: "a".into(),
                            ..Default::default()
                        })
                        .collect(),
                    preferred_unit: Some(preferred.into()),
                    failback: failback as i32,
                    ..Default::default()
                };
                let mut client = ProfileServiceClient::new(self.api());
                let mut pools = PoolServiceClient::new(self.api());
                creating.spawn(async move {
                    let created = client
                        .create_profile(pb::CreateProfileRequest {
                            profile: Some(profile),
                        })
                        .await;
                    if let Err(e) = &created {
                        let usage = pools
                            .get_pool_usage(pb::GetPoolUsageRequest::default())
                            .await
                            .map(|u| u.into_inner().usages);
                        panic!("create profile {index}: {e:?}; pools: {usage:?}");
                    }
                    let created = created
                        .expect("create profile")
                        .into_inner()
                        .profile
                        .expect("profile");
                    (index, created)
                });
            }
            let mut batch = Vec::new();
            while let Some(joined) = creating.join_next().await {
                batch.push(joined.expect("creator"));
            }
            batch.sort_by_key(|(index, _)| *index);
            created.extend(batch.into_iter().map(|(_, profile)| profile));
        }
        created
    }

    /// Waits until `unit`'s switch presents every profile in `profiles` except those named in
    /// `except`, with exactly its identities on the port its server is cabled to.
    pub async fn wait_presented(&self, profiles: &[pb::Profile], unit: &str, except: &[&str]) {
        let found = self.units.iter().find(|u| u.name == unit).expect("unit");
        let addr = found.switch_addr;
        let servers = found.servers.clone();
        let wanted: Vec<&pb::Profile> = profiles
            .iter()
            .filter(|p| !except.contains(&p.name.as_str()))
            .filter(|p| servers.contains(&p.server))
            .collect();
        wait_for(
            &format!("{unit}'s switch presents {} profiles", wanted.len()),
            || async {
                let ports = Self::switch_ports(addr).await;
                wanted
                    .iter()
                    .all(|p| presents_exactly(&ports, &servers, p))
                    .then_some(())
            },
        )
        .await;
    }

    /// Stops the witness's vnetd (the API is then reached through a unit: [`Fabric::unit_api`]).
    pub async fn stop_witness(&mut self) {
        self.witness.stop().await;
    }

    /// A unit's API endpoint.
    pub fn unit_api(&self, unit: &str) -> Channel {
        let found = self.units.iter().find(|u| u.name == unit).expect("unit");
        Self::channel(found.api)
    }

    pub async fn stop_node(&mut self, unit: &str) {
        self.unit(unit).node.stop().await;
    }

    pub async fn stop_switch(&mut self, unit: &str) {
        let u = self.unit(unit);
        u.switch.stop().await;
        u.switch_stopped_at_ns = Some(fabric_agent::monotonic_now_ns());
    }

    /// Reads every switch journal and checks that no identity was ever presented by two
    /// switches at overlapping times.
    pub fn assert_no_double_presentation(&self) -> usize {
        let mut all = Vec::new();
        for unit in &self.units {
            let records = journal::read(&unit.journal).expect("journal reads clean");
            all.extend(journal::presentations(
                &records,
                &unit.name,
                unit.switch_stopped_at_ns,
            ));
        }
        if let Err(overlaps) = fabric_agent::check::no_double_presentation(&all) {
            panic!("identities presented twice at once: {overlaps:#?}");
        }
        all.len()
    }

    pub async fn stop_all(&mut self) {
        for unit in &mut self.units {
            unit.node.stop().await;
            unit.switch.stop().await;
        }
        self.witness.stop().await;
    }
}

/// Does `ports` present `profile` on the host port of its server, with exactly its identities?
pub fn presents_exactly(
    ports: &BTreeMap<u8, PortProgram>,
    servers: &[String],
    profile: &pb::Profile,
) -> bool {
    let Some(position) = servers.iter().position(|s| *s == profile.server) else {
        return false;
    };
    let Some(program) = ports.get(&(position as u8 + 1)) else {
        return false;
    };
    let mut presented: Vec<String> = program
        .functions
        .iter()
        .flat_map(|f| match f {
            fabric_agent::Function::Nic { mac, .. } => vec![mac.to_string()],
            fabric_agent::Function::Hba { wwpn, wwnn, .. } => {
                vec![wwpn.to_string(), wwnn.to_string()]
            }
        })
        .collect();
    let mut wanted: Vec<String> = profile
        .vnics
        .iter()
        .map(|v| v.mac.clone())
        .chain(
            profile
                .vhbas
                .iter()
                .flat_map(|h| [h.wwpn.clone(), h.wwnn.clone()]),
        )
        .collect();
    presented.sort();
    wanted.sort();
    program.profile == profile.name && presented == wanted
}
