//! The Linux data plane of `vnet-switchd` (`--backend linux`): what "program" and "clear" do to
//! the kernel when the switch presents real vNICs instead of only recording them.
//!
//! The shape (ARCHITECTURE.md, "The Linux data plane"):
//!
//! - **Segments.** Each network+VLAN a vNIC can name is its own L2 segment: a bridge in the
//!   switch's network namespace (the unit's), given by `--linux-segments`, joined by the
//!   operator to the same segment on the LAN side (an uplink per segment). Kernels without
//!   802.1Q devices or VLAN-filtering bridges cannot tag, so a VLAN is a separate bridge here.
//! - **A private namespace.** At start the backend creates a network namespace that no name and
//!   no other process refers to: only this process's sockets and one file descriptor hold it.
//!   In it, one veth per segment (`seg<k>`) whose peer is enslaved to the segment's bridge in
//!   the unit namespace. That veth is the segment's "adapter port".
//! - **A vNIC** is a macvlan (bridge mode) on its segment's adapter port, created directly in
//!   the server's namespace (the server cabled to the host port, `--linux-servers`) with the
//!   vNIC's name, the profile's MAC and the link up, in one RTM_NEWLINK: the server sees a NIC
//!   hot-plugged with that MAC, as an SR-IOV VF would appear. Presenting then announces each
//!   MAC with a broadcast RARP frame from it on the adapter port (as hypervisors do after a
//!   migration), so the LAN's bridges relearn the path at once.
//! - **Clearing** deletes the port's macvlans in the server's namespace.
//!
//! Why a switch that dies leaves nothing presented: the private namespace lives exactly as
//! long as this process (nothing else holds a reference to it). When the process ends, for any
//! reason, SIGKILL included, the kernel dismantles the namespace: each `seg<k>` veth is deleted
//! together with its peer, and deleting a macvlan's lower device deletes the macvlan, in
//! whatever namespace it sits. So every vNIC this switch presented vanishes with it. A failure
//! to clear that leaves the kernel state unknown is made into exactly that: the process
//! aborts (see `server.rs`).
//!
//! vHBAs have no kernel counterpart here: they stay simulated fabric logins (journal
//! `FabricLogin` records only), on this backend as on the simulated one.
//!
//! Netlink goes through `rtnetlink`, on one worker thread with a single-threaded runtime: the
//! thread's namespace decides where its sockets live, and the thread moves between namespaces
//! only while it opens them, at start.

use std::collections::BTreeMap;
use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::path::PathBuf;
use std::sync::mpsc;

use futures::TryStreamExt;
use rtnetlink::packet_route::link::{InfoData, InfoVeth, LinkMessage, MacVlanMode};
use rtnetlink::{Handle, LinkMacVlan, LinkMessageBuilder, LinkUnspec, LinkVeth};
use vnet_model::Mac;

use crate::journal::Event;
use crate::program::{Function, PortProgram};

/// The longest interface name Linux takes (IFNAMSIZ - 1).
pub const IFNAME_MAX: usize = 15;

/// A network and VLAN: one L2 segment.
pub type Segment = (String, Option<u16>);

/// Shows a segment as `--linux-segments` writes it: `prod` or `prod:10`.
pub fn segment_label(segment: &Segment) -> String {
    match segment.1 {
        Some(vlan) => format!("{}:{vlan}", segment.0),
        None => segment.0.clone(),
    }
}

/// What the Linux backend manages, validated by `config`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinuxSpec {
    /// Segment -> the bridge in the switch's namespace that carries it to the LAN.
    pub segments: BTreeMap<Segment, String>,
    /// Host port -> (server name, the server's network namespace file).
    pub servers: BTreeMap<u8, (String, PathBuf)>,
}

