//! The snapshot encoding, shared by the file on disk and the bytes sent to peers.
//!
//! ```text
//! offset  size  field
//! 0       8     magic  b"VNETSNAP"
//! 8       4     format version, big-endian (currently 1)
//! 12      8     body length in bytes, big-endian
//! 20      4     CRC-32 (IEEE) of the body, big-endian
//! 24      n     body: JSON of SnapshotBody
//! ```
//!
//! The checksum travels with the bytes, so a snapshot received from a peer is verified with the
//! same code that verifies one read back from disk: neither is trusted until it checks out.
//!
//! On disk there is one current snapshot. It is replaced by writing a temporary file, fsyncing it,
//! renaming it over the old one and fsyncing the directory; a crash at any point leaves either
//! the old or the new snapshot whole, never a mix (rename is atomic within a directory, and the
//! directory fsync makes the rename itself durable before the log behind it may be purged).

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use vnet_model::State;

use crate::{NodeId, PeerNode};

const MAGIC: &[u8; 8] = b"VNETSNAP";
const FORMAT_VERSION: u32 = 1;
/// Bytes of the header: magic, format version, body length, body CRC-32.
pub const HEADER_LEN: usize = 24;
/// A snapshot larger than this is refused rather than read into memory: it cannot be one of ours
/// (the model's own limits keep a state far below it).
pub const SNAPSHOT_BYTES_MAX: u64 = 1 << 30;

const CURRENT_FILE: &str = "snapshot.current";
const TEMP_FILE: &str = "snapshot.tmp";

pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, PeerNode>;

/// What a snapshot holds: the Raft position it reflects and the whole model state at it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SnapshotBody {
    pub meta: SnapshotMeta,
    pub state: State,
    /// What a reader that does not know the model needs to describe the snapshot (`vnetctl
    /// snapshot status` reads only this object of the body). Absent in snapshots written before
    /// it existed; checked against the state when present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<Summary>,
}

/// The counts a snapshot's body announces beside the state, as a stable, model-free object.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    /// The model revision (log index of the last change).
    pub revision: u64,
    /// The Raft log index the snapshot reflects.
    pub applied_index: u64,
    pub profiles: u64,
    pub pools: u64,
    pub members: u64,
}

impl Summary {
    pub fn of(meta: &SnapshotMeta, state: &State) -> Self {
        Self {
            revision: state.revision(),
            applied_index: meta.last_log_id.map_or(0, |id| id.index),
            profiles: state.profiles().count() as u64,
            pools: state.pools().count() as u64,
            members: state.members().count() as u64,
        }
    }
}

