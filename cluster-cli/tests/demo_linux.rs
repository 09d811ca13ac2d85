//! `vnetctl demo --dataplane linux` end to end: the servers' vNICs appear in their namespaces
//! with the profiles' MACs; after unit-a's vnetd and switch are killed (the command the demo
//! prints), every server has its vNICs again, same MACs, those unit-a presented now through
//! unit-b; Ctrl-C removes every namespace and link the demo made.
//!
//! Needs root and `ip`, like the other data-plane tests; without them it FAILS with the reason.
//! Uses the demo's fixed names (`vnetdemo-*`, `vdemo-*`) and ports from 27000: do not run a
//! demo by hand at the same time.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BASE_PORT: &str = "27000";
const SERVERS: [&str; 6] = [
    "rack1-srv01",
    "rack1-srv02",
    "rack1-srv03",
    "rack1-srv04",
    "rack1-srv05",
    "rack1-srv06",
];

fn ip(args: &[&str]) -> Result<String, String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("cannot run `ip` ({e}): install iproute2"))?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).trim().to_owned());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Each server's vNICs: name -> (ifindex, MAC).
fn vnics(server: &str) -> BTreeMap<String, (String, String)> {
    let shown =
        ip(&["-n", &format!("vnetdemo-{server}"), "-o", "link", "show"]).unwrap_or_default();
    shown
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let index = fields.next()?.trim_end_matches(':').to_owned();
            let name = fields
                .next()?
                .trim_end_matches(':')
                .split('@')
                .next()?
                .to_owned();
            let mac = line
                .split("link/ether ")
                .nth(1)?
                .split_whitespace()
                .next()?;
            Some((name, (index, mac.to_owned())))
        })
        .collect()
}

fn wait_until(what: &str, deadline: Duration, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn the_linux_demo_presents_real_vnics_that_survive_a_unit_kill_and_cleans_up() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test must run as root: `vnetctl demo --dataplane linux` creates namespaces (CI \
         runs as root; run `sudo -E cargo test -p cluster-cli --test demo_linux` by hand)"
    );
    ip(&["-V"]).unwrap_or_else(|e| panic!("{e}"));
    let mut demo = Command::new(env!("CARGO_BIN_EXE_vnetctl"))
        .args(["demo", "--dataplane", "linux", "--base-port", BASE_PORT])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start vnetctl demo");
    // Read what it prints until the data-plane lines, keeping the kill command.
    let mut lines = BufReader::new(demo.stdout.take().unwrap()).lines();
    let mut kill_pids: Vec<i32> = Vec::new();
    let mut printed = String::new();
    for line in lines.by_ref() {
        let line = line.expect("read the demo's output");
        printed.push_str(&line);
        printed.push('\n');
        if let Some(pids) = line.trim().strip_prefix("kill -9 ") {
            kill_pids = pids
                .split_whitespace()
                .map(|p| p.parse().unwrap())
                .collect();
        }
        if line.contains("ping -6") {
            break;
        }
    }
    assert!(
        printed.contains("Data plane (Linux):") && kill_pids.len() == 2,
        "the demo did not print its data-plane instructions:\n{printed}"
    );
    std::thread::spawn(move || for _ in lines {});

    // Every server has eth0 and eth1 with the MACs its profile was given.
    let before: BTreeMap<&str, _> = SERVERS.iter().map(|s| (*s, vnics(s))).collect();
    for (server, nics) in &before {
        for nic in ["eth0", "eth1"] {
            assert!(nics.contains_key(nic), "{server} has no {nic}: {nics:?}");
        }
    }

    // unit-a dies whole (its vnetd and switch, as the demo says to).
    for pid in &kill_pids {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(*pid),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
    }
    let moved = || {
        SERVERS.iter().all(|server| {
            let now = vnics(server);
            before[server]
                .iter()
                .all(|(name, (_, mac))| now.get(name).is_some_and(|(_, now_mac)| now_mac == mac))
        })
    };
    // Right after the kill unit-a's vNICs are gone; then unit-b presents them again.
    wait_until(
        "every vNIC back through unit-b with its MAC",
        Duration::from_secs(20),
        || {
            let replugged = SERVERS.iter().any(|server| {
                let now = vnics(server);
                before[server]
                    .iter()
                    .any(|(name, (index, _))| now.get(name).is_some_and(|(i, _)| i != index))
            });
            replugged && moved()
        },
    );

    // Ctrl-C: the demo stops and removes its rack.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(demo.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let status = demo.wait().unwrap();
    assert!(status.success(), "the demo exited with {status}");
    let namespaces = ip(&["netns", "list"]).unwrap();
    assert!(!namespaces.contains("vnetdemo-"), "{namespaces}");
    let links = ip(&["-o", "link", "show"]).unwrap();
    assert!(!links.contains("vdemo-"), "{links}");
}
