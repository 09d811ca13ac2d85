//! A model of Raft as openraft 0.9 runs it for vnet-ha: elections with randomized timeouts,
//! log replication with the log-matching check, commit on a quorum of the leader's term, and
//! leadership confirmation for read indexes. It is a model, not openraft: the lease argument
//! (`node/src/lease.rs`) depends on a few of openraft's behaviours, and those are kept
//! deliberately:
//! - a node whose vote is committed refuses every vote request until the leader lease (the
//!   longest election timeout) has passed since its vote was last updated or touched — by its
//!   leader's AppendEntries, its own election, or its start — and campaigns only after that
//!   lease *plus* its election timeout; a node with an uncommitted vote (a candidate, or one
//!   that voted for one) campaigns after its election timeout alone;
//! - each life draws one election timeout in `[min, max)` and keeps it, and elections are looked
//!   at on a tick of 1.5 heartbeats (which drifts by its handling time); a candidate told of a
//!   longer log waits twice the longest timeout more;
//! - a vote request from a candidate with a shorter log is refused without adopting its term,
//!   and a vote (term, node) is granted only over a lower term or the same vote;
//! - a leader's vote is last touched when it was elected, so once that lease has passed it
//!   yields to a candidate of a higher term with a log as long as its own;
//! - a node whose committed vote is its own resumes leadership of that term on restart;
//! - a leader never steps down for lack of a quorum: only a higher term deposes it;
//! - a read index is max(commit index, the term's first index) and, after a quorum confirmed
//!   leadership with heartbeats sent after the request, at least the last log index;
//! - a leader sends a new commit index to every follower as soon as it advances, not at the
//!   next heartbeat (followers apply a revocation, and attest under it, that soon).
//!
//! Left out: membership changes, snapshots and log compaction, pre-vote (openraft 0.9 has none),
//! batching limits, and the transport's ordering (every message here is independent, so
//! messages are reordered and duplicated more freely than over gRPC).

use std::collections::BTreeMap;

use vnet_model::Request;

pub type NodeId = u64;

/// One log entry: a blank (a new leader's first) or a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub term: u64,
    pub request: Option<Request>,
}

/// What survives a crash: the vote and the log (both fsynced before use), and the last saved
/// commit index (saved without an fsync in the real store; kept here as last known).
#[derive(Debug, Clone, Default)]
pub struct Durable {
    pub term: u64,
    pub voted_for: Option<NodeId>,
    pub vote_committed: bool,
    /// Entry `i` is at index `i + 1`.
    pub log: Vec<Entry>,
    pub commit_saved: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Msg {
    Vote {
        term: u64,
        candidate: NodeId,
        last_index: u64,
        last_term: u64,
    },
    VoteReply {
        term: u64,
        granted: bool,
        /// Refused because the voter's log is longer.
        greater_log: bool,
    },
    Append {
        term: u64,
        leader: NodeId,
        prev_index: u64,
        prev_term: u64,
        entries: Vec<Entry>,
        commit: u64,
        seq: u64,
    },
    AppendReply {
        term: u64,
        success: bool,
        /// On success the highest index known to match; on failure a hint to back up to.
        index: u64,
        seq: u64,
        /// Entries were written (and fsynced) before this answer: it left later than a bare
        /// heartbeat's would.
        wrote: bool,
    },
}

/// What happened inside a call, for the node around it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Happened {
    BecameLeader {
        term: u64,
    },
    SteppedDown,
    /// A read round finished: `Some(index)` if leadership was confirmed.
    ReadDone {
        read_id: u64,
        index: Option<u64>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Follower,
    Candidate,
    Leader,
}

#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub heartbeat_ns: u64,
    pub election_min_ns: u64,
    pub election_max_ns: u64,
}

/// Entries sent in one AppendEntries at most.
const APPEND_ENTRIES_MAX: usize = 64;

#[derive(Debug)]
struct ReadRound {
    read_id: u64,
    seq: u64,
    index: u64,
}

