//! openraft's `RaftLogStorage` on [`crate::wal`]: the Raft log, the vote, the purge point and the
//! committed index.
//!
//! Durability contract (what openraft relies on, and why each fsync is where it is):
//! - `save_vote` returns only after the vote is fsynced: a node that forgot its vote after a crash
//!   could vote twice in one term and let two leaders be elected.
//! - Every append is fsynced by the log's sync thread, in the order the appends were written.
//!   [`Durability`] says how far that has got.
//! - A follower's append reports completion through its callback only after the fsync: its
//!   acknowledgement is what the leader counts toward the commit quorum.
//! - The leader's own appends (with [`LogStore::acknowledge_own_appends_early`]) report
//!   completion as soon as they are written, so its fsync runs while the entries travel to the
//!   followers instead of before they leave. openraft then counts the leader's copy toward the
//!   quorum before it is on disk, so the commit index it computes may run ahead of disk. Nothing
//!   may act on such an index, and four gates see to it:
//!   - the state machine applies an entry only once this node's [`Durability`] has it
//!     (`StateMachineStore::apply`): a client's write is answered, and a read served, only after
//!     the leader's copy is on disk beside a follower's;
//!   - the leader tells followers a commit index only up to its [`Durability`]
//!     ([`Durability::cap_commit`], on every AppendEntries), so no follower applies an entry that
//!     a leader crash could still lose from a quorum;
//!   - `save_committed` records at most what is on disk, so a restart never re-applies past the
//!     log it finds;
//!   - a node answers an AppendEntries with a match only up to its [`Durability`] (the peer
//!     service waits for it): a node that stepped down just after an early acknowledgement may
//!     still have that entry's sync queued when the next leader asks whether its log matches.
//!
//!   With all four, an entry anyone acts on is on the disks of a quorum, as before; an entry the
//!   leader lost in a crash before its fsync was acknowledged to nobody, as with any entry a
//!   crashed leader had not yet committed.
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
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex, MutexGuard};
use std::time::Instant;

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{
    AnyError, ErrorSubject, ErrorVerb, LogId, OptionalSend, RaftLogReader, StorageError,
    StorageIOError, Vote,
};

use tokio::sync::{watch, Notify};

use crate::observer::SharedObserver;
use crate::wal::{Unsynced, Wal, WalError};
use crate::{Entry, NodeId, TypeConfig};

/// The log store. Clones share one open [`Wal`] and its sync thread.
#[derive(Debug, Clone)]
pub struct LogStore {
    wal: Arc<Mutex<Wal>>,
    durable: Arc<watch::Sender<Durable>>,
    held_back: Arc<HeldBack>,
    syncs: mpsc::Sender<SyncJob>,
    /// This node's id, once its own appends may be acknowledged before their fsync.
    early_for: Option<NodeId>,
}

/// How far the log is on disk, as the sync thread last found it.
#[derive(Debug, Clone, Default)]
struct Durable {
    /// The last entry on disk, of the log as it stands.
    upto: Option<LogId<NodeId>>,
    /// Bumped by every truncation, under the log's lock: a sync of writes made before it may
    /// not publish its position, which the truncation may have removed (and later appends
    /// refilled with other entries).
    epoch: u64,
    /// Set when some append was acknowledged before its fsync; until then every entry openraft
    /// knows of is on disk and the gates have nothing to hold back.
    early: bool,
    /// A sync failed. What the file holds is unknown from then on, so nothing more is ever
    /// counted durable, and every waiter gets this.
    failed: Option<String>,
}

impl Durable {
    /// `id`, or the last entry on disk if that is before it.
    fn on_disk(&self, id: Option<LogId<NodeId>>) -> Option<LogId<NodeId>> {
        if !self.early {
            return id;
        }
        match (id, self.upto) {
            (Some(id), Some(upto)) if upto.index < id.index => Some(upto),
            (Some(_), None) => None,
            (id, _) => id,
        }
    }
}

/// A read handle on how far this node's log is on disk: the gates that keep an early
/// acknowledgement from being acted on (see the module doc) wait on it.
#[derive(Debug, Clone)]
pub struct Durability {
    durable: watch::Receiver<Durable>,
    held_back: Arc<HeldBack>,
}

/// The highest commit index [`Durability::cap_commit`] kept from a follower, 0 for none since
/// it was last taken.
#[derive(Debug, Default)]
struct HeldBack {
    index: AtomicU64,
    notify: Notify,
}

