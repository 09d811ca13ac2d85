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

/// Where the last segment's records start, where they end, and its file.
fn last_records(wal: &Wal) -> (PathBuf, Vec<u64>, u64) {
    let segment = wal.segments.last().expect("a segment");
    let starts = segment.records.iter().map(|&(at, _)| at).collect();
    (segment.path.clone(), starts, segment.len)
}

/// Writes zeros over `from..to` of the file at `path`: sectors an interrupted write never wrote.
fn zero(path: &Path, from: u64, to: u64) {
    let file = File::options().write(true).open(path).expect("open");
    file.write_all_at(&vec![0; (to - from) as usize], from)
        .expect("zero");
}

fn sector_of(at: u64) -> u64 {
    at / 512 * 512
}

#[test]
fn a_torn_append_is_cut_off_and_appends_go_on_after_it() {
    // Which bytes of the last append, `start..end`, a crash left unwritten; the file's length.
    type Tear = fn(&Path, u64, u64);
    let tears: [(&str, Tear); 5] = [
        ("its sectors from the second on", |seg, start, end| {
            zero(seg, sector_of(start) + 512, end)
        }),
        ("its first sector only", |seg, start, _| {
            zero(seg, start, sector_of(start) + 512)
        }),
        ("a sector in the middle", |seg, start, _| {
            let middle = sector_of(start) + 1024;
            zero(seg, middle, middle + 512)
        }),
        ("the whole append", |seg, start, end| zero(seg, start, end)),
        ("its end, past the end of the file", |seg, _, end| {
            cut_to(seg, end - 3)
        }),
    ];
    for (what, tear) in tears {
        let dir = tempfile::tempdir().expect("tempdir");
        let (seg, starts, end, durable) = {
            let mut wal = Wal::open(dir.path()).expect("open");
            wal.save_vote(&Vote::new(1, 1)).expect("vote");
            append(&mut wal, &entries(1, 0, 5));
            // Written and never synced: about four sectors of records.
            wal.append(&entries(1, 5, 40)).expect("append");
            let (seg, starts, end) = last_records(&wal);
            (seg, starts, end, 5usize)
        };
        let start = starts[durable];
        assert!(end - start > 1536, "{what}: the append spans four sectors");
        let before = std::fs::read(&seg).expect("read");
        tear(&seg, start, end);
        let after = std::fs::read(&seg).expect("read");
        // The records kept: those before the first byte the tear changed.
        let changed = (0..before.len().min(after.len()))
            .find(|&i| before[i] != after[i])
            .unwrap_or(after.len()) as u64;
        let kept = starts
            .iter()
            .enumerate()
            .take_while(|&(k, _)| starts.get(k + 1).map_or(end, |&next| next) <= changed)
            .count() as u64;
        assert!(kept >= durable as u64 && kept < 45, "{what}: {kept}");

        let mut wal = Wal::open(dir.path()).unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(ids(&wal), ids_of(&entries(1, 0, kept)), "{what}");
        // Sectors of the append that were written are cut off; an append none of whose
        // sectors were written left nothing to cut.
        let written = after[starts[kept as usize] as usize..]
            .iter()
            .any(|&b| b != 0);
        assert_eq!(
            wal.repaired.as_deref().is_some_and(|r| r.contains("cut")),
            written,
            "{what}: {:?}",
            wal.repaired
        );
        // What the cut removed reads as zeros: no record of the torn append survives behind
        // the appends that follow.
        let valid = wal.segments.last().expect("segment").len as usize;
        let bytes = std::fs::read(&seg).expect("read");
        assert!(bytes[valid..].iter().all(|&b| b == 0), "{what}: zeroed");
        append(&mut wal, &entries(2, kept, 2));
        drop(wal);
        let wal = Wal::open(dir.path()).expect("reopen");
        assert!(wal.repaired.is_none(), "{what}: the cut was durable");
        let mut expected = ids_of(&entries(1, 0, kept));
        expected.extend(ids_of(&entries(2, kept, 2)));
        assert_eq!(ids(&wal), expected, "{what}");
    }
}

#[test]
fn the_next_segment_is_filled_ahead_and_a_leftover_one_is_removed() {
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut wal = open_small(dir.path());
    append(&mut wal, &entries(1, 0, 6));
    let deadline = Instant::now() + Duration::from_secs(30);
    while !wal
        .prepared
        .as_ref()
        .expect("a segment in preparation")
        .is_finished()
    {
        assert!(
            Instant::now() < deadline,
            "the next segment was never filled"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let prepared = std::fs::metadata(dir.path().join(PREPARED)).expect("prepared");
    assert_eq!(prepared.len(), 256);
    let segments = wal.segments.len();
    let mut next = 6;
    while wal.segments.len() == segments {
        append(&mut wal, &entries(1, next, 1));
        next += 1;
    }
    let newest = &wal.segments.last().expect("segment").path;
    assert_eq!(
        std::fs::metadata(newest).expect("newest").ino(),
        prepared.ino(),
        "the new segment is the prepared file"
    );
    drop(wal);
    // A crash while one was being filled leaves it behind: open removes it.
    std::fs::write(dir.path().join(PREPARED), [0u8; 100]).expect("write");
    let wal = open_small(dir.path());
    assert!(!dir.path().join(PREPARED).exists());
    assert!(wal.repaired.is_none(), "{:?}", wal.repaired);
    assert_eq!(ids(&wal), ids_of(&entries(1, 0, next)));
}

#[test]
fn a_new_segment_whose_header_never_reached_the_disk_holds_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let mut wal = Wal::open(dir.path()).expect("open");
        append(&mut wal, &entries(1, 0, 3));
    }
    // The next segment, created at full size, with its header still zeros.
    let newest = dir.path().join(segment_name(3));
    File::create(&newest)
        .and_then(|f| f.set_len(SEGMENT_BYTES))
        .expect("create");
    let mut wal = Wal::open(dir.path()).expect("open");
    assert!(
        wal.repaired
            .as_deref()
            .is_some_and(|r| r.contains("no header yet")),
        "{:?}",
        wal.repaired
    );
    assert!(!newest.exists(), "the empty segment is removed");
    append(&mut wal, &entries(1, 3, 1));
    assert_eq!(ids(&wal), ids_of(&entries(1, 0, 4)));
    drop(wal);

    // A header of zeros with records after it is not a creation a crash interrupted.
    let seg = segment_files(dir.path()).pop().expect("segment");
    zero(&seg, 0, HEADER_BYTES as u64);
    let err = refused(dir.path());
    assert!(
        err.contains("does not start with a segment header"),
        "{err}"
    );
}

