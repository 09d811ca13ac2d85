//! The cluster under test: a host per node (unit-a, unit-b, witness) plus a client host, a
//! `vnetd` on each node host, a `vnet-switchd` on each unit host (on the host's loopback,
//! where only its own vnetd reaches it), a delaying proxy in front of each node's peer port,
//! and the mapping from the schedule's faults to signals, nftables rules and proxy delays.
//!
//! A host holds a list of processes, not one: "kill the whole unit" kills every process of the
//! host (switch included), and a restart starts every process that is down, the switch before
//! vnetd. Switch journals are collected from the unit hosts' directories
//! ([`Cluster::collect_journals`]) with the time the harness killed a switch that is still
//! down, so its open presentations can be closed there.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::checks::presentation::{Cabling, SwitchJournal};
use crate::netns::{rules_by_host, HostRules, Network};
use crate::process::ManagedProcess;
use crate::proxy::DelayProxy;
use crate::schedule::{Action, Fault, NodeInfo};
use crate::workload::server_name;

/// Public API port on each node host's address.
pub const API_PORT: u16 = 7001;
/// Peer port each node advertises, on its host's address: the delay proxy listens there.
pub const PEER_PORT: u16 = 7101;
/// vnetd's own peer listener, on the host's loopback, behind the proxy.
pub const PEER_LOCAL_PORT: u16 = 7102;
/// vnetd's bound on a request's wait for the leader: below the client's timeout, so vnetd's
/// verdict (UNAVAILABLE: not applied, DEADLINE_EXCEEDED: unknown) usually arrives first.
pub const VNETD_REQUEST_TIMEOUT_MS: u64 = 2_000;
/// Snapshot often, so snapshots, log purging and snapshot installs on restarted nodes happen
/// many times in every run.
pub const VNETD_SNAPSHOT_EVERY_ENTRIES: u64 = 400;
/// The client host's name.
pub const CLIENT_HOST: &str = "client";
/// Switch journal files in a unit host's directory end with this.
pub const SWITCH_JOURNAL_SUFFIX: &str = ".journal.jsonl";
/// The journal file `vnet-switchd` writes in its unit host's directory.
pub const SWITCH_JOURNAL_FILE: &str = "switch.journal.jsonl";
/// The switch API, on each unit host's loopback (vnet-switchd's default).
pub const SWITCH_PORT: u16 = 7201;
/// The managed-process names.
pub const VNETD: &str = "vnetd";
pub const SWITCHD: &str = "vnet-switchd";

/// The programs the cluster runs, and the test-only unsafe switches.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    pub vnetd: PathBuf,
    pub switchd: PathBuf,
    pub keys: u32,
    /// TEST ONLY: `--unsafe-disable-fencing` on every vnetd and `--unsafe-disable-watchdog` on
    /// every switch, so a partitioned unit keeps presenting (the double-presentation checker
    /// must then fail).
    pub unsafe_disable_fencing: bool,
}

/// A node of the cluster.
#[derive(Debug, Clone, Copy)]
pub struct NodeSpec {
    pub id: u64,
    pub name: &'static str,
    pub is_unit: bool,
}

/// Two units and a witness: the smallest cluster that survives the loss of any one node.
pub const NODES: [NodeSpec; 3] = [
    NodeSpec {
        id: 1,
        name: "unit-a",
        is_unit: true,
    },
    NodeSpec {
        id: 2,
        name: "unit-b",
        is_unit: true,
    },
    NodeSpec {
        id: 3,
        name: "witness",
        is_unit: false,
    },
];

pub fn node_infos() -> Vec<NodeInfo> {
    NODES
        .iter()
        .map(|n| NodeInfo {
            name: n.name.to_string(),
            is_unit: n.is_unit,
        })
        .collect()
}

/// Which host port each server uses on each unit: profile `k`'s server on port k+1 of unit-a
/// and port k+11 of unit-b, so a wrong-port presentation is visible.
pub fn cabling(keys: u32) -> Cabling {
    NODES
        .iter()
        .filter(|n| n.is_unit)
        .enumerate()
        .map(|(u, n)| {
            let ports = (0..keys)
                .map(|k| (server_name(k), k + 1 + 10 * u as u32))
                .collect();
            (n.name.to_string(), ports)
        })
        .collect()
}

