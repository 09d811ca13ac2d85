//! Model [`Event`]s to `vnet.v1.WatchEvent`.

use vnet_model::{Change, Event, Member};
use vnet_proto::vnet::v1 as pb;

use super::{pool, profile};
use crate::convert::member::role_to_wire;
use crate::node::{PlacementStateKind, PlacementStatus};

pub fn to_wire(event: &Event) -> pb::WatchEvent {
    use pb::watch_event::Change as Wire;
    let change = match &event.change {
        Change::ProfilePut(p) => Wire::ProfilePut(profile::to_wire(p)),
        Change::ProfileDeleted { name } => Wire::ProfileDeleted(name.clone()),
        Change::PoolPut(p) => Wire::PoolPut(pool::to_wire(p)),
        Change::PoolDeleted { name } => Wire::PoolDeleted(name.clone()),
        Change::MemberPut(m) => Wire::MemberPut(member_record_to_wire(m)),
        Change::MemberRemoved { id } => Wire::MemberRemoved(*id),
        Change::Placed { placements } => Wire::Placements(pb::PlacementChanges {
            placements: placements
                .iter()
                .map(|(profile, placement)| placement_to_wire(profile, placement))
                .collect(),
        }),
        Change::PresentedPut { unit, profiles } => Wire::Presented(pb::UnitPresented {
            unit: unit.clone(),
            profiles: profiles.keys().cloned().collect(),
        }),
        Change::DrainSet { unit, draining } => Wire::Drain(pb::UnitDrain {
            unit: unit.clone(),
            draining: *draining,
        }),
        Change::LeaseRevoked { unit } => Wire::LeaseRevoked(unit.clone()),
        Change::MembershipSettled { log_index } => Wire::MembershipSettled(*log_index),
        Change::Recovered { survivor, lost } => Wire::Recovered(pb::Recovered {
            survivor: *survivor,
            lost: lost.clone(),
        }),
        Change::AlarmPut(alarm) => Wire::AlarmPut(super::alarm::to_wire(alarm)),
        Change::AlarmsDisarmed { alarms } => Wire::AlarmsDisarmed(pb::AlarmsDisarmed {
            alarms: alarms.iter().map(super::alarm::to_wire).collect(),
        }),
        Change::RoleGranted { principal, role } => {
            Wire::RoleGranted(super::access::binding_to_wire(principal, *role))
        }
        Change::RoleRevoked { principal } => Wire::RoleRevoked(principal.clone()),
        Change::FailedOver { placements, .. } => Wire::Placements(pb::PlacementChanges {
            placements: placements
                .iter()
                .map(|(profile, placement)| placement_to_wire(profile, placement))
                .collect(),
        }),
    };
    pb::WatchEvent {
        revision: event.revision,
        actor: event.actor.clone(),
        on_behalf_of: event.on_behalf_of.clone().unwrap_or_default(),
        change: Some(change),
    }
}

/// A placement as decided; what is presented is reported separately (`presented` events).
fn placement_to_wire(profile: &str, placement: &vnet_model::Placement) -> pb::ProfilePlacement {
    let state = match (&placement.unit, &placement.moving) {
        (_, Some(_)) => PlacementStateKind::Moving,
        (None, None) => PlacementStateKind::Unplaced,
        (Some(_), None) => PlacementStateKind::Programming,
    };
    crate::convert::member::placement_to_wire(&PlacementStatus {
        profile: profile.to_owned(),
        desired_unit: placement.unit.clone(),
        presented_unit: None,
        state,
        reason: placement.reason.clone(),
        failed_over_from: placement.failed_over_from.clone(),
        moving: placement.moving.clone(),
        revision: placement.revision,
    })
}

/// A member record as replicated (no Raft progress: a watch event is a change, not a status).
fn member_record_to_wire(member: &Member) -> pb::Member {
    pb::Member {
        id: member.id,
        name: member.name.clone(),
        role: role_to_wire(Some(member.role)) as i32,
        api_addr: member.api_addr.clone(),
        peer_addr: member.peer_addr.clone(),
        membership: pb::RaftMembership::Unspecified as i32,
        raft_state: pb::RaftState::Unspecified as i32,
        last_contact_ms: None,
        matched_index: None,
        cabling: member
            .cabling
            .iter()
            .map(|(server, port)| (server.clone(), u32::from(*port)))
            .collect(),
        capacity: member.capacity,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vnet_model::Role;

    #[test]
    fn every_change_kind_maps_to_its_oneof_arm() {
        use pb::watch_event::Change as Wire;
        let member = Member {
            id: 3,
            name: "witness".into(),
            role: Role::Witness,
            api_addr: "a:1".into(),
            peer_addr: "p:1".into(),
            cabling: Default::default(),
            capacity: 0,
            protocol: 0,
        };
        let cases = vec![
            Change::ProfileDeleted { name: "x".into() },
            Change::PoolDeleted { name: "p".into() },
            Change::MemberPut(member),
            Change::MemberRemoved { id: 9 },
        ];
        let wires: Vec<_> = cases
            .into_iter()
            .map(|change| {
                to_wire(&Event {
                    revision: 5,
                    actor: "alice".into(),
                    change,
                    trace: None,
                    on_behalf_of: None,
                })
            })
            .collect();
        assert!(wires.iter().all(|w| w.revision == 5 && w.actor == "alice"));
        assert_eq!(wires[0].change, Some(Wire::ProfileDeleted("x".into())));
        assert_eq!(wires[1].change, Some(Wire::PoolDeleted("p".into())));
        match &wires[2].change {
            Some(Wire::MemberPut(m)) => {
                assert_eq!(m.id, 3);
                assert_eq!(m.role, pb::MemberRole::Witness as i32);
            }
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(wires[3].change, Some(Wire::MemberRemoved(9)));
    }
}
