//! Failover measured in packets: the cluster with `vnet-switchd --backend linux` on real
//! network namespaces, a LAN host sending to every presented server, captures on the units'
//! uplinks, and the per-server outage beside the journals' failover time.
//!
//! The topology (all namespaces named `vd<pid>x<n>-*`, addresses from 198.19.0.0/16, so it
//! never meets the chaos harness's `vc*` namespaces and 198.18.0.0/24):
//!
//! - control: `unit-a`, `unit-b`, `witness` on a bridge namespace (`-br`), 198.19.0.1..3, for
//!   Raft and the API;
//! - LAN (`-lan`): one bridge per segment, `s0` (network `prod`, untagged) and `s1` (`prod`
//!   VLAN 10), which is also the LAN host (198.19.10.1 and 198.19.11.1); each unit has one
//!   uplink per segment into it (`ua0`, `ua1`, `ub0`, `ub1`), whose unit ends sit in the unit's
//!   segment bridges `lan0`, `lan1`, which its switch is given with `--linux-segments`;
//! - servers (`-srv-NN`): empty namespaces, cabled to both units (`--linux-servers`). A
//!   watcher in each plays udev/NetworkManager: when `eth0` appears it gets the server's
//!   address; an echo responder answers the LAN host's UDP.
//!
//! The LAN host sends a sequence-numbered UDP datagram to each server every
//! [`SEND_INTERVAL_MS`]; the gap in echoes around a fault is the server's data-plane outage.
//! AF_PACKET captures on the LAN ends of the uplinks record every frame from a profile's MAC
//! and which unit it came through.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{bail, Context};
use futures::TryStreamExt;

use crate::history::monotonic_now_ns;
use crate::netns::{run_cmd, NETNS_RUN_DIR};
use crate::process::ManagedProcess;

mod checks;
mod traffic;

pub use checks::*;
pub use traffic::*;

/// Namespace names of every data-plane run begin with this (the chaos harness uses `vc`).
pub const DP_PREFIX: &str = "vd";
pub const API_PORT: u16 = 7001;
pub const PEER_PORT: u16 = 7101;
pub const SWITCH_PORT: u16 = 7201;
pub const ECHO_PORT: u16 = 9000;
/// Each server gets a datagram this often.
pub const SEND_INTERVAL_MS: u64 = 10;
/// The units, in order; unit `u`'s uplinks are `u{a,b}{segment}` on the LAN.
pub const UNITS: [&str; 2] = ["unit-a", "unit-b"];
pub const WITNESS: &str = "witness";
/// The segments: (network, VLAN), in `--linux-segments` order.
pub const SEGMENTS: [(&str, Option<u16>); 2] = [("prod", None), ("prod", Some(10))];

static SEQ: AtomicU32 = AtomicU32::new(0);

/// A server and its profile.
#[derive(Debug, Clone)]
pub struct ServerSpec {
    pub name: String,
    pub profile: String,
    pub ns: String,
    pub segment: usize,
    pub addr: Ipv4Addr,
    pub mac: [u8; 6],
}

impl ServerSpec {
    pub fn mac_text(&self) -> String {
        mac_text(&self.mac)
    }
}

pub fn mac_text(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// The host port of server `k` on unit `u` (different on each unit, as in the chaos harness).
pub fn host_port(u: usize, k: usize) -> usize {
    k + 1 + 10 * u
}

/// Checks root and `ip`; never skipped.
pub fn preflight() -> anyhow::Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!(
            "the data-plane test must run as root: it creates network namespaces, bridges and \
             veth pairs, and vnet-switchd --backend linux creates macvlans (CI runs as root; \
             run `sudo -E cargo test -p chaos-tests --test data_plane_linux` by hand)"
        );
    }
    run_cmd("ip", &["-V"]).context(
        "the data-plane test needs `ip` from iproute2 to build its topology (`apt-get install \
         -y iproute2`; .ci/run does this)",
    )?;
    Ok(())
}

