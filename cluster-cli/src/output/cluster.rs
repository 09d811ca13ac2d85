//! `status`, `member`, `leader`, `alarm`, and the moves: `drain`, `undrain`, `failover`.

use serde::Serialize;

use super::{or_dash, word, Render, Table};
use crate::view::*;

pub fn members_table(members: &[MemberView]) -> String {
    let mut table = Table::new(vec![
        "ID",
        "NAME",
        "ROLE",
        "MEMBERSHIP",
        "STATE",
        "LAST CONTACT",
        "MATCHED",
        "API",
        "PEER",
    ]);
    for member in members {
        table.row(vec![
            member.id.to_string(),
            member.name.clone(),
            word(&member.role),
            word(&member.membership),
            word(&member.raft_state),
            or_dash(member.last_contact_ms.map(|ms| format!("{ms}ms"))),
            or_dash(member.matched_index),
            if member.api_addr.is_empty() {
                "-".into()
            } else {
                member.api_addr.clone()
            },
            member.peer_addr.clone(),
        ]);
    }
    table.render()
}

pub fn units_table(units: &[UnitView]) -> String {
    if units.is_empty() {
        return "no units\n".into();
    }
    let mut table = Table::new(vec![
        "NAME",
        "LEASE",
        "LEASE AGE",
        "GRANTS",
        "LEASE LEFT",
        "SWITCH",
        "DRAINING",
        "PRESENTED",
        "LOAD/CAPACITY",
    ]);
    for unit in units {
        let switch = match (unit.switch_reachable, unit.lease_left_ms) {
            (None, _) => "-".to_string(),
            (Some(false), _) => "unreachable".to_string(),
            (Some(true), None) if unit.switch_presenting.is_empty() => "fenced".to_string(),
            (Some(true), _) => format!("{} presented", unit.switch_presenting.len()),
        };
        table.row(vec![
            unit.name.clone(),
            word(&unit.lease),
            or_dash(unit.lease_age_ms.map(|ms| format!("{ms}ms"))),
            or_dash(unit.voters_granting.map(|n| n.to_string())),
            or_dash(unit.lease_left_ms.map(|ms| format!("{ms}ms"))),
            switch,
            if unit.draining { "yes" } else { "no" }.into(),
            unit.presented.len().to_string(),
            format!("{}/{}", unit.load, unit.capacity),
        ]);
    }
    let mut text = table.render();
    for unit in units.iter().filter(|u| !u.note.is_empty()) {
        text.push_str(&format!("{}: {}\n", unit.name, unit.note));
    }
    text
}

/// Where a placement wants its profile: the desired unit, "from -> to" during a planned move.
fn desired_text(placement: &PlacementView) -> String {
    match (&placement.moving_from, &placement.moving_to) {
        (Some(from), Some(to)) => format!("{from} -> {to}"),
        _ => or_dash(placement.desired_unit.as_ref()),
    }
}

pub fn placements_table(placements: &[PlacementView]) -> String {
    if placements.is_empty() {
        return "no profiles\n".into();
    }
    // The column is only worth its width once something has failed over.
    let failed_over = placements.iter().any(|p| p.failed_over_from.is_some());
    let mut headers = vec!["PROFILE", "DESIRED", "PRESENTED", "STATE", "REASON"];
    if failed_over {
        headers.push("FAILED-OVER-FROM");
    }
    let mut table = Table::new(headers);
    for placement in placements {
        let mut row = vec![
            placement.profile.clone(),
            desired_text(placement),
            or_dash(placement.presented_unit.as_ref()),
            word(&placement.state),
            placement.reason.clone(),
        ];
        if failed_over {
            row.push(or_dash(placement.failed_over_from.as_ref()));
        }
        table.row(row);
    }
    table.render()
}

impl Render for StatusView {
    fn text(&self) -> String {
        let leader = match self.leader_id {
            Some(id) => format!("{id} ({})", self.leader_name),
            None => "none known".into(),
        };
        format!(
            "leader:    {leader}\nterm:      {}\ncommitted: {}\napplied:   {}\nrevision:  {}\nanswered by member {}\n\n{}\n{}\n{}",
            self.term,
            self.commit_index,
            self.applied_index,
            self.revision,
            self.responder_id,
            members_table(&self.members),
            units_table(&self.units),
            placements_table(&self.placements),
        ) + &alarm_lines(&self.alarms)
    }
}

