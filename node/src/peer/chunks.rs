//! Bounds on incoming snapshot chunks, checked before openraft stores any of them.
//!
//! openraft 0.9 assembles a snapshot by seeking its `Cursor<Vec<u8>>` to each chunk's offset and
//! writing the chunk there, so a chunk at offset 2^60 would make it grow the buffer to 2^60
//! bytes: an allocation failure aborts the process. A snapshot announces its whole length in its
//! first bytes (see `raft_store::snapshot_file`), so each chunk of a stream is checked against
//! that length, and every chunk against `SNAPSHOT_BYTES_MAX`, before it is handed on.

use std::sync::Mutex;

use raft_store::snapshot_file::{announced_len, SNAPSHOT_BYTES_MAX};

use crate::error::echoed;

/// What this node knows of the snapshot stream it is receiving.
#[derive(Debug, Default)]
pub struct ChunkCheck {
    /// The snapshot id of the stream whose first chunk was accepted, and the length it
    /// announced (`SNAPSHOT_BYTES_MAX` if its first chunk was shorter than the header).
    receiving: Mutex<Option<(String, u64)>>,
}

impl ChunkCheck {
    /// Accepts or refuses the chunk `data` at `offset` of snapshot `snapshot_id`, with a message
    /// saying why. Only the length of `data` and, for a first chunk, its header are looked at.
    pub fn check(&self, snapshot_id: &str, offset: u64, data: &[u8]) -> Result<(), String> {
        let shown_id = echoed(snapshot_id);
        let end = offset
            .checked_add(data.len() as u64)
            .filter(|end| *end <= SNAPSHOT_BYTES_MAX)
            .ok_or_else(|| {
                format!(
                    "snapshot {shown_id:?} chunk at offset {offset} ({} bytes) ends past the \
                     limit of {SNAPSHOT_BYTES_MAX} bytes",
                    data.len()
                )
            })?;
        // A poisoned lock only means another check panicked between two plain assignments;
        // the value is still one of the two.
        let mut receiving = self
            .receiving
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if offset == 0 {
            // A new stream (openraft starts one at every offset-0 chunk).
            let total = announced_len(data)
                .map_err(|e| format!("snapshot {shown_id:?}: {e}"))?
                .unwrap_or(SNAPSHOT_BYTES_MAX);
            if end > total {
                return Err(format!(
                    "snapshot {shown_id:?} first chunk is {end} bytes, longer than the \
                     {total} bytes its header announces"
                ));
            }
            *receiving = Some((snapshot_id.to_string(), total));
            return Ok(());
        }
        match &*receiving {
            Some((id, total)) if id == snapshot_id && end > *total => Err(format!(
                "snapshot {shown_id:?} chunk at offset {offset} ({} bytes) ends past the \
                 {total} bytes its header announced",
                data.len()
            )),
            // Either within the stream, or for a stream that did not start here: openraft
            // answers the latter with a mismatch, asking the sender to start again at 0, and
            // stores nothing.
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use raft_store::snapshot_file::HEADER_LEN;

    /// A header announcing a body of `body_len` bytes (the checksum is not looked at here).
    fn header(body_len: u64) -> Vec<u8> {
        let mut bytes = b"VNETSNAP".to_vec();
        bytes.extend_from_slice(&1u32.to_be_bytes());
        bytes.extend_from_slice(&body_len.to_be_bytes());
        bytes.extend_from_slice(&0u32.to_be_bytes());
        assert_eq!(bytes.len(), HEADER_LEN);
        bytes
    }

    #[test]
    fn accepts_a_stream_within_its_announced_length() {
        let check = ChunkCheck::default();
        let total = HEADER_LEN as u64 + 100;
        let mut first = header(100);
        first.extend_from_slice(&[0; 40]);
        assert_eq!(check.check("s1", 0, &first), Ok(()));
        assert_eq!(check.check("s1", 64, &[0; 60]), Ok(()));
        assert_eq!(check.check("s1", total - 1, &[0; 1]), Ok(()));
    }

    #[test]
    fn refuses_a_chunk_past_the_announced_length() {
        let check = ChunkCheck::default();
        check.check("s1", 0, &header(100)).expect("first chunk");
        let refused = check
            .check("s1", HEADER_LEN as u64 + 100, &[0; 1])
            .expect_err("past the end");
        assert!(refused.contains("announced"), "{refused}");
    }

    #[test]
    fn refuses_a_huge_offset_without_allocating_or_overflowing() {
        let check = ChunkCheck::default();
        check.check("s1", 0, &header(100)).expect("first chunk");
        for offset in [u64::MAX, u64::MAX - 1, 1 << 60, SNAPSHOT_BYTES_MAX] {
            for id in ["s1", "another"] {
                let refused = check.check(id, offset, &[0; 8]).expect_err("refused");
                assert!(refused.contains("limit"), "{refused}");
            }
        }
    }

    #[test]
    fn refuses_a_first_chunk_announcing_too_much_or_not_ours() {
        let check = ChunkCheck::default();
        assert!(check
            .check("s1", 0, &header(SNAPSHOT_BYTES_MAX))
            .expect_err("too large")
            .contains("limit"));
        assert!(check
            .check("s1", 0, &[0xff; HEADER_LEN])
            .expect_err("not ours")
            .contains("magic"));
        let mut longer = header(4);
        longer.extend_from_slice(&[0; 5]);
        assert!(check
            .check("s1", 0, &longer)
            .expect_err("longer than announced")
            .contains("announces"));
    }

    #[test]
    fn a_first_chunk_shorter_than_the_header_is_bounded_by_the_cap() {
        let check = ChunkCheck::default();
        check.check("s1", 0, &[0; 4]).expect("short first chunk");
        assert_eq!(check.check("s1", 1 << 20, &[0; 8]), Ok(()));
        assert!(check.check("s1", SNAPSHOT_BYTES_MAX, &[0; 1]).is_err());
    }
}
