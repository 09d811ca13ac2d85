//! How a request reaches the leader, and when it is retried.
//!
//! Every change and every linearizable read goes through [`Node::execute`]: on the leader it runs
//! locally; on a follower it is forwarded to the leader over the peer API. The client never needs
//! to know who leads.
//!
//! Retrying is where a replicated system quietly breaks linearizability, so the rules are strict:
//! - A request is retried (toward a new leader) only when it certainly did not take effect:
//!   openraft answered `ForwardToLeader` (the entry was never appended, or was truncated and can
//!   never commit), or the connection to the leader could not be opened at all.
//! - A write whose request may have reached a leader but whose answer did not come back is
//!   reported as `Indeterminate`, never retried here: a blind retry could apply it twice.

use std::time::Duration;

use openraft::{RaftMetrics, ServerState};
use tokio::time::Instant;
use tracing::Instrument;
use vnet_model::{Command, Outcome, Request};

use raft_store::{NodeId, PeerNode};

use crate::error::ApiError;
use crate::peer::client::PeerCallError;
use crate::peer::{LeaderReply, LeaderRequest, LeaderResult};

use super::{Consistency, Node, LEADER_RETRY_INTERVAL_MS};

impl Node {
    /// Proposes a model change and returns its outcome, and the revision it was applied at, once
    /// committed and applied.
    pub async fn write(&self, actor: &str, command: Command) -> Result<(Outcome, u64), ApiError> {
        let request = Request {
            actor: actor.to_string(),
            command,
            trace: None,
            on_behalf_of: None,
        };
        match self.execute(LeaderRequest::Write(request)).await? {
            LeaderReply::Applied { outcome, revision } => Ok((outcome, revision)),
            other => Err(unexpected_reply("write", &other)),
        }
    }

    /// [`Node::write`] for a client: the actor is the authenticated principal, with the client's
    /// "on behalf of" note beside it.
    pub async fn write_by(
        &self,
        by: crate::peer::By,
        command: Command,
    ) -> Result<(Outcome, u64), ApiError> {
        let request = Request {
            actor: by.actor,
            command,
            trace: None,
            on_behalf_of: by.on_behalf_of,
        };
        match self.execute(LeaderRequest::Write(request)).await? {
            LeaderReply::Applied { outcome, revision } => Ok((outcome, revision)),
            other => Err(unexpected_reply("write", &other)),
        }
    }

    /// [`Node::write`] with its own time budget.
    pub async fn write_within(
        &self,
        actor: &str,
        command: Command,
        budget: Duration,
    ) -> Result<(Outcome, u64), ApiError> {
        let request = Request {
            actor: actor.to_string(),
            command,
            trace: None,
            on_behalf_of: None,
        };
        match self
            .execute_within(LeaderRequest::Write(request), budget)
            .await?
        {
            LeaderReply::Applied { outcome, revision } => Ok((outcome, revision)),
            other => Err(unexpected_reply("write", &other)),
        }
    }

    /// Waits until this node's applied state reflects every write acknowledged before the call,
    /// for a linearizable read; returns at once for a local read.
    pub async fn read_barrier(&self, consistency: Consistency) -> Result<(), ApiError> {
        if consistency == Consistency::Local {
            return Ok(());
        }
        let deadline = Instant::now() + self.request_timeout();
        let index = match self.execute(LeaderRequest::ReadIndex).await? {
            LeaderReply::ReadIndex { index } => index,
            other => return Err(unexpected_reply("read index", &other)),
        };
        let mut progress = self.view().subscribe();
        loop {
            if progress.borrow_and_update().applied_index >= index {
                return Ok(());
            }
            match tokio::time::timeout_at(deadline, progress.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => {
                    return Err(ApiError::Unavailable {
                        reason: "this node is shutting down".to_string(),
                    })
                }
                Err(_) => {
                    return Err(ApiError::Unavailable {
                        reason: format!(
                            "this node has not applied up to index {index} in time; it is \
                             behind the leader"
                        ),
                    })
                }
            }
        }
    }

    /// Runs `request` on the leader, wherever it is, retrying only where that is safe (see the
    /// module doc).
    pub async fn execute(&self, request: LeaderRequest) -> Result<LeaderReply, ApiError> {
        self.execute_within(request, self.request_timeout()).await
    }

    /// [`Node::execute`] with its own time budget.
    pub async fn execute_within(
        &self,
        request: LeaderRequest,
        budget: Duration,
    ) -> Result<LeaderReply, ApiError> {
        let span = tracing::info_span!("execute", request = request.kind());
        async {
            let result = self.execute_until_done(request, budget).await;
            match &result {
                Ok(_) => tracing::debug!("request done"),
                Err(e) => tracing::debug!(error = %e, "request not done"),
            }
            result
        }
        .instrument(span)
        .await
    }

