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
/// The unit a disk writes whole: a crash leaves each sector of a write either written or not.
const SECTOR_BYTES: usize = 512;

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
    /// Cuts the file to `len` bytes and extends it again, as a hole, to `preallocate` bytes, then
    /// fsyncs: whatever stood past `len` now reads as zeros, as unwritten space does.
    pub(super) fn cut(&self, len: u64, preallocate: u64) -> std::io::Result<()> {
        self.file.set_len(len)?;
        self.file.set_len(len.max(preallocate))?;
        self.file.sync_all()
    }

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

impl Scan {
    /// A segment whose creation a crash interrupted: no records, and the whole file to remove.
    fn unfinished(why: String) -> Self {
        Scan {
            previous: None,
            records: Vec::new(),
            valid_len: 0,
            torn: Some(why),
        }
    }
}

/// Reads the records of a segment whose first index is `first`. The records end at the first
/// zero length followed only by zeros (the segment's unused, preallocated space) or at the end of
/// the file. A bad record before that is a torn write (and the scan ends there) only where an
/// interrupted append explains it ([`interrupted`]); anything else is damage.
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
            return Ok(Scan::unfinished(format!(
                "an unfinished header of {} bytes",
                bytes.len()
            )));
        }
        return Err(damaged("it does not start with a segment header".into()));
    }
    if !name_matches {
        if bytes.iter().all(|&b| b == 0) {
            // Created at its full size, and a crash came before its header reached the disk.
            return Ok(Scan::unfinished(format!(
                "no header yet, {} zero bytes",
                bytes.len()
            )));
        }
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
    let end_of = |pos: usize, records: Vec<(u64, LogId<NodeId>)>, torn: Option<String>| Scan {
        previous,
        records,
        valid_len: pos as u64,
        torn,
    };
    while pos < bytes.len() {
        let index = first + records.len() as u64;
        let rest = &bytes[pos..];
        if rest[0] == 0 && rest.iter().all(|&b| b == 0) {
            // Space preallocated for appends and not yet written.
            return Ok(end_of(pos, records, None));
        }
        let Some(len) = rest.get(..4) else {
            return Ok(end_of(
                pos,
                records,
                Some(format!("a record length cut short at offset {pos}")),
            ));
        };
        let len = u32::from_le_bytes([len[0], len[1], len[2], len[3]]);
        let (extent, why) = if len == 0 || len > MAX_RECORD_BYTES {
            (
                4,
                format!("the record of log index {index} at offset {pos} claims {len} bytes"),
            )
        } else if rest.len() < 4 + len as usize {
            (
                4 + len as usize,
                format!("the record of log index {index} at offset {pos} cut short"),
            )
        } else {
            match decode_entry_bytes(index, &rest[4..4 + len as usize]) {
                Ok(entry) => {
                    records.push((pos as u64, entry.log_id));
                    pos += 4 + len as usize;
                    continue;
                }
                Err(e) => (4 + len as usize, format!("{e}, at offset {pos}")),
            }
        };
        if interrupted(bytes, pos, extent) {
            return Ok(end_of(pos, records, Some(why)));
        }
        return Err(damaged(format!(
            "{why}, and no interrupted write explains it (none of its sectors reads as zeros)"
        )));
    }
    Ok(end_of(pos, records, None))
}

/// Whether an append that a crash interrupted explains a bad record spanning `extent` bytes from
/// `pos`. Such an append leaves each sector it wrote either written or not: a disk writes a
/// sector whole. A sector not written still holds what it held before, and past the records that
/// is zeros (the preallocated space, or a tail [`super::Wal`] cut and zeroed). So the record runs
/// past the end of the file, or its share of some sector reads as all zeros. A record garbled
/// with no such sector (a flipped bit, a length no writer produces) is damage, wherever it is.
fn interrupted(bytes: &[u8], pos: usize, extent: usize) -> bool {
    let end = pos.saturating_add(extent);
    if end > bytes.len() {
        return true;
    }
    let mut at = pos;
    while at < end {
        let chunk_end = ((at / SECTOR_BYTES + 1) * SECTOR_BYTES).min(end);
        if bytes[at..chunk_end].iter().all(|&b| b == 0) {
            return true;
        }
        at = chunk_end;
    }
    false
}

/// Reads a segment's bytes as [`Wal::open`] does, from memory: how many records are whole, and
/// why the bytes after them are a torn tail, if they are. For the fuzz targets: any bytes give
/// an answer or an error, never a panic.
pub fn check_segment(first: u64, bytes: &[u8]) -> Result<(usize, Option<String>), WalError> {
    let scan = scan(Path::new("the segment"), first, bytes)?;
    Ok((scan.records.len(), scan.torn))
}