/// Removes `vd<pid>x*` namespaces whose pid is no longer a live process of this crate.
pub fn sweep_leftovers() -> anyhow::Result<Vec<String>> {
    let mut swept = Vec::new();
    for ns in run_cmd("ip", &["netns", "list"])?
        .lines()
        .filter_map(|l| l.split_whitespace().next())
    {
        let Some(rest) = ns.strip_prefix(DP_PREFIX) else {
            continue;
        };
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        if digits.is_empty() || !rest[digits.len()..].starts_with('x') {
            continue;
        }
        let alive = std::fs::read_to_string(format!("/proc/{digits}/comm"))
            .map(|comm| {
                // Live test processes that use this prefix: this crate's and fabric-agent's.
                let comm = comm.trim();
                ["data_plane", "chaos", "linux_backend"]
                    .iter()
                    .any(|name| comm.starts_with(name))
            })
            .unwrap_or(false);
        if digits != std::process::id().to_string() && !alive {
            crate::netns::destroy_netns(ns);
            swept.push(ns.to_owned());
        }
    }
    Ok(swept)
}

/// The namespaces and the processes of one data-plane cluster.
pub struct DataPlaneCluster {
    pub prefix: String,
    pub dir: PathBuf,
    pub servers: Vec<ServerSpec>,
    /// unit name -> [vnet-switchd, vnetd]; witness -> [vnetd].
    pub processes: BTreeMap<String, Vec<ManagedProcess>>,
    pub control_addrs: BTreeMap<String, Ipv4Addr>,
    namespaces: Vec<String>,
}

impl Drop for DataPlaneCluster {
    fn drop(&mut self) {
        for processes in self.processes.values_mut() {
            for p in processes.iter_mut() {
                p.kill();
            }
        }
        for ns in &self.namespaces {
            crate::netns::destroy_netns(ns);
        }
    }
}

fn ipn(ns: &str, args: &[&str]) -> anyhow::Result<String> {
    let mut all = vec!["-n", ns];
    all.extend_from_slice(args);
    run_cmd("ip", &all)
}

impl DataPlaneCluster {
    pub fn ns(&self, host: &str) -> String {
        format!("{}-{host}", self.prefix)
    }

