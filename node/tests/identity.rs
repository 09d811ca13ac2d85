//! Cluster identity and the data directory's identity file, with real `vnetd` processes: every
//! member of a cluster agrees on one cluster id, a node of another cluster is refused naming both
//! ids, and a data directory of a newer format or of another node id is refused at start.

mod common;

use std::path::Path;

use common::processes::{cluster_id_of, free_ports, probe_as, Cluster, Proc, VNETD};
use common::wait_for;
use vnet_launch::Launch;
use vnet_proto::vnet::v1 as pb;
use vnet_proto::vnet::v1::cluster_service_client::ClusterServiceClient;

/// A lone `vnetd` founding a cluster of its own (a unit without a switch).
fn lone_node(dir: &Path, name: &'static str) -> Proc {
    let ports = free_ports(3);
    let data_dir = dir.join(name);
    std::fs::create_dir_all(&data_dir).expect("data dir");
    Proc::new(
        1,
        name,
        [ports[0], ports[1], ports[2]],
        data_dir.clone(),
        data_dir.join("vnetd.log"),
        format!("1={name}@{}", ports[1]),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_member_agrees_on_the_cluster_id_and_a_node_of_another_cluster_is_refused() {
    let mut cluster = Cluster::start();
    cluster.leader().await;
    let dirs: Vec<_> = cluster.procs.iter().map(|p| p.data_dir.clone()).collect();
    let id = wait_for("every member holds the same cluster id", || {
        let dirs = dirs.clone();
        async move {
            let ids: Vec<Option<String>> = dirs.iter().map(|d| cluster_id_of(d)).collect();
            let first = ids[0].clone()?;
            ids.iter()
                .all(|id| id.as_deref() == Some(&first))
                .then_some(first)
        }
    })
    .await;
    println!("cluster id {id}");

    // An operator adds to this cluster a node that already belongs to another one.
    let other_dir = tempfile::tempdir().expect("tempdir");
    let mut stray = lone_node(other_dir.path(), "stray");
    stray.start();
    let stray_dir = stray.data_dir.clone();
    let other_id = wait_for("the lone node founds its own cluster", || {
        let dir = stray_dir.clone();
        async move { cluster_id_of(&dir) }
    })
    .await;
    assert_ne!(other_id, id, "two clusters drew the same id");
    let refused = ClusterServiceClient::new(cluster.proc(1).channel())
        .add_member(pb::AddMemberRequest {
            id: 4,
            name: "unit-c".into(),
            peer_addr: stray.peer_addr.to_string(),
            api_addr: stray.api_addr.to_string(),
            role: pb::MemberRole::Unit as i32,
        })
        .await
        .expect_err("a node of another cluster must not be added");
    println!("member add: {refused:?}");
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
    assert!(
        refused.message().contains(&id) && refused.message().contains(&other_id),
        "the refusal names both cluster ids: {}",
        refused.message()
    );

    // Any peer call from another cluster is refused, whichever way it comes.
    for peer in [cluster.proc(2).peer_addr, cluster.proc(3).peer_addr] {
        let refused = probe_as(peer, &other_id, Some(9))
            .await
            .expect_err("refused");
        assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
        assert!(refused.message().contains(&id) && refused.message().contains(&other_id));
    }
    let refused = probe_as(stray.peer_addr, &id, Some(9))
        .await
        .expect_err("refused");
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
    probe_as(cluster.proc(2).peer_addr, &id, Some(9))
        .await
        .expect("a member of the same cluster is let in");
    stray.sigkill();
    cluster.assert_alive();
}

/// Runs `vnetd` on `data_dir` as node `id` and returns its exit code and what it logged; it must
/// exit.
async fn run_to_exit(data_dir: &Path, id: u64) -> (Option<i32>, String) {
    let ports = free_ports(2);
    let log = tempfile::NamedTempFile::new().expect("a log file");
    let mut child = Launch::new(VNETD)
        .args([
            "--id",
            &id.to_string(),
            "--name",
            "unit-a",
            "--role",
            "unit",
        ])
        .arg("--data-dir")
        .arg(data_dir)
        .args(["--api-listen", &ports[0].to_string()])
        .args(["--peer-listen", &ports[1].to_string()])
        .args(["--initial-cluster", &format!("{id}=unit-a@{}", ports[1])])
        .log(log.path())
        .spawn()
        .expect("spawn vnetd");
    let status = wait_for("vnetd exits", || {
        let exited = child.try_wait().expect("try_wait");
        async move { exited }
    })
    .await;
    let output = std::fs::read_to_string(log.path()).expect("read its log");
    (status.code(), output)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_dir_of_a_newer_format_or_of_another_node_is_refused_with_exit_1() {
    let dir = tempfile::tempdir().expect("tempdir");
    let newer = dir.path().join("newer");
    std::fs::create_dir_all(&newer).expect("dir");
    std::fs::write(
        newer.join("vnet-data.json"),
        r#"{"format_version": 3, "node_id": 1}"#,
    )
    .expect("write");
    let (code, stderr) = run_to_exit(&newer, 1).await;
    println!("newer format: {stderr}");
    assert_eq!(code, Some(1));
    assert!(stderr.contains("format version 3"), "{stderr}");
    assert!(
        !newer.join("wal").exists(),
        "the store was opened before the check"
    );

    let other = dir.path().join("other");
    std::fs::create_dir_all(&other).expect("dir");
    std::fs::write(
        other.join("vnet-data.json"),
        r#"{"format_version": 1, "node_id": 5}"#,
    )
    .expect("write");
    let (code, stderr) = run_to_exit(&other, 1).await;
    println!("other node: {stderr}");
    assert_eq!(code, Some(1));
    assert!(
        stderr.contains("node id 5") && stderr.contains("--id 1"),
        "{stderr}"
    );
}
