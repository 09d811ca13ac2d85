//! openraft's own storage conformance suite, run against the sled log store and the snapshot-file
//! state machine. Every store it builds lives in a fresh temporary directory.

use openraft::testing::{StoreBuilder, Suite};
use openraft::{AnyError, StorageError, StorageIOError};
use raft_store::{LogStore, NodeId, StateMachineStore, TypeConfig};
use tempfile::TempDir;

struct TempStore;

impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, TempDir> for TempStore {
    async fn build(&self) -> Result<(TempDir, LogStore, StateMachineStore), StorageError<NodeId>> {
        let dir = tempfile::tempdir()
            .map_err(|e| StorageError::from(StorageIOError::write(AnyError::new(&e))))?;
        let (log, state_machine) = raft_store::open(dir.path())
            .map_err(|e| StorageError::from(StorageIOError::write(AnyError::new(&e))))?;
        Ok((dir, log, state_machine))
    }
}

#[test]
fn passes_openraft_storage_suite() {
    if let Err(e) = Suite::test_all(TempStore) {
        panic!("the storage suite failed: {e}");
    }
}
