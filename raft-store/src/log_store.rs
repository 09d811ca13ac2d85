//! openraft's `RaftLogStorage` on [`crate::wal`]: the Raft log, the vote, the purge point and the
//! committed index.
//!
//! Durability contract (what openraft relies on, and why each fsync is where it is):
//! - `save_vote` returns only after the vote is fsynced: a node that forgot its vote after a crash
//!   could vote twice in one term and let two leaders be elected.
//! - `append` reports completion through its callback only after the entries are fsynced: the
//!   leader counts a follower's acknowledgement toward the commit quorum, and a client's write is
//!   acknowledged once committed, so an acknowledged entry must already be on a quorum of disks.
//!   The records are written under the log's lock; the `fdatasync` runs on a blocking thread
//!   after it, so it neither stalls the executor nor holds up readers.
//! - `truncate` and `purge` fsync too (the order of their steps is argued in [`crate::wal`]).
//!   They, and `save_vote`, run under the log's lock on the calling thread: each happens once
//!   per conflict, snapshot or election, not per write.
//! - `save_committed` does not fsync: a stale committed index only means re-applying less on
//!   restart, and the leader tells a restarted node the commit index again.
//!
//! Each record holds an entry in [`encode_entry`]'s format: a version byte, the CRC-32 (IEEE) of
//! the body, then openraft's entry as JSON. A read checks the checksum and the index, so a bit
//! flipped on disk is an error naming the index, never a different entry applied.

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::sync::{Arc, Mutex, MutexGuard};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{
    AnyError, ErrorSubject, ErrorVerb, LogId, OptionalSend, RaftLogReader, StorageError,
    StorageIOError, Vote,
};

use crate::observer::SharedObserver;
use crate::wal::{Unsynced, Wal, WalError};
use crate::{Entry, NodeId, TypeConfig};

/// The log store. Clones share one open [`Wal`].
#[derive(Debug, Clone)]
pub struct LogStore {
    wal: Arc<Mutex<Wal>>,
    observer: SharedObserver,
}

/// The version byte of the entry format written now: 1, then the CRC-32 (big-endian) of the
/// body, then the body (the entry as JSON).
///
/// Compatibility: entries written before the format had a version byte are bare JSON objects,
/// so their first byte is always `{` (0x7B), which no version byte will ever be; they are read
/// as version 0, without a checksum, and a store holds them only until they are purged behind a
/// snapshot. A later format takes the next version byte, and a reader refuses a version it does
/// not know (a store written by a newer `vnetd`) rather than guess. Snapshots carry their own
/// version and checksum (`snapshot_file`).
pub const ENTRY_FORMAT_VERSION: u8 = 1;
const ENTRY_HEADER_BYTES: usize = 5;

/// An entry as stored: version byte, CRC-32 of the body, body.
pub fn encode_entry(entry: &Entry) -> Result<Vec<u8>, serde_json::Error> {
    let mut bytes = Vec::new();
    encode_entry_into(entry, &mut bytes)?;
    Ok(bytes)
}

/// [`encode_entry`], appended to `buf` in place (the segment log writes many into one buffer).
/// On an error `buf` may hold part of the entry.
pub fn encode_entry_into(entry: &Entry, buf: &mut Vec<u8>) -> Result<(), serde_json::Error> {
    let start = buf.len();
    buf.push(ENTRY_FORMAT_VERSION);
    buf.extend_from_slice(&[0; 4]);
    serde_json::to_writer(&mut *buf, entry)?;
    let crc = crc32fast::hash(&buf[start + ENTRY_HEADER_BYTES..]);
    buf[start + 1..start + ENTRY_HEADER_BYTES].copy_from_slice(&crc.to_be_bytes());
    Ok(())
}

/// Why a stored entry cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum EntryError {
    #[error("log entry {index} is damaged: {reason}")]
    Damaged { index: u64, reason: String },
    #[error(
        "log entry {index} has format version {version}, which this vnetd does not know (the \
         store was written by a newer vnetd)"
    )]
    UnknownVersion { index: u64, version: u8 },
}

