//! `vnet.v1.Pool` <-> [`PoolSpec`] / [`Pool`], and [`PoolUsage`] to the wire.

use vnet_model::{Pool, PoolKind, PoolRange, PoolSpec, PoolUsage};
use vnet_proto::vnet::v1 as pb;

use crate::error::ApiError;

pub fn spec_from_wire(wire: pb::Pool) -> Result<PoolSpec, ApiError> {
    let parse = |field: &str, value: &str| -> Result<PoolRangeEnd, ApiError> {
        if value.is_empty() {
            return Err(ApiError::invalid(field, value, "is required"));
        }
        Ok(PoolRangeEnd(value.to_string(), field.to_string()))
    };
    let first = parse("pool.first", &wire.first)?;
    let last = parse("pool.last", &wire.last)?;
    let range = match pb::PoolKind::try_from(wire.kind) {
        Ok(pb::PoolKind::Mac) => PoolRange::Mac {
            first: first.parse()?,
            last: last.parse()?,
        },
        Ok(pb::PoolKind::Wwn) => PoolRange::Wwn {
            first: first.parse()?,
            last: last.parse()?,
        },
        Ok(pb::PoolKind::Unspecified) | Err(_) => {
            return Err(ApiError::invalid(
                "pool.kind",
                wire.kind,
                "must be POOL_KIND_MAC or POOL_KIND_WWN",
            ))
        }
    };
    let spec = PoolSpec {
        name: wire.name,
        range,
    };
    // The model's static checks, here at the edge, so a name it would refuse never reaches the
    // log; it checks again when applying.
    spec.validate()
        .map_err(|rejection| super::prefix_field(rejection, "pool."))?;
    Ok(spec)
}

/// One end of a range, remembered with its field name for the error message.
struct PoolRangeEnd(String, String);

impl PoolRangeEnd {
    fn parse<T: std::str::FromStr>(&self) -> Result<T, ApiError>
    where
        T::Err: std::fmt::Display,
    {
        self.0
            .parse()
            .map_err(|e: T::Err| ApiError::invalid(&self.1, &self.0, e.to_string()))
    }
}

pub fn kind_to_wire(kind: PoolKind) -> pb::PoolKind {
    match kind {
        PoolKind::Mac => pb::PoolKind::Mac,
        PoolKind::Wwn => pb::PoolKind::Wwn,
    }
}

pub fn to_wire(pool: &Pool) -> pb::Pool {
    let (kind, first, last) = match &pool.range {
        PoolRange::Mac { first, last } => (PoolKind::Mac, first.to_string(), last.to_string()),
        PoolRange::Wwn { first, last } => (PoolKind::Wwn, first.to_string(), last.to_string()),
    };
    pb::Pool {
        name: pool.name.clone(),
        kind: kind_to_wire(kind) as i32,
        first,
        last,
        revision: pool.revision,
    }
}

pub fn usage_to_wire(usage: &PoolUsage) -> pb::PoolUsage {
    pb::PoolUsage {
        name: usage.name.clone(),
        kind: kind_to_wire(usage.kind) as i32,
        size: usage.size,
        used: usage.used,
        near_exhaustion: usage.near_exhaustion,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pools_round_trip() {
        for range in [
            PoolRange::Mac {
                first: "02:00:00:00:00:00".parse().expect("mac"),
                last: "02:00:00:00:ff:ff".parse().expect("mac"),
            },
            PoolRange::Wwn {
                first: "20:00:00:25:b5:00:00:00".parse().expect("wwn"),
                last: "20:00:00:25:b5:00:ff:ff".parse().expect("wwn"),
            },
        ] {
            let pool = Pool {
                name: "p".into(),
                range,
                revision: 4,
            };
            let wire = to_wire(&pool);
            assert_eq!(wire.revision, 4);
            let spec = spec_from_wire(wire).expect("valid");
            assert_eq!(spec.range, range);
            assert_eq!(spec.name, "p");
        }
    }

    #[test]
    fn bad_pools_name_the_field() {
        let good = pb::Pool {
            name: "p".into(),
            kind: pb::PoolKind::Mac as i32,
            first: "02:00:00:00:00:00".into(),
            last: "02:00:00:00:00:ff".into(),
            revision: 0,
        };
        let mut no_kind = good.clone();
        no_kind.kind = 0;
        let mut bad_last = good.clone();
        bad_last.last = "nope".into();
        let mut empty_first = good.clone();
        empty_first.first.clear();
        let mut wwn_in_mac_pool = good;
        wwn_in_mac_pool.first = "20:00:00:25:b5:00:00:00".into();
        for (wire, field) in [
            (no_kind, "pool.kind"),
            (bad_last, "pool.last"),
            (empty_first, "pool.first"),
            (wwn_in_mac_pool, "pool.first"),
        ] {
            let err = spec_from_wire(wire).expect_err(field);
            assert_eq!(err.code(), tonic::Code::InvalidArgument);
            assert!(err.to_string().contains(field), "{field}: {err}");
        }
    }
}
