//! Cluster status: the leader's view (asked of the leader when linearizable) or this node's.

use super::*;

impl Node {
    /// The cluster as the leader sees it (forwarded there when possible), else as this node does.
    pub async fn status(&self, consistency: Consistency) -> ClusterStatus {
        if consistency == Consistency::Linearizable
            && self.metrics().current_leader != Some(self.id())
        {
            let leader = self.metrics().current_leader.and_then(|id| {
                self.metrics()
                    .membership_config
                    .membership()
                    .get_node(&id)
                    .map(|n| n.peer_addr.clone())
            });
            if let Some(addr) = leader {
                let timeout = Duration::from_millis(STATUS_FROM_LEADER_TIMEOUT_MS);
                if let Ok(Ok(LeaderReply::Status(status))) = self
                    .peers()
                    .to_leader(&addr, &LeaderRequest::Status, timeout)
                    .await
                {
                    return *status;
                }
            }
        }
        self.local_status()
    }

    /// This node's own view of the cluster.
    pub fn local_status(&self) -> ClusterStatus {
        let metrics = self.metrics();
        let membership = metrics.membership_config.membership().clone();
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        let is_leader = metrics.current_leader == Some(self.id());
        let stale_after_ms = self.config().raft.election_max_ms * 2;
        let records: BTreeMap<NodeId, Member> = self
            .view()
            .read(|a| a.state.members().map(|m| (m.id, m.clone())).collect());
        let members = membership
            .nodes()
            .map(|(id, node)| {
                let record = records.get(id);
                let voter = voters.contains(id);
                let last_contact_ms = if *id == self.id() {
                    Some(0)
                } else if is_leader {
                    self.peers().last_contact_ms(*id)
                } else {
                    None
                };
                let raft_state = if *id == self.id() {
                    RaftStateKind::from(metrics.state)
                } else if metrics.current_leader == Some(*id) {
                    RaftStateKind::Leader
                } else if is_leader && last_contact_ms.is_none_or(|ms| ms > stale_after_ms) {
                    RaftStateKind::Offline
                } else if !voter {
                    RaftStateKind::Learner
                } else if is_leader {
                    RaftStateKind::Follower
                } else {
                    RaftStateKind::Unknown
                };
                let matched_index = if *id == self.id() {
                    metrics.last_log_index
                } else {
                    metrics
                        .replication
                        .as_ref()
                        .and_then(|r| r.get(id).cloned().flatten())
                        .map(|log_id| log_id.index)
                };
                MemberStatus {
                    id: *id,
                    name: node.name.clone(),
                    peer_addr: node.peer_addr.clone(),
                    role: record.map(|m| m.role),
                    api_addr: record.map(|m| m.api_addr.clone()).unwrap_or_default(),
                    cabling: record.map(|m| m.cabling.clone()).unwrap_or_default(),
                    capacity: record.map_or(0, |m| m.capacity),
                    voter,
                    raft_state,
                    last_contact_ms,
                    matched_index,
                }
            })
            .collect();
        let progress = self.view().progress();
        let leader_name = metrics
            .current_leader
            .and_then(|id| membership.get_node(&id).map(|n| n.name.clone()));
        let lease_view = self.lease_view();
        let failed_after = self.failed_after();
        let own_view = self.unit_view();
        let no_leader = metrics.current_leader.is_none();
        let (units, placements, alarms) = self.view().read(|a| {
            let units = a
                .state
                .members()
                .filter(|m| m.role == Role::Unit)
                .map(|m| {
                    let revoked_at = a.state.revoked_at(&m.name);
                    let lease_healthy = lease_view.as_ref().map(|view| {
                        revoked_at.is_none()
                            && crate::lease::judge(&view.sets, &view.reports, &m.name, failed_after)
                                == crate::lease::Judgement::Live
                    });
                    let own = match &lease_view {
                        Some(view) => view
                            .reports
                            .values()
                            .find_map(|r| r.own.clone().filter(|own| own.unit == m.name)),
                        None => own_view.clone().filter(|own| own.unit == m.name),
                    };
                    let note = unit_note(revoked_at, lease_healthy, own.as_ref(), no_leader);
                    UnitStatus {
                        id: m.id,
                        name: m.name.clone(),
                        lease_healthy,
                        lease_age_ms: lease_view.as_ref().and_then(|v| v.lapse_age_ms(&m.name)),
                        lease_revoked_at: revoked_at,
                        own,
                        note,
                        draining: a.state.is_draining(&m.name),
                        presented: a
                            .state
                            .presented_by(&m.name)
                            .map(|p| p.keys().cloned().collect())
                            .unwrap_or_default(),
                        load: a.state.load_of(&m.name) as u32,
                        capacity: m.capacity,
                    }
                })
                .collect();
            (
                units,
                placement_status(&a.state),
                a.state.alarms().cloned().collect(),
            )
        });
        ClusterStatus {
            units,
            placements,
            responder_id: self.id(),
            leader_id: metrics.current_leader,
            leader_name: leader_name.unwrap_or_default(),
            term: metrics.current_term,
            commit_index: self.committed_index_hint(&metrics),
            applied_index: progress.applied_index,
            revision: progress.revision,
            members,
            version: env!("CARGO_PKG_VERSION").to_owned(),
            // What the quota counts; a store that cannot be measured now shows as 0.
            data_dir_bytes: raft_store::usage::disk_usage(&self.config().data_dir).unwrap_or(0),
            alarms,
        }
    }

