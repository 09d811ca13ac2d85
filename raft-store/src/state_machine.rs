//! The state machine: the model's [`State`] in memory, made durable by the log plus snapshots.
//!
//! The state itself is never written to sled. On restart it is rebuilt from the current snapshot
//! file, and openraft re-applies the committed log entries after it (the log store persists the
//! committed index for that purpose). This keeps sled holding only the log tail, which snapshots
//! let openraft purge, and it makes a snapshot file the single durable copy of the state.
//!
//! Readers (the public API, watch streams) share the applied state through [`StateView`]: a read
//! lock for queries and a `watch` channel that ticks on every applied batch.

use std::io::Cursor;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    AnyError, EntryPayload, ErrorSubject, ErrorVerb, LogId, OptionalSend, RaftSnapshotBuilder,
    StorageError, StorageIOError, StoredMembership,
};
use tokio::sync::watch;
use vnet_model::{Command, Revision, State};

use crate::log_store::Durability;
use crate::observer::SharedObserver;
use crate::snapshot_file::{self, SnapshotBody, SnapshotDir, SnapshotError, SnapshotMeta};
use crate::{Entry, NodeId, PeerNode, Response, TypeConfig};

/// Everything the state machine has applied.
#[derive(Debug, Clone, Default)]
pub struct Applied {
    pub last_applied: Option<LogId<NodeId>>,
    pub membership: StoredMembership<NodeId, PeerNode>,
    pub state: State,
}

/// Where applying has got to; sent on every applied batch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Progress {
    /// Log index of the last applied entry (any kind), 0 before the first.
    pub applied_index: u64,
    /// Model revision: index of the last entry that changed the model state.
    pub revision: Revision,
}

/// A read-only handle on the applied state, cheap to clone.
#[derive(Debug, Clone)]
pub struct StateView {
    applied: Arc<RwLock<Applied>>,
    progress: watch::Receiver<Progress>,
}

impl StateView {
    /// Runs `f` on the applied state under a read lock. Keep `f` short: it holds off applying.
    pub fn read<R>(&self, f: impl FnOnce(&Applied) -> R) -> R {
        f(&read_lock(&self.applied))
    }

    pub fn progress(&self) -> Progress {
        *self.progress.borrow()
    }

    /// A receiver that is marked changed after every applied batch.
    pub fn subscribe(&self) -> watch::Receiver<Progress> {
        self.progress.clone()
    }
}

// A poisoned lock means a panic while the state was being changed: the state may be half-applied
// and nothing read from it can be trusted. There is no recovery but a restart (which rebuilds the
// state from snapshot and log), so propagating the panic is the honest outcome.
fn read_lock(lock: &RwLock<Applied>) -> RwLockReadGuard<'_, Applied> {
    lock.read()
        .expect("state lock poisoned: a panic happened while applying")
}

fn write_lock(lock: &RwLock<Applied>) -> RwLockWriteGuard<'_, Applied> {
    lock.write()
        .expect("state lock poisoned: a panic happened while applying")
}

fn snapshot_err(
    meta: Option<&SnapshotMeta>,
    verb: ErrorVerb,
    e: impl std::error::Error + 'static,
) -> StorageError<NodeId> {
    let signature = meta.map(|m| m.signature());
    StorageIOError::new(ErrorSubject::Snapshot(signature), verb, AnyError::new(&e)).into()
}

/// The state machine store handed to openraft. Clones share one state.
#[derive(Debug, Clone)]
pub struct StateMachineStore {
    applied: Arc<RwLock<Applied>>,
    progress: Arc<watch::Sender<Progress>>,
    snapshots: SnapshotDir,
    /// Distinguishes snapshots built at the same log id (openraft requires distinct ids).
    snapshot_seq: Arc<AtomicU64>,
    observer: SharedObserver,
    /// How far this node's log is on disk: an entry is applied only once it is there.
    durability: Durability,
}

impl StateMachineStore {
    pub(crate) fn open(
        snapshots: SnapshotDir,
        observer: SharedObserver,
        durability: Durability,
    ) -> Result<Self, SnapshotError> {
        let applied = match snapshots.read_current()? {
            Some((_, body)) => Applied {
                last_applied: body.meta.last_log_id,
                membership: body.meta.last_membership,
                state: body.state,
            },
            None => Applied::default(),
        };
        let progress = progress_of(&applied);
        Ok(Self {
            applied: Arc::new(RwLock::new(applied)),
            progress: Arc::new(watch::channel(progress).0),
            snapshots,
            snapshot_seq: Arc::new(AtomicU64::new(0)),
            observer,
            durability,
        })
    }

    pub fn view(&self) -> StateView {
        StateView {
            applied: self.applied.clone(),
            progress: self.progress.subscribe(),
        }
    }

    fn publish_progress(&self, applied: &Applied) {
        self.progress.send_replace(progress_of(applied));
    }
}

