//! The switch journal: an append-only file of everything a switch did, and the reader that
//! turns it into presentation intervals for the double-presentation checker.
//!
//! # Format
//!
//! One record per line: `<crc32 of the JSON, 8 lowercase hex digits> <JSON>\n`, where the JSON is
//! a [`Record`]: `{"seq":1,"mono_ns":…,"wall_ms":…,"event":{"type":"Started","instance":"…"}}`.
//! `seq` counts from 1 and grows by one per record across restarts; `mono_ns` is the
//! CLOCK_MONOTONIC time at which the change took effect (shared by every switch on the machine,
//! so journals of different switches compare); `wall_ms` is only for people.
//!
//! # Why it can be trusted
//!
//! - Each record is one `write()` of one whole line on a file opened for appending, and every
//!   call that changed the switch is answered only after its records are written and
//!   `fdatasync`ed. So a presentation the API acknowledged is in the journal even after a
//!   `kill -9` or a machine crash: a checker never misses one.
//! - A line without its final newline was never acknowledged (the write that would have finished
//!   it did not complete). On reopen the writer cuts it off, with a warning; the reader ignores
//!   it (the switch may be writing it right now).
//! - Any *complete* line that fails its CRC, does not parse, or breaks the sequence means the
//!   file was damaged after the fact: the switch refuses to start and the reader refuses to
//!   read, naming the line and byte offset. A journal with bad bytes is not evidence.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::program::Function;

/// Characters of a damaged line echoed in an error.
const LINE_SHOWN_CHARS_MAX: usize = 80;

/// Why a port was cleared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ClearReason {
    /// `Clear(host_port)`.
    Clear,
    /// `ClearAll`.
    ClearAll,
    /// `Program` on a port that held something: the old program ends as the new one starts.
    Replaced,
}

/// Something a switch did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum Event {
    /// The switch process started with every port clear, like hardware after a reset.
    /// `instance` differs on every start.
    Started {
        instance: String,
        /// What presenting does on this switch, when it is more than recording: on
        /// `--backend linux`, that vNICs are kernel interfaces and vHBAs simulated fabric
        /// logins. Absent on the simulated switch (and in journals written before it existed).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        data_plane: Option<String>,
    },
    /// A host port started presenting `functions`.
    Programmed {
        port: u8,
        profile: String,
        revision: u64,
        functions: Vec<Function>,
    },
    /// A gratuitous announcement of `mac` from `port`, so upstream switches relearn it at once.
    MacAnnounced { port: u8, mac: String },
    /// A fabric login (FDISC) of an NPIV port from host `port`, so the SAN sees it at once.
    FabricLogin {
        port: u8,
        wwpn: String,
        wwnn: String,
    },
    /// A host port stopped presenting what it held.
    Cleared { port: u8, reason: ClearReason },
    /// The watchdog deadline passed: the switch cleared `ports` (every port that held
    /// something) by itself and refuses to program until armed with a future deadline.
    Fenced {
        ports: Vec<u8>,
        deadline_mono_ns: u64,
    },
}

/// One line of the journal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub seq: u64,
    pub mono_ns: u64,
    pub wall_ms: u64,
    pub event: Event,
}

/// Why a journal cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("cannot {action} journal {path}: {source}")]
    Io {
        path: PathBuf,
        action: &'static str,
        source: std::io::Error,
    },
    /// `line` counts from 1; `offset` is the byte offset of the line's start.
    #[error("journal {path} is damaged at line {line} (byte offset {offset}): {reason}")]
    Corrupt {
        path: PathBuf,
        line: usize,
        offset: u64,
        reason: String,
    },
}

/// The outcome of scanning a journal's bytes.
struct Scan {
    records: Vec<Record>,
    /// Byte offset of each record's line, by position.
    offsets: Vec<u64>,
    /// Bytes up to and including the last complete line.
    complete_len: u64,
}

/// Parses every complete line of `bytes`; a trailing part without a newline is left out.
fn scan(path: &Path, bytes: &[u8]) -> Result<Scan, JournalError> {
    let mut scan = Scan {
        records: Vec::new(),
        offsets: Vec::new(),
        complete_len: 0,
    };
    let mut start = 0usize;
    while let Some(newline) = bytes[start..].iter().position(|&byte| byte == b'\n') {
        let end = start + newline;
        let offset = start as u64;
        let line_number = scan.records.len() + 1;
        let corrupt = |reason: String| JournalError::Corrupt {
            path: path.to_owned(),
            line: line_number,
            offset,
            reason,
        };
        let record = parse_line(&bytes[start..end]).map_err(corrupt)?;
        let expected_seq = scan.records.last().map_or(1, |last| last.seq + 1);
        if record.seq != expected_seq {
            return Err(corrupt(format!(
                "sequence number {} where {expected_seq} was expected",
                record.seq
            )));
        }
        scan.records.push(record);
        scan.offsets.push(offset);
        start = end + 1;
        scan.complete_len = start as u64;
    }
    Ok(scan)
}

