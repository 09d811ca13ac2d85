//! The audit log: one JSON line per audited request, in size-rotated files under the node's data
//! directory, kept beyond the replicated event history (which holds only the newest
//! `EVENT_HISTORY_MAX` changes and no refusals at all).
//!
//! What is recorded (`roles::Permission::audited_always`): every call that changes something,
//! accepted or refused, the reads of a backup and of the audit itself, and every refused read.
//! Each node records the calls made to it, where the principal was authenticated; a write a
//! follower forwards is recorded by the follower, and the event the leader commits carries the
//! same principal as its actor.
//!
//! Files: `audit.jsonl` is written; at `file_bytes_max` it is fsynced and becomes
//! `audit.jsonl.1`, the older ones move up one, and `audit.jsonl.<files_kept - 1>` is deleted, so
//! the log takes at most `files_kept * file_bytes_max` bytes (plus one record). A record is
//! written with one `write` before the call is answered, so it survives the process crashing;
//! it reaches the disk with the OS's writeback or at the next rotation (an fsync per record
//! would double the cost of every write for no gain in what a crashed process can do). A torn
//! last line is skipped when read. The append runs on the calling task, under one lock: one
//! `write(2)` of about 220 bytes (tens of microseconds; the rotation test prints the time); a
//! rotation (an fsync of at most `file_bytes_max`) comes once per about 75,000 records at the
//! default size. Why files on each node rather than a replicated log:
//! ARCHITECTURE.md, "Roles and audit".

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

/// The directory under the data directory that holds the audit files.
pub const AUDIT_DIR: &str = "audit";
/// The file being written.
pub const CURRENT_FILE: &str = "audit.jsonl";
pub const DEFAULT_FILE_BYTES_MAX: u64 = 16 * 1024 * 1024;
pub const DEFAULT_FILES_KEPT: u32 = 8;
/// Smallest file size accepted: room for a few hundred records.
pub const FILE_BYTES_MIN: u64 = 64 * 1024;
/// Most files kept (the directory stays listable, rotation stays short).
pub const FILES_KEPT_MAX: u32 = 1000;
/// Most records one `ReadAudit` returns: at most about 1 KiB each (the message is cut to
/// `MESSAGE_CHARS_MAX`), which keeps an answer well within the 4 MiB response bound.
pub const READ_RECORDS_MAX: usize = 2000;
/// Characters of a refusal's message kept in a record.
pub const MESSAGE_CHARS_MAX: usize = 300;
/// Bytes of one line read back; a longer line is not one of ours and is skipped.
const LINE_BYTES_MAX: usize = 16 * 1024;

/// Where the audit log lives and how much of it is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditConfig {
    pub dir: PathBuf,
    pub file_bytes_max: u64,
    pub files_kept: u32,
}

impl AuditConfig {
    /// The bad key, its value and why.
    pub fn validate(&self) -> Result<(), (&'static str, String, String)> {
        if self.file_bytes_max < FILE_BYTES_MIN {
            return Err((
                "audit_file_bytes_max",
                self.file_bytes_max.to_string(),
                format!("must be at least {FILE_BYTES_MIN}"),
            ));
        }
        if !(1..=FILES_KEPT_MAX).contains(&self.files_kept) {
            return Err((
                "audit_files_kept",
                self.files_kept.to_string(),
                format!("must be 1..={FILES_KEPT_MAX}"),
            ));
        }
        Ok(())
    }
}

/// One audited request, as one line of the file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// When the node decided the request: RFC 3339, UTC, milliseconds.
    pub time: String,
    pub time_unix_ms: u64,
    pub principal: String,
    /// viewer, operator, admin, none, system or insecure.
    pub role: String,
    /// The node that served the call.
    pub node: String,
    /// The full gRPC method.
    pub method: String,
    /// What the call acted on, if anything.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub target: String,
    /// `OK` or the gRPC code name.
    pub outcome: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_behalf_of: Option<String>,
}

/// What a reader asks for.
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    pub since_unix_ms: u64,
    pub principal: Option<String>,
    pub limit: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("audit log {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> AuditError + '_ {
    move |source| AuditError::Io {
        path: path.display().to_string(),
        source,
    }
}

