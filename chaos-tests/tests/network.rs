//! The test hosts and the network faults, against the real kernel: hosts reach each other and
//! nothing else, each kind of nftables rule cuts what it should, the delay proxy holds bytes
//! back inside a host, and namespaces are cleaned up — by `Drop`, and for runs that died.
//!
//! Needs root and `ip`/`nft` like the chaos run; without them every test here fails with the
//! reason.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::unix::process::ExitStatusExt;
use std::process::Command;
use std::time::{Duration, Instant};

use chaos_tests::netns::{self, HostRules, Network};
use chaos_tests::proxy::DelayProxy;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// Port of the echo servers the tests start inside hosts.
const ECHO_PORT: u16 = 9000;
/// How long a connection attempt may take before it counts as cut. Generous on loopback-speed
/// veths; a dropped SYN never completes at all.
const CONNECT_TIMEOUT_MS: u64 = 700;
const DELAY_MS: u64 = 150;

fn require_environment() {
    netns::preflight().unwrap_or_else(|e| panic!("cannot build test hosts here: {e:#}"));
}

/// An echo server inside host `ns`, listening on `addr`, until the returned sender is dropped.
fn echo_server(ns: &str, addr: SocketAddr) -> watch::Sender<bool> {
    let (stop, mut stopped) = watch::channel(false);
    let (bound_tx, bound_rx) = std::sync::mpsc::channel();
    netns::spawn_in_netns(ns, "echo", move || async move {
        let listener = TcpListener::bind(addr).await?;
        bound_tx.send(()).expect("the test waits for the bind");
        loop {
            tokio::select! {
                _ = stopped.changed() => return Ok(()),
                accepted = listener.accept() => {
                    let (mut s, _) = accepted?;
                    tokio::spawn(async move {
                        let mut buf = [0u8; 256];
                        while let Ok(n) = s.read(&mut buf).await {
                            if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                        }
                    });
                }
            }
        }
    })
    .expect("spawn the echo server");
    bound_rx
        .recv_timeout(Duration::from_secs(5))
        .expect("the echo server binds");
    stop
}

/// From host `ns`, does a TCP round trip to `to` work? Returns the round-trip time if so.
fn round_trip(ns: &str, to: SocketAddr) -> Option<Duration> {
    netns::spawn_in_netns(ns, "probe", move || async move {
        let attempt = async {
            let started = Instant::now();
            let mut s = TcpStream::connect(to).await.ok()?;
            s.write_all(b"ping").await.ok()?;
            let mut buf = [0u8; 4];
            s.read_exact(&mut buf).await.ok()?;
            (&buf == b"ping").then(|| started.elapsed())
        };
        Ok(tokio::time::timeout(
            Duration::from_millis(CONNECT_TIMEOUT_MS + 2 * DELAY_MS),
            attempt,
        )
        .await
        .ok()
        .flatten())
    })
    .expect("spawn the probe")
    .join()
    .expect("the probe thread")
    .expect("the probe runs")
}

