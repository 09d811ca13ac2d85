//! Membership and leadership: adding, promoting and removing members, leader transfer, and
//! the election control that transfer uses.

use super::*;

impl Node {
    /// This node acting as itself.
    fn system_by(&self) -> crate::peer::By {
        crate::peer::By {
            actor: format!("vnetd/{}", self.config().name),
            on_behalf_of: None,
        }
    }

    pub(super) async fn add_learner(
        &self,
        id: NodeId,
        node: PeerNode,
        api_addr: String,
        role: Role,
        by: Option<crate::peer::By>,
    ) -> LeaderResult {
        let metrics = self.require_leader()?;
        if let Some(existing) = metrics.membership_config.membership().get_node(&id) {
            return Err(ApiError::MemberExists {
                id,
                name: existing.name.clone(),
            });
        }
        if self.view().read(|a| a.state.is_removed_id(id)) {
            return Err(ApiError::FailedPrecondition {
                reason: format!(
                    "id {id} was removed by a recovery without a quorum and is never used again; \
                     give the node a new id"
                ),
            });
        }
        // The model keeps at most MEMBERS_MAX member records; a learner past that would be in
        // the Raft membership with no record the model accepts.
        let members = metrics.membership_config.membership().nodes().count();
        if members >= MEMBERS_MAX {
            return Err(ApiError::Rejected(vnet_model::Rejection::LimitExceeded {
                what: "members".to_string(),
                limit: MEMBERS_MAX as u64,
            }));
        }
        // Every check the member record will meet, before the learner joins the Raft
        // membership: a learner whose record the model then refused would be replicated to with
        // no record, and the caller told it was added. A peer may have forwarded this request,
        // so the edge's checks are repeated here.
        crate::api::name("name", &node.name)?;
        crate::api::cluster::new_member_addrs(&node.peer_addr, &api_addr)?;
        let name = node.name.clone();
        let peer_addr = node.peer_addr.clone();
        let member = Member {
            id,
            name,
            role,
            api_addr,
            peer_addr,
            cabling: BTreeMap::new(),
            capacity: 0,
            // Unknown until the node registers itself: assume it applies nothing new.
            protocol: 0,
        };
        member.validate()?;
        if self.view().read(|a| {
            a.state
                .members()
                .any(|m| m.name == member.name && m.id != id)
        }) {
            return Err(ApiError::Rejected(vnet_model::Rejection::AlreadyExists {
                kind: "member name".to_string(),
                name: member.name,
            }));
        }
        // A node already in another cluster would refuse every entry sent to it: say so now,
        // while the operator is looking, rather than add a learner that can never catch up. A
        // node that does not answer yet is added as before.
        let probe = self
            .peers()
            .probe(
                &member.peer_addr,
                std::time::Duration::from_millis(super::BOOTSTRAP_PROBE_TIMEOUT_MS),
            )
            .await;
        if let Err(crate::peer::client::PeerCallError::Refused { status, .. }) = &probe {
            if status.code() == tonic::Code::FailedPrecondition {
                return Err(ApiError::FailedPrecondition {
                    reason: format!(
                        "node {id} at {} cannot be added: {}",
                        member.peer_addr,
                        status.message()
                    ),
                });
            }
        }
        // Not blocking: a learner that is not running yet is still a member; it catches up when
        // it starts, and status shows how far it has got.
        let added = tokio::time::timeout(
            self.request_timeout(),
            self.raft().add_learner(id, node, false),
        )
        .await
        .map_err(|_| ApiError::Indeterminate {
            reason: "adding the learner did not commit in time".to_string(),
        })?
        .map_err(client_write_error)?;
        // Record what the caller told us, so status shows the role at once; the member refreshes
        // its own record (cabling, capacity) when it starts.
        // The record is the caller's change: its event names them (the system's, for a request
        // from a node older than roles).
        let by = by.unwrap_or_else(|| self.system_by());
        let request = Request {
            actor: by.actor,
            command: Command::PutMember(member),
            trace: None,
            on_behalf_of: by.on_behalf_of,
        };
        let recorded = match Box::pin(self.execute_as_leader(LeaderRequest::Write(request))).await {
            Ok(LeaderReply::Applied { revision, .. }) => Some(revision),
            Ok(_) => None,
            Err(e) => {
                tracing::warn!(member = id, error = %e, "could not record the new member");
                None
            }
        };
        Ok(LeaderReply::MembershipChanged {
            log_index: added.log_id.index,
            revision: Some(recorded.unwrap_or_else(|| self.applied_revision())),
        })
    }

