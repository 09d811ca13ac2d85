//! The traffic of a data-plane run: the servers' watchers and echo responders, the LAN host's
//! sender and receiver, and the captures on the uplinks.

use super::*;

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

pub(super) fn watch_server(
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

pub(super) fn push_link(recorded: &Mutex<Recorded>, k: usize, at_ns: u64, present: bool) {
    recorded
        .lock()
        .unwrap()
        .links
        .entry(k)
        .or_default()
        .push(LinkEvent { at_ns, present });
}

pub(super) fn echo(stop: &AtomicBool) -> anyhow::Result<()> {
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

pub(super) fn lan_host(
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

pub(super) fn capture(
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
