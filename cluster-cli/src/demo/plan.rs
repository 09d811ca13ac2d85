//! The demo cluster on paper: its three nodes, their ports, and the command line each process
//! gets. Pure, so the exact flags are tested without starting anything.

use std::path::Path;

use serde::Serialize;

use crate::error::CliError;

/// The rack servers cabled to both units: host port N of each unit's switch is rack1-srv0N.
pub const SERVERS: [&str; 6] = [
    "rack1-srv01",
    "rack1-srv02",
    "rack1-srv03",
    "rack1-srv04",
    "rack1-srv05",
    "rack1-srv06",
];

/// One node of the demo cluster, before it is started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodePlan {
    pub id: u64,
    pub name: &'static str,
    pub role: &'static str,
    pub api_addr: String,
    pub peer_addr: String,
    /// Where the node serves `/metrics`, `/health` and `/readyz`.
    pub metrics_addr: String,
    /// The unit's switch; `None` for the witness.
    pub switch_addr: Option<String>,
    /// Where the unit's switch serves `/metrics`; `None` for the witness.
    pub switch_metrics_addr: Option<String>,
}

/// The three nodes: API ports base+1..base+3, peer ports base+101..base+103, metrics ports
/// base+301..base+303, and for the two units switch ports base+201 and base+202 with their
/// switches' metrics on base+401 and base+402.
pub fn plan(base_port: u16) -> Result<Vec<NodePlan>, String> {
    let nodes = [
        (1, "unit-a", "unit"),
        (2, "unit-b", "unit"),
        (3, "witness", "witness"),
    ];
    let port = |offset: u64| -> Result<u16, String> {
        u16::try_from(u64::from(base_port) + offset).map_err(|_| {
            format!("--base-port {base_port}: port {base_port}+{offset} is above 65535")
        })
    };
    nodes
        .into_iter()
        .map(|(id, name, role)| {
            Ok(NodePlan {
                id,
                name,
                role,
                api_addr: format!("127.0.0.1:{}", port(id)?),
                peer_addr: format!("127.0.0.1:{}", port(100 + id)?),
                metrics_addr: format!("127.0.0.1:{}", port(300 + id)?),
                switch_addr: match role {
                    "unit" => Some(format!("127.0.0.1:{}", port(200 + id)?)),
                    _ => None,
                },
                switch_metrics_addr: match role {
                    "unit" => Some(format!("127.0.0.1:{}", port(400 + id)?)),
                    _ => None,
                },
            })
        })
        .collect()
}

/// The `--initial-cluster` value every node gets: `id=name@peer_addr,...`.
pub fn initial_cluster(nodes: &[NodePlan]) -> String {
    nodes
        .iter()
        .map(|node| format!("{}={}@{}", node.id, node.name, node.peer_addr))
        .collect::<Vec<_>>()
        .join(",")
}

/// vnetd's `--cabling`: `rack1-srv01=1,...` (the same on both units).
pub fn cabling() -> String {
    SERVERS
        .iter()
        .enumerate()
        .map(|(index, server)| format!("{server}={}", index + 1))
        .collect::<Vec<_>>()
        .join(",")
}

/// vnet-switchd's `--host-ports`: `1=rack1-srv01,...`, the switch's side of [`cabling`].
pub fn host_ports() -> String {
    SERVERS
        .iter()
        .enumerate()
        .map(|(index, server)| format!("{}={server}", index + 1))
        .collect::<Vec<_>>()
        .join(",")
}

/// The demo's principals, one per role: the bootstrap admin, and the two the demo grants
/// (`sample::DEMO_ROLES`). Each is the Common Name of a client certificate.
pub const DEMO_ADMIN: &str = "admin";

/// The vnetd command line for one node. A unit also gets its switch and cabling; every node
/// names the demo's admin as the bootstrap admin.
/// The demo's certificates (`vnetctl cert` files), when it runs with TLS.
pub fn tls_args(certs: &Path, node_id: u64) -> Vec<String> {
    let (cert, key) = vnet_tls::certs::node_files(node_id);
    vec![
        "--cacert".into(),
        certs.join(vnet_tls::certs::CA_CERT).display().to_string(),
        "--cert".into(),
        certs.join(cert).display().to_string(),
        "--key".into(),
        certs.join(key).display().to_string(),
    ]
}

