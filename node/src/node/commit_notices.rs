//! Commit indexes owed to the followers, and the heartbeats that pay them (ARCHITECTURE.md,
//! "Commit notices").

use raft_store::Raft;

use crate::peer::client::OwedCommits;

/// Sends a heartbeat whenever the followers are owed a commit index (ARCHITECTURE.md, "Commit
/// notices"): as soon as this node's disk has one that an AppendEntries held back from them
/// (`Durability::cap_commit`), and when a commit notice a replication stream deferred
/// (`OwedCommits`) is due. Otherwise they would learn it only with the next write or heartbeat,
/// up to `heartbeat_ms` later, and a linearizable read on a follower would wait for it. Ends
/// when `stop` is dropped or the log fails.
pub(super) async fn send_owed_commits(
    raft: Raft,
    durability: raft_store::Durability,
    owed: OwedCommits,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) {
    // Kept across turns: a held-back index is taken when first seen, and must not be dropped
    // when a deferred notice falls due first.
    let mut released = std::pin::pin!(held_back_released(durability.clone()));
    loop {
        tokio::select! {
            _ = &mut stop => return,
            outcome = &mut released => {
                if outcome.is_err() {
                    return;
                }
                released.set(held_back_released(durability.clone()));
            }
            () = owed.due() => {}
        }
        if raft.trigger().heartbeat().await.is_err() {
            return;
        }
    }
}

/// Waits until `cap_commit` has held a commit index back and the disk has it.
async fn held_back_released(durability: raft_store::Durability) -> Result<(), String> {
    let index = durability.held_back().await;
    durability.wait_for(index).await
}
