//! `status`, `member ...` and `leader ...`.

use vnet_proto::vnet::v1 as pb;
use vnet_proto::vnet::v1::cluster_service_client::ClusterServiceClient;

use crate::cli::{AlarmCommand, LeaderCommand, MemberAddArgs, MemberCommand, RoleArg};
use crate::error::CliError;
use crate::output::MemberListView;
use crate::retry::CallKind;
use crate::session::{rpc, unary, Session};
use crate::spec;
use crate::view::{
    AlarmListView, AlarmView, LeaderView, MemberChangeView, MemberRemovedView, MemberView,
    StatusView,
};
use crate::{emit, Context};

pub async fn fetch_status(
    session: &mut Session,
    consistency: pb::ReadConsistency,
) -> Result<pb::GetClusterStatusResponse, CliError> {
    let message = pb::GetClusterStatusRequest {
        consistency: consistency as i32,
    };
    unary(
        session,
        CallKind::Read,
        message,
        rpc!(ClusterServiceClient::get_cluster_status),
    )
    .await
}

pub async fn status(session: &mut Session, context: &Context) -> Result<(), CliError> {
    let status = fetch_status(session, context.consistency).await?;
    emit(context, &StatusView::from(&status))
}

pub async fn member(
    session: &mut Session,
    context: &Context,
    command: MemberCommand,
) -> Result<(), CliError> {
    match command {
        MemberCommand::List => {
            let status = fetch_status(session, context.consistency).await?;
            emit(
                context,
                &MemberListView {
                    members: status.members.iter().map(MemberView::from).collect(),
                    revision: status.revision,
                },
            )
        }
        MemberCommand::Add(args) => {
            let message = add_member_request(args)?;
            let response = unary(
                session,
                CallKind::Write,
                message,
                rpc!(ClusterServiceClient::add_member),
            )
            .await?;
            emit(
                context,
                &MemberChangeView {
                    member: response.member.as_ref().map(MemberView::from),
                    revision: response.revision,
                },
            )
        }
        MemberCommand::Promote { id } => {
            let response = unary(
                session,
                CallKind::Write,
                pb::PromoteMemberRequest { id },
                rpc!(ClusterServiceClient::promote_member),
            )
            .await?;
            emit(
                context,
                &MemberChangeView {
                    member: response.member.as_ref().map(MemberView::from),
                    revision: response.revision,
                },
            )
        }
        MemberCommand::Remove { id } => {
            let response = unary(
                session,
                CallKind::Write,
                pb::RemoveMemberRequest { id },
                rpc!(ClusterServiceClient::remove_member),
            )
            .await?;
            emit(
                context,
                &MemberRemovedView {
                    removed: id,
                    revision: response.revision,
                },
            )
        }
    }
}

fn add_member_request(args: MemberAddArgs) -> Result<pb::AddMemberRequest, CliError> {
    spec::parse_endpoints(&args.peer_addr)
        .and_then(|list| match list.0.len() {
            1 => Ok(()),
            _ => Err("give exactly one host:port".into()),
        })
        .map_err(|e| CliError::usage(format!("--peer-addr: {e}")))?;
    // The server requires it: a member without an advertised API cannot be reached by clients.
    if args.api_addr.is_empty() {
        return Err(CliError::usage("--api-addr: is required"));
    }
    spec::parse_endpoints(&args.api_addr)
        .and_then(|list| match list.0.len() {
            1 => Ok(()),
            _ => Err("give exactly one host:port".into()),
        })
        .map_err(|e| CliError::usage(format!("--api-addr: {e}")))?;
    Ok(pb::AddMemberRequest {
        id: args.id,
        name: args.name,
        peer_addr: args.peer_addr,
        api_addr: args.api_addr,
        role: match args.role {
            RoleArg::Unit => pb::MemberRole::Unit,
            RoleArg::Witness => pb::MemberRole::Witness,
        } as i32,
    })
}

pub async fn alarm(
    session: &mut Session,
    context: &Context,
    command: AlarmCommand,
) -> Result<(), CliError> {
    match command {
        AlarmCommand::List => {
            let consistency = context.consistency;
            let response = unary(
                session,
                CallKind::Read,
                pb::ListAlarmsRequest {
                    consistency: consistency as i32,
                },
                rpc!(ClusterServiceClient::list_alarms),
            )
            .await?;
            emit(
                context,
                &AlarmListView {
                    alarms: response.alarms.iter().map(AlarmView::from).collect(),
                    revision: response.revision,
                    disarmed: false,
                },
            )
        }
        AlarmCommand::Disarm { member } => {
            let message = pb::DisarmAlarmRequest {
                member: member.unwrap_or_default(),
                kind: pb::AlarmKind::Unspecified as i32,
            };
            let response = unary(
                session,
                CallKind::Write,
                message,
                rpc!(ClusterServiceClient::disarm_alarm),
            )
            .await?;
            emit(
                context,
                &AlarmListView {
                    alarms: response.disarmed.iter().map(AlarmView::from).collect(),
                    revision: response.revision,
                    disarmed: true,
                },
            )
        }
    }
}

pub async fn leader(
    session: &mut Session,
    context: &Context,
    command: LeaderCommand,
) -> Result<(), CliError> {
    let LeaderCommand::Transfer { to } = command;
    if to == 0 {
        return Err(CliError::usage("--to: 0 is not a valid member id"));
    }
    let response = unary(
        session,
        CallKind::Write,
        pb::TransferLeaderRequest { to_id: to },
        rpc!(ClusterServiceClient::transfer_leader),
    )
    .await?;
    emit(
        context,
        &LeaderView {
            leader_id: response.leader_id,
            term: response.term,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(id: u64, name: &str, peer: &str, api: &str) -> MemberAddArgs {
        MemberAddArgs {
            id,
            name: name.into(),
            peer_addr: peer.into(),
            api_addr: api.into(),
            role: RoleArg::Witness,
        }
    }

    #[test]
    fn add_member_request_carries_every_field() {
        let message = add_member_request(args(4, "w2", "10.0.0.9:7101", "10.0.0.9:7001")).unwrap();
        assert_eq!(
            message,
            pb::AddMemberRequest {
                id: 4,
                name: "w2".into(),
                peer_addr: "10.0.0.9:7101".into(),
                api_addr: "10.0.0.9:7001".into(),
                role: pb::MemberRole::Witness as i32,
            }
        );
    }

    #[test]
    fn add_member_rejects_bad_fields_by_flag_name() {
        for (bad, needle) in [
            (args(4, "w", "h", "h:2"), "--peer-addr"),
            (args(4, "w", "h:1,h:2", "h:2"), "--peer-addr"),
            (args(4, "w", "h:1", "nope"), "--api-addr"),
            (args(4, "w", "h:1", ""), "--api-addr"),
        ] {
            let error = add_member_request(bad).unwrap_err();
            assert_eq!(error.exit_code(), crate::error::EXIT_USAGE);
            assert!(error.to_string().starts_with(needle), "{error}");
        }
        // The id and the name are the server's to judge (it names the field): sent as given.
        let sent = add_member_request(args(0, "W 2", "h:1", "h:2")).unwrap();
        assert_eq!((sent.id, sent.name.as_str()), (0, "W 2"));
    }
}
