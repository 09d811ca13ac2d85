//! The replicated role map: grants replace, revocations need a role to revoke, the last admin
//! stays, the bootstrap admin is taken at most once, the map and the "on behalf of" note survive
//! a snapshot, and entries written before either existed still decode.

use vnet_model::limits::ROLES_MAX;
use vnet_model::{
    apply, AccessRole, Change, Command, Outcome, Rejection, Request, Revision, State,
};

struct Replica {
    state: State,
    next: Revision,
}

impl Replica {
    fn new() -> Replica {
        Replica {
            state: State::default(),
            next: 0,
        }
    }

    fn run_noted(&mut self, command: Command, note: Option<&str>) -> Result<Outcome, Rejection> {
        let before = self.state.clone();
        self.next += 1;
        let result = apply(
            &mut self.state,
            self.next,
            &Request {
                actor: "alice".into(),
                command,
                trace: None,
                on_behalf_of: note.map(str::to_string),
            },
        );
        if result.is_err() {
            assert_eq!(self.state, before, "a refused command changed the state");
        }
        self.state.check_invariants().expect("invariants hold");
        result
    }

    fn run(&mut self, command: Command) -> Result<Outcome, Rejection> {
        self.run_noted(command, None)
    }
}

fn grant(principal: &str, role: AccessRole) -> Command {
    Command::GrantRole {
        principal: principal.into(),
        role,
    }
}

fn revoke(principal: &str) -> Command {
    Command::RevokeRole {
        principal: principal.into(),
    }
}

fn bootstrap(principal: &str) -> Command {
    Command::BootstrapAdmin {
        principal: principal.into(),
    }
}

fn refused_with(result: Result<Outcome, Rejection>, needles: &[&str]) {
    let rejection = result.expect_err("must be refused");
    for needle in needles {
        assert!(
            rejection.to_string().contains(needle),
            "{rejection} does not name {needle:?}"
        );
    }
}

#[test]
fn grants_replace_and_revocations_remove_each_recorded_as_an_event() {
    let mut r = Replica::new();
    assert_eq!(
        r.run(grant("bob", AccessRole::Viewer)).expect("grant"),
        Outcome::RoleGranted {
            principal: "bob".into(),
            role: AccessRole::Viewer,
            previous: None
        }
    );
    assert_eq!(
        r.run(grant("bob", AccessRole::Operator)).expect("regrant"),
        Outcome::RoleGranted {
            principal: "bob".into(),
            role: AccessRole::Operator,
            previous: Some(AccessRole::Viewer)
        }
    );
    assert_eq!(r.state.role_of("bob"), Some(AccessRole::Operator));
    assert_eq!(
        r.run(revoke("bob")).expect("revoke"),
        Outcome::RoleRevoked {
            principal: "bob".into(),
            role: AccessRole::Operator
        }
    );
    assert_eq!(r.state.role_of("bob"), None);
    refused_with(r.run(revoke("bob")), &["bob", "does not exist"]);
    let changes: Vec<Change> = r
        .state
        .events_since(0)
        .expect("history")
        .map(|e| e.change.clone())
        .collect();
    assert_eq!(
        changes,
        vec![
            Change::RoleGranted {
                principal: "bob".into(),
                role: AccessRole::Viewer
            },
            Change::RoleGranted {
                principal: "bob".into(),
                role: AccessRole::Operator
            },
            Change::RoleRevoked {
                principal: "bob".into()
            },
        ]
    );
}

#[test]
fn the_last_admin_can_be_neither_revoked_nor_demoted() {
    let mut r = Replica::new();
    r.run(grant("root", AccessRole::Admin)).expect("grant");
    refused_with(r.run(revoke("root")), &["root", "only admin"]);
    refused_with(
        r.run(grant("root", AccessRole::Viewer)),
        &["root", "only admin", "viewer"],
    );
    r.run(grant("root", AccessRole::Admin))
        .expect("re-granting admin to the only admin changes nothing and is fine");
    r.run(grant("second", AccessRole::Admin)).expect("grant");
    r.run(grant("root", AccessRole::Operator))
        .expect("with two admins one may be demoted");
    refused_with(r.run(revoke("second")), &["second", "only admin"]);
    assert_eq!(r.state.admins(), 1);
}

