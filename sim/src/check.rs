//! What the simulator checks while it runs: which switch presents which identity right now
//! (invariant 2, no identity on two switches at once), and the drain rule (invariant 5).

use std::collections::{BTreeMap, BTreeSet};

use fabric_agent::journal::Event;
use fabric_agent::Function;
use vnet_model::State;

/// The identities a program presents: every MAC, WWPN and WWNN.
pub fn identities(functions: &[Function]) -> Vec<String> {
    let mut out = Vec::new();
    for function in functions {
        match function {
            Function::Nic { mac, .. } => out.push(format!("mac {mac}")),
            Function::Hba { wwpn, wwnn, .. } => {
                out.push(format!("wwpn {wwpn}"));
                out.push(format!("wwnn {wwnn}"));
            }
        }
    }
    out
}

/// Who presents what, kept from the switches' events as they happen.
#[derive(Debug, Default)]
pub struct Presentations {
    /// Unit -> host port -> (profile, identities).
    ports: BTreeMap<String, BTreeMap<u8, (String, Vec<String>)>>,
    /// Identity -> the units presenting it.
    holders: BTreeMap<String, BTreeSet<String>>,
}

impl Presentations {
    /// Applies one switch's events; the first identity a second switch starts presenting is a
    /// violation of invariant 2, described.
    pub fn apply(&mut self, unit: &str, events: &[Event]) -> Result<(), String> {
        for event in events {
            match event {
                Event::Programmed {
                    port,
                    profile,
                    functions,
                    ..
                } => {
                    self.clear(unit, *port);
                    let ids = identities(functions);
                    for id in &ids {
                        let holders = self.holders.entry(id.clone()).or_default();
                        if let Some(other) = holders.iter().find(|h| *h != unit) {
                            return Err(format!(
                                "{id} of profile {profile:?} programmed on {unit} port {port} \
                                 while {other} presents it"
                            ));
                        }
                        holders.insert(unit.to_owned());
                    }
                    self.ports
                        .entry(unit.to_owned())
                        .or_default()
                        .insert(*port, (profile.clone(), ids));
                }
                Event::Cleared { port, .. } => self.clear(unit, *port),
                Event::Fenced { ports, .. } => {
                    for port in ports {
                        self.clear(unit, *port);
                    }
                }
                Event::Started { .. } | Event::MacAnnounced { .. } | Event::FabricLogin { .. } => {}
            }
        }
        Ok(())
    }

    fn clear(&mut self, unit: &str, port: u8) {
        let Some((_, ids)) = self.ports.get_mut(unit).and_then(|p| p.remove(&port)) else {
            return;
        };
        for id in ids {
            if let Some(holders) = self.holders.get_mut(&id) {
                holders.remove(unit);
            }
        }
    }

    /// A switch died: what it presented is gone with it.
    pub fn switch_lost(&mut self, unit: &str) {
        let ports: Vec<u8> = self
            .ports
            .get(unit)
            .map(|p| p.keys().copied().collect())
            .unwrap_or_default();
        for port in ports {
            self.clear(unit, port);
        }
    }

    /// Profile names `unit` presents.
    pub fn profiles_on(&self, unit: &str) -> BTreeSet<String> {
        self.ports
            .get(unit)
            .map(|p| p.values().map(|(profile, _)| profile.clone()).collect())
            .unwrap_or_default()
    }
}

/// Invariant 5: once the committed state shows a unit draining with nothing placed on it and
/// nothing moving off it, its switch presents nothing.
pub fn drain_means_empty(committed: &State, presented: &Presentations) -> Result<(), String> {
    for member in committed.members() {
        let unit = member.name.as_str();
        if !committed.is_draining(unit) {
            continue;
        }
        let still_involved = committed.placements().any(|(_, p)| {
            p.unit.as_deref() == Some(unit) || p.moving.as_ref().is_some_and(|m| m.from == unit)
        });
        let on_switch = presented.profiles_on(unit);
        if !still_involved && !on_switch.is_empty() {
            return Err(format!(
                "{unit} is drained (committed) but its switch presents {on_switch:?}"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use fabric_agent::journal::ClearReason;

    fn programmed(port: u8, mac: &str) -> Event {
        Event::Programmed {
            port,
            profile: "p".into(),
            revision: 1,
            functions: vec![Function::Nic {
                name: "eth0".into(),
                mac: mac.parse().expect("mac"),
                network: "n".into(),
                vlan: None,
            }],
        }
    }

    #[test]
    fn a_second_switch_presenting_an_identity_is_caught_and_a_handover_is_not() {
        let mut seen = Presentations::default();
        seen.apply("unit-a", &[programmed(1, "02:00:00:00:00:01")])
            .expect("first");
        let caught = seen.apply("unit-b", &[programmed(7, "02:00:00:00:00:01")]);
        assert!(caught.is_err_and(|e| e.contains("while unit-a presents it")));

        let mut seen = Presentations::default();
        seen.apply("unit-a", &[programmed(1, "02:00:00:00:00:01")])
            .expect("first");
        seen.apply(
            "unit-a",
            &[Event::Cleared {
                port: 1,
                reason: ClearReason::Clear,
            }],
        )
        .expect("clear");
        seen.apply("unit-b", &[programmed(7, "02:00:00:00:00:01")])
            .expect("after the clear");
        seen.switch_lost("unit-b");
        seen.apply("unit-a", &[programmed(1, "02:00:00:00:00:01")])
            .expect("after the switch died");
        assert_eq!(seen.profiles_on("unit-a").len(), 1);
        assert!(seen.profiles_on("unit-b").is_empty());
    }
}
