//! Concurrent writes share one log entry (ARCHITECTURE.md, "Batched writes").
//!
//! openraft writes each proposal as its own entry and fsyncs it before it looks at the next, so
//! on the leader every write costs one fsync, one after another. The batcher keeps at most
//! [`PROPOSALS_IN_FLIGHT`] proposals outstanding; writes that arrive meanwhile wait here and go
//! together as one `Command::Batch` entry, so each node fsyncs once for all of them. A write that
//! finds a free slot is proposed at once, alone, as the plain request it is: one client waits
//! for nothing extra.
//!
//! What a caller learns is exactly what it would have learnt from a proposal of its own: each
//! request of a batch is applied as if it were its own entry (its own revision, its own
//! refusal), and an error of the proposal (not leader, not committed in time) is every caller's
//! error, with the same meaning — one entry is appended or not, for all of them at once.

use std::sync::Arc;
use std::time::Duration;

use openraft::error::{ClientWriteError, RaftError};
use prometheus_client::metrics::histogram::Histogram;
use tokio::sync::{mpsc, oneshot, Semaphore};
use vnet_model::limits::{WRITE_BATCH_BYTES_MAX, WRITE_BATCH_REQUESTS_MAX};
use vnet_model::member::PROTOCOL_BATCH;
use vnet_model::{Accepted, Command, Rejection, Request};

use raft_store::{NodeId, PeerNode, Raft, Response, StateView};

use crate::error::ApiError;

/// Proposals the batcher keeps outstanding at once. One: while an entry is being fsynced,
/// replicated and applied, the next gathers every write that arrives. Measured with the
/// side-by-side benchmark (README, "Benchmarks"), two outstanding split the same writes into
/// smaller entries whose per-entry work (fsyncs, AppendEntries, wake-ups) cost more than the
/// overlap bought: 16 clients 1,929–2,245 writes/s with two, 2,679 with one; 64 clients
/// 4,660–5,159 with two, 5,686 with one.
pub const PROPOSALS_IN_FLIGHT: usize = 1;

/// Writes that may wait for a slot; a caller beyond them waits to enqueue (it already holds one
/// of the API's bounded connection slots, so this only orders them).
const QUEUE_MAX: usize = 4 * WRITE_BATCH_REQUESTS_MAX;

/// The actor of a batch entry itself; each request in it keeps its own.
const BATCH_ACTOR: &str = "vnetd/batch";

/// What one write came to: the model's answer, or why the proposal carrying it failed.
pub type Written = Result<Result<Accepted, Rejection>, ApiError>;

struct Pending {
    request: Request,
    /// The request's encoded size, measured once by the caller's entry-size check.
    bytes: usize,
    reply: oneshot::Sender<Written>,
}

/// A handle to the batching task; cheap to clone. The task ends when every handle is dropped.
#[derive(Clone)]
pub struct WriteBatcher<P: Propose = RaftProposer> {
    tx: mpsc::Sender<Pending>,
    shared: Arc<Shared<P>>,
}

/// What the task and the callers that propose directly share. Holds no sender, so the task
/// ends once the last handle is dropped.
struct Shared<P> {
    /// Proposals outstanding.
    slots: Semaphore,
    proposer: P,
    may_batch: Box<dyn Fn() -> bool + Send + Sync>,
}

impl WriteBatcher {
    /// Starts the task that proposes through `raft`, each proposal bounded by `timeout`.
    /// `view` tells whether every member applies batches yet.
    /// Each proposal's number of writes is observed in `sizes`.
    pub fn start(raft: Raft, view: StateView, timeout: Duration, sizes: Histogram) -> Self {
        let proposer = RaftProposer {
            raft: raft.clone(),
            timeout,
            sizes,
        };
        Self::start_with(proposer, move || every_member_applies_batches(&raft, &view))
    }
}

impl<P: Propose> WriteBatcher<P> {
    /// Starts the task with any proposer; `may_batch` is asked before each proposal.
    fn start_with(proposer: P, may_batch: impl Fn() -> bool + Send + Sync + 'static) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE_MAX);
        let shared = Arc::new(Shared {
            slots: Semaphore::new(PROPOSALS_IN_FLIGHT),
            proposer,
            may_batch: Box::new(may_batch),
        });
        tokio::spawn(run(rx, shared.clone()));
        Self { tx, shared }
    }