#[derive(Debug)]
pub struct Raft {
    pub id: NodeId,
    peers: Vec<NodeId>,
    timing: Timing,
    pub durable: Durable,
    pub role: Role,
    pub leader: Option<NodeId>,
    pub commit: u64,
    /// When the vote was last changed or touched (its leader's AppendEntries, an election, a
    /// start): openraft's `vote_last_modified`.
    utime: u64,
    /// This life's election timeout, drawn once.
    election_timeout: u64,
    /// A vote was refused for a longer log: wait longer before campaigning again.
    greater_log: bool,
    /// The next election check: openraft looks on a tick of 1.5 heartbeats.
    next_election_tick: u64,
    next_heartbeat: u64,
    votes: Vec<NodeId>,
    next_index: BTreeMap<NodeId, u64>,
    match_index: BTreeMap<NodeId, u64>,
    acked_seq: BTreeMap<NodeId, u64>,
    seq: u64,
    reads: Vec<ReadRound>,
    /// The first index of this leader's term.
    term_start: u64,
    pub out: Vec<(NodeId, Msg)>,
    pub happened: Vec<Happened>,
}

impl Raft {
    /// A node starting (or restarting) at local time `now` from what was durable;
    /// `election_jitter` in 0..1000 draws its first election timeout.
    pub fn start(
        id: NodeId,
        peers: Vec<NodeId>,
        timing: Timing,
        durable: Durable,
        now: u64,
        election_jitter: u64,
    ) -> Raft {
        let mut raft = Raft {
            id,
            peers,
            timing,
            commit: durable.commit_saved,
            durable,
            role: Role::Follower,
            leader: None,
            utime: now,
            election_timeout: timing.election_min_ns
                + (timing.election_max_ns - timing.election_min_ns) * election_jitter / 1_000,
            greater_log: false,
            next_election_tick: now + timing.heartbeat_ns * 3 / 2 * (election_jitter % 89) / 89,
            next_heartbeat: now,
            votes: Vec::new(),
            next_index: BTreeMap::new(),
            match_index: BTreeMap::new(),
            acked_seq: BTreeMap::new(),
            // Answers to an earlier life's heartbeats may still be in flight, and must not
            // confirm this life's reads: in `vnetd` those RPCs die with the process. Starting
            // each life's sequence at its clock puts it past every number an earlier life sent.
            seq: now,
            reads: Vec::new(),
            term_start: 0,
            out: Vec::new(),
            happened: Vec::new(),
        };
        if raft.durable.vote_committed && raft.durable.voted_for == Some(id) {
            // openraft 0.9 resumes leadership from its own committed vote.
            raft.lead(now, false);
        }
        raft
    }

    pub fn term(&self) -> u64 {
        self.durable.term
    }

    pub fn is_leader(&self) -> bool {
        self.role == Role::Leader
    }

    pub fn last_index(&self) -> u64 {
        self.durable.log.len() as u64
    }

    fn term_at(&self, index: u64) -> u64 {
        if index == 0 {
            0
        } else {
            self.durable.log[index as usize - 1].term
        }
    }

    pub fn entry(&self, index: u64) -> &Entry {
        &self.durable.log[index as usize - 1]
    }

    fn quorum(&self) -> usize {
        let voters = self.peers.len() + 1;
        voters / 2 + 1
    }

    /// When this node may next campaign (`RaftCore::handle_tick_election`).
    fn election_due(&self) -> u64 {
        let lease = if self.durable.vote_committed {
            self.timing.election_max_ns
        } else {
            0
        };
        let longer_log = if self.greater_log {
            2 * self.timing.election_max_ns
        } else {
            0
        };
        self.utime + lease + self.election_timeout + longer_log
    }

    /// Timers: an election when the leader has been silent too long, heartbeats when leading.
    pub fn tick(&mut self, now: u64, tick_jitter_ns: u64) {
        match self.role {
            Role::Leader => {
                if now >= self.next_heartbeat {
                    self.broadcast(now);
                }
            }
            Role::Follower | Role::Candidate => {
                if now < self.next_election_tick {
                    return;
                }
                // The tick loop sleeps 1.5 heartbeats after each tick is handled, so its phase
                // wanders by the handling time (`tick_jitter_ns`).
                self.next_election_tick = now + self.timing.heartbeat_ns * 3 / 2 + tick_jitter_ns;
                if now >= self.election_due() {
                    self.campaign(now);
                }
            }
        }
    }

