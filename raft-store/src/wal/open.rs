//! Opening the log: the lock, the metadata files, every segment read and checked whole, the
//! committed index checked against what the log reaches, and only then a torn tail cut off.

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;
use std::sync::Arc;

use openraft::{LogId, Vote};

use super::files::{read_json, sync_dir};
use super::segment::{scan, segment_name, Segment, HEADER_BYTES, SEGMENT_BYTES, SEGMENT_SUFFIX};
use super::{io_at, Wal, WalError, COMMITTED, LOCK, PURGED, VOTE};
use crate::NodeId;

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
            // One open serves both the scan and the appends that follow.
            let mut file = File::options()
                .read(true)
                .write(true)
                .open(&path)
                .map_err(io_at(&path))?;
            let mut bytes = Vec::new();
            file.read_to_end(&mut bytes).map_err(io_at(&path))?;
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
                // What the cut removes: up to the last byte that is not zero (past it is
                // unwritten space).
                let written = bytes.iter().rposition(|&b| b != 0).map_or(0, |at| at + 1);
                repaired = Some((
                    segment.path.clone(),
                    torn,
                    (written as u64).saturating_sub(scan.valid_len),
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
            prepared: None,
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
                segment
                    .cut(segment.len, wal.segment_bytes)
                    .map_err(io_at(&path))?;
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
        // What a previous run wrote but had not yet fsynced when it died may still be in the page
        // cache, where this open reads it as if it were on disk. The log store counts everything
        // it opens as durable, so it must be: one fsync per segment (a clean file costs next to
        // nothing) before anyone is told of it.
        for segment in &wal.segments {
            segment.file.sync_data().map_err(io_at(&segment.path))?;
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
}
