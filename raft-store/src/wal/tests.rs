use std::collections::BTreeMap;

use openraft::{CommittedLeaderId, EntryPayload};
use proptest::prelude::*;

use super::*;

fn entry(term: u64, index: u64) -> Entry {
    Entry {
        log_id: LogId::new(CommittedLeaderId::new(term, 1), index),
        payload: EntryPayload::Blank,
    }
}

fn entries(term: u64, from: u64, count: u64) -> Vec<Entry> {
    (from..from + count).map(|i| entry(term, i)).collect()
}

/// Appends and fsyncs, as `LogStore::append` does.
fn append(wal: &mut Wal, batch: &[Entry]) {
    if let Some(unsynced) = wal.append(batch).expect("append") {
        unsynced.sync().expect("sync");
    }
}

fn open_small(dir: &Path) -> Wal {
    let mut wal = Wal::open(dir).expect("open");
    wal.segment_bytes = 256;
    wal
}

fn ids(wal: &Wal) -> Vec<LogId<NodeId>> {
    wal.read(0, None)
        .expect("read")
        .into_iter()
        .map(|e| e.log_id)
        .collect()
}

fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("list")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    files.sort();
    files
}

fn refused(dir: &Path) -> String {
    Wal::open(dir)
        .err()
        .unwrap_or_else(|| panic!("{} opened", dir.display()))
        .to_string()
}

#[test]
fn a_second_opener_is_refused_while_the_first_holds_the_log() {
    let dir = tempfile::tempdir().expect("tempdir");
    let first = Wal::open(dir.path()).expect("open");
    let err = refused(dir.path());
    assert!(err.contains("open in another process"), "{err}");
    drop(first);
    Wal::open(dir.path()).expect("open once the first is gone");
}

#[test]
fn a_torn_tail_is_cut_off_and_appends_go_on_after_it() {
    type Tear = fn(&Path);
    let tears: [(&str, Tear); 4] = [
        ("record cut short", |seg| {
            let len = std::fs::metadata(seg).expect("meta").len();
            cut_to(seg, len - 3);
        }),
        ("length cut short", |seg| {
            let mut f = File::options().append(true).open(seg).expect("open");
            f.write_all(&[7, 0]).expect("write");
        }),
        ("zeros", |seg| {
            let mut f = File::options().append(true).open(seg).expect("open");
            f.write_all(&[0; 300]).expect("write");
        }),
        ("last record's checksum", |seg| {
            let mut bytes = std::fs::read(seg).expect("read");
            let at = bytes.len() - 2;
            bytes[at] ^= 0x10;
            std::fs::write(seg, bytes).expect("write");
        }),
    ];
    for (what, tear) in tears {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let mut wal = Wal::open(dir.path()).expect("open");
            wal.save_vote(&Vote::new(1, 1)).expect("vote");
            append(&mut wal, &entries(1, 0, 5));
        }
        let segment = segment_files(dir.path()).pop().expect("a segment");
        tear(&segment);
        let mut wal = Wal::open(dir.path()).unwrap_or_else(|e| panic!("{what}: {e}"));
        let kept = if what == "record cut short" || what == "last record's checksum" {
            4
        } else {
            5
        };
        assert_eq!(ids(&wal), ids_of(&entries(1, 0, kept)), "{what}");
        assert!(
            wal.repaired.as_deref().is_some_and(|r| r.contains("cut")),
            "{what}"
        );
        append(&mut wal, &entries(2, kept, 2));
        drop(wal);
        let wal = Wal::open(dir.path()).expect("reopen");
        assert!(wal.repaired.is_none(), "{what}: the cut was durable");
        let mut expected = ids_of(&entries(1, 0, kept));
        expected.extend(ids_of(&entries(2, kept, 2)));
        assert_eq!(ids(&wal), expected, "{what}");
    }
}

/// Cuts (or extends) the file at `path` to `len` bytes, as a crash or a careless hand might.
fn cut_to(path: &Path, len: u64) {
    File::options()
        .write(true)
        .open(path)
        .and_then(|f| f.set_len(len))
        .unwrap_or_else(|e| panic!("cut {}: {e}", path.display()));
}

