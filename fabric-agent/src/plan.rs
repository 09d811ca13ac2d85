//! The reconciler's pure core: what to do to a switch to make it present what the placement
//! says. The effectful loop around it (in `node`) reads the switch, calls [`plan`], and applies
//! a bounded prefix of the result each tick.

use crate::program::{PortMap, PortProgram};

/// Actions the reconcile loop applies per tick, at most. The loop then reads the switch again
/// and plans afresh, so a long plan is finished over several ticks, each starting from what the
/// switch really holds, and one tick never stalls lease renewal behind 30 port programs.
pub const RECONCILE_ACTIONS_PER_TICK_MAX: usize = 16;

/// One step towards the desired state of one switch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Remove everything from a host port.
    Clear { port: u8 },
    /// Present `program` on a host port (replacing whatever it holds).
    Program { port: u8, program: PortProgram },
}

impl Action {
    pub fn port(&self) -> u8 {
        match self {
            Action::Clear { port } | Action::Program { port, .. } => *port,
        }
    }
}

/// What to do to turn `actual` into `desired`.
///
/// All clears (ports not desired, or holding something different from what is desired) come
/// before all programs: break before make inside one switch, so an identity moving between two
/// ports of the same switch is gone from the old port before the new one asks for it, and the
/// switch never refuses it as a duplicate. Within each group, actions are in port order. Ports
/// that already hold exactly what is desired get no action, so a converged switch plans nothing.
///
/// The caller applies at most [`RECONCILE_ACTIONS_PER_TICK_MAX`] actions per tick, from the
/// front. Because every clear precedes every program, any prefix is safe: a truncated plan never
/// programs a port before the clears it depends on, and the next tick plans again from the
/// switch's fresh state. A failed action should end the tick for the same reason.
pub fn plan(desired: &PortMap, actual: &PortMap) -> Vec<Action> {
    let clears = actual
        .iter()
        .filter(|(port, held)| desired.get(port) != Some(held))
        .map(|(&port, _)| Action::Clear { port });
    let programs = desired
        .iter()
        .filter(|(port, wanted)| actual.get(port) != Some(wanted))
        .map(|(&port, wanted)| Action::Program {
            port,
            program: wanted.clone(),
        });
    clears.chain(programs).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::program::Function;

    fn nic(name: &str, mac: &str) -> Function {
        Function::Nic {
            name: name.into(),
            mac: mac.parse().unwrap(),
            network: "prod".into(),
            vlan: None,
        }
    }

    fn program(profile: &str, revision: u64, functions: Vec<Function>) -> PortProgram {
        PortProgram {
            profile: profile.into(),
            revision,
            functions,
        }
    }

    fn ports(entries: &[(u8, &PortProgram)]) -> PortMap {
        entries
            .iter()
            .map(|(port, program)| (*port, (*program).clone()))
            .collect()
    }

    fn clear(port: u8) -> Action {
        Action::Clear { port }
    }

    fn prog(port: u8, program: &PortProgram) -> Action {
        Action::Program {
            port,
            program: program.clone(),
        }
    }

    #[test]
    fn plans_by_table() {
        let web = program("web", 3, vec![nic("eth0", "02:00:00:00:00:01")]);
        let web_next_revision = program("web", 4, vec![nic("eth0", "02:00:00:00:00:01")]);
        let web_other_mac = program("web", 3, vec![nic("eth0", "02:00:00:00:00:09")]);
        let db = program("db", 5, vec![nic("eth0", "02:00:00:00:00:02")]);
        let empty_profile = program("bare", 1, vec![]);

        let cases: Vec<(&str, PortMap, PortMap, Vec<Action>)> = vec![
            ("empty and empty", ports(&[]), ports(&[]), vec![]),
            (
                "converged",
                ports(&[(1, &web), (2, &db)]),
                ports(&[(1, &web), (2, &db)]),
                vec![],
            ),
            (
                "new port",
                ports(&[(1, &web), (2, &db)]),
                ports(&[(1, &web)]),
                vec![prog(2, &db)],
            ),
            (
                "removed port",
                ports(&[(1, &web)]),
                ports(&[(1, &web), (2, &db)]),
                vec![clear(2)],
            ),
            (
                "changed revision",
                ports(&[(1, &web_next_revision)]),
                ports(&[(1, &web)]),
                vec![clear(1), prog(1, &web_next_revision)],
            ),
            (
                "changed functions",
                ports(&[(1, &web_other_mac)]),
                ports(&[(1, &web)]),
                vec![clear(1), prog(1, &web_other_mac)],
            ),
            (
                "a profile with no functions is still a program",
                ports(&[(4, &empty_profile)]),
                ports(&[]),
                vec![prog(4, &empty_profile)],
            ),
            (
                "identity moves from port 5 to port 2: the clear comes first",
                ports(&[(2, &web)]),
                ports(&[(5, &web)]),
                vec![clear(5), prog(2, &web)],
            ),
            (
                "two profiles swap ports: both clears before both programs",
                ports(&[(1, &db), (2, &web)]),
                ports(&[(1, &web), (2, &db)]),
                vec![clear(1), clear(2), prog(1, &db), prog(2, &web)],
            ),
            (
                "stable port order within each group, whatever the map sizes",
                ports(&[(30, &db), (3, &web_next_revision), (7, &empty_profile)]),
                ports(&[(9, &web), (3, &web), (1, &db)]),
                vec![
                    clear(1),
                    clear(3),
                    clear(9),
                    prog(3, &web_next_revision),
                    prog(7, &empty_profile),
                    prog(30, &db),
                ],
            ),
            (
                "clear everything",
                ports(&[]),
                ports(&[(2, &db), (1, &web)]),
                vec![clear(1), clear(2)],
            ),
        ];
        for (name, desired, actual, expected) in cases {
            assert_eq!(plan(&desired, &actual), expected, "{name}");
        }
    }

    #[test]
    fn applying_a_plan_reaches_the_desired_state_and_then_plans_nothing() {
        let web = program("web", 3, vec![nic("eth0", "02:00:00:00:00:01")]);
        let db = program("db", 5, vec![nic("eth0", "02:00:00:00:00:02")]);
        let desired = ports(&[(1, &db), (4, &web)]);
        let mut actual = ports(&[(1, &web), (2, &db)]);
        for action in plan(&desired, &actual) {
            match action {
                Action::Clear { port } => {
                    actual.remove(&port);
                }
                Action::Program { port, program } => {
                    actual.insert(port, program);
                }
            }
        }
        assert_eq!(actual, desired);
        assert_eq!(plan(&desired, &actual), vec![]);
    }
}