    pub(super) async fn promote(&self, id: NodeId) -> LeaderResult {
        let metrics = self.require_leader()?;
        let membership = metrics.membership_config.membership();
        if membership.get_node(&id).is_none() {
            return Err(ApiError::MemberNotFound { id });
        }
        if membership.voter_ids().any(|v| v == id) {
            return Err(ApiError::FailedPrecondition {
                reason: format!("member {id} is already a voter"),
            });
        }
        self.require_caught_up(&metrics, id)?;
        let changed = tokio::time::timeout(
            self.request_timeout(),
            self.raft()
                .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), false),
        )
        .await
        .map_err(|_| ApiError::Indeterminate {
            reason: "the membership change did not commit in time".to_string(),
        })?
        .map_err(client_write_error)?;
        Ok(LeaderReply::MembershipChanged {
            log_index: changed.log_id.index,
            revision: Some(self.applied_revision()),
        })
    }

    /// The revision of this node's applied state. Once a membership change has returned here,
    /// the leader has applied its entry, so this revision is at least that of every change
    /// before it. Membership entries take no revision of their own: they change Raft's
    /// configuration, not the model.
    fn applied_revision(&self) -> u64 {
        self.view().read(|applied| applied.state.revision())
    }

    pub(super) fn require_caught_up(
        &self,
        metrics: &RaftMetrics<NodeId, PeerNode>,
        id: NodeId,
    ) -> Result<(), ApiError> {
        let last = metrics.last_log_index.unwrap_or(0);
        let matched = metrics
            .replication
            .as_ref()
            .and_then(|r| r.get(&id).cloned().flatten())
            .map_or(0, |log_id| log_id.index);
        if last.saturating_sub(matched) > CAUGHT_UP_LAG_ENTRIES_MAX {
            return Err(ApiError::FailedPrecondition {
                reason: format!(
                    "member {id} has not caught up: it has replicated up to index {matched} of \
                     {last}; wait and retry"
                ),
            });
        }
        Ok(())
    }

    pub(super) async fn remove(&self, id: NodeId, by: Option<crate::peer::By>) -> LeaderResult {
        let metrics = self.require_leader()?;
        let membership = metrics.membership_config.membership();
        if membership.get_node(&id).is_none() {
            return Err(ApiError::MemberNotFound { id });
        }
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        let change = if voters.contains(&id) {
            if voters.len() == 1 {
                return Err(ApiError::FailedPrecondition {
                    reason: format!("member {id} is the only voter; add another voter first"),
                });
            }
            ChangeMembers::RemoveVoters(BTreeSet::from([id]))
        } else {
            ChangeMembers::RemoveNodes(BTreeSet::from([id]))
        };
        let changed = tokio::time::timeout(
            self.request_timeout(),
            self.raft().change_membership(change, false),
        )
        .await
        .map_err(|_| ApiError::Indeterminate {
            reason: "the membership change did not commit in time".to_string(),
        })?
        .map_err(client_write_error)?;
        let mut recorded = None;
        if self.view().read(|a| a.state.member(id).is_some()) {
            let by = by.unwrap_or_else(|| self.system_by());
            let request = Request {
                actor: by.actor,
                command: Command::RemoveMember { id },
                trace: None,
                on_behalf_of: by.on_behalf_of,
            };
            // Removing ourselves makes us step down; the record is then removed by a later
            // leader's view of the world only if someone asks. Log, don't fail: the membership
            // change itself is done.
            match Box::pin(self.execute(LeaderRequest::Write(request))).await {
                Ok(LeaderReply::Applied { revision, .. }) => recorded = Some(revision),
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(member = id, error = %e, "could not remove the member record")
                }
            }
        }
        Ok(LeaderReply::MembershipChanged {
            log_index: changed.log_id.index,
            revision: Some(recorded.unwrap_or_else(|| self.applied_revision())),
        })
    }

    /// Hands leadership to `to`. openraft 0.9 has no transfer call, and its voters refuse to vote
    /// while a leader's lease is fresh. So: every other voter holds off elections of its own, this
    /// leader stops sending heartbeats, and the caught-up target campaigns until it wins (its
    /// log is as long as anyone's, so it can). Holds expire by themselves, so a transfer that
    /// fails halfway leaves the cluster as it was.
    pub(super) async fn transfer_leader(&self, to: NodeId) -> LeaderResult {
        let metrics = self.require_leader()?;
        if to == self.id() {
            return Ok(LeaderReply::Transferred {
                leader: to,
                term: metrics.current_term,
            });
        }
        let membership = metrics.membership_config.membership();
        let Some(target) = membership.get_node(&to) else {
            return Err(ApiError::MemberNotFound { id: to });
        };
        if !membership.voter_ids().any(|v| v == to) {
            return Err(ApiError::FailedPrecondition {
                reason: format!("member {to} is a learner; only a voter can lead"),
            });
        }
        self.require_caught_up(&metrics, to)?;
        self.inner
            .transferring
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let result = self.hand_over(to, &target.peer_addr).await;
        self.inner
            .transferring
            .store(false, std::sync::atomic::Ordering::SeqCst);
        result
    }

    pub(super) async fn hand_over(&self, to: NodeId, target_addr: &str) -> LeaderResult {
        let metrics = self.metrics();
        let membership = metrics.membership_config.membership();
        let timing = &self.config().raft;
        // Peers refuse a hold or campaign past `PEER_DURATION_MS_MAX`; ask for no more than that.
        let hold_ms = timing
            .election_max_ms
            .saturating_mul(4)
            .min(crate::peer::PEER_DURATION_MS_MAX);
        let hold = Duration::from_millis(hold_ms);
        let rpc_timeout = Duration::from_millis(timing.election_max_ms);
        // The target must hold every entry this leader has, or the voters that do will refuse
        // it (Raft's election restriction) and nobody can lead until the holds expire.
        let caught_up = |m: &RaftMetrics<NodeId, PeerNode>| {
            let last = m.last_log_index.unwrap_or(0);
            let idle = self
                .inner
                .writes_in_flight
                .load(std::sync::atomic::Ordering::SeqCst)
                == 0;
            idle && m
                .replication
                .as_ref()
                .and_then(|r| r.get(&to).cloned().flatten())
                .is_some_and(|matched| matched.index >= last)
        };
        // Re-check on every metrics change and at least every few milliseconds: the in-flight
        // count can reach zero without metrics changing after it.
        let deadline = Instant::now() + hold;
        let mut watching = self.raft().metrics();
        let fully_replicated: Result<(), ()> = loop {
            if caught_up(&watching.borrow_and_update()) {
                break Ok(());
            }
            if Instant::now() >= deadline {
                break Err(());
            }
            let _ =
                tokio::time::timeout(Duration::from_millis(TRANSFER_POLL_MS), watching.changed())
                    .await;
        };
        if fully_replicated.is_err() {
            return Err(ApiError::FailedPrecondition {
                reason: format!("member {to} did not catch up with the leader's log in time"),
            });
        }
        for (id, node) in membership.nodes() {
            if *id == to || *id == self.id() {
                continue;
            }
            let control = ElectionControl::Hold {
                duration_ms: hold_ms,
            };
            if let Err(e) = self
                .peers()
                .election(&node.peer_addr, &control, rpc_timeout)
                .await
            {
                tracing::warn!(peer = id, error = %e, "could not ask a voter to hold elections");
            }
        }
        self.election_control(ElectionControl::Hold {
            duration_ms: hold_ms,
        });
        self.raft().runtime_config().heartbeat(false);
        let campaign = ElectionControl::Campaign {
            deadline_ms: hold_ms,
        };
        let asked = self
            .peers()
            .election(target_addr, &campaign, rpc_timeout)
            .await;
        let result = match asked {
            Err(e) => Err(ApiError::Unavailable {
                reason: format!("could not reach the transfer target: {e}"),
            }),
            Ok(()) => {
                let waited = self
                    .raft()
                    .wait(Some(hold))
                    .metrics(|m| m.current_leader == Some(to), "leader transfer")
                    .await;
                match waited {
                    Ok(m) => Ok(LeaderReply::Transferred {
                        leader: to,
                        term: m.current_term,
                    }),
                    Err(e) => Err(ApiError::Unavailable {
                        reason: format!("member {to} did not take over in time: {e}"),
                    }),
                }
            }
        };
        self.raft().runtime_config().heartbeat(true);
        result
    }

    /// Applies an election-control request from a leader running a transfer.
    pub fn election_control(&self, control: ElectionControl) {
        // The peer service refused anything longer already; this only keeps a caller that skipped
        // that check from arithmetic that could overflow.
        let requested = match control.duration() {
            Ok(duration) => duration,
            Err(refused) => {
                tracing::warn!(%refused, "ignoring an election control");
                return;
            }
        };
        let longest = Duration::from_millis(
            self.config()
                .raft
                .election_max_ms
                .saturating_mul(crate::peer::ELECTION_CONTROL_TIMEOUTS_MAX),
        );
        if requested > longest {
            tracing::info!(
                requested_ms = requested.as_millis() as u64,
                granted_ms = longest.as_millis() as u64,
                "shortening an election control to ELECTION_CONTROL_TIMEOUTS_MAX election timeouts"
            );
        }
        let duration = requested.min(longest);
        let raft = self.raft().clone();
        let id = self.id();
        match control {
            ElectionControl::Hold { .. } => {
                raft.runtime_config().elect(false);
                let mut metrics = raft.metrics();
                let leader_at_hold = metrics.borrow().current_leader;
                tokio::spawn(async move {
                    // The hold ends as soon as a new leader is known (the transfer is done, and a
                    // crash of the new leader must be met by a prompt election), and in any case
                    // after `duration_ms`, even if the leader that asked for it is gone.
                    let new_leader = metrics.wait_for(|m| {
                        m.current_leader.is_some() && m.current_leader != leader_at_hold
                    });
                    let _ = tokio::time::timeout(duration, new_leader).await;
                    raft.runtime_config().elect(true);
                });
            }
            ElectionControl::Campaign { .. } => {
                // One election per election timeout: each attempt raises the term, so retrying
                // faster than an election can finish only churns terms.
                let attempt = Duration::from_millis(self.config().raft.election_max_ms);
                tokio::spawn(async move {
                    // `duration` is at most `PEER_DURATION_MS_MAX`, so this cannot overflow.
                    let deadline = Instant::now() + duration;
                    while Instant::now() < deadline {
                        if raft.trigger().elect().await.is_err() {
                            return;
                        }
                        let won = raft
                            .wait(Some(
                                attempt.min(deadline.saturating_duration_since(Instant::now())),
                            ))
                            .metrics(|m| m.current_leader == Some(id), "campaign")
                            .await;
                        if won.is_ok() {
                            return;
                        }
                    }
                });
            }
        }
    }
}
