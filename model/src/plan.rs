//! Working out the identities of a profile being created or replaced, without touching the state.
//!
//! `apply` must leave the state unchanged when it refuses a command, so it first plans the whole
//! profile against a read-only view and only then commits. The plan treats the identities of the
//! profile being replaced as free (frees come before allocations) and remembers what the request
//! has claimed so far, so one request never hands the same identity out twice.
//!
//! Order matters for determinism and for fairness to what the client asked: explicit identities
//! are claimed first, then identities kept by vNIC/vHBA name, then allocations in spec order
//! (vNICs, then each vHBA's WWPN before its WWNN), each taking the lowest available identity.

use std::collections::{BTreeMap, BTreeSet};

use crate::error::Rejection;
use crate::identity::{Identity, IdentityKind, Mac, Wwn};
use crate::index::{key_of, IdentityIndex, IdentityKey};
use crate::pool::Pool;
use crate::profile::{Profile, ProfileSpec, VHba, VNic};
use crate::Revision;

struct Planner<'a> {
    index: &'a IdentityIndex,
    pools: &'a BTreeMap<String, Pool>,
    /// Identities of the profile being replaced: free for this request to take.
    releasing: BTreeSet<IdentityKey>,
    /// Identities this request has taken so far, to the field that took them.
    claimed: BTreeMap<IdentityKey, String>,
}

/// Builds the profile `spec` describes at `revision`, replacing `previous` if given. The spec must
/// already be statically valid (`ProfileSpec::validate`).
pub(crate) fn plan_profile(
    index: &IdentityIndex,
    pools: &BTreeMap<String, Pool>,
    spec: &ProfileSpec,
    previous: Option<&Profile>,
    revision: Revision,
) -> Result<Profile, Rejection> {
    let mut planner = Planner {
        index,
        pools,
        releasing: previous
            .into_iter()
            .flat_map(Profile::identities)
            .map(key_of)
            .collect(),
        claimed: BTreeMap::new(),
    };

    for (position, vnic) in spec.vnics.iter().enumerate() {
        if let Some(mac) = vnic.mac {
            planner.claim_explicit(Identity::Mac(mac), format!("vnics[{position}].mac"))?;
        }
    }
    for (position, vhba) in spec.vhbas.iter().enumerate() {
        for (leaf, wwn) in [("wwpn", vhba.wwpn), ("wwnn", vhba.wwnn)] {
            if let Some(wwn) = wwn {
                planner.claim_explicit(Identity::Wwn(wwn), format!("vhbas[{position}].{leaf}"))?;
            }
        }
    }

    let previous_vnics: BTreeMap<&str, &VNic> = previous
        .into_iter()
        .flat_map(|profile| &profile.vnics)
        .map(|vnic| (vnic.name.as_str(), vnic))
        .collect();
    let previous_vhbas: BTreeMap<&str, &VHba> = previous
        .into_iter()
        .flat_map(|profile| &profile.vhbas)
        .map(|vhba| (vhba.name.as_str(), vhba))
        .collect();

    let mut known_macs = Vec::with_capacity(spec.vnics.len());
    for (position, vnic) in spec.vnics.iter().enumerate() {
        let kept = match (vnic.mac, previous_vnics.get(vnic.name.as_str())) {
            (None, Some(previous)) => {
                let field = format!("vnics[{position}].mac");
                planner.claim_kept(Identity::Mac(previous.mac), field, &vnic.name)?;
                Some(previous.mac)
            }
            (explicit, _) => explicit,
        };
        known_macs.push(kept);
    }
    let mut known_wwns = Vec::with_capacity(spec.vhbas.len());
    for (position, vhba) in spec.vhbas.iter().enumerate() {
        let previous = previous_vhbas.get(vhba.name.as_str());
        let mut keep = |leaf: &str,
                        explicit: Option<Wwn>,
                        previous: Option<Wwn>|
         -> Result<Option<Wwn>, Rejection> {
            match (explicit, previous) {
                (None, Some(previous)) => {
                    let field = format!("vhbas[{position}].{leaf}");
                    planner.claim_kept(Identity::Wwn(previous), field, &vhba.name)?;
                    Ok(Some(previous))
                }
                (explicit, _) => Ok(explicit),
            }
        };
        let wwpn = keep("wwpn", vhba.wwpn, previous.map(|p| p.wwpn))?;
        let wwnn = keep("wwnn", vhba.wwnn, previous.map(|p| p.wwnn))?;
        known_wwns.push((wwpn, wwnn));
    }

    let mut vnics = Vec::with_capacity(spec.vnics.len());
    for ((position, vnic), known) in spec.vnics.iter().enumerate().zip(known_macs) {
        let mac = match known {
            Some(mac) => mac,
            None => planner.allocate_mac(vnic.pool.as_deref(), position)?,
        };
        vnics.push(VNic {
            name: vnic.name.clone(),
            mac,
            network: vnic.network.clone(),
            vlan: vnic.vlan,
        });
    }
    let mut vhbas = Vec::with_capacity(spec.vhbas.len());
    for ((position, vhba), (wwpn, wwnn)) in spec.vhbas.iter().enumerate().zip(known_wwns) {
        let pool = vhba.pool.as_deref();
        let wwpn = match wwpn {
            Some(wwpn) => wwpn,
            None => planner.allocate_wwn(pool, position, "wwpn")?,
        };
        let wwnn = match wwnn {
            Some(wwnn) => wwnn,
            None => planner.allocate_wwn(pool, position, "wwnn")?,
        };
        vhbas.push(VHba {
            name: vhba.name.clone(),
            wwpn,
            wwnn,
            fabric: vhba.fabric.clone(),
        });
    }

    Ok(Profile {
        name: spec.name.clone(),
        server: spec.server.clone(),
        vnics,
        vhbas,
        preferred_unit: spec.preferred_unit.clone(),
        failback: spec.failback,
        revision,
        created_revision: previous.map_or(revision, |profile| profile.created_revision),
    })
}

