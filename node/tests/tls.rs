//! Mutual TLS with real `vnetd` processes (and an in-process `vnet-switchd`): a TLS cluster
//! serves; clients without a certificate, with another CA's, or in plaintext are refused; on the
//! peer port a node's valid certificate cannot speak as another member, and neither a
//! non-member's nor a client's can speak at all; the switch accepts only its own unit's
//! certificate; certificates rotated on disk are used without a restart and the old ones are
//! refused after; and vnetd refuses plaintext on a non-loopback address unless --insecure.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use common::processes::{cluster_id_of, free_ports, Cluster, VNETD};
use common::wait_for;
use tonic::transport::{Channel, Endpoint};
use vnet_launch::Launch;
use vnet_proto::vnet::raft::v1::raft_peer_client::RaftPeerClient;
use vnet_proto::vnet::raft::v1::RaftMessage;
use vnet_proto::vnet::v1 as pb;
use vnet_proto::vnet::v1::cluster_service_client::ClusterServiceClient;
use vnet_tls::certs;
use vnet_tls::ClientTls;

/// A CA with certificates for nodes 1..=4 (4 is not a member) and the client `admin`.
fn make_certs(dir: &Path) {
    vnet_tls::install_crypto_provider();
    certs::create_ca(dir, 30, false).expect("ca");
    for id in 1..=4 {
        certs::create_node(
            dir,
            None,
            id,
            &["127.0.0.1".into(), "localhost".into()],
            30,
            false,
        )
        .expect("node cert");
    }
    certs::create_client(dir, None, "admin", 30, false).expect("client cert");
}

fn node_tls(dir: &Path, id: u64) -> Arc<ClientTls> {
    let (cert, key) = certs::node_files(id);
    Arc::new(
        ClientTls::new(
            dir.join(certs::CA_CERT),
            Some((dir.join(cert), dir.join(key))),
        )
        .expect("node client tls"),
    )
}

fn client_tls(dir: &Path, name: &str) -> Arc<ClientTls> {
    let (cert, key) = certs::client_files(name);
    Arc::new(
        ClientTls::new(
            dir.join(certs::CA_CERT),
            Some((dir.join(cert), dir.join(key))),
        )
        .expect("client tls"),
    )
}

async fn tls_channel(addr: std::net::SocketAddr, tls: Arc<ClientTls>) -> Result<Channel, String> {
    Endpoint::from_shared(format!("http://{addr}"))
        .expect("endpoint")
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(5))
        .connect_with_connector(vnet_tls::Connector::new(tls))
        .await
        .map_err(|e| format!("{e:?}"))
}

/// A status call over `channel`: `Ok` only if the server answered it.
async fn status(channel: Channel) -> Result<pb::GetClusterStatusResponse, tonic::Status> {
    ClusterServiceClient::new(channel)
        .get_cluster_status(pb::GetClusterStatusRequest {
            consistency: pb::ReadConsistency::Local as i32,
        })
        .await
        .map(|r| r.into_inner())
}

/// Whether the API at `addr` authenticates a client with `tls`: it answers the call, or refuses
/// it for the principal's role (authorization comes after authentication).
async fn answered(addr: std::net::SocketAddr, tls: Arc<ClientTls>) -> bool {
    match tls_channel(addr, tls).await {
        Ok(channel) => match status(channel).await {
            Ok(_) => true,
            Err(status) => status.code() == tonic::Code::PermissionDenied,
        },
        Err(_) => false,
    }
}

/// A peer call as a member would send it, over `channel`, claiming to be `node_id`.
fn peer_request(
    message: RaftMessage,
    cluster_id: &str,
    node_id: u64,
) -> tonic::Request<RaftMessage> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("x-vnet-cluster-id", cluster_id.parse().expect("header"));
    request.metadata_mut().insert(
        "x-vnet-node-id",
        node_id.to_string().parse().expect("header"),
    );
    request
}

