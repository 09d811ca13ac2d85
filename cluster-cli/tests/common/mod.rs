//! An in-process fake of the public API (an in-memory map, no Raft) and the helpers that run
//! the real `vnetctl` binary against it. It stands in for vnetd only as far as the wire
//! contract goes.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_stream::wrappers::TcpListenerStream;
use tonic::{Request, Response, Status};
use vnet_proto::vnet::v1 as pb;
use vnet_proto::vnet::v1::cluster_service_server::{ClusterService, ClusterServiceServer};
use vnet_proto::vnet::v1::profile_service_server::{ProfileService, ProfileServiceServer};
use vnet_proto::vnet::v1::watch_service_server::{WatchService, WatchServiceServer};

/// Upper bound on any one vnetctl run in these tests.
pub const RUN_DEADLINE: Duration = Duration::from_secs(30);

#[derive(Default)]
pub struct State {
    pub revision: u64,
    pub profiles: BTreeMap<String, pb::Profile>,
    pub history: Vec<pb::WatchEvent>,
    pub next_mac: u64,
    /// Units by name: what each presents and whether it is draining.
    pub units: BTreeMap<String, FakeUnit>,
    /// Placements by profile name (independent of `profiles`, to keep the fake small).
    pub placements: BTreeMap<String, FakePlacement>,
    /// Every Drain, Undrain and Failover request received, in order.
    pub requests: Vec<String>,
    /// What SaveSnapshot streams: the file's bytes, and the header's counts.
    pub backup: Vec<u8>,
    pub backup_header: pb::SnapshotHeader,
    /// Raised alarms; DisarmAlarm refuses while one is past its quota, as vnetd does.
    pub alarms: Vec<pb::Alarm>,
}

#[derive(Default)]
pub struct FakeUnit {
    pub draining: bool,
    pub presented: BTreeSet<String>,
}

#[derive(Default)]
pub struct FakePlacement {
    pub unit: Option<String>,
    /// A planned move: (from, to).
    pub moving: Option<(String, String)>,
    pub reason: String,
}

impl State {
    /// A unit that is not `except` and not draining, if any.
    pub fn target(&self, except: &str) -> Option<String> {
        self.units
            .iter()
            .find(|(name, unit)| name.as_str() != except && !unit.draining)
            .map(|(name, _)| name.clone())
    }

    /// Starts a planned move of `profile` to `to`; the caller has checked both exist.
    pub fn start_move(&mut self, profile: &str, to: String, reason: String) {
        let placement = self.placements.get_mut(profile).expect("known profile");
        let from = placement.unit.take().expect("a placed profile");
        placement.moving = Some((from, to));
        placement.reason = reason;
    }