    fn campaign(&mut self, now: u64) {
        self.durable.term += 1;
        self.durable.voted_for = Some(self.id);
        self.durable.vote_committed = false;
        self.role = Role::Candidate;
        self.leader = None;
        self.votes = vec![self.id];
        self.utime = now;
        self.greater_log = false;
        let (last_index, last_term) = (self.last_index(), self.term_at(self.last_index()));
        for peer in self.peers.clone() {
            self.out.push((
                peer,
                Msg::Vote {
                    term: self.durable.term,
                    candidate: self.id,
                    last_index,
                    last_term,
                },
            ));
        }
    }

    fn lead(&mut self, now: u64, append_blank: bool) {
        self.role = Role::Leader;
        self.leader = Some(self.id);
        self.durable.voted_for = Some(self.id);
        self.durable.vote_committed = true;
        self.utime = now;
        for peer in &self.peers {
            self.next_index.insert(*peer, self.last_index() + 1);
            self.match_index.insert(*peer, 0);
            self.acked_seq.insert(*peer, 0);
        }
        if append_blank {
            self.durable.log.push(Entry {
                term: self.durable.term,
                request: None,
            });
        }
        self.term_start = self
            .durable
            .log
            .iter()
            .position(|e| e.term == self.durable.term)
            .map_or(self.last_index() + 1, |i| i as u64 + 1);
        self.happened.push(Happened::BecameLeader {
            term: self.durable.term,
        });
        self.broadcast(now);
    }

    /// Adopts a higher term seen in an answer (no vote in it yet), or leaves leadership.
    fn step_down(&mut self, term: u64, now: u64) {
        let was_leader = self.role == Role::Leader;
        if term > self.durable.term {
            self.durable.term = term;
            self.durable.voted_for = None;
            self.durable.vote_committed = false;
            self.utime = now;
        }
        self.role = Role::Follower;
        self.leader = None;
        if was_leader {
            for read in self.reads.drain(..) {
                self.happened.push(Happened::ReadDone {
                    read_id: read.read_id,
                    index: None,
                });
            }
            self.happened.push(Happened::SteppedDown);
        }
    }

    /// Appends a request on the leader; its index, or `None` when not leading.
    pub fn propose(&mut self, request: Request, now: u64) -> Option<u64> {
        if self.role != Role::Leader {
            return None;
        }
        self.durable.log.push(Entry {
            term: self.durable.term,
            request: Some(request),
        });
        for peer in self.peers.clone() {
            self.send_append(peer);
        }
        let _ = now;
        Some(self.last_index())
    }

    /// Starts confirming leadership for a read index; answered through `happened`.
    pub fn read_index(&mut self, read_id: u64, now: u64) {
        if self.role != Role::Leader {
            self.happened.push(Happened::ReadDone {
                read_id,
                index: None,
            });
            return;
        }
        let index = self.commit.max(self.term_start);
        self.heartbeat(now);
        self.reads.push(ReadRound {
            read_id,
            seq: self.seq,
            index,
        });
        self.finish_reads();
    }

    /// The periodic round: a heartbeat to everyone, and entries to whoever lacks some (a lost
    /// AppendEntries is sent again here).
    fn broadcast(&mut self, now: u64) {
        self.heartbeat(now);
        for peer in self.peers.clone() {
            if self.next_index.get(&peer).copied().unwrap_or(1) <= self.last_index() {
                self.send_append(peer);
            }
        }
    }

