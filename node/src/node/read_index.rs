//! Read-index batching: one quorum confirmation shared by every linearizable read that was
//! waiting when it started (the ReadIndex batching of the Raft thesis, section 6.4, as etcd does
//! it).
//!
//! A leader answers a read index only after a quorum has confirmed its leadership, which costs a
//! round of heartbeats. [`ReadIndexBatcher`] runs at most one such round at a time, in its own
//! task: a caller that asks while a round is in flight waits for the next one, which starts as
//! soon as the current one ends and serves every caller queued by then. A caller with nothing in
//! flight starts a round at once.
//!
//! Why a shared answer is still linearizable (ARCHITECTURE.md, "Requests and retries"): every
//! caller served by a round was taken off the queue before the round's confirmation began, so
//! the round started after the caller's read did. The leadership the round confirms, and the
//! index it returns, are therefore at least as new as the caller's arrival: every write
//! acknowledged before the read began is at or below that index. A caller that arrives after a
//! round has started is never given that round's answer, which might predate its arrival (a
//! leader deposed in between could still have had its old leadership confirmed); it waits for
//! the next round.

use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use openraft::error::{CheckIsLeaderError, RaftError};
use prometheus_client::metrics::counter::Counter;
use raft_store::Raft;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use crate::error::ApiError;

/// How many callers may wait for the next confirmation round on one node. Past it a read is
/// refused with `UNAVAILABLE`; one round serves at most this many callers, so at most twice this
/// many wait in all.
pub const READ_INDEX_WAITERS_MAX: usize = 16_384;

type Answer<T> = Result<T, ApiError>;

/// What a round's readers count into: rounds run and reads they answered.
#[derive(Clone, Default)]
pub struct RoundCounters {
    pub rounds: Counter,
    pub reads: Counter,
}

/// Shares one confirmation round among concurrent callers; see the module doc.
pub struct ReadIndexBatcher<T> {
    queue: mpsc::Sender<oneshot::Sender<Answer<T>>>,
    waiters_max: usize,
    stop: watch::Sender<bool>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl<T: Clone + Send + 'static> ReadIndexBatcher<T> {
    /// Starts the task that runs rounds. `confirm` is one round: it confirms leadership with a
    /// quorum and answers the read index. A round that takes longer than `round_timeout` answers
    /// every one of its callers `Unavailable`.
    pub fn spawn<F, Fut>(
        confirm: F,
        round_timeout: Duration,
        waiters_max: usize,
        counters: RoundCounters,
    ) -> Self
    where
        F: FnMut() -> Fut + Send + 'static,
        Fut: Future<Output = Answer<T>> + Send + 'static,
    {
        let waiters_max = waiters_max.max(1);
        let (queue, waiting) = mpsc::channel(waiters_max);
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(run_rounds(
            confirm,
            round_timeout,
            waiting,
            waiters_max,
            stopped,
            counters,
        ));
        Self {
            queue,
            waiters_max,
            stop,
            task: Mutex::new(Some(task)),
        }
    }

    /// The answer of the first round that starts after this call.
    pub async fn read_index(&self) -> Answer<T> {
        let (answer, answered) = oneshot::channel();
        match self.queue.try_send(answer) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                return Err(ApiError::Unavailable {
                    reason: format!(
                        "{} linearizable reads are already waiting for this leader to confirm \
                         its leadership (READ_INDEX_WAITERS_MAX); retry shortly",
                        self.waiters_max
                    ),
                })
            }
            Err(mpsc::error::TrySendError::Closed(_)) => return Err(shutting_down()),
        }
        // Each round is bounded by its timeout, so this waits at most for the round in flight
        // and the next one.
        answered.await.unwrap_or_else(|_| Err(shutting_down()))
    }

    /// Callers queued for the next round.
    #[cfg(test)]
    fn waiting(&self) -> usize {
        self.queue.max_capacity() - self.queue.capacity()
    }

    /// Ends the task: the round in flight is abandoned and it and every queued caller are
    /// answered `Unavailable`; later callers are refused. Returns once the task has ended.
    pub async fn shutdown(&self) {
        self.stop.send_replace(true);
        let task = self
            .task
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take();
        if let Some(task) = task {
            if let Err(e) = task.await {
                tracing::warn!(error = %e, "the read index task failed");
            }
        }
    }
}

