//! Conversions between the wire (`vnet.v1` prost types) and the domain (`vnet-model`), one file
//! per type. Only this layer knows both; each conversion from the wire validates and names the
//! field at fault (as `profile.vnics[1].mac`), and each is round-trip tested.

pub mod access;
pub mod alarm;
pub mod event;
pub mod member;
pub mod pool;
pub mod profile;

use crate::error::ApiError;

/// Parses an optional identity: empty means "allocate one".
fn optional<T: std::str::FromStr>(field: &str, value: &str) -> Result<Option<T>, ApiError>
where
    T::Err: std::fmt::Display,
{
    if value.is_empty() {
        return Ok(None);
    }
    value
        .parse()
        .map(Some)
        .map_err(|e: T::Err| ApiError::invalid(field, value, e.to_string()))
}

/// Model field paths are relative to the object; on the wire they sit under its field, like
/// `profile.` or `pool.`.
pub(crate) fn prefix_field(rejection: vnet_model::Rejection, prefix: &str) -> ApiError {
    match rejection {
        vnet_model::Rejection::InvalidArgument {
            field,
            value,
            reason,
        } => ApiError::Rejected(vnet_model::Rejection::InvalidArgument {
            field: format!("{prefix}{field}"),
            value,
            reason,
        }),
        other => ApiError::Rejected(other),
    }
}