/// Reads an entry stored under `index` in either format (see [`ENTRY_FORMAT_VERSION`]),
/// checking its checksum and that it is the entry of that index.
pub fn decode_entry_bytes(index: u64, bytes: &[u8]) -> Result<Entry, EntryError> {
    let damaged = |reason: String| EntryError::Damaged { index, reason };
    let body = match bytes.first() {
        Some(b'{') => bytes,
        Some(&ENTRY_FORMAT_VERSION) => {
            if bytes.len() < ENTRY_HEADER_BYTES {
                return Err(damaged(format!(
                    "{} bytes, shorter than the {ENTRY_HEADER_BYTES}-byte header",
                    bytes.len()
                )));
            }
            let stored = u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]);
            let body = &bytes[ENTRY_HEADER_BYTES..];
            let actual = crc32fast::hash(body);
            if stored != actual {
                return Err(damaged(format!(
                    "CRC-32 mismatch (stored {stored:08x}, computed {actual:08x})"
                )));
            }
            body
        }
        Some(&version) => return Err(EntryError::UnknownVersion { index, version }),
        None => return Err(damaged("the value is empty".to_string())),
    };
    let entry: Entry =
        serde_json::from_slice(body).map_err(|e| damaged(format!("not a log entry: {e}")))?;
    if entry.log_id.index != index {
        return Err(damaged(format!(
            "stored under index {index}, it says it is index {}",
            entry.log_id.index
        )));
    }
    Ok(entry)
}

fn io_err(
    subject: ErrorSubject<NodeId>,
    verb: ErrorVerb,
    e: impl std::error::Error + 'static,
) -> StorageError<NodeId> {
    StorageIOError::new(subject, verb, AnyError::new(&e)).into()
}

impl LogStore {
    pub(crate) fn new(wal: Wal, observer: SharedObserver) -> Self {
        Self {
            wal: Arc::new(Mutex::new(wal)),
            observer,
        }
    }

    fn wal(&self) -> MutexGuard<'_, Wal> {
        // Every change to `Wal` completes or leaves it as before, so a panic elsewhere while the
        // lock was held leaves nothing half-done to guard against.
        self.wal.lock().unwrap_or_else(|p| p.into_inner())
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
        self.wal()
            .reset_to_snapshot(last, vote)
            .map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Write, e))
    }

    /// Is anything at all on disk? A pristine store is the only kind a node may bootstrap.
    pub fn is_pristine(&self) -> Result<bool, StorageError<NodeId>> {
        Ok(self.wal().is_pristine())
    }

    /// Fsyncs what an append wrote, on a blocking thread.
    ///
    /// The Raft core waits for this either way, but the executor must not: a task queued on the
    /// same worker (a lease renewal, with its 800 ms TTL) would wait behind a slow disk
    /// (`a_slow_sync_holds_up_no_task_queued_behind_it`). `block_in_place` would avoid both the
    /// stall and the two wake-ups of the trip here, but handing the worker's queue to another
    /// thread on every fsync measured slower for a lone writer (465 against 508 writes/s in
    /// alternating runs), so the blocking thread stays.
    async fn sync(&self, unsynced: Unsynced) -> Result<(), WalError> {
        let observer = self.observer.clone();
        tokio::task::spawn_blocking(move || {
            let started = std::time::Instant::now();
            let synced = unsynced.sync();
            observer.log_synced(started.elapsed());
            synced
        })
        .await
        .unwrap_or_else(|e| {
            Err(WalError::Io {
                path: "the Raft log's sync task".into(),
                source: std::io::Error::other(e),
            })
        })
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
        if end.is_some_and(|end| end <= start) {
            return Ok(Vec::new());
        }
        // A damaged entry is refused, never served: openraft stops, and vnetd exits naming it.
        self.wal()
            .read(start, end)
            .map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Read, e))
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError<NodeId>> {
        let wal = self.wal();
        Ok(LogState {
            last_purged_log_id: wal.purged(),
            last_log_id: wal.last_log_id(),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError<NodeId>> {
        // Votes change once per election: writing and fsyncing under the lock costs nothing on
        // the write path.
        self.wal()
            .save_vote(vote)
            .map_err(|e| io_err(ErrorSubject::Vote, ErrorVerb::Write, e))
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError<NodeId>> {
        Ok(self.wal().vote())
    }

    async fn save_committed(
        &mut self,
        committed: Option<LogId<NodeId>>,
    ) -> Result<(), StorageError<NodeId>> {
        self.wal()
            .save_committed(committed)
            .map_err(|e| io_err(ErrorSubject::Store, ErrorVerb::Write, e))
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<NodeId>>, StorageError<NodeId>> {
        Ok(self.wal().committed())
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
        let entries: Vec<Entry> = entries.into_iter().collect();
        let written = self.wal().append(&entries);
        let synced = match written {
            Ok(Some(unsynced)) => self.sync(unsynced).await,
            Ok(None) => Ok(()),
            Err(e) => Err(e),
        };
        // Only now, with the entries fsynced, may openraft count them as persisted (see the
        // module doc: acknowledgements and commits rest on this). A failed fsync leaves the
        // file's state unknown, so the error stops Raft on this node rather than retrying.
        match synced {
            Ok(()) => {
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                callback.log_io_completed(Err(std::io::Error::other(e.to_string())));
                Err(io_err(ErrorSubject::Logs, ErrorVerb::Write, e))
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        self.wal()
            .truncate(log_id.index)
            .map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Delete, e))
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        self.wal()
            .purge(log_id)
            .map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Delete, e))
    }
}

#[cfg(test)]
mod entry_format_tests {
    use super::*;
    use openraft::{CommittedLeaderId, EntryPayload};

    fn entry(index: u64) -> Entry {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(3, 1), index),
            payload: EntryPayload::Blank,
        }
    }

    #[test]
    fn an_entry_round_trips_and_every_flipped_byte_is_caught() {
        let bytes = encode_entry(&entry(42)).expect("encode");
        assert_eq!(bytes[0], ENTRY_FORMAT_VERSION);
        assert_eq!(decode_entry_bytes(42, &bytes).expect("decode"), entry(42));
        for at in 0..bytes.len() {
            let mut damaged = bytes.clone();
            damaged[at] ^= 0x40;
            let err = decode_entry_bytes(42, &damaged).expect_err("a flipped byte");
            assert!(err.to_string().contains("log entry 42"), "{err}");
        }
        for len in 0..bytes.len() {
            let err = decode_entry_bytes(42, &bytes[..len]).expect_err("truncated");
            assert!(err.to_string().contains("42"), "{err}");
        }
    }

    #[test]
    fn entries_written_before_the_version_byte_are_read() {
        let legacy = serde_json::to_vec(&entry(7)).expect("json");
        assert_eq!(decode_entry_bytes(7, &legacy).expect("legacy"), entry(7));
        let err = decode_entry_bytes(8, &legacy).expect_err("wrong index");
        assert!(err.to_string().contains("log entry 8"), "{err}");
    }

    #[test]
    fn a_newer_version_is_refused_by_name() {
        let mut bytes = encode_entry(&entry(5)).expect("encode");
        bytes[0] = 9;
        let err = decode_entry_bytes(5, &bytes).expect_err("unknown version");
        assert!(err.to_string().contains("format version 9"), "{err}");
    }
}

