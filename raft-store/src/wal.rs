//! The Raft log on disk: append-only segment files, plus the vote, the purge point and a recent
//! committed index in small files beside them. Everything here is synchronous; [`crate::LogStore`]
//! adapts it to openraft and runs the fsyncs on a blocking thread.
//!
//! Layout of the directory (`wal/` under the data directory):
//! - `LOCK`: held with an exclusive file lock while the log is open, so a second `vnetd` (or an
//!   offline tool while `vnetd` runs) is refused instead of writing beside it.
//! - `<first index, 20 digits>.seg`: a segment. A 16-byte header, [`SEGMENT_MAGIC`] (which
//!   carries the format version) and the last index before the segment, then records: a `u32`
//!   little-endian length, then the entry in [`crate::log_store::encode_entry`]'s format
//!   (version byte, CRC-32, body). A segment holds consecutive indexes from the one in its name.
//!   A new segment starts once the last passes [`SEGMENT_BYTES`], so a purge deletes whole
//!   files, or where an append does not follow the last entry (a gap, which the header's
//!   "last index before" keeps apart from a missing segment). Entries appended at an index the
//!   log already holds replace the log from there on.
//! - `vote`: the vote (JSON). `purged`: the last purged log id (JSON). Each is replaced whole:
//!   a temporary file, fsynced, renamed over it, the directory fsynced.
//! - `committed`: a recent committed index (decimal), replaced by rename at most every
//!   [`COMMITTED_EVERY`], not fsynced. It may lag the truth, never lead it: a node commits only
//!   entries it has fsynced. It serves two ends: openraft re-applies up to it on restart (a
//!   stale one only means re-applying less), and [`Wal::open`] refuses a log that no longer
//!   reaches it (the log lost its newest writes).
//!
//! Why a crash leaves a log openraft can trust:
//! - An append writes its records and then `fdatasync`s the segment; only then is it reported
//!   durable (see [`crate::log_store`] for why that must be so). A crash before the fsync can
//!   leave the last records torn: a length that runs past the end of the file, a checksum that
//!   fails on the final record, or zeros where the filesystem extended the file but kept no
//!   data. Those records were never reported durable, so [`Wal::open`] cuts them off. Damage
//!   anywhere else (a bad record with good ones after it, a length no writer produces, a missing
//!   segment) is refused by name: it means fsynced data changed.
//! - A truncation deletes whole segments from the last one backwards, then cuts the segment
//!   holding the new end, then fsyncs. A crash part-way leaves a prefix of the old log that is
//!   still at least as long as the truncation asked: only the conflicting, uncommitted tail
//!   openraft wanted gone, which its leader will replace again.
//! - A purge records the purge point (fsynced) before deleting any segment, so a crash part-way
//!   leaves files wholly behind the purge point, which the next open deletes.

use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::{LogId, Vote};

use crate::log_store::{decode_entry_bytes, encode_entry};
use crate::{Entry, NodeId};

/// The first bytes of every segment: a name and the segment format version (the last byte).
/// After it, the header holds the index of the last entry before the segment (a `u64`,
/// little-endian; `u64::MAX` for none).
pub const SEGMENT_MAGIC: &[u8; 8] = b"vnetwal\x01";
const HEADER_BYTES: usize = 16;
const NO_PREVIOUS: u64 = u64::MAX;
/// A segment past this size is followed by a new one.
pub const SEGMENT_BYTES: u64 = 8 * 1024 * 1024;
/// No writer produces a record longer than this (entries are bounded far below it); a length
/// past it is damage, not a torn write.
const MAX_RECORD_BYTES: u32 = 256 * 1024 * 1024;
/// How often at most `committed` is rewritten.
pub const COMMITTED_EVERY: Duration = Duration::from_millis(100);

const LOCK: &str = "LOCK";
const VOTE: &str = "vote";
const PURGED: &str = "purged";
const COMMITTED: &str = "committed";
const SEGMENT_SUFFIX: &str = ".seg";

/// Why the log cannot be opened or used. Each names what is at fault.
#[derive(Debug, thiserror::Error)]
pub enum WalError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path} is damaged: {reason}")]
    Damaged { path: PathBuf, reason: String },
    #[error(
        "{path} is open in another process (a running vnetd on this data directory?); stop it first"
    )]
    Locked { path: PathBuf },
    #[error("append of log index {got}, but the log continues at {expected}")]
    OutOfOrder { got: u64, expected: u64 },
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> WalError + '_ {
    move |source| WalError::Io {
        path: path.to_path_buf(),
        source,
    }
}

#[derive(Debug)]
struct Segment {
    first: u64,
    path: PathBuf,
    file: Arc<File>,
    /// Where each record starts, and the id of its entry: record `k` holds index `first + k`.
    records: Vec<(u64, LogId<NodeId>)>,
    /// Bytes in the file (the next record goes here).
    len: u64,
    /// The last index before this segment when it was started (see [`SEGMENT_MAGIC`]).
    previous: Option<u64>,
}

impl Segment {
    /// The index of the last record; for an empty segment, the index before its first.
    fn last_index(&self) -> Option<u64> {
        (self.first + self.records.len() as u64).checked_sub(1)
    }
}

/// A segment written to and not yet fsynced.
#[derive(Debug)]
pub struct Unsynced {
    file: Arc<File>,
    path: PathBuf,
}

impl Unsynced {
    /// `fdatasync`s the segment: what was appended is durable once this returns `Ok`. After an
    /// error, what the file holds is unknown (the kernel may have dropped the dirty pages), so
    /// the caller must stop rather than retry.
    pub fn sync(&self) -> Result<(), WalError> {
        self.file.sync_data().map_err(io_at(&self.path))
    }
}

