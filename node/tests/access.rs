//! Roles and audit through the public API: every RPC is checked before it runs, refusals name
//! the principal, its role and the permission, the actor of a change is the principal (a
//! client's actor header only sits beside it, also through a forwarding follower), and the audit
//! log records refused and accepted calls with their fields.
//!
//! The principals come from a test-only source (`PrincipalSource::Test`, reachable only through
//! `vnet_node::run_with`): the header `x-test-principal` names one, `none` sends none, and no
//! header is a client of a server without TLS.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use tonic::transport::Channel;
use tonic::Code;
use vnet_node::auth::edge::PrincipalSource;
use vnet_node::auth::roles::RPCS;
use vnet_node::auth::Principal;
use vnet_proto::vnet::v1 as pb;
use vnet_proto::vnet::v1::access_service_client::AccessServiceClient;

const TEST_PRINCIPAL: &str = "x-test-principal";

fn test_principals() -> PrincipalSource {
    PrincipalSource::Test(Arc::new(|headers: &http::HeaderMap| {
        match headers
            .get(TEST_PRINCIPAL)
            .map(|v| v.to_str().unwrap_or(""))
        {
            None => Some(Principal::Insecure),
            Some("none") => None,
            Some(name) => match name.strip_prefix("node:") {
                Some(id) => id.parse().ok().map(Principal::Node),
                None => Some(Principal::Client(name.to_string())),
            },
        }
    }))
}

/// Adds the test principal (and an actor header, if given) to every call.
#[derive(Clone)]
struct As {
    principal: &'static str,
    note: Option<&'static str>,
}

impl tonic::service::Interceptor for As {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        request.metadata_mut().insert(
            TEST_PRINCIPAL,
            self.principal.parse().expect("an ASCII principal"),
        );
        if let Some(note) = self.note {
            request.metadata_mut().insert(
                vnet_node::api::ACTOR_HEADER,
                note.parse().expect("an ASCII note"),
            );
        }
        Ok(request)
    }
}

type Intercepted = tonic::codegen::InterceptedService<Channel, As>;

fn access(node: &TestNode, principal: &'static str) -> AccessServiceClient<Intercepted> {
    AccessServiceClient::with_interceptor(
        channel(node),
        As {
            principal,
            note: None,
        },
    )
}

fn profiles(
    node: &TestNode,
    principal: &'static str,
    note: Option<&'static str>,
) -> pb::profile_service_client::ProfileServiceClient<Intercepted> {
    pb::profile_service_client::ProfileServiceClient::with_interceptor(
        channel(node),
        As { principal, note },
    )
}

fn channel(node: &TestNode) -> Channel {
    tonic::transport::Endpoint::from_shared(format!("http://{}", node.api_addr))
        .expect("endpoint")
        .connect_lazy()
}

/// Calls `method` with an empty message as `principal`; the status it answers with, or OK.
async fn call_empty(node: &TestNode, method: &str, principal: &str) -> Code {
    let mut grpc = tonic::client::Grpc::new(channel(node));
    grpc.ready().await.expect("the channel is ready");
    let mut request = tonic::Request::new(());
    request
        .metadata_mut()
        .insert(TEST_PRINCIPAL, principal.parse().expect("ASCII"));
    let path: http::uri::PathAndQuery = method.parse().expect("a gRPC path");
    let codec = tonic_prost::ProstCodec::<(), ()>::default();
    // A streaming answer (Watch) that is let through never ends by itself: not refused.
    match tokio::time::timeout(Duration::from_secs(2), grpc.unary(request, path, codec)).await {
        Ok(Ok(_)) | Err(_) => Code::Ok,
        Ok(Err(status)) => status.code(),
    }
}

async fn grant(node: &TestNode, principal: &str, role: pb::AccessRole) {
    access(node, "root")
        .grant_role(pb::GrantRoleRequest {
            principal: principal.into(),
            role: role as i32,
        })
        .await
        .unwrap_or_else(|e| panic!("granting {principal}: {e:?}"));
}

