//! The small files beside the segments (`vote`, `purged`, `committed`) and the directory's own
//! durability.

use std::fs::File;
use std::io::{self, Write};
use std::path::Path;

use super::{io_at, WalError};

/// Writes `bytes` as the whole of `path`: a temporary file, fsynced, renamed over it, the
/// directory fsynced. A crash leaves the old content or the new, whole.
pub(super) fn replace_durably(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), WalError> {
    let path = dir.join(name);
    let tmp = dir.join(format!("{name}.tmp"));
    let mut file = File::create(&tmp).map_err(io_at(&tmp))?;
    file.write_all(bytes).map_err(io_at(&tmp))?;
    file.sync_all().map_err(io_at(&tmp))?;
    std::fs::rename(&tmp, &path).map_err(io_at(&path))?;
    sync_dir(dir)
}

pub(super) fn sync_dir(dir: &Path) -> Result<(), WalError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_at(dir))
}

pub(super) fn read_json<T: serde::de::DeserializeOwned>(
    dir: &Path,
    name: &str,
) -> Result<Option<T>, WalError> {
    let path = dir.join(name);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| WalError::Damaged {
                path,
                reason: e.to_string(),
            }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(WalError::Io { path, source }),
    }
}
