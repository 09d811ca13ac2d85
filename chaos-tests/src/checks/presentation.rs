//! What the switches present, checked against what the cluster holds.
//!
//! These are written over an abstract snapshot ([`PresentedPort`]: which switch presents which
//! profile's identities on which host port), not over the switch API; the run converts each
//! `vnet-switchd`'s state into it ([`presented_ports`]).
//!
//! - [`check_identities_preserved`]: whichever switch presents a profile presents exactly its
//!   MACs, WWPNs and WWNNs.
//! - [`check_presented_exactly_once`]: after healing, every profile is presented on exactly one
//!   switch, on the host port its server is cabled to there (invariant 4's end state).
//! - [`check_no_double_presentation`]: invariant 2 over the switches' journals, with
//!   `fabric_agent::check::no_double_presentation` (one definition of an overlap, shared with
//!   the switch's own tests).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use fabric_agent::journal::{self, Presentation};
use fabric_agent::{Function, SwitchState};

use crate::checks::Verdict;
use crate::history::ProfileValue;

/// One programmed host port of one switch, at the moment the snapshot was taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresentedPort {
    /// The unit whose switch this is.
    pub switch: String,
    pub host_port: u32,
    /// The server cabled to that port (as the switch reports it).
    pub server: String,
    pub profile: String,
    pub macs: BTreeSet<String>,
    pub wwpns: BTreeSet<String>,
    pub wwnns: BTreeSet<String>,
}

/// unit name -> server name -> host port on that unit.
pub type Cabling = BTreeMap<String, BTreeMap<String, u32>>;

/// One switch's journal file (checksummed JSON lines with CLOCK_MONOTONIC stamps), found on
/// the unit host after the run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SwitchJournal {
    pub switch: String,
    pub path: PathBuf,
    /// Every time the harness killed this switch (CLOCK_MONOTONIC ns, taken after the process
    /// was reaped). Each instance of the switch (from one `Started` record to the next) ends
    /// no later than the first kill after its start.
    pub kill_times_ns: Vec<u64>,
}

/// Every switch's presentation intervals; a journal that cannot be read (missing, damaged)
/// is an error naming the file: bad bytes are not trusted, and an unread journal proves
/// nothing.
pub fn read_presentations(journals: &[SwitchJournal]) -> Result<Vec<Presentation>, Vec<String>> {
    let mut all = Vec::new();
    let mut errors = Vec::new();
    for j in journals {
        match journal::read(&j.path) {
            Ok(records) => {
                // Split at each `Started`: a killed and restarted switch must have its earlier
                // instance closed at the kill, not at the restart (which would claim it kept
                // presenting while it was dead, and report overlaps that never happened).
                let mut starts: Vec<usize> = records
                    .iter()
                    .enumerate()
                    .filter(|(_, r)| matches!(r.event, journal::Event::Started { .. }))
                    .map(|(i, _)| i)
                    .collect();
                if starts.first() != Some(&0) {
                    starts.insert(0, 0);
                }
                for (n, &begin) in starts.iter().enumerate() {
                    let end = starts.get(n + 1).copied().unwrap_or(records.len());
                    let started_ns = records.get(begin).map_or(0, |r| r.mono_ns);
                    let next_start_ns = records.get(end).map(|r| r.mono_ns);
                    let killed_ns = j
                        .kill_times_ns
                        .iter()
                        .copied()
                        .filter(|k| *k >= started_ns)
                        .min();
                    let ended = match (killed_ns, next_start_ns) {
                        (Some(k), Some(next)) => Some(k.min(next)),
                        (k, next) => k.or(next),
                    };
                    all.extend(journal::presentations(
                        &records[begin..end],
                        &j.switch,
                        ended,
                    ));
                }
            }
            Err(e) => errors.push(format!(
                "switch journal of {} ({}) cannot be read: {e}",
                j.switch,
                j.path.display()
            )),
        }
    }
    if errors.is_empty() {
        Ok(all)
    } else {
        Err(errors)
    }
}

/// One switch's state as [`PresentedPort`]s; `servers` is that unit's cabling (server -> host
/// port), to name the server on each port. Identities are compared in lower case.
pub fn presented_ports(
    switch: &str,
    state: &SwitchState,
    servers: &BTreeMap<String, u32>,
) -> Vec<PresentedPort> {
    state
        .ports
        .iter()
        .map(|(&port, program)| {
            let mut presented = PresentedPort {
                switch: switch.to_string(),
                host_port: u32::from(port),
                server: servers
                    .iter()
                    .find(|(_, &p)| p == u32::from(port))
                    .map(|(s, _)| s.clone())
                    .unwrap_or_else(|| "(not cabled)".to_string()),
                profile: program.profile.clone(),
                macs: BTreeSet::new(),
                wwpns: BTreeSet::new(),
                wwnns: BTreeSet::new(),
            };
            for function in &program.functions {
                match function {
                    Function::Nic { mac, .. } => {
                        presented.macs.insert(mac.to_string().to_lowercase());
                    }
                    Function::Hba { wwpn, wwnn, .. } => {
                        presented.wwpns.insert(wwpn.to_string().to_lowercase());
                        presented.wwnns.insert(wwnn.to_string().to_lowercase());
                    }
                }
            }
            presented
        })
        .collect()
}

