//! The Raft log and the Raft metadata (vote, committed, last purged) on sled.
//!
//! Durability contract (what openraft relies on, and why each fsync is where it is):
//! - `save_vote` returns only after the vote is fsynced: a node that forgot its vote after a crash
//!   could vote twice in one term and let two leaders be elected.
//! - `append` reports completion through its callback only after the entries are fsynced: the
//!   leader counts a follower's acknowledgement toward the commit quorum, and a client's write is
//!   acknowledged once committed, so an acknowledged entry must already be on a quorum of disks.
//! - `truncate` and `purge` fsync too. A lost truncation is harmless in itself, but fsyncing keeps
//!   the reasoning simple: every state the log has been in on disk is one openraft asked for.
//! - `save_committed` does not fsync: a stale committed index only means re-applying less on
//!   restart, and the leader tells a restarted node the commit index again.
//!
//! sled's `flush` writes and fsyncs everything written before it, across trees, so one flush at
//! the end of a batch covers the batch. It runs on a blocking thread: it is a syscall that can
//! take milliseconds, and must not stall the async executor.
//!
//! Keys in the log tree are big-endian indexes, so sled's byte order is log order.

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{
    AnyError, ErrorSubject, ErrorVerb, LogId, OptionalSend, RaftLogReader, StorageError,
    StorageIOError, Vote,
};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::observer::SharedObserver;
use crate::{Entry, NodeId, TypeConfig};

const KEY_VOTE: &[u8] = b"vote";
const KEY_COMMITTED: &[u8] = b"committed";
const KEY_LAST_PURGED: &[u8] = b"last_purged";

/// The log store. Clones share the same sled trees (sled handles are reference counted).
#[derive(Debug, Clone)]
pub struct LogStore {
    db: sled::Db,
    log: sled::Tree,
    meta: sled::Tree,
    observer: SharedObserver,
}

fn index_key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

fn key_index(key: &[u8]) -> Result<u64, StorageError<NodeId>> {
    let bytes: [u8; 8] = key.try_into().map_err(|_| {
        StorageIOError::read_logs(AnyError::error(format!(
            "log key is {} bytes, expected 8",
            key.len()
        )))
    })?;
    Ok(u64::from_be_bytes(bytes))
}

fn io_err(
    subject: ErrorSubject<NodeId>,
    verb: ErrorVerb,
    e: impl std::error::Error + 'static,
) -> StorageError<NodeId> {
    StorageIOError::new(subject, verb, AnyError::new(&e)).into()
}

impl LogStore {
    pub(crate) fn open(db: &sled::Db, observer: SharedObserver) -> Result<Self, sled::Error> {
        Ok(Self {
            db: db.clone(),
            log: db.open_tree("raft_log")?,
            meta: db.open_tree("raft_meta")?,
            observer,
        })
    }

    async fn flush(&self, subject: ErrorSubject<NodeId>) -> Result<(), StorageError<NodeId>> {
        let db = self.db.clone();
        let observer = self.observer.clone();
        let flushed = tokio::task::spawn_blocking(move || {
            let started = std::time::Instant::now();
            let flushed = db.flush();
            observer.log_synced(started.elapsed());
            flushed
        })
        .await
        .map_err(|e| io_err(subject.clone(), ErrorVerb::Write, e))?;
        flushed
            .map(|_| ())
            .map_err(|e| io_err(subject, ErrorVerb::Write, e))
    }

    fn read_meta<T: DeserializeOwned>(
        &self,
        key: &[u8],
        subject: ErrorSubject<NodeId>,
    ) -> Result<Option<T>, StorageError<NodeId>> {
        let Some(bytes) = self
            .meta
            .get(key)
            .map_err(|e| io_err(subject.clone(), ErrorVerb::Read, e))?
        else {
            return Ok(None);
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| io_err(subject, ErrorVerb::Read, e))
    }

    fn write_meta<T: Serialize>(
        &self,
        key: &[u8],
        value: &T,
        subject: ErrorSubject<NodeId>,
    ) -> Result<(), StorageError<NodeId>> {
        let bytes =
            serde_json::to_vec(value).map_err(|e| io_err(subject.clone(), ErrorVerb::Write, e))?;
        self.meta
            .insert(key, bytes)
            .map_err(|e| io_err(subject, ErrorVerb::Write, e))?;
        Ok(())
    }

    fn last_purged(&self) -> Result<Option<LogId<NodeId>>, StorageError<NodeId>> {
        self.read_meta(KEY_LAST_PURGED, ErrorSubject::Logs)
    }

    fn decode_entry(index: u64, bytes: &[u8]) -> Result<Entry, StorageError<NodeId>> {
        let entry: Entry = serde_json::from_slice(bytes)
            .map_err(|e| io_err(ErrorSubject::LogIndex(index), ErrorVerb::Read, e))?;
        if entry.log_id.index != index {
            // A key and its entry disagreeing means the tree is damaged: refuse to serve it.
            return Err(io_err(
                ErrorSubject::LogIndex(index),
                ErrorVerb::Read,
                std::io::Error::other(format!(
                    "log entry stored under index {index} says it is index {}",
                    entry.log_id.index
                )),
            ));
        }
        Ok(entry)
    }

