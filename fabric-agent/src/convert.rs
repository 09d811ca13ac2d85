//! The one place the switch API's wire types (`vnet.switch.v1`) meet the agent's domain types.
//! The switch service uses it to read requests, [`crate::SimDriver`] to read replies.

use vnet_model::{Mac, Wwn};
use vnet_proto::vnet::switch::v1 as pb;

use crate::program::{Function, PortProgram};

/// A wire value that does not make a domain value. `field` is a path into the message, like
/// `functions[1].vnic.mac`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {field} {value:?}: {reason}")]
pub struct FieldError {
    pub field: String,
    pub value: String,
    pub reason: String,
}

impl FieldError {
    fn new(field: String, value: impl ToString, reason: impl Into<String>) -> FieldError {
        FieldError {
            field,
            value: value.to_string(),
            reason: reason.into(),
        }
    }
}

pub fn function_to_wire(function: &Function) -> pb::Function {
    let kind = match function {
        Function::Nic {
            name,
            mac,
            network,
            vlan,
        } => pb::function::Kind::Vnic(pb::Vnic {
            name: name.clone(),
            mac: mac.to_string(),
            network: network.clone(),
            vlan: vlan.map_or(0, u32::from),
        }),
        Function::Hba {
            name,
            wwpn,
            wwnn,
            fabric,
        } => pb::function::Kind::Vhba(pb::Vhba {
            name: name.clone(),
            wwpn: wwpn.to_string(),
            wwnn: wwnn.to_string(),
            fabric: fabric.clone(),
        }),
    };
    pb::Function { kind: Some(kind) }
}

/// Reads one function; `field` names it in errors (e.g. `functions[2]`). Names and VLAN ranges
/// are the switch model's to check; this only turns text into identities.
pub fn function_from_wire(function: &pb::Function, field: &str) -> Result<Function, FieldError> {
    match &function.kind {
        Some(pb::function::Kind::Vnic(vnic)) => {
            let mac = vnic
                .mac
                .parse::<Mac>()
                .map_err(|e| FieldError::new(format!("{field}.vnic.mac"), &vnic.mac, e.reason))?;
            let vlan = match vnic.vlan {
                0 => None,
                tagged => Some(u16::try_from(tagged).map_err(|_| {
                    FieldError::new(
                        format!("{field}.vnic.vlan"),
                        tagged,
                        "must be 0 (untagged) or a VLAN id in 1..=4094",
                    )
                })?),
            };
            Ok(Function::Nic {
                name: vnic.name.clone(),
                mac,
                network: vnic.network.clone(),
                vlan,
            })
        }
        Some(pb::function::Kind::Vhba(vhba)) => {
            let wwn = |text: &str, which: &str| {
                text.parse::<Wwn>()
                    .map_err(|e| FieldError::new(format!("{field}.vhba.{which}"), text, e.reason))
            };
            Ok(Function::Hba {
                name: vhba.name.clone(),
                wwpn: wwn(&vhba.wwpn, "wwpn")?,
                wwnn: wwn(&vhba.wwnn, "wwnn")?,
                fabric: vhba.fabric.clone(),
            })
        }
        None => Err(FieldError::new(
            field.to_owned(),
            "",
            "is neither a vnic nor a vhba",
        )),
    }
}

pub fn program_request(port: u8, program: &PortProgram) -> pb::ProgramRequest {
    pb::ProgramRequest {
        host_port: u32::from(port),
        profile: program.profile.clone(),
        revision: program.revision,
        functions: program.functions.iter().map(function_to_wire).collect(),
    }
}

/// Reads the program part of a request or of a reported port.
pub fn program_from_wire(
    profile: &str,
    revision: u64,
    functions: &[pb::Function],
) -> Result<PortProgram, FieldError> {
    let functions = functions
        .iter()
        .enumerate()
        .map(|(index, function)| function_from_wire(function, &format!("functions[{index}]")))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(PortProgram {
        profile: profile.to_owned(),
        revision,
        functions,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> PortProgram {
        PortProgram {
            profile: "web".into(),
            revision: 9,
            functions: vec![
                Function::Nic {
                    name: "eth0".into(),
                    mac: "02:00:00:00:00:01".parse().unwrap(),
                    network: "prod".into(),
                    vlan: Some(4094),
                },
                Function::Nic {
                    name: "eth1".into(),
                    mac: "02:00:00:00:00:02".parse().unwrap(),
                    network: "mgmt".into(),
                    vlan: None,
                },
                Function::Hba {
                    name: "fc0".into(),
                    wwpn: "20:00:00:25:b5:00:00:01".parse().unwrap(),
                    wwnn: "20:00:00:25:b5:00:01:01".parse().unwrap(),
                    fabric: "fabric-a".into(),
                },
            ],
        }
    }

    #[test]
    fn program_round_trips() {
        let program = sample();
        let wire = program_request(7, &program);
        assert_eq!(wire.host_port, 7);
        assert_eq!(
            program_from_wire(&wire.profile, wire.revision, &wire.functions),
            Ok(program)
        );
    }

    /// Spoils one value of a valid request.
    type Damage = Box<dyn Fn(&mut pb::ProgramRequest)>;

    #[test]
    fn bad_values_name_their_field() {
        let mut wire = program_request(1, &sample());
        let cases: Vec<(Damage, &str)> = vec![
            (
                Box::new(|w| {
                    if let Some(pb::function::Kind::Vnic(v)) = &mut w.functions[1].kind {
                        v.mac = "01:00:00:00:00:01".into()
                    }
                }),
                "invalid functions[1].vnic.mac \"01:00:00:00:00:01\": is a multicast",
            ),
            (
                Box::new(|w| {
                    if let Some(pb::function::Kind::Vnic(v)) = &mut w.functions[0].kind {
                        v.vlan = 70_000
                    }
                }),
                "invalid functions[0].vnic.vlan \"70000\"",
            ),
            (
                Box::new(|w| {
                    if let Some(pb::function::Kind::Vhba(v)) = &mut w.functions[2].kind {
                        v.wwnn = "zz".into()
                    }
                }),
                "invalid functions[2].vhba.wwnn \"zz\"",
            ),
            (
                Box::new(|w| w.functions[2].kind = None),
                "invalid functions[2] \"\": is neither a vnic nor a vhba",
            ),
        ];
        for (damage, expected) in cases {
            let mut damaged = wire.clone();
            damage(&mut damaged);
            let error = program_from_wire(&damaged.profile, damaged.revision, &damaged.functions)
                .unwrap_err();
            assert!(error.to_string().starts_with(expected), "{error}");
        }
        wire.functions.clear();
        assert!(program_from_wire("web", 1, &wire.functions).is_ok());
    }
}
