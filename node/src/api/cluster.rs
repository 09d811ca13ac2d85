//! `vnet.v1.ClusterService`: status and membership.

use tonic::{Request, Response, Status};
use vnet_proto::vnet::v1 as pb;
use vnet_proto::vnet::v1::cluster_service_server::ClusterService;

use raft_store::PeerNode;

use super::{consistency, name, optional_name, Api, Caller};
use crate::convert::member::{role_from_wire, status_to_wire, to_wire};
use crate::error::ApiError;
use crate::peer::{LeaderReply, LeaderRequest};

impl Api {
    async fn member_wire(&self, id: u64) -> Option<pb::Member> {
        let status = self
            .node
            .status(crate::node::Consistency::Linearizable)
            .await;
        status.members.iter().find(|m| m.id == id).map(to_wire)
    }
}

/// Checks a new member's addresses, before anything reaches the Raft membership: the leader runs
/// this again for a request forwarded by a peer. The API address is required: clients and units
/// find a member's API through its record, and a member added without one could be reached only
/// once it registers itself. Each address is first checked for length, so a huge value costs no
/// parsing.
pub fn new_member_addrs(peer_addr: &str, api_addr: &str) -> Result<(), ApiError> {
    vnet_model::member::validate_new_addr("peer_addr", peer_addr, false)?;
    if api_addr.is_empty() {
        return Err(ApiError::invalid("api_addr", "", "is required"));
    }
    vnet_model::member::validate_new_addr("api_addr", api_addr, true)?;
    Ok(())
}

/// The revision a membership change answers with. A leader older than revisions in these replies
/// sent only the entry's log index, which is what the change answered with then.
fn membership_revision(reply: LeaderReply) -> Result<u64, ApiError> {
    match reply {
        LeaderReply::MembershipChanged {
            log_index,
            revision,
        } => Ok(revision.unwrap_or(log_index)),
        other => Err(ApiError::Internal {
            reason: format!("a membership change produced {other:?}"),
        }),
    }
}

/// What a failover acts on, for the audit log: the profile, or the unit it moves profiles off,
/// and where to.
fn failover_target(request: &pb::FailoverRequest) -> String {
    let what = if request.profile.is_empty() {
        format!("unit {}", request.from_unit)
    } else {
        format!("profile {}", request.profile)
    };
    if request.to_unit.is_empty() {
        what
    } else {
        format!("{what} to {}", request.to_unit)
    }
}

/// Bytes of a backup per `SaveSnapshot` message.
pub const BACKUP_CHUNK_BYTES: usize = 1 << 20;

impl Api {
    /// The backup file: the applied state after a linearizable barrier, in the snapshot encoding.
    async fn backup(&self) -> Result<(pb::SnapshotHeader, Vec<u8>), ApiError> {
        // After the barrier this node has applied every write acknowledged before the call
        // began (ARCHITECTURE.md, "Requests and retries"); what it holds then is a state the
        // leader held, so the copy is as good as one taken on the leader.
        self.node
            .read_barrier(crate::node::Consistency::Linearizable)
            .await?;
        let applied = self.node.view().read(|applied| applied.clone());
        let index = applied.last_applied.map_or(0, |id| id.index);
        let meta = raft_store::snapshot_file::SnapshotMeta {
            last_log_id: applied.last_applied,
            last_membership: applied.membership,
            snapshot_id: format!("backup-{index}"),
        };
        let body = raft_store::snapshot_file::SnapshotBody::new(meta, applied.state);
        let summary = body.summary.unwrap_or_default();
        let bytes = tokio::task::spawn_blocking(move || raft_store::snapshot_file::encode(&body))
            .await
            .map_err(|e| ApiError::Internal {
                reason: format!("encoding the backup failed: {e}"),
            })?
            .map_err(|e| ApiError::Internal {
                reason: format!("encoding the backup failed: {e}"),
            })?;
        let header = pb::SnapshotHeader {
            revision: summary.revision,
            applied_index: summary.applied_index,
            profiles: summary.profiles,
            pools: summary.pools,
            members: summary.members,
            size: bytes.len() as u64,
            crc32: crc32fast::hash(&bytes),
        };
        Ok((header, bytes))
    }
}

