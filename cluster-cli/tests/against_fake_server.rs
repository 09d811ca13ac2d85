//! Runs the real `vnetctl` binary against an in-process fake of the public API, to check what
//! unit tests cannot: the gRPC plumbing, failover across real sockets, exit codes and stdout.
//!
//! The fake is deliberately small (an in-memory map, no Raft): it stands in for vnetd only as
//! far as the wire contract goes. Tests against real vnetd processes belong to the end-to-end
//! suites.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_stream::wrappers::TcpListenerStream;
use tonic::{Request, Response, Status};
use vnet_proto::vnet::v1 as pb;
use vnet_proto::vnet::v1::cluster_service_server::{ClusterService, ClusterServiceServer};
use vnet_proto::vnet::v1::profile_service_server::{ProfileService, ProfileServiceServer};
use vnet_proto::vnet::v1::watch_service_server::{WatchService, WatchServiceServer};

/// Upper bound on any one vnetctl run in these tests.
const RUN_DEADLINE: Duration = Duration::from_secs(30);

#[derive(Default)]
struct State {
    revision: u64,
    profiles: BTreeMap<String, pb::Profile>,
    history: Vec<pb::WatchEvent>,
    next_mac: u64,
}

/// One fake node. Nodes made from the same `Arc<Mutex<State>>` share their data, like replicas.
#[derive(Clone)]
struct FakeNode {
    state: Arc<Mutex<State>>,
    /// Answer every unary call with UNAVAILABLE, like a node that knows no leader.
    unavailable: bool,
    /// Watch streams from this node break with UNAVAILABLE after this revision.
    watch_breaks_after: Option<u64>,
}

impl FakeNode {
    fn check(&self) -> Result<(), Status> {
        if self.unavailable {
            Err(Status::unavailable("no leader known"))
        } else {
            Ok(())
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .expect("no test thread panics while holding the state")
    }
}

fn put_event(state: &mut State, profile: &pb::Profile) {
    state.history.push(pb::WatchEvent {
        revision: state.revision,
        actor: "test".into(),
        change: Some(pb::watch_event::Change::ProfilePut(profile.clone())),
    });
}

#[tonic::async_trait]
impl ProfileService for FakeNode {
    async fn create_profile(
        &self,
        request: Request<pb::CreateProfileRequest>,
    ) -> Result<Response<pb::CreateProfileResponse>, Status> {
        self.check()?;
        let mut profile = request
            .into_inner()
            .profile
            .ok_or_else(|| Status::invalid_argument("profile is missing"))?;
        let mut state = self.lock();
        if state.profiles.contains_key(&profile.name) {
            return Err(Status::already_exists(format!(
                "profile {:?} exists",
                profile.name
            )));
        }
        for vnic in &mut profile.vnics {
            if vnic.mac.is_empty() {
                state.next_mac += 1;
                vnic.mac = format!("02:00:00:00:00:{:02x}", state.next_mac);
            }
        }
        state.revision += 1;
        profile.revision = state.revision;
        profile.created_revision = state.revision;
        state.profiles.insert(profile.name.clone(), profile.clone());
        put_event(&mut state, &profile);
        Ok(Response::new(pb::CreateProfileResponse {
            profile: Some(profile),
        }))
    }

    async fn get_profile(
        &self,
        request: Request<pb::GetProfileRequest>,
    ) -> Result<Response<pb::GetProfileResponse>, Status> {
        self.check()?;
        let name = request.into_inner().name;
        let state = self.lock();
        let profile = state
            .profiles
            .get(&name)
            .cloned()
            .ok_or_else(|| Status::not_found(format!("profile {name:?} does not exist")))?;
        Ok(Response::new(pb::GetProfileResponse {
            profile: Some(profile),
            revision: state.revision,
        }))
    }

    async fn list_profiles(
        &self,
        request: Request<pb::ListProfilesRequest>,
    ) -> Result<Response<pb::ListProfilesResponse>, Status> {
        self.check()?;
        let request = request.into_inner();
        let state = self.lock();
        let page: Vec<pb::Profile> = state
            .profiles
            .values()
            .filter(|p| p.name > request.page_token)
            .filter(|p| request.server.is_empty() || p.server == request.server)
            .take(request.page_size as usize)
            .cloned()
            .collect();
        let more = page.len() == request.page_size as usize
            && state
                .profiles
                .keys()
                .any(|name| Some(name) > page.last().map(|p| &p.name));
        Ok(Response::new(pb::ListProfilesResponse {
            next_page_token: if more {
                page.last().map(|p| p.name.clone()).unwrap_or_default()
            } else {
                String::new()
            },
            profiles: page,
            revision: state.revision,
        }))
    }