struct Current {
    file: File,
    bytes: u64,
}

/// A node's audit log. Records are appended under one lock, so lines never interleave.
pub struct AuditLog {
    config: AuditConfig,
    current: Mutex<Current>,
}

impl AuditLog {
    /// Opens (creating as needed) the directory and the current file, appending to it.
    pub fn open(config: AuditConfig) -> Result<AuditLog, AuditError> {
        std::fs::create_dir_all(&config.dir).map_err(io(&config.dir))?;
        let path = config.dir.join(CURRENT_FILE);
        let file = open_append(&path)?;
        let bytes = file.metadata().map_err(io(&path))?.len();
        Ok(AuditLog {
            config,
            current: Mutex::new(Current { file, bytes }),
        })
    }

    pub fn config(&self) -> &AuditConfig {
        &self.config
    }

    /// Appends `record`, rotating first if it would take the current file past its size.
    pub fn append(&self, record: &AuditRecord) -> Result<(), AuditError> {
        // Serializing our own record (strings and integers) cannot fail; should it, the line is
        // a JSON null, which readers skip, rather than a lost call.
        let mut line = serde_json::to_vec(record).unwrap_or_else(|_| b"null".to_vec());
        line.push(b'\n');
        let mut current = self
            .current
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if current.bytes > 0 && current.bytes + line.len() as u64 > self.config.file_bytes_max {
            self.rotate(&mut current)?;
        }
        let path = self.config.dir.join(CURRENT_FILE);
        current.file.write_all(&line).map_err(io(&path))?;
        current.bytes += line.len() as u64;
        Ok(())
    }

    /// Makes the current file `.1` (after fsyncing it), shifting the older ones and deleting the
    /// oldest beyond `files_kept`, and starts a new current file.
    fn rotate(&self, current: &mut Current) -> Result<(), AuditError> {
        let dir = &self.config.dir;
        let current_path = dir.join(CURRENT_FILE);
        current.file.sync_all().map_err(io(&current_path))?;
        let kept = self.config.files_kept;
        if kept <= 1 {
            // Only the current file is kept: start it again.
            current.file = File::create(&current_path).map_err(io(&current_path))?;
            current.bytes = 0;
            return Ok(());
        }
        let oldest = rotated(dir, kept - 1);
        match std::fs::remove_file(&oldest) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(&oldest)(e)),
        }
        for n in (1..kept - 1).rev() {
            let from = rotated(dir, n);
            if from.exists() {
                std::fs::rename(&from, rotated(dir, n + 1)).map_err(io(&from))?;
            }
        }
        std::fs::rename(&current_path, rotated(dir, 1)).map_err(io(&current_path))?;
        current.file = open_append(&current_path)?;
        current.bytes = 0;
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io(dir))?;
        Ok(())
    }

    /// The newest `query.limit` matching records, oldest first, from every kept file.
    pub fn read(&self, query: &AuditQuery) -> Result<Vec<AuditRecord>, AuditError> {
        let limit = query.limit.clamp(1, READ_RECORDS_MAX);
        let dir = &self.config.dir;
        let mut files: Vec<PathBuf> = (1..self.config.files_kept)
            .rev()
            .map(|n| rotated(dir, n))
            .collect();
        files.push(dir.join(CURRENT_FILE));
        let mut newest = VecDeque::with_capacity(limit);
        for path in files {
            let file = match File::open(&path) {
                Ok(file) => file,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io(&path)(e)),
            };
            let mut reader = BufReader::new(file);
            let mut line = Vec::new();
            loop {
                line.clear();
                let read = (&mut reader)
                    .take(LINE_BYTES_MAX as u64 + 1)
                    .read_until(b'\n', &mut line)
                    .map_err(io(&path))?;
                if read == 0 {
                    break;
                }
                if line.last() != Some(&b'\n') {
                    if line.len() > LINE_BYTES_MAX {
                        // Not one of ours: skip to the end of the line.
                        let mut rest = Vec::new();
                        reader.read_until(b'\n', &mut rest).map_err(io(&path))?;
                        continue;
                    }
                    // A torn last line (a crash mid-write): nothing more in this file.
                    break;
                }
                let Some(record) = parse_line(&line) else {
                    continue;
                };
                if record.time_unix_ms < query.since_unix_ms
                    || query
                        .principal
                        .as_ref()
                        .is_some_and(|p| *p != record.principal)
                {
                    continue;
                }
                if newest.len() == limit {
                    newest.pop_front();
                }
                newest.push_back(record);
            }
        }
        Ok(newest.into())
    }
}

