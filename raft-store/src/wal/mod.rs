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
//!   A segment is created at its full size ([`SEGMENT_BYTES`]), filled with zeros ahead of
//!   need (or, failing that, as a hole that reads as zeros), and records fill it from the front:
//!   a zero length followed only by zeros ends them.
//!   A new segment starts once the last passes [`SEGMENT_BYTES`], so a purge deletes whole
//!   files, or where an append does not follow the last entry (a gap, which the header's
//!   "last index before" keeps apart from a missing segment). Entries appended at an index the
//!   log already holds replace the log from there on.
//! - `next-segment.tmp`: the next segment while a thread fills it with zeros; removed on open.
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
//!   leave the records of that append torn: a disk writes each sector whole or not at all, so
//!   some sectors of the append hold its bytes and the others still hold zeros, in any mix, or
//!   (where the file grew) the records run past its end. [`Wal::open`] cuts the log at the first
//!   bad record if such a sector explains it: that record and everything after it were never
//!   reported durable. A bad record that no zero sector explains (a flipped bit, a length no
//!   writer produces), or a torn segment with segments after it, is refused by name: it means
//!   fsynced data changed. Zeros written over fsynced records look like a torn append; the
//!   `committed` check below refuses that where the lost records had been committed.
//! - A new segment's header is fsynced before the segment takes its full size (or, for one
//!   filled ahead, before it is renamed into place). A last segment that is only zeros, or only
//!   part of a header, is one whose creation a crash interrupted: it holds nothing and is removed.
//! - A truncation deletes whole segments from the last one backwards, then cuts the segment
//!   holding the new end (zeroing what it cut, so no old record can reappear behind a later
//!   append), then fsyncs. A crash part-way leaves a prefix of the old log that is
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

use crate::log_store::{decode_entry_bytes, encode_entry_into};
use crate::{Entry, NodeId};

mod files;
mod open;
mod segment;
#[cfg(test)]
mod tests;

use files::{replace_durably, sync_dir};
pub use segment::{check_segment, SEGMENT_BYTES, SEGMENT_MAGIC};
use segment::{segment_name, Segment, HEADER_BYTES, MAX_RECORD_BYTES, NO_PREVIOUS};

/// How often at most `committed` is rewritten.
pub const COMMITTED_EVERY: Duration = Duration::from_millis(100);

const LOCK: &str = "LOCK";
const VOTE: &str = "vote";
const PURGED: &str = "purged";
const COMMITTED: &str = "committed";
/// The next segment, filled with zeros ahead of need (see [`Wal::start_segment`]). Like every
/// `.tmp` file, [`Wal::open`] removes it.
const PREPARED: &str = "next-segment.tmp";

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

    /// Are both writes in the same segment file (so one fsync, after both, covers both)?
    pub fn same_file(&self, other: &Unsynced) -> bool {
        Arc::ptr_eq(&self.file, &other.file)
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
    /// The thread filling [`PREPARED`] with zeros for the next segment, if one was started.
    prepared: Option<std::thread::JoinHandle<bool>>,
}

impl Drop for Wal {
    fn drop(&mut self) {
        // Not left writing beside a later opener of the directory.
        if let Some(filling) = self.prepared.take() {
            let _ = filling.join();
        }
    }
}

/// Fills a new file at `path` with `len` zeros and fsyncs it; on failure removes it, so a full
/// disk is not left fuller. Returns whether the file is ready.
fn fill_with_zeros(path: &Path, len: u64) -> bool {
    let fill = || -> io::Result<()> {
        let mut file = File::create(path)?;
        let zeros = vec![0u8; 1 << 20];
        let mut left = len;
        while left > 0 {
            let n = left.min(zeros.len() as u64) as usize;
            file.write_all(&zeros[..n])?;
            left -= n as u64;
        }
        file.sync_all()
    };
    let filled = fill();
    if filled.is_err() {
        let _ = std::fs::remove_file(path);
    }
    filled.is_ok()
}

