//! Starting in-process switches for the integration tests, and waiting on conditions.

#![allow(dead_code)] // Each test binary uses its own part of this module.

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use fabric_agent::config::{Config, DataPlaneConfig};
use fabric_agent::server::run;
use fabric_agent::switch::{Capacity, SwitchSpec, WatchdogMode};
use fabric_agent::{Function, PortProgram, SimDriver};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// How long a test waits for a condition before failing.
pub const WAIT_DEADLINE_MS: u64 = 10_000;
/// How often a waiting test checks its condition again.
pub const POLL_INTERVAL_MS: u64 = 5;
pub const MS_NS: u64 = 1_000_000;

/// A `vnet-switchd` served by `run` inside the test's runtime, on a port-0 listener.
pub struct RunningSwitch {
    pub addr: SocketAddr,
    /// Where the switch serves /metrics, /health and /readyz.
    pub metrics_addr: SocketAddr,
    pub driver: SimDriver,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<anyhow::Result<()>>,
}

pub fn config(journal: &Path, watchdog: WatchdogMode) -> Config {
    Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        metrics_listen: None,
        journal: journal.to_owned(),
        spec: SwitchSpec {
            cabling: (1..=4)
                .map(|port| (port, format!("rack1-srv{port:02}")))
                .collect(),
            capacity: Capacity {
                eth_ports: 2,
                vfs_per_eth_port: 4,
                fc_ports: 2,
                npiv_per_fc_port: 4,
            },
            watchdog,
        },
        tls: None,
        log_level: "info".into(),
        data_plane: DataPlaneConfig::Sim,
    }
}

impl RunningSwitch {
    pub async fn start(journal: &Path, watchdog: WatchdogMode) -> RunningSwitch {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let metrics_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let metrics_addr = metrics_listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(run(
            config(journal, watchdog),
            listener,
            Some(metrics_listener),
            async {
                let _ = stopped.await;
            },
        ));
        let driver = SimDriver::connect_lazy(&addr.to_string()).unwrap();
        RunningSwitch {
            addr,
            metrics_addr,
            driver,
            stop: Some(stop),
            task,
        }
    }

    /// Stops the switch and returns what `run` returned.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        (&mut self.task).await.expect("the switch task panicked")
    }
}

/// Polls `condition` until it yields `Some`, failing the test after `WAIT_DEADLINE_MS`.
pub async fn wait_for<T, F, Fut>(what: &str, mut condition: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_millis(WAIT_DEADLINE_MS);
    loop {
        if let Some(value) = condition().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {WAIT_DEADLINE_MS} ms waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(POLL_INTERVAL_MS)).await;
    }
}

pub fn nic(name: &str, mac: &str) -> Function {
    Function::Nic {
        name: name.into(),
        mac: mac.parse().unwrap(),
        network: "prod".into(),
        vlan: Some(100),
    }
}

pub fn hba(name: &str, wwpn: &str, wwnn: &str) -> Function {
    Function::Hba {
        name: name.into(),
        wwpn: wwpn.parse().unwrap(),
        wwnn: wwnn.parse().unwrap(),
        fabric: "fabric-a".into(),
    }
}

/// A profile with one vNIC and one vHBA.
pub fn web() -> PortProgram {
    PortProgram {
        profile: "web".into(),
        revision: 3,
        functions: vec![
            nic("eth0", "02:00:00:00:00:01"),
            hba("fc0", "20:00:00:25:b5:00:00:01", "20:00:00:25:b5:00:01:01"),
        ],
    }
}
