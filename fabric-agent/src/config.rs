//! `vnet-switchd` configuration: flags, each also a `VNET_SWITCH_*` environment variable.
//! [`Args::resolve`] validates them into a [`Config`] in which every value is known good;
//! errors name the flag and the value at fault.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;
use vnet_model::limits::{HOST_PORTS_MAX, VLAN_ID_MAX, VLAN_ID_MIN};
use vnet_model::name::validate_name;

use crate::linux::{LinuxSpec, Segment};
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
    /// Address for the switch API (gRPC, vnet.switch.v1). Without TLS (--cacert, --cert, --key,
    /// --unit-node-id) only a loopback address is served, unless --insecure: only the unit's own
    /// vnetd may program its switch.
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

    #[command(flatten)]
    pub tls: TlsArgs,
}

/// The switch API's mutual TLS: the only client accepted is the unit's own vnetd, by its node
/// certificate (SAN URI `vnet://node/<unit-node-id>`, from the cluster CA).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct TlsArgs {
    /// The cluster CA certificate (PEM) that signed the unit's vnetd certificate.
    #[arg(long, env = "VNET_SWITCH_CACERT", value_name = "FILE")]
    pub cacert: Option<PathBuf>,
    /// This switch's certificate (PEM), naming the host vnetd reaches it by; a unit may use its
    /// vnetd's node certificate.
    #[arg(long, env = "VNET_SWITCH_CERT", value_name = "FILE")]
    pub cert: Option<PathBuf>,
    /// This switch's private key (PEM).
    #[arg(long, env = "VNET_SWITCH_KEY", value_name = "FILE")]
    pub key: Option<PathBuf>,
    /// The node id of this unit's vnetd: the only certificate identity the switch accepts.
    #[arg(long, env = "VNET_SWITCH_UNIT_NODE_ID", value_name = "ID")]
    pub unit_node_id: Option<u64>,
    /// Serve plaintext even on a non-loopback address (anyone who reaches it can program the
    /// switch).
    #[arg(long, env = "VNET_SWITCH_INSECURE")]
    pub insecure: bool,
}

/// Mutual TLS on the switch API, and the one node whose certificate may call it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SwitchTls {
    pub files: vnet_tls::TlsFiles,
    pub unit_node_id: u64,
}

/// A validated configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub listen: SocketAddr,
    pub metrics_listen: Option<SocketAddr>,
    pub journal: PathBuf,
    pub spec: SwitchSpec,
    pub log_level: String,
    /// `None`: plaintext (loopback only unless --insecure).
    pub tls: Option<SwitchTls>,
    /// What presenting does besides the journal.
    pub data_plane: DataPlaneConfig,
}

/// Where presented functions go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DataPlaneConfig {
    /// The simulated switch: state, journal and watchdog only.
    Sim,
    /// vNICs as real Linux interfaces in the servers' namespaces (see `crate::linux`).
    Linux(LinuxSpec),
}

/// The data-plane backend a switch drives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BackendKind {
    /// State, journal and watchdog only: nothing on the wire.
    Sim,
    /// vNICs become macvlan interfaces in the servers' network namespaces, on a bridge per
    /// network+VLAN segment; vHBAs stay simulated fabric logins. Needs root
    /// (CAP_NET_ADMIN and CAP_SYS_ADMIN).
    Linux,
}

/// The data-plane flags of `vnet-switchd` (beside [`Args`]).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct DataPlaneArgs {
    /// Data-plane backend: `sim` (the simulated switch) or `linux` (real interfaces; needs
    /// --linux-segments and --linux-servers). The API, journal and watchdog are the same.
    #[arg(long, env = "VNET_SWITCH_BACKEND", value_enum, value_name = "KIND")]
    pub backend: Option<BackendKind>,

    /// --backend linux: the bridge in the switch's network namespace that carries each
    /// network+VLAN segment to the LAN, as `network[:vlan]=bridge,...`, e.g.
    /// `prod=lan0,prod:10=lan1`. Each network+VLAN is its own L2 segment (no 802.1Q tagging).
    #[arg(long, env = "VNET_SWITCH_LINUX_SEGMENTS", value_name = "LIST")]
    pub linux_segments: Option<String>,

    /// --backend linux: each cabled server's network namespace, as `server=path,...`, e.g.
    /// `rack1-srv01=/run/netns/rack1-srv01`. Every server in --host-ports needs one.
    #[arg(long, env = "VNET_SWITCH_LINUX_SERVERS", value_name = "LIST")]
    pub linux_servers: Option<String>,
}

