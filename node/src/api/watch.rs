//! `vnet.v1.WatchService`: every change, in revision order, from a given revision on.
//!
//! The history lives in the replicated state (a bounded ring of events, part of every snapshot),
//! so any node can serve a watch and a client can resume on another node after a failure. The
//! stream is fed from that history on every applied batch; nothing is pushed from the apply path,
//! so a slow client cannot slow applying. A client that falls so far behind that the history
//! has moved past it gets `OUT_OF_RANGE` and must re-read and watch again.

use std::pin::Pin;

use futures::Stream;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use vnet_model::{Event, HistoryTruncated};
use vnet_proto::vnet::v1 as pb;
use vnet_proto::vnet::v1::watch_service_server::WatchService;

use super::Api;
use crate::convert::event::to_wire;

/// Events buffered per watcher before the sender waits for the client.
pub const WATCH_BUFFER_EVENTS: usize = 256;

fn out_of_range(truncated: &HistoryTruncated, from: u64) -> Status {
    Status::out_of_range(format!(
        "from_revision {from} is older than the retained history; the oldest available revision \
         is {}",
        truncated.oldest_available
    ))
}

#[tonic::async_trait]
impl WatchService for Api {
    type WatchStream = Pin<Box<dyn Stream<Item = Result<pb::WatchEvent, Status>> + Send>>;

    async fn watch(
        &self,
        request: Request<pb::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let from = request.into_inner().from_revision;
        let view = self.node.view().clone();
        let mut progress = view.subscribe();
        let mut next = match from {
            0 => progress.borrow_and_update().revision + 1,
            from => from,
        };
        // Refuse a start that is already gone as the RPC's own error, before the stream opens.
        view.read(|applied| applied.state.events_since(next).map(|_| ()))
            .map_err(|t| out_of_range(&t, next))?;
        let (tx, rx) = mpsc::channel(WATCH_BUFFER_EVENTS);
        let mut stopping = self.stopping.clone();
        tokio::spawn(async move {
            loop {
                let batch: Result<Vec<Event>, HistoryTruncated> = view.read(|applied| {
                    applied
                        .state
                        .events_since(next)
                        .map(|events| events.take(WATCH_BUFFER_EVENTS).cloned().collect())
                });
                match batch {
                    Err(truncated) => {
                        let _ = tx.send(Err(out_of_range(&truncated, next))).await;
                        return;
                    }
                    Ok(events) if events.is_empty() => {
                        tokio::select! {
                            changed = progress.changed() => if changed.is_err() { return },
                            () = tx.closed() => return,
                            () = async { let _ = stopping.wait_for(|stop| *stop).await; } => {
                                let _ = tx.send(Err(Status::unavailable("the node is shutting down; watch another node from the last revision seen"))).await;
                                return;
                            }
                        }
                    }
                    Ok(events) => {
                        for event in events {
                            next = event.revision + 1;
                            if tx.send(Ok(to_wire(&event))).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}
