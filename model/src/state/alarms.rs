//! The handlers of the commands about alarms: a member's report of its disk use, and disarming.

use super::State;
use crate::alarm::{Alarm, AlarmKind};
use crate::command::Outcome;
use crate::error::Rejection;
use crate::limits::MEMBERS_MAX;
use crate::Revision;

impl State {
    pub(super) fn report_space(
        &mut self,
        revision: Revision,
        member: &str,
        used_bytes: u64,
        quota_bytes: u64,
    ) -> Result<Outcome, Rejection> {
        crate::name::validate_name("member", member)?;
        let key = (member.to_string(), AlarmKind::NoSpace);
        let raised = match self.alarms.get(&key) {
            Some(alarm) => alarm.raised,
            None if used_bytes > quota_bytes => {
                if self.alarms.len() >= MEMBERS_MAX {
                    return Err(Rejection::limit("alarms", MEMBERS_MAX));
                }
                revision
            }
            None => {
                return Err(Rejection::FailedPrecondition {
                    reason: format!(
                        "member {member:?} is within its quota ({used_bytes} of {quota_bytes} \
                         bytes) and has no alarm raised: nothing to report"
                    ),
                })
            }
        };
        let alarm = Alarm {
            member: member.to_string(),
            kind: AlarmKind::NoSpace,
            raised,
            used_bytes,
            quota_bytes,
        };
        self.alarms.insert(key, alarm.clone());
        Ok(Outcome::AlarmReported { alarm })
    }

    pub(super) fn disarm_alarms(
        &mut self,
        member: Option<&str>,
        kind: Option<AlarmKind>,
    ) -> Result<Outcome, Rejection> {
        if let Some(member) = member {
            crate::name::validate_name("member", member)?;
        }
        let chosen: Vec<(String, AlarmKind)> = self
            .alarms
            .iter()
            .filter(|(_, a)| member.is_none_or(|m| a.member == m))
            .filter(|(_, a)| kind.is_none_or(|k| a.kind == k))
            .map(|(key, _)| key.clone())
            .collect();
        if chosen.is_empty() {
            return Err(Rejection::not_found(
                "alarm",
                format!(
                    "{} of {}",
                    kind.map_or("any kind".to_string(), |k| k.to_string()),
                    member.unwrap_or("any member")
                ),
            ));
        }
        if let Some(over) = chosen
            .iter()
            .filter_map(|key| self.alarms.get(key))
            .find(|a| !a.cleared())
        {
            return Err(Rejection::FailedPrecondition {
                reason: format!(
                    "cannot disarm: {} is still past its quota by its last report; free space \
                     on {} (or raise its --quota-bytes) and disarm again",
                    over.describe(),
                    over.member
                ),
            });
        }
        let alarms = chosen
            .iter()
            .filter_map(|key| self.alarms.remove(key))
            .collect();
        Ok(Outcome::AlarmsDisarmed { alarms })
    }
}