impl Wal {
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
            let start = buf.len();
            buf.extend_from_slice(&[0; 4]);
            encode_entry_into(entry, &mut buf).map_err(|e| WalError::Io {
                path: segment.path.clone(),
                source: io::Error::other(e),
            })?;
            let encoded = buf.len() - start - 4;
            let len = u32::try_from(encoded)
                .ok()
                .filter(|&len| len <= MAX_RECORD_BYTES)
                .ok_or_else(|| WalError::Io {
                    path: segment.path.clone(),
                    source: io::Error::other(format!(
                        "log entry {} encodes to {encoded} bytes, past the record limit",
                        entry.log_id.index,
                    )),
                })?;
            buf[start..start + 4].copy_from_slice(&len.to_le_bytes());
            added.push((segment.len + start as u64, entry.log_id));
        }
        if let Err(source) = segment.file.write_all_at(&buf, segment.len) {
            // Leave no partial record behind for a later append to follow.
            let _ = segment.cut(segment.len, self.segment_bytes);
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
    ///
    /// A segment is created at its full size, so that an append only fills space inside the
    /// file and its `fdatasync` has no new file size to commit. Best is space already written
    /// (with zeros): an `fdatasync` then flushes data alone, 8 to 14 % less time per sync on
    /// ext4 than a file that grows (measured in the demo cluster), and a lone write waits for
    /// two syncs in turn (the leader's, then a follower's). Writing 8 MiB takes tens of milliseconds, so the next
    /// segment is filled on a thread of its own while this one fills up; when it is not ready
    /// the segment starts as a hole of the same size instead, which reads as zeros too. The
    /// scan reads zeros as space not yet written, and a torn append as sectors left zero (see
    /// `segment::interrupted`).
    fn start_segment(&mut self, first: u64) -> Result<(), WalError> {
        // An empty last segment (the log purged past it) is replaced, not followed.
        if self.segments.last().is_some_and(|s| s.records.is_empty()) {
            let old = self.segments.pop().expect("checked");
            std::fs::remove_file(&old.path).map_err(io_at(&old.path))?;
        }
        let previous = self.segments.last().and_then(Segment::last_index);
        let path = self.dir.join(segment_name(first));
        let mut header = SEGMENT_MAGIC.to_vec();
        header.extend_from_slice(&previous.unwrap_or(NO_PREVIOUS).to_le_bytes());
        let size = self.segment_bytes.max(HEADER_BYTES as u64);
        // The header is durable first: neither the rename of a prepared file nor the new size
        // of a fresh one may reach the disk before it, or a crash could leave a segment whose
        // header reads as zeros.
        let prepared = self.take_prepared();
        let written = prepared.clone().unwrap_or_else(|| path.clone());
        let file = File::options()
            .read(true)
            .write(true)
            .create(prepared.is_none())
            .truncate(prepared.is_none())
            .open(&written)
            .map_err(io_at(&written))?;
        file.write_all_at(&header, 0).map_err(io_at(&written))?;
        file.sync_all().map_err(io_at(&written))?;
        match prepared {
            Some(prepared) => std::fs::rename(&prepared, &path).map_err(io_at(&path))?,
            None => {
                file.set_len(size).map_err(io_at(&path))?;
                file.sync_all().map_err(io_at(&path))?;
            }
        }
        sync_dir(&self.dir)?;
        self.segments.push(Segment {
            first,
            path,
            file: Arc::new(file),
            records: Vec::new(),
            len: HEADER_BYTES as u64,
            previous,
        });
        self.prepare_next(size);
        Ok(())
    }

    /// Starts filling the next segment's file with zeros, unless that is under way.
    fn prepare_next(&mut self, size: u64) {
        if self.prepared.is_some() {
            return;
        }
        let path = self.dir.join(PREPARED);
        self.prepared = std::thread::Builder::new()
            .name("vnet-wal-prepare".into())
            .spawn(move || fill_with_zeros(&path, size))
            .ok();
    }

    /// The next segment's file, if its thread has finished filling it (never waits for it).
    fn take_prepared(&mut self) -> Option<PathBuf> {
        if !self.prepared.as_ref()?.is_finished() {
            return None;
        }
        let filled = self.prepared.take()?.join().unwrap_or(false);
        filled.then(|| self.dir.join(PREPARED))
    }

    /// The last segment, to fsync: after it, every entry the log holds is on disk, provided each
    /// earlier segment was fsynced after its last write.
    pub fn tail(&self) -> Option<Unsynced> {
        self.segments.last().map(|s| Unsynced {
            file: s.file.clone(),
            path: s.path.clone(),
        })
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
                segment
                    .cut(len, self.segment_bytes)
                    .map_err(io_at(&segment.path))?;
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