/// Checks and decodes one line (without its newline). Returns the reason on failure. Public for
/// the fuzz targets (`fuzz/`).
pub fn parse_line(line: &[u8]) -> Result<Record, String> {
    let shown = || {
        let text = String::from_utf8_lossy(line);
        let mut cut: String = text.chars().take(LINE_SHOWN_CHARS_MAX).collect();
        if text.chars().count() > LINE_SHOWN_CHARS_MAX {
            cut.push('…');
        }
        cut
    };
    let (crc_text, json) = match (line.get(..8), line.get(8), line.get(9..)) {
        (Some(crc), Some(b' '), Some(json)) => (crc, json),
        _ => {
            return Err(format!(
                "expected \"<8 hex digits> <json>\", found {:?}",
                shown()
            ))
        }
    };
    let crc = std::str::from_utf8(crc_text)
        .ok()
        .filter(|text| {
            text.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        })
        .and_then(|text| u32::from_str_radix(text, 16).ok())
        .ok_or_else(|| format!("checksum is not 8 lowercase hex digits in {:?}", shown()))?;
    let actual = crc32fast::hash(json);
    if actual != crc {
        return Err(format!(
            "checksum mismatch: line says {crc:08x}, content hashes to {actual:08x}"
        ));
    }
    serde_json::from_slice(json)
        .map_err(|e| format!("checksum matches but the record does not parse: {e}"))
}

/// Encodes a record as its journal line, newline included.
pub fn encode_line(record: &Record) -> Vec<u8> {
    // Serializing a tree of strings, integers and enums with derived impls cannot fail.
    let json = serde_json::to_string(record).expect("a journal record always serializes");
    format!("{:08x} {json}\n", crc32fast::hash(json.as_bytes())).into_bytes()
}

/// Reads every complete record of the journal at `path`, checking each.
///
/// A final line without its newline is ignored: it was never acknowledged, and a running
/// switch may be in the middle of writing it. Any other damage is an error naming the line.
pub fn read(path: &Path) -> Result<Vec<Record>, JournalError> {
    let bytes = std::fs::read(path).map_err(|source| JournalError::Io {
        path: path.to_owned(),
        action: "read",
        source,
    })?;
    Ok(scan(path, &bytes)?.records)
}

/// What opening a journal found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenReport {
    /// Complete records already in the file.
    pub records: u64,
    /// Bytes of a torn last line that were cut off (0 if none).
    pub truncated_bytes: u64,
}

/// The switch's handle on its journal: appends records, and finds them again for `ReadJournal`.
#[derive(Debug)]
pub struct JournalWriter {
    path: PathBuf,
    file: File,
    next_seq: u64,
    /// Byte offset of every record's line, indexed by `seq - 1`, so a reader can start anywhere
    /// without scanning. 8 bytes per record.
    offsets: Vec<u64>,
    len: u64,
}

