//! `watch`: one line per event.

use super::word;
use crate::view::*;

impl WatchEventView {
    /// One line per event for `watch` in table mode.
    pub fn line(&self) -> String {
        let what = match &self.change {
            ChangeView::ProfilePut { profile } => format!(
                "profile put     {} (server {}, {} vnic(s), {} vhba(s))",
                profile.name,
                profile.server,
                profile.vnics.len(),
                profile.vhbas.len()
            ),
            ChangeView::ProfileDeleted { name } => format!("profile deleted {name}"),
            ChangeView::PoolPut { pool } => format!(
                "pool put        {} ({} {}..{})",
                pool.name,
                word(&pool.kind),
                pool.first,
                pool.last
            ),
            ChangeView::PoolDeleted { name } => format!("pool deleted    {name}"),
            ChangeView::MemberPut { member } => format!(
                "member put      {} {} ({}, {})",
                member.id,
                member.name,
                word(&member.role),
                word(&member.membership)
            ),
            ChangeView::MemberRemoved { id } => format!("member removed  {id}"),
            ChangeView::LeaseRevoked { unit } => format!("lease revoked   {unit}"),
            ChangeView::MembershipSettled { log_index } => {
                format!("membership settled (log index {log_index})")
            }
            ChangeView::Recovered { survivor, lost } => format!(
                "recovered       {survivor} is the only voter; lost {} (refused from now on)",
                lost.iter()
                    .map(u64::to_string)
                    .collect::<Vec<_>>()
                    .join(",")
            ),
            ChangeView::AlarmPut { alarm } => format!(
                "alarm put       {} on {} ({} bytes of {})",
                alarm.kind, alarm.member, alarm.used_bytes, alarm.quota_bytes
            ),
            ChangeView::AlarmsDisarmed { alarms } => format!(
                "alarms disarmed {}",
                alarms
                    .iter()
                    .map(|a| format!("{} on {}", a.kind, a.member))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            ChangeView::Placements { placements } => format!(
                "placements      {}",
                placements
                    .iter()
                    .map(placement_change_text)
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
            ChangeView::Presented { unit, profiles } => format!(
                "presented       {unit}: {}",
                if profiles.is_empty() {
                    "nothing".to_string()
                } else {
                    profiles.join(", ")
                }
            ),
            ChangeView::Drain { unit, draining } => format!(
                "drain {}   {unit}",
                if *draining { "started" } else { "ended  " }
            ),
            ChangeView::RoleGranted { principal, role } => {
                format!("role granted    {principal}: {role}")
            }
            ChangeView::RoleRevoked { principal } => format!("role revoked    {principal}"),
            ChangeView::Unknown => "unknown change (newer server than this vnetctl)".into(),
        };
        let actor = match (self.actor.as_str(), &self.on_behalf_of) {
            ("", _) => "-".to_string(),
            (actor, None) => actor.to_string(),
            (actor, Some(note)) => format!("{actor} (on behalf of {note})"),
        };
        format!("{:>8}  {actor}  {what}", self.revision)
    }
}

/// One placement decision for a `watch` line, e.g. "web-01 -> unit-b (unit-a failed)".
fn placement_change_text(placement: &PlacementView) -> String {
    let place = match (
        &placement.moving_from,
        &placement.moving_to,
        &placement.desired_unit,
    ) {
        (Some(from), Some(to), _) => format!("moving {from} -> {to}"),
        (_, _, Some(unit)) => format!("-> {unit}"),
        _ => "unplaced".into(),
    };
    if placement.reason.is_empty() {
        format!("{} {place}", placement.profile)
    } else {
        format!("{} {place} ({})", placement.profile, placement.reason)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::json_line;
    use crate::output::tests::sample_profile;
    use vnet_proto::vnet::v1 as pb;

    #[test]
    fn watch_events_are_one_tagged_json_line_each() {
        let deleted = pb::WatchEvent {
            revision: 9,
            actor: "alice".into(),
            on_behalf_of: String::new(),
            change: Some(pb::watch_event::Change::ProfileDeleted("web-01".into())),
        };
        assert_eq!(
            json_line(&WatchEventView::from(&deleted)),
            r#"{"revision":9,"actor":"alice","change":"profile_deleted","name":"web-01"}"#
        );
        let removed = pb::WatchEvent {
            revision: 10,
            actor: "system".into(),
            on_behalf_of: String::new(),
            change: Some(pb::watch_event::Change::MemberRemoved(4)),
        };
        assert_eq!(
            json_line(&WatchEventView::from(&removed)),
            r#"{"revision":10,"actor":"system","change":"member_removed","id":4}"#
        );
        let put = pb::WatchEvent {
            revision: 11,
            actor: "bob".into(),
            on_behalf_of: String::new(),
            change: Some(pb::watch_event::Change::ProfilePut(sample_profile())),
        };
        let line: serde_json::Value =
            serde_json::from_str(&json_line(&WatchEventView::from(&put))).unwrap();
        assert_eq!(line["change"], "profile_put");
        assert_eq!(line["profile"]["name"], "web-01");
        let drain = pb::WatchEvent {
            revision: 13,
            actor: "alice".into(),
            on_behalf_of: String::new(),
            change: Some(pb::watch_event::Change::Drain(pb::UnitDrain {
                unit: "unit-a".into(),
                draining: true,
            })),
        };
        let view = WatchEventView::from(&drain);
        assert_eq!(
            json_line(&view),
            r#"{"revision":13,"actor":"alice","change":"drain","unit":"unit-a","draining":true}"#
        );
        assert_eq!(view.line(), "      13  alice  drain started   unit-a");
        let presented = pb::WatchEvent {
            revision: 14,
            actor: "unit-b".into(),
            on_behalf_of: String::new(),
            change: Some(pb::watch_event::Change::Presented(pb::UnitPresented {
                unit: "unit-b".into(),
                profiles: vec!["db-01".into(), "web-01".into()],
            })),
        };
        let view = WatchEventView::from(&presented);
        assert_eq!(
            json_line(&view),
            r#"{"revision":14,"actor":"unit-b","change":"presented","unit":"unit-b","profiles":["db-01","web-01"]}"#
        );
        assert_eq!(
            view.line(),
            "      14  unit-b  presented       unit-b: db-01, web-01"
        );
        let placements = pb::WatchEvent {
            revision: 15,
            actor: "system".into(),
            on_behalf_of: String::new(),
            change: Some(pb::watch_event::Change::Placements(pb::PlacementChanges {
                placements: vec![
                    pb::ProfilePlacement {
                        profile: "web-01".into(),
                        desired_unit: "unit-b".into(),
                        state: pb::PlacementState::Programming as i32,
                        reason: "unit-a failed".into(),
                        failed_over_from: "unit-a".into(),
                        revision: 15,
                        ..Default::default()
                    },
                    pb::ProfilePlacement {
                        profile: "db-01".into(),
                        state: pb::PlacementState::Moving as i32,
                        moving_from: "unit-a".into(),
                        moving_to: "unit-b".into(),
                        revision: 15,
                        ..Default::default()
                    },
                ],
            })),
        };
        let view = WatchEventView::from(&placements);
        let line: serde_json::Value = serde_json::from_str(&json_line(&view)).unwrap();
        assert_eq!(line["change"], "placements");
        assert_eq!(line["placements"][0]["failed_over_from"], "unit-a");
        assert_eq!(
            line["placements"][0]["presented_unit"],
            serde_json::Value::Null
        );
        assert_eq!(line["placements"][1]["state"], "moving");
        assert_eq!(
            view.line(),
            "      15  system  placements      web-01 -> unit-b (unit-a failed); \
             db-01 moving unit-a -> unit-b"
        );
        let unknown = pb::WatchEvent {
            revision: 12,
            actor: String::new(),
            on_behalf_of: String::new(),
            change: None,
        };
        assert!(WatchEventView::from(&unknown)
            .line()
            .contains("unknown change"));
    }

    #[test]
    fn role_events_and_notes_print_beside_the_actor() {
        let granted = pb::WatchEvent {
            revision: 20,
            actor: "root".into(),
            on_behalf_of: "ticket-7".into(),
            change: Some(pb::watch_event::Change::RoleGranted(pb::RoleBinding {
                principal: "ops".into(),
                role: pb::AccessRole::Operator as i32,
            })),
        };
        let view = WatchEventView::from(&granted);
        assert_eq!(
            json_line(&view),
            r#"{"revision":20,"actor":"root","on_behalf_of":"ticket-7","change":"role_granted","principal":"ops","role":"operator"}"#
        );
        assert_eq!(
            view.line(),
            "      20  root (on behalf of ticket-7)  role granted    ops: operator"
        );
        let revoked = pb::WatchEvent {
            revision: 21,
            actor: "root".into(),
            on_behalf_of: String::new(),
            change: Some(pb::watch_event::Change::RoleRevoked("ops".into())),
        };
        assert_eq!(
            json_line(&WatchEventView::from(&revoked)),
            r#"{"revision":21,"actor":"root","change":"role_revoked","principal":"ops"}"#
        );
    }
}
