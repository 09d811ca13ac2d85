//! One segment file: its name, its header, and reading its records back, as [`super::Wal::open`]
//! and the fuzz target do. The format is in the module doc of [`super`].

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use openraft::LogId;

use super::WalError;
use crate::log_store::decode_entry_bytes;
use crate::NodeId;

/// The first bytes of every segment: a name and the segment format version (the last byte).
/// After it, the header holds the index of the last entry before the segment (a `u64`,
/// little-endian; `u64::MAX` for none).
pub const SEGMENT_MAGIC: &[u8; 8] = b"vnetwal\x01";
pub(super) const HEADER_BYTES: usize = 16;
pub(super) const NO_PREVIOUS: u64 = u64::MAX;
/// A segment past this size is followed by a new one.
pub const SEGMENT_BYTES: u64 = 8 * 1024 * 1024;
/// No writer produces a record longer than this (entries are bounded far below it); a length
/// past it is damage, not a torn write.
pub(super) const MAX_RECORD_BYTES: u32 = 256 * 1024 * 1024;
pub(super) const SEGMENT_SUFFIX: &str = ".seg";

#[derive(Debug)]
pub(super) struct Segment {
    pub(super) first: u64,
    pub(super) path: PathBuf,
    pub(super) file: Arc<File>,
    /// Where each record starts, and the id of its entry: record `k` holds index `first + k`.
    pub(super) records: Vec<(u64, LogId<NodeId>)>,
    /// Bytes in the file (the next record goes here).
    pub(super) len: u64,
    /// The last index before this segment when it was started (see [`SEGMENT_MAGIC`]).
    pub(super) previous: Option<u64>,
}

impl Segment {
    /// The index of the last record; for an empty segment, the index before its first.
    pub(super) fn last_index(&self) -> Option<u64> {
        (self.first + self.records.len() as u64).checked_sub(1)
    }
}

pub(super) fn segment_name(first: u64) -> String {
    format!("{first:020}{SEGMENT_SUFFIX}")
}

/// What a segment's bytes hold: its records, and where the valid ones end.
pub(super) struct Scan {
    pub(super) previous: Option<u64>,
    pub(super) records: Vec<(u64, LogId<NodeId>)>,
    pub(super) valid_len: u64,
    /// Why the bytes after `valid_len` are not records (none when the file ends there).
    pub(super) torn: Option<String>,
}

/// Reads the records of a segment whose first index is `first`. A bad record is torn (and the
/// scan ends there) only where a crash during an append could have left it: at the very end.
pub(super) fn scan(path: &Path, first: u64, bytes: &[u8]) -> Result<Scan, WalError> {
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
