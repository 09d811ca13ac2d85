//! Printing results: `-o table` for people, `-o json` for programs (shapes in [`crate::view`]).

use serde::Serialize;

use crate::view::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Aligned columns for reading.
    Table,
    /// One JSON document per result (JSON lines for `watch`), shapes documented in `--help`.
    Json,
}

/// A result that knows how to print itself for people; JSON comes from `Serialize`.
pub trait Render: Serialize {
    fn text(&self) -> String;
}

/// The whole output of one result in the chosen format, ending with a newline.
pub fn render(format: Format, value: &impl Render) -> String {
    match format {
        Format::Table => {
            let mut text = value.text();
            if !text.ends_with('\n') {
                text.push('\n');
            }
            text
        }
        Format::Json => json_document(value),
    }
}

/// Pretty JSON with a trailing newline.
pub fn json_document(value: &impl Serialize) -> String {
    // Serializing these view types cannot fail: they hold only strings, numbers, options,
    // vectors and string-keyed maps.
    let mut text = serde_json::to_string_pretty(value).expect("view types serialize");
    text.push('\n');
    text
}

/// One compact JSON line, for streams.
pub fn json_line(value: &impl Serialize) -> String {
    // See `json_document` for why this cannot fail.
    serde_json::to_string(value).expect("view types serialize")
}

