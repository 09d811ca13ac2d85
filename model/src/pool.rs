//! Pools: named ranges of MACs or WWNs that `apply` allocates identities from, lowest free first.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::Rejection;
use crate::identity::{Identity, IdentityKind, Mac, Wwn};
use crate::limits::POOL_SIZE_MAX;
use crate::name::validate_name;
use crate::Revision;

/// A pool holds identities of exactly one kind.
pub type PoolKind = IdentityKind;

/// An inclusive range of identities.
///
/// A valid range (see `validate`) holds only presentable identities: a MAC range keeps the first
/// octet, so every address in it is unicast and non-zero like its ends; a WWN range keeps the NAA
/// nibble, and because both ends of an NAA 1 range have the reserved 12 bits at zero, so does
/// everything between them. The allocator relies on this to turn any number in range back into an
/// identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PoolRange {
    Mac { first: Mac, last: Mac },
    Wwn { first: Wwn, last: Wwn },
}

impl PoolRange {
    pub fn kind(&self) -> PoolKind {
        match self {
            PoolRange::Mac { .. } => IdentityKind::Mac,
            PoolRange::Wwn { .. } => IdentityKind::Wwn,
        }
    }

    /// The first and last identity as numbers.
    pub fn bounds(&self) -> (u64, u64) {
        match self {
            PoolRange::Mac { first, last } => (first.as_u64(), last.as_u64()),
            PoolRange::Wwn { first, last } => (first.as_u64(), last.as_u64()),
        }
    }

    /// Identities in the range (1 for a single-identity range; meaningful only when valid).
    pub fn size(&self) -> u64 {
        let (first, last) = self.bounds();
        last.saturating_sub(first).saturating_add(1)
    }

    pub fn contains(&self, identity: Identity) -> bool {
        let (first, last) = self.bounds();
        identity.kind() == self.kind() && (first..=last).contains(&identity.as_u64())
    }

    /// Whether the two ranges share an identity (ranges of different kinds never do).
    pub fn overlaps(&self, other: &PoolRange) -> bool {
        let (first, last) = self.bounds();
        let (other_first, other_last) = other.bounds();
        self.kind() == other.kind() && first <= other_last && other_first <= last
    }

    /// Static checks, reported against `field`.
    pub fn validate(&self, field: &str) -> Result<(), Rejection> {
        let reject = |reason: String| Err(Rejection::invalid(field, &self.to_string(), reason));
        let (first, last) = self.bounds();
        if first > last {
            return reject("the first identity is greater than the last".to_owned());
        }
        match self {
            PoolRange::Mac { first, last } if first.first_octet() != last.first_octet() => {
                return reject(format!(
                    "first and last must share the first octet ({:02x} vs {:02x}), so that every \
                     address in between is unicast",
                    first.first_octet(),
                    last.first_octet()
                ));
            }
            PoolRange::Wwn { first, last } if first.naa() != last.naa() => {
                return reject(format!(
                    "first and last must have the same NAA ({} vs {}), so that every name in \
                     between is valid",
                    first.naa(),
                    last.naa()
                ));
            }
            _ => {}
        }
        let size = self.size();
        if size > POOL_SIZE_MAX {
            return reject(format!(
                "holds {size} identities, more than the limit of {POOL_SIZE_MAX}"
            ));
        }
        Ok(())
    }
}

impl fmt::Display for PoolRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PoolRange::Mac { first, last } => write!(f, "MACs {first} to {last}"),
            PoolRange::Wwn { first, last } => write!(f, "WWNs {first} to {last}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolSpec {
    pub name: String,
    pub range: PoolRange,
}