/// A node host: its processes and its peer proxy.
pub struct NodeHost {
    pub spec: NodeSpec,
    pub addr: Ipv4Addr,
    pub dir: PathBuf,
    /// In start order: a unit's `vnet-switchd` first (vnetd programs it), then `vnetd`.
    pub processes: Vec<ManagedProcess>,
    pub proxy: DelayProxy,
}

impl NodeHost {
    pub fn api_addr(&self) -> String {
        format!("{}:{API_PORT}", self.addr)
    }

    pub fn vnetd(&mut self) -> &mut ManagedProcess {
        self.processes
            .iter_mut()
            .find(|p| p.name == VNETD)
            .expect("every node host runs vnetd")
    }

    /// The unit's switch; `None` on the witness.
    pub fn switchd(&self) -> Option<&ManagedProcess> {
        self.processes.iter().find(|p| p.name == SWITCHD)
    }

    pub fn journal_path(&self) -> PathBuf {
        self.dir.join(SWITCH_JOURNAL_FILE)
    }
}

/// The running cluster. Fields drop in order: processes and proxies first, then the network.
pub struct Cluster {
    pub nodes: Vec<NodeHost>,
    pub network: Network,
    pub keys: u32,
    /// Network faults in force, to recompute every host's rules on each change.
    network_faults: Vec<Fault>,
    rules_in_force: BTreeMap<String, HostRules>,
}