impl LinuxSpec {
    /// Why `program` cannot be presented on this data plane, naming the field; checked before
    /// the model changes, so a refusal changes nothing.
    pub fn check(&self, program: &PortProgram) -> Result<(), (String, String, String)> {
        for (i, function) in program.functions.iter().enumerate() {
            let Function::Nic {
                name,
                network,
                vlan,
                ..
            } = function
            else {
                continue;
            };
            if name == "." || name == ".." {
                return Err((
                    format!("functions[{i}].vnic.name"),
                    name.clone(),
                    "Linux refuses it as an interface name".to_owned(),
                ));
            }
            if name.len() > IFNAME_MAX {
                return Err((
                    format!("functions[{i}].vnic.name"),
                    name.clone(),
                    format!(
                        "the Linux data plane names the server's interface after the vNIC, and \
                         Linux interface names are at most {IFNAME_MAX} bytes"
                    ),
                ));
            }
            let segment = (network.clone(), *vlan);
            if !self.segments.contains_key(&segment) {
                return Err((
                    format!("functions[{i}].vnic.network"),
                    segment_label(&segment),
                    format!(
                        "this switch carries no such segment (--linux-segments has {})",
                        self.segments
                            .keys()
                            .map(segment_label)
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// A data-plane change that did not happen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DataPlaneError {
    /// Presenting on `port` failed; whatever was created for it was removed again, so the
    /// kernel presents nothing on `port`.
    #[error("host port {port}: {message}")]
    PresentFailed { port: u8, message: String },
    /// Removing failed: the kernel may still present something. The caller must stop the
    /// process (which removes everything, see the module documentation).
    #[error("cannot remove what the data plane presents: {0}")]
    WithdrawFailed(String),
}

/// One vNIC as presented in a server's namespace.
#[derive(Debug, Clone)]
struct PresentedNic {
    server: String,
    name: String,
    index: u32,
}

enum Request {
    Apply(Vec<Event>, mpsc::Sender<Result<(), DataPlaneError>>),
}

/// The Linux data plane: a handle on its worker thread. Calls block until the kernel answered.
pub struct LinuxDataPlane {
    spec: LinuxSpec,
    requests: std::sync::Mutex<mpsc::Sender<Request>>,
}

impl std::fmt::Debug for LinuxDataPlane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinuxDataPlane")
            .field("spec", &self.spec)
            .finish()
    }
}

impl LinuxDataPlane {
    /// Opens the server namespaces, creates the private namespace and one adapter port per
    /// segment on its bridge. Fails, naming the flag and value, if any of it is missing.
    pub fn start(spec: LinuxSpec) -> anyhow::Result<LinuxDataPlane> {
        let (requests, incoming) = mpsc::channel::<Request>();
        let (ready_tx, ready_rx) = mpsc::channel::<anyhow::Result<()>>();
        let worker_spec = spec.clone();
        std::thread::Builder::new()
            .name("linux-data-plane".to_owned())
            .spawn(move || worker(worker_spec, incoming, ready_tx))
            .map_err(|e| anyhow::anyhow!("cannot start the Linux data-plane thread: {e}"))?;
        match ready_rx.recv() {
            Ok(Ok(())) => Ok(LinuxDataPlane {
                spec,
                requests: std::sync::Mutex::new(requests),
            }),
            Ok(Err(e)) => Err(e),
            Err(_) => anyhow::bail!("the Linux data-plane thread ended while starting"),
        }
    }

    pub fn spec(&self) -> &LinuxSpec {
        &self.spec
    }

    /// Carries out the model's events, in order: `Programmed` presents, `Cleared` and
    /// `Fenced` remove, `MacAnnounced` sends the announcement. The rest has no kernel part.
    pub fn apply(&self, events: &[Event]) -> Result<(), DataPlaneError> {
        if !events.iter().any(has_kernel_part) {
            return Ok(());
        }
        let (reply_tx, reply_rx) = mpsc::channel();
        let sent = self
            .requests
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .send(Request::Apply(events.to_vec(), reply_tx));
        if sent.is_err() {
            return Err(DataPlaneError::WithdrawFailed(
                "the Linux data-plane thread is gone".to_owned(),
            ));
        }
        reply_rx.recv().unwrap_or_else(|_| {
            Err(DataPlaneError::WithdrawFailed(
                "the Linux data-plane thread ended mid-change".to_owned(),
            ))
        })
    }
}

fn has_kernel_part(event: &Event) -> bool {
    matches!(
        event,
        Event::Programmed { .. }
            | Event::Cleared { .. }
            | Event::Fenced { .. }
            | Event::MacAnnounced { .. }
    )
}

/// The worker's state, inside the private namespace.
struct Plane {
    /// In the private namespace.
    private: Handle,
    /// Segment -> the ifindex of its adapter port (`seg<k>`) in the private namespace.
    adapters: BTreeMap<Segment, u32>,
    /// Server name -> (its namespace file, a netlink handle inside it).
    servers: BTreeMap<String, (File, Handle)>,
    /// Host port -> the server cabled to it.
    cabling: BTreeMap<u8, String>,
    presented: BTreeMap<u8, Vec<PresentedNic>>,
    /// Host port -> MAC -> adapter port ifindex, for announcements.
    macs: BTreeMap<u8, BTreeMap<String, u32>>,
    packet: OwnedFd,
}

fn worker(
    spec: LinuxSpec,
    incoming: mpsc::Receiver<Request>,
    ready: mpsc::Sender<anyhow::Result<()>>,
) {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            let _ = ready.send(Err(anyhow::anyhow!(
                "cannot build the netlink runtime: {e}"
            )));
            return;
        }
    };
    let plane = match runtime.block_on(setup(&spec)) {
        Ok(plane) => plane,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    let _ = ready.send(Ok(()));
    let mut plane = plane;
    while let Ok(Request::Apply(events, reply)) = incoming.recv() {
        let result = runtime.block_on(plane.apply(&events));
        let _ = reply.send(result);
    }
}

fn spawn_connection(what: &str) -> anyhow::Result<Handle> {
    let (connection, handle, _) = rtnetlink::new_connection()
        .map_err(|e| anyhow::anyhow!("cannot open a netlink socket in {what}: {e}"))?;
    tokio::spawn(connection);
    Ok(handle)
}

fn open_ns(path: &std::path::Path, flag_entry: &str) -> anyhow::Result<File> {
    File::open(path).map_err(|e| {
        anyhow::anyhow!(
            "invalid --linux-servers entry {flag_entry:?}: cannot open network namespace {}: {e}",
            path.display()
        )
    })
}

async fn setup(spec: &LinuxSpec) -> anyhow::Result<Plane> {
    use nix::sched::{setns, unshare, CloneFlags};
    // The unit's namespace, where this thread starts and the segment bridges are.
    let unit_ns = File::open("/proc/thread-self/ns/net")
        .map_err(|e| anyhow::anyhow!("cannot open this thread's network namespace: {e}"))?;
    let unit = spawn_connection("the switch's network namespace")?;
    let mut bridges = BTreeMap::new();
    for (segment, bridge) in &spec.segments {
        let index = link_index(&unit, bridge).await?.ok_or_else(|| {
            anyhow::anyhow!(
                "invalid --linux-segments entry \"{}={bridge}\": no interface {bridge:?} in the \
                 switch's network namespace",
                segment_label(segment)
            )
        })?;
        bridges.insert(segment.clone(), index);
    }
    let mut servers = BTreeMap::new();
    let mut cabling = BTreeMap::new();
    for (port, (server, path)) in &spec.servers {
        cabling.insert(*port, server.clone());
        if servers.contains_key(server) {
            continue;
        }
        let file = open_ns(path, &format!("{server}={}", path.display()))?;
        setns(file.as_fd(), CloneFlags::CLONE_NEWNET).map_err(|e| {
            anyhow::anyhow!(
                "invalid --linux-servers entry \"{server}={}\": cannot enter it: {e}",
                path.display()
            )
        })?;
        let handle = spawn_connection(&format!("server {server}'s namespace"));
        setns(unit_ns.as_fd(), CloneFlags::CLONE_NEWNET)
            .map_err(|e| anyhow::anyhow!("cannot return to the switch's namespace: {e}"))?;
        servers.insert(server.clone(), (file, handle?));
    }
    // The private namespace: from here on this thread stays in it. Nothing names it, so it
    // ends with this process.
    unshare(CloneFlags::CLONE_NEWNET)
        .map_err(|e| anyhow::anyhow!("cannot create the data plane's network namespace: {e}"))?;
    let private = spawn_connection("the data plane's own namespace")?;
    let pid = std::process::id();
    let mut adapters = BTreeMap::new();
    for (k, (segment, bridge_index)) in bridges.iter().enumerate() {
        let local = format!("seg{k}");
        // Unique on the unit while this process lives; a dead instance's peer went with its
        // namespace.
        let peer = format!("vs{pid}s{k}");
        let peer_message = LinkMessageBuilder::<LinkUnspec>::default()
            .name(peer.clone())
            .setns_by_fd(unit_ns.as_raw_fd())
            .build();
        let veth = LinkVeth::new(&local, &peer)
            .set_info_data(InfoData::Veth(InfoVeth::Peer(peer_message)))
            .up()
            .build();
        private.link().add(veth).execute().await.map_err(|e| {
            anyhow::anyhow!(
                "cannot create the adapter port of segment {} (veth {local} <-> {peer}): {e}",
                segment_label(segment)
            )
        })?;
        let peer_index = link_index(&unit, &peer)
            .await?
            .ok_or_else(|| anyhow::anyhow!("the veth peer {peer} did not appear"))?;
        unit.link()
            .set(
                LinkUnspec::new_with_index(peer_index)
                    .controller(*bridge_index)
                    .up()
                    .build(),
            )
            .execute()
            .await
            .map_err(|e| {
                anyhow::anyhow!(
                    "cannot attach {peer} to bridge {} of segment {}: {e}",
                    spec.segments[segment],
                    segment_label(segment)
                )
            })?;
        let local_index = link_index(&private, &local)
            .await?
            .ok_or_else(|| anyhow::anyhow!("the adapter port {local} did not appear"))?;
        adapters.insert(segment.clone(), local_index);
    }
    let packet = packet_socket()?;
    tracing::info!(
        segments = %spec.segments.iter().map(|(s, b)| format!("{}={b}", segment_label(s))).collect::<Vec<_>>().join(","),
        servers = spec.servers.len(),
        "Linux data plane ready: vNICs are macvlans in the servers' namespaces; vHBAs stay \
         simulated fabric logins"
    );
    Ok(Plane {
        private,
        adapters,
        servers,
        cabling,
        presented: BTreeMap::new(),
        macs: BTreeMap::new(),
        packet,
    })
}

/// The ifindex of interface `name` in `handle`'s namespace, if there is one.
async fn link_index(handle: &Handle, name: &str) -> anyhow::Result<Option<u32>> {
    let mut links = handle.link().get().match_name(name.to_owned()).execute();
    match links.try_next().await {
        Ok(Some(link)) => Ok(Some(link.header.index)),
        Ok(None) => Ok(None),
        Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::ENODEV => Ok(None),
        Err(e) => Err(anyhow::anyhow!("cannot look up interface {name}: {e}")),
    }
}

fn errno_of(error: &rtnetlink::Error) -> Option<i32> {
    match error {
        rtnetlink::Error::NetlinkError(e) => Some(-e.raw_code()),
        _ => None,
    }
}

impl Plane {
    async fn apply(&mut self, events: &[Event]) -> Result<(), DataPlaneError> {
        for event in events {
            match event {
                Event::Programmed {
                    port, functions, ..
                } => self.present(*port, functions).await?,
                Event::Cleared { port, .. } => self.withdraw(*port).await?,
                Event::Fenced { ports, .. } => {
                    for port in ports {
                        self.withdraw(*port).await?;
                    }
                }
                Event::MacAnnounced { port, mac } => self.announce(*port, mac),
                Event::Started { .. } | Event::FabricLogin { .. } => {}
            }
        }
        Ok(())
    }

    async fn present(&mut self, port: u8, functions: &[Function]) -> Result<(), DataPlaneError> {
        let failed = |message: String| DataPlaneError::PresentFailed { port, message };
        let server = self
            .cabling
            .get(&port)
            .cloned()
            .ok_or_else(|| failed("no server namespace for this host port".to_owned()))?;
        let mut created = Vec::new();
        let mut macs = BTreeMap::new();
        let mut outcome = Ok(());
        for function in functions {
            let Function::Nic {
                name,
                mac,
                network,
                vlan,
            } = function
            else {
                continue;
            };
            let segment = (network.clone(), *vlan);
            let Some(&adapter) = self.adapters.get(&segment) else {
                outcome = Err(failed(format!(
                    "vNIC {name}: no segment {}",
                    segment_label(&segment)
                )));
                break;
            };
            match self.create_nic(&server, adapter, name, *mac).await {
                Ok(index) => {
                    created.push(PresentedNic {
                        server: server.clone(),
                        name: name.clone(),
                        index,
                    });
                    macs.insert(mac.to_string(), adapter);
                }
                Err(message) => {
                    outcome = Err(failed(format!(
                        "cannot present vNIC {name} ({mac}) in server {server}: {message}"
                    )));
                    break;
                }
            }
        }
        if outcome.is_err() {
            for nic in created {
                self.delete_nic(&nic).await?;
            }
            return outcome;
        }
        self.presented.insert(port, created);
        self.macs.insert(port, macs);
        Ok(())
    }

    async fn create_nic(
        &self,
        server: &str,
        adapter: u32,
        name: &str,
        mac: Mac,
    ) -> Result<u32, String> {
        let (file, handle) = &self.servers[server];
        let message: LinkMessage = LinkMacVlan::new(name, adapter, MacVlanMode::Bridge)
            .address(mac_octets(mac).to_vec())
            .setns_by_fd(file.as_raw_fd())
            .up()
            .build();
        self.private
            .link()
            .add(message)
            .execute()
            .await
            .map_err(|e| match errno_of(&e) {
                Some(libc::EEXIST) => format!(
                    "an interface named {name:?} already exists there (still presented through \
                     another path?)"
                ),
                _ => e.to_string(),
            })?;
        match link_index(handle, name).await {
            Ok(Some(index)) => Ok(index),
            Ok(None) => Err(format!("{name} did not appear in the server's namespace")),
            Err(e) => Err(e.to_string()),
        }
    }

    async fn delete_nic(&self, nic: &PresentedNic) -> Result<(), DataPlaneError> {
        let (_, handle) = &self.servers[&nic.server];
        match handle.link().del(nic.index).execute().await {
            Ok(()) => Ok(()),
            // Already gone (the server removed it, or its namespace went away).
            Err(e) if errno_of(&e) == Some(libc::ENODEV) => Ok(()),
            Err(e) => Err(DataPlaneError::WithdrawFailed(format!(
                "delete vNIC {} (ifindex {}) in server {}: {e}",
                nic.name, nic.index, nic.server
            ))),
        }
    }

    async fn withdraw(&mut self, port: u8) -> Result<(), DataPlaneError> {
        self.macs.remove(&port);
        let Some(nics) = self.presented.remove(&port) else {
            return Ok(());
        };
        for nic in &nics {
            self.delete_nic(nic).await?;
        }
        Ok(())
    }

    /// Sends a broadcast RARP frame from `mac` on its adapter port. Best effort: the LAN
    /// learns the path from the server's own traffic too, so a lost announcement only delays.
    fn announce(&self, port: u8, mac: &str) {
        let Some(&adapter) = self.macs.get(&port).and_then(|macs| macs.get(mac)) else {
            return;
        };
        let Ok(parsed) = mac.parse::<Mac>() else {
            return;
        };
        let frame = rarp_announcement(mac_octets(parsed));
        if let Err(e) = send_frame(self.packet.as_raw_fd(), adapter, &frame) {
            tracing::warn!(port, mac, error = %e, "cannot send the MAC announcement");
        }
    }
}

/// The six octets of `mac`, first on the wire first.
pub fn mac_octets(mac: Mac) -> [u8; 6] {
    let bytes = mac.as_u64().to_be_bytes();
    [bytes[2], bytes[3], bytes[4], bytes[5], bytes[6], bytes[7]]
}

/// The announcement hypervisors send after moving a NIC: a broadcast RARP "request reverse"
/// from the MAC, padded to the Ethernet minimum.
pub fn rarp_announcement(mac: [u8; 6]) -> [u8; 60] {
    let mut frame = [0u8; 60];
    frame[0..6].copy_from_slice(&[0xff; 6]);
    frame[6..12].copy_from_slice(&mac);
    frame[12..14].copy_from_slice(&0x8035u16.to_be_bytes());
    // htype Ethernet, ptype IPv4, hlen 6, plen 4, op 3 (request reverse).
    frame[14..22].copy_from_slice(&[0, 1, 0x08, 0x00, 6, 4, 0, 3]);
    frame[22..28].copy_from_slice(&mac);
    frame[32..38].copy_from_slice(&mac);
    frame
}

fn packet_socket() -> anyhow::Result<OwnedFd> {
    // SAFETY: socket(2) with constant arguments; the result is checked before use and owned.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        anyhow::bail!(
            "cannot open a packet socket for MAC announcements: {}",
            std::io::Error::last_os_error()
        );
    }
    // SAFETY: fd is a fresh descriptor owned by nothing else.
    Ok(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) })
}

