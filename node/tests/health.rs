//! The standard gRPC services on the public port: health (`grpc.health.v1`) follows whether the
//! node can serve, and reflection lists the public services, so `grpc_health_probe` and
//! `grpcurl` work without our `.proto` files.

mod common;

use common::{wait_for, TestCluster};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
use tonic_reflection::pb::v1::ServerReflectionRequest;

async fn health(node: &common::TestNode, service: &str) -> Option<ServingStatus> {
    let response = HealthClient::new(node.channel().await)
        .check(HealthCheckRequest {
            service: service.to_owned(),
        })
        .await
        .ok()?;
    ServingStatus::try_from(response.into_inner().status).ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_follows_the_leader_and_reflection_lists_the_public_api() {
    let mut cluster = TestCluster::start(&["unit-a", "unit-b", "witness"]).await;
    let leader = cluster.leader().await;
    for node in &cluster.nodes {
        for service in ["", "vnet.v1.ProfileService", "vnet.v1.WatchService"] {
            wait_for("every node reports SERVING", || async {
                (health(node, service).await? == ServingStatus::Serving).then_some(())
            })
            .await;
        }
    }

    let mut reflection = ServerReflectionClient::new(cluster.node(leader).channel().await);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut answers = reflection
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .expect("reflection answers")
        .into_inner();
    let answer = answers
        .message()
        .await
        .expect("a reflection answer")
        .expect("one message");
    let Some(MessageResponse::ListServicesResponse(list)) = answer.message_response else {
        panic!("expected a service list, got {answer:?}");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for served in [
        "vnet.v1.ProfileService",
        "vnet.v1.PoolService",
        "vnet.v1.ClusterService",
        "vnet.v1.WatchService",
        "grpc.health.v1.Health",
    ] {
        assert!(names.iter().any(|n| n == served), "{served} in {names:?}");
    }
    assert!(
        !names
            .iter()
            .any(|n| n.starts_with("vnet.raft") || n.starts_with("vnet.switch")),
        "only what the public port serves: {names:?}"
    );

    // Without a quorum the survivor loses its leader and says so.
    let survivor = cluster.other_than(leader);
    for id in [1, 2, 3].into_iter().filter(|id| *id != survivor) {
        cluster.node_mut(id).stop().await;
    }
    let node = cluster.node(survivor);
    wait_for("the survivor reports NOT_SERVING", || async {
        (health(node, "").await? == ServingStatus::NotServing).then_some(())
    })
    .await;
    assert_eq!(
        health(node, "vnet.v1.ClusterService").await,
        Some(ServingStatus::NotServing)
    );
    cluster.stop_all().await;
}