fn ids_of(entries: &[Entry]) -> Vec<LogId<NodeId>> {
    entries.iter().map(|e| e.log_id).collect()
}

#[test]
fn damage_before_the_tail_is_refused_by_name_and_left_as_found() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let mut wal = open_small(dir.path());
        wal.save_vote(&Vote::new(1, 1)).expect("vote");
        for i in 0..12 {
            append(&mut wal, &entries(1, i, 1));
        }
    }
    let files = segment_files(dir.path());
    assert!(files.len() >= 3, "{files:?}");

    // A flipped byte in the first record of the last segment, with records after it.
    let last = files.last().expect("last");
    let original = std::fs::read(last).expect("read");
    let mut bytes = original.clone();
    bytes[HEADER_BYTES + 10] ^= 0x01;
    std::fs::write(last, &bytes).expect("write");
    let err = refused(dir.path());
    assert!(err.contains(&last.display().to_string()), "{err}");
    assert!(err.contains("records after it"), "{err}");
    assert_eq!(std::fs::read(last).expect("read"), bytes, "left as found");
    std::fs::write(last, &original).expect("restore");

    // A length no writer produces.
    let mut bytes = original.clone();
    bytes[HEADER_BYTES..HEADER_BYTES + 4].copy_from_slice(&[0xA5; 4]);
    std::fs::write(last, &bytes).expect("write");
    let err = refused(dir.path());
    assert!(err.contains("claims"), "{err}");
    std::fs::write(last, &original).expect("restore");

    // A middle segment removed.
    let middle = &files[1];
    let saved = std::fs::read(middle).expect("read");
    std::fs::remove_file(middle).expect("remove");
    let err = refused(dir.path());
    assert!(err.contains("a segment is missing"), "{err}");
    std::fs::write(middle, &saved).expect("restore");

    // A torn earlier segment (its last record cut): not a crash's doing.
    let first = &files[0];
    let len = std::fs::metadata(first).expect("meta").len();
    cut_to(first, len - 1);
    let err = refused(dir.path());
    assert!(err.contains("later segments follow it"), "{err}");

    // A file that looks like a segment but is not named as the log names them.
    std::fs::write(dir.path().join("5.seg"), b"").expect("write");
    let err = refused(dir.path());
    assert!(err.contains("5.seg") && err.contains("20 digits"), "{err}");

    // A newer segment format.
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let mut wal = Wal::open(dir.path()).expect("open");
        append(&mut wal, &entries(1, 0, 1));
    }
    let seg = segment_files(dir.path()).pop().expect("segment");
    let mut bytes = std::fs::read(&seg).expect("read");
    bytes[7] = 2;
    std::fs::write(&seg, bytes).expect("write");
    let err = refused(dir.path());
    assert!(err.contains("segment format version 2"), "{err}");
}

#[test]
fn a_log_short_of_its_committed_index_or_missing_its_vote_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let mut wal = Wal::open(dir.path()).expect("open");
        wal.save_vote(&Vote::new(1, 1)).expect("vote");
        append(&mut wal, &entries(1, 0, 8));
        wal.save_committed(Some(entry(1, 7).log_id))
            .expect("committed");
    }
    let seg = segment_files(dir.path()).pop().expect("segment");
    let whole = std::fs::read(&seg).expect("read");
    // Cut to three records: to a reader it looks like a torn tail, but entry 7 was
    // committed here, so fsynced data is gone.
    cut_to(&seg, whole.len() as u64 / 2);
    let cut = std::fs::read(&seg).expect("read");
    let err = refused(dir.path());
    assert!(err.contains("lost its newest writes"), "{err}");
    assert_eq!(std::fs::read(&seg).expect("read"), cut, "left as found");
    std::fs::write(&seg, &whole).expect("restore");
    assert_eq!(
        Wal::open(dir.path()).expect("whole again").committed(),
        Some(entry(1, 7).log_id)
    );

    std::fs::remove_file(dir.path().join(VOTE)).expect("remove the vote");
    let err = refused(dir.path());
    assert!(err.contains("the vote was removed"), "{err}");
}

