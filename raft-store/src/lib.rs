//! Durable storage for vnet-ha's Raft: the log in append-only segment files, the state machine in
//! memory, snapshots as checksummed files.
//!
//! - [`wal`]: the log on disk (segments of checksummed records, the vote, the purge point, a
//!   recent committed index), with the crash rules openraft's safety rests on.
//! - [`log_store`]: openraft's `RaftLogStorage` over [`wal`], and the entry encoding.
//! - [`state_machine`]: openraft's `RaftStateMachine`, applying [`vnet_model::apply`] to an
//!   in-memory [`vnet_model::State`], shared read-only with the API through [`StateView`].
//! - [`snapshot_file`]: the snapshot encoding (magic, version, length, CRC-32) and its atomic,
//!   fsynced replacement on disk.
//! - [`legacy`]: the one-time import of a store written when the log lived in sled.
//!
//! - [`usage`]: how much disk the store takes (what `vnetd`'s quota counts).
//! - [`observer`]: [`StoreObserver`], told of every log sync and snapshot build (for metrics).
//!
//! This crate knows openraft and the model; it knows nothing of gRPC, the network or the
//! fabric. [`open`] is the one way in: it returns both halves over one data directory.

// openraft's storage traits fix the error type to `StorageError`, which is large; the helpers
// here return it so that `?` works inside trait methods. Boxing it only to unbox it again at every
// trait boundary would buy nothing.
#![allow(clippy::result_large_err)]

pub mod legacy;
pub mod log_store;
pub mod observer;
pub mod snapshot_file;
pub mod state_machine;
pub mod usage;
pub mod wal;

use std::fmt;
use std::io::Cursor;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use vnet_model::{Accepted, Rejection, Request};

pub use log_store::{Durability, LogStore};
pub use observer::{StoreObserver, Unobserved};
pub use state_machine::{Applied, Progress, StateMachineStore, StateView};

pub type NodeId = u64;

/// What the Raft membership records about a node: enough to reach it over the peer API.
/// Everything else about a member (role, API address, cabling) is model state, replicated as
/// ordinary commands.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerNode {
    pub name: String,
    pub peer_addr: String,
}

impl fmt::Display for PeerNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.name, self.peer_addr)
    }
}

/// The result of applying one log entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// A client request, accepted (with the revision it took) or rejected by the model.
    Applied(Result<Accepted, Rejection>),
    /// A batch of client requests (`Command::Batch`): one result per request, in order.
    Batch(Vec<Result<Accepted, Rejection>>),
    /// A blank or membership entry: Raft's own business, nothing for a client.
    Internal,
}

openraft::declare_raft_types!(
    /// openraft's type configuration for vnet-ha.
    pub TypeConfig:
        D = Request,
        R = Response,
        NodeId = NodeId,
        Node = PeerNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

pub type Entry = openraft::Entry<TypeConfig>;
pub type Raft = openraft::Raft<TypeConfig>;

/// Why a data directory could not be opened. Each names the path at fault.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("cannot create data directory {path}: {source}")]
    CreateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    /// `error` names the file and what is wrong with it; it is not a `source`, so an error chain
    /// prints it once.
    #[error("cannot open the Raft log in {path}: {error}")]
    Log { path: PathBuf, error: wal::WalError },
    #[error(transparent)]
    Import(#[from] legacy::ImportError),
    #[error("cannot use the snapshot in {path}: {source}")]
    Snapshot {
        path: PathBuf,
        source: snapshot_file::SnapshotError,
    },
}

/// Makes `data_dir` hold exactly `body` and nothing after it: the snapshot file first, then a log
/// emptied down to a purge point at the snapshot's position, with `vote`. For offline tools (a
/// restore, a recovery without a quorum), never while a node runs on the directory (the log's lock
/// refuses a second opener). A crash between the two steps leaves the new snapshot and the old
/// log, which openraft reconciles on open by purging the log up to the snapshot; running the
/// tool again finishes the job.
pub fn seed(
    data_dir: &Path,
    body: &snapshot_file::SnapshotBody,
    vote: &openraft::Vote<NodeId>,
) -> Result<(), SeedError> {
    let Some(last) = body.meta.last_log_id else {
        return Err(SeedError::NoPosition);
    };
    let bytes = snapshot_file::encode(body).map_err(SeedError::Snapshot)?;
    let (log, _state_machine) = open(data_dir).map_err(SeedError::Open)?;
    let snapshot_path = data_dir.join("snapshots");
    snapshot_file::SnapshotDir::open(snapshot_path)
        .and_then(|dir| dir.write_current(&bytes))
        .map_err(SeedError::Snapshot)?;
    log.reset_to_snapshot(last, vote)
        .map_err(|e| SeedError::Log(e.to_string()))
}

/// Why [`seed`] failed.
#[derive(Debug, thiserror::Error)]
pub enum SeedError {
    #[error("the snapshot has no log position to start from")]
    NoPosition,
    #[error(transparent)]
    Open(OpenError),
    #[error("cannot write the snapshot: {0}")]
    Snapshot(snapshot_file::SnapshotError),
    #[error("cannot reset the Raft log: {0}")]
    Log(String),
}

/// Where under a data directory the Raft log lives (see [`wal`]).
pub const WAL_DIR: &str = "wal";

/// Opens (creating if needed) the store in `data_dir`: `wal/` for the log, `snapshots/` for the
/// snapshot file. A store of the older sled layout is imported first (see [`legacy`]). A store
/// that cannot be read whole is refused with an error, never half-opened.
pub fn open(data_dir: &Path) -> Result<(LogStore, StateMachineStore), OpenError> {
    open_observed(data_dir, std::sync::Arc::new(Unobserved))
}

/// [`open`], telling `observer` of every log sync and snapshot build.
pub fn open_observed(
    data_dir: &Path,
    observer: observer::SharedObserver,
) -> Result<(LogStore, StateMachineStore), OpenError> {
    std::fs::create_dir_all(data_dir).map_err(|source| OpenError::CreateDir {
        path: data_dir.to_path_buf(),
        source,
    })?;
    let wal_dir = data_dir.join(WAL_DIR);
    if legacy::import(data_dir, &wal_dir)? {
        tracing::info!(
            dir = %wal_dir.display(),
            "imported the Raft log from the older sled store"
        );
    }
    let wal = wal::Wal::open(&wal_dir).map_err(|error| OpenError::Log {
        path: wal_dir.clone(),
        error,
    })?;
    if let Some(repaired) = &wal.repaired {
        tracing::warn!("{repaired}");
    }
    let log = LogStore::new(wal, observer.clone());
    let snapshot_path = data_dir.join("snapshots");
    let snapshots = snapshot_file::SnapshotDir::open(snapshot_path.clone()).map_err(|source| {
        OpenError::Snapshot {
            path: snapshot_path.clone(),
            source,
        }
    })?;
    let state_machine =
        StateMachineStore::open(snapshots, observer, log.durability()).map_err(|source| {
            OpenError::Snapshot {
                path: snapshot_path,
                source,
            }
        })?;
    Ok((log, state_machine))
}