    /// Builds every namespace and link, and starts the switches and vnetds.
    pub fn start(
        dir: &Path,
        servers: usize,
        vnetd: &Path,
        switchd: &Path,
    ) -> anyhow::Result<DataPlaneCluster> {
        let prefix = format!(
            "{DP_PREFIX}{}x{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::SeqCst)
        );
        let mut cluster = DataPlaneCluster {
            prefix: prefix.clone(),
            dir: dir.to_owned(),
            servers: Vec::new(),
            processes: BTreeMap::new(),
            control_addrs: BTreeMap::new(),
            namespaces: Vec::new(),
        };
        let add_ns = |cluster: &mut DataPlaneCluster, host: &str| -> anyhow::Result<String> {
            let ns = cluster.ns(host);
            crate::netns::destroy_netns(&ns);
            run_cmd("ip", &["netns", "add", &ns])?;
            cluster.namespaces.push(ns.clone());
            ipn(&ns, &["link", "set", "lo", "up"])?;
            Ok(ns)
        };
        // Control network.
        let br = add_ns(&mut cluster, "br")?;
        ipn(&br, &["link", "add", "br0", "type", "bridge"])?;
        ipn(&br, &["link", "set", "br0", "up"])?;
        for (i, host) in [UNITS[0], UNITS[1], WITNESS].iter().enumerate() {
            let ns = add_ns(&mut cluster, host)?;
            let addr = Ipv4Addr::new(198, 19, 0, i as u8 + 1);
            let port = format!("p{i}");
            ipn(
                &ns,
                &[
                    "link", "add", "eth0", "type", "veth", "peer", "name", &port, "netns", &br,
                ],
            )?;
            ipn(&br, &["link", "set", &port, "master", "br0", "up"])?;
            ipn(&ns, &["addr", "add", &format!("{addr}/24"), "dev", "eth0"])?;
            ipn(&ns, &["link", "set", "eth0", "up"])?;
            cluster.control_addrs.insert(host.to_string(), addr);
        }
        // The LAN and each unit's uplinks and segment bridges.
        let lan = add_ns(&mut cluster, "lan")?;
        for (s, _) in SEGMENTS.iter().enumerate() {
            let bridge = format!("s{s}");
            ipn(&lan, &["link", "add", &bridge, "type", "bridge"])?;
            ipn(
                &lan,
                &[
                    "addr",
                    "add",
                    &format!("198.19.{}.1/24", 10 + s),
                    "dev",
                    &bridge,
                ],
            )?;
            ipn(&lan, &["link", "set", &bridge, "up"])?;
            for (u, unit) in UNITS.iter().enumerate() {
                let unit_ns = cluster.ns(unit);
                let lan_end = format!("u{}{s}", ["a", "b"][u]);
                let unit_end = format!("up{s}");
                let unit_bridge = format!("lan{s}");
                ipn(
                    &lan,
                    &[
                        "link", "add", &lan_end, "type", "veth", "peer", "name", &unit_end,
                        "netns", &unit_ns,
                    ],
                )?;
                ipn(&lan, &["link", "set", &lan_end, "master", &bridge, "up"])?;
                ipn(&unit_ns, &["link", "add", &unit_bridge, "type", "bridge"])?;
                ipn(&unit_ns, &["link", "set", &unit_bridge, "up"])?;
                ipn(
                    &unit_ns,
                    &["link", "set", &unit_end, "master", &unit_bridge, "up"],
                )?;
            }
        }
        // Servers.
        for k in 0..servers {
            let name = format!("srv-{k:02}");
            let ns = add_ns(&mut cluster, &name)?;
            let segment = k % SEGMENTS.len();
            cluster.servers.push(ServerSpec {
                profile: format!("dp-{k:02}"),
                ns,
                segment,
                addr: Ipv4Addr::new(198, 19, 10 + segment as u8, 10 + k as u8),
                mac: [0x02, 0x19, 0, 0, 0, k as u8 + 1],
                name,
            });
        }
        cluster.start_processes(vnetd, switchd)?;
        Ok(cluster)
    }

