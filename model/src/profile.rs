//! Profiles: the portable set of identities a rack server sees, and the spec a client sends to
//! create or replace one. A spec may leave identities out; `apply` allocates them from pools.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::Rejection;
use crate::identity::{Identity, Mac, Wwn};
use crate::limits::{VHBAS_PER_PROFILE_MAX, VLAN_ID_MAX, VLAN_ID_MIN, VNICS_PER_PROFILE_MAX};
use crate::name::validate_name;
use crate::Revision;

/// Whether a profile moves back to its preferred unit by itself once that unit is healthy again.
/// Manual by default: moving a server's identities is a visible event, so it happens only when
/// someone asks, unless the profile opts in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Failback {
    Auto,
    #[default]
    Manual,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VNic {
    pub name: String,
    pub mac: Mac,
    pub network: String,
    /// 802.1Q VLAN id in `VLAN_ID_MIN..=VLAN_ID_MAX`; `None` is untagged.
    pub vlan: Option<u16>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VHba {
    pub name: String,
    pub wwpn: Wwn,
    pub wwnn: Wwn,
    pub fabric: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Profile {
    pub name: String,
    pub server: String,
    pub vnics: Vec<VNic>,
    pub vhbas: Vec<VHba>,
    pub preferred_unit: Option<String>,
    pub failback: Failback,
    /// Revision of the last change to this profile; updates and deletes may require it to match.
    pub revision: Revision,
    pub created_revision: Revision,
}

impl Profile {
    /// Every MAC and WWN the profile holds: vNIC MACs in order, then each vHBA's WWPN and WWNN.
    pub fn identities(&self) -> impl Iterator<Item = Identity> + '_ {
        let macs = self.vnics.iter().map(|vnic| Identity::Mac(vnic.mac));
        let wwns = self
            .vhbas
            .iter()
            .flat_map(|vhba| [Identity::Wwn(vhba.wwpn), Identity::Wwn(vhba.wwnn)]);
        macs.chain(wwns)
    }

    /// A spec that recreates this profile exactly, identities included (for editing and for
    /// re-checking a stored profile against the static rules).
    pub fn spec(&self) -> ProfileSpec {
        ProfileSpec {
            name: self.name.clone(),
            server: self.server.clone(),
            vnics: self
                .vnics
                .iter()
                .map(|vnic| VNicSpec {
                    name: vnic.name.clone(),
                    mac: Some(vnic.mac),
                    network: vnic.network.clone(),
                    vlan: vnic.vlan,
                    pool: None,
                })
                .collect(),
            vhbas: self
                .vhbas
                .iter()
                .map(|vhba| VHbaSpec {
                    name: vhba.name.clone(),
                    wwpn: Some(vhba.wwpn),
                    wwnn: Some(vhba.wwnn),
                    fabric: vhba.fabric.clone(),
                    pool: None,
                })
                .collect(),
            preferred_unit: self.preferred_unit.clone(),
            failback: self.failback,
        }
    }
}

/// A vNIC as a client asks for it. Without `mac`, one is allocated from `pool` (or, without a
/// pool, from the first MAC pool by name that has room).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VNicSpec {
    pub name: String,
    pub mac: Option<Mac>,
    pub network: String,
    pub vlan: Option<u16>,
    pub pool: Option<String>,
}

/// A vHBA as a client asks for it. A missing `wwpn` or `wwnn` is allocated like a vNIC's MAC.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VHbaSpec {
    pub name: String,
    pub wwpn: Option<Wwn>,
    pub wwnn: Option<Wwn>,
    pub fabric: String,
    pub pool: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProfileSpec {
    pub name: String,
    pub server: String,
    pub vnics: Vec<VNicSpec>,
    pub vhbas: Vec<VHbaSpec>,
    pub preferred_unit: Option<String>,
    pub failback: Failback,
}