    async fn update_profile(
        &self,
        request: Request<pb::UpdateProfileRequest>,
    ) -> Result<Response<pb::UpdateProfileResponse>, Status> {
        self.check()?;
        let request = request.into_inner();
        let mut profile = request
            .profile
            .ok_or_else(|| Status::invalid_argument("profile is missing"))?;
        let mut state = self.lock();
        let current = state
            .profiles
            .get(&profile.name)
            .cloned()
            .ok_or_else(|| Status::not_found(format!("profile {:?}", profile.name)))?;
        if request.expected_revision != 0 && request.expected_revision != current.revision {
            return Err(Status::aborted(format!(
                "expected revision {}, current {}",
                request.expected_revision, current.revision
            )));
        }
        state.revision += 1;
        profile.revision = state.revision;
        profile.created_revision = current.created_revision;
        state.profiles.insert(profile.name.clone(), profile.clone());
        put_event(&mut state, &profile);
        Ok(Response::new(pb::UpdateProfileResponse {
            profile: Some(profile),
        }))
    }

    async fn delete_profile(
        &self,
        request: Request<pb::DeleteProfileRequest>,
    ) -> Result<Response<pb::DeleteProfileResponse>, Status> {
        self.check()?;
        let name = request.into_inner().name;
        let mut state = self.lock();
        state
            .profiles
            .remove(&name)
            .ok_or_else(|| Status::not_found(format!("profile {name:?}")))?;
        state.revision += 1;
        let revision = state.revision;
        state.history.push(pb::WatchEvent {
            revision,
            actor: "test".into(),
            change: Some(pb::watch_event::Change::ProfileDeleted(name)),
        });
        Ok(Response::new(pb::DeleteProfileResponse { revision }))
    }
}

#[tonic::async_trait]
impl ClusterService for FakeNode {
    async fn get_cluster_status(
        &self,
        _request: Request<pb::GetClusterStatusRequest>,
    ) -> Result<Response<pb::GetClusterStatusResponse>, Status> {
        self.check()?;
        let revision = self.lock().revision;
        Ok(Response::new(pb::GetClusterStatusResponse {
            leader_id: Some(1),
            leader_name: "unit-a".into(),
            term: 1,
            commit_index: revision,
            applied_index: revision,
            revision,
            members: vec![],
            responder_id: 1,
        }))
    }

    async fn add_member(
        &self,
        _request: Request<pb::AddMemberRequest>,
    ) -> Result<Response<pb::AddMemberResponse>, Status> {
        Err(Status::unimplemented("not faked"))
    }

    async fn promote_member(
        &self,
        _request: Request<pb::PromoteMemberRequest>,
    ) -> Result<Response<pb::PromoteMemberResponse>, Status> {
        Err(Status::unimplemented("not faked"))
    }

    async fn remove_member(
        &self,
        _request: Request<pb::RemoveMemberRequest>,
    ) -> Result<Response<pb::RemoveMemberResponse>, Status> {
        Err(Status::unimplemented("not faked"))
    }

    async fn transfer_leader(
        &self,
        _request: Request<pb::TransferLeaderRequest>,
    ) -> Result<Response<pb::TransferLeaderResponse>, Status> {
        Err(Status::unimplemented("not faked"))
    }
}

type EventStream =
    std::pin::Pin<Box<dyn futures::Stream<Item = Result<pb::WatchEvent, Status>> + Send>>;

#[tonic::async_trait]
impl WatchService for FakeNode {
    type WatchStream = EventStream;

    /// Sends the recorded history from `from_revision` on; a node with `watch_breaks_after`
    /// then fails the stream, the others keep it open.
    async fn watch(
        &self,
        request: Request<pb::WatchRequest>,
    ) -> Result<Response<EventStream>, Status> {
        let from = request.into_inner().from_revision;
        let events: Vec<Result<pb::WatchEvent, Status>> = self
            .lock()
            .history
            .iter()
            .filter(|event| event.revision >= from)
            .filter(|event| {
                self.watch_breaks_after
                    .is_none_or(|last| event.revision <= last)
            })
            .cloned()
            .map(Ok)
            .collect();
        let tail: EventStream = match self.watch_breaks_after {
            Some(_) => Box::pin(futures::stream::iter([Err(Status::unavailable(
                "shutting down",
            ))])),
            None => Box::pin(futures::stream::pending()),
        };
        Ok(Response::new(Box::pin(futures::StreamExt::chain(
            futures::stream::iter(events),
            tail,
        ))))
    }
}

/// Serves `node` on a fresh loopback port for the rest of the test.
async fn serve(node: FakeNode) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(ProfileServiceServer::new(node.clone()))
            .add_service(ClusterServiceServer::new(node.clone()))
            .add_service(WatchServiceServer::new(node))
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    address
}