impl Durability {
    /// The last entry known to be on disk.
    pub fn upto(&self) -> Option<LogId<NodeId>> {
        self.durable.borrow().upto
    }

    /// Waits until the entry at `index` is on disk. An error means a sync failed (or the log was
    /// closed): that entry may never be, and the caller must stop.
    pub async fn wait_for(&self, index: u64) -> Result<(), String> {
        let mut rx = self.durable.clone();
        let durable = rx
            .wait_for(|d| {
                !d.early || d.failed.is_some() || d.upto.is_some_and(|upto| upto.index >= index)
            })
            .await
            .map_err(|_| "the Raft log was closed".to_string())?;
        match &durable.failed {
            Some(e) => Err(e.clone()),
            None => Ok(()),
        }
    }

    /// `commit`, lowered to what is on disk here: the most a leader may tell its followers
    /// is committed.
    pub fn cap_commit(&self, commit: Option<LogId<NodeId>>) -> Option<LogId<NodeId>> {
        let capped = self.durable.borrow().on_disk(commit);
        if let Some(commit) = commit.filter(|_| capped != commit) {
            self.held_back
                .index
                .fetch_max(commit.index, Ordering::Relaxed);
            self.held_back.notify.notify_one();
        }
        capped
    }

    /// Waits until [`Durability::cap_commit`] has held a commit index back, and returns the
    /// highest it held back since the last call. Once the disk has it, a heartbeat tells the
    /// followers, which would otherwise learn it only with the next write or heartbeat (a
    /// follower's linearizable read waits for it).
    pub async fn held_back(&self) -> u64 {
        loop {
            let index = self.held_back.index.swap(0, Ordering::Relaxed);
            if index > 0 {
                return index;
            }
            self.held_back.notify.notified().await;
        }
    }
}

/// Called once the sync covering an append is done (or failed).
type Done = Box<dyn FnOnce(Result<(), String>) + Send>;

/// One write for the sync thread: the segment it went to and the last entry it wrote.
struct SyncJob {
    unsynced: Unsynced,
    upto: LogId<NodeId>,
    epoch: u64,
    /// Told when the fsync is done; `None` for an append already acknowledged.
    done: Option<Done>,
}

/// The log's sync thread: fsyncs writes in the order they were made and publishes how far the
/// log is on disk. Writes queued while one fsync runs share the next: one fsync of a segment,
/// made after all of them, covers all of them. Runs until every [`LogStore`] clone is dropped.
fn run_syncs(
    jobs: mpsc::Receiver<SyncJob>,
    durable: Arc<watch::Sender<Durable>>,
    observer: SharedObserver,
) {
    while let Ok(first) = jobs.recv() {
        let mut batch = vec![first];
        batch.extend(jobs.try_iter());
        let failed = durable.borrow().failed.clone();
        let synced = match failed {
            Some(e) => Err(e),
            None => sync_in_order(&batch, &*observer),
        };
        match &synced {
            // Writes are queued in the order they were made, so once the batch is synced the log
            // is on disk up to its last job of the current epoch.
            Ok(()) => {
                durable.send_if_modified(|d| {
                    let newest = batch
                        .iter()
                        .filter(|job| job.epoch == d.epoch)
                        .map(|job| job.upto)
                        .next_back();
                    match newest {
                        Some(newest) if d.upto.is_none_or(|upto| upto.index < newest.index) => {
                            d.upto = Some(newest);
                            true
                        }
                        _ => false,
                    }
                });
            }
            Err(e) => {
                tracing::error!(error = %e, "the Raft log's fsync failed; this node's Raft stops");
                durable.send_modify(|d| d.failed = Some(e.clone()));
            }
        }
        for job in batch {
            if let Some(done) = job.done {
                done(synced.clone());
            }
        }
    }
}