fn send_frame(fd: RawFd, ifindex: u32, frame: &[u8]) -> std::io::Result<()> {
    // SAFETY: sockaddr_ll is plain data; zeroed is a valid value.
    let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    addr.sll_family = libc::AF_PACKET as u16;
    addr.sll_ifindex = i32::try_from(ifindex).unwrap_or(i32::MAX);
    addr.sll_halen = 6;
    addr.sll_addr[..6].copy_from_slice(&frame[0..6]);
    // SAFETY: frame and addr outlive the call; the lengths are theirs.
    let sent = unsafe {
        libc::sendto(
            fd,
            frame.as_ptr().cast(),
            frame.len(),
            0,
            std::ptr::addr_of!(addr).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    if sent < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> LinuxSpec {
        LinuxSpec {
            segments: [
                (("prod".to_owned(), None), "lan0".to_owned()),
                (("prod".to_owned(), Some(10)), "lan1".to_owned()),
            ]
            .into(),
            servers: [(1, ("srv".to_owned(), PathBuf::from("/run/netns/srv")))].into(),
        }
    }

    fn nic(name: &str, network: &str, vlan: Option<u16>) -> Function {
        Function::Nic {
            name: name.into(),
            mac: "02:00:00:00:00:01".parse().unwrap(),
            network: network.into(),
            vlan,
        }
    }

    #[test]
    fn check_names_the_segment_or_the_name_at_fault() {
        let program = |functions| PortProgram {
            profile: "web".into(),
            revision: 1,
            functions,
        };
        assert_eq!(
            spec().check(&program(vec![nic("eth0", "prod", Some(10))])),
            Ok(())
        );
        let (field, value, reason) = spec()
            .check(&program(vec![
                nic("eth0", "prod", None),
                nic("eth1", "prod", Some(20)),
            ]))
            .unwrap_err();
        assert_eq!(
            (field.as_str(), value.as_str()),
            ("functions[1].vnic.network", "prod:20")
        );
        assert!(reason.contains("prod, prod:10"), "{reason}");
        let (field, _, _) = spec()
            .check(&program(vec![nic("a-very-long-name0", "prod", None)]))
            .unwrap_err();
        assert_eq!(field, "functions[0].vnic.name");
        let (field, value, _) = spec()
            .check(&program(vec![nic("..", "prod", None)]))
            .unwrap_err();
        assert_eq!(
            (field.as_str(), value.as_str()),
            ("functions[0].vnic.name", "..")
        );
    }

    #[test]
    fn the_announcement_is_a_broadcast_rarp_from_the_mac() {
        let mac = [2, 0, 0, 0, 0, 7];
        let frame = rarp_announcement(mac);
        assert_eq!(&frame[0..6], &[0xff; 6]);
        assert_eq!(&frame[6..12], &mac);
        assert_eq!(&frame[12..14], &[0x80, 0x35]);
        assert_eq!(&frame[20..22], &[0, 3]);
        assert_eq!(&frame[22..28], &mac);
    }
}
