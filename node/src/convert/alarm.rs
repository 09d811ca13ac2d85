//! Alarms between the model ([`vnet_model::Alarm`]) and the wire (`vnet.v1.Alarm`).

use vnet_model::{Alarm, AlarmKind};
use vnet_proto::vnet::v1 as pb;

use crate::error::ApiError;

pub fn kind_to_wire(kind: AlarmKind) -> pb::AlarmKind {
    match kind {
        AlarmKind::NoSpace => pb::AlarmKind::Nospace,
    }
}

/// `None` for unspecified: every kind.
pub fn kind_from_wire(field: &str, value: i32) -> Result<Option<AlarmKind>, ApiError> {
    match pb::AlarmKind::try_from(value) {
        Ok(pb::AlarmKind::Unspecified) => Ok(None),
        Ok(pb::AlarmKind::Nospace) => Ok(Some(AlarmKind::NoSpace)),
        Err(_) => Err(ApiError::invalid(field, value, "not an AlarmKind value")),
    }
}

pub fn to_wire(alarm: &Alarm) -> pb::Alarm {
    pb::Alarm {
        member: alarm.member.clone(),
        kind: kind_to_wire(alarm.kind) as i32,
        raised_revision: alarm.raised,
        used_bytes: alarm.used_bytes,
        quota_bytes: alarm.quota_bytes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_round_trip_and_unknown_values_are_refused() {
        let wire = kind_to_wire(AlarmKind::NoSpace) as i32;
        assert_eq!(
            kind_from_wire("kind", wire).expect("known"),
            Some(AlarmKind::NoSpace)
        );
        assert_eq!(kind_from_wire("kind", 0).expect("unspecified"), None);
        let err = kind_from_wire("kind", 99).expect_err("unknown");
        assert!(err.to_string().contains("kind"), "{err}");
    }

    #[test]
    fn an_alarm_keeps_its_report() {
        let alarm = Alarm {
            member: "unit-a".into(),
            kind: AlarmKind::NoSpace,
            raised: 7,
            used_bytes: 2_000,
            quota_bytes: 1_000,
        };
        let wire = to_wire(&alarm);
        assert_eq!(wire.member, "unit-a");
        assert_eq!(wire.kind, pb::AlarmKind::Nospace as i32);
        assert_eq!(
            (wire.raised_revision, wire.used_bytes, wire.quota_bytes),
            (7, 2_000, 1_000)
        );
    }
}