    fn start_processes(&mut self, vnetd: &Path, switchd: &Path) -> anyhow::Result<()> {
        let initial_cluster = [UNITS[0], UNITS[1], WITNESS]
            .iter()
            .enumerate()
            .map(|(i, host)| format!("{}={host}@{}:{PEER_PORT}", i + 1, self.control_addrs[*host]))
            .collect::<Vec<_>>()
            .join(",");
        let segments = SEGMENTS
            .iter()
            .enumerate()
            .map(|(s, (network, vlan))| match vlan {
                Some(vlan) => format!("{network}:{vlan}=lan{s}"),
                None => format!("{network}=lan{s}"),
            })
            .collect::<Vec<_>>()
            .join(",");
        let server_namespaces = self
            .servers
            .iter()
            .map(|s| format!("{}={NETNS_RUN_DIR}/{}", s.name, s.ns))
            .collect::<Vec<_>>()
            .join(",");
        for (i, host) in [UNITS[0], UNITS[1], WITNESS].iter().enumerate() {
            let dir = self.dir.join(host);
            std::fs::create_dir_all(&dir)?;
            let ns = self.ns(host);
            let addr = self.control_addrs[*host];
            let is_unit = i < UNITS.len();
            let mut args: Vec<OsString> = [
                "--id".to_owned(),
                (i + 1).to_string(),
                "--name".to_owned(),
                host.to_string(),
                "--role".to_owned(),
                if is_unit { "unit" } else { "witness" }.to_owned(),
                "--api-listen".to_owned(),
                format!("{addr}:{API_PORT}"),
                "--peer-listen".to_owned(),
                format!("{addr}:{PEER_PORT}"),
                "--peer-advertise".to_owned(),
                format!("{addr}:{PEER_PORT}"),
                "--initial-cluster".to_owned(),
                initial_cluster.clone(),
                "--log-level".to_owned(),
                "info".to_owned(),
                // Plaintext on the private control network of namespaces (198.19.0.0/16); TLS
                // is tested on its own (node/tests/tls.rs).
                "--insecure".to_owned(),
            ]
            .into_iter()
            .map(OsString::from)
            .collect();
            args.push("--data-dir".into());
            args.push(dir.join("vnetd-data").into());
            let mut processes = Vec::new();
            if is_unit {
                let cabling = self
                    .servers
                    .iter()
                    .enumerate()
                    .map(|(k, s)| format!("{}={}", s.name, host_port(i, k)))
                    .collect::<Vec<_>>()
                    .join(",");
                let host_ports = self
                    .servers
                    .iter()
                    .enumerate()
                    .map(|(k, s)| format!("{}={}", host_port(i, k), s.name))
                    .collect::<Vec<_>>()
                    .join(",");
                args.extend(
                    [
                        "--cabling".to_owned(),
                        cabling,
                        "--switch".to_owned(),
                        format!("127.0.0.1:{SWITCH_PORT}"),
                    ]
                    .map(OsString::from),
                );
                let mut switch_args: Vec<OsString> = [
                    "--listen".to_owned(),
                    format!("127.0.0.1:{SWITCH_PORT}"),
                    "--host-ports".to_owned(),
                    host_ports,
                    "--backend".to_owned(),
                    "linux".to_owned(),
                    "--linux-segments".to_owned(),
                    segments.clone(),
                    "--linux-servers".to_owned(),
                    server_namespaces.clone(),
                ]
                .map(OsString::from)
                .to_vec();
                switch_args.push("--journal".into());
                switch_args.push(dir.join("switch.journal.jsonl").into());
                processes.push(ManagedProcess::new(
                    "vnet-switchd",
                    &ns,
                    switchd.to_owned(),
                    switch_args,
                    dir.join("vnet-switchd.log"),
                ));
            }
            processes.push(ManagedProcess::new(
                "vnetd",
                &ns,
                vnetd.to_owned(),
                args,
                dir.join("vnetd.log"),
            ));
            for p in &mut processes {
                p.start()?;
            }
            self.processes.insert(host.to_string(), processes);
        }
        Ok(())
    }

    pub fn journal_path(&self, unit: &str) -> PathBuf {
        self.dir.join(unit).join("switch.journal.jsonl")
    }

    pub fn api_endpoints(&self) -> Vec<String> {
        self.control_addrs
            .values()
            .map(|addr| format!("{addr}:{API_PORT}"))
            .collect()
    }

    /// Kills every process of `unit` (its switch and its vnetd); returns when, just before.
    pub fn kill_unit(&mut self, unit: &str) -> u64 {
        let at = monotonic_now_ns();
        for p in self.processes.get_mut(unit).into_iter().flatten() {
            p.kill();
        }
        at
    }

    /// Kills `unit`'s vnetd only (its switch stays up and fences at the lease's end).
    pub fn kill_vnetd(&mut self, unit: &str) -> u64 {
        let at = monotonic_now_ns();
        for p in self.processes.get_mut(unit).into_iter().flatten() {
            if p.name == "vnetd" {
                p.kill();
            }
        }
        at
    }

    /// Cuts (or restores) `host`'s control link: a partition from the quorum that leaves its
    /// uplinks to the LAN as they are.
    pub fn set_control_link(&self, host: &str, up: bool) -> anyhow::Result<u64> {
        let at = monotonic_now_ns();
        ipn(
            &self.ns(host),
            &["link", "set", "eth0", if up { "up" } else { "down" }],
        )?;
        Ok(at)
    }

    /// Starts every process of `unit` that is down, the switch first.
    pub fn restart_unit(&mut self, unit: &str) -> anyhow::Result<()> {
        for p in self.processes.get_mut(unit).into_iter().flatten() {
            if !p.is_running() {
                p.start()?;
            }
        }
        Ok(())
    }

    pub fn log_tails(&self) -> String {
        let mut out = String::new();
        for (host, processes) in &self.processes {
            for p in processes {
                out.push_str(&format!("--- {host} {} ---\n", p.name));
                for line in p.log_tail(15) {
                    out.push_str(&line);
                    out.push('\n');
                }
            }
        }
        out
    }
}