fn probe() -> RaftMessage {
    vnet_node::peer::encode(&())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_cluster_serves_its_members_and_refuses_everyone_else() {
    let certs_dir = tempfile::tempdir().expect("tempdir");
    let dir = certs_dir.path();
    make_certs(dir);
    let admin = client_tls(dir, "admin");
    // The harness calls as node 1's certificate: the system principal, whatever roles exist.
    let mut cluster = Cluster::start_tls(dir, node_tls(dir, 1));
    let leader = cluster.leader().await;
    println!("TLS cluster elected node {leader}");
    let api = cluster.proc(1).api_addr;
    let peer = cluster.proc(1).peer_addr;

    // A write goes through the TLS API and Raft over TLS peers.
    common::create_pools(
        cluster.proc(1).channel(),
        "02:00:00:00:00:ff",
        "20:00:00:25:b5:00:00:ff",
    )
    .await
    .expect("a write through the TLS API");

    // Plaintext: the TLS server never answers a call.
    let plain = Endpoint::from_shared(format!("http://{api}"))
        .expect("endpoint")
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(5))
        .connect()
        .await;
    if let Ok(channel) = plain {
        let refused = status(channel).await.expect_err("plaintext is refused");
        println!("plaintext client sees: {refused:?}");
    }
    // TLS without a client certificate: the handshake is refused.
    let anonymous = Arc::new(ClientTls::new(dir.join(certs::CA_CERT), None).expect("tls"));
    assert!(
        !answered(api, anonymous).await,
        "a client without a certificate was served"
    );
    // A certificate from another CA (for a name the cluster would accept).
    let other = tempfile::tempdir().expect("tempdir");
    make_certs(other.path());
    let foreign = Arc::new(
        ClientTls::new(
            dir.join(certs::CA_CERT),
            Some((
                other.path().join("client-admin.crt"),
                other.path().join("client-admin.key"),
            )),
        )
        .expect("tls"),
    );
    assert!(
        !answered(api, foreign).await,
        "another CA's certificate was served"
    );
    assert!(
        answered(api, admin.clone()).await,
        "the cluster's own client is served"
    );

    // The peer port.
    let cluster_id = cluster_id_of(&cluster.proc(1).data_dir).expect("cluster id");
    let as_node = |id: u64| {
        let tls = node_tls(dir, id);
        async move { RaftPeerClient::new(tls_channel(peer, tls).await.expect("peer channel")) }
    };
    // Node 2's certificate speaks as node 2: admitted.
    as_node(2)
        .await
        .probe(peer_request(probe(), &cluster_id, 2))
        .await
        .expect("a member speaking as itself is admitted");
    // ... but not as node 3, by header,
    let status = as_node(2)
        .await
        .probe(peer_request(probe(), &cluster_id, 3))
        .await
        .expect_err("node 2's certificate claiming node 3");
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
    assert!(status.message().contains("node 3"), "{status:?}");
    // ... nor by a vote naming node 3 as the candidate.
    let vote = openraft::raft::VoteRequest::<u64>::new(openraft::Vote::new(1_000, 3), None);
    let status = as_node(2)
        .await
        .vote(peer_request(vnet_node::peer::encode(&vote), &cluster_id, 2))
        .await
        .expect_err("node 2's certificate voting as candidate 3");
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
    assert!(
        status.message().contains("speaks only for itself"),
        "{status:?}"
    );
    // A valid certificate of a non-member cannot speak at all, not even a probe or a vote.
    for call in ["probe", "vote"] {
        let mut client = as_node(4).await;
        let status = match call {
            "probe" => client.probe(peer_request(probe(), &cluster_id, 4)).await,
            _ => {
                let vote =
                    openraft::raft::VoteRequest::<u64>::new(openraft::Vote::new(1_000, 4), None);
                client
                    .vote(peer_request(vnet_node::peer::encode(&vote), &cluster_id, 4))
                    .await
            }
        }
        .expect_err("a non-member is refused");
        assert_eq!(
            status.code(),
            tonic::Code::PermissionDenied,
            "{call}: {status:?}"
        );
        assert!(
            status.message().contains("not a member"),
            "{call}: {status:?}"
        );
    }
    // A client certificate cannot speak on the peer port.
    let status = RaftPeerClient::new(tls_channel(peer, admin.clone()).await.expect("channel"))
        .probe(peer_request(probe(), &cluster_id, 2))
        .await
        .expect_err("a client certificate on the peer port");
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
    // The refused votes deposed nobody.
    assert_eq!(cluster.leader().await, leader);
    cluster.assert_alive();
}

