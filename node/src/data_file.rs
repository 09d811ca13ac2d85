//! The data directory's identity file, `vnet-data.json`: the format version of the directory,
//! the id of the node it belongs to and the id of the cluster it is a member of.
//!
//! ```json
//! {"format_version": 2, "node_id": 2, "cluster_id": "5f0c9a1e7d3b4c28a6e1f0b9c2d4e6a8"}
//! ```
//!
//! Written at a node's first start (tmp file, fsync, rename, directory fsync), before Raft opens
//! the store. A node refuses to start on a directory of a newer format (an older build would
//! misread it) or one that belongs to another node id (the Raft vote and log in it are another
//! node's: using them under this id could vote twice in one term). The cluster id is absent until
//! the node founds a cluster (the founder draws one) or learns it from the first peer call that
//! carries one (ARCHITECTURE.md, "Operating through bad days"); from then on it never changes.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use raft_store::NodeId;

/// The file's name inside the data directory.
pub const DATA_FILE: &str = "vnet-data.json";
const TEMP_FILE: &str = "vnet-data.json.tmp";
/// The data directory format this build writes and the newest it reads.
///
/// - 1: the Raft log in sled, under `raft-log/`.
/// - 2: the Raft log in segment files, under `wal/`. A version-1 directory is upgraded on open:
///   this file first, then `raft_store` imports the log and removes the sled files.
pub const DATA_FORMAT_VERSION: u32 = 2;
/// Longest cluster id accepted (from a file, a flag or a peer's header).
pub const CLUSTER_ID_CHARS_MAX: usize = 64;
/// A file larger than this is not ours.
const DATA_FILE_BYTES_MAX: u64 = 4096;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataFile {
    pub format_version: u32,
    pub node_id: NodeId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_id: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum DataFileError {
    #[error(
        "the data directory {path} has format version {found}, newer than this build of vnetd \
         reads ({DATA_FORMAT_VERSION}); run the newer vnetd, or restore a backup into a new \
         directory"
    )]
    Newer { path: PathBuf, found: u32 },
    #[error(
        "the data directory {path} belongs to node id {found}, not to --id {configured}; a data \
         directory holds one node's Raft vote and log and cannot serve under another id (point \
         --data-dir at this node's own directory, or start with an empty one and add the node \
         with `vnetctl member add`)"
    )]
    OtherNode {
        path: PathBuf,
        found: NodeId,
        configured: NodeId,
    },
    #[error("{path} is not a valid data directory file: {reason}")]
    Invalid { path: PathBuf, reason: String },
    #[error("cannot {verb} {path}: {source}")]
    Io {
        verb: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
}

fn io<'a>(verb: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> DataFileError + 'a {
    move |source| DataFileError::Io {
        verb,
        path: path.to_path_buf(),
        source,
    }
}