/// The open log: the segments with an in-memory index of their records, and the metadata.
#[derive(Debug)]
pub struct Wal {
    dir: PathBuf,
    _lock: File,
    segments: Vec<Segment>,
    vote: Option<Vote<NodeId>>,
    purged: Option<LogId<NodeId>>,
    committed: Option<LogId<NodeId>>,
    committed_written: Option<Instant>,
    /// [`SEGMENT_BYTES`], but for tests.
    segment_bytes: u64,
    /// What [`Wal::open`] cut off a torn tail, if it did: for the caller to log.
    pub repaired: Option<String>,
}

fn segment_name(first: u64) -> String {
    format!("{first:020}{SEGMENT_SUFFIX}")
}

/// Writes `bytes` as the whole of `path`: a temporary file, fsynced, renamed over it, the
/// directory fsynced. A crash leaves the old content or the new, whole.
fn replace_durably(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), WalError> {
    let path = dir.join(name);
    let tmp = dir.join(format!("{name}.tmp"));
    let mut file = File::create(&tmp).map_err(io_at(&tmp))?;
    file.write_all(bytes).map_err(io_at(&tmp))?;
    file.sync_all().map_err(io_at(&tmp))?;
    std::fs::rename(&tmp, &path).map_err(io_at(&path))?;
    sync_dir(dir)
}

fn sync_dir(dir: &Path) -> Result<(), WalError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_at(dir))
}

fn read_json<T: serde::de::DeserializeOwned>(
    dir: &Path,
    name: &str,
) -> Result<Option<T>, WalError> {
    let path = dir.join(name);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| WalError::Damaged {
                path,
                reason: e.to_string(),
            }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(WalError::Io { path, source }),
    }
}

/// What a segment's bytes hold: its records, and where the valid ones end.
struct Scan {
    previous: Option<u64>,
    records: Vec<(u64, LogId<NodeId>)>,
    valid_len: u64,
    /// Why the bytes after `valid_len` are not records (none when the file ends there).
    torn: Option<String>,
}

/// Reads the records of a segment whose first index is `first`. A bad record is torn (and the
/// scan ends there) only where a crash during an append could have left it: at the very end.
fn scan(path: &Path, first: u64, bytes: &[u8]) -> Result<Scan, WalError> {
    let damaged = |reason: String| WalError::Damaged {
        path: path.to_path_buf(),
        reason,
    };
    let magic = SEGMENT_MAGIC.len();
    let name_matches = bytes.len() >= magic - 1 && bytes[..magic - 1] == SEGMENT_MAGIC[..magic - 1];
    if bytes.len() < HEADER_BYTES {
        if name_matches || SEGMENT_MAGIC.starts_with(bytes) {
            // A segment whose creation a crash interrupted: it holds nothing.
            return Ok(Scan {
                previous: None,
                records: Vec::new(),
                valid_len: 0,
                torn: Some(format!("an unfinished header of {} bytes", bytes.len())),
            });
        }
        return Err(damaged("it does not start with a segment header".into()));
    }
    if !name_matches {
        return Err(damaged("it does not start with a segment header".into()));
    }
    if bytes[magic - 1] != SEGMENT_MAGIC[magic - 1] {
        return Err(damaged(format!(
            "segment format version {}, which this vnetd does not know (written by a newer vnetd)",
            bytes[magic - 1]
        )));
    }
    let previous = u64::from_le_bytes(bytes[magic..HEADER_BYTES].try_into().expect("8 bytes"));
    let previous = (previous != NO_PREVIOUS).then_some(previous);
    let mut records = Vec::new();
    let mut pos = HEADER_BYTES;
    while pos < bytes.len() {
        let index = first + records.len() as u64;
        let rest = &bytes[pos..];
        if rest[0] == 0 && rest.iter().all(|&b| b == 0) {
            return Ok(Scan {
                previous,
                records,
                valid_len: pos as u64,
                torn: Some(format!("{} zero bytes at offset {pos}", rest.len())),
            });
        }
        if rest.len() < 4 {
            return Ok(Scan {
                previous,
                records,
                valid_len: pos as u64,
                torn: Some(format!("a record length cut short at offset {pos}")),
            });
        }
        let len = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]);
        if len == 0 || len > MAX_RECORD_BYTES {
            return Err(damaged(format!(
                "the record of log index {index} at offset {pos} claims {len} bytes"
            )));
        }
        let end = 4 + len as usize;
        if rest.len() < end {
            return Ok(Scan {
                previous,
                records,
                valid_len: pos as u64,
                torn: Some(format!(
                    "the record of log index {index} at offset {pos} cut short"
                )),
            });
        }
        match decode_entry_bytes(index, &rest[4..end]) {
            Ok(entry) => records.push((pos as u64, entry.log_id)),
            // The last record of the file, unreadable: a write a crash interrupted.
            Err(e) if rest.len() == end => {
                return Ok(Scan {
                    previous,
                    records,
                    valid_len: pos as u64,
                    torn: Some(format!("{e} (the last record, at offset {pos})")),
                })
            }
            Err(e) => {
                return Err(damaged(format!(
                    "{e}, at offset {pos}, with records after it"
                )))
            }
        }
        pos += end;
    }
    Ok(Scan {
        previous,
        records,
        valid_len: pos as u64,
        torn: None,
    })
}

/// Reads a segment's bytes as [`Wal::open`] does, from memory: how many records are whole, and
/// why the bytes after them are a torn tail, if they are. For the fuzz targets: any bytes give
/// an answer or an error, never a panic.
pub fn check_segment(first: u64, bytes: &[u8]) -> Result<(usize, Option<String>), WalError> {
    let scan = scan(Path::new("the segment"), first, bytes)?;
    Ok((scan.records.len(), scan.torn))
}