impl JournalWriter {
    /// Opens (creating if missing) the journal at `path`, checks every record, and cuts off a
    /// torn last line. Refuses a journal with a damaged complete line.
    pub fn open(path: &Path) -> Result<(JournalWriter, OpenReport), JournalError> {
        let io = |action: &'static str| {
            move |source| JournalError::Io {
                path: path.to_owned(),
                action,
                source,
            }
        };
        // Append mode: every write lands at the end of the file in one piece, whatever the
        // file offset, so records are never interleaved or overwritten.
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(path)
            .map_err(io("open"))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(io("read"))?;
        let scan = scan(path, &bytes)?;
        let truncated_bytes = bytes.len() as u64 - scan.complete_len;
        if truncated_bytes > 0 {
            file.set_len(scan.complete_len).map_err(io("truncate"))?;
            // The cut must be durable before new records follow it, or a crash could glue the
            // torn bytes back in front of them.
            file.sync_all().map_err(io("sync"))?;
        }
        let report = OpenReport {
            records: scan.records.len() as u64,
            truncated_bytes,
        };
        let writer = JournalWriter {
            path: path.to_owned(),
            file,
            next_seq: scan.records.last().map_or(1, |last| last.seq + 1),
            offsets: scan.offsets,
            len: scan.complete_len,
        };
        Ok((writer, report))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The sequence number the next record will get.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Writes one record with a single `write()`. Not durable until [`JournalWriter::sync`].
    ///
    /// A short write is an error, never retried: a second write could interleave with nothing
    /// here, but the line would then not be the atomic unit the reader relies on.
    pub fn append(
        &mut self,
        mono_ns: u64,
        wall_ms: u64,
        event: Event,
    ) -> Result<Record, JournalError> {
        let record = Record {
            seq: self.next_seq,
            mono_ns,
            wall_ms,
            event,
        };
        let line = encode_line(&record);
        let written = self.file.write(&line).map_err(|source| JournalError::Io {
            path: self.path.clone(),
            action: "append to",
            source,
        })?;
        if written != line.len() {
            return Err(JournalError::Io {
                path: self.path.clone(),
                action: "append to",
                source: std::io::Error::new(
                    std::io::ErrorKind::WriteZero,
                    format!("short write: {written} of {} bytes", line.len()),
                ),
            });
        }
        self.offsets.push(self.len);
        self.len += line.len() as u64;
        self.next_seq += 1;
        Ok(record)
    }

    /// Makes every appended record durable (`fdatasync`).
    pub fn sync(&mut self) -> Result<(), JournalError> {
        self.file.sync_data().map_err(|source| JournalError::Io {
            path: self.path.clone(),
            action: "sync",
            source,
        })
    }

    /// Where records `from_seq..from_seq + count` lie in the file: `(first seq, start, end)`
    /// byte offsets, or `None` if there is no record at or after `from_seq`. Records never change
    /// once written, so the range can be read from another handle without holding the writer.
    pub fn page(&self, from_seq: u64, count: usize) -> Option<(u64, u64, u64)> {
        let first = from_seq.max(1);
        let first_index = usize::try_from(first - 1).ok()?;
        let start = *self.offsets.get(first_index)?;
        let end = self
            .offsets
            .get(first_index.saturating_add(count))
            .copied()
            .unwrap_or(self.len);
        Some((first, start, end))
    }
}

/// Reads the complete lines in `start..end` of the journal at `path` (a range from
/// [`JournalWriter::page`], whose first record is `first_seq`), returning each record with its
/// JSON text as stored. The lines were checked when written or opened; they are checked again
/// because the file may have been damaged since.
pub fn read_range(
    path: &Path,
    first_seq: u64,
    start: u64,
    end: u64,
) -> Result<Vec<(Record, String)>, JournalError> {
    let io = |action: &'static str| {
        move |source| JournalError::Io {
            path: path.to_owned(),
            action,
            source,
        }
    };
    let mut file = File::open(path).map_err(io("open"))?;
    file.seek(SeekFrom::Start(start)).map_err(io("seek in"))?;
    let length = usize::try_from(end.saturating_sub(start)).unwrap_or(usize::MAX);
    let mut bytes = vec![0u8; length];
    file.read_exact(&mut bytes).map_err(io("read"))?;
    let mut out = Vec::new();
    let mut line_start = 0usize;
    for (index, line) in bytes.split_inclusive(|&byte| byte == b'\n').enumerate() {
        let offset = start + line_start as u64;
        line_start += line.len();
        let body = line.strip_suffix(b"\n").unwrap_or(line);
        // Line n holds record n: sequence numbers start at 1 and grow by one per line.
        let line_number = usize::try_from(first_seq)
            .unwrap_or(usize::MAX)
            .saturating_add(index);
        let record = parse_line(body).map_err(|reason| JournalError::Corrupt {
            path: path.to_owned(),
            line: line_number,
            offset,
            reason,
        })?;
        // The JSON starts after the 8 checksum digits and a space, both checked by parse_line.
        let json = String::from_utf8_lossy(&body[9..]).into_owned();
        out.push((record, json));
    }
    Ok(out)
}

/// An interval during which one switch presented one identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Presentation {
    /// The switch (unit) name the caller gave for this journal.
    pub switch: String,
    /// The canonical MAC (`aa:bb:cc:dd:ee:ff`) or WWN (`20:00:…`) presented.
    pub identity: String,
    pub profile: String,
    /// When the port started presenting it (CLOCK_MONOTONIC ns, from the `Programmed` record).
    pub from_ns: u64,
    /// When it stopped; `None` means still presented when the journal ends.
    pub to_ns: Option<u64>,
}