/// Fsyncs each segment the batch wrote to, in order, once: where a later job wrote to the same
/// segment, its fsync (made after both writes) covers the earlier one.
fn sync_in_order(batch: &[SyncJob], observer: &dyn crate::StoreObserver) -> Result<(), String> {
    for (k, job) in batch.iter().enumerate() {
        if batch
            .get(k + 1)
            .is_some_and(|next| next.unsynced.same_file(&job.unsynced))
        {
            continue;
        }
        let started = Instant::now();
        job.unsynced.sync().map_err(|e| e.to_string())?;
        observer.log_synced(started.elapsed());
    }
    Ok(())
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
    /// Takes over `wal`, whose every entry is on disk ([`Wal::open`] fsyncs what it finds), and
    /// starts its sync thread.
    pub(crate) fn new(wal: Wal, observer: SharedObserver) -> Self {
        let durable = Arc::new(
            watch::channel(Durable {
                upto: wal.last_log_id(),
                ..Durable::default()
            })
            .0,
        );
        let (syncs, jobs) = mpsc::channel();
        let thread_durable = durable.clone();
        std::thread::Builder::new()
            .name("raft-log-sync".into())
            .spawn(move || run_syncs(jobs, thread_durable, observer))
            .expect("spawn the Raft log's sync thread");
        Self {
            wal: Arc::new(Mutex::new(wal)),
            durable,
            held_back: Arc::default(),
            syncs,
            early_for: None,
        }
    }

    /// From now on, appends of the entries node `id` makes as leader are acknowledged to openraft
    /// once written, before their fsync (see the module doc for the gates this needs: the state
    /// machine from this store, and [`Durability::cap_commit`] on every AppendEntries this node
    /// sends). Without it, every append is acknowledged after its fsync.
    pub fn acknowledge_own_appends_early(mut self, id: NodeId) -> Self {
        self.early_for = Some(id);
        self
    }

    /// Appends `entries` as openraft's `append` does, telling no one when they are on disk: for
    /// tests, outside this crate, of what waits on [`Durability`] (openraft's callback cannot be
    /// made outside openraft).
    #[doc(hidden)]
    pub fn append_for_test(&self, entries: &[Entry]) -> Result<(), WalError> {
        self.append_then(entries, Box::new(|_| {}))
    }

    /// How far this log is on disk.
    pub fn durability(&self) -> Durability {
        Durability {
            durable: self.durable.subscribe(),
            held_back: self.held_back.clone(),
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

    /// Writes `entries` and queues their fsync; `done` is told once they are on disk, or at once
    /// when they are this node's own entries as leader and early acknowledgement is on. The
    /// fsync runs on the sync thread, so neither the executor nor readers wait on the disk (a
    /// lease renewal queued on the Raft core's worker, with its 800 ms TTL, would otherwise wait
    /// behind a slow disk: `a_slow_sync_holds_up_no_task_queued_behind_it`).
    fn append_then(&self, entries: &[Entry], done: Done) -> Result<(), WalError> {
        let Some(last) = entries.last().map(|entry| entry.log_id) else {
            done(Ok(()));
            return Ok(());
        };
        let mut wal = self.wal();
        // Only the leader of the current, established vote makes entries of that vote's leader
        // id; entries a follower receives carry another node's id or an older term's.
        let own = self.early_for.is_some_and(|id| {
            wal.vote().is_some_and(|vote| {
                vote.is_committed()
                    && vote.leader_id().voted_for() == Some(id)
                    && last.leader_id == *vote.leader_id()
            })
        });
        let Some(unsynced) = wal.append(entries)? else {
            done(Ok(()));
            return Ok(());
        };
        let epoch = self.durable.borrow().epoch;
        let done = if own {
            self.durable
                .send_if_modified(|d| !std::mem::replace(&mut d.early, true));
            done(Ok(()));
            None
        } else {
            Some(done)
        };
        // Queued under the log's lock, so the sync thread sees writes in the order they were made.
        self.queue_sync(SyncJob {
            unsynced,
            upto: last,
            epoch,
            done,
        })
    }

    /// Hands `job` to the sync thread. Call under the log's lock (see `append_then`).
    fn queue_sync(&self, job: SyncJob) -> Result<(), WalError> {
        self.syncs.send(job).map_err(|_| WalError::Io {
            path: "the Raft log's sync thread".into(),
            source: std::io::Error::other("it has stopped"),
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
        // Never past what is on disk here (see the module doc): `Wal::open` refuses a log that
        // does not reach its recorded committed index, and a restart re-applies up to it.
        let committed = self.durable.borrow().on_disk(committed);
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
        // openraft counts the entries as persisted once the callback is told (see the module
        // doc for when that may come before the fsync). A failed fsync leaves the file's state
        // unknown, so it stops Raft on this node rather than being retried.
        self.append_then(
            &entries,
            Box::new(move |synced| {
                callback.log_io_completed(synced.map_err(std::io::Error::other));
            }),
        )
        .map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Write, e))
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        let mut wal = self.wal();
        let delete_err = |e| io_err(ErrorSubject::Logs, ErrorVerb::Delete, e);
        wal.truncate(log_id.index).map_err(delete_err)?;
        // Syncs queued before this may not publish (new epoch), and what is on disk is at most
        // the new end. The entries before the cut are on disk once every sync queued so far
        // has run, so a sync of the last segment, queued behind them, publishes the new end.
        let last = wal.last_log_id();
        let mut epoch = 0;
        self.durable.send_modify(|d| {
            d.epoch += 1;
            epoch = d.epoch;
            d.upto = d
                .upto
                .zip(last)
                .map(|(upto, last)| if last.index < upto.index { last } else { upto });
        });
        match (wal.tail(), last) {
            (Some(unsynced), Some(upto)) => self
                .queue_sync(SyncJob {
                    unsynced,
                    upto,
                    epoch,
                    done: None,
                })
                .map_err(delete_err),
            _ => Ok(()),
        }
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
    use std::time::Duration;

    /// Waits, after the first sync, for `gate` when it has one (so the sync is not yet
    /// published), and records whether it opened.
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

    /// A store whose first sync waits for the returned sender.
    fn gated_store(dir: &std::path::Path) -> (LogStore, mpsc::Sender<()>, Arc<Watcher>) {
        let watcher = Arc::new(Watcher::default());
        let (open, gate) = mpsc::channel();
        *watcher.gate.lock().unwrap() = Some(gate);
        let store = LogStore::new(Wal::open(dir).expect("open the log"), watcher.clone());
        (store, open, watcher)
    }

    /// Entries `from..=to` made by the leader `node` of `term`.
    fn entries(term: u64, node: NodeId, from: u64, to: u64) -> Vec<Entry> {
        (from..=to)
            .map(|index| Entry {
                log_id: LogId::new(CommittedLeaderId::new(term, node), index),
                payload: EntryPayload::Blank,
            })
            .collect()
    }

    /// Appends, returning a receiver told when the append is acknowledged.
    fn append(store: &LogStore, entries: &[Entry]) -> mpsc::Receiver<Result<(), String>> {
        let (tx, rx) = mpsc::channel();
        store
            .append_then(
                entries,
                Box::new(move |r| {
                    let _ = tx.send(r);
                }),
            )
            .expect("append");
        rx
    }

    /// This node (1) leads term 1, established.
    async fn leading(store: &mut LogStore) {
        store
            .save_vote(&Vote::new_committed(1, 1))
            .await
            .expect("vote");
    }

    fn index_of(id: Option<LogId<NodeId>>) -> Option<u64> {
        id.map(|id| id.index)
    }

    /// The task a worker would run next (a lease renewal, say) runs while that worker's task
    /// waits on a slow disk. The sync here waits until that task has run; were the fsync run
    /// inline on the one worker, that task would be stuck behind it and the wait would time out.
    #[test]
    fn a_slow_sync_holds_up_no_task_queued_behind_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (store, open, watcher) = gated_store(dir.path());
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
                let (tx, rx) = tokio::sync::oneshot::channel();
                store
                    .append_then(
                        &entries(1, 1, 1, 1),
                        Box::new(move |r| {
                            let _ = tx.send(r);
                        }),
                    )
                    .expect("append");
                rx.await.expect("told").expect("synced");
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

    /// The leader's own append is acknowledged before its fsync, and until the fsync is done
    /// nothing acts on it: it is not counted durable, not applied, not told to followers as
    /// committed, not recorded as committed.
    #[tokio::test]
    async fn an_own_append_is_acknowledged_at_once_and_gated_until_on_disk() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (store, open, _watcher) = gated_store(dir.path());
        let mut store = store.acknowledge_own_appends_early(1);
        leading(&mut store).await;
        let durability = store.durability();
        let acked = append(&store, &entries(1, 1, 1, 3));
        assert_eq!(
            acked.recv_timeout(Duration::from_secs(20)),
            Ok(Ok(())),
            "acknowledged while its fsync is held"
        );
        let committed = Some(LogId::new(CommittedLeaderId::new(1, 1), 3));
        assert_eq!(durability.upto(), None);
        assert_eq!(durability.cap_commit(committed), None);
        let held_back = tokio::time::timeout(Duration::from_secs(20), durability.held_back());
        assert_eq!(
            held_back.await,
            Ok(3),
            "the lowered commit is owed to the followers"
        );
        store.save_committed(committed).await.expect("save");
        assert_eq!(store.read_committed().await.expect("read"), None);
        let waiting = tokio::time::timeout(Duration::from_millis(50), durability.wait_for(3));
        assert!(waiting.await.is_err(), "applying waits for the fsync");

        open.send(()).expect("open the gate");
        tokio::time::timeout(Duration::from_secs(20), durability.wait_for(3))
            .await
            .expect("on disk once the fsync is done")
            .expect("no failure");
        assert_eq!(index_of(durability.upto()), Some(3));
        assert_eq!(durability.cap_commit(committed), committed);
        store.save_committed(committed).await.expect("save");
        assert_eq!(store.read_committed().await.expect("read"), committed);
    }

    /// The state machine applies the leader's own entry only once it is on disk: a client's write
    /// is answered, and a read served, only after that.
    #[tokio::test]
    async fn the_state_machine_applies_an_own_entry_only_once_on_disk() {
        use openraft::storage::RaftStateMachine;
        let dir = tempfile::tempdir().expect("tempdir");
        let watcher = Arc::new(Watcher::default());
        let (open, gate) = mpsc::channel();
        *watcher.gate.lock().unwrap() = Some(gate);
        let (store, mut state_machine) =
            crate::open_observed(dir.path(), watcher).expect("open the store");
        let mut store = store.acknowledge_own_appends_early(1);
        leading(&mut store).await;
        let written = entries(1, 1, 1, 1);
        let acked = append(&store, &written);
        assert_eq!(acked.recv_timeout(Duration::from_secs(20)), Ok(Ok(())));
        let view = state_machine.view();
        let applying = state_machine.apply(written.clone());
        tokio::pin!(applying);
        assert!(
            tokio::time::timeout(Duration::from_millis(50), &mut applying)
                .await
                .is_err(),
            "applied before the leader's copy was on disk"
        );
        open.send(()).expect("open the gate");
        let applied = tokio::time::timeout(Duration::from_secs(20), applying)
            .await
            .expect("applied once on disk")
            .expect("apply");
        assert_eq!(applied.len(), 1);
        assert_eq!(view.read(|a| a.last_applied), Some(written[0].log_id));
    }

    /// A follower's append (the leader is node 2) is acknowledged only once it is on disk: the
    /// leader counts that acknowledgement toward its quorum.
    #[tokio::test]
    async fn a_followers_append_is_acknowledged_only_after_its_fsync() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (store, open, _watcher) = gated_store(dir.path());
        let mut store = store.acknowledge_own_appends_early(1);
        store
            .save_vote(&Vote::new_committed(2, 2))
            .await
            .expect("vote");
        // This node's own entries of an earlier term, sent back by the new leader, are not its
        // own appends as leader either.
        let mut sent = entries(1, 1, 1, 2);
        sent.extend(entries(2, 2, 3, 3));
        for batch in [&sent[..2], &sent[2..]] {
            let acked = append(&store, batch);
            if batch[0].log_id.index == 1 {
                assert!(
                    acked.recv_timeout(Duration::from_millis(50)).is_err(),
                    "acknowledged before its fsync"
                );
                open.send(()).expect("open the gate");
            }
            assert_eq!(acked.recv_timeout(Duration::from_secs(20)), Ok(Ok(())));
        }
        assert_eq!(index_of(store.durability().upto()), Some(3));
    }

    /// A sync of writes made before a truncation never publishes a position past it, even when
    /// it completes after it; the truncation's own sync publishes the new end.
    #[tokio::test]
    async fn a_sync_from_before_a_truncation_publishes_nothing_past_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (store, open, _watcher) = gated_store(dir.path());
        let mut store = store.acknowledge_own_appends_early(1);
        leading(&mut store).await;
        let durability = store.durability();
        let acked = append(&store, &entries(1, 1, 1, 5));
        assert_eq!(acked.recv_timeout(Duration::from_secs(20)), Ok(Ok(())));
        // This node lost its leadership and a new leader's log conflicts from index 3 on.
        store
            .truncate(LogId::new(CommittedLeaderId::new(1, 1), 3))
            .await
            .expect("truncate");
        open.send(()).expect("open the gate");
        tokio::time::timeout(Duration::from_secs(20), durability.wait_for(2))
            .await
            .expect("the truncation's sync publishes")
            .expect("no failure");
        assert_eq!(index_of(durability.upto()), Some(2), "nothing past the cut");
        assert!(
            tokio::time::timeout(Duration::from_millis(50), durability.wait_for(3))
                .await
                .is_err(),
            "index 3 is not on disk: it was truncated"
        );
    }
}