impl ProfileSpec {
    /// The checks that need no state: names, counts, VLAN ids, vNIC/vHBA names unique within the
    /// profile, and explicit identities unique within the request. `apply` runs these too, so the
    /// API edge may call this to refuse early without a Raft round trip.
    pub fn validate(&self) -> Result<(), Rejection> {
        validate_name("name", &self.name)?;
        validate_name("server", &self.server)?;
        if let Some(unit) = &self.preferred_unit {
            validate_name("preferred_unit", unit)?;
        }
        if self.vnics.len() > VNICS_PER_PROFILE_MAX {
            return Err(Rejection::limit(
                "vNICs in one profile",
                VNICS_PER_PROFILE_MAX,
            ));
        }
        if self.vhbas.len() > VHBAS_PER_PROFILE_MAX {
            return Err(Rejection::limit(
                "vHBAs in one profile",
                VHBAS_PER_PROFILE_MAX,
            ));
        }

        let mut vnic_names = BTreeMap::new();
        let mut macs = BTreeMap::new();
        for (index, vnic) in self.vnics.iter().enumerate() {
            let field = |leaf: &str| format!("vnics[{index}].{leaf}");
            validate_name(&field("name"), &vnic.name)?;
            validate_name(&field("network"), &vnic.network)?;
            if let Some(vlan) = vnic.vlan {
                if !(VLAN_ID_MIN..=VLAN_ID_MAX).contains(&vlan) {
                    return Err(Rejection::invalid(
                        field("vlan"),
                        &vlan.to_string(),
                        format!("must be between {VLAN_ID_MIN} and {VLAN_ID_MAX}"),
                    ));
                }
            }
            if let Some(pool) = &vnic.pool {
                validate_name(&field("pool"), pool)?;
            }
            if let Some(earlier) = vnic_names.insert(vnic.name.as_str(), field("name")) {
                return Err(Rejection::invalid(
                    field("name"),
                    &vnic.name,
                    format!("is already the name of {earlier}"),
                ));
            }
            if let Some(mac) = vnic.mac {
                if let Some(earlier) = macs.insert(mac, field("mac")) {
                    return Err(Rejection::invalid(
                        field("mac"),
                        &mac.to_string(),
                        format!("is already given to {earlier}"),
                    ));
                }
            }
        }

        let mut vhba_names = BTreeMap::new();
        let mut wwns = BTreeMap::new();
        for (index, vhba) in self.vhbas.iter().enumerate() {
            let field = |leaf: &str| format!("vhbas[{index}].{leaf}");
            validate_name(&field("name"), &vhba.name)?;
            validate_name(&field("fabric"), &vhba.fabric)?;
            if let Some(pool) = &vhba.pool {
                validate_name(&field("pool"), pool)?;
            }
            if let Some(earlier) = vhba_names.insert(vhba.name.as_str(), field("name")) {
                return Err(Rejection::invalid(
                    field("name"),
                    &vhba.name,
                    format!("is already the name of {earlier}"),
                ));
            }
            for (leaf, wwn) in [("wwpn", vhba.wwpn), ("wwnn", vhba.wwnn)] {
                if let Some(wwn) = wwn {
                    if let Some(earlier) = wwns.insert(wwn, field(leaf)) {
                        return Err(Rejection::invalid(
                            field(leaf),
                            &wwn.to_string(),
                            format!("is already given to {earlier}"),
                        ));
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::NAME_LEN_MAX;

    fn mac(text: &str) -> Mac {
        text.parse().expect("valid MAC literal")
    }

    fn wwn(text: &str) -> Wwn {
        text.parse().expect("valid WWN literal")
    }

    fn vnic(name: &str) -> VNicSpec {
        VNicSpec {
            name: name.into(),
            mac: None,
            network: "lan".into(),
            vlan: None,
            pool: None,
        }
    }

    fn vhba(name: &str) -> VHbaSpec {
        VHbaSpec {
            name: name.into(),
            wwpn: None,
            wwnn: None,
            fabric: "fab-a".into(),
            pool: None,
        }
    }

    fn spec() -> ProfileSpec {
        ProfileSpec {
            name: "web-1".into(),
            server: "rack1-srv1".into(),
            vnics: vec![vnic("eth0"), vnic("eth1")],
            vhbas: vec![vhba("hba0")],
            preferred_unit: Some("unit-a".into()),
            failback: Failback::Manual,
        }
    }

    /// Expects an InvalidArgument at `field` whose reason contains `reason`.
    fn assert_invalid(result: Result<(), Rejection>, field: &str, reason: &str) {
        match result {
            Err(Rejection::InvalidArgument {
                field: actual_field,
                reason: actual_reason,
                ..
            }) => {
                assert_eq!(actual_field, field);
                assert!(actual_reason.contains(reason), "{actual_reason}");
            }
            other => panic!("expected InvalidArgument at {field}, got {other:?}"),
        }
    }

    #[test]
    fn a_plain_spec_is_valid() {
        assert_eq!(spec().validate(), Ok(()));
        assert_eq!(Failback::default(), Failback::Manual);
    }

    #[test]
    fn field_errors_point_at_the_field() {
        type Edit = fn(&mut ProfileSpec);
        let cases: Vec<(&str, Edit, &str)> = vec![
            ("name", |s| s.name = "Web".into(), "uppercase"),
            ("server", |s| s.server = String::new(), "empty"),
            (
                "preferred_unit",
                |s| s.preferred_unit = Some("a b".into()),
                "' '",
            ),
            (
                "vnics[1].name",
                |s| s.vnics[1].name = "-x".into(),
                "starts with",
            ),
            (
                "vnics[0].network",
                |s| s.vnics[0].network = "".into(),
                "empty",
            ),
            (
                "vnics[1].vlan",
                |s| s.vnics[1].vlan = Some(0),
                "between 1 and 4094",
            ),
            ("vnics[1].vlan", |s| s.vnics[1].vlan = Some(4095), "between"),
            (
                "vnics[0].pool",
                |s| s.vnics[0].pool = Some("P".into()),
                "uppercase",
            ),
            (
                "vnics[1].name",
                |s| s.vnics[1].name = "eth0".into(),
                "vnics[0].name",
            ),
            (
                "vhbas[0].fabric",
                |s| s.vhbas[0].fabric = "f/1".into(),
                "'/'",
            ),
            (
                "vhbas[0].pool",
                |s| s.vhbas[0].pool = Some(String::new()),
                "empty",
            ),
            (
                "vhbas[1].name",
                |s| s.vhbas.push(vhba("hba0")),
                "already the name of vhbas[0].name",
            ),
        ];
        for (field, edit, reason) in cases {
            let mut spec = spec();
            edit(&mut spec);
            assert_invalid(spec.validate(), field, reason);
        }
    }

    #[test]
    fn vlan_bounds_are_inclusive() {
        let mut spec = spec();
        spec.vnics[0].vlan = Some(VLAN_ID_MIN);
        spec.vnics[1].vlan = Some(VLAN_ID_MAX);
        assert_eq!(spec.validate(), Ok(()));
    }

    #[test]
    fn explicit_identities_must_be_unique_within_the_request() {
        let mut spec = spec();
        spec.vnics[0].mac = Some(mac("02:00:00:00:00:01"));
        spec.vnics[1].mac = Some(mac("02:00:00:00:00:01"));
        assert_invalid(
            spec.validate(),
            "vnics[1].mac",
            "already given to vnics[0].mac",
        );

        let mut spec = self::spec();
        spec.vhbas[0].wwpn = Some(wwn("20:00:00:00:00:00:00:01"));
        spec.vhbas[0].wwnn = Some(wwn("20:00:00:00:00:00:00:01"));
        assert_invalid(spec.validate(), "vhbas[0].wwnn", "vhbas[0].wwpn");

        let mut spec = self::spec();
        spec.vhbas[0].wwnn = Some(wwn("20:00:00:00:00:00:00:01"));
        spec.vhbas.push(VHbaSpec {
            wwpn: Some(wwn("20:00:00:00:00:00:00:01")),
            ..vhba("hba1")
        });
        assert_invalid(spec.validate(), "vhbas[1].wwpn", "vhbas[0].wwnn");
    }

    #[test]
    fn counts_are_limited() {
        let mut spec = spec();
        spec.vnics = (0..=VNICS_PER_PROFILE_MAX)
            .map(|i| vnic(&format!("eth{i}")))
            .collect();
        assert_eq!(
            spec.validate(),
            Err(Rejection::limit(
                "vNICs in one profile",
                VNICS_PER_PROFILE_MAX
            ))
        );
        spec.vnics.pop();
        assert_eq!(spec.validate(), Ok(()));
        spec.vhbas = (0..=VHBAS_PER_PROFILE_MAX)
            .map(|i| vhba(&format!("hba{i}")))
            .collect();
        assert_eq!(
            spec.validate(),
            Err(Rejection::limit(
                "vHBAs in one profile",
                VHBAS_PER_PROFILE_MAX
            ))
        );
        let mut spec = self::spec();
        spec.name = "p".repeat(NAME_LEN_MAX + 1);
        assert_invalid(spec.validate(), "name", "more than the limit of 63");
    }

    #[test]
    fn spec_of_a_profile_recreates_it() {
        let profile = Profile {
            name: "db-1".into(),
            server: "srv".into(),
            vnics: vec![VNic {
                name: "eth0".into(),
                mac: mac("02:00:00:00:00:07"),
                network: "lan".into(),
                vlan: Some(12),
            }],
            vhbas: vec![VHba {
                name: "hba0".into(),
                wwpn: wwn("20:00:00:00:00:00:00:01"),
                wwnn: wwn("20:00:00:00:00:00:00:02"),
                fabric: "fab-a".into(),
            }],
            preferred_unit: None,
            failback: Failback::Auto,
            revision: 9,
            created_revision: 4,
        };
        let spec = profile.spec();
        assert_eq!(spec.validate(), Ok(()));
        assert_eq!(spec.vnics[0].mac, Some(profile.vnics[0].mac));
        assert_eq!(spec.vhbas[0].wwnn, Some(profile.vhbas[0].wwnn));
        assert_eq!(spec.failback, Failback::Auto);
        let identities: Vec<String> = profile.identities().map(|i| i.to_string()).collect();
        assert_eq!(
            identities,
            [
                "MAC 02:00:00:00:00:07",
                "WWN 20:00:00:00:00:00:00:01",
                "WWN 20:00:00:00:00:00:00:02"
            ]
        );
    }
}
