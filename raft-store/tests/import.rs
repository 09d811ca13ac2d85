//! A data directory written when the Raft log lived in sled is imported into the segment log on
//! the first open: vote, purge point, committed index and entries all carried over, the old
//! files removed. An old store that fails its own checks is refused and left untouched.

use openraft::storage::{RaftLogReader, RaftLogStorage};
use openraft::{CommittedLeaderId, EntryPayload, LogId, Vote};
use raft_store::log_store::encode_entry;
use raft_store::{Entry, NodeId};

fn log_id(term: u64, index: u64) -> LogId<NodeId> {
    LogId::new(CommittedLeaderId::new(term, 1), index)
}

/// Writes an old-layout store: entries 2..=9 (term 1 up to 5, then 2), purged up to 4 (2..=4
/// are leftovers a crash left behind the purge point), committed 9, vote 3 by node 2.
fn write_old_store(data_dir: &std::path::Path) {
    let db = sled::open(data_dir.join("raft-log")).expect("sled");
    let meta = db.open_tree("raft_meta").expect("meta");
    let log = db.open_tree("raft_log").expect("log");
    meta.insert(
        "vote",
        serde_json::to_vec(&Vote::<NodeId>::new(3, 2)).expect("json"),
    )
    .expect("vote");
    meta.insert(
        "last_purged",
        serde_json::to_vec(&log_id(1, 4)).expect("json"),
    )
    .expect("purged");
    meta.insert(
        "committed",
        serde_json::to_vec(&Some(log_id(2, 9))).expect("json"),
    )
    .expect("committed");
    for index in 2..=9 {
        let entry = Entry {
            log_id: log_id(if index <= 5 { 1 } else { 2 }, index),
            payload: EntryPayload::Blank,
        };
        log.insert(index.to_be_bytes(), encode_entry(&entry).expect("encode"))
            .expect("entry");
    }
    db.flush().expect("flush");
    std::fs::write(
        data_dir.join("vote.mark"),
        serde_json::to_vec(&Vote::<NodeId>::new(3, 2)).expect("json"),
    )
    .expect("vote mark");
    std::fs::write(data_dir.join("committed.mark"), "9").expect("committed mark");
    drop((meta, log, db));
    // sled's flusher thread lets go of the database a moment after the handle is dropped; the
    // import must not find it still locked by this test.
    let lock = std::fs::File::open(data_dir.join("raft-log/db")).expect("sled's db file");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while lock.try_lock().is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "sled never released its database"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    lock.unlock().expect("unlock");
}

async fn assert_imported(data_dir: &std::path::Path) {
    let (mut log, _sm) = raft_store::open(data_dir).expect("open");
    let state = log.get_log_state().await.expect("state");
    assert_eq!(state.last_purged_log_id, Some(log_id(1, 4)));
    assert_eq!(state.last_log_id, Some(log_id(2, 9)));
    assert_eq!(log.read_vote().await.expect("vote"), Some(Vote::new(3, 2)));
    assert_eq!(
        log.read_committed().await.expect("committed"),
        Some(log_id(2, 9))
    );
    let ids: Vec<u64> = log
        .try_get_log_entries(0..)
        .await
        .expect("entries")
        .iter()
        .map(|e| e.log_id.index)
        .collect();
    assert_eq!(ids, [5, 6, 7, 8, 9]);
    for gone in ["raft-log", "vote.mark", "committed.mark", "wal.import"] {
        assert!(!data_dir.join(gone).exists(), "{gone} is still there");
    }
}

#[tokio::test]
async fn an_old_store_is_imported_once_whole() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_old_store(dir.path());
    assert_imported(dir.path()).await;
    // Opened again, it is the new log that is read.
    assert_imported(dir.path()).await;
}

#[tokio::test]
async fn an_import_a_crash_interrupted_is_done_again() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_old_store(dir.path());
    // A crash during an earlier import left a half-built log beside the old store.
    std::fs::create_dir_all(dir.path().join("wal.import")).expect("dir");
    std::fs::write(
        dir.path().join("wal.import/00000000000000000005.seg"),
        b"vnet",
    )
    .expect("seg");
    assert_imported(dir.path()).await;
}

#[tokio::test]
async fn an_old_store_that_lost_its_vote_is_refused_and_kept() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_old_store(dir.path());
    std::fs::write(
        dir.path().join("vote.mark"),
        serde_json::to_vec(&Vote::<NodeId>::new(7, 2)).expect("json"),
    )
    .expect("a newer vote mark");
    let err = raft_store::open(dir.path())
        .expect_err("refused")
        .to_string();
    assert!(
        err.contains("older Raft log") && err.contains("vote"),
        "{err}"
    );
    assert!(
        dir.path().join("raft-log").exists(),
        "the old store was removed"
    );
    assert!(!dir.path().join("wal").exists(), "a log was built anyway");
}
