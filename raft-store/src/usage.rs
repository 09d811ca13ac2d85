//! How much disk the store takes: what `vnetd`'s `--quota-bytes` is measured against.

use std::io;
use std::path::Path;

/// The directories under a data directory that hold the store (see [`crate::open`]).
pub const STORE_DIRS: [&str; 2] = [crate::WAL_DIR, "snapshots"];

/// Bytes the store's files take under `data_dir`: the Raft log (`wal/`) and the snapshots
/// (`snapshots/`), by file length. Other files an operator keeps there (logs, say) do not count.
/// A directory that does not exist yet counts as empty.
pub fn disk_usage(data_dir: &Path) -> io::Result<u64> {
    fn walk(dir: &Path, total: &mut u64) -> io::Result<()> {
        let entries = match std::fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        for entry in entries {
            let entry = entry?;
            // A file removed between listing and looking (a snapshot replaced, a temporary file
            // cleaned up) no longer takes space.
            let meta = match entry.path().symlink_metadata() {
                Ok(meta) => meta,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            if meta.is_dir() {
                walk(&entry.path(), total)?;
            } else {
                *total = total.saturating_add(meta.len());
            }
        }
        Ok(())
    }
    let mut total = 0;
    for dir in STORE_DIRS {
        walk(&data_dir.join(dir), &mut total)?;
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_the_store_and_nothing_else() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(disk_usage(dir.path()).expect("empty"), 0);
        std::fs::create_dir_all(dir.path().join("wal/nested")).expect("mkdir");
        std::fs::create_dir_all(dir.path().join("snapshots")).expect("mkdir");
        std::fs::write(
            dir.path().join("wal/00000000000000000000.seg"),
            vec![0u8; 1000],
        )
        .expect("write");
        std::fs::write(dir.path().join("wal/nested/1"), vec![0u8; 24]).expect("write");
        std::fs::write(
            dir.path().join("snapshots/snapshot.current"),
            vec![0u8; 300],
        )
        .expect("w");
        std::fs::write(dir.path().join("vnetd.log"), vec![0u8; 5000]).expect("write");
        assert_eq!(disk_usage(dir.path()).expect("usage"), 1324);
    }
}