/// A loopback address nothing listens on.
fn dead_address() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().to_string()
}

fn node(state: &Arc<Mutex<State>>) -> FakeNode {
    FakeNode {
        state: state.clone(),
        unavailable: false,
        watch_breaks_after: None,
    }
}

/// Runs vnetctl to completion off the async runtime, so the fake servers keep serving.
async fn vnetctl(endpoints: &str, args: &[&str]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_vnetctl"));
    command
        .args(["--endpoints", endpoints, "--timeout", "2s"])
        .args(args)
        .env_remove("VNET_ENDPOINTS");
    let output = tokio::time::timeout(
        RUN_DEADLINE,
        tokio::task::spawn_blocking(move || command.output()),
    )
    .await
    .expect("vnetctl finished within the deadline")
    .unwrap()
    .unwrap();
    output
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_then_get_skips_a_dead_endpoint_and_prints_the_documented_json() {
    let state = Arc::new(Mutex::new(State::default()));
    let live = serve(node(&state)).await;
    let endpoints = format!("{},{live}", dead_address());

    let created = vnetctl(
        &endpoints,
        &[
            "profile",
            "create",
            "web-01",
            "--server",
            "rack1-srv01",
            "--vnic",
            "eth0:net=prod:vlan=100:pool=macs",
            "--vhba",
            "fc0:fabric=a:wwpn=20:00:00:25:b5:00:00:01:wwnn=20:00:00:25:b5:00:01:01",
            "--failback",
            "manual",
        ],
    )
    .await;
    assert!(created.status.success(), "{}", stderr(&created));

    let got = vnetctl(&endpoints, &["-o", "json", "profile", "get", "web-01"]).await;
    assert_eq!(got.status.code(), Some(0), "{}", stderr(&got));
    let json: serde_json::Value = serde_json::from_str(&stdout(&got)).unwrap();
    assert_eq!(
        json,
        serde_json::json!({
            "name": "web-01",
            "server": "rack1-srv01",
            "vnics": [{
                "name": "eth0", "mac": "02:00:00:00:00:01", "network": "prod", "vlan": 100,
                "pool": "macs",
            }],
            "vhbas": [{
                "name": "fc0", "wwpn": "20:00:00:25:b5:00:00:01",
                "wwnn": "20:00:00:25:b5:00:01:01", "fabric": "a", "pool": null,
            }],
            "preferred_unit": null,
            "failback": "manual",
            "revision": 1,
            "created_revision": 1,
        })
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_codes_distinguish_rejected_usage_and_unreachable() {
    let state = Arc::new(Mutex::new(State::default()));
    let live = serve(node(&state)).await.to_string();

    let missing = vnetctl(&live, &["profile", "get", "nope"]).await;
    assert_eq!(missing.status.code(), Some(1));
    assert!(
        stderr(&missing).contains("NOT_FOUND"),
        "{}",
        stderr(&missing)
    );

    let missing_json = vnetctl(&live, &["-o", "json", "profile", "get", "nope"]).await;
    let error: serde_json::Value = serde_json::from_str(stderr(&missing_json).trim()).unwrap();
    assert_eq!(error["error"]["code"], "NOT_FOUND");
    assert_eq!(error["exit_code"], 1);

    let usage = vnetctl(
        &live,
        &[
            "profile",
            "create",
            "x",
            "--server",
            "s",
            "--vnic",
            "eth0:net=p:vlan=5000",
        ],
    )
    .await;
    assert_eq!(usage.status.code(), Some(2));
    assert!(stderr(&usage).contains("5000"), "{}", stderr(&usage));

    let nobody = format!("{},{}", dead_address(), dead_address());
    let unreachable = vnetctl(&nobody, &["status"]).await;
    assert_eq!(unreachable.status.code(), Some(3));
    assert!(
        stderr(&unreachable).contains("no endpoint reachable"),
        "{}",
        stderr(&unreachable)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_without_leader_is_skipped_and_alone_is_reported_as_unavailable() {
    let state = Arc::new(Mutex::new(State::default()));
    let leaderless = serve(FakeNode {
        unavailable: true,
        ..node(&state)
    })
    .await;
    let live = serve(node(&state)).await;

    let ok = vnetctl(&format!("{leaderless},{live}"), &["status"]).await;
    assert_eq!(ok.status.code(), Some(0), "{}", stderr(&ok));
    assert!(
        stdout(&ok).contains("leader:    1 (unit-a)"),
        "{}",
        stdout(&ok)
    );

    let alone = vnetctl(&leaderless.to_string(), &["status"]).await;
    assert_eq!(alone.status.code(), Some(1));
    assert!(stderr(&alone).contains("UNAVAILABLE"), "{}", stderr(&alone));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_pages_through_everything_and_limit_truncates() {
    let state = Arc::new(Mutex::new(State::default()));
    let live = serve(node(&state)).await.to_string();
    for index in 0..7 {
        let name = format!("p{index}");
        let created = vnetctl(
            &live,
            &[
                "profile",
                "create",
                &name,
                "--server",
                "s",
                "--vnic",
                "eth0:net=prod:pool=m",
            ],
        )
        .await;
        assert!(created.status.success(), "{}", stderr(&created));
    }
    let listed = vnetctl(
        &live,
        &["-o", "json", "profile", "list", "--page-size", "3"],
    )
    .await;
    let json: serde_json::Value = serde_json::from_str(&stdout(&listed)).unwrap();
    let names: Vec<&str> = json["profiles"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["p0", "p1", "p2", "p3", "p4", "p5", "p6"]);
    assert_eq!(json["truncated"], false);
    assert_eq!(json["revision"], 7);

    let limited = vnetctl(
        &live,
        &[
            "-o",
            "json",
            "profile",
            "list",
            "--page-size",
            "3",
            "--limit",
            "4",
        ],
    )
    .await;
    let json: serde_json::Value = serde_json::from_str(&stdout(&limited)).unwrap();
    assert_eq!(json["profiles"].as_array().unwrap().len(), 4);
    assert_eq!(json["truncated"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_by_flags_keeps_the_mac_and_is_conditional_on_what_it_read() {
    let state = Arc::new(Mutex::new(State::default()));
    let live = serve(node(&state)).await.to_string();
    let created = vnetctl(
        &live,
        &[
            "profile",
            "create",
            "web-01",
            "--server",
            "s",
            "--vnic",
            "eth0:net=prod:vlan=100:pool=m",
        ],
    )
    .await;
    assert!(created.status.success(), "{}", stderr(&created));

    let updated = vnetctl(
        &live,
        &[
            "-o",
            "json",
            "profile",
            "update",
            "web-01",
            "--vnic",
            "eth0:net=prod:vlan=200",
        ],
    )
    .await;
    assert_eq!(updated.status.code(), Some(0), "{}", stderr(&updated));
    let json: serde_json::Value = serde_json::from_str(&stdout(&updated)).unwrap();
    assert_eq!(json["vnics"][0]["vlan"], 200);
    assert_eq!(
        json["vnics"][0]["mac"], "02:00:00:00:00:01",
        "the MAC survived the edit"
    );
    assert_eq!(json["revision"], 2);

    let stale = vnetctl(
        &live,
        &[
            "profile",
            "update",
            "web-01",
            "--server",
            "t",
            "--expected-revision",
            "1",
        ],
    )
    .await;
    assert_eq!(stale.status.code(), Some(1));
    assert!(stderr(&stale).contains("ABORTED"), "{}", stderr(&stale));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_resumes_on_the_next_endpoint_without_gaps_or_repeats() {
    let state = Arc::new(Mutex::new(State::default()));
    let breaking = serve(FakeNode {
        watch_breaks_after: Some(2),
        ..node(&state)
    })
    .await;
    let steady = serve(node(&state)).await;
    for index in 0..4 {
        let name = format!("w{index}");
        let created = vnetctl(
            &steady.to_string(),
            &[
                "profile",
                "create",
                &name,
                "--server",
                "s",
                "--vnic",
                "eth0:net=prod:pool=m",
            ],
        )
        .await;
        assert!(created.status.success(), "{}", stderr(&created));
    }

    let mut child = Command::new(env!("CARGO_BIN_EXE_vnetctl"))
        .args([
            "--endpoints",
            &format!("{breaking},{steady}"),
            "-o",
            "json",
            "watch",
            "--from",
            "1",
        ])
        .env_remove("VNET_ENDPOINTS")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = child.stdout.take().unwrap();
    let lines = tokio::task::spawn_blocking(move || {
        let deadline = Instant::now() + RUN_DEADLINE;
        let mut lines = Vec::new();
        for line in BufReader::new(out).lines() {
            lines.push(line.unwrap());
            if lines.len() == 4 || Instant::now() > deadline {
                break;
            }
        }
        lines
    });
    let lines = tokio::time::timeout(RUN_DEADLINE, lines).await;
    child.kill().unwrap();
    let output = child.wait_with_output().unwrap();
    let lines = lines.expect("four events within the deadline").unwrap();
    let revisions: Vec<u64> = lines
        .iter()
        .map(|line| {
            serde_json::from_str::<serde_json::Value>(line).unwrap()["revision"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(revisions, vec![1, 2, 3, 4], "stderr: {}", stderr(&output));
    assert!(
        stderr(&output).contains("resuming at revision 3"),
        "{}",
        stderr(&output)
    );
}