/// The demo's CA, a certificate for each node (for 127.0.0.1 and localhost, where the nodes and
/// switches listen) and the clients `admin`, `operator` and `viewer`, in `certs`.
pub fn make_certs(certs: &Path, nodes: &[NodePlan]) -> Result<(), String> {
    use vnet_tls::certs;
    // A demo's certificates live as long as its directory; a week is plenty.
    const DAYS: u32 = 7;
    certs::create_ca(certs, DAYS, false)?;
    for node in nodes {
        certs::create_node(
            certs,
            None,
            node.id,
            &["127.0.0.1".into(), "localhost".into()],
            DAYS,
            false,
        )?;
    }
    for client in DEMO_CLIENTS {
        certs::create_client(certs, None, client, DAYS, false)?;
    }
    Ok(())
}

/// The client certificates the demo makes: one per role, named after it.
pub const DEMO_CLIENTS: [&str; 3] = ["admin", "operator", "viewer"];

pub fn vnetd_args(node: &NodePlan, data_dir: &Path, initial_cluster: &str) -> Vec<String> {
    let mut args: Vec<String> = vec![
        "--id".into(),
        node.id.to_string(),
        "--name".into(),
        node.name.into(),
        "--role".into(),
        node.role.into(),
        "--data-dir".into(),
        data_dir.display().to_string(),
        "--api-listen".into(),
        node.api_addr.clone(),
        "--peer-listen".into(),
        node.peer_addr.clone(),
        "--metrics-listen".into(),
        node.metrics_addr.clone(),
        "--initial-cluster".into(),
        initial_cluster.into(),
        "--bootstrap-admin".into(),
        DEMO_ADMIN.into(),
    ];
    if let Some(switch) = &node.switch_addr {
        args.extend([
            "--switch".into(),
            switch.clone(),
            "--cabling".into(),
            cabling(),
        ]);
    }
    args.extend([
        "--log-format".into(),
        "text".into(),
        "--log-level".into(),
        "info".into(),
    ]);
    args
}

/// The vnet-switchd command line for a unit's switch.
pub fn switchd_args(listen: &str, metrics: &str, journal: &Path) -> Vec<String> {
    vec![
        "--listen".into(),
        listen.into(),
        "--metrics-listen".into(),
        metrics.into(),
        "--journal".into(),
        journal.display().to_string(),
        "--host-ports".into(),
        host_ports(),
        "--eth-ports".into(),
        "2".into(),
        "--vfs-per-eth-port".into(),
        "32".into(),
        "--fc-ports".into(),
        "2".into(),
        "--npiv-per-fc-port".into(),
        "32".into(),
    ]
}

