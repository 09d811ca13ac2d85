//! Offline operations on data directories, run with `vnetd restore` and `vnetd recover` while no
//! `vnetd` serves the directory (the Raft log's lock refuses a second opener).
//!
//! - [`restore`] builds a new member's data directory from a backup (`vnetctl snapshot save`):
//!   the whole model state at the backup's position, a Raft membership of the new initial
//!   cluster, and a new cluster id, so that members of the old cluster cannot join the new one.
//! - [`recover`] makes one surviving voter the only voter of its cluster from its own data,
//!   once the operator has confirmed every other member lost and none of them answers. It
//!   records the confirmation in the replicated history and removes the lost ids for good.
//!
//! Both end the same way: [`raft_store::seed`] leaves the directory holding one snapshot and a
//! log purged up to it, and `vnetd` starts from there like any restarted node. The safety
//! argument is in ARCHITECTURE.md, "Operating through bad days".

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use openraft::storage::{RaftLogReader, RaftLogStorage, RaftStateMachine};
use openraft::{CommittedLeaderId, EntryPayload, LogId, Membership, StoredMembership, Vote};
use raft_store::snapshot_file::{self, SnapshotBody, SnapshotMeta, SNAPSHOT_BYTES_MAX};
use raft_store::{NodeId, PeerNode};
use vnet_model::{Command, Request};

use crate::config::{parse_initial_cluster, InitialMember};
use crate::data_file::{self, DataFile, DATA_FORMAT_VERSION};
use crate::peer::client::{PeerCallError, PeerClients};

/// How long `recover` waits for each other member to answer before counting it unreachable.
pub const RECOVER_PROBE_TIMEOUT_MS: u64 = 1_000;

/// What an offline operation did, to print.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seeded {
    pub data_dir: PathBuf,
    pub node_id: NodeId,
    pub cluster_id: String,
    /// The model revision and the Raft log index the directory starts from.
    pub revision: u64,
    pub index: u64,
    pub profiles: usize,
    pub pools: usize,
    pub members: usize,
}

impl std::fmt::Display for Seeded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: node {} of cluster {}, revision {} (log index {}), {} profiles, {} pools, {} \
             members",
            self.data_dir.display(),
            self.node_id,
            self.cluster_id,
            self.revision,
            self.index,
            self.profiles,
            self.pools,
            self.members
        )
    }
}

fn seeded(data_dir: &Path, node_id: NodeId, cluster_id: &str, body: &SnapshotBody) -> Seeded {
    Seeded {
        data_dir: data_dir.to_path_buf(),
        node_id,
        cluster_id: cluster_id.to_string(),
        revision: body.state.revision(),
        index: body.meta.last_log_id.map_or(0, |id| id.index),
        profiles: body.state.profiles().count(),
        pools: body.state.pools().count(),
        members: body.state.members().count(),
    }
}

fn membership_of(members: &BTreeMap<NodeId, PeerNode>) -> Membership<NodeId, PeerNode> {
    let voters: BTreeSet<NodeId> = members.keys().copied().collect();
    Membership::new(vec![voters], members.clone())
}

/// A directory that holds nothing (or does not exist yet): restore never overwrites.
fn require_empty(data_dir: &Path) -> anyhow::Result<()> {
    match std::fs::read_dir(data_dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                anyhow::bail!(
                    "--data-dir {} is not empty; restore builds a new member's directory and \
                     never overwrites one",
                    data_dir.display()
                );
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => anyhow::bail!("cannot read --data-dir {}: {e}", data_dir.display()),
    }
}

/// The id every member restored from `backup` into `initial_cluster` computes alike, and no other
/// restore does unless it uses the same file, the same members and the same `token`: each member
/// runs `restore` on its own machine, and they must agree without talking.
pub fn restored_cluster_id(
    backup: &[u8],
    initial_cluster: &[InitialMember],
    token: &str,
) -> String {
    let mut seed = Vec::new();
    seed.extend_from_slice(&crc32fast::hash(backup).to_be_bytes());
    seed.extend_from_slice(&(backup.len() as u64).to_be_bytes());
    for member in initial_cluster {
        seed.extend_from_slice(
            format!("{}={}@{};", member.id, member.name, member.peer_addr).as_bytes(),
        );
    }
    seed.extend_from_slice(token.as_bytes());
    // Four CRC-32s under different prefixes: 128 bits that change with any input byte. Not a
    // secret, only a name that two different restores do not share.
    (0u8..4)
        .map(|salt| {
            let mut hasher = crc32fast::Hasher::new();
            hasher.update(&[salt]);
            hasher.update(&seed);
            format!("{:08x}", hasher.finalize())
        })
        .collect()
}