    /// Empties the log and leaves only a purge point at `last`, with `last` committed and `vote`
    /// as the vote, all fsynced: the store of a node whose whole state is a snapshot at `last`
    /// (a restore from a backup, or a recovery without a quorum). On open, openraft finds the
    /// log ending where the snapshot does and starts from there. Offline use only: nothing may
    /// have the store open for Raft.
    pub fn reset_to_snapshot(
        &self,
        last: LogId<NodeId>,
        vote: &Vote<NodeId>,
    ) -> Result<(), StorageError<NodeId>> {
        self.log
            .clear()
            .map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Write, e))?;
        self.write_meta(KEY_LAST_PURGED, &last, ErrorSubject::Logs)?;
        self.write_meta(KEY_COMMITTED, &Some(last), ErrorSubject::Store)?;
        self.write_meta(KEY_VOTE, vote, ErrorSubject::Vote)?;
        self.db
            .flush()
            .map_err(|e| io_err(ErrorSubject::Store, ErrorVerb::Write, e))?;
        Ok(())
    }

    /// Is anything at all on disk? A pristine store is the only kind a node may bootstrap.
    pub fn is_pristine(&self) -> Result<bool, StorageError<NodeId>> {
        let has_vote = self
            .meta
            .contains_key(KEY_VOTE)
            .map_err(|e| io_err(ErrorSubject::Vote, ErrorVerb::Read, e))?;
        Ok(!has_vote && self.log.is_empty() && self.last_purged()?.is_none())
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError<NodeId>> {
        let start = match range.start_bound() {
            Bound::Included(&s) => s,
            Bound::Excluded(&s) => s.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(&e) => e.checked_add(1),
            Bound::Excluded(&e) => Some(e),
            Bound::Unbounded => None,
        };
        let iter = match end {
            Some(end) if end <= start => return Ok(Vec::new()),
            Some(end) => self.log.range(index_key(start)..index_key(end)),
            None => self.log.range(index_key(start)..),
        };
        let mut entries = Vec::new();
        for item in iter {
            let (key, value) = item.map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Read, e))?;
            let index = key_index(&key)?;
            entries.push(Self::decode_entry(index, &value)?);
        }
        Ok(entries)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError<NodeId>> {
        let last_purged_log_id = self.last_purged()?;
        let last_in_log = match self
            .log
            .last()
            .map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Read, e))?
        {
            Some((key, value)) => Some(Self::decode_entry(key_index(&key)?, &value)?.log_id),
            None => None,
        };
        // After a purge the tree may be empty (or, after a crash mid-purge, hold only entries at
        // or below the purge point): the last log id is then the last purged one.
        let last_log_id = match (last_in_log, last_purged_log_id) {
            (Some(last), Some(purged)) if last.index <= purged.index => Some(purged),
            (Some(last), _) => Some(last),
            (None, purged) => purged,
        };
        Ok(LogState {
            last_purged_log_id,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError<NodeId>> {
        self.write_meta(KEY_VOTE, vote, ErrorSubject::Vote)?;
        self.flush(ErrorSubject::Vote).await
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError<NodeId>> {
        self.read_meta(KEY_VOTE, ErrorSubject::Vote)
    }

    async fn save_committed(
        &mut self,
        committed: Option<LogId<NodeId>>,
    ) -> Result<(), StorageError<NodeId>> {
        self.write_meta(KEY_COMMITTED, &committed, ErrorSubject::Store)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<NodeId>>, StorageError<NodeId>> {
        Ok(self
            .read_meta::<Option<LogId<NodeId>>>(KEY_COMMITTED, ErrorSubject::Store)?
            .flatten())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut batch = sled::Batch::default();
        for entry in entries {
            let bytes = serde_json::to_vec(&entry)
                .map_err(|e| io_err(ErrorSubject::Log(entry.log_id), ErrorVerb::Write, e))?;
            batch.insert(&index_key(entry.log_id.index), bytes);
        }
        self.log
            .apply_batch(batch)
            .map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Write, e))?;
        // Only now, with the entries fsynced, may openraft count them as persisted (see the
        // module doc: acknowledgements and commits rest on this).
        let flushed = self.flush(ErrorSubject::Logs).await;
        match flushed {
            Ok(()) => {
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                callback.log_io_completed(Err(std::io::Error::other(e.to_string())));
                Err(e)
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        let mut batch = sled::Batch::default();
        for item in self.log.range(index_key(log_id.index)..) {
            let (key, _) = item.map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Delete, e))?;
            batch.remove(key);
        }
        self.log
            .apply_batch(batch)
            .map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Delete, e))?;
        self.flush(ErrorSubject::Logs).await
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        // Record the purge point first: if we crash halfway through deleting, the leftovers at or
        // below it are ignored by `get_log_state` and removed by the next purge.
        self.write_meta(KEY_LAST_PURGED, &log_id, ErrorSubject::Logs)?;
        let mut batch = sled::Batch::default();
        for item in self.log.range(..=index_key(log_id.index)) {
            let (key, _) = item.map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Delete, e))?;
            batch.remove(key);
        }
        self.log
            .apply_batch(batch)
            .map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Delete, e))?;
        self.flush(ErrorSubject::Logs).await
    }
}