/// The file in `dir`, if there is one, checked for format and well-formedness (not for node id).
pub fn load(dir: &Path) -> Result<Option<DataFile>, DataFileError> {
    let path = dir.join(DATA_FILE);
    let file = match File::open(&path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io("open", &path)(e)),
    };
    let mut text = String::new();
    file.take(DATA_FILE_BYTES_MAX + 1)
        .read_to_string(&mut text)
        .map_err(io("read", &path))?;
    if text.len() as u64 > DATA_FILE_BYTES_MAX {
        return Err(DataFileError::Invalid {
            path,
            reason: format!("longer than {DATA_FILE_BYTES_MAX} bytes"),
        });
    }
    // The version first, alone: a newer format may not parse as this one.
    #[derive(Deserialize)]
    struct Version {
        format_version: u32,
    }
    let version: Version = serde_json::from_str(&text).map_err(|e| DataFileError::Invalid {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    if version.format_version > DATA_FORMAT_VERSION {
        return Err(DataFileError::Newer {
            path,
            found: version.format_version,
        });
    }
    let data: DataFile = serde_json::from_str(&text).map_err(|e| DataFileError::Invalid {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    if let Some(id) = &data.cluster_id {
        validate_cluster_id(id).map_err(|reason| DataFileError::Invalid { path, reason })?;
    }
    Ok(Some(data))
}

/// Replaces the file in `dir` atomically and durably: a crash leaves the old or the new file.
pub fn store(dir: &Path, data: &DataFile) -> Result<(), DataFileError> {
    fs::create_dir_all(dir).map_err(io("create", dir))?;
    let temp = dir.join(TEMP_FILE);
    let path = dir.join(DATA_FILE);
    // Our own plain struct: serializing it cannot fail.
    let mut bytes = serde_json::to_vec(data).unwrap_or_default();
    bytes.push(b'\n');
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&temp)
        .map_err(io("create", &temp))?;
    file.write_all(&bytes).map_err(io("write", &temp))?;
    file.sync_all().map_err(io("fsync", &temp))?;
    fs::rename(&temp, &path).map_err(io("rename", &path))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io("fsync", dir))?;
    Ok(())
}

/// The file for node `node_id` in `dir`: loaded and checked, or written for a directory that has
/// none (a first start, or a directory from a build that did not write one).
pub fn open_for(dir: &Path, node_id: NodeId) -> Result<DataFile, DataFileError> {
    match load(dir)? {
        Some(data) if data.node_id != node_id => Err(DataFileError::OtherNode {
            path: dir.to_path_buf(),
            found: data.node_id,
            configured: node_id,
        }),
        Some(mut data) => {
            if data.format_version < DATA_FORMAT_VERSION {
                // Recorded before the store opens and imports the older log (removing its
                // files): an older vnetd would find no log it knows in the directory and start
                // as a new node, able to vote twice in a term. With version 2 recorded first, it
                // refuses the directory instead, whenever a crash interrupts the upgrade.
                data.format_version = DATA_FORMAT_VERSION;
                store(dir, &data)?;
            }
            Ok(data)
        }
        None => {
            let data = DataFile {
                format_version: DATA_FORMAT_VERSION,
                node_id,
                cluster_id: None,
            };
            store(dir, &data)?;
            Ok(data)
        }
    }
}

/// A new random cluster id: 32 lowercase hex digits from the kernel's random source.
pub fn new_cluster_id() -> std::io::Result<String> {
    let mut bytes = [0u8; 16];
    File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// A cluster id is 1 to [`CLUSTER_ID_CHARS_MAX`] characters of `[0-9a-z-]`.
pub fn validate_cluster_id(id: &str) -> Result<(), String> {
    if id.is_empty() || id.len() > CLUSTER_ID_CHARS_MAX {
        return Err(format!(
            "cluster id {:?} must be 1 to {CLUSTER_ID_CHARS_MAX} characters",
            crate::error::echoed(id)
        ));
    }
    if !id
        .chars()
        .all(|c| c.is_ascii_digit() || c.is_ascii_lowercase() || c == '-')
    {
        return Err(format!(
            "cluster id {:?} may hold only 0-9, a-z and '-'",
            crate::error::echoed(id)
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_open_writes_the_file_and_later_opens_read_it_back() {
        let dir = tempfile::tempdir().unwrap();
        let first = open_for(dir.path(), 3).unwrap();
        assert_eq!(first.node_id, 3);
        assert_eq!(first.format_version, DATA_FORMAT_VERSION);
        assert_eq!(first.cluster_id, None);
        let mut learnt = first.clone();
        learnt.cluster_id = Some(new_cluster_id().unwrap());
        store(dir.path(), &learnt).unwrap();
        assert_eq!(open_for(dir.path(), 3).unwrap(), learnt);
        assert!(!dir.path().join(TEMP_FILE).exists());
    }

    #[test]
    fn another_nodes_directory_is_refused_naming_both_ids() {
        let dir = tempfile::tempdir().unwrap();
        open_for(dir.path(), 1).unwrap();
        let refused = open_for(dir.path(), 2).unwrap_err().to_string();
        assert!(
            refused.contains("node id 1") && refused.contains("--id 2"),
            "{refused}"
        );
    }

    #[test]
    fn a_newer_format_is_refused_even_if_it_does_not_parse_as_ours() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(
            dir.path().join(DATA_FILE),
            r#"{"format_version": 3, "node_id": "renamed"}"#,
        )
        .unwrap();
        let refused = open_for(dir.path(), 1).unwrap_err().to_string();
        assert!(refused.contains("format version 3"), "{refused}");
    }

    #[test]
    fn an_older_format_is_recorded_as_this_one_on_open() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(
            dir.path().join(DATA_FILE),
            r#"{"format_version": 1, "node_id": 4, "cluster_id": "abc123"}"#,
        )
        .unwrap();
        let opened = open_for(dir.path(), 4).unwrap();
        assert_eq!(opened.format_version, DATA_FORMAT_VERSION);
        assert_eq!(opened.cluster_id.as_deref(), Some("abc123"));
        assert_eq!(load(dir.path()).unwrap(), Some(opened));
    }

    #[test]
    fn damaged_files_and_bad_cluster_ids_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(DATA_FILE), "{not json").unwrap();
        assert!(matches!(
            load(dir.path()),
            Err(DataFileError::Invalid { .. })
        ));
        fs::write(
            dir.path().join(DATA_FILE),
            r#"{"format_version": 1, "node_id": 1, "cluster_id": "UPPER"}"#,
        )
        .unwrap();
        assert!(matches!(
            load(dir.path()),
            Err(DataFileError::Invalid { .. })
        ));
        assert!(validate_cluster_id("").is_err());
        assert!(validate_cluster_id(&"a".repeat(CLUSTER_ID_CHARS_MAX + 1)).is_err());
        let id = new_cluster_id().unwrap();
        assert_eq!(id.len(), 32);
        validate_cluster_id(&id).unwrap();
    }
}