/// `vnetd restore`: builds `data_dir` for member `name` of `initial_cluster` from `backup_path`.
/// Whether a probe's outcome shows a `vnetd` at the address: an answer, or a refusal (any gRPC
/// status the peer sent). Only no connection or no answer at all counts as silence.
fn answered_at_all<T>(outcome: &Result<T, PeerCallError>) -> bool {
    match outcome {
        Ok(_) | Err(PeerCallError::Refused { .. }) => true,
        Err(PeerCallError::Unreachable { .. } | PeerCallError::NoAnswer { .. }) => false,
    }
}

pub fn restore(
    backup_path: &Path,
    data_dir: &Path,
    initial_cluster: &str,
    name: &str,
    token: &str,
) -> anyhow::Result<Seeded> {
    let members = parse_initial_cluster(initial_cluster)?;
    let me = members.iter().find(|m| m.name == name).ok_or_else(|| {
        anyhow::anyhow!(
            "--name {name:?} is not in --initial-cluster {initial_cluster:?}; name one of its \
             members"
        )
    })?;
    let Some(founder) = members.iter().map(|m| m.id).min() else {
        anyhow::bail!("--initial-cluster names no member");
    };
    require_empty(data_dir)?;
    let mut bytes = Vec::new();
    std::fs::File::open(backup_path)
        .and_then(|f| f.take(SNAPSHOT_BYTES_MAX + 1).read_to_end(&mut bytes))
        .map_err(|e| anyhow::anyhow!("cannot read --snapshot {}: {e}", backup_path.display()))?;
    // The whole check: header, checksum, decode and the model's invariants.
    let backup = snapshot_file::decode(&bytes).map_err(|e| {
        anyhow::anyhow!(
            "--snapshot {} is not a usable backup: {e}",
            backup_path.display()
        )
    })?;
    let index = backup
        .meta
        .last_log_id
        .map_or(backup.state.revision(), |id| id.index);
    // Every member writes the same position, leader id and membership, so they agree on the
    // log they start from. The vote says each has seen term 1 (for the founder): the first
    // election is for term 2, and no entry is ever written under term 1.
    let last = LogId::new(CommittedLeaderId::new(1, founder), index);
    let nodes = crate::config::peer_nodes(&members);
    let meta = SnapshotMeta {
        last_log_id: Some(last),
        last_membership: StoredMembership::new(Some(last), membership_of(&nodes)),
        snapshot_id: format!("restore-1-{index}"),
    };
    let body = SnapshotBody::new(meta, backup.state.into_new_cluster());
    let cluster_id = restored_cluster_id(&bytes, &members, token);
    // The identity file last: a directory without it is not yet a member and is refused by a
    // second restore (not empty) until the operator clears it.
    raft_store::seed(data_dir, &body, &Vote::new(1, founder))?;
    data_file::store(
        data_dir,
        &DataFile {
            format_version: DATA_FORMAT_VERSION,
            node_id: me.id,
            cluster_id: Some(cluster_id.clone()),
        },
    )?;
    Ok(seeded(data_dir, me.id, &cluster_id, &body))
}

