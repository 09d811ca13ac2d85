//! `vnetctl demo --dataplane linux`: the demo's rack on real network namespaces, so each
//! unit's `vnet-switchd --backend linux` presents real vNICs and a user can watch `ping`
//! survive a failover.
//!
//! Built with `ip` (iproute2), root only:
//! - a namespace per server (`vnetdemo-rack1-srv01`...), where the vNICs appear; duplicate
//!   address detection is off there, so a server's IPv6 link-local address (derived from its
//!   MAC) works the moment its NIC appears through either unit;
//! - the LAN host's namespace `vnetdemo-lan`, with a bridge per segment (`s0` = `prod` VLAN
//!   100, `s1` = `storage` VLAN 200: one L2 segment per network+VLAN);
//! - per unit and segment a bridge in this namespace (`vdemo-a0`...), the segment the unit's
//!   switch is given, cabled to the LAN bridge by a veth (`vdemo-a0u` <-> `ua0`).
//!
//! The demo's processes stay on loopback as without the data plane. Everything is removed when
//! the demo stops; what a killed demo left is removed when the next one starts.

use std::process::{Command, Stdio};

use super::plan::SERVERS;

/// The segments of the sample profiles: (network, VLAN), as `--linux-segments` names them.
pub const SEGMENTS: [(&str, u16); 2] = [("prod", 100), ("storage", 200)];
pub const NS_PREFIX: &str = "vnetdemo-";
pub const LINK_PREFIX: &str = "vdemo-";
pub const LAN_NS: &str = "vnetdemo-lan";