    async fn execute_until_done(
        &self,
        request: LeaderRequest,
        budget: Duration,
    ) -> Result<LeaderReply, ApiError> {
        if let LeaderRequest::Write(write) = &request {
            // Refused here too, so an oversize request is not shipped to the leader first.
            crate::peer::check_entry_size(write)?;
            // Under a NOSPACE alarm a write that adds data is refused here, before it costs a
            // log entry on a full disk. The model refuses it again at apply (the alarm may have
            // been raised since this node last applied), so every replica agrees either way.
            if write.command.adds_data() {
                let alarm = self.view().read(|a| a.state.no_space_alarm().cloned());
                if let Some(alarm) = alarm {
                    return Err(ApiError::Rejected(vnet_model::Rejection::AlarmRaised {
                        alarm: alarm.kind.to_string(),
                        reason: alarm.describe(),
                    }));
                }
            }
        }
        let deadline = Instant::now() + budget;
        let mut metrics = self.raft().metrics();
        let mut last_reason = String::from("no leader is known yet");
        loop {
            let (leader, leader_addr) = {
                let m = metrics.borrow_and_update();
                let leader = m.current_leader;
                let addr = leader.and_then(|id| {
                    m.membership_config
                        .membership()
                        .get_node(&id)
                        .map(|n| n.peer_addr.clone())
                });
                (leader, addr)
            };
            let remaining = deadline.saturating_duration_since(Instant::now());
            let result = match (leader, leader_addr) {
                (Some(id), _) if id == self.id() => self.execute_as_leader(request.clone()).await,
                (Some(id), Some(addr)) => {
                    let forwarding = self
                        .peers()
                        .to_leader(&addr, &request, remaining)
                        .instrument(tracing::info_span!("forward", leader = id));
                    match forwarding.await {
                        Ok(result) => result,
                        Err(e @ PeerCallError::Unreachable { .. }) if never_sent(&e) => {
                            Err(ApiError::NotLeader { leader: Some(id) })
                                .inspect_err(|_| last_reason = e.to_string())
                        }
                        Err(e) if request.is_read_only() => {
                            last_reason = e.to_string();
                            Err(ApiError::NotLeader { leader: Some(id) })
                        }
                        Err(e) => {
                            return Err(ApiError::Indeterminate {
                                reason: e.to_string(),
                            })
                        }
                    }
                }
                (Some(id), None) => {
                    last_reason = format!("leader {id} is not in this node's membership view");
                    Err(ApiError::NotLeader { leader: Some(id) })
                }
                (None, _) => Err(ApiError::NotLeader { leader: None }),
            };
            match result {
                Err(ApiError::NotLeader { .. }) => {}
                other => return other,
            }
            if Instant::now() >= deadline {
                return Err(ApiError::Unavailable {
                    reason: format!("gave up after {} ms: {last_reason}", budget.as_millis()),
                });
            }
            // Wait for the leader to change, but look again soon anyway: a leader that is
            // unreachable may stay "current" in metrics until an election times out.
            let wait_until =
                (Instant::now() + Duration::from_millis(LEADER_RETRY_INTERVAL_MS)).min(deadline);
            let _ = tokio::time::timeout_at(wait_until, metrics.changed()).await;
        }
    }

