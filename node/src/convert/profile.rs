//! `vnet.v1.Profile` <-> [`ProfileSpec`] (what a client asks for) and [`Profile`] (what is stored).

use vnet_model::limits::VLAN_ID_MAX;
use vnet_model::{Failback, Profile, ProfileSpec, VHba, VHbaSpec, VNic, VNicSpec};
use vnet_proto::vnet::v1 as pb;

use super::optional;
use crate::error::ApiError;

pub fn spec_from_wire(wire: pb::Profile) -> Result<ProfileSpec, ApiError> {
    let failback = match pb::FailbackPolicy::try_from(wire.failback) {
        // types.proto: unspecified is treated as auto, which is also vnetctl's default.
        Ok(pb::FailbackPolicy::Unspecified) | Ok(pb::FailbackPolicy::Auto) => Failback::Auto,
        Ok(pb::FailbackPolicy::Manual) => Failback::Manual,
        Err(_) => {
            return Err(ApiError::invalid(
                "profile.failback",
                wire.failback,
                "not a FailbackPolicy value",
            ))
        }
    };
    let vnics = wire
        .vnics
        .into_iter()
        .enumerate()
        .map(|(i, vnic)| {
            let field = |name: &str| format!("profile.vnics[{i}].{name}");
            let vlan = match vnic.vlan {
                0 => None,
                // The model checks the range too; here it keeps `as u16` from wrapping.
                v if v <= u32::from(VLAN_ID_MAX) => Some(v as u16),
                v => {
                    return Err(ApiError::invalid(
                        &field("vlan"),
                        v,
                        format!("VLAN ids are 1..={VLAN_ID_MAX} (0 = untagged)"),
                    ))
                }
            };
            Ok::<_, ApiError>(VNicSpec {
                mac: optional(&field("mac"), &vnic.mac)?,
                name: vnic.name,
                network: vnic.network,
                vlan,
                pool: vnic.pool.filter(|p| !p.is_empty()),
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let vhbas = wire
        .vhbas
        .into_iter()
        .enumerate()
        .map(|(i, vhba)| {
            let field = |name: &str| format!("profile.vhbas[{i}].{name}");
            Ok::<_, ApiError>(VHbaSpec {
                wwpn: optional(&field("wwpn"), &vhba.wwpn)?,
                wwnn: optional(&field("wwnn"), &vhba.wwnn)?,
                name: vhba.name,
                fabric: vhba.fabric,
                pool: vhba.pool.filter(|p| !p.is_empty()),
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let spec = ProfileSpec {
        name: wire.name,
        server: wire.server,
        vnics,
        vhbas,
        preferred_unit: wire.preferred_unit.filter(|u| !u.is_empty()),
        failback,
    };
    // Static checks at the edge, so a bad request is refused before it costs a Raft round; the
    // model checks again when applying (the log is the authority).
    spec.validate()
        .map_err(|rejection| super::prefix_field(rejection, "profile."))?;
    Ok(spec)
}

pub fn to_wire(profile: &Profile) -> pb::Profile {
    pb::Profile {
        name: profile.name.clone(),
        server: profile.server.clone(),
        vnics: profile.vnics.iter().map(vnic_to_wire).collect(),
        vhbas: profile.vhbas.iter().map(vhba_to_wire).collect(),
        preferred_unit: profile.preferred_unit.clone(),
        failback: match profile.failback {
            Failback::Auto => pb::FailbackPolicy::Auto,
            Failback::Manual => pb::FailbackPolicy::Manual,
        } as i32,
        revision: profile.revision,
        created_revision: profile.created_revision,
    }
}

fn vnic_to_wire(vnic: &VNic) -> pb::Vnic {
    pb::Vnic {
        name: vnic.name.clone(),
        mac: vnic.mac.to_string(),
        network: vnic.network.clone(),
        vlan: vnic.vlan.map_or(0, u32::from),
        pool: None,
    }
}

fn vhba_to_wire(vhba: &VHba) -> pb::Vhba {
    pb::Vhba {
        name: vhba.name.clone(),
        wwpn: vhba.wwpn.to_string(),
        wwnn: vhba.wwnn.to_string(),
        fabric: vhba.fabric.clone(),
        pool: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored() -> Profile {
        Profile {
            name: "web-01".into(),
            server: "rack1-srv01".into(),
            vnics: vec![VNic {
                name: "eth0".into(),
                mac: "02:00:00:00:00:01".parse().expect("mac"),
                network: "prod".into(),
                vlan: Some(100),
            }],
            vhbas: vec![VHba {
                name: "fc0".into(),
                wwpn: "20:00:00:25:b5:00:00:01".parse().expect("wwpn"),
                wwnn: "20:00:00:25:b5:00:01:01".parse().expect("wwnn"),
                fabric: "a".into(),
            }],
            preferred_unit: Some("unit-a".into()),
            failback: Failback::Auto,
            revision: 7,
            created_revision: 3,
        }
    }

    #[test]
    fn stored_profile_round_trips_through_the_wire_as_a_spec() {
        let profile = stored();
        let spec = spec_from_wire(to_wire(&profile)).expect("valid");
        assert_eq!(spec.name, profile.name);
        assert_eq!(spec.server, profile.server);
        assert_eq!(spec.failback, profile.failback);
        assert_eq!(spec.preferred_unit, profile.preferred_unit);
        assert_eq!(spec.vnics[0].mac, Some(profile.vnics[0].mac));
        assert_eq!(spec.vnics[0].vlan, Some(100));
        assert_eq!(spec.vhbas[0].wwpn, Some(profile.vhbas[0].wwpn));
        assert_eq!(spec.vhbas[0].wwnn, Some(profile.vhbas[0].wwnn));
        let again = to_wire(&profile);
        assert_eq!(again, to_wire(&profile));
        assert_eq!(again.revision, 7);
        assert_eq!(again.created_revision, 3);
    }

    #[test]
    fn empty_identities_mean_allocate() {
        let mut wire = to_wire(&stored());
        wire.vnics[0].mac.clear();
        wire.vhbas[0].wwpn.clear();
        wire.vnics[0].vlan = 0;
        let spec = spec_from_wire(wire).expect("valid");
        assert_eq!(spec.vnics[0].mac, None);
        assert_eq!(spec.vnics[0].vlan, None);
        assert_eq!(spec.vhbas[0].wwpn, None);
        assert!(spec.vhbas[0].wwnn.is_some());
    }

    #[test]
    fn bad_fields_are_named() {
        type Mutation = Box<dyn Fn(&mut pb::Profile)>;
        let cases: Vec<(Mutation, &str)> = vec![
            (
                Box::new(|p| p.vnics[0].mac = "01:00:00:00:00:01".into()),
                "profile.vnics[0].mac",
            ),
            (
                Box::new(|p| p.vnics[0].vlan = 4095),
                "profile.vnics[0].vlan",
            ),
            (
                Box::new(|p| p.vhbas[0].wwnn = "zz".into()),
                "profile.vhbas[0].wwnn",
            ),
            (Box::new(|p| p.failback = 99), "profile.failback"),
            (Box::new(|p| p.name = "Not Valid".into()), "profile.name"),
        ];
        for (mutate, field) in cases {
            let mut wire = to_wire(&stored());
            mutate(&mut wire);
            let err = spec_from_wire(wire).expect_err(field);
            assert_eq!(err.code(), tonic::Code::InvalidArgument, "{field}: {err}");
            assert!(
                err.to_string().contains(field),
                "{field} not named in: {err}"
            );
        }
    }
}