impl DataPlaneArgs {
    /// Validates the data-plane flags against the cabling.
    pub fn resolve(self, cabling: &BTreeMap<u8, String>) -> Result<DataPlaneConfig, ConfigError> {
        match self.backend.unwrap_or(BackendKind::Sim) {
            BackendKind::Sim => {
                for (flag, value) in [
                    ("linux-segments", &self.linux_segments),
                    ("linux-servers", &self.linux_servers),
                ] {
                    if let Some(value) = value {
                        return Err(ConfigError {
                            flag,
                            value: value.clone(),
                            reason: "only used with --backend linux".to_owned(),
                        });
                    }
                }
                Ok(DataPlaneConfig::Sim)
            }
            BackendKind::Linux => {
                let required = |flag: &'static str, value: Option<String>| {
                    value.ok_or_else(|| ConfigError {
                        flag,
                        value: String::new(),
                        reason: "--backend linux needs it".to_owned(),
                    })
                };
                let segments = parse_segments(&required("linux-segments", self.linux_segments)?)?;
                let namespaces = parse_servers(&required("linux-servers", self.linux_servers)?)?;
                let mut servers = BTreeMap::new();
                for (port, server) in cabling {
                    let path = namespaces.get(server).ok_or_else(|| ConfigError {
                        flag: "linux-servers",
                        value: server.clone(),
                        reason: format!(
                            "server {server:?} is cabled to host port {port} but has no namespace here"
                        ),
                    })?;
                    servers.insert(*port, (server.clone(), path.clone()));
                }
                Ok(DataPlaneConfig::Linux(LinuxSpec { segments, servers }))
            }
        }
    }
}

/// Parses `network[:vlan]=bridge,...`.
pub fn parse_segments(list: &str) -> Result<BTreeMap<Segment, String>, ConfigError> {
    let invalid = |value: &str, reason: String| ConfigError {
        flag: "linux-segments",
        value: value.to_owned(),
        reason,
    };
    let mut segments = BTreeMap::new();
    for entry in list.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let Some((segment, bridge)) = entry.split_once('=') else {
            return Err(invalid(entry, "expected network[:vlan]=bridge".to_owned()));
        };
        let (network, vlan) = match segment.trim().split_once(':') {
            Some((network, vlan)) => {
                let vlan = vlan
                    .parse::<u16>()
                    .ok()
                    .filter(|v| (VLAN_ID_MIN..=VLAN_ID_MAX).contains(v))
                    .ok_or_else(|| {
                        invalid(
                            entry,
                            format!("the VLAN must be in {VLAN_ID_MIN}..={VLAN_ID_MAX}"),
                        )
                    })?;
                (network, Some(vlan))
            }
            None => (segment.trim(), None),
        };
        validate_name("network", network).map_err(|e| invalid(entry, e.to_string()))?;
        let bridge = bridge.trim();
        if bridge.is_empty()
            || bridge.len() > crate::linux::IFNAME_MAX
            || bridge.contains(['/', ' ', ':'])
        {
            return Err(invalid(
                entry,
                format!(
                    "the bridge must be an interface name of 1..={} bytes",
                    crate::linux::IFNAME_MAX
                ),
            ));
        }
        if segments
            .insert((network.to_owned(), vlan), bridge.to_owned())
            .is_some()
        {
            return Err(invalid(entry, "this segment is listed twice".to_owned()));
        }
    }
    if segments.is_empty() {
        return Err(invalid(list, "no segment listed".to_owned()));
    }
    Ok(segments)
}