fn ip(args: &[&str]) -> Result<String, String> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| {
            format!("cannot run `ip` ({e}): --dataplane linux needs iproute2 (apt-get install iproute2)")
        })?;
    if !out.status.success() {
        return Err(format!(
            "ip {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

pub fn server_ns(server: &str) -> String {
    format!("{NS_PREFIX}{server}")
}

fn unit_bridge(unit_index: usize, segment: usize) -> String {
    format!("{LINK_PREFIX}{}{segment}", ["a", "b"][unit_index])
}

/// The demo's rack; dropping it removes every namespace and link it made.
#[derive(Debug)]
pub struct Rack {
    built: bool,
}

impl Rack {
    /// Checks root, removes what an earlier demo left, and builds the rack.
    pub fn build() -> Result<Rack, String> {
        if !nix::unistd::geteuid().is_root() {
            return Err(
                "--dataplane linux must run as root: it creates network namespaces, bridges and \
                 veth pairs, and each unit's vnet-switchd creates the servers' vNICs (try `sudo \
                 -E vnetctl demo --dataplane linux`)"
                    .into(),
            );
        }
        let mut rack = Rack { built: true };
        rack.remove();
        rack.built = true;
        rack.create().inspect_err(|_| rack.remove())?;
        Ok(rack)
    }

    fn create(&self) -> Result<(), String> {
        ip(&["netns", "add", LAN_NS])?;
        ip(&["-n", LAN_NS, "link", "set", "lo", "up"])?;
        for server in SERVERS {
            let ns = server_ns(server);
            ip(&["netns", "add", &ns])?;
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
            // The NIC's link-local address is usable at once, as on a re-plugged NIC with a
            // known MAC; without this, each appearance waits ~1 s for duplicate detection.
            ip(&[
                "netns",
                "exec",
                &ns,
                "sh",
                "-c",
                "echo 0 > /proc/sys/net/ipv6/conf/default/accept_dad && \
                 echo 0 > /proc/sys/net/ipv6/conf/all/accept_dad",
            ])?;
        }
        for (s, _) in SEGMENTS.iter().enumerate() {
            let lan_bridge = format!("s{s}");
            ip(&["-n", LAN_NS, "link", "add", &lan_bridge, "type", "bridge"])?;
            ip(&["-n", LAN_NS, "link", "set", &lan_bridge, "up"])?;
            for unit in 0..2 {
                let bridge = unit_bridge(unit, s);
                let cable = format!("{bridge}u");
                let lan_end = format!("u{}{s}", ["a", "b"][unit]);
                ip(&["link", "add", &bridge, "type", "bridge"])?;
                ip(&["link", "set", &bridge, "up"])?;
                ip(&[
                    "link", "add", &cable, "type", "veth", "peer", "name", &lan_end, "netns",
                    LAN_NS,
                ])?;
                ip(&["link", "set", &cable, "master", &bridge, "up"])?;
                ip(&[
                    "-n",
                    LAN_NS,
                    "link",
                    "set",
                    &lan_end,
                    "master",
                    &lan_bridge,
                    "up",
                ])?;
            }
        }
        Ok(())
    }

    /// Removes every namespace and link of a demo rack (this one or a dead demo's).
    fn remove(&mut self) {
        if !self.built {
            return;
        }
        self.built = false;
        if let Ok(list) = ip(&["netns", "list"]) {
            for ns in list
                .lines()
                .filter_map(|l| l.split_whitespace().next())
                .filter(|ns| ns.starts_with(NS_PREFIX))
            {
                let _ = ip(&["netns", "del", ns]);
            }
        }
        for unit in 0..2 {
            for s in 0..SEGMENTS.len() {
                let bridge = unit_bridge(unit, s);
                let _ = ip(&["link", "del", &format!("{bridge}u")]);
                let _ = ip(&["link", "del", &bridge]);
            }
        }
    }

    /// The extra `vnet-switchd` flags of unit `unit_index` (0 = unit-a, 1 = unit-b).
    pub fn switch_args(&self, unit_index: usize) -> Vec<String> {
        let segments = SEGMENTS
            .iter()
            .enumerate()
            .map(|(s, (network, vlan))| format!("{network}:{vlan}={}", unit_bridge(unit_index, s)))
            .collect::<Vec<_>>()
            .join(",");
        let servers = SERVERS
            .iter()
            .map(|server| format!("{server}=/run/netns/{}", server_ns(server)))
            .collect::<Vec<_>>()
            .join(",");
        vec![
            "--backend".into(),
            "linux".into(),
            "--linux-segments".into(),
            segments,
            "--linux-servers".into(),
            servers,
        ]
    }

    /// What to try: see a server's vNIC, and ping it from the LAN host across a failover.
    pub fn instructions(&self) -> Vec<String> {
        let first = SERVERS[0];
        let ns = server_ns(first);
        let mut lines = vec![
            format!(
                "servers are namespaces {NS_PREFIX}rack1-srv01..06; the LAN host is {LAN_NS} \
                 (bridge s0 = prod VLAN 100, s1 = storage VLAN 200); vHBAs stay simulated"
            ),
            format!("sudo ip -n {ns} -br link show          # eth0/eth1: the vNICs, with the profile's MACs"),
        ];
        match link_local_of(&ns, "eth0") {
            Some(address) => lines.push(format!(
                "sudo ip netns exec {LAN_NS} ping -6 {address}%s0   # {first}'s eth0; keep it running across the kill below"
            )),
            None => lines.push(format!(
                "sudo ip netns exec {LAN_NS} ping -6 ff02::1%s0   # every server on prod VLAN 100 answers"
            )),
        }
        lines
    }
}

impl Drop for Rack {
    fn drop(&mut self) {
        self.remove();
    }
}

/// The IPv6 link-local address a NIC with `mac` gets (EUI-64).
pub fn link_local(mac: [u8; 6]) -> String {
    format!(
        "fe80::{:02x}{:02x}:{:02x}ff:fe{:02x}:{:02x}{:02x}",
        mac[0] ^ 0x02,
        mac[1],
        mac[2],
        mac[3],
        mac[4],
        mac[5]
    )
}

fn link_local_of(ns: &str, nic: &str) -> Option<String> {
    let shown = ip(&["-n", ns, "-o", "link", "show", nic]).ok()?;
    let mac_text = shown
        .split("link/ether ")
        .nth(1)?
        .split_whitespace()
        .next()?;
    let mut mac = [0u8; 6];
    for (octet, text) in mac.iter_mut().zip(mac_text.split(':')) {
        *octet = u8::from_str_radix(text, 16).ok()?;
    }
    Some(link_local(mac))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_local_is_eui64_of_the_mac() {
        assert_eq!(
            link_local([0x02, 0x00, 0x5e, 0x10, 0x00, 0x01]),
            "fe80::0000:5eff:fe10:0001"
        );
    }

    #[test]
    fn each_unit_gets_its_own_bridges_and_every_server() {
        let rack = Rack { built: false };
        let args = rack.switch_args(1);
        assert_eq!(args[3], "prod:100=vdemo-b0,storage:200=vdemo-b1");
        assert!(args[5].starts_with("rack1-srv01=/run/netns/vnetdemo-rack1-srv01,"));
        assert_eq!(args[5].matches('=').count(), SERVERS.len());
    }
}