async fn cluster_with_roles() -> (TestCluster, u64) {
    let cluster = TestCluster::start_with_principals(
        &["unit-a", "unit-b", "witness"],
        test_principals(),
        Some("root"),
    )
    .await;
    let leader = cluster.leader().await;
    // The bootstrap admin is in place once root may list the roles.
    wait_for("the bootstrap admin is granted", || async {
        let roles = access(cluster.node(leader), "root")
            .list_roles(pb::ListRolesRequest::default())
            .await
            .ok()?
            .into_inner()
            .roles;
        roles
            .iter()
            .any(|r| r.principal == "root" && r.role == pb::AccessRole::Admin as i32)
            .then_some(())
    })
    .await;
    let node = cluster.node(leader);
    grant(node, "ops", pb::AccessRole::Operator).await;
    grant(node, "viewer", pb::AccessRole::Viewer).await;
    (cluster, leader)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rpc_is_checked_against_the_role_of_its_principal() {
    let (mut cluster, leader) = cluster_with_roles().await;
    let node = cluster.node(leader);
    for (method, permission) in RPCS {
        // No principal at all, and a principal without a role: refused before anything runs.
        assert_eq!(
            call_empty(node, method, "none").await,
            Code::Unauthenticated,
            "{method} without a principal"
        );
        assert_eq!(
            call_empty(node, method, "stranger").await,
            Code::PermissionDenied,
            "{method} by a principal without a role"
        );
        for (principal, least) in [
            ("viewer", vnet_model::AccessRole::Viewer),
            ("ops", vnet_model::AccessRole::Operator),
        ] {
            let code = call_empty(node, method, principal).await;
            if least < permission.least_role() {
                assert_eq!(code, Code::PermissionDenied, "{method} by {principal}");
            } else {
                assert_ne!(code, Code::PermissionDenied, "{method} by {principal}");
                assert_ne!(code, Code::Unauthenticated, "{method} by {principal}");
            }
        }
    }
    cluster.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_name_the_role_the_actor_is_the_principal_and_both_are_audited() {
    let (mut cluster, leader) = cluster_with_roles().await;
    let follower_id = cluster.other_than(leader);
    let follower = cluster.node(follower_id);
    let leader_node = cluster.node(leader);
    create_pools(
        channel(leader_node),
        "02:00:00:00:00:ff",
        "20:00:00:25:b5:00:00:ff",
    )
    .await
    .expect("pools, as a client of a server without TLS");

    // A viewer cannot write: refused, naming who, its role and what was needed.
    let refused = profiles(follower, "viewer", None)
        .create_profile(pb::CreateProfileRequest {
            profile: Some(sample_profile("web-01", 1)),
        })
        .await
        .expect_err("a viewer may not create a profile");
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    for needle in ["\"viewer\"", "role viewer", "profiles.write", "operator"] {
        assert!(
            refused.message().contains(needle),
            "{refused:?} lacks {needle}"
        );
    }
    // An operator cannot change pools or membership.
    let refused = pb::pool_service_client::PoolServiceClient::with_interceptor(
        channel(follower),
        As {
            principal: "ops",
            note: None,
        },
    )
    .delete_pool(pb::DeletePoolRequest {
        name: "macs".into(),
        expected_revision: 0,
    })
    .await
    .expect_err("an operator may not delete a pool");
    assert_eq!(refused.code(), Code::PermissionDenied);
    assert!(refused.message().contains("pools.write"), "{refused:?}");
    let refused = pb::cluster_service_client::ClusterServiceClient::with_interceptor(
        channel(follower),
        As {
            principal: "ops",
            note: None,
        },
    )
    .remove_member(pb::RemoveMemberRequest { id: 3 })
    .await
    .expect_err("an operator may not remove a member");
    assert_eq!(refused.code(), Code::PermissionDenied);
    assert!(refused.message().contains("members.write"), "{refused:?}");

    // An operator writes through a follower, claiming to be the placement controller: the
    // change is the operator's, the claim only a note beside it.
    let created = profiles(follower, "ops", Some("system/placement"))
        .create_profile(pb::CreateProfileRequest {
            profile: Some(sample_profile("web-01", 1)),
        })
        .await
        .expect("an operator creates a profile")
        .into_inner()
        .profile
        .expect("the profile");
    let mut events = pb::watch_service_client::WatchServiceClient::with_interceptor(
        channel(follower),
        As {
            principal: "viewer",
            note: None,
        },
    )
    .watch(pb::WatchRequest {
        from_revision: created.revision,
    })
    .await
    .expect("a viewer may watch")
    .into_inner();
    let event = tokio::time::timeout(WAIT_DEADLINE, events.message())
        .await
        .expect("the event in time")
        .expect("the stream")
        .expect("an event");
    assert_eq!(event.revision, created.revision);
    assert_eq!(event.actor, "ops");
    assert_eq!(event.on_behalf_of, "system/placement");

    // A refused call's target is not validated first; the audit line cuts it as every echo does.
    let huge = "x".repeat(1_000_000);
    let mut profile = sample_profile("web-02", 2);
    profile.name = huge;
    let refused = profiles(follower, "stranger", None)
        .create_profile(pb::CreateProfileRequest {
            profile: Some(profile),
        })
        .await
        .expect_err("a principal without a role");
    assert_eq!(refused.code(), Code::PermissionDenied);

    // The follower's audit log holds both calls, with every field.
    let records = access(follower, "root")
        .read_audit(pb::ReadAuditRequest::default())
        .await
        .expect("an admin reads the audit")
        .into_inner();
    assert_eq!(records.node, follower.name);
    let create = "/vnet.v1.ProfileService/CreateProfile";
    let denied = records
        .records
        .iter()
        .find(|r| r.method == create && r.principal == "viewer")
        .unwrap_or_else(|| panic!("no refused create in {:?}", records.records));
    assert_eq!(
        (
            denied.role.as_str(),
            denied.node.as_str(),
            denied.target.as_str(),
            denied.outcome.as_str()
        ),
        (
            "viewer",
            follower.name.as_str(),
            "web-01",
            "PERMISSION_DENIED"
        )
    );
    assert!(denied.message.contains("profiles.write"), "{denied:?}");
    assert!(denied.time_unix_ms > 0);
    let accepted = records
        .records
        .iter()
        .find(|r| r.method == create && r.principal == "ops")
        .unwrap_or_else(|| panic!("no accepted create in {:?}", records.records));
    assert_eq!(
        (
            accepted.role.as_str(),
            accepted.target.as_str(),
            accepted.outcome.as_str(),
            accepted.on_behalf_of.as_str()
        ),
        ("operator", "web-01", "OK", "system/placement")
    );
    assert!(records
        .records
        .iter()
        .any(|r| r.method.ends_with("/DeletePool") && r.outcome == "PERMISSION_DENIED"));
    let stranger = records
        .records
        .iter()
        .find(|r| r.principal == "stranger")
        .unwrap_or_else(|| panic!("no record of the stranger in {:?}", records.records));
    assert!(stranger.target.len() < 200, "{}", stranger.target.len());
    assert!(
        stranger.target.ends_with("(1000000 characters)"),
        "{}",
        stranger.target
    );
    // A read that was allowed is not audited; the reads of the audit are.
    assert!(!records.records.iter().any(|r| r.method.ends_with("/Watch")));
    let filtered = access(follower, "root")
        .read_audit(pb::ReadAuditRequest {
            principal: "ops".into(),
            ..Default::default()
        })
        .await
        .expect("filtered")
        .into_inner()
        .records;
    assert!(!filtered.is_empty() && filtered.iter().all(|r| r.principal == "ops"));
    let later = access(follower, "root")
        .read_audit(pb::ReadAuditRequest {
            since_unix_ms: accepted.time_unix_ms + 1,
            ..Default::default()
        })
        .await
        .expect("since")
        .into_inner()
        .records;
    assert!(later.iter().all(|r| r.time_unix_ms > accepted.time_unix_ms));

    // The audit is the admin's; the last admin stays.
    let refused = access(follower, "viewer")
        .read_audit(pb::ReadAuditRequest::default())
        .await
        .expect_err("a viewer may not read the audit");
    assert_eq!(refused.code(), Code::PermissionDenied);
    let refused = access(follower, "root")
        .revoke_role(pb::RevokeRoleRequest {
            principal: "root".into(),
        })
        .await
        .expect_err("the only admin stays");
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    // A revoked role is refused on every node once applied there.
    access(leader_node, "root")
        .revoke_role(pb::RevokeRoleRequest {
            principal: "ops".into(),
        })
        .await
        .expect("revoke");
    wait_for("the revocation reaches the follower", || async {
        let code = profiles(follower, "ops", None)
            .get_profile(pb::GetProfileRequest {
                name: "web-01".into(),
                consistency: pb::ReadConsistency::Local as i32,
            })
            .await
            .err()?
            .code();
        (code == Code::PermissionDenied).then_some(())
    })
    .await;
    cluster.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_tls_everything_is_allowed_and_the_header_is_only_a_note() {
    let mut cluster = TestCluster::start(&["unit-a", "unit-b", "witness"]).await;
    let leader = cluster.leader().await;
    let node = cluster.node(leader);
    create_pools(
        node.channel().await,
        "02:00:00:00:00:ff",
        "20:00:00:25:b5:00:00:ff",
    )
    .await
    .expect("pools");
    let mut request = tonic::Request::new(pb::CreateProfileRequest {
        profile: Some(sample_profile("web-01", 1)),
    });
    request.metadata_mut().insert(
        vnet_node::api::ACTOR_HEADER,
        "system/placement".parse().expect("ASCII"),
    );
    let created = node
        .profiles()
        .await
        .create_profile(request)
        .await
        .expect("an insecure client may write")
        .into_inner()
        .profile
        .expect("profile");
    let mut events = node
        .watch()
        .await
        .watch(pb::WatchRequest {
            from_revision: created.revision,
        })
        .await
        .expect("watch")
        .into_inner();
    let event = tokio::time::timeout(WAIT_DEADLINE, events.message())
        .await
        .expect("in time")
        .expect("stream")
        .expect("event");
    assert_eq!(event.actor, "insecure");
    assert_eq!(event.on_behalf_of, "system/placement");
    cluster.stop_all().await;
}