/// A plain text table: a header row and left-aligned columns separated by two spaces.
pub struct Table {
    headers: Vec<&'static str>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(headers: Vec<&'static str>) -> Self {
        Table {
            headers,
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        assert_eq!(
            cells.len(),
            self.headers.len(),
            "a row has one cell per column"
        );
        self.rows.push(cells);
    }

    pub fn render(&self) -> String {
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (width, cell) in widths.iter_mut().zip(row) {
                *width = (*width).max(cell.chars().count());
            }
        }
        let mut out = String::new();
        let header: Vec<String> = self.headers.iter().map(|h| h.to_string()).collect();
        for row in std::iter::once(&header).chain(&self.rows) {
            let mut line = String::new();
            for (index, (cell, width)) in row.iter().zip(&widths).enumerate() {
                if index > 0 {
                    line.push_str("  ");
                }
                line.push_str(cell);
                if index + 1 < row.len() {
                    line.extend(std::iter::repeat_n(' ', width - cell.chars().count()));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

fn or_dash(value: Option<impl ToString>) -> String {
    value.map_or_else(|| "-".to_string(), |v| v.to_string())
}

/// An enum as its JSON word ("failed_over"), for table cells.
pub fn word(value: &impl Serialize) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(word)) => word,
        _ => "?".into(),
    }
}

fn vlan_text(vlan: u32) -> String {
    if vlan == 0 {
        "untagged".into()
    } else {
        vlan.to_string()
    }
}

impl Render for ProfileView {
    fn text(&self) -> String {
        let mut out = format!(
            "profile:         {}\nserver:          {}\npreferred unit:  {}\nfailback:        {}\nrevision:        {} (created at {})\n",
            self.name,
            self.server,
            or_dash(self.preferred_unit.as_ref()),
            word(&self.failback),
            self.revision,
            self.created_revision,
        );
        if !self.vnics.is_empty() {
            let mut table = Table::new(vec!["VNIC", "MAC", "NETWORK", "VLAN", "POOL"]);
            for vnic in &self.vnics {
                table.row(vec![
                    vnic.name.clone(),
                    vnic.mac.clone(),
                    vnic.network.clone(),
                    vlan_text(vnic.vlan),
                    or_dash(vnic.pool.as_ref()),
                ]);
            }
            out.push('\n');
            out.push_str(&table.render());
        }
        if !self.vhbas.is_empty() {
            let mut table = Table::new(vec!["VHBA", "WWPN", "WWNN", "FABRIC", "POOL"]);
            for vhba in &self.vhbas {
                table.row(vec![
                    vhba.name.clone(),
                    vhba.wwpn.clone(),
                    vhba.wwnn.clone(),
                    vhba.fabric.clone(),
                    or_dash(vhba.pool.as_ref()),
                ]);
            }
            out.push('\n');
            out.push_str(&table.render());
        }
        out
    }
}

impl Render for ProfileListView {
    fn text(&self) -> String {
        let mut table = Table::new(vec![
            "NAME",
            "SERVER",
            "VNICS",
            "VHBAS",
            "PREFERRED",
            "FAILBACK",
            "REVISION",
        ]);
        for profile in &self.profiles {
            table.row(vec![
                profile.name.clone(),
                profile.server.clone(),
                profile.vnics.len().to_string(),
                profile.vhbas.len().to_string(),
                or_dash(profile.preferred_unit.as_ref()),
                word(&profile.failback),
                profile.revision.to_string(),
            ]);
        }
        let mut out = table.render();
        out.push_str(&format!(
            "{} profile(s) at revision {}{}\n",
            self.profiles.len(),
            self.revision,
            if self.truncated {
                " (stopped at --limit; more exist)"
            } else {
                ""
            }
        ));
        out
    }
}

impl Render for PoolView {
    fn text(&self) -> String {
        PoolListView {
            pools: vec![self.clone()],
            revision: self.revision,
        }
        .table()
    }
}

impl PoolListView {
    fn table(&self) -> String {
        let mut table = Table::new(vec!["NAME", "KIND", "FIRST", "LAST", "REVISION"]);
        for pool in &self.pools {
            table.row(vec![
                pool.name.clone(),
                word(&pool.kind),
                pool.first.clone(),
                pool.last.clone(),
                pool.revision.to_string(),
            ]);
        }
        table.render()
    }
}

impl Render for PoolListView {
    fn text(&self) -> String {
        self.table()
    }
}

impl Render for PoolUsageListView {
    fn text(&self) -> String {
        let mut table = Table::new(vec!["NAME", "KIND", "SIZE", "USED", "USED%", "WARNING"]);
        for usage in &self.usages {
            let percent = if usage.size == 0 {
                0.0
            } else {
                usage.used as f64 * 100.0 / usage.size as f64
            };
            table.row(vec![
                usage.name.clone(),
                word(&usage.kind),
                usage.size.to_string(),
                usage.used.to_string(),
                format!("{percent:.1}"),
                if usage.near_exhaustion {
                    "near exhaustion".into()
                } else {
                    String::new()
                },
            ]);
        }
        table.render()
    }
}

impl Render for DeletedView {
    fn text(&self) -> String {
        format!("deleted {} at revision {}", self.deleted, self.revision)
    }
}

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

impl Render for BenchView {
    fn text(&self) -> String {
        let mut out = String::new();
        for (title, levels) in [
            (
                "writes (CreateProfile, and DeleteProfile of older ones)",
                &self.writes,
            ),
            ("linearizable reads (GetProfile)", &self.reads),
        ] {
            if levels.is_empty() {
                continue;
            }
            let mut table = Table::new(vec![
                "CONCURRENCY",
                "OPS",
                "ERRORS",
                "OPS/S",
                "P50 MS",
                "P99 MS",
                "MAX MS",
            ]);
            for level in levels.iter() {
                table.row(vec![
                    level.concurrency.to_string(),
                    level.ok.to_string(),
                    level.errors.to_string(),
                    format!("{:.1}", level.ops_per_s),
                    format!("{:.2}", level.p50_ms),
                    format!("{:.2}", level.p99_ms),
                    format!("{:.2}", level.max_ms),
                ]);
            }
            out.push_str(title);
            out.push('\n');
            out.push_str(&table.render());
            for level in levels.iter() {
                if let Some(error) = &level.first_error {
                    out.push_str(&format!(
                        "  first error at concurrency {}: {error}\n",
                        level.concurrency
                    ));
                }
            }
            out.push('\n');
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vnet_proto::vnet::v1 as pb;

    fn sample_profile() -> pb::Profile {
        pb::Profile {
            name: "web-01".into(),
            server: "rack1-srv01".into(),
            vnics: vec![pb::Vnic {
                name: "eth0".into(),
                mac: "02:00:00:00:00:01".into(),
                network: "prod".into(),
                vlan: 100,
                pool: Some("macs".into()),
            }],
            vhbas: vec![pb::Vhba {
                name: "fc0".into(),
                wwpn: "20:00:00:25:b5:00:00:01".into(),
                wwnn: "20:00:00:25:b5:00:01:01".into(),
                fabric: "a".into(),
                pool: None,
            }],
            preferred_unit: None,
            failback: pb::FailbackPolicy::Manual as i32,
            revision: 12,
            created_revision: 7,
        }
    }

    /// Scripts depend on this exact shape: a change here must be a deliberate one.
    #[test]
    fn profile_json_shape_is_stable() {
        let view = ProfileView::from(&sample_profile());
        let json: serde_json::Value = serde_json::from_str(&render(Format::Json, &view)).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "name": "web-01",
                "server": "rack1-srv01",
                "vnics": [{
                    "name": "eth0",
                    "mac": "02:00:00:00:00:01",
                    "network": "prod",
                    "vlan": 100,
                    "pool": "macs",
                }],
                "vhbas": [{
                    "name": "fc0",
                    "wwpn": "20:00:00:25:b5:00:00:01",
                    "wwnn": "20:00:00:25:b5:00:01:01",
                    "fabric": "a",
                    "pool": null,
                }],
                "preferred_unit": null,
                "failback": "manual",
                "revision": 12,
                "created_revision": 7,
            })
        );
    }

    #[test]
    fn profile_get_output_reads_back_as_a_file_unchanged() {
        let wire = sample_profile();
        let printed = render(Format::Json, &ProfileView::from(&wire));
        let read: ProfileView = serde_json::from_str(&printed).unwrap();
        assert_eq!(pb::Profile::from(&read), wire);
    }

    #[test]
    fn profile_file_may_leave_out_defaults_but_not_add_unknown_keys() {
        let minimal: ProfileView = serde_json::from_str(
            r#"{"name":"db-01","server":"s1","vnics":[{"name":"eth0","network":"prod","pool":"macs"}]}"#,
        )
        .unwrap();
        assert_eq!(minimal.failback, FailbackView::Auto);
        assert_eq!(minimal.vnics[0].vlan, 0);
        assert_eq!(minimal.vnics[0].mac, "");
        assert_eq!(minimal.revision, 0);
        let typo =
            serde_json::from_str::<ProfileView>(r#"{"name":"db-01","server":"s1","vnic":[]}"#)
                .unwrap_err();
        assert!(typo.to_string().contains("unknown field `vnic`"), "{typo}");
    }

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

    #[test]
    fn unknown_enum_numbers_print_as_unspecified() {
        let member = pb::Member {
            role: 42,
            membership: 42,
            raft_state: 42,
            ..pb::Member::default()
        };
        let json = serde_json::to_value(MemberView::from(&member)).unwrap();
        assert_eq!(json["role"], "unspecified");
        assert_eq!(json["membership"], "unspecified");
        assert_eq!(json["raft_state"], "unspecified");
    }

    #[test]
    fn table_aligns_columns_and_trims_trailing_space() {
        let mut table = Table::new(vec!["NAME", "KIND", "NOTE"]);
        table.row(vec!["mac-pool".into(), "mac".into(), String::new()]);
        table.row(vec!["w".into(), "wwn".into(), "near".into()]);
        assert_eq!(
            table.render(),
            "NAME      KIND  NOTE\nmac-pool  mac\nw         wwn   near\n"
        );
    }

    #[test]
    fn pool_usage_table_shows_percent_and_warning() {
        let usage = PoolUsageListView {
            usages: vec![PoolUsageView {
                name: "macs".into(),
                kind: PoolKindView::Mac,
                size: 10,
                used: 9,
                near_exhaustion: true,
            }],
            revision: 5,
        };
        let text = render(Format::Table, &usage);
        assert!(text.contains("90.0"), "{text}");
        assert!(text.contains("near exhaustion"), "{text}");
    }
}