/// Replaces `to` by `from`'s content, atomically (what a careful rotation does).
fn install(from: &Path, to: &Path) {
    let temp = PathBuf::from(format!("{}.new", to.display()));
    std::fs::copy(from, &temp).expect("copy");
    std::fs::rename(&temp, to).expect("rename");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_rotated_on_disk_are_used_without_a_restart_and_old_ones_are_refused() {
    let certs_dir = tempfile::tempdir().expect("tempdir");
    let dir = certs_dir.path();
    make_certs(dir);
    let old_admin = client_tls(dir, "admin");
    let mut cluster = Cluster::start_tls(dir, node_tls(dir, 1));
    cluster.leader().await;
    let pids: Vec<u32> = cluster.procs.iter().map(|p| p.pid()).collect();

    // A whole new CA, node and client certificates, installed over the files the nodes read.
    let next = tempfile::tempdir().expect("tempdir");
    make_certs(next.path());
    let new_admin = client_tls(next.path(), "admin");
    assert!(
        !answered(cluster.proc(1).api_addr, new_admin.clone()).await,
        "the new CA is not trusted before the rotation"
    );
    for id in 1..=3 {
        let (cert, key) = certs::node_files(id);
        install(&next.path().join(&key), &dir.join(&key));
        install(&next.path().join(&cert), &dir.join(&cert));
    }
    install(&next.path().join(certs::CA_CERT), &dir.join(certs::CA_CERT));

    let started = std::time::Instant::now();
    for p in &cluster.procs {
        let addr = p.api_addr;
        let new_admin = new_admin.clone();
        wait_for("every node serves the new certificates", || {
            let new_admin = new_admin.clone();
            async move { answered(addr, new_admin).await.then_some(()) }
        })
        .await;
        assert!(
            !answered(addr, old_admin.clone()).await,
            "node {} still accepts the old CA's client after the rotation",
            p.id
        );
    }
    println!(
        "rotation picked up by all three nodes {} ms after the files were replaced",
        started.elapsed().as_millis()
    );
    // The cluster still replicates (new peer connections use the new certificates), and no node
    // restarted.
    let new_system = node_tls(next.path(), 1);
    for p in &mut cluster.procs {
        p.client_tls = Some(new_system.clone());
    }
    common::create_pools(
        cluster.proc(2).channel(),
        "02:00:00:00:00:ff",
        "20:00:00:25:b5:00:00:ff",
    )
    .await
    .expect("a write after the rotation");
    cluster.leader().await;
    let after: Vec<u32> = cluster.procs.iter().map(|p| p.pid()).collect();
    assert_eq!(pids, after, "no node restarted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_switch_accepts_only_its_own_units_certificate() {
    let certs_dir = tempfile::tempdir().expect("tempdir");
    let dir = certs_dir.path();
    make_certs(dir);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind switch");
    let addr = listener.local_addr().expect("switch addr");
    let (cert, key) = certs::node_files(1);
    let config = fabric_agent::config::Args {
        listen: addr,
        journal: dir.join("switch.journal"),
        host_ports: "1=rack1-srv01".into(),
        eth_ports: 2,
        vfs_per_eth_port: 4,
        fc_ports: 2,
        npiv_per_fc_port: 4,
        log_level: "warn".into(),
        unsafe_disable_watchdog: false,
        metrics_listen: None,
        tls: fabric_agent::config::TlsArgs {
            cacert: Some(dir.join(certs::CA_CERT)),
            cert: Some(dir.join(cert)),
            key: Some(dir.join(key)),
            unit_node_id: Some(1),
            insecure: false,
        },
    }
    .resolve()
    .expect("switch config");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let switch = tokio::spawn(fabric_agent::server::run(
        config,
        listener,
        None,
        async move {
            let _ = stopped.await;
        },
    ));
    let own = fabric_agent::SimDriver::connect_lazy_with(&addr.to_string(), Some(node_tls(dir, 1)))
        .expect("driver");
    wait_for("the switch answers its own unit's vnetd", || {
        let own = own.clone();
        async move { own.raw_state().await.ok() }
    })
    .await;
    for (who, tls) in [
        ("node 2", node_tls(dir, 2)),
        ("client admin", client_tls(dir, "admin")),
    ] {
        let other = fabric_agent::SimDriver::connect_lazy_with(&addr.to_string(), Some(tls))
            .expect("driver");
        let refused = other
            .raw_state()
            .await
            .expect_err("another certificate is refused");
        println!("{who}: {refused}");
        assert!(
            refused.to_string().contains("may not program it"),
            "{who}: {refused}"
        );
    }
    let plain = fabric_agent::SimDriver::connect_lazy(&addr.to_string()).expect("driver");
    plain.raw_state().await.expect_err("plaintext is refused");
    let _ = stop.send(());
    switch
        .await
        .expect("switch task")
        .expect("switch stopped cleanly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vnetd_refuses_plaintext_on_a_non_loopback_address_unless_insecure() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ports = free_ports(2);
    let args = |data: &str| {
        vec![
            "--id".to_string(),
            "1".into(),
            "--name".into(),
            "unit-a".into(),
            "--data-dir".into(),
            dir.path().join(data).display().to_string(),
            "--api-listen".into(),
            format!("0.0.0.0:{}", ports[0].port()),
            "--peer-listen".into(),
            ports[1].to_string(),
            "--initial-cluster".into(),
            format!("1=unit-a@{}", ports[1]),
        ]
    };
    let refused = Launch::new(VNETD)
        .args(args("refused"))
        .output()
        .expect("run vnetd");
    assert!(
        !refused.status.success(),
        "vnetd served plaintext on 0.0.0.0"
    );
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("api_listen") && stderr.contains("--insecure"),
        "the refusal names the key and the way out: {stderr}"
    );
    assert!(
        !dir.path().join("refused").join("vnet-data.json").exists(),
        "nothing was created"
    );
    let log = dir.path().join("insecure.log");
    let mut insecure = Launch::new(VNETD)
        .args(args("insecure"))
        .arg("--insecure")
        .log(&log)
        .spawn()
        .expect("spawn vnetd");
    wait_for("vnetd --insecure warns that it serves plaintext", || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        async move { text.contains("PLAINTEXT").then_some(()) }
    })
    .await;
    assert!(
        insecure.try_wait().expect("wait").is_none(),
        "vnetd --insecure runs"
    );
    insecure.kill().expect("kill");
}