    /// Runs `request` here, as the leader. Answers `NotLeader` if this node is not the leader,
    /// which callers treat as "certainly not done; retry toward the leader".
    pub async fn execute_as_leader(&self, request: LeaderRequest) -> LeaderResult {
        let transferring = self
            .inner
            .transferring
            .load(std::sync::atomic::Ordering::SeqCst);
        match request {
            // Nothing was appended: the caller retries toward whoever leads next.
            LeaderRequest::Write(_) if transferring => Err(ApiError::NotLeader { leader: None }),
            LeaderRequest::Write(mut request) => {
                use std::sync::atomic::Ordering::SeqCst;
                // The entry carries the trace of the span proposing it; a trace from a peer
                // that is not a well-formed traceparent is dropped, never propagated.
                request.trace = request
                    .trace
                    .filter(|t| crate::telemetry::is_traceparent(t))
                    .or_else(crate::telemetry::current_traceparent);
                // Whoever sent it (a client here, a peer's forward, the controller), nothing
                // larger than an entry may be proposed (ARCHITECTURE.md, "Limits").
                let bytes = crate::peer::check_entry_size(&request)?;
                if matches!(request.command, Command::Batch(_)) {
                    // Only the leader forms batches, from requests it was asked to write.
                    return Err(ApiError::invalid(
                        "command",
                        "Batch",
                        "a batch is formed by the leader, never proposed by a caller",
                    ));
                }
                // Count ourselves in before the second look at the flag: a transfer that sets it
                // either sees this write in flight and waits, or this write sees the flag.
                self.inner.writes_in_flight.fetch_add(1, SeqCst);
                if self.inner.transferring.load(SeqCst) {
                    self.inner.writes_in_flight.fetch_sub(1, SeqCst);
                    return Err(ApiError::NotLeader { leader: None });
                }
                let written = self
                    .inner
                    .batcher
                    .write(request, bytes)
                    .instrument(tracing::info_span!("raft_write"))
                    .await;
                self.inner.writes_in_flight.fetch_sub(1, SeqCst);
                let proposals = match &written {
                    Ok(Ok(_)) => &self.inner.metrics.proposals_committed,
                    _ => &self.inner.metrics.proposals_failed,
                };
                proposals.inc();
                match written {
                    Ok(Ok(accepted)) => Ok(LeaderReply::Applied {
                        outcome: accepted.outcome,
                        revision: accepted.revision,
                    }),
                    Ok(Err(rejection)) => Err(ApiError::Rejected(rejection)),
                    Err(e) => Err(e),
                }
            }
            LeaderRequest::ReadIndex => {
                // One quorum confirmation serves every read waiting when it starts
                // (`read_index.rs`; ARCHITECTURE.md, "Requests and retries").
                let index = self.inner.read_index.read_index().await?;
                Ok(LeaderReply::ReadIndex { index })
            }
            LeaderRequest::AddLearner {
                id,
                node,
                api_addr,
                role,
                by,
            } => self.add_learner(id, node, api_addr, role, by).await,
            LeaderRequest::Promote { id } => self.promote(id).await,
            LeaderRequest::Remove { id, by } => self.remove(id, by).await,
            LeaderRequest::TransferLeader { to } => self.transfer_leader(to).await,
            LeaderRequest::Status => {
                self.require_leader()?;
                Ok(LeaderReply::Status(Box::new(self.local_status())))
            }
            LeaderRequest::Failover {
                profile,
                from,
                to,
                by,
            } => Box::pin(self.planned_failover(profile, from, to, by)).await,
        }
    }

    pub(super) fn require_leader(&self) -> Result<RaftMetrics<NodeId, PeerNode>, ApiError> {
        let metrics = self.metrics();
        if metrics.current_leader != Some(self.id()) || metrics.state != ServerState::Leader {
            return Err(ApiError::NotLeader {
                leader: metrics.current_leader,
            });
        }
        Ok(metrics)
    }
}

impl LeaderRequest {
    fn is_read_only(&self) -> bool {
        // A lease renewal changes only the leader's memory; a lost or repeated one is harmless.
        matches!(self, LeaderRequest::ReadIndex | LeaderRequest::Status)
    }
}

/// Did the request certainly never leave this node? True only for a failed connection attempt:
/// tonic reports it as UNAVAILABLE with a connect error underneath. Any other failure may have
/// happened after the request was sent.
fn never_sent(error: &PeerCallError) -> bool {
    let PeerCallError::Unreachable { status, .. } = error else {
        return false;
    };
    // A refused connection is the clearest case; otherwise look for the connector's own wording
    // for a connection that could not be established ("error trying to connect", "tcp connect
    // error"). Words like "connection closed" or "reset" mean a connection existed and the
    // request may have been sent.
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(status);
    let mut text = status.message().to_lowercase();
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::ConnectionRefused {
                return true;
            }
        }
        text.push(' ');
        text.push_str(&e.to_string().to_lowercase());
        source = e.source();
    }
    text.contains("error trying to connect") || text.contains("tcp connect error")
}

pub(super) fn unexpected_reply(what: &str, reply: &LeaderReply) -> ApiError {
    ApiError::Internal {
        reason: format!("the leader answered a {what} with {reply:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unreachable(message: &str) -> PeerCallError {
        PeerCallError::Unreachable {
            addr: "10.0.0.1:7101".into(),
            status: tonic::Status::unavailable(message),
        }
    }

    #[test]
    fn only_a_connection_that_never_opened_counts_as_never_sent() {
        assert!(never_sent(&unreachable(
            "error trying to connect: tcp connect error: Connection refused (os error 111)"
        )));
        for maybe_sent in [
            "connection closed before message completed",
            "connection reset by peer",
            "transport error",
            "h2 protocol error: connection closed",
        ] {
            assert!(!never_sent(&unreachable(maybe_sent)), "{maybe_sent}");
        }
        let refused_elsewhere = PeerCallError::NoAnswer {
            addr: "x".into(),
            status: tonic::Status::deadline_exceeded("error trying to connect"),
        };
        assert!(
            !never_sent(&refused_elsewhere),
            "only UNAVAILABLE can be never-sent"
        );
    }
}
