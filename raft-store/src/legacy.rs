//! Stores written before the segment log kept the Raft log in sled, under `raft-log/` (trees
//! `raft_log`, entries under big-endian index keys, and `raft_meta`: vote, committed, last
//! purged), with `vote.mark` and `committed.mark` beside it. [`import`] moves such a store into
//! [`crate::wal`] once, on the first open by a newer `vnetd`; sled is opened for nothing else.
//!
//! The import is crash-safe: the new log is built whole in `wal.import/`, fsynced, and renamed to
//! `wal/`; only then are the old files removed. A crash before the rename leaves the old store,
//! imported again on the next open; a crash after it leaves `wal/` beside old files, which the
//! next open removes. The old store's own checks run first: sled repairs a damaged file by
//! keeping a consistent prefix, silently, so a vote older than `vote.mark` or a log short of
//! `committed.mark` is refused, as before, rather than carried over.

use std::path::{Path, PathBuf};

use openraft::{LogId, Vote};

use crate::log_store::decode_entry_bytes;
use crate::wal::Wal;
use crate::{Entry, NodeId};

/// Where a data directory keeps the sled log of older stores.
pub const LEGACY_DIR: &str = "raft-log";
const VOTE_MARK: &str = "vote.mark";
const COMMITTED_MARK: &str = "committed.mark";

/// Why an older store could not be imported. Each names the path at fault.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("cannot open the older Raft log database in {path}: {source}")]
    Sled { path: PathBuf, source: sled::Error },
    #[error("the older Raft log in {path} is damaged: {reason}")]
    Damaged { path: PathBuf, reason: String },
    #[error("cannot import the older Raft log into {path}: {reason}")]
    Write { path: PathBuf, reason: String },
}

/// What the old store held.
struct Old {
    vote: Option<Vote<NodeId>>,
    committed: Option<LogId<NodeId>>,
    purged: Option<LogId<NodeId>>,
    entries: Vec<Entry>,
}

/// Moves the sled store in `data_dir` (if there is one) into `wal_dir`. Returns whether it did.
pub fn import(data_dir: &Path, wal_dir: &Path) -> Result<bool, ImportError> {
    let legacy = data_dir.join(LEGACY_DIR);
    if !legacy.exists() {
        return Ok(false);
    }
    let write_err = |reason: String| ImportError::Write {
        path: wal_dir.to_path_buf(),
        reason,
    };
    if !wal_dir.exists() {
        let old = read_old(data_dir, &legacy)?;
        let staging = data_dir.join("wal.import");
        if staging.exists() {
            std::fs::remove_dir_all(&staging).map_err(|e| write_err(e.to_string()))?;
        }
        {
            let mut wal = Wal::open(&staging).map_err(|e| write_err(e.to_string()))?;
            if let Some(vote) = &old.vote {
                wal.save_vote(vote).map_err(|e| write_err(e.to_string()))?;
            }
            if let Some(purged) = old.purged {
                wal.purge(purged).map_err(|e| write_err(e.to_string()))?;
            }
            let live: Vec<Entry> = old
                .entries
                .into_iter()
                .filter(|e| old.purged.is_none_or(|p| e.log_id.index > p.index))
                .collect();
            for chunk in live.chunks(256) {
                if let Some(unsynced) = wal.append(chunk).map_err(|e| write_err(e.to_string()))? {
                    unsynced.sync().map_err(|e| write_err(e.to_string()))?;
                }
            }
            wal.save_committed(old.committed)
                .map_err(|e| write_err(e.to_string()))?;
        }
        sync_dir(&staging).map_err(write_err)?;
        std::fs::rename(&staging, wal_dir).map_err(|e| write_err(e.to_string()))?;
        sync_dir(data_dir).map_err(write_err)?;
    }
    std::fs::remove_dir_all(&legacy).map_err(|e| write_err(e.to_string()))?;
    for mark in [VOTE_MARK, COMMITTED_MARK] {
        match std::fs::remove_file(data_dir.join(mark)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(write_err(e.to_string())),
        }
    }
    sync_dir(data_dir).map_err(write_err)?;
    Ok(true)
}

fn sync_dir(dir: &Path) -> Result<(), String> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| format!("{}: {e}", dir.display()))
}

fn read_old(data_dir: &Path, legacy: &Path) -> Result<Old, ImportError> {
    let damaged = |reason: String| ImportError::Damaged {
        path: legacy.to_path_buf(),
        reason,
    };
    let sled_err = |source| ImportError::Sled {
        path: legacy.to_path_buf(),
        source,
    };
    let db = sled::Config::new().path(legacy).open().map_err(sled_err)?;
    let meta = db.open_tree("raft_meta").map_err(sled_err)?;
    let log = db.open_tree("raft_log").map_err(sled_err)?;
    fn json<T: serde::de::DeserializeOwned>(
        tree: &sled::Tree,
        key: &[u8],
    ) -> Result<Option<T>, String> {
        match tree.get(key).map_err(|e| e.to_string())? {
            Some(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| format!("{}: {e}", String::from_utf8_lossy(key))),
            None => Ok(None),
        }
    }
    let vote: Option<Vote<NodeId>> = json(&meta, b"vote").map_err(damaged)?;
    let committed: Option<Option<LogId<NodeId>>> = json(&meta, b"committed").map_err(damaged)?;
    let purged: Option<LogId<NodeId>> = json(&meta, b"last_purged").map_err(damaged)?;
    let mut entries = Vec::new();
    for item in log.iter() {
        let (key, value) = item.map_err(|e| damaged(e.to_string()))?;
        let key: [u8; 8] = key
            .as_ref()
            .try_into()
            .map_err(|_| damaged(format!("a log key of {} bytes", key.len())))?;
        let entry = decode_entry_bytes(u64::from_be_bytes(key), &value)
            .map_err(|e| damaged(e.to_string()))?;
        entries.push(entry);
    }

    let vote_mark = data_dir.join(VOTE_MARK);
    let marked: Option<Vote<NodeId>> = match std::fs::read(&vote_mark) {
        Ok(bytes) => Some(
            serde_json::from_slice(&bytes)
                .map_err(|e| damaged(format!("{} is damaged: {e}", vote_mark.display())))?,
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(damaged(format!("cannot read {}: {e}", vote_mark.display()))),
    };
    if let Some(marked) = marked {
        if vote.is_none_or(|vote| vote < marked) {
            return Err(damaged(format!(
                "its vote is missing or older than vote {marked} recorded in {}: the log file \
                 lost its newest writes",
                vote_mark.display()
            )));
        }
    }
    let committed_mark = data_dir.join(COMMITTED_MARK);
    let marked: Option<u64> = std::fs::read_to_string(&committed_mark)
        .ok()
        .and_then(|text| {
            text.trim_matches(|c: char| c.is_whitespace() || c == '\0')
                .parse()
                .ok()
        });
    let reached = entries
        .last()
        .map_or(0, |e| e.log_id.index)
        .max(purged.map_or(0, |p| p.index));
    if let Some(marked) = marked {
        if reached < marked {
            return Err(damaged(format!(
                "it reaches index {reached}, but {} records that index {marked} was committed \
                 here: the log file lost its newest writes",
                committed_mark.display()
            )));
        }
    }
    Ok(Old {
        vote,
        committed: committed.flatten(),
        purged,
        entries,
    })
}
