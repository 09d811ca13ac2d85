//! The `NOSPACE` alarm in the replicated state: raised by a member's report past its quota,
//! refusing every command that adds data (and nothing else) while raised, disarmed only once the
//! member's last report is back within its quota, and kept in snapshots.

use vnet_model::{
    apply, AlarmKind, Change, Command, Failback, Mac, Outcome, PoolRange, PoolSpec, ProfileSpec,
    Rejection, Request, Revision, State,
};

struct Replica {
    state: State,
    next: Revision,
}

impl Replica {
    fn run(&mut self, command: Command) -> Result<Outcome, Rejection> {
        let before = self.state.clone();
        self.next += 1;
        let result = apply(
            &mut self.state,
            self.next,
            &Request {
                actor: "tester".into(),
                command,
                trace: None,
                on_behalf_of: None,
            },
        );
        if result.is_err() {
            assert_eq!(self.state, before, "a refused command changed the state");
        }
        self.state.check_invariants().expect("invariants hold");
        result
    }
}

fn report(member: &str, used_bytes: u64, quota_bytes: u64) -> Command {
    Command::ReportSpace {
        member: member.into(),
        used_bytes,
        quota_bytes,
    }
}

fn pool(name: &str, first: u64) -> Command {
    let mac = |n: u64| Mac::from_u64(0x0200_0000_0000 + n).expect("unicast");
    Command::CreatePool(PoolSpec {
        name: name.into(),
        range: PoolRange::Mac {
            first: mac(first),
            last: mac(first + 15),
        },
    })
}

fn profile(name: &str) -> ProfileSpec {
    ProfileSpec {
        name: name.into(),
        server: "srv-1".into(),
        vnics: Vec::new(),
        vhbas: Vec::new(),
        preferred_unit: None,
        failback: Failback::Manual,
    }
}

#[test]
fn a_report_past_the_quota_refuses_what_adds_data_until_disarmed() {
    let mut replica = Replica {
        state: State::default(),
        next: 0,
    };
    replica.run(pool("macs", 0)).expect("a pool");
    replica
        .run(Command::CreateProfile(profile("web-01")))
        .expect("a profile");
    // Within the quota and nothing raised: nothing to report.
    assert!(matches!(
        replica.run(report("unit-a", 10, 100)),
        Err(Rejection::FailedPrecondition { .. })
    ));
    let Outcome::AlarmReported { alarm } = replica.run(report("unit-a", 101, 100)).expect("raise")
    else {
        panic!("not an alarm report");
    };
    assert_eq!(alarm.kind, AlarmKind::NoSpace);
    assert_eq!(replica.state.no_space_alarm(), Some(&alarm));
    assert!(matches!(
        &replica.state.events_since(alarm.raised).expect("history").next().expect("event").change,
        Change::AlarmPut(a) if *a == alarm
    ));
    for adds in [
        pool("more", 100),
        Command::CreateProfile(profile("web-02")),
        Command::UpdateProfile {
            spec: profile("web-01"),
            expected_revision: None,
        },
    ] {
        let refused = replica.run(adds).expect_err("refused under NOSPACE");
        assert!(
            matches!(refused, Rejection::AlarmRaised { .. }),
            "{refused:?}"
        );
        let message = refused.to_string();
        assert!(
            message.contains("NOSPACE") && message.contains("unit-a"),
            "{message}"
        );
    }
    // Deleting frees space and goes on; so do the system's own writes.
    replica
        .run(Command::DeleteProfile {
            name: "web-01".into(),
            expected_revision: None,
        })
        .expect("a delete under NOSPACE");
    replica
        .run(Command::SetDrain {
            unit: "unit-a".into(),
            draining: false,
        })
        .ok();
    // Still past the quota: disarming is refused and changes nothing.
    let refused = replica
        .run(Command::DisarmAlarm {
            member: None,
            kind: None,
        })
        .expect_err("still over quota");
    assert!(
        matches!(&refused, Rejection::FailedPrecondition { reason } if reason.contains("still past its quota")),
        "{refused:?}"
    );
    // Another report, still over: the alarm keeps its revision and takes the new numbers.
    replica.run(report("unit-a", 150, 100)).expect("update");
    assert_eq!(
        replica.state.no_space_alarm().expect("raised").raised,
        alarm.raised
    );
    assert_eq!(
        replica.state.no_space_alarm().expect("raised").used_bytes,
        150
    );
    // Back within the quota: the alarm stays until disarmed, then writes resume.
    replica.run(report("unit-a", 90, 100)).expect("back within");
    assert!(replica.state.no_space_alarm().is_some());
    assert!(replica
        .run(Command::CreateProfile(profile("web-02")))
        .is_err());
    assert!(matches!(
        replica.run(Command::DisarmAlarm {
            member: Some("unit-b".into()),
            kind: None,
        }),
        Err(Rejection::NotFound { .. })
    ));
    let Outcome::AlarmsDisarmed { alarms } = replica
        .run(Command::DisarmAlarm {
            member: Some("unit-a".into()),
            kind: Some(AlarmKind::NoSpace),
        })
        .expect("disarm")
    else {
        panic!("not a disarm");
    };
    assert_eq!(alarms.len(), 1);
    assert!(replica.state.no_space_alarm().is_none());
    replica
        .run(Command::CreateProfile(profile("web-02")))
        .expect("writes resume");
}

#[test]
fn alarms_survive_a_snapshot_and_old_snapshots_have_none() {
    let mut replica = Replica {
        state: State::default(),
        next: 0,
    };
    replica.run(report("unit-b", 5_000, 4_000)).expect("raise");
    let json = serde_json::to_string(&replica.state).expect("encode");
    let decoded: State = serde_json::from_str(&json).expect("decode");
    assert_eq!(decoded, replica.state);
    assert!(decoded.no_space_alarm().is_some());
    // A snapshot written before alarms existed has no `alarms` field.
    let mut value: serde_json::Value = serde_json::from_str(&json).expect("json");
    value.as_object_mut().expect("object").remove("alarms");
    let old: State = serde_json::from_value(value).expect("an old snapshot decodes");
    assert!(old.alarms().next().is_none());
}

#[test]
fn a_report_names_a_member_by_the_naming_rule() {
    let mut replica = Replica {
        state: State::default(),
        next: 0,
    };
    assert!(matches!(
        replica.run(report("Not A Name", 2, 1)),
        Err(Rejection::InvalidArgument { .. })
    ));
}