/// One line per alarm (nothing when none is raised), for `status` and `alarm list`.
fn alarm_lines(alarms: &[AlarmView]) -> String {
    alarms
        .iter()
        .map(|a| {
            format!(
                "\nALARM {} on {}: {} bytes used of a {}-byte quota (raised at revision {}); \
                 writes that add data are refused until `vnetctl alarm disarm`",
                a.kind, a.member, a.used_bytes, a.quota_bytes, a.raised_revision
            )
        })
        .collect()
}

impl Render for AlarmListView {
    fn text(&self) -> String {
        if self.alarms.is_empty() {
            return format!("no alarm raised (revision {})", self.revision);
        }
        let verb = if self.disarmed { "disarmed" } else { "raised" };
        let mut out = format!(
            "{} alarm(s) {verb} (revision {}):",
            self.alarms.len(),
            self.revision
        );
        for a in &self.alarms {
            out.push_str(&format!(
                "\n  {} on {}: {} bytes used of a {}-byte quota, raised at revision {}",
                a.kind, a.member, a.used_bytes, a.quota_bytes, a.raised_revision
            ));
        }
        out
    }
}

/// Profile names for a sentence: "a, b, c", or "none".
fn name_list(names: &[String]) -> String {
    if names.is_empty() {
        "none".into()
    } else {
        names.join(", ")
    }
}

impl Render for DrainView {
    fn text(&self) -> String {
        let mut out = if self.profiles.is_empty() {
            format!(
                "{} is draining (revision {}); it held no profile\n",
                self.unit, self.revision
            )
        } else {
            format!(
                "{} is draining (revision {}); {} profile(s) will move off: {}\n",
                self.unit,
                self.revision,
                self.profiles.len(),
                name_list(&self.profiles)
            )
        };
        if let Some(ms) = self.waited_ms.filter(|_| self.drained) {
            out.push_str(&format!("{} drained in {ms}ms\n", self.unit));
        }
        out
    }
}

impl Render for UndrainView {
    fn text(&self) -> String {
        format!(
            "{} is no longer draining (revision {}); profiles with failback auto that prefer it \
             move back after the hold-down time",
            self.unit, self.revision
        )
    }
}

impl Render for FailoverView {
    fn text(&self) -> String {
        let mut route = String::new();
        if let Some(from) = &self.from_unit {
            route.push_str(&format!(" off {from}"));
        }
        if let Some(to) = &self.to_unit {
            route.push_str(&format!(" to {to}"));
        }
        if self.profiles.is_empty() {
            let what = self.profile.as_deref().unwrap_or("any profile");
            return format!(
                "nothing to move: no move of {what}{route} began (revision {})",
                self.revision
            );
        }
        format!(
            "started moving {} profile(s){route} at revision {}: {}\nfollow with: vnetctl status",
            self.profiles.len(),
            self.revision,
            name_list(&self.profiles)
        )
    }
}

/// `member list`: the members only, same JSON as the `members` of `status`.
#[derive(Debug, Serialize)]
pub struct MemberListView {
    pub members: Vec<MemberView>,
    pub revision: u64,
}

impl Render for MemberListView {
    fn text(&self) -> String {
        members_table(&self.members)
    }
}

impl Render for MemberChangeView {
    fn text(&self) -> String {
        let mut out = format!("done at revision {}\n", self.revision);
        if let Some(member) = &self.member {
            out.push_str(&members_table(std::slice::from_ref(member)));
        }
        out
    }
}

impl Render for MemberRemovedView {
    fn text(&self) -> String {
        format!(
            "removed member {} at revision {}",
            self.removed, self.revision
        )
    }
}

