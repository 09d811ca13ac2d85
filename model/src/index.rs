//! The identity index: who owns each MAC and WWN, and which identities of each pool are free.
//!
//! Everything here is derived from the profiles and pools, so it is never serialized: a snapshot
//! carries only the primary data and the index is rebuilt on load (`IdentityIndex::build`), and
//! `State::check_invariants` compares the incrementally maintained index with a fresh build.
//! Free identities are kept as maximal ranges, so the representation is canonical (two indexes
//! over the same data compare equal) and finding the lowest free identity costs O(log n).

use std::collections::{BTreeMap, BTreeSet};

use crate::identity::{Identity, IdentityKind};
use crate::pool::Pool;
use crate::profile::Profile;

/// An identity as the index stores it: kind first, so one ordered map serves both kinds and a
/// pool's identities form one contiguous key range.
pub(crate) type IdentityKey = (IdentityKind, u64);

pub(crate) fn key_of(identity: Identity) -> IdentityKey {
    (identity.kind(), identity.as_u64())
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct IdentityIndex {
    /// Every identity any profile holds, to the name of that profile.
    owners: BTreeMap<IdentityKey, String>,
    /// Per pool name, the identities of its range no profile holds.
    free: BTreeMap<String, FreeRanges>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FreeRanges {
    kind: IdentityKind,
    first: u64,
    last: u64,
    /// Start to inclusive end of each maximal run of free identities.
    runs: BTreeMap<u64, u64>,
    free_count: u64,
}

impl FreeRanges {
    /// `first..=last` must be a validated pool range (non-empty, at most `POOL_SIZE_MAX`).
    fn new(kind: IdentityKind, first: u64, last: u64) -> FreeRanges {
        debug_assert!(first <= last, "empty pool range {first:#x}..={last:#x}");
        FreeRanges {
            kind,
            first,
            last,
            runs: BTreeMap::from([(first, last)]),
            free_count: last.saturating_sub(first).saturating_add(1),
        }
    }

    fn contains(&self, key: IdentityKey) -> bool {
        key.0 == self.kind && (self.first..=self.last).contains(&key.1)
    }

    pub(crate) fn size(&self) -> u64 {
        self.last.saturating_sub(self.first).saturating_add(1)
    }

    pub(crate) fn used(&self) -> u64 {
        self.size().saturating_sub(self.free_count)
    }

    /// Marks `value` (inside the range) as held.
    fn take(&mut self, value: u64) {
        let Some((&start, &end)) = self.runs.range(..=value).next_back() else {
            debug_assert!(false, "{value:#x} taken twice");
            return;
        };
        if end < value {
            debug_assert!(false, "{value:#x} taken twice");
            return;
        }
        self.runs.remove(&start);
        if start < value {
            self.runs.insert(start, value - 1);
        }
        if value < end {
            self.runs.insert(value + 1, end);
        }
        self.free_count -= 1;
    }

    /// Marks `value` (inside the range) as free again, merging with the runs on either side.
    fn give_back(&mut self, value: u64) {
        let mut start = value;
        let mut end = value;
        if let Some((&before_start, &before_end)) = self.runs.range(..=value).next_back() {
            if before_end >= value {
                debug_assert!(false, "{value:#x} freed twice");
                return;
            }
            if before_end + 1 == value {
                self.runs.remove(&before_start);
                start = before_start;
            }
        }
        if value < u64::MAX {
            if let Some(after_end) = self.runs.remove(&(value + 1)) {
                end = after_end;
            }
        }
        self.runs.insert(start, end);
        self.free_count += 1;
    }

    /// The lowest identity that is free now or freed by the request being planned
    /// (`releasing`), and not yet claimed by it (`claimed`).
    fn lowest_available(
        &self,
        releasing: &BTreeSet<IdentityKey>,
        claimed: &BTreeMap<IdentityKey, String>,
    ) -> Option<u64> {
        let unclaimed = |value: u64| !claimed.contains_key(&(self.kind, value));
        // Each value skipped below is a claimed one, so the scan costs at most the size of the
        // request on top of the first run.
        let from_free = self.runs.iter().find_map(|(&start, &end)| {
            let mut value = start;
            loop {
                if unclaimed(value) {
                    return Some(value);
                }
                if value == end {
                    return None;
                }
                value += 1;
            }
        });
        let from_releasing = releasing
            .range((self.kind, self.first)..=(self.kind, self.last))
            .map(|&(_, value)| value)
            .find(|&value| unclaimed(value));
        match (from_free, from_releasing) {
            (Some(free), Some(released)) => Some(free.min(released)),
            (free, released) => free.or(released),
        }
    }
}

impl IdentityIndex {
    /// Builds the index from scratch; fails if two profiles (or one profile twice) hold the same
    /// identity.
    pub(crate) fn build<'a>(
        profiles: impl IntoIterator<Item = &'a Profile>,
        pools: impl IntoIterator<Item = &'a Pool>,
    ) -> Result<IdentityIndex, String> {
        let mut index = IdentityIndex::default();
        for profile in profiles {
            for identity in profile.identities() {
                if let Some(other) = index.owners.insert(key_of(identity), profile.name.clone()) {
                    return Err(format!(
                        "{identity} is held by both profile {other:?} and profile {:?}",
                        profile.name
                    ));
                }
            }
        }
        for pool in pools {
            index.add_pool(pool);
        }
        Ok(index)
    }

    pub(crate) fn owner(&self, identity: Identity) -> Option<&str> {
        self.owners.get(&key_of(identity)).map(String::as_str)
    }

    pub(crate) fn pool_free(&self, pool: &str) -> Option<&FreeRanges> {
        self.free.get(pool)
    }

    /// The first identity held in `pool`'s range and its owner, for messages.
    pub(crate) fn first_held_in(&self, pool: &Pool) -> Option<(IdentityKey, &str)> {
        let (first, last) = pool.range.bounds();
        let kind = pool.range.kind();
        self.owners
            .range((kind, first)..=(kind, last))
            .next()
            .map(|(&key, owner)| (key, owner.as_str()))
    }

    pub(crate) fn add_pool(&mut self, pool: &Pool) {
        let (first, last) = pool.range.bounds();
        let kind = pool.range.kind();
        let mut ranges = FreeRanges::new(kind, first, last);
        for &(_, value) in self
            .owners
            .range((kind, first)..=(kind, last))
            .map(|(key, _)| key)
        {
            ranges.take(value);
        }
        self.free.insert(pool.name.clone(), ranges);
    }

    pub(crate) fn remove_pool(&mut self, name: &str) {
        self.free.remove(name);
    }

    /// Records that `owner` holds `identity`, which must be unheld.
    pub(crate) fn claim(&mut self, identity: Identity, owner: &str) {
        let key = key_of(identity);
        let previous = self.owners.insert(key, owner.to_owned());
        debug_assert!(
            previous.is_none(),
            "{identity} claimed while held by {previous:?}"
        );
        if let Some(ranges) = self.free.values_mut().find(|ranges| ranges.contains(key)) {
            ranges.take(key.1);
        }
    }

    /// Records that nobody holds `identity` any more.
    pub(crate) fn release(&mut self, identity: Identity) {
        let key = key_of(identity);
        let previous = self.owners.remove(&key);
        debug_assert!(previous.is_some(), "{identity} released while unheld");
        if let Some(ranges) = self.free.values_mut().find(|ranges| ranges.contains(key)) {
            ranges.give_back(key.1);
        }
    }

    /// See `FreeRanges::lowest_available`; `None` for an unknown pool.
    pub(crate) fn lowest_available(
        &self,
        pool: &str,
        releasing: &BTreeSet<IdentityKey>,
        claimed: &BTreeMap<IdentityKey, String>,
    ) -> Option<u64> {
        self.free.get(pool)?.lowest_available(releasing, claimed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runs(ranges: &FreeRanges) -> Vec<(u64, u64)> {
        ranges.runs.iter().map(|(&s, &e)| (s, e)).collect()
    }

    #[test]
    fn take_and_give_back_keep_runs_maximal() {
        let mut ranges = FreeRanges::new(IdentityKind::Mac, 10, 19);
        ranges.take(10);
        ranges.take(15);
        ranges.take(19);
        assert_eq!(runs(&ranges), [(11, 14), (16, 18)]);
        assert_eq!(ranges.used(), 3);
        ranges.give_back(15);
        assert_eq!(runs(&ranges), [(11, 18)]);
        ranges.give_back(10);
        ranges.give_back(19);
        assert_eq!(runs(&ranges), [(10, 19)]);
        assert_eq!(ranges, FreeRanges::new(IdentityKind::Mac, 10, 19));
    }

    #[test]
    fn lowest_available_skips_claims_and_counts_releases() {
        let mut ranges = FreeRanges::new(IdentityKind::Wwn, 0, 9);
        for value in [0, 1, 2, 5] {
            ranges.take(value);
        }
        let none = BTreeSet::new();
        let mut claimed = BTreeMap::new();
        assert_eq!(ranges.lowest_available(&none, &claimed), Some(3));
        claimed.insert((IdentityKind::Wwn, 3), "x".to_owned());
        claimed.insert((IdentityKind::Wwn, 4), "x".to_owned());
        // A claim of the other kind with the same number must not get in the way.
        claimed.insert((IdentityKind::Mac, 6), "x".to_owned());
        assert_eq!(ranges.lowest_available(&none, &claimed), Some(6));
        let releasing = BTreeSet::from([(IdentityKind::Wwn, 1), (IdentityKind::Mac, 0)]);
        assert_eq!(ranges.lowest_available(&releasing, &claimed), Some(1));
        claimed.insert((IdentityKind::Wwn, 1), "x".to_owned());
        assert_eq!(ranges.lowest_available(&releasing, &claimed), Some(6));
        let full = {
            let mut full = FreeRanges::new(IdentityKind::Wwn, 0, 0);
            full.take(0);
            full
        };
        assert_eq!(full.lowest_available(&none, &BTreeMap::new()), None);
    }
}