/// One round for a leader: confirms its leadership with a quorum and answers the read index.
/// `get_read_log_id` sends heartbeats and waits for a quorum before answering, so a deposed
/// leader cannot hand out a stale read index.
pub async fn confirm_leadership(raft: Raft) -> Answer<u64> {
    match raft.get_read_log_id().await {
        Ok((read_log_id, _)) => {
            // openraft's read log id is max(its commit index, its first entry of the term). A
            // leader that restarts and resumes its term from a committed vote knows a commit
            // index older than what it had committed (and acknowledged) before the crash, so
            // that bound can be stale. Every acknowledged write is in this leader's log
            // (leadership was just confirmed), so its last log index is a bound that cannot be:
            // a reader waits for those entries too.
            let last_log_index = raft.metrics().borrow().last_log_index.unwrap_or(0);
            Ok(read_log_id.map_or(0, |id| id.index).max(last_log_index))
        }
        Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f))) => {
            Err(ApiError::NotLeader {
                leader: f.leader_id,
            })
        }
        Err(RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(e))) => {
            Err(ApiError::Unavailable {
                reason: e.to_string(),
            })
        }
        Err(RaftError::Fatal(e)) => Err(ApiError::Unavailable {
            reason: e.to_string(),
        }),
    }
}

fn shutting_down() -> ApiError {
    ApiError::Unavailable {
        reason: "this node is shutting down".to_string(),
    }
}

