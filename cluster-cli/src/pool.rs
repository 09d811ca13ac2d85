//! `pool create|list|usage|delete`.

use vnet_proto::vnet::v1 as pb;
use vnet_proto::vnet::v1::pool_service_client::PoolServiceClient;

use crate::cli::{PoolCommand, PoolKindArg};
use crate::error::CliError;
use crate::retry::CallKind;
use crate::session::{rpc, unary, Session};
use crate::spec;
use crate::view::{DeletedView, PoolListView, PoolUsageListView, PoolView};
use crate::{emit, Context};

pub async fn run(
    session: &mut Session,
    context: &Context,
    command: PoolCommand,
) -> Result<(), CliError> {
    match command {
        PoolCommand::Create {
            name,
            kind,
            first,
            last,
        } => {
            let pool = pool_from_flags(name, kind, &first, &last)?;
            let stored = create(session, pool).await?;
            emit(context, &PoolView::from(&stored))
        }
        PoolCommand::List => {
            let consistency = context.consistency as i32;
            let response = unary(
                session,
                CallKind::Read,
                pb::ListPoolsRequest { consistency },
                rpc!(PoolServiceClient::list_pools),
            )
            .await?;
            emit(
                context,
                &PoolListView {
                    pools: response.pools.iter().map(PoolView::from).collect(),
                    revision: response.revision,
                },
            )
        }
        PoolCommand::Usage { name } => {
            let message = pb::GetPoolUsageRequest {
                name: name.unwrap_or_default(),
                consistency: context.consistency as i32,
            };
            let response = unary(
                session,
                CallKind::Read,
                message,
                rpc!(PoolServiceClient::get_pool_usage),
            )
            .await?;
            emit(context, &PoolUsageListView::from(&response))
        }
        PoolCommand::Delete {
            name,
            expected_revision,
        } => {
            let revision = delete(session, &name, expected_revision).await?;
            emit(
                context,
                &DeletedView {
                    deleted: name,
                    revision,
                },
            )
        }
    }
}

/// Builds a pool from `pool create` flags, checking the bounds' syntax against the kind.
pub fn pool_from_flags(
    name: String,
    kind: PoolKindArg,
    first: &str,
    last: &str,
) -> Result<pb::Pool, CliError> {
    let parse = match kind {
        PoolKindArg::Mac => spec::parse_mac,
        PoolKindArg::Wwn => spec::parse_wwn,
    };
    let first = parse(first).map_err(|e| CliError::usage(format!("--first: {e}")))?;
    let last = parse(last).map_err(|e| CliError::usage(format!("--last: {e}")))?;
    // Same-length lower-case hex with colons orders like the numbers it spells.
    if last < first {
        return Err(CliError::usage(format!(
            "--last {last} is below --first {first}"
        )));
    }
    Ok(pb::Pool {
        name,
        kind: match kind {
            PoolKindArg::Mac => pb::PoolKind::Mac,
            PoolKindArg::Wwn => pb::PoolKind::Wwn,
        } as i32,
        first,
        last,
        revision: 0,
    })
}

pub async fn create(session: &mut Session, pool: pb::Pool) -> Result<pb::Pool, CliError> {
    let message = pb::CreatePoolRequest { pool: Some(pool) };
    let response = unary(
        session,
        CallKind::Write,
        message,
        rpc!(PoolServiceClient::create_pool),
    )
    .await?;
    Ok(response.pool.unwrap_or_default())
}

pub async fn delete(
    session: &mut Session,
    name: &str,
    expected_revision: u64,
) -> Result<u64, CliError> {
    let message = pb::DeletePoolRequest {
        name: name.to_string(),
        expected_revision,
    };
    let response = unary(
        session,
        CallKind::Write,
        message,
        rpc!(PoolServiceClient::delete_pool),
    )
    .await?;
    Ok(response.revision)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_flags_are_checked_against_the_kind() {
        let pool = pool_from_flags(
            "macs".into(),
            PoolKindArg::Mac,
            "02:00:00:00:00:00",
            "02:00:00:00:FF:FF",
        )
        .unwrap();
        assert_eq!(pool.last, "02:00:00:00:ff:ff");
        assert_eq!(pool.kind, pb::PoolKind::Mac as i32);

        let error = pool_from_flags(
            "wwns".into(),
            PoolKindArg::Wwn,
            "02:00:00:00:00:00",
            "20:00:00:25:b5:00:00:ff",
        )
        .unwrap_err();
        assert!(error.to_string().starts_with("--first:"), "{error}");
    }

    #[test]
    fn reversed_bounds_are_refused() {
        let error = pool_from_flags(
            "macs".into(),
            PoolKindArg::Mac,
            "02:00:00:00:01:00",
            "02:00:00:00:00:ff",
        )
        .unwrap_err();
        assert!(error.to_string().contains("is below --first"), "{error}");
        assert!(pool_from_flags(
            "m".into(),
            PoolKindArg::Mac,
            "02:00:00:00:00:01",
            "02:00:00:00:00:01"
        )
        .is_ok());
    }
}