/// `vnetd recover`: makes the voter whose directory is `data_dir` the only voter of its
/// cluster. `confirmed_lost` must name every other member, `actor` is recorded as the one who
/// confirmed it.
pub async fn recover(
    data_dir: &Path,
    confirmed_lost: &BTreeSet<NodeId>,
    actor: &str,
    lease_wait: Duration,
    tls: Option<vnet_tls::TlsFiles>,
) -> anyhow::Result<Seeded> {
    let Some(data) = data_file::load(data_dir)? else {
        anyhow::bail!(
            "{} has no {}: it is not a vnetd data directory (or vnetd never started on it)",
            data_dir.display(),
            data_file::DATA_FILE
        );
    };
    let me = data.node_id;
    let (mut log, mut state_machine) = raft_store::open(data_dir).map_err(|e| {
        anyhow::anyhow!("{e} (is vnetd still running on this directory? stop it first)")
    })?;
    let (applied, snapshot_membership) = state_machine.applied_state().await?;
    let log_state = log.get_log_state().await?;
    let vote = log.read_vote().await?;
    let start = applied.map_or(0, |id| id.index + 1);
    let entries = match log_state.last_log_id {
        Some(last) if last.index >= start => log.try_get_log_entries(start..=last.index).await?,
        _ => Vec::new(),
    };
    // The newest membership, committed or not, is the one in effect (Raft's rule).
    let membership = entries
        .iter()
        .rev()
        .find_map(|e| match &e.payload {
            EntryPayload::Membership(m) => Some(m.clone()),
            _ => None,
        })
        .unwrap_or_else(|| snapshot_membership.membership().clone());
    let Some(my_node) = membership.get_node(&me).cloned() else {
        anyhow::bail!("node {me} is not in its own cluster's membership; it cannot recover it");
    };
    if !membership.voter_ids().any(|id| id == me) {
        anyhow::bail!(
            "node {me} is a learner: it may lack committed entries, so only a voter can be \
             recovered from"
        );
    }
    let others: BTreeMap<NodeId, PeerNode> = membership
        .nodes()
        .filter(|(id, _)| **id != me)
        .map(|(id, node)| (*id, node.clone()))
        .collect();
    let unknown: Vec<String> = confirmed_lost
        .iter()
        .filter(|id| !others.contains_key(id))
        .map(u64::to_string)
        .collect();
    if !unknown.is_empty() || confirmed_lost.contains(&me) {
        anyhow::bail!(
            "--confirm-lost names {} that {} not another member of this cluster (members: {})",
            if confirmed_lost.contains(&me) {
                format!("{me} (this node)")
            } else {
                unknown.join(",")
            },
            if unknown.len() > 1 { "are" } else { "is" },
            describe(&membership)
        );
    }
    let missing: Vec<String> = others
        .iter()
        .filter(|(id, _)| !confirmed_lost.contains(id))
        .map(|(id, node)| format!("{id} ({node})"))
        .collect();
    if !missing.is_empty() {
        anyhow::bail!(
            "refused: every other member must be confirmed lost (powered off or cut off for \
             good) with --confirm-lost; not confirmed: {}. Confirm only what you have checked: \
             a member that is alive and comes back would hold a second copy of the cluster",
            missing.join(", ")
        );
    }
    // Ask each of them, briefly: an answer means it is not lost.
    // Over TLS when the cluster speaks it: a plaintext probe of a TLS member would fail to
    // connect and count it as lost while it runs.
    let tls = match &tls {
        Some(files) => Some(std::sync::Arc::new(
            vnet_tls::ClientTls::from_files(files).map_err(|e| anyhow::anyhow!("TLS: {e}"))?,
        )),
        None => None,
    };
    let peers = PeerClients::new(me, data.cluster_id.clone(), tls);
    let probes = others.iter().map(|(id, node)| {
        let peers = peers.clone();
        async move {
            let answer = peers
                .probe(
                    &node.peer_addr,
                    Duration::from_millis(RECOVER_PROBE_TIMEOUT_MS),
                )
                .await;
            (*id, node.clone(), answer)
        }
    });
    // Any answer at all, a refusal included, means a vnetd runs at that address: perhaps the
    // lost member itself, refusing this node because its own side already recovered without it
    // (two survivors each recovering would present every identity twice). Only silence counts
    // as lost; an unrelated process at a reused address must be stopped by the operator first.
    let answered: Vec<(NodeId, PeerNode)> = futures::future::join_all(probes)
        .await
        .into_iter()
        .filter_map(|(id, node, answer)| answered_at_all(&answer).then_some((id, node)))
        .collect();
    if !answered.is_empty() {
        let voters = membership.voter_ids().count();
        let reachable_voters = 1 + answered
            .iter()
            .filter(|(id, _)| membership.voter_ids().any(|v| v == *id))
            .count();
        anyhow::bail!(
            "refused: {} answered, so {}; start vnetd on this node again and let the cluster \
             catch it up (or stop those members first, if they really must go)",
            answered
                .iter()
                .map(|(id, node)| format!("{id} ({node})"))
                .collect::<Vec<_>>()
                .join(", "),
            if reachable_voters * 2 > voters {
                format!(
                    "a quorum is reachable ({reachable_voters} of {voters} voters with this one)"
                )
            } else {
                "they are not lost".to_string()
            }
        );
    }

    // A lost unit may still present profiles this node's log does not show on it (placed there
    // by entries this node never received), under grants the old voters made before they went
    // silent. Those grants end within a lease and its drift margin of the last one, and a silent
    // voter grants nothing more: once that has passed, the survivor may present.
    if !lease_wait.is_zero() {
        eprintln!(
            "the lost members are silent; waiting {} ms for any lease they hold to end",
            lease_wait.as_millis()
        );
        tokio::time::sleep(lease_wait).await;
    }

    // Replay the log past the snapshot: every entry this node holds, committed or not, is kept
    // (a single voter commits them all when it leads; Raft's own rule for a new leader's log).
    let mut state = state_machine.view().read(|a| a.state.clone());
    let mut last_index = applied.map_or(0, |id| id.index);
    let mut term = vote.map_or(0, |v| v.leader_id().term);
    for entry in &entries {
        if let EntryPayload::Normal(request) = &entry.payload {
            // A refused request was refused on every replica too; it changes nothing.
            let _ = vnet_model::apply_entry(&mut state, entry.log_id.index, request);
        }
        last_index = entry.log_id.index;
        term = term.max(entry.log_id.leader_id.term);
    }
    drop((log, state_machine));
    let index = last_index + 1;
    let term = term + 1;
    let revision = vnet_model::next_revision(&state, index);
    vnet_model::apply(
        &mut state,
        revision,
        &Request {
            actor: actor.to_string(),
            command: Command::Recover {
                survivor: me,
                lost: confirmed_lost.clone(),
            },
            trace: None,
            on_behalf_of: None,
        },
    )
    .map_err(|e| anyhow::anyhow!("recording the recovery was refused: {e}"))?;
    let last = LogId::new(CommittedLeaderId::new(term, me), index);
    let nodes = BTreeMap::from([(me, my_node)]);
    let meta = SnapshotMeta {
        last_log_id: Some(last),
        last_membership: StoredMembership::new(Some(last), membership_of(&nodes)),
        snapshot_id: format!("recover-{term}-{index}"),
    };
    let body = SnapshotBody::new(meta, state);
    raft_store::seed(data_dir, &body, &Vote::new(term, me))?;
    let cluster_id = data.cluster_id.clone().unwrap_or_default();
    Ok(seeded(data_dir, me, &cluster_id, &body))
}

