//! Alarms: conditions a member reports that restrict what the cluster accepts until an operator
//! disarms them. Kept in the replicated state, so every node agrees on them and refuses the same
//! commands, whichever node a client asks.
//!
//! The one alarm is [`AlarmKind::NoSpace`], like etcd's `NOSPACE`: a member's data directory grew
//! past its `--quota-bytes`. While it is raised, commands that add data ([`Command::adds_data`])
//! are refused; reads, deletions and everything the system itself writes (leases, placement,
//! failover, reports) go on, so a full disk never stops a failover. The member reports its usage
//! when it crosses the quota either way ([`Command::ReportSpace`]); an operator disarms the
//! alarm once the last report is back under the quota ([`Command::DisarmAlarm`]).
//!
//! [`Command::adds_data`]: crate::Command::adds_data
//! [`Command::ReportSpace`]: crate::Command::ReportSpace
//! [`Command::DisarmAlarm`]: crate::Command::DisarmAlarm

use serde::{Deserialize, Serialize};

use crate::Revision;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum AlarmKind {
    /// A member's data directory is past its quota.
    NoSpace,
}

impl AlarmKind {
    /// Every kind, so that monitoring can show each as raised or not.
    pub const ALL: [AlarmKind; 1] = [AlarmKind::NoSpace];

    /// The name operators see, as etcd spells it.
    pub fn name(self) -> &'static str {
        match self {
            AlarmKind::NoSpace => "NOSPACE",
        }
    }
}

impl std::fmt::Display for AlarmKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A raised alarm, with the member's last report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Alarm {
    /// The member (by name) whose condition raised it.
    pub member: String,
    pub kind: AlarmKind,
    /// The revision at which it was raised.
    pub raised: Revision,
    /// The member's last report: bytes its data directory uses, and its quota.
    pub used_bytes: u64,
    pub quota_bytes: u64,
}

impl Alarm {
    /// Whether the member's last report is within its quota, so the alarm may be disarmed.
    pub fn cleared(&self) -> bool {
        self.used_bytes <= self.quota_bytes
    }

    /// One line for error messages and logs.
    pub fn describe(&self) -> String {
        format!(
            "alarm {} on member {} ({} bytes used of its {}-byte quota)",
            self.kind, self.member, self.used_bytes, self.quota_bytes
        )
    }
}