fn identities(value: &ProfileValue) -> [BTreeSet<String>; 3] {
    [
        value.vnics.iter().map(|n| n.mac.clone()).collect(),
        value.vhbas.iter().map(|h| h.wwpn.clone()).collect(),
        value.vhbas.iter().map(|h| h.wwnn.clone()).collect(),
    ]
}

/// Every presented profile shows exactly the identities the cluster holds for it.
pub fn check_identities_preserved(
    profiles: &BTreeMap<String, ProfileValue>,
    presented: &[PresentedPort],
) -> Verdict {
    let mut violations = Vec::new();
    for port in presented {
        let Some(value) = profiles.get(&port.profile) else {
            continue; // a stale presentation is check_presented_exactly_once's to report
        };
        let [macs, wwpns, wwnns] = identities(value);
        for (kind, want, got) in [
            ("MACs", &macs, &port.macs),
            ("WWPNs", &wwpns, &port.wwpns),
            ("WWNNs", &wwnns, &port.wwnns),
        ] {
            if want != got {
                violations.push(format!(
                    "{} port {} presents profile {} with {kind} {got:?}, but the profile has \
                     {want:?}",
                    port.switch, port.host_port, port.profile
                ));
            }
        }
    }
    Verdict::from_violations(violations, format!("{} presented ports", presented.len()))
}

/// Every profile is presented once, by a switch whose unit is cabled to its server, on that
/// cabled port; nothing else is presented.
pub fn check_presented_exactly_once(
    profiles: &BTreeMap<String, ProfileValue>,
    presented: &[PresentedPort],
    cabling: &Cabling,
) -> Verdict {
    let mut violations = Vec::new();
    let mut by_profile: BTreeMap<&str, Vec<&PresentedPort>> = BTreeMap::new();
    for port in presented {
        by_profile.entry(&port.profile).or_default().push(port);
    }
    for (name, value) in profiles {
        let ports = by_profile.remove(name.as_str()).unwrap_or_default();
        match ports.as_slice() {
            [] => violations.push(format!("profile {name} is presented nowhere")),
            [port] => {
                let cabled = cabling
                    .get(&port.switch)
                    .and_then(|servers| servers.get(&value.server));
                if cabled != Some(&port.host_port) {
                    violations.push(format!(
                        "profile {name} (server {}) is presented on {} port {}, but that unit \
                         cables the server to {cabled:?}",
                        value.server, port.switch, port.host_port
                    ));
                }
            }
            many => violations.push(format!(
                "profile {name} is presented {} times: {:?}",
                many.len(),
                many.iter()
                    .map(|p| format!("{} port {}", p.switch, p.host_port))
                    .collect::<Vec<_>>()
            )),
        }
    }
    for (name, ports) in by_profile {
        violations.push(format!(
            "profile {name} does not exist but is presented on {:?}",
            ports
                .iter()
                .map(|p| format!("{} port {}", p.switch, p.host_port))
                .collect::<Vec<_>>()
        ));
    }
    Verdict::from_violations(
        violations,
        format!("{} profiles, each presented once", profiles.len()),
    )
}

