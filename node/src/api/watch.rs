//! `vnet.v1.WatchService`: every change, in revision order, from a given revision on.
//!
//! The history lives in the replicated state (a bounded ring of events, part of every snapshot),
//! so any node can serve a watch and a client can resume on another node after a failure. The
//! stream is fed from that history on every applied batch; nothing is pushed from the apply path,
//! so a slow client cannot slow applying. A client that falls so far behind that the history
//! has moved past it gets `OUT_OF_RANGE` and must re-read and watch again.
//!
//! Memory is bounded per watcher and per node (invariant 8): at most `watchers_max` streams, each
//! buffering at most `watch_buffer_events` events; a client that leaves its buffer full for
//! `watch_stall_timeout_ms` is cut off with `OUT_OF_RANGE` and the revision to resume from.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::Stream;
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, oneshot, watch, OwnedSemaphorePermit};
use tonic::{Request, Response, Status};
use vnet_model::HistoryTruncated;
use vnet_proto::vnet::v1 as pb;
use vnet_proto::vnet::v1::watch_service_server::WatchService;

use super::{Api, Caller};
use crate::connections::RateLimitedLog;
use crate::convert::event::to_wire;
use crate::shutdown::ShutdownSignal;

static WATCHERS_REFUSED: RateLimitedLog = RateLimitedLog::new();
static WATCHERS_CUT_OFF: RateLimitedLog = RateLimitedLog::new();

fn out_of_range(truncated: &HistoryTruncated, from: u64) -> Status {
    Status::out_of_range(format!(
        "from_revision {from} is older than the retained history; the oldest available revision \
         is {}",
        truncated.oldest_available
    ))
}

fn shutting_down() -> Status {
    Status::unavailable("the node is shutting down; watch another node from the last revision seen")
}

/// What a watcher needs to know about its limits.
#[derive(Clone, Copy)]
struct Bounds {
    buffer_events: usize,
    stall: Duration,
}

pub type WatchStream = Pin<Box<dyn Stream<Item = Result<pb::WatchEvent, Status>> + Send>>;

impl Api {
    async fn watch_as(
        &self,
        _caller: Caller,
        request: Request<pb::WatchRequest>,
    ) -> Result<Response<WatchStream>, Status> {
        let limits = &self.node.config().limits;
        // The slot is held by the stream the server sends from, so a stream that was cut off but
        // whose client has not yet read its buffered events still counts (and so does its memory).
        let slot = self.watchers.clone().try_acquire_owned().map_err(|_| {
            if let Some(skipped) = WATCHERS_REFUSED.due() {
                tracing::warn!(
                    refused_before = skipped,
                    "refused a watch: watchers_max ({}) watchers are open",
                    limits.watchers_max
                );
            }
            Status::resource_exhausted(format!(
                "this node already serves watchers_max ({}) watch streams; watch another node or \
                 retry later",
                limits.watchers_max
            ))
        })?;
        let bounds = Bounds {
            buffer_events: limits.watch_buffer_events,
            stall: Duration::from_millis(limits.watch_stall_timeout_ms),
        };
        let from = request.into_inner().from_revision;
        let view = self.node.view().clone();
        let mut progress = view.subscribe();
        let next = match from {
            0 => progress.borrow_and_update().revision + 1,
            from => from,
        };
        // Refuse a start that is already gone as the RPC's own error, before the stream opens.
        view.read(|applied| applied.state.events_since(next).map(|_| ()))
            .map_err(|t| out_of_range(&t, next))?;
        let (tx, rx) = mpsc::channel(bounds.buffer_events);
        let (end_tx, end_rx) = oneshot::channel::<Status>();
        let stopping = self.stopping.clone();
        tokio::spawn({
            let view = view.clone();
            async move {
                if let Some(end) = feed(view, progress, next, tx, stopping, bounds).await {
                    let _ = end_tx.send(end);
                }
            }
        });
        Ok(Response::new(Box::pin(Events {
            revisions: rx,
            end: Some(end_rx),
            view,
            just_sent: false,
            _slot: slot,
        })))
    }
}

#[tonic::async_trait]
impl WatchService for Api {
    type WatchStream = WatchStream;
    async fn watch(
        &self,
        request: Request<pb::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        self.guarded(
            request,
            |_| String::new(),
            |caller, request| self.watch_as(caller, request),
        )
        .await
    }
}