impl PoolSpec {
    /// The checks that need no state (overlap with other pools is checked by `apply`).
    pub fn validate(&self) -> Result<(), Rejection> {
        validate_name("name", &self.name)?;
        self.range.validate("range")
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pool {
    pub name: String,
    pub range: PoolRange,
    /// Revision at which the pool was created (pools are never modified in place).
    pub revision: Revision,
}

impl Pool {
    pub fn spec(&self) -> PoolSpec {
        PoolSpec {
            name: self.name.clone(),
            range: self.range,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolUsage {
    pub name: String,
    pub kind: PoolKind,
    pub size: u64,
    /// Identities in the range held by any profile, allocated or given explicitly.
    pub used: u64,
    /// At least 90% used: time to add a pool before creates start failing.
    pub near_exhaustion: bool,
}

impl PoolUsage {
    pub(crate) fn new(name: &str, kind: PoolKind, size: u64, used: u64) -> PoolUsage {
        PoolUsage {
            name: name.to_owned(),
            kind,
            size,
            used,
            // In u128 so that the products cannot overflow whatever the sizes.
            near_exhaustion: u128::from(used) * 10 >= u128::from(size) * 9,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mac(text: &str) -> Mac {
        text.parse().expect("valid MAC literal")
    }

    fn wwn(text: &str) -> Wwn {
        text.parse().expect("valid WWN literal")
    }

    fn mac_range(first: &str, last: &str) -> PoolRange {
        PoolRange::Mac {
            first: mac(first),
            last: mac(last),
        }
    }

    fn wwn_range(first: &str, last: &str) -> PoolRange {
        PoolRange::Wwn {
            first: wwn(first),
            last: wwn(last),
        }
    }

    #[test]
    fn valid_ranges() {
        let cases = [
            (mac_range("02:00:00:00:00:01", "02:00:00:00:00:01"), 1),
            (mac_range("02:00:00:00:00:00", "02:00:00:ff:ff:ff"), 1 << 24),
            (
                wwn_range("20:00:00:25:b5:00:00:00", "20:00:00:25:b5:00:00:ff"),
                256,
            ),
            (
                wwn_range("10:00:00:00:00:00:00:01", "10:00:ff:ff:ff:ff:ff:ff"),
                (1 << 48) - 1,
            ),
        ];
        for (range, size) in cases {
            assert_eq!(range.size(), size, "{range}");
            if size <= POOL_SIZE_MAX {
                assert_eq!(range.validate("range"), Ok(()), "{range}");
            }
        }
    }

    #[test]
    fn invalid_ranges_say_why() {
        let cases = [
            (
                mac_range("02:00:00:00:00:02", "02:00:00:00:00:01"),
                "greater than the last",
            ),
            (
                mac_range("02:00:00:00:00:00", "04:00:00:00:00:00"),
                "share the first octet (02 vs 04)",
            ),
            (
                mac_range("02:00:00:00:00:00", "02:00:01:00:00:00"),
                "holds 16777217 identities",
            ),
            (
                wwn_range("20:00:00:00:00:00:00:01", "30:00:00:00:00:00:00:01"),
                "same NAA (2 vs 3)",
            ),
            (
                wwn_range("20:00:00:00:00:00:00:02", "20:00:00:00:00:00:00:01"),
                "greater",
            ),
        ];
        for (range, reason) in cases {
            match range.validate("range") {
                Err(Rejection::InvalidArgument {
                    field,
                    value,
                    reason: actual,
                }) => {
                    assert_eq!(field, "range");
                    assert_eq!(value, range.to_string());
                    assert!(actual.contains(reason), "{range}: {actual}");
                }
                other => panic!("{range}: expected InvalidArgument, got {other:?}"),
            }
        }
    }

    #[test]
    fn overlap_is_per_kind_and_inclusive() {
        let low = mac_range("02:00:00:00:00:00", "02:00:00:00:00:0f");
        let touching = mac_range("02:00:00:00:00:0f", "02:00:00:00:00:1f");
        let next = mac_range("02:00:00:00:00:10", "02:00:00:00:00:1f");
        assert!(low.overlaps(&touching) && touching.overlaps(&low));
        assert!(!low.overlaps(&next) && !next.overlaps(&low));
        // Same numbers, other kind: no overlap, since MACs and WWNs never collide.
        let wwns = wwn_range("20:00:00:00:00:00:00:00", "20:00:00:00:00:00:00:0f");
        let wwn_numbers_of_low = PoolRange::Wwn {
            first: Wwn::from_u64(0x2000_0000_0000_0000).expect("NAA 2"),
            last: Wwn::from_u64(0x2000_0000_0000_000f).expect("NAA 2"),
        };
        assert_eq!(wwns, wwn_numbers_of_low);
        assert!(!low.overlaps(&wwns));
        assert!(low.contains(Identity::Mac(mac("02:00:00:00:00:0f"))));
        assert!(!low.contains(Identity::Mac(mac("02:00:00:00:00:10"))));
    }

    #[test]
    fn near_exhaustion_starts_at_ninety_percent() {
        let cases = [
            (10, 8, false),
            (10, 9, true),
            (10, 10, true),
            (1, 0, false),
            (1, 1, true),
            (1000, 899, false),
            (1000, 900, true),
        ];
        for (size, used, near) in cases {
            let usage = PoolUsage::new("p", IdentityKind::Mac, size, used);
            assert_eq!(usage.near_exhaustion, near, "{used}/{size}");
        }
    }

    #[test]
    fn spec_validates_name_and_range() {
        let spec = PoolSpec {
            name: "Macs".into(),
            range: mac_range("02:00:00:00:00:00", "02:00:00:00:00:0f"),
        };
        assert!(
            matches!(spec.validate(), Err(Rejection::InvalidArgument { field, .. }) if field == "name")
        );
        let spec = PoolSpec {
            name: "macs".into(),
            ..spec
        };
        assert_eq!(spec.validate(), Ok(()));
    }
}