impl SnapshotBody {
    /// A body with its summary.
    pub fn new(meta: SnapshotMeta, state: State) -> Self {
        let summary = Some(Summary::of(&meta, &state));
        Self {
            meta,
            state,
            summary,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("snapshot is {len} bytes, shorter than its {HEADER_LEN}-byte header")]
    Truncated { len: usize },
    #[error("snapshot does not start with the vnet-ha snapshot magic")]
    BadMagic,
    #[error(
        "snapshot format version {found} is not supported (this build reads {FORMAT_VERSION})"
    )]
    UnsupportedVersion { found: u32 },
    #[error("snapshot header says the body is {declared} bytes but {actual} bytes follow")]
    LengthMismatch { declared: u64, actual: u64 },
    #[error(
        "snapshot body checksum mismatch: header says {expected:#010x}, body has {actual:#010x}"
    )]
    ChecksumMismatch { expected: u32, actual: u32 },
    #[error("snapshot is {len} bytes, more than the limit of {SNAPSHOT_BYTES_MAX}")]
    TooLarge { len: u64 },
    #[error("snapshot body is not valid: {0}")]
    Decode(#[from] serde_json::Error),
    #[error("snapshot was announced at log position {announced} but its bytes are at {found}")]
    PositionMismatch { announced: String, found: String },
    #[error("snapshot state breaks a model invariant: {0}")]
    Invariant(String),
    #[error("{verb} snapshot file {path}: {source}")]
    Io {
        verb: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Encodes a snapshot body into the checksummed format.
pub fn encode(body: &SnapshotBody) -> Result<Vec<u8>, SnapshotError> {
    let json = serde_json::to_vec(body)?;
    let mut bytes = Vec::with_capacity(HEADER_LEN + json.len());
    bytes.extend_from_slice(MAGIC);
    bytes.extend_from_slice(&FORMAT_VERSION.to_be_bytes());
    bytes.extend_from_slice(&(json.len() as u64).to_be_bytes());
    bytes.extend_from_slice(&crc32fast::hash(&json).to_be_bytes());
    bytes.extend_from_slice(&json);
    Ok(bytes)
}

/// The body length and checksum a header of [`HEADER_LEN`] bytes declares, once its magic and
/// version are ours.
fn parse_header(header: &[u8]) -> Result<(u64, u32), SnapshotError> {
    if &header[0..8] != MAGIC {
        return Err(SnapshotError::BadMagic);
    }
    let version = u32::from_be_bytes(be_array(&header[8..12]));
    if version != FORMAT_VERSION {
        return Err(SnapshotError::UnsupportedVersion { found: version });
    }
    let declared = u64::from_be_bytes(be_array(&header[12..20]));
    let checksum = u32::from_be_bytes(be_array(&header[20..24]));
    Ok((declared, checksum))
}

/// Decodes and verifies a snapshot: header, length, checksum, and the model's own invariants.
pub fn decode(bytes: &[u8]) -> Result<SnapshotBody, SnapshotError> {
    if bytes.len() < HEADER_LEN {
        return Err(SnapshotError::Truncated { len: bytes.len() });
    }
    let (header, body) = bytes.split_at(HEADER_LEN);
    let (declared, expected) = parse_header(header)?;
    if declared != body.len() as u64 {
        return Err(SnapshotError::LengthMismatch {
            declared,
            actual: body.len() as u64,
        });
    }
    let actual = crc32fast::hash(body);
    if expected != actual {
        return Err(SnapshotError::ChecksumMismatch { expected, actual });
    }
    let decoded: SnapshotBody = serde_json::from_slice(body)?;
    decoded
        .state
        .check_invariants()
        .map_err(SnapshotError::Invariant)?;
    if let Some(summary) = decoded.summary {
        let actual = Summary::of(&decoded.meta, &decoded.state);
        if summary != actual {
            return Err(SnapshotError::Invariant(format!(
                "the summary says {summary:?} but the state holds {actual:?}"
            )));
        }
    }
    Ok(decoded)
}

/// The whole length (header and body) that a snapshot announces in its header, read from its
/// first bytes, so a receiver can bound a snapshot arriving in chunks before storing any of it.
/// `None` if `prefix` is shorter than the header. Refuses a prefix that is not our format or
/// announces more than [`SNAPSHOT_BYTES_MAX`].
pub fn announced_len(prefix: &[u8]) -> Result<Option<u64>, SnapshotError> {
    let Some(header) = prefix.get(..HEADER_LEN) else {
        return Ok(None);
    };
    let (declared, _) = parse_header(header)?;
    let total = declared.saturating_add(HEADER_LEN as u64);
    if total > SNAPSHOT_BYTES_MAX {
        return Err(SnapshotError::TooLarge { len: total });
    }
    Ok(Some(total))
}

fn be_array<const N: usize>(slice: &[u8]) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(slice);
    out
}

/// The directory that holds the current snapshot file.
#[derive(Debug, Clone)]
pub struct SnapshotDir {
    dir: PathBuf,
}

impl SnapshotDir {
    pub fn open(dir: PathBuf) -> Result<Self, SnapshotError> {
        fs::create_dir_all(&dir).map_err(|source| SnapshotError::Io {
            verb: "create directory for",
            path: dir.clone(),
            source,
        })?;
        // A temporary file is only ever a snapshot that did not finish being written.
        let temp = dir.join(TEMP_FILE);
        if temp.exists() {
            fs::remove_file(&temp).map_err(|source| SnapshotError::Io {
                verb: "remove unfinished",
                path: temp,
                source,
            })?;
        }
        Ok(Self { dir })
    }

    pub fn current_path(&self) -> PathBuf {
        self.dir.join(CURRENT_FILE)
    }

    /// Reads the current snapshot's bytes, verified. `None` when there is no snapshot yet.
    pub fn read_current(&self) -> Result<Option<(Vec<u8>, SnapshotBody)>, SnapshotError> {
        let path = self.current_path();
        let len = match fs::metadata(&path) {
            Ok(meta) => meta.len(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(SnapshotError::Io {
                    verb: "stat",
                    path,
                    source,
                })
            }
        };
        if len > SNAPSHOT_BYTES_MAX {
            return Err(SnapshotError::LengthMismatch {
                declared: SNAPSHOT_BYTES_MAX,
                actual: len,
            });
        }
        let bytes = fs::read(&path).map_err(|source| SnapshotError::Io {
            verb: "read",
            path: path.clone(),
            source,
        })?;
        let body = decode(&bytes)?;
        Ok(Some((bytes, body)))
    }

    /// Makes `bytes` the current snapshot, durably, before returning.
    pub fn write_current(&self, bytes: &[u8]) -> Result<(), SnapshotError> {
        let temp = self.dir.join(TEMP_FILE);
        let io = |verb: &'static str, path: &Path| {
            let path = path.to_path_buf();
            move |source| SnapshotError::Io { verb, path, source }
        };
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&temp)
            .map_err(io("create", &temp))?;
        file.write_all(bytes).map_err(io("write", &temp))?;
        // The data must be on disk before the rename publishes it, or a crash could leave a
        // renamed file whose blocks never arrived.
        file.sync_all().map_err(io("fsync", &temp))?;
        drop(file);
        let current = self.current_path();
        fs::rename(&temp, &current).map_err(io("rename into place", &current))?;
        // The rename lives in the directory entry: fsync the directory so it survives a crash
        // before the log entries this snapshot replaces are purged.
        File::open(&self.dir)
            .and_then(|dir| dir.sync_all())
            .map_err(io("fsync directory of", &self.dir))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> SnapshotBody {
        SnapshotBody::new(
            SnapshotMeta {
                last_log_id: Some(openraft::LogId::new(
                    openraft::CommittedLeaderId::new(3, 1),
                    42,
                )),
                last_membership: Default::default(),
                snapshot_id: "3-42-1".to_string(),
            },
            State::default(),
        )
    }

    #[test]
    fn a_summary_that_does_not_match_the_state_is_refused() {
        let mut body = sample();
        assert_eq!(body.summary.map(|s| s.applied_index), Some(42));
        body.summary = Some(Summary {
            profiles: 7,
            ..body.summary.unwrap_or_default()
        });
        let refused = decode(&encode(&body).unwrap()).unwrap_err();
        assert!(matches!(refused, SnapshotError::Invariant(_)), "{refused}");
    }

    #[test]
    fn the_header_announces_the_whole_length() {
        let bytes = encode(&sample()).expect("encode");
        assert_eq!(
            announced_len(&bytes).expect("ours"),
            Some(bytes.len() as u64)
        );
        assert_eq!(
            announced_len(&bytes[..HEADER_LEN]).expect("ours"),
            Some(bytes.len() as u64)
        );
        assert_eq!(
            announced_len(&bytes[..HEADER_LEN - 1]).expect("short"),
            None
        );
        let mut huge = bytes.clone();
        huge[12..20].copy_from_slice(&u64::MAX.to_be_bytes());
        assert!(matches!(
            announced_len(&huge),
            Err(SnapshotError::TooLarge { .. })
        ));
        let mut foreign = bytes;
        foreign[0] ^= 0x01;
        assert!(matches!(
            announced_len(&foreign),
            Err(SnapshotError::BadMagic)
        ));
    }

    #[test]
    fn round_trips() {
        let bytes = encode(&sample()).expect("encode");
        let body = decode(&bytes).expect("decode");
        assert_eq!(body.meta, sample().meta);
        assert_eq!(body.state, sample().state);
    }

    #[test]
    fn every_single_byte_flip_is_detected() {
        let bytes = encode(&sample()).expect("encode");
        for at in 0..bytes.len() {
            let mut corrupt = bytes.clone();
            corrupt[at] ^= 0x01;
            assert!(
                decode(&corrupt).is_err(),
                "flipping a bit at offset {at} went unnoticed"
            );
        }
    }

    #[test]
    fn truncation_and_extension_are_detected() {
        let bytes = encode(&sample()).expect("encode");
        for len in [0, 7, HEADER_LEN - 1, HEADER_LEN, bytes.len() - 1] {
            assert!(decode(&bytes[..len]).is_err(), "truncated to {len} bytes");
        }
        let mut longer = bytes.clone();
        longer.push(b' ');
        assert!(matches!(
            decode(&longer),
            Err(SnapshotError::LengthMismatch { .. })
        ));
    }

    #[test]
    fn write_then_read_current_and_clean_leftover_temp() {
        let dir = tempfile::tempdir().expect("tempdir");
        let snapshots = SnapshotDir::open(dir.path().join("snap")).expect("open");
        assert!(snapshots.read_current().expect("read").is_none());
        let bytes = encode(&sample()).expect("encode");
        snapshots.write_current(&bytes).expect("write");
        std::fs::write(dir.path().join("snap").join(TEMP_FILE), b"half a snapshot").expect("temp");
        let reopened = SnapshotDir::open(dir.path().join("snap")).expect("reopen");
        assert!(!dir.path().join("snap").join(TEMP_FILE).exists());
        let (read_bytes, body) = reopened.read_current().expect("read").expect("present");
        assert_eq!(read_bytes, bytes);
        assert_eq!(body.meta, sample().meta);
    }

    #[test]
    fn corrupt_file_on_disk_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let snapshots = SnapshotDir::open(dir.path().to_path_buf()).expect("open");
        let mut bytes = encode(&sample()).expect("encode");
        let last = bytes.len() - 2;
        bytes[last] ^= 0xff;
        std::fs::write(snapshots.current_path(), &bytes).expect("write");
        assert!(matches!(
            snapshots.read_current(),
            Err(SnapshotError::ChecksumMismatch { .. })
        ));
    }
}