#[test]
fn an_overwrite_after_an_empty_last_segment_replaces_the_entries_before_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let mut wal = open_small(dir.path());
        append(&mut wal, &entries(1, 0, 4));
        // A new segment, its append cut short by a crash: only its header survives.
        wal.segment_bytes = 0;
        assert!(wal.append(&entries(1, 4, 1)).expect("append").is_some());
    }
    let newest = segment_files(dir.path()).pop().expect("segment");
    cut_to(&newest, HEADER_BYTES as u64);
    let mut wal = open_small(dir.path());
    assert_eq!(ids(&wal), ids_of(&entries(1, 0, 4)));
    append(&mut wal, &entries(2, 2, 3));
    let mut expected = ids_of(&entries(1, 0, 2));
    expected.extend(ids_of(&entries(2, 2, 3)));
    assert_eq!(ids(&wal), expected);
    drop(wal);
    assert_eq!(ids(&open_small(dir.path())), expected);
}

#[test]
fn check_segment_reads_a_segment_as_open_does() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let mut wal = Wal::open(dir.path()).expect("open");
        append(&mut wal, &entries(1, 7, 3));
    }
    let bytes = std::fs::read(segment_files(dir.path()).pop().expect("segment")).expect("read");
    assert_eq!(check_segment(7, &bytes).expect("whole"), (3, None));
    let (records, torn) = check_segment(7, &bytes[..bytes.len() - 3]).expect("torn");
    assert_eq!(records, 2);
    assert!(torn.is_some_and(|t| t.contains("cut short")));
    let err = check_segment(8, &bytes).expect_err("another index");
    assert!(err.to_string().contains("log entry 8"), "{err}");
}

#[test]
fn reset_to_snapshot_leaves_a_purge_point_and_the_vote() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let mut wal = open_small(dir.path());
        append(&mut wal, &entries(1, 0, 20));
        wal.reset_to_snapshot(entry(3, 10).log_id, &Vote::new(4, 2))
            .expect("reset");
    }
    let wal = Wal::open(dir.path()).expect("reopen");
    assert_eq!(ids(&wal), Vec::new());
    assert_eq!(wal.purged(), Some(entry(3, 10).log_id));
    assert_eq!(wal.last_log_id(), Some(entry(3, 10).log_id));
    assert_eq!(wal.committed(), Some(entry(3, 10).log_id));
    assert_eq!(wal.vote(), Some(Vote::new(4, 2)));
    assert!(!wal.is_pristine());
}

#[derive(Debug, Clone)]
enum Op {
    /// Append `count` entries after the last one, `gap` indexes past it.
    Append {
        count: u64,
        gap: u64,
    },
    /// Append `count` entries replacing the tail from a point `at` (0..=1) along the log.
    Overwrite {
        count: u64,
        at: f64,
    },
    Truncate {
        at: f64,
    },
    Purge {
        at: f64,
    },
    Reopen,
    /// Reopen after a crash that tore `bytes` off the last segment's unsynced append.
    TornAppend {
        count: u64,
        bytes: u64,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (1..6u64, prop_oneof![6 => Just(0u64), 1 => 1..4u64])
            .prop_map(|(count, gap)| Op::Append { count, gap }),
        1 => (1..4u64, 0.0..1.0f64).prop_map(|(count, at)| Op::Overwrite { count, at }),
        1 => (0.0..1.0f64).prop_map(|at| Op::Truncate { at }),
        1 => (0.0..1.0f64).prop_map(|at| Op::Purge { at }),
        1 => Just(Op::Reopen),
        1 => (1..4u64, 1..40u64).prop_map(|(count, bytes)| Op::TornAppend { count, bytes }),
    ]
}

/// What the log should hold: entries past the purge point, by index.
#[derive(Debug, Default)]
struct Model {
    entries: BTreeMap<u64, LogId<NodeId>>,
    purged: Option<LogId<NodeId>>,
    term: u64,
}

