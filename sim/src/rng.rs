//! A small seeded generator (SplitMix64): the whole run is a function of its seed, so nothing
//! here may read the process's clock or an unseeded source.

#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed ^ 0x5eed_f00d_cafe_beef)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `low..high` (`low` when the range is empty).
    pub fn range(&mut self, low: u64, high: u64) -> u64 {
        if high <= low {
            return low;
        }
        low + self.next_u64() % (high - low)
    }

    /// True with probability `per_mille` / 1000.
    pub fn chance(&mut self, per_mille: u64) -> bool {
        self.range(0, 1_000) < per_mille
    }

    /// One of `items`, by index.
    pub fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.range(0, items.len() as u64) as usize]
    }

    /// An index drawn with the given weights.
    pub fn weighted(&mut self, weights: &[u64]) -> usize {
        let total: u64 = weights.iter().sum();
        let mut roll = self.range(0, total.max(1));
        for (i, w) in weights.iter().enumerate() {
            if roll < *w {
                return i;
            }
            roll -= w;
        }
        weights.len() - 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_draws_the_same_numbers_and_ranges_hold() {
        let mut a = Rng::new(7);
        let mut b = Rng::new(7);
        let drawn: Vec<u64> = (0..100).map(|_| a.range(10, 20)).collect();
        assert_eq!(drawn, (0..100).map(|_| b.range(10, 20)).collect::<Vec<_>>());
        assert!(drawn.iter().all(|n| (10..20).contains(n)));
        assert!(drawn.iter().any(|n| *n != drawn[0]), "not constant");
        assert_ne!(Rng::new(8).next_u64(), Rng::new(7).next_u64());
        assert_eq!(a.weighted(&[0, 5, 0]), 1);
    }
}