/// Runs `work` on a new thread inside namespace `ns`.
pub fn in_netns<T: Send + 'static>(
    ns: &str,
    name: &str,
    work: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
) -> anyhow::Result<JoinHandle<anyhow::Result<T>>> {
    let path = format!("{NETNS_RUN_DIR}/{ns}");
    let file = std::fs::File::open(&path).with_context(|| format!("open {path}"))?;
    std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(move || {
            nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
                .with_context(|| format!("enter {path}"))?;
            drop(file);
            work()
        })
        .context("spawn a thread")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(k: u8, segment: usize) -> ServerSpec {
        ServerSpec {
            name: format!("srv-{k:02}"),
            profile: format!("dp-{k:02}"),
            ns: String::new(),
            segment,
            addr: Ipv4Addr::new(198, 19, 10, 10 + k),
            mac: [2, 0x19, 0, 0, 0, k + 1],
        }
    }

    fn frame(at_ms: u64, unit: usize, segment: usize, k: u8) -> Frame {
        Frame {
            at_ns: at_ms * 1_000_000,
            unit,
            segment,
            src: [2, 0x19, 0, 0, 0, k + 1],
            ethertype: 0x0800,
        }
    }

    #[test]
    fn the_frame_checks_pass_a_handover_and_catch_each_planted_violation() {
        let servers = [server(0, 0), server(1, 1)];
        let announce = |at_ms, segment, k| Frame {
            ethertype: ETHERTYPE_RARP,
            ..frame(at_ms, 1, segment, k)
        };
        let clean = vec![
            frame(100, 0, 0, 0),
            frame(990, 0, 0, 0),
            announce(1_990, 0, 0),
            frame(2_000, 1, 0, 0),
            frame(100, 0, 1, 1),
            announce(2_090, 1, 1),
            frame(2_100, 1, 1, 1),
        ];
        let check =
            |frames: &[Frame]| check_frames(&servers, frames, 0, 1_000_000_000, 0, 9_000_000_000);
        assert_eq!(check(&clean), Vec::<String>::new());
        let cases: [(Frame, &str); 3] = [
            // The old unit still sends after the new one started: both at once.
            (frame(2_050, 0, 0, 0), "through both units at once"),
            // A frame of dp-00's MAC on the other segment.
            (frame(2_500, 1, 1, 0), "not its own"),
            // The new unit sent before the fault.
            (frame(500, 1, 1, 1), "before the fault"),
        ];
        for (planted, expected) in cases {
            let mut frames = clean.clone();
            frames.push(planted);
            let violations = check(&frames);
            assert!(
                violations.len() == 1 && violations[0].contains(expected),
                "{expected}: {violations:?}"
            );
        }
        let silent: Vec<Frame> = clean.iter().copied().filter(|f| f.src[5] != 2).collect();
        let violations = check(&silent);
        assert!(violations[0].contains("dp-01: no frame"), "{violations:?}");
        let unannounced: Vec<Frame> = clean
            .iter()
            .copied()
            .filter(|f| f.ethertype != ETHERTYPE_RARP || f.src[5] != 1)
            .collect();
        let violations = check(&unannounced);
        assert!(
            violations.len() == 1 && violations[0].contains("dp-00: unit-b took over"),
            "{violations:?}"
        );
    }

    #[test]
    fn the_gap_counts_from_the_fault() {
        let ms = 1_000_000;
        let times = [0, 10 * ms, 20 * ms, 900 * ms, 910 * ms];
        assert_eq!(largest_gap_ms(&times, 25 * ms, 2_000 * ms), Some(880.0));
        assert_eq!(largest_gap_ms(&times, 25 * ms, 500 * ms), None);
        assert_eq!(min_p50_max(&[3.0, 1.0, 2.0]), (1.0, 2.0, 3.0));
        let hundred: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(quantile(&hundred, 0.99), 99.0);
        assert_eq!(quantile(&[5.0], 0.99), 5.0);
    }
}
