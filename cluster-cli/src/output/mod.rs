//! Printing results: `-o table` for people, `-o json` for programs (shapes in [`crate::view`]).
//!
//! This file holds the formats and the table; each command family renders in its own file:
//! `profiles`, `pools`, `cluster` (status, members, alarms, moves), `watch`, `bench`.

use serde::Serialize;

use crate::view::*;

mod bench;
mod cluster;
mod pools;
mod profiles;
mod watch;

pub use cluster::{members_table, placements_table, units_table, MemberListView};

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

impl Render for DeletedView {
    fn text(&self) -> String {
        format!("deleted {} at revision {}", self.deleted, self.revision)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vnet_proto::vnet::v1 as pb;

    /// A profile with one vNIC and one vHBA, for the tests of every output file.
    pub(super) fn sample_profile() -> pb::Profile {
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
}
