//! `vnet-switchd` configuration: flags, each also a `VNET_SWITCH_*` environment variable.
//! [`Args::resolve`] validates them into a [`Config`] in which every value is known good;
//! errors name the flag and the value at fault.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;
use vnet_model::limits::HOST_PORTS_MAX;
use vnet_model::name::validate_name;

use crate::switch::{
    Capacity, SwitchSpec, WatchdogMode, ADAPTER_PORTS_MAX, SLOTS_PER_ADAPTER_PORT_MAX,
};

/// vnet-switchd — a simulated vNet switch: host ports, Ethernet and FC adapter ports, a watchdog
/// that fences by itself, and a journal of everything it presents.
///
/// The switch serves the vnet.switch.v1 API to the unit's vnetd. It programs nothing without a
/// live lease (an armed watchdog with a future deadline), clears every host port by itself when
/// that deadline passes, and writes every change to the journal before answering. A restart
/// starts with every port clear, like hardware after a reset. Every flag can also be set by the
/// VNET_SWITCH_* environment variable shown.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "vnet-switchd",
    version,
    about,
    long_about,
    max_term_width = 100
)]
pub struct Args {
    /// Address for the switch API (gRPC, vnet.switch.v1). Keep it on loopback: the API has no
    /// authentication, and only the unit's own vnetd should program its switch.
    #[arg(
        long,
        env = "VNET_SWITCH_LISTEN",
        value_name = "ADDR",
        default_value = "127.0.0.1:7201"
    )]
    pub listen: SocketAddr,

    /// Address for plain-HTTP metrics: /metrics (Prometheus), /health and /readyz. Off unless
    /// set.
    #[arg(long, env = "VNET_SWITCH_METRICS_LISTEN", value_name = "ADDR")]
    pub metrics_listen: Option<SocketAddr>,

    /// Append-only journal file of every programming event, timestamped with CLOCK_MONOTONIC.
    /// Created if missing. A torn last line is cut off with a warning; any other damage stops
    /// the switch from starting.
    #[arg(long, env = "VNET_SWITCH_JOURNAL", value_name = "PATH")]
    pub journal: PathBuf,

    /// The rack server cabled to each host port, as `port=server,...`, e.g.
    /// `1=rack1-srv01,2=rack1-srv02` (ports 1..=30, server names [a-z0-9._-]). Ports not listed
    /// are not cabled and cannot be programmed.
    #[arg(long, env = "VNET_SWITCH_HOST_PORTS", value_name = "LIST")]
    pub host_ports: String,

    /// Ethernet adapter ports (0..=16).
    #[arg(
        long,
        env = "VNET_SWITCH_ETH_PORTS",
        value_name = "N",
        default_value_t = 2
    )]
    pub eth_ports: u8,

    /// Virtual functions (vNICs) each Ethernet port carries (0..=256).
    #[arg(
        long,
        env = "VNET_SWITCH_VFS_PER_ETH_PORT",
        value_name = "N",
        default_value_t = 32
    )]
    pub vfs_per_eth_port: u16,

    /// Fibre Channel adapter ports (0..=16).
    #[arg(
        long,
        env = "VNET_SWITCH_FC_PORTS",
        value_name = "N",
        default_value_t = 2
    )]
    pub fc_ports: u8,

    /// NPIV logins (vHBAs) each FC port carries (0..=256).
    #[arg(
        long,
        env = "VNET_SWITCH_NPIV_PER_FC_PORT",
        value_name = "N",
        default_value_t = 32
    )]
    pub npiv_per_fc_port: u16,

    /// Log filter, e.g. `info` or `fabric_agent=debug` (tracing EnvFilter syntax).
    #[arg(
        long,
        env = "VNET_SWITCH_LOG_LEVEL",
        value_name = "FILTER",
        default_value = "info"
    )]
    pub log_level: String,

    /// UNSAFE, TEST ONLY — BREAKS SAFETY: the watchdog never fences, so this switch keeps
    /// presenting after its lease expires and two units can present the same identities at
    /// once (invariant 2 is violated). Exists only so chaos tests can prove their checker
    /// catches a double presentation. Never use it on a real unit.
    #[arg(long, env = "VNET_SWITCH_UNSAFE_DISABLE_WATCHDOG")]
    pub unsafe_disable_watchdog: bool,
}

/// A validated configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub listen: SocketAddr,
    pub metrics_listen: Option<SocketAddr>,
    pub journal: PathBuf,
    pub spec: SwitchSpec,
    pub log_level: String,
}

/// A flag with a value that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid --{flag} {value:?}: {reason}")]
pub struct ConfigError {
    pub flag: &'static str,
    pub value: String,
    pub reason: String,
}

