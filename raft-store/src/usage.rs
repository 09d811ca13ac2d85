//! How much disk the store takes: what `vnetd`'s `--quota-bytes` is measured against.

use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// The directories under a data directory that hold the store (see [`crate::open`]).
pub const STORE_DIRS: [&str; 2] = [crate::WAL_DIR, "snapshots"];

/// Bytes the store's files take under `data_dir`: the Raft log (`wal/`) and the snapshots
/// (`snapshots/`), by the space allocated to them: a log segment created as a hole takes only what
/// is written into it, one filled with zeros ahead of need takes its full size. Other files an
/// operator keeps there (logs, say) do not count.
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
                *total = total.saturating_add(meta.blocks().saturating_mul(512));
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
    fn counts_the_space_the_store_takes_and_nothing_else() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(disk_usage(dir.path()).expect("empty"), 0);
        std::fs::create_dir_all(dir.path().join("wal/nested")).expect("mkdir");
        std::fs::create_dir_all(dir.path().join("snapshots")).expect("mkdir");
        // A segment as the log creates it: 8 MiB long, a hole but for its first bytes.
        let segment = dir.path().join("wal/00000000000000000000.seg");
        std::fs::write(&segment, vec![7u8; 1000]).expect("write");
        std::fs::File::options()
            .write(true)
            .open(&segment)
            .and_then(|f| f.set_len(8 << 20))
            .expect("extend");
        std::fs::write(dir.path().join("wal/nested/1"), vec![1u8; 24]).expect("write");
        std::fs::write(
            dir.path().join("snapshots/snapshot.current"),
            vec![3u8; 300_000],
        )
        .expect("w");
        std::fs::write(dir.path().join("vnetd.log"), vec![5u8; 500_000]).expect("write");
        let used = disk_usage(dir.path()).expect("usage");
        // Block sizes differ between filesystems: at least the bytes written, far below the
        // segment's length, and without the 500 kB log beside the store.
        assert!(used >= 301_024, "{used}");
        assert!(used < 400_000, "{used}");
    }
}
