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
//!
//! The vote is mirrored in a small file beside the log (`vote.mark`, written after sled's
//! flush on every `save_vote`). sled recovers a damaged or emptied file by keeping its last
//! consistent prefix, silently; if that prefix has lost the vote (the file truncated or removed),
//! the node would start as if new and could vote twice in a term, and a leader that had
//! replicated to it would see its log go backwards. Beside it, `committed.mark` holds a recent
//! committed index (rewritten at most every [`COMMITTED_MARK_EVERY_MS`], by rename, not fsynced:
//! it may lag, never lead, since a node commits only entries it has fsynced). A healthy log
//! always reaches its committed index (in entries, or in the purge point after a snapshot).
//! [`LogStore::check_vote_mark`] refuses a store that lost either on open.
//!
//! Each value is an entry in [`encode_entry`]'s format: a version byte, the CRC-32 (IEEE) of the
//! body, then openraft's entry as JSON. A read checks the checksum, so a bit flipped on disk is
//! an error naming the index, never a different entry applied.

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
    /// Where the vote is mirrored (see the module doc).
    vote_mark: std::path::PathBuf,
    /// When `committed.mark` was last rewritten.
    committed_marked: std::sync::Arc<std::sync::Mutex<Option<std::time::Instant>>>,
}

/// How often at most `committed.mark` is rewritten.
pub const COMMITTED_MARK_EVERY_MS: u64 = 100;

