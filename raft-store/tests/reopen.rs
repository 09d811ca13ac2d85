//! A store reopened after its process is gone comes back with what it had made durable, and a
//! damaged snapshot makes `open` fail with an error naming the file, never a silent empty state.

use openraft::storage::{RaftLogStorage, RaftStateMachine};
use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId, RaftSnapshotBuilder, Vote};
use raft_store::{Response, TypeConfig};
use vnet_model::{Command, PoolRange, PoolSpec, Request};

fn create_pool(name: &str, first: &str, last: &str) -> Request {
    Request {
        actor: "test".into(),
        command: Command::CreatePool(PoolSpec {
            name: name.into(),
            range: PoolRange::Mac {
                first: first.parse().expect("mac"),
                last: last.parse().expect("mac"),
            },
        }),
        trace: None,
        on_behalf_of: None,
    }
}

fn entry(index: u64, request: Request) -> Entry<TypeConfig> {
    Entry {
        log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
        payload: EntryPayload::Normal(request),
    }
}

#[tokio::test]
async fn snapshot_and_vote_survive_reopen_and_a_damaged_snapshot_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let (mut log, mut sm) = raft_store::open(dir.path()).expect("open");
        log.save_vote(&Vote::new(3, 2)).await.expect("save vote");
        let responses = sm
            .apply([
                entry(
                    1,
                    create_pool("a", "02:00:00:00:00:00", "02:00:00:00:00:ff"),
                ),
                entry(
                    2,
                    create_pool("b", "02:00:00:00:01:00", "02:00:00:00:01:ff"),
                ),
                // Overlaps "a": the model refuses it, and the refusal is the response.
                entry(
                    3,
                    create_pool("c", "02:00:00:00:00:10", "02:00:00:00:00:20"),
                ),
            ])
            .await
            .expect("apply");
        assert!(matches!(responses[0], Response::Applied(Ok(_))));
        assert!(matches!(responses[2], Response::Applied(Err(_))));
        sm.get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .expect("build snapshot");
    }

    // Reopen: the vote is on disk, and the state machine is back at the snapshot.
    {
        let (mut log, mut sm) = raft_store::open(dir.path()).expect("reopen");
        assert_eq!(
            log.read_vote().await.expect("read vote"),
            Some(Vote::new(3, 2))
        );
        let (applied, _) = sm.applied_state().await.expect("applied state");
        assert_eq!(applied.map(|id| id.index), Some(3));
        let view = sm.view();
        let pools: Vec<String> = view.read(|a| a.state.pools().map(|p| p.name.clone()).collect());
        assert_eq!(pools, ["a", "b"]);
        assert_eq!(view.progress().revision, 2);
    }

    // Damage one byte of the snapshot body: open must refuse, naming the snapshot directory.
    let path = dir.path().join("snapshots").join("snapshot.current");
    let mut bytes = std::fs::read(&path).expect("read snapshot");
    let last = bytes.len() - 5;
    bytes[last] ^= 0x20;
    std::fs::write(&path, bytes).expect("write damaged snapshot");
    let err = raft_store::open(dir.path()).expect_err("a damaged snapshot must not open");
    let text = err.to_string();
    assert!(
        text.contains("snapshots"),
        "error does not name the path: {text}"
    );
    assert!(
        text.contains("checksum"),
        "error does not say what is wrong: {text}"
    );
}

/// `wal/committed` is renamed into place without an fsync, so a power cut may leave it empty or
/// zero-filled on a healthy store: that must not stop the node. One with content is still
/// checked: garbage is named as damage, and an index past the log as lost writes.
#[tokio::test]
async fn an_empty_committed_file_is_absent_and_a_meaningful_one_is_still_checked() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let (mut log, _sm) = raft_store::open(dir.path()).expect("open");
        log.save_vote(&Vote::new(1, 1)).await.expect("save vote");
    }
    let mark = walk(dir.path())
        .into_iter()
        .find(|p| p.ends_with("vote"))
        .expect("the vote file exists")
        .with_file_name("committed");
    for empty in ["", "\n", "\0\0\0\0"] {
        std::fs::write(&mark, empty).expect("write the mark");
        raft_store::open(dir.path())
            .unwrap_or_else(|e| panic!("a mark of {empty:?} refused the store: {e}"));
    }
    for (bad, says) in [("12x", "is damaged"), ("999", "lost its newest writes")] {
        std::fs::write(&mark, bad).expect("write the mark");
        let refused = raft_store::open(dir.path())
            .err()
            .map(|e| e.to_string())
            .unwrap_or_else(|| panic!("a mark of {bad:?} was accepted"));
        assert!(refused.contains(says), "{bad:?}: {refused}");
    }
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).expect("list") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            found.extend(walk(&path));
        } else {
            found.push(path);
        }
    }
    found
}