    /// Writes `request` (of `bytes` encoded bytes), alone or with others, and answers once the
    /// entry carrying it is applied here or the proposal failed.
    pub async fn write(&self, request: Request, bytes: usize) -> Written {
        // Nobody waiting and a slot free: propose it from here, sparing a lone write the trip
        // through the task. The semaphore is fair, so this never takes a slot the task waits
        // for.
        let shared = &self.shared;
        let direct = if !(shared.may_batch)() {
            Some(None)
        } else if self.tx.capacity() == QUEUE_MAX {
            shared.slots.try_acquire().ok().map(Some)
        } else {
            None
        };
        if let Some(slot) = direct {
            let proposed = shared.proposer.propose(request).await;
            drop(slot);
            return answers(1, proposed).pop().unwrap_or_else(|| {
                Err(ApiError::Internal {
                    reason: "a write was proposed and came back without an answer".to_string(),
                })
            });
        }
        let (reply, answer) = oneshot::channel();
        let pending = Pending {
            request,
            bytes,
            reply,
        };
        if self.tx.send(pending).await.is_err() {
            // Nothing was proposed: the task is gone with the node.
            return Err(ApiError::NotLeader { leader: None });
        }
        answer.await.unwrap_or_else(|_| {
            // The task ended with the request in hand; it may or may not have been proposed.
            Err(ApiError::Indeterminate {
                reason: "the node stopped while the write was in flight".to_string(),
            })
        })
    }
}

/// Whether every node of the Raft membership has registered a protocol that applies
/// `Command::Batch`. A node not yet registered counts as one that does not: it may be older.
fn every_member_applies_batches(raft: &Raft, view: &StateView) -> bool {
    let ids: Vec<NodeId> = raft
        .metrics()
        .borrow()
        .membership_config
        .membership()
        .nodes()
        .map(|(id, _)| *id)
        .collect();
    view.read(|applied| {
        ids.iter().all(|id| {
            applied
                .state
                .members()
                .any(|m| m.id == *id && m.protocol >= PROTOCOL_BATCH)
        })
    })
}

/// How the task proposes an entry; a trait so the batching can be tested without Raft.
pub trait Propose: Clone + Send + Sync + 'static {
    /// Proposes `request` and answers with one result per request it carries (one for a plain
    /// request, one per member of a `Batch`), or the proposal's error.
    fn propose(
        &self,
        request: Request,
    ) -> impl std::future::Future<Output = Result<Vec<Result<Accepted, Rejection>>, ApiError>> + Send;
}

/// Proposes through openraft.
#[derive(Clone)]
pub struct RaftProposer {
    raft: Raft,
    timeout: Duration,
    sizes: Histogram,
}

impl Propose for RaftProposer {
    async fn propose(
        &self,
        request: Request,
    ) -> Result<Vec<Result<Accepted, Rejection>>, ApiError> {
        let writes = match &request.command {
            Command::Batch(requests) => requests.len(),
            _ => 1,
        };
        self.sizes.observe(writes as f64);
        let written = tokio::time::timeout(self.timeout, self.raft.client_write(request)).await;
        match written {
            Err(_) => Err(ApiError::Indeterminate {
                reason: format!("not committed within {} ms", self.timeout.as_millis()),
            }),
            Ok(Err(e)) => Err(client_write_error(e)),
            Ok(Ok(response)) => match response.data {
                Response::Applied(result) => Ok(vec![result]),
                Response::Batch(results) => Ok(results),
                Response::Internal => Err(ApiError::Internal {
                    reason: "a client write produced no model outcome".to_string(),
                }),
            },
        }
    }
}