fn progress_of(applied: &Applied) -> Progress {
    Progress {
        applied_index: applied.last_applied.map_or(0, |id| id.index),
        revision: applied.state.revision(),
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachineStore {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<NodeId>> {
        let started = std::time::Instant::now();
        // Clone under the lock and encode outside it, so applying is held off only for a copy.
        let applied = read_lock(&self.applied).clone();
        let seq = self.snapshot_seq.fetch_add(1, Ordering::Relaxed);
        let snapshot_id = match applied.last_applied {
            Some(id) => format!("{}-{}-{seq}", id.leader_id.term, id.index),
            None => format!("0-0-{seq}"),
        };
        let meta = SnapshotMeta {
            last_log_id: applied.last_applied,
            last_membership: applied.membership,
            snapshot_id,
        };
        let body = SnapshotBody::new(meta.clone(), applied.state);
        let snapshots = self.snapshots.clone();
        let bytes = tokio::task::spawn_blocking(move || {
            let bytes = snapshot_file::encode(&body)?;
            // Durable before openraft learns of it: it purges the log behind a built snapshot.
            snapshots.write_current(&bytes)?;
            Ok::<_, SnapshotError>(bytes)
        })
        .await
        .map_err(|e| snapshot_err(Some(&meta), ErrorVerb::Write, e))?
        .map_err(|e| snapshot_err(Some(&meta), ErrorVerb::Write, e))?;
        self.observer
            .snapshot_built(started.elapsed(), bytes.len() as u64);
        tracing::info!(snapshot_id = %meta.snapshot_id, bytes = bytes.len(), "built snapshot");
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(bytes)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = Self;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<NodeId>>, StoredMembership<NodeId, PeerNode>), StorageError<NodeId>>
    {
        let applied = read_lock(&self.applied);
        Ok((applied.last_applied, applied.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Response>, StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        // The leader's commit index may count its own copy before that copy is on disk (see
        // `log_store`'s module doc); applying, and so answering a client or serving a read,
        // waits until it is. A failed fsync stops Raft here.
        if let Some(last) = entries.last() {
            self.durability
                .wait_for(last.log_id.index)
                .await
                .map_err(|e| {
                    StorageIOError::new(
                        ErrorSubject::Logs,
                        ErrorVerb::Write,
                        AnyError::error(format!(
                            "log entry {} will not be applied: {e}",
                            last.log_id.index
                        )),
                    )
                })?;
        }
        let mut applied = write_lock(&self.applied);
        let mut responses = Vec::new();
        for entry in entries {
            applied.last_applied = Some(entry.log_id);
            let response = match entry.payload {
                EntryPayload::Blank => Response::Internal,
                EntryPayload::Normal(request) => {
                    let mut results =
                        vnet_model::apply_entry(&mut applied.state, entry.log_id.index, &request);
                    match request.command {
                        Command::Batch(_) => Response::Batch(results),
                        _ => match results.pop() {
                            Some(result) => Response::Applied(result),
                            None => Response::Internal,
                        },
                    }
                }
                EntryPayload::Membership(membership) => {
                    applied.membership = StoredMembership::new(Some(entry.log_id), membership);
                    Response::Internal
                }
            };
            responses.push(response);
        }
        self.publish_progress(&applied);
        Ok(responses)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(
        &mut self,
    ) -> Result<Box<Cursor<Vec<u8>>>, StorageError<NodeId>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError<NodeId>> {
        let bytes = snapshot.into_inner();
        let snapshots = self.snapshots.clone();
        let announced = meta.last_log_id;
        // Verify (checksum, decode, model invariants, position) and persist before touching the
        // live state: bytes from a peer are not trusted until they check out, and openraft may
        // purge the log as soon as this returns.
        let body = tokio::task::spawn_blocking(move || {
            let body = snapshot_file::decode(&bytes)?;
            if body.meta.last_log_id != announced {
                return Err(SnapshotError::PositionMismatch {
                    announced: format!("{announced:?}"),
                    found: format!("{:?}", body.meta.last_log_id),
                });
            }
            snapshots.write_current(&bytes)?;
            Ok(body)
        })
        .await
        .map_err(|e| snapshot_err(Some(meta), ErrorVerb::Write, e))?
        .map_err(|e| snapshot_err(Some(meta), ErrorVerb::Write, e))?;
        let mut applied = write_lock(&self.applied);
        *applied = Applied {
            last_applied: meta.last_log_id,
            membership: meta.last_membership.clone(),
            state: body.state,
        };
        self.publish_progress(&applied);
        tracing::info!(snapshot_id = %meta.snapshot_id, "installed snapshot from leader");
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<TypeConfig>>, StorageError<NodeId>> {
        let snapshots = self.snapshots.clone();
        let current = tokio::task::spawn_blocking(move || snapshots.read_current())
            .await
            .map_err(|e| snapshot_err(None, ErrorVerb::Read, e))?
            .map_err(|e| snapshot_err(None, ErrorVerb::Read, e))?;
        Ok(current.map(|(bytes, body)| Snapshot {
            meta: body.meta,
            snapshot: Box::new(Cursor::new(bytes)),
        }))
    }
}
