//! Member status and roles to and from the wire.

use vnet_model::Role;
use vnet_proto::vnet::v1 as pb;

use crate::error::ApiError;
use crate::node::{
    ClusterStatus, MemberStatus, PlacementStateKind, PlacementStatus, RaftStateKind, UnitStatus,
};

pub fn role_to_wire(role: Option<Role>) -> pb::MemberRole {
    match role {
        Some(Role::Unit) => pb::MemberRole::Unit,
        Some(Role::Witness) => pb::MemberRole::Witness,
        None => pb::MemberRole::Unspecified,
    }
}

pub fn role_from_wire(field: &str, value: i32) -> Result<Role, ApiError> {
    match pb::MemberRole::try_from(value) {
        Ok(pb::MemberRole::Unit) | Ok(pb::MemberRole::Unspecified) => Ok(Role::Unit),
        Ok(pb::MemberRole::Witness) => Ok(Role::Witness),
        Err(_) => Err(ApiError::invalid(field, value, "not a MemberRole value")),
    }
}

fn state_to_wire(state: RaftStateKind) -> pb::RaftState {
    match state {
        RaftStateKind::Leader => pb::RaftState::Leader,
        RaftStateKind::Follower => pb::RaftState::Follower,
        RaftStateKind::Candidate => pb::RaftState::Candidate,
        RaftStateKind::Learner => pb::RaftState::Learner,
        RaftStateKind::Unknown => pb::RaftState::Unknown,
        RaftStateKind::Offline => pb::RaftState::Offline,
    }
}

pub fn to_wire(member: &MemberStatus) -> pb::Member {
    pb::Member {
        id: member.id,
        name: member.name.clone(),
        role: role_to_wire(member.role) as i32,
        api_addr: member.api_addr.clone(),
        peer_addr: member.peer_addr.clone(),
        membership: if member.voter {
            pb::RaftMembership::Voter
        } else {
            pb::RaftMembership::Learner
        } as i32,
        raft_state: state_to_wire(member.raft_state) as i32,
        last_contact_ms: member.last_contact_ms,
        matched_index: member.matched_index,
        cabling: member
            .cabling
            .iter()
            .map(|(server, port)| (server.clone(), u32::from(*port)))
            .collect(),
        capacity: member.capacity,
    }
}

pub fn status_to_wire(status: &ClusterStatus) -> pb::GetClusterStatusResponse {
    pb::GetClusterStatusResponse {
        leader_id: status.leader_id,
        leader_name: status.leader_name.clone(),
        term: status.term,
        commit_index: status.commit_index,
        applied_index: status.applied_index,
        revision: status.revision,
        members: status.members.iter().map(to_wire).collect(),
        responder_id: status.responder_id,
        units: status.units.iter().map(unit_to_wire).collect(),
        placements: status.placements.iter().map(placement_to_wire).collect(),
        version: status.version.clone(),
        data_dir_bytes: status.data_dir_bytes,
        alarms: status
            .alarms
            .iter()
            .map(crate::convert::alarm::to_wire)
            .collect(),
    }
}

pub fn unit_to_wire(unit: &UnitStatus) -> pb::UnitStatus {
    pb::UnitStatus {
        id: unit.id,
        name: unit.name.clone(),
        lease: match (unit.lease_revoked_at, unit.lease_healthy) {
            (Some(_), _) => pb::LeaseHealth::Revoked,
            (None, Some(true)) => pb::LeaseHealth::Healthy,
            (None, Some(false)) => pb::LeaseHealth::Expired,
            (None, None) => pb::LeaseHealth::Unknown,
        } as i32,
        lease_age_ms: unit.lease_age_ms,
        draining: unit.draining,
        presented: unit.presented.clone(),
        load: unit.load,
        capacity: unit.capacity,
        voters_granting: unit.own.as_ref().map(|own| own.voters_granting),
        lease_left_ms: unit.own.as_ref().and_then(|own| own.lease_left_ms),
        switch_presenting: unit
            .own
            .as_ref()
            .map(|own| own.switch_presenting.clone())
            .unwrap_or_default(),
        switch_reachable: unit.own.as_ref().map(|own| own.switch_reachable),
        note: unit.note.clone(),
    }
}

pub fn placement_to_wire(placement: &PlacementStatus) -> pb::ProfilePlacement {
    pb::ProfilePlacement {
        profile: placement.profile.clone(),
        desired_unit: placement.desired_unit.clone().unwrap_or_default(),
        presented_unit: placement.presented_unit.clone().unwrap_or_default(),
        state: match placement.state {
            PlacementStateKind::Presented => pb::PlacementState::Presented,
            PlacementStateKind::Programming => pb::PlacementState::Programming,
            PlacementStateKind::Moving => pb::PlacementState::Moving,
            PlacementStateKind::Unplaced => pb::PlacementState::Unplaced,
            PlacementStateKind::FailedOver => pb::PlacementState::FailedOver,
        } as i32,
        reason: placement.reason.clone(),
        failed_over_from: placement.failed_over_from.clone().unwrap_or_default(),
        moving_from: placement
            .moving
            .as_ref()
            .map(|m| m.from.clone())
            .unwrap_or_default(),
        moving_to: placement
            .moving
            .as_ref()
            .map(|m| m.to.clone())
            .unwrap_or_default(),
        revision: placement.revision,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_status_reaches_the_wire_whole() {
        let member = MemberStatus {
            id: 2,
            name: "unit-b".into(),
            peer_addr: "127.0.0.1:7102".into(),
            role: Some(Role::Unit),
            api_addr: "127.0.0.1:7002".into(),
            cabling: [("srv-1".to_string(), 3u8)].into_iter().collect(),
            capacity: 30,
            voter: true,
            raft_state: RaftStateKind::Follower,
            last_contact_ms: Some(12),
            matched_index: Some(40),
        };
        let wire = to_wire(&member);
        assert_eq!(wire.id, 2);
        assert_eq!(wire.role, pb::MemberRole::Unit as i32);
        assert_eq!(wire.membership, pb::RaftMembership::Voter as i32);
        assert_eq!(wire.raft_state, pb::RaftState::Follower as i32);
        assert_eq!(wire.cabling.get("srv-1"), Some(&3));
        assert_eq!(wire.last_contact_ms, Some(12));
        assert_eq!(wire.matched_index, Some(40));
        assert_eq!(role_from_wire("role", wire.role).expect("role"), Role::Unit);
        assert_eq!(
            role_from_wire("role", pb::MemberRole::Witness as i32).expect("role"),
            Role::Witness
        );
        assert!(role_from_wire("member.role", 42)
            .expect_err("bad")
            .to_string()
            .contains("member.role"));
    }
}
