//! Bounds on the log indexes a peer sends, checked before openraft sees them.
//!
//! openraft 0.9 asserts, rather than refuses, that the entries of an AppendEntries follow its
//! `prev_log_id` one by one, and computes `index + 1` on what a peer sends: one malformed message
//! (an entry at `u64::MAX`, or a gap) panics its core, and the node stops taking part in Raft for
//! good; a vote at term `u64::MAX` overflows the node's next election (`term + 1`). So every
//! index and term a peer sends is checked here first: at most [`LOG_INDEX_MAX`] and
//! [`TERM_MAX`], and the entries of an AppendEntries consecutive after `prev_log_id`.

/// Largest log index accepted from a peer. No log gets near 2^63 entries (a million entries a
/// second would take 290,000 years), and below it `index + 1` never overflows.
pub const LOG_INDEX_MAX: u64 = i64::MAX as u64;

/// Largest term accepted from a peer, on the same argument: an election every millisecond would
/// take 290 million years to reach it, and below it `term + 1` never overflows.
pub const TERM_MAX: u64 = i64::MAX as u64;

/// Checks every term a peer sent (its vote's, and each log id's).
pub fn check_terms<'a>(terms: impl IntoIterator<Item = (&'a str, u64)>) -> Result<(), String> {
    for (field, term) in terms {
        if term > TERM_MAX {
            return Err(format!(
                "{field} term {term} is more than the limit of {TERM_MAX}"
            ));
        }
    }
    Ok(())
}

fn bounded(field: &str, index: u64) -> Result<u64, String> {
    if index > LOG_INDEX_MAX {
        return Err(format!(
            "{field} index {index} is more than the limit of {LOG_INDEX_MAX}"
        ));
    }
    Ok(index)
}

/// Checks an AppendEntries: `prev`, every entry and `commit` within [`LOG_INDEX_MAX`], and the
/// entries at `prev + 1`, `prev + 2`, ... (from 0 without `prev`, as openraft numbers them).
pub fn check_append(
    prev: Option<u64>,
    entries: impl IntoIterator<Item = u64>,
    commit: Option<u64>,
) -> Result<(), String> {
    if let Some(commit) = commit {
        bounded("leader_commit", commit)?;
    }
    let mut expected = match prev {
        Some(prev) => bounded("prev_log_id", prev)? + 1,
        None => 0,
    };
    for (position, index) in entries.into_iter().enumerate() {
        bounded(&format!("entries[{position}]"), index)?;
        if index != expected {
            return Err(format!(
                "entries[{position}] has index {index}, but the entry after {} must be {expected}",
                if position == 0 {
                    "prev_log_id"
                } else {
                    "the one before it"
                }
            ));
        }
        expected = index + 1;
    }
    Ok(())
}

/// Checks a single index a peer sent (a vote's last log id, a snapshot's last included id).
pub fn check_index(field: &str, index: Option<u64>) -> Result<(), String> {
    index.map_or(Ok(()), |index| bounded(field, index).map(|_| ()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_consecutive_entries_within_the_bound() {
        assert_eq!(check_append(None, [], None), Ok(()));
        assert_eq!(check_append(None, [0, 1, 2], Some(1)), Ok(()));
        assert_eq!(check_append(Some(7), [8, 9], Some(9)), Ok(()));
        assert_eq!(
            check_append(Some(LOG_INDEX_MAX - 1), [LOG_INDEX_MAX], None),
            Ok(())
        );
        assert_eq!(check_index("last_log_id", Some(LOG_INDEX_MAX)), Ok(()));
    }

    #[test]
    fn refuses_indexes_past_the_bound_and_gaps() {
        for (prev, entries, commit, needle) in [
            (None, vec![u64::MAX], None, "entries[0] index"),
            (Some(u64::MAX), vec![], None, "prev_log_id index"),
            (None, vec![], Some(u64::MAX), "leader_commit index"),
            (
                Some(LOG_INDEX_MAX),
                vec![LOG_INDEX_MAX + 1],
                None,
                "entries[0] index",
            ),
            (Some(1), vec![5], None, "must be 2"),
            (Some(1), vec![2, 4], None, "entries[1] has index 4"),
            (None, vec![1], None, "must be 0"),
        ] {
            let refused = check_append(prev, entries.clone(), commit).expect_err("refused");
            assert!(refused.contains(needle), "{prev:?} {entries:?}: {refused}");
        }
        assert!(check_index("last_log_id", Some(u64::MAX)).is_err());
        assert_eq!(check_terms([("vote", TERM_MAX), ("entries", 1)]), Ok(()));
        let refused = check_terms([("vote", 1), ("entries", u64::MAX)]).expect_err("refused");
        assert!(refused.contains("entries term"), "{refused}");
    }
}