    /// openraft's heartbeat: an AppendEntries with no entries, sent apart from replication, so
    /// its answer needs no fsync. Any answer in this term confirms leadership as of it.
    fn heartbeat(&mut self, now: u64) {
        self.seq += 1;
        self.next_heartbeat = now + self.timing.heartbeat_ns;
        for peer in self.peers.clone() {
            let prev_index = self.match_index.get(&peer).copied().unwrap_or(0);
            self.push_append(peer, prev_index, Vec::new());
        }
    }

    fn send_append(&mut self, peer: NodeId) {
        let next = self.next_index.get(&peer).copied().unwrap_or(1).max(1);
        let prev_index = next - 1;
        let end = (self.durable.log.len()).min(prev_index as usize + APPEND_ENTRIES_MAX);
        let entries = self.durable.log[prev_index as usize..end].to_vec();
        self.push_append(peer, prev_index, entries);
    }

    fn push_append(&mut self, peer: NodeId, prev_index: u64, entries: Vec<Entry>) {
        self.out.push((
            peer,
            Msg::Append {
                term: self.durable.term,
                leader: self.id,
                prev_index,
                prev_term: self.term_at(prev_index),
                entries,
                commit: self.commit,
                seq: self.seq,
            },
        ));
    }

    /// Handles a message from `from` at local time `now`.
    pub fn handle(&mut self, from: NodeId, msg: Msg, now: u64) {
        match msg {
            Msg::Vote {
                term,
                candidate,
                last_index,
                last_term,
            } => self.on_vote(from, term, candidate, (last_term, last_index), now),
            Msg::VoteReply {
                term,
                granted,
                greater_log,
            } => {
                // `Engine::handle_vote_resp`: only a candidate listens; a longer log seen in any
                // refusal delays its next election.
                if self.role != Role::Candidate {
                    return;
                }
                if granted && term == self.durable.term {
                    if !self.votes.contains(&from) {
                        self.votes.push(from);
                    }
                    if self.votes.len() >= self.quorum() {
                        self.lead(now, true);
                    }
                    return;
                }
                if greater_log {
                    self.greater_log = true;
                }
                if term > self.durable.term {
                    self.step_down(term, now);
                }
            }
            Msg::Append {
                term,
                leader,
                prev_index,
                prev_term,
                entries,
                commit,
                seq,
            } => self.on_append(
                from,
                (term, leader, prev_index, prev_term),
                entries,
                commit,
                seq,
                now,
            ),
            Msg::AppendReply {
                term,
                success,
                index,
                seq,
                ..
            } => self.on_append_reply(from, term, success, index, seq, now),
        }
    }

    /// `Engine::handle_vote_req`: the leader lease, then the log, then the vote itself.
    fn on_vote(
        &mut self,
        from: NodeId,
        term: u64,
        candidate: NodeId,
        candidate_log: (u64, u64),
        now: u64,
    ) {
        let refuse = |raft: &mut Raft, greater_log: bool| {
            raft.out.push((
                from,
                Msg::VoteReply {
                    term: raft.durable.term,
                    granted: false,
                    greater_log,
                },
            ));
        };
        if self.durable.vote_committed && now <= self.utime + self.timing.election_max_ns {
            return refuse(self, false);
        }
        let my_log = (self.term_at(self.last_index()), self.last_index());
        if candidate_log < my_log {
            return refuse(self, true);
        }
        // (term, candidate, uncommitted) >= my vote: a higher term, or the very same vote.
        let same_vote = term == self.durable.term
            && !self.durable.vote_committed
            && self.durable.voted_for.is_none_or(|v| v == candidate);
        if term < self.durable.term || (term == self.durable.term && !same_vote) {
            return refuse(self, false);
        }
        if self.role == Role::Leader {
            self.step_down(term, now);
        }
        self.role = Role::Follower;
        self.leader = None;
        self.durable.term = term;
        self.durable.voted_for = Some(candidate);
        self.durable.vote_committed = false;
        self.utime = now;
        self.out.push((
            from,
            Msg::VoteReply {
                term,
                granted: true,
                greater_log: false,
            },
        ));
    }