impl Args {
    pub fn resolve(self) -> Result<Config, ConfigError> {
        let cabling = parse_host_ports(&self.host_ports)?;
        for (flag, value, max) in [
            (
                "eth-ports",
                u16::from(self.eth_ports),
                u16::from(ADAPTER_PORTS_MAX),
            ),
            (
                "fc-ports",
                u16::from(self.fc_ports),
                u16::from(ADAPTER_PORTS_MAX),
            ),
            (
                "vfs-per-eth-port",
                self.vfs_per_eth_port,
                SLOTS_PER_ADAPTER_PORT_MAX,
            ),
            (
                "npiv-per-fc-port",
                self.npiv_per_fc_port,
                SLOTS_PER_ADAPTER_PORT_MAX,
            ),
        ] {
            if value > max {
                return Err(ConfigError {
                    flag,
                    value: value.to_string(),
                    reason: format!("the limit is {max}"),
                });
            }
        }
        Ok(Config {
            listen: self.listen,
            metrics_listen: self.metrics_listen,
            journal: self.journal,
            spec: SwitchSpec {
                cabling,
                capacity: Capacity {
                    eth_ports: self.eth_ports,
                    vfs_per_eth_port: self.vfs_per_eth_port,
                    fc_ports: self.fc_ports,
                    npiv_per_fc_port: self.npiv_per_fc_port,
                },
                watchdog: if self.unsafe_disable_watchdog {
                    WatchdogMode::UnsafeDisabled
                } else {
                    WatchdogMode::Enforced
                },
            },
            log_level: self.log_level,
        })
    }
}

/// Parses `port=server,...`. Each port and each server appears once: a server is cabled to one
/// host port of a unit.
pub fn parse_host_ports(list: &str) -> Result<BTreeMap<u8, String>, ConfigError> {
    let invalid = |value: &str, reason: String| ConfigError {
        flag: "host-ports",
        value: value.to_owned(),
        reason,
    };
    let mut cabling = BTreeMap::new();
    for entry in list
        .split(',')
        .map(str::trim)
        .filter(|entry| !entry.is_empty())
    {
        let Some((port_text, server)) = entry.split_once('=') else {
            return Err(invalid(entry, "expected port=server".to_owned()));
        };
        let port = port_text
            .trim()
            .parse::<u8>()
            .ok()
            .filter(|port| (1..=HOST_PORTS_MAX).contains(port))
            .ok_or_else(|| invalid(entry, format!("the port must be in 1..={HOST_PORTS_MAX}")))?;
        let server = server.trim();
        validate_name("server", server).map_err(|e| invalid(entry, e.to_string()))?;
        if let Some((other, _)) = cabling.iter().find(|(_, name)| *name == server) {
            return Err(invalid(
                entry,
                format!("server {server:?} is already cabled to port {other}"),
            ));
        }
        if cabling.insert(port, server.to_owned()).is_some() {
            return Err(invalid(entry, format!("port {port} is listed twice")));
        }
    }
    if cabling.is_empty() {
        return Err(invalid(
            list,
            "no host port is cabled; list at least one, like 1=rack1-srv01".to_owned(),
        ));
    }
    Ok(cabling)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cabling() {
        let cabling = parse_host_ports("1=rack1-srv01, 30=rack1-srv30,2=rack1-srv02").unwrap();
        let expected: BTreeMap<u8, String> = [
            (1, "rack1-srv01".to_owned()),
            (2, "rack1-srv02".to_owned()),
            (30, "rack1-srv30".to_owned()),
        ]
        .into();
        assert_eq!(cabling, expected);
    }

    #[test]
    fn refuses_bad_cabling_naming_the_entry() {
        let cases = [
            ("", "no host port is cabled"),
            ("1", "expected port=server"),
            ("0=a", "the port must be in 1..=30"),
            ("31=a", "the port must be in 1..=30"),
            ("x=a", "the port must be in 1..=30"),
            ("1=Srv", "uppercase"),
            ("1=a,2=a", "server \"a\" is already cabled to port 1"),
            ("1=a,1=b", "port 1 is listed twice"),
        ];
        for (list, reason) in cases {
            let error = parse_host_ports(list).unwrap_err();
            assert_eq!(error.flag, "host-ports");
            assert!(error.reason.contains(reason), "{list:?}: {error}");
        }
    }

    #[test]
    fn flags_and_limits() {
        let args = Args::try_parse_from([
            "vnet-switchd",
            "--journal",
            "/tmp/j",
            "--host-ports",
            "1=a",
            "--unsafe-disable-watchdog",
        ])
        .unwrap();
        let config = args.clone().resolve().unwrap();
        assert_eq!(config.listen, "127.0.0.1:7201".parse().unwrap());
        assert_eq!(
            config.spec.capacity,
            Capacity {
                eth_ports: 2,
                vfs_per_eth_port: 32,
                fc_ports: 2,
                npiv_per_fc_port: 32
            }
        );
        assert_eq!(config.spec.watchdog, WatchdogMode::UnsafeDisabled);

        let mut too_big = args;
        too_big.vfs_per_eth_port = 257;
        assert_eq!(
            too_big.resolve().unwrap_err().to_string(),
            "invalid --vfs-per-eth-port \"257\": the limit is 256"
        );
    }
}
