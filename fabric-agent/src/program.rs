//! What a host port presents, in the agent's terms: the [`Function`]s of one profile
//! ([`PortProgram`]), a switch's ports ([`PortMap`]) and a switch's state ([`SwitchState`]).
//!
//! These types are also the journal's encoding of a program (serde, identities as canonical
//! strings), so they change only compatibly: a checker must read journals written before.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use vnet_model::{Identity, Mac, Profile, Wwn};

/// One virtual function on a host port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Function {
    /// A virtual Ethernet function (an SR-IOV VF on an Ethernet adapter port).
    Nic {
        name: String,
        mac: Mac,
        network: String,
        /// 802.1Q VLAN id; `None` is untagged.
        vlan: Option<u16>,
    },
    /// A virtual Fibre Channel function (an NPIV login on an FC adapter port).
    Hba {
        name: String,
        wwpn: Wwn,
        wwnn: Wwn,
        fabric: String,
    },
}

impl Function {
    pub fn name(&self) -> &str {
        match self {
            Function::Nic { name, .. } | Function::Hba { name, .. } => name,
        }
    }

    /// The identities this function presents: its MAC, or its WWPN then its WWNN.
    pub fn identities(&self) -> Vec<Identity> {
        match self {
            Function::Nic { mac, .. } => vec![Identity::Mac(*mac)],
            Function::Hba { wwpn, wwnn, .. } => vec![Identity::Wwn(*wwpn), Identity::Wwn(*wwnn)],
        }
    }
}

/// Everything one host port presents: one profile's functions at one revision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortProgram {
    pub profile: String,
    pub revision: u64,
    pub functions: Vec<Function>,
}

impl PortProgram {
    /// The program that presents `profile`: all vNICs, then all vHBAs, each in profile order, so
    /// a server sees its functions in the same order on every unit.
    pub fn from_profile(profile: &Profile) -> Self {
        let nics = profile.vnics.iter().map(|vnic| Function::Nic {
            name: vnic.name.clone(),
            mac: vnic.mac,
            network: vnic.network.clone(),
            vlan: vnic.vlan,
        });
        let hbas = profile.vhbas.iter().map(|vhba| Function::Hba {
            name: vhba.name.clone(),
            wwpn: vhba.wwpn,
            wwnn: vhba.wwnn,
            fabric: vhba.fabric.clone(),
        });
        PortProgram {
            profile: profile.name.clone(),
            revision: profile.revision,
            functions: nics.chain(hbas).collect(),
        }
    }

    /// Every identity the program presents, in function order.
    pub fn identities(&self) -> impl Iterator<Item = Identity> + '_ {
        self.functions.iter().flat_map(Function::identities)
    }
}

/// Host port (1..=30) -> what it presents. Ports that present nothing are absent.
pub type PortMap = BTreeMap<u8, PortProgram>;

/// A switch's state as the agent sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SwitchState {
    /// The ports that hold a program.
    pub ports: PortMap,
    /// The watchdog deadline in force (CLOCK_MONOTONIC ns); `None` if never armed since the
    /// switch started.
    pub watchdog_deadline_mono_ns: Option<u64>,
    /// The watchdog fired and nothing has re-armed it with a future deadline since: the switch
    /// cleared every port and refuses to program.
    pub fenced: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use vnet_model::{Failback, VHba, VNic};

    #[test]
    fn from_profile_lists_vnics_then_vhbas_in_profile_order() {
        let mac = |text: &str| text.parse::<Mac>().unwrap();
        let wwn = |text: &str| text.parse::<Wwn>().unwrap();
        let profile = Profile {
            name: "web".into(),
            server: "rack1-srv01".into(),
            vnics: vec![
                VNic {
                    name: "eth1".into(),
                    mac: mac("02:00:00:00:00:02"),
                    network: "prod".into(),
                    vlan: Some(10),
                },
                VNic {
                    name: "eth0".into(),
                    mac: mac("02:00:00:00:00:01"),
                    network: "mgmt".into(),
                    vlan: None,
                },
            ],
            vhbas: vec![VHba {
                name: "fc0".into(),
                wwpn: wwn("20:00:00:25:b5:00:00:01"),
                wwnn: wwn("20:00:00:25:b5:00:01:01"),
                fabric: "fabric-a".into(),
            }],
            preferred_unit: None,
            failback: Failback::Manual,
            revision: 7,
            created_revision: 3,
        };
        let program = PortProgram::from_profile(&profile);
        assert_eq!(program.profile, "web");
        assert_eq!(program.revision, 7);
        let names: Vec<&str> = program.functions.iter().map(Function::name).collect();
        assert_eq!(names, ["eth1", "eth0", "fc0"]);
        let identities: Vec<String> = program
            .identities()
            .map(|identity| identity.to_string())
            .collect();
        assert_eq!(
            identities,
            [
                "MAC 02:00:00:00:00:02",
                "MAC 02:00:00:00:00:01",
                "WWN 20:00:00:25:b5:00:00:01",
                "WWN 20:00:00:25:b5:00:01:01"
            ]
        );
    }

    #[test]
    fn functions_serialize_with_canonical_identities() {
        let function = Function::Hba {
            name: "fc0".into(),
            wwpn: "20-00-00-25-B5-00-00-01".parse().unwrap(),
            wwnn: "20000025b5000101".parse().unwrap(),
            fabric: "fabric-a".into(),
        };
        let json = serde_json::to_string(&function).unwrap();
        assert_eq!(
            json,
            r#"{"kind":"hba","name":"fc0","wwpn":"20:00:00:25:b5:00:00:01","wwnn":"20:00:00:25:b5:00:01:01","fabric":"fabric-a"}"#
        );
        assert_eq!(serde_json::from_str::<Function>(&json).unwrap(), function);
    }
}