#[cfg(test)]
mod sync_tests {
    use super::*;
    use crate::observer::StoreObserver;
    use openraft::{CommittedLeaderId, EntryPayload};
    use std::sync::mpsc;
    use std::time::Duration;

    /// Waits, in the sync, for `gate` when it has one, and records whether it opened.
    #[derive(Debug, Default)]
    struct Watcher {
        gate: Mutex<Option<mpsc::Receiver<()>>>,
        gate_opened: Mutex<Option<bool>>,
    }

    impl StoreObserver for Watcher {
        fn log_synced(&self, _took: Duration) {
            if let Some(gate) = self.gate.lock().unwrap().take() {
                let opened = gate.recv_timeout(Duration::from_secs(20)).is_ok();
                *self.gate_opened.lock().unwrap() = Some(opened);
            }
        }
        fn snapshot_built(&self, _took: Duration, _bytes: u64) {}
    }

    fn store(dir: &std::path::Path, watcher: Arc<Watcher>) -> LogStore {
        LogStore::new(Wal::open(dir).expect("open the log"), watcher)
    }

    fn unsynced(store: &LogStore, index: u64) -> Unsynced {
        let entry = Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
            payload: EntryPayload::Blank,
        };
        store
            .wal()
            .append(&[entry])
            .expect("append")
            .expect("an append leaves something to sync")
    }

    /// The task a worker would run next (a lease renewal, say) runs while that worker's task
    /// waits on a slow disk. The sync here waits until that task has run; were the fsync run
    /// inline on the one worker, that task would be stuck behind it and the wait would time out.
    #[test]
    fn a_slow_sync_holds_up_no_task_queued_behind_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let watcher = Arc::new(Watcher::default());
        let (open, gate) = mpsc::channel();
        *watcher.gate.lock().unwrap() = Some(gate);
        let store = store(dir.path(), watcher.clone());
        // One worker, so a task stuck behind the sync would have nowhere else to run.
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async move {
            tokio::spawn(async move {
                // Spawned from a worker, this lands in that worker's next-task slot.
                let queued = tokio::spawn(async move {
                    let _ = open.send(());
                });
                store.sync(unsynced(&store, 1)).await.expect("sync");
                queued.await.expect("the queued task");
            })
            .await
            .expect("task")
        });
        assert_eq!(
            *watcher.gate_opened.lock().unwrap(),
            Some(true),
            "the task queued behind the sync ran while it was under way"
        );
    }
}