pub type SaveSnapshotStream =
    std::pin::Pin<Box<dyn futures::Stream<Item = Result<pb::SaveSnapshotResponse, Status>> + Send>>;

impl Api {
    async fn save_snapshot_as(
        &self,
        _caller: Caller,
        _request: Request<pb::SaveSnapshotRequest>,
    ) -> Result<Response<SaveSnapshotStream>, Status> {
        use pb::save_snapshot_response::Part;
        let (header, bytes) = self.backup().await?;
        tracing::info!(
            revision = header.revision,
            bytes = header.size,
            "sending a backup"
        );
        let mut parts = vec![Ok(pb::SaveSnapshotResponse {
            part: Some(Part::Header(header)),
        })];
        parts.extend(bytes.chunks(BACKUP_CHUNK_BYTES).map(|chunk| {
            Ok(pb::SaveSnapshotResponse {
                part: Some(Part::Chunk(chunk.to_vec())),
            })
        }));
        Ok(Response::new(Box::pin(tokio_stream::iter(parts))))
    }

    async fn list_alarms_as(
        &self,
        _caller: Caller,
        request: Request<pb::ListAlarmsRequest>,
    ) -> Result<Response<pb::ListAlarmsResponse>, Status> {
        let consistency = consistency("consistency", request.get_ref().consistency)?;
        self.node.read_barrier(consistency).await?;
        let (alarms, revision) = self.node.view().read(|a| {
            (
                a.state
                    .alarms()
                    .map(crate::convert::alarm::to_wire)
                    .collect(),
                a.state.revision(),
            )
        });
        Ok(Response::new(pb::ListAlarmsResponse { alarms, revision }))
    }

    async fn disarm_alarm_as(
        &self,
        caller: Caller,
        request: Request<pb::DisarmAlarmRequest>,
    ) -> Result<Response<pb::DisarmAlarmResponse>, Status> {
        let request = request.into_inner();
        optional_name("member", &request.member)?;
        let kind = crate::convert::alarm::kind_from_wire("kind", request.kind)?;
        let command = vnet_model::Command::DisarmAlarm {
            member: (!request.member.is_empty()).then_some(request.member),
            kind,
        };
        match self.node.write_by(caller.by(), command).await? {
            (vnet_model::Outcome::AlarmsDisarmed { alarms }, revision) => {
                Ok(Response::new(pb::DisarmAlarmResponse {
                    disarmed: alarms.iter().map(crate::convert::alarm::to_wire).collect(),
                    revision,
                }))
            }
            (other, _) => Err(ApiError::Internal {
                reason: format!("disarming alarms produced {other:?}"),
            }
            .into()),
        }
    }

    async fn get_cluster_status_as(
        &self,
        _caller: Caller,
        request: Request<pb::GetClusterStatusRequest>,
    ) -> Result<Response<pb::GetClusterStatusResponse>, Status> {
        let consistency = consistency("consistency", request.get_ref().consistency)?;
        let status = self.node.status(consistency).await;
        Ok(Response::new(status_to_wire(&status)))
    }

    async fn add_member_as(
        &self,
        caller: Caller,
        request: Request<pb::AddMemberRequest>,
    ) -> Result<Response<pb::AddMemberResponse>, Status> {
        let request = request.into_inner();
        if request.id == 0 {
            return Err(ApiError::invalid("id", 0, "member ids start at 1").into());
        }
        name("name", &request.name)?;
        new_member_addrs(&request.peer_addr, &request.api_addr)?;
        let role = role_from_wire("role", request.role)?;
        let reply = self
            .node
            .execute(LeaderRequest::AddLearner {
                id: request.id,
                node: PeerNode {
                    name: request.name,
                    peer_addr: request.peer_addr,
                },
                api_addr: request.api_addr,
                role,
                by: Some(caller.by()),
            })
            .await?;
        let revision = membership_revision(reply)?;
        Ok(Response::new(pb::AddMemberResponse {
            member: self.member_wire(request.id).await,
            revision,
        }))
    }