pub(super) fn client_write_error(
    e: RaftError<NodeId, ClientWriteError<NodeId, PeerNode>>,
) -> ApiError {
    match e {
        // ForwardToLeader means the entry was never appended here, or was truncated and can never
        // commit (openraft answers pending writes this way only on truncation): safe to retry.
        RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => ApiError::NotLeader {
            leader: f.leader_id,
        },
        RaftError::APIError(ClientWriteError::ChangeMembershipError(e)) => {
            ApiError::FailedPrecondition {
                reason: e.to_string(),
            }
        }
        RaftError::Fatal(e) => ApiError::Unavailable {
            reason: e.to_string(),
        },
    }
}

/// The batching loop: take the first waiting write, wait for a free slot (writes arriving
/// meanwhile queue behind it), then take every write already queued that fits, and propose.
/// Ends when the last handle is dropped.
async fn run<P: Propose>(mut rx: mpsc::Receiver<Pending>, shared: Arc<Shared<P>>) {
    let mut held_over: Option<Pending> = None;
    loop {
        let first = match held_over.take() {
            Some(pending) => pending,
            None => match rx.recv().await {
                Some(pending) => pending,
                None => return,
            },
        };
        if !(shared.may_batch)() {
            // A member may not apply batches: every write is its own entry, as before batching,
            // with no bound but the queue's.
            tokio::spawn(propose(shared.clone(), vec![first], false));
            continue;
        }
        let Ok(slot) = shared.slots.acquire().await else {
            return;
        };
        // The proposal task gives the slot back (`propose`).
        slot.forget();
        let mut bytes = first.bytes;
        let mut batch = vec![first];
        while batch.len() < WRITE_BATCH_REQUESTS_MAX {
            let Ok(next) = rx.try_recv() else { break };
            if bytes.saturating_add(next.bytes) > WRITE_BATCH_BYTES_MAX {
                held_over = Some(next);
                break;
            }
            bytes = bytes.saturating_add(next.bytes);
            batch.push(next);
        }
        tokio::spawn(propose(shared.clone(), batch, true));
    }
}

/// Proposes `batch` (alone if it is one write) and answers each of its callers; gives back the
/// slot it holds, if `holds_slot`.
async fn propose<P: Propose>(shared: Arc<Shared<P>>, batch: Vec<Pending>, holds_slot: bool) {
    let (mut requests, replies): (Vec<Request>, Vec<oneshot::Sender<Written>>) =
        batch.into_iter().map(|p| (p.request, p.reply)).unzip();
    let count = requests.len();
    let entry = if count == 1 {
        requests.swap_remove(0)
    } else {
        Request {
            actor: BATCH_ACTOR.to_string(),
            command: Command::Batch(requests),
            trace: None,
            on_behalf_of: None,
        }
    };
    let proposed = shared.proposer.propose(entry).await;
    if holds_slot {
        shared.slots.add_permits(1);
    }
    for (reply, written) in replies.into_iter().zip(answers(count, proposed)) {
        let _ = reply.send(written);
    }
}