impl Render for LeaderView {
    fn text(&self) -> String {
        format!("member {} leads in term {}", self.leader_id, self.term)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::{render, Format};
    use vnet_proto::vnet::v1 as pb;

    #[test]
    fn status_json_shape_is_stable() {
        let status = pb::GetClusterStatusResponse {
            leader_id: Some(1),
            leader_name: "unit-a".into(),
            term: 3,
            commit_index: 40,
            applied_index: 39,
            revision: 39,
            responder_id: 2,
            version: "0.1.0".into(),
            data_dir_bytes: 4096,
            alarms: vec![],
            members: vec![pb::Member {
                id: 3,
                name: "witness".into(),
                role: pb::MemberRole::Witness as i32,
                api_addr: "127.0.0.1:7003".into(),
                peer_addr: "127.0.0.1:7103".into(),
                membership: pb::RaftMembership::Voter as i32,
                raft_state: pb::RaftState::Follower as i32,
                last_contact_ms: Some(12),
                matched_index: None,
                cabling: [("srv-b".to_string(), 2), ("srv-a".to_string(), 1)].into(),
                capacity: 0,
            }],
            units: vec![pb::UnitStatus {
                id: 1,
                name: "unit-a".into(),
                lease: pb::LeaseHealth::Expired as i32,
                lease_age_ms: Some(1500),
                draining: true,
                presented: vec!["db-01".into()],
                load: 1,
                capacity: 30,
                voters_granting: Some(1),
                lease_left_ms: None,
                switch_presenting: vec![],
                switch_reachable: Some(true),
                note: "holds no lease".into(),
            }],
            placements: vec![
                pb::ProfilePlacement {
                    profile: "db-01".into(),
                    desired_unit: String::new(),
                    presented_unit: "unit-a".into(),
                    state: pb::PlacementState::Moving as i32,
                    reason: "drain of unit-a".into(),
                    failed_over_from: String::new(),
                    moving_from: "unit-a".into(),
                    moving_to: "unit-b".into(),
                    revision: 38,
                },
                pb::ProfilePlacement {
                    profile: "web-01".into(),
                    desired_unit: "unit-b".into(),
                    presented_unit: "unit-b".into(),
                    state: pb::PlacementState::FailedOver as i32,
                    reason: "unit-a failed".into(),
                    failed_over_from: "unit-a".into(),
                    moving_from: String::new(),
                    moving_to: String::new(),
                    revision: 36,
                },
            ],
        };
        let json: serde_json::Value =
            serde_json::from_str(&render(Format::Json, &StatusView::from(&status))).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "leader_id": 1,
                "leader_name": "unit-a",
                "term": 3,
                "commit_index": 40,
                "applied_index": 39,
                "revision": 39,
                "responder_id": 2,
                "members": [{
                    "id": 3,
                    "name": "witness",
                    "role": "witness",
                    "api_addr": "127.0.0.1:7003",
                    "peer_addr": "127.0.0.1:7103",
                    "membership": "voter",
                    "raft_state": "follower",
                    "last_contact_ms": 12,
                    "matched_index": null,
                    "cabling": {"srv-a": 1, "srv-b": 2},
                    "capacity": 0,
                }],
                "units": [{
                    "id": 1,
                    "name": "unit-a",
                    "lease": "expired",
                    "lease_age_ms": 1500,
                    "draining": true,
                    "presented": ["db-01"],
                    "load": 1,
                    "capacity": 30,
                    "voters_granting": 1,
                    "lease_left_ms": null,
                    "switch_presenting": [],
                    "switch_reachable": true,
                    "note": "holds no lease",
                }],
                "placements": [
                    {
                        "profile": "db-01",
                        "desired_unit": null,
                        "presented_unit": "unit-a",
                        "state": "moving",
                        "reason": "drain of unit-a",
                        "failed_over_from": null,
                        "moving_from": "unit-a",
                        "moving_to": "unit-b",
                        "revision": 38,
                    },
                    {
                        "profile": "web-01",
                        "desired_unit": "unit-b",
                        "presented_unit": "unit-b",
                        "state": "failed_over",
                        "reason": "unit-a failed",
                        "failed_over_from": "unit-a",
                        "moving_from": null,
                        "moving_to": null,
                        "revision": 36,
                    },
                ],
                "alarms": [],
            })
        );
    }

    fn unit_view(name: &str, lease: LeaseView, draining: bool, presented: &[&str]) -> UnitView {
        UnitView {
            id: 1,
            name: name.into(),
            lease,
            lease_age_ms: match lease {
                LeaseView::Unknown => None,
                _ => Some(250),
            },
            draining,
            presented: presented.iter().map(|s| s.to_string()).collect(),
            load: presented.len() as u32,
            capacity: 30,
            voters_granting: None,
            lease_left_ms: None,
            switch_presenting: vec![],
            switch_reachable: None,
            note: String::new(),
        }
    }

    fn placement_view(profile: &str, state: PlacementStateView) -> PlacementView {
        PlacementView {
            profile: profile.into(),
            desired_unit: Some("unit-a".into()),
            presented_unit: Some("unit-a".into()),
            state,
            reason: "preferred unit".into(),
            failed_over_from: None,
            moving_from: None,
            moving_to: None,
            revision: 7,
        }
    }

    #[test]
    fn units_table_shows_lease_drain_presented_and_load() {
        let table = units_table(&[
            unit_view("unit-a", LeaseView::Healthy, false, &["web-01", "db-01"]),
            unit_view("unit-b", LeaseView::Unknown, true, &[]),
        ]);
        assert_eq!(
            table,
            "NAME    LEASE    LEASE AGE  GRANTS  LEASE LEFT  SWITCH  DRAINING  PRESENTED  LOAD/CAPACITY\n\
             unit-a  healthy  250ms      -       -           -       no        2          2/30\n\
             unit-b  unknown  -          -       -           -       yes       0          0/30\n"
        );
        assert_eq!(units_table(&[]), "no units\n");
    }

    #[test]
    fn placements_table_shows_moves_and_failed_over_from_only_when_set() {
        let plain = placements_table(&[
            placement_view("web-01", PlacementStateView::Presented),
            PlacementView {
                desired_unit: None,
                presented_unit: None,
                state: PlacementStateView::Unplaced,
                reason: "no unit has room".into(),
                ..placement_view("db-01", PlacementStateView::Unplaced)
            },
        ]);
        assert_eq!(
            plain,
            "PROFILE  DESIRED  PRESENTED  STATE      REASON\n\
             web-01   unit-a   unit-a     presented  preferred unit\n\
             db-01    -        -          unplaced   no unit has room\n"
        );
        let moved = placements_table(&[
            PlacementView {
                desired_unit: None,
                moving_from: Some("unit-a".into()),
                moving_to: Some("unit-b".into()),
                reason: "drain of unit-a".into(),
                ..placement_view("app-01", PlacementStateView::Moving)
            },
            PlacementView {
                desired_unit: Some("unit-b".into()),
                presented_unit: Some("unit-b".into()),
                failed_over_from: Some("unit-a".into()),
                reason: "unit-a failed".into(),
                ..placement_view("web-01", PlacementStateView::FailedOver)
            },
        ]);
        assert_eq!(
            moved,
            "PROFILE  DESIRED           PRESENTED  STATE        REASON           FAILED-OVER-FROM\n\
             app-01   unit-a -> unit-b  unit-a     moving       drain of unit-a  -\n\
             web-01   unit-b            unit-b     failed_over  unit-a failed    unit-a\n"
        );
        assert_eq!(placements_table(&[]), "no profiles\n");
    }

    #[test]
    fn status_text_has_members_then_units_then_profiles() {
        let status = StatusView {
            leader_id: Some(2),
            leader_name: "unit-b".into(),
            term: 4,
            commit_index: 10,
            applied_index: 10,
            revision: 9,
            responder_id: 2,
            members: vec![],
            units: vec![unit_view("unit-a", LeaseView::Expired, false, &[])],
            placements: vec![placement_view("web-01", PlacementStateView::Programming)],
            alarms: vec![],
        };
        let text = render(Format::Table, &status);
        let members = text.find("ID  NAME").expect("members table");
        let units = text.find("NAME    LEASE").expect("units table");
        let profiles = text.find("PROFILE").expect("profiles table");
        assert!(members < units && units < profiles, "{text}");
        assert!(text.contains("unit-a  expired"), "{text}");
        assert!(text.contains("programming"), "{text}");
    }

    #[test]
    fn drain_undrain_and_failover_have_stable_json_and_readable_text() {
        let drain = DrainView {
            unit: "unit-a".into(),
            revision: 40,
            profiles: vec!["db-01".into(), "web-01".into()],
            drained: false,
            waited_ms: None,
        };
        assert_eq!(
            serde_json::to_value(&drain).unwrap(),
            serde_json::json!({
                "unit": "unit-a", "revision": 40, "profiles": ["db-01", "web-01"],
                "drained": false, "waited_ms": null,
            })
        );
        assert_eq!(
            drain.text(),
            "unit-a is draining (revision 40); 2 profile(s) will move off: db-01, web-01\n"
        );
        let undrain = UndrainView {
            unit: "unit-a".into(),
            revision: 41,
        };
        assert_eq!(
            serde_json::to_value(&undrain).unwrap(),
            serde_json::json!({"unit": "unit-a", "revision": 41})
        );
        let failover = FailoverView {
            profile: None,
            from_unit: Some("unit-a".into()),
            to_unit: None,
            revision: 42,
            profiles: vec!["web-01".into()],
        };
        assert_eq!(
            serde_json::to_value(&failover).unwrap(),
            serde_json::json!({
                "profile": null, "from_unit": "unit-a", "to_unit": null, "revision": 42,
                "profiles": ["web-01"],
            })
        );
        assert!(
            failover
                .text()
                .starts_with("started moving 1 profile(s) off unit-a at revision 42: web-01"),
            "{}",
            failover.text()
        );
        let nothing = FailoverView {
            profiles: vec![],
            ..failover
        };
        assert!(
            nothing.text().starts_with("nothing to move"),
            "{}",
            nothing.text()
        );
    }
}