fn listed_namespaces() -> Vec<String> {
    netns::run_cmd("ip", &["netns", "list"])
        .expect("ip netns list")
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

#[test]
fn hosts_reach_each_other_only_and_rules_cut_what_they_say() {
    require_environment();
    let network = Network::create(&["a", "b", "c"]).expect("create hosts");
    let (a, b, c) = (network.host("a"), network.host("b"), network.host("c"));
    let b_echo = SocketAddr::V4(SocketAddrV4::new(b.addr, ECHO_PORT));
    let _echo = echo_server(&b.ns, b_echo);

    // Test addresses only, and no way out of the test network.
    for host in &network.hosts {
        assert_eq!(host.addr.octets()[..2], [198, 18], "{host:?}");
        let routes = netns::run_cmd("ip", &["-n", &host.ns, "route", "show"]).expect("routes");
        assert!(
            !routes.contains("default"),
            "{} has a default route: {routes}",
            host.name
        );
    }
    assert!(round_trip(&a.ns, b_echo).is_some(), "a reaches b");
    assert!(round_trip(&c.ns, b_echo).is_some(), "c reaches b");

    // A drop by address in a's output cuts a -> b and nothing else.
    let one_way = HostRules {
        drop_to: [b.addr].into(),
        ..HostRules::default()
    };
    network.set_rules("a", &one_way).expect("set rules");
    assert!(round_trip(&a.ns, b_echo).is_none(), "a -> b is dropped");
    assert!(round_trip(&c.ns, b_echo).is_some(), "c -> b still flows");

    // A drop on b's input cuts whoever it names.
    network
        .set_rules("a", &HostRules::default())
        .expect("heal a");
    assert!(round_trip(&a.ns, b_echo).is_some(), "healed");
    let isolate_from_c = HostRules {
        drop_from: [c.addr].into(),
        ..HostRules::default()
    };
    network.set_rules("b", &isolate_from_c).expect("set rules");
    assert!(round_trip(&c.ns, b_echo).is_none(), "c is cut from b");
    assert!(round_trip(&a.ns, b_echo).is_some(), "a is not");

    // Loss of 99% of packets through numgen: the random-loss rule is live (a handshake and an
    // echo through it would need several 1% draws in a row).
    let total_loss = HostRules {
        loss_percent: 99,
        ..HostRules::default()
    };
    network.set_rules("b", &total_loss).expect("set rules");
    assert!(
        round_trip(&a.ns, b_echo).is_none(),
        "99% loss cuts the round trip"
    );
    let listed = network.list_rules("b").expect("list rules");
    assert!(listed.contains("numgen random mod 100"), "{listed}");
    network
        .set_rules("b", &HostRules::default())
        .expect("heal b");
    assert!(round_trip(&a.ns, b_echo).is_some(), "healed");

    let names = network.namespaces();
    drop(network);
    let left: Vec<String> = listed_namespaces()
        .into_iter()
        .filter(|ns| names.contains(ns))
        .collect();
    assert!(left.is_empty(), "namespaces survive the drop: {left:?}");
}

#[test]
fn delay_proxy_holds_traffic_back_inside_a_host() {
    require_environment();
    let network = Network::create(&["a", "b"]).expect("create hosts");
    let (a, b) = (network.host("a"), network.host("b"));
    let behind = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, ECHO_PORT));
    let _echo = echo_server(&b.ns, behind);
    let front = SocketAddr::V4(SocketAddrV4::new(b.addr, 7101));
    let proxy = DelayProxy::start(&b.ns, front, behind).expect("start the proxy");

    // The service behind the proxy is on b's loopback: only the proxy reaches it.
    assert!(round_trip(&a.ns, SocketAddr::V4(SocketAddrV4::new(b.addr, ECHO_PORT))).is_none());
    assert!(round_trip(&a.ns, front).is_some(), "through the proxy");

    proxy.set_delay_ms(DELAY_MS);
    let rtt = round_trip(&a.ns, front).expect("through the delayed proxy");
    // Held once each way: a lower bound the proxy guarantees, not a timing measurement.
    assert!(
        rtt >= Duration::from_millis(2 * DELAY_MS),
        "round trip {rtt:?} is shorter than the added delay"
    );

    // Network rules still apply to the proxied path.
    network
        .set_rules(
            "b",
            &HostRules {
                drop_from: [a.addr].into(),
                ..HostRules::default()
            },
        )
        .expect("set rules");
    assert!(
        round_trip(&a.ns, front).is_none(),
        "isolation cuts the peer path too"
    );
}

#[test]
fn sweep_removes_namespaces_and_processes_of_dead_runs_only() {
    require_environment();
    let live = Network::create(&["x"]).expect("a run of this process");

    // A namespace named for a harness pid that no longer exists, with a process inside it, as
    // a SIGKILLed run leaves behind.
    let mut done = Command::new("true").spawn().expect("spawn true");
    let dead_pid = done.id();
    done.wait().expect("reap true");
    let leftover = format!("{}{dead_pid}x0-unit-a", netns::NETNS_PREFIX);
    netns::run_cmd("ip", &["netns", "add", &leftover]).expect("add the leftover namespace");
    let mut sleeper = Command::new("ip")
        .args(["netns", "exec", &leftover, "sleep", "600"])
        .spawn()
        .expect("start a process in the leftover");
    // `ip netns exec` execs sleep, so this pid is in the namespace once it has started.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !netns::run_cmd("ip", &["netns", "pids", &leftover])
        .unwrap_or_default()
        .contains(&sleeper.id().to_string())
    {
        assert!(
            Instant::now() < deadline,
            "sleep never appeared in {leftover}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    let swept = netns::sweep_leftovers().expect("sweep");
    assert!(swept.contains(&leftover), "{swept:?}");
    let status = sleeper.wait().expect("reap sleep");
    assert_eq!(
        status.signal(),
        Some(9),
        "the leftover's process was killed"
    );
    let listed = listed_namespaces();
    assert!(!listed.contains(&leftover), "{listed:?}");
    for ns in live.namespaces() {
        assert!(
            listed.contains(&ns),
            "a live run's namespace {ns} was swept"
        );
    }
}
