//! `snapshot save` and `snapshot status`: backups of the whole replicated state.
//!
//! A backup is the file `ClusterService.SaveSnapshot` streams (its layout is documented there,
//! in `cluster.proto`): a 24-byte header (magic, version, body length, CRC-32 of the body) and a
//! JSON body. This side checks the header and the checksum and reads only the body's `summary`
//! object; `vnetd restore` verifies the whole state before it builds anything from the file.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use futures::StreamExt;
use serde::{Deserialize, Serialize};
use vnet_proto::vnet::v1 as pb;
use vnet_proto::vnet::v1::cluster_service_client::ClusterServiceClient;

use crate::error::CliError;
use crate::output::Render;
use crate::retry::CallKind;
use crate::session::{request, Session};
use crate::{emit, Context};

const MAGIC: &[u8; 8] = b"VNETSNAP";
const FORMAT_VERSION: u32 = 1;
const HEADER_LEN: usize = 24;
/// Largest backup accepted, from a server or a file (vnetd's own snapshot limit).
pub const BACKUP_BYTES_MAX: u64 = 1 << 30;

/// What `snapshot save` and `snapshot status` print.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SnapshotView {
    pub file: String,
    pub size: u64,
    pub revision: Option<u64>,
    pub applied_index: Option<u64>,
    pub profiles: Option<u64>,
    pub pools: Option<u64>,
    pub members: Option<u64>,
    pub verified: bool,
    /// Why the file does not verify; empty when it does.
    pub problem: String,
}

impl Render for SnapshotView {
    fn text(&self) -> String {
        let count = |n: Option<u64>| n.map_or("?".to_string(), |n| n.to_string());
        let mut out = format!(
            "file      {}\nsize      {} bytes\nrevision  {}\napplied   {}\nprofiles  {}\npools     {}\nmembers   {}\n",
            self.file,
            self.size,
            count(self.revision),
            count(self.applied_index),
            count(self.profiles),
            count(self.pools),
            count(self.members),
        );
        if self.verified {
            out.push_str("verified  yes (header, length and CRC-32 check out)\n");
        } else {
            out.push_str(&format!("verified  NO: {}\n", self.problem));
        }
        out
    }
}

#[derive(Deserialize)]
struct Body {
    summary: Option<Summary>,
}

#[derive(Deserialize)]
struct Summary {
    revision: u64,
    applied_index: u64,
    profiles: u64,
    pools: u64,
    members: u64,
}

/// Checks a backup's bytes: the view, with `verified` and the problem if any.
pub fn inspect(file: &str, bytes: &[u8]) -> SnapshotView {
    let mut view = SnapshotView {
        file: file.to_string(),
        size: bytes.len() as u64,
        ..SnapshotView::default()
    };
    match check(bytes) {
        Ok(summary) => {
            view.revision = Some(summary.revision);
            view.applied_index = Some(summary.applied_index);
            view.profiles = Some(summary.profiles);
            view.pools = Some(summary.pools);
            view.members = Some(summary.members);
            view.verified = true;
        }
        Err(problem) => view.problem = problem,
    }
    view
}

fn check(bytes: &[u8]) -> Result<Summary, String> {
    if bytes.len() < HEADER_LEN {
        return Err(format!(
            "{} bytes is shorter than the {HEADER_LEN}-byte header",
            bytes.len()
        ));
    }
    if &bytes[..8] != MAGIC {
        return Err("it does not start with the vnet-ha snapshot magic VNETSNAP".to_string());
    }
    let word = |range: std::ops::Range<usize>| {
        bytes[range]
            .iter()
            .fold(0u64, |acc, b| (acc << 8) | u64::from(*b))
    };
    let version = word(8..12);
    if version != u64::from(FORMAT_VERSION) {
        return Err(format!(
            "format version {version} is not one this build reads ({FORMAT_VERSION})"
        ));
    }
    let declared = word(12..20);
    let body = &bytes[HEADER_LEN..];
    if declared != body.len() as u64 {
        return Err(format!(
            "the header says the body is {declared} bytes but {} follow (truncated or extended)",
            body.len()
        ));
    }
    let expected = word(20..24) as u32;
    let actual = crc32fast::hash(body);
    if expected != actual {
        return Err(format!(
            "checksum mismatch: the header says {expected:#010x}, the body has {actual:#010x}"
        ));
    }
    let parsed: Body = serde_json::from_slice(body)
        .map_err(|e| format!("the body is not a snapshot body: {e}"))?;
    parsed
        .summary
        .ok_or_else(|| "the body has no summary (written by an older vnetd)".to_string())
}

/// `vnetctl snapshot status FILE`: prints what the file holds; fails if it does not verify.
pub fn status(context: &Context, file: &Path) -> Result<(), CliError> {
    let bytes = read_bounded(file)?;
    let view = inspect(&file.display().to_string(), &bytes);
    emit(context, &view)?;
    if view.verified {
        Ok(())
    } else {
        Err(CliError::Local(anyhow::anyhow!(
            "{} does not verify: {}",
            file.display(),
            view.problem
        )))
    }
}

fn read_bounded(file: &Path) -> Result<Vec<u8>, CliError> {
    let local = |verb: &str, e: std::io::Error| {
        CliError::Local(anyhow::anyhow!("cannot {verb} {}: {e}", file.display()))
    };
    let mut bytes = Vec::new();
    File::open(file)
        .map_err(|e| local("open", e))?
        .take(BACKUP_BYTES_MAX + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| local("read", e))?;
    if bytes.len() as u64 > BACKUP_BYTES_MAX {
        return Err(CliError::Local(anyhow::anyhow!(
            "{} is larger than {BACKUP_BYTES_MAX} bytes, the most a backup can be",
            file.display()
        )));
    }
    Ok(bytes)
}