#[test]
fn a_segment_is_created_at_full_size_and_its_unwritten_space_is_no_repair() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let mut wal = Wal::open(dir.path()).expect("open");
        append(&mut wal, &entries(1, 0, 3));
    }
    let seg = segment_files(dir.path()).pop().expect("segment");
    assert_eq!(std::fs::metadata(&seg).expect("meta").len(), SEGMENT_BYTES);
    let mut wal = Wal::open(dir.path()).expect("reopen");
    assert!(wal.repaired.is_none(), "{:?}", wal.repaired);
    assert_eq!(ids(&wal), ids_of(&entries(1, 0, 3)));
    append(&mut wal, &entries(1, 3, 2));
    assert_eq!(ids(&wal), ids_of(&entries(1, 0, 5)));
    // A truncation zeroes what it cuts and keeps the segment's size.
    wal.truncate(2).expect("truncate");
    drop(wal);
    assert_eq!(std::fs::metadata(&seg).expect("meta").len(), SEGMENT_BYTES);
    let wal = Wal::open(dir.path()).expect("reopen");
    assert!(wal.repaired.is_none(), "{:?}", wal.repaired);
    assert_eq!(ids(&wal), ids_of(&entries(1, 0, 2)));
    let valid = wal.segments.last().expect("segment").len as usize;
    let bytes = std::fs::read(&seg).expect("read");
    assert!(bytes[valid..].iter().all(|&b| b == 0));
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
    assert!(err.contains("no interrupted write explains it"), "{err}");
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

    // A flipped byte in the very last record: no sector of it reads as zeros, so no
    // interrupted write explains it.
    let dir = tempfile::tempdir().expect("tempdir");
    let (seg, end) = {
        let mut wal = Wal::open(dir.path()).expect("open");
        append(&mut wal, &entries(1, 0, 3));
        let (seg, _, end) = last_records(&wal);
        (seg, end)
    };
    let mut bytes = std::fs::read(&seg).expect("read");
    bytes[end as usize - 2] ^= 0x10;
    std::fs::write(&seg, &bytes).expect("write");
    let err = refused(dir.path());
    assert!(err.contains("no interrupted write explains it"), "{err}");
    assert_eq!(std::fs::read(&seg).expect("read"), bytes, "left as found");

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
    let (seg, starts, end) = {
        let mut wal = Wal::open(dir.path()).expect("open");
        wal.save_vote(&Vote::new(1, 1)).expect("vote");
        append(&mut wal, &entries(1, 0, 8));
        wal.save_committed(Some(entry(1, 7).log_id))
            .expect("committed");
        last_records(&wal)
    };
    let whole = std::fs::read(&seg).expect("read");
    // Cut to three records, or zeros over the rest: to a reader either looks like a torn
    // append, but entry 7 was committed here, so fsynced data is gone.
    type Loss = fn(&Path, u64, u64);
    let losses: [(&str, Loss); 2] = [
        ("cut", |seg, from, _| cut_to(seg, from)),
        ("zeroed", |seg, from, end| zero(seg, from, end)),
    ];
    for (what, lose) in losses {
        lose(&seg, starts[3], end);
        let lost = std::fs::read(&seg).expect("read");
        let err = refused(dir.path());
        assert!(err.contains("lost its newest writes"), "{what}: {err}");
        assert_eq!(
            std::fs::read(&seg).expect("read"),
            lost,
            "{what}: left as found"
        );
        std::fs::write(&seg, &whole).expect("restore");
    }
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
    let end = bytes.iter().rposition(|&b| b != 0).expect("records") + 1;
    assert_eq!(check_segment(7, &bytes[..end]).expect("whole"), (3, None));
    let (records, torn) = check_segment(7, &bytes[..end - 3]).expect("torn");
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
    /// Reopen after a crash that left sectors of the last, unsynced append unwritten.
    TornAppend {
        count: u64,
        at: u64,
        only_one: bool,
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
        1 => (1..12u64, 0..4096u64, any::<bool>())
            .prop_map(|(count, at, only_one)| Op::TornAppend { count, at, only_one }),
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
                Op::TornAppend { count, at, only_one } => {
                    let batch = entries(model.term, model.next(), count);
                    // Written, never synced, then a crash: the sector holding byte `at` of the
                    // append, and with it either every later sector or none, left unwritten.
                    // At most the whole records before it are kept.
                    wal.append(&batch).expect("append");
                    let (seg, starts, end) = last_records(&wal);
                    drop(wal);
                    let start = starts[starts.len() - count as usize];
                    let hit = sector_of(start + at % (end - start));
                    let to = if only_one { (hit + 512).min(end) } else { end };
                    zero(&seg, hit.max(start), to);
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