/// Every interval during which this switch presented an identity, in the order they began.
///
/// A presentation starts at its `Programmed` record and ends at the first of: a `Cleared` of its
/// port (whatever the reason, including `replaced`), a `Fenced`, another `Programmed` of its port
/// (a journal from an older switch might omit the `Cleared`), or the next `Started` (a restart
/// resets the switch; when the previous instance died, its true end is unknown and the restart
/// is the latest it can be). Presentations still open at the end of the journal end at
/// `ended_at_mono_ns` when given (a harness that killed the switch knows when), else stay open.
///
/// `ended_at_mono_ns` covers only the last instance. For an instance that was killed and later
/// restarted, its presentations end at the restart, which is later than the kill: a checker
/// then errs towards reporting an overlap, never towards missing one.
pub fn presentations(
    records: &[Record],
    switch_name: &str,
    ended_at_mono_ns: Option<u64>,
) -> Vec<Presentation> {
    let mut out: Vec<Presentation> = Vec::new();
    // Host port -> indexes into `out` of what it presents now.
    let mut open: std::collections::BTreeMap<u8, Vec<usize>> = Default::default();
    let close = |out: &mut Vec<Presentation>, indexes: Vec<usize>, at: u64| {
        for index in indexes {
            let presentation = &mut out[index];
            presentation.to_ns = Some(at.max(presentation.from_ns));
        }
    };
    for record in records {
        let at = record.mono_ns;
        match &record.event {
            Event::Started { .. } | Event::Fenced { .. } => {
                // A fence clears every port, whatever list it carries.
                for (_, indexes) in std::mem::take(&mut open) {
                    close(&mut out, indexes, at);
                }
            }
            Event::Cleared { port, .. } => {
                if let Some(indexes) = open.remove(port) {
                    close(&mut out, indexes, at);
                }
            }
            Event::Programmed {
                port,
                profile,
                functions,
                ..
            } => {
                if let Some(indexes) = open.remove(port) {
                    close(&mut out, indexes, at);
                }
                let mut indexes = Vec::new();
                for identity in functions.iter().flat_map(Function::identities) {
                    indexes.push(out.len());
                    out.push(Presentation {
                        switch: switch_name.to_owned(),
                        identity: canonical(&identity),
                        profile: profile.clone(),
                        from_ns: at,
                        to_ns: None,
                    });
                }
                open.insert(*port, indexes);
            }
            Event::MacAnnounced { .. } | Event::FabricLogin { .. } => {}
        }
    }
    if let Some(end) = ended_at_mono_ns {
        for (_, indexes) in open {
            close(&mut out, indexes, end);
        }
    }
    out
}