    async fn promote_member_as(
        &self,
        _caller: Caller,
        request: Request<pb::PromoteMemberRequest>,
    ) -> Result<Response<pb::PromoteMemberResponse>, Status> {
        let id = request.into_inner().id;
        let reply = self.node.execute(LeaderRequest::Promote { id }).await?;
        let revision = membership_revision(reply)?;
        Ok(Response::new(pb::PromoteMemberResponse {
            member: self.member_wire(id).await,
            revision,
        }))
    }

    async fn remove_member_as(
        &self,
        caller: Caller,
        request: Request<pb::RemoveMemberRequest>,
    ) -> Result<Response<pb::RemoveMemberResponse>, Status> {
        let id = request.into_inner().id;
        let reply = self
            .node
            .execute(LeaderRequest::Remove {
                id,
                by: Some(caller.by()),
            })
            .await?;
        Ok(Response::new(pb::RemoveMemberResponse {
            revision: membership_revision(reply)?,
        }))
    }

    async fn drain_as(
        &self,
        caller: Caller,
        request: Request<pb::DrainRequest>,
    ) -> Result<Response<pb::DrainResponse>, Status> {
        let unit = request.into_inner().unit;
        name("unit", &unit)?;
        let command = vnet_model::Command::SetDrain {
            unit: unit.clone(),
            draining: true,
        };
        let (_, revision) = self.node.write_by(caller.by(), command).await?;
        let profiles = self.node.view().read(|a| {
            a.state
                .placements()
                .filter(|(_, p)| p.unit.as_deref() == Some(unit.as_str()))
                .map(|(name, _)| name.clone())
                .collect()
        });
        Ok(Response::new(pb::DrainResponse { revision, profiles }))
    }

    async fn undrain_as(
        &self,
        caller: Caller,
        request: Request<pb::UndrainRequest>,
    ) -> Result<Response<pb::UndrainResponse>, Status> {
        let unit = request.into_inner().unit;
        name("unit", &unit)?;
        let command = vnet_model::Command::SetDrain {
            unit,
            draining: false,
        };
        let (_, revision) = self.node.write_by(caller.by(), command).await?;
        Ok(Response::new(pb::UndrainResponse { revision }))
    }

    async fn failover_as(
        &self,
        caller: Caller,
        request: Request<pb::FailoverRequest>,
    ) -> Result<Response<pb::FailoverResponse>, Status> {
        let request = request.into_inner();
        optional_name("profile", &request.profile)?;
        optional_name("from_unit", &request.from_unit)?;
        optional_name("to_unit", &request.to_unit)?;
        let non_empty = |s: String| (!s.is_empty()).then_some(s);
        let reply = self
            .node
            .execute(LeaderRequest::Failover {
                profile: non_empty(request.profile),
                from: non_empty(request.from_unit),
                to: non_empty(request.to_unit),
                by: Some(caller.by()),
            })
            .await?;
        match reply {
            LeaderReply::FailoverStarted { revision, profiles } => {
                Ok(Response::new(pb::FailoverResponse { revision, profiles }))
            }
            other => Err(ApiError::Internal {
                reason: format!("a failover produced {other:?}"),
            }
            .into()),
        }
    }

    async fn transfer_leader_as(
        &self,
        _caller: Caller,
        request: Request<pb::TransferLeaderRequest>,
    ) -> Result<Response<pb::TransferLeaderResponse>, Status> {
        let to = request.into_inner().to_id;
        match self
            .node
            .execute(LeaderRequest::TransferLeader { to })
            .await?
        {
            LeaderReply::Transferred { leader, term } => {
                Ok(Response::new(pb::TransferLeaderResponse {
                    leader_id: leader,
                    term,
                }))
            }
            other => Err(ApiError::Internal {
                reason: format!("a leader transfer produced {other:?}"),
            }
            .into()),
        }
    }
}