    /// The placement controller and the units' switches, one step per status read, so that a
    /// test sees every intermediate state without depending on timing: a draining unit's
    /// profiles start moving when a target exists; then for the first moving profile, either
    /// the source stops presenting it, or (once it has) the target is given and presents it.
    pub fn advance(&mut self) {
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

    pub fn units_to_wire(&self) -> Vec<pb::UnitStatus> {
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

    pub fn placements_to_wire(&self) -> Vec<pb::ProfilePlacement> {
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
pub struct FakeNode {
    pub state: Arc<Mutex<State>>,
    /// Answer every unary call with UNAVAILABLE, like a node that knows no leader.
    pub unavailable: bool,
    /// Watch streams from this node break with UNAVAILABLE after this revision.
    pub watch_breaks_after: Option<u64>,
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

pub fn put_event(state: &mut State, profile: &pb::Profile) {
    state.history.push(pb::WatchEvent {
        revision: state.revision,
        actor: "test".into(),
        on_behalf_of: String::new(),
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
        // One of the server's rules, refused as vnetd refuses it (node/tests/api.rs checks the
        // real message), so the tests can show vnetctl passing such a refusal on.
        if let Some((index, vnic)) = profile
            .vnics
            .iter()
            .enumerate()
            .find(|(_, v)| v.vlan > 4094)
        {
            return Err(Status::invalid_argument(format!(
                "invalid profile.vnics[{index}].vlan \"{}\": VLAN ids are 1..=4094 (0 = untagged)",
                vnic.vlan
            )));
        }
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
            on_behalf_of: String::new(),
            change: Some(pb::watch_event::Change::ProfileDeleted(name)),
        });
        Ok(Response::new(pb::DeleteProfileResponse { revision }))
    }
}

#[tonic::async_trait]
impl ClusterService for FakeNode {
    type SaveSnapshotStream = std::pin::Pin<
        Box<dyn futures::Stream<Item = Result<pb::SaveSnapshotResponse, Status>> + Send>,
    >;

    async fn save_snapshot(
        &self,
        _request: Request<pb::SaveSnapshotRequest>,
    ) -> Result<Response<Self::SaveSnapshotStream>, Status> {
        self.check()?;
        use pb::save_snapshot_response::Part;
        let state = self.lock();
        let mut parts = vec![Ok(pb::SaveSnapshotResponse {
            part: Some(Part::Header(state.backup_header)),
        })];
        // Small chunks, so the client reassembles several.
        parts.extend(state.backup.chunks(16).map(|chunk| {
            Ok(pb::SaveSnapshotResponse {
                part: Some(Part::Chunk(chunk.to_vec())),
            })
        }));
        Ok(Response::new(Box::pin(tokio_stream::iter(parts))))
    }

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
            version: "fake".into(),
            data_dir_bytes: 8192,
            alarms: state.alarms.clone(),
        }))
    }

    async fn list_alarms(
        &self,
        _request: Request<pb::ListAlarmsRequest>,
    ) -> Result<Response<pb::ListAlarmsResponse>, Status> {
        self.check()?;
        let state = self.lock();
        Ok(Response::new(pb::ListAlarmsResponse {
            alarms: state.alarms.clone(),
            revision: state.revision,
        }))
    }

    async fn disarm_alarm(
        &self,
        request: Request<pb::DisarmAlarmRequest>,
    ) -> Result<Response<pb::DisarmAlarmResponse>, Status> {
        self.check()?;
        let member = request.into_inner().member;
        let mut state = self.lock();
        let chosen = |a: &pb::Alarm| member.is_empty() || a.member == member;
        if !state.alarms.iter().any(chosen) {
            return Err(Status::not_found("no such alarm is raised"));
        }
        if let Some(over) = state
            .alarms
            .iter()
            .find(|a| chosen(a) && a.used_bytes > a.quota_bytes)
        {
            return Err(Status::failed_precondition(format!(
                "cannot disarm: alarm NOSPACE on member {} is still past its quota",
                over.member
            )));
        }
        let (disarmed, kept) = state.alarms.drain(..).partition(|a| chosen(a));
        state.alarms = kept;
        state.revision += 1;
        Ok(Response::new(pb::DisarmAlarmResponse {
            disarmed,
            revision: state.revision,
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

pub type EventStream =
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
pub async fn serve(node: FakeNode) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    // The standard health service, SERVING unless the fake plays an unavailable node.
    let (reporter, health) = tonic_health::server::health_reporter();
    let serving = if node.unavailable {
        tonic_health::ServingStatus::NotServing
    } else {
        tonic_health::ServingStatus::Serving
    };
    reporter.set_service_status("", serving).await;
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(health)
            .add_service(ProfileServiceServer::new(node.clone()))
            .add_service(ClusterServiceServer::new(node.clone()))
            .add_service(WatchServiceServer::new(node))
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    address
}

/// A loopback address nothing listens on.
pub fn dead_address() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().to_string()
}

pub fn node(state: &Arc<Mutex<State>>) -> FakeNode {
    FakeNode {
        state: state.clone(),
        unavailable: false,
        watch_breaks_after: None,
    }
}

/// Runs vnetctl to completion off the async runtime, so the fake servers keep serving.
pub async fn vnetctl(endpoints: &str, args: &[&str]) -> Output {
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

pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}