/// The bare canonical text of an identity (without the "MAC"/"WWN" label `Display` adds). MACs
/// have 6 octets and WWNs 8, so the two kinds never share a text.
pub fn canonical(identity: &vnet_model::Identity) -> String {
    match identity {
        vnet_model::Identity::Mac(mac) => mac.to_string(),
        vnet_model::Identity::Wwn(wwn) => wwn.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nic(mac: &str) -> Function {
        Function::Nic {
            name: "eth0".into(),
            mac: mac.parse().unwrap(),
            network: "prod".into(),
            vlan: Some(10),
        }
    }

    fn programmed(port: u8, profile: &str, functions: Vec<Function>) -> Event {
        Event::Programmed {
            port,
            profile: profile.into(),
            revision: 1,
            functions,
        }
    }

    fn sample_events() -> Vec<Event> {
        vec![
            Event::Started {
                instance: "1-100".into(),
                data_plane: None,
            },
            programmed(
                3,
                "web",
                vec![
                    nic("02:00:00:00:00:01"),
                    Function::Hba {
                        name: "fc0".into(),
                        wwpn: "20:00:00:25:b5:00:00:01".parse().unwrap(),
                        wwnn: "20:00:00:25:b5:00:01:01".parse().unwrap(),
                        fabric: "fabric-a".into(),
                    },
                ],
            ),
            Event::MacAnnounced {
                port: 3,
                mac: "02:00:00:00:00:01".into(),
            },
            Event::FabricLogin {
                port: 3,
                wwpn: "20:00:00:25:b5:00:00:01".into(),
                wwnn: "20:00:00:25:b5:00:01:01".into(),
            },
            Event::Cleared {
                port: 3,
                reason: ClearReason::Replaced,
            },
            Event::Fenced {
                ports: vec![3],
                deadline_mono_ns: 1_000,
            },
        ]
    }

    fn write_journal(path: &Path, events: Vec<Event>) -> Vec<Record> {
        let (mut writer, _) = JournalWriter::open(path).unwrap();
        let records: Vec<Record> = events
            .into_iter()
            .enumerate()
            .map(|(index, event)| writer.append(100 * index as u64, 5, event).unwrap())
            .collect();
        writer.sync().unwrap();
        records
    }

    /// Byte offset of the start of line `line` (1-based).
    fn line_offset(bytes: &[u8], line: usize) -> usize {
        if line == 1 {
            return 0;
        }
        bytes
            .iter()
            .enumerate()
            .filter(|(_, &byte)| byte == b'\n')
            .nth(line - 2)
            .map(|(index, _)| index + 1)
            .unwrap()
    }

    #[test]
    fn round_trip_and_continue_after_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("switch.journal");
        let written = write_journal(&path, sample_events());
        assert_eq!(
            written.iter().map(|r| r.seq).collect::<Vec<_>>(),
            [1, 2, 3, 4, 5, 6]
        );
        assert_eq!(read(&path).unwrap(), written);

        let text = std::fs::read_to_string(&path).unwrap();
        let first = text.lines().next().unwrap();
        let json =
            r#"{"seq":1,"mono_ns":0,"wall_ms":5,"event":{"type":"Started","instance":"1-100"}}"#;
        assert_eq!(
            first,
            format!("{:08x} {json}", crc32fast::hash(json.as_bytes()))
        );

        let (mut writer, report) = JournalWriter::open(&path).unwrap();
        assert_eq!(
            report,
            OpenReport {
                records: 6,
                truncated_bytes: 0
            }
        );
        assert_eq!(writer.next_seq(), 7);
        let next = writer
            .append(
                900,
                6,
                Event::Started {
                    instance: "2-200".into(),
                    data_plane: None,
                },
            )
            .unwrap();
        assert_eq!(next.seq, 7);
        let all = read(&path).unwrap();
        assert_eq!(all.len(), 7);
        assert_eq!(all[6], next);

        let (first_seq, start, end) = writer.page(2, 3).unwrap();
        assert_eq!(first_seq, 2);
        let page = read_range(&path, first_seq, start, end).unwrap();
        let seqs: Vec<u64> = page.iter().map(|(record, _)| record.seq).collect();
        assert_eq!(seqs, [2, 3, 4]);
        assert_eq!(serde_json::from_str::<Record>(&page[0].1).unwrap(), all[1]);
        assert_eq!(writer.page(8, 3), None);
        let (first_seq, start, end) = writer.page(6, 100).unwrap();
        assert_eq!(read_range(&path, first_seq, start, end).unwrap().len(), 2);
    }

    #[test]
    fn a_flipped_byte_in_a_middle_line_is_refused_naming_line_and_offset() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("switch.journal");
        write_journal(&path, sample_events());
        let clean = std::fs::read(&path).unwrap();
        let line_3 = line_offset(&clean, 3);
        // Flip a byte in the checksum, in the JSON, and in the separator of line 3 in turn.
        for position in [line_3 + 2, line_3 + 30, line_3 + 8] {
            let mut damaged = clean.clone();
            damaged[position] ^= 0x01;
            std::fs::write(&path, &damaged).unwrap();
            for error in [
                read(&path).unwrap_err(),
                JournalWriter::open(&path).unwrap_err(),
            ] {
                match &error {
                    JournalError::Corrupt { line, offset, .. } => {
                        assert_eq!((*line, *offset), (3, line_3 as u64), "{error}");
                    }
                    other => panic!("expected Corrupt, got {other}"),
                }
                let message = error.to_string();
                assert!(
                    message.contains("line 3") && message.contains(&format!("offset {line_3}")),
                    "{message}"
                );
            }
            // Refusing must not have changed the file.
            assert_eq!(std::fs::read(&path).unwrap(), damaged);
        }
    }

    #[test]
    fn a_checksummed_but_out_of_sequence_line_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("switch.journal");
        let records = write_journal(&path, sample_events());
        let mut bytes = std::fs::read(&path).unwrap();
        // A valid line repeated: right checksum, wrong place.
        bytes.extend_from_slice(&encode_line(&records[1]));
        std::fs::write(&path, &bytes).unwrap();
        let message = read(&path).unwrap_err().to_string();
        assert!(
            message.contains("line 7") && message.contains("sequence number 2 where 7"),
            "{message}"
        );
    }

    #[test]
    fn a_torn_last_line_is_ignored_by_the_reader_and_cut_on_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("switch.journal");
        let records = write_journal(&path, sample_events());
        let clean = std::fs::read(&path).unwrap();
        let torn_line = encode_line(&Record {
            seq: 7,
            mono_ns: 700,
            wall_ms: 5,
            event: Event::Cleared {
                port: 1,
                reason: ClearReason::Clear,
            },
        });
        let mut torn = clean.clone();
        torn.extend_from_slice(&torn_line[..torn_line.len() - 1]);
        std::fs::write(&path, &torn).unwrap();

        assert_eq!(read(&path).unwrap(), records);
        let (mut writer, report) = JournalWriter::open(&path).unwrap();
        assert_eq!(report.truncated_bytes, torn_line.len() as u64 - 1);
        assert_eq!(std::fs::read(&path).unwrap(), clean);
        let next = writer
            .append(
                800,
                5,
                Event::Started {
                    instance: "x".into(),
                    data_plane: None,
                },
            )
            .unwrap();
        assert_eq!(next.seq, 7);
        assert_eq!(read(&path).unwrap().len(), 7);
    }

    fn record(seq: u64, mono_ns: u64, event: Event) -> Record {
        Record {
            seq,
            mono_ns,
            wall_ms: 0,
            event,
        }
    }

    #[test]
    fn presentations_follow_program_clear_replace_fence_and_restart() {
        let a = "02:00:00:00:00:0a";
        let b = "02:00:00:00:00:0b";
        let c = "02:00:00:00:00:0c";
        let d = "02:00:00:00:00:0d";
        let records = vec![
            record(
                1,
                10,
                Event::Started {
                    instance: "i1".into(),
                    data_plane: None,
                },
            ),
            record(2, 20, programmed(1, "pa", vec![nic(a)])),
            record(3, 25, programmed(2, "pb", vec![nic(b)])),
            record(
                4,
                30,
                Event::Cleared {
                    port: 1,
                    reason: ClearReason::Clear,
                },
            ),
            record(
                5,
                40,
                Event::Cleared {
                    port: 2,
                    reason: ClearReason::Replaced,
                },
            ),
            record(6, 40, programmed(2, "pc", vec![nic(c)])),
            record(
                7,
                50,
                Event::Fenced {
                    ports: vec![2],
                    deadline_mono_ns: 49,
                },
            ),
            record(8, 60, programmed(3, "pd", vec![nic(d)])),
            // The switch died; it restarts at 90 and nothing says when it died.
            record(
                9,
                90,
                Event::Started {
                    instance: "i2".into(),
                    data_plane: None,
                },
            ),
            record(10, 95, programmed(4, "pa", vec![nic(a)])),
        ];
        let found = presentations(&records, "unit-a", None);
        let summary: Vec<(&str, &str, u64, Option<u64>)> = found
            .iter()
            .map(|p| (p.identity.as_str(), p.profile.as_str(), p.from_ns, p.to_ns))
            .collect();
        assert_eq!(
            summary,
            [
                (a, "pa", 20, Some(30)),
                (b, "pb", 25, Some(40)),
                (c, "pc", 40, Some(50)),
                (d, "pd", 60, Some(90)),
                (a, "pa", 95, None),
            ]
        );
        assert!(found.iter().all(|p| p.switch == "unit-a"));

        let ended = presentations(&records, "unit-a", Some(120));
        assert_eq!(ended.last().unwrap().to_ns, Some(120));
    }

    #[test]
    fn a_vhba_presents_both_its_wwpn_and_its_wwnn() {
        let records: Vec<Record> = sample_events()
            .into_iter()
            .enumerate()
            .map(|(index, event)| record(index as u64 + 1, 10 * index as u64, event))
            .collect();
        let found = presentations(&records, "unit-b", None);
        let identities: Vec<&str> = found.iter().map(|p| p.identity.as_str()).collect();
        assert_eq!(
            identities,
            [
                "02:00:00:00:00:01",
                "20:00:00:25:b5:00:00:01",
                "20:00:00:25:b5:00:01:01"
            ]
        );
        // Cleared (replaced) at record 5, time 40.
        assert!(found.iter().all(|p| p.from_ns == 10 && p.to_ns == Some(40)));
    }
}