#[tonic::async_trait]
impl ClusterService for Api {
    type SaveSnapshotStream = SaveSnapshotStream;
    async fn save_snapshot(
        &self,
        request: Request<pb::SaveSnapshotRequest>,
    ) -> Result<Response<Self::SaveSnapshotStream>, Status> {
        self.guarded(
            request,
            |_| String::new(),
            |caller, request| self.save_snapshot_as(caller, request),
        )
        .await
    }

    async fn list_alarms(
        &self,
        request: Request<pb::ListAlarmsRequest>,
    ) -> Result<Response<pb::ListAlarmsResponse>, Status> {
        self.guarded(
            request,
            |_| String::new(),
            |caller, request| self.list_alarms_as(caller, request),
        )
        .await
    }

    async fn disarm_alarm(
        &self,
        request: Request<pb::DisarmAlarmRequest>,
    ) -> Result<Response<pb::DisarmAlarmResponse>, Status> {
        self.guarded(
            request,
            |r| r.member.clone(),
            |caller, request| self.disarm_alarm_as(caller, request),
        )
        .await
    }

    async fn get_cluster_status(
        &self,
        request: Request<pb::GetClusterStatusRequest>,
    ) -> Result<Response<pb::GetClusterStatusResponse>, Status> {
        self.guarded(
            request,
            |_| String::new(),
            |caller, request| self.get_cluster_status_as(caller, request),
        )
        .await
    }

    async fn add_member(
        &self,
        request: Request<pb::AddMemberRequest>,
    ) -> Result<Response<pb::AddMemberResponse>, Status> {
        self.guarded(
            request,
            |r| format!("member {} {}", r.id, r.name),
            |caller, request| self.add_member_as(caller, request),
        )
        .await
    }

    async fn promote_member(
        &self,
        request: Request<pb::PromoteMemberRequest>,
    ) -> Result<Response<pb::PromoteMemberResponse>, Status> {
        self.guarded(
            request,
            |r| format!("member {}", r.id),
            |caller, request| self.promote_member_as(caller, request),
        )
        .await
    }

    async fn remove_member(
        &self,
        request: Request<pb::RemoveMemberRequest>,
    ) -> Result<Response<pb::RemoveMemberResponse>, Status> {
        self.guarded(
            request,
            |r| format!("member {}", r.id),
            |caller, request| self.remove_member_as(caller, request),
        )
        .await
    }

    async fn drain(
        &self,
        request: Request<pb::DrainRequest>,
    ) -> Result<Response<pb::DrainResponse>, Status> {
        self.guarded(
            request,
            |r| r.unit.clone(),
            |caller, request| self.drain_as(caller, request),
        )
        .await
    }

    async fn undrain(
        &self,
        request: Request<pb::UndrainRequest>,
    ) -> Result<Response<pb::UndrainResponse>, Status> {
        self.guarded(
            request,
            |r| r.unit.clone(),
            |caller, request| self.undrain_as(caller, request),
        )
        .await
    }

    async fn failover(
        &self,
        request: Request<pb::FailoverRequest>,
    ) -> Result<Response<pb::FailoverResponse>, Status> {
        self.guarded(request, failover_target, |caller, request| {
            self.failover_as(caller, request)
        })
        .await
    }

    async fn transfer_leader(
        &self,
        request: Request<pb::TransferLeaderRequest>,
    ) -> Result<Response<pb::TransferLeaderResponse>, Status> {
        self.guarded(
            request,
            |r| format!("member {}", r.to_id),
            |caller, request| self.transfer_leader_as(caller, request),
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_membership_reply_answers_its_revision_and_an_older_leaders_its_log_index() {
        let older: LeaderReply =
            serde_json::from_str(r#"{"MembershipChanged":{"log_index":5}}"#).expect("decodes");
        assert_eq!(membership_revision(older).expect("a membership reply"), 5);
        let newer = LeaderReply::MembershipChanged {
            log_index: 5,
            revision: Some(9),
        };
        let sent = serde_json::to_string(&newer).expect("encodes");
        let received: LeaderReply = serde_json::from_str(&sent).expect("decodes");
        assert_eq!(
            membership_revision(received).expect("a membership reply"),
            9
        );
        assert!(membership_revision(LeaderReply::ReadIndex { index: 5 }).is_err());
    }
}