/// Replaces `committed.mark` by rename, so a crash leaves the old mark or the new one, never a
/// torn one. Not fsynced: the mark may lag, and one a power cut leaves empty reads as absent.
fn replace_committed_mark(path: &std::path::Path, index: u64) -> std::io::Result<()> {
    let tmp = path.with_extension("mark.tmp");
    std::fs::write(&tmp, index.to_string())?;
    std::fs::rename(&tmp, path)
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
    let body = serde_json::to_vec(entry)?;
    let mut bytes = Vec::with_capacity(ENTRY_HEADER_BYTES + body.len());
    bytes.push(ENTRY_FORMAT_VERSION);
    bytes.extend_from_slice(&crc32fast::hash(&body).to_be_bytes());
    bytes.extend_from_slice(&body);
    Ok(bytes)
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
    pub(crate) fn open(
        db: &sled::Db,
        observer: SharedObserver,
        vote_mark: std::path::PathBuf,
    ) -> Result<Self, sled::Error> {
        Ok(Self {
            db: db.clone(),
            log: db.open_tree("raft_log")?,
            meta: db.open_tree("raft_meta")?,
            observer,
            vote_mark,
            committed_marked: Default::default(),
        })
    }

    fn committed_mark(&self) -> std::path::PathBuf {
        self.vote_mark.with_file_name("committed.mark")
    }

    /// Refuses a store whose vote is missing or older than the one mirrored in `vote.mark`: sled
    /// then kept only an old prefix of its file, or the file is gone. A store without a mark
    /// (first start, or written before marks existed) gets one.
    pub fn check_vote_mark(&self) -> Result<(), String> {
        let stored: Option<Vote<NodeId>> = self
            .read_meta(KEY_VOTE, ErrorSubject::Vote)
            .map_err(|e| e.to_string())?;
        let marked: Option<Vote<NodeId>> = match std::fs::read(&self.vote_mark) {
            Ok(bytes) => Some(
                serde_json::from_slice(&bytes)
                    .map_err(|e| format!("{} is damaged: {e}", self.vote_mark.display()))?,
            ),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(format!("cannot read {}: {e}", self.vote_mark.display())),
        };
        match (stored, marked) {
            (_, None) => match stored {
                Some(vote) => self.write_vote_mark(&vote).map_err(|e| e.to_string()),
                None => Ok(()),
            },
            (None, Some(marked)) => Err(format!(
                "the Raft log holds no vote, but {} records vote {marked}: the log file was \
                 removed, emptied or truncated",
                self.vote_mark.display()
            )),
            (Some(stored), Some(marked)) if stored < marked => Err(format!(
                "the Raft log's vote {stored} is older than vote {marked} recorded in {}: the log \
                 file lost its newest writes (truncated or overwritten)",
                self.vote_mark.display()
            )),
            (Some(_), Some(_)) => Ok(()),
        }?;
        let marked: u64 = match std::fs::read_to_string(self.committed_mark()) {
            // The mark is renamed into place without an fsync (it is advisory and may lag): after
            // a power cut some filesystems leave it empty, or zero-filled, though the store is
            // healthy. That says nothing, so it checks nothing.
            Ok(text)
                if text
                    .trim_matches(|c: char| c.is_whitespace() || c == '\0')
                    .is_empty() =>
            {
                return Ok(())
            }
            Ok(text) => text
                .trim()
                .parse()
                .map_err(|e| format!("{} is damaged: {e}", self.committed_mark().display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => {
                return Err(format!(
                    "cannot read {}: {e}",
                    self.committed_mark().display()
                ))
            }
        };
        let last_in_log = match self.log.last().map_err(|e| e.to_string())? {
            Some((key, _)) => key_index(&key).map_err(|e| e.to_string())?,
            None => 0,
        };
        let purged = self
            .last_purged()
            .map_err(|e| e.to_string())?
            .map_or(0, |id| id.index);
        let reached = last_in_log.max(purged);
        if reached < marked {
            return Err(format!(
                "the Raft log reaches index {reached}, but {} records that index {marked} was \
                 committed here: the log file lost its newest writes (truncated or overwritten)",
                self.committed_mark().display()
            ));
        }
        Ok(())
    }

    /// Writes `vote` to the mark file: a temporary file, fsynced, renamed over the mark, and the
    /// directory fsynced.
    fn write_vote_mark(&self, vote: &Vote<NodeId>) -> std::io::Result<()> {
        use std::io::Write;
        let bytes = serde_json::to_vec(vote).map_err(std::io::Error::other)?;
        let tmp = self.vote_mark.with_extension("mark.tmp");
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(&bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, &self.vote_mark)?;
        if let Some(dir) = self.vote_mark.parent() {
            std::fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
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
        // A damaged entry is refused, never served: openraft stops, and vnetd exits naming it.
        decode_entry_bytes(index, bytes)
            .map_err(|e| io_err(ErrorSubject::LogIndex(index), ErrorVerb::Read, e))
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
        // An operator's reset replaces the marks too, whatever they held.
        self.write_vote_mark(vote)
            .and_then(|()| replace_committed_mark(&self.committed_mark(), last.index))
            .map_err(|e| io_err(ErrorSubject::Vote, ErrorVerb::Write, e))
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
        self.flush(ErrorSubject::Vote).await?;
        // After sled's fsync, so the mark is never newer than what sled holds durably. Votes
        // change once per election: the extra fsyncs cost nothing on the write path.
        let store = self.clone();
        let vote = *vote;
        tokio::task::spawn_blocking(move || store.write_vote_mark(&vote))
            .await
            .map_err(|e| io_err(ErrorSubject::Vote, ErrorVerb::Write, e))?
            .map_err(|e| io_err(ErrorSubject::Vote, ErrorVerb::Write, e))
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError<NodeId>> {
        self.read_meta(KEY_VOTE, ErrorSubject::Vote)
    }

    async fn save_committed(
        &mut self,
        committed: Option<LogId<NodeId>>,
    ) -> Result<(), StorageError<NodeId>> {
        self.write_meta(KEY_COMMITTED, &committed, ErrorSubject::Store)?;
        let Some(committed) = committed else {
            return Ok(());
        };
        let due = {
            let mut last = self
                .committed_marked
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            let now = std::time::Instant::now();
            let due = last.is_none_or(|at| {
                now.duration_since(at) >= std::time::Duration::from_millis(COMMITTED_MARK_EVERY_MS)
            });
            if due {
                *last = Some(now);
            }
            due
        };
        if due {
            replace_committed_mark(&self.committed_mark(), committed.index)
                .map_err(|e| io_err(ErrorSubject::Store, ErrorVerb::Write, e))?;
        }
        Ok(())
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
            let bytes = encode_entry(&entry)
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