async fn run_rounds<T, F, Fut>(
    mut confirm: F,
    round_timeout: Duration,
    mut waiting: mpsc::Receiver<oneshot::Sender<Answer<T>>>,
    waiters_max: usize,
    mut stopped: watch::Receiver<bool>,
    counters: RoundCounters,
) where
    T: Clone,
    F: FnMut() -> Fut,
    Fut: Future<Output = Answer<T>>,
{
    let mut round = Vec::new();
    loop {
        // Stopped by `shutdown`, or by the batcher being dropped (the watch closes). Dropping
        // `waiting` and `round` on the way out drops every waiting caller's sender: they are
        // answered "shutting down".
        let first = tokio::select! {
            biased;
            _ = stopped.wait_for(|stop| *stop) => return,
            first = waiting.recv() => match first {
                Some(first) => first,
                None => return,
            },
        };
        round.clear();
        round.push(first);
        // Everyone queued now is served by this round, and nobody queued after: the drain ends
        // before the confirmation begins (the module doc's linearizability argument). Callers
        // keep arriving while this drains; it takes at most the bound, and the rest wait.
        while round.len() < waiters_max {
            match waiting.try_recv() {
                Ok(next) => round.push(next),
                Err(_) => break,
            }
        }
        // Callers that gave up (their request was cancelled) need no answer.
        round.retain(|caller| !caller.is_closed());
        if round.is_empty() {
            continue;
        }
        let answer = tokio::select! {
            biased;
            _ = stopped.wait_for(|stop| *stop) => return,
            answer = tokio::time::timeout(round_timeout, confirm()) => match answer {
                Ok(answer) => answer,
                Err(_) => Err(ApiError::Unavailable {
                    reason: format!(
                        "could not confirm leadership with a quorum within {} ms",
                        round_timeout.as_millis()
                    ),
                }),
            },
        };
        counters.rounds.inc();
        counters.reads.inc_by(round.len() as u64);
        for caller in round.drain(..) {
            let _ = caller.send(answer.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    const TIMEOUT: Duration = Duration::from_secs(5);

    /// A confirmation function whose rounds the test starts and ends by hand: each round announces
    /// its number on `started` and answers whatever the test sends on its release channel.
    struct Gate {
        started: mpsc::UnboundedReceiver<(usize, oneshot::Sender<Answer<usize>>)>,
        calls: Arc<AtomicUsize>,
    }

    fn gated(
        waiters_max: usize,
        round_timeout: Duration,
    ) -> (Arc<ReadIndexBatcher<usize>>, Gate, RoundCounters) {
        let (announce, started) = mpsc::unbounded_channel();
        let calls = Arc::new(AtomicUsize::new(0));
        let counting = calls.clone();
        let counters = RoundCounters::default();
        let batcher = ReadIndexBatcher::spawn(
            move || {
                let number = counting.fetch_add(1, Ordering::SeqCst) + 1;
                let (release, released) = oneshot::channel();
                let _ = announce.send((number, release));
                async move {
                    released.await.unwrap_or_else(|_| {
                        Err(ApiError::Internal {
                            reason: "the test dropped the round".into(),
                        })
                    })
                }
            },
            round_timeout,
            waiters_max,
            counters.clone(),
        );
        (Arc::new(batcher), Gate { started, calls }, counters)
    }

    impl Gate {
        async fn next_round(&mut self) -> (usize, oneshot::Sender<Answer<usize>>) {
            tokio::time::timeout(TIMEOUT, self.started.recv())
                .await
                .expect("a round starts")
                .expect("the batcher is running")
        }
    }

    fn read(batcher: &Arc<ReadIndexBatcher<usize>>) -> JoinHandle<Answer<usize>> {
        let batcher = batcher.clone();
        tokio::spawn(async move { batcher.read_index().await })
    }

    async fn until_waiting(batcher: &ReadIndexBatcher<usize>, n: usize) {
        let deadline = tokio::time::Instant::now() + TIMEOUT;
        while batcher.waiting() < n {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{n} callers never queued ({} did)",
                batcher.waiting()
            );
            tokio::task::yield_now().await;
        }
    }

    /// Starts one round (its first caller, its number and its release) and queues `count` more
    /// callers behind it, waiting until all of them are queued.
    async fn queue_behind_a_round(
        batcher: &Arc<ReadIndexBatcher<usize>>,
        gate: &mut Gate,
        count: usize,
    ) -> (
        JoinHandle<Answer<usize>>,
        (usize, oneshot::Sender<Answer<usize>>),
        Vec<JoinHandle<Answer<usize>>>,
    ) {
        let first = read(batcher);
        let round = gate.next_round().await;
        let queued: Vec<_> = (0..count).map(|_| read(batcher)).collect();
        until_waiting(batcher, count).await;
        (first, round, queued)
    }

    async fn answer(task: JoinHandle<Answer<usize>>) -> Answer<usize> {
        tokio::time::timeout(TIMEOUT, task)
            .await
            .expect("the caller is answered")
            .expect("the caller's task")
    }

    #[tokio::test]
    async fn a_lone_caller_starts_a_round_at_once() {
        let (batcher, mut gate, counters) = gated(8, TIMEOUT);
        let reader = read(&batcher);
        let (number, release) = gate.next_round().await;
        release.send(Ok(number * 10)).unwrap();
        assert_eq!(answer(reader).await, Ok(10));
        assert_eq!(counters.rounds.get(), 1);
        assert_eq!(counters.reads.get(), 1);
        batcher.shutdown().await;
    }

    #[tokio::test]
    async fn callers_queued_behind_a_round_share_the_next_one() {
        const READERS: usize = 64;
        let (batcher, mut gate, counters) = gated(READERS, TIMEOUT);
        let (first, (one, release_one), readers) =
            queue_behind_a_round(&batcher, &mut gate, READERS).await;
        release_one.send(Ok(one)).unwrap();
        let (two, release_two) = gate.next_round().await;
        release_two.send(Ok(two)).unwrap();
        assert_eq!(answer(first).await, Ok(1));
        for reader in readers {
            assert_eq!(answer(reader).await, Ok(2));
        }
        assert_eq!(gate.calls.load(Ordering::SeqCst), 2, "one round for all 64");
        assert_eq!(counters.rounds.get(), 2);
        assert_eq!(counters.reads.get(), 1 + READERS as u64);
        batcher.shutdown().await;
    }

    /// The linearizability property: an answer is never older than the caller's arrival.
    #[tokio::test]
    async fn a_caller_arriving_during_a_round_never_gets_that_rounds_answer() {
        let (batcher, mut gate, _) = gated(8, TIMEOUT);
        let mut reader = read(&batcher);
        let (mut number, mut release) = gate.next_round().await;
        for _ in 0..4 {
            // Arrives while round `number` is in flight.
            let mut late = read(&batcher);
            until_waiting(&batcher, 1).await;
            release.send(Ok(number)).unwrap();
            assert_eq!(answer(reader).await, Ok(number));
            // The late caller may be answered only by a round that has not started yet.
            let (next, next_release) = tokio::select! {
                next = gate.next_round() => next,
                got = &mut late => panic!(
                    "a caller that arrived during round {number} was answered {got:?} before \
                     another round started"
                ),
            };
            assert_eq!(next, number + 1);
            (reader, number, release) = (late, next, next_release);
        }
        release.send(Ok(number)).unwrap();
        assert_eq!(answer(reader).await, Ok(number));
        batcher.shutdown().await;
    }

    #[tokio::test]
    async fn an_error_reaches_every_caller_of_its_round() {
        let (batcher, mut gate, _) = gated(16, TIMEOUT);
        let (first, (_, release_one), readers) =
            queue_behind_a_round(&batcher, &mut gate, 10).await;
        release_one.send(Ok(1)).unwrap();
        let (_, release_two) = gate.next_round().await;
        let refused = ApiError::NotLeader { leader: Some(3) };
        release_two.send(Err(refused.clone())).unwrap();
        assert_eq!(answer(first).await, Ok(1));
        for reader in readers {
            assert_eq!(answer(reader).await, Err(refused.clone()));
        }
        // The next round is unaffected.
        let later = read(&batcher);
        let (three, release) = gate.next_round().await;
        release.send(Ok(three)).unwrap();
        assert_eq!(answer(later).await, Ok(3));
        batcher.shutdown().await;
    }

    #[tokio::test]
    async fn a_round_that_times_out_answers_all_its_callers_unavailable() {
        let (batcher, mut gate, _) = gated(16, Duration::from_millis(200));
        let first = read(&batcher);
        let (_, _hold_one) = gate.next_round().await;
        let readers: Vec<_> = (0..5).map(|_| read(&batcher)).collect();
        let timed_out = Err(ApiError::Unavailable {
            reason: "could not confirm leadership with a quorum within 200 ms".into(),
        });
        // No round ever ends by itself (the gate keeps every release); each one's timeout
        // answers it, whichever round the readers joined.
        assert_eq!(answer(first).await, timed_out);
        for reader in readers {
            assert_eq!(answer(reader).await, timed_out);
        }
        batcher.shutdown().await;
    }

    #[tokio::test]
    async fn past_the_bound_a_caller_is_refused_naming_it() {
        let (batcher, mut gate, _) = gated(4, TIMEOUT);
        let (first, (_, release_one), queued) = queue_behind_a_round(&batcher, &mut gate, 4).await;
        match batcher.read_index().await {
            Err(ApiError::Unavailable { reason }) => {
                assert!(reason.contains("READ_INDEX_WAITERS_MAX"), "{reason}");
                assert!(reason.starts_with("4 linearizable reads"), "{reason}");
            }
            other => panic!("a fifth waiter was not refused: {other:?}"),
        }
        release_one.send(Ok(1)).unwrap();
        let (_, release_two) = gate.next_round().await;
        release_two.send(Ok(2)).unwrap();
        assert_eq!(answer(first).await, Ok(1));
        for reader in queued {
            assert_eq!(answer(reader).await, Ok(2));
        }
        batcher.shutdown().await;
    }

    #[tokio::test]
    async fn shutdown_answers_every_waiter_and_ends_the_task() {
        let (batcher, mut gate, _) = gated(8, TIMEOUT);
        let (first, (_, _held), queued) = queue_behind_a_round(&batcher, &mut gate, 3).await;
        tokio::time::timeout(TIMEOUT, batcher.shutdown())
            .await
            .expect("the task ends");
        assert!(batcher.task.lock().unwrap().is_none());
        assert_eq!(answer(first).await, Err(shutting_down()));
        for reader in queued {
            assert_eq!(answer(reader).await, Err(shutting_down()));
        }
        assert_eq!(batcher.read_index().await, Err(shutting_down()));
        assert_eq!(gate.calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn dropping_the_batcher_ends_the_task() {
        let (batcher, mut gate, _) = gated(8, TIMEOUT);
        let reader = read(&batcher);
        let (_, _held) = gate.next_round().await;
        // The reader's task holds a clone of the batcher until it ends.
        reader.abort();
        assert!(reader.await.unwrap_err().is_cancelled());
        let task = batcher.task.lock().unwrap().take().unwrap();
        let batcher = Arc::into_inner(batcher).expect("the last handle");
        drop(batcher);
        tokio::time::timeout(TIMEOUT, task)
            .await
            .expect("the task ends")
            .unwrap();
    }
}
