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

/// One frame seen on an uplink: when, through which unit and segment, from which MAC.
#[derive(Debug, Clone, Copy)]
pub struct Frame {
    pub at_ns: u64,
    pub unit: usize,
    pub segment: usize,
    pub src: [u8; 6],
    /// 0x8035 for the switch's RARP announcement of the MAC.
    pub ethertype: u16,
}

/// The ethertype of the announcement a switch sends from each MAC it presents.
pub const ETHERTYPE_RARP: u16 = 0x8035;

/// A link event in a server: `eth0` appeared (with its ifindex) or vanished.
#[derive(Debug, Clone, Copy)]
pub struct LinkEvent {
    pub at_ns: u64,
    pub present: bool,
}

/// What the traffic threads recorded.
#[derive(Debug, Default)]
pub struct Recorded {
    /// Server index -> receive times of echoes, in order.
    pub echoes: BTreeMap<usize, Vec<u64>>,
    /// Server index -> datagrams sent.
    pub sent: BTreeMap<usize, u64>,
    pub frames: Vec<Frame>,
    /// Server index -> `eth0` appearances and disappearances.
    pub links: BTreeMap<usize, Vec<LinkEvent>>,
}

/// The LAN host, the servers' responders and watchers, and the captures, running.
pub struct Traffic {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<anyhow::Result<()>>>,
    pub recorded: Arc<Mutex<Recorded>>,
}

impl Traffic {
    pub fn start(cluster: &DataPlaneCluster) -> anyhow::Result<Traffic> {
        let stop = Arc::new(AtomicBool::new(false));
        let recorded = Arc::new(Mutex::new(Recorded::default()));
        let mut threads = Vec::new();
        let macs: Vec<[u8; 6]> = cluster.servers.iter().map(|s| s.mac).collect();
        for (k, server) in cluster.servers.iter().enumerate() {
            // The watcher: eth0 appears -> the server's address goes on it.
            let (stop_w, rec_w, addr) = (stop.clone(), recorded.clone(), server.addr);
            threads.push(in_netns(&server.ns, "dp-watcher", move || {
                watch_server(k, addr, &stop_w, &rec_w)
            })?);
            let stop_e = stop.clone();
            threads.push(in_netns(&server.ns, "dp-echo", move || echo(&stop_e))?);
        }
        let lan = cluster.ns("lan");
        for (u, unit_letter) in ["a", "b"].iter().enumerate() {
            for s in 0..SEGMENTS.len() {
                let iface = format!("u{unit_letter}{s}");
                let (stop_c, rec_c, macs_c) = (stop.clone(), recorded.clone(), macs.clone());
                threads.push(in_netns(&lan, "dp-capture", move || {
                    capture(&iface, u, s, &macs_c, &stop_c, &rec_c)
                })?);
            }
        }
        let targets: Vec<Ipv4Addr> = cluster.servers.iter().map(|s| s.addr).collect();
        let (stop_l, rec_l) = (stop.clone(), recorded.clone());
        threads.push(in_netns(&lan, "dp-lan-host", move || {
            lan_host(&targets, &stop_l, &rec_l)
        })?);
        Ok(Traffic {
            stop,
            threads,
            recorded,
        })
    }

    /// Server indexes that got an echo at or after `since_ns`.
    pub fn answered_since(&self, since_ns: u64) -> Vec<usize> {
        let recorded = self.recorded.lock().unwrap();
        recorded
            .echoes
            .iter()
            .filter(|(_, times)| times.last().is_some_and(|t| *t >= since_ns))
            .map(|(k, _)| *k)
            .collect()
    }

    /// Server indexes whose `eth0` vanished at or after `since_ns`, reappeared (through the
    /// other path) and then carried an echo: the servers that came back. An echo that was in
    /// flight when the old NIC went does not count.
    pub fn resumed_since(&self, since_ns: u64) -> Vec<usize> {
        let recorded = self.recorded.lock().unwrap();
        (0..recorded.links.len().max(recorded.echoes.len()))
            .filter(|k| resumed_at(&recorded, *k, since_ns).is_some())
            .collect()
    }

    pub fn stop(self) -> anyhow::Result<Recorded> {
        self.stop.store(true, Ordering::SeqCst);
        for thread in self.threads {
            thread
                .join()
                .map_err(|_| anyhow::anyhow!("a traffic thread panicked"))??;
        }
        Ok(Arc::try_unwrap(self.recorded)
            .map_err(|_| anyhow::anyhow!("traffic still shared"))?
            .into_inner()
            .unwrap())
    }
}

/// When server `k`'s traffic came back after losing its NIC at or after `since_ns`: the first
/// echo after the NIC reappeared.
pub fn resumed_at(recorded: &Recorded, k: usize, since_ns: u64) -> Option<u64> {
    let events = recorded.links.get(&k)?;
    let gone = events.iter().find(|e| !e.present && e.at_ns >= since_ns)?;
    let back = events.iter().find(|e| e.present && e.at_ns > gone.at_ns)?;
    recorded
        .echoes
        .get(&k)?
        .iter()
        .find(|t| **t > back.at_ns)
        .copied()
}