/// What each of the `count` writes of a proposal learns from its outcome.
fn answers(
    count: usize,
    proposed: Result<Vec<Result<Accepted, Rejection>>, ApiError>,
) -> Vec<Written> {
    match proposed {
        Ok(results) if results.len() == count => results.into_iter().map(Ok).collect(),
        Ok(results) => {
            // The entry was committed, but its answers do not match its requests: say so to
            // every caller rather than guess which answer is whose.
            let reason = format!(
                "a batch of {count} writes was applied with {} results",
                results.len()
            );
            vec![Err(ApiError::Internal { reason }); count]
        }
        Err(e) => vec![Err(e); count],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use vnet_model::Outcome;

    /// Records every proposal and holds each until the test releases it.
    #[derive(Clone)]
    struct Fake {
        seen: Arc<Mutex<Vec<Request>>>,
        release: Arc<Semaphore>,
        fail: Option<ApiError>,
    }

    impl Fake {
        fn new(fail: Option<ApiError>) -> Self {
            Self {
                seen: Arc::default(),
                release: Arc::new(Semaphore::new(0)),
                fail,
            }
        }

        fn seen(&self) -> Vec<Request> {
            self.seen.lock().unwrap().clone()
        }

        /// Actors of each proposal, a batch's in order.
        fn shapes(&self) -> Vec<Vec<String>> {
            self.seen()
                .iter()
                .map(|r| match &r.command {
                    Command::Batch(requests) => requests.iter().map(|r| r.actor.clone()).collect(),
                    _ => vec![format!("plain {}", r.actor)],
                })
                .collect()
        }
    }

    impl Propose for Fake {
        async fn propose(
            &self,
            request: Request,
        ) -> Result<Vec<Result<Accepted, Rejection>>, ApiError> {
            let actors: Vec<String> = match &request.command {
                Command::Batch(requests) => requests.iter().map(|r| r.actor.clone()).collect(),
                _ => vec![request.actor.clone()],
            };
            self.seen.lock().unwrap().push(request);
            self.release.acquire().await.expect("open").forget();
            if let Some(e) = &self.fail {
                return Err(e.clone());
            }
            Ok(actors
                .into_iter()
                .enumerate()
                .map(|(i, actor)| {
                    Ok(Accepted {
                        revision: 100 + i as u64,
                        outcome: Outcome::PoolDeleted { name: actor },
                    })
                })
                .collect())
        }
    }

    fn write(actor: &str) -> Request {
        Request {
            actor: actor.to_string(),
            command: Command::DeletePool {
                name: "p".to_string(),
            },
            trace: None,
            on_behalf_of: None,
        }
    }

    async fn until(what: &str, mut done: impl FnMut() -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !done() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting: {what}"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    fn spawn_write(
        batcher: &WriteBatcher<Fake>,
        actor: &str,
        bytes: usize,
    ) -> tokio::task::JoinHandle<Written> {
        let batcher = batcher.clone();
        let request = write(actor);
        tokio::spawn(async move { batcher.write(request, bytes).await })
    }

    /// Writes one request at a time until every slot holds a proposal.
    async fn fill_every_slot(
        batcher: &WriteBatcher<Fake>,
        fake: &Fake,
    ) -> Vec<tokio::task::JoinHandle<Written>> {
        let mut busy = Vec::new();
        for i in 0..PROPOSALS_IN_FLIGHT {
            busy.push(spawn_write(batcher, &format!("busy-{i}"), 10));
            until("the write proposed", || fake.seen().len() == i + 1).await;
        }
        busy
    }

    /// Fills every slot, then starts `count` writes `w0..` that must wait: the loop holds the
    /// first (waiting for a slot) and the rest queue behind it.
    async fn queue_behind_busy_slots(
        batcher: &WriteBatcher<Fake>,
        fake: &Fake,
        count: usize,
    ) -> (
        Vec<tokio::task::JoinHandle<Written>>,
        Vec<tokio::task::JoinHandle<Written>>,
    ) {
        let busy = fill_every_slot(batcher, fake).await;
        let waiting: Vec<_> = (0..count)
            .map(|i| spawn_write(batcher, &format!("w{i}"), 10))
            .collect();
        until("the rest queued", || queued(batcher) == count - 1).await;
        (busy, waiting)
    }

    /// The answer of a write that must have been proposed and accepted.
    async fn accepted(handle: tokio::task::JoinHandle<Written>) -> Accepted {
        handle
            .await
            .expect("joined")
            .expect("proposed")
            .expect("ok")
    }

    /// Writes waiting in the queue, besides the one the loop holds.
    fn queued(batcher: &WriteBatcher<Fake>) -> usize {
        QUEUE_MAX - batcher.tx.capacity()
    }

    #[tokio::test]
    async fn a_lone_write_is_proposed_as_its_plain_request_and_gets_its_answer() {
        let fake = Fake::new(None);
        let batcher = WriteBatcher::start_with(fake.clone(), || true);
        fake.release.add_permits(1);
        let written = batcher.write(write("alice"), 10).await;
        assert_eq!(fake.shapes(), vec![vec!["plain alice".to_string()]]);
        let accepted = written.expect("proposed").expect("accepted");
        assert_eq!(accepted.revision, 100);
        assert_eq!(
            accepted.outcome,
            Outcome::PoolDeleted {
                name: "alice".to_string()
            }
        );
    }

    #[tokio::test]
    async fn writes_that_arrive_while_every_slot_is_busy_share_one_entry() {
        let fake = Fake::new(None);
        let batcher = WriteBatcher::start_with(fake.clone(), || true);
        let (busy, waiting) = queue_behind_busy_slots(&batcher, &fake, 5).await;
        fake.release.add_permits(1);
        until("the next proposal", || {
            fake.seen().len() == PROPOSALS_IN_FLIGHT + 1
        })
        .await;
        let shapes = fake.shapes();
        let mut batched = shapes[PROPOSALS_IN_FLIGHT].clone();
        batched.sort();
        assert_eq!(batched, vec!["w0", "w1", "w2", "w3", "w4"], "{shapes:?}");
        fake.release.add_permits(PROPOSALS_IN_FLIGHT);
        // Each caller gets the answer for its own request.
        for (i, handle) in waiting.into_iter().enumerate() {
            let accepted = accepted(handle).await;
            assert_eq!(
                accepted.outcome,
                Outcome::PoolDeleted {
                    name: format!("w{i}")
                }
            );
        }
        for handle in busy {
            accepted(handle).await;
        }
    }

    #[tokio::test]
    async fn a_batch_stops_at_its_byte_bound_and_the_rest_goes_next() {
        let fake = Fake::new(None);
        let batcher = WriteBatcher::start_with(fake.clone(), || true);
        let busy = fill_every_slot(&batcher, &fake).await;
        let half = WRITE_BATCH_BYTES_MAX / 2;
        let mut waiting = vec![spawn_write(&batcher, "big-0", half)];
        until("the loop holds big-0", || {
            queued(&batcher) == 0 && fake.seen().len() == PROPOSALS_IN_FLIGHT
        })
        .await;
        for i in 1..3 {
            waiting.push(spawn_write(&batcher, &format!("big-{i}"), half));
            until("queued", || queued(&batcher) == i).await;
        }
        fake.release.add_permits(PROPOSALS_IN_FLIGHT + 2);
        for handle in waiting {
            accepted(handle).await;
        }
        for handle in busy {
            accepted(handle).await;
        }
        let shapes = fake.shapes();
        assert_eq!(
            shapes[PROPOSALS_IN_FLIGHT..],
            [
                vec!["big-0".to_string(), "big-1".to_string()],
                vec!["plain big-2".to_string()]
            ],
            "{shapes:?}"
        );
    }

    #[tokio::test]
    async fn a_failed_proposal_fails_every_write_it_carried() {
        let fake = Fake::new(Some(ApiError::NotLeader { leader: Some(3) }));
        let batcher = WriteBatcher::start_with(fake.clone(), || true);
        let (busy, waiting) = queue_behind_busy_slots(&batcher, &fake, 3).await;
        fake.release.add_permits(PROPOSALS_IN_FLIGHT + 1);
        for handle in busy.into_iter().chain(waiting) {
            assert_eq!(
                handle.await.expect("joined"),
                Err(ApiError::NotLeader { leader: Some(3) })
            );
        }
        assert_eq!(fake.seen().len(), PROPOSALS_IN_FLIGHT + 1);
    }

    #[tokio::test]
    async fn the_task_ends_when_the_last_handle_is_dropped() {
        let batcher = WriteBatcher::start_with(Fake::new(None), || true);
        let shared = Arc::downgrade(&batcher.shared);
        drop(batcher);
        until("the task let go of its state", || {
            shared.upgrade().is_none()
        })
        .await;
    }

    #[tokio::test]
    async fn while_a_member_cannot_apply_batches_every_write_is_its_own_entry() {
        let fake = Fake::new(None);
        let batcher = WriteBatcher::start_with(fake.clone(), || false);
        let writes: Vec<_> = (0..6)
            .map(|i| spawn_write(&batcher, &format!("w{i}"), 10))
            .collect();
        // No slot bound either: all six are outstanding at once.
        until("six proposals", || fake.seen().len() == 6).await;
        assert!(fake
            .shapes()
            .iter()
            .all(|shape| shape.len() == 1 && shape[0].starts_with("plain ")));
        fake.release.add_permits(6);
        for handle in writes {
            accepted(handle).await;
        }
    }
}