impl Cluster {
    /// Builds the hosts and starts a proxy and a `vnetd` on each node host, and a
    /// `vnet-switchd` on each unit host before its vnetd. The data, journals and logs of each
    /// host go under `run_dir/<host>/`.
    pub fn start(run_dir: &Path, config: &ClusterConfig) -> anyhow::Result<Cluster> {
        let keys = config.keys;
        let mut names: Vec<&str> = NODES.iter().map(|n| n.name).collect();
        names.push(CLIENT_HOST);
        let network = Network::create(&names)?;
        let initial_cluster = NODES
            .iter()
            .map(|n| {
                format!(
                    "{}={}@{}:{PEER_PORT}",
                    n.id,
                    n.name,
                    network.host(n.name).addr
                )
            })
            .collect::<Vec<_>>()
            .join(",");
        let cabling = cabling(keys);
        let mut nodes = Vec::new();
        for spec in NODES {
            let host = network.host(spec.name).clone();
            let dir = run_dir.join(spec.name);
            std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
            let proxy = DelayProxy::start(
                &host.ns,
                SocketAddr::V4(SocketAddrV4::new(host.addr, PEER_PORT)),
                SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, PEER_LOCAL_PORT)),
            )?;
            let mut args: Vec<OsString> = vec![
                "--id".into(),
                spec.id.to_string().into(),
                "--name".into(),
                spec.name.into(),
                "--role".into(),
                if spec.is_unit { "unit" } else { "witness" }.into(),
                "--data-dir".into(),
                dir.join("vnetd-data").into(),
                "--api-listen".into(),
                format!("{}:{API_PORT}", host.addr).into(),
                "--peer-listen".into(),
                format!("127.0.0.1:{PEER_LOCAL_PORT}").into(),
                "--peer-advertise".into(),
                format!("{}:{PEER_PORT}", host.addr).into(),
                "--initial-cluster".into(),
                initial_cluster.clone().into(),
                "--request-timeout-ms".into(),
                VNETD_REQUEST_TIMEOUT_MS.to_string().into(),
                "--snapshot-every".into(),
                VNETD_SNAPSHOT_EVERY_ENTRIES.to_string().into(),
                "--log-level".into(),
                "info".into(),
                // Plaintext on the test network's non-loopback addresses: the hosts are network
                // namespaces on a private bridge, and TLS is tested on its own (node/tests/tls.rs).
                "--insecure".into(),
            ];
            let mut processes = Vec::new();
            if spec.is_unit {
                let list = cabling[spec.name]
                    .iter()
                    .map(|(server, port)| format!("{server}={port}"))
                    .collect::<Vec<_>>()
                    .join(",");
                args.push("--cabling".into());
                args.push(list.into());
                args.push("--switch".into());
                args.push(format!("127.0.0.1:{SWITCH_PORT}").into());
                let host_ports = cabling[spec.name]
                    .iter()
                    .map(|(server, port)| format!("{port}={server}"))
                    .collect::<Vec<_>>()
                    .join(",");
                let mut switch_args: Vec<OsString> = vec![
                    "--listen".into(),
                    format!("127.0.0.1:{SWITCH_PORT}").into(),
                    "--journal".into(),
                    dir.join(SWITCH_JOURNAL_FILE).into(),
                    "--host-ports".into(),
                    host_ports.into(),
                    "--log-level".into(),
                    "info".into(),
                ];
                if config.unsafe_disable_fencing {
                    switch_args.push("--unsafe-disable-watchdog".into());
                }
                processes.push(ManagedProcess::new(
                    SWITCHD,
                    &host.ns,
                    config.switchd.clone(),
                    switch_args,
                    dir.join("vnet-switchd.log"),
                ));
            }
            if config.unsafe_disable_fencing {
                args.push("--unsafe-disable-fencing".into());
            }
            processes.push(ManagedProcess::new(
                VNETD,
                &host.ns,
                config.vnetd.clone(),
                args,
                dir.join("vnetd.log"),
            ));
            nodes.push(NodeHost {
                spec,
                addr: host.addr,
                dir,
                processes,
                proxy,
            });
        }
        let mut cluster = Cluster {
            nodes,
            network,
            keys,
            network_faults: Vec::new(),
            rules_in_force: BTreeMap::new(),
        };
        for node in &mut cluster.nodes {
            for p in &mut node.processes {
                p.start()?;
            }
        }
        Ok(cluster)
    }

    pub fn client_ns(&self) -> String {
        self.network.host(CLIENT_HOST).ns.clone()
    }

    pub fn api_endpoints(&self) -> Vec<String> {
        self.nodes.iter().map(NodeHost::api_addr).collect()
    }

    pub fn node_names(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.spec.name.to_string()).collect()
    }

    /// Carries out one scheduled action.
    pub fn apply(&mut self, action: &Action) -> anyhow::Result<()> {
        match *action {
            Action::Inject(Fault::KillVnetd { node }) => self.nodes[node].vnetd().kill(),
            Action::Inject(Fault::KillUnit { node }) => {
                for p in &mut self.nodes[node].processes {
                    p.kill();
                }
            }
            Action::Heal(Fault::KillVnetd { node } | Fault::KillUnit { node }) => {
                for p in &mut self.nodes[node].processes {
                    if !p.is_running() {
                        p.start()?;
                    }
                }
            }
            Action::Inject(Fault::Pause { node }) => self.nodes[node].vnetd().pause()?,
            Action::Heal(Fault::Pause { node }) => {
                let vnetd = self.nodes[node].vnetd();
                // It may have crashed while paused; that is recorded as an unexpected exit.
                if vnetd.is_running() {
                    vnetd.resume()?;
                }
            }
            Action::Inject(Fault::Delay { node, ms }) => self.nodes[node].proxy.set_delay_ms(ms),
            Action::Heal(Fault::Delay { node, .. }) => self.nodes[node].proxy.set_delay_ms(0),
            Action::Inject(
                fault @ (Fault::Isolate { .. }
                | Fault::Split { .. }
                | Fault::OneWayLoss { .. }
                | Fault::RandomLoss { .. }),
            ) => {
                self.network_faults.push(fault);
                self.apply_rules()?;
            }
            Action::Heal(
                fault @ (Fault::Isolate { .. }
                | Fault::Split { .. }
                | Fault::OneWayLoss { .. }
                | Fault::RandomLoss { .. }),
            ) => {
                if let Some(i) = self.network_faults.iter().position(|f| *f == fault) {
                    self.network_faults.remove(i);
                }
                self.apply_rules()?;
            }
        }
        Ok(())
    }

    /// Recomputes every host's rules from the network faults in force and replaces those that
    /// changed.
    fn apply_rules(&mut self) -> anyhow::Result<()> {
        let name = |i: usize| NODES[i].name.to_string();
        let mut addrs: BTreeMap<String, Ipv4Addr> = BTreeMap::new();
        for host in &self.network.hosts {
            addrs.insert(host.name.clone(), host.addr);
        }
        let mut cuts = Vec::new();
        let mut one_way = Vec::new();
        let mut loss = BTreeMap::new();
        for fault in &self.network_faults {
            match *fault {
                Fault::Isolate { node } => {
                    for other in addrs.keys().filter(|h| **h != name(node)) {
                        cuts.push((name(node), other.clone()));
                    }
                }
                Fault::Split { minority } => {
                    for other in (0..NODES.len()).filter(|&o| o != minority) {
                        cuts.push((name(minority), name(other)));
                    }
                }
                Fault::OneWayLoss { from, to } => one_way.push((name(from), name(to))),
                Fault::RandomLoss { node, percent } => {
                    loss.insert(name(node), percent);
                }
                _ => unreachable!("only network faults are kept here"),
            }
        }
        let wanted = rules_by_host(&addrs, &cuts, &one_way, &loss);
        for (host, rules) in &wanted {
            let current = self.rules_in_force.get(host).cloned().unwrap_or_default();
            if &current != rules {
                self.network.set_rules(host, rules)?;
                self.rules_in_force.insert(host.clone(), rules.clone());
            }
        }
        Ok(())
    }

    /// Heals whatever is still wrong, whatever the schedule believes: clears every rule and
    /// delay, resumes paused processes and starts stopped ones. Returns what it had to do,
    /// which after a correct schedule is nothing.
    pub fn heal_everything(&mut self) -> anyhow::Result<Vec<String>> {
        let mut done = Vec::new();
        if !self.network_faults.is_empty() {
            done.push(format!(
                "cleared {} network faults",
                self.network_faults.len()
            ));
            self.network_faults.clear();
        }
        self.apply_rules()?;
        for node in &mut self.nodes {
            if node.proxy.delay_ms() != 0 {
                done.push(format!("removed the delay into {}", node.spec.name));
                node.proxy.set_delay_ms(0);
            }
            for p in &mut node.processes {
                p.note_exit();
                if p.is_paused() {
                    done.push(format!("resumed {} on {}", p.name, node.spec.name));
                    p.resume()?;
                }
                if !p.is_running() {
                    done.push(format!("started {} on {}", p.name, node.spec.name));
                    p.start()?;
                }
            }
        }
        Ok(done)
    }

    /// Exits nobody caused since the last call, across every process (crashes).
    pub fn poll_unexpected_exits(&mut self) {
        for node in &mut self.nodes {
            for p in &mut node.processes {
                p.note_exit();
            }
        }
    }

    pub fn unexpected_exits(&self) -> Vec<String> {
        self.nodes
            .iter()
            .flat_map(|n| {
                n.processes.iter().flat_map(move |p| {
                    p.unexpected_exits
                        .iter()
                        .map(move |e| format!("{}: {e}", n.spec.name))
                })
            })
            .collect()
    }

    /// The switch journals found on the unit hosts, each with every time the harness killed its
    /// switch (each instance's presentations end at the first kill after it started).
    pub fn collect_journals(&self) -> Vec<SwitchJournal> {
        let mut journals = Vec::new();
        for node in self.nodes.iter().filter(|n| n.spec.is_unit) {
            let Ok(entries) = std::fs::read_dir(&node.dir) else {
                continue;
            };
            let mut files: BTreeSet<PathBuf> = BTreeSet::new();
            for entry in entries.flatten() {
                let path = entry.path();
                if path.to_string_lossy().ends_with(SWITCH_JOURNAL_SUFFIX) {
                    files.insert(path);
                }
            }
            let kill_times_ns = node
                .switchd()
                .map(|p| p.kill_times_ns.clone())
                .unwrap_or_default();
            for path in files {
                journals.push(SwitchJournal {
                    switch: node.spec.name.to_string(),
                    path,
                    kill_times_ns: kill_times_ns.clone(),
                });
            }
        }
        journals
    }

    /// Stops every process (SIGKILL), the proxies and the network.
    pub fn teardown(&mut self) {
        for node in &mut self.nodes {
            for p in &mut node.processes {
                p.kill();
            }
        }
        self.network.teardown();
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.teardown();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cabling_puts_each_server_on_both_units_on_different_ports() {
        let c = cabling(3);
        assert_eq!(c["unit-a"]["srv-00"], 1);
        assert_eq!(c["unit-b"]["srv-00"], 11);
        assert_eq!(c["unit-b"]["srv-02"], 13);
        assert!(!c.contains_key("witness"));
    }
}