/// Invariant 2 over the merged switch journals: no identity presented by two switches at
/// once. A journal that fails to read fails the verdict, naming the file.
pub fn check_no_double_presentation(journals: &[SwitchJournal]) -> Verdict {
    if journals.is_empty() {
        return Verdict::Fail {
            violations: vec!["no switch journal was found on the unit hosts".to_string()],
        };
    }
    let presentations = match read_presentations(journals) {
        Ok(p) => p,
        Err(errors) => return Verdict::Fail { violations: errors },
    };
    match fabric_agent::check::no_double_presentation(&presentations) {
        Ok(()) => Verdict::Pass {
            detail: format!(
                "{} journals, {} presentation intervals",
                journals.len(),
                presentations.len()
            ),
        },
        Err(overlaps) => Verdict::Fail {
            violations: overlaps.iter().map(ToString::to_string).collect(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::{Hba, Nic};

    fn profile(server: &str, mac: &str, wwpn: &str) -> ProfileValue {
        ProfileValue {
            server: server.into(),
            vnics: vec![Nic {
                name: "eth0".into(),
                mac: mac.into(),
                network: "n".into(),
                vlan: 1,
            }],
            vhbas: vec![Hba {
                name: "fc0".into(),
                wwpn: wwpn.into(),
                wwnn: "20:00:00:00:00:00:00:01".into(),
                fabric: "a".into(),
            }],
        }
    }

    fn port(switch: &str, host_port: u32, profile: &str, mac: &str, wwpn: &str) -> PresentedPort {
        PresentedPort {
            switch: switch.into(),
            host_port,
            server: "srv-1".into(),
            profile: profile.into(),
            macs: [mac.to_string()].into(),
            wwpns: [wwpn.to_string()].into(),
            wwnns: ["20:00:00:00:00:00:00:01".to_string()].into(),
        }
    }

    fn cabling() -> Cabling {
        BTreeMap::from([
            ("unit-a".into(), BTreeMap::from([("srv-1".into(), 1)])),
            ("unit-b".into(), BTreeMap::from([("srv-1".into(), 4)])),
        ])
    }

    const MAC: &str = "02:00:00:00:00:01";
    const WWPN: &str = "21:00:00:00:00:00:00:01";

    #[test]
    fn faithful_presentation_passes() {
        let profiles = BTreeMap::from([("p1".to_string(), profile("srv-1", MAC, WWPN))]);
        let presented = [port("unit-b", 4, "p1", MAC, WWPN)];
        assert!(check_identities_preserved(&profiles, &presented).is_pass());
        assert!(check_presented_exactly_once(&profiles, &presented, &cabling()).is_pass());
    }

    #[test]
    fn changed_mac_fails() {
        let profiles = BTreeMap::from([("p1".to_string(), profile("srv-1", MAC, WWPN))]);
        let presented = [port("unit-b", 4, "p1", "02:00:00:00:00:02", WWPN)];
        let verdict = check_identities_preserved(&profiles, &presented);
        let Verdict::Fail { violations } = &verdict else {
            panic!("a changed MAC must fail, got {verdict}");
        };
        assert!(violations[0].contains("MACs"), "{violations:?}");
    }

    #[test]
    fn changed_wwpn_fails() {
        let profiles = BTreeMap::from([("p1".to_string(), profile("srv-1", MAC, WWPN))]);
        let presented = [port("unit-a", 1, "p1", MAC, "21:00:00:00:00:00:00:09")];
        assert!(matches!(
            check_identities_preserved(&profiles, &presented),
            Verdict::Fail { .. }
        ));
    }

    #[test]
    fn twice_nowhere_uncabled_or_stale_fail() {
        let profiles = BTreeMap::from([("p1".to_string(), profile("srv-1", MAC, WWPN))]);
        let twice = [
            port("unit-a", 1, "p1", MAC, WWPN),
            port("unit-b", 4, "p1", MAC, WWPN),
        ];
        assert!(matches!(
            check_presented_exactly_once(&profiles, &twice, &cabling()),
            Verdict::Fail { .. }
        ));
        assert!(matches!(
            check_presented_exactly_once(&profiles, &[], &cabling()),
            Verdict::Fail { .. }
        ));
        let wrong_port = [port("unit-a", 2, "p1", MAC, WWPN)];
        assert!(matches!(
            check_presented_exactly_once(&profiles, &wrong_port, &cabling()),
            Verdict::Fail { .. }
        ));
        let stale = [
            port("unit-a", 1, "p1", MAC, WWPN),
            port("unit-b", 4, "gone", "02:00:00:00:00:07", WWPN),
        ];
        assert!(matches!(
            check_presented_exactly_once(&profiles, &stale, &cabling()),
            Verdict::Fail { .. }
        ));
    }

    fn record(seq: u64, mono_ns: u64, event: journal::Event) -> journal::Record {
        journal::Record {
            seq,
            mono_ns,
            wall_ms: 0,
            event,
        }
    }

    fn programmed(port: u8, mac: &str) -> journal::Event {
        journal::Event::Programmed {
            port,
            profile: "p1".into(),
            revision: 1,
            functions: vec![Function::Nic {
                name: "eth0".into(),
                mac: mac.parse().unwrap(),
                network: "n".into(),
                vlan: None,
            }],
        }
    }

    fn write_journal(dir: &std::path::Path, name: &str, records: &[journal::Record]) -> PathBuf {
        let path = dir.join(format!("{name}.journal.jsonl"));
        let bytes: Vec<u8> = records.iter().flat_map(journal::encode_line).collect();
        std::fs::write(&path, bytes).unwrap();
        path
    }

    fn started(seq: u64, at: u64) -> journal::Record {
        record(
            seq,
            at,
            journal::Event::Started {
                instance: format!("i{seq}"),
                data_plane: None,
            },
        )
    }

    #[test]
    fn double_presentation_is_found_in_journals_and_a_handover_passes() {
        let dir = tempfile::tempdir().unwrap();
        let a = write_journal(
            dir.path(),
            "a",
            &[
                started(1, 10),
                record(2, 100, programmed(1, MAC)),
                record(
                    3,
                    500,
                    journal::Event::Fenced {
                        ports: vec![1],
                        deadline_mono_ns: 490,
                    },
                ),
            ],
        );
        let b_late = write_journal(
            dir.path(),
            "b-late",
            &[started(1, 10), record(2, 500, programmed(11, MAC))],
        );
        let b_early = write_journal(
            dir.path(),
            "b-early",
            &[started(1, 10), record(2, 499, programmed(11, MAC))],
        );
        let journal = |switch: &str, path: &PathBuf, end: Option<u64>| SwitchJournal {
            switch: switch.into(),
            path: path.clone(),
            kill_times_ns: end.into_iter().collect(),
        };
        assert!(check_no_double_presentation(&[
            journal("unit-a", &a, None),
            journal("unit-b", &b_late, None)
        ])
        .is_pass());
        let verdict = check_no_double_presentation(&[
            journal("unit-a", &a, None),
            journal("unit-b", &b_early, None),
        ]);
        let Verdict::Fail { violations } = &verdict else {
            panic!("a 1 ns overlap must fail, got {verdict}");
        };
        assert!(violations[0].contains(MAC), "{violations:?}");

        // A killed switch's open presentation ends at the kill time the harness recorded.
        let killed = write_journal(
            dir.path(),
            "killed",
            &[started(1, 10), record(2, 100, programmed(1, MAC))],
        );
        assert!(check_no_double_presentation(&[
            journal("unit-a", &killed, Some(300)),
            journal("unit-b", &b_early, None)
        ])
        .is_pass());
        assert!(!check_no_double_presentation(&[
            journal("unit-a", &killed, None),
            journal("unit-b", &b_early, None)
        ])
        .is_pass());

        // Killed at 300 and restarted at 1000: the first instance ends at the kill, so unit-b
        // presenting from 499 is no overlap; a kill recorded only after unit-b started is one.
        let restarted = write_journal(
            dir.path(),
            "restarted",
            &[
                started(1, 10),
                record(2, 100, programmed(1, MAC)),
                started(3, 1000),
            ],
        );
        assert!(check_no_double_presentation(&[
            journal("unit-a", &restarted, Some(300)),
            journal("unit-b", &b_early, None)
        ])
        .is_pass());
        assert!(!check_no_double_presentation(&[
            journal("unit-a", &restarted, Some(600)),
            journal("unit-b", &b_early, None)
        ])
        .is_pass());
        assert!(!check_no_double_presentation(&[
            journal("unit-a", &restarted, None),
            journal("unit-b", &b_early, None)
        ])
        .is_pass());
    }

    #[test]
    fn unreadable_or_missing_journals_fail_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.journal.jsonl");
        std::fs::write(&path, "00000000 {\"not\": \"a record\"}\n").unwrap();
        let verdict = check_no_double_presentation(&[SwitchJournal {
            switch: "unit-a".into(),
            path: path.clone(),
            kill_times_ns: Vec::new(),
        }]);
        let Verdict::Fail { violations } = &verdict else {
            panic!("a damaged journal must fail, got {verdict}");
        };
        assert!(
            violations[0].contains("bad.journal.jsonl"),
            "{violations:?}"
        );
        assert!(!check_no_double_presentation(&[]).is_pass());
    }

    #[test]
    fn switch_state_converts_to_presented_ports() {
        let mut state = SwitchState {
            ports: Default::default(),
            watchdog_deadline_mono_ns: None,
            fenced: false,
        };
        state.ports.insert(
            4,
            fabric_agent::PortProgram {
                profile: "p1".into(),
                revision: 3,
                functions: vec![
                    Function::Nic {
                        name: "eth0".into(),
                        mac: MAC.parse().unwrap(),
                        network: "n".into(),
                        vlan: Some(1),
                    },
                    Function::Hba {
                        name: "fc0".into(),
                        wwpn: WWPN.parse().unwrap(),
                        wwnn: "20:00:00:00:00:00:00:01".parse().unwrap(),
                        fabric: "a".into(),
                    },
                ],
            },
        );
        let servers = BTreeMap::from([("srv-1".to_string(), 4)]);
        let ports = presented_ports("unit-b", &state, &servers);
        assert_eq!(ports, vec![port("unit-b", 4, "p1", MAC, WWPN)]);
    }
}