impl Planner<'_> {
    /// An identity the client named: it must be unheld, or held by the profile being replaced.
    fn claim_explicit(&mut self, identity: Identity, field: String) -> Result<(), Rejection> {
        let key = key_of(identity);
        if let Some(earlier) = self.claimed.get(&key) {
            return Err(Rejection::invalid(
                field,
                &identity.to_string(),
                format!("is already given to {earlier}"),
            ));
        }
        if let Some(owner) = self.index.owner(identity) {
            if !self.releasing.contains(&key) {
                return Err(Rejection::IdentityInUse {
                    identity: canonical(identity),
                    owner: owner.to_owned(),
                });
            }
        }
        self.claimed.insert(key, field);
        Ok(())
    }

    /// An identity a vNIC or vHBA keeps from the profile it replaces. It can only clash with an
    /// explicit identity of this same request, so the error points at that one.
    fn claim_kept(
        &mut self,
        identity: Identity,
        field: String,
        name: &str,
    ) -> Result<(), Rejection> {
        let key = key_of(identity);
        if let Some(claimer) = self.claimed.get(&key) {
            return Err(Rejection::invalid(
                claimer.clone(),
                &identity.to_string(),
                format!(
                    "is kept by {name:?} ({field}), which keeps its identity when the spec gives \
                     none; give {field} an explicit value too, or choose another here"
                ),
            ));
        }
        self.claimed.insert(key, field);
        Ok(())
    }

    fn allocate_mac(&mut self, pool: Option<&str>, position: usize) -> Result<Mac, Rejection> {
        let value = self.allocate(
            IdentityKind::Mac,
            pool,
            format!("vnics[{position}].mac"),
            format!("vnics[{position}].pool"),
        )?;
        // Every number in a MAC pool's range is a valid MAC (see `PoolRange`), and pools in the
        // state are validated before they are stored or loaded.
        Ok(Mac::from_u64(value).expect("a MAC pool holds only valid MACs"))
    }

    fn allocate_wwn(
        &mut self,
        pool: Option<&str>,
        position: usize,
        leaf: &str,
    ) -> Result<Wwn, Rejection> {
        let value = self.allocate(
            IdentityKind::Wwn,
            pool,
            format!("vhbas[{position}].{leaf}"),
            format!("vhbas[{position}].pool"),
        )?;
        // As for MACs: every number in a validated WWN pool's range is a valid WWN.
        Ok(Wwn::from_u64(value).expect("a WWN pool holds only valid WWNs"))
    }

    /// The lowest available identity of `kind` from the named pool, or from the first pool of that
    /// kind (by name) with room.
    fn allocate(
        &mut self,
        kind: IdentityKind,
        pool: Option<&str>,
        field: String,
        pool_field: String,
    ) -> Result<u64, Rejection> {
        let value = match pool {
            Some(name) => {
                let Some(pool) = self.pools.get(name) else {
                    return Err(Rejection::not_found("pool", name));
                };
                if pool.range.kind() != kind {
                    return Err(Rejection::invalid(
                        pool_field,
                        name,
                        format!(
                            "is a {} pool, but {field} needs a {kind}",
                            pool.range.kind()
                        ),
                    ));
                }
                self.index
                    .lowest_available(name, &self.releasing, &self.claimed)
                    .ok_or_else(|| Rejection::PoolExhausted {
                        pool: name.to_owned(),
                    })?
            }
            None => self
                .pools
                .values()
                .filter(|pool| pool.range.kind() == kind)
                .find_map(|pool| {
                    self.index
                        .lowest_available(&pool.name, &self.releasing, &self.claimed)
                })
                .ok_or_else(|| Rejection::NoPool {
                    kind,
                    field: field.clone(),
                })?,
        };
        self.claimed.insert((kind, value), field);
        Ok(value)
    }
}

/// The bare canonical form (`02:00:00:00:00:01`), for error fields a program may read back.
fn canonical(identity: Identity) -> String {
    match identity {
        Identity::Mac(mac) => mac.to_string(),
        Identity::Wwn(wwn) => wwn.to_string(),
    }
}