/// The stream a watcher's client reads. Its buffer holds revisions only; each event is read from
/// the shared history and converted when the server is ready to send it, so a watcher that
/// does not read costs a few bytes per buffered event, not a converted event.
struct Events {
    revisions: mpsc::Receiver<u64>,
    /// The status the feeder ended with, sent after the last buffered event.
    end: Option<oneshot::Receiver<Status>>,
    view: raft_store::StateView,
    /// Set after each event: the next poll yields once, so that the server sends every event as
    /// its own message instead of gathering up to tonic's 32 KiB per write, which a client that
    /// does not read would leave in this process's memory.
    just_sent: bool,
    _slot: OwnedSemaphorePermit,
}

impl Stream for Events {
    type Item = Result<pb::WatchEvent, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.end.is_none() {
            return Poll::Ready(None);
        }
        if self.just_sent {
            self.just_sent = false;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        match self.revisions.poll_recv(cx) {
            Poll::Ready(Some(revision)) => {
                let event = self.view.read(|applied| {
                    applied
                        .state
                        .events_since(revision)
                        .map(|mut events| events.next().cloned())
                });
                match event {
                    Ok(Some(event)) => {
                        self.just_sent = true;
                        Poll::Ready(Some(Ok(to_wire(&event))))
                    }
                    // The history moved past a buffered revision: the client is too far behind.
                    Err(truncated) => {
                        self.end = None;
                        Poll::Ready(Some(Err(out_of_range(&truncated, revision))))
                    }
                    Ok(None) => {
                        self.end = None;
                        Poll::Ready(Some(Err(Status::internal(format!(
                            "revision {revision} was buffered for this watcher but is not in the \
                             history; watch again from it"
                        )))))
                    }
                }
            }
            Poll::Ready(None) => {
                let end = self.end.as_mut().expect("checked above");
                match Pin::new(end).poll(cx) {
                    Poll::Pending => Poll::Pending,
                    Poll::Ready(status) => {
                        self.end = None;
                        Poll::Ready(status.ok().map(Err))
                    }
                }
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

/// Feeds a watcher's buffer from the history after every applied batch, never blocking the apply
/// path: at most `buffer_events` revisions wait for the client. When the buffer stays full for
/// the stall timeout while another event waits, the watcher is cut off with `OUT_OF_RANGE`
/// naming the revision to resume from: the client receives every buffered event first, so that
/// revision is exactly the one after the last it saw. Returns the status to end the stream
/// with, or `None` when the client left.
async fn feed(
    view: raft_store::StateView,
    mut progress: watch::Receiver<raft_store::Progress>,
    mut next: u64,
    tx: mpsc::Sender<u64>,
    stopping: ShutdownSignal,
    bounds: Bounds,
) -> Option<Status> {
    loop {
        let room = tx.capacity().max(1);
        let batch: Result<Vec<u64>, HistoryTruncated> = view.read(|applied| {
            applied
                .state
                .events_since(next)
                .map(|events| events.take(room).map(|e| e.revision).collect())
        });
        let revisions = match batch {
            Err(truncated) => return Some(out_of_range(&truncated, next)),
            Ok(revisions) => revisions,
        };
        if revisions.is_empty() {
            tokio::select! {
                changed = progress.changed() => if changed.is_err() { return None },
                () = tx.closed() => return None,
                () = stopping.triggered() => return Some(shutting_down()),
            }
            continue;
        }
        for revision in revisions {
            let permit = match tx.try_reserve() {
                Ok(permit) => permit,
                Err(TrySendError::Closed(())) => return None,
                Err(TrySendError::Full(())) => tokio::select! {
                    reserved = tx.reserve() => match reserved {
                        Ok(permit) => permit,
                        Err(_) => return None,
                    },
                    () = tokio::time::sleep(bounds.stall) => {
                        if let Some(skipped) = WATCHERS_CUT_OFF.due() {
                            tracing::info!(
                                resume_from = next,
                                cut_off_before = skipped,
                                "cut off a watcher whose buffer stayed full for \
                                 watch_stall_timeout_ms ({} ms)",
                                bounds.stall.as_millis()
                            );
                        }
                        return Some(Status::out_of_range(format!(
                            "this watcher read too slowly: its buffer of watch_buffer_events \
                             ({}) events stayed full for watch_stall_timeout_ms ({} ms); watch \
                             again with from_revision {next}",
                            bounds.buffer_events,
                            bounds.stall.as_millis()
                        )));
                    }
                    () = stopping.triggered() => return Some(shutting_down()),
                },
            };
            next = revision + 1;
            permit.send(revision);
        }
    }
}