/// Parses `server=path,...`.
pub fn parse_servers(list: &str) -> Result<BTreeMap<String, PathBuf>, ConfigError> {
    let invalid = |value: &str, reason: String| ConfigError {
        flag: "linux-servers",
        value: value.to_owned(),
        reason,
    };
    let mut servers = BTreeMap::new();
    for entry in list.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let Some((server, path)) = entry.split_once('=') else {
            return Err(invalid(entry, "expected server=path".to_owned()));
        };
        let server = server.trim();
        validate_name("server", server).map_err(|e| invalid(entry, e.to_string()))?;
        let path = path.trim();
        if !path.starts_with('/') {
            return Err(invalid(
                entry,
                "the namespace must be an absolute path".to_owned(),
            ));
        }
        if servers
            .insert(server.to_owned(), PathBuf::from(path))
            .is_some()
        {
            return Err(invalid(entry, "this server is listed twice".to_owned()));
        }
    }
    Ok(servers)
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
        let tls = match (
            self.tls.cacert,
            self.tls.cert,
            self.tls.key,
            self.tls.unit_node_id,
        ) {
            (Some(ca), Some(cert), Some(key), Some(unit_node_id)) if unit_node_id > 0 => {
                Some(SwitchTls {
                    files: vnet_tls::TlsFiles { ca, cert, key },
                    unit_node_id,
                })
            }
            (None, None, None, None) => None,
            _ => {
                return Err(ConfigError {
                    flag: "cacert",
                    value: String::new(),
                    reason: "--cacert, --cert, --key and --unit-node-id (a positive id) go \
                             together: give all four for TLS, or none"
                        .to_string(),
                })
            }
        };
        if tls.is_none() && !self.tls.insecure && !self.listen.ip().is_loopback() {
            return Err(ConfigError {
                flag: "listen",
                value: self.listen.to_string(),
                reason: "a non-loopback address needs TLS (--cacert, --cert, --key, \
                         --unit-node-id), or --insecure to serve plaintext anyway"
                    .to_string(),
            });
        }
        Ok(Config {
            tls,
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
            data_plane: DataPlaneConfig::Sim,
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
    fn data_plane_flags() {
        let cabling: BTreeMap<u8, String> = [(1, "a".to_owned()), (2, "b".to_owned())].into();
        let linux = |segments: &str, servers: &str| DataPlaneArgs {
            backend: Some(BackendKind::Linux),
            linux_segments: Some(segments.to_owned()),
            linux_servers: Some(servers.to_owned()),
        };
        let config = linux("prod=lan0, prod:10=lan1", "a=/run/netns/a,b=/run/netns/b")
            .resolve(&cabling)
            .unwrap();
        let DataPlaneConfig::Linux(spec) = config else {
            panic!("expected linux, got {config:?}");
        };
        assert_eq!(spec.segments[&("prod".to_owned(), Some(10))], "lan1");
        assert_eq!(spec.servers[&2].1, PathBuf::from("/run/netns/b"));
        assert_eq!(
            DataPlaneArgs::default().resolve(&cabling),
            Ok(DataPlaneConfig::Sim)
        );
        let cases = [
            (
                linux("prod=lan0", "a=/run/netns/a"),
                "linux-servers",
                "has no namespace",
            ),
            (
                linux("prod:0=lan0", "a=/x,b=/y"),
                "linux-segments",
                "the VLAN must be in",
            ),
            (
                linux("prod=lan0,prod=lan1", "a=/x,b=/y"),
                "linux-segments",
                "listed twice",
            ),
            (
                linux("prod=", "a=/x,b=/y"),
                "linux-segments",
                "interface name",
            ),
            (
                linux("prod=lan0", "a=x,b=/y"),
                "linux-servers",
                "absolute path",
            ),
            (
                DataPlaneArgs {
                    linux_segments: Some("prod=lan0".into()),
                    ..DataPlaneArgs::default()
                },
                "linux-segments",
                "only used with --backend linux",
            ),
            (
                DataPlaneArgs {
                    backend: Some(BackendKind::Linux),
                    ..DataPlaneArgs::default()
                },
                "linux-segments",
                "needs it",
            ),
        ];
        for (args, flag, reason) in cases {
            let error = args.resolve(&cabling).unwrap_err();
            assert_eq!(error.flag, flag, "{error}");
            assert!(error.reason.contains(reason), "{error}");
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
