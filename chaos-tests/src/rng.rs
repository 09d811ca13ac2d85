//! A small seeded random number generator (SplitMix64).
//!
//! Written here rather than taken from a crate so that a seed keeps drawing the same schedule
//! across dependency upgrades: the seed printed by a failing run is the way to reproduce it.

/// SplitMix64 (Steele, Lea, Flood 2014): one u64 of state, full period, good enough for
/// drawing faults and workload choices.
#[derive(Debug, Clone)]
pub struct Rng {
    state: u64,
}

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    /// An independent stream for one consumer (a client, the schedule), so that adding a
    /// client does not change what the schedule draws.
    pub fn fork(&mut self, stream: u64) -> Self {
        Self::new(self.next_u64() ^ stream.wrapping_mul(0x9e37_79b9_7f4a_7c15))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..bound`. `bound` must be positive.
    pub fn below(&mut self, bound: u64) -> u64 {
        assert!(bound > 0, "Rng::below(0)");
        // Multiply-shift: unbiased enough for bounds far below 2^64.
        ((self.next_u64() as u128 * bound as u128) >> 64) as u64
    }

    /// Uniform in `low..=high`.
    pub fn between(&mut self, low: u64, high: u64) -> u64 {
        assert!(low <= high, "Rng::between({low}, {high})");
        low + self.below(high - low + 1)
    }

    /// True with probability `percent`/100.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }

    /// Index into `weights`, drawn proportionally to the weights; `None` when all are zero.
    pub fn weighted(&mut self, weights: &[u64]) -> Option<usize> {
        let total: u64 = weights.iter().sum();
        if total == 0 {
            return None;
        }
        let mut point = self.below(total);
        for (i, &w) in weights.iter().enumerate() {
            if point < w {
                return Some(i);
            }
            point -= w;
        }
        unreachable!("point < total = sum of weights")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_stream() {
        let a: Vec<u64> = (0..5).map(|_| Rng::new(7).next_u64()).collect();
        let mut r = Rng::new(7);
        let b: Vec<u64> = (0..5).map(|_| r.next_u64()).collect();
        assert!(a.iter().all(|&x| x == a[0]));
        assert_eq!(b[0], a[0]);
        assert_ne!(b[0], b[1]);
        assert_ne!(Rng::new(7).next_u64(), Rng::new(8).next_u64());
    }

    #[test]
    fn weighted_never_picks_zero_weight_and_covers_the_rest() {
        let mut r = Rng::new(1);
        let mut seen = [0u32; 3];
        for _ in 0..3000 {
            seen[r.weighted(&[1, 0, 3]).expect("non-zero weights")] += 1;
        }
        assert_eq!(seen[1], 0);
        assert!(seen[0] > 500 && seen[2] > 1800, "{seen:?}");
        assert_eq!(r.weighted(&[0, 0]), None);
    }

    #[test]
    fn between_stays_in_bounds() {
        let mut r = Rng::new(3);
        for _ in 0..1000 {
            let x = r.between(5, 9);
            assert!((5..=9).contains(&x));
        }
    }
}
