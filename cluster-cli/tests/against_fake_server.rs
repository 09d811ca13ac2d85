//! Runs the real `vnetctl` binary against an in-process fake of the public API, to check what
//! unit tests cannot: the gRPC plumbing, failover across real sockets, exit codes and stdout.
//!
//! The fake is deliberately small (an in-memory map, no Raft): it stands in for vnetd only as
//! far as the wire contract goes. Tests against real vnetd processes belong to the end-to-end
//! suites.

use std::collections::{BTreeMap, BTreeSet};
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
    /// Units by name: what each presents and whether it is draining.
    units: BTreeMap<String, FakeUnit>,
    /// Placements by profile name (independent of `profiles`, to keep the fake small).
    placements: BTreeMap<String, FakePlacement>,
    /// Every Drain, Undrain and Failover request received, in order.
    requests: Vec<String>,
}

#[derive(Default)]
struct FakeUnit {
    draining: bool,
    presented: BTreeSet<String>,
}

#[derive(Default)]
struct FakePlacement {
    unit: Option<String>,
    /// A planned move: (from, to).
    moving: Option<(String, String)>,
    reason: String,
}

impl State {
    /// A unit that is not `except` and not draining, if any.
    fn target(&self, except: &str) -> Option<String> {
        self.units
            .iter()
            .find(|(name, unit)| name.as_str() != except && !unit.draining)
            .map(|(name, _)| name.clone())
    }

    /// Starts a planned move of `profile` to `to`; the caller has checked both exist.
    fn start_move(&mut self, profile: &str, to: String, reason: String) {
        let placement = self.placements.get_mut(profile).expect("known profile");
        let from = placement.unit.take().expect("a placed profile");
        placement.moving = Some((from, to));
        placement.reason = reason;
    }

    /// The placement controller and the units' switches, one step per status read, so that a
    /// test sees every intermediate state without depending on timing: a draining unit's
    /// profiles start moving when a target exists; then for the first moving profile, either
    /// the source stops presenting it, or (once it has) the target is given and presents it.
    fn advance(&mut self) {
        let stranded: Vec<(String, String)> = self
            .placements
            .iter()
            .filter_map(|(name, p)| {
                let unit = p.unit.as_ref()?;
                self.units[unit]
                    .draining
                    .then(|| (name.clone(), unit.clone()))
            })
            .collect();
        for (profile, unit) in stranded {
            if let Some(to) = self.target(&unit) {
                self.start_move(&profile, to, format!("drain of {unit}"));
            }
        }
        let Some((profile, (from, to))) = self
            .placements
            .iter()
            .find_map(|(name, p)| p.moving.clone().map(|m| (name.clone(), m)))
        else {
            return;
        };
        let source = self.units.get_mut(&from).expect("known unit");
        if !source.presented.remove(&profile) {
            let placement = self.placements.get_mut(&profile).expect("known profile");
            placement.moving = None;
            placement.unit = Some(to.clone());
            self.units
                .get_mut(&to)
                .expect("known unit")
                .presented
                .insert(profile);
        }
    }

    fn units_to_wire(&self) -> Vec<pb::UnitStatus> {
        self.units
            .iter()
            .enumerate()
            .map(|(index, (name, unit))| pb::UnitStatus {
                id: index as u64 + 1,
                name: name.clone(),
                lease: pb::LeaseHealth::Healthy as i32,
                lease_age_ms: Some(100),
                draining: unit.draining,
                presented: unit.presented.iter().cloned().collect(),
                load: self
                    .placements
                    .values()
                    .filter(|p| {
                        p.unit.as_ref() == Some(name)
                            || p.moving.as_ref().is_some_and(|(_, to)| to == name)
                    })
                    .count() as u32,
                capacity: 30,
                ..Default::default()
            })
            .collect()
    }

