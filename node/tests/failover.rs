//! Failover with fencing, in one process: two units (each a vnetd plus its own simulated switch)
//! and a witness. A unit is "killed" by stopping its vnetd and, for a whole-unit failure, its
//! switch too. Every check reads the switches themselves (state and journals), not only what the
//! cluster says.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use common::{wait_for, WAIT_DEADLINE};
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

const SERVERS: [&str; 4] = ["srv-1", "srv-2", "srv-3", "srv-4"];

struct Task {
    stop: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<anyhow::Result<()>>>,
}

impl Task {
    async fn stop(&mut self) {
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

struct Unit {
    name: String,
    api: SocketAddr,
    switch_addr: SocketAddr,
    journal: PathBuf,
    node: Task,
    switch: Task,
    /// CLOCK_MONOTONIC time at which the switch was stopped, if it was.
    switch_stopped_at_ns: Option<u64>,
}

struct Fabric {
    units: Vec<Unit>,
    witness: Task,
    witness_api: SocketAddr,
    _dir: tempfile::TempDir,
}

async fn listener() -> (TcpListener, SocketAddr) {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let a = l.local_addr().expect("addr");
    (l, a)
}

/// unit-a is cabled to every server; unit-b to all but `srv-4`.
fn cabling(unit: &str) -> Vec<&'static str> {
    match unit {
        "unit-a" => SERVERS.to_vec(),
        _ => SERVERS[..3].to_vec(),
    }
}

impl Fabric {
    async fn start(failback_hold_down_ms: u64) -> Self {
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
        for (i, (name, (api, api_addr, peer, _))) in names.iter().zip(bound).enumerate() {
            let data_dir = dir.path().join(name);
            std::fs::create_dir_all(&data_dir).expect("data dir");
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
                    vnet_node::run(config, vnet_node::Listeners { api, peer }, shutdown)
                }));
                witness_api = Some(api_addr);
                continue;
            }
            let servers = cabling(name);
            let journal_path = data_dir.join("switch.journal");
            let (switch_listener, switch_addr) = listener().await;
            let switch_config = fabric_agent::config::Args {
                listen: switch_addr,
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
            }
            .resolve()
            .expect("switch config");
            let switch = spawn(|shutdown| {
                fabric_agent::server::run(switch_config, switch_listener, shutdown)
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
                vnet_node::run(config, vnet_node::Listeners { api, peer }, shutdown)
            });
            units.push(Unit {
                name: name.to_string(),
                api: api_addr,
                switch_addr,
                journal: journal_path,
                node,
                switch,
                switch_stopped_at_ns: None,
            });
        }
        Fabric {
            units,
            witness: witness.expect("witness"),
            witness_api: witness_api.expect("witness api"),
            _dir: dir,
        }
    }

    fn unit(&mut self, name: &str) -> &mut Unit {
        self.units
            .iter_mut()
            .find(|u| u.name == name)
            .expect("unit")
    }

    fn channel(addr: SocketAddr) -> Channel {
        tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .expect("endpoint")
            .connect_lazy()
    }

    /// A live API endpoint: the witness's (never killed in these tests).
    fn api(&self) -> Channel {
        Self::channel(self.witness_api)
    }

    async fn status(&self) -> Option<pb::GetClusterStatusResponse> {
        ClusterServiceClient::new(self.api())
            .get_cluster_status(pb::GetClusterStatusRequest { consistency: 0 })
            .await
            .ok()
            .map(|r| r.into_inner())
    }

    async fn switch_ports(addr: SocketAddr) -> BTreeMap<u8, PortProgram> {
        SimDriver::connect_lazy(&addr.to_string())
            .expect("driver")
            .state()
            .await
            .map(|s| s.ports)
            .unwrap_or_default()
    }

    /// Creates pools and one profile per server, preferring `preferred`, and waits until every
    /// profile is presented. Returns the profiles as stored.
    async fn profiles(&self, preferred: &str, failback: pb::FailbackPolicy) -> Vec<pb::Profile> {
        let mut pools = PoolServiceClient::new(self.api());
        for (name, kind, first, last) in [
            (
                "macs",
                pb::PoolKind::Mac,
                "02:00:00:00:00:00",
                "02:00:00:00:00:ff",
            ),
            (
                "wwns",
                pb::PoolKind::Wwn,
                "20:00:00:25:b5:00:00:00",
                "20:00:00:25:b5:00:00:ff",
            ),
        ] {
            pools
                .create_pool(pb::CreatePoolRequest {
                    pool: Some(pb::Pool {
                        name: name.into(),
                        kind: kind as i32,
                        first: first.into(),
                        last: last.into(),
                        revision: 0,
                    }),
                })
                .await
                .expect("pool");
        }
        let mut client = ProfileServiceClient::new(self.api());
        let mut created = Vec::new();
        for (i, server) in SERVERS.iter().enumerate() {
            let profile = pb::Profile {
                name: format!("prof-{}", i + 1),
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
            created.push(
                client
                    .create_profile(pb::CreateProfileRequest {
                        profile: Some(profile),
                    })
                    .await
                    .expect("create profile")
                    .into_inner()
                    .profile
                    .expect("profile"),
            );
        }
        self.wait_presented(&created, preferred, &[]).await;
        created
    }

    /// Waits until `unit`'s switch presents every profile in `profiles` except those named in
    /// `except`, with exactly its identities on the port its server is cabled to.
    async fn wait_presented(&self, profiles: &[pb::Profile], unit: &str, except: &[&str]) {
        let addr = self
            .units
            .iter()
            .find(|u| u.name == unit)
            .expect("unit")
            .switch_addr;
        let wanted: Vec<&pb::Profile> = profiles
            .iter()
            .filter(|p| !except.contains(&p.name.as_str()))
            .filter(|p| cabling(unit).contains(&p.server.as_str()))
            .collect();
        wait_for(
            &format!("{unit}'s switch presents {} profiles", wanted.len()),
            || async {
                let ports = Self::switch_ports(addr).await;
                wanted
                    .iter()
                    .all(|p| presents_exactly(&ports, unit, p))
                    .then_some(())
            },
        )
        .await;
    }

    async fn stop_node(&mut self, unit: &str) {
        self.unit(unit).node.stop().await;
    }

    async fn stop_switch(&mut self, unit: &str) {
        let u = self.unit(unit);
        u.switch.stop().await;
        u.switch_stopped_at_ns = Some(fabric_agent::monotonic_now_ns());
    }

    /// Reads every switch journal and checks that no identity was ever presented by two
    /// switches at overlapping times.
    fn assert_no_double_presentation(&self) -> usize {
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

    async fn stop_all(&mut self) {
        for unit in &mut self.units {
            unit.node.stop().await;
            unit.switch.stop().await;
        }
        self.witness.stop().await;
    }
}

/// Does `ports` present `profile` on the host port of its server, with exactly its identities?
fn presents_exactly(ports: &BTreeMap<u8, PortProgram>, unit: &str, profile: &pb::Profile) -> bool {
    let Some(position) = cabling(unit).iter().position(|s| *s == profile.server) else {
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

async fn placement(fabric: &Fabric, profile: &str) -> Option<pb::ProfilePlacement> {
    fabric
        .status()
        .await?
        .placements
        .into_iter()
        .find(|p| p.profile == profile)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_unit_failure_moves_every_profile_with_identical_identities() {
    let mut fabric = Fabric::start(60_000).await;
    let profiles = fabric.profiles("unit-a", pb::FailbackPolicy::Manual).await;
    fabric.stop_node("unit-a").await;
    fabric.stop_switch("unit-a").await;
    // srv-4 is not cabled to unit-b: everything else moves, that one is unplaced with a reason.
    fabric
        .wait_presented(&profiles, "unit-b", &["prof-4"])
        .await;
    let moved = placement(&fabric, "prof-1").await.expect("placement");
    assert_eq!(
        moved.state,
        pb::PlacementState::FailedOver as i32,
        "{moved:?}"
    );
    assert_eq!(moved.failed_over_from, "unit-a");
    let stuck = wait_for("prof-4 is reported unplaced", || async {
        placement(&fabric, "prof-4")
            .await
            .filter(|p| p.state == pb::PlacementState::Unplaced as i32)
    })
    .await;
    assert!(stuck.reason.contains("srv-4"), "{}", stuck.reason);
    assert!(fabric.assert_no_double_presentation() > 0);
    fabric.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_unit_whose_vnetd_dies_fences_its_switch_before_the_peer_programs() {
    let mut fabric = Fabric::start(60_000).await;
    let profiles = fabric.profiles("unit-a", pb::FailbackPolicy::Manual).await;
    // Only the management process dies; the switch (data plane) keeps running on its own.
    fabric.stop_node("unit-a").await;
    fabric
        .wait_presented(&profiles, "unit-b", &["prof-4"])
        .await;
    let a_switch = fabric.unit("unit-a").switch_addr;
    let state = SimDriver::connect_lazy(&a_switch.to_string())
        .expect("driver")
        .state()
        .await
        .expect("unit-a's switch still answers");
    assert!(state.fenced, "unit-a's switch fenced itself");
    assert!(
        state.ports.is_empty(),
        "unit-a's switch presents nothing: {:?}",
        state.ports
    );
    fabric.assert_no_double_presentation();
    fabric.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_works_when_the_failed_unit_was_the_leader() {
    let mut fabric = Fabric::start(60_000).await;
    let profiles = fabric.profiles("unit-a", pb::FailbackPolicy::Manual).await;
    let mut admin = ClusterServiceClient::new(fabric.api());
    admin
        .transfer_leader(pb::TransferLeaderRequest { to_id: 1 })
        .await
        .expect("make unit-a the leader");
    fabric.stop_node("unit-a").await;
    fabric
        .wait_presented(&profiles, "unit-b", &["prof-4"])
        .await;
    let status = fabric.status().await.expect("status");
    assert_ne!(status.leader_id, Some(1));
    fabric.assert_no_double_presentation();
    fabric.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_empties_a_unit_and_undrain_brings_auto_failback_home() {
    let mut fabric = Fabric::start(500).await;
    let profiles = fabric.profiles("unit-a", pb::FailbackPolicy::Auto).await;
    let mut admin = ClusterServiceClient::new(fabric.api());
    admin
        .drain(pb::DrainRequest {
            unit: "unit-a".into(),
        })
        .await
        .expect("drain");
    // Everything unit-b is cabled for moves; srv-4's profile has nowhere to go and stays.
    fabric
        .wait_presented(&profiles, "unit-b", &["prof-4"])
        .await;
    let a_switch = fabric.unit("unit-a").switch_addr;
    let remaining = Fabric::switch_ports(a_switch).await;
    assert_eq!(
        remaining
            .values()
            .map(|p| p.profile.as_str())
            .collect::<Vec<_>>(),
        ["prof-4"],
        "a draining unit keeps only what no other unit can take"
    );
    let err = admin
        .failover(pb::FailoverRequest {
            profile: "prof-1".into(),
            to_unit: "unit-a".into(),
            from_unit: String::new(),
        })
        .await
        .expect_err("a draining unit is given nothing");
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains("draining"), "{err:?}");

    admin
        .undrain(pb::UndrainRequest {
            unit: "unit-a".into(),
        })
        .await
        .expect("undrain");
    // Failback auto: back to the preferred unit after the hold-down.
    fabric.wait_presented(&profiles, "unit-a", &[]).await;
    fabric.assert_no_double_presentation();
    fabric.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manual_failover_moves_break_before_make_and_names_what_blocks_it() {
    let mut fabric = Fabric::start(60_000).await;
    let profiles = fabric.profiles("unit-a", pb::FailbackPolicy::Manual).await;
    let mut admin = ClusterServiceClient::new(fabric.api());
    let moved = admin
        .failover(pb::FailoverRequest {
            profile: "prof-2".into(),
            to_unit: "unit-b".into(),
            from_unit: String::new(),
        })
        .await
        .expect("failover")
        .into_inner();
    assert_eq!(moved.profiles, ["prof-2"]);
    let b_switch = fabric.unit("unit-b").switch_addr;
    wait_for("prof-2 is presented on unit-b", || async {
        let ports = Fabric::switch_ports(b_switch).await;
        presents_exactly(&ports, "unit-b", &profiles[1]).then_some(())
    })
    .await;
    fabric.assert_no_double_presentation();
    let err = admin
        .failover(pb::FailoverRequest {
            profile: "prof-4".into(),
            to_unit: "unit-b".into(),
            from_unit: String::new(),
        })
        .await
        .expect_err("srv-4 is not cabled to unit-b");
    assert!(err.message().contains("not cabled"), "{err:?}");
    fabric.stop_all().await;
}