fn watch_server(
    k: usize,
    addr: Ipv4Addr,
    stop: &AtomicBool,
    recorded: &Mutex<Recorded>,
) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let (connection, handle, _) = rtnetlink::new_connection()?;
        tokio::spawn(connection);
        let mut current: Option<u32> = None;
        while !stop.load(Ordering::SeqCst) {
            let found = match handle
                .link()
                .get()
                .match_name("eth0".to_owned())
                .execute()
                .try_next()
                .await
            {
                Ok(link) => link.map(|l| l.header.index),
                Err(_) => None,
            };
            if found != current {
                let now = monotonic_now_ns();
                if current.is_some() {
                    push_link(recorded, k, now, false);
                }
                if let Some(index) = found {
                    // As udev/NetworkManager would: the server's address follows its NIC.
                    handle
                        .address()
                        .add(index, std::net::IpAddr::V4(addr), 24)
                        .execute()
                        .await
                        .with_context(|| format!("add {addr}/24 to eth0"))?;
                    push_link(recorded, k, now, true);
                }
                current = found;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        Ok(())
    })
}

fn push_link(recorded: &Mutex<Recorded>, k: usize, at_ns: u64, present: bool) {
    recorded
        .lock()
        .unwrap()
        .links
        .entry(k)
        .or_default()
        .push(LinkEvent { at_ns, present });
}

fn echo(stop: &AtomicBool) -> anyhow::Result<()> {
    let socket = UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, ECHO_PORT))?;
    socket.set_read_timeout(Some(Duration::from_millis(50)))?;
    let mut buf = [0u8; 64];
    while !stop.load(Ordering::SeqCst) {
        if let Ok((len, from)) = socket.recv_from(&mut buf) {
            // No route while the server has no NIC: the echo is lost, as it would be.
            let _ = socket.send_to(&buf[..len], from);
        }
    }
    Ok(())
}