    /// The commit index as far as this node can tell: on the leader, the highest index a quorum
    /// of voters has replicated; elsewhere, what it has applied (it cannot know more).
    pub(crate) fn committed_index_hint(&self, metrics: &RaftMetrics<NodeId, PeerNode>) -> u64 {
        let applied = metrics.last_applied.map_or(0, |id| id.index);
        let Some(replication) = metrics.replication.as_ref() else {
            return applied;
        };
        let voters: Vec<NodeId> = metrics.membership_config.membership().voter_ids().collect();
        let mut matched: Vec<u64> = voters
            .iter()
            .map(|id| {
                if *id == self.id() {
                    metrics.last_log_index.unwrap_or(0)
                } else {
                    replication
                        .get(id)
                        .cloned()
                        .flatten()
                        .map_or(0, |log_id| log_id.index)
                }
            })
            .collect();
        matched.sort_unstable_by(|a, b| b.cmp(a));
        let quorum = voters.len() / 2 + 1;
        matched
            .get(quorum - 1)
            .copied()
            .unwrap_or(applied)
            .max(applied)
    }
}

/// What is wrong with a unit, in an operator's words; empty when nothing is.
fn unit_note(
    revoked_at: Option<u64>,
    lease_healthy: Option<bool>,
    own: Option<&crate::lease::UnitView>,
    no_leader: bool,
) -> String {
    if let Some(epoch) = revoked_at {
        return format!(
            "lease revoked (epoch {epoch}): a majority of voters saw it lapse; its profiles are \
             being failed over, and it is granted a lease again once that is committed"
        );
    }
    if let Some(own) = own {
        if !own.switch_reachable {
            return "its agent cannot reach its switch".into();
        }
        if own.lease_left_ms.is_none() {
            return format!(
                "holds no lease (grants from {} voters, fewer than a majority): its switch \
                 presents nothing it was not already holding, and fences at its deadline",
                own.voters_granting
            );
        }
    }
    if no_leader {
        return "no leader: the answering node cannot reach a quorum of voters. No failover is \
                possible until a majority of voters is back; a unit that cannot reach a \
                majority fences itself"
            .into();
    }
    if lease_healthy == Some(false) {
        return "a majority of voters has granted it nothing for longer than its lease: it has \
                fenced itself"
            .into();
    }
    String::new()
}