    /// AppendEntries: accepted when the leader's committed vote is at least this node's.
    fn on_append(
        &mut self,
        from: NodeId,
        (term, leader, prev_index, prev_term): (u64, NodeId, u64, u64),
        entries: Vec<Entry>,
        commit: u64,
        seq: u64,
        now: u64,
    ) {
        let comparable = term > self.durable.term
            || (term == self.durable.term && self.durable.voted_for.is_none_or(|v| v == leader));
        if !comparable {
            self.out.push((
                from,
                Msg::AppendReply {
                    term: self.durable.term,
                    success: false,
                    index: 0,
                    seq,
                    wrote: false,
                },
            ));
            return;
        }
        if self.role == Role::Leader {
            self.step_down(term, now);
        }
        self.role = Role::Follower;
        self.durable.term = term;
        self.durable.voted_for = Some(leader);
        self.durable.vote_committed = true;
        self.leader = Some(leader);
        self.utime = now;
        if prev_index > self.last_index() || self.term_at(prev_index) != prev_term {
            let hint = prev_index.saturating_sub(1).min(self.last_index());
            self.out.push((
                from,
                Msg::AppendReply {
                    term,
                    success: false,
                    index: hint,
                    seq,
                    wrote: false,
                },
            ));
            return;
        }
        let mut index = prev_index;
        let mut wrote = false;
        for entry in entries {
            index += 1;
            if index <= self.last_index() {
                if self.term_at(index) == entry.term {
                    continue;
                }
                assert!(
                    index > self.commit,
                    "node {} asked to truncate committed entry {index}",
                    self.id
                );
                self.durable.log.truncate(index as usize - 1);
            }
            self.durable.log.push(entry);
            wrote = true;
        }
        self.commit = self.commit.max(commit.min(index));
        self.durable.commit_saved = self.commit;
        self.out.push((
            from,
            Msg::AppendReply {
                term,
                success: true,
                index,
                seq,
                wrote,
            },
        ));
    }

    fn on_append_reply(
        &mut self,
        from: NodeId,
        term: u64,
        success: bool,
        index: u64,
        seq: u64,
        now: u64,
    ) {
        if term > self.durable.term {
            self.step_down(term, now);
            return;
        }
        if self.role != Role::Leader || term != self.durable.term {
            return;
        }
        // Any answer in this term confirms leadership as of the heartbeat it answers.
        let acked = self.acked_seq.entry(from).or_default();
        *acked = (*acked).max(seq);
        if success {
            let matched = self.match_index.entry(from).or_default();
            *matched = (*matched).max(index);
            self.next_index.insert(from, *matched + 1);
            self.advance_commit();
            if self.next_index[&from] <= self.last_index() {
                self.send_append(from);
            }
        } else {
            let next = self.next_index.get(&from).copied().unwrap_or(1);
            self.next_index
                .insert(from, (index + 1).min(next.saturating_sub(1)).max(1));
            self.send_append(from);
        }
        self.finish_reads();
    }

    fn advance_commit(&mut self) {
        let mut matched: Vec<u64> = self.match_index.values().copied().collect();
        matched.push(self.last_index());
        matched.sort_unstable_by(|a, b| b.cmp(a));
        let candidate = matched[self.quorum() - 1];
        if candidate > self.commit && self.term_at(candidate) == self.durable.term {
            self.commit = candidate;
            self.durable.commit_saved = candidate;
            // openraft tells every follower of a new commit index at once (its replication
            // streams get `Replicate::Committed` and send a heartbeat if nothing else is due).
            for peer in self.peers.clone() {
                self.send_append(peer);
            }
        }
    }

    fn finish_reads(&mut self) {
        let quorum = self.quorum();
        let last_index = self.last_index();
        let acked = &self.acked_seq;
        let mut done = Vec::new();
        self.reads.retain(|read| {
            let confirmed = 1 + acked.values().filter(|s| **s >= read.seq).count();
            if confirmed >= quorum {
                done.push(Happened::ReadDone {
                    read_id: read.read_id,
                    index: Some(read.index.max(last_index)),
                });
                false
            } else {
                true
            }
        });
        self.happened.extend(done);
    }
}
