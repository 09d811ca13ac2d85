//! `watch`: follow the change stream, resuming on another endpoint if the serving node goes.

use std::time::Duration;

use futures::StreamExt;
use vnet_proto::vnet::v1 as pb;
use vnet_proto::vnet::v1::watch_service_client::WatchServiceClient;

use crate::cli::WatchArgs;
use crate::error::CliError;
use crate::output::{json_line, Format};
use crate::retry::{is_transport_error, CallKind};
use crate::session::Session;
use crate::view::WatchEventView;
use crate::{cluster, write_stdout, Context};

/// Consecutive failed reconnects after which `watch` gives up. The counter resets on every
/// event received, so a long-lived watch survives any number of spaced-out failovers.
const WATCH_RECONNECTS_MAX: u32 = 10;
const WATCH_RECONNECT_DELAY_MIN: Duration = Duration::from_millis(100);
const WATCH_RECONNECT_DELAY_MAX: Duration = Duration::from_secs(2);

pub async fn run(
    session: &mut Session,
    context: &Context,
    args: WatchArgs,
) -> Result<(), CliError> {
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    tokio::select! {
        result = follow(session, context, args) => result,
        _ = &mut ctrl_c => Ok(()),
    }
}

async fn follow(session: &mut Session, context: &Context, args: WatchArgs) -> Result<(), CliError> {
    // Resuming after a reconnect needs a definite revision. "From now on" (0) is turned into
    // one by reading the current revision first; the stream then starts right after it.
    let mut next_revision = match args.from_revision {
        0 => cluster::fetch_status(session, pb::ReadConsistency::Linearizable)
            .await?
            .revision
            .saturating_add(1),
        from => from,
    };
    let mut failures = 0u32;
    let mut delay = WATCH_RECONNECT_DELAY_MIN;
    loop {
        let from_revision = next_revision;
        let opened = session
            .call(CallKind::Read, |channel| async move {
                WatchServiceClient::new(channel)
                    .watch(pb::WatchRequest { from_revision })
                    .await
                    .map(|response| response.into_inner())
            })
            .await;
        let mut stream = match opened {
            Ok(stream) => stream,
            Err(error @ CliError::Rejected { .. }) if !is_transient(&error) => return Err(error),
            Err(error) => {
                failures += 1;
                if failures >= WATCH_RECONNECTS_MAX {
                    return Err(error);
                }
                eprintln!("watch: {error}; retrying in {delay:?}");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(WATCH_RECONNECT_DELAY_MAX);
                continue;
            }
        };
        let ended = loop {
            match stream.next().await {
                Some(Ok(event)) => {
                    failures = 0;
                    delay = WATCH_RECONNECT_DELAY_MIN;
                    next_revision = next_revision.max(event.revision.saturating_add(1));
                    let view = WatchEventView::from(&event);
                    let line = match context.format {
                        Format::Table => view.line(),
                        Format::Json => json_line(&view),
                    };
                    write_stdout(&format!("{line}\n"))?;
                }
                Some(Err(status)) => break Some(status),
                None => break None,
            }
        };
        match ended {
            Some(status)
                if status.code() != tonic::Code::Unavailable && !is_transport_error(&status) =>
            {
                return Err(CliError::Rejected {
                    code: status.code(),
                    message: status.message().to_string(),
                    endpoint: session.current_endpoint().to_string(),
                });
            }
            Some(status) => eprintln!(
                "watch: stream from {} broke ({}); resuming at revision {next_revision}",
                session.current_endpoint(),
                status.message()
            ),
            None => eprintln!(
                "watch: {} closed the stream; resuming at revision {next_revision}",
                session.current_endpoint()
            ),
        }
        // The node that served us may be going down: start the search at the next endpoint.
        session.skip_current();
    }
}

fn is_transient(error: &CliError) -> bool {
    matches!(error, CliError::Rejected { code, .. } if *code == tonic::Code::Unavailable)
}