#[test]
fn the_bootstrap_admin_is_taken_only_while_there_is_none() {
    let mut r = Replica::new();
    r.run(grant("viewer", AccessRole::Viewer)).expect("grant");
    r.run(bootstrap("root")).expect("the first admin");
    assert_eq!(r.state.role_of("root"), Some(AccessRole::Admin));
    // A second node with a different flag, or the same one again: refused, nothing changes.
    refused_with(
        r.run(bootstrap("mallory")),
        &["already has an administrator", "root"],
    );
    refused_with(r.run(bootstrap("root")), &["already has an administrator"]);
    assert_eq!(r.state.role_of("mallory"), None);
}

#[test]
fn principals_are_checked_and_the_map_is_bounded() {
    let mut r = Replica::new();
    for bad in ["", "system/placement", "vnetd/unit-a", "node/1", " padded "] {
        refused_with(r.run(grant(bad, AccessRole::Viewer)), &["principal"]);
        refused_with(r.run(bootstrap(bad)), &["principal"]);
    }
    for n in 0..ROLES_MAX {
        r.run(grant(&format!("p{n}"), AccessRole::Viewer))
            .expect("within the limit");
    }
    refused_with(
        r.run(grant("one-more", AccessRole::Viewer)),
        &["principals with a role", &ROLES_MAX.to_string()],
    );
    r.run(grant("p0", AccessRole::Operator))
        .expect("changing a role at the limit adds no principal");
}

#[test]
fn roles_and_notes_survive_a_snapshot_round_trip() {
    let mut r = Replica::new();
    r.run(bootstrap("root")).expect("bootstrap");
    r.run_noted(grant("ops", AccessRole::Operator), Some("ticket-42"))
        .expect("grant");
    let event = r.state.event_at(r.next).expect("the grant's event");
    assert_eq!(event.actor, "alice");
    assert_eq!(event.on_behalf_of.as_deref(), Some("ticket-42"));

    let json = serde_json::to_string(&r.state).expect("encode");
    let restored: State = serde_json::from_str(&json).expect("decode");
    assert_eq!(restored, r.state);
    assert_eq!(restored.role_of("ops"), Some(AccessRole::Operator));
    assert_eq!(restored.role_of("root"), Some(AccessRole::Admin));

    // A snapshot carrying a principal that breaks the rule is refused as a whole.
    let planted = json.replace("\"ops\"", "\"system/ops\"");
    let err = serde_json::from_str::<State>(&planted).expect_err("a system principal");
    assert!(err.to_string().contains("system/"), "{err}");
}

#[test]
fn an_empty_on_behalf_of_note_is_refused_and_a_long_one_bounded() {
    let mut r = Replica::new();
    refused_with(
        r.run_noted(grant("x", AccessRole::Viewer), Some("")),
        &["on_behalf_of"],
    );
    refused_with(
        r.run_noted(grant("x", AccessRole::Viewer), Some(&"n".repeat(300))),
        &["on_behalf_of", "255"],
    );
}

#[test]
fn entries_and_snapshots_written_before_roles_existed_still_decode() {
    // A request as logged before the note existed, and one written now without a note: the
    // same bytes, so older and newer nodes read each other's entries alike.
    let old = r#"{"actor":"alice","command":{"SetDrain":{"unit":"unit-a","draining":true}}}"#;
    let request: Request = serde_json::from_str(old).expect("decode an old entry");
    assert_eq!(request.on_behalf_of, None);
    assert_eq!(serde_json::to_string(&request).expect("encode"), old);

    // A state without roles writes no `roles` key, as before roles existed.
    let mut r = Replica::new();
    r.run(Command::SetDrain {
        unit: "unit-a".into(),
        draining: true,
    })
    .expect_err("no such unit: refused, nothing recorded");
    let json = serde_json::to_string(&r.state).expect("encode");
    assert!(!json.contains("roles"), "{json}");
    let back: State = serde_json::from_str(&json).expect("decode");
    assert_eq!(back.roles().count(), 0);

    // The wire names of the new commands are stable: they are the log's format.
    let encoded = serde_json::to_string(&grant("ops", AccessRole::Operator)).expect("encode");
    assert_eq!(
        encoded,
        r#"{"GrantRole":{"principal":"ops","role":"operator"}}"#
    );
}