impl Model {
    fn last(&self) -> Option<LogId<NodeId>> {
        self.entries.values().next_back().copied().or(self.purged)
    }
    fn next(&self) -> u64 {
        self.last().map_or(0, |id| id.index + 1)
    }
    /// An index `at` along the live entries, if there are any.
    fn pick(&self, at: f64) -> Option<u64> {
        let keys: Vec<u64> = self.entries.keys().copied().collect();
        (!keys.is_empty()).then(|| keys[((keys.len() as f64 * at) as usize).min(keys.len() - 1)])
    }
    fn write(&mut self, batch: &[Entry]) {
        let head = batch[0].log_id.index;
        self.entries.retain(|&i, _| i < head);
        for e in batch {
            self.entries.insert(e.log_id.index, e.log_id);
        }
    }
}

fn check(wal: &Wal, model: &Model) -> Result<(), TestCaseError> {
    let expected: Vec<LogId<NodeId>> = model.entries.values().copied().collect();
    prop_assert_eq!(ids(wal), expected);
    prop_assert_eq!(wal.last_log_id(), model.last());
    prop_assert_eq!(wal.purged(), model.purged);
    // Ranged reads see the same entries.
    for (&from, _) in model.entries.iter().step_by(3) {
        let got: Vec<u64> = wal
            .read(from, Some(from + 4))
            .expect("read")
            .iter()
            .map(|e| e.log_id.index)
            .collect();
        let want: Vec<u64> = model
            .entries
            .range(from..from + 4)
            .map(|(&i, _)| i)
            .collect();
        prop_assert_eq!(got, want);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    /// Any sequence of appends, overwrites, truncations, purges, reopens and torn appends
    /// leaves exactly the entries a simple model says, through small segments.
    #[test]
    fn the_log_matches_a_model_across_reopens_and_torn_appends(
        ops in prop::collection::vec(op(), 1..60)
    ) {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut wal = open_small(dir.path());
        wal.save_vote(&Vote::new(1, 1)).expect("vote");
        let mut model = Model { term: 1, ..Model::default() };
        for op in ops {
            match op {
                Op::Append { count, gap } => {
                    // A gap only ever follows a purge of everything (a snapshot past the
                    // log's end) in openraft, but the log keeps any order it is given.
                    let batch = entries(model.term, model.next() + gap, count);
                    append(&mut wal, &batch);
                    model.write(&batch);
                }
                Op::Overwrite { count, at } => {
                    let Some(from) = model.pick(at) else { continue };
                    model.term += 1;
                    let batch = entries(model.term, from, count);
                    append(&mut wal, &batch);
                    model.write(&batch);
                }
                Op::Truncate { at } => {
                    let Some(from) = model.pick(at) else { continue };
                    wal.truncate(from).expect("truncate");
                    model.entries.retain(|&i, _| i < from);
                }
                Op::Purge { at } => {
                    let Some(upto) = model.pick(at) else { continue };
                    let id = model.entries[&upto];
                    wal.purge(id).expect("purge");
                    model.entries.retain(|&i, _| i > upto);
                    model.purged = Some(id);
                }
                Op::Reopen => {
                    drop(wal);
                    wal = open_small(dir.path());
                }
                Op::TornAppend { count, bytes } => {
                    let batch = entries(model.term, model.next(), count);
                    // Written, never synced, then the tail torn off: at most the whole
                    // records that survive are kept.
                    wal.append(&batch).expect("append");
                    drop(wal);
                    let seg = segment_files(dir.path()).pop().expect("a segment");
                    let len = std::fs::metadata(&seg).expect("meta").len();
                    cut_to(&seg, len.saturating_sub(bytes).max(HEADER_BYTES as u64));
                    wal = open_small(dir.path());
                    let survived: Vec<Entry> = batch
                        .into_iter()
                        .filter(|e| wal.log_id_at(e.log_id.index) == Some(e.log_id))
                        .collect();
                    prop_assert!(survived.len() < count as usize, "a torn append kept all");
                    if !survived.is_empty() {
                        model.write(&survived);
                    }
                }
            }
            check(&wal, &model)?;
        }
        drop(wal);
        check(&open_small(dir.path()), &model)?;
    }
}