/// Fails with the first port of the plan that something already listens on.
pub(super) fn check_ports_free(nodes: &[NodePlan], base_port: u16) -> Result<(), CliError> {
    for node in nodes {
        let mut addresses = vec![
            ("api", &node.api_addr),
            ("peer", &node.peer_addr),
            ("metrics", &node.metrics_addr),
        ];
        if let Some(switch) = &node.switch_addr {
            addresses.push(("switch", switch));
        }
        if let Some(metrics) = &node.switch_metrics_addr {
            addresses.push(("switch metrics", metrics));
        }
        for (what, address) in addresses {
            // Binding and releasing leaves a small window, but it turns the common case (an
            // earlier demo still running) into a clear message instead of a crash in a log.
            if let Err(error) = std::net::TcpListener::bind(address.as_str()) {
                return Err(CliError::Local(anyhow::anyhow!(
                    "{address} ({what} of {}) is not free: {error}. Stop what uses it, or pick \
                     other ports with --base-port (now {base_port}).",
                    node.name
                )));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_plan_uses_the_documented_ports() {
        let nodes = plan(7000).unwrap();
        let summary: Vec<_> = nodes
            .iter()
            .map(|n| {
                (
                    n.id,
                    n.name,
                    n.role,
                    n.api_addr.as_str(),
                    n.peer_addr.as_str(),
                    n.switch_addr.as_deref(),
                )
            })
            .collect();
        assert_eq!(
            summary,
            vec![
                (
                    1,
                    "unit-a",
                    "unit",
                    "127.0.0.1:7001",
                    "127.0.0.1:7101",
                    Some("127.0.0.1:7201")
                ),
                (
                    2,
                    "unit-b",
                    "unit",
                    "127.0.0.1:7002",
                    "127.0.0.1:7102",
                    Some("127.0.0.1:7202")
                ),
                (
                    3,
                    "witness",
                    "witness",
                    "127.0.0.1:7003",
                    "127.0.0.1:7103",
                    None
                ),
            ]
        );
        assert_eq!(
            initial_cluster(&nodes),
            "1=unit-a@127.0.0.1:7101,2=unit-b@127.0.0.1:7102,3=witness@127.0.0.1:7103"
        );
    }

    #[test]
    fn plan_refuses_ports_past_65535() {
        assert!(plan(65_134).unwrap_err().contains("above 65535"));
        assert!(plan(65_133).is_ok());
    }

    #[test]
    fn witness_vnetd_gets_no_switch_and_no_cabling() {
        let nodes = plan(9000).unwrap();
        let args = vnetd_args(&nodes[2], Path::new("/tmp/d/witness"), "CLUSTER");
        assert_eq!(
            args.join(" "),
            "--id 3 --name witness --role witness --data-dir /tmp/d/witness \
             --api-listen 127.0.0.1:9003 --peer-listen 127.0.0.1:9103 \
             --metrics-listen 127.0.0.1:9303 --initial-cluster CLUSTER --bootstrap-admin admin \
             --log-format text --log-level info"
        );
    }

    #[test]
    fn unit_vnetd_gets_its_switch_and_the_shared_cabling() {
        let nodes = plan(9000).unwrap();
        for (node, switch) in [(&nodes[0], "9201"), (&nodes[1], "9202")] {
            let args = vnetd_args(node, Path::new("/d"), "CLUSTER");
            let joined = args.join(" ");
            assert!(
                joined.contains(&format!(
                    "--switch 127.0.0.1:{switch} --cabling rack1-srv01=1,rack1-srv02=2,\
                     rack1-srv03=3,rack1-srv04=4,rack1-srv05=5,rack1-srv06=6 "
                )),
                "{joined}"
            );
        }
    }

    #[test]
    fn switchd_gets_exactly_the_agreed_flags() {
        let args = switchd_args(
            "127.0.0.1:7201",
            "127.0.0.1:7401",
            Path::new("/d/unit-a/switch.journal"),
        );
        assert_eq!(
            args.join(" "),
            "--listen 127.0.0.1:7201 --metrics-listen 127.0.0.1:7401 --journal /d/unit-a/switch.journal \
             --host-ports 1=rack1-srv01,2=rack1-srv02,3=rack1-srv03,4=rack1-srv04,\
             5=rack1-srv05,6=rack1-srv06 --eth-ports 2 --vfs-per-eth-port 32 --fc-ports 2 \
             --npiv-per-fc-port 32"
        );
    }

    #[test]
    fn a_taken_port_is_named() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let taken = listener.local_addr().unwrap().to_string();
        let free = || {
            let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            probe.local_addr().unwrap().to_string()
        };
        let nodes = vec![NodePlan {
            id: 1,
            name: "unit-a",
            role: "unit",
            api_addr: free(),
            peer_addr: free(),
            metrics_addr: free(),
            switch_addr: Some(taken.clone()),
            switch_metrics_addr: Some(free()),
        }];
        let error = check_ports_free(&nodes, 7000).unwrap_err().to_string();
        assert!(
            error.contains(&taken)
                && error.contains("switch of unit-a")
                && error.contains("--base-port"),
            "{error}"
        );
    }
}