    fn placements_to_wire(&self) -> Vec<pb::ProfilePlacement> {
        self.placements
            .iter()
            .map(|(name, p)| {
                let presented_unit = self
                    .units
                    .iter()
                    .find(|(_, unit)| unit.presented.contains(name))
                    .map(|(unit, _)| unit.clone())
                    .unwrap_or_default();
                let state = match (&p.unit, &p.moving) {
                    (_, Some(_)) => pb::PlacementState::Moving,
                    (None, None) => pb::PlacementState::Unplaced,
                    (Some(unit), None) if *unit == presented_unit => pb::PlacementState::Presented,
                    (Some(_), None) => pb::PlacementState::Programming,
                };
                pb::ProfilePlacement {
                    profile: name.clone(),
                    desired_unit: p.unit.clone().unwrap_or_default(),
                    presented_unit,
                    state: state as i32,
                    reason: p.reason.clone(),
                    failed_over_from: String::new(),
                    moving_from: p.moving.as_ref().map(|m| m.0.clone()).unwrap_or_default(),
                    moving_to: p.moving.as_ref().map(|m| m.1.clone()).unwrap_or_default(),
                    revision: 1,
                }
            })
            .collect()
    }
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
        let mut state = self.lock();
        state.advance();
        let revision = state.revision;
        Ok(Response::new(pb::GetClusterStatusResponse {
            leader_id: Some(1),
            leader_name: "unit-a".into(),
            term: 1,
            commit_index: revision,
            applied_index: revision,
            revision,
            members: vec![],
            responder_id: 1,
            units: state.units_to_wire(),
            placements: state.placements_to_wire(),
        }))
    }

    async fn drain(
        &self,
        request: Request<pb::DrainRequest>,
    ) -> Result<Response<pb::DrainResponse>, Status> {
        self.check()?;
        let unit = request.into_inner().unit;
        let mut state = self.lock();
        state.requests.push(format!("drain {unit}"));
        let Some(record) = state.units.get_mut(&unit) else {
            return Err(Status::not_found(format!("unit {unit:?} does not exist")));
        };
        record.draining = true;
        state.revision += 1;
        let profiles = state
            .placements
            .iter()
            .filter(|(_, p)| p.unit.as_ref() == Some(&unit))
            .map(|(name, _)| name.clone())
            .collect();
        Ok(Response::new(pb::DrainResponse {
            revision: state.revision,
            profiles,
        }))
    }

    async fn undrain(
        &self,
        request: Request<pb::UndrainRequest>,
    ) -> Result<Response<pb::UndrainResponse>, Status> {
        self.check()?;
        let unit = request.into_inner().unit;
        let mut state = self.lock();
        state.requests.push(format!("undrain {unit}"));
        let Some(record) = state.units.get_mut(&unit) else {
            return Err(Status::not_found(format!("unit {unit:?} does not exist")));
        };
        record.draining = false;
        state.revision += 1;
        Ok(Response::new(pb::UndrainResponse {
            revision: state.revision,
        }))
    }

    async fn failover(
        &self,
        request: Request<pb::FailoverRequest>,
    ) -> Result<Response<pb::FailoverResponse>, Status> {
        self.check()?;
        let request = request.into_inner();
        let mut state = self.lock();
        state.requests.push(format!(
            "failover profile={:?} from={:?} to={:?}",
            request.profile, request.from_unit, request.to_unit
        ));
        if request.profile.is_empty() == request.from_unit.is_empty() {
            return Err(Status::invalid_argument(
                "set exactly one of profile and from_unit",
            ));
        }
        if !request.to_unit.is_empty() {
            match state.units.get(&request.to_unit) {
                None => {
                    return Err(Status::failed_precondition(format!(
                        "unit {:?} does not exist",
                        request.to_unit
                    )))
                }
                Some(unit) if unit.draining => {
                    return Err(Status::failed_precondition(format!(
                        "unit {} is draining",
                        request.to_unit
                    )))
                }
                Some(_) => {}
            }
        }
        let moves: Vec<(String, String)> = if request.profile.is_empty() {
            state
                .placements
                .iter()
                .filter(|(_, p)| p.unit.as_ref() == Some(&request.from_unit))
                .map(|(name, p)| (name.clone(), p.unit.clone().unwrap_or_default()))
                .collect()
        } else {
            let placement = state.placements.get(&request.profile).ok_or_else(|| {
                Status::not_found(format!("profile {:?} does not exist", request.profile))
            })?;
            vec![(
                request.profile.clone(),
                placement.unit.clone().unwrap_or_default(),
            )]
        };
        let mut started = Vec::new();
        for (profile, from) in moves {
            let to = match request.to_unit.as_str() {
                "" => state.target(&from),
                to => Some(to.to_string()),
            };
            if let Some(to) = to.filter(|to| *to != from) {
                state.start_move(&profile, to, "operator failover".into());
                started.push(profile);
            }
        }
        state.revision += 1;
        Ok(Response::new(pb::FailoverResponse {
            revision: state.revision,
            profiles: started,
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

/// unit-a presents web-01 and db-01, unit-b presents app-01.
fn two_units() -> State {
    let mut state = State::default();
    for (unit, profiles) in [
        ("unit-a", &["web-01", "db-01"][..]),
        ("unit-b", &["app-01"][..]),
    ] {
        state.units.insert(
            unit.into(),
            FakeUnit {
                draining: false,
                presented: profiles.iter().map(|p| p.to_string()).collect(),
            },
        );
        for profile in profiles {
            state.placements.insert(
                profile.to_string(),
                FakePlacement {
                    unit: Some(unit.into()),
                    moving: None,
                    reason: "preferred unit".into(),
                },
            );
        }
    }
    state
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_wait_follows_the_moves_until_the_unit_is_empty() {
    let state = Arc::new(Mutex::new(two_units()));
    let live = serve(node(&state)).await.to_string();

    let drained = vnetctl(
        &live,
        &["drain", "unit-a", "--wait", "--timeout-wait", "20s"],
    )
    .await;
    assert_eq!(drained.status.code(), Some(0), "{}", stderr(&drained));
    let out = stdout(&drained);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines.first().copied(),
        Some("unit-a is draining (revision 1); 2 profile(s) will move off: db-01, web-01"),
        "{out}"
    );
    assert!(
        lines.contains(
            &"unit-a: 0 of 2 profiles moved off; moving: db-01 -> unit-b, web-01 -> unit-b"
        ),
        "{out}"
    );
    assert!(
        lines.contains(&"unit-a: 1 of 2 profiles moved off; moving: web-01 -> unit-b"),
        "{out}"
    );
    assert_eq!(
        lines.last().copied(),
        Some("unit-a: drained; 2 of 2 profiles moved off"),
        "{out}"
    );
    {
        let state = state.lock().unwrap();
        assert!(state.units["unit-a"].presented.is_empty());
        assert_eq!(state.units["unit-b"].presented.len(), 3);
    }

    // A second drain has nowhere to go (unit-a is draining): the wait gives up, exit 1.
    let stuck = vnetctl(
        &live,
        &[
            "-o",
            "json",
            "drain",
            "unit-b",
            "--wait",
            "--timeout-wait",
            "1s",
        ],
    )
    .await;
    assert_eq!(stuck.status.code(), Some(1), "{}", stderr(&stuck));
    assert_eq!(
        stdout(&stuck),
        "",
        "no JSON document for a drain that did not finish"
    );
    let error: serde_json::Value =
        serde_json::from_str(stderr(&stuck).lines().last().expect("an error line")).unwrap();
    assert_eq!(error["error"]["kind"], "timeout");
    assert_eq!(error["exit_code"], 1);
    let message = error["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("unit-b is not drained after 1s"),
        "{message}"
    );
    for profile in ["app-01", "db-01", "web-01"] {
        assert!(
            message.contains(&format!(
                "{profile}: still placed on unit-b (presented), no move started"
            )),
            "{message}"
        );
    }
    assert!(message.contains("(reason: drain of unit-a)"), "{message}");
    assert!(
        message.ends_with("Other units: unit-a (draining)"),
        "{message}"
    );

    let undrained = vnetctl(&live, &["-o", "json", "undrain", "unit-a"]).await;
    assert_eq!(undrained.status.code(), Some(0), "{}", stderr(&undrained));
    let json: serde_json::Value = serde_json::from_str(&stdout(&undrained)).unwrap();
    assert_eq!(json, serde_json::json!({"unit": "unit-a", "revision": 3}));

    let missing = vnetctl(&live, &["drain", "unit-z"]).await;
    assert_eq!(missing.status.code(), Some(1));
    assert!(
        stderr(&missing).contains("NOT_FOUND"),
        "{}",
        stderr(&missing)
    );

    assert_eq!(
        state.lock().unwrap().requests,
        vec![
            "drain unit-a",
            "drain unit-b",
            "undrain unit-a",
            "drain unit-z"
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_sends_exactly_one_mode_and_reports_the_moves() {
    let state = Arc::new(Mutex::new(two_units()));
    let live = serve(node(&state)).await.to_string();

    let one = vnetctl(
        &live,
        &["-o", "json", "failover", "web-01", "--to", "unit-b"],
    )
    .await;
    assert_eq!(one.status.code(), Some(0), "{}", stderr(&one));
    let json: serde_json::Value = serde_json::from_str(&stdout(&one)).unwrap();
    assert_eq!(
        json,
        serde_json::json!({
            "profile": "web-01", "from_unit": null, "to_unit": "unit-b", "revision": 1,
            "profiles": ["web-01"],
        })
    );

    let status = vnetctl(&live, &["-o", "json", "status"]).await;
    let json: serde_json::Value = serde_json::from_str(&stdout(&status)).unwrap();
    let web = json["placements"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["profile"] == "web-01")
        .unwrap();
    assert_eq!(web["moving_from"], "unit-a", "{json}");
    assert_eq!(web["moving_to"], "unit-b", "{json}");
    assert_eq!(web["desired_unit"], serde_json::Value::Null, "{json}");
    assert_eq!(json["units"][0]["name"], "unit-a");
    assert_eq!(json["units"][0]["lease"], "healthy");

    // The fake moves on by one step per status read: the move has been handed over now.
    let table = vnetctl(&live, &["status"]).await;
    let text = stdout(&table);
    assert!(
        text.contains(
            "unit-b  healthy  100ms      -       -           -       no        2          2/30"
        ),
        "{text}"
    );
    assert!(
        text.contains("web-01   unit-b   unit-b     presented  operator failover"),
        "{text}"
    );

    let off = vnetctl(&live, &["failover", "--from", "unit-b"]).await;
    assert_eq!(off.status.code(), Some(0), "{}", stderr(&off));
    assert!(
        stdout(&off)
            .starts_with("started moving 2 profile(s) off unit-b at revision 2: app-01, web-01"),
        "{}",
        stdout(&off)
    );

    let refused = vnetctl(&live, &["failover", "db-01", "--to", "unit-c"]).await;
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        stderr(&refused).contains("FAILED_PRECONDITION"),
        "{}",
        stderr(&refused)
    );

    // Usage errors are caught before anything is sent.
    for args in [
        &["failover", "db-01"][..],
        &["failover", "db-01", "--from", "unit-a", "--to", "unit-b"][..],
        &["failover", "--from", "unit-a", "--to", "unit-a"][..],
        &["failover"][..],
    ] {
        let usage = vnetctl(&live, args).await;
        assert_eq!(usage.status.code(), Some(2), "{args:?}: {}", stderr(&usage));
    }

    assert_eq!(
        state.lock().unwrap().requests,
        vec![
            r#"failover profile="web-01" from="" to="unit-b""#,
            r#"failover profile="" from="unit-b" to="""#,
            r#"failover profile="db-01" from="" to="unit-c""#,
        ]
    );
}