/// `vnetctl snapshot save FILE`: streams a backup, checks it, and puts it in place atomically.
pub async fn save(session: &mut Session, context: &Context, file: &Path) -> Result<(), CliError> {
    let timeout = session.timeout();
    let (header, bytes) = session
        .call(CallKind::Read, |channel| async move {
            let mut stream = ClusterServiceClient::new(channel)
                .save_snapshot(request(pb::SaveSnapshotRequest {}, timeout))
                .await?
                .into_inner();
            let mut header = None;
            let mut bytes = Vec::new();
            while let Some(message) = stream.next().await {
                match message?.part {
                    Some(pb::save_snapshot_response::Part::Header(h)) => {
                        if h.size > BACKUP_BYTES_MAX {
                            return Err(tonic::Status::out_of_range(format!(
                                "the server announced a backup of {} bytes, more than {BACKUP_BYTES_MAX}",
                                h.size
                            )));
                        }
                        bytes.reserve(h.size as usize);
                        header = Some(h);
                    }
                    Some(pb::save_snapshot_response::Part::Chunk(chunk)) => {
                        let announced = header.as_ref().map_or(0, |h| h.size);
                        if bytes.len() as u64 + chunk.len() as u64 > announced {
                            return Err(tonic::Status::data_loss(format!(
                                "the server sent more than the {announced} bytes it announced"
                            )));
                        }
                        bytes.extend_from_slice(&chunk);
                    }
                    None => {}
                }
            }
            let header =
                header.ok_or_else(|| tonic::Status::data_loss("the server sent no header"))?;
            Ok((header, bytes))
        })
        .await?;
    let received_crc = crc32fast::hash(&bytes);
    if bytes.len() as u64 != header.size || received_crc != header.crc32 {
        return Err(CliError::Local(anyhow::anyhow!(
            "the backup arrived damaged: {} bytes with CRC-32 {received_crc:#010x}, the server \
             announced {} bytes with {:#010x}; nothing was written",
            bytes.len(),
            header.size,
            header.crc32
        )));
    }
    let view = inspect(&file.display().to_string(), &bytes);
    if !view.verified {
        return Err(CliError::Local(anyhow::anyhow!(
            "the backup does not verify ({}); nothing was written",
            view.problem
        )));
    }
    write_atomically(file, &bytes)?;
    emit(context, &view)
}

/// Writes `bytes` to a temporary file beside `file`, fsyncs it, renames it over `file` and
/// fsyncs the directory: `file` is never seen half written.
fn write_atomically(file: &Path, bytes: &[u8]) -> Result<(), CliError> {
    let local = |verb: &str, path: &Path, e: std::io::Error| {
        CliError::Local(anyhow::anyhow!("cannot {verb} {}: {e}", path.display()))
    };
    let dir = match file.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = file
        .file_name()
        .ok_or_else(|| CliError::usage(format!("FILE {:?} names no file", file.display())))?;
    let temp = dir.join(format!(".{}.partial", name.to_string_lossy()));
    let mut out = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&temp)
        .map_err(|e| local("create", &temp, e))?;
    let written = out
        .write_all(bytes)
        .and_then(|()| out.sync_all())
        .map_err(|e| local("write", &temp, e));
    if let Err(e) = written {
        let _ = fs::remove_file(&temp);
        return Err(e);
    }
    fs::rename(&temp, file).map_err(|e| local("rename into", file, e))?;
    File::open(&dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| local("fsync", &dir, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A backup in the server's layout around `body`.
    pub fn backup(body: &str) -> Vec<u8> {
        let mut bytes = MAGIC.to_vec();
        bytes.extend_from_slice(&FORMAT_VERSION.to_be_bytes());
        bytes.extend_from_slice(&(body.len() as u64).to_be_bytes());
        bytes.extend_from_slice(&crc32fast::hash(body.as_bytes()).to_be_bytes());
        bytes.extend_from_slice(body.as_bytes());
        bytes
    }

    const BODY: &str = r#"{"meta":{},"state":{},"summary":{"revision":9,"applied_index":12,"profiles":3,"pools":2,"members":3}}"#;

    #[test]
    fn a_whole_backup_verifies_and_reports_its_summary() {
        let view = inspect("b", &backup(BODY));
        assert!(view.verified, "{}", view.problem);
        assert_eq!(
            (view.revision, view.profiles, view.pools, view.members),
            (Some(9), Some(3), Some(2), Some(3))
        );
        assert!(view.text().contains("verified  yes"));
    }

    #[test]
    fn every_flipped_byte_truncation_and_extension_is_caught() {
        let good = backup(BODY);
        for i in 0..good.len() {
            let mut bad = good.clone();
            bad[i] ^= 0x01;
            assert!(!inspect("b", &bad).verified, "flip at byte {i}");
        }
        for len in 0..good.len() {
            assert!(!inspect("b", &good[..len]).verified, "truncated to {len}");
        }
        let mut longer = good.clone();
        longer.push(b' ');
        let view = inspect("b", &longer);
        assert!(!view.verified);
        assert!(view.text().contains("verified  NO"), "{}", view.text());
    }
}