fn lan_host(
    targets: &[Ipv4Addr],
    stop: &AtomicBool,
    recorded: &Mutex<Recorded>,
) -> anyhow::Result<()> {
    let sockets: Vec<UdpSocket> = targets
        .iter()
        .map(|_| {
            let socket = UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0))?;
            socket.set_nonblocking(true)?;
            Ok(socket)
        })
        .collect::<std::io::Result<_>>()?;
    let mut seq = 0u64;
    let mut next = monotonic_now_ns();
    let mut buf = [0u8; 64];
    while !stop.load(Ordering::SeqCst) {
        let now = monotonic_now_ns();
        if now >= next {
            for (k, (socket, target)) in sockets.iter().zip(targets).enumerate() {
                let _ = socket.send_to(&seq.to_be_bytes(), SocketAddrV4::new(*target, ECHO_PORT));
                *recorded.lock().unwrap().sent.entry(k).or_default() += 1;
            }
            seq += 1;
            next += SEND_INTERVAL_MS * 1_000_000;
        }
        for (k, socket) in sockets.iter().enumerate() {
            while let Ok((len, _)) = socket.recv_from(&mut buf) {
                if len == 8 {
                    let at = monotonic_now_ns();
                    recorded
                        .lock()
                        .unwrap()
                        .echoes
                        .entry(k)
                        .or_default()
                        .push(at);
                }
            }
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    Ok(())
}

fn capture(
    iface: &str,
    unit: usize,
    segment: usize,
    macs: &[[u8; 6]],
    stop: &AtomicBool,
    recorded: &Mutex<Recorded>,
) -> anyhow::Result<()> {
    const ETH_P_ALL: u16 = 0x0003;
    let name = std::ffi::CString::new(iface)?;
    // SAFETY: a NUL-terminated name; the call only reads it.
    let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
    if ifindex == 0 {
        bail!("no interface {iface} in the LAN namespace");
    }
    // SAFETY: socket(2) with constant arguments; checked, then owned.
    let fd = unsafe {
        libc::socket(
            libc::AF_PACKET,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            i32::from(ETH_P_ALL.to_be()),
        )
    };
    if fd < 0 {
        bail!("packet socket: {}", std::io::Error::last_os_error());
    }
    // SAFETY: fd is fresh and owned by nothing else.
    let socket = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: sockaddr_ll is plain data.
    let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    addr.sll_family = libc::AF_PACKET as u16;
    addr.sll_protocol = ETH_P_ALL.to_be();
    addr.sll_ifindex = ifindex as i32;
    // SAFETY: addr outlives the call, with its own size.
    let bound = unsafe {
        libc::bind(
            socket.as_raw_fd(),
            std::ptr::addr_of!(addr).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    if bound < 0 {
        bail!("bind to {iface}: {}", std::io::Error::last_os_error());
    }
    let timeout = libc::timeval {
        tv_sec: 0,
        tv_usec: 50_000,
    };
    // SAFETY: a timeval option of its own size.
    unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            std::ptr::addr_of!(timeout).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        );
    }
    let mut buf = [0u8; 2048];
    while !stop.load(Ordering::SeqCst) {
        // SAFETY: sockaddr_ll is plain data.
        let mut from: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        let mut from_len = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
        // SAFETY: buf and from outlive the call; lengths are theirs.
        let len = unsafe {
            libc::recvfrom(
                socket.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                0,
                std::ptr::addr_of_mut!(from).cast(),
                &mut from_len,
            )
        };
        if len < 14 {
            continue;
        }
        // Frames the LAN sends towards the unit are not the unit's.
        if from.sll_pkttype == libc::PACKET_OUTGOING {
            continue;
        }
        let mut src = [0u8; 6];
        src.copy_from_slice(&buf[6..12]);
        if macs.contains(&src) {
            recorded.lock().unwrap().frames.push(Frame {
                at_ns: monotonic_now_ns(),
                unit,
                segment,
                src,
                ethertype: u16::from_be_bytes([buf[12], buf[13]]),
            });
        }
    }
    Ok(())
}

/// Checks the uplink captures of one failover away from unit `from` (a fault at `fault_ns`;
/// the window `[window_start_ns, end_ns)`); returns the violations, each naming the profile:
/// a frame of a profile's MAC on another segment's uplink; no frame through the new unit
/// after the fault, or no announcement (RARP) of the MAC among them; a frame through the new
/// unit before the fault; and the data-plane form of
/// "never presented twice": a frame through the old unit at or after the first frame through
/// the new one.
pub fn check_frames(
    servers: &[ServerSpec],
    frames: &[Frame],
    from: usize,
    fault_ns: u64,
    window_start_ns: u64,
    end_ns: u64,
) -> Vec<String> {
    let mut violations = Vec::new();
    let to = 1 - from;
    for server in servers {
        let mine: Vec<&Frame> = frames
            .iter()
            .filter(|f| f.src == server.mac && f.at_ns >= window_start_ns && f.at_ns < end_ns)
            .collect();
        if let Some(f) = mine.iter().find(|f| f.segment != server.segment) {
            violations.push(format!(
                "{}: a frame from {} on segment {:?}, not its own {:?}",
                server.profile,
                server.mac_text(),
                SEGMENTS[f.segment],
                SEGMENTS[server.segment]
            ));
        }
        let Some(first_via_to) = mine
            .iter()
            .filter(|f| f.unit == to && f.at_ns >= fault_ns)
            .map(|f| f.at_ns)
            .min()
        else {
            violations.push(format!(
                "{}: no frame from {} through {} after the fault",
                server.profile,
                server.mac_text(),
                UNITS[to]
            ));
            continue;
        };
        if let Some(last_via_from) = mine
            .iter()
            .filter(|f| f.unit == from)
            .map(|f| f.at_ns)
            .max()
        {
            if last_via_from >= first_via_to {
                violations.push(format!(
                    "{}: frames from {} through both units at once: through {} until {} ns, \
                     through {} from {} ns",
                    server.profile,
                    server.mac_text(),
                    UNITS[from],
                    last_via_from,
                    UNITS[to],
                    first_via_to
                ));
            }
        }
        if !mine
            .iter()
            .any(|f| f.unit == to && f.at_ns >= fault_ns && f.ethertype == ETHERTYPE_RARP)
        {
            violations.push(format!(
                "{}: {} took over {} without announcing it (no RARP frame from it)",
                server.profile,
                UNITS[to],
                server.mac_text()
            ));
        }
        if mine.iter().any(|f| f.unit == to && f.at_ns < fault_ns) {
            violations.push(format!(
                "{}: frames from {} through {} before the fault on {}",
                server.profile,
                server.mac_text(),
                UNITS[to],
                UNITS[from]
            ));
        }
    }
    violations
}

/// Order statistics of a list of durations (ms).
pub fn min_p50_max(values: &[f64]) -> (f64, f64, f64) {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    if sorted.is_empty() {
        return (f64::NAN, f64::NAN, f64::NAN);
    }
    (
        sorted[0],
        sorted[sorted.len() / 2],
        sorted[sorted.len() - 1],
    )
}

/// The `q`-quantile (0..=1, nearest rank) of `values`; NaN if empty.
pub fn quantile(values: &[f64], q: f64) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// The largest gap (ms) between consecutive echoes of a server from the last echo before
/// `from_ns` (the fault) to `to_ns`, so an outage that begins at the fault is measured whole;
/// `None` if no echo came before the fault or none after it.
pub fn largest_gap_ms(times: &[u64], from_ns: u64, to_ns: u64) -> Option<f64> {
    let mut last = times.iter().rev().find(|t| **t <= from_ns).copied()?;
    let mut largest = 0u64;
    for &t in times.iter().filter(|t| **t > from_ns && **t <= to_ns) {
        largest = largest.max(t - last);
        last = t;
    }
    if last < from_ns {
        return None;
    }
    Some(largest as f64 / 1e6)
}

/// A socket-level helper for the report: the LAN host's neighbour entry of `addr`.
pub fn lan_neighbour(cluster: &DataPlaneCluster, addr: Ipv4Addr) -> anyhow::Result<String> {
    ipn(&cluster.ns("lan"), &["neigh", "show", &addr.to_string()])
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