fn describe(membership: &Membership<NodeId, PeerNode>) -> String {
    membership
        .nodes()
        .map(|(id, node)| format!("{id} ({node})"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusing_member_is_alive_and_only_silence_counts_as_lost() {
        let status = |code| tonic::Status::new(code, "x");
        let addr = || "10.0.0.2:7101".to_string();
        assert!(answered_at_all(&Ok::<(), _>(())));
        // A survivor that already recovered without this node refuses it: it is alive.
        assert!(answered_at_all::<()>(&Err(PeerCallError::Refused {
            addr: addr(),
            status: status(tonic::Code::FailedPrecondition),
        })));
        assert!(!answered_at_all::<()>(&Err(PeerCallError::Unreachable {
            addr: addr(),
            status: status(tonic::Code::Unavailable),
        })));
        assert!(!answered_at_all::<()>(&Err(PeerCallError::NoAnswer {
            addr: addr(),
            status: status(tonic::Code::DeadlineExceeded),
        })));
    }

    #[test]
    fn restores_of_the_same_file_and_members_agree_on_the_id_and_others_differ() {
        let members = parse_initial_cluster("1=a@h:1,2=b@h:2").unwrap();
        let id = restored_cluster_id(b"backup", &members, "");
        assert_eq!(id, restored_cluster_id(b"backup", &members, ""));
        assert_eq!(id.len(), 32);
        data_file::validate_cluster_id(&id).unwrap();
        let other_members = parse_initial_cluster("1=a@h:1,2=b@h:3").unwrap();
        for other in [
            restored_cluster_id(b"backuP", &members, ""),
            restored_cluster_id(b"backup", &other_members, ""),
            restored_cluster_id(b"backup", &members, "second"),
        ] {
            assert_ne!(id, other);
        }
    }
}