impl Wal {
    /// Opens (creating if needed) the log in `dir`, checks it whole, and cuts off a torn tail
    /// (reported in [`Wal::repaired`]). A log that lost fsynced data is refused.
    pub fn open(dir: &Path) -> Result<Self, WalError> {
        std::fs::create_dir_all(dir).map_err(io_at(dir))?;
        let lock_path = dir.join(LOCK);
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io_at(&lock_path))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(WalError::Locked {
                    path: dir.to_path_buf(),
                })
            }
            Err(std::fs::TryLockError::Error(source)) => {
                return Err(WalError::Io {
                    path: lock_path,
                    source,
                })
            }
        }
        let vote: Option<Vote<NodeId>> = read_json(dir, VOTE)?;
        let purged: Option<LogId<NodeId>> = read_json(dir, PURGED)?;

        let mut firsts = Vec::new();
        for item in std::fs::read_dir(dir).map_err(io_at(dir))? {
            let item = item.map_err(io_at(dir))?;
            let name = item.file_name();
            let name = name.to_string_lossy();
            if name.ends_with(".tmp") {
                // A replacement a crash interrupted before its rename: the old file stands.
                let _ = std::fs::remove_file(item.path());
                continue;
            }
            let Some(stem) = name.strip_suffix(SEGMENT_SUFFIX) else {
                continue;
            };
            // Only the names this log writes: another spelling of an index (`5.seg`, `+5.seg`)
            // would read a file twice or not at all.
            match stem.parse::<u64>() {
                Ok(first) if segment_name(first) == *name => firsts.push(first),
                _ => {
                    return Err(WalError::Damaged {
                        path: item.path(),
                        reason: "a segment's name must be its first log index in 20 digits, \
                                 then .seg; this file is not the log's"
                            .into(),
                    })
                }
            }
        }
        firsts.sort_unstable();

        let mut segments: Vec<Segment> = Vec::new();
        let mut repaired = None;
        let count = firsts.len();
        for (n, first) in firsts.into_iter().enumerate() {
            let path = dir.join(segment_name(first));
            let bytes = std::fs::read(&path).map_err(io_at(&path))?;
            let scan = scan(&path, first, &bytes)?;
            let is_last = n + 1 == count;
            if let Some(torn) = &scan.torn {
                if !is_last {
                    return Err(WalError::Damaged {
                        path,
                        reason: format!("{torn}, and later segments follow it"),
                    });
                }
            }
            // Segments may leave gaps (an append past the end, after a snapshot), but each
            // records what came before it when it was started; a segment only ever loses its
            // tail while it is the last, so that must still be the segment before it.
            if let Some(before) = segments.last() {
                if scan.valid_len > 0 && scan.previous != before.last_index() {
                    return Err(WalError::Damaged {
                        path,
                        reason: format!(
                            "it follows log index {}, but the segment before it ends at {}: a \
                             segment is missing or was cut short",
                            scan.previous.map_or("none".into(), |p| p.to_string()),
                            before.last_index().map_or("none".into(), |p| p.to_string()),
                        ),
                    });
                }
            }
            let file = File::options()
                .read(true)
                .write(true)
                .open(&path)
                .map_err(io_at(&path))?;
            let torn = scan.torn;
            let mut segment = Segment {
                first,
                path,
                file: Arc::new(file),
                records: scan.records,
                len: scan.valid_len,
                previous: scan.previous,
            };
            if let Some(torn) = torn {
                repaired = Some((
                    segment.path.clone(),
                    torn,
                    bytes.len() as u64 - scan.valid_len,
                ));
                if scan.valid_len < HEADER_BYTES as u64 {
                    segment.len = 0;
                }
            }
            segments.push(segment);
        }

        let mut wal = Wal {
            dir: dir.to_path_buf(),
            _lock: lock,
            segments,
            vote,
            purged,
            committed: None,
            committed_written: None,
            segment_bytes: SEGMENT_BYTES,
            repaired: None,
        };
        // The committed index is checked against the log before anything on disk changes, so a
        // refused log is left exactly as it was found.
        let committed = wal.read_committed()?;
        let reached = wal.last_log_id().map_or(0, |id| id.index);
        if let Some(committed) = committed {
            if reached < committed {
                return Err(WalError::Damaged {
                    path: dir.to_path_buf(),
                    reason: format!(
                        "the log reaches index {reached}, but index {committed} was committed \
                         here (as `{COMMITTED}` records): the log lost its newest writes (a \
                         segment truncated, removed or overwritten)"
                    ),
                });
            }
        }
        // A node commits only under a leader whose vote it saved first, so a committed index
        // without a vote means the vote file was lost: started, the node could vote twice.
        if wal.vote.is_none() && committed.is_some() {
            return Err(WalError::Damaged {
                path: dir.join(VOTE),
                reason: format!(
                    "it is missing, but {COMMITTED} shows this node took part in commits: the \
                     vote was removed"
                ),
            });
        }
        if let Some((path, torn, cut)) = repaired {
            let segment = wal
                .segments
                .last_mut()
                .expect("the torn segment is the last");
            if segment.len == 0 {
                std::fs::remove_file(&path).map_err(io_at(&path))?;
                wal.segments.pop();
                sync_dir(dir)?;
            } else {
                segment.file.set_len(segment.len).map_err(io_at(&path))?;
                segment.file.sync_all().map_err(io_at(&path))?;
            }
            wal.repaired = Some(format!(
                "cut {cut} bytes off {} that an interrupted append left: {torn}",
                path.display()
            ));
        }
        wal.delete_purged_segments()?;
        // Whatever came before the first segment must have been purged.
        if let Some(first) = wal.segments.first() {
            if let Some(previous) = first.previous {
                if wal.purged.is_none_or(|purged| purged.index < previous) {
                    return Err(WalError::Damaged {
                        path: first.path.clone(),
                        reason: format!(
                            "it follows log index {previous}, which no segment holds and which \
                             was not purged: a segment is missing"
                        ),
                    });
                }
            }
        }
        Ok(wal)
    }

    /// Reads `committed`, if any. Empty or zero-filled reads as absent: it is renamed into
    /// place without an fsync, and after a power cut some filesystems leave it so.
    fn read_committed(&mut self) -> Result<Option<u64>, WalError> {
        let path = self.dir.join(COMMITTED);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(WalError::Io { path, source }),
        };
        let text = text.trim_matches(|c: char| c.is_whitespace() || c == '\0');
        if text.is_empty() {
            return Ok(None);
        }
        let index: u64 = text.parse().map_err(|e| WalError::Damaged {
            path: path.clone(),
            reason: format!("{e}"),
        })?;
        // openraft wants the whole log id; the entry (or the purge point) at that index has it.
        // A log that no longer reaches the index is refused by `open`.
        self.committed = self.log_id_at(index);
        Ok(Some(index))
    }

    fn log_id_at(&self, index: u64) -> Option<LogId<NodeId>> {
        if let Some(purged) = self.purged {
            if purged.index == index {
                return Some(purged);
            }
        }
        let segment = self.segment_of(index)?;
        segment
            .records
            .get((index - segment.first) as usize)
            .map(|&(_, id)| id)
    }

    fn segment_of(&self, index: u64) -> Option<&Segment> {
        let at = self.segments.partition_point(|s| s.first <= index);
        at.checked_sub(1).map(|i| &self.segments[i])
    }

    /// The last entry's id, or the purge point when no entry is past it.
    pub fn last_log_id(&self) -> Option<LogId<NodeId>> {
        let last = self
            .segments
            .iter()
            .rev()
            .find_map(|s| s.records.last().map(|&(_, id)| id));
        match (last, self.purged) {
            (Some(last), Some(purged)) if last.index <= purged.index => Some(purged),
            (Some(last), _) => Some(last),
            (None, purged) => purged,
        }
    }

    pub fn purged(&self) -> Option<LogId<NodeId>> {
        self.purged
    }

    pub fn vote(&self) -> Option<Vote<NodeId>> {
        self.vote
    }

    pub fn committed(&self) -> Option<LogId<NodeId>> {
        self.committed
    }

    /// Nothing at all recorded: no vote, no entry, no purge point.
    pub fn is_pristine(&self) -> bool {
        self.vote.is_none()
            && self.purged.is_none()
            && self.segments.iter().all(|s| s.records.is_empty())
    }

    /// Records the vote durably (see the module doc) before returning.
    pub fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), WalError> {
        let bytes = serde_json::to_vec(vote).map_err(|e| WalError::Io {
            path: self.dir.join(VOTE),
            source: io::Error::other(e),
        })?;
        replace_durably(&self.dir, VOTE, &bytes)?;
        self.vote = Some(*vote);
        Ok(())
    }

    /// Remembers the committed id, and rewrites `committed` if it is due (see the module doc).
    pub fn save_committed(&mut self, committed: Option<LogId<NodeId>>) -> Result<(), WalError> {
        self.committed = committed;
        let Some(committed) = committed else {
            return Ok(());
        };
        let now = Instant::now();
        if self
            .committed_written
            .is_some_and(|at| now.duration_since(at) < COMMITTED_EVERY)
        {
            return Ok(());
        }
        self.committed_written = Some(now);
        let path = self.dir.join(COMMITTED);
        let tmp = self.dir.join(format!("{COMMITTED}.tmp"));
        std::fs::write(&tmp, committed.index.to_string()).map_err(io_at(&tmp))?;
        std::fs::rename(&tmp, &path).map_err(io_at(&path))
    }

    /// Writes `entries` and returns the segment to fsync. Nothing is durable until the caller's
    /// [`Unsynced::sync`] returns. On a failed write the log is as before.
    pub fn append(&mut self, entries: &[Entry]) -> Result<Option<Unsynced>, WalError> {
        let Some(head) = entries.first() else {
            return Ok(None);
        };
        for (k, entry) in entries.iter().enumerate() {
            if entry.log_id.index != head.log_id.index + k as u64 {
                return Err(WalError::OutOfOrder {
                    got: entry.log_id.index,
                    expected: head.log_id.index + k as u64,
                });
            }
        }
        // Entries replace whatever the log holds from their first index on. openraft truncates
        // a conflicting tail itself before it appends; this keeps the log one sequence even if
        // it did not.
        // (An empty last segment, its first append cut short by a crash, answers the index before
        // it: the entries to replace are then in the segment before.)
        if self
            .segments
            .last()
            .and_then(Segment::last_index)
            .is_some_and(|last| last >= head.log_id.index)
        {
            self.truncate(head.log_id.index)?;
        }
        let roll = match self.segments.last() {
            None => true,
            Some(s) => {
                s.len >= self.segment_bytes || s.first + s.records.len() as u64 != head.log_id.index
            }
        };
        if roll {
            self.start_segment(head.log_id.index)?;
        }
        let segment = self.segments.last_mut().expect("a segment to write to");
        let mut buf = Vec::new();
        let mut added = Vec::with_capacity(entries.len());
        for entry in entries {
            let bytes = encode_entry(entry).map_err(|e| WalError::Io {
                path: segment.path.clone(),
                source: io::Error::other(e),
            })?;
            let len = u32::try_from(bytes.len())
                .ok()
                .filter(|&len| len <= MAX_RECORD_BYTES)
                .ok_or_else(|| WalError::Io {
                    path: segment.path.clone(),
                    source: io::Error::other(format!(
                        "log entry {} encodes to {} bytes, past the record limit",
                        entry.log_id.index,
                        bytes.len()
                    )),
                })?;
            added.push((segment.len + buf.len() as u64, entry.log_id));
            buf.extend_from_slice(&len.to_le_bytes());
            buf.extend_from_slice(&bytes);
        }
        if let Err(source) = segment.file.write_all_at(&buf, segment.len) {
            // Leave no partial record behind for a later append to follow.
            let _ = segment.file.set_len(segment.len);
            return Err(WalError::Io {
                path: segment.path.clone(),
                source,
            });
        }
        segment.len += buf.len() as u64;
        segment.records.extend(added);
        Ok(Some(Unsynced {
            file: segment.file.clone(),
            path: segment.path.clone(),
        }))
    }

    /// Starts an empty segment at `first`, durably (file and directory entry).
    fn start_segment(&mut self, first: u64) -> Result<(), WalError> {
        // An empty last segment (the log purged past it) is replaced, not followed.
        if self.segments.last().is_some_and(|s| s.records.is_empty()) {
            let old = self.segments.pop().expect("checked");
            std::fs::remove_file(&old.path).map_err(io_at(&old.path))?;
        }
        let previous = self.segments.last().and_then(Segment::last_index);
        let path = self.dir.join(segment_name(first));
        let mut file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .map_err(io_at(&path))?;
        let mut header = SEGMENT_MAGIC.to_vec();
        header.extend_from_slice(&previous.unwrap_or(NO_PREVIOUS).to_le_bytes());
        file.write_all(&header).map_err(io_at(&path))?;
        file.sync_all().map_err(io_at(&path))?;
        sync_dir(&self.dir)?;
        self.segments.push(Segment {
            first,
            path,
            file: Arc::new(file),
            records: Vec::new(),
            len: HEADER_BYTES as u64,
            previous,
        });
        Ok(())
    }

    /// Removes every entry at `index` and after, durably.
    pub fn truncate(&mut self, index: u64) -> Result<(), WalError> {
        let mut removed_files = false;
        while let Some(last) = self.segments.last() {
            if last.first < index {
                break;
            }
            let last = self.segments.pop().expect("checked");
            std::fs::remove_file(&last.path).map_err(io_at(&last.path))?;
            removed_files = true;
        }
        if removed_files {
            sync_dir(&self.dir)?;
        }
        if let Some(segment) = self.segments.last_mut() {
            let keep = (index - segment.first) as usize;
            if keep < segment.records.len() {
                let len = segment.records[keep].0;
                segment.file.set_len(len).map_err(io_at(&segment.path))?;
                segment.file.sync_all().map_err(io_at(&segment.path))?;
                segment.records.truncate(keep);
                segment.len = len;
            }
        }
        Ok(())
    }

    /// Records `upto` as purged (durably, first), then deletes the segments wholly behind it.
    pub fn purge(&mut self, upto: LogId<NodeId>) -> Result<(), WalError> {
        let bytes = serde_json::to_vec(&upto).map_err(|e| WalError::Io {
            path: self.dir.join(PURGED),
            source: io::Error::other(e),
        })?;
        replace_durably(&self.dir, PURGED, &bytes)?;
        self.purged = Some(upto);
        self.delete_purged_segments()
    }

    /// Deletes segments whose every entry is at or behind the purge point.
    fn delete_purged_segments(&mut self) -> Result<(), WalError> {
        let Some(purged) = self.purged else {
            return Ok(());
        };
        let behind = self
            .segments
            .iter()
            .take_while(|s| s.last_index().is_none_or(|last| last <= purged.index))
            .count();
        if behind == 0 {
            return Ok(());
        }
        for segment in self.segments.drain(..behind) {
            std::fs::remove_file(&segment.path).map_err(io_at(&segment.path))?;
        }
        sync_dir(&self.dir)
    }

    /// The entries from `start` up to (not including) `end`, those the log holds.
    pub fn read(&self, start: u64, end: Option<u64>) -> Result<Vec<Entry>, WalError> {
        let start = start.max(self.purged.map_or(0, |p| p.index + 1));
        let mut entries = Vec::new();
        let from = self
            .segments
            .partition_point(|s| s.first <= start)
            .saturating_sub(1);
        for segment in &self.segments[from..] {
            if end.is_some_and(|end| end <= segment.first) {
                break;
            }
            let Some(last) = segment.last_index() else {
                continue;
            };
            let lo = start.max(segment.first);
            // `end` is past `segment.first` here, so `end - 1` cannot underflow.
            let hi = end.map_or(last, |end| last.min(end - 1));
            if lo > hi {
                continue;
            }
            let k_lo = (lo - segment.first) as usize;
            let k_hi = (hi - segment.first) as usize;
            let from_byte = segment.records[k_lo].0;
            let to_byte = segment
                .records
                .get(k_hi + 1)
                .map_or(segment.len, |&(at, _)| at);
            let mut bytes = vec![0; (to_byte - from_byte) as usize];
            segment
                .file
                .read_exact_at(&mut bytes, from_byte)
                .map_err(io_at(&segment.path))?;
            let mut pos = 0;
            for index in lo..=hi {
                let len = bytes
                    .get(pos..pos + 4)
                    .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize);
                let record = len.and_then(|len| bytes.get(pos + 4..pos + 4 + len));
                let Some(record) = record else {
                    return Err(WalError::Damaged {
                        path: segment.path.clone(),
                        reason: format!("the record of log index {index} is cut short"),
                    });
                };
                let entry = decode_entry_bytes(index, record).map_err(|e| WalError::Damaged {
                    path: segment.path.clone(),
                    reason: e.to_string(),
                })?;
                pos += 4 + record.len();
                entries.push(entry);
            }
        }
        Ok(entries)
    }

    /// Empties the log down to a purge point at `last`, committed, with `vote`: the log of a
    /// node whose whole state is a snapshot at `last` (see [`crate::seed`]).
    ///
    /// Each step leaves a log that opens, so a crash part-way is finished by running the tool
    /// again: the purge point first (the log then reaches `last`), then `committed` at `last`
    /// (never past what the log reaches), then every remaining entry (past `last`, they belong
    /// to the state being replaced), then the vote.
    pub fn reset_to_snapshot(
        &mut self,
        last: LogId<NodeId>,
        vote: &Vote<NodeId>,
    ) -> Result<(), WalError> {
        self.purge(last)?;
        replace_durably(&self.dir, COMMITTED, last.index.to_string().as_bytes())?;
        self.committed = Some(last);
        self.truncate(0)?;
        self.save_vote(vote)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use openraft::{CommittedLeaderId, EntryPayload};
    use proptest::prelude::*;

    use super::*;

    fn entry(term: u64, index: u64) -> Entry {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(term, 1), index),
            payload: EntryPayload::Blank,
        }
    }

    fn entries(term: u64, from: u64, count: u64) -> Vec<Entry> {
        (from..from + count).map(|i| entry(term, i)).collect()
    }

    /// Appends and fsyncs, as `LogStore::append` does.
    fn append(wal: &mut Wal, batch: &[Entry]) {
        if let Some(unsynced) = wal.append(batch).expect("append") {
            unsynced.sync().expect("sync");
        }
    }

    fn open_small(dir: &Path) -> Wal {
        let mut wal = Wal::open(dir).expect("open");
        wal.segment_bytes = 256;
        wal
    }

    fn ids(wal: &Wal) -> Vec<LogId<NodeId>> {
        wal.read(0, None)
            .expect("read")
            .into_iter()
            .map(|e| e.log_id)
            .collect()
    }

    fn segment_files(dir: &Path) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .expect("list")
            .map(|e| e.expect("entry").path())
            .filter(|p| p.extension().is_some_and(|x| x == "seg"))
            .collect();
        files.sort();
        files
    }

    fn refused(dir: &Path) -> String {
        Wal::open(dir)
            .err()
            .unwrap_or_else(|| panic!("{} opened", dir.display()))
            .to_string()
    }

    #[test]
    fn a_second_opener_is_refused_while_the_first_holds_the_log() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = Wal::open(dir.path()).expect("open");
        let err = refused(dir.path());
        assert!(err.contains("open in another process"), "{err}");
        drop(first);
        Wal::open(dir.path()).expect("open once the first is gone");
    }

    #[test]
    fn a_torn_tail_is_cut_off_and_appends_go_on_after_it() {
        type Tear = fn(&Path);
        let tears: [(&str, Tear); 4] = [
            ("record cut short", |seg| {
                let len = std::fs::metadata(seg).expect("meta").len();
                cut_to(seg, len - 3);
            }),
            ("length cut short", |seg| {
                let mut f = File::options().append(true).open(seg).expect("open");
                f.write_all(&[7, 0]).expect("write");
            }),
            ("zeros", |seg| {
                let mut f = File::options().append(true).open(seg).expect("open");
                f.write_all(&[0; 300]).expect("write");
            }),
            ("last record's checksum", |seg| {
                let mut bytes = std::fs::read(seg).expect("read");
                let at = bytes.len() - 2;
                bytes[at] ^= 0x10;
                std::fs::write(seg, bytes).expect("write");
            }),
        ];
        for (what, tear) in tears {
            let dir = tempfile::tempdir().expect("tempdir");
            {
                let mut wal = Wal::open(dir.path()).expect("open");
                wal.save_vote(&Vote::new(1, 1)).expect("vote");
                append(&mut wal, &entries(1, 0, 5));
            }
            let segment = segment_files(dir.path()).pop().expect("a segment");
            tear(&segment);
            let mut wal = Wal::open(dir.path()).unwrap_or_else(|e| panic!("{what}: {e}"));
            let kept = if what == "record cut short" || what == "last record's checksum" {
                4
            } else {
                5
            };
            assert_eq!(ids(&wal), ids_of(&entries(1, 0, kept)), "{what}");
            assert!(
                wal.repaired.as_deref().is_some_and(|r| r.contains("cut")),
                "{what}"
            );
            append(&mut wal, &entries(2, kept, 2));
            drop(wal);
            let wal = Wal::open(dir.path()).expect("reopen");
            assert!(wal.repaired.is_none(), "{what}: the cut was durable");
            let mut expected = ids_of(&entries(1, 0, kept));
            expected.extend(ids_of(&entries(2, kept, 2)));
            assert_eq!(ids(&wal), expected, "{what}");
        }
    }

    /// Cuts (or extends) the file at `path` to `len` bytes, as a crash or a careless hand might.
    fn cut_to(path: &Path, len: u64) {
        File::options()
            .write(true)
            .open(path)
            .and_then(|f| f.set_len(len))
            .unwrap_or_else(|e| panic!("cut {}: {e}", path.display()));
    }

    fn ids_of(entries: &[Entry]) -> Vec<LogId<NodeId>> {
        entries.iter().map(|e| e.log_id).collect()
    }

    #[test]
    fn damage_before_the_tail_is_refused_by_name_and_left_as_found() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let mut wal = open_small(dir.path());
            wal.save_vote(&Vote::new(1, 1)).expect("vote");
            for i in 0..12 {
                append(&mut wal, &entries(1, i, 1));
            }
        }
        let files = segment_files(dir.path());
        assert!(files.len() >= 3, "{files:?}");

        // A flipped byte in the first record of the last segment, with records after it.
        let last = files.last().expect("last");
        let original = std::fs::read(last).expect("read");
        let mut bytes = original.clone();
        bytes[HEADER_BYTES + 10] ^= 0x01;
        std::fs::write(last, &bytes).expect("write");
        let err = refused(dir.path());
        assert!(err.contains(&last.display().to_string()), "{err}");
        assert!(err.contains("records after it"), "{err}");
        assert_eq!(std::fs::read(last).expect("read"), bytes, "left as found");
        std::fs::write(last, &original).expect("restore");

        // A length no writer produces.
        let mut bytes = original.clone();
        bytes[HEADER_BYTES..HEADER_BYTES + 4].copy_from_slice(&[0xA5; 4]);
        std::fs::write(last, &bytes).expect("write");
        let err = refused(dir.path());
        assert!(err.contains("claims"), "{err}");
        std::fs::write(last, &original).expect("restore");

        // A middle segment removed.
        let middle = &files[1];
        let saved = std::fs::read(middle).expect("read");
        std::fs::remove_file(middle).expect("remove");
        let err = refused(dir.path());
        assert!(err.contains("a segment is missing"), "{err}");
        std::fs::write(middle, &saved).expect("restore");

        // A torn earlier segment (its last record cut): not a crash's doing.
        let first = &files[0];
        let len = std::fs::metadata(first).expect("meta").len();
        cut_to(first, len - 1);
        let err = refused(dir.path());
        assert!(err.contains("later segments follow it"), "{err}");

        // A file that looks like a segment but is not named as the log names them.
        std::fs::write(dir.path().join("5.seg"), b"").expect("write");
        let err = refused(dir.path());
        assert!(err.contains("5.seg") && err.contains("20 digits"), "{err}");

        // A newer segment format.
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let mut wal = Wal::open(dir.path()).expect("open");
            append(&mut wal, &entries(1, 0, 1));
        }
        let seg = segment_files(dir.path()).pop().expect("segment");
        let mut bytes = std::fs::read(&seg).expect("read");
        bytes[7] = 2;
        std::fs::write(&seg, bytes).expect("write");
        let err = refused(dir.path());
        assert!(err.contains("segment format version 2"), "{err}");
    }

    #[test]
    fn a_log_short_of_its_committed_index_or_missing_its_vote_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let mut wal = Wal::open(dir.path()).expect("open");
            wal.save_vote(&Vote::new(1, 1)).expect("vote");
            append(&mut wal, &entries(1, 0, 8));
            wal.save_committed(Some(entry(1, 7).log_id))
                .expect("committed");
        }
        let seg = segment_files(dir.path()).pop().expect("segment");
        let whole = std::fs::read(&seg).expect("read");
        // Cut to three records: to a reader it looks like a torn tail, but entry 7 was
        // committed here, so fsynced data is gone.
        cut_to(&seg, whole.len() as u64 / 2);
        let cut = std::fs::read(&seg).expect("read");
        let err = refused(dir.path());
        assert!(err.contains("lost its newest writes"), "{err}");
        assert_eq!(std::fs::read(&seg).expect("read"), cut, "left as found");
        std::fs::write(&seg, &whole).expect("restore");
        assert_eq!(
            Wal::open(dir.path()).expect("whole again").committed(),
            Some(entry(1, 7).log_id)
        );

        std::fs::remove_file(dir.path().join(VOTE)).expect("remove the vote");
        let err = refused(dir.path());
        assert!(err.contains("the vote was removed"), "{err}");
    }

    #[test]
    fn an_overwrite_after_an_empty_last_segment_replaces_the_entries_before_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let mut wal = open_small(dir.path());
            append(&mut wal, &entries(1, 0, 4));
            // A new segment, its append cut short by a crash: only its header survives.
            wal.segment_bytes = 0;
            assert!(wal.append(&entries(1, 4, 1)).expect("append").is_some());
        }
        let newest = segment_files(dir.path()).pop().expect("segment");
        cut_to(&newest, HEADER_BYTES as u64);
        let mut wal = open_small(dir.path());
        assert_eq!(ids(&wal), ids_of(&entries(1, 0, 4)));
        append(&mut wal, &entries(2, 2, 3));
        let mut expected = ids_of(&entries(1, 0, 2));
        expected.extend(ids_of(&entries(2, 2, 3)));
        assert_eq!(ids(&wal), expected);
        drop(wal);
        assert_eq!(ids(&open_small(dir.path())), expected);
    }

    #[test]
    fn check_segment_reads_a_segment_as_open_does() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let mut wal = Wal::open(dir.path()).expect("open");
            append(&mut wal, &entries(1, 7, 3));
        }
        let bytes = std::fs::read(segment_files(dir.path()).pop().expect("segment")).expect("read");
        assert_eq!(check_segment(7, &bytes).expect("whole"), (3, None));
        let (records, torn) = check_segment(7, &bytes[..bytes.len() - 3]).expect("torn");
        assert_eq!(records, 2);
        assert!(torn.is_some_and(|t| t.contains("cut short")));
        let err = check_segment(8, &bytes).expect_err("another index");
        assert!(err.to_string().contains("log entry 8"), "{err}");
    }

    #[test]
    fn reset_to_snapshot_leaves_a_purge_point_and_the_vote() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let mut wal = open_small(dir.path());
            append(&mut wal, &entries(1, 0, 20));
            wal.reset_to_snapshot(entry(3, 10).log_id, &Vote::new(4, 2))
                .expect("reset");
        }
        let wal = Wal::open(dir.path()).expect("reopen");
        assert_eq!(ids(&wal), Vec::new());
        assert_eq!(wal.purged(), Some(entry(3, 10).log_id));
        assert_eq!(wal.last_log_id(), Some(entry(3, 10).log_id));
        assert_eq!(wal.committed(), Some(entry(3, 10).log_id));
        assert_eq!(wal.vote(), Some(Vote::new(4, 2)));
        assert!(!wal.is_pristine());
    }

    #[derive(Debug, Clone)]
    enum Op {
        /// Append `count` entries after the last one, `gap` indexes past it.
        Append {
            count: u64,
            gap: u64,
        },
        /// Append `count` entries replacing the tail from a point `at` (0..=1) along the log.
        Overwrite {
            count: u64,
            at: f64,
        },
        Truncate {
            at: f64,
        },
        Purge {
            at: f64,
        },
        Reopen,
        /// Reopen after a crash that tore `bytes` off the last segment's unsynced append.
        TornAppend {
            count: u64,
            bytes: u64,
        },
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (1..6u64, prop_oneof![6 => Just(0u64), 1 => 1..4u64])
                .prop_map(|(count, gap)| Op::Append { count, gap }),
            1 => (1..4u64, 0.0..1.0f64).prop_map(|(count, at)| Op::Overwrite { count, at }),
            1 => (0.0..1.0f64).prop_map(|at| Op::Truncate { at }),
            1 => (0.0..1.0f64).prop_map(|at| Op::Purge { at }),
            1 => Just(Op::Reopen),
            1 => (1..4u64, 1..40u64).prop_map(|(count, bytes)| Op::TornAppend { count, bytes }),
        ]
    }

    /// What the log should hold: entries past the purge point, by index.
    #[derive(Debug, Default)]
    struct Model {
        entries: BTreeMap<u64, LogId<NodeId>>,
        purged: Option<LogId<NodeId>>,
        term: u64,
    }

    impl Model {
        fn last(&self) -> Option<LogId<NodeId>> {
            self.entries.values().next_back().copied().or(self.purged)
        }
        fn next(&self) -> u64 {
            self.last().map_or(0, |id| id.index + 1)
        }
        /// An index `at` along the live entries, if there are any.
        fn pick(&self, at: f64) -> Option<u64> {
            let keys: Vec<u64> = self.entries.keys().copied().collect();
            (!keys.is_empty())
                .then(|| keys[((keys.len() as f64 * at) as usize).min(keys.len() - 1)])
        }
        fn write(&mut self, batch: &[Entry]) {
            let head = batch[0].log_id.index;
            self.entries.retain(|&i, _| i < head);
            for e in batch {
                self.entries.insert(e.log_id.index, e.log_id);
            }
        }
    }

    fn check(wal: &Wal, model: &Model) -> Result<(), TestCaseError> {
        let expected: Vec<LogId<NodeId>> = model.entries.values().copied().collect();
        prop_assert_eq!(ids(wal), expected);
        prop_assert_eq!(wal.last_log_id(), model.last());
        prop_assert_eq!(wal.purged(), model.purged);
        // Ranged reads see the same entries.
        for (&from, _) in model.entries.iter().step_by(3) {
            let got: Vec<u64> = wal
                .read(from, Some(from + 4))
                .expect("read")
                .iter()
                .map(|e| e.log_id.index)
                .collect();
            let want: Vec<u64> = model
                .entries
                .range(from..from + 4)
                .map(|(&i, _)| i)
                .collect();
            prop_assert_eq!(got, want);
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

        /// Any sequence of appends, overwrites, truncations, purges, reopens and torn appends
        /// leaves exactly the entries a simple model says, through small segments.
        #[test]
        fn the_log_matches_a_model_across_reopens_and_torn_appends(
            ops in prop::collection::vec(op(), 1..60)
        ) {
            let dir = tempfile::tempdir().expect("tempdir");
            let mut wal = open_small(dir.path());
            wal.save_vote(&Vote::new(1, 1)).expect("vote");
            let mut model = Model { term: 1, ..Model::default() };
            for op in ops {
                match op {
                    Op::Append { count, gap } => {
                        // A gap only ever follows a purge of everything (a snapshot past the
                        // log's end) in openraft, but the log keeps any order it is given.
                        let batch = entries(model.term, model.next() + gap, count);
                        append(&mut wal, &batch);
                        model.write(&batch);
                    }
                    Op::Overwrite { count, at } => {
                        let Some(from) = model.pick(at) else { continue };
                        model.term += 1;
                        let batch = entries(model.term, from, count);
                        append(&mut wal, &batch);
                        model.write(&batch);
                    }
                    Op::Truncate { at } => {
                        let Some(from) = model.pick(at) else { continue };
                        wal.truncate(from).expect("truncate");
                        model.entries.retain(|&i, _| i < from);
                    }
                    Op::Purge { at } => {
                        let Some(upto) = model.pick(at) else { continue };
                        let id = model.entries[&upto];
                        wal.purge(id).expect("purge");
                        model.entries.retain(|&i, _| i > upto);
                        model.purged = Some(id);
                    }
                    Op::Reopen => {
                        drop(wal);
                        wal = open_small(dir.path());
                    }
                    Op::TornAppend { count, bytes } => {
                        let batch = entries(model.term, model.next(), count);
                        // Written, never synced, then the tail torn off: at most the whole
                        // records that survive are kept.
                        wal.append(&batch).expect("append");
                        drop(wal);
                        let seg = segment_files(dir.path()).pop().expect("a segment");
                        let len = std::fs::metadata(&seg).expect("meta").len();
                        cut_to(&seg, len.saturating_sub(bytes).max(HEADER_BYTES as u64));
                        wal = open_small(dir.path());
                        let survived: Vec<Entry> = batch
                            .into_iter()
                            .filter(|e| wal.log_id_at(e.log_id.index) == Some(e.log_id))
                            .collect();
                        prop_assert!(survived.len() < count as usize, "a torn append kept all");
                        if !survived.is_empty() {
                            model.write(&survived);
                        }
                    }
                }
                check(&wal, &model)?;
            }
            drop(wal);
            check(&open_small(dir.path()), &model)?;
        }
    }
}