use std::io::Read as _;

/// One line of an audit file, if it is a record.
pub fn parse_line(line: &[u8]) -> Option<AuditRecord> {
    serde_json::from_slice(line).ok()
}

fn rotated(dir: &Path, n: u32) -> PathBuf {
    dir.join(format!("{CURRENT_FILE}.{n}"))
}

fn open_append(path: &Path) -> Result<File, AuditError> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(io(path))
}

/// Milliseconds since the Unix epoch, now.
pub fn now_unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// `unix_ms` as RFC 3339 in UTC with milliseconds, e.g. `2026-12-06T13:05:00.123Z`.
pub fn rfc3339(unix_ms: u64) -> String {
    let secs = unix_ms / 1000;
    let days = secs / 86_400;
    let rem = secs % 86_400;
    // Howard Hinnant's days-to-civil, for days since 1970-01-01 (never negative here).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60,
        unix_ms % 1000
    )
}

/// `message` cut to `MESSAGE_CHARS_MAX` characters, marked when cut.
pub fn cut_message(message: &str) -> String {
    if message.chars().count() <= MESSAGE_CHARS_MAX {
        return message.to_string();
    }
    let kept: String = message.chars().take(MESSAGE_CHARS_MAX).collect();
    format!("{kept}… ({} characters)", message.chars().count())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(n: u64, principal: &str) -> AuditRecord {
        AuditRecord {
            time: rfc3339(n),
            time_unix_ms: n,
            principal: principal.to_string(),
            role: "viewer".to_string(),
            node: "unit-a".to_string(),
            method: "/vnet.v1.PoolService/CreatePool".to_string(),
            target: format!("pool-{n}"),
            outcome: "PERMISSION_DENIED".to_string(),
            message: "no".to_string(),
            on_behalf_of: None,
        }
    }

    fn config(dir: &Path, file_bytes_max: u64, files_kept: u32) -> AuditConfig {
        AuditConfig {
            dir: dir.join(AUDIT_DIR),
            file_bytes_max,
            files_kept,
        }
    }

    #[test]
    fn times_are_rfc3339_in_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(951_782_400_001), "2000-02-29T00:00:00.001Z");
        assert_eq!(rfc3339(1_796_562_300_123), "2026-12-06T13:05:00.123Z");
    }

    #[test]
    fn files_rotate_at_their_size_and_only_the_newest_are_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = config(dir.path(), FILE_BYTES_MIN, 3);
        let log = AuditLog::open(config.clone()).expect("open");
        let line = serde_json::to_vec(&record(1_000_000, "bob"))
            .expect("encode")
            .len() as u64
            + 1;
        let per_file = FILE_BYTES_MIN / line;
        let written = per_file * 5 + 7;
        let started = std::time::Instant::now();
        for n in 0..written {
            log.append(&record(1_000_000 + n, "bob")).expect("append");
        }
        let elapsed = started.elapsed();
        let mut names: Vec<String> = std::fs::read_dir(&config.dir)
            .expect("list")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["audit.jsonl", "audit.jsonl.1", "audit.jsonl.2"]);
        for name in &names {
            let size = std::fs::metadata(config.dir.join(name))
                .expect("stat")
                .len();
            assert!(size <= FILE_BYTES_MIN, "{name} holds {size} bytes");
        }
        // What is kept is the newest records, in order, ending with the last one written.
        let all = log
            .read(&AuditQuery {
                limit: READ_RECORDS_MAX,
                ..AuditQuery::default()
            })
            .expect("read");
        assert_eq!(
            all.last().map(|r| r.time_unix_ms),
            Some(1_000_000 + written - 1)
        );
        assert!(all
            .windows(2)
            .all(|w| w[0].time_unix_ms + 1 == w[1].time_unix_ms));
        assert!(all.len() as u64 > 2 * per_file && (all.len() as u64) < written);
        println!(
            "{written} records of {line} bytes in files of {FILE_BYTES_MIN}: {} kept; {:.1} µs \
             per append, rotations included",
            all.len(),
            elapsed.as_secs_f64() * 1e6 / written as f64
        );

        // Reopened, it appends to the current file.
        drop(log);
        let log = AuditLog::open(config).expect("reopen");
        log.append(&record(9_000_000, "carol")).expect("append");
        let carol = log
            .read(&AuditQuery {
                principal: Some("carol".into()),
                limit: 10,
                ..AuditQuery::default()
            })
            .expect("read");
        assert_eq!(carol, vec![record(9_000_000, "carol")]);
    }

    #[test]
    fn reads_filter_by_time_and_principal_and_keep_the_newest() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = AuditLog::open(config(dir.path(), DEFAULT_FILE_BYTES_MAX, 2)).expect("open");
        for n in 0..10 {
            log.append(&record(n, if n % 2 == 0 { "even" } else { "odd" }))
                .expect("append");
        }
        let read = |since: u64, principal: Option<&str>, limit: usize| -> Vec<u64> {
            log.read(&AuditQuery {
                since_unix_ms: since,
                principal: principal.map(str::to_string),
                limit,
            })
            .expect("read")
            .iter()
            .map(|r| r.time_unix_ms)
            .collect()
        };
        assert_eq!(read(5, None, 100), vec![5, 6, 7, 8, 9]);
        assert_eq!(read(0, Some("odd"), 100), vec![1, 3, 5, 7, 9]);
        assert_eq!(read(0, Some("even"), 2), vec![6, 8]);
        assert_eq!(read(0, Some("nobody"), 2), Vec::<u64>::new());
    }

    #[test]
    fn a_torn_or_foreign_line_is_skipped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = config(dir.path(), DEFAULT_FILE_BYTES_MAX, 2);
        let log = AuditLog::open(config.clone()).expect("open");
        log.append(&record(1, "a")).expect("append");
        {
            let mut file = open_append(&config.dir.join(CURRENT_FILE)).expect("open");
            file.write_all(b"not json\n").expect("write");
            file.write_all(&vec![b'x'; LINE_BYTES_MAX * 2])
                .expect("write");
            file.write_all(b"\n").expect("write");
        }
        log.append(&record(2, "a")).expect("append");
        {
            let mut file = open_append(&config.dir.join(CURRENT_FILE)).expect("open");
            file.write_all(b"{\"time\":\"torn").expect("write");
        }
        let read: Vec<u64> = log
            .read(&AuditQuery {
                limit: 10,
                ..AuditQuery::default()
            })
            .expect("read")
            .iter()
            .map(|r| r.time_unix_ms)
            .collect();
        assert_eq!(read, vec![1, 2]);
    }

    #[test]
    fn long_messages_are_cut() {
        let long = "m".repeat(MESSAGE_CHARS_MAX * 3);
        let cut = cut_message(&long);
        assert!(cut.chars().count() < MESSAGE_CHARS_MAX + 30, "{cut}");
        assert!(cut.ends_with(&format!("({} characters)", MESSAGE_CHARS_MAX * 3)));
        assert_eq!(cut_message("short"), "short");
    }

    #[test]
    fn sizes_and_counts_are_checked() {
        let dir = PathBuf::from("/d");
        assert!(config(&dir, FILE_BYTES_MIN - 1, 2).validate().is_err());
        assert!(config(&dir, FILE_BYTES_MIN, 0).validate().is_err());
        assert!(config(&dir, FILE_BYTES_MIN, FILES_KEPT_MAX + 1)
            .validate()
            .is_err());
        assert!(config(&dir, FILE_BYTES_MIN, 1).validate().is_ok());
    }
}
